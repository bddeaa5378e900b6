//! Pack generation: turn an enumerated object set into a pack data stream.
//!
//! Entries are copied from the repository's own packs where possible, byte for byte: whole
//! objects, and deltas whose base is in the new pack too (as an offset delta) or is one the
//! client has (a thin pack's ref-delta). Their lengths come from the packs' reverse indexes
//! ([`crate::packs`]), so nothing copied is inflated. Any other entry — a delta against a base
//! the client will not have, a loose object — is written whole, read through the walk's
//! delta-base cache and compressed with one reused compressor, as git's `pack-objects` does.
//! The pack is written chunk by chunk into any [`std::io::Write`]: a slow writer slows
//! generation down instead of making it buffer the whole pack.
//!
//! Computed deltas: gitoxide reuses the deltas stored in the repository's packs but cannot make
//! new ones, so objects that are stored whole — typically the newest version of each file, and
//! loose objects — would be sent whole, even to a client that has the previous version. With
//! [`WriteOptions::delta_search`], every entry that is about to be written whole is tried
//! against other versions of its path (see [`crate::delta`]): versions the client has (a thin
//! pack's *preferred bases*, referenced by id) and versions written earlier in this pack
//! (referenced by offset, or by id without `ofs-delta`). Entries whose stored delta is reused
//! are left alone, so no delta chain can loop.

use std::{io::Write, sync::atomic::AtomicBool};

use gix_hash::ObjectId;
use gix_hashtable::{HashMap, HashSet};
use gix_pack::data::{
    entry::Header,
    output::{self, entry::Kind},
};

use crate::{
    delta::DeltaIndex,
    packs::{Located, PackSet},
    search::{CollectLimits, PathVersions},
};

/// How to write a pack.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Objects the client is known to have: the only bases a ref-delta may point at.
    /// `None` means the client did not ask for a thin pack, so every delta base is in the pack.
    pub client_has: Option<ClientHas<'a>>,
    /// The client understands offset deltas (`ofs-delta`); without it in-pack deltas are
    /// written as ref-deltas.
    pub ofs_delta: bool,
    /// Compute deltas for objects that would be written whole; `None` only reuses stored
    /// deltas.
    pub delta_search: Option<DeltaSearch<'a>>,
    /// Where to find entries and read objects in full when a stored delta's base can't be
    /// sent: give the enumeration's [`crate::reader::CachingReader`] and its packs and
    /// delta-base cache are used again, as git's are; `None` opens the packs anew.
    pub reader: Option<&'a crate::reader::CachingReader>,
    /// The checksum of a pack whose objects are exactly `objects`, as a bitmap count knows
    /// ([`crate::enumerate::Enumeration::whole_pack`]): the pack file is then sent as
    /// stored without looking each object up. Trusted only when the counts agree.
    pub whole_pack: Option<ObjectId>,
}

/// The objects a thin pack may use as delta bases: what the client is known to have.
#[derive(Debug, Clone, Copy)]
pub enum ClientHas<'a> {
    /// Exactly these objects.
    Set(&'a HashSet<ObjectId>),
    /// Whatever the haves' bitmaps reach.
    Bitmap(&'a crate::bitmap::count::Counted),
}

impl ClientHas<'_> {
    /// Whether the client has `id`.
    pub fn contains(&self, id: &gix_hash::oid) -> bool {
        match self {
            ClientHas::Set(set) => set.contains(id),
            ClientHas::Bitmap(counted) => counted.client_has(id),
        }
    }

    /// Whether the client has nothing (a clone).
    pub fn is_empty(&self) -> bool {
        match self {
            ClientHas::Set(set) => set.is_empty(),
            ClientHas::Bitmap(counted) => counted.client_has_len() == 0,
        }
    }
}

/// Where and how hard to look for delta bases of objects that would be written whole.
#[derive(Debug, Clone, Copy)]
pub struct DeltaSearch<'a> {
    /// The commits among the objects to pack, most recent first. Their trees are compared with
    /// their parents' to learn which objects are versions of the same path.
    pub commits: &'a [ObjectId],
    /// Of those, how many are compared with their parents (the most recent ones).
    pub max_commits: usize,
    /// The most trees read while comparing.
    pub max_trees: usize,
    /// The most bases tried per object (git's `pack.window`).
    pub window: usize,
    /// Objects and bases larger than this are not searched (git's `pack.bigFileThreshold`
    /// plays that role, at 512 MiB).
    pub max_object_size: usize,
    /// The most deltas computed in all, tried or kept: a bound on the work for one pack.
    pub max_attempts: usize,
    /// The longest delta chain a computed delta may extend within the pack (git's
    /// `pack.depth`).
    pub max_depth: u16,
}

