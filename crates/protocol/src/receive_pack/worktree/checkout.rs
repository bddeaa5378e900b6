//! Updating a work tree and its index from the commit checked out to a pushed one, as git's
//! `push_to_deploy()`: refuse when the work tree differs from the index ("unstaged
//! changes") or the index from the checked-out commit ("staged changes"), else check out
//! the new commit's tree over the old one, as `git read-tree -u -m <new>` does on a clean
//! index (a two-way switch: files added, changed, removed; untracked files in the way
//! refuse), and write the index with the files' stat data so that `git status` is clean.
//!
//! Safety: every path comes from a tree or the index and is checked component by component
//! (no `..`, no `.git`, git's `verify_path()` rules through gix-validate) before it is
//! joined to the work tree; a file is never written through a symbolic link (leading
//! directories are checked with `lstat`, files are created with `O_EXCL`), and a directory
//! is only ever removed when empty.
//!
//! What git's checkout does that this does not: content filters and end-of-line conversion
//! (`.gitattributes`, `core.autocrlf`: blobs are written as they are), sparse checkouts,
//! and submodule contents (a submodule's directory is created or removed, never checked
//! out). Ignored files in the way refuse, where git would overwrite them.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    path::{Path, PathBuf},
};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;
use gix_index::entry::{Flags, Mode, Stage, Stat};
use gix_object::FindExt;

/// How the work tree is compared and written: the repository's `core.*` settings.
#[derive(Debug, Clone, Copy)]
pub(in crate::receive_pack) struct Settings {
    /// `core.fileMode` (default true): whether the executable bit counts.
    pub(in crate::receive_pack) file_mode: bool,
    /// `core.symlinks` (default true): whether symbolic links are made as such, or as
    /// files holding the link's target.
    pub(in crate::receive_pack) symlinks: bool,
    /// `core.trustctime`, `core.checkStat`: which stat fields say a file is unchanged.
    pub(in crate::receive_pack) stat: gix_index::entry::stat::Options,
    /// `core.protectNTFS` (default true), `core.protectHFS` (default false): the path
    /// components refused in a tree, beyond `..` and `.git`.
    pub(in crate::receive_pack) validate: gix_validate::path::component::Options,
}

impl Settings {
    /// The settings from the repository's configuration, with git's defaults on Linux.
    pub(in crate::receive_pack) fn from_config(config: &gix_config::File) -> Self {
        let boolean =
            |key: &str, default: bool| config.boolean(key).ok().flatten().unwrap_or(default);
        let check_stat = config
            .string("core.checkStat")
            .is_none_or(|value| !value.eq_ignore_ascii_case(b"minimal"));
        Settings {
            file_mode: boolean("core.fileMode", true),
            symlinks: boolean("core.symlinks", true),
            stat: gix_index::entry::stat::Options {
                trust_ctime: boolean("core.trustctime", true),
                check_stat,
                use_nsec: true,
                use_stdev: false,
            },
            validate: gix_validate::path::component::Options {
                protect_windows: false,
                protect_ntfs: boolean("core.protectNTFS", true),
                protect_hfs: boolean("core.protectHFS", false),
            },
        }
    }
}

/// Why a work tree was not updated: the `Display` is git's reason for the ref's `ng` line.
#[derive(Debug, thiserror::Error)]
pub(in crate::receive_pack) enum UpdateError {
    /// The work tree's place is unknown (a non-bare git directory not named `.git`).
    #[error("denyCurrentBranch = updateInstead needs a worktree")]
    NoWorktree,
    /// The index could not be locked or read, or a file could not be examined.
    #[error("Up-to-date check failed")]
    UpToDateCheck {
        /// What went wrong, for the user.
        detail: String,
    },
    /// A tracked file differs from the index.
    #[error("Working directory has unstaged changes")]
    Unstaged,
    /// The index differs from the commit checked out.
    #[error("Working directory has staged changes")]
    Staged,
    /// Checking out the new commit failed or was refused (untracked files in the way).
    #[error("Could not update working tree to new HEAD")]
    Checkout {
        /// git's `error:` line, for the user.
        detail: String,
    },
}

