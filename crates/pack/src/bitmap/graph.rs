//! A pack's objects as bit positions, for writing its bitmaps.
//!
//! Every bitmap of a pack is a set of positions in pack order, and building one is a walk
//! over commits and trees. [`PackGraph::load`] reads every entry's header once (each
//! object's kind; a delta is of its base's kind) and decodes the commits and tags, in pack
//! order. Trees are many and large (a git.git-sized pack has 70 million tree entries), so
//! they are not all held: [`Decoder::tree`] reads one when a walk reaches it, keeping recent
//! ones with their entries' positions in a memory-capped cache. Finding an entry's position
//! is a search of the index, the costly part; a tree stored as a delta takes the positions of
//! every entry its delta copies whole from its base, and searches only for the rest (a new
//! version of a tree changes a few entries). Blobs are never inflated.

use std::sync::Arc;

use gix_hash::{oid, ObjectId};
use gix_object::Kind;
use gix_pack::data::entry::Header;

use super::write::BitmapWriteError;

/// An edge to a tree entry that is walked into (a tree-mode entry, or a commit's tree).
pub(super) const DESCEND: u32 = 1 << 31;
/// An edge to an object that is not in the pack, or from an object that could not be read.
pub(super) const MISSING: u32 = u32::MAX;
/// A tree entry that names no object of this repository (a submodule's commit).
pub(super) const GITLINK: u32 = u32::MAX - 1;

/// How much decoded commit and tree data a decoder keeps for delta bases and walks: git's
/// default `core.deltaBaseCacheLimit`.
const CACHE_BYTES: usize = 96 << 20;

/// The pack and its index, with the pack order.
pub(super) struct Pack {
    pub(super) index: gix_pack::index::File,
    data: gix_pack::data::File,
    /// Index positions in pack order.
    pub(super) order: Vec<u32>,
    /// Pack positions in index order.
    inverse: Vec<u32>,
    /// Entry offsets in pack order.
    offsets: Vec<u64>,
    /// The first 8 bytes of each id, in index order: searched before the index itself,
    /// which is slow to search for the millions of tree entries of a large pack.
    prefixes: Vec<u64>,
    /// Where the ids starting with each [`FANOUT_BITS`]-bit value start in `prefixes`.
    fanout: Vec<u32>,
}

/// How many leading bits of an id the fan-out table of [`Pack`] splits by.
const FANOUT_BITS: u32 = 16;

fn prefix_of(id: &oid) -> u64 {
    let bytes = id.as_bytes();
    let mut prefix = [0u8; 8];
    let len = bytes.len().min(8);
    prefix[..len].copy_from_slice(&bytes[..len]);
    u64::from_be_bytes(prefix)
}

impl Pack {
    /// The pack position of `id`, or [`MISSING`].
    fn lookup(&self, id: &oid) -> u32 {
        let prefix = prefix_of(id);
        let bucket = (prefix >> (64 - FANOUT_BITS)) as usize;
        let (Some(&first), Some(&end)) = (self.fanout.get(bucket), self.fanout.get(bucket + 1))
        else {
            return MISSING;
        };
        let (first, end) = (first as usize, end as usize);
        let Some(candidates) = self.prefixes.get(first..end) else {
            return MISSING;
        };
        let mut at = first + candidates.partition_point(|&p| p < prefix);
        while self.prefixes.get(at) == Some(&prefix) {
            if self.index.oid_at_index(at as u32) == id {
                return self.inverse[at];
            }
            at += 1;
        }
        MISSING
    }

    /// The id of the object at pack position `pos`.
    pub(super) fn id(&self, pos: u32) -> ObjectId {
        self.index.oid_at_index(self.order[pos as usize]).to_owned()
    }
}

/// A pack's objects by pack position: kinds, and the edges of commits and tags.
pub(super) struct PackGraph {
    pub(super) pack: Pack,
    /// Each object's kind, by pack position.
    pub(super) kinds: Vec<Kind>,
    /// Where each object's edges start in `edges` (one more than there are objects).
    edge_start: Vec<u32>,
    /// A commit's tree (with [`DESCEND`]) then its parents; a tag's target. Trees have
    /// none here: see [`Decoder::tree`].
    edges: Vec<u32>,
    /// Commit dates by pack position (0 for other objects).
    pub(super) dates: Vec<u64>,
}

