//! An object reader with a delta-base cache, for walks that read many trees and commits.
//!
//! gix-pack resolves a delta chain from its full base every time unless the object asked for
//! was cached itself, and it caches only the objects asked for. In a pack whose newer
//! objects are deltas of older ones (fast-import's packs, packs repacked without `-f`), a
//! newest-first walk then inflates whole chains for every tree. [`CachingReader`] resolves
//! chains itself and keeps every object it decoded on the way — base and intermediates —
//! in a memory-capped LRU, as git's delta base cache does, so each step of a chain is
//! applied once while it stays cached.
//!
//! Entries are found through a [`PackSet`] and cached by where they are, as git's delta base
//! cache keys them (pack and offset): an ofs-delta's base is found by its offset without
//! learning its id, so a walk needs no reverse index. Loose objects, and anything it cannot
//! resolve itself, are read through the handle and cached by id.

use std::{cell::RefCell, num::NonZeroUsize, sync::Arc};

use gix_hash::{oid, ObjectId};
use gix_object::{Data, Kind};
use gix_pack::data::entry::Header;

use crate::packs::{Located, PackSet};

/// How much decoded object data one reader keeps by default: git's default
/// `core.deltaBaseCacheLimit`. A reader is made per walking thread.
pub const DEFAULT_CACHE_BYTES: usize = 96 * 1024 * 1024;

/// Reads objects through a delta-base cache. Cloning gives a reader with an empty cache of
/// the same size (one per thread); clones share the pack set, so the threads of one request
/// open the packs and read their reverse indexes once.
pub struct CachingReader {
    handle: gix_odb::Handle,
    cache_bytes: usize,
    state: RefCell<State>,
    packs: Arc<std::sync::OnceLock<PackSet>>,
}

/// A decoded object, shared between the cache and readers of it.
/// A decoded object as the cache keeps it: its kind and data, shared.
pub type Shared = Arc<(Kind, Vec<u8>)>;
type Decoded = Shared;

struct State {
    cache: clru::CLruCache<Key, Decoded, std::collections::hash_map::RandomState, Weight>,
    inflater: flate2::Decompress,
}

/// What the cache knows an object by: its pack entry, or (read through the handle) its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Packed(Located),
    Id(ObjectId),
}

struct Weight;

impl clru::WeightScale<Key, Decoded> for Weight {
    fn weight(&self, _key: &Key, value: &Decoded) -> usize {
        value.1.len() + 64
    }
}

impl std::fmt::Debug for CachingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingReader")
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

impl Clone for CachingReader {
    fn clone(&self) -> Self {
        CachingReader {
            packs: Arc::clone(&self.packs),
            ..CachingReader::new(self.handle.clone(), self.cache_bytes)
        }
    }
}

impl CachingReader {
    /// Read through `handle`, caching up to `cache_bytes` of decoded objects.
    pub fn new(mut handle: gix_odb::Handle, cache_bytes: usize) -> Self {
        // Pack ids and offsets must stay valid while chains are resolved.
        handle.prevent_pack_unload();
        let capacity = NonZeroUsize::new(cache_bytes.max(1)).unwrap_or(NonZeroUsize::MIN);
        // clru hashes its own key wrapper, which gix-hashtable's id-only hasher refuses.
        let config = clru::CLruCacheConfig::new(capacity).with_scale(Weight);
        CachingReader {
            handle,
            cache_bytes,
            state: RefCell::new(State {
                cache: clru::CLruCache::with_config(config),
                inflater: flate2::Decompress::new(true),
            }),
            packs: Arc::default(),
        }
    }

    /// The repository's packs as they were when this reader (or the one it was cloned from)
    /// first needed them.
    pub fn packs(&self) -> &PackSet {
        self.packs.get_or_init(|| PackSet::open(&self.handle))
    }

