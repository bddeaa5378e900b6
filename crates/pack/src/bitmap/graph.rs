//! A pack's objects as a graph of bit positions, for writing its bitmaps.
//!
//! Every bitmap of a pack is a set of positions in pack order, and building one is a walk
//! over commits and trees. The pack is decoded once, in pack order (where delta bases come
//! before their deltas, so a small cache of decoded objects resolves most chains in one
//! step): each entry's kind, and for commits, trees and tags the positions they point at.
//! Blobs are never inflated. The walks then run on plain integers.

use std::sync::Arc;

use gix_hash::{oid, ObjectId};
use gix_object::Kind;
use gix_pack::data::entry::Header;

use super::write::BitmapWriteError;

/// An edge to a tree entry that is walked into (a tree-mode entry, or a commit's tree).
pub(super) const DESCEND: u32 = 1 << 31;
/// An edge to an object that is not in the pack, or from an object that could not be read.
pub(super) const MISSING: u32 = u32::MAX;

/// How much decoded commit and tree data the decoder keeps for delta bases.
const CACHE_BYTES: usize = 64 << 20;

/// A pack's objects by pack position.
pub(super) struct PackGraph {
    /// Index positions in pack order.
    pub(super) order: Vec<u32>,
    /// Pack positions in index order.
    pub(super) inverse: Vec<u32>,
    /// Each object's kind, by pack position.
    pub(super) kinds: Vec<Kind>,
    /// Where each object's edges start in `edges` (one more than there are objects).
    edge_start: Vec<u32>,
    /// A commit's tree (with [`DESCEND`]) then its parents; a tree's entries (trees with
    /// [`DESCEND`], gitlinks left out); a tag's target.
    edges: Vec<u32>,
    /// Commit dates by pack position (0 for other objects).
    pub(super) dates: Vec<u64>,
    pub(super) index: gix_pack::index::File,
}

impl PackGraph {
    /// The number of objects.
    pub(super) fn len(&self) -> usize {
        self.kinds.len()
    }

    /// The edges of the object at pack position `pos`.
    pub(super) fn edges(&self, pos: u32) -> &[u32] {
        let start = self.edge_start[pos as usize] as usize;
        let end = self.edge_start[pos as usize + 1] as usize;
        &self.edges[start..end]
    }

    /// The id of the object at pack position `pos`.
    pub(super) fn id(&self, pos: u32) -> ObjectId {
        self.index.oid_at_index(self.order[pos as usize]).to_owned()
    }

    /// The pack position of `id`.
    pub(super) fn position(&self, id: &oid) -> Option<u32> {
        self.index
            .lookup(id)
            .map(|in_index| self.inverse[in_index as usize])
    }

