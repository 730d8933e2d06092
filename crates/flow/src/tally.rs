//! What one bench flow counted, and bench's datagram format: the part of
//! bench's accounting both of its drivers (tokio and io_uring) share.

use std::time::Instant;

use crate::Behind;
use crate::datagram::{DatagramFlow, Expired, Reply};
use crate::pattern::{Difference, Pattern};

/// Bytes of each bench datagram that carry its sequence number
/// (little-endian), before the pattern.
pub const HEADER: usize = 8;

/// Where bench datagram `seq` of a flow based at `base` starts in the
/// pattern: far from its neighbours', so a reply to another datagram never
/// passes for this one.
fn datagram_base(base: u64, seq: u64) -> u64 {
    base.wrapping_add(seq.wrapping_mul(31))
}

/// Writes bench datagram `seq` of the flow based at `base` into `out`
/// (its whole length: at least [`HEADER`] bytes).
///
/// The body is written a pattern period at a time: [`Pattern::at`] gives
/// at most one period (65,521 bytes), and a Unix datagram can be larger.
/// [`Pattern::check`] reads it back the same way.
#[inline]
pub fn fill_datagram(pattern: &Pattern, base: u64, seq: u64, out: &mut [u8]) {
    out[..HEADER].copy_from_slice(&seq.to_le_bytes());
    let mut pos = datagram_base(base, seq);
    let mut body = &mut out[HEADER..];
    while !body.is_empty() {
        let piece = pattern.at(pos, body.len());
        let (head, rest) = body.split_at_mut(piece.len());
        head.copy_from_slice(piece);
        body = rest;
        pos += piece.len() as u64;
    }
}

/// What one flow saw. Counts are this flow's; the run adds them up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// I/O errors (a refused datagram counts and the flow goes on; any
    /// other error ends a flow).
    pub errors: u64,
    /// Echoes whose bytes differed from what was sent.
    pub mismatches: u64,
    /// The first mismatch, in words.
    pub first_mismatch: Option<String>,
    /// Datagrams sent inside the measured window and never answered in
    /// time.
    pub lost: u64,
    /// Replies that came after their datagram was counted lost.
    pub stale: u64,
    /// Datagrams answered more than once.
    pub duplicates: u64,
    /// The first I/O error, in words.
    pub first_error: Option<String>,
    /// Open-loop messages dropped from the schedule because the server
    /// fell too far behind.
    pub overflowed: u64,
    /// Open loop: how far the client itself fell behind its schedule,
    /// over the messages due in the measured window.
    pub behind: Behind,
    /// Messages this flow completed inside the measured window, counted
    /// by the stream drivers: the run's share per backend
    /// (`--greeting-line`).
    pub messages: u64,
}

impl Tally {
    /// An echo of connection `id` differed: `what` says of which kind
    /// (`stream`, `datagram`, `unsolicited`).
    pub fn mismatch(&mut self, id: usize, diff: Difference, what: &str) {
        self.mismatches += 1;
        self.first_mismatch.get_or_insert_with(|| {
            format!(
                "connection {id}, {what} byte offset {}: sent 0x{:02x}, got 0x{:02x}",
                diff.offset, diff.expected, diff.got
            )
        });
    }

    /// Connection `id` got something that is not an echo of ours at all:
    /// `what` says what, `len` how long it was.
    pub fn malformed(&mut self, id: usize, len: usize, what: &str) {
        self.mismatches += 1;
        self.first_mismatch
            .get_or_insert_with(|| format!("connection {id}: {what} ({len} bytes)"));
    }

    /// Connection `id` had an I/O error, `reason` in words.
    pub fn error(&mut self, id: usize, reason: &str) {
        self.errors += 1;
        self.first_error
            .get_or_insert_with(|| format!("connection {id}: {reason}"));
    }

    /// A datagram of the flow expired: lost, if it was sent inside the
    /// measured part of the run (from `measure_start`).
    pub fn expired(&mut self, expired: Expired, measure_start: Instant) {
        if expired.sent_at >= measure_start {
            self.lost += 1;
        }
    }

