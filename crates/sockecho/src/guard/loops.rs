//! Echo loops between two servers (CVE-2024-2169, "Loop DoS"): one forged
//! datagram, claiming to come from server B's port, makes this server
//! answer B; if B echoes too, the two bounce one datagram between them
//! forever, whatever ports they use. An echo server cannot tell a loop
//! partner from a client by what it sends (a client that repeats itself
//! sends exactly what came back to it), but it can tell by *when*: a loop
//! partner only ever answers, so
//!
//! - a datagram that came back *after* our reply to that peer left, and
//!   carries exactly the bytes of that reply, may be our reply reflected (a
//!   datagram that reached the socket before the reply left cannot be, so a
//!   client bursting the same line is never suspected: the kernel's receive
//!   timestamp says which);
//! - a chain of such reflections (many at loop speed, or a few spread over
//!   more than [`SLOW_CHAIN`]) is taken for a loop: the peer gets no reply
//!   at all for a hold of a few of its round trips. Every datagram of the
//!   loop arrives during the hold, is not answered, and the loop ends. A
//!   client that repeats itself in lockstep (`yes hi | sockecho connect
//!   udp://...`) loses one reply per chain and sends again after the hold
//!   (`sockecho connect` resends a datagram whose reply is late).
//!
//! Nothing here trusts a peer for having behaved: trust would be won by a
//! forged datagram as easily as a loop is started by one.
//!
//! The state is a fixed table indexed by a hash of the peer: bounded
//! memory whatever sources datagrams claim, no allocation per datagram.

use std::net::SocketAddr;

/// Reflections in a row that make a loop at any speed: a loop on one host
/// takes a few hundred of them in a few milliseconds, and a client sending
/// the same datagram in lockstep with the replies loses one reply in this
/// many.
pub const FAST_CHAIN: u16 = 256;

/// A chain of reflections lasting this long makes a loop even if short
/// (two reflections at least): loops slower than [`FAST_CHAIN`] round trips
/// in this time are caught by it, so every loop ends within about a
/// second.
pub const SLOW_CHAIN: u64 = 300_000_000;

/// A datagram counts as a reflection of our reply only if it arrives this
/// soon after it (nanoseconds): longer than any round trip worth calling a
/// loop, short enough that a person repeating a line by hand is not one.
pub const REFLECTION_WINDOW: u64 = 1_000_000_000;

/// The shortest and longest hold, nanoseconds: a hold lasts four of the
/// loop's round trips, so every datagram circulating reaches us during it.
const MIN_HOLD: u64 = 1_000_000;
const MAX_HOLD: u64 = 1_000_000_000;

/// Peers tracked at once (a power of two). A slot is taken over by another
/// peer that hashes to it, which only restarts that peer's chain.
const SLOTS: usize = 4096;

/// What a datagram's bytes look like, cheaply: the length, the first 32
/// bytes (where protocols put sequence numbers and timestamps: ping's
/// header, bench's sequence number), the middle word and the last 16
/// bytes. Hashing every byte would cost more than the echo itself for
/// large datagrams; two replies that differ only elsewhere are taken for
/// the same bytes, which can only make a client look like a repeating one.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let word = |at: usize| -> u64 {
        let mut w = [0u8; 8];
        let end = (at + 8).min(len);
        if at < end {
            w[..end - at].copy_from_slice(&bytes[at..end]);
        }
        u64::from_le_bytes(w)
    };
    let mut h = (len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for at in [
        0,
        8,
        16,
        24,
        len / 2,
        len.saturating_sub(16),
        len.saturating_sub(8),
    ] {
        h = (h ^ word(at))
            .wrapping_mul(0xFF51_AFD7_ED55_8CCD)
            .rotate_left(29);
    }
    h | 1 // never 0: 0 means "no reply yet"
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Which peer the slot follows.
    peer: Option<SocketAddr>,
    /// The fingerprint of our last reply to it (0: none), when it left,
    /// how many replies of those bytes have not come back yet, and when
    /// the oldest of those left: each reflection must match a reply of its
    /// own that left before it arrived.
    reply: u64,
    replied_at: u64,
    outstanding: u32,
    unmatched_since: u64,
    /// Reflections in a row, when the chain began, and the longest delay
    /// between a reply and its reflection.
    chain: u16,
    chain_start: u64,
    period: u64,
    /// No reply to this peer until then (0: no hold).
    hold_until: u64,
}

/// Loop detection for one datagram socket.
pub struct LoopGuard {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for LoopGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopGuard").finish_non_exhaustive()
    }
}

