//! Pack generation: turn an enumerated object set into a pack data stream.
//!
//! Entries are taken from the repository's own packs where possible (existing deltas are
//! reused as they are), several threads resolve and copy entries, and the pack is written
//! chunk by chunk into any [`std::io::Write`]: a slow writer slows generation down instead of
//! making it buffer the whole pack.
//!
//! Thin packs: gitoxide's copier turns an out-of-pack delta base into a ref-delta no matter
//! who has that base. A client can only resolve a base it is known to have, so every such
//! entry whose base is not in [`WriteOptions::client_has`] is replaced by the full object.

use std::{io::Write, sync::atomic::AtomicBool};

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use gix_pack::data::output::{self, entry::Kind};

/// How to write a pack.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Objects the client is known to have: the only bases a ref-delta may point at.
    /// `None` means the client did not ask for a thin pack, so every delta base is in the pack.
    pub client_has: Option<&'a HashSet<ObjectId>>,
    /// The client understands offset deltas (`ofs-delta`); without it in-pack deltas are
    /// written as ref-deltas.
    pub ofs_delta: bool,
    /// The most threads to use; `None` uses every core.
    pub thread_limit: Option<usize>,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Objects in the pack.
    pub objects: u32,
    /// Of those, entries written as deltas.
    pub deltas: u32,
    /// Entries that had to be inflated again because their delta base was not usable.
    pub recompressed_for_thin_pack: u32,
    /// Bytes written, including header and trailer.
    pub bytes: u64,
    /// The pack's trailing checksum.
    pub checksum: ObjectId,
}

/// The error returned by [`write_pack()`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// More objects than a pack header can count.
    #[error("{count} objects do not fit into one pack")]
    TooManyObjects {
        /// How many objects were asked for.
        count: usize,
    },
    /// An object to be packed is not in the repository.
    #[error("object {id} is missing from the repository")]
    MissingObject {
        /// The missing object.
        id: ObjectId,
    },
    /// Objects to be packed could not be found while copying entries.
    #[error("objects to be packed are missing from the repository")]
    MissingObjects,
    /// Reading objects or pack entries failed.
    #[error("could not read objects while generating the pack")]
    Read(#[source] gix_error::Error),
    /// `should_interrupt` was set.
    #[error("pack generation was interrupted")]
    Interrupted,
    /// Writing the pack failed, usually because the client went away.
    #[error("could not write the pack")]
    Write(#[source] gix_error::Error),
}

/// Write a pack holding exactly `objects` from `db` into `out`.
///
/// `objects` must not contain duplicates; their order does not matter (entries that can be
/// copied from existing packs are written in pack order for locality).
pub fn write_pack<W: Write>(
    db: &gix_odb::Handle,
    objects: &[ObjectId],
    options: &WriteOptions<'_>,
    out: W,
    should_interrupt: &AtomicBool,
) -> Result<WriteOutcome, WriteError> {
    let num_objects = u32::try_from(objects.len()).map_err(|_| WriteError::TooManyObjects {
        count: objects.len(),
    })?;
    let mut db = db.clone();
    db.prevent_pack_unload();
    db.ignore_replacements = true;

    let counts: Vec<output::Count> = objects
        .iter()
        .map(|id| output::Count {
            id: *id,
            entry_pack_location: output::count::PackLocation::NotLookedUp,
        })
        .collect();
    let entries = output::entry::iter_from_counts(
        counts,
        db.clone(),
        Box::new(gix_utils::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: options.thread_limit,
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            allow_thin_pack: options.client_has.is_some(),
            chunk_size: 64,
            version: gix_pack::data::Version::V2,
            compression: gix_zlib::Compression::DEFAULT,
        },
    )
    .map_err(WriteError::Read)?;

    let mut fixer = EntryFixer {
        db: &db,
        client_has: options.client_has,
        ofs_delta: options.ofs_delta,
        written_ids: Vec::with_capacity(objects.len()),
        deltas: 0,
        recompressed: 0,
        buf: Vec::new(),
        error: None,
    };
    let in_order = gix_parallel::InOrderIter::from(entries);
    let fixed = in_order.map(|chunk| {
        let chunk = chunk?;
        fixer.fix_chunk(chunk)
    });
    let mut writer = output::bytes::FromEntriesIter::new(
        fixed,
        OutputErrors {
            inner: out,
            failed: false,
        },
        num_objects,
        gix_pack::data::Version::V2,
        gix_hash::Kind::Sha1,
    );
    let mut bytes = 0;
    for written in &mut writer {
        if should_interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(WriteError::Interrupted);
        }
        match written {
            Ok(n) => bytes += n,
            Err(err) => {
                // The writer reports input and output failures alike; tell them apart, since
                // only a failed read is worth telling the client about.
                let output_failed = writer.into_write().failed;
                return Err(if output_failed {
                    WriteError::Write(err)
                } else {
                    fixer.error.take().unwrap_or(WriteError::Read(err))
                });
            }
        }
    }
    let checksum = writer.digest().ok_or_else(|| {
        WriteError::Write(gix_error::message("pack writer ended without a trailer").into())
    })?;
    drop(writer);
    Ok(WriteOutcome {
        objects: num_objects,
        deltas: fixer.deltas,
        recompressed_for_thin_pack: fixer.recompressed,
        bytes,
        checksum,
    })
}

