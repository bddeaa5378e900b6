//! The quarantine: a directory inside the object store that holds a push's objects until the
//! push is accepted, its migration into the repository, and the removal of stale ones.

use super::{IngestError, OBJECT_HASH, QUARANTINE_PREFIX};

use std::{
    collections::hash_map::RandomState,
    fs::{self, File},
    hash::{BuildHasher, Hasher},
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A directory inside a repository's object store that receives a push's objects until the push
/// is accepted.
///
/// Its name is `<objects>/tmp_objdir-incoming-XXXXXX` (like git's). It holds `pack/` for the
/// received pack and `info/alternates` naming the repository's object directory, so an object
/// database opened on [`path()`](Self::path) ([`objects()`](Self::objects)) sees the quarantine
/// and the repository together. Hooks get the same view through `GIT_QUARANTINE_PATH` /
/// `GIT_OBJECT_DIRECTORY` = [`path()`](Self::path) and `GIT_ALTERNATE_OBJECT_DIRECTORIES` =
/// [`objects_dir()`](Self::objects_dir).
///
/// Dropping a quarantine that was not [migrated](Self::migrate) deletes it with everything in it.
#[derive(Debug)]
pub struct Quarantine {
    pub(super) path: PathBuf,
    pub(super) objects_dir: PathBuf,
    pub(super) migrated: bool,
}

impl Quarantine {
    /// Create a new, empty quarantine inside `objects_dir`, the repository's `objects` directory.
    pub fn create(objects_dir: &Path) -> io::Result<Self> {
        let objects_dir = objects_dir.canonicalize()?;
        let alternate = objects_dir.as_os_str().as_encoded_bytes().to_vec();
        if alternate.contains(&b'\n') || alternate.starts_with(b"\"") || alternate.starts_with(b"#")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the object directory {} cannot be named in an alternates file",
                    objects_dir.display()
                ),
            ));
        }
        let mut attempt = 0u32;
        let path = loop {
            let path = objects_dir.join(format!("{QUARANTINE_PREFIX}{}", random_suffix(attempt)));
            match fs::create_dir(&path) {
                Ok(()) => break path,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        };
        // From here on, dropping `quarantine` removes the directory again.
        let quarantine = Quarantine {
            path,
            objects_dir,
            migrated: false,
        };
        fs::create_dir(quarantine.path.join("pack"))?;
        fs::create_dir(quarantine.path.join("info"))?;
        let mut alternates = alternate;
        alternates.push(b'\n');
        fs::write(quarantine.path.join("info").join("alternates"), alternates)?;
        Ok(quarantine)
    }

    /// The quarantine directory: an object directory of its own (`GIT_QUARANTINE_PATH`,
    /// `GIT_OBJECT_DIRECTORY` for hooks).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The repository's object directory (`GIT_ALTERNATE_OBJECT_DIRECTORIES` for hooks).
    pub fn objects_dir(&self) -> &Path {
        &self.objects_dir
    }

    /// An object database that sees the quarantine and the repository (and the repository's
    /// own alternates).
    pub fn objects(&self) -> io::Result<gix_odb::Handle> {
        gix_odb::at(&self.path, OBJECT_HASH)
    }

    /// Move everything received into the repository and delete the quarantine.
    ///
    /// Loose objects go first, then pack files in git's order (`.keep`, `.pack`, `.rev`, then
    /// `.idx`), so a reader never sees an index whose pack is not there yet. A file that already
    /// exists in the repository is left alone (names are content hashes). On error, whatever was
    /// not moved yet is deleted with the quarantine; a pack moved without its index is invisible.
    pub fn migrate(mut self) -> Result<(), IngestError> {
        self.migrate_files()?;
        self.migrated = true;
        if let Err(err) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "could not remove the migrated quarantine");
        }
        Ok(())
    }

    pub(super) fn migrate_files(&self) -> Result<(), IngestError> {
        let read_dir = |dir: &Path| {
            fs::read_dir(dir).map_err(|source| IngestError::Migrate {
                from: dir.to_owned(),
                to: self.objects_dir.clone(),
                source,
            })
        };
        // Loose objects, in case a hook wrote some.
        for entry in read_dir(&self.path)? {
            let entry = entry.map_err(|source| IngestError::Migrate {
                from: self.path.clone(),
                to: self.objects_dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let is_fanout = name.len() == 2
                && name
                    .as_encoded_bytes()
                    .iter()
                    .all(|byte| byte.is_ascii_hexdigit());
            if !is_fanout || !entry.path().is_dir() {
                continue;
            }
            let target_dir = self.objects_dir.join(&name);
            for object in read_dir(&entry.path())? {
                let object = object.map_err(|source| IngestError::Migrate {
                    from: entry.path(),
                    to: target_dir.clone(),
                    source,
                })?;
                fs::create_dir_all(&target_dir).map_err(|source| IngestError::Migrate {
                    from: object.path(),
                    to: target_dir.clone(),
                    source,
                })?;
                move_file(&object.path(), &target_dir.join(object.file_name()))?;
            }
        }

        let pack_dir = self.path.join("pack");
        let target_dir = self.objects_dir.join("pack");
        let mut files = Vec::new();
        for entry in read_dir(&pack_dir)? {
            let entry = entry.map_err(|source| IngestError::Migrate {
                from: pack_dir.clone(),
                to: target_dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("tmp_") || !entry.path().is_file() {
                continue;
            }
            files.push((pack_file_priority(name), name.to_owned()));
        }
        if files.is_empty() {
            return Ok(());
        }
        files.sort();
        fs::create_dir_all(&target_dir).map_err(|source| IngestError::Migrate {
            from: pack_dir.clone(),
            to: target_dir.clone(),
            source,
        })?;
        for (_, name) in &files {
            move_file(&pack_dir.join(name), &target_dir.join(name))?;
        }
        // Make the renames durable before refs point at the new objects.
        if let Ok(dir) = File::open(&target_dir) {
            dir.sync_all().ok();
        }
        Ok(())
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        if self.migrated {
            return;
        }
        if let Err(err) = fs::remove_dir_all(&self.path) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), %err, "could not remove the quarantine");
            }
        }
    }
}

