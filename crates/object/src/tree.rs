//! Tree entries as git's `decode_tree_entry()` reads them. Nothing is validated beyond what
//! is needed to find the next entry; fsck's rules (modes git writes, names, order) are fsck's.

use gix_hash::oid;

/// What a tree entry names, by git's `canon_mode()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (`040000`).
    Tree,
    /// A file or a symbolic link (`100xxx`, `120000`).
    Blob,
    /// Anything else: a submodule's commit, which lives in another repository.
    Gitlink,
}

/// One raw tree entry, borrowed from the tree's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeEntry<'a> {
    /// The mode as written, octal digits (possibly none, possibly zero-padded).
    pub mode_bytes: &'a [u8],
    /// The mode's value (wrapping, as git's `parse_mode()` accumulates it).
    pub mode: u32,
    /// The name, not empty, without NUL.
    pub name: &'a [u8],
    /// The id of what the entry names.
    pub id: &'a oid,
}

impl TreeEntry<'_> {
    /// What the entry names, by git's `canon_mode()`.
    pub fn kind(&self) -> EntryKind {
        match self.mode & 0o170000 {
            0o040000 => EntryKind::Tree,
            0o100000 | 0o120000 => EntryKind::Blob,
            _ => EntryKind::Gitlink,
        }
    }
}

/// Why a tree entry cannot be read: git's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// Too little data left for an entry, or the last entry's name is not terminated.
    #[error("too-short tree object")]
    TooShort,
    /// The mode holds something other than octal digits before its space.
    #[error("malformed mode in tree entry")]
    MalformedMode,
    /// The name is empty.
    #[error("empty filename in tree entry")]
    EmptyName,
    /// The data ends inside the name or the id.
    #[error("truncated tree entry")]
    Truncated,
}

impl TreeError {
    /// The reason as a static string, for errors that carry one.
    pub fn as_str(self) -> &'static str {
        match self {
            TreeError::TooShort => "too-short tree object",
            TreeError::MalformedMode => "malformed mode in tree entry",
            TreeError::EmptyName => "empty filename in tree entry",
            TreeError::Truncated => "truncated tree entry",
        }
    }
}

/// The entry at the start of `data` (a tree's remaining entries) and what follows it, read
/// like git's `decode_tree_entry()` for ids of `hash_len` bytes.
#[inline]
pub fn next_entry(data: &[u8], hash_len: usize) -> Result<(TreeEntry<'_>, &[u8]), TreeError> {
    if data.len() < hash_len + 3 || data[data.len() - (hash_len + 1)] != 0 {
        return Err(TreeError::TooShort);
    }
    let mut mode: u32 = 0;
    let mut mode_end = 0;
    loop {
        match data.get(mode_end) {
            Some(b' ') => break,
            Some(&digit @ b'0'..=b'7') => {
                mode = mode.wrapping_shl(3).wrapping_add(u32::from(digit - b'0'));
            }
            _ => return Err(TreeError::MalformedMode),
        }
        mode_end += 1;
    }
    let name_start = mode_end + 1;
    let name_len = memchr::memchr(0, &data[name_start..]).ok_or(TreeError::Truncated)?;
    if name_len == 0 {
        return Err(TreeError::EmptyName);
    }
    let id_start = name_start + name_len + 1;
    let end = id_start + hash_len;
    // The check above puts the last name's NUL far enough from the end for this, but an index
    // is not trusted to that.
    let id = data.get(id_start..end).ok_or(TreeError::Truncated)?;
    let id = oid::try_from_bytes(id).map_err(|_| TreeError::Truncated)?;
    let entry = TreeEntry {
        mode_bytes: &data[..mode_end],
        mode,
        name: &data[name_start..name_start + name_len],
        id,
    };
    Ok((entry, &data[end..]))
}

/// The entries of the tree `data`, in order; an error ends them.
pub fn entries(data: &[u8], hash_len: usize) -> Entries<'_> {
    Entries {
        rest: data,
        hash_len,
    }
}

