//! Datagrams tracked by sequence number, without the socket: one state
//! machine for bench's datagram flows (both drivers) and for ping.
//!
//! Every datagram sent gets the next sequence number and a slot in a ring
//! indexed by it. Replies carry the number back, so each is classified as
//! ping(8) does:
//!
//! - valid: the first intact echo of a datagram we sent (`late` when it
//!   came after the datagram's timeout, `reordered` when a later one had
//!   been answered first);
//! - duplicate: an intact echo of a datagram already answered;
//! - corrupt: bytes that differ from what was sent;
//! - too old: its slot has since been reused: it cannot be checked;
//! - never sent: a sequence number beyond the last one sent.
//!
//! A datagram unanswered for the timeout expires: the caller counts it
//! lost (bench) or prints `Request timeout` (ping). Expiry walks the ring
//! from the oldest datagram in order, so a flow pays for its timeouts, not
//! for a scan of everything in flight.
//!
//! The ring grows (doubling, up to a maximum) rather than overwrite a
//! datagram still waiting for its echo, so a datagram is lost only by its
//! timeout; at the maximum, the oldest is expired early to make room. While
//! it has room the ring also remembers answered datagrams, so a duplicate
//! arriving up to a ring's length later is still told from a late reply.

use std::time::{Duration, Instant};

/// Where a datagram stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// The slot holds nothing yet.
    #[default]
    Free,
    /// Sent, no reply yet, timeout not reached.
    Pending,
    /// Its timeout passed without a reply (or it could not be sent).
    TimedOut,
    /// A valid echo came.
    Answered,
    /// Only a corrupt echo came so far.
    Corrupted,
}

/// One tracked datagram.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Which datagram the slot holds: the ring reuses slots, so a reply's
    /// sequence number must match this one to be tied to it.
    seq: u64,
    /// When it was sent (or due), nanoseconds after the flow's epoch.
    sent_ns: u64,
    /// When it was actually written, nanoseconds after the epoch: the
    /// same as `sent_ns` but in an open loop, where a datagram can go out
    /// after it was due (the raw latency is timed from here).
    wrote_ns: u64,
    state: State,
}

/// A datagram whose timeout passed without an echo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Its sequence number.
    pub seq: u64,
    /// When it was sent (or due).
    pub sent_at: Instant,
}

/// What an arriving reply means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An intact echo of a datagram not answered before.
    Valid {
        /// Its sequence number.
        seq: u64,
        /// When it was sent (or due): the round trip is from here.
        sent_at: Instant,
        /// Its timeout had passed: the caller already counted it lost
        /// (bench) or reported it (ping).
        late: bool,
        /// A later datagram was answered first.
        reordered: bool,
        /// `false` when a corrupt echo of it came first (it was answered,
        /// if wrongly, already).
        first: bool,
    },
    /// An intact echo of a datagram already answered.
    Duplicate {
        /// Its sequence number.
        seq: u64,
        /// When it was sent (or due).
        sent_at: Instant,
    },
    /// An echo whose bytes differ from what was sent.
    Corrupt {
        /// The sequence number it carries.
        seq: u64,
        /// The first reply tied to that datagram: it is answered (not
        /// lost), wrongly.
        first: bool,
    },
    /// An echo of a datagram too old to be tracked any more.
    TooOld {
        /// The sequence number it carries.
        seq: u64,
    },
    /// A sequence number never sent: not an echo of ours.
    NeverSent {
        /// The sequence number it carries.
        seq: u64,
    },
}

/// The datagrams of one flow: sent, pending, answered, expired.
#[derive(Debug, Clone)]
pub struct DatagramFlow {
    /// Datagram `seq` lives at `seq & (slots.len() - 1)`; the length is a
    /// power of two.
    slots: Vec<Slot>,
    /// The most slots the ring grows to.
    max_slots: usize,
    /// Send times are kept as nanoseconds after this: the first send's
    /// time (sends come in time order; an earlier one would read as this).
    epoch: Option<Instant>,
    /// How long a datagram waits for its echo before it expires.
    timeout: Duration,
    /// Datagrams sent so far; the next sequence number.
    next_seq: u64,
    /// Every datagram older than this is settled (not pending).
    oldest: u64,
    /// Datagrams pending.
    in_flight: usize,
    /// The highest sequence number validly answered, to spot reordering.
    highest_valid: Option<u64>,
}

