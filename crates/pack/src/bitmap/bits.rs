//! Dense bitmaps and the EWAH encoding git stores them in.
//!
//! gix-bitmap decodes EWAH into its own compressed form, which can only be walked bit by bit.
//! Counting ORs a handful of bitmaps and subtracts one from another, over every object of a
//! pack, so here an EWAH bitmap is decoded straight into plain 64-bit words (a 500k-object
//! pack is 64 KiB per bitmap), where OR, AND-NOT and iteration are word-wise.

/// Why an EWAH bitmap could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EwahError {
    /// The data ends before the bitmap does.
    #[error("EWAH bitmap truncated")]
    Truncated,
    /// The bitmap has more bits than it may (more than the pack has objects).
    #[error("EWAH bitmap longer than the pack")]
    TooLong,
    /// Its runs and literal words do not add up to its stated size.
    #[error("EWAH bitmap malformed")]
    Malformed,
}

/// A plain bitmap: bit `n` of word `n / 64`, lowest bit first. It grows as bits are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
}

impl Bits {
    /// An empty bitmap with room for `bits` bits.
    pub fn with_capacity(bits: usize) -> Bits {
        Bits {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    /// Whether bit `n` is set.
    pub fn get(&self, n: usize) -> bool {
        self.words
            .get(n / 64)
            .is_some_and(|word| word & (1 << (n % 64)) != 0)
    }

    /// Set bit `n`.
    pub fn set(&mut self, n: usize) {
        let word = n / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (n % 64);
    }

    /// `self |= other`.
    pub fn or(&mut self, other: &Bits) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }

    /// `self ^= other`.
    pub fn xor(&mut self, other: &Bits) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine ^= theirs;
        }
    }

    /// `self &= !other`.
    pub fn and_not(&mut self, other: &Bits) {
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine &= !theirs;
        }
    }

    /// `self &= other`.
    pub fn and(&mut self, other: &Bits) {
        self.words.truncate(other.words.len());
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine &= theirs;
        }
    }

    /// How many bits are set.
    pub fn count(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    /// How many bits are set in both `self` and `other`.
    pub fn count_and(&self, other: &Bits) -> usize {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a & b).count_ones() as usize)
            .sum()
    }

    /// The set bits, lowest first.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(n, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(n * 64 + bit)
            })
        })
    }

    /// The words, lowest bits first; trailing zero words may or may not be there.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The words up to the last one with a bit set.
    pub fn trimmed_words(&self) -> &[u64] {
        let len = self
            .words
            .iter()
            .rposition(|&word| word != 0)
            .map_or(0, |last| last + 1);
        &self.words[..len]
    }

    /// Remove every bit, keeping the allocation.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|word| *word = 0);
    }

    /// `self = a ^ b`, reusing `self`'s allocation.
    pub fn set_xor_of(&mut self, a: &Bits, b: &Bits) {
        let len = a.words.len().max(b.words.len());
        self.words.clear();
        self.words.resize(len, 0);
        for (n, word) in self.words.iter_mut().enumerate() {
            *word = a.words.get(n).copied().unwrap_or(0) ^ b.words.get(n).copied().unwrap_or(0);
        }
    }

    /// Clear every bit at `bits` or above.
    fn truncate_bits(&mut self, bits: usize) {
        self.words.truncate(bits.div_ceil(64));
        if !bits.is_multiple_of(64) && self.words.len() == bits.div_ceil(64) {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << (bits % 64)) - 1;
            }
        }
    }
}

