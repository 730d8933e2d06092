//! When messages are due: bench's open-loop schedule and ping(8)'s grid.
//! Both only say when; the drivers sleep until then.

use std::time::{Duration, Instant};

/// A timer may fire up to this late (tokio's wheel has 1 ms slots); see
/// [`Pacer::due`].
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// One bench connection's open-loop schedule: a message every `interval`,
/// whatever the server does, so a stall shows in every message it delays
/// (no coordinated omission).
///
/// Every step is O(1) and no arithmetic can overflow: a schedule whose
/// next time is past what an [`Instant`] can hold is simply never due
/// again, and one that fell far behind is moved ahead in one step
/// ([`Pacer::skip`]) rather than message by message, so a driver's work
/// per wake-up stays bounded whatever the rate and however late it is.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// When the next message is due; `None` once that is beyond what an
    /// `Instant` can represent (never, in practice).
    next: Option<Instant>,
    /// Between two messages; at least a nanosecond, so that the schedule
    /// always moves on.
    interval: Duration,
}

impl Pacer {
    /// The schedule of connection `id` of `connections`, each sending
    /// every `interval` from `start`, staggered so that the connections'
    /// sends interleave instead of bunching. An interval under a
    /// nanosecond counts as one.
    pub fn new(start: Instant, interval: Duration, id: usize, connections: usize) -> Pacer {
        let interval = interval.max(Duration::from_nanos(1));
        let offset = Duration::try_from_secs_f64(
            interval.as_secs_f64() * (id as f64 / connections.max(1) as f64),
        )
        .unwrap_or(Duration::MAX);
        Pacer {
            next: start.checked_add(offset),
            interval,
        }
    }

    /// When the next message is due: sleep until then. A schedule that is
    /// never due again answers with a time a year away (a timer can hold
    /// that; the run ends long before).
    pub fn next(&self) -> Instant {
        self.next.unwrap_or_else(|| {
            let now = Instant::now();
            now.checked_add(Duration::from_secs(365 * 86_400))
                .unwrap_or(now)
        })
    }

    /// Messages due at `now` and not yet taken: 0 when the next one is
    /// still ahead. O(1).
    pub fn behind(&self, now: Instant) -> u64 {
        match self.next {
            Some(next) if now >= next => {
                let late = (now - next).as_nanos() / self.interval.as_nanos();
                u64::try_from(late).unwrap_or(u64::MAX).saturating_add(1)
            }
            _ => 0,
        }
    }

    /// Drops from the schedule all but the `keep` most recent messages due
    /// at `now`, in one step; returns how many were dropped (the caller
    /// counts them as overflow).
    ///
    /// For a schedule far behind (the client stalled, or paced faster than
    /// it can send): taking the messages one at a time would cost a loop
    /// turn per message, and at a high rate the schedule moves on faster
    /// than the loop turns, so the driver would never catch up. The
    /// oldest are dropped: those kept are still timed from when they were
    /// due, so the lateness shows in their latency.
    pub fn skip(&mut self, now: Instant, keep: u64) -> u64 {
        let behind = self.behind(now);
        let Some(next) = self.next else { return 0 };
        if behind <= keep {
            return 0;
        }
        let dropped = behind - keep;
        let step = self.interval.as_nanos().saturating_mul(u128::from(dropped));
        self.next = u64::try_from(step)
            .ok()
            .and_then(|nanos| next.checked_add(Duration::from_nanos(nanos)));
        dropped
    }

    /// The next message that is due at `now`, with the time to measure its
    /// latency from; `None` while none is. A message late by no more than
    /// [`TIMER_SLACK`] is timed from `now`: that lateness is the client's
    /// timer, not the server's doing. Later than that, it is timed from
    /// when it was due, so a stall (of the server, or of the whole
    /// machine) shows in every message it delayed.
    pub fn due(&mut self, now: Instant) -> Option<Instant> {
        self.due_late(now).map(|(due, _)| due)
    }

