//! Turning a small received pack into loose objects, as git's receive-pack does for pushes
//! of fewer objects than `receive.unpackLimit` (`transfer.unpackLimit`, 100 by default):
//! every small push kept as a pack of its own would leave a repository with hundreds of
//! tiny packs, which slow down every object lookup until the next repack.

use std::path::PathBuf;

use gix_hash::ObjectId;
use gix_object::{Exists, Find, Kind, Write};

use crate::ingest::{IngestOutcome, Quarantine};

const OBJECT_HASH: gix_hash::Kind = gix_hash::Kind::Sha1;

/// Why a pack could not be turned into loose objects. The quarantine is then dropped with
/// the push, as for any ingestion error.
#[derive(Debug, thiserror::Error)]
pub enum ExplodeError {
    /// The pack's index could not be read.
    #[error("could not read the index {path}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// An object database could not be opened.
    #[error("could not open the object database")]
    Open(#[source] std::io::Error),
    /// An object of the pack could not be read.
    #[error("could not read object {id}")]
    Read {
        /// The object.
        id: ObjectId,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// An object listed in the index is not in the pack.
    #[error("object {0} is listed but cannot be found")]
    Missing(ObjectId),
    /// A loose object could not be written.
    #[error("could not write object {id} as a loose object")]
    Write {
        /// The object.
        id: ObjectId,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// The pack's files could not be removed once exploded.
    #[error("could not remove {path}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Copy the whole (not deltified) blob `id` at `offset` of `pack` into `loose`, inflating it
/// a buffer at a time.
fn stream_blob(
    pack: &gix_pack::data::File,
    offset: u64,
    id: ObjectId,
    loose: &gix_odb::loose::Store,
) -> Result<(), ExplodeError> {
    let read_error = |source| ExplodeError::Read { id, source };
    let entry = pack.entry(offset).map_err(read_error)?;
    if entry.header != gix_pack::data::entry::Header::Blob {
        return Err(read_error(
            gix_error::message("not a whole blob in the pack").into(),
        ));
    }
    let end = pack.pack_end() as u64;
    let compressed = pack
        .entry_slice(entry.data_offset..end)
        .ok_or_else(|| read_error(gix_error::message("the entry is not in the pack").into()))?;
    let size = entry.decompressed_size;
    let mut inflate = flate2::bufread::ZlibDecoder::new(compressed);
    let written = loose
        .write_stream(
            Kind::Blob,
            size,
            &mut std::io::Read::take(&mut inflate, size),
        )
        .map_err(|source| ExplodeError::Write { id, source })?;
    if written != id {
        return Err(ExplodeError::Write {
            id,
            source: gix_error::message!("the streamed blob hashed to {written}").into(),
        });
    }
    Ok(())
}

/// Write every object of the pack [`ingest_pack`](crate::ingest_pack) put into `quarantine`
/// as a loose object of the quarantine, then delete the pack and its index. Objects the
/// repository already has (the bases copied in to complete a thin pack, or objects the
/// client sent again) are not written. Returns how many loose objects were written.
///
/// Call it before anything reads the quarantine through an object database opened earlier:
/// the pack disappears.
pub fn explode(quarantine: &Quarantine, outcome: &IngestOutcome) -> Result<u32, ExplodeError> {
    let (Some(pack), Some(index)) = (&outcome.pack, &outcome.index) else {
        return Ok(0);
    };
    let index_file =
        gix_pack::index::File::at(index, OBJECT_HASH).map_err(|source| ExplodeError::Index {
            path: index.clone(),
            source,
        })?;
    let received = quarantine.objects().map_err(ExplodeError::Open)?;
    let repository =
        gix_odb::at(quarantine.objects_dir(), OBJECT_HASH).map_err(ExplodeError::Open)?;
    let loose = gix_odb::loose::Store::at(quarantine.path(), OBJECT_HASH);
    let mut pack_file = None;
    let mut buffer = Vec::new();
    let mut written = 0;
    for entry in index_file.iter() {
        let id = entry.oid;
        if repository.exists(&id) {
            continue;
        }
        if outcome.large_blobs.binary_search(&id).is_ok() {
            // As git's unpack-objects: inflated from the pack into the loose object a
            // buffer at a time, never whole.
            let pack_file = match &mut pack_file {
                Some(pack_file) => pack_file,
                None => pack_file.insert(gix_pack::data::File::at(pack, OBJECT_HASH).map_err(
                    |source| ExplodeError::Index {
                        path: pack.clone(),
                        source,
                    },
                )?),
            };
            stream_blob(pack_file, entry.pack_offset, id, &loose)?;
            written += 1;
            continue;
        }
        let object = received
            .try_find(&id, &mut buffer)
            .map_err(|source| ExplodeError::Read { id, source })?
            .ok_or(ExplodeError::Missing(id))?;
        loose
            .write_buf(object.kind, object.data)
            .map_err(|source| ExplodeError::Write { id, source })?;
        written += 1;
    }
    drop(received);
    let reverse_index = pack.with_extension("rev");
    for path in [index, pack, &reverse_index] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ExplodeError::Remove {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(written)
}