    /// Decode `id`, resolving its delta chain through the cache. `None` when the object is
    /// not in a pack this reader can resolve by itself.
    fn decode_packed(&self, id: &oid) -> Result<Option<Decoded>, gix_error::Error> {
        let packs = self.packs();
        let Some(at) = packs.locate(id) else {
            return Ok(None);
        };
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        if let Some(hit) = state.cache.get(&Key::Packed(at)) {
            return Ok(Some(Arc::clone(hit)));
        }
        // Walk down the chain until a cached object or a full base; remember the deltas.
        let mut pending: Vec<(Located, Vec<u8>)> = Vec::new();
        let mut current = at;
        let base = loop {
            if let Some(hit) = state.cache.get(&Key::Packed(current)) {
                break Arc::clone(hit);
            }
            let header = packs.header(current)?;
            let compressed = packs.compressed_from(current, &header)?;
            let decompressed = inflate(&mut state.inflater, compressed, header.decompressed_size)?;
            match header.header {
                Header::OfsDelta { base_distance } => {
                    let base_offset =
                        Header::verified_base_pack_offset(current.offset, base_distance)
                            .ok_or_else(|| {
                                gix_error::Error::from(gix_error::message(
                                    "ofs-delta before pack start",
                                ))
                            })?;
                    pending.push((current, decompressed));
                    current = Located {
                        pack: current.pack,
                        offset: base_offset,
                    };
                }
                Header::RefDelta { base_id } => {
                    pending.push((current, decompressed));
                    match packs.locate(&base_id) {
                        Some(base) => current = base,
                        None => break self.read_by_id(state, &base_id)?,
                    }
                }
                other => {
                    let kind = other.as_kind().ok_or_else(|| {
                        gix_error::Error::from(gix_error::message("unknown pack entry kind"))
                    })?;
                    let object = Arc::new((kind, decompressed));
                    let _ = state
                        .cache
                        .put_with_weight(Key::Packed(current), Arc::clone(&object));
                    break object;
                }
            }
            // A chain longer than any git writes is a corrupt or hostile pack.
            if pending.len() > 10_000 {
                return Err(gix_error::message("delta chain too long").into());
            }
        };
        // Apply the deltas back up, caching every intermediate object.
        let mut object = base;
        while let Some((at, delta)) = pending.pop() {
            let data = apply_delta(&object.1, &delta)?;
            object = Arc::new((object.0, data));
            let _ = state
                .cache
                .put_with_weight(Key::Packed(at), Arc::clone(&object));
        }
        Ok(Some(object))
    }

    /// A ref-delta's base that is not in the pack set (a loose object), through the handle.
    fn read_by_id(&self, state: &mut State, id: &ObjectId) -> Result<Decoded, gix_error::Error> {
        if let Some(hit) = state.cache.get(&Key::Id(*id)) {
            return Ok(Arc::clone(hit));
        }
        let mut buf = Vec::new();
        let Some(data) = gix_object::Find::try_find(&self.handle, id, &mut buf)? else {
            return Err(gix_error::message("delta base is missing").into());
        };
        let object = Arc::new((data.kind, data.data.to_vec()));
        let _ = state
            .cache
            .put_with_weight(Key::Id(*id), Arc::clone(&object));
        Ok(object)
    }
}

impl gix_object::Find for CachingReader {
    fn try_find<'a>(
        &self,
        id: &oid,
        buffer: &'a mut Vec<u8>,
    ) -> Result<Option<Data<'a>>, gix_error::Error> {
        match self.decode_packed(id)? {
            Some(object) => {
                buffer.clear();
                buffer.extend_from_slice(&object.1);
                Ok(Some(Data::new(buffer, object.0, gix_hash::Kind::Sha1)))
            }
            // Loose (or newer than the pack set): read once, then kept like the rest — a
            // fetch of new commits reads their trees several times.
            None => {
                let hit = (self.state.borrow_mut())
                    .cache
                    .get(&Key::Id(id.to_owned()))
                    .map(Arc::clone);
                match hit {
                    Some(hit) => {
                        buffer.clear();
                        buffer.extend_from_slice(&hit.1);
                        Ok(Some(Data::new(buffer, hit.0, gix_hash::Kind::Sha1)))
                    }
                    None => self.read_loose(id, buffer),
                }
            }
        }
    }
}

