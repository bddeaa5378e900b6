//! Reading git objects the way git's walks read them: lenient header parsing for the commit
//! and tag fields that history walks need, and reading an object into a caller's buffer.
//!
//! The walks in `packgate-negotiate` and `packgate-pack` share these so that both judge
//! commits exactly as git's `parse_commit_buffer()` and `parse_tag_buffer()` do. Strict
//! validation (fsck) is not here: `packgate-pack`'s ingestion has its own, git's `fsck.c` rules.
//!
//! ```
//! let header = b"author A <a> 1 +0000\ncommitter C <c> 1234567890 +0100\n";
//! assert_eq!(packgate_object::commit_date(header), 1234567890);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::ops::Range;

use gix_hash::{oid, ObjectId};
use gix_object::Kind;

/// Read `id` into `buf`; return its kind and where in `buf` its data is, or `None` if the
/// database does not have it.
///
/// Returning a range instead of the borrowed data lets callers keep using `buf` mutably.
pub fn read(
    db: &impl gix_object::Find,
    id: &oid,
    buf: &mut Vec<u8>,
) -> Result<Option<(Kind, Range<usize>)>, gix_error::Error> {
    let (kind, address, len) = match db.try_find(id, buf)? {
        Some(data) => (data.kind, data.data.as_ptr() as usize, data.data.len()),
        None => return Ok(None),
    };
    let base = buf.as_ptr() as usize;
    if len == 0 {
        return Ok(Some((kind, 0..0)));
    }
    if address >= base && address + len <= base + buf.len() {
        let start = address - base;
        return Ok(Some((kind, start..start + len)));
    }
    // The data lives in the database's own memory, not in `buf`: read it again and copy it.
    let mut elsewhere = Vec::new();
    match db.try_find(id, &mut elsewhere)? {
        Some(data) => {
            buf.clear();
            buf.extend_from_slice(data.data);
            Ok(Some((data.kind, 0..buf.len())))
        }
        None => Ok(None),
    }
}

/// The target of a tag: its `object` header, as git's `parse_tag_buffer()` reads it.
pub fn tag_target(data: &[u8]) -> Option<ObjectId> {
    let rest = data.strip_prefix(b"object ")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    ObjectId::from_hex(&rest[..end]).ok()
}

/// An entry of a date-ordered commit queue (a `BinaryHeap`): newest first, first come first
/// served among equal dates, like git's `commit_list_insert_by_date()`. `node` is the
/// walker's own handle for the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    /// The commit date, as [`commit_date`] reads it.
    pub date: u64,
    /// The order of insertion, to break ties.
    pub seq: u64,
    /// The commit, in the walker's numbering.
    pub node: u32,
}

impl Ord for QueueEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.date
            .cmp(&other.date)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for QueueEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// git's `parse_commit_date()`, given a commit's data after its `tree` and `parent` lines: the
/// committer time, 0 if it can't be read.
pub fn commit_date(data: &[u8]) -> u64 {
    if !data.starts_with(b"author") {
        return 0;
    }
    let Some(end_of_author) = data.iter().position(|&b| b == b'\n') else {
        return 0;
    };
    let Some(line) = data[end_of_author + 1..].strip_prefix(b"committer") else {
        return 0;
    };
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[..end],
        None => line,
    };
    let Some(after_email) = line.iter().rposition(|&b| b == b'>') else {
        return 0;
    };
    let after_email = &line[after_email + 1..];
    let blanks = after_email
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let digits = &after_email[blanks..];
    let digits = &digits[..digits.iter().take_while(|b| b.is_ascii_digit()).count()];
    digits.iter().fold(0u64, |date, &digit| {
        date.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_dates() {
        fn check(header: &str, expected: u64) {
            assert_eq!(commit_date(header.as_bytes()), expected, "{header:?}");
        }
        check(
            "author A <a> 1 +0000\ncommitter C <c> 1234567890 +0100\n",
            1234567890,
        );
        check("author A <a> 1 +0000\ncommitter C <c> \t 42 +0100", 42);
        check(
            "author A <a> 1 +0000\ncommitter C <c> 99999999999999999999999 +0000\n",
            u64::MAX,
        );
        check("author A <a> 1 +0000\ncommitter C <c> -5 +0000\n", 0);
        check("author A <a> 1 +0000\ncommitter C <c>\n", 0);
        check("author A <a> 1 +0000\ncommitter no email 5\n", 0);
        check("author A <a> 1 +0000\n", 0);
        check("committer C <c> 5 +0000\n", 0);
        check("", 0);
    }

    #[test]
    fn tag_targets() {
        let id = "0123456789012345678901234567890123456789";
        let expected = ObjectId::from_hex(id.as_bytes()).ok();
        assert_eq!(
            tag_target(format!("object {id}\ntype commit\n").as_bytes()),
            expected
        );
        assert_eq!(tag_target(format!("object {id}").as_bytes()), None);
        assert_eq!(tag_target(b"object 123\n"), None);
        assert_eq!(
            tag_target(format!("type commit\nobject {id}\n").as_bytes()),
            None
        );
    }
}