/// What the guard says of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Answer,
    /// It completes a loop: no reply, and a hold begins (log this once).
    LoopFound {
        /// How long the peer gets no reply, nanoseconds.
        hold: u64,
    },
    /// The peer is held: no reply.
    Held,
}

impl Default for LoopGuard {
    fn default() -> LoopGuard {
        LoopGuard::new()
    }
}

impl LoopGuard {
    /// A guard following no peer yet.
    pub fn new() -> LoopGuard {
        LoopGuard {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
        }
    }

    fn slot(&mut self, peer: SocketAddr) -> &mut Slot {
        let key = match peer {
            SocketAddr::V4(a) => u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()),
            SocketAddr::V6(a) => {
                let bits = a.ip().to_bits();
                ((bits >> 64) as u64 ^ bits as u64).rotate_left(16) ^ u64::from(a.port())
            }
        };
        let index = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize & (SLOTS - 1);
        let slot = &mut self.slots[index];
        if slot.peer != Some(peer) {
            *slot = Slot {
                peer: Some(peer),
                ..Slot::default()
            };
        }
        slot
    }

    /// A datagram from `peer` whose bytes have fingerprint `bytes`, which
    /// reached the socket at `arrived` and is handled at `now` (both in
    /// nanoseconds on one clock): answer it or not.
    pub fn check(&mut self, peer: SocketAddr, bytes: u64, arrived: u64, now: u64) -> Verdict {
        let slot = self.slot(peer);
        if slot.hold_until != 0 {
            if now < slot.hold_until {
                return Verdict::Held;
            }
            slot.hold_until = 0;
        }
        let reflected = slot.reply != 0
            && bytes == slot.reply
            && slot.outstanding > 0
            && arrived > slot.unmatched_since
            && arrived - slot.unmatched_since <= REFLECTION_WINDOW;
        if !reflected {
            slot.chain = 0;
            return Verdict::Answer;
        }
        slot.outstanding -= 1;
        if slot.chain == 0 {
            slot.chain_start = arrived;
            slot.period = 0;
        }
        slot.chain = slot.chain.saturating_add(1);
        slot.period = slot.period.max(arrived - slot.unmatched_since);
        let lasted = arrived.saturating_sub(slot.chain_start);
        if slot.chain >= FAST_CHAIN || (slot.chain >= 2 && lasted >= SLOW_CHAIN) {
            let hold = slot.period.saturating_mul(4).clamp(MIN_HOLD, MAX_HOLD);
            slot.hold_until = now.saturating_add(hold);
            slot.chain = 0;
            slot.reply = 0;
            slot.outstanding = 0;
            return Verdict::LoopFound { hold };
        }
        Verdict::Answer
    }

    /// Our reply to `peer`, with fingerprint `bytes`, left at `at`.
    pub fn replied(&mut self, peer: SocketAddr, bytes: u64, at: u64) {
        let slot = self.slot(peer);
        if bytes != slot.reply {
            slot.reply = bytes;
            slot.outstanding = 0;
        }
        if slot.outstanding == 0 {
            slot.unmatched_since = at;
        }
        slot.outstanding = slot.outstanding.saturating_add(1);
        slot.replied_at = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 3], port))
    }

    /// Two servers bouncing one datagram every `period`: how many replies
    /// this one sends before the loop ends (it ends when a datagram goes
    /// unanswered: the partner then has nothing to echo).
    fn loop_replies(period: u64) -> (u64, u64) {
        let mut guard = LoopGuard::new();
        let b = peer(40_000);
        let fp = fingerprint(b"forged");
        let mut now = 0;
        let mut replies = 0;
        loop {
            match guard.check(b, fp, now, now) {
                Verdict::Answer => {
                    guard.replied(b, fp, now + US);
                    replies += 1;
                    now += period;
                }
                Verdict::LoopFound { .. } | Verdict::Held => return (replies, now),
            }
            assert!(replies < 1_000_000, "the loop never ended");
        }
    }

    #[test]
    fn fast_and_slow_loops_end_within_a_second() {
        for period in [30 * US, MS, 20 * MS, 100 * MS, 400 * MS] {
            let (replies, lasted) = loop_replies(period);
            assert!(lasted <= 1_000 * MS, "{period}: lasted {lasted} ns");
            assert!(replies >= 2, "{period}: {replies}");
        }
    }

    #[test]
    fn every_circulating_datagram_dies_in_the_hold() {
        // Five datagrams circulating at once, 100 us apart, period 1 ms.
        let mut guard = LoopGuard::new();
        let b = peer(40_001);
        let fp = fingerprint(b"x");
        let mut arrivals: Vec<u64> = (0..5).map(|i| i * 100 * US).collect();
        let mut answered = 0;
        for _ in 0..10_000 {
            let Some(at) = arrivals.first().copied() else {
                break;
            };
            arrivals.remove(0);
            if guard.check(b, fp, at, at) == Verdict::Answer {
                guard.replied(b, fp, at);
                answered += 1;
                arrivals.push(at + MS);
                arrivals.sort_unstable();
            }
        }
        assert!(arrivals.is_empty(), "loops still circulating: {arrivals:?}");
        assert!(answered <= u32::from(FAST_CHAIN) + 10, "{answered}");
    }

    #[test]
    fn a_burst_of_the_same_line_is_no_loop() {
        // `printf 'hi\n%.0s' {1..100} | nc -u`: every datagram reached the
        // socket before our first reply left.
        let mut guard = LoopGuard::new();
        let c = peer(50_000);
        let fp = fingerprint(b"hi\n");
        for i in 0..100 {
            let now = 10 * US + i * US;
            assert_eq!(guard.check(c, fp, i * 10, now), Verdict::Answer, "{i}");
            guard.replied(c, fp, now);
        }
    }

    #[test]
    fn a_client_sending_faster_than_the_replies_is_no_loop() {
        // 50 datagrams sent without reading, 3 us apart; the server
        // answers in batches of 10, each batch's replies leaving 20 us
        // after its last datagram arrived.
        let mut guard = LoopGuard::new();
        let c = peer(50_003);
        let fp = fingerprint(b"hi\n");
        let arrivals: Vec<u64> = (0..50u64).map(|i| i * 3 * US).collect();
        for batch in arrivals.chunks(10) {
            let handled = batch[batch.len() - 1] + 10 * US;
            for &at in batch {
                assert_eq!(guard.check(c, fp, at, handled), Verdict::Answer);
            }
            for _ in batch {
                guard.replied(c, fp, handled + 10 * US);
            }
        }
    }

    #[test]
    fn varying_datagrams_are_never_a_loop() {
        // ping and bench: every datagram differs (sequence numbers).
        let mut guard = LoopGuard::new();
        let c = peer(50_001);
        let mut now = 0;
        for seq in 0u64..10_000 {
            let mut probe = [0u8; 64];
            probe[8..16].copy_from_slice(&seq.to_be_bytes());
            let fp = fingerprint(&probe);
            assert_eq!(guard.check(c, fp, now, now), Verdict::Answer);
            guard.replied(c, fp, now + US);
            now += 30 * US;
        }
    }

    #[test]
    fn a_lockstep_repeater_is_answered_again_after_the_hold() {
        // `yes hi | sockecho connect udp://...`: one line per reply.
        let mut guard = LoopGuard::new();
        let c = peer(50_002);
        let fp = fingerprint(b"hi");
        let mut now = 0;
        let mut answered = 0;
        let mut held = 0;
        while answered < 1_000 {
            match guard.check(c, fp, now, now) {
                Verdict::Answer => {
                    guard.replied(c, fp, now + US);
                    answered += 1;
                    now += 50 * US;
                }
                // The client resends after its first retry interval.
                Verdict::LoopFound { hold } => {
                    assert!(hold <= 4 * MS, "{hold}");
                    held += 1;
                    now += 20 * MS;
                }
                Verdict::Held => panic!("resent after the hold, still held"),
            }
        }
        assert!(held <= 1_000 / u32::from(FAST_CHAIN) + 1, "{held}");
    }

    #[test]
    fn peers_are_followed_apart_in_bounded_memory() {
        let mut guard = LoopGuard::new();
        let fp = fingerprint(b"same");
        for port in 1..=60_000u16 {
            guard.replied(peer(port), fp, 0);
        }
        assert_eq!(guard.slots.len(), SLOTS);
        // Another peer's replies never make this one's datagrams a loop.
        let a = peer(1);
        for i in 1..100 {
            guard.replied(peer(2), fp, i * US);
            assert_eq!(guard.check(a, fp, i * US + 1, i * US + 1), Verdict::Answer);
        }
    }

    #[test]
    fn fingerprints_tell_lengths_and_edges_apart() {
        assert_ne!(fingerprint(b"hi"), fingerprint(b"hi\n"));
        assert_ne!(fingerprint(b""), fingerprint(b"\0"));
        let mut a = vec![7u8; 1400];
        let b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        a[0] ^= 1;
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(b"x"), 0);
    }
}
