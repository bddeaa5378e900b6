//! Pack ingestion: the receiving half of a push.
//!
//! A push delivers one pack stream. [`ingest_pack()`] reads it, completes it if it is thin (its
//! ref-delta bases are taken from the repository), indexes it with several threads and writes
//! `pack-<checksum>.pack` and `.idx` into a [`Quarantine`]: a directory inside the repository's
//! object store that readers of the repository never look at. With [`FsckObjects::On`] every
//! commit, tree and tag of the pack is checked like git's `receive.fsckObjects` does.
//! [`check_connectivity()`] then proves that every new ref tip has its complete history in
//! quarantine + repository. Only after the caller (and its `pre-receive` hook) accepted the push
//! does [`Quarantine::migrate()`] move the files into the repository; dropping the quarantine
//! instead deletes everything that was received.
//!
//! Architecture invariant: nothing outside the quarantine directory is written before
//! [`Quarantine::migrate()`]; every read from the client is bounded by [`IngestOptions`], and
//! the stream is read exactly up to the pack's trailer, never beyond.
//!
//! Only SHA-1 repositories are supported.

use std::{
    cell::RefCell,
    collections::{hash_map::RandomState, BinaryHeap},
    fmt,
    fs::{self, File},
    hash::{BuildHasher, Hasher},
    io::{self, BufRead, Read, Seek, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gix_hash::{oid, ObjectId};
use gix_hashtable::{HashMap, HashSet};
use gix_object::Kind;
use gix_pack::data::input as pack_input;

/// The only hash this module handles.
const OBJECT_HASH: gix_hash::Kind = gix_hash::Kind::Sha1;
/// Bytes of a pack header: `PACK`, version, object count.
const PACK_HEADER_LEN: usize = 12;
/// The prefix git's `tmp_objdir` uses for a push's quarantine, so git's own tools (`git gc`,
/// `git prune`) recognise leftovers.
const QUARANTINE_PREFIX: &str = "tmp_objdir-incoming-";
/// At most this many entries are reserved up front for the delta tree, whatever the pack header
/// announces (the announcement comes from the client).
const RESERVED_ENTRIES_LIMIT: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Quarantine
// ---------------------------------------------------------------------------------------------

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
    path: PathBuf,
    objects_dir: PathBuf,
    migrated: bool,
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

    fn migrate_files(&self) -> Result<(), IngestError> {
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
fn newest_change(path: &Path, depth: u32) -> io::Result<SystemTime> {
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
fn pack_file_priority(name: &str) -> u8 {
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

fn move_file(from: &Path, to: &Path) -> Result<(), IngestError> {
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
fn random_suffix(attempt: u32) -> String {
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

// ---------------------------------------------------------------------------------------------
// Ingestion
// ---------------------------------------------------------------------------------------------

/// Whether to check the objects of an incoming pack (`receive.fsckObjects`,
/// `transfer.fsckObjects`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum FsckObjects {
    /// Accept whatever objects hash correctly.
    #[default]
    Off,
    /// Refuse the pack if a commit, tree or tag in it is malformed (git's `fsck --strict`
    /// rules for objects; see [`FsckProblem`]).
    On,
}

/// Limits and choices for [`ingest_pack()`]. The default has no limits and no fsck.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestOptions {
    /// Refuse a pack stream longer than this many bytes (git's `receive.maxInputSize`).
    pub max_input_bytes: Option<u64>,
    /// Refuse a pack whose header announces more objects than this, before reading any entry.
    pub max_objects: Option<u32>,
    /// Check commits, trees and tags of the pack.
    pub fsck: FsckObjects,
    /// The most threads to use for resolving deltas; `None` uses every core.
    pub thread_limit: Option<usize>,
    /// Refuse a pack with an object larger than this many bytes: an entry whose header
    /// declares more, or a delta whose header claims a larger result, is refused as it is
    /// received, before anything is allocated for it. Git has no such limit; `None` means none.
    pub max_object_bytes: Option<u64>,
    /// Blobs (whole, not deltas) larger than this many bytes are hashed while they are
    /// inflated, never held in memory (git's `core.bigFileThreshold`); `None` holds every
    /// object in memory once while its id is computed.
    pub big_file_threshold: Option<u64>,
}

/// What [`ingest_pack()`] wrote into the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Objects in the written pack: those received plus the bases added to complete a thin pack.
    pub objects: u32,
    /// Of those, delta bases copied from the repository to complete a thin pack.
    pub completed_bases: u32,
    /// `pack-<checksum>.pack` in the quarantine; `None` for a pack without objects, for which
    /// nothing is written.
    pub pack: Option<PathBuf>,
    /// `pack-<checksum>.idx` beside [`pack`](Self::pack).
    pub index: Option<PathBuf>,
    /// The checksum of the written pack (which differs from the received one when bases were
    /// added).
    pub checksum: ObjectId,
    /// Bytes read from the input: exactly the received pack.
    pub bytes_read: u64,
    /// Blobs above [`IngestOptions::big_file_threshold`] that were hashed while streaming and
    /// never held in memory, sorted: whoever reads them should stream them too.
    pub large_blobs: Vec<ObjectId>,
}

/// The error returned by [`ingest_pack()`] and [`Quarantine::migrate()`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The stream ended before the pack's trailer.
    #[error("the pack stream ended early, after {bytes_read} bytes")]
    Truncated {
        /// Bytes read before the end.
        bytes_read: u64,
    },
    /// The stream does not start with a pack header git would write.
    #[error("the data does not start with a valid pack header")]
    InvalidHeader {
        /// What is wrong with it.
        #[source]
        source: gix_error::Error,
    },
    /// More bytes than [`IngestOptions::max_input_bytes`] (git's message).
    #[error("pack exceeds maximum allowed size")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The header announces more objects than [`IngestOptions::max_objects`].
    #[error("the pack announces {announced} objects, more than the {limit} allowed")]
    TooManyObjects {
        /// The count in the header.
        announced: u32,
        /// The limit.
        limit: u32,
    },
    /// An object is larger than [`IngestOptions::max_object_bytes`].
    #[error("the pack entry at offset {offset} is an object of {size} bytes, more than the {limit} allowed")]
    ObjectTooLarge {
        /// Where the entry starts in the received pack.
        offset: u64,
        /// The size its header declares.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A delta claims a result larger than [`IngestOptions::max_object_bytes`].
    #[error("the delta at offset {offset} of the pack claims a result of {size} bytes, more than the {limit} allowed")]
    DeltaTooLarge {
        /// Where the entry starts in the received pack.
        offset: u64,
        /// The result size the delta declares.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry header encodes its size with more bytes than needed.
    #[error("the pack entry at offset {offset} has a non-canonical header")]
    NonCanonicalEntry {
        /// Where the entry starts in the received pack.
        offset: u64,
    },
    /// The trailer of a pack without objects is not the checksum of its header.
    #[error("the pack checksum {actual} does not match the pack ({expected})")]
    ChecksumMismatch {
        /// The checksum of the received bytes.
        expected: ObjectId,
        /// The checksum the stream ended with.
        actual: ObjectId,
    },
    /// The pack is corrupt: bad checksum, undecodable entry, unresolvable delta…
    #[error("the pack could not be indexed")]
    InvalidPack {
        /// What gitoxide found.
        #[source]
        source: gix_error::Error,
    },
    /// An object of the pack failed the fsck check.
    #[error("object {id} ({kind}) failed fsck: {problem}")]
    Fsck {
        /// The object.
        id: ObjectId,
        /// Its kind.
        kind: Kind,
        /// What is wrong with it.
        problem: FsckProblem,
    },
    /// The interrupt flag was raised.
    #[error("receiving the pack was interrupted")]
    Interrupted,
    /// Reading the stream failed.
    #[error("could not read the pack stream")]
    Read {
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// Writing into the quarantine failed.
    #[error("could not write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The write error.
        #[source]
        source: io::Error,
    },
    /// Moving a file out of the quarantine failed.
    #[error("could not move {} to {}", from.display(), to.display())]
    Migrate {
        /// The file or directory in the quarantine.
        from: PathBuf,
        /// Where it should have gone.
        to: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Read one pack from `input`, complete it from `repository_objects` if it is thin, index it
/// and write it into `quarantine`.
///
/// Reads exactly up to the end of the pack's trailer. On error nothing written by this call is
/// left in the quarantine (and the caller drops the quarantine anyway).
pub fn ingest_pack(
    input: &mut dyn BufRead,
    repository_objects: &gix_odb::Handle,
    quarantine: &Quarantine,
    options: &IngestOptions,
    should_interrupt: &AtomicBool,
) -> Result<IngestOutcome, IngestError> {
    let mut input = PackInput {
        inner: input,
        consumed: 0,
        limit: options.max_input_bytes,
        exceeded: false,
        ended: false,
    };
    let mut files = Cleanup::default();
    let result = ingest(
        &mut input,
        repository_objects,
        quarantine,
        options,
        should_interrupt,
        &mut files,
    );
    let result = match result {
        _ if input.exceeded => Err(IngestError::TooLarge {
            limit: options.max_input_bytes.unwrap_or_default(),
        }),
        Err(_) if should_interrupt.load(Ordering::Relaxed) => Err(IngestError::Interrupted),
        // Whatever gitoxide made of it (an I/O error, an incomplete zlib stream…), the pack
        // did not fit into what the client sent.
        Err(IngestError::InvalidPack { .. } | IngestError::InvalidHeader { .. }) if input.ended => {
            Err(IngestError::Truncated {
                bytes_read: input.consumed,
            })
        }
        other => other,
    };
    if result.is_ok() {
        files.disarm();
    }
    result
}

fn ingest(
    input: &mut PackInput<'_>,
    repository_objects: &gix_odb::Handle,
    quarantine: &Quarantine,
    options: &IngestOptions,
    should_interrupt: &AtomicBool,
    files: &mut Cleanup,
) -> Result<IngestOutcome, IngestError> {
    let read_error = |source: io::Error, input: &PackInput<'_>| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            IngestError::Truncated {
                bytes_read: input.consumed,
            }
        } else {
            IngestError::Read { source }
        }
    };
    let mut header = [0u8; PACK_HEADER_LEN];
    if let Err(err) = input.read_exact(&mut header) {
        return Err(read_error(err, input));
    }
    let (version, announced) = gix_pack::data::header::decode(&header)
        .map_err(|source| IngestError::InvalidHeader { source })?;
    if let Some(limit) = options.max_objects {
        if announced > limit {
            return Err(IngestError::TooManyObjects { announced, limit });
        }
    }

    if announced == 0 {
        // gitoxide's entry iterator stops before the trailer of an empty pack.
        let mut trailer = ObjectId::null(OBJECT_HASH);
        if let Err(err) = input.read_exact(trailer.as_mut_slice()) {
            return Err(read_error(err, input));
        }
        let mut hasher = gix_hash::hasher(OBJECT_HASH);
        hasher.update(&header);
        let expected = hasher
            .try_finalize()
            .map_err(|source| IngestError::InvalidPack { source })?;
        if expected != trailer {
            return Err(IngestError::ChecksumMismatch {
                expected,
                actual: trailer,
            });
        }
        return Ok(IngestOutcome {
            objects: 0,
            completed_bases: 0,
            pack: None,
            index: None,
            checksum: trailer,
            bytes_read: input.consumed,
            large_blobs: Vec::new(),
        });
    }

    let pack_dir = quarantine.path.join("pack");
    let suffix = random_suffix(0);
    let temporary_pack = pack_dir.join(format!("tmp_pack_{suffix}"));
    let temporary_index = pack_dir.join(format!("tmp_idx_{suffix}"));
    let create = |path: &Path, files: &mut Cleanup| {
        files.0.push(path.to_owned());
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| IngestError::Write {
                path: path.to_owned(),
                source,
            })
    };
    let mut pack_file = PackFile(io::BufWriter::with_capacity(
        64 * 1024,
        create(&temporary_pack, files)?,
    ));
    let mut index_file = io::BufWriter::new(create(&temporary_index, files)?);

    let lookup = BaseLookup {
        objects: repository_objects,
        found: RefCell::default(),
        missing: RefCell::default(),
    };
    let mut stream_problem = None;
    let large_blobs = RefCell::new(LargeBlobs {
        threshold: options.big_file_threshold,
        ..LargeBlobs::default()
    });
    let indexed = {
        let entries = pack_input::BytesToEntriesIter::new_from_header(
            io::Cursor::new(header).chain(&mut *input),
            pack_input::Mode::Verify,
            pack_input::EntryDataMode::KeepAndCrc32,
            OBJECT_HASH,
        )
        .map_err(|source| IngestError::InvalidHeader { source })?;
        let entries = CheckedEntries {
            inner: entries,
            problem: &mut stream_problem,
            should_interrupt,
            max_object_bytes: options.max_object_bytes,
        };
        let entries = pack_input::LookupRefDeltaObjectsIter::new(
            entries,
            &lookup,
            gix_zlib::Compression::BEST_SPEED,
        );
        let entries =
            pack_input::EntriesToBytesIter::new(entries, &mut pack_file, version, OBJECT_HASH);
        // After the rewrite, so that offsets are those of the written pack.
        let mut entries = StreamLargeBlobs {
            inner: entries,
            blobs: &large_blobs,
        };
        let resolver_path = temporary_pack.clone();
        let large_blobs = &large_blobs;
        gix_pack::index::write_data_iter_to_stream(
            gix_pack::index::Version::V2,
            move || {
                let pack = gix_pack::data::File::at(&resolver_path, OBJECT_HASH)
                    .map_err(io::Error::other)?;
                // Called once every entry went by: which blobs are still needed as bases
                // is known now.
                let streamed = large_blobs.borrow_mut().not_needed_as_bases();
                Ok((entry_bytes, PackWithStreamedBlobs { pack, streamed }))
            },
            &mut entries,
            options.thread_limit,
            &mut gix_utils::progress::Discard,
            &mut index_file,
            should_interrupt,
            OBJECT_HASH,
            allocation_limit(options),
            version,
        )
    };
    if let Some(problem) = stream_problem {
        return Err(problem);
    }
    let indexed = indexed.map_err(|source| IngestError::InvalidPack { source })?;

    let sync = |file: &File, path: &Path| {
        file.sync_all().map_err(|source| IngestError::Write {
            path: path.to_owned(),
            source,
        })
    };
    pack_file.0.flush().map_err(|source| IngestError::Write {
        path: temporary_pack.clone(),
        source,
    })?;
    sync(pack_file.0.get_ref(), &temporary_pack)?;
    index_file.flush().map_err(|source| IngestError::Write {
        path: temporary_index.clone(),
        source,
    })?;
    sync(index_file.get_ref(), &temporary_index)?;
    drop(pack_file);
    drop(index_file);

    // gitoxide indexed each streamed blob as an empty one: give them their ids.
    let streamed = large_blobs.into_inner().streamed;
    if !streamed.is_empty() {
        let corrected = pack_dir.join(format!("tmp_idx_{suffix}_large"));
        files.0.push(corrected.clone());
        correct_index(&temporary_index, &corrected, &streamed)?;
        fs::rename(&corrected, &temporary_index).map_err(|source| IngestError::Write {
            path: temporary_index.clone(),
            source,
        })?;
    }

    let pack_path = pack_dir.join(format!("pack-{}.pack", indexed.data_hash.to_hex()));
    let index_path = pack_path.with_extension("idx");
    for (from, to) in [
        (&temporary_pack, &pack_path),
        (&temporary_index, &index_path),
    ] {
        files.0.push(to.clone());
        fs::rename(from, to).map_err(|source| IngestError::Write {
            path: to.clone(),
            source,
        })?;
    }

    let completed_bases = lookup.found.into_inner();
    if options.fsck == FsckObjects::On {
        // Bases copied from the repository were accepted before; git does not check them either.
        let skip: HashSet<ObjectId> = completed_bases.iter().copied().collect();
        fsck_pack(
            &index_path,
            &pack_path,
            &skip,
            &streamed,
            options,
            should_interrupt,
        )?;
    }

    Ok(IngestOutcome {
        objects: indexed.num_objects,
        completed_bases: u32::try_from(completed_bases.len()).unwrap_or(u32::MAX),
        pack: Some(pack_path),
        index: Some(index_path),
        checksum: indexed.data_hash,
        bytes_read: input.consumed,
        large_blobs: {
            let mut ids: Vec<ObjectId> = streamed.into_values().collect();
            ids.sort();
            ids
        },
    })
}

/// gitoxide's limit for one allocation while it resolves objects: a second line of defence
/// behind the size checks of [`CheckedEntries`], so never below what its delta tree reserves
/// up front.
fn allocation_limit(options: &IngestOptions) -> Option<usize> {
    const DELTA_TREE_RESERVATION: usize = RESERVED_ENTRIES_LIMIT * 128;
    options.max_object_bytes.map(|limit| {
        usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .max(DELTA_TREE_RESERVATION)
    })
}

/// The written pack, as gitoxide's delta resolution reads it: blobs that were hashed while
/// streaming read as empty blobs, so that resolving them allocates nothing. Only blobs no
/// delta is based on are among them; the ids computed for them are replaced afterwards
/// ([`correct_index()`]), and fsck skips blobs.
struct PackWithStreamedBlobs {
    pack: gix_pack::data::File,
    streamed: ByOffset<ObjectId>,
}

/// Pack offsets to what is known about the entry there (gix-hashtable's maps only take ids).
type ByOffset<V> = std::collections::HashMap<u64, V, RandomState>;

/// A pack entry: an empty blob (header, then an empty zlib stream).
const EMPTY_BLOB_ENTRY: &[u8] = &[0x30, 0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];

/// The pack entry at `range` of the freshly written pack.
fn entry_bytes(range: gix_pack::data::EntryRange, data: &PackWithStreamedBlobs) -> Option<&[u8]> {
    if data.streamed.contains_key(&range.start) {
        return Some(EMPTY_BLOB_ENTRY);
    }
    data.pack.entry_slice(range)
}

/// Blobs above the big-file threshold, hashed as they go by on their way into the pack
/// (git's index-pack does the same), and what deltas are based on.
#[derive(Default)]
struct LargeBlobs {
    /// [`IngestOptions::big_file_threshold`].
    threshold: Option<u64>,
    /// Offset in the written pack → id.
    streamed: ByOffset<ObjectId>,
    /// Streamed blobs an ofs-delta is based on.
    ofs_bases: std::collections::HashSet<u64, RandomState>,
    /// The bases of ref-deltas left after thin-pack completion (in-pack bases).
    ref_bases: HashSet<ObjectId>,
}

impl LargeBlobs {
    fn observe(&mut self, entry: &pack_input::Entry) -> io::Result<()> {
        use gix_pack::data::entry::Header;
        match entry.header {
            Header::Blob
                if self
                    .threshold
                    .is_some_and(|threshold| entry.decompressed_size > threshold) =>
            {
                let compressed = entry.compressed.as_deref().ok_or_else(|| {
                    io::Error::other("the compressed bytes of a pack entry were not kept")
                })?;
                let id = hash_while_inflating(Kind::Blob, entry.decompressed_size, compressed)?;
                self.streamed.insert(entry.pack_offset, id);
            }
            Header::OfsDelta { base_distance } => {
                if let Some(base) = entry.pack_offset.checked_sub(base_distance) {
                    if self.streamed.contains_key(&base) {
                        self.ofs_bases.insert(base);
                    }
                }
            }
            Header::RefDelta { base_id } => {
                self.ref_bases.insert(base_id);
            }
            _ => {}
        }
        Ok(())
    }

    /// The streamed blobs that gitoxide need not read: a delta's base is held in memory to
    /// apply the delta (git does the same), within [`IngestOptions::max_object_bytes`].
    fn not_needed_as_bases(&mut self) -> ByOffset<ObjectId> {
        let (ofs_bases, ref_bases) = (&self.ofs_bases, &self.ref_bases);
        self.streamed
            .retain(|offset, id| !ofs_bases.contains(offset) && !ref_bases.contains(id));
        self.streamed.clone()
    }
}

/// The id of an object of `kind` and `size` whose zlib stream is `compressed`, computed while
/// inflating it a buffer at a time.
fn hash_while_inflating(kind: Kind, size: u64, compressed: &[u8]) -> io::Result<ObjectId> {
    let mut hasher = gix_hash::hasher(OBJECT_HASH);
    hasher.update(&gix_object::encode::loose_header(kind, size));
    let mut inflate = flate2::bufread::ZlibDecoder::new(compressed);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let read = inflate.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    if total != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the object inflates to {total} bytes, not the {size} its header declares"),
        ));
    }
    hasher.try_finalize().map_err(io::Error::other)
}