impl PackGraph {
    /// The number of objects.
    pub(super) fn len(&self) -> usize {
        self.kinds.len()
    }

    /// The edges of the commit or tag at pack position `pos`.
    pub(super) fn edges(&self, pos: u32) -> &[u32] {
        let start = self.edge_start[pos as usize] as usize;
        let end = self.edge_start[pos as usize + 1] as usize;
        &self.edges[start..end]
    }

    /// The id of the object at pack position `pos`.
    pub(super) fn id(&self, pos: u32) -> ObjectId {
        self.pack.id(pos)
    }

    /// The pack position of `id`.
    pub(super) fn position(&self, id: &oid) -> Option<u32> {
        Some(self.pack.lookup(id)).filter(|&pos| pos != MISSING)
    }

    /// Read the pack at `pack_path` with its index: kinds, commits, tags. `db` provides a
    /// delta base that is not in the pack (never the case in a pack git or packgate wrote
    /// as a full repack).
    pub(super) fn load(
        pack_path: &std::path::Path,
        index: gix_pack::index::File,
        db: &impl gix_object::Find,
    ) -> Result<PackGraph, BitmapWriteError> {
        let pack_error = |message: String| BitmapWriteError::Pack {
            path: pack_path.to_owned(),
            message,
        };
        let data = gix_pack::data::File::at(pack_path, gix_hash::Kind::Sha1)
            .map_err(|err| pack_error(err.to_string()))?;
        let n = index.num_objects();
        if data.num_objects() != n {
            return Err(pack_error(
                "the index and the pack disagree on the number of objects".into(),
            ));
        }
        if data.checksum() != index.pack_checksum() {
            return Err(pack_error("the index was made for another pack".into()));
        }
        if n >= GITLINK & !DESCEND {
            return Err(BitmapWriteError::TooManyObjects);
        }
        let order = crate::rev::pack_order(&index);
        let mut inverse = vec![0u32; n as usize];
        for (pos, &in_index) in order.iter().enumerate() {
            inverse[in_index as usize] = pos as u32;
        }
        let offsets: Vec<u64> = order
            .iter()
            .map(|&in_index| index.pack_offset_at_index(in_index))
            .collect();
        let prefixes: Vec<u64> = (0..n).map(|i| prefix_of(index.oid_at_index(i))).collect();
        let mut fanout = vec![0u32; (1 << FANOUT_BITS) + 1];
        for &prefix in &prefixes {
            fanout[(prefix >> (64 - FANOUT_BITS)) as usize + 1] += 1;
        }
        for bucket in 1..fanout.len() {
            fanout[bucket] += fanout[bucket - 1];
        }
        let pack = Pack {
            index,
            data,
            order,
            inverse,
            offsets,
            prefixes,
            fanout,
        };
        let mut decoder = Decoder::new(&pack, db);

        // Kinds first: a delta is of its base's kind. Offset deltas' bases come earlier;
        // a reference delta's base may come later, and is resolved after the pass.
        let mut kinds: Vec<Option<Kind>> = vec![None; n as usize];
        let mut later: Vec<u32> = Vec::new();
        for pos in 0..n {
            kinds[pos as usize] = match decoder.base_of(pos)? {
                Base::Whole(kind) | Base::Outside(kind) => Some(kind),
                Base::At(base) if base < pos => kinds[base as usize],
                Base::At(_) => {
                    later.push(pos);
                    None
                }
            };
        }
        // A reference delta's chain has no cycle in a valid pack; each round resolves at
        // least one, or the pack is broken.
        while !later.is_empty() {
            let before = later.len();
            let mut still = Vec::new();
            for &pos in &later {
                match decoder.base_of(pos)? {
                    Base::At(base) if kinds[base as usize].is_some() => {
                        kinds[pos as usize] = kinds[base as usize];
                    }
                    _ => still.push(pos),
                }
            }
            if still.len() == before {
                return Err(decoder.corrupt(still[0], "delta chain without a base"));
            }
            later = still;
        }
        let kinds: Vec<Kind> = kinds.into_iter().map(|k| k.unwrap_or(Kind::Blob)).collect();

        let mut edge_start = Vec::with_capacity(n as usize + 1);
        let mut edges: Vec<u32> = Vec::new();
        let mut dates = vec![0u64; n as usize];
        let too_many = |_| BitmapWriteError::TooManyObjects;
        for pos in 0..n {
            edge_start.push(u32::try_from(edges.len()).map_err(too_many)?);
            let kind = kinds[pos as usize];
            if !matches!(kind, Kind::Commit | Kind::Tag) {
                continue;
            }
            let object = decoder.decode(pos, false)?;
            let before = edges.len();
            let parsed = match kind {
                Kind::Commit => {
                    match packgate_object::CommitHeader::parse(&object.data, gix_hash::Kind::Sha1) {
                        Ok(header) => {
                            edges.push(pack.lookup(&header.tree) | DESCEND);
                            edges.extend(header.parents().map(|parent| pack.lookup(&parent)));
                            dates[pos as usize] = header.date;
                            true
                        }
                        Err(_) => false,
                    }
                }
                _ => match packgate_object::tag_target(&object.data) {
                    Some(target) => {
                        edges.push(pack.lookup(&target));
                        true
                    }
                    None => false,
                },
            };
            if !parsed {
                // Unreadable: a walk that reaches it fails, as git's does.
                edges.truncate(before);
                edges.push(MISSING);
            }
        }
        edge_start.push(u32::try_from(edges.len()).map_err(too_many)?);
        drop(decoder);
        Ok(PackGraph {
            pack,
            kinds,
            edge_start,
            edges,
            dates,
        })
    }
}

