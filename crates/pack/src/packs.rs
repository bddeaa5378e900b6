//! The repository's pack files, read directly: where an object's entry is, how long it is,
//! and which object starts at a given offset.
//!
//! gitoxide's object database answers "where is this object" only together with "how long is
//! its entry", and it learns the length by inflating the entry. Copying an entry into a new
//! pack or resolving a delta chain then inflates every entry twice. git instead takes entry
//! lengths from the pack's *reverse index* (the `.rev` file `git repack` writes, or the same
//! order computed from the `.idx`): the next entry's offset minus this one's. [`PackSet`]
//! does what git does, so the entries a fetch copies are never inflated at all.
//!
//! A set is a snapshot of the packs present when it was opened (the repository's own and its
//! alternates'). Objects in packs that appear later, and loose objects, are not found here;
//! callers fall back to the object database for them.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use gix_hash::{oid, ObjectId};
use gix_pack::data::{self, entry::Header};

/// A pack file as stored: its header, its entries and its trailing checksum.
pub type StoredPack<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// A pack's entry: where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Located {
    /// The pack, an index into the set.
    pub pack: u32,
    /// The entry's offset in the pack.
    pub offset: u64,
}

/// An entry's header, read without inflating anything.
#[derive(Debug, Clone, Copy)]
pub struct EntryHeader {
    /// What the entry is: a whole object or a delta, and against which base.
    pub header: Header,
    /// The size of the object or delta once inflated.
    pub decompressed_size: u64,
    /// Where the compressed data starts.
    pub data_offset: u64,
}

/// The packs of one repository and its alternates, opened once.
#[derive(Default)]
pub struct PackSet {
    packs: Vec<Pack>,
    /// The first usable `.bitmap` of the set's packs, looked for on first use.
    bitmap: OnceLock<Option<Arc<crate::bitmap::PackBitmap>>>,
}

struct Pack {
    index: gix_pack::index::File,
    data: data::File,
    /// The index positions of the entries in pack order: the reverse index. Read or computed
    /// on first use.
    order: OnceLock<Arc<[u32]>>,
    /// The entries' offsets in pack order, made from `order` on first use: looked up by
    /// binary search for every entry copied.
    offsets: OnceLock<Box<[u64]>>,
}

impl std::fmt::Debug for PackSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackSet")
            .field("packs", &self.packs.len())
            .finish()
    }
}

impl PackSet {
    /// The packs of the object database behind `handle` and of its alternates. A pack whose
    /// files can't be opened is left out (its objects are found through the database).
    pub fn open(handle: &gix_odb::Handle) -> PackSet {
        let store = handle.store_ref();
        let mut dirs = vec![store.path().to_owned()];
        match store.alternate_db_paths() {
            Ok(alternates) => dirs.extend(alternates),
            Err(err) => {
                tracing::debug!(%err, "alternates unreadable; their packs are read through the database")
            }
        }
        let mut packs = Vec::new();
        for dir in &dirs {
            packs.extend(open_packs(&dir.join("pack"), store.object_hash()));
        }
        PackSet {
            packs,
            bitmap: OnceLock::new(),
        }
    }

    /// How many packs the set holds.
    pub fn len(&self) -> usize {
        self.packs.len()
    }

    /// Whether the set holds no pack.
    pub fn is_empty(&self) -> bool {
        self.packs.is_empty()
    }

    /// The repository's reachability bitmap, if there is one that passes every check: as
    /// git, its multi-pack index's first, else the first usable one of its packs' (newest
    /// pack first; git allows one).
    pub fn bitmap(&self) -> Option<Arc<crate::bitmap::PackBitmap>> {
        self.bitmap
            .get_or_init(|| {
                let own_dir = self
                    .packs
                    .first()
                    .and_then(|pack| pack.index.path().parent().map(Path::to_owned));
                if let Some(bitmap) = own_dir.as_deref().and_then(crate::bitmap::load_midx) {
                    return Some(bitmap);
                }
                for pack in &self.packs {
                    let path = pack.index.path().with_extension("bitmap");
                    if !path.is_file() {
                        continue;
                    }
                    if let Some(bitmap) =
                        crate::bitmap::load(&path, pack.index.path(), || pack.order_arc())
                    {
                        return Some(bitmap);
                    }
                }
                None
            })
            .clone()
    }

    /// Where `id`'s entry is, if it is in one of the set's packs.
    pub fn locate(&self, id: &oid) -> Option<Located> {
        self.packs.iter().enumerate().find_map(|(n, pack)| {
            let position = crate::lookup::lookup(&pack.index, id)?;
            Some(Located {
                pack: u32::try_from(n).ok()?,
                offset: pack.index.pack_offset_at_index(position),
            })
        })
    }