impl<'a> DeltaSearch<'a> {
    /// git's limits where it has them, and bounds that keep the search of a clone short.
    pub fn new(commits: &'a [ObjectId]) -> Self {
        DeltaSearch {
            commits,
            max_commits: 100,
            max_trees: 1_000,
            window: 10,
            max_object_size: 16 << 20,
            max_attempts: 2_000,
            max_depth: 50,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Objects in the pack.
    pub objects: u32,
    /// Of those, entries written as deltas.
    pub deltas: u32,
    /// Entries that could not be copied — stored as deltas against a base that can't be
    /// used, or loose — and were read in full and compressed again (whole or as a computed
    /// delta).
    pub recompressed: u32,
    /// Of the deltas, those computed here rather than copied from the repository's packs.
    pub computed_deltas: u32,
    /// Entries copied exactly as stored, header included.
    pub verbatim: u32,
    /// The copies those took: consecutive verbatim entries are copied as one range.
    pub verbatim_copies: u32,
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
    Write(#[source] std::io::Error),
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

    let owned_reader;
    let reader = match options.reader {
        Some(reader) => reader,
        None => {
            owned_reader =
                crate::reader::CachingReader::new(db.clone(), crate::reader::DEFAULT_CACHE_BYTES);
            &owned_reader
        }
    };
    if let Some(pack) = known_whole_pack(reader.packs(), objects.len(), options) {
        return copy_whole_pack(reader.packs(), pack, out, should_interrupt);
    }
    let plan = Plan::new(reader.packs(), objects);
    if let Some(pack) = whole_pack(reader.packs(), &plan, options) {
        return copy_whole_pack(reader.packs(), pack, out, should_interrupt);
    }

    let searcher = options.delta_search.and_then(|search| {
        // Through the walk's cache: the trees compared are mostly the ones it just read.
        let started = std::time::Instant::now();
        let paths = PathVersions::collect(
            reader,
            search.commits,
            CollectLimits {
                commits: search.max_commits,
                trees: search.max_trees,
            },
        );
        tracing::debug!(
            trees_read = paths.trees_read(),
            objects = paths.len(),
            elapsed = ?started.elapsed(),
            "collected path versions"
        );
        (!paths.is_empty()).then(|| DeltaSearcher {
            options: search,
            paths,
            reader,
            attempts: 0,
            written: HashMap::default(),
        })
    });
    let mut fixer = EntryFixer {
        source: EntrySource {
            packs: reader.packs(),
            reader,
            plan: &plan,
            client_has: options.client_has,
            compressor: flate2::Compress::new(flate2::Compression::default(), true),
            recompressed: 0,
        },
        ofs_delta: options.ofs_delta,
        written_ids: Vec::with_capacity(objects.len()),
        depths: Vec::with_capacity(objects.len()),
        deltas: 0,
        computed: 0,
        verbatim: 0,
        error: None,
        searcher,
    };
    let mut out = PackOutput {
        inner: out,
        hasher: sha1::Sha1::new(),
        written: 0,
        copies: 0,
    };
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(b"PACK");
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&num_objects.to_be_bytes());
    out.put(&header).map_err(WriteError::Write)?;
    // Where each entry starts: an offset delta names its base by the distance back to it.
    let mut offsets: Vec<u64> = Vec::with_capacity(plan.slots.len());
    // Entries that go out exactly as stored, one after the other in the same pack, are
    // copied as one range: a bitmapped clone is mostly one long copy.
    let packs = reader.packs();
    let mut run = Run::default();
    let mut encoded = Vec::with_capacity(32);
    for start in (0..plan.slots.len()).step_by(CHUNK) {
        if should_interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(WriteError::Interrupted);
        }
        let chunk = fixer
            .chunk(start..(start + CHUNK).min(plan.slots.len()))
            .map_err(|err| fixer.error.take().unwrap_or(WriteError::Read(err)))?;
        for (entry, raw) in chunk {
            let offset = out.written + run.len();
            let header = match entry.kind {
                Kind::Base(kind) => match kind {
                    gix_object::Kind::Commit => Header::Commit,
                    gix_object::Kind::Tree => Header::Tree,
                    gix_object::Kind::Blob => Header::Blob,
                    gix_object::Kind::Tag => Header::Tag,
                },
                Kind::DeltaOid { id } => Header::RefDelta { base_id: id },
                Kind::DeltaRef { object_index } => {
                    let base = offsets.get(object_index).copied().ok_or_else(|| {
                        WriteError::Read(
                            gix_error::message("delta base not written before its delta").into(),
                        )
                    })?;
                    Header::OfsDelta {
                        base_distance: offset - base,
                    }
                }
            };
            encoded.clear();
            header
                .write_to(entry.decompressed_size as u64, &mut encoded)
                .map_err(WriteError::Write)?;
            offsets.push(offset);
            match raw {
                Some(raw) => {
                    let stored = packs
                        .raw(raw.pack, raw.offset..raw.data_offset)
                        .map_err(WriteError::Read)?;
                    if stored == encoded.as_slice() {
                        if !run.extend(raw) {
                            run.flush(packs, &mut out)?;
                            run = Run::start(raw);
                        }
                        fixer.verbatim += 1;
                        continue;
                    }
                    // Another header (an offset delta whose base moved, a ref-delta for a
                    // client without ofs-delta): the header anew, the data as stored.
                    run.flush(packs, &mut out)?;
                    out.put(&encoded).map_err(WriteError::Write)?;
                    let data = packs
                        .raw(raw.pack, raw.data_offset..raw.end)
                        .map_err(WriteError::Read)?;
                    out.put(data).map_err(WriteError::Write)?;
                }
                None => {
                    run.flush(packs, &mut out)?;
                    out.put(&encoded).map_err(WriteError::Write)?;
                    out.put(&entry.compressed_data).map_err(WriteError::Write)?;
                }
            }
        }
    }
    run.flush(packs, &mut out)?;
    use sha1::Digest as _;
    let digest: [u8; 20] = out.hasher.finalize().into();
    out.inner.write_all(&digest).map_err(WriteError::Write)?;
    Ok(WriteOutcome {
        objects: num_objects,
        deltas: fixer.deltas,
        recompressed: fixer.source.recompressed,
        computed_deltas: fixer.computed,
        verbatim: fixer.verbatim,
        verbatim_copies: out.copies,
        bytes: out.written + 20,
        checksum: ObjectId::Sha1(digest),
    })
}

/// The pack whose every object, and nothing else, is to be sent, if the client takes it as
/// stored (offset deltas; a repository's pack is never thin, and its deltas are what git
/// would send). Its entries then need no looking at: the pack file is the pack to send.
///
/// Not for a client that has objects and takes a thin pack: a pack of just the new
/// objects (one a push or `fast-import` wrote) stores whole what a delta against the
/// client's versions sends in a fraction of the bytes.
fn whole_pack(packs: &PackSet, plan: &Plan, options: &WriteOptions<'_>) -> Option<u32> {
    if !takes_a_stored_pack(options) {
        return None;
    }
    let [(pack, range)] = plan.by_pack.as_slice() else {
        return None;
    };
    let count = packs.num_objects(*pack).ok()?;
    if range.start != 0 || range.len() != plan.slots.len() || count as usize != plan.slots.len() {
        return None;
    }
    let (header, _, _) = packs.whole(*pack).ok()?;
    let mut expected = Vec::with_capacity(12);
    expected.extend_from_slice(b"PACK");
    expected.extend_from_slice(&2u32.to_be_bytes());
    expected.extend_from_slice(&count.to_be_bytes());
    (header == expected.as_slice()).then_some(*pack)
}

/// Whether a stored pack may go out as it is to this client: it takes offset deltas, and it
/// has nothing a delta search could use as a base ([`whole_pack`]).
fn takes_a_stored_pack(options: &WriteOptions<'_>) -> bool {
    options.ofs_delta
        && !(options.delta_search.is_some()
            && options.client_has.is_some_and(|has| !has.is_empty()))
}

/// The pack of [`WriteOptions::whole_pack`], if it is in the set, holds `count` objects and
/// may be sent as stored ([`whole_pack`]'s conditions on the client).
fn known_whole_pack(packs: &PackSet, count: usize, options: &WriteOptions<'_>) -> Option<u32> {
    let checksum = options.whole_pack?;
    if !takes_a_stored_pack(options) {
        return None;
    }
    (0..u32::try_from(packs.len()).ok()?).find(|&pack| {
        packs.num_objects(pack).is_ok_and(|n| n as usize == count)
            && packs
                .whole(pack)
                .is_ok_and(|(_, _, trailer)| trailer == checksum.as_slice())
    })
}

/// Write the stored pack [`WriteOptions::whole_pack`] names, as it is, when `packs` has it
/// with `count` objects and the client may take a stored pack (it takes offset deltas, and a
/// thin pack has no delta search to do); `Ok(None)`, with nothing written, otherwise.
///
/// [`write_pack()`] does the same by itself; this is for a caller that knows its objects are
/// that pack's without listing them (a clone counted with the pack's bitmap).
pub fn write_stored_pack<W: Write>(
    packs: &PackSet,
    count: usize,
    options: &WriteOptions<'_>,
    out: W,
    should_interrupt: &AtomicBool,
) -> Result<Option<WriteOutcome>, WriteError> {
    match known_whole_pack(packs, count, options) {
        Some(pack) => copy_whole_pack(packs, pack, out, should_interrupt).map(Some),
        None => Ok(None),
    }
}

/// Write pack `pack` as stored: its header (the same count), entries and checksum.
fn copy_whole_pack<W: Write>(
    packs: &PackSet,
    pack: u32,
    mut out: W,
    should_interrupt: &AtomicBool,
) -> Result<WriteOutcome, WriteError> {
    let (header, body, trailer) = packs.whole(pack).map_err(WriteError::Read)?;
    let objects = packs.num_objects(pack).map_err(WriteError::Read)?;
    let deltas = packs.count_deltas(pack).map_err(WriteError::Read)?;
    out.write_all(header).map_err(WriteError::Write)?;
    for piece in body.chunks(MAX_RUN as usize) {
        if should_interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(WriteError::Interrupted);
        }
        out.write_all(piece).map_err(WriteError::Write)?;
    }
    out.write_all(trailer).map_err(WriteError::Write)?;
    let checksum = ObjectId::try_from(trailer)
        .map_err(|_| WriteError::Read(gix_error::message("pack trailer is not a SHA-1").into()))?;
    tracing::debug!(objects, deltas, "whole pack copied as stored");
    Ok(WriteOutcome {
        objects,
        deltas,
        recompressed: 0,
        computed_deltas: 0,
        verbatim: objects,
        verbatim_copies: body.len().div_ceil(MAX_RUN as usize) as u32,
        bytes: (header.len() + body.len() + trailer.len()) as u64,
        checksum,
    })
}