impl DatagramFlow {
    /// A flow tracking `slots` datagrams at first, growing to at most
    /// `max_slots` (both rounded up to a power of two), whose datagrams
    /// expire after `timeout`.
    pub fn new(slots: usize, max_slots: usize, timeout: Duration) -> DatagramFlow {
        let slots = slots.max(1).next_power_of_two();
        DatagramFlow {
            slots: vec![Slot::default(); slots],
            max_slots: max_slots.max(slots).next_power_of_two(),
            epoch: None,
            timeout,
            next_seq: 0,
            oldest: 0,
            in_flight: 0,
            highest_valid: None,
        }
    }

    /// Datagrams sent and neither answered nor expired.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The sequence number the next [`send`](DatagramFlow::send) takes.
    #[inline]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Datagrams the ring tracks now.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.slots.len() as u64 - 1
    }

    #[inline]
    fn slot(&mut self, seq: u64) -> &mut Slot {
        let i = (seq & self.mask()) as usize;
        &mut self.slots[i]
    }

    #[inline]
    fn ns(&mut self, at: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(at);
        u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The time `ns` after the epoch; only asked of slots that were sent,
    /// so the epoch is set.
    #[inline]
    fn at(&self, ns: u64) -> Instant {
        self.epoch
            .map_or_else(Instant::now, |epoch| epoch + Duration::from_nanos(ns))
    }

    /// Takes the next sequence number for a datagram sent (or due) at
    /// `at`. Its slot must be free of a pending datagram: the ring grows to
    /// make room, and at its maximum the datagram in the way expires early
    /// (returned, for the caller to count as it counts any expiry).
    #[inline]
    pub fn send(&mut self, at: Instant) -> (u64, Option<Expired>) {
        self.send_at(at, at)
    }

    /// [`send`](DatagramFlow::send) of a datagram due at `due` and written
    /// at `wrote` (open loop: it may go out late); its round trip is timed
    /// from `due`, its raw one ([`wrote_at`](DatagramFlow::wrote_at)) from
    /// `wrote`.
    #[inline]
    pub fn send_at(&mut self, due: Instant, wrote: Instant) -> (u64, Option<Expired>) {
        let at = due;
        let seq = self.next_seq;
        while self.slot(seq).state == State::Pending && self.slots.len() < self.max_slots {
            self.grow();
        }
        let mut expired = None;
        let old = *self.slot(seq);
        if old.state == State::Pending {
            self.in_flight -= 1;
            expired = Some(Expired {
                seq: old.seq,
                sent_at: self.at(old.sent_ns),
            });
        }
        let ns = self.ns(at);
        let wrote_ns = self.ns(wrote);
        *self.slot(seq) = Slot {
            seq,
            sent_ns: ns,
            wrote_ns,
            state: State::Pending,
        };
        self.in_flight += 1;
        self.next_seq += 1;
        (seq, expired)
    }

    /// Datagram `seq` could not be sent after all: it will never be
    /// answered. It stops counting as in flight, without expiring.
    pub fn unsent(&mut self, seq: u64) {
        let slot = self.slot(seq);
        if slot.seq == seq && slot.state == State::Pending {
            slot.state = State::TimedOut;
            self.in_flight -= 1;
        }
    }

    /// Stops waiting for the oldest datagram still pending among those
    /// numbered below `before`, and returns its number: for an error
    /// report that answers a datagram without saying which (ICMP port
    /// unreachable on a connected socket). Such reports come back in the
    /// order the datagrams went out, so the oldest one waiting is the one
    /// answered. It is settled at once, as if its timeout had passed (an
    /// echo of it that still comes is late), so nobody waits out a
    /// timeout for a datagram already known to be lost.
    pub fn give_up_oldest(&mut self, before: u64) -> Option<u64> {
        self.settle();
        let seq = self.oldest;
        if seq >= self.next_seq.min(before) {
            return None;
        }
        // `settle` stopped at a pending datagram.
        self.slot(seq).state = State::TimedOut;
        self.in_flight -= 1;
        Some(seq)
    }

    /// Classifies a reply carrying sequence number `seq`. `verify` gets
    /// the datagram's send time (ping's probes carry it) and says whether
    /// the reply's bytes are exactly what was sent.
    #[inline]
    pub fn reply(&mut self, seq: u64, verify: impl FnOnce(Instant) -> bool) -> Reply {
        if seq >= self.next_seq {
            return Reply::NeverSent { seq };
        }
        let slot = *self.slot(seq);
        if slot.state == State::Free || slot.seq != seq {
            return Reply::TooOld { seq };
        }
        let sent_at = self.at(slot.sent_ns);
        let intact = verify(sent_at);
        if slot.state == State::Pending {
            self.in_flight -= 1;
        }
        let first = matches!(slot.state, State::Pending | State::TimedOut);
        if !intact {
            if first {
                self.slot(seq).state = State::Corrupted;
            }
            return Reply::Corrupt { seq, first };
        }
        if slot.state == State::Answered {
            return Reply::Duplicate { seq, sent_at };
        }
        let reordered = self.highest_valid.is_some_and(|h| seq < h);
        self.highest_valid = Some(self.highest_valid.map_or(seq, |h| h.max(seq)));
        self.slot(seq).state = State::Answered;
        Reply::Valid {
            seq,
            sent_at,
            late: slot.state == State::TimedOut,
            reordered,
            first,
        }
    }

    /// When datagram `seq` was actually written, while the ring still
    /// holds it (as it does right after its reply was classified).
    #[inline]
    pub fn wrote_at(&self, seq: u64) -> Option<Instant> {
        let slot = self.slots[(seq & self.mask()) as usize];
        (slot.seq == seq && slot.state != State::Free).then(|| self.at(slot.wrote_ns))
    }

    /// Skips past datagrams no longer pending.
    #[inline]
    fn settle(&mut self) {
        while self.oldest < self.next_seq {
            let oldest = self.oldest;
            let slot = *self.slot(oldest);
            if slot.seq == oldest && slot.state == State::Pending {
                break;
            }
            self.oldest += 1;
        }
    }

    /// When the oldest pending datagram expires, if one is pending.
    #[inline]
    pub fn next_expiry(&mut self) -> Option<Instant> {
        self.settle();
        if self.oldest == self.next_seq {
            return None;
        }
        let oldest = self.oldest;
        let sent_ns = self.slot(oldest).sent_ns;
        Some(self.at(sent_ns) + self.timeout)
    }

    /// Expires, oldest first, every datagram whose timeout has passed at
    /// `now`, handing each to `expired`.
    pub fn expire(&mut self, now: Instant, mut expired: impl FnMut(Expired)) {
        while let Some(due) = self.next_expiry() {
            if due > now {
                return;
            }
            let seq = self.oldest;
            let slot = self.slot(seq);
            slot.state = State::TimedOut;
            let sent_ns = slot.sent_ns;
            self.in_flight -= 1;
            expired(Expired {
                seq,
                sent_at: self.at(sent_ns),
            });
        }
    }

    /// Doubles the ring, keeping every slot it tracks.
    fn grow(&mut self) {
        let len = self.slots.len() * 2;
        let mut slots = vec![Slot::default(); len];
        for slot in self.slots.iter().filter(|s| s.state != State::Free) {
            slots[(slot.seq & (len as u64 - 1)) as usize] = *slot;
        }
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn valid_duplicate_late_reordered_and_never_sent() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(8, 8, ms(100));
        for i in 0..3 {
            assert_eq!(flow.send(t0 + ms(i)), (i, None));
        }
        assert_eq!(flow.in_flight(), 3);
        assert!(matches!(
            flow.reply(1, |_| true),
            Reply::Valid {
                seq: 1,
                late: false,
                reordered: false,
                first: true,
                ..
            }
        ));
        assert!(matches!(
            flow.reply(1, |_| true),
            Reply::Duplicate { seq: 1, .. }
        ));
        assert!(matches!(
            flow.reply(0, |_| true),
            Reply::Valid {
                seq: 0,
                reordered: true,
                ..
            }
        ));
        assert_eq!(flow.reply(9, |_| true), Reply::NeverSent { seq: 9 });
        // Datagram 2 expires at 102 ms, then comes back late.
        let mut lost = Vec::new();
        flow.expire(t0 + ms(101), |e| lost.push(e.seq));
        assert!(lost.is_empty());
        flow.expire(t0 + ms(102), |e| lost.push(e.seq));
        assert_eq!(lost, vec![2]);
        assert_eq!(flow.in_flight(), 0);
        assert!(matches!(
            flow.reply(2, |_| true),
            Reply::Valid {
                seq: 2,
                late: true,
                first: true,
                ..
            }
        ));
        assert_eq!(flow.next_expiry(), None);
    }

    #[test]
    fn an_open_loop_datagram_keeps_when_it_was_written() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(8, 8, ms(100));
        let (seq, _) = flow.send_at(t0, t0 + ms(7));
        let (other, _) = flow.send(t0 + ms(8));
        assert!(matches!(
            flow.reply(seq, |_| true),
            Reply::Valid { sent_at, .. } if sent_at == t0
        ));
        assert_eq!(flow.wrote_at(seq), Some(t0 + ms(7)));
        assert_eq!(flow.wrote_at(other), Some(t0 + ms(8)));
        assert_eq!(flow.wrote_at(99), None);
    }

    #[test]
    fn an_unnamed_error_settles_the_oldest_pending_datagram() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(8, 8, ms(100));
        for i in 0..3 {
            flow.send(t0 + ms(i));
        }
        assert!(matches!(flow.reply(0, |_| true), Reply::Valid { .. }));
        // Datagram 0 is answered: the error is datagram 1's.
        assert_eq!(flow.give_up_oldest(flow.next_seq()), Some(1));
        assert_eq!(flow.in_flight(), 1);
        // Only datagrams numbered below `before` are candidates.
        assert_eq!(flow.give_up_oldest(2), None);
        assert_eq!(flow.next_expiry(), Some(t0 + ms(102)));
        assert_eq!(flow.give_up_oldest(3), Some(2));
        assert_eq!((flow.in_flight(), flow.next_expiry()), (0, None));
        assert_eq!(flow.give_up_oldest(3), None, "nothing left waiting");
        // An echo that still comes is late, not lost twice.
        assert!(matches!(
            flow.reply(1, |_| true),
            Reply::Valid { late: true, .. }
        ));
    }

    #[test]
    fn corrupt_first_then_valid_is_answered_once() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(4, 4, ms(100));
        flow.send(t0);
        assert_eq!(
            flow.reply(0, |_| false),
            Reply::Corrupt {
                seq: 0,
                first: true
            }
        );
        assert_eq!(flow.in_flight(), 0, "a corrupt echo answers it");
        assert!(matches!(
            flow.reply(0, |_| true),
            Reply::Valid { first: false, .. }
        ));
        assert_eq!(
            flow.reply(0, |_| false),
            Reply::Corrupt {
                seq: 0,
                first: false
            }
        );
    }

    #[test]
    fn verify_gets_the_send_time() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(4, 4, ms(100));
        flow.send(t0 + ms(7));
        let mut seen = None;
        flow.reply(0, |at| {
            seen = Some(at);
            true
        });
        assert_eq!(seen, Some(t0 + ms(7)));
    }

    #[test]
    fn the_ring_grows_rather_than_lose_a_pending_datagram() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(4, 16, ms(1000));
        flow.send(t0); // stays pending
        for i in 1..12 {
            let (seq, expired) = flow.send(t0 + ms(i));
            assert_eq!(expired, None);
            assert!(matches!(flow.reply(seq, |_| true), Reply::Valid { .. }));
        }
        assert_eq!(flow.capacity(), 16);
        assert!(matches!(
            flow.reply(0, |_| true),
            Reply::Valid {
                seq: 0,
                late: false,
                ..
            }
        ));
    }

    #[test]
    fn at_its_maximum_the_ring_expires_the_oldest_early() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(4, 4, ms(1000));
        for i in 0..4 {
            flow.send(t0 + ms(i));
        }
        let (seq, expired) = flow.send(t0 + ms(4));
        assert_eq!(seq, 4);
        assert_eq!(
            expired,
            Some(Expired {
                seq: 0,
                sent_at: t0
            })
        );
        assert_eq!(flow.in_flight(), 4);
        assert_eq!(flow.reply(0, |_| true), Reply::TooOld { seq: 0 });
        assert_eq!(flow.next_expiry(), Some(t0 + ms(1) + ms(1000)));
    }

    #[test]
    fn unsent_datagrams_neither_wait_nor_expire() {
        let t0 = Instant::now();
        let mut flow = DatagramFlow::new(4, 4, ms(10));
        let (seq, _) = flow.send(t0);
        flow.unsent(seq);
        assert_eq!(flow.in_flight(), 0);
        let mut expired = 0;
        flow.expire(t0 + ms(100), |_| expired += 1);
        assert_eq!(expired, 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send,
        Reply(u64, bool),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Send),
            3 => (0u64..40, prop::bool::weighted(0.9)).prop_map(|(s, ok)| Op::Reply(s, ok)),
            1 => (0u64..30).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Against a model that remembers every datagram forever, every
        /// reply is classified the same (or, for a datagram no longer
        /// pending, may be forgotten: too old), no datagram is ever expired
        /// early (the ring grows from 2 slots instead), every datagram
        /// expires exactly once at its timeout unless answered first, and
        /// `in_flight` is exact.
        #[test]
        fn matches_a_model_with_perfect_memory(ops in proptest::collection::vec(op(), 1..300)) {
            let t0 = Instant::now();
            let timeout = ms(20);
            let mut flow = DatagramFlow::new(2, 1 << 12, timeout);
            // seq -> (sent at ms, state)
            let mut model: HashMap<u64, (u64, State)> = HashMap::new();
            let mut now = 0u64;
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Send => {
                        let (seq, expired) = flow.send(t0 + ms(now));
                        prop_assert_eq!(seq, next);
                        prop_assert_eq!(expired, None);
                        model.insert(seq, (now, State::Pending));
                        next += 1;
                    }
                    Op::Reply(seq, intact) => {
                        let got = flow.reply(seq, |_| intact);
                        if got == (Reply::TooOld { seq }) {
                            let state = model.get(&seq).map(|(_, state)| *state);
                            prop_assert!(state.is_some_and(|s| s != State::Pending), "{seq}: {state:?}");
                            continue;
                        }
                        let want = match model.get_mut(&seq) {
                            None => Reply::NeverSent { seq },
                            Some((sent, state)) => {
                                let sent_at = t0 + ms(*sent);
                                let first = matches!(state, State::Pending | State::TimedOut);
                                if !intact {
                                    if first { *state = State::Corrupted; }
                                    Reply::Corrupt { seq, first }
                                } else if *state == State::Answered {
                                    Reply::Duplicate { seq, sent_at }
                                } else {
                                    let late = *state == State::TimedOut;
                                    *state = State::Answered;
                                    // Reordering is checked separately.
                                    match got {
                                        Reply::Valid { reordered, .. } => Reply::Valid { seq, sent_at, late, reordered, first },
                                        other => other,
                                    }
                                }
                            }
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::Advance(by) => {
                        now += by;
                        let mut expired = Vec::new();
                        flow.expire(t0 + ms(now), |e| expired.push(e.seq));
                        let mut want: Vec<u64> = model
                            .iter_mut()
                            .filter(|(_, (sent, state))| *state == State::Pending && sent + 20 <= now)
                            .map(|(seq, (_, state))| { *state = State::TimedOut; *seq })
                            .collect();
                        want.sort_unstable();
                        prop_assert_eq!(expired, want);
                    }
                }
                let pending = model.values().filter(|(_, s)| *s == State::Pending).count();
                prop_assert_eq!(flow.in_flight(), pending);
            }
        }
    }
}