    /// The header of the entry at `at`.
    pub fn header(&self, at: Located) -> Result<EntryHeader, gix_error::Error> {
        let pack = self.pack(at.pack)?;
        if at.offset >= pack.data.pack_end() as u64 {
            return Err(gix_error::message("pack entry offset beyond the pack's end").into());
        }
        let entry = pack.data.entry(at.offset)?;
        Ok(EntryHeader {
            header: entry.header,
            decompressed_size: entry.decompressed_size,
            data_offset: entry.data_offset,
        })
    }

    /// The compressed data of the entry at `at`, exactly: from the end of its header to the
    /// start of the next entry (or the pack's trailer).
    pub fn compressed(&self, at: Located, header: &EntryHeader) -> Result<&[u8], gix_error::Error> {
        let pack = self.pack(at.pack)?;
        let end = self.entry_end(at)?;
        if header.data_offset > end {
            return Err(gix_error::message("pack entry header runs into the next entry").into());
        }
        pack.data
            .entry_slice(header.data_offset..end)
            .ok_or_else(|| gix_error::message("pack entry beyond the pack's end").into())
    }

    /// Where the entry at `at` ends: its data runs from `header.data_offset` to there.
    pub fn entry_end_of(&self, at: Located) -> Result<u64, gix_error::Error> {
        self.entry_end(at)
    }

    /// How many objects pack `pack` holds.
    pub fn num_objects(&self, pack: u32) -> Result<u32, gix_error::Error> {
        Ok(self.pack(pack)?.data.num_objects())
    }

    /// Pack `pack`'s whole file as stored: its 12-byte header, its entries and its trailing
    /// checksum. A pack is copied whole when every object in it is sent.
    pub fn whole(&self, pack: u32) -> Result<StoredPack<'_>, gix_error::Error> {
        let p = self.pack(pack)?;
        let end = p.data.pack_end() as u64;
        let trailer_len = p.index.object_hash().len_in_bytes() as u64;
        let missing = || gix_error::message("pack shorter than its header and trailer");
        let header = p.data.entry_slice(0..12).ok_or_else(missing)?;
        let body = p.data.entry_slice(12..end).ok_or_else(missing)?;
        let trailer = p
            .data
            .entry_slice(end..end + trailer_len)
            .ok_or_else(missing)?;
        Ok((header, body, trailer))
    }

    /// How many of pack `pack`'s entries are deltas, from the type in each entry's first byte.
    pub fn count_deltas(&self, pack: u32) -> Result<u32, gix_error::Error> {
        let p = self.pack(pack)?;
        let mut deltas = 0;
        for &offset in p.offsets() {
            let byte = p
                .data
                .entry_slice(offset..offset + 1)
                .ok_or_else(|| gix_error::message("pack entry beyond the pack's end"))?;
            // OBJ_OFS_DELTA (6) and OBJ_REF_DELTA (7).
            if matches!((byte[0] >> 4) & 7, 6 | 7) {
                deltas += 1;
            }
        }
        Ok(deltas)
    }

    /// The bytes `range` of pack `pack`, as stored: entries to copy verbatim.
    pub fn raw(&self, pack: u32, range: std::ops::Range<u64>) -> Result<&[u8], gix_error::Error> {
        self.pack(pack)?
            .data
            .entry_slice(range)
            .ok_or_else(|| gix_error::message("pack range beyond the pack's end").into())
    }

    /// The compressed data of the entry at `at` up to the pack's end: enough to inflate the
    /// entry, without needing the reverse index.
    pub fn compressed_from(
        &self,
        at: Located,
        header: &EntryHeader,
    ) -> Result<&[u8], gix_error::Error> {
        let pack = self.pack(at.pack)?;
        pack.data
            .entry_slice(header.data_offset..pack.data.pack_end() as u64)
            .ok_or_else(|| gix_error::message("pack entry beyond the pack's end").into())
    }

    /// The object whose entry starts at `offset` in pack `pack` (an ofs-delta's base).
    pub fn id_at(&self, pack: u32, offset: u64) -> Result<ObjectId, gix_error::Error> {
        let p = self.pack(pack)?;
        let order = p.order();
        let position = self.position(p, offset)?;
        Ok(p.index.oid_at_index(order[position]).to_owned())
    }

    /// Where the entry at `at` ends: the next entry's offset or the pack's trailer.
    fn entry_end(&self, at: Located) -> Result<u64, gix_error::Error> {
        let pack = self.pack(at.pack)?;
        let offsets = pack.offsets();
        let position = self.position(pack, at.offset)?;
        Ok(match offsets.get(position + 1) {
            Some(&next) => next,
            None => pack.data.pack_end() as u64,
        })
    }

    fn position(&self, pack: &Pack, offset: u64) -> Result<usize, gix_error::Error> {
        pack.offsets()
            .binary_search(&offset)
            .map_err(|_| gix_error::message("no pack entry starts at this offset").into())
    }

    fn pack(&self, pack: u32) -> Result<&Pack, gix_error::Error> {
        usize::try_from(pack)
            .ok()
            .and_then(|n| self.packs.get(n))
            .ok_or_else(|| gix_error::message("no such pack in the set").into())
    }
}

