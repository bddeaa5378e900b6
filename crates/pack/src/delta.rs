//! Computing deltas in git's pack format.
//!
//! A delta turns a *base* object into a *target* object. It starts with two sizes, the base's
//! and the target's, each a little-endian varint of 7 bits per byte; then come instructions:
//!
//! * **copy** (high bit set): bits 0–3 say which of four offset bytes follow, bits 4–6 which
//!   of three size bytes follow, least significant first; the bytes at that offset of the base
//!   are appended to the result. A size of zero means 0x10000.
//! * **insert** (high bit clear, 1–127): that many literal bytes follow and are appended.
//!
//! [`DeltaIndex`] indexes a base once — a hash of every aligned 16-byte block — so that several
//! targets can be tried against it; [`DeltaIndex::delta()`] scans a target with a rolling hash
//! of the same width, extends every candidate match as far as it goes (forwards, and backwards
//! into bytes not yet emitted) and takes the longest, in the spirit of git's `diff-delta.c`.
//! It gives up as soon as the delta would be larger than the caller's limit.
//!
//! This module does no I/O and knows nothing about packs; which base to try for which object is
//! [`generate`](crate::generate)'s business.
//!
//! # Example
//!
//! ```
//! use packgate_pack::delta::DeltaIndex;
//!
//! let base = b"the quick brown fox jumps over the lazy dog, again and again and again".repeat(4);
//! let mut target = base.clone();
//! target.extend_from_slice(b" and then it slept");
//! let index = DeltaIndex::new(&base);
//! let delta = index.delta(&target, target.len() / 2).expect("mostly copies");
//! assert!(delta.len() < 40);
//! ```

/// The width of the blocks the base is indexed by, and of the target's rolling hash.
const BLOCK: usize = 16;
/// The most literal bytes one insert instruction carries.
const MAX_INSERT: usize = 0x7f;
/// The most bytes one copy instruction copies (git's encoder never writes more either).
const MAX_COPY: usize = 0x10000;
/// How many base positions with the same hash are compared at most, like git's `HASH_LIMIT`.
const MAX_CANDIDATES: usize = 64;
/// Multiplier of the polynomial rolling hash.
const HASH_MULTIPLIER: u32 = 0x0100_0193;

/// Bases larger than this are not indexed: copy offsets have four bytes, and searching such
/// objects costs more than it saves (git's `pack.bigFileThreshold` is 512 MiB, but its delta
/// search window rarely keeps such objects either).
pub const MAX_BASE_SIZE: usize = 1 << 31;

/// An index of a base object's 16-byte blocks, to compute deltas against it.
pub struct DeltaIndex<'a> {
    base: &'a [u8],
    /// `log2` of the number of buckets.
    bits: u32,
    /// Per bucket, the most recently added position plus one (0: empty).
    heads: Vec<u32>,
    /// Per block, the previous position in the same bucket plus one (0: none).
    next: Vec<u32>,
}

impl<'a> DeltaIndex<'a> {
    /// Index `base`. Bases larger than [`MAX_BASE_SIZE`], or shorter than one block, get an
    /// empty index: every delta against them is all inserts, and [`delta()`](Self::delta) will
    /// usually give up.
    pub fn new(base: &'a [u8]) -> Self {
        let blocks = if base.len() > MAX_BASE_SIZE {
            0
        } else {
            base.len() / BLOCK
        };
        let bits = (blocks.max(1).next_power_of_two().trailing_zeros()).max(4);
        let mut heads = vec![0u32; 1 << bits];
        let mut next = vec![0u32; blocks];
        // Later blocks are added first, so that each chain lists earlier positions first and
        // among equally long matches the lowest offset wins.
        for block in (0..blocks).rev() {
            let position = block * BLOCK;
            let bucket = bucket_of(hash_block(&base[position..position + BLOCK]), bits);
            next[block] = heads[bucket];
            heads[bucket] = block as u32 + 1;
        }
        DeltaIndex {
            base,
            bits,
            heads,
            next,
        }
    }