impl CachingReader {
    /// Object `id` as the cache keeps it, shared rather than copied out: its kind and data.
    pub fn shared(&self, id: &oid) -> Result<Option<Shared>, gix_error::Error> {
        if let Some(object) = self.decode_packed(id)? {
            return Ok(Some(object));
        }
        let key = Key::Id(id.to_owned());
        let hit = self.state.borrow_mut().cache.get(&key).map(Arc::clone);
        if hit.is_some() {
            return Ok(hit);
        }
        let mut buffer = Vec::new();
        let kind = match self.read_loose(id, &mut buffer)? {
            Some(data) => data.kind,
            None => return Ok(None),
        };
        let hit = self.state.borrow_mut().cache.get(&key).map(Arc::clone);
        // Not kept (too large for the cache, or the empty tree): what was read is all there is.
        Ok(Some(hit.unwrap_or_else(|| Arc::new((kind, buffer)))))
    }

    /// An object outside the pack set, read through the handle and then kept like the rest.
    fn read_loose<'a>(
        &self,
        id: &oid,
        buffer: &'a mut Vec<u8>,
    ) -> Result<Option<Data<'a>>, gix_error::Error> {
        match gix_object::Find::try_find(&self.handle, id, buffer)? {
            Some(data) => {
                let object = Arc::new((data.kind, data.data.to_vec()));
                let _ = self
                    .state
                    .borrow_mut()
                    .cache
                    .put_with_weight(Key::Id(id.to_owned()), Arc::clone(&object));
                buffer.clear();
                buffer.extend_from_slice(&object.1);
                Ok(Some(Data::new(buffer, object.0, gix_hash::Kind::Sha1)))
            }
            // git's object layer has the empty tree whether or not it is stored.
            None if id.is_empty_tree() => {
                buffer.clear();
                Ok(Some(Data::new(buffer, Kind::Tree, gix_hash::Kind::Sha1)))
            }
            None => Ok(None),
        }
    }
}

impl gix_object::FindHeader for CachingReader {
    /// A whole object's header straight from its pack entry (no inflating, and the pack set's
    /// lookup); a delta's kind is its base's, so deltas and loose objects ask the database.
    fn try_header(&self, id: &oid) -> Result<Option<gix_object::Header>, gix_error::Error> {
        let packs = self.packs();
        if let Some(at) = packs.locate(id) {
            if let Ok(entry) = packs.header(at) {
                if let Some(kind) = entry.header.as_kind() {
                    return Ok(Some(gix_object::Header {
                        kind,
                        size: entry.decompressed_size,
                    }));
                }
            }
        }
        gix_object::FindHeader::try_header(&self.handle, id)
    }
}

impl gix_object::Exists for CachingReader {
    fn exists(&self, id: &oid) -> bool {
        gix_object::Exists::exists(&self.handle, id)
    }
}

pub(crate) fn inflate(
    inflater: &mut flate2::Decompress,
    compressed: &[u8],
    size: u64,
) -> Result<Vec<u8>, gix_error::Error> {
    let size = usize::try_from(size)
        .map_err(|_| gix_error::Error::from(gix_error::message("object too large")))?;
    // Reuse one inflater: setting one up costs more than inflating a small tree.
    inflater.reset(true);
    let mut out = Vec::with_capacity(size);
    let status = inflater
        .decompress_vec(compressed, &mut out, flate2::FlushDecompress::Finish)
        .map_err(|_| {
            gix_error::Error::from(gix_error::message("corrupt zlib stream in a pack entry"))
        })?;
    if out.len() != size || status != flate2::Status::StreamEnd {
        return Err(gix_error::message("pack entry does not inflate to its size").into());
    }
    Ok(out)
}

/// Read one of a delta's size varints.
fn delta_size(data: &[u8], pos: &mut usize) -> Option<usize> {
    let mut size = 0usize;
    let mut shift = 0;
    loop {
        let byte = *data.get(*pos)?;
        *pos += 1;
        size |= usize::from(byte & 0x7f).checked_shl(shift)?;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(size);
        }
        if shift > 63 {
            return None;
        }
    }
}

/// Apply a git delta to `base`.
pub(crate) fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, gix_error::Error> {
    apply_delta_with(base, delta, |_, _, _| {})
}