/// The pack as it is written, hashed for its trailer. git's collision-detecting SHA-1 guards
/// what is read; what is written here only needs its checksum, so the plain (hardware) SHA-1
/// computes it.
struct PackOutput<W> {
    inner: W,
    hasher: sha1::Sha1,
    written: u64,
    /// Ranges of verbatim entries written.
    copies: u32,
}

impl<W: Write> PackOutput<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use sha1::Digest as _;
        self.inner.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// A range of consecutive entries of one pack that go out exactly as stored, not written yet.
#[derive(Debug, Default)]
struct Run {
    pack: u32,
    start: u64,
    end: u64,
}

/// A run is written once it is this long, so the pack streams while it is made.
const MAX_RUN: u64 = 4 << 20;

impl Run {
    fn start(raw: Raw) -> Run {
        Run {
            pack: raw.pack,
            start: raw.offset,
            end: raw.end,
        }
    }

    fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Add the entry at `raw` if it directly follows the run's end.
    fn extend(&mut self, raw: Raw) -> bool {
        if self.len() > 0 && self.pack == raw.pack && self.end == raw.offset && self.len() < MAX_RUN
        {
            self.end = raw.end;
            true
        } else {
            false
        }
    }

    fn flush<W: Write>(
        &mut self,
        packs: &PackSet,
        out: &mut PackOutput<W>,
    ) -> Result<(), WriteError> {
        if self.len() > 0 {
            let bytes = packs
                .raw(self.pack, self.start..self.end)
                .map_err(WriteError::Read)?;
            out.put(bytes).map_err(WriteError::Write)?;
            out.copies += 1;
        }
        *self = Run::default();
        Ok(())
    }
}