/// What a pack entry is, as far as its header says.
enum Base {
    /// A whole object.
    Whole(Kind),
    /// A delta against the entry at this pack position.
    At(u32),
    /// A delta against an object outside the pack, of this kind.
    Outside(Kind),
}

/// A decoded object; for a tree, where each entry starts and what it names.
pub(super) struct Decoded {
    data: Vec<u8>,
    /// Entry start offsets, then the data's length; empty if not parsed.
    starts: Vec<u32>,
    /// One edge per entry: a position (with [`DESCEND`] for trees), [`MISSING`] or
    /// [`GITLINK`]. A tree that can't be parsed has the one edge [`MISSING`].
    pub(super) edges: Vec<u32>,
}

impl Decoded {
    fn raw(data: Vec<u8>) -> Decoded {
        Decoded {
            data,
            starts: Vec::new(),
            edges: Vec::new(),
        }
    }
}

struct Weight;

impl clru::WeightScale<u32, Arc<Decoded>> for Weight {
    fn weight(&self, _key: &u32, value: &Arc<Decoded>) -> usize {
        value.data.len() + 4 * (value.starts.len() + value.edges.len()) + 96
    }
}

/// Reads a pack's entries through a cache of decoded objects.
pub(super) struct Decoder<'a, F> {
    pack: &'a Pack,
    db: &'a F,
    cache: clru::CLruCache<u32, Arc<Decoded>, std::collections::hash_map::RandomState, Weight>,
    inflater: flate2::Decompress,
    /// Delta bases read from `db`, by id.
    outside: std::collections::HashMap<ObjectId, (Kind, Arc<Vec<u8>>)>,
    /// Copied entries of the delta being applied: (start in the result, length, edge).
    copied: Vec<(u32, u32, u32)>,
    /// How many trees were parsed (some more than once, when the cache had let them go).
    pub(super) parsed: usize,
}

impl<'a, F: gix_object::Find> Decoder<'a, F> {
    pub(super) fn new(pack: &'a Pack, db: &'a F) -> Self {
        let capacity =
            std::num::NonZeroUsize::new(CACHE_BYTES).unwrap_or(std::num::NonZeroUsize::MIN);
        Decoder {
            pack,
            db,
            cache: clru::CLruCache::with_config(
                clru::CLruCacheConfig::new(capacity).with_scale(Weight),
            ),
            inflater: flate2::Decompress::new(true),
            outside: Default::default(),
            copied: Vec::new(),
            parsed: 0,
        }
    }

    fn corrupt(&self, pos: u32, message: impl Into<String>) -> BitmapWriteError {
        BitmapWriteError::Corrupt {
            id: self.pack.id(pos),
            message: message.into(),
        }
    }

