//! The probe on the wire, and the check of its echo.
//!
//! ```text
//! offset  0        8              16             24          size
//!         | MAGIC  | seq (u64 BE) | sent (u64 BE) | fill ...   |
//! ```
//!
//! `sent` is nanoseconds since the run began on the sender's monotonic
//! clock: only we read it back, so it need not be wall-clock time. The
//! fill after the header is derived from the sequence number, so an echo
//! is checked byte for byte without keeping a copy of every probe, and the
//! body of one probe cannot pass for another's.

use std::fmt;

/// Bytes before the fill: magic, sequence number, send time. The smallest
/// probe `-s` accepts.
pub const HEADER_LEN: usize = 24;

/// Marks a probe of ours (and the format's version, in its last byte), so a
/// stray datagram or a greeting is told apart from a mangled probe.
pub const MAGIC: [u8; 8] = *b"sockpng1";

/// Odd 64-bit constant (2^64 / golden ratio): multiplying by it spreads
/// consecutive inputs over all bits, so the fill has no short period.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// One probe: what its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Sequence number, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the run began.
    pub sent_ns: u64,
}

/// Where an echo first differs from the probe it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The byte at `offset` differs.
    Byte {
        /// Offset from the start of the probe.
        offset: usize,
        /// What the probe held there.
        expected: u8,
        /// What came back.
        got: u8,
    },
    /// Every byte both have in common matches, but the echo is `got` bytes
    /// long instead of `expected`.
    Length {
        /// The probe's size.
        expected: usize,
        /// The echo's size.
        got: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Byte {
                offset,
                expected,
                got,
            } => write!(
                f,
                "corrupt at byte {offset} (sent 0x{expected:02x}, got 0x{got:02x})"
            ),
            Mismatch::Length { expected, got } => {
                write!(f, "corrupt: {got} bytes instead of {expected}")
            }
        }
    }
}

/// The fill byte at `offset` of probe `seq`.
fn fill_byte(seed: u64, offset: usize) -> u8 {
    (seed.wrapping_add((offset as u64).wrapping_mul(SPREAD)) >> 56) as u8
}

/// The per-probe seed of the fill.
fn seed(seq: u64) -> u64 {
    seq.wrapping_mul(SPREAD).rotate_left(29)
}

impl Probe {
    /// Writes the fill of probe `seq` after the header of `buf`. Separate
    /// from [`Probe::write_header`] so the send time can be taken after the
    /// (for large probes, slow) fill and just before the send.
    pub fn fill(seq: u64, buf: &mut [u8]) {
        let seed = seed(seq);
        for (offset, byte) in buf.iter_mut().enumerate().skip(HEADER_LEN) {
            *byte = fill_byte(seed, offset);
        }
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than the header; callers check `-s` first.
    pub fn write_header(&self, buf: &mut [u8]) {
        buf[..8].copy_from_slice(&MAGIC);
        buf[8..16].copy_from_slice(&self.seq.to_be_bytes());
        buf[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// The whole probe: header and fill.
    pub fn encode(&self, buf: &mut [u8]) {
        Probe::fill(self.seq, buf);
        self.write_header(buf);
    }

    /// Reads the header of an echo, to know which probe it claims to
    /// answer. Fails where the magic differs or the header is cut short.
    pub fn read_header(echo: &[u8]) -> Result<Probe, Mismatch> {
        for (offset, (&expected, &got)) in MAGIC.iter().zip(echo).enumerate() {
            if expected != got {
                return Err(Mismatch::Byte {
                    offset,
                    expected,
                    got,
                });
            }
        }
        if echo.len() < HEADER_LEN {
            return Err(Mismatch::Length {
                expected: HEADER_LEN,
                got: echo.len(),
            });
        }
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&echo[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        Ok(Probe {
            seq: word(8),
            sent_ns: word(16),
        })
    }

    /// Checks that `echo` is exactly this probe of `size` bytes, reporting
    /// the first difference. Computes the expected bytes as it goes: no copy
    /// of the probe is kept.
    pub fn verify(&self, echo: &[u8], size: usize) -> Result<(), Mismatch> {
        let mut header = [0u8; HEADER_LEN];
        self.write_header(&mut header);
        let seed = seed(self.seq);
        for (offset, &got) in echo.iter().take(size).enumerate() {
            let expected = match header.get(offset) {
                Some(&b) => b,
                None => fill_byte(seed, offset),
            };
            if expected != got {
                return Err(Mismatch::Byte {
                    offset,
                    expected,
                    got,
                });
            }
        }
        if echo.len() != size {
            return Err(Mismatch::Length {
                expected: size,
                got: echo.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(seq: u64, size: usize) -> (Probe, Vec<u8>) {
        let p = Probe {
            seq,
            sent_ns: 1_234_567_890 + seq,
        };
        let mut buf = vec![0u8; size];
        p.encode(&mut buf);
        (p, buf)
    }

    #[test]
    fn round_trip() {
        for size in [HEADER_LEN, 25, 64, 1500, 70_000] {
            let (p, buf) = probe(7, size);
            assert_eq!(Probe::read_header(&buf), Ok(p));
            assert_eq!(p.verify(&buf, size), Ok(()));
        }
    }

    #[test]
    fn every_flipped_byte_is_found_at_its_offset() {
        let (p, buf) = probe(3, 300);
        for offset in 0..buf.len() {
            let mut echo = buf.clone();
            echo[offset] ^= 0x10;
            assert_eq!(
                p.verify(&echo, 300),
                Err(Mismatch::Byte {
                    offset,
                    expected: buf[offset],
                    got: buf[offset] ^ 0x10
                })
            );
        }
    }

    #[test]
    fn short_and_long_echoes() {
        let (p, buf) = probe(1, 64);
        assert_eq!(
            p.verify(&buf[..40], 64),
            Err(Mismatch::Length {
                expected: 64,
                got: 40
            })
        );
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(
            p.verify(&long, 64),
            Err(Mismatch::Length {
                expected: 64,
                got: 65
            })
        );
        assert!(matches!(
            Probe::read_header(&buf[..10]),
            Err(Mismatch::Length { got: 10, .. })
        ));
    }

    #[test]
    fn another_probes_echo_does_not_pass() {
        let (p0, _) = probe(0, 200);
        let (_, other) = probe(1, 200);
        // The header differs at the sequence number...
        assert!(matches!(
            p0.verify(&other, 200),
            Err(Mismatch::Byte { offset: 8..=15, .. })
        ));
        // ...and so does the body.
        let (_, mine) = probe(0, 200);
        assert_ne!(mine[HEADER_LEN..], other[HEADER_LEN..]);
    }

    #[test]
    fn foreign_bytes_fail_the_magic() {
        let greeting = b"Connection success";
        assert!(matches!(
            Probe::read_header(greeting),
            Err(Mismatch::Byte { offset: 0, .. })
        ));
        assert_eq!(
            Mismatch::Byte {
                offset: 17,
                expected: 1,
                got: 0xff
            }
            .to_string(),
            "corrupt at byte 17 (sent 0x01, got 0xff)"
        );
    }

    #[test]
    fn fill_is_not_periodic_in_256() {
        let (_, buf) = probe(9, 1024);
        assert_ne!(
            buf[HEADER_LEN..HEADER_LEN + 256],
            buf[HEADER_LEN + 256..HEADER_LEN + 512]
        );
    }
}