/// Remembers whether writing to the output failed.
struct OutputErrors<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for OutputErrors<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Post-processes entries in pack order, on the writing thread.
struct EntryFixer<'a> {
    db: &'a gix_odb::Handle,
    client_has: Option<&'a HashSet<ObjectId>>,
    ofs_delta: bool,
    /// Ids of the entries written so far, by index: resolves in-pack delta bases.
    written_ids: Vec<ObjectId>,
    deltas: u32,
    recompressed: u32,
    buf: Vec<u8>,
    error: Option<WriteError>,
}

impl EntryFixer<'_> {
    fn fix_chunk(
        &mut self,
        mut chunk: Vec<output::Entry>,
    ) -> gix_error::Result<Vec<output::Entry>> {
        for entry in &mut chunk {
            if entry.is_invalid() {
                // `iter_from_counts` marks objects it could not find as invalid; writing on would
                // produce a pack with fewer objects than its header says.
                self.error = Some(WriteError::MissingObjects);
                return Err(gix_error::message("object missing while generating the pack").into());
            }
            match entry.kind {
                Kind::Base(_) => {}
                Kind::DeltaRef { object_index } => {
                    self.deltas += 1;
                    if !self.ofs_delta {
                        let Some(base) = self.written_ids.get(object_index) else {
                            return Err(gix_error::message(
                                "delta base index beyond written entries",
                            )
                            .into());
                        };
                        entry.kind = Kind::DeltaOid { id: *base };
                    }
                }
                Kind::DeltaOid { id } => {
                    let usable = self.client_has.is_some_and(|has| has.contains(&id));
                    if usable {
                        self.deltas += 1;
                    } else {
                        self.replace_with_full_object(entry)?;
                    }
                }
            }
            self.written_ids.push(entry.id);
        }
        Ok(chunk)
    }

    fn replace_with_full_object(&mut self, entry: &mut output::Entry) -> gix_error::Result<()> {
        use gix_pack::Find;
        let id = entry.id;
        let Some((object, _location)) = self.db.try_find(&id, &mut self.buf)? else {
            self.error = Some(WriteError::MissingObject { id });
            return Err(gix_error::message("object missing while generating the pack").into());
        };
        let count = output::Count::from_data(id, None);
        *entry = output::Entry::from_data(&count, &object, gix_zlib::Compression::DEFAULT)?;
        self.recompressed += 1;
        Ok(())
    }
}