    /// [`due`](Pacer::due), and how late the message is handed over: `now`
    /// less the time it was due. That lateness is the client's own (its
    /// timer fired late, or its thread was busy elsewhere), not the
    /// server's: the socket has not been asked for anything yet. See
    /// [`Behind`].
    pub fn due_late(&mut self, now: Instant) -> Option<(Instant, Duration)> {
        let next = self.next.filter(|next| now >= *next)?;
        let late = now - next;
        let due = if late <= TIMER_SLACK { now } else { next };
        self.next = next.checked_add(self.interval);
        Some((due, late))
    }
}

/// How far an open-loop client fell behind its own schedule: of the
/// messages due, how many it handed to the socket more than
/// [`TIMER_SLACK`] late, and the latest.
///
/// A slow client must never pass for a slow server. Latency timed from
/// the intended send time includes the client's own lateness too; this
/// says how much of it there was, so a report can say so out loud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Behind {
    /// Messages taken from the schedule.
    pub scheduled: u64,
    /// Of those, the ones taken more than [`TIMER_SLACK`] after they were
    /// due.
    pub late: u64,
    /// The latest any was taken.
    pub max_late: Duration,
}

impl Behind {
    /// One message was taken from the schedule, `late` after it was due.
    #[inline]
    pub fn note(&mut self, late: Duration) {
        self.scheduled += 1;
        if late > TIMER_SLACK {
            self.late += 1;
            self.max_late = self.max_late.max(late);
        }
    }

    /// Adds another flow's account to this one.
    pub fn add(&mut self, other: &Behind) {
        self.scheduled += other.scheduled;
        self.late += other.late;
        self.max_late = self.max_late.max(other.max_late);
    }
}

/// When each ping probe is due: the k-th at `start + k * interval`, so the
/// pace never drifts with the time spent waiting or printing.
///
/// A sender that falls behind (a stream reply slower than the interval)
/// sends at once and then rejoins the grid; it does not burst to make up
/// the missed slots.
#[derive(Debug, Clone)]
pub struct PingSchedule {
    /// Slot 0.
    start: Instant,
    /// Between slots; 0 means back to back.
    interval: Duration,
    /// The slot of the next probe.
    slot: u64,
}

impl PingSchedule {
    /// Probes every `interval` from `start`.
    pub fn new(start: Instant, interval: Duration) -> Self {
        PingSchedule {
            start,
            interval,
            slot: 0,
        }
    }