/// Entries are made and written this many at a time.
const CHUNK: usize = 64;

/// The objects to pack in the order they are written: those in no pack of the set (loose,
/// or in a pack newer than the set) first, then pack by pack in each pack's order, so copies
/// read the packs front to back and an offset delta's base comes before the delta.
struct Plan {
    slots: Vec<Slot>,
    /// For each pack with objects in the plan: the range of its slots.
    by_pack: Vec<(u32, std::ops::Range<usize>)>,
}

struct Slot {
    id: ObjectId,
    at: Option<Located>,
}

impl Plan {
    fn new(packs: &PackSet, objects: &[ObjectId]) -> Plan {
        let mut slots: Vec<Slot> = objects
            .iter()
            .map(|id| Slot {
                id: *id,
                at: packs.locate(id),
            })
            .collect();
        slots.sort_unstable_by_key(|slot| slot.at.map(|at| (at.pack, at.offset)));
        let mut by_pack: Vec<(u32, std::ops::Range<usize>)> = Vec::new();
        for (n, slot) in slots.iter().enumerate() {
            let Some(at) = slot.at else { continue };
            match by_pack.last_mut() {
                Some((pack, range)) if *pack == at.pack => range.end = n + 1,
                _ => by_pack.push((at.pack, n..n + 1)),
            }
        }
        Plan { slots, by_pack }
    }

    /// The slot of the object whose entry starts at `offset` in `pack`, if it is packed too.
    fn slot_at(&self, pack: u32, offset: u64) -> Option<usize> {
        let (_, range) = self.by_pack.iter().find(|(p, _)| *p == pack)?;
        let slots = self.slots.get(range.clone())?;
        slots
            .binary_search_by_key(&Some(offset), |slot| slot.at.map(|at| at.offset))
            .ok()
            .map(|n| range.start + n)
    }
}

/// Makes the entry of each slot: a copy where one can be sent, the whole object otherwise.
struct EntrySource<'a> {
    packs: &'a PackSet,
    reader: &'a crate::reader::CachingReader,
    plan: &'a Plan,
    client_has: Option<ClientHas<'a>>,
    /// Reused for every object compressed here: setting one up costs more than compressing a
    /// small object.
    compressor: flate2::Compress,
    recompressed: u32,
}

/// Where a copied entry is in its pack: the header from `offset`, the data from
/// `data_offset` to `end`.
#[derive(Debug, Clone, Copy)]
struct Raw {
    pack: u32,
    offset: u64,
    data_offset: u64,
    end: u64,
}

/// A slot's entry as the source made it.
enum Made {
    /// Copied from a pack, ready to write; its data is where [`Raw`] says, not in the entry.
    Copied(output::Entry, Raw),
    /// An object to write whole, not yet compressed: a delta may still be found for it.
    Whole(Whole),
}

struct Whole {
    id: ObjectId,
    kind: gix_object::Kind,
    data: Vec<u8>,
}

