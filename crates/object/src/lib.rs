//! Reading git objects the way git's walks read them: reading an object into a caller's
//! buffer, lenient parsing of commit headers ([`CommitHeader`]), tree entries ([`tree`]) and
//! tag targets, and git's date-ordered commit walk ([`CommitGraph`], [`LimitedWalk`]).
//!
//! Negotiation (`packgate-negotiate`), enumeration, ingestion's connectivity check and fsck
//! (`packgate-pack`) share these so that all of them judge objects exactly as git's
//! `parse_commit_buffer()`, `decode_tree_entry()` and `parse_tag_buffer()` do. Strict
//! validation is not here: `packgate-pack`'s fsck has git's `fsck.c` rules, and must refuse
//! what these tolerate.
//!
//! ```
//! let header = b"author A <a> 1 +0000\ncommitter C <c> 1234567890 +0100\n";
//! assert_eq!(packgate_object::commit_date(header), 1234567890);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::ops::Range;

mod commit;
mod commit_graph_write;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod tree;
mod walk;

pub use commit::{commit_date, CommitError, CommitHeader};
pub use commit_graph_write::{
    write_commit_graph, CommitGraphWriteError, CommitGraphWriteOptions, CommitGraphWritten,
};
pub use walk::{
    flag, CommitGraph, CommitGraphFile, Edge, LimitedWalk, Node, ReadError, Stop, Unparsable,
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