impl UpdateError {
    /// The message git prints on its standard error, if any (without `error: `).
    pub(in crate::receive_pack) fn detail(&self) -> Option<&str> {
        match self {
            UpdateError::UpToDateCheck { detail } | UpdateError::Checkout { detail } => {
                Some(detail)
            }
            _ => None,
        }
    }
}

fn checkout_error(detail: impl Into<String>) -> UpdateError {
    UpdateError::Checkout {
        detail: detail.into(),
    }
}

fn check_error(detail: impl Into<String>) -> UpdateError {
    UpdateError::UpToDateCheck {
        detail: detail.into(),
    }
}

/// Bring the work tree at `work_tree` with the index at `index_path` from `old` (the commit
/// checked out, `None` on an unborn branch) to `new` (`None`: the branch is deleted, which
/// can't be checked out), reading objects from `objects`.
pub(in crate::receive_pack) fn update<O: gix_object::Find>(
    work_tree: &Path,
    index_path: &Path,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    objects: &O,
    settings: &Settings,
) -> Result<(), UpdateError> {
    let kind = old.or(new).map_or(gix_hash::Kind::Sha1, |id| id.kind());
    // git's commands would fail to start in it (a linked work tree deleted by hand).
    if !work_tree.is_dir() {
        return Err(check_error(format!(
            "cannot chdir to '{}'",
            work_tree.display()
        )));
    }
    // Held from the first look to the last write, as git holds `index.lock`.
    let lock = gix_lock::File::acquire_to_update_resource(
        index_path,
        gix_lock::acquire::Fail::Immediately,
        None,
        0,
    )
    .map_err(|err| {
        check_error(format!(
            "Unable to create '{}.lock': {err}",
            index_path.display()
        ))
    })?;
    let index = match std::fs::symlink_metadata(index_path) {
        Ok(_) => gix_index::File::at(index_path, kind, false, Default::default())
            .map_err(|err| check_error(format!("index file corrupt: {err}")))?
            .into(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => gix_index::State::new(kind),
        Err(err) => return Err(check_error(format!("could not read the index: {err}"))),
    };
    let fresh = unstaged_changes(work_tree, &index, settings)?;
    let old_tree = match old {
        Some(commit) => Some(tree_of(objects, commit).map_err(check_error)?),
        None => None,
    };
    let mut old_state = match old_tree {
        Some(tree) => gix_index::State::from_tree(&tree, objects, settings.validate)
            .map_err(|err| check_error(format!("could not read the tree {tree}: {err}")))?,
        None => gix_index::State::new(kind),
    };
    // In the index's order, for the comparison and lookups by path.
    old_state.sort_entries();
    if staged_changes(&index, &old_state) {
        return Err(UpdateError::Staged);
    }
    let Some(new) = new else {
        return Err(checkout_error(
            "Not a valid object name 0000000000000000000000000000000000000000",
        ));
    };
    let new_tree = tree_of(objects, new).map_err(checkout_error)?;
    let mut new_state = gix_index::State::from_tree(&new_tree, objects, settings.validate)
        .map_err(|err| checkout_error(invalid_path_message(&err)))?;
    new_state.sort_entries();
    check_file_directory_conflicts(&new_state)?;
    let plan = Plan::new(&index, &new_state);
    plan.verify_absent(work_tree)?;
    plan.apply(work_tree, objects, settings, &fresh, &mut new_state)?;
    write_index(lock, new_state)
}

/// The tree of `commit`, as a message on failure.
fn tree_of(objects: &dyn gix_object::Find, commit: ObjectId) -> Result<ObjectId, String> {
    let mut buf = Vec::new();
    let commit_ref = objects
        .find_commit(&commit, &mut buf)
        .map_err(|err| format!("could not read the commit {commit}: {err}"))?;
    Ok(commit_ref.tree())
}

/// git's message for a tree it refuses to read into the index.
fn invalid_path_message(err: &dyn std::error::Error) -> String {
    let text = err.to_string();
    match text.split('"').nth(1) {
        Some(path) if text.contains("is invalid") => format!("invalid path '{path}'"),
        _ => text,
    }
}

/// `path` (slash-separated, from a tree or the index) below `work_tree`, refused unless
/// every component is a plain name: not empty, `.`, `..` or `.git` (any case), no `/`
/// beyond the separators, no NUL.
fn worktree_path(work_tree: &Path, path: &BStr) -> Result<PathBuf, String> {
    let mut out = work_tree.to_owned();
    for component in path.split(|byte| *byte == b'/') {
        let plain = !component.is_empty()
            && component != b"."
            && component != b".."
            && !component.eq_ignore_ascii_case(b".git")
            && !component.contains(&0);
        if !plain {
            return Err(format!("invalid path '{path}'"));
        }
        let component =
            gix_path::from_byte_slice(component).map_err(|_| format!("invalid path '{path}'"))?;
        out.push(component);
    }
    Ok(out)
}

/// The kind of entry the work tree has at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisk {
    Missing,
    File {
        executable: bool,
    },
    Symlink,
    Directory,
    /// A socket, a device…: never what the index tracks.
    Other,
}

