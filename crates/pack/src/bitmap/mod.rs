//! git's reachability bitmaps (`.bitmap` files, version 1): for selected commits, the set of
//! every object reachable from them, one bit per object of the pack in pack order.
//!
//! [`PackBitmap`] reads a pack's bitmap file and checks everything in it against the pack:
//! its trailing checksum, the pack checksum it names, the type bitmaps (every object exactly
//! one type), each entry's commit and XOR reference, and the optional name-hash cache and
//! lookup table (their sizes; the table's offsets must name entries). A bitmap that fails any
//! check is not used: the caller counts with the walk instead. A multi-pack index's bitmap
//! (`multi-pack-index-<checksum>.bitmap`) is read the same way, its bits in the MIDX's
//! pseudo-pack order (its `RIDX` chunk): [`PackBitmap::open_midx()`]. Incremental MIDX chains
//! (`multi-pack-index.d/`) are not read.
//!
//! [`count`] is git's `prepare_bitmap_walk`: OR of the wants' bitmaps, walking from wants
//! without a bitmap until commits with one, minus the same for the haves.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashMap;
use gix_object::Kind;

mod bits;
pub mod count;
mod graph;
mod write;

pub use bits::{decode_ewah, encode_ewah, Bits, EwahError};
pub use write::{write_bitmap, BitmapWriteError, BitmapWriteOptions, BitmapWritten};

/// Why a bitmap file is not used.
#[derive(Debug, thiserror::Error)]
pub enum BitmapError {
    /// The file could not be read.
    #[error("could not read {path}")]
    Io {
        /// The bitmap file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Not a version 1 bitmap with the full-closure flag, or with extensions not read here.
    #[error("unsupported bitmap: {0}")]
    Unsupported(&'static str),
    /// The file's trailing checksum does not match its contents.
    #[error("bitmap checksum mismatch")]
    Checksum,
    /// The bitmap was made for another pack.
    #[error("bitmap belongs to pack {named}, not {actual}")]
    Stale {
        /// The pack checksum in the bitmap.
        named: ObjectId,
        /// The checksum of the pack beside it.
        actual: ObjectId,
    },
    /// A structural problem.
    #[error("corrupt bitmap: {0}")]
    Corrupt(&'static str),
    /// A stored EWAH bitmap is malformed.
    #[error("corrupt bitmap: {0}")]
    Ewah(#[from] EwahError),
}

const FLAG_FULL_DAG: u16 = 0x1;
const FLAG_HASH_CACHE: u16 = 0x4;
const FLAG_LOOKUP_TABLE: u16 = 0x10;
/// The longest XOR reference git writes (and accepts).
const MAX_XOR_OFFSET: usize = 160;

/// The objects a bitmap's bits stand for, sorted by id: a pack's index, or a multi-pack
/// index.
enum Objects {
    Pack(gix_pack::index::File),
    Midx(gix_pack::multi_index::File),
}

impl Objects {
    fn len(&self) -> u32 {
        match self {
            Objects::Pack(index) => index.num_objects(),
            Objects::Midx(midx) => midx.num_objects(),
        }
    }

    /// The id at sorted position `n`, which must be below [`Objects::len()`].
    fn oid_at(&self, n: u32) -> &oid {
        match self {
            Objects::Pack(index) => index.oid_at_index(n),
            Objects::Midx(midx) => midx.oid_at_index(n),
        }
    }

    fn lookup(&self, id: &oid) -> Option<u32> {
        match self {
            Objects::Pack(index) => crate::lookup::lookup(index, id),
            Objects::Midx(midx) => {
                crate::lookup::lookup_sorted(midx.num_objects(), |n| midx.oid_at_index(n), id)
            }
        }
    }

    /// The checksum a bitmap for these objects names: the pack's, or the MIDX's.
    fn checksum(&self) -> ObjectId {
        match self {
            Objects::Pack(index) => index.pack_checksum().to_owned(),
            Objects::Midx(midx) => midx.checksum(),
        }
    }
}

/// A pack's (or a multi-pack index's) reachability bitmaps, read and checked, with the index
/// and order to map bit positions to objects and back.
pub struct PackBitmap {
    path: PathBuf,
    objects: Objects,
    /// Index positions in pack order (a MIDX's pseudo-pack order): bit `n` is the object at
    /// index position `order[n]`.
    order: Arc<[u32]>,
    /// Pack positions in index order: the inverse of `order`.
    inverse: Vec<u32>,
    /// Commits, trees, blobs, tags.
    types: [Bits; 4],
    /// Each entry's XOR offset and where its EWAH bitmap starts in `data`.
    entries: Vec<(u8, usize)>,
    by_commit: HashMap<ObjectId, u32>,
    data: Vec<u8>,
    pack_checksum: ObjectId,
    name_hashes: bool,
    lookup_table: bool,
}

impl std::fmt::Debug for PackBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackBitmap")
            .field("path", &self.path)
            .field("objects", &self.inverse.len())
            .field("entries", &self.entries.len())
            .field("name_hashes", &self.name_hashes)
            .field("lookup_table", &self.lookup_table)
            .finish()
    }
}

/// Two bitmaps are the same if they are for the same pack from the same path.
impl PartialEq for PackBitmap {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.pack_checksum == other.pack_checksum
    }
}
impl Eq for PackBitmap {}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl PackBitmap {
    /// Read the bitmap file at `path` for the pack whose index is at `index_path`, with that
    /// pack's order (`order[n]` is the index position of the `n`th entry of the pack).
    pub fn open(
        path: &Path,
        index_path: &Path,
        order: Arc<[u32]>,
    ) -> Result<PackBitmap, BitmapError> {
        let data = std::fs::read(path).map_err(|source| BitmapError::Io {
            path: path.to_owned(),
            source,
        })?;
        let index = gix_pack::index::File::at(index_path, gix_hash::Kind::Sha1).map_err(|_| {
            BitmapError::Io {
                path: index_path.to_owned(),
                source: std::io::Error::other("pack index unreadable"),
            }
        })?;
        Self::from_bytes(path.to_owned(), data, Objects::Pack(index), order)
    }

