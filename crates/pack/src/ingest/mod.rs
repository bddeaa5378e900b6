//! Pack ingestion: the receiving half of a push.
//!
//! A push delivers one pack stream. [`ingest_pack()`] reads it, completes it if it is thin (its
//! ref-delta bases are taken from the repository), indexes it with several threads and writes
//! `pack-<checksum>.pack` and `.idx` into a [`Quarantine`]: a directory inside the repository's
//! object store that readers of the repository never look at. With [`FsckObjects::On`] every
//! commit, tree and tag of the pack is checked like git's `receive.fsckObjects` does
//! (`index-pack --strict`: git's rules under [`IngestOptions::fsck_options`], and every object
//! they name is in the pack or the repository).
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
//!
//! Modules: `quarantine` (the directory, migration, stale ones), `input` (the bounded stream
//! and its entries as they arrive), `streamed` (blobs above the big-file threshold), `fsck`
//! (git's strict checks), `connectivity` (the check of new tips); this file is ingestion itself.

use std::{
    cell::RefCell,
    fs::{self, File},
    io::{self, BufRead, Read, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
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

mod connectivity;
mod fsck;
mod input;
mod quarantine;
mod shallow;
mod streamed;

pub use connectivity::{
    check_connectivity, check_connectivity_with_grafts, ConnectivityError, ConnectivityOutcome,
};
use fsck::*;
pub use fsck::{
    is_fsck_message_id, FsckOptions, FsckProblem, FsckSettingError, FsckSeverity, FsckWarning,
};
use input::*;
use quarantine::*;
pub use quarantine::{remove_stale_quarantines, Quarantine};
pub use shallow::{shallow_roots_by_tip, ShallowWalkError};
use streamed::*;

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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// Refuse a pack stream longer than this many bytes (git's `receive.maxInputSize`).
    pub max_input_bytes: Option<u64>,
    /// Refuse a pack whose header announces more objects than this, before reading any entry.
    pub max_objects: Option<u32>,
    /// Check commits, trees and tags of the pack.
    pub fsck: FsckObjects,
    /// With [`FsckObjects::On`]: the severities and skip list (`receive.fsck.*`).
    pub fsck_options: FsckOptions,
    /// With [`FsckObjects::On`]: commits whose parents the pack need not bring (the
    /// repository's and the client's shallow commits), as git's `--shallow-file` makes them.
    pub shallow: HashSet<ObjectId>,
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
    /// What the fsck of the pack warned about ([`FsckObjects::On`]), to be told to the client.
    pub fsck_warnings: Vec<FsckWarning>,
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
    /// A `receive.fsck.*` setting git's index-pack dies on.
    #[error("{source}")]
    FsckSetting {
        /// The setting's problem.
        source: FsckSettingError,
    },
    /// An object the pack's objects name is neither in the pack nor in the repository (git's
    /// `index-pack --strict`).
    #[error("did not receive expected object {id}")]
    ExpectedObjectMissing {
        /// The object.
        id: ObjectId,
    },
    /// An object the pack's objects name is of another kind than they name it as.
    #[error("object {id}: expected type {expected}, found {found}")]
    UnexpectedKind {
        /// The object.
        id: ObjectId,
        /// What it was named as.
        expected: Kind,
        /// What it is.
        found: Kind,
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
        // As git's unpack-objects, which dies on such a setting before reading anything.
        if let (FsckObjects::On, Some(refusal)) = (options.fsck, options.fsck_options.refusal()) {
            return Err(IngestError::FsckSetting {
                source: refusal.clone(),
            });
        }
        return Ok(IngestOutcome {
            objects: 0,
            completed_bases: 0,
            pack: None,
            index: None,
            checksum: trailer,
            bytes_read: input.consumed,
            fsck_warnings: Vec::new(),
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
    let mut fsck_warnings = Vec::new();
    if options.fsck == FsckObjects::On {
        // Bases copied from the repository were accepted before; git does not check them either.
        let skip: HashSet<ObjectId> = completed_bases.iter().copied().collect();
        fsck_warnings = fsck_pack(
            &index_path,
            &pack_path,
            &skip,
            &streamed,
            options,
            repository_objects,
            should_interrupt,
        )?
        .warnings;
        fsck_warnings.sort_by_key(|warning| warning.id);
    }

    Ok(IngestOutcome {
        objects: indexed.num_objects,
        completed_bases: u32::try_from(completed_bases.len()).unwrap_or(u32::MAX),
        pack: Some(pack_path),
        index: Some(index_path),
        checksum: indexed.data_hash,
        bytes_read: input.consumed,
        fsck_warnings,
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

#[cfg(test)]
mod tests;
