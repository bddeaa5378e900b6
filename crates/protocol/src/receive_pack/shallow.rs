//! The repository's shallow file during a push from a shallow clone: the temporary one the
//! hooks see, and the update of `$GIT_DIR/shallow` with the new roots of accepted refs.
//!
//! Which roots a ref needs is `packgate_pack::ingest::shallow_roots_by_tip()`; what becomes
//! of the ref (refused without `receive.shallowUpdate`, else accepted with its roots) is
//! `update.rs`'s. This file only writes: the new shallow file is written in full under
//! `shallow.lock` (as git locks it), flushed to disk and renamed over the old one, so a
//! reader sees the old file or the new one, never part of one, and a process killed before
//! the rename leaves the old file (and the lock file, which git would leave too).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use gix_hash::ObjectId;

use crate::repository::parse_shallow_file;

/// Why `$GIT_DIR/shallow` could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum ShallowUpdateError {
    /// `shallow.lock` could not be taken (another push holds it, or a killed one left it).
    #[error("unable to lock {}", path.display())]
    Lock {
        /// The shallow file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// Reading the current file, or writing or renaming the new one, failed.
    #[error("unable to write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The current file holds something other than object ids.
    #[error("{} holds a line that is not an object id", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// The lines of a shallow file with `existing` and then `roots`: the existing commits in
/// object-id order (the order git keeps its grafts in and writes them back), then each new
/// root not listed yet, in the order given (git appends the new roots after the grafts).
pub(super) fn shallow_file_contents(existing: &[ObjectId], roots: &[ObjectId]) -> Vec<u8> {
    let mut sorted = existing.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::with_capacity((sorted.len() + roots.len()) * 41);
    let mut written = Vec::with_capacity(roots.len());
    for id in &sorted {
        writeln!(out, "{id}").ok();
    }
    for id in roots {
        if sorted.binary_search(id).is_err() && !written.contains(id) {
            writeln!(out, "{id}").ok();
            written.push(*id);
        }
    }
    out
}

/// Add `roots` to `$GIT_DIR/shallow` (created if missing), atomically, under `shallow.lock`
/// taken with `timeout`. The current file is read under the lock, so roots another push
/// added meanwhile are kept.
pub(super) fn add_shallow_roots(
    git_dir: &Path,
    roots: &[ObjectId],
    timeout: gix_lock::acquire::Fail,
) -> Result<(), ShallowUpdateError> {
    let path = git_dir.join("shallow");
    let mut lock =
        gix_lock::File::acquire_to_update_resource(&path, timeout, None, 0).map_err(|source| {
            ShallowUpdateError::Lock {
                path: path.clone(),
                source,
            }
        })?;
    let existing = match std::fs::read(&path) {
        Ok(data) => parse_shallow_file(&data)
            .ok_or_else(|| ShallowUpdateError::Malformed { path: path.clone() })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(ShallowUpdateError::Io { path, source }),
    };
    let contents = shallow_file_contents(&existing, roots);
    let lock_path = lock.lock_path().to_owned();
    let io = |source| ShallowUpdateError::Io {
        path: lock_path.clone(),
        source,
    };
    lock.write_all(&contents).map_err(io)?;
    lock.with_mut(|file| file.sync_all()).map_err(io)?;
    pause_for_tests();
    lock.commit().map_err(|err| ShallowUpdateError::Io {
        path: path.clone(),
        source: err.error,
    })?;
    Ok(())
}

/// Write the shallow file the hooks of this push see (`GIT_SHALLOW_FILE`, as git gives
/// them): the repository's shallow commits and the roots the accepted refs bring, at
/// `path` (inside the quarantine, removed with it).
pub(super) fn write_hook_shallow_file(
    path: &Path,
    existing: &[ObjectId],
    roots: &[ObjectId],
) -> std::io::Result<()> {
    std::fs::write(path, shallow_file_contents(existing, roots))
}

/// For tests only (`tests/shallow_push.rs`): while this environment variable names a file,
/// a push that adds shallow roots stops with the new shallow file written under
/// `shallow.lock` and not yet renamed into place, so a test can kill the server exactly
/// there. As `PACKGATE_TEST_PAUSE_AFTER_MIGRATION` in `update.rs`; never set it in
/// production.
const PAUSE_BEFORE_SHALLOW_RENAME: &str = "PACKGATE_TEST_PAUSE_BEFORE_SHALLOW_RENAME";

fn pause_for_tests() {
    super::update::pause_for_tests(PAUSE_BEFORE_SHALLOW_RENAME);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_hex(format!("{n:040x}").as_bytes()).unwrap()
    }

    fn check(existing: &[u8], roots: &[u8], expected: &[u8]) {
        let ids = |n: &[u8]| n.iter().map(|n| id(*n)).collect::<Vec<_>>();
        let text = shallow_file_contents(&ids(existing), &ids(roots));
        let expected: String = ids(expected).iter().map(|id| format!("{id}\n")).collect();
        assert_eq!(String::from_utf8(text).unwrap(), expected);
    }

    /// git's order: its grafts sorted by id, then the new roots as the client sent them.
    #[test]
    fn contents() {
        check(&[], &[], &[]);
        check(&[], &[9, 3], &[9, 3]);
        check(&[5, 2, 5], &[9, 2, 3, 9], &[2, 5, 9, 3]);
    }

    #[test]
    fn roots_are_added_atomically_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fail = gix_lock::acquire::Fail::Immediately;
        add_shallow_roots(dir.path(), &[id(7)], fail).unwrap();
        add_shallow_roots(dir.path(), &[id(3), id(7)], fail).unwrap();
        let text = std::fs::read_to_string(dir.path().join("shallow")).unwrap();
        // The existing line first, then the new one.
        assert_eq!(text, format!("{}\n{}\n", id(7), id(3)));
        assert!(!dir.path().join("shallow.lock").exists());

        // A lock someone else holds (or a killed push left) fails the update and leaves the
        // file as it was.
        std::fs::write(dir.path().join("shallow.lock"), "").unwrap();
        let err = add_shallow_roots(dir.path(), &[id(1)], fail).unwrap_err();
        assert!(matches!(err, ShallowUpdateError::Lock { .. }), "{err}");
        let after = std::fs::read_to_string(dir.path().join("shallow")).unwrap();
        assert_eq!(after, text);
    }
}