impl Pack {
    fn order(&self) -> &[u32] {
        self.order_arc_ref()
    }

    fn offsets(&self) -> &[u64] {
        // Reading the order may fill the offsets as it goes: first, and outside their own
        // initialisation.
        self.order();
        self.offsets.get_or_init(|| {
            self.order()
                .iter()
                .map(|&position| self.index.pack_offset_at_index(position))
                .collect()
        })
    }

    fn order_arc(&self) -> Arc<[u32]> {
        Arc::clone(self.order_arc_ref())
    }

    fn order_arc_ref(&self) -> &Arc<[u32]> {
        self.order.get_or_init(|| {
            let key = FileKey::of(self.index.path());
            if let Some(order) = key.as_ref().and_then(cached_order) {
                return order;
            }
            // Reading (and checking) the order looks up every entry's offset: keep them, so
            // the offsets table costs no second pass over the index.
            let rev = self.data.path().with_extension("rev");
            let (order, offsets): (Arc<[u32]>, Box<[u64]>) =
                match read_reverse_index(&rev, &self.index) {
                    Some((order, offsets)) => (order.into(), offsets),
                    None => {
                        let mut pairs: Vec<(u64, u32)> = (0..self.index.num_objects())
                            .map(|position| (self.index.pack_offset_at_index(position), position))
                            .collect();
                        pairs.sort_unstable();
                        (
                            pairs.iter().map(|&(_, position)| position).collect(),
                            pairs.iter().map(|&(offset, _)| offset).collect(),
                        )
                    }
                };
            let _ = self.offsets.set(offsets);
            if let Some(key) = key {
                remember_order(key, Arc::clone(&order));
            }
            order
        })
    }
}

/// Which `.idx` a pack order was made for: its path and what its metadata says of its
/// version. A pack's name is its checksum, so a changed index under the same name is only
/// a rewrite of the same pack; the metadata catches even that.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub(crate) path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileKey {
    pub(crate) fn of(index: &Path) -> Option<FileKey> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(index).ok()?;
        Some(FileKey {
            path: index.to_owned(),
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        })
    }
}

/// Pack orders of recent requests, shared by the process: a server answering many fetches
/// of one repository reads each `.rev` once, not once per request.
static ORDERS: std::sync::Mutex<Vec<(FileKey, Arc<[u32]>)>> = std::sync::Mutex::new(Vec::new());

/// How many entries of pack orders the process keeps at most (4 bytes each): 32 MiB, the
/// orders of several git.git-sized packs.
const ORDERS_KEPT: usize = 8 << 20;

fn cached_order(key: &FileKey) -> Option<Arc<[u32]>> {
    let orders = ORDERS.lock().ok()?;
    orders
        .iter()
        .find(|(cached, _)| cached == key)
        .map(|(_, order)| Arc::clone(order))
}

fn remember_order(key: FileKey, order: Arc<[u32]>) {
    let Ok(mut orders) = ORDERS.lock() else {
        return;
    };
    orders.retain(|(cached, _)| cached.path != key.path);
    if order.len() > ORDERS_KEPT {
        return;
    }
    // Oldest first out.
    while orders.iter().map(|(_, kept)| kept.len()).sum::<usize>() + order.len() > ORDERS_KEPT {
        orders.remove(0);
    }
    orders.push((key, order));
}

/// Every pack in `dir` with both its `.idx` and `.pack`, newest first (as git looks them up).
fn open_packs(dir: &Path, hash: gix_hash::Kind) -> Vec<Pack> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "idx"))
        .filter_map(|idx| {
            let modified = std::fs::metadata(idx.with_extension("pack"))
                .and_then(|meta| meta.modified())
                .ok()?;
            Some((modified, idx))
        })
        .collect();
    found.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    found
        .into_iter()
        .filter_map(|(_, idx)| {
            let opened = gix_pack::index::File::at(&idx, hash).and_then(|index| {
                let data = data::File::at(idx.with_extension("pack"), hash)?;
                Ok((index, data))
            });
            match opened {
                Ok((index, data)) if index.num_objects() == data.num_objects() => Some(Pack {
                    index,
                    data,
                    order: OnceLock::new(),
                    offsets: OnceLock::new(),
                }),
                Ok(_) => {
                    tracing::debug!(index = %idx.display(), "index and pack disagree; pack left out");
                    None
                }
                Err(err) => {
                    tracing::debug!(index = %idx.display(), %err, "pack unreadable; left out");
                    None
                }
            }
        })
        .collect()
}