/// The entries as gitoxide's indexer sees them, after each went by [`LargeBlobs`].
struct StreamLargeBlobs<'a, I> {
    inner: I,
    blobs: &'a RefCell<LargeBlobs>,
}

impl<I> Iterator for StreamLargeBlobs<'_, I>
where
    I: Iterator<Item = gix_error::Result<pack_input::Entry>>,
{
    type Item = gix_error::Result<pack_input::Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.inner.next()? {
            Ok(entry) => entry,
            Err(err) => return Some(Err(err)),
        };
        if let Err(err) = self.blobs.borrow_mut().observe(&entry) {
            let offset = entry.pack_offset;
            return Some(Err(gix_error::message!(
                "the large blob at offset {offset} could not be hashed: {err}"
            )
            .into()));
        }
        Some(Ok(entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// Rewrite the index at `from` into `to` with the ids of `streamed` (by pack offset) in place
/// of those gitoxide computed for them.
fn correct_index(from: &Path, to: &Path, streamed: &ByOffset<ObjectId>) -> Result<(), IngestError> {
    let index = gix_pack::index::File::at(from, OBJECT_HASH)
        .map_err(|source| IngestError::InvalidPack { source })?;
    let mut entries: Vec<(ObjectId, u64, u32)> = index
        .iter()
        .map(|entry| {
            let id = streamed
                .get(&entry.pack_offset)
                .copied()
                .unwrap_or(entry.oid);
            (id, entry.pack_offset, entry.crc32.unwrap_or_default())
        })
        .collect();
    entries.sort_unstable();
    let write_error = |source| IngestError::Write {
        path: to.to_owned(),
        source,
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(write_error)?;
    let mut out = io::BufWriter::new(file);
    write_index_v2(&mut out, &entries, &index.pack_checksum()).map_err(write_error)?;
    let file = out
        .into_inner()
        .map_err(|err| write_error(err.into_error()))?;
    file.sync_all().map_err(write_error)
}

/// A version 2 pack index of `entries` (id, pack offset, CRC32), sorted by id.
fn write_index_v2(
    out: &mut dyn Write,
    entries: &[(ObjectId, u64, u32)],
    pack_checksum: &oid,
) -> io::Result<()> {
    struct Hashing<'a> {
        out: &'a mut dyn Write,
        hasher: gix_hash::Hasher,
    }
    impl Hashing<'_> {
        fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.hasher.update(bytes);
            self.out.write_all(bytes)
        }
    }
    let mut out = Hashing {
        out,
        hasher: gix_hash::hasher(OBJECT_HASH),
    };
    out.put(b"\xfftOc")?;
    out.put(&2u32.to_be_bytes())?;
    let mut fanout = [0u32; 256];
    for (id, _, _) in entries {
        fanout[usize::from(id.as_slice()[0])] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        out.put(&total.to_be_bytes())?;
    }
    for (id, _, _) in entries {
        out.put(id.as_slice())?;
    }
    for (_, _, crc32) in entries {
        out.put(&crc32.to_be_bytes())?;
    }
    let mut large_offsets = Vec::new();
    for (_, offset, _) in entries {
        match u32::try_from(*offset)
            .ok()
            .filter(|small| small & 0x8000_0000 == 0)
        {
            Some(small) => out.put(&small.to_be_bytes())?,
            None => {
                let position = u32::try_from(large_offsets.len())
                    .map_err(|_| io::Error::other("too many large offsets"))?;
                out.put(&(0x8000_0000 | position).to_be_bytes())?;
                large_offsets.push(*offset);
            }
        }
    }
    for offset in large_offsets {
        out.put(&offset.to_be_bytes())?;
    }
    out.put(pack_checksum.as_bytes())?;
    let checksum = out.hasher.try_finalize().map_err(io::Error::other)?;
    out.out.write_all(checksum.as_slice())?;
    out.out.flush()
}

/// Files to delete unless ingestion succeeds.
#[derive(Default)]
struct Cleanup(Vec<PathBuf>);

impl Cleanup {
    fn disarm(&mut self) {
        self.0.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            fs::remove_file(path).ok();
        }
    }
}

/// The client's stream, counted and bounded. Reads go through [`BufRead`], so nothing beyond
/// what the pack parser consumes is taken from the underlying reader.
struct PackInput<'a> {
    inner: &'a mut dyn BufRead,
    consumed: u64,
    limit: Option<u64>,
    exceeded: bool,
    /// The underlying reader reported its end.
    ended: bool,
}

impl BufRead for PackInput<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // One byte more than the limit may be consumed, so that exceeding it is noticed. The
        // answer only depends on `consumed`, so repeating the call before `consume()` (which
        // gitoxide does) gives the same answer.
        let allowance = match self.limit {
            Some(limit) => limit.saturating_add(1).saturating_sub(self.consumed),
            None => u64::MAX,
        };
        if allowance == 0 {
            self.exceeded = true;
            return Err(io::Error::other("pack exceeds maximum allowed size"));
        }
        let buffer = self.inner.fill_buf()?;
        if buffer.is_empty() {
            self.ended = true;
        }
        let available = usize::try_from(allowance).map_or(buffer.len(), |a| a.min(buffer.len()));
        Ok(&buffer[..available])
    }

    fn consume(&mut self, amount: usize) {
        self.consumed += amount as u64;
        if self.limit.is_some_and(|limit| self.consumed > limit) {
            self.exceeded = true;
        }
        self.inner.consume(amount);
    }
}

impl Read for PackInput<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let amount = available.len().min(out.len());
        out[..amount].copy_from_slice(&available[..amount]);
        self.consume(amount);
        Ok(amount)
    }
}

/// The written pack: gitoxide rewrites its header and hashes it, so it must be readable too.
struct PackFile(io::BufWriter<File>);

impl Write for PackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Seek for PackFile {
    fn seek(&mut self, position: io::SeekFrom) -> io::Result<u64> {
        self.0.seek(position)
    }
}

impl Read for PackFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.flush()?;
        self.0.get_mut().read(buf)
    }
}

/// Entries as received, refused when interrupted or when a header is not canonical (the pack is
/// rewritten with canonical headers, so offsets would no longer match). Also keeps the number
/// of entries reserved up front independent of what the client announced.
struct CheckedEntries<'a, I> {
    inner: I,
    problem: &'a mut Option<IngestError>,
    should_interrupt: &'a AtomicBool,
    /// [`IngestOptions::max_object_bytes`].
    max_object_bytes: Option<u64>,
}

impl<I> CheckedEntries<'_, I> {
    fn fail(&mut self, problem: IngestError) -> Option<gix_error::Result<pack_input::Entry>> {
        let message = gix_error::message!("{problem}");
        *self.problem = Some(problem);
        Some(Err(message.into()))
    }
}