    /// A bench datagram came back to flow `id` (based at `base`, sending
    /// `size`-byte datagrams): `got` holds its bytes (cut to the receive
    /// buffer), `len` its real length. Checks it, counts what it means,
    /// and returns the send time of the datagram it completes, if it
    /// completes one: when it was due, and when it was written
    /// ([`DatagramFlow::send_at`]).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn datagram_reply(
        &mut self,
        flow: &mut DatagramFlow,
        pattern: &Pattern,
        id: usize,
        base: u64,
        size: usize,
        got: &[u8],
        len: usize,
    ) -> Option<(Instant, Instant)> {
        let Some(header) = got.first_chunk::<HEADER>() else {
            self.malformed(id, len, "a datagram shorter than its header");
            return None;
        };
        let seq = u64::from_le_bytes(*header);
        let mut wrong = None;
        let reply = flow.reply(seq, |_| {
            if len != size || got.len() != size {
                wrong = Some(Err(len));
            } else if let Err(diff) =
                pattern.check(datagram_base(base, seq), &got[HEADER..], HEADER as u64)
            {
                wrong = Some(Ok(diff));
            }
            wrong.is_none()
        });
        match reply {
            Reply::Valid {
                sent_at,
                late: false,
                first: true,
                seq,
                ..
            } => return Some((sent_at, flow.wrote_at(seq).unwrap_or(sent_at))),
            // Answered after its loss timeout: already counted lost.
            Reply::Valid { late: true, .. } | Reply::TooOld { .. } => self.stale += 1,
            // A corrupt echo answered it first: this is its second answer.
            Reply::Valid { first: false, .. } | Reply::Duplicate { .. } => self.duplicates += 1,
            Reply::Corrupt { .. } => match wrong {
                Some(Ok(diff)) => self.mismatch(id, diff, "datagram"),
                _ => self.malformed(id, len, "a datagram of the wrong length"),
            },
            Reply::NeverSent { .. } => {
                self.malformed(id, len, "a datagram with a sequence number never sent");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn datagram(pattern: &Pattern, seq: u64, size: usize) -> Vec<u8> {
        let mut out = vec![0u8; size];
        fill_datagram(pattern, Pattern::base(0), seq, &mut out);
        out
    }

    #[test]
    fn datagrams_longer_than_the_pattern_period_fill_and_check() {
        // Unix datagrams reach 200 KiB; the pattern's period is 65,521.
        let pattern = Pattern::new();
        let base = Pattern::base(3);
        let t0 = Instant::now();
        for size in [HEADER, 65_529, 65_530, 3 * crate::pattern::PERIOD + 100] {
            let mut out = vec![0u8; size];
            fill_datagram(&pattern, base, 0, &mut out);
            let mut flow = DatagramFlow::new(4, 4, Duration::from_secs(1));
            flow.send(t0);
            let mut tally = Tally::default();
            let got = tally.datagram_reply(&mut flow, &pattern, 3, base, size, &out, size);
            assert_eq!(got, Some((t0, t0)), "{size}: {tally:?}");
        }
    }

    #[test]
    fn bench_datagrams_are_counted_as_before() {
        let pattern = Pattern::new();
        let base = Pattern::base(0);
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(1024, 1024, Duration::from_millis(50));
        let mut tally = Tally::default();
        for _ in 0..4 {
            flow.send(t0);
        }
        let reply = |tally: &mut Tally, flow: &mut DatagramFlow, bytes: &[u8]| {
            tally.datagram_reply(flow, &pattern, 0, base, 64, bytes, bytes.len())
        };
        assert_eq!(
            reply(&mut tally, &mut flow, &datagram(&pattern, 0, 64)),
            Some((t0, t0))
        );
        assert_eq!(
            reply(&mut tally, &mut flow, &datagram(&pattern, 0, 64)),
            None
        );
        assert_eq!(tally.duplicates, 1);
        let mut flipped = datagram(&pattern, 1, 64);
        flipped[20] ^= 1;
        assert_eq!(reply(&mut tally, &mut flow, &flipped), None);
        assert!(
            tally
                .first_mismatch
                .as_deref()
                .unwrap()
                .starts_with("connection 0, datagram byte offset 20: sent 0x"),
            "{tally:?}"
        );
        let mut longer = datagram(&pattern, 2, 64);
        longer.extend_from_slice(&[0; 100]);
        reply(&mut tally, &mut flow, &longer);
        let mut never = datagram(&pattern, 3, 64);
        never[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        reply(&mut tally, &mut flow, &never);
        reply(&mut tally, &mut flow, b"short");
        assert_eq!(tally.mismatches, 4);
        // Datagram 3 expires; its echo then comes back stale.
        flow.expire(t0 + Duration::from_millis(60), |e| tally.expired(e, t0));
        assert_eq!(tally.lost, 1);
        assert_eq!(
            reply(&mut tally, &mut flow, &datagram(&pattern, 3, 64)),
            None
        );
        assert_eq!(tally.stale, 1);
    }
}