    fn header(&self, pos: u32) -> Result<gix_pack::data::Entry, BitmapWriteError> {
        self.pack
            .data
            .entry(self.pack.offsets[pos as usize])
            .map_err(|err| self.corrupt(pos, err.to_string()))
    }

    fn base_of(&mut self, pos: u32) -> Result<Base, BitmapWriteError> {
        let entry = self.header(pos)?;
        self.base_in(pos, &entry)
    }

    fn base_in(
        &mut self,
        pos: u32,
        entry: &gix_pack::data::Entry,
    ) -> Result<Base, BitmapWriteError> {
        match entry.header {
            Header::OfsDelta { base_distance } => {
                let base = Header::verified_base_pack_offset(
                    self.pack.offsets[pos as usize],
                    base_distance,
                )
                .and_then(|offset| self.pack.offsets.binary_search(&offset).ok())
                .ok_or_else(|| self.corrupt(pos, "offset delta without an entry at its base"))?;
                Ok(Base::At(base as u32))
            }
            Header::RefDelta { base_id } => match self.pack.index.lookup(base_id) {
                Some(in_index) => Ok(Base::At(self.pack.inverse[in_index as usize])),
                None => Ok(Base::Outside(self.outside(pos, &base_id)?.0)),
            },
            other => other
                .as_kind()
                .map(Base::Whole)
                .ok_or_else(|| self.corrupt(pos, "unknown pack entry type")),
        }
    }

    fn outside(
        &mut self,
        pos: u32,
        id: &ObjectId,
    ) -> Result<(Kind, Arc<Vec<u8>>), BitmapWriteError> {
        if let Some(hit) = self.outside.get(id) {
            return Ok(hit.clone());
        }
        let mut buf = Vec::new();
        let found = self
            .db
            .try_find(id, &mut buf)
            .map_err(|err| self.corrupt(pos, format!("delta base {id}: {err}")))?
            .map(|data| (data.kind, Arc::new(data.data.to_vec())));
        let found = found.ok_or(BitmapWriteError::NotClosed { id: *id })?;
        self.outside.insert(*id, found.clone());
        Ok(found)
    }

    /// The inflated entry at `pos`, as stored (a delta stays a delta).
    fn inflate(
        &mut self,
        pos: u32,
        entry: &gix_pack::data::Entry,
    ) -> Result<Vec<u8>, BitmapWriteError> {
        let end = self
            .pack
            .offsets
            .get(pos as usize + 1)
            .copied()
            .unwrap_or(self.pack.data.pack_end() as u64);
        let compressed = (entry.data_offset <= end)
            .then(|| self.pack.data.entry_slice(entry.data_offset..end))
            .flatten()
            .ok_or_else(|| self.corrupt(pos, "pack entry beyond the pack's end"))?;
        crate::reader::inflate(&mut self.inflater, compressed, entry.decompressed_size)
            .map_err(|err| self.corrupt(pos, err.to_string()))
    }

    /// The tree at pack position `pos` with its entries' edges.
    pub(super) fn tree(&mut self, pos: u32) -> Result<Arc<Decoded>, BitmapWriteError> {
        self.decode(pos, true)
    }

    /// The object at `pos`, its delta chain resolved through the cache; with `tree`, its
    /// entries parsed (and those of every tree on the chain).
    fn decode(&mut self, pos: u32, tree: bool) -> Result<Arc<Decoded>, BitmapWriteError> {
        if let Some(hit) = self.cache.get(&pos) {
            return Ok(Arc::clone(hit));
        }
        let mut pending: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut current = pos;
        let base: Arc<Decoded> = loop {
            if let Some(hit) = self.cache.get(&current) {
                break Arc::clone(hit);
            }
            let entry = self.header(current)?;
            let inflated = self.inflate(current, &entry)?;
            match self.base_in(current, &entry)? {
                Base::Whole(_) => {
                    let object = Arc::new(self.finish(inflated, tree));
                    let _ = self.cache.put_with_weight(current, Arc::clone(&object));
                    break object;
                }
                Base::At(base) => {
                    pending.push((current, inflated));
                    current = base;
                }
                Base::Outside(_) => {
                    let Header::RefDelta { base_id } = entry.header else {
                        return Err(self.corrupt(current, "delta base outside the pack"));
                    };
                    pending.push((current, inflated));
                    let (_, data) = self.outside(current, &base_id)?;
                    break Arc::new(self.finish(data.to_vec(), tree));
                }
            }
            if pending.len() > 10_000 {
                return Err(self.corrupt(pos, "delta chain too long"));
            }
        };
        let mut object = base;
        while let Some((at, delta)) = pending.pop() {
            let decoded = if tree {
                self.apply_to_tree(&object, &delta)
            } else {
                crate::reader::apply_delta(&object.data, &delta).map(Decoded::raw)
            };
            object = Arc::new(decoded.map_err(|err| self.corrupt(at, err.to_string()))?);
            let _ = self.cache.put_with_weight(at, Arc::clone(&object));
        }
        Ok(object)
    }