fn on_disk(path: &Path) -> std::io::Result<(OnDisk, Option<gix_index::fs::Metadata>)> {
    match gix_index::fs::Metadata::from_path_no_follow(path) {
        Ok(meta) => {
            let kind = if meta.is_symlink() {
                OnDisk::Symlink
            } else if meta.is_dir() {
                OnDisk::Directory
            } else if meta.is_file() {
                OnDisk::File {
                    executable: meta.is_executable(),
                }
            } else {
                OnDisk::Other
            };
            Ok((kind, Some(meta)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok((OnDisk::Missing, None)),
        // A leading component that is a file: nothing can be below it.
        Err(err) if err.raw_os_error() == Some(ENOTDIR) => Ok((OnDisk::Missing, None)),
        Err(err) => Err(err),
    }
}

/// `ENOTDIR` on Linux and the BSDs.
const ENOTDIR: i32 = 20;

/// git's `diff-files` after `update-index --refresh`: whether every tracked file in the work
/// tree has the content and mode the index records. Returns the files' current stat data,
/// by path, for the index written afterwards.
fn unstaged_changes(
    work_tree: &Path,
    index: &gix_index::State,
    settings: &Settings,
) -> Result<BTreeMap<BString, Stat>, UpdateError> {
    let mut fresh = BTreeMap::new();
    let timestamp = index.timestamp();
    for entry in index.entries() {
        let path = entry.path(index);
        if entry.stage() != Stage::Unconflicted
            || entry.flags.contains(Flags::INTENT_TO_ADD)
            || entry.flags.contains(Flags::SKIP_WORKTREE)
        {
            // Unmerged and intent-to-add entries are changes; packgate does not update
            // sparse work trees (see the module documentation).
            return Err(UpdateError::Unstaged);
        }
        if entry.mode == Mode::COMMIT {
            // `--ignore-submodules`.
            continue;
        }
        let file = worktree_path(work_tree, path).map_err(check_error)?;
        let (kind, meta) = on_disk(&file)
            .map_err(|err| check_error(format!("could not examine '{path}': {err}")))?;
        let Some(meta) = meta else {
            return Err(UpdateError::Unstaged);
        };
        let expected_kind = match kind {
            OnDisk::File { executable } => {
                if entry.mode == Mode::SYMLINK {
                    if settings.symlinks {
                        return Err(UpdateError::Unstaged);
                    }
                } else if settings.file_mode && executable != (entry.mode == Mode::FILE_EXECUTABLE)
                {
                    return Err(UpdateError::Unstaged);
                }
                true
            }
            OnDisk::Symlink => entry.mode == Mode::SYMLINK,
            _ => false,
        };
        if !expected_kind {
            return Err(UpdateError::Unstaged);
        }
        let stat = Stat::from_fs(&meta)
            .map_err(|err| check_error(format!("could not examine '{path}': {err}")))?;
        let unchanged = stat.matches(&entry.stat, settings.stat)
            && !entry.stat.is_racy(timestamp, settings.stat);
        if !unchanged {
            // git: a size that differs (and was recorded) is a change without reading.
            if entry.stat.size != 0 && entry.stat.size != stat.size {
                return Err(UpdateError::Unstaged);
            }
            let id = hash_on_disk(&file, kind, entry.id.kind())
                .map_err(|err| check_error(format!("could not read '{path}': {err}")))?;
            if id != entry.id {
                return Err(UpdateError::Unstaged);
            }
        }
        fresh.insert(path.to_owned(), stat);
    }
    Ok(fresh)
}

/// The blob id of what the work tree has at `file`: a file's content, or a link's target.
fn hash_on_disk(file: &Path, kind: OnDisk, hash: gix_hash::Kind) -> std::io::Result<ObjectId> {
    let to_io = |err: gix_error::Error| std::io::Error::other(err.to_string());
    if kind == OnDisk::Symlink {
        let target = std::fs::read_link(file)?;
        let bytes =
            gix_path::into_bstr(target).map_err(|err| std::io::Error::other(err.to_string()))?;
        return gix_object::compute_hash(hash, gix_object::Kind::Blob, &bytes).map_err(to_io);
    }
    let mut reader = std::fs::File::open(file)?;
    let len = reader.metadata()?.len();
    let mut hasher = gix_hash::hasher(hash);
    hasher.update(&gix_object::encode::loose_header(
        gix_object::Kind::Blob,
        len,
    ));
    let mut buf = vec![0; 64 * 1024];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        hasher.update(&buf[..n]);
    }
    if read != len {
        // Changed while we read it: certainly not what the index has.
        return Ok(ObjectId::null(hash));
    }
    hasher.try_finalize().map_err(to_io)
}

/// git's `diff-index --cached HEAD --ignore-submodules`: whether the index differs from the
/// commit checked out (`old`, as an index).
fn staged_changes(index: &gix_index::State, old: &gix_index::State) -> bool {
    let entries = index.entries();
    let old_entries = old.entries();
    if entries.len() != old_entries.len() {
        return true;
    }
    entries.iter().zip(old_entries).any(|(a, b)| {
        a.path(index) != b.path(old) || a.mode != b.mode || (a.mode != Mode::COMMIT && a.id != b.id)
    })
}

/// Refuse a tree that has a file and something below it (`a` and `a/b`): git's fsck
/// refuses such trees, and checking one out would be undefined.
fn check_file_directory_conflicts(state: &gix_index::State) -> Result<(), UpdateError> {
    let files: BTreeSet<&BStr> = state.entries().iter().map(|e| e.path(state)).collect();
    for path in &files {
        for (at, _) in path.iter().enumerate().filter(|(_, byte)| **byte == b'/') {
            let leading = path[..at].as_bstr();
            if files.contains(leading) {
                return Err(checkout_error(format!(
                    "Entry '{leading}' overlaps with '{path}'.  Cannot bind."
                )));
            }
        }
    }
    Ok(())
}

/// What checking out the new tree over the index does to each path.
struct Plan {
    /// Tracked paths whose work tree entry goes away: removed, or replaced.
    remove: BTreeSet<BString>,
    /// Paths to write from the new tree (new, or changed): index positions in the new state.
    write: Vec<(BString, usize)>,
    /// Paths the index does not track that the new tree brings.
    added: Vec<BString>,
    /// Every path the index tracks.
    tracked: BTreeSet<BString>,
}

impl Plan {
    fn new(index: &gix_index::State, new: &gix_index::State) -> Self {
        let old: BTreeMap<&BStr, (Mode, ObjectId)> = index
            .entries()
            .iter()
            .map(|e| (e.path(index), (e.mode, e.id)))
            .collect();
        let mut remove = BTreeSet::new();
        let mut write = Vec::new();
        let mut added = Vec::new();
        let mut in_new = BTreeSet::new();
        for (position, entry) in new.entries().iter().enumerate() {
            let path = entry.path(new);
            in_new.insert(path);
            match old.get(path) {
                Some(&(mode, id)) if mode == entry.mode && id == entry.id => {}
                Some(&(mode, _)) if mode == Mode::COMMIT && entry.mode == Mode::COMMIT => {
                    // A submodule moved: only the index changes.
                }
                Some(_) => {
                    remove.insert(path.to_owned());
                    write.push((path.to_owned(), position));
                }
                None => {
                    added.push(path.to_owned());
                    write.push((path.to_owned(), position));
                }
            }
        }
        for path in old.keys() {
            if !in_new.contains(path) {
                remove.insert((*path).to_owned());
            }
        }
        Plan {
            remove,
            write,
            added,
            tracked: old.keys().map(|path| (*path).to_owned()).collect(),
        }
    }

    /// git's `verify_absent()`: an untracked file where the new tree puts one (or where it
    /// needs a directory), or a directory holding untracked files, refuses the checkout.
    fn verify_absent(&self, work_tree: &Path) -> Result<(), UpdateError> {
        let examine = |path: &BStr| -> Result<(PathBuf, OnDisk), UpdateError> {
            let file = worktree_path(work_tree, path).map_err(checkout_error)?;
            let (kind, _) = on_disk(&file)
                .map_err(|err| checkout_error(format!("cannot stat '{path}': {err}")))?;
            Ok((file, kind))
        };
        let untracked = |path: &BStr| {
            checkout_error(format!(
                "Untracked working tree file '{path}' would be overwritten by merge."
            ))
        };
        for path in &self.added {
            // Leading directories first: an untracked file (or link) there is in the way.
            for (at, _) in path.iter().enumerate().filter(|(_, byte)| **byte == b'/') {
                let leading = path[..at].as_bstr();
                match examine(leading)?.1 {
                    OnDisk::Missing | OnDisk::Directory => {}
                    _ if self.remove.contains(leading) => {}
                    _ => return Err(untracked(leading)),
                }
            }
            let (file, kind) = examine(path.as_bstr())?;
            match kind {
                OnDisk::Missing => {}
                OnDisk::Directory => {
                    if !self.only_removed_below(&file, path.as_bstr())? {
                        return Err(checkout_error(format!(
                            "Updating '{path}' would lose untracked files in it"
                        )));
                    }
                }
                _ => return Err(untracked(path.as_bstr())),
            }
        }
        Ok(())
    }

    /// Whether the directory `dir` (the work tree's `path`) holds nothing but directories
    /// and tracked files this checkout removes.
    fn only_removed_below(&self, dir: &Path, path: &BStr) -> Result<bool, UpdateError> {
        let mut pending = vec![(dir.to_owned(), path.to_owned())];
        while let Some((dir, path)) = pending.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|err| checkout_error(format!("cannot read '{path}': {err}")))?;
            for entry in entries {
                let entry =
                    entry.map_err(|err| checkout_error(format!("cannot read '{path}': {err}")))?;
                let mut child = path.clone();
                child.push(b'/');
                // A name git could not track is untracked.
                let Ok(name) = gix_path::os_string_into_bstring(entry.file_name()) else {
                    return Ok(false);
                };
                child.extend_from_slice(&name);
                let is_dir = entry
                    .file_type()
                    .map_err(|err| checkout_error(format!("cannot stat '{child}': {err}")))?
                    .is_dir();
                if is_dir && !self.tracked.contains(&child) {
                    pending.push((entry.path(), child));
                } else if !self.remove.contains(&child) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Carry the plan out: removals (and the directories they empty), then the new files;
    /// each entry of `new` gets its file's stat data.
    fn apply(
        &self,
        work_tree: &Path,
        objects: &dyn gix_object::Find,
        settings: &Settings,
        fresh: &BTreeMap<BString, Stat>,
        new: &mut gix_index::State,
    ) -> Result<(), UpdateError> {
        let io_error = |path: &BStr, what: &str, err: std::io::Error| {
            checkout_error(format!("unable to {what} '{path}': {err}"))
        };
        for path in &self.remove {
            let file = worktree_path(work_tree, path.as_bstr()).map_err(checkout_error)?;
            let (kind, _) = on_disk(&file).map_err(|err| io_error(path.as_bstr(), "stat", err))?;
            let removed = match kind {
                OnDisk::Missing => Ok(()),
                // A submodule's directory goes only if it is empty, as in git.
                OnDisk::Directory => std::fs::remove_dir(&file).or(Ok(())),
                _ => std::fs::remove_file(&file),
            };
            removed.map_err(|err| io_error(path.as_bstr(), "unlink", err))?;
            remove_empty_parents(work_tree, &file);
        }
        // Directories in the way hold nothing but empty directories now.
        for (path, _) in &self.write {
            let file = worktree_path(work_tree, path.as_bstr()).map_err(checkout_error)?;
            let (kind, _) = on_disk(&file).map_err(|err| io_error(path.as_bstr(), "stat", err))?;
            let is_gitlink = new
                .entry_by_path(path.as_bstr())
                .is_some_and(|e| e.mode == Mode::COMMIT);
            if kind == OnDisk::Directory && !is_gitlink {
                remove_empty_tree(&file).map_err(|err| io_error(path.as_bstr(), "remove", err))?;
            }
        }
        let mut buf = Vec::new();
        let written: BTreeSet<usize> = self.write.iter().map(|(_, at)| *at).collect();
        let (entries, backing) = new.entries_mut_and_pathbacking();
        for (position, entry) in entries.iter_mut().enumerate() {
            let path = entry.path_in(backing);
            if !written.contains(&position) {
                // Unchanged: the work tree's file as it was checked, or the submodule's entry.
                if let Some(stat) = fresh.get(path) {
                    entry.stat = *stat;
                }
                continue;
            }
            let file = worktree_path(work_tree, path).map_err(checkout_error)?;
            create_leading_directories(work_tree, &file)
                .map_err(|err| io_error(path, "create the directories of", err))?;
            if entry.mode == Mode::COMMIT {
                match std::fs::create_dir(&file) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(err) => return Err(io_error(path, "create", err)),
                }
                continue;
            }
            let blob = objects.find_blob(&entry.id, &mut buf).map_err(|err| {
                checkout_error(format!(
                    "unable to read sha1 file of {path} ({}): {err}",
                    entry.id
                ))
            })?;
            write_entry(&file, entry.mode, blob.data, settings)
                .map_err(|err| io_error(path, "create file", err))?;
            let meta = gix_index::fs::Metadata::from_path_no_follow(&file)
                .map_err(|err| io_error(path, "stat", err))?;
            entry.stat = Stat::from_fs(&meta)
                .map_err(|err| io_error(path, "stat", std::io::Error::other(err)))?;
        }
        Ok(())
    }
}

/// Write one blob at `file` (which does not exist) as a file of `mode`, or a symbolic link.
fn write_entry(file: &Path, mode: Mode, data: &[u8], settings: &Settings) -> std::io::Result<()> {
    if mode == Mode::SYMLINK && settings.symlinks {
        let target = gix_path::from_byte_slice(data)
            .map_err(|_| std::io::Error::other("link target is not a path"))?;
        return symlink(target, file);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // As git, whatever `core.fileMode` says: 0777 or 0666, less the umask.
        options.mode(if mode == Mode::FILE_EXECUTABLE {
            0o777
        } else {
            0o666
        });
    }
    let mut out = options.open(file)?;
    out.write_all(data)?;
    out.flush()
}

#[cfg(unix)]
fn symlink(target: &Path, file: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, file)
}

#[cfg(not(unix))]
fn symlink(target: &Path, file: &Path) -> std::io::Result<()> {
    let bytes =
        gix_path::into_bstr(target).map_err(|err| std::io::Error::other(err.to_string()))?;
    std::fs::write(file, bytes.as_ref())
}

/// Create the directories between `work_tree` and `file`; each one that exists must be a
/// directory, not a link to one.
fn create_leading_directories(work_tree: &Path, file: &Path) -> std::io::Result<()> {
    let Ok(relative) = file.strip_prefix(work_tree) else {
        return Err(std::io::Error::other("outside the work tree"));
    };
    let mut dir = work_tree.to_owned();
    let components: Vec<_> = relative.components().collect();
    for component in components.iter().take(components.len().saturating_sub(1)) {
        dir.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "'{}' is in the way",
                    dir.display()
                )))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)?,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Remove the directories above `file` that are empty now, up to (not including) the work
/// tree, as git does after removing a file.
fn remove_empty_parents(work_tree: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(current) = dir {
        if current == work_tree || !current.starts_with(work_tree) {
            break;
        }
        if std::fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
}

/// Remove `dir` and the directories below it, all of which must be empty of anything else.
fn remove_empty_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Write `state` as the index, through the lock taken at the start.
fn write_index(mut lock: gix_lock::File, mut state: gix_index::State) -> Result<(), UpdateError> {
    state.sort_entries();
    let file = gix_index::File::from_state(state, PathBuf::new());
    let write_error = |err: &dyn std::fmt::Display| {
        checkout_error(format!("unable to write new index file: {err}"))
    };
    file.write_to(&mut lock, gix_index::write::Options::default())
        .map_err(|err| write_error(&err))?;
    lock.commit().map_err(|err| write_error(&err))?;
    Ok(())
}

#[cfg(test)]
mod tests;