    /// The base this index was made from.
    pub fn base(&self) -> &'a [u8] {
        self.base
    }

    /// A delta that turns the base into `target`, or `None` if it would be larger than
    /// `max_size` bytes.
    pub fn delta(&self, target: &[u8], max_size: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(max_size.min(target.len()) / 2 + 32);
        push_size(&mut out, self.base.len());
        push_size(&mut out, target.len());
        // Start of the literal bytes not emitted yet.
        let mut pending = 0;
        let mut position = 0;
        let mut hash = None;
        while position + BLOCK <= target.len() {
            let current = match hash {
                Some(hash) => hash,
                None => hash_block(&target[position..position + BLOCK]),
            };
            match self.longest_match(target, position, current) {
                Some((base_offset, length)) => {
                    // Take bytes before the match into it while they agree.
                    let mut start = position;
                    let mut base_start = base_offset;
                    while start > pending
                        && base_start > 0
                        && self.base[base_start - 1] == target[start - 1]
                    {
                        start -= 1;
                        base_start -= 1;
                    }
                    push_inserts(&mut out, &target[pending..start]);
                    push_copies(&mut out, base_start, position + length - start);
                    position += length;
                    pending = position;
                    hash = None;
                }
                None => {
                    if let Some(&incoming) = target.get(position + BLOCK) {
                        hash = Some(roll(current, target[position], incoming));
                    }
                    position += 1;
                }
            }
            if out.len() + (position - pending) > max_size {
                return None;
            }
        }
        push_inserts(&mut out, &target[pending..]);
        (out.len() <= max_size).then_some(out)
    }

    /// The longest match of `target[position..]` in the base among the blocks hashing like
    /// `hash`, as base offset and length (at least one block).
    fn longest_match(&self, target: &[u8], position: usize, hash: u32) -> Option<(usize, usize)> {
        let wanted = &target[position..];
        let mut best: Option<(usize, usize)> = None;
        let mut link = self.heads[bucket_of(hash, self.bits)];
        let mut compared = 0;
        while link != 0 && compared < MAX_CANDIDATES {
            let block = link as usize - 1;
            link = self.next[block];
            compared += 1;
            let offset = block * BLOCK;
            let length = common_prefix(&self.base[offset..], wanted);
            if length >= BLOCK && best.is_none_or(|(_, longest)| length > longest) {
                best = Some((offset, length));
                if offset + length == self.base.len() || length == wanted.len() {
                    break;
                }
            }
        }
        best
    }
}

/// A delta that turns `base` into `target`, or `None` if it would be larger than `max_size`.
pub fn delta(base: &[u8], target: &[u8], max_size: usize) -> Option<Vec<u8>> {
    DeltaIndex::new(base).delta(target, max_size)
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const CHUNK: usize = 16;
    let limit = a.len().min(b.len());
    let mut length = 0;
    while length + CHUNK <= limit && a[length..length + CHUNK] == b[length..length + CHUNK] {
        length += CHUNK;
    }
    while length < limit && a[length] == b[length] {
        length += 1;
    }
    length
}

fn hash_block(block: &[u8]) -> u32 {
    block.iter().fold(0u32, |hash, &byte| {
        hash.wrapping_mul(HASH_MULTIPLIER)
            .wrapping_add(u32::from(byte) + 1)
    })
}

/// `HASH_MULTIPLIER` to the power `BLOCK - 1`: the weight of a block's first byte.
const OUTGOING_WEIGHT: u32 = {
    let mut weight = 1u32;
    let mut step = 1;
    while step < BLOCK {
        weight = weight.wrapping_mul(HASH_MULTIPLIER);
        step += 1;
    }
    weight
};

/// The hash of the block one byte further: `outgoing` leaves, `incoming` enters.
fn roll(hash: u32, outgoing: u8, incoming: u8) -> u32 {
    hash.wrapping_sub((u32::from(outgoing) + 1).wrapping_mul(OUTGOING_WEIGHT))
        .wrapping_mul(HASH_MULTIPLIER)
        .wrapping_add(u32::from(incoming) + 1)
}

fn bucket_of(hash: u32, bits: u32) -> usize {
    // Fibonacci hashing spreads the polynomial hash's low-entropy bits over the table.
    (hash.wrapping_mul(0x9e37_79b9) >> (32 - bits)) as usize
}