/// Apply a git delta to `base`, telling `copied` of each copy from the base: where in the
/// result it lands, where in the base it starts, and how long it is.
pub(crate) fn apply_delta_with(
    base: &[u8],
    delta: &[u8],
    mut copied: impl FnMut(usize, usize, usize),
) -> Result<Vec<u8>, gix_error::Error> {
    let corrupt = || gix_error::Error::from(gix_error::message("corrupt delta"));
    let mut pos = 0;
    let base_size = delta_size(delta, &mut pos).ok_or_else(corrupt)?;
    let result_size = delta_size(delta, &mut pos).ok_or_else(corrupt)?;
    if base_size != base.len() {
        return Err(corrupt());
    }
    let mut out = Vec::with_capacity(result_size);
    while pos < delta.len() {
        let command = delta[pos];
        pos += 1;
        if command & 0x80 != 0 {
            let mut offset = 0usize;
            let mut size = 0usize;
            for i in 0..4 {
                if command & (1 << i) != 0 {
                    offset |= usize::from(*delta.get(pos).ok_or_else(corrupt)?) << (8 * i);
                    pos += 1;
                }
            }
            for i in 0..3 {
                if command & (0x10 << i) != 0 {
                    size |= usize::from(*delta.get(pos).ok_or_else(corrupt)?) << (8 * i);
                    pos += 1;
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            let end = offset.checked_add(size).ok_or_else(corrupt)?;
            let from = base.get(offset..end).ok_or_else(corrupt)?;
            copied(out.len(), offset, size);
            out.extend_from_slice(from);
        } else if command != 0 {
            let end = pos + usize::from(command);
            out.extend_from_slice(delta.get(pos..end).ok_or_else(corrupt)?);
            pos = end;
        } else {
            return Err(corrupt());
        }
        if out.len() > result_size {
            return Err(corrupt());
        }
    }
    if out.len() != result_size {
        return Err(corrupt());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(base: &[u8], delta: &[u8], expected: Option<&[u8]>) {
        assert_eq!(
            apply_delta(base, delta).ok().as_deref(),
            expected,
            "delta {delta:?}"
        );
    }

    #[test]
    fn deltas() {
        // base 5 bytes, result 8: copy 0..5, insert "xyz".
        check(
            b"hello",
            &[5, 8, 0x91, 0, 5, 3, b'x', b'y', b'z'],
            Some(b"helloxyz"),
        );
        // copy with offset 1 size 3.
        check(b"hello", &[5, 3, 0x91, 1, 3], Some(b"ell"));
        // wrong base size, copy out of range, zero command, truncated insert, size mismatch.
        check(b"hello", &[4, 3, 0x91, 1, 3], None);
        check(b"hello", &[5, 3, 0x91, 4, 3], None);
        check(b"hello", &[5, 1, 0], None);
        check(b"hello", &[5, 3, 3, b'a'], None);
        check(b"hello", &[5, 9, 0x91, 0, 5], None);
    }

    #[test]
    fn reads_the_same_objects_as_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "A")
                .env("GIT_AUTHOR_EMAIL", "a@example.com")
                .env("GIT_COMMITTER_NAME", "A")
                .env("GIT_COMMITTER_EMAIL", "a@example.com")
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        };
        run(&["init", "-q"]);
        for n in 0..30 {
            let content: String = (0..200)
                .map(|i| format!("line {i} {}\n", i * n % 7 + usize::from(i == n)))
                .collect();
            std::fs::write(dir.path().join("file"), content).unwrap();
            run(&["add", "file"]);
            run(&["commit", "-q", "-m", &format!("c{n}")]);
        }
        run(&["repack", "-adq", "--depth=50", "--window=50"]);
        let handle = gix_odb::at(dir.path().join(".git/objects"), gix_hash::Kind::Sha1).unwrap();
        let reader = CachingReader::new(handle.clone(), 1 << 20);
        let output = std::process::Command::new("git")
            .args([
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname)",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let ids: Vec<ObjectId> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| ObjectId::from_hex(line.as_bytes()).unwrap())
            .collect();
        assert!(ids.len() > 60);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // Twice, the second time from the cache.
        for _ in 0..2 {
            for id in &ids {
                let ours = gix_object::Find::try_find(&reader, id, &mut a)
                    .unwrap()
                    .unwrap();
                let (ours_kind, ours_data) = (ours.kind, ours.data.to_vec());
                let theirs = gix_object::Find::try_find(&handle, id, &mut b)
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    (ours_kind, ours_data.as_slice()),
                    (theirs.kind, theirs.data),
                    "{id}"
                );
            }
        }
    }
}
