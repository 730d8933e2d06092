//! The bytes bench sends, chosen so that every echoed byte can be checked
//! with one `memcmp` and no allocation.
//!
//! The byte at stream offset `o` of connection `c` is
//! `table[(base(c) + o) % PERIOD]`, where the table holds pseudo-random
//! bytes. The period is prime, so a chunk shifted, repeated or swapped with
//! another connection's (a proxy bug) never lines up with what was expected.
//! The table is stored twice over, so any span up to `PERIOD` bytes is one
//! contiguous slice.

/// Bytes before the pattern repeats: a prime just below 64 KiB.
pub const PERIOD: usize = 65_521;

/// The shared, read-only pattern.
#[derive(Debug)]
pub struct Pattern {
    /// `PERIOD` pseudo-random bytes, then the same bytes again.
    table: Box<[u8]>,
}

/// Where an echo first differed from what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difference {
    /// Offset of the first wrong byte in the stream (or datagram).
    pub offset: u64,
    /// The byte that was sent.
    pub expected: u8,
    /// The byte that came back.
    pub got: u8,
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern::new()
    }
}

impl Pattern {
    /// Builds the table from a fixed xorshift seed: runs are reproducible.
    pub fn new() -> Pattern {
        let mut table = vec![0u8; 2 * PERIOD];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in table.iter_mut().take(PERIOD) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        table.copy_within(0..PERIOD, PERIOD);
        Pattern {
            table: table.into_boxed_slice(),
        }
    }

    /// Where connection `id`'s stream starts in the pattern.
    pub fn base(id: usize) -> u64 {
        (id as u64).wrapping_mul(7_919) % PERIOD as u64
    }

    /// Up to `len` bytes (at most `PERIOD`) of the pattern starting at
    /// absolute position `pos`.
    #[inline]
    pub fn at(&self, pos: u64, len: usize) -> &[u8] {
        let start = (pos % PERIOD as u64) as usize;
        &self.table[start..start + len.min(PERIOD)]
    }

    /// Checks `got` against the pattern at `pos`; `offset` is `got[0]`'s
    /// offset as reported to the user.
    #[inline]
    pub fn check(&self, pos: u64, got: &[u8], offset: u64) -> Result<(), Difference> {
        let mut done = 0;
        while done < got.len() {
            let want = self.at(pos + done as u64, got.len() - done);
            let have = &got[done..done + want.len()];
            if want != have {
                let i = want.iter().zip(have).position(|(a, b)| a != b).unwrap_or(0);
                return Err(Difference {
                    offset: offset + (done + i) as u64,
                    expected: want[i],
                    got: have[i],
                });
            }
            done += want.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_contiguous_and_periodic() {
        let p = Pattern::new();
        assert_eq!(p.at(3, 10), p.at(3 + PERIOD as u64, 10));
        assert_eq!(p.at(PERIOD as u64 - 1, PERIOD).len(), PERIOD);
        assert_ne!(Pattern::base(0), Pattern::base(1));
    }

    #[test]
    fn check_finds_the_first_wrong_byte() {
        let p = Pattern::new();
        let mut data = p.at(100, 5000).to_vec();
        assert_eq!(p.check(100, &data, 0), Ok(()));
        data[4321] ^= 0x40;
        let diff = p.check(100, &data, 1000).unwrap_err();
        assert_eq!(diff.offset, 5321);
        assert_eq!(diff.got, diff.expected ^ 0x40);
        // Longer than one period: checked in pieces.
        let long: Vec<u8> = (0..3 * PERIOD as u64).map(|i| p.at(7 + i, 1)[0]).collect();
        assert_eq!(p.check(7, &long, 0), Ok(()));
        // Another connection's bytes never pass.
        let other = p.at(Pattern::base(1), 64).to_vec();
        assert!(p.check(Pattern::base(0), &other, 0).is_err());
    }
}