fn push_size(out: &mut Vec<u8>, mut size: usize) {
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn push_inserts(out: &mut Vec<u8>, mut literal: &[u8]) {
    while !literal.is_empty() {
        let (chunk, rest) = literal.split_at(literal.len().min(MAX_INSERT));
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
        literal = rest;
    }
}

fn push_copies(out: &mut Vec<u8>, mut offset: usize, mut size: usize) {
    while size > 0 {
        let chunk = size.min(MAX_COPY);
        let command_at = out.len();
        let mut command = 0x80u8;
        for byte in 0..4 {
            let value = (offset >> (8 * byte)) as u8;
            if value != 0 {
                command |= 1 << byte;
                out.push(value);
            }
        }
        for byte in 0..3 {
            let value = (chunk >> (8 * byte)) as u8;
            if value != 0 {
                command |= 0x10 << byte;
                out.push(value);
            }
        }
        out.insert(command_at, command);
        offset += chunk;
        size -= chunk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Apply `delta` to `base` with gix-pack's decoder, by way of a one-entry pack whose
    /// ref-delta base resolves to `base`: an implementation independent of this module.
    pub(crate) fn apply_with_gix(base: &[u8], delta: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let base_id =
            gix_object::compute_hash(gix_hash::Kind::Sha1, gix_object::Kind::Blob, base).unwrap();
        let mut pack = gix_pack::data::header::encode(gix_pack::data::Version::V2, 1).to_vec();
        gix_pack::data::entry::Header::RefDelta { base_id }
            .write_to(delta.len() as u64, &mut pack)
            .unwrap();
        let mut deflate = flate2::write::ZlibEncoder::new(pack, flate2::Compression::fast());
        deflate.write_all(delta).unwrap();
        let mut pack = deflate.finish().unwrap();
        pack.extend_from_slice(&[0; 20]);
        let file = gix_pack::data::File::from_data(pack, "test.pack".into(), gix_hash::Kind::Sha1)
            .unwrap();
        let entry = file.entry(12).unwrap();
        let mut out = Vec::new();
        let resolve = |id: &gix_hash::oid, out: &mut Vec<u8>| {
            assert_eq!(id, base_id);
            out.clear();
            out.extend_from_slice(base);
            Ok(Some(
                gix_pack::data::decode::entry::ResolvedBase::OutOfPack {
                    kind: gix_object::Kind::Blob,
                    end: base.len(),
                },
            ))
        };
        file.decode_entry(
            entry,
            &mut out,
            &mut gix_zlib::Inflate::default(),
            &resolve,
            &mut gix_pack::cache::Never,
        )
        .unwrap();
        out
    }

    /// `target` from `base` must give a delta of at most `expected_max` bytes that gix-pack
    /// turns back into `target`; `None` means it must give up under `limit`.
    fn check(base: &[u8], target: &[u8], limit: usize, expected_max: Option<usize>) {
        let computed = delta(base, target, limit);
        match (computed, expected_max) {
            (Some(computed), Some(max)) => {
                assert!(computed.len() <= max, "{} > {max}", computed.len());
                assert_eq!(apply_with_gix(base, &computed), target);
            }
            (None, None) => {}
            (computed, expected) => panic!(
                "delta of {:?} bytes, expected at most {expected:?}",
                computed.map(|delta| delta.len())
            ),
        }
    }

    fn text(lines: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut state = seed;
        for line in 0..lines {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            out.extend_from_slice(format!("line {line}: value {}\n", state >> 40).as_bytes());
        }
        out
    }

    #[test]
    fn edits_cost_little() {
        let base = text(2000, 1);
        let mut target = base.clone();
        target.splice(1000..1000, b"an inserted line\n".iter().copied());
        target.drain(20_000..20_100);
        target.extend_from_slice(b"appended\n");
        check(&base, &target, target.len(), Some(80));
        // Identical: header and copies only; copies are cut at 64 KiB.
        check(&base, &base, base.len(), Some(20));
        // Empty objects on either side.
        check(b"", b"", 10, Some(2));
        check(&base, b"", 10, Some(4));
        check(b"", b"short", 10, Some(8));
    }

    #[test]
    fn unrelated_data_gives_up() {
        let base = text(500, 1);
        let target = text(500, 2);
        check(&base, &target, target.len() / 2, None);
    }

    #[test]
    fn large_offsets_and_sizes() {
        let base = text(60_000, 3);
        assert!(base.len() > 1 << 20);
        let mut target = base[base.len() - 300_000..].to_vec();
        target.extend_from_slice(b"tail");
        target.extend_from_slice(&base[..70_000]);
        check(&base, &target, 100, Some(80));
    }

    proptest! {
        #[test]
        fn applying_the_delta_gives_the_target(
            base in proptest::collection::vec(0u8..4, 0..3000),
            edits in proptest::collection::vec((0usize..3000, 0usize..40, proptest::collection::vec(any::<u8>(), 0..40)), 0..12),
        ) {
            let mut target = base.clone();
            for (at, remove, insert) in edits {
                let at = at.min(target.len());
                let end = (at + remove).min(target.len());
                target.splice(at..end, insert);
            }
            if let Some(computed) = delta(&base, &target, usize::MAX) {
                prop_assert_eq!(apply_with_gix(&base, &computed), target);
            } else {
                prop_assert!(false, "an unlimited delta always exists");
            }
        }

        #[test]
        fn arbitrary_bytes_round_trip(
            base in proptest::collection::vec(any::<u8>(), 0..600),
            target in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut joined = target.clone();
            joined.extend_from_slice(&base);
            for target in [&target, &joined] {
                let computed = delta(&base, target, usize::MAX);
                prop_assert!(computed.is_some());
                if let Some(computed) = computed {
                    prop_assert_eq!(&apply_with_gix(&base, &computed), target);
                }
            }
        }
    }
}