    /// Decode the pack at `pack_path` with its index. `db` provides a delta base that is
    /// not in the pack (never the case in a pack git or packgate wrote as a full repack).
    pub(super) fn load(
        pack_path: &std::path::Path,
        index: gix_pack::index::File,
        db: &impl gix_object::Find,
    ) -> Result<PackGraph, BitmapWriteError> {
        let data = gix_pack::data::File::at(pack_path, gix_hash::Kind::Sha1).map_err(|err| {
            BitmapWriteError::Pack {
                path: pack_path.to_owned(),
                message: err.to_string(),
            }
        })?;
        let n = index.num_objects();
        if data.num_objects() != n {
            return Err(BitmapWriteError::Pack {
                path: pack_path.to_owned(),
                message: "the index and the pack disagree on the number of objects".into(),
            });
        }
        if data.checksum() != index.pack_checksum() {
            return Err(BitmapWriteError::Pack {
                path: pack_path.to_owned(),
                message: "the index was made for another pack".into(),
            });
        }
        if n >= DESCEND - 1 {
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
        let mut decoder = Decoder {
            data: &data,
            offsets: &offsets,
            index: &index,
            inverse: &inverse,
            db,
            cache: clru::CLruCache::with_config(
                clru::CLruCacheConfig::new(
                    std::num::NonZeroUsize::new(CACHE_BYTES).unwrap_or(std::num::NonZeroUsize::MIN),
                )
                .with_scale(Weight),
            ),
            inflater: flate2::Decompress::new(true),
            outside: Default::default(),
        };

        // Kinds first: a delta is of its base's kind. Offset deltas' bases come earlier;
        // a reference delta's base may come later, and is resolved after the pass.
        let mut kinds: Vec<Option<Kind>> = vec![None; n as usize];
        let mut later: Vec<u32> = Vec::new();
        for pos in 0..n {
            kinds[pos as usize] = match decoder.base_of(pos)? {
                Base::Whole(kind) => Some(kind),
                Base::At(base) if base < pos => kinds[base as usize],
                Base::At(_) => {
                    later.push(pos);
                    None
                }
                Base::Outside(kind) => Some(kind),
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
                return Err(BitmapWriteError::Corrupt {
                    id: decoder.id(still[0]),
                    message: "delta chain without a base".into(),
                });
            }
            later = still;
        }
        let kinds: Vec<Kind> = kinds.into_iter().map(|k| k.unwrap_or(Kind::Blob)).collect();

        let mut edge_start = Vec::with_capacity(n as usize + 1);
        let mut edges: Vec<u32> = Vec::with_capacity(n as usize * 4);
        let mut dates = vec![0u64; n as usize];
        let lookup = |id: &oid| -> u32 {
            index
                .lookup(id)
                .map_or(MISSING, |in_index| inverse[in_index as usize])
        };
        for pos in 0..n {
            edge_start
                .push(u32::try_from(edges.len()).map_err(|_| BitmapWriteError::TooManyObjects)?);
            let kind = kinds[pos as usize];
            if kind == Kind::Blob {
                continue;
            }
            let object = decoder.decode(pos)?;
            let before = edges.len();
            let parsed = match kind {
                Kind::Commit => {
                    match packgate_object::CommitHeader::parse(&object, gix_hash::Kind::Sha1) {
                        Ok(header) => {
                            edges.push(lookup(&header.tree) | DESCEND);
                            edges.extend(header.parents().map(|parent| lookup(&parent)));
                            dates[pos as usize] = header.date;
                            true
                        }
                        Err(_) => false,
                    }
                }
                Kind::Tree => {
                    let mut ok = true;
                    for entry in packgate_object::tree::entries(&object, 20) {
                        match entry {
                            Ok(entry) => match entry.kind() {
                                packgate_object::tree::EntryKind::Tree => {
                                    edges.push(lookup(entry.id) | DESCEND)
                                }
                                packgate_object::tree::EntryKind::Blob => {
                                    edges.push(lookup(entry.id))
                                }
                                packgate_object::tree::EntryKind::Gitlink => {}
                            },
                            Err(_) => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    ok
                }
                Kind::Tag => match packgate_object::tag_target(&object) {
                    Some(target) => {
                        edges.push(lookup(&target));
                        true
                    }
                    None => false,
                },
                Kind::Blob => true,
            };
            if !parsed {
                // Unreadable: a walk that reaches it fails, as git's does.
                edges.truncate(before);
                edges.push(MISSING);
            }
        }
        edge_start.push(u32::try_from(edges.len()).map_err(|_| BitmapWriteError::TooManyObjects)?);
        edges.shrink_to_fit();
        drop(decoder);
        Ok(PackGraph {
            order,
            inverse,
            kinds,
            edge_start,
            edges,
            dates,
            index,
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

type Decoded = Arc<Vec<u8>>;

struct Weight;

impl clru::WeightScale<u32, Decoded> for Weight {
    fn weight(&self, _key: &u32, value: &Decoded) -> usize {
        value.len() + 64
    }
}

struct Decoder<'a, F> {
    data: &'a gix_pack::data::File,
    offsets: &'a [u64],
    index: &'a gix_pack::index::File,
    inverse: &'a [u32],
    db: &'a F,
    cache: clru::CLruCache<u32, Decoded, std::collections::hash_map::RandomState, Weight>,
    inflater: flate2::Decompress,
    /// Delta bases read from `db`, by id.
    outside: std::collections::HashMap<ObjectId, (Kind, Decoded)>,
}

impl<F: gix_object::Find> Decoder<'_, F> {
    fn id(&self, pos: u32) -> ObjectId {
        self.index.oid_at_index(self.index_of(pos)).to_owned()
    }

    fn index_of(&self, pos: u32) -> u32 {
        // `inverse` maps the other way; the order is its inverse permutation, but only
        // errors need it, so a search is fine.
        self.inverse
            .iter()
            .position(|&p| p == pos)
            .map_or(0, |in_index| in_index as u32)
    }

    fn corrupt(&self, pos: u32, message: impl Into<String>) -> BitmapWriteError {
        BitmapWriteError::Corrupt {
            id: self.id(pos),
            message: message.into(),
        }
    }

    fn header(&self, pos: u32) -> Result<gix_pack::data::Entry, BitmapWriteError> {
        self.data
            .entry(self.offsets[pos as usize])
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
                let base =
                    Header::verified_base_pack_offset(self.offsets[pos as usize], base_distance)
                        .and_then(|offset| self.offsets.binary_search(&offset).ok())
                        .ok_or_else(|| {
                            self.corrupt(pos, "offset delta without an entry at its base")
                        })?;
                Ok(Base::At(base as u32))
            }
            Header::RefDelta { base_id } => match self.index.lookup(base_id) {
                Some(in_index) => Ok(Base::At(self.inverse[in_index as usize])),
                None => Ok(Base::Outside(self.outside(pos, &base_id)?.0)),
            },
            other => other
                .as_kind()
                .map(Base::Whole)
                .ok_or_else(|| self.corrupt(pos, "unknown pack entry type")),
        }
    }

    fn outside(&mut self, pos: u32, id: &ObjectId) -> Result<(Kind, Decoded), BitmapWriteError> {
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
            .offsets
            .get(pos as usize + 1)
            .copied()
            .unwrap_or(self.data.pack_end() as u64);
        let compressed = (entry.data_offset <= end)
            .then(|| self.data.entry_slice(entry.data_offset..end))
            .flatten()
            .ok_or_else(|| self.corrupt(pos, "pack entry beyond the pack's end"))?;
        crate::reader::inflate(&mut self.inflater, compressed, entry.decompressed_size)
            .map_err(|err| self.corrupt(pos, err.to_string()))
    }

    /// The object at `pos`, its delta chain resolved through the cache.
    fn decode(&mut self, pos: u32) -> Result<Decoded, BitmapWriteError> {
        if let Some(hit) = self.cache.get(&pos) {
            return Ok(Arc::clone(hit));
        }
        let mut pending: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut current = pos;
        let base: Decoded = loop {
            if let Some(hit) = self.cache.get(&current) {
                break Arc::clone(hit);
            }
            let entry = self.header(current)?;
            let inflated = self.inflate(current, &entry)?;
            match self.base_in(current, &entry)? {
                Base::Whole(_) => {
                    let object = Arc::new(inflated);
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
                    break self.outside(current, &base_id)?.1;
                }
            }
            if pending.len() > 10_000 {
                return Err(self.corrupt(pos, "delta chain too long"));
            }
        };
        let mut object = base;
        while let Some((at, delta)) = pending.pop() {
            let data = crate::reader::apply_delta(&object, &delta)
                .map_err(|err| self.corrupt(at, err.to_string()))?;
            object = Arc::new(data);
            let _ = self.cache.put_with_weight(at, Arc::clone(&object));
        }
        Ok(object)
    }
}