    /// A whole object as decoded: for a tree, with its entries parsed.
    fn finish(&mut self, data: Vec<u8>, tree: bool) -> Decoded {
        if !tree {
            return Decoded::raw(data);
        }
        self.copied.clear();
        self.parse(data)
    }

    /// Parse the tree `data`, taking the entries in `self.copied` as they are.
    fn parse(&mut self, data: Vec<u8>) -> Decoded {
        self.parsed += 1;
        let pack = self.pack;
        parse_tree(data, &self.copied, |id| pack.lookup(id))
    }

    /// Apply `delta` to the tree `base`: the result, parsed, with the edges of the base's
    /// entries the delta copies whole.
    fn apply_to_tree(&mut self, base: &Decoded, delta: &[u8]) -> Result<Decoded, gix_error::Error> {
        let mut copied = std::mem::take(&mut self.copied);
        copied.clear();
        let result = crate::reader::apply_delta_with(&base.data, delta, |out_at, from, len| {
            copied_entries(base, out_at, from, len, &mut copied)
        });
        self.copied = copied;
        Ok(self.parse(result?))
    }
}

/// Parse the tree `data` into its entries' edges, `lookup` giving an id's position. Where a
/// copied entry (start in `data`, length, edge: from the base a delta copied it from) starts
/// exactly where an entry starts, it is that entry, bytes and all: taken without parsing or
/// looking up. Entries are found from the start, so one that a copy put elsewhere (the
/// bytes of an entry inside another's) is never taken.
fn parse_tree(data: Vec<u8>, copied: &[(u32, u32, u32)], lookup: impl Fn(&oid) -> u32) -> Decoded {
    // Most trees have about as many entries as the base they were copied from.
    let mut starts = Vec::with_capacity(copied.len() + 8);
    let mut edges = Vec::with_capacity(copied.len() + 8);
    let mut at = 0usize;
    let mut copied = copied.iter().peekable();
    while at < data.len() {
        while copied.next_if(|c| (c.0 as usize) < at).is_some() {}
        if let Some(&(_, len, edge)) = copied.next_if(|c| c.0 as usize == at) {
            starts.push(at as u32);
            edges.push(edge);
            at += len as usize;
            continue;
        }
        match packgate_object::tree::next_entry(&data[at..], 20) {
            Ok((entry, rest)) => {
                starts.push(at as u32);
                edges.push(match entry.kind() {
                    packgate_object::tree::EntryKind::Tree => lookup(entry.id) | DESCEND,
                    packgate_object::tree::EntryKind::Blob => lookup(entry.id),
                    packgate_object::tree::EntryKind::Gitlink => GITLINK,
                });
                at = data.len() - rest.len();
            }
            Err(_) => {
                // Unreadable: a walk that reaches it fails, as git's does.
                return Decoded {
                    data,
                    starts: Vec::new(),
                    edges: vec![MISSING],
                };
            }
        }
    }
    starts.push(data.len() as u32);
    Decoded {
        data,
        starts,
        edges,
    }
}

