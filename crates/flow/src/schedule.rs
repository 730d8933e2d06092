//! When messages are due: bench's open-loop schedule and ping(8)'s grid.
//! Both only say when; the drivers sleep until then.

use std::time::{Duration, Instant};

/// A timer may fire up to this late (tokio's wheel has 1 ms slots); see
/// [`Pacer::due`].
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// One bench connection's open-loop schedule: a message every `interval`,
/// whatever the server does, so a stall shows in every message it delays
/// (no coordinated omission).
#[derive(Debug, Clone)]
pub struct Pacer {
    next: Instant,
    interval: Duration,
}

impl Pacer {
    /// The schedule of connection `id` of `connections`, each sending
    /// every `interval` from `start`, staggered so that the connections'
    /// sends interleave instead of bunching.
    pub fn new(start: Instant, interval: Duration, id: usize, connections: usize) -> Pacer {
        let offset = interval.mul_f64(id as f64 / connections.max(1) as f64);
        Pacer {
            next: start + offset,
            interval,
        }
    }

    /// When the next message is due: sleep until then.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// The next message that is due at `now`, with the time to measure its
    /// latency from; `None` while none is. A message late by no more than
    /// [`TIMER_SLACK`] is timed from `now`: that lateness is the client's
    /// timer, not the server's doing. Later than that, it is timed from
    /// when it was due, so a stall (of the server, or of the whole
    /// machine) shows in every message it delayed.
    pub fn due(&mut self, now: Instant) -> Option<Instant> {
        if now < self.next {
            return None;
        }
        let due = if now - self.next <= TIMER_SLACK {
            now
        } else {
            self.next
        };
        self.next += self.interval;
        Some(due)
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
}