/// Remove the quarantine directories in `objects_dir` (a repository's `objects`) that nothing
/// changed for longer than `expiry`: what pushes left behind when their server was killed
/// (SIGKILL, the OOM killer, a power cut) before it could delete them. A quarantine's last
/// change is the newest modification time of the directory, its entries and their entries
/// (a pack being received grows in `pack/`), so a push that is still receiving or writing is
/// not taken for dead. Returns how many directories were removed; one that cannot be
/// examined or removed is logged and left.
///
/// A push's quarantine that is merely waiting (a hook running for longer than `expiry`)
/// looks the same as a dead one: choose `expiry` longer than any push may take.
pub fn remove_stale_quarantines(objects_dir: &Path, expiry: Duration) -> io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in fs::read_dir(objects_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !name
            .as_encoded_bytes()
            .starts_with(QUARANTINE_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        // Not following symlinks: only a real directory is one of ours.
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => {}
            _ => continue,
        }
        let last_change = match newest_change(&path, 2) {
            Ok(time) => time,
            Err(err) => {
                tracing::debug!(path = %path.display(), %err, "could not examine a quarantine");
                continue;
            }
        };
        // A time in the future is not old.
        let stale = now
            .duration_since(last_change)
            .is_ok_and(|age| age > expiry);
        if !stale {
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a stale quarantine");
                removed += 1;
            }
            // Another push removed it first.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "could not remove a stale quarantine");
            }
        }
    }
    Ok(removed)
}

/// The newest modification time of `path` and, for a directory, of what is in it, `depth`
/// levels down (symlinks are not followed).
pub(super) fn newest_change(path: &Path, depth: u32) -> io::Result<SystemTime> {
    let metadata = fs::symlink_metadata(path)?;
    let mut newest = metadata.modified()?;
    if depth > 0 && metadata.is_dir() {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            match newest_change(&entry.path(), depth - 1) {
                Ok(time) => newest = newest.max(time),
                // Removed meanwhile (a temporary file renamed, say): it changed just now.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    newest = newest.max(SystemTime::now());
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(newest)
}

/// Git's `pack_copy_priority()`: the order in which pack files become visible.
pub(super) fn pack_file_priority(name: &str) -> u8 {
    if name.ends_with(".keep") {
        1
    } else if name.ends_with(".pack") {
        2
    } else if name.ends_with(".rev") {
        3
    } else if name.ends_with(".idx") {
        5
    } else {
        4
    }
}

pub(super) fn move_file(from: &Path, to: &Path) -> Result<(), IngestError> {
    if to.exists() {
        // Same name, same content: keep the repository's copy.
        fs::remove_file(from).ok();
        return Ok(());
    }
    fs::rename(from, to).map_err(|source| IngestError::Migrate {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    })
}

/// Six characters that make a file name unique enough, without a random number crate.
pub(super) fn random_suffix(attempt: u32) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u32(attempt);
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    let mut bits = hasher.finish();
    (0..6)
        .map(|_| {
            let character = ALPHABET[(bits % ALPHABET.len() as u64) as usize];
            bits /= ALPHABET.len() as u64;
            char::from(character)
        })
        .collect()
}