impl<I> Iterator for CheckedEntries<'_, I>
where
    I: Iterator<Item = gix_error::Result<pack_input::Entry>>,
{
    type Item = gix_error::Result<pack_input::Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.problem.is_some() {
            return None;
        }
        if self.should_interrupt.load(Ordering::Relaxed) {
            return self.fail(IngestError::Interrupted);
        }
        let entry = match self.inner.next()? {
            Ok(entry) => entry,
            Err(err) => return Some(Err(err)),
        };
        if entry.header.size(entry.decompressed_size) != usize::from(entry.header_size) {
            return self.fail(IngestError::NonCanonicalEntry {
                offset: entry.pack_offset,
            });
        }
        if let Some(limit) = self.max_object_bytes {
            let offset = entry.pack_offset;
            if entry.header.is_delta() {
                // Its result is what would be allocated when the delta is applied.
                let claimed = entry.compressed.as_deref().and_then(delta_result_size);
                if let Some(size) = claimed.filter(|size| *size > limit) {
                    return self.fail(IngestError::DeltaTooLarge {
                        offset,
                        size,
                        limit,
                    });
                }
            } else if entry.decompressed_size > limit {
                return self.fail(IngestError::ObjectTooLarge {
                    offset,
                    size: entry.decompressed_size,
                    limit,
                });
            }
        }
        Some(Ok(entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.inner.size_hint().0.min(RESERVED_ENTRIES_LIMIT), None)
    }
}

/// The result size a delta declares (its second header varint, after the base size), read by
/// inflating only the start of the compressed delta. `None` if the data is too broken to say:
/// resolving the delta fails on it later.
fn delta_result_size(compressed: &[u8]) -> Option<u64> {
    // Two varints of at most 10 bytes each.
    let mut header = [0u8; 20];
    let mut inflate = flate2::Decompress::new(true);
    let mut produced = 0;
    for _ in 0..4 {
        let consumed = usize::try_from(inflate.total_in()).ok()?;
        let status = inflate
            .decompress(
                compressed.get(consumed..)?,
                &mut header[produced..],
                flate2::FlushDecompress::None,
            )
            .ok()?;
        produced = usize::try_from(inflate.total_out()).ok()?;
        if produced == header.len() || status == flate2::Status::StreamEnd {
            break;
        }
    }
    let header = &header[..produced];
    let (_base_size, rest) = decode_varint(header)?;
    decode_varint(rest).map(|(size, _)| size)
}

/// A delta header's size: 7 bits per byte, least significant first, high bit for "more".
fn decode_varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u128;
    for (index, &byte) in data.iter().enumerate().take(10) {
        value |= u128::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((u64::try_from(value).unwrap_or(u64::MAX), &data[index + 1..]));
        }
    }
    None
}

/// The repository, as seen by thin-pack completion: remembers which bases it supplied, and
/// which it does not have (so an in-pack ref-delta base is looked up once).
struct BaseLookup<'a> {
    objects: &'a gix_odb::Handle,
    found: RefCell<Vec<ObjectId>>,
    missing: RefCell<HashSet<ObjectId>>,
}

impl gix_object::Find for BaseLookup<'_> {
    fn try_find<'a>(
        &self,
        id: &oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix_error::Result<Option<gix_object::Data<'a>>> {
        if self.missing.borrow().contains(id) {
            return Ok(None);
        }
        match self.objects.try_find(id, buffer)? {
            Some(data) => {
                self.found.borrow_mut().push(id.to_owned());
                Ok(Some(data))
            }
            None => {
                self.missing.borrow_mut().insert(id.to_owned());
                Ok(None)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fsck
// ---------------------------------------------------------------------------------------------

/// Why an object was refused: git's fsck message id (`missingTree`, `treeNotSorted`, …) and
/// git's explanation.
///
/// The rules are git's `fsck.c` in strict mode (as `receive.fsckObjects` runs it: warnings are
/// errors), for commits, trees and tags: header order and format, identities and dates, tree
/// entry names (`/`, `.`, `..`, `.git` and its HFS+/NTFS spellings), zero-padded modes,
/// duplicates and sort order, `.gitmodules` symlinks. In addition, tree entry modes must be
/// ones git writes (plus the historic `100664`); git only notes other modes. Not checked: the
/// contents of `.gitmodules` blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsckProblem {
    /// Git's message id.
    pub id: &'static str,
    /// What it means.
    pub message: &'static str,
}

impl fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.message)
    }
}

const fn problem(id: &'static str, message: &'static str) -> FsckProblem {
    FsckProblem { id, message }
}

fn fsck_pack(
    index_path: &Path,
    pack_path: &Path,
    skip: &HashSet<ObjectId>,
    streamed: &ByOffset<ObjectId>,
    options: &IngestOptions,
    should_interrupt: &AtomicBool,
) -> Result<(), IngestError> {
    let invalid = |source| IngestError::InvalidPack { source };
    let index = gix_pack::index::File::at(index_path, OBJECT_HASH).map_err(invalid)?;
    let pack = gix_pack::data::File::at(pack_path, OBJECT_HASH)
        .map_err(invalid)?
        .with_alloc_limit_bytes(allocation_limit(options));
    let failure: Mutex<Option<(ObjectId, Kind, FsckProblem)>> = Mutex::new(None);
    let processor = |entry: &mut gix_pack::index::Entry,
                     _progress: &dyn gix_utils::progress::Progress,
                     context: gix_pack::cache::delta::traverse::Context<'_>|
     -> gix_error::Result {
        let Some(kind) = context.entry.header.as_kind() else {
            return Err(gix_error::message("a resolved object is still a delta").into());
        };
        if kind == Kind::Blob || skip.contains(&entry.oid) {
            return Ok(());
        }
        let Err(problem) = fsck_object(kind, context.decompressed) else {
            return Ok(());
        };
        if let Ok(mut failure) = failure.lock() {
            failure.get_or_insert((entry.oid, kind, problem));
        }
        Err(gix_error::message("object failed fsck").into())
    };
    // gitoxide's `index::File::traverse()` without its pack lookups, so that blobs hashed
    // while streaming are not inflated here either.
    let mut entries: Vec<gix_pack::index::Entry> = index.iter().collect();
    entries.sort_by_key(|entry| entry.pack_offset);
    let tree = gix_pack::cache::delta::Tree::from_offsets_in_pack(
        pack_path,
        entries.into_iter(),
        &|entry: &gix_pack::index::Entry| entry.pack_offset,
        &|id| {
            Ok(index
                .lookup(id)
                .map(|position| index.pack_offset_at_index(position)))
        },
        &mut gix_utils::progress::Discard,
        should_interrupt,
        OBJECT_HASH,
    )
    .map_err(invalid)?;
    let pack_end = pack.pack_end() as u64;
    let data = PackWithStreamedBlobs {
        pack,
        streamed: streamed.clone(),
    };
    let traversed = tree.traverse(
        entry_bytes,
        &data,
        pack_end,
        processor,
        gix_pack::cache::delta::traverse::Options {
            object_progress: Box::new(gix_utils::progress::Discard),
            size_progress: &mut gix_utils::progress::Discard,
            thread_limit: options.thread_limit,
            should_interrupt,
            object_hash: OBJECT_HASH,
            alloc_limit_bytes: allocation_limit(options),
        },
    );
    if let Some((id, kind, problem)) = failure.into_inner().ok().flatten() {
        return Err(IngestError::Fsck { id, kind, problem });
    }
    traversed.map_err(invalid)?;
    Ok(())
}

/// Check one decoded object like git's `fsck_object()` in strict mode.
///
/// Git's rules, not gitoxide's parsers: those refuse objects git accepts (a commit without a
/// message body, for one), and packgate reads commits and trees with parsers of its own that
/// follow git's.
fn fsck_object(kind: Kind, data: &[u8]) -> Result<(), FsckProblem> {
    match kind {
        Kind::Commit => fsck_commit(data),
        Kind::Tree => fsck_tree(data),
        Kind::Tag => fsck_tag(data),
        Kind::Blob => Ok(()),
    }
}

/// Git's `verify_headers()`: no NUL in the header, and a header that ends with a newline.
fn verify_headers(data: &[u8]) -> Result<(), FsckProblem> {
    for (position, &byte) in data.iter().enumerate() {
        match byte {
            0 => return Err(problem("nulInHeader", "unterminated header: NUL in header")),
            b'\n' if data.get(position + 1) == Some(&b'\n') => return Ok(()),
            _ => {}
        }
    }
    if data.last() == Some(&b'\n') {
        Ok(())
    } else {
        Err(problem("unterminatedHeader", "unterminated header"))
    }
}

/// `<hex id>\n` at the start of `data`: what follows it.
fn hex_line(data: &[u8]) -> Option<&[u8]> {
    let hex_len = OBJECT_HASH.len_in_hex();
    let hex = data.get(..hex_len)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) || data.get(hex_len) != Some(&b'\n') {
        return None;
    }
    Some(&data[hex_len + 1..])
}

/// Git's `fsck_commit()`.
fn fsck_commit(data: &[u8]) -> Result<(), FsckProblem> {
    verify_headers(data)?;
    let rest = data.strip_prefix(b"tree ").ok_or(problem(
        "missingTree",
        "invalid format - expected 'tree' line",
    ))?;
    let mut rest = hex_line(rest).ok_or(problem(
        "badTreeSha1",
        "invalid 'tree' line format - bad sha1",
    ))?;
    while let Some(parent) = rest.strip_prefix(b"parent ") {
        rest = hex_line(parent).ok_or(problem(
            "badParentSha1",
            "invalid 'parent' line format - bad sha1",
        ))?;
    }
    let mut authors = 0;
    while let Some(author) = rest.strip_prefix(b"author ") {
        authors += 1;
        rest = fsck_ident(author)?;
    }
    match authors {
        0 => {
            return Err(problem(
                "missingAuthor",
                "invalid format - expected 'author' line",
            ))
        }
        1 => {}
        _ => {
            return Err(problem(
                "multipleAuthors",
                "invalid format - multiple 'author' lines",
            ))
        }
    }
    let committer = rest.strip_prefix(b"committer ").ok_or(problem(
        "missingCommitter",
        "invalid format - expected 'committer' line",
    ))?;
    fsck_ident(committer)?;
    if data.contains(&0) {
        return Err(problem("nulInCommit", "NUL byte in the commit object body"));
    }
    Ok(())
}

/// Git's `fsck_tag_standalone()`.
fn fsck_tag(data: &[u8]) -> Result<(), FsckProblem> {
    verify_headers(data)?;
    let rest = data.strip_prefix(b"object ").ok_or(problem(
        "missingObject",
        "invalid format - expected 'object' line",
    ))?;
    let rest = hex_line(rest).ok_or(problem(
        "badObjectSha1",
        "invalid 'object' line format - bad sha1",
    ))?;
    let rest = rest.strip_prefix(b"type ").ok_or(problem(
        "missingTypeEntry",
        "invalid format - expected 'type' line",
    ))?;
    let end = rest.iter().position(|&b| b == b'\n').ok_or(problem(
        "missingType",
        "invalid format - unexpected end after 'type' line",
    ))?;
    if !matches!(&rest[..end], b"commit" | b"tree" | b"blob" | b"tag") {
        return Err(problem("badType", "invalid 'type' value"));
    }
    let rest = rest[end + 1..].strip_prefix(b"tag ").ok_or(problem(
        "missingTagEntry",
        "invalid format - expected 'tag' line",
    ))?;
    let end = rest.iter().position(|&b| b == b'\n').ok_or(problem(
        "missingTag",
        "invalid format - unexpected end after 'type' line",
    ))?;
    // A missing tagger (early tags) and extra headers are only informational for git.
    if let Some(tagger) = rest[end + 1..].strip_prefix(b"tagger ") {
        fsck_ident(tagger)?;
    }
    Ok(())
}

/// Git's `fsck_ident()` on `name <email> date tz\n`; returns what follows the line.
fn fsck_ident(line: &[u8]) -> Result<&[u8], FsckProblem> {
    let rest = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[end + 1..],
        None => &line[line.len()..],
    };
    // Git reads a NUL-terminated buffer.
    let at = |position: usize| line.get(position).copied().unwrap_or(0);
    let span_until = |start: usize, stops: &[u8]| {
        (start..)
            .find(|&position| {
                let byte = at(position);
                byte == 0 || stops.contains(&byte)
            })
            .unwrap_or(start)
    };
    let mut p = 0;
    if at(p) == b'<' {
        return Err(problem(
            "missingNameBeforeEmail",
            "invalid author/committer line - missing space before email",
        ));
    }
    p = span_until(p, b"<>\n");
    if at(p) == b'>' {
        return Err(problem(
            "badName",
            "invalid author/committer line - bad name",
        ));
    }
    if at(p) != b'<' {
        return Err(problem(
            "missingEmail",
            "invalid author/committer line - missing email",
        ));
    }
    if p == 0 || at(p - 1) != b' ' {
        return Err(problem(
            "missingSpaceBeforeEmail",
            "invalid author/committer line - missing space before email",
        ));
    }
    p = span_until(p + 1, b"<>\n");
    if at(p) != b'>' {
        return Err(problem(
            "badEmail",
            "invalid author/committer line - bad email",
        ));
    }
    p += 1;
    if at(p) != b' ' {
        return Err(problem(
            "missingSpaceBeforeDate",
            "invalid author/committer line - missing space before date",
        ));
    }
    p += 1;
    if at(p) == b'0' && at(p + 1) != b' ' {
        return Err(problem(
            "zeroPaddedDate",
            "invalid author/committer line - zero-padded date",
        ));
    }
    // Git's parse_timestamp(): leading white space, then digits (no sign).
    let mut q = p;
    while matches!(at(q), b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        q += 1;
    }
    let digits_start = q;
    let mut value: u64 = 0;
    let mut overflow = false;
    while at(q).is_ascii_digit() {
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(at(q) - b'0')))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        q += 1;
    }
    if q == digits_start {
        q = p; // `end` is the start when nothing was parsed
    }
    if overflow || value > i64::MAX as u64 {
        return Err(problem(
            "badDateOverflow",
            "invalid author/committer line - date causes integer overflow",
        ));
    }
    if q == p || at(q) != b' ' {
        return Err(problem(
            "badDate",
            "invalid author/committer line - bad date",
        ));
    }
    p = q + 1;
    if !matches!(at(p), b'+' | b'-')
        || !(1..=4).all(|offset| at(p + offset).is_ascii_digit())
        || at(p + 5) != b'\n'
    {
        return Err(problem(
            "badTimezone",
            "invalid author/committer line - bad time zone",
        ));
    }
    Ok(rest)
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// One raw tree entry.
struct RawEntry<'a> {
    mode_bytes: &'a [u8],
    mode: u32,
    name: &'a [u8],
    id: &'a oid,
}