/// The entries of `base` that a copy of `base[from..from + len]` carries whole, as
/// (start in the result, length, edge) for a copy landing at `out_at`.
fn copied_entries(
    base: &Decoded,
    out_at: usize,
    from: usize,
    len: usize,
    copied: &mut Vec<(u32, u32, u32)>,
) {
    let starts = &base.starts;
    if starts.len() < 2 {
        return;
    }
    let end = from + len;
    let mut entry = starts.partition_point(|&s| (s as usize) < from);
    while entry + 1 < starts.len() && starts[entry + 1] as usize <= end {
        copied.push((
            (starts[entry] as usize - from + out_at) as u32,
            starts[entry + 1] - starts[entry],
            base.edges[entry],
        ));
        entry += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of `names` (a trailing `/` makes a subtree), each entry's id made from its
    /// name and `version`.
    fn tree(names: &[(&str, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, version) in names {
            let (mode, name) = match name.strip_suffix('/') {
                Some(dir) => ("40000", dir),
                None => ("100644", *name),
            };
            out.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            let mut id = [*version; 20];
            id[..name.len().min(20)].copy_from_slice(&name.as_bytes()[..name.len().min(20)]);
            out.extend_from_slice(&id);
        }
        out
    }

    /// A position from the id's bytes, so a wrong id gives a wrong position.
    fn lookup(id: &oid) -> u32 {
        let b = id.as_bytes();
        u32::from_be_bytes([b[0], b[1], b[18] & 0x7f, b[19]])
    }

    fn through_delta(base: &[u8], target: &[u8]) -> (Decoded, usize) {
        let base = parse_tree(base.to_vec(), &[], lookup);
        let delta = crate::delta::delta(&base.data, target, usize::MAX).unwrap();
        let mut copied = Vec::new();
        let data = crate::reader::apply_delta_with(&base.data, &delta, |out_at, from, len| {
            copied_entries(&base, out_at, from, len, &mut copied)
        })
        .unwrap();
        assert_eq!(data, target);
        let reused = copied.len();
        (parse_tree(data, &copied, lookup), reused)
    }

    /// Entries taken from a delta's base are exactly those a full parse finds.
    #[test]
    fn entries_copied_from_the_base_are_the_parsed_ones() {
        let names: Vec<String> = (0..60).map(|n| format!("entry-{n:03}")).collect();
        let base: Vec<(&str, u8)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let mut cases = Vec::new();
        // One id changed; one entry gone; one added; a directory renamed; all changed.
        let mut changed = base.clone();
        changed[30].1 = 2;
        cases.push(changed);
        let mut removed = base.clone();
        removed.remove(7);
        cases.push(removed);
        let mut added = base.clone();
        added.insert(20, ("entry-019a/", 3));
        cases.push(added);
        let mut renamed = base.clone();
        renamed[40].0 = "entry-040/";
        cases.push(renamed);
        cases.push(base.iter().map(|(n, _)| (*n, 9)).collect());
        // Names that repeat one another's bytes, so copies can land inside entries.
        let tricky = vec![("a", 1), ("aa", 1), ("aaa/", 1), ("100644 a", 1), ("b", 1)];
        let tricky_changed = vec![("a", 1), ("aa", 2), ("aaa/", 1), ("100644 a", 3), ("c", 1)];
        let base_bytes = tree(&base);
        for case in &cases {
            let target = tree(case);
            let (through, reused) = through_delta(&base_bytes, &target);
            let full = parse_tree(target, &[], lookup);
            assert_eq!(through.edges, full.edges);
            assert_eq!(through.starts, full.starts);
            if case.iter().filter(|(_, v)| *v == 1).count() > 50 {
                assert!(reused > 40, "{reused}");
            }
        }
        let (through, _) = through_delta(&tree(&tricky), &tree(&tricky_changed));
        let full = parse_tree(tree(&tricky_changed), &[], lookup);
        assert_eq!((through.edges, through.starts), (full.edges, full.starts));
        // A copied entry that does not start where an entry starts is not taken.
        let data = tree(&[("x", 1), ("y", 1)]);
        let full = parse_tree(data.clone(), &[], lookup);
        let misplaced = parse_tree(data, &[(3, 10, 12345)], lookup);
        assert_eq!(misplaced.edges, full.edges);
        // An unreadable tree is one missing edge.
        let broken = parse_tree(b"100644 x\0short".to_vec(), &[], lookup);
        assert_eq!(broken.edges, [MISSING]);
    }
}