/// Decode the EWAH bitmap at the start of `data` (git's serialization, all big-endian: bit
/// count, word count, the words, the position of the last run-length word) into a bitmap of
/// at most `max_bits` bits: git rounds the bit count up to whole words, so up to 63 more
/// may be stated, but a bit set there is an error. Returns it and how many bytes it took.
pub fn decode_ewah(data: &[u8], max_bits: usize) -> Result<(Bits, usize), EwahError> {
    let u32_at = |at: usize| -> Result<usize, EwahError> {
        let bytes = data.get(at..at + 4).ok_or(EwahError::Truncated)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    };
    let bits = u32_at(0)?;
    let count = u32_at(4)?;
    if bits > max_bits.div_ceil(64) * 64 {
        return Err(EwahError::TooLong);
    }
    let words_end = count
        .checked_mul(8)
        .and_then(|len| len.checked_add(8))
        .ok_or(EwahError::Truncated)?;
    let stored = data.get(8..words_end).ok_or(EwahError::Truncated)?;
    let last_rlw = u32_at(words_end)?;
    if count > 0 && last_rlw >= count {
        return Err(EwahError::Malformed);
    }
    let capacity = bits.div_ceil(64);
    let mut out: Vec<u64> = Vec::with_capacity(capacity);
    let mut words = stored
        .chunks_exact(8)
        .map(|w| u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
    while let Some(rlw) = words.next() {
        let run = ((rlw >> 1) & 0xffff_ffff) as usize;
        let literals = (rlw >> 33) as usize;
        if out.len() + run + literals > capacity {
            return Err(EwahError::Malformed);
        }
        let fill = if rlw & 1 == 1 { u64::MAX } else { 0 };
        out.resize(out.len() + run, fill);
        for _ in 0..literals {
            out.push(words.next().ok_or(EwahError::Malformed)?);
        }
    }
    let mut decoded = Bits { words: out };
    decoded.truncate_bits(bits);
    let all = decoded.count();
    decoded.truncate_bits(max_bits);
    if decoded.count() != all {
        return Err(EwahError::TooLong);
    }
    Ok((decoded, words_end + 4))
}

/// The longest run of clean words one EWAH marker word can state.
const EWAH_MAX_RUN: u64 = (1 << 32) - 1;
/// The most literal words one EWAH marker word can announce.
const EWAH_MAX_LITERALS: u64 = (1 << 31) - 1;

/// Encode `words` (lowest bits first) as git's EWAH (the JavaEWAH layout): each marker word
/// holds a run of all-zero or all-one words (bit 0 the value, 32 bits the length) and the
/// count of literal words that follow it (31 bits). Clean words become runs, others
/// literals, as git's `ewah_add()` appends them word by word. Appends the serialization to
/// `out`: the stated size in bits (`bit_size`, at least every word given except trailing
/// zero words), the number of words, the words, and the position of the last marker word,
/// all big-endian.
pub fn encode_ewah(words: &[u64], bit_size: u32, out: &mut Vec<u8>) {
    let mut buffer: Vec<u64> = vec![0];
    let mut marker = 0usize;
    let run_of = |rlw: u64| (rlw >> 1) & EWAH_MAX_RUN;
    let literals_of = |rlw: u64| rlw >> 33;
    for &word in words {
        if word == 0 || word == u64::MAX {
            let bit = u64::from(word != 0);
            let rlw = buffer[marker];
            let (run, literals) = (run_of(rlw), literals_of(rlw));
            if literals == 0 && (run == 0 || rlw & 1 == bit) && run < EWAH_MAX_RUN {
                buffer[marker] = (rlw & !(EWAH_MAX_RUN << 1) & !1) | ((run + 1) << 1) | bit;
            } else {
                marker = buffer.len();
                buffer.push((1 << 1) | bit);
            }
        } else {
            let literals = literals_of(buffer[marker]);
            if literals < EWAH_MAX_LITERALS {
                buffer[marker] = (buffer[marker] & ((1 << 33) - 1)) | ((literals + 1) << 33);
            } else {
                marker = buffer.len();
                buffer.push(1 << 33);
            }
            buffer.push(word);
        }
    }
    out.reserve(12 + 8 * buffer.len());
    out.extend_from_slice(&bit_size.to_be_bytes());
    out.extend_from_slice(&(buffer.len() as u32).to_be_bytes());
    for word in &buffer {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(&(marker as u32).to_be_bytes());
}

/// How many bytes [`encode_ewah`] would write for `words`, without writing them.
pub(crate) fn ewah_len(words: &[u64]) -> usize {
    let mut count = 1usize;
    let mut run = 0u64;
    let mut run_bit = 0u64;
    let mut literals = 0u64;
    for &word in words {
        if word == 0 || word == u64::MAX {
            let bit = u64::from(word != 0);
            if literals == 0 && (run == 0 || run_bit == bit) && run < EWAH_MAX_RUN {
                run += 1;
                run_bit = bit;
            } else {
                count += 1;
                (run, run_bit, literals) = (1, bit, 0);
            }
        } else {
            if literals >= EWAH_MAX_LITERALS {
                count += 1;
                (run, literals) = (0, 0);
            }
            literals += 1;
            count += 1;
        }
    }
    12 + 8 * count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialize `words` as an EWAH bitmap of `bits` bits, each word a literal (valid EWAH).
    pub(crate) fn encode_literals(bits: u32, words: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&bits.to_be_bytes());
        out.extend_from_slice(&(words.len() as u32 + 1).to_be_bytes());
        out.extend_from_slice(&((words.len() as u64) << 33).to_be_bytes());
        for word in words {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&0u32.to_be_bytes());
        out
    }

    #[test]
    fn runs_and_literals() {
        // Two runs of ones, a literal, a run of zeros, a literal.
        let mut data = Vec::new();
        data.extend_from_slice(&(64u32 * 5 + 3).to_be_bytes());
        data.extend_from_slice(&4u32.to_be_bytes());
        data.extend_from_slice(&((1u64 << 33) | (2 << 1) | 1).to_be_bytes());
        data.extend_from_slice(&0b1010u64.to_be_bytes());
        data.extend_from_slice(&((1u64 << 33) | (1 << 1)).to_be_bytes());
        data.extend_from_slice(&u64::MAX.to_be_bytes());
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(b"rest");
        let (bits, used) = decode_ewah(&data, 1000).unwrap();
        assert_eq!(used, data.len() - 4);
        let ones: Vec<usize> = bits.ones().collect();
        let mut expected: Vec<usize> = (0..128).collect();
        expected.extend([129, 131]);
        expected.extend(256..256 + 64);
        assert_eq!(ones, expected);
        assert_eq!(bits.count(), expected.len());
    }

    #[test]
    fn bits_past_the_stated_size_are_dropped() {
        let data = encode_literals(3, &[u64::MAX]);
        let (bits, _) = decode_ewah(&data, 64).unwrap();
        assert_eq!(bits.ones().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = encode_literals(128, &[1, 2]);
        for len in 0..good.len() {
            assert!(decode_ewah(&good[..len], 1000).is_err(), "{len}");
        }
        assert_eq!(decode_ewah(&good, 64), Err(EwahError::TooLong));
        // Stated bits past the end are fine as long as none is set.
        let rounded = encode_literals(128, &[1, 0]);
        assert_eq!(decode_ewah(&rounded, 65).unwrap().0.count(), 1);
        assert_eq!(decode_ewah(&good, 65), Err(EwahError::TooLong));
        // More literal words than stored.
        let mut lying = good.clone();
        lying[8..16].copy_from_slice(&(5u64 << 33).to_be_bytes());
        assert_eq!(decode_ewah(&lying, 1000), Err(EwahError::Malformed));
        // A run longer than the bitmap.
        let mut long = good.clone();
        long[8..16].copy_from_slice(&((2u64 << 33) | (7 << 1)).to_be_bytes());
        assert_eq!(decode_ewah(&long, 1000), Err(EwahError::Malformed));
        // A word count that overflows.
        let mut huge = good;
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_ewah(&huge, 1000).is_err());
    }

    #[test]
    fn word_wise_operations() {
        let mut a = Bits::default();
        let mut b = Bits::with_capacity(10);
        for n in [1, 5, 64, 200] {
            a.set(n);
        }
        for n in [5, 7, 200, 300] {
            b.set(n);
        }
        let mut or = a.clone();
        or.or(&b);
        assert_eq!(or.ones().collect::<Vec<_>>(), [1, 5, 7, 64, 200, 300]);
        let mut and_not = a.clone();
        and_not.and_not(&b);
        assert_eq!(and_not.ones().collect::<Vec<_>>(), [1, 64]);
        let mut and = a.clone();
        and.and(&b);
        assert_eq!(and.ones().collect::<Vec<_>>(), [5, 200]);
        assert_eq!(a.count_and(&b), 2);
        let mut xor = a.clone();
        xor.xor(&b);
        assert_eq!(xor.ones().collect::<Vec<_>>(), [1, 7, 64, 300]);
        assert!(a.get(64) && !a.get(65) && !a.get(100_000));
    }

    /// Encoding then decoding gives the bits back, runs are runs, and the size estimate
    /// is the size.
    #[test]
    fn encode_round_trips() {
        let cases: Vec<Vec<u64>> = vec![
            vec![],
            vec![0],
            vec![1],
            vec![u64::MAX, u64::MAX, 5, 0, 0, 0, u64::MAX, 7, 0, 1 << 63],
            vec![0, 0, 0, 9, 9, 9, 0, u64::MAX],
            (0..300).map(|n| if n % 3 == 0 { n } else { 0 }).collect(),
        ];
        for words in cases {
            let bits = words.len() as u32 * 64;
            let mut out = Vec::new();
            encode_ewah(&words, bits, &mut out);
            assert_eq!(out.len(), ewah_len(&words), "{words:?}");
            let (decoded, used) = decode_ewah(&out, words.len() * 64).unwrap();
            assert_eq!(used, out.len());
            let mut expected = Bits {
                words: words.clone(),
            };
            expected.truncate_bits(words.len() * 64);
            assert_eq!(
                decoded.trimmed_words(),
                expected.trimmed_words(),
                "{words:?}"
            );
        }
        // Runs compress: a million zero words then one bit are three words.
        let mut words = vec![0u64; 1_000_000];
        words.push(1);
        let mut out = Vec::new();
        encode_ewah(&words, words.len() as u32 * 64, &mut out);
        assert_eq!(out.len(), 12 + 8 * 2);
        // git's serialization of an empty bitmap: one empty marker word.
        let mut out = Vec::new();
        encode_ewah(&[], 0, &mut out);
        assert_eq!(
            out,
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    proptest::proptest! {
        #[test]
        fn encode_decode(words in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(0u64),
                proptest::strategy::Just(u64::MAX),
                proptest::num::u64::ANY,
            ],
            0..200,
        )) {
            let mut out = Vec::new();
            encode_ewah(&words, words.len() as u32 * 64, &mut out);
            proptest::prop_assert_eq!(out.len(), ewah_len(&words));
            let (decoded, _) = decode_ewah(&out, words.len() * 64).unwrap();
            let expected = Bits { words: words.clone() };
            proptest::prop_assert_eq!(decoded.trimmed_words(), expected.trimmed_words());
        }
    }
}