/// Git's `decode_tree_entry()` at the start of `data`: the entry and what follows it, or
/// `None` if the tree cannot be parsed.
fn next_tree_entry(data: &[u8]) -> Option<(RawEntry<'_>, &[u8])> {
    let hash_len = OBJECT_HASH.len_in_bytes();
    if data.len() < hash_len + 3 || data[data.len() - (hash_len + 1)] != 0 {
        return None;
    }
    let mode_end = data.iter().position(|&b| b == b' ')?;
    let mode_bytes = &data[..mode_end];
    if mode_bytes.is_empty() || !mode_bytes.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let mode = mode_bytes.iter().fold(0u32, |mode, &digit| {
        mode.wrapping_shl(3).wrapping_add(u32::from(digit - b'0'))
    });
    let name_start = mode_end + 1;
    let name_len = data[name_start..].iter().position(|&b| b == 0)?;
    if name_len == 0 {
        return None;
    }
    let id_start = name_start + name_len + 1;
    let id = data.get(id_start..id_start + hash_len)?;
    let entry = RawEntry {
        mode_bytes,
        mode,
        name: &data[name_start..name_start + name_len],
        id: oid::try_from_bytes(id).ok()?,
    };
    Some((entry, &data[id_start + hash_len..]))
}

/// Git's `fsck_tree()` in strict mode.
fn fsck_tree(data: &[u8]) -> Result<(), FsckProblem> {
    let bad_tree = problem("badTree", "cannot be parsed as a tree");
    let mut has_null_id = false;
    let mut has_full_path = false;
    let mut has_dot = false;
    let mut has_dotdot = false;
    let mut has_dotgit = false;
    let mut has_zero_pad = false;
    let mut has_bad_modes = false;
    let mut has_duplicates = false;
    let mut not_sorted = false;
    let mut previous: Option<(u32, &[u8])> = None;
    let mut candidates: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (entry, after) = next_tree_entry(rest).ok_or(bad_tree)?;
        rest = after;
        let name = entry.name;
        has_null_id |= entry.id.is_null();
        has_full_path |= name.contains(&b'/');
        has_dot |= name == b".";
        has_dotdot |= name == b"..";
        has_dotgit |= is_hfs_dotgit(name) || is_ntfs_dotgit(name);
        has_zero_pad |= entry.mode_bytes.first() == Some(&b'0');
        let is_symlink = entry.mode & S_IFMT == S_IFLNK;
        if is_symlink && (is_hfs_dot(name, b"gitmodules") || is_ntfs_dotgitmodules(name)) {
            return Err(problem(
                "gitmodulesSymlink",
                ".gitmodules is a symbolic link",
            ));
        }
        for (position, _) in name.iter().enumerate().filter(|(_, &b)| b == b'\\') {
            let after_backslash = &name[position + 1..];
            has_dotgit |= is_ntfs_dotgit(after_backslash);
            if is_symlink && is_ntfs_dotgitmodules(after_backslash) {
                return Err(problem(
                    "gitmodulesSymlink",
                    ".gitmodules is a symbolic link",
                ));
            }
        }
        has_bad_modes |= !matches!(
            entry.mode,
            0o100755 | 0o100644 | 0o100664 | 0o120000 | 0o040000 | 0o160000
        );
        if let Some((previous_mode, previous_name)) = previous {
            match verify_ordered(
                previous_mode,
                previous_name,
                entry.mode,
                name,
                &mut candidates,
            ) {
                Order::Ordered => {}
                Order::Unordered => not_sorted = true,
                Order::Duplicate => has_duplicates = true,
            }
        }
        previous = Some((entry.mode, name));
    }
    let checks = [
        (
            has_null_id,
            problem("nullSha1", "contains entries pointing to null sha1"),
        ),
        (
            has_full_path,
            problem("fullPathname", "contains full pathnames"),
        ),
        (has_dot, problem("hasDot", "contains '.'")),
        (has_dotdot, problem("hasDotdot", "contains '..'")),
        (has_dotgit, problem("hasDotgit", "contains '.git'")),
        (
            has_zero_pad,
            problem("zeroPaddedFilemode", "contains zero-padded file modes"),
        ),
        (
            has_bad_modes,
            problem("badFilemode", "contains bad file modes"),
        ),
        (
            has_duplicates,
            problem("duplicateEntries", "contains duplicate file entries"),
        ),
        (not_sorted, problem("treeNotSorted", "not properly sorted")),
    ];
    match checks.into_iter().find(|(failed, _)| *failed) {
        Some((_, found)) => Err(found),
        None => Ok(()),
    }
}

enum Order {
    Ordered,
    Unordered,
    Duplicate,
}

fn is_less_than_slash(byte: u8) -> bool {
    byte != 0 && byte < b'/'
}

/// Git's `verify_ordered()`, with its stack of names that could be duplicated by a later
/// directory (`foo`, `foo.bar`, `foo/`).
fn verify_ordered<'a>(
    mode1: u32,
    name1: &'a [u8],
    mode2: u32,
    name2: &'a [u8],
    candidates: &mut Vec<&'a [u8]>,
) -> Order {
    let common = name1.len().min(name2.len());
    match name1[..common].cmp(&name2[..common]) {
        std::cmp::Ordering::Less => return Order::Ordered,
        std::cmp::Ordering::Greater => return Order::Unordered,
        std::cmp::Ordering::Equal => {}
    }
    let mut c1 = name1.get(common).copied().unwrap_or(0);
    let mut c2 = name2.get(common).copied().unwrap_or(0);
    if c1 == 0 && c2 == 0 {
        return Order::Duplicate;
    }
    if c1 == 0 && mode1 & S_IFMT == S_IFDIR {
        c1 = b'/';
    }
    if c2 == 0 && mode2 & S_IFMT == S_IFDIR {
        c2 = b'/';
    }
    if c1 == 0 && is_less_than_slash(c2) {
        candidates.push(name1);
    } else if c2 == b'/' && is_less_than_slash(c1) {
        while let Some(&file) = candidates.last() {
            let Some(after) = name2.strip_prefix(file) else {
                break;
            };
            match after.first() {
                None => return Order::Duplicate,
                Some(&byte) if is_less_than_slash(byte) => {
                    candidates.pop();
                }
                Some(_) => break,
            }
        }
    }
    if c1 < c2 {
        Order::Ordered
    } else {
        Order::Unordered
    }
}

/// Git's `next_hfs_char()` over a whole name: characters with HFS+'s ignored code points left
/// out and ASCII lowercased; malformed UTF-8 ends the name (git returns 0 there too).
fn hfs_chars(name: &[u8]) -> impl Iterator<Item = char> + '_ {
    name.utf8_chunks()
        .scan(false, |ended, chunk| {
            if *ended {
                return None;
            }
            *ended = !chunk.invalid().is_empty();
            Some(chunk.valid().chars())
        })
        .flatten()
        .filter(|c| {
            !matches!(
                c,
                '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'
            )
        })
        .map(|c| c.to_ascii_lowercase())
}

/// Git's `is_hfs_dot_generic()`: `.<needle>` as HFS+ would see it.
fn is_hfs_dot(name: &[u8], needle: &[u8]) -> bool {
    let mut chars = hfs_chars(name);
    if chars.next() != Some('.') {
        return false;
    }
    for &expected in needle {
        if chars.next() != Some(char::from(expected)) {
            return false;
        }
    }
    matches!(chars.next(), None | Some('/'))
}

fn is_hfs_dotgit(name: &[u8]) -> bool {
    is_hfs_dot(name, b"git")
}

/// Git's `is_ntfs_dotgit()`: `.git` or `git~1`, followed only by spaces and dots up to the
/// end, a directory separator or `:`.
fn is_ntfs_dotgit(name: &[u8]) -> bool {
    let at = |position: usize| name.get(position).copied().unwrap_or(0);
    let rest_start = if at(0) == b'.' {
        if !name
            .get(1..4)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"git"))
        {
            return false;
        }
        4
    } else if at(0).eq_ignore_ascii_case(&b'g') {
        if !name
            .get(1..5)
            .is_some_and(|s| s[..2].eq_ignore_ascii_case(b"it") && s[2] == b'~' && s[3] == b'1')
        {
            return false;
        }
        5
    } else {
        return false;
    };
    for position in rest_start.. {
        match at(position) {
            0 | b'/' | b'\\' | b':' => return true,
            b'.' | b' ' => {}
            _ => return false,
        }
    }
    false
}

/// Git's `is_ntfs_dot_generic()` for `.gitmodules` (short names `gitmod~N`, `gi7eba~N`).
fn is_ntfs_dotgitmodules(name: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"gitmodules";
    const SHORT_PREFIX: &[u8] = b"gi7eba";
    let at = |position: usize| name.get(position).copied().unwrap_or(0);
    let only_spaces_and_periods = |mut position: usize| loop {
        match at(position) {
            0 | b':' => return true,
            b' ' | b'.' => position += 1,
            _ => return false,
        }
    };
    if at(0) == b'.'
        && name
            .get(1..1 + NEEDLE.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(NEEDLE))
    {
        return only_spaces_and_periods(1 + NEEDLE.len());
    }
    if name
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case(&NEEDLE[..6]))
        && at(6) == b'~'
        && (b'1'..=b'4').contains(&at(7))
    {
        return only_spaces_and_periods(8);
    }
    let mut saw_tilde = false;
    let mut position = 0;
    while position < 8 {
        let byte = at(position);
        if byte == 0 {
            return false;
        } else if saw_tilde {
            if !byte.is_ascii_digit() {
                return false;
            }
        } else if byte == b'~' {
            position += 1;
            if !(b'1'..=b'9').contains(&at(position)) {
                return false;
            }
            saw_tilde = true;
        } else if position >= 6
            || byte & 0x80 != 0
            || byte.to_ascii_lowercase() != SHORT_PREFIX[position]
        {
            return false;
        }
        position += 1;
    }
    only_spaces_and_periods(8)
}

// ---------------------------------------------------------------------------------------------
// Connectivity
// ---------------------------------------------------------------------------------------------

/// The error returned by [`check_connectivity()`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectivityError {
    /// An object reachable from a new tip is neither in the quarantine nor in the repository.
    #[error("{} {id} is missing (reachable from new tip {tip})", kind_name(*kind))]
    Missing {
        /// The missing object.
        id: ObjectId,
        /// What it was expected to be; `None` for a tip itself.
        kind: Option<Kind>,
        /// The new tip it is reachable from.
        tip: ObjectId,
    },
    /// An object reachable from a new tip cannot be walked.
    #[error("{id} (reachable from new tip {tip}) is malformed: {reason}")]
    Malformed {
        /// The object.
        id: ObjectId,
        /// The new tip it is reachable from.
        tip: ObjectId,
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading an object failed.
    #[error("could not read object {id}")]
    Read {
        /// The object.
        id: ObjectId,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
}

fn kind_name(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::Commit) => "commit",
        Some(Kind::Tree) => "tree",
        Some(Kind::Blob) => "blob",
        Some(Kind::Tag) => "tag",
        None => "object",
    }
}

/// How much [`check_connectivity()`] had to look at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectivityOutcome {
    /// Commits reachable from the new tips and not from the existing ones, whose trees were
    /// checked.
    pub new_commits: usize,
    /// Trees read and blobs looked up.
    pub objects_checked: usize,
}

/// Check that every object reachable from `new_tips` is in `objects`, assuming (as git does)
/// that everything reachable from `existing_tips` is.
///
/// `objects` is usually [`Quarantine::objects()`]; `new_tips` are the non-null new values of
/// the push's ref updates, `existing_tips` the values of all refs before the push (tags are
/// peeled here; tips that cannot be read are ignored).
///
/// The walk, and why it is sound:
/// * Commits are walked newest first from both sides, existing tips painting their ancestors
///   "old", like `git rev-list <new> --not <existing>`. The walk stops once only old commits are
///   queued, so every commit reached from a new tip is either old (reachable from an existing
///   tip, hence complete) or walked as new, with all its parents classified. A clock skew only
///   makes the walk longer, never wrong: "old" is only ever painted from existing tips.
/// * New commits are checked oldest first; every tree read and blob found is remembered as
///   complete, so what a commit shares with its new parents is not looked at again. What it
///   shares with its old parents is found by comparing its trees with theirs, level by level:
///   an entry whose id also appears in an old parent's tree at the same level is complete.
///   Everything else is read (trees) or looked up (blobs). So an incremental push costs about
///   the size of the change, and a push of a whole history about one `git rev-list --objects`.
/// * Submodule commits (gitlinks) are not required, as in git.
///
/// Trees are read through `objects` for every changed path; pass a reader with a delta-base
/// cache ([`crate::reader::CachingReader`]) rather than a bare handle for large pushes.
pub fn check_connectivity(
    objects: &(impl gix_object::Find + gix_object::Exists),
    new_tips: &[ObjectId],
    existing_tips: &[ObjectId],
) -> Result<ConnectivityOutcome, ConnectivityError> {
    let mut walk = Walk {
        objects,
        commits: Vec::new(),
        parents: Vec::new(),
        by_id: HashMap::default(),
        queue: BinaryHeap::new(),
        sequence: 0,
        new_in_queue: 0,
        complete: HashSet::default(),
        buffer: Vec::new(),
        objects_checked: 0,
    };
    for &tip in existing_tips {
        walk.add_existing_tip(tip);
    }
    let mut tree_tips = Vec::new();
    for &tip in new_tips {
        walk.add_new_tip(tip, &mut tree_tips)?;
    }
    let new_commits = walk.walk_commits()?;
    let mut checked_commits = 0;
    // Oldest first: what a commit shares with its parents has mostly been seen already.
    for index in new_commits.into_iter().rev() {
        let commit = &walk.commits[index];
        if commit.flags & OLD != 0 {
            continue;
        }
        checked_commits += 1;
        let (tree, tip) = (commit.tree, commit.tip);
        let bases = walk.parents[commit.parents.clone()]
            .iter()
            .filter_map(|parent| match walk.by_id.get(parent) {
                // What this commit shares with new parents is known complete by now (mostly:
                // commit dates decide the order).
                Some(Slot::Commit(parent)) if walk.commits[*parent].flags & OLD != 0 => {
                    Some(walk.commits[*parent].tree)
                }
                _ => None,
            })
            .collect();
        walk.check_tree(tree, bases, tip)?;
    }
    for (tree, tip) in tree_tips {
        walk.check_tree(tree, Vec::new(), tip)?;
    }
    Ok(ConnectivityOutcome {
        new_commits: checked_commits,
        objects_checked: walk.objects_checked,
    })
}