impl EntrySource<'_> {
    fn entry(&mut self, index: usize) -> Result<Made, WriteError> {
        let slot = self
            .plan
            .slots
            .get(index)
            .ok_or(WriteError::MissingObjects)?;
        if let Some(at) = slot.at {
            if let Some((entry, raw)) = self.copy(slot.id, at).map_err(WriteError::Read)? {
                return Ok(Made::Copied(entry, raw));
            }
        }
        self.whole(slot.id).map(Made::Whole)
    }

    /// The stored entry of `id` at `at` as it can be sent, or `None` if it is a delta whose
    /// base will be neither in the pack nor with the client. The entry's data is left in the
    /// pack, where the returned [`Raw`] says.
    fn copy(
        &self,
        id: ObjectId,
        at: Located,
    ) -> Result<Option<(output::Entry, Raw)>, gix_error::Error> {
        let header = self.packs.header(at)?;
        let kind = match header.header {
            Header::OfsDelta { base_distance } => {
                let base = Header::verified_base_pack_offset(at.offset, base_distance)
                    .ok_or_else(|| gix_error::message("ofs-delta before pack start"))?;
                match self.plan.slot_at(at.pack, base) {
                    Some(object_index) => Kind::DeltaRef { object_index },
                    None => match self.client_has {
                        Some(has) => {
                            let base = self.packs.id_at(at.pack, base)?;
                            if !has.contains(&base) {
                                return Ok(None);
                            }
                            Kind::DeltaOid { id: base }
                        }
                        None => return Ok(None),
                    },
                }
            }
            // A ref-delta's base may be anywhere in the pack; git writes them whole unless
            // the client has the base.
            Header::RefDelta { base_id } => {
                if !self.client_has.is_some_and(|has| has.contains(&base_id)) {
                    return Ok(None);
                }
                Kind::DeltaOid { id: base_id }
            }
            other => Kind::Base(
                other
                    .as_kind()
                    .ok_or_else(|| gix_error::message("unknown pack entry kind"))?,
            ),
        };
        let decompressed_size = usize::try_from(header.decompressed_size)
            .map_err(|_| gix_error::message("pack entry too large"))?;
        let end = self.packs.entry_end_of(at)?;
        if header.data_offset > end {
            return Err(gix_error::message("pack entry header runs into the next entry").into());
        }
        Ok(Some((
            output::Entry {
                id,
                kind,
                decompressed_size,
                compressed_data: Vec::new(),
            },
            Raw {
                pack: at.pack,
                offset: at.offset,
                data_offset: header.data_offset,
                end,
            },
        )))
    }

    /// `id` read in full.
    fn whole(&mut self, id: ObjectId) -> Result<Whole, WriteError> {
        let mut buf = Vec::new();
        let (kind, data) = match gix_object::Find::try_find(self.reader, &id, &mut buf)
            .map_err(WriteError::Read)?
        {
            Some(object) => (object.kind, object.data.to_vec()),
            None => return Err(WriteError::MissingObject { id }),
        };
        self.recompressed += 1;
        Ok(Whole { id, kind, data })
    }

    /// The entry of `whole`, compressed.
    fn compress(&mut self, whole: Whole) -> Result<output::Entry, WriteError> {
        let compressed = compress(&mut self.compressor, &whole.data).map_err(|err| {
            WriteError::Read(gix_error::message!("could not compress {}: {err}", whole.id).into())
        })?;
        Ok(output::Entry {
            id: whole.id,
            kind: Kind::Base(whole.kind),
            decompressed_size: whole.data.len(),
            compressed_data: compressed,
        })
    }
}

/// `data` as zlib data at git's default level, through a reused compressor.
fn compress(
    compressor: &mut flate2::Compress,
    data: &[u8],
) -> Result<Vec<u8>, flate2::CompressError> {
    compressor.reset();
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(compressor.total_in()).unwrap_or(usize::MAX);
        let input = data.get(consumed..).unwrap_or_default();
        if out.capacity() == out.len() {
            out.reserve(out.capacity().max(64));
        }
        match compressor.compress_vec(input, &mut out, flate2::FlushCompress::Finish)? {
            flate2::Status::StreamEnd => return Ok(out),
            flate2::Status::Ok | flate2::Status::BufError => {}
        }
    }
}

/// Makes and post-processes entries in pack order, on the writing thread.
struct EntryFixer<'a> {
    source: EntrySource<'a>,
    ofs_delta: bool,
    /// Ids of the entries written so far, by index: resolves in-pack delta bases.
    written_ids: Vec<ObjectId>,
    /// The delta chain length of the entries written so far, by index, counting bases
    /// outside the pack as whole objects; [`UNKNOWN_DEPTH`] if it can't be told.
    depths: Vec<u16>,
    deltas: u32,
    computed: u32,
    /// Entries written exactly as stored.
    verbatim: u32,
    error: Option<WriteError>,
    searcher: Option<DeltaSearcher<'a>>,
}

/// The depth of an entry whose chain can't be followed: never a base for a computed delta.
const UNKNOWN_DEPTH: u16 = u16::MAX;

/// Git skips objects this small in its delta search: a delta would hardly be smaller.
const MIN_DELTA_TARGET: usize = 50;

/// State of the delta search while the pack is written.
struct DeltaSearcher<'a> {
    options: DeltaSearch<'a>,
    paths: PathVersions,
    reader: &'a crate::reader::CachingReader,
    attempts: usize,
    /// Of the entries written so far, those with a recorded path: their index.
    written: HashMap<ObjectId, usize>,
}

/// An object a delta is searched for.
struct Target<'a> {
    id: &'a ObjectId,
    kind: gix_object::Kind,
    /// Its size in full.
    size: usize,
    /// The size of its whole entry: a delta must be smaller.
    whole_size: usize,
}

/// A computed delta: the base, how to name it, and the delta data.
struct Found {
    kind: Kind,
    depth: u16,
    data: Vec<u8>,
}

