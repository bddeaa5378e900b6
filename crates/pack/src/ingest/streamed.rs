//! Blobs above `core.bigFileThreshold`: hashed while they stream into the pack, shown to
//! gix-pack's resolver as empty blobs, and their index entries corrected afterwards.

use super::{IngestError, OBJECT_HASH};

use std::{
    cell::RefCell,
    collections::hash_map::RandomState,
    fs::{self},
    io::{self, Read, Write},
    path::Path,
};

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashSet;
use gix_object::Kind;
use gix_pack::data::input as pack_input;

/// The written pack, as gitoxide's delta resolution reads it: blobs that were hashed while
/// streaming read as empty blobs, so that resolving them allocates nothing. Only blobs no
/// delta is based on are among them; the ids computed for them are replaced afterwards
/// ([`correct_index()`]), and fsck skips blobs.
pub(super) struct PackWithStreamedBlobs {
    pub(super) pack: gix_pack::data::File,
    pub(super) streamed: ByOffset<ObjectId>,
}

/// Pack offsets to what is known about the entry there (gix-hashtable's maps only take ids).
pub(super) type ByOffset<V> = std::collections::HashMap<u64, V, RandomState>;

/// A pack entry: an empty blob (header, then an empty zlib stream).
pub(super) const EMPTY_BLOB_ENTRY: &[u8] = &[0x30, 0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];

/// The pack entry at `range` of the freshly written pack.
pub(super) fn entry_bytes(
    range: gix_pack::data::EntryRange,
    data: &PackWithStreamedBlobs,
) -> Option<&[u8]> {
    if data.streamed.contains_key(&range.start) {
        return Some(EMPTY_BLOB_ENTRY);
    }
    data.pack.entry_slice(range)
}

/// Blobs above the big-file threshold, hashed as they go by on their way into the pack
/// (git's index-pack does the same), and what deltas are based on.
#[derive(Default)]
pub(super) struct LargeBlobs {
    /// [`IngestOptions::big_file_threshold`].
    pub(super) threshold: Option<u64>,
    /// Offset in the written pack → id.
    pub(super) streamed: ByOffset<ObjectId>,
    /// Streamed blobs an ofs-delta is based on.
    pub(super) ofs_bases: std::collections::HashSet<u64, RandomState>,
    /// The bases of ref-deltas left after thin-pack completion (in-pack bases).
    pub(super) ref_bases: HashSet<ObjectId>,
}

impl LargeBlobs {
    pub(super) fn observe(&mut self, entry: &pack_input::Entry) -> io::Result<()> {
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
    pub(super) fn not_needed_as_bases(&mut self) -> ByOffset<ObjectId> {
        let (ofs_bases, ref_bases) = (&self.ofs_bases, &self.ref_bases);
        self.streamed
            .retain(|offset, id| !ofs_bases.contains(offset) && !ref_bases.contains(id));
        self.streamed.clone()
    }
}

/// The id of an object of `kind` and `size` whose zlib stream is `compressed`, computed while
/// inflating it a buffer at a time.
pub(super) fn hash_while_inflating(
    kind: Kind,
    size: u64,
    compressed: &[u8],
) -> io::Result<ObjectId> {
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
pub(super) struct StreamLargeBlobs<'a, I> {
    pub(super) inner: I,
    pub(super) blobs: &'a RefCell<LargeBlobs>,
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
pub(super) fn correct_index(
    from: &Path,
    to: &Path,
    streamed: &ByOffset<ObjectId>,
) -> Result<(), IngestError> {
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
pub(super) fn write_index_v2(
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