    /// Read the bitmap file at `path` of the multi-pack index at `midx_path`; its bits follow
    /// the MIDX's pseudo-pack order, which git writes into the MIDX's `RIDX` chunk.
    pub fn open_midx(path: &Path, midx_path: &Path) -> Result<PackBitmap, BitmapError> {
        let io = |source| BitmapError::Io {
            path: midx_path.to_owned(),
            source,
        };
        let midx = gix_pack::multi_index::File::at(midx_path, None)
            .map_err(|err| io(std::io::Error::other(err.to_string())))?;
        let order = midx_pseudo_pack_order(midx_path, midx.num_objects()).map_err(io)?;
        let data = std::fs::read(path).map_err(|source| BitmapError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(path.to_owned(), data, Objects::Midx(midx), order.into())
    }

    fn from_bytes(
        path: PathBuf,
        data: Vec<u8>,
        index: Objects,
        order: Arc<[u32]>,
    ) -> Result<PackBitmap, BitmapError> {
        const HASH: usize = 20;
        const HEADER: usize = 4 + 2 + 2 + 4 + HASH;
        let objects = index.len() as usize;
        if order.len() != objects {
            return Err(BitmapError::Corrupt("pack order does not match the index"));
        }
        if data.len() < HEADER + HASH {
            return Err(BitmapError::Corrupt("too short"));
        }
        let body = data.len() - HASH;
        {
            use sha1::Digest as _;
            let digest = sha1::Sha1::digest(&data[..body]);
            if digest.as_slice() != &data[body..] {
                return Err(BitmapError::Checksum);
            }
        }
        if &data[..4] != b"BITM" {
            return Err(BitmapError::Unsupported("no BITM signature"));
        }
        if data[4..6] != 1u16.to_be_bytes() {
            return Err(BitmapError::Unsupported("version other than 1"));
        }
        let flags = u16::from_be_bytes([data[6], data[7]]);
        if flags & FLAG_FULL_DAG == 0 {
            return Err(BitmapError::Unsupported("no full-closure flag"));
        }
        if flags & !(FLAG_FULL_DAG | FLAG_HASH_CACHE | FLAG_LOOKUP_TABLE) != 0 {
            return Err(BitmapError::Unsupported(
                "unknown extensions (pseudo-merges?)",
            ));
        }
        let name_hashes = flags & FLAG_HASH_CACHE != 0;
        let lookup_table = flags & FLAG_LOOKUP_TABLE != 0;
        let count = u32_at(&data, 8).unwrap_or(0) as usize;
        let named = ObjectId::from_bytes_or_panic(&data[12..12 + HASH]);
        let actual = index.checksum();
        if named != actual {
            return Err(BitmapError::Stale { named, actual });
        }
        // The extensions at the end: lookup table, then name-hash cache, then the trailer.
        let tail =
            if lookup_table { count * 16 } else { 0 } + if name_hashes { objects * 4 } else { 0 };
        let entries_end = body
            .checked_sub(tail)
            .filter(|&end| end >= HEADER)
            .ok_or(BitmapError::Corrupt("extensions longer than the file"))?;

        let mut at = HEADER;
        let mut types: [Bits; 4] = Default::default();
        for bits in &mut types {
            let (decoded, used) = decode_ewah(&data[at..entries_end], objects)?;
            *bits = decoded;
            at += used;
        }
        let mut all = Bits::with_capacity(objects);
        let mut sum = 0;
        for bits in &types {
            all.or(bits);
            sum += bits.count();
        }
        if sum != objects || all.count() != objects {
            return Err(BitmapError::Corrupt(
                "type bitmaps do not cover each object once",
            ));
        }
        let mut inverse = vec![u32::MAX; objects];
        for (position, &in_index) in order.iter().enumerate() {
            let slot = inverse
                .get_mut(in_index as usize)
                .ok_or(BitmapError::Corrupt("pack order out of range"))?;
            if *slot != u32::MAX {
                return Err(BitmapError::Corrupt("pack order names an object twice"));
            }
            *slot = position as u32;
        }

        let mut entries = Vec::with_capacity(count);
        let mut by_commit = HashMap::default();
        for n in 0..count {
            let in_index = u32_at(&data[..entries_end], at)
                .ok_or(BitmapError::Corrupt("entries truncated"))?;
            let (xor, _flags) = match data[..entries_end].get(at + 4..at + 6) {
                Some(bytes) => (bytes[0], bytes[1]),
                None => return Err(BitmapError::Corrupt("entries truncated")),
            };
            let position = *inverse.get(in_index as usize).ok_or(BitmapError::Corrupt(
                "entry names an object outside the pack",
            ))?;
            if !types[0].get(position as usize) {
                return Err(BitmapError::Corrupt(
                    "entry names an object that is not a commit",
                ));
            }
            if usize::from(xor) > n || usize::from(xor) > MAX_XOR_OFFSET {
                return Err(BitmapError::Corrupt("XOR offset out of range"));
            }
            let ewah = at + 6;
            // Only the length now; the bitmap is decoded (and checked) when used.
            let bits = u32_at(&data[..entries_end], ewah)
                .ok_or(BitmapError::Corrupt("entries truncated"))?;
            let words = u32_at(&data[..entries_end], ewah + 4)
                .ok_or(BitmapError::Corrupt("entries truncated"))?;
            if bits as usize > objects.div_ceil(64) * 64 {
                return Err(EwahError::TooLong.into());
            }
            at = (words as usize)
                .checked_mul(8)
                .and_then(|len| len.checked_add(ewah + 12))
                .filter(|&end| end <= entries_end)
                .ok_or(BitmapError::Corrupt("entries truncated"))?;
            let commit = index.oid_at(in_index).to_owned();
            if by_commit.insert(commit, n as u32).is_some() {
                return Err(BitmapError::Corrupt("two entries for one commit"));
            }
            entries.push((xor, ewah));
        }
        if at != entries_end {
            return Err(BitmapError::Corrupt(
                "data between the entries and the extensions",
            ));
        }
        if lookup_table {
            let starts: Vec<usize> = entries.iter().map(|&(_, ewah)| ewah - 6).collect();
            for row in data[entries_end..entries_end + count * 16].chunks_exact(16) {
                let commit = u32_at(row, 0).unwrap_or(u32::MAX) as usize;
                let offset = u64::from_be_bytes([
                    row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[11],
                ]);
                let xor_row = u32_at(row, 12).unwrap_or(0);
                if commit >= objects
                    || starts.binary_search(&(offset as usize)).is_err()
                    || (xor_row != u32::MAX && xor_row as usize >= count)
                {
                    return Err(BitmapError::Corrupt(
                        "lookup table does not match the entries",
                    ));
                }
            }
        }
        Ok(PackBitmap {
            path,
            objects: index,
            order,
            inverse,
            types,
            entries,
            by_commit,
            data,
            pack_checksum: actual,
            name_hashes,
            lookup_table,
        })
    }

    /// How many objects the pack (and each bitmap) has.
    pub fn num_objects(&self) -> usize {
        self.inverse.len()
    }

    /// How many commits have a bitmap.
    pub fn num_entries(&self) -> usize {
        self.entries.len()
    }

    /// The bitmap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checksum of the pack the bitmap is for; `None` for a multi-pack index's bitmap,
    /// whose objects are no one pack's.
    pub fn pack_checksum(&self) -> Option<&oid> {
        match self.objects {
            Objects::Pack(_) => Some(&self.pack_checksum),
            Objects::Midx(_) => None,
        }
    }

    /// The position (pack order) of `id`, if it is in the pack.
    pub fn position(&self, id: &oid) -> Option<usize> {
        let in_index = self.objects.lookup(id)?;
        self.inverse.get(in_index as usize).map(|&p| p as usize)
    }

    /// The object at `position`.
    pub fn id_at(&self, position: usize) -> Option<ObjectId> {
        let in_index = *self.order.get(position)?;
        Some(self.objects.oid_at(in_index).to_owned())
    }

    /// The kind of the object at `position`, from the type bitmaps.
    pub fn kind_at(&self, position: usize) -> Option<Kind> {
        [Kind::Commit, Kind::Tree, Kind::Blob, Kind::Tag]
            .into_iter()
            .zip(&self.types)
            .find_map(|(kind, bits)| bits.get(position).then_some(kind))
    }

    /// The type bitmap of `kind`: which positions hold objects of that kind.
    pub fn of_kind(&self, kind: Kind) -> &Bits {
        match kind {
            Kind::Commit => &self.types[0],
            Kind::Tree => &self.types[1],
            Kind::Blob => &self.types[2],
            Kind::Tag => &self.types[3],
        }
    }

    /// The entry number of `commit`'s bitmap, if it has one.
    pub fn entry_of(&self, commit: &oid) -> Option<u32> {
        self.by_commit.get(commit).copied()
    }

    /// The bitmap of entry `entry`, its XOR chain resolved. Resolved entries are kept in
    /// `resolved` (a request's own cache: chains share their bases).
    pub fn bitmap(
        &self,
        entry: u32,
        resolved: &mut std::collections::HashMap<u32, Arc<Bits>>,
    ) -> Result<Arc<Bits>, BitmapError> {
        if let Some(hit) = resolved.get(&entry) {
            return Ok(Arc::clone(hit));
        }
        // The chain down to an entry without XOR or one already resolved.
        let mut chain = vec![entry];
        let mut base: Option<Arc<Bits>> = None;
        loop {
            let last = *chain.last().unwrap_or(&entry);
            let &(xor, _) = self
                .entries
                .get(last as usize)
                .ok_or(BitmapError::Corrupt("no such entry"))?;
            if xor == 0 {
                break;
            }
            let below = last - u32::from(xor);
            if let Some(hit) = resolved.get(&below) {
                base = Some(Arc::clone(hit));
                break;
            }
            chain.push(below);
        }
        for &n in chain.iter().rev() {
            let (_, ewah) = self.entries[n as usize];
            let (mut bits, _) = decode_ewah(&self.data[ewah..], self.num_objects())?;
            if let Some(base) = &base {
                bits.xor(base);
            }
            let bits = Arc::new(bits);
            resolved.insert(n, Arc::clone(&bits));
            base = Some(bits);
        }
        base.ok_or(BitmapError::Corrupt("empty XOR chain"))
    }
}

/// Bitmaps of recent requests, shared by the process: a server reads and checks a bitmap
/// file once, not once per request, while the file stays the same.
static BITMAPS: std::sync::Mutex<Vec<(crate::packs::FileKey, Arc<PackBitmap>)>> =
    std::sync::Mutex::new(Vec::new());

/// How many bitmaps the process keeps.
const BITMAPS_KEPT: usize = 4;

/// The pseudo-pack order of the multi-pack index at `path` with `objects` objects: its
/// `RIDX` chunk (MIDX positions in bitmap order), read without reading the rest of the file.
fn midx_pseudo_pack_order(path: &Path, objects: u32) -> std::io::Result<Vec<u32>> {
    use std::io::{Read as _, Seek as _};
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; 12];
    file.read_exact(&mut header)?;
    if &header[..4] != b"MIDX" || header[4] != 1 {
        return Err(invalid("not a version 1 multi-pack index"));
    }
    if header[7] != 0 {
        return Err(invalid("a multi-pack index with base layers"));
    }
    let chunks = usize::from(header[6]);
    let mut table = vec![0u8; (chunks + 1) * 12];
    file.read_exact(&mut table)?;
    let rows: Vec<([u8; 4], u64)> = table
        .chunks_exact(12)
        .map(|row| {
            let mut id = [0u8; 4];
            id.copy_from_slice(&row[..4]);
            let mut offset = [0u8; 8];
            offset.copy_from_slice(&row[4..]);
            (id, u64::from_be_bytes(offset))
        })
        .collect();
    let (at, next) = rows
        .windows(2)
        .find(|pair| &pair[0].0 == b"RIDX")
        .map(|pair| (pair[0].1, pair[1].1))
        .ok_or_else(|| invalid("no RIDX chunk (the bitmap's object order)"))?;
    let len = u64::from(objects) * 4;
    if next.checked_sub(at) != Some(len) {
        return Err(invalid("RIDX chunk of the wrong size"));
    }
    file.seek(std::io::SeekFrom::Start(at))?;
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| invalid("too many objects"))?];
    file.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]))
        .collect())
}

