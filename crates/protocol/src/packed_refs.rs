//! The records of a `packed-refs` file, read straight from its sorted bytes.
//!
//! gix keeps the file (mapped, and re-read when it changes) but its record parser is general
//! and slow; listing 50,000 refs spent most of its time there. The format is simple — one
//! `<hex-id> SP <name> LF` per ref, sorted by name, each optionally followed by `^<hex-id> LF`,
//! the object an annotated tag peels to — so it is read here: the first record of a prefix
//! found by binary search, then line by line.

use bstr::{BStr, ByteSlice};
use gix_hash::ObjectId;

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// The ref's full name, not validated.
    pub name: &'a BStr,
    /// What it points at.
    pub target: ObjectId,
    /// Its `^` line: the object an annotated tag peels to.
    pub peeled: Option<ObjectId>,
}

/// A line that is not a record.
#[derive(Debug, thiserror::Error)]
#[error("malformed packed-refs line: {line:?}")]
pub struct Malformed {
    /// The line, cut to a readable length.
    pub line: bstr::BString,
}

/// The records of `data` (a `packed-refs` file without its header, sorted by name) whose
/// names start with `prefix`.
pub(crate) fn prefixed<'a>(data: &'a [u8], prefix: &'a [u8]) -> Records<'a> {
    Records {
        data,
        pos: first_at_or_after(data, prefix),
        prefix,
    }
}

/// Iterates the records of a prefix; stops at the first name past it.
pub(crate) struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    prefix: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let (record, end) = match parse_record(self.data, self.pos) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.pos = self.data.len();
                return Some(Err(err));
            }
        };
        if !record.name.starts_with(self.prefix) {
            self.pos = self.data.len();
            return None;
        }
        self.pos = end;
        Some(Ok(record))
    }
}

/// The offset of the first record whose name is not below `prefix` in sort order.
fn first_at_or_after(data: &[u8], prefix: &[u8]) -> usize {
    let (mut lo, mut hi) = (0, data.len());
    while lo < hi {
        let start = record_start(data, lo, lo + (hi - lo) / 2);
        let name = name_at(data, start);
        if name < prefix {
            lo = record_end(data, start);
        } else {
            hi = start;
        }
    }
    lo
}

/// The start of the record holding offset `at`, not before `lo` (a record start).
fn record_start(data: &[u8], lo: usize, at: usize) -> usize {
    let line_start = |at: usize| {
        data[lo..at]
            .rfind_byte(b'\n')
            .map_or(lo, |newline| lo + newline + 1)
    };
    let start = line_start(at);
    if data.get(start) == Some(&b'^') && start > lo {
        // A peeled line belongs to the record before it.
        line_start(start - 1)
    } else {
        start
    }
}

/// The offset just past the record starting at `start`, its peeled line included.
fn record_end(data: &[u8], start: usize) -> usize {
    let line_end = |at: usize| {
        data[at..]
            .find_byte(b'\n')
            .map_or(data.len(), |newline| at + newline + 1)
    };
    let end = line_end(start);
    if data.get(end) == Some(&b'^') {
        line_end(end)
    } else {
        end
    }
}

/// The name of the record at `start`, or the empty name if the line is not a record (it
/// then sorts first, and the parse that follows reports it).
fn name_at(data: &[u8], start: usize) -> &[u8] {
    let line = &data[start..];
    let line = line.find_byte(b'\n').map_or(line, |end| &line[..end]);
    line.find_byte(b' ').map_or(&[], |space| &line[space + 1..])
}

fn parse_record(data: &[u8], start: usize) -> Result<(Record<'_>, usize), Malformed> {
    let malformed = |at: usize| {
        let line = &data[at..];
        let line = line.find_byte(b'\n').map_or(line, |end| &line[..end]);
        Malformed {
            line: line[..line.len().min(200)].into(),
        }
    };
    let line_end = data[start..]
        .find_byte(b'\n')
        .map(|newline| start + newline)
        .ok_or_else(|| malformed(start))?;
    let line = &data[start..line_end];
    let (hex, name) = match line.find_byte(b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => return Err(malformed(start)),
    };
    let target = ObjectId::from_hex(hex).map_err(|_| malformed(start))?;
    if name.is_empty() {
        return Err(malformed(start));
    }
    let mut end = line_end + 1;
    let mut peeled = None;
    if data.get(end) == Some(&b'^') {
        let peel_end = data[end..]
            .find_byte(b'\n')
            .map(|newline| end + newline)
            .ok_or_else(|| malformed(end))?;
        peeled = Some(ObjectId::from_hex(&data[end + 1..peel_end]).map_err(|_| malformed(end))?);
        end = peel_end + 1;
    }
    Ok((
        Record {
            name: name.as_bstr(),
            target,
            peeled,
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn file(names: &[(&str, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, tag) in names {
            out.extend_from_slice(format!("{A} {name}\n").as_bytes());
            if *tag {
                out.extend_from_slice(format!("^{B}\n").as_bytes());
            }
        }
        out
    }

    fn names(data: &[u8], prefix: &str) -> Vec<String> {
        prefixed(data, prefix.as_bytes())
            .map(|record| record.unwrap().name.to_string())
            .collect()
    }

    #[test]
    fn every_prefix_finds_exactly_its_records() {
        let all = [
            ("refs/heads/a", false),
            ("refs/heads/a/b", false),
            ("refs/heads/ab", true),
            ("refs/heads/b", false),
            ("refs/tags/v1", true),
            ("refs/tags/v2", false),
            ("refs/tags/v2.1", true),
        ];
        // Every subset of records, so the binary search meets peeled lines everywhere.
        for mask in 0u32..(1 << all.len()) {
            let present: Vec<(&str, bool)> = all
                .iter()
                .enumerate()
                .filter(|(n, _)| mask & (1 << n) != 0)
                .map(|(_, record)| *record)
                .collect();
            let data = file(&present);
            for prefix in [
                "",
                "refs/",
                "refs/heads/",
                "refs/heads/a",
                "refs/heads/a/",
                "refs/heads/b",
                "refs/heads/c",
                "refs/tags/v2",
                "refs/tags/v3",
                "refs/zz",
                "a",
            ] {
                let expected: Vec<String> = present
                    .iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, _)| name.to_string())
                    .collect();
                assert_eq!(names(&data, prefix), expected, "{prefix:?} in {present:?}");
            }
        }
    }

    #[test]
    fn peeled_lines_belong_to_their_record() {
        let data = file(&[("refs/tags/a", true), ("refs/tags/b", false)]);
        let records: Vec<Record<'_>> = prefixed(&data, b"refs/").map(Result::unwrap).collect();
        assert_eq!(
            records[0].peeled,
            Some(ObjectId::from_hex(B.as_bytes()).unwrap())
        );
        assert_eq!(records[1].peeled, None);
        assert_eq!(records[1].target, ObjectId::from_hex(A.as_bytes()).unwrap());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for data in [
            &b"not-hex refs/heads/a\n"[..],
            b"1111111111111111111111111111111111111111 refs/heads/a",
            b"1111111111111111111111111111111111111111\n",
            b"1111111111111111111111111111111111111111 refs/heads/a\n^zz\n",
        ] {
            assert!(
                prefixed(data, b"").any(|record| record.is_err()),
                "{:?}",
                data.as_bstr()
            );
        }
    }
}
