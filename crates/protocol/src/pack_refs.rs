//! git's `pack-refs` on the files backend: loose refs move into `packed-refs`.
//!
//! As git's `files_pack_refs()`: under `packed-refs.lock`, the loose refs below `refs/` are read; those to
//! pack — every ref with `all` (`--all`), else the tags (`refs/tags/*`), never a symbolic
//! ref, a per-worktree ref (`refs/bisect/`, `refs/worktree/`, `refs/rewritten/`), a ref with
//! an invalid name or one that does not point at an existing object — are merged with the
//! refs already packed (a loose value wins) and the file is rewritten sorted, with git's header
//! `# pack-refs with: peeled fully-peeled sorted ` and a `^<id>` line after every ref that
//! points at an annotated tag. Then, with `prune` (`--prune`, git's default), each packed
//! loose ref is deleted under its own `<ref>.lock` only if it still holds the value that was
//! packed — a ref updated meanwhile keeps its new loose value, which takes precedence — and
//! its empty parent directories are removed, sparing `refs/` and its immediate subdirectories.
//!
//! The locks are waited for as git does (`core.packedRefsTimeout`, 1 s by default;
//! `core.filesRefLockTimeout`, 100 ms). Difference from git: a `packed-refs` that is a
//! symbolic link is replaced, not written through.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;

/// What [`pack_refs()`] packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRefsOptions {
    /// `--all`: pack every ref, not only tags.
    pub all: bool,
    /// `--prune`: delete the loose refs that were packed.
    pub prune: bool,
}

/// What [`pack_refs()`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackRefsOutcome {
    /// Loose refs written into `packed-refs`.
    pub packed: usize,
    /// Loose refs deleted afterwards.
    pub pruned: usize,
}

/// Why refs could not be packed. `packed-refs` is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum PackRefsError {
    /// `packed-refs.lock` could not be taken (another process holds it).
    #[error("unable to lock '{path}'")]
    Lock {
        /// The file to be locked.
        path: PathBuf,
        /// The error.
        #[source]
        source: gix_error::Error,
    },
    /// The repository's configuration cannot be read.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A file operation failed.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The existing `packed-refs` has a line that is not a record.
    #[error("unexpected line in {path}: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line.
        #[source]
        source: crate::packed_refs::Malformed,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PackRefsError {
    let path = path.to_owned();
    move |source| PackRefsError::Io {
        action,
        path,
        source,
    }
}

/// The header git writes.
pub const PACKED_REFS_HEADER: &str = "# pack-refs with: peeled fully-peeled sorted \n";

/// git's `pack-refs` on the files backend: packed-refs written with the header
/// `# pack-refs with: peeled fully-peeled sorted `, peeled lines for tags, under
/// `packed-refs.lock` (git's lock-file convention), loose refs that were packed deleted
/// afterwards (each under its own `.lock`, only if unchanged), empty ref directories pruned
/// as git does. See the module documentation for the exact rules.
pub fn pack_refs(
    git_dir: &Path,
    options: &PackRefsOptions,
) -> Result<PackRefsOutcome, PackRefsError> {
    pack_refs_with(git_dir, options, &mut || {})
}

