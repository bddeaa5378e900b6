//! A commit's header as git's history walks read it (`parse_commit_buffer()`): the tree, the
//! parents and the committer date, leniently. Strict checks are fsck's.

use gix_hash::ObjectId;

/// Why a commit's header cannot be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// No `tree <hex>` line where the commit starts.
    #[error("bogus commit object")]
    Bogus,
    /// The tree line does not hold a hexadecimal id.
    #[error("bad tree id")]
    BadTree,
    /// A `parent` line is not `parent <hex>\n`.
    #[error("bad parents in commit")]
    BadParents,
}

impl CommitError {
    /// The reason as a static string, for errors that carry one.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitError::Bogus => "bogus commit object",
            CommitError::BadTree => "bad tree id",
            CommitError::BadParents => "bad parents in commit",
        }
    }
}

/// The parts of a commit a walk needs, borrowed from the commit's data.
#[derive(Debug, Clone)]
pub struct CommitHeader<'a> {
    /// The root tree.
    pub tree: ObjectId,
    /// git's `parse_commit_date()`: the committer time, 0 if it can't be read.
    pub date: u64,
    /// The `parent` lines, each `parent <hex>\n`, already checked.
    parent_lines: &'a [u8],
    hex_len: usize,
}

impl<'a> CommitHeader<'a> {
    /// Read the header of the commit `data` like git's `parse_commit_buffer()`: a `tree` line
    /// first, then any `parent` lines (one that is cut short by the end of the data ends
    /// them), then the date as [`commit_date()`] reads it. Nothing else is checked.
    pub fn parse(data: &'a [u8], hash: gix_hash::Kind) -> Result<Self, CommitError> {
        let hex_len = hash.len_in_hex();
        let tree_line_len = b"tree ".len() + hex_len + 1;
        let tree_line = data.get(..tree_line_len).ok_or(CommitError::Bogus)?;
        if !tree_line.starts_with(b"tree ") || tree_line[tree_line_len - 1] != b'\n' {
            return Err(CommitError::Bogus);
        }
        let tree =
            ObjectId::from_hex(&tree_line[5..5 + hex_len]).map_err(|_| CommitError::BadTree)?;
        let parent_line_len = b"parent ".len() + hex_len + 1;
        let mut end = tree_line_len;
        while let Some(line) = data.get(end..end + parent_line_len) {
            if !line.starts_with(b"parent ") {
                break;
            }
            if line[parent_line_len - 1] != b'\n'
                || !line[7..7 + hex_len].iter().all(u8::is_ascii_hexdigit)
            {
                return Err(CommitError::BadParents);
            }
            end += parent_line_len;
        }
        Ok(CommitHeader {
            tree,
            date: commit_date(&data[end..]),
            parent_lines: &data[tree_line_len..end],
            hex_len,
        })
    }

    /// How many parents the commit has.
    pub fn parent_count(&self) -> usize {
        self.parent_lines.len() / (b"parent ".len() + self.hex_len + 1)
    }

    /// The parent ids, in order.
    pub fn parents(&self) -> impl Iterator<Item = ObjectId> + 'a {
        let hex_len = self.hex_len;
        self.parent_lines
            .chunks_exact(b"parent ".len() + hex_len + 1)
            // Every line was checked to hold hexadecimal digits only.
            .filter_map(move |line| ObjectId::from_hex(&line[7..7 + hex_len]).ok())
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
    fn commit_headers() {
        const TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbe4904b";
        const PARENT: &str = "1111111111111111111111111111111111111111";
        fn check(commit: String, expected: Result<(u64, usize), CommitError>) {
            let parsed = CommitHeader::parse(commit.as_bytes(), gix_hash::Kind::Sha1);
            let actual = parsed.map(|header| {
                assert_eq!(header.tree.to_string(), TREE);
                let parents: Vec<ObjectId> = header.parents().collect();
                assert_eq!(parents.len(), header.parent_count());
                assert!(parents
                    .iter()
                    .all(|id| *id == ObjectId::from_hex(PARENT.as_bytes()).unwrap()));
                (header.date, parents.len())
            });
            assert_eq!(actual, expected, "{commit:?}");
        }
        check(format!("tree {TREE}\nparent {PARENT}\nparent {PARENT}\nauthor A <a> 1 +0000\ncommitter C <c> 7 +0000\n\nm"), Ok((7, 2)));
        check(
            format!("tree {TREE}\nauthor A <a> 1 +0000\ncommitter without a date\n"),
            Ok((0, 0)),
        );
        check(format!("tree {TREE}\n"), Ok((0, 0)));
        // A parent line cut short by the end of the data ends the parents, as in git.
        check(format!("tree {TREE}\nparent {}", &PARENT[..20]), Ok((0, 0)));
        check(
            format!("tree {TREE}\nparent {PARENT}x\nauthor A <a> 1 +0000\n"),
            Err(CommitError::BadParents),
        );
        check(
            format!(
                "tree {TREE}\nparent {}g\nauthor A <a> 1 +0000\n",
                &PARENT[..39]
            ),
            Err(CommitError::BadParents),
        );
        check(
            format!("tree {}\nparent {PARENT}\n", &TREE[..39]),
            Err(CommitError::Bogus),
        );
        check(
            format!("tree {}x\n", &TREE[..39]),
            Err(CommitError::BadTree),
        );
        check("parent first\n".to_string(), Err(CommitError::Bogus));
        check(String::new(), Err(CommitError::Bogus));
    }
}