impl DeltaSearcher<'_> {
    /// The smallest delta for the whole object `target` (a tree or blob) against other
    /// versions of its path, smaller than half the object and than its whole entry.
    /// `read` gives its data, asked for only if there are bases to try.
    fn search<'t>(
        &mut self,
        target: &Target<'_>,
        read: impl FnOnce() -> Option<std::borrow::Cow<'t, [u8]>>,
        client_has: Option<ClientHas<'_>>,
        depths: &[u16],
        ofs_delta: bool,
    ) -> Option<Found> {
        let (id, whole_size, target_kind) = (target.id, target.whole_size, target.kind);
        if target.size < MIN_DELTA_TARGET || target.size > self.options.max_object_size {
            return None;
        }
        if self.attempts >= self.options.max_attempts || !self.paths.contains(id) {
            return None;
        }
        let mut bases: Vec<(ObjectId, Kind, u16)> = Vec::new();
        for version in self.paths.other_versions(id) {
            if bases.len() >= self.options.window {
                break;
            }
            if client_has.is_some_and(|has| has.contains(version)) {
                bases.push((*version, Kind::DeltaOid { id: *version }, 1));
            } else if let Some(&index) = self.written.get(version) {
                let depth = depths.get(index).copied().unwrap_or(UNKNOWN_DEPTH);
                if depth >= self.options.max_depth {
                    continue;
                }
                let kind = if ofs_delta {
                    Kind::DeltaRef {
                        object_index: index,
                    }
                } else {
                    Kind::DeltaOid { id: *version }
                };
                bases.push((*version, kind, depth + 1));
            }
        }
        if bases.is_empty() {
            return None;
        }
        let target = match self.paths.cached_tree(id) {
            Some(tree) => std::borrow::Cow::Borrowed(tree),
            None => read()?,
        };
        let mut best: Option<Found> = None;
        for (base_id, kind, depth) in bases {
            if self.attempts >= self.options.max_attempts {
                break;
            }
            let Some(base) = read_version(&self.paths, self.reader, &base_id) else {
                continue;
            };
            if base.0 != target_kind
                || base.1.len() > self.options.max_object_size
                || target.len() < base.1.len() / 32
            {
                continue;
            }
            // Smaller than half the object, than the entry as it would be written, and than
            // the best so far.
            let limit = (target.len() / 2)
                .min(whole_size)
                .min(best.as_ref().map_or(usize::MAX, |best| best.data.len() - 1));
            self.attempts += 1;
            if let Some(data) = DeltaIndex::new(&base.1).delta(&target, limit) {
                best = Some(Found { kind, depth, data });
            }
        }
        best
    }
}

impl EntryFixer<'_> {
    /// The entries of slots `range`, ready to write.
    /// A copied entry comes with where its data is ([`Raw`]); its `compressed_data` is empty.
    fn chunk(
        &mut self,
        range: std::ops::Range<usize>,
    ) -> gix_error::Result<Vec<(output::Entry, Option<Raw>)>> {
        let mut chunk = Vec::with_capacity(range.len());
        for index in range {
            let made = self.source.entry(index).and_then(|made| match made {
                Made::Copied(entry, raw) => Ok((entry, None, Some(raw))),
                Made::Whole(whole) => match self.delta_for_whole(&whole) {
                    Some((entry, depth)) => Ok((entry, Some(depth), None)),
                    None => self.source.compress(whole).map(|entry| (entry, None, None)),
                },
            });
            let (entry, depth, mut raw) = match made {
                Ok(made) => made,
                Err(err) => {
                    self.error = Some(err);
                    return Err(gix_error::message("could not make a pack entry").into());
                }
            };
            let entry = self.fix(entry, depth, &mut raw)?;
            chunk.push((entry, raw));
        }
        Ok(chunk)
    }

    /// A computed delta for an object about to be written whole, and its depth.
    fn delta_for_whole(&mut self, whole: &Whole) -> Option<(output::Entry, u16)> {
        if !matches!(whole.kind, gix_object::Kind::Tree | gix_object::Kind::Blob) {
            return None;
        }
        let searcher = self.searcher.as_mut()?;
        let target = Target {
            id: &whole.id,
            kind: whole.kind,
            size: whole.data.len(),
            // Compressed, the object would hardly be smaller than half its size.
            whole_size: whole.data.len() / 2,
        };
        let found = searcher.search(
            &target,
            || Some(std::borrow::Cow::Borrowed(&whole.data[..])),
            self.source.client_has,
            &self.depths,
            self.ofs_delta,
        )?;
        let compressed = compress(&mut self.source.compressor, &found.data).ok()?;
        self.computed += 1;
        Some((
            output::Entry {
                id: whole.id,
                kind: found.kind,
                decompressed_size: found.data.len(),
                compressed_data: compressed,
            },
            found.depth,
        ))
    }

    /// Count and record `entry`, and try a delta for a stored whole object. `computed` is the
    /// depth of a delta computed for it already.
    /// A copied entry (`raw`) whose delta is computed here is no longer a copy.
    fn fix(
        &mut self,
        mut entry: output::Entry,
        computed: Option<u16>,
        raw: &mut Option<Raw>,
    ) -> gix_error::Result<output::Entry> {
        let mut depth = computed.unwrap_or(0);
        match entry.kind {
            Kind::Base(_) => {}
            Kind::DeltaRef { object_index } => {
                depth = self
                    .depths
                    .get(object_index)
                    .map_or(UNKNOWN_DEPTH, |base| base.saturating_add(1));
                if !self.ofs_delta {
                    let Some(base) = self.written_ids.get(object_index) else {
                        return Err(
                            gix_error::message("delta base index beyond written entries").into(),
                        );
                    };
                    entry.kind = Kind::DeltaOid { id: *base };
                }
            }
            // Only made for bases the client has.
            Kind::DeltaOid { .. } => depth = 1,
        }
        if computed.is_none()
            && matches!(
                entry.kind,
                Kind::Base(gix_object::Kind::Tree | gix_object::Kind::Blob)
            )
        {
            let searched = self
                .searcher
                .as_ref()
                .is_some_and(|searcher| searcher.paths.contains(&entry.id));
            if searched {
                if let Some(copied) = *raw {
                    entry.compressed_data = self
                        .source
                        .packs
                        .raw(copied.pack, copied.data_offset..copied.end)?
                        .to_vec();
                }
                if let Some(found) = self.try_delta(&mut entry) {
                    depth = found;
                    *raw = None;
                }
            }
        }
        let index = self.written_ids.len();
        if let Some(searcher) = &mut self.searcher {
            if searcher.paths.contains(&entry.id) {
                searcher.written.insert(entry.id, index);
            }
        }
        if !matches!(entry.kind, Kind::Base(_)) {
            self.deltas += 1;
        }
        self.written_ids.push(entry.id);
        self.depths.push(depth);
        Ok(entry)
    }

    /// Turn the whole-object `entry` into a computed delta if one is small enough; its depth
    /// if so.
    fn try_delta(&mut self, entry: &mut output::Entry) -> Option<u16> {
        let searcher = self.searcher.as_mut()?;
        let Kind::Base(kind) = entry.kind else {
            return None;
        };
        let target = Target {
            id: &entry.id,
            kind,
            size: entry.decompressed_size,
            whole_size: entry.compressed_data.len(),
        };
        let found = searcher.search(
            &target,
            || inflate(entry).map(std::borrow::Cow::Owned),
            self.source.client_has,
            &self.depths,
            self.ofs_delta,
        )?;
        let compressed = compress(&mut self.source.compressor, &found.data).ok()?;
        if compressed.len() >= entry.compressed_data.len() {
            return None;
        }
        entry.kind = found.kind;
        entry.decompressed_size = found.data.len();
        entry.compressed_data = compressed;
        self.computed += 1;
        Some(found.depth)
    }
}

