//! The incoming pack stream as ingestion reads it: bounded and counted, entries checked as
//! they arrive (canonical headers, object and delta result sizes), and the repository as the
//! source of a thin pack's bases.

use super::{IngestError, RESERVED_ENTRIES_LIMIT};

use std::{
    cell::RefCell,
    fs::File,
    io::{self, BufRead, Read, Seek, Write},
    sync::atomic::{AtomicBool, Ordering},
};

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashSet;
use gix_pack::data::input as pack_input;

/// The client's stream, counted and bounded. Reads go through [`BufRead`], so nothing beyond
/// what the pack parser consumes is taken from the underlying reader.
pub(super) struct PackInput<'a> {
    pub(super) inner: &'a mut dyn BufRead,
    pub(super) consumed: u64,
    pub(super) limit: Option<u64>,
    pub(super) exceeded: bool,
    /// The underlying reader reported its end.
    pub(super) ended: bool,
}

impl BufRead for PackInput<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // One byte more than the limit may be consumed, so that exceeding it is noticed. The
        // answer only depends on `consumed`, so repeating the call before `consume()` (which
        // gitoxide does) gives the same answer.
        let allowance = match self.limit {
            Some(limit) => limit.saturating_add(1).saturating_sub(self.consumed),
            None => u64::MAX,
        };
        if allowance == 0 {
            self.exceeded = true;
            return Err(io::Error::other("pack exceeds maximum allowed size"));
        }
        let buffer = self.inner.fill_buf()?;
        if buffer.is_empty() {
            self.ended = true;
        }
        let available = usize::try_from(allowance).map_or(buffer.len(), |a| a.min(buffer.len()));
        Ok(&buffer[..available])
    }

    fn consume(&mut self, amount: usize) {
        self.consumed += amount as u64;
        if self.limit.is_some_and(|limit| self.consumed > limit) {
            self.exceeded = true;
        }
        self.inner.consume(amount);
    }
}

impl Read for PackInput<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let amount = available.len().min(out.len());
        out[..amount].copy_from_slice(&available[..amount]);
        self.consume(amount);
        Ok(amount)
    }
}

/// The written pack: gitoxide rewrites its header and hashes it, so it must be readable too.
pub(super) struct PackFile(pub(super) io::BufWriter<File>);

impl Write for PackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Seek for PackFile {
    fn seek(&mut self, position: io::SeekFrom) -> io::Result<u64> {
        self.0.seek(position)
    }
}

impl Read for PackFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.flush()?;
        self.0.get_mut().read(buf)
    }
}

/// Entries as received, refused when interrupted or when a header is not canonical (the pack is
/// rewritten with canonical headers, so offsets would no longer match). Also keeps the number
/// of entries reserved up front independent of what the client announced.
pub(super) struct CheckedEntries<'a, I> {
    pub(super) inner: I,
    pub(super) problem: &'a mut Option<IngestError>,
    pub(super) should_interrupt: &'a AtomicBool,
    /// [`IngestOptions::max_object_bytes`].
    pub(super) max_object_bytes: Option<u64>,
}

impl<I> CheckedEntries<'_, I> {
    pub(super) fn fail(
        &mut self,
        problem: IngestError,
    ) -> Option<gix_error::Result<pack_input::Entry>> {
        let message = gix_error::message!("{problem}");
        *self.problem = Some(problem);
        Some(Err(message.into()))
    }
}

impl<I> Iterator for CheckedEntries<'_, I>
where
    I: Iterator<Item = gix_error::Result<pack_input::Entry>>,
{
    type Item = gix_error::Result<pack_input::Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.problem.is_some() {
            return None;
        }
        if self.should_interrupt.load(Ordering::Relaxed) {
            return self.fail(IngestError::Interrupted);
        }
        let entry = match self.inner.next()? {
            Ok(entry) => entry,
            Err(err) => return Some(Err(err)),
        };
        if entry.header.size(entry.decompressed_size) != usize::from(entry.header_size) {
            return self.fail(IngestError::NonCanonicalEntry {
                offset: entry.pack_offset,
            });
        }
        if let Some(limit) = self.max_object_bytes {
            let offset = entry.pack_offset;
            if entry.header.is_delta() {
                // Its result is what would be allocated when the delta is applied.
                let claimed = entry.compressed.as_deref().and_then(delta_result_size);
                if let Some(size) = claimed.filter(|size| *size > limit) {
                    return self.fail(IngestError::DeltaTooLarge {
                        offset,
                        size,
                        limit,
                    });
                }
            } else if entry.decompressed_size > limit {
                return self.fail(IngestError::ObjectTooLarge {
                    offset,
                    size: entry.decompressed_size,
                    limit,
                });
            }
        }
        Some(Ok(entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.inner.size_hint().0.min(RESERVED_ENTRIES_LIMIT), None)
    }
}

/// The result size a delta declares (its second header varint, after the base size), read by
/// inflating only the start of the compressed delta. `None` if the data is too broken to say:
/// resolving the delta fails on it later.
pub(super) fn delta_result_size(compressed: &[u8]) -> Option<u64> {
    // Two varints of at most 10 bytes each.
    let mut header = [0u8; 20];
    let mut inflate = flate2::Decompress::new(true);
    let mut produced = 0;
    for _ in 0..4 {
        let consumed = usize::try_from(inflate.total_in()).ok()?;
        let status = inflate
            .decompress(
                compressed.get(consumed..)?,
                &mut header[produced..],
                flate2::FlushDecompress::None,
            )
            .ok()?;
        produced = usize::try_from(inflate.total_out()).ok()?;
        if produced == header.len() || status == flate2::Status::StreamEnd {
            break;
        }
    }
    let header = &header[..produced];
    let (_base_size, rest) = decode_varint(header)?;
    decode_varint(rest).map(|(size, _)| size)
}

/// A delta header's size: 7 bits per byte, least significant first, high bit for "more".
pub(super) fn decode_varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u128;
    for (index, &byte) in data.iter().enumerate().take(10) {
        value |= u128::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((u64::try_from(value).unwrap_or(u64::MAX), &data[index + 1..]));
        }
    }
    None
}

/// The repository, as seen by thin-pack completion: remembers which bases it supplied, and
/// which it does not have (so an in-pack ref-delta base is looked up once).
pub(super) struct BaseLookup<'a> {
    pub(super) objects: &'a gix_odb::Handle,
    pub(super) found: RefCell<Vec<ObjectId>>,
    pub(super) missing: RefCell<HashSet<ObjectId>>,
}

impl gix_object::Find for BaseLookup<'_> {
    fn try_find<'a>(
        &self,
        id: &oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix_error::Result<Option<gix_object::Data<'a>>> {
        if self.missing.borrow().contains(id) {
            return Ok(None);
        }
        match self.objects.try_find(id, buffer)? {
            Some(data) => {
                self.found.borrow_mut().push(id.to_owned());
                Ok(Some(data))
            }
            None => {
                self.missing.borrow_mut().insert(id.to_owned());
                Ok(None)
            }
        }
    }
}