const NEW: u8 = 1;
const OLD: u8 = 2;

struct Commit {
    tree: ObjectId,
    parents: std::ops::Range<usize>,
    time: u64,
    flags: u8,
    /// Queue entries for this commit.
    queued: u32,
    expanded_as_new: bool,
    expanded_as_old: bool,
    /// The first new tip it was reached from.
    tip: ObjectId,
}

enum Slot {
    Commit(usize),
    Missing,
}

struct Walk<'a, O> {
    objects: &'a O,
    commits: Vec<Commit>,
    parents: Vec<ObjectId>,
    by_id: HashMap<ObjectId, Slot>,
    /// (commit time, insertion order reversed, commit index): newest first.
    queue: BinaryHeap<(u64, std::cmp::Reverse<u64>, usize)>,
    sequence: u64,
    /// Queue entries whose commit is not (yet) old; the walk ends when this is zero.
    new_in_queue: usize,
    /// Trees and blobs known to be complete (and tags of existing tips).
    complete: HashSet<ObjectId>,
    buffer: Vec<u8>,
    objects_checked: usize,
}

impl<O> Walk<'_, O>
where
    O: gix_object::Find + gix_object::Exists,
{
    fn read(&mut self, id: &oid) -> Result<Option<(Kind, &[u8])>, gix_error::Error> {
        Ok(self
            .objects
            .try_find(id, &mut self.buffer)?
            .map(|data| (data.kind, data.data)))
    }

    fn add_existing_tip(&mut self, tip: ObjectId) {
        let mut id = tip;
        // Peel tags, with a bound against cycles.
        for _ in 0..64 {
            let Ok(Some((kind, data))) = self.read(&id) else {
                return;
            };
            match kind {
                Kind::Tag => {
                    let Some(target) = tag_target(data) else {
                        return;
                    };
                    self.complete.insert(id);
                    id = target;
                }
                Kind::Commit => {
                    self.add(id, OLD, tip).ok();
                    return;
                }
                Kind::Tree | Kind::Blob => {
                    self.complete.insert(id);
                    return;
                }
            }
        }
    }

    fn add_new_tip(
        &mut self,
        tip: ObjectId,
        tree_tips: &mut Vec<(ObjectId, ObjectId)>,
    ) -> Result<(), ConnectivityError> {
        let mut id = tip;
        for _ in 0..64 {
            if self.complete.contains(&id) {
                return Ok(());
            }
            let kind = match self.read(&id) {
                Ok(Some((kind, data))) => {
                    if kind == Kind::Tag {
                        let target = tag_target(data).ok_or(ConnectivityError::Malformed {
                            id,
                            tip,
                            reason: "tag without a valid 'object' line",
                        })?;
                        self.objects_checked += 1;
                        id = target;
                        continue;
                    }
                    kind
                }
                Ok(None) => {
                    return Err(ConnectivityError::Missing {
                        id,
                        kind: None,
                        tip,
                    })
                }
                Err(source) => return Err(ConnectivityError::Read { id, source }),
            };
            match kind {
                Kind::Commit => return self.add(id, NEW, tip),
                Kind::Tree => tree_tips.push((id, tip)),
                Kind::Blob => {
                    self.objects_checked += 1;
                    self.complete.insert(id);
                }
                Kind::Tag => {}
            }
            return Ok(());
        }
        Err(ConnectivityError::Malformed {
            id,
            tip,
            reason: "too many nested tags",
        })
    }

    /// Give commit `id` the `flag`, loading it first if needed, and queue it if that changed
    /// anything. A missing commit is an error only when reached from a new tip.
    fn add(&mut self, id: ObjectId, flag: u8, tip: ObjectId) -> Result<(), ConnectivityError> {
        let index = match self.by_id.get(&id) {
            Some(Slot::Commit(index)) => *index,
            Some(Slot::Missing) if flag == OLD => return Ok(()),
            Some(Slot::Missing) => {
                return Err(ConnectivityError::Missing {
                    id,
                    kind: Some(Kind::Commit),
                    tip,
                })
            }
            None => match self.load(id, tip) {
                Ok(index) => index,
                Err(_) if flag == OLD => {
                    self.by_id.insert(id, Slot::Missing);
                    return Ok(());
                }
                Err(err) => {
                    if matches!(err, ConnectivityError::Missing { .. }) {
                        self.by_id.insert(id, Slot::Missing);
                    }
                    return Err(err);
                }
            },
        };
        let commit = &mut self.commits[index];
        if commit.flags & (flag | OLD) != 0 {
            return Ok(());
        }
        if flag == OLD {
            // Its queue entries no longer count as new.
            self.new_in_queue -= commit.queued as usize;
        } else {
            commit.tip = tip;
        }
        commit.flags |= flag;
        commit.queued += 1;
        if commit.flags & OLD == 0 {
            self.new_in_queue += 1;
        }
        self.sequence += 1;
        self.queue
            .push((commit.time, std::cmp::Reverse(self.sequence), index));
        Ok(())
    }

    fn load(&mut self, id: ObjectId, tip: ObjectId) -> Result<usize, ConnectivityError> {
        let (kind, data) = match self.read(&id) {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(ConnectivityError::Missing {
                    id,
                    kind: Some(Kind::Commit),
                    tip,
                })
            }
            Err(source) => return Err(ConnectivityError::Read { id, source }),
        };
        if kind != Kind::Commit {
            return Err(ConnectivityError::Malformed {
                id,
                tip,
                reason: "expected a commit",
            });
        }
        let header = parse_commit(data).ok_or(ConnectivityError::Malformed {
            id,
            tip,
            reason: "the commit cannot be parsed",
        })?;
        let start = self.parents.len();
        self.parents.extend(header.parents);
        let index = self.commits.len();
        self.commits.push(Commit {
            tree: header.tree,
            parents: start..self.parents.len(),
            time: header.time,
            flags: 0,
            queued: 0,
            expanded_as_new: false,
            expanded_as_old: false,
            tip,
        });
        self.by_id.insert(id, Slot::Commit(index));
        self.objects_checked += 1;
        Ok(index)
    }

    /// Walk until only old commits are queued; returns the commits walked as new, newest first
    /// (some may have turned out old later).
    fn walk_commits(&mut self) -> Result<Vec<usize>, ConnectivityError> {
        let mut new_commits = Vec::new();
        while self.new_in_queue > 0 {
            let Some((_, _, index)) = self.queue.pop() else {
                break;
            };
            let commit = &mut self.commits[index];
            commit.queued -= 1;
            let parents = commit.parents.clone();
            if commit.flags & OLD == 0 {
                self.new_in_queue -= 1;
                if commit.expanded_as_new {
                    continue;
                }
                commit.expanded_as_new = true;
                let tip = commit.tip;
                new_commits.push(index);
                for position in parents {
                    self.add(self.parents[position], NEW, tip)?;
                }
            } else {
                if commit.expanded_as_old {
                    continue;
                }
                commit.expanded_as_old = true;
                let tip = commit.tip;
                for position in parents {
                    self.add(self.parents[position], OLD, tip)?;
                }
            }
        }
        Ok(new_commits)
    }

    /// Check that `root` and everything below it exists, skipping what is known complete or
    /// also appears at the same place in one of the `bases`: the trees of the commit's old
    /// parents, complete by assumption (and remembered as complete).
    fn check_tree(
        &mut self,
        root: ObjectId,
        bases: Vec<ObjectId>,
        tip: ObjectId,
    ) -> Result<(), ConnectivityError> {
        let mut stack = vec![(root, bases)];
        let mut base_data: Vec<Vec<u8>> = Vec::new();
        while let Some((tree, bases)) = stack.pop() {
            if self.complete.contains(&tree) {
                continue;
            }
            if bases.contains(&tree) {
                self.complete.insert(tree);
                continue;
            }
            let data = match self.objects.try_find(&tree, &mut self.buffer) {
                Ok(Some(data)) if data.kind == Kind::Tree => data.data.to_vec(),
                Ok(Some(_)) => {
                    return Err(ConnectivityError::Malformed {
                        id: tree,
                        tip,
                        reason: "a tree entry names an object that is not a tree",
                    })
                }
                Ok(None) => {
                    return Err(ConnectivityError::Missing {
                        id: tree,
                        kind: Some(Kind::Tree),
                        tip,
                    })
                }
                Err(source) => return Err(ConnectivityError::Read { id: tree, source }),
            };
            self.objects_checked += 1;
            self.complete.insert(tree);

            base_data.clear();
            for base in &bases {
                if let Ok(Some(data)) = self.objects.try_find(base, &mut self.buffer) {
                    if data.kind == Kind::Tree {
                        base_data.push(data.data.to_vec());
                    }
                }
            }
            let mut base_ids: std::collections::HashSet<&oid> = Default::default();
            let mut base_subtrees: std::collections::HashMap<&[u8], Vec<ObjectId>> =
                Default::default();
            for data in &base_data {
                let mut rest = data.as_slice();
                while let Some((entry, after)) = next_tree_entry(rest) {
                    rest = after;
                    base_ids.insert(entry.id);
                    if entry.mode & S_IFMT == S_IFDIR {
                        base_subtrees
                            .entry(entry.name)
                            .or_default()
                            .push(entry.id.to_owned());
                    }
                }
            }

            let mut rest = data.as_slice();
            while !rest.is_empty() {
                let (entry, after) = next_tree_entry(rest).ok_or(ConnectivityError::Malformed {
                    id: tree,
                    tip,
                    reason: "the tree cannot be parsed",
                })?;
                rest = after;
                if self.complete.contains(entry.id) {
                    continue;
                }
                if base_ids.contains(&entry.id) {
                    self.complete.insert(entry.id.to_owned());
                    continue;
                }
                match entry.mode & S_IFMT {
                    S_IFDIR => stack.push((
                        entry.id.to_owned(),
                        base_subtrees.get(entry.name).cloned().unwrap_or_default(),
                    )),
                    0o100000 | S_IFLNK => {
                        self.objects_checked += 1;
                        if !self.objects.exists(entry.id) {
                            return Err(ConnectivityError::Missing {
                                id: entry.id.to_owned(),
                                kind: Some(Kind::Blob),
                                tip,
                            });
                        }
                        self.complete.insert(entry.id.to_owned());
                    }
                    // Gitlinks name commits of other repositories.
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

struct CommitHeader {
    tree: ObjectId,
    parents: Vec<ObjectId>,
    time: u64,
}

/// The tree, parents and committer time of a commit, read like git's `parse_commit_buffer()`.
fn parse_commit(data: &[u8]) -> Option<CommitHeader> {
    let hex_len = OBJECT_HASH.len_in_hex();
    let rest = data.strip_prefix(b"tree ")?;
    let tree = ObjectId::from_hex(rest.get(..hex_len)?).ok()?;
    let mut rest = hex_line(rest)?;
    let mut parents = Vec::new();
    while let Some(parent) = rest.strip_prefix(b"parent ") {
        parents.push(ObjectId::from_hex(parent.get(..hex_len)?).ok()?);
        rest = hex_line(parent)?;
    }
    let time = committer_time(rest);
    Some(CommitHeader {
        tree,
        parents,
        time,
    })
}

/// The committer time, or 0 if there is none (git's `parse_commit_date()`).
fn committer_time(header: &[u8]) -> u64 {
    let mut lines = header.split(|&b| b == b'\n');
    let Some(committer) = lines.find_map(|line| line.strip_prefix(b"committer ")) else {
        return 0;
    };
    let Some(after_email) = committer.iter().rposition(|&b| b == b'>') else {
        return 0;
    };
    committer[after_email + 1..]
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |time, &digit| {
            time.saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'))
        })
}

/// The object a tag points at.
fn tag_target(data: &[u8]) -> Option<ObjectId> {
    let rest = data.strip_prefix(b"object ")?;
    hex_line(rest)?;
    ObjectId::from_hex(&rest[..OBJECT_HASH.len_in_hex()]).ok()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Cursor, Write as _},
        process::{Command, Stdio},
    };

    use gix_object::{Exists as _, Find as _};

    use super::*;

    use crate::test_git::git;

    fn id(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.trim().as_bytes()).unwrap()
    }

    /// A client work tree and an empty bare server repository, made by git.
    struct Fixture {
        _dir: tempfile::TempDir,
        client: PathBuf,
        server: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let client = dir.path().join("client");
            let server = dir.path().join("server.git");
            git(
                dir.path(),
                &["init", "--quiet", "-b", "main", "client"],
                None,
            );
            git(
                dir.path(),
                &["init", "--quiet", "--bare", "server.git"],
                None,
            );
            Fixture {
                _dir: dir,
                client,
                server,
            }
        }

        fn client(&self, args: &[&str]) -> String {
            String::from_utf8(git(&self.client, args, None)).unwrap()
        }

        fn server(&self, args: &[&str]) -> String {
            String::from_utf8(git(&self.server, args, None)).unwrap()
        }

        /// Write `files` in the client, commit everything, return the commit.
        fn commit(&self, files: &[(&str, &str)], message: &str) -> ObjectId {
            for (path, content) in files {
                let path = self.client.join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, content).unwrap();
            }
            self.client(&["add", "--all"]);
            self.client(&["commit", "--quiet", "--allow-empty", "-m", message]);
            id(&self.client(&["rev-parse", "HEAD"]))
        }

        /// `git pack-objects --stdout <args>` in the client, fed `input`.
        fn pack(&self, args: &[&str], input: &str) -> Vec<u8> {
            let mut all = vec!["pack-objects", "--quiet", "--stdout"];
            all.extend_from_slice(args);
            git(&self.client, &all, Some(input.as_bytes()))
        }

        /// Every object reachable from `revs` (`git rev-list --objects`).
        fn objects(&self, revs: &[&str]) -> Vec<ObjectId> {
            let mut args = vec!["rev-list", "--objects"];
            args.extend_from_slice(revs);
            self.client(&args)
                .lines()
                .map(|line| id(&line[..40]))
                .collect()
        }

        fn push(&self, commit: ObjectId, reference: &str) {
            let refspec = format!("{commit}:{reference}");
            self.client(&["push", "--quiet", self.server.to_str().unwrap(), &refspec]);
        }

        fn objects_dir(&self) -> PathBuf {
            self.server.join("objects")
        }

        fn repository(&self) -> gix_odb::Handle {
            gix_odb::at(self.objects_dir(), OBJECT_HASH).unwrap()
        }

        fn ingest(
            &self,
            pack: &[u8],
            options: &IngestOptions,
        ) -> (Quarantine, Result<IngestOutcome, IngestError>) {
            let quarantine = Quarantine::create(&self.objects_dir()).unwrap();
            let outcome = ingest_pack(
                &mut Cursor::new(pack),
                &self.repository(),
                &quarantine,
                options,
                &AtomicBool::new(false),
            );
            (quarantine, outcome)
        }

        /// Quarantine directories left in the server's object store.
        fn leftovers(&self) -> Vec<String> {
            fs::read_dir(self.objects_dir())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.contains("incoming"))
                .collect()
        }

        fn fsck(&self) {
            self.server(&["fsck", "--strict", "--no-dangling", "--no-progress"]);
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn history(fixture: &Fixture) -> ObjectId {
        fixture.commit(
            &[("README", "hello\n"), ("src/main.rs", "fn main() {}\n")],
            "first",
        );
        fixture.commit(
            &[
                ("src/lib.rs", "pub fn f() {}\n"),
                ("docs/a/b/c.md", "deep\n"),
            ],
            "second",
        );
        fixture.commit(&[("README", "hello again\n")], "third")
    }

    fn fsck_on() -> IngestOptions {
        IngestOptions {
            fsck: FsckObjects::On,
            thread_limit: Some(2),
            ..IngestOptions::default()
        }
    }

    #[test]
    fn quarantine_sees_the_repository_and_is_removed_on_drop() {
        let fixture = Fixture::new();
        let first = history(&fixture);
        fixture.push(first, "refs/heads/main");
        let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
        let path = quarantine.path().to_owned();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(QUARANTINE_PREFIX), "{name}");
        assert_eq!(path.parent().unwrap(), quarantine.objects_dir());
        assert!(path.join("pack").is_dir());
        let alternates = fs::read_to_string(path.join("info/alternates")).unwrap();
        assert_eq!(
            alternates,
            format!(
                "{}\n",
                fixture.objects_dir().canonicalize().unwrap().display()
            )
        );
        assert!(quarantine.objects().unwrap().exists(&first));

        let second = Quarantine::create(&fixture.objects_dir()).unwrap();
        assert_ne!(second.path(), quarantine.path());
        drop(second);
        drop(quarantine);
        assert!(!path.exists());
        assert_eq!(fixture.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn full_pack_is_indexed_checked_and_migrated() {
        let fixture = Fixture::new();
        let head = history(&fixture);
        let pack = fixture.pack(&["--revs"], "HEAD\n");
        let objects = fixture.objects(&["HEAD"]);

        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        let outcome = outcome.unwrap();
        assert_eq!(outcome.objects as usize, objects.len());
        assert_eq!(outcome.completed_bases, 0);
        assert_eq!(outcome.bytes_read, pack.len() as u64);
        let checksum = ObjectId::from_bytes_or_panic(&pack[pack.len() - 20..]);
        assert_eq!(
            outcome.checksum, checksum,
            "an untouched pack keeps its checksum"
        );
        let pack_path = outcome.pack.clone().unwrap();
        assert_eq!(pack_path.parent().unwrap(), quarantine.path().join("pack"));
        assert_eq!(
            files_in(&quarantine.path().join("pack")),
            vec![
                format!("pack-{checksum}.idx"),
                format!("pack-{checksum}.pack")
            ]
        );

        let quarantined = quarantine.objects().unwrap();
        let mut buffer = Vec::new();
        for object in &objects {
            assert!(quarantined.try_find(object, &mut buffer).unwrap().is_some());
        }
        assert!(
            !fixture.repository().exists(&head),
            "nothing is visible in the repository before migration"
        );
        let connectivity = check_connectivity(&quarantined, &[head], &[]).unwrap();
        assert_eq!(connectivity.new_commits, 3);

        quarantine.migrate().unwrap();
        assert_eq!(fixture.leftovers(), Vec::<String>::new());
        assert!(fixture.repository().exists(&head));
        fixture.server(&["update-ref", "refs/heads/main", &head.to_string()]);
        fixture.fsck();
        for object in &objects {
            fixture.server(&["cat-file", "-e", &object.to_string()]);
        }
    }

    #[test]
    fn thin_pack_is_completed_from_the_repository() {
        let fixture = Fixture::new();
        let big: String = (0..2000).map(|line| format!("line {line}\n")).collect();
        let old = fixture.commit(&[("big.txt", &big), ("other", "x\n")], "old");
        fixture.push(old, "refs/heads/main");
        let changed = big.replace("line 1000\n", "line one thousand\n");
        let new = fixture.commit(&[("big.txt", &changed)], "new");
        let pack = fixture.pack(&["--revs", "--thin"], &format!("{new}\n^{old}\n"));
        let announced = u32::from_be_bytes(pack[8..12].try_into().unwrap());
        assert_eq!(announced, 3, "commit, tree and the big blob as a delta");

        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        let outcome = outcome.unwrap();
        assert_eq!(outcome.completed_bases, 1, "the old blob was added as base");
        assert_eq!(outcome.objects, announced + 1);
        assert_eq!(outcome.bytes_read, pack.len() as u64);

        let connectivity =
            check_connectivity(&quarantine.objects().unwrap(), &[new], &[old]).unwrap();
        assert_eq!(connectivity.new_commits, 1);
        quarantine.migrate().unwrap();
        fixture.server(&["update-ref", "refs/heads/main", &new.to_string()]);
        fixture.fsck();
        let content = fixture.server(&["cat-file", "blob", &format!("{new}:big.txt")]);
        assert_eq!(content, changed);
    }

    #[test]
    fn in_pack_deltas_of_every_kind_are_resolved() {
        let fixture = Fixture::new();
        let big: String = (0..3000).map(|line| format!("line {line}\n")).collect();
        let mut commits = vec![fixture.commit(&[("big.txt", &big)], "0")];
        for step in 1..6 {
            let changed = big.replace(&format!("line {step}00\n"), "changed\n");
            commits.push(fixture.commit(&[("big.txt", &changed)], &step.to_string()));
        }
        let head = *commits.last().unwrap();
        // The server already has some of the objects the pack carries in full: ref-delta bases
        // are then found in the repository and in the pack.
        fixture.push(commits[2], "refs/heads/main");
        for args in [&["--revs"][..], &["--revs", "--delta-base-offset"]] {
            let pack = fixture.pack(args, "HEAD\n");
            let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
            let outcome = outcome.unwrap();
            // A ref-delta base the repository has is copied in even if the pack carries it too:
            // the index then lists that object twice, which git reads and fscks fine.
            assert_eq!(
                outcome.objects as usize,
                fixture.objects(&["HEAD"]).len() + outcome.completed_bases as usize
            );
            let objects = quarantine.objects().unwrap();
            check_connectivity(&objects, &[head], &[]).unwrap();
            let mut buffer = Vec::new();
            let data = objects
                .try_find(
                    &id(&fixture.client(&["rev-parse", "HEAD:big.txt"])),
                    &mut buffer,
                )
                .unwrap()
                .unwrap();
            assert_eq!(
                data.data,
                fixture.client(&["show", "HEAD:big.txt"]).as_bytes()
            );
            quarantine.migrate().unwrap();
            fixture.server(&["update-ref", "refs/heads/main", &head.to_string()]);
            fixture.fsck();
        }
    }

    #[test]
    fn migration_moves_loose_objects_and_keeps_existing_packs() {
        let fixture = Fixture::new();
        let head = history(&fixture);
        let pack = fixture.pack(&["--revs"], "HEAD\n");
        let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
        outcome.unwrap();
        // A hook writes an object, as git lets it: into the quarantine.
        let mut hook = Command::new("git")
            .args(["hash-object", "-w", "--stdin"])
            .current_dir(&fixture.server)
            .env("GIT_OBJECT_DIRECTORY", quarantine.path())
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", quarantine.objects_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        hook.stdin
            .take()
            .unwrap()
            .write_all(b"from a hook\n")
            .unwrap();
        let output = hook.wait_with_output().unwrap();
        assert!(output.status.success());
        let loose = id(std::str::from_utf8(&output.stdout).unwrap());
        assert!(quarantine.objects().unwrap().exists(&loose));
        assert!(!fixture.repository().exists(&loose));
        quarantine.migrate().unwrap();
        let repository = fixture.repository();
        assert!(repository.exists(&loose));
        assert!(repository.exists(&head));

        // The same pack again: the repository's copy stays, the quarantine goes.
        let before = files_in(&fixture.objects_dir().join("pack"));
        let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
        outcome.unwrap();
        quarantine.migrate().unwrap();
        assert_eq!(files_in(&fixture.objects_dir().join("pack")), before);
        assert_eq!(fixture.leftovers(), Vec::<String>::new());
        fixture.server(&["update-ref", "refs/heads/main", &head.to_string()]);
        fixture.fsck();
    }

    #[test]
    fn dropping_an_unmigrated_quarantine_leaves_nothing() {
        let fixture = Fixture::new();
        let head = history(&fixture);
        let pack = fixture.pack(&["--revs"], "HEAD\n");
        let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
        outcome.unwrap();
        let path = quarantine.path().to_owned();
        assert_eq!(files_in(&path.join("pack")).len(), 2);
        drop(quarantine);
        assert!(!path.exists());
        assert_eq!(fixture.leftovers(), Vec::<String>::new());
        assert!(!fixture.repository().exists(&head));
        assert_eq!(
            files_in(&fixture.objects_dir().join("pack")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn truncated_or_corrupt_packs_are_refused_and_leave_nothing() {
        let fixture = Fixture::new();
        history(&fixture);
        let pack = fixture.pack(&["--revs"], "HEAD\n");
        for cut in [
            0,
            5,
            12,
            15,
            pack.len() / 2,
            pack.len() - 21,
            pack.len() - 1,
        ] {
            let (quarantine, outcome) = fixture.ingest(&pack[..cut], &fsck_on());
            match outcome {
                Err(IngestError::Truncated { bytes_read }) => assert_eq!(bytes_read, cut as u64),
                other => panic!("cut at {cut}: {other:?}"),
            }
            assert_eq!(
                files_in(&quarantine.path().join("pack")),
                Vec::<String>::new()
            );
        }

        let mut bad_checksum = pack.clone();
        *bad_checksum.last_mut().unwrap() ^= 1;
        let mut bad_entry = pack.clone();
        bad_entry[pack.len() / 2] ^= 0x55;
        let mut bad_signature = pack.clone();
        bad_signature[0] = b'K';
        for (name, corrupt) in [
            ("checksum", bad_checksum),
            ("entry", bad_entry),
            ("signature", bad_signature),
        ] {
            let (quarantine, outcome) = fixture.ingest(&corrupt, &fsck_on());
            match outcome {
                Err(IngestError::InvalidPack { .. } | IngestError::InvalidHeader { .. }) => {}
                other => panic!("corrupt {name}: {other:?}"),
            }
            assert_eq!(
                files_in(&quarantine.path().join("pack")),
                Vec::<String>::new()
            );
            let path = quarantine.path().to_owned();
            drop(quarantine);
            assert!(!path.exists());
        }
        assert_eq!(fixture.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn limits_refuse_large_packs() {
        let fixture = Fixture::new();
        history(&fixture);
        let pack = fixture.pack(&["--revs"], "HEAD\n");
        let count = u32::from_be_bytes(pack[8..12].try_into().unwrap());
        let repository = fixture.repository();

        let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
        let mut input = Cursor::new(&pack);
        let options = IngestOptions {
            max_objects: Some(count - 1),
            ..IngestOptions::default()
        };
        let refused = ingest_pack(
            &mut input,
            &repository,
            &quarantine,
            &options,
            &AtomicBool::new(false),
        );
        assert!(
            matches!(refused, Err(IngestError::TooManyObjects { announced, limit })
                if announced == count && limit == count - 1),
            "{refused:?}"
        );
        assert_eq!(input.position(), 12, "refused after the header");
        let (_quarantine, accepted) = fixture.ingest(
            &pack,
            &IngestOptions {
                max_objects: Some(count),
                ..IngestOptions::default()
            },
        );
        accepted.unwrap();

        for limit in [0, 11, 12, pack.len() as u64 / 2, pack.len() as u64 - 1] {
            let (quarantine, refused) = fixture.ingest(
                &pack,
                &IngestOptions {
                    max_input_bytes: Some(limit),
                    ..IngestOptions::default()
                },
            );
            let err = refused.unwrap_err();
            assert!(
                matches!(err, IngestError::TooLarge { .. }),
                "{limit}: {err:?}"
            );
            assert_eq!(err.to_string(), "pack exceeds maximum allowed size");
            assert_eq!(
                files_in(&quarantine.path().join("pack")),
                Vec::<String>::new()
            );
        }
        let (_quarantine, accepted) = fixture.ingest(
            &pack,
            &IngestOptions {
                max_input_bytes: Some(pack.len() as u64),
                ..IngestOptions::default()
            },
        );
        accepted.unwrap();
    }

    #[test]
    fn the_stream_is_read_up_to_the_trailer_and_no_further() {
        let fixture = Fixture::new();
        history(&fixture);
        let empty = fixture.pack(&[], "");
        assert_eq!(empty.len(), 32);
        let full = fixture.pack(&["--revs"], "HEAD\n");
        for pack in [empty, full] {
            for capacity in [1, 7, 8192] {
                let mut stream = pack.clone();
                stream.extend_from_slice(b"0000more");
                let mut input = io::BufReader::with_capacity(capacity, Cursor::new(stream));
                let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
                let outcome = ingest_pack(
                    &mut input,
                    &fixture.repository(),
                    &quarantine,
                    &IngestOptions {
                        max_input_bytes: Some(pack.len() as u64),
                        ..fsck_on()
                    },
                    &AtomicBool::new(false),
                )
                .unwrap();
                assert_eq!(outcome.bytes_read, pack.len() as u64);
                assert_eq!(outcome.pack.is_none(), outcome.objects == 0);
                let mut rest = Vec::new();
                input.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, b"0000more");
            }
        }
    }

    #[test]
    fn an_empty_pack_writes_nothing_and_its_checksum_is_verified() {
        let fixture = Fixture::new();
        let empty = fixture.pack(&[], "");
        let (quarantine, outcome) = fixture.ingest(&empty, &fsck_on());
        let outcome = outcome.unwrap();
        assert_eq!(outcome.objects, 0);
        assert_eq!((outcome.pack, outcome.index), (None, None));
        assert_eq!(
            files_in(&quarantine.path().join("pack")),
            Vec::<String>::new()
        );
        quarantine.migrate().unwrap();
        assert_eq!(fixture.leftovers(), Vec::<String>::new());

        let mut corrupt = empty.clone();
        corrupt[20] ^= 1;
        let (_quarantine, outcome) = fixture.ingest(&corrupt, &fsck_on());
        assert!(
            matches!(outcome, Err(IngestError::ChecksumMismatch { .. })),
            "{outcome:?}"
        );
    }

    #[test]
    fn an_interrupted_ingestion_leaves_nothing() {
        let fixture = Fixture::new();
        history(&fixture);
        let pack = fixture.pack(&["--revs"], "HEAD\n");
        let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
        let outcome = ingest_pack(
            &mut Cursor::new(&pack),
            &fixture.repository(),
            &quarantine,
            &IngestOptions::default(),
            &AtomicBool::new(true),
        );
        assert!(
            matches!(outcome, Err(IngestError::Interrupted)),
            "{outcome:?}"
        );
        assert_eq!(
            files_in(&quarantine.path().join("pack")),
            Vec::<String>::new()
        );
    }

    /// `git hash-object --literally` in the client.
    fn write_literally(fixture: &Fixture, kind: &str, data: &[u8]) -> ObjectId {
        let out = git(
            &fixture.client,
            &["hash-object", "-t", kind, "--literally", "-w", "--stdin"],
            Some(data),
        );
        id(std::str::from_utf8(&out).unwrap())
    }

    fn tree_entry(mode: &str, name: &str, id: ObjectId) -> Vec<u8> {
        let mut entry = format!("{mode} {name}\0").into_bytes();
        entry.extend_from_slice(id.as_bytes());
        entry
    }

    #[test]
    fn fsck_refuses_malformed_objects_written_by_git() {
        let fixture = Fixture::new();
        let blob = write_literally(&fixture, "blob", b"content\n");
        let good_tree = write_literally(
            &fixture,
            "tree",
            &[
                tree_entry("100644", "a", blob),
                tree_entry("100644", "b", blob),
            ]
            .concat(),
        );
        let unsorted_tree = write_literally(
            &fixture,
            "tree",
            &[
                tree_entry("100644", "b", blob),
                tree_entry("100644", "a", blob),
            ]
            .concat(),
        );
        let dotgit_tree =
            write_literally(&fixture, "tree", &tree_entry("40000", ".GIT", good_tree));
        let no_author = write_literally(
            &fixture,
            "commit",
            format!(
                "tree {good_tree}\ncommitter C O Mitter <c@example.com> 1700000000 +0000\n\nmessage\n"
            )
            .as_bytes(),
        );
        let good_commit = write_literally(
            &fixture,
            "commit",
            format!(
                "tree {good_tree}\nauthor A <a@example.com> 1700000000 +0100\ncommitter C <c@example.com> 1700000000 -0130\n\nmessage\n"
            )
            .as_bytes(),
        );
        let old_tag = write_literally(
            &fixture,
            "tag",
            format!("object {good_commit}\ntype commit\ntag v0.1\n\nno tagger, as in 2005\n")
                .as_bytes(),
        );

        for (bad, expected) in [
            (unsorted_tree, "treeNotSorted"),
            (dotgit_tree, "hasDotgit"),
            (no_author, "missingAuthor"),
        ] {
            let pack = fixture.pack(&[], &format!("{bad}\n{blob}\n{good_tree}\n"));
            let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
            match outcome {
                Err(IngestError::Fsck { id, problem, .. }) => {
                    assert_eq!((id, problem.id), (bad, expected));
                }
                other => panic!("{expected}: {other:?}"),
            }
            assert_eq!(
                files_in(&quarantine.path().join("pack")),
                Vec::<String>::new()
            );
            let (_quarantine, unchecked) = fixture.ingest(&pack, &IngestOptions::default());
            unchecked.unwrap();
        }

        let pack = fixture.pack(
            &[],
            &format!("{old_tag}\n{good_commit}\n{good_tree}\n{blob}\n"),
        );
        let (_quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        assert_eq!(outcome.unwrap().objects, 4);
    }

    #[test]
    fn connectivity_names_the_missing_object() {
        let fixture = Fixture::new();
        let first = fixture.commit(&[("a", "a\n"), ("dir/b", "b\n")], "first");
        let second = fixture.commit(&[("c", "c\n")], "second");
        let blob_b = id(&fixture.client(&["rev-parse", "HEAD:dir/b"]));

        // Everything of `first` except one blob.
        let partial: String = fixture
            .objects(&[&first.to_string()])
            .into_iter()
            .filter(|object| *object != blob_b)
            .map(|object| format!("{object}\n"))
            .collect();
        let pack = fixture.pack(&[], &partial);
        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        outcome.unwrap();
        let err = check_connectivity(&quarantine.objects().unwrap(), &[first], &[]).unwrap_err();
        match &err {
            ConnectivityError::Missing { id, kind, tip } => {
                assert_eq!((*id, *kind, *tip), (blob_b, Some(Kind::Blob), first));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("blob {blob_b} is missing (reachable from new tip {first})")
        );

        // `second` without its parent.
        let pack = fixture.pack(&["--revs"], &format!("{second}\n^{first}\n"));
        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        outcome.unwrap();
        let objects = quarantine.objects().unwrap();
        let err = check_connectivity(&objects, &[second], &[]).unwrap_err();
        assert!(
            matches!(err, ConnectivityError::Missing { id, kind: Some(Kind::Commit), tip }
                if id == first && tip == second),
            "{err:?}"
        );
        let err =
            check_connectivity(&objects, &[ObjectId::empty_blob(OBJECT_HASH)], &[]).unwrap_err();
        assert!(
            matches!(err, ConnectivityError::Missing { kind: None, .. }),
            "{err:?}"
        );

        // Once the parent is in the repository (and a ref points at it), all is well.
        drop(objects);
        fixture.push(first, "refs/heads/main");
        let objects = quarantine.objects().unwrap();
        let outcome = check_connectivity(&objects, &[second], &[first]).unwrap();
        assert_eq!(outcome.new_commits, 1);
        // Without the ref, `first` is walked too (and found complete).
        let outcome = check_connectivity(&objects, &[second], &[]).unwrap();
        assert_eq!(outcome.new_commits, 2);
    }

    #[test]
    fn connectivity_stops_at_existing_history() {
        let fixture = Fixture::new();
        let mut files = Vec::new();
        for dir in 0..20 {
            for file in 0..10 {
                files.push((format!("dir{dir}/file{file}"), format!("{dir} {file}\n")));
            }
        }
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(path, content)| (path.as_str(), content.as_str()))
            .collect();
        let mut old = fixture.commit(&files, "base");
        for step in 0..30 {
            old = fixture.commit(&[("dir3/file3", &format!("step {step}\n"))], "old");
        }
        fixture.client(&["checkout", "--quiet", "-b", "side", &format!("{old}~10")]);
        let side = fixture.commit(&[("dir9/side", "side\n")], "side");
        fixture.client(&["checkout", "--quiet", "main"]);
        fixture.push(old, "refs/heads/main");
        fixture.push(side, "refs/heads/side");

        fixture.commit(&[("dir7/new", "new\n")], "new 1");
        let merge_message = "merge side";
        fixture.client(&[
            "merge",
            "--quiet",
            "-s",
            "ours",
            "-m",
            merge_message,
            "side",
        ]);
        let new = fixture.commit(&[("dir7/file1", "changed\n")], "new 2");
        fixture.client(&["tag", "-a", "-m", "release", "v1", &new.to_string()]);
        let tag = id(&fixture.client(&["rev-parse", "v1"]));

        let pack = fixture.pack(&["--revs", "--thin"], &format!("{tag}\n^{old}\n^{side}\n"));
        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        outcome.unwrap();
        let objects = quarantine.objects().unwrap();
        let outcome = check_connectivity(&objects, &[tag, new], &[old, side]).unwrap();
        assert_eq!(outcome.new_commits, 3, "two commits and the merge");
        assert!(
            outcome.objects_checked < 30,
            "only changed paths are looked at: {outcome:?}"
        );
        quarantine.migrate().unwrap();
        fixture.server(&["update-ref", "refs/tags/v1", &tag.to_string()]);
        fixture.fsck();
    }

    #[test]
    fn connectivity_checks_new_trees_that_reuse_old_subtrees_elsewhere() {
        let fixture = Fixture::new();
        let old = fixture.commit(&[("a/x", "x\n"), ("a/y", "y\n")], "old");
        fixture.push(old, "refs/heads/main");
        // Move the subtree: same id under another name, plus a new blob.
        fixture.client(&["mv", "a", "b"]);
        let new = fixture.commit(&[("b/z", "z\n")], "moved");
        let pack = fixture.pack(&["--revs", "--thin"], &format!("{new}\n^{old}\n"));
        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        outcome.unwrap();
        check_connectivity(&quarantine.objects().unwrap(), &[new], &[old]).unwrap();
    }

    /// Check `data` with our fsck, and with git's: `git hash-object` runs it in strict mode and
    /// refuses on every message, where receive-pack only refuses on errors and warnings, not on
    /// git's informational messages. Bad file modes are such a message for git, an error here.
    fn check(kind: Kind, data: &[u8], expected: Option<&str>) {
        let actual = fsck_object(kind, data).err().map(|problem| problem.id);
        assert_eq!(
            actual,
            expected,
            "{kind} {:?}",
            String::from_utf8_lossy(data)
        );

        let mut child = Command::new("git")
            .args(["hash-object", "--stdin", "-t", &kind.to_string()])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let git_says = stderr
            .lines()
            .find_map(|line| line.strip_prefix("error: object fails fsck: "))
            .and_then(|line| line.split(':').next());
        assert_eq!(output.status.success(), git_says.is_none(), "{stderr}");
        const INFO_ONLY: &[&str] = &["badFilemode", "missingTaggerEntry", "badTagName"];
        let git_says = git_says.filter(|id| !INFO_ONLY.contains(id));
        let expected_from_git = expected.filter(|id| *id != "badFilemode");
        assert_eq!(
            git_says,
            expected_from_git,
            "git disagrees on {kind} {:?}",
            String::from_utf8_lossy(data)
        );
    }

    const TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

    fn commit_with(lines: &str) -> Vec<u8> {
        format!("tree {TREE}\n{lines}\nmessage\n").into_bytes()
    }

    #[test]
    fn fsck_commits() {
        let author = "author A U Thor <a@example.com> 1700000000 +0000\n";
        let committer = "committer C O Mitter <c@example.com> 1700000000 -0800\n";
        let good = format!("{author}{committer}");
        check(Kind::Commit, &commit_with(&good), None);
        check(
            Kind::Commit,
            &commit_with(&format!(
                "parent {TREE}\nparent {TREE}\n{good}encoding latin1\n"
            )),
            None,
        );
        check(
            Kind::Commit,
            format!("tree {TREE}\n{good}").as_bytes(),
            None,
        );
        check(
            Kind::Commit,
            &commit_with(&format!(
                "{good}gpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n"
            )),
            None,
        );
        for odd_but_valid in [
            "author  <a> 1 +0000\n",
            "author A <a>  1 +0000\n",
            "author A <a> \t1 +0000\n",
            "author A <a> 9223372036854775807 +0000\n",
            "author A B C <a@b> 1 -9999\n",
        ] {
            check(
                Kind::Commit,
                &commit_with(&format!("{odd_but_valid}{committer}")),
                None,
            );
        }
        let cases: &[(&str, &str)] = &[
            ("", "unterminatedHeader"),
            ("parent x\n", "missingTree"),
            ("tree 1234\n", "badTreeSha1"),
            (
                "tree 4b825dc642cb6eb9a060e54bf8d69288fbee490z\n\n",
                "badTreeSha1",
            ),
        ];
        for (data, expected) in cases {
            check(Kind::Commit, data.as_bytes(), Some(expected));
        }
        let bodies: &[(String, &str)] = &[
            (committer.to_owned(), "missingAuthor"),
            (format!("{author}{author}{committer}"), "multipleAuthors"),
            (author.to_owned(), "missingCommitter"),
            (format!("parent 12\n{good}"), "badParentSha1"),
            (format!("{committer}{author}"), "missingAuthor"),
            (
                format!("author <a@example.com> 1 +0000\n{committer}"),
                "missingNameBeforeEmail",
            ),
            (format!("author A> 1 +0000\n{committer}"), "badName"),
            (format!("author A 1 +0000\n{committer}"), "missingEmail"),
            (
                format!("author A<a> 1 +0000\n{committer}"),
                "missingSpaceBeforeEmail",
            ),
            (format!("author A <a 1 +0000\n{committer}"), "badEmail"),
            (
                format!("author A <a>1 +0000\n{committer}"),
                "missingSpaceBeforeDate",
            ),
            (
                format!("author A <a> 01 +0000\n{committer}"),
                "zeroPaddedDate",
            ),
            (format!("author A <a> x +0000\n{committer}"), "badDate"),
            (format!("author A <a> +1 +0000\n{committer}"), "badDate"),
            (format!("author A <a> -0 +0000\n{committer}"), "badDate"),
            (format!("author A <a> 1x +0000\n{committer}"), "badDate"),
            (
                format!("author A <a> 9223372036854775808 +0000\n{committer}"),
                "badDateOverflow",
            ),
            (format!("author A <a> 1+0000\n{committer}"), "badDate"),
            (
                format!("author A <a> 99999999999999999999 +0000\n{committer}"),
                "badDateOverflow",
            ),
            (format!("author A <a> 1 +000\n{committer}"), "badTimezone"),
            (format!("author A <a> 1 0000\n{committer}"), "badTimezone"),
            (format!("author A <a> 1 +0000 \n{committer}"), "badTimezone"),
        ];
        for (lines, expected) in bodies {
            check(Kind::Commit, &commit_with(lines), Some(expected));
        }
        check(
            Kind::Commit,
            &commit_with(&format!("author A <a> 0 +0000\n{committer}")),
            None,
        );
        let mut nul_in_header = commit_with(&good);
        nul_in_header[50] = 0;
        check(Kind::Commit, &nul_in_header, Some("nulInHeader"));
        let mut nul_in_body = commit_with(&good);
        nul_in_body.extend_from_slice(b"\0");
        check(Kind::Commit, &nul_in_body, Some("nulInCommit"));
        check(
            Kind::Commit,
            format!("tree {TREE}\n{author}{}", committer.trim_end()).as_bytes(),
            Some("unterminatedHeader"),
        );
    }

    #[test]
    fn fsck_tags() {
        let object = format!("object {TREE}\n");
        let tagger = "tagger T <t@example.com> 1700000000 +0000\n";
        check(
            Kind::Tag,
            format!("{object}type tree\ntag v1\n{tagger}\nmessage\n").as_bytes(),
            None,
        );
        check(
            Kind::Tag,
            format!("{object}type commit\ntag v1\n\nmessage\n").as_bytes(),
            None,
        );
        let cases: &[(String, &str)] = &[
            ("type tree\ntag v1\n\n".into(), "missingObject"),
            ("object 12\ntype tree\n\n".into(), "badObjectSha1"),
            (format!("{object}tag v1\n\n"), "missingTypeEntry"),
            (format!("{object}type tree"), "unterminatedHeader"),
            (format!("{object}type shrub\ntag v1\n\n"), "badType"),
            (format!("{object}type tree\n\n"), "missingTagEntry"),
            (
                format!("{object}type tree\ntag v1\ntagger T 1 +0000\n\n"),
                "missingEmail",
            ),
        ];
        for (data, expected) in cases {
            check(Kind::Tag, data.as_bytes(), Some(expected));
        }
    }

    fn tree(entries: &[(&str, &str)]) -> Vec<u8> {
        let blob = ObjectId::empty_blob(OBJECT_HASH);
        entries
            .iter()
            .flat_map(|(mode, name)| tree_entry(mode, name, blob))
            .collect()
    }

    #[test]
    fn fsck_trees() {
        check(Kind::Tree, b"", None);
        check(
            Kind::Tree,
            &tree(&[
                ("100644", ".github"),
                ("100644", ".gitignore"),
                ("100644", "a"),
                ("100755", "a.b"),
                ("40000", "a0"),
                ("120000", "b"),
                ("160000", "c"),
                ("100664", "d"),
                ("100644", "git~2"),
            ]),
            None,
        );
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("100644", "b"), ("100644", "a")], "treeNotSorted"),
            (&[("40000", "a"), ("100644", "a.b")], "treeNotSorted"),
            (&[("100644", "a"), ("100644", "a")], "duplicateEntries"),
            (&[("100644", "a"), ("40000", "a")], "duplicateEntries"),
            (
                &[("100644", "a"), ("100644", "a.b"), ("40000", "a")],
                "duplicateEntries",
            ),
            (&[("40000", "a"), ("100644", "a-b")], "treeNotSorted"),
            (&[("100644", "a-b"), ("40000", "a")], ""),
            (&[("100644", "a/b")], "fullPathname"),
            (&[("40000", ".git\\x")], "hasDotgit"),
            (&[("100644", ".")], "hasDot"),
            (&[("40000", "..")], "hasDotdot"),
            (&[("40000", ".git")], "hasDotgit"),
            (&[("40000", ".Git")], "hasDotgit"),
            (&[("40000", ".g\u{200c}it")], "hasDotgit"),
            (&[("40000", "GIT~1")], "hasDotgit"),
            (&[("40000", ".git. . ")], "hasDotgit"),
            (&[("40000", ".git::$INDEX_ALLOCATION")], "hasDotgit"),
            (&[("100644", "a\\.git")], "hasDotgit"),
            (&[("040000", "a")], "zeroPaddedFilemode"),
            (&[("100600", "a")], "badFilemode"),
            (&[("170000", "a")], "badFilemode"),
            (&[("120000", ".gitmodules")], "gitmodulesSymlink"),
            (&[("120000", ".GITMODULES ")], "gitmodulesSymlink"),
            (&[("120000", "gitmod~1")], "gitmodulesSymlink"),
            (&[("120000", "gi7eba~9")], "gitmodulesSymlink"),
            (&[("100644", "a b")], ""),
        ];
        for (entries, expected) in cases {
            let expected = (!expected.is_empty()).then_some(*expected);
            check(Kind::Tree, &tree(entries), expected);
        }

        let mut null_id = tree(&[("100644", "a")]);
        let len = null_id.len();
        null_id[len - 20..].fill(0);
        check(Kind::Tree, &null_id, Some("nullSha1"));
        for broken in [
            &b"100644 a\0short"[..],
            b"100644a\0aaaaaaaaaaaaaaaaaaaa",
            b"10064x a\0aaaaaaaaaaaaaaaaaaaa",
            b" a\0aaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"100644 \0aaaaaaaaaaaaaaaaaaaa",
        ] {
            check(Kind::Tree, broken, Some("badTree"));
        }
    }

    /// Blobs above the threshold: the one no delta needs is hashed while streaming (and
    /// fsck does not inflate it either); the one a delta is based on is resolved in memory.
    /// Both paths give the ids git gives, in a pack and exploded into loose objects.
    #[test]
    fn blobs_above_the_big_file_threshold_are_hashed_while_streaming() {
        let text = |seed: &str, lines: usize| -> String {
            (0..lines)
                .map(|line| format!("{seed} line {line}\n"))
                .collect()
        };
        for explode in [false, true] {
            let fixture = Fixture::new();
            let first = fixture.commit(
                &[("based.txt", &text("based", 10_000)), ("small", "small\n")],
                "first",
            );
            let mut changed = text("based", 10_000);
            changed.push_str("one more line\n");
            let second = fixture.commit(
                &[
                    ("based.txt", &changed),
                    ("alone.txt", &text("alone", 10_000)),
                ],
                "second",
            );
            let alone = id(&fixture.client(&["rev-parse", "HEAD:alone.txt"]));
            let pack = fixture.pack(&["--revs"], &format!("{second}\n"));
            let options = IngestOptions {
                big_file_threshold: Some(100_000),
                ..fsck_on()
            };
            let (quarantine, outcome) = fixture.ingest(&pack, &options);
            let outcome = outcome.unwrap();
            assert_eq!(
                outcome.large_blobs,
                vec![alone],
                "only the blob no delta needs"
            );
            let index =
                gix_pack::index::File::at(outcome.index.as_ref().unwrap(), OBJECT_HASH).unwrap();
            let mut indexed: Vec<ObjectId> = index.iter().map(|entry| entry.oid).collect();
            indexed.sort();
            let mut expected = fixture.objects(&[&second.to_string()]);
            expected.sort();
            assert_eq!(indexed, expected);
            if explode {
                let written = crate::explode::explode(&quarantine, &outcome).unwrap();
                assert_eq!(written as usize, expected.len());
            }
            quarantine.migrate().unwrap();
            fixture.server(&["update-ref", "refs/heads/main", &second.to_string()]);
            fixture.server(&["update-ref", "refs/heads/first", &first.to_string()]);
            fixture.fsck();
            assert_eq!(
                fixture
                    .server(&["cat-file", "-s", &alone.to_string()])
                    .trim(),
                text("alone", 10_000).len().to_string()
            );
        }
    }

    #[test]
    fn empty_blob_entry_is_the_empty_blob() {
        let data = gix_pack::data::Entry::from_bytes(EMPTY_BLOB_ENTRY, 0, OBJECT_HASH).unwrap();
        assert_eq!(data.header, gix_pack::data::entry::Header::Blob);
        assert_eq!(data.decompressed_size, 0);
        let compressed = &EMPTY_BLOB_ENTRY[data.header_size()..];
        assert_eq!(
            hash_while_inflating(Kind::Blob, 0, compressed).unwrap(),
            ObjectId::empty_blob(OBJECT_HASH)
        );
    }

    #[test]
    fn delta_result_size_reads_the_second_header_varint() {
        let deflate = |data: &[u8]| {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        // Base 4, result 3 GiB (0xc0000000), then an instruction.
        let header = [0x04, 0x80, 0x80, 0x80, 0x80, 0x0c, 0x90, 0x04];
        assert_eq!(delta_result_size(&deflate(&header)), Some(3 << 30));
        assert_eq!(delta_result_size(&deflate(&[0x7f, 0x01])), Some(1));
        // Ten bytes of continuation: saturates rather than wrapping to a small size.
        let mut overlong = vec![0x01];
        overlong.extend([0xff; 9]);
        overlong.push(0x7f);
        assert_eq!(delta_result_size(&deflate(&overlong)), Some(u64::MAX));
        assert_eq!(delta_result_size(&deflate(&[0x80])), None);
        assert_eq!(delta_result_size(b"not zlib"), None);
    }

    #[test]
    fn dot_git_spellings() {
        for name in [
            ".git",
            ".GIT",
            ".git.",
            ".git ",
            "git~1",
            "GIT~1...",
            ".git:stream",
        ] {
            assert!(is_ntfs_dotgit(name.as_bytes()), "{name}");
        }
        for name in [".gitx", "git~2", ".gi", "git", ".git x", "x.git"] {
            assert!(!is_ntfs_dotgit(name.as_bytes()), "{name}");
        }
        for name in [".git", ".GiT", "\u{feff}.git", ".gi\u{200d}t", ".git/"] {
            assert!(is_hfs_dotgit(name.as_bytes()), "{name}");
        }
        for name in [".gitx", ".g", "\u{e9}.git", ".git\u{e9}"] {
            assert!(!is_hfs_dotgit(name.as_bytes()), "{name}");
        }
        assert!(
            is_hfs_dotgit(b".git\xff"),
            "git stops at malformed UTF-8, and so do we"
        );
        for name in [
            ".gitmodules",
            ".GitModules..",
            "GITMOD~4",
            "gi7eba~1",
            "gi7eb~12",
        ] {
            assert!(is_ntfs_dotgitmodules(name.as_bytes()), "{name}");
        }
        for name in [".gitmodulesx", "gitmod~5", "gi7ebb~1", "gitmodules"] {
            assert!(!is_ntfs_dotgitmodules(name.as_bytes()), "{name}");
        }
    }

    /// A quarantine is stale when nothing in it changed for longer than the expiry: one that
    /// is still receiving a pack (a fresh file in `pack/`) stays, and so do other directories
    /// and what a symlink with a quarantine's name points to.
    #[test]
    fn stale_quarantines_are_judged_by_their_newest_change() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let elsewhere = dir.path().join("elsewhere");
        let old = SystemTime::now() - Duration::from_secs(2 * 86_400);
        let make = |path: &Path, age: Option<SystemTime>| {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"data").unwrap();
            let mut chain = vec![path.to_owned()];
            chain.extend(path.ancestors().skip(1).take(2).map(Path::to_owned));
            for path in chain.iter().filter(|_| age.is_some()) {
                File::open(path)
                    .unwrap()
                    .set_modified(age.unwrap())
                    .unwrap();
            }
        };
        let dead = objects.join(format!("{QUARANTINE_PREFIX}dead"));
        make(&dead.join("pack").join("tmp_pack_1"), Some(old));
        let busy = objects.join(format!("{QUARANTINE_PREFIX}busy"));
        make(&busy.join("pack").join("tmp_pack_2"), Some(old));
        File::options()
            .append(true)
            .open(busy.join("pack").join("tmp_pack_2"))
            .unwrap()
            .set_modified(SystemTime::now())
            .unwrap();
        make(&objects.join("pack").join("pack-1.pack"), Some(old));
        make(&elsewhere.join("pack").join("keep"), Some(old));
        std::os::unix::fs::symlink(&elsewhere, objects.join(format!("{QUARANTINE_PREFIX}link")))
            .unwrap();

        let removed = remove_stale_quarantines(&objects, Duration::from_secs(86_400)).unwrap();
        assert_eq!(removed, 1);
        assert!(!dead.exists());
        assert!(busy.join("pack").join("tmp_pack_2").exists());
        assert!(objects.join("pack").join("pack-1.pack").exists());
        assert!(elsewhere.join("pack").join("keep").exists());

        // With a shorter expiry than the busy one's age, it goes too.
        assert_eq!(
            remove_stale_quarantines(&objects, Duration::ZERO).unwrap(),
            1
        );
        assert!(!busy.exists());
    }
}