/// Object `id` in full, from the trees `paths` kept or through `reader`; `None` if it can't
/// be read, which only means no delta.
fn read_version<'a>(
    paths: &'a PathVersions,
    reader: &crate::reader::CachingReader,
    id: &ObjectId,
) -> Option<(gix_object::Kind, std::borrow::Cow<'a, [u8]>)> {
    use gix_object::Find as _;
    if let Some(tree) = paths.cached_tree(id) {
        return Some((gix_object::Kind::Tree, std::borrow::Cow::Borrowed(tree)));
    }
    let mut buf = Vec::new();
    match reader.try_find(id, &mut buf) {
        Ok(Some(data)) => Some((data.kind, std::borrow::Cow::Owned(data.data.to_vec()))),
        _ => None,
    }
}

/// The object a whole-object `entry` holds; `None` if its data doesn't inflate to its size.
fn inflate(entry: &output::Entry) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(entry.decompressed_size);
    flate2::read::ZlibDecoder::new(&entry.compressed_data[..])
        .take(entry.decompressed_size as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() == entry.decompressed_size).then_some(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::enumerate::{enumerate, EnumerateOptions};

    use crate::test_git::git_text as git;

    fn file(version: usize) -> String {
        (0..400)
            .map(|line| {
                if line % 97 == version {
                    format!("line {line} edited in version {version}\n")
                } else {
                    format!(
                        "line {line}: some text that stays the same {}\n",
                        line * 7919
                    )
                }
            })
            .collect()
    }

    /// A repository with three commits changing `dir/file.txt` and `top.txt`, and loose
    /// objects (so gix-pack would write every object whole); the ids of the commits.
    fn repository(dir: &Path) -> (std::path::PathBuf, Vec<ObjectId>) {
        let work = dir.join("source");
        std::fs::create_dir_all(work.join("dir")).unwrap();
        git(&work, &["init", "-q", "-b", "main"], None);
        let mut commits = Vec::new();
        for version in 0..3 {
            std::fs::write(work.join("dir/file.txt"), file(version)).unwrap();
            std::fs::write(work.join("top.txt"), file(version + 10)).unwrap();
            git(&work, &["add", "."], None);
            git(&work, &["commit", "-q", "-m", &format!("v{version}")], None);
            let id = git(&work, &["rev-parse", "HEAD"], None);
            commits.push(ObjectId::from_hex(id.trim().as_bytes()).unwrap());
        }
        (work, commits)
    }

    fn pack(
        work: &Path,
        wants: &[ObjectId],
        haves: &[ObjectId],
        thin: bool,
        ofs_delta: bool,
    ) -> (Vec<u8>, WriteOutcome) {
        let db = gix_odb::at(work.join(".git/objects"), gix_hash::Kind::Sha1).unwrap();
        let enumeration = enumerate(
            &db,
            wants,
            haves,
            &EnumerateOptions::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        let objects = enumeration.objects();
        let options = WriteOptions {
            client_has: thin.then(|| enumeration.known_to_client()),
            ofs_delta,
            delta_search: Some(DeltaSearch::new(&objects[..enumeration.counts().commits])),
            reader: None,
            whole_pack: None,
        };
        let mut out = Vec::new();
        let outcome =
            write_pack(&db, objects, &options, &mut out, &AtomicBool::new(false)).unwrap();
        assert_eq!(outcome.bytes, out.len() as u64);
        (out, outcome)
    }

    #[test]
    fn thin_pack_with_computed_deltas_is_completed_by_git() {
        let dir = tempfile::tempdir().unwrap();
        let (work, commits) = repository(dir.path());
        let (data, outcome) = pack(&work, &commits[2..], &commits[..2], true, true);
        // Commit, two trees, two blobs: the blobs are deltas against the client's versions
        // (the trees are too small to be worth it).
        assert_eq!(outcome.objects, 5);
        assert_eq!(outcome.computed_deltas, 2, "{outcome:?}");
        // Each delta counted once: the `Total n (delta d)` line the client sees.
        assert_eq!(outcome.deltas, 2, "{outcome:?}");
        assert!(data.len() < 1000, "{} bytes", data.len());

        let client = dir.path().join("client.git");
        git(
            dir.path(),
            &["init", "-q", "--bare", client.to_str().unwrap()],
            None,
        );
        git(
            &work,
            &[
                "push",
                "-q",
                client.to_str().unwrap(),
                &format!("{}:refs/heads/main", commits[1]),
            ],
            None,
        );
        let (pack_only, _) = pack(&work, &commits[2..], &commits[..2], false, true);
        assert!(pack_only.len() > data.len());
        let indexed = git(
            &client,
            &["index-pack", "--fix-thin", "--stdin"],
            Some(&data),
        );
        assert!(indexed.starts_with("pack\t"), "{indexed}");
        git(
            &client,
            &["update-ref", "refs/heads/main", &commits[2].to_string()],
            None,
        );
        git(&client, &["fsck", "--full", "--strict"], None);
        let shown = git(&client, &["show", "main:dir/file.txt"], None);
        assert_eq!(shown, file(2));
    }

    /// A fetch of exactly the objects of one pack (as a push or `fast-import` writes them) by
    /// a client that has older versions: deltas against those, not the pack as stored.
    #[test]
    fn a_pack_of_just_the_new_objects_is_not_sent_whole_to_a_client_with_bases() {
        let dir = tempfile::tempdir().unwrap();
        let (work, commits) = repository(dir.path());
        let git_dir = work.join(".git");
        // Everything up to v1 in one pack, then v2's objects alone in another.
        git(
            &git_dir,
            &["update-ref", "refs/heads/old", &commits[1].to_string()],
            None,
        );
        git(&work, &["checkout", "-q", "old"], None);
        git(&git_dir, &["update-ref", "-d", "refs/heads/main"], None);
        git(
            &git_dir,
            &["reflog", "expire", "--expire=now", "--all"],
            None,
        );
        git(&git_dir, &["repack", "-a", "-d", "-q"], None);
        git(
            &git_dir,
            &["update-ref", "refs/heads/main", &commits[2].to_string()],
            None,
        );
        git(&git_dir, &["repack", "-d", "-q"], None);
        let packs = std::fs::read_dir(git_dir.join("objects/pack"))
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|ext| ext == "pack")
            })
            .count();
        assert_eq!(packs, 2, "v2's objects in a pack of their own");
        let (thin, outcome) = pack(&work, &commits[2..], &commits[..2], true, true);
        assert_eq!(outcome.objects, 5);
        assert!(outcome.computed_deltas > 0, "{outcome:?}");
        assert_eq!(outcome.deltas, 2, "both blobs are deltas: {outcome:?}");
        assert!(thin.len() < 1000, "{} bytes", thin.len());
        // Without the client's objects, the stored pack is the answer.
        let (whole, _) = pack(&work, &commits[2..], &commits[..2], false, true);
        assert!(whole.len() > thin.len());
    }

    #[test]
    fn in_pack_bases_by_offset_and_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let (work, commits) = repository(dir.path());
        for ofs_delta in [true, false] {
            let (data, outcome) = pack(&work, &commits[2..], &[], false, ofs_delta);
            // The older versions of the blobs are deltas against the newer ones, written
            // before them.
            assert_eq!(outcome.objects, 15);
            assert_eq!(outcome.computed_deltas, 4, "{outcome:?}");
            assert_eq!(outcome.deltas, 4, "{outcome:?}");
            let client = dir.path().join(format!("client-{ofs_delta}.git"));
            git(
                dir.path(),
                &["init", "-q", "--bare", client.to_str().unwrap()],
                None,
            );
            git(&client, &["index-pack", "--stdin"], Some(&data));
            git(
                &client,
                &["update-ref", "refs/heads/main", &commits[2].to_string()],
                None,
            );
            git(&client, &["fsck", "--full", "--strict"], None);
            let verified = git(&client, &["verify-pack", "-v", &pack_path(&client)], None);
            let kind = if ofs_delta {
                "OBJ_OFS_DELTA"
            } else {
                "OBJ_REF_DELTA"
            };
            assert!(
                verified.contains("chain length = 2: 2 objects"),
                "{kind}: {verified}"
            );
        }
    }

    fn pack_path(repository: &Path) -> String {
        let packs = repository.join("objects/pack");
        let entry = std::fs::read_dir(&packs)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|ext| ext == "idx"))
            .unwrap();
        entry.to_string_lossy().into_owned()
    }
}