    /// When the next probe is due, given that it is `now`.
    pub fn due(&mut self, now: Instant) -> Instant {
        let step = self.interval.as_nanos();
        // With no interval (back to back) no slot is ever missed.
        if let Some(latest) = now
            .saturating_duration_since(self.start)
            .as_nanos()
            .checked_div(step)
        {
            self.slot = self.slot.max(u64::try_from(latest).unwrap_or(u64::MAX));
        }
        let offset = step.saturating_mul(u128::from(self.slot));
        self.start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// The due probe went out.
    pub fn advance(&mut self) {
        self.slot += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ping_keeps_the_grid_and_skips_missed_slots() {
        let start = Instant::now();
        let mut s = PingSchedule::new(start, ms(100));
        assert_eq!(s.due(start), start);
        s.advance();
        // On time: the next slot, whatever the time spent meanwhile.
        assert_eq!(s.due(start + ms(30)), start + ms(100));
        s.advance();
        // 350 ms in, slot 2 (200 ms) was missed: send now (slot 3 is due
        // at 300 ms, already past), then back on the grid at 400 ms.
        assert_eq!(s.due(start + ms(350)), start + ms(300));
        s.advance();
        assert_eq!(s.due(start + ms(351)), start + ms(400));
    }

    #[test]
    fn pacer_staggers_and_times_stalls_from_when_due() {
        let start = Instant::now();
        let a = Pacer::new(start, ms(10), 0, 2);
        let b = Pacer::new(start, ms(10), 1, 2);
        assert_eq!(b.next() - a.next(), ms(5));
        let mut p = a;
        assert_eq!(p.due(start - ms(1)), None);
        // On time (within the timer's slack): timed from now.
        assert_eq!(p.due(start + ms(1)), Some(start + ms(1)));
        // 30 ms late: the messages due at 10, 20 and 30 ms are each timed
        // from when they were due.
        let late = start + ms(40);
        assert_eq!(p.due(late), Some(start + ms(10)));
        assert_eq!(p.due(late), Some(start + ms(20)));
        assert_eq!(p.due(late), Some(start + ms(30)));
        assert_eq!(p.due(late), Some(late), "the one due now is on time");
        assert_eq!(p.due(late), None);
    }

    #[test]
    fn lateness_is_the_clients_own_and_counted_beyond_the_slack() {
        let start = Instant::now();
        let mut p = Pacer::new(start, ms(10), 0, 1);
        let mut behind = Behind::default();
        // On time, then within the slack: not late.
        let (_, late) = p.due_late(start).unwrap();
        behind.note(late);
        let (_, late) = p.due_late(start + ms(11)).unwrap();
        assert_eq!(late, ms(1));
        behind.note(late);
        assert_eq!((behind.scheduled, behind.late), (2, 0));
        // 25 ms late: counted, and the latest.
        let (due, late) = p.due_late(start + ms(45)).unwrap();
        assert_eq!((due, late), (start + ms(20), ms(25)));
        behind.note(late);
        let (_, late) = p.due_late(start + ms(45)).unwrap();
        behind.note(late);
        assert_eq!(behind.late, 2);
        assert_eq!(behind.max_late, ms(25));
        let mut total = Behind::default();
        total.add(&behind);
        total.add(&behind);
        assert_eq!(
            (total.scheduled, total.late, total.max_late),
            (8, 4, ms(25))
        );
    }

    #[test]
    fn a_schedule_far_behind_skips_ahead_in_one_step() {
        // A nanosecond apart, an hour behind: 3.6e12 messages due. Taken
        // one by one that is hours of work; skipped, it is one step.
        let start = Instant::now();
        let mut p = Pacer::new(start, Duration::from_nanos(1), 0, 1);
        let now = start + Duration::from_secs(3_600);
        assert_eq!(p.behind(now), 3_600_000_000_001);
        assert_eq!(p.skip(now, 1_000), 3_600_000_000_001 - 1_000);
        assert_eq!(p.behind(now), 1_000);
        // The ones kept are the most recent, each timed from when it was
        // due (the oldest of them 999 ns late: within the slack).
        assert_eq!(p.due(now), Some(now));
        assert_eq!(p.skip(now, 5_000), 0, "nothing to drop within keep");
        let mut taken = 1;
        while p.due(now).is_some() {
            taken += 1;
        }
        assert_eq!(taken, 1_000);
        // Within what may be kept, nothing is dropped.
        let mut q = Pacer::new(start, ms(10), 0, 1);
        assert_eq!(q.skip(start + ms(25), 3), 0);
        assert_eq!(q.skip(start + ms(25), 1), 2);
        assert_eq!(q.due(start + ms(25)), Some(start + ms(20)));
    }

    #[test]
    fn huge_and_tiny_intervals_never_overflow() {
        let start = Instant::now();
        // One message every 1e19 s: the first is due, the next never is.
        let mut p = Pacer::new(start, Duration::MAX, 0, 1);
        assert_eq!(p.due(start), Some(start));
        assert_eq!(p.due(start + Duration::from_secs(1_000_000)), None);
        assert_eq!(p.behind(start + Duration::from_secs(1_000_000)), 0);
        assert!(p.next() > start);
        // A staggered connection's first message is past the end of time.
        let p = Pacer::new(start, Duration::MAX, 1, 2);
        assert_eq!(p.behind(start + Duration::from_secs(1_000_000)), 0);
        // A zero interval still moves on.
        let mut p = Pacer::new(start, Duration::ZERO, 0, 1);
        assert_eq!(p.due(start), Some(start));
        assert_eq!(p.due(start), None);
    }
}