/// A pack's index positions in pack order, and the entries' offsets in the same order.
pub(crate) type OrderAndOffsets = (Box<[u32]>, Box<[u64]>);

/// The pack order stored in a `.rev` file, if it is well-formed and agrees with `index`
/// (every position once, offsets strictly increasing), with the entries' offsets in that
/// order.
pub(crate) fn read_reverse_index(
    path: &Path,
    index: &gix_pack::index::File,
) -> Option<OrderAndOffsets> {
    use crate::rev::{HEADER_LEN as HEADER, SIGNATURE, VERSION};
    let bytes = std::fs::read(path).ok()?;
    let count = usize::try_from(index.num_objects()).ok()?;
    let trailer = 2 * index.object_hash().len_in_bytes();
    let hash_id = crate::rev::hash_id(index.object_hash())?;
    if bytes.len() != HEADER + 4 * count + trailer
        || &bytes[..4] != SIGNATURE
        || bytes[4..8] != VERSION.to_be_bytes()
        || bytes[8..12] != hash_id.to_be_bytes()
    {
        return None;
    }
    let order: Box<[u32]> = bytes[HEADER..HEADER + 4 * count]
        .chunks_exact(4)
        .map(|word| u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
        .collect();
    let mut offsets = Vec::with_capacity(count);
    let mut previous: Option<u64> = None;
    for &position in order.iter() {
        if position >= index.num_objects() {
            return None;
        }
        let offset = index.pack_offset_at_index(position);
        if previous.is_some_and(|previous| previous >= offset) {
            return None;
        }
        previous = Some(offset);
        offsets.push(offset);
    }
    Some((order, offsets.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_git::git_text as git;

    /// Entry lengths and ofs-delta bases as git's own `verify-pack` reports them, with and
    /// without a `.rev` file.
    #[test]
    fn entries_agree_with_verify_pack() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q", "--bare", "."], None);
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "-q", "."], None);
        for n in 0..20 {
            let content: String = (0..300)
                .map(|i| format!("line {i} {}\n", (i * n) % 11 + usize::from(i == n)))
                .collect();
            std::fs::write(work.path().join("file"), content).unwrap();
            git(work.path(), &["add", "file"], None);
            git(work.path(), &["commit", "-q", "-m", &format!("c{n}")], None);
        }
        git(
            work.path(),
            &["push", "-q", repo.to_str().unwrap(), "HEAD:refs/heads/main"],
            None,
        );
        for rev in ["true", "false"] {
            git(
                repo,
                &[
                    "-c",
                    &format!("pack.writeReverseIndex={rev}"),
                    "repack",
                    "-adq",
                    "--depth=10",
                ],
                None,
            );
            let has_rev = std::fs::read_dir(repo.join("objects/pack"))
                .unwrap()
                .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "rev"));
            assert_eq!(has_rev, rev == "true");
            let handle = gix_odb::at(repo.join("objects"), gix_hash::Kind::Sha1).unwrap();
            let set = PackSet::open(&handle);
            assert_eq!(set.len(), 1);
            let idx = std::fs::read_dir(repo.join("objects/pack"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "idx"))
                .unwrap();
            let verified = git(repo, &["verify-pack", "-v", idx.to_str().unwrap()], None);
            let mut checked = 0;
            for line in verified.lines() {
                // <id> <type> <size> <size-in-pack> <offset> [<depth> <base-id>]
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 5 || fields[0].len() != 40 {
                    continue;
                }
                let id = ObjectId::from_hex(fields[0].as_bytes()).unwrap();
                let at = set.locate(&id).unwrap();
                assert_eq!(at.offset, fields[4].parse::<u64>().unwrap());
                let header = set.header(at).unwrap();
                let compressed = set.compressed(at, &header).unwrap();
                let whole = header.data_offset - at.offset + compressed.len() as u64;
                assert_eq!(whole, fields[3].parse::<u64>().unwrap(), "{line}");
                if let Header::OfsDelta { base_distance } = header.header {
                    let base = set.id_at(at.pack, at.offset - base_distance).unwrap();
                    assert_eq!(base.to_string(), fields[6], "{line}");
                }
                checked += 1;
            }
            assert!(checked >= 60, "{verified}");
            // A second set of the same packs (the next request) takes the order made for
            // the first one.
            let again = PackSet::open(&handle);
            let (first, second) = (set.packs[0].order(), again.packs[0].order());
            assert!(std::ptr::eq(first, second), "the pack order is read once");
        }
    }
}