/// [`pack_refs()`], calling `between` after `packed-refs` is written and before pruning.
fn pack_refs_with(
    git_dir: &Path,
    options: &PackRefsOptions,
    between: &mut dyn FnMut(),
) -> Result<PackRefsOutcome, PackRefsError> {
    let objects = git_dir.join("objects");
    let db = gix_odb::at(&objects, gix_hash::Kind::Sha1)
        .map_err(io_error("open the object database", &objects))?;
    let config = crate::config::load(git_dir, None)?;
    let timeout = |key: &str, default_millis| -> Result<_, PackRefsError> {
        let configured = config.integer(key).map_err(|source| {
            PackRefsError::Config(crate::config::ConfigError::Value {
                key: key.to_owned(),
                source,
            })
        })?;
        Ok(crate::config::lock_timeout(configured, default_millis))
    };
    let packed_refs_timeout = timeout("core.packedRefsTimeout", 1000)?;
    let ref_lock_timeout = timeout("core.filesRefLockTimeout", 100)?;
    let packed_path = git_dir.join("packed-refs");
    let mut lock =
        gix_lock::File::acquire_to_update_resource(&packed_path, packed_refs_timeout, None, 0)
            .map_err(|source| PackRefsError::Lock {
                path: packed_path.clone(),
                source,
            })?;

    // The refs packed so far, read under the lock, with their peeled values when known.
    let mut refs: BTreeMap<BString, (ObjectId, Option<ObjectId>)> = BTreeMap::new();
    let mut buf = Vec::new();
    match std::fs::read(&packed_path) {
        Ok(data) => {
            for (name, target, peeled) in read_packed(&data, &packed_path)? {
                let peeled = match peeled {
                    Known::Peeled(peeled) => peeled,
                    Known::Unknown => peel(&db, target, &mut buf),
                };
                refs.entry(name).or_insert((target, peeled));
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error("read", &packed_path)(err)),
    }

    let mut loose = Vec::new();
    collect_loose(&git_dir.join("refs"), b"refs/", &mut loose, 0);
    let mut packed = Vec::new();
    for (name, target) in loose {
        if !should_pack(name.as_ref(), options) {
            continue;
        }
        // A broken ref (pointing at no object) is not packed.
        match gix_object::FindHeader::try_header(&db, &target) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                tracing::warn!(name = %name, "{name} does not point to a valid object!");
                continue;
            }
        }
        let peeled = peel(&db, target, &mut buf);
        refs.insert(name.clone(), (target, peeled));
        packed.push((name, target));
    }

    let mut text = Vec::with_capacity(PACKED_REFS_HEADER.len() + refs.len() * 64);
    text.extend_from_slice(PACKED_REFS_HEADER.as_bytes());
    for (name, (target, peeled)) in &refs {
        text.extend_from_slice(target.to_hex().to_string().as_bytes());
        text.push(b' ');
        text.extend_from_slice(name);
        text.push(b'\n');
        if let Some(peeled) = peeled {
            text.push(b'^');
            text.extend_from_slice(peeled.to_hex().to_string().as_bytes());
            text.push(b'\n');
        }
    }
    let lock_path = lock.lock_path().to_owned();
    lock.with_mut(|file| {
        file.write_all(&text)?;
        file.sync_all()
    })
    .map_err(io_error("write", &lock_path))?;
    lock.commit()
        .map_err(|err| io_error("rename into", &packed_path)(err.error))?;
    sync_dir(git_dir);

    between();

    let mut pruned = 0;
    if options.prune {
        for (name, expected) in &packed {
            if prune_loose(git_dir, name.as_ref(), expected, ref_lock_timeout) {
                pruned += 1;
            }
        }
    }
    Ok(PackRefsOutcome {
        packed: packed.len(),
        pruned,
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Whether a ref's peeled value is known from the file.
enum Known {
    Peeled(Option<ObjectId>),
    Unknown,
}

/// The records of a `packed-refs` file, sorted by name as git sorts a file that does not say
/// it is sorted.
fn read_packed(data: &[u8], path: &Path) -> Result<Vec<(BString, ObjectId, Known)>, PackRefsError> {
    let (traits, body) = match data.strip_prefix(b"# pack-refs with:") {
        Some(rest) => {
            let end = rest.find_byte(b'\n').map_or(rest.len(), |at| at + 1);
            (&rest[..end], &rest[end..])
        }
        None => (&b""[..], data),
    };
    let fully_peeled = traits.find(b" fully-peeled ").is_some();
    let tags_peeled = traits.find(b" peeled ").is_some();
    let mut records = Vec::new();
    for record in crate::packed_refs::prefixed(body, b"".as_bstr()) {
        let record = record.map_err(|source| PackRefsError::Malformed {
            path: path.to_owned(),
            source,
        })?;
        let knows = fully_peeled || (tags_peeled && record.name.starts_with(b"refs/tags/"));
        let peeled = if record.peeled.is_some() || knows {
            Known::Peeled(record.peeled)
        } else {
            Known::Unknown
        };
        records.push((record.name.to_owned(), record.target, peeled));
    }
    if traits.find(b" sorted ").is_none() {
        records.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(records)
}

/// git's `peel_object()`: what an annotated tag finally points at; `None` for an object
/// that is not a tag or a tag that cannot be followed.
fn peel(db: &impl gix_object::Find, id: ObjectId, buf: &mut Vec<u8>) -> Option<ObjectId> {
    let (kind, range) = packgate_object::read(db, &id, buf).ok()??;
    if kind != gix_object::Kind::Tag {
        return None;
    }
    let mut data = buf[range].to_vec();
    // Tags of tags: bounded, as the chain could only loop through a hash collision.
    for _ in 0..64 {
        let target = packgate_object::tag_target(&data)?;
        let declared_tag = data
            .lines()
            .take_while(|line| !line.is_empty())
            .any(|line| line == b"type tag");
        if !declared_tag {
            return Some(target);
        }
        let (kind, range) = packgate_object::read(db, &target, buf).ok()??;
        if kind != gix_object::Kind::Tag {
            return None;
        }
        data = buf[range].to_vec();
    }
    None
}

/// The per-worktree refs git never packs.
fn is_per_worktree(name: &[u8]) -> bool {
    const PER_WORKTREE: [&[u8]; 3] = [b"refs/bisect/", b"refs/worktree/", b"refs/rewritten/"];
    PER_WORKTREE.iter().any(|prefix| name.starts_with(prefix))
}

fn should_pack(name: &BStr, options: &PackRefsOptions) -> bool {
    if is_per_worktree(name) {
        return false;
    }
    options.all || name.starts_with(b"refs/tags/")
}

/// git's `parse_loose_ref_contents()` for a ref that is not symbolic: the id, if the file
/// holds one followed by nothing or white space.
fn loose_value(data: &[u8]) -> Option<ObjectId> {
    let hex = data.get(..40)?;
    if data.get(40).is_some_and(|b| !b.is_ascii_whitespace()) {
        return None;
    }
    ObjectId::from_hex(hex).ok()
}

/// The loose refs below `dir` (the directory of `prefix`) that hold an object id and have a
/// valid name, as git's loose-ref cache reads them: names starting with `.` and lock files
/// are skipped; symbolic refs, unreadable refs and bad names are broken and left out.
fn collect_loose(dir: &Path, prefix: &[u8], out: &mut Vec<(BString, ObjectId)>, depth: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let file_name = entry.file_name();
        let file_name = gix_path::os_str_into_bstr(&file_name)
            .map(ToOwned::to_owned)
            .unwrap_or_default();
        if file_name.is_empty() || file_name.starts_with(b".") || file_name.ends_with(b".lock") {
            continue;
        }
        let mut name = BString::from(prefix);
        name.extend_from_slice(&file_name);
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // As git: a symbolic link is followed to a directory; one whose text is `refs/…` is
        // an old-style symbolic ref, never packed; any other is read through.
        let is_dir = kind.is_dir() || (kind.is_symlink() && path.is_dir());
        if !is_dir && kind.is_symlink() {
            if let Ok(target) = std::fs::read_link(&path) {
                if target.as_os_str().as_encoded_bytes().starts_with(b"refs/") {
                    continue;
                }
            }
        }
        if is_dir {
            if depth < 256 {
                name.push(b'/');
                collect_loose(&path, &name, out, depth + 1);
            }
            continue;
        }
        if gix_validate::reference::name(name.as_ref()).is_err() {
            tracing::debug!(%name, "ignoring a loose ref with a bad name");
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        match loose_value(&data) {
            Some(id) => out.push((name, id)),
            None => {
                if !data.starts_with(b"ref:") {
                    tracing::debug!(%name, "ignoring a broken loose ref");
                }
            }
        }
    }
}

/// git's `prune_ref()`: delete the loose `name` under its lock if it still holds `expected`,
/// then its empty parent directories. Whether it was deleted.
fn prune_loose(
    git_dir: &Path,
    name: &BStr,
    expected: &ObjectId,
    timeout: gix_lock::acquire::Fail,
) -> bool {
    let Ok(relative) = gix_path::from_bstr(name) else {
        return false;
    };
    let path = git_dir.join(relative);
    let marker = match gix_lock::Marker::acquire_to_hold_resource(&path, timeout, None, 0) {
        Ok(marker) => marker,
        Err(err) => {
            tracing::warn!(%name, %err, "cannot lock ref '{name}' to prune it");
            return false;
        }
    };
    let deleted = match std::fs::read(&path) {
        Ok(data) => match loose_value(&data) {
            Some(id) if id == *expected => match std::fs::remove_file(&path) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(%name, %err, "could not delete the loose ref");
                    false
                }
            },
            Some(id) => {
                tracing::warn!(
                    %name,
                    "cannot lock ref '{name}': is at {id} but expected {expected}"
                );
                false
            }
            None => false,
        },
        // Deleted meanwhile (the packed value stands) or unreadable: nothing to prune.
        Err(_) => false,
    };
    drop(marker);
    if deleted {
        remove_empty_parents(git_dir, name);
    }
    deleted
}

/// git's `try_remove_empty_parents()`: remove the empty directories above ref `name`,
/// deepest first, sparing `refs/` and its immediate subdirectories (`refs/heads/`, …).
fn remove_empty_parents(git_dir: &Path, name: &BStr) {
    let components: Vec<&[u8]> = name.split(|&b| b == b'/').collect();
    // `refs/x/` and above stay; the ref itself is the last component.
    for keep in (3..components.len()).rev() {
        let dir = components[..keep].join(&b'/');
        let Ok(relative) = gix_path::from_byte_slice(&dir) else {
            return;
        };
        if std::fs::remove_dir(git_dir.join(relative)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