/// The bitmap of the multi-pack index in `pack_dir`, if it has one that passes every check.
pub(crate) fn load_midx(pack_dir: &Path) -> Option<Arc<PackBitmap>> {
    let midx_path = pack_dir.join("multi-pack-index");
    if !midx_path.is_file() {
        return None;
    }
    let checksum = match gix_pack::multi_index::File::at(&midx_path, None) {
        Ok(midx) => midx.checksum(),
        Err(err) => {
            tracing::debug!(%err, midx = %midx_path.display(), "multi-pack index unreadable");
            return None;
        }
    };
    let path = pack_dir.join(format!("multi-pack-index-{checksum}.bitmap"));
    if !path.is_file() {
        return None;
    }
    load_with(&path, || PackBitmap::open_midx(&path, &midx_path))
}

/// The bitmap at `path`, from the process's cache or read now; `None` (with a warning) if it
/// can't be used.
pub(crate) fn load(
    path: &Path,
    index_path: &Path,
    order: impl FnOnce() -> Arc<[u32]>,
) -> Option<Arc<PackBitmap>> {
    load_with(path, || PackBitmap::open(path, index_path, order()))
}

/// The bitmap at `path` from the process's cache, or from `open`.
fn load_with(
    path: &Path,
    open: impl FnOnce() -> Result<PackBitmap, BitmapError>,
) -> Option<Arc<PackBitmap>> {
    let key = crate::packs::FileKey::of(path)?;
    if let Ok(kept) = BITMAPS.lock() {
        if let Some((_, bitmap)) = kept.iter().find(|(cached, _)| *cached == key) {
            return Some(Arc::clone(bitmap));
        }
    }
    match open() {
        Ok(bitmap) => {
            let bitmap = Arc::new(bitmap);
            if let Ok(mut kept) = BITMAPS.lock() {
                kept.retain(|(cached, _)| cached.path != key.path);
                if kept.len() >= BITMAPS_KEPT {
                    kept.remove(0);
                }
                kept.push((key, Arc::clone(&bitmap)));
            }
            Some(bitmap)
        }
        Err(err) => {
            tracing::warn!(bitmap = %path.display(), %err, "bitmap not used; counting objects by walking");
            None
        }
    }
}

#[cfg(test)]
mod tests;