/// The iterator of [`entries()`].
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
    hash_len: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<TreeEntry<'a>, TreeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match next_entry(self.rest, self.hash_len) {
            Ok((entry, rest)) => {
                self.rest = rest;
                Some(Ok(entry))
            }
            Err(err) => {
                self.rest = &[];
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gix_hash::ObjectId;

    use super::*;

    fn tree_entry(mode: &str, name: &str, id: &oid) -> Vec<u8> {
        let mut entry = format!("{mode} {name}\0").into_bytes();
        entry.extend_from_slice(id.as_bytes());
        entry
    }

    #[test]
    fn modes() {
        fn check(mode: &str, expected: Option<(u32, EntryKind)>) {
            let id = ObjectId::empty_blob(gix_hash::Kind::Sha1);
            let entry = tree_entry(mode, "name", &id);
            let actual = match next_entry(&entry, 20) {
                Ok((parsed, rest)) => {
                    assert_eq!(
                        (parsed.name, parsed.id, rest),
                        (&b"name"[..], id.as_ref(), &b""[..])
                    );
                    assert_eq!(parsed.mode_bytes, mode.as_bytes());
                    Some((parsed.mode, parsed.kind()))
                }
                Err(err) => {
                    assert_eq!(err, TreeError::MalformedMode);
                    None
                }
            };
            assert_eq!(actual, expected, "{mode:?}");
        }
        check("40000", Some((0o40000, EntryKind::Tree)));
        check("040000", Some((0o40000, EntryKind::Tree)));
        check("100644", Some((0o100644, EntryKind::Blob)));
        check("100755", Some((0o100755, EntryKind::Blob)));
        check("100664", Some((0o100664, EntryKind::Blob)));
        check("120000", Some((0o120000, EntryKind::Blob)));
        check("160000", Some((0o160000, EntryKind::Gitlink)));
        check("0", Some((0, EntryKind::Gitlink)));
        check("", Some((0, EntryKind::Gitlink)));
        // As git's `parse_mode()`: any number of digits, the value wraps.
        check("0000100644", Some((0o100644, EntryKind::Blob)));
        check("10064x", None);
        check("1006449", None);
    }

    #[test]
    fn malformed_entries() {
        fn check(data: &[u8], expected: TreeError) {
            assert_eq!(next_entry(data, 20).map(|_| ()), Err(expected), "{data:?}");
        }
        check(b"100644 \0aaaaaaaaaaaaaaaaaaaa", TreeError::EmptyName);
        check(b"100644 name\0short", TreeError::TooShort);
        check(b"100644 name", TreeError::TooShort);
        check(b"", TreeError::TooShort);
        check(
            b"100644 name\0aaaaaaaaaaaaaaaaaaaa100644 unterminated",
            TreeError::TooShort,
        );
    }

    #[test]
    fn entries_in_order() {
        let blob = ObjectId::empty_blob(gix_hash::Kind::Sha1);
        let tree = ObjectId::empty_tree(gix_hash::Kind::Sha1);
        let mut data = tree_entry("100644", "a", &blob);
        data.extend(tree_entry("40000", "b", &tree));
        let parsed: Vec<_> = entries(&data, 20)
            .map(|entry| entry.map(|entry| (entry.name, entry.id.to_owned(), entry.kind())))
            .collect();
        assert_eq!(
            parsed,
            [
                Ok((&b"a"[..], blob, EntryKind::Blob)),
                Ok((&b"b"[..], tree, EntryKind::Tree))
            ]
        );
        // Like git, every entry checks that the tree's last name is terminated: a bad tail
        // refuses the tree from its first entry, and an error ends the entries.
        data.extend(b"1 x");
        let parsed: Vec<_> = entries(&data, 20).collect();
        assert_eq!(parsed, [Err(TreeError::TooShort)]);
    }
}
