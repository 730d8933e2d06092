//! Interval records (`--interval`, `--json-stream`): what the run did in
//! each slice of its measured window, as it goes.
//!
//! Per message nothing is shared: each bench thread records into an
//! interval histogram of its own (`ThreadInterval`, thread-local) beside
//! its run histogram, under the same condition, so the intervals add up to
//! the run exactly. When a thread sees the clock pass an interval's end (a
//! completion after it, or a tick: the tokio drivers' timer task, the
//! io_uring loop's wake-up), it hands the finished histogram over through
//! its own slot (a mutex taken once per interval) and says how far it has
//! handed over. The collector, on the caller's runtime, waits for every
//! thread to pass each boundary (bounded: a thread stalled past
//! [`STRAGGLER_WAIT`] has its part counted in a later interval, never
//! lost), merges their parts and reports the interval.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sockecho_flow::Window;
use sockecho_measure::histogram::LatencyHistogram;
use sockecho_measure::interval::IntervalReport;

/// How long the collector waits past a boundary for a thread to hand
/// over its part of the interval before reporting without it.
const STRAGGLER_WAIT: Duration = Duration::from_secs(1);

/// How often the collector looks while it waits.
const POLL: Duration = Duration::from_millis(5);

/// What the threads and the collector share.
pub(super) struct Intervals {
    /// The length of an interval.
    pub(super) every: Duration,
    /// One slot per bench thread.
    slots: Vec<Slot>,
}

/// One thread's hand-over.
#[derive(Default)]
struct Slot {
    /// Finished intervals (by number) and their latencies, not yet
    /// collected.
    outbox: Mutex<Vec<(u64, LatencyHistogram)>>,
    /// Every interval numbered below this has been handed over.
    through: AtomicU64,
    /// The thread has handed over everything it will.
    done: AtomicBool,
}

impl Intervals {
    /// Intervals of `every` for `threads` threads.
    pub(super) fn new(every: Duration, threads: usize) -> Intervals {
        Intervals {
            every: every.max(Duration::from_millis(1)),
            slots: (0..threads).map(|_| Slot::default()).collect(),
        }
    }

    /// Thread `thread` drives nothing (every connect it made failed): it
    /// will hand nothing over, and nobody waits for it.
    pub(super) fn idle(&self, thread: usize) {
        if let Some(slot) = self.slots.get(thread) {
            slot.done.store(true, Ordering::Release);
        }
    }

    /// The number of the interval `at` falls in (`at` in the window).
    fn index(&self, window: &Window, at: Instant) -> u64 {
        let into = at.saturating_duration_since(window.start).as_nanos();
        u64::try_from(into / self.every.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether every thread has handed over all intervals below `k`.
    fn passed(&self, k: u64) -> bool {
        self.slots
            .iter()
            .all(|s| s.done.load(Ordering::Acquire) || s.through.load(Ordering::Acquire) >= k)
    }

    /// Takes the latencies every thread handed over for intervals up to
    /// `k` (or all of them).
    fn take(&self, k: Option<u64>) -> LatencyHistogram {
        let mut all = LatencyHistogram::new();
        for slot in &self.slots {
            let mut outbox = slot.outbox.lock().unwrap_or_else(|e| e.into_inner());
            outbox.retain(|(index, h)| {
                let due = k.is_none_or(|k| *index <= k);
                if due {
                    all.add(h);
                }
                !due
            });
        }
        all
    }
}

/// One thread's part of the interval under way.
#[derive(Default)]
pub(super) struct ThreadInterval {
    /// Which slot is this thread's.
    thread: usize,
    /// The interval under way.
    index: u64,
    /// Its latencies so far.
    latencies: LatencyHistogram,
}

impl ThreadInterval {
    /// Bench thread `thread`'s, nothing recorded.
    pub(super) fn new(thread: usize) -> ThreadInterval {
        ThreadInterval {
            thread,
            ..ThreadInterval::default()
        }
    }

    /// An echo completed at `now` (in the window) after `latency`.
    #[inline]
    pub(super) fn record(
        &mut self,
        intervals: &Intervals,
        window: &Window,
        now: Instant,
        latency: Duration,
    ) {
        self.tick(intervals, window, now);
        self.latencies.record_duration(latency);
    }

    /// Hands the interval under way over once `now` is past its end.
    #[inline]
    pub(super) fn tick(&mut self, intervals: &Intervals, window: &Window, now: Instant) {
        if now < window.start {
            return;
        }
        let index = intervals.index(window, now);
        if index > self.index {
            self.hand_over(intervals, index);
        }
    }

    /// Hands over everything: the thread is done.
    pub(super) fn finish(&mut self, intervals: &Intervals) {
        self.hand_over(intervals, u64::MAX);
        if let Some(slot) = intervals.slots.get(self.thread) {
            slot.done.store(true, Ordering::Release);
        }
    }

    /// Hands the interval under way over, and moves on to `next`.
    fn hand_over(&mut self, intervals: &Intervals, next: u64) {
        let Some(slot) = intervals.slots.get(self.thread) else {
            return;
        };
        if !self.latencies.is_empty() {
            let done = std::mem::take(&mut self.latencies);
            let mut outbox = slot.outbox.lock().unwrap_or_else(|e| e.into_inner());
            outbox.push((self.index, done));
        }
        self.index = next;
        // After the push: whoever sees the new mark finds the histogram.
        slot.through.store(next, Ordering::Release);
    }
}

/// The collector: reports each whole interval of the window as every
/// thread passes its end, until the window ends or `halted` fires.
/// Returns how many it reported and the errors they counted; the last,
/// partial interval is [`last`]'s, once the threads are done.
pub(super) async fn collect(
    intervals: &Intervals,
    window: Window,
    errors: impl Fn() -> u64,
    halted: tokio_util::sync::CancellationToken,
    out: tokio::sync::mpsc::UnboundedSender<IntervalReport>,
) -> (u64, u64) {
    let every = intervals.every;
    let mut counted_errors = 0u64;
    let mut k = 0u64;
    while let Some(end) = window
        .start
        .checked_add(every.saturating_mul((k + 1) as u32))
    {
        if end >= window.end {
            break;
        }
        tokio::select! {
            // A boundary already past is reported, not lost to the stop.
            biased;
            () = tokio::time::sleep_until(end.into()) => {}
            () = halted.cancelled() => break,
        }
        let give_up = end + STRAGGLER_WAIT;
        while !intervals.passed(k + 1) && Instant::now() < give_up {
            tokio::time::sleep(POLL).await;
        }
        let latencies = intervals.take(Some(k));
        let errors_now = errors();
        let report = IntervalReport::new(
            every.saturating_mul(k as u32),
            every.saturating_mul((k + 1) as u32),
            &latencies,
            errors_now.saturating_sub(counted_errors),
        );
        counted_errors = errors_now.max(counted_errors);
        if out.send(report).is_err() {
            break;
        }
        k += 1;
    }
    (k, counted_errors)
}

/// The last interval: from the end of the `reported` ones to the end of
/// the `measured` time, with whatever the threads handed over since, and
/// the errors the whole run counted beyond the `counted` ones. `None` when
/// the reported intervals already reach the end with nothing left.
pub(super) fn last(
    intervals: &Intervals,
    reported: u64,
    measured: Duration,
    run_errors: u64,
    counted: u64,
) -> Option<IntervalReport> {
    let start = intervals.every.saturating_mul(reported as u32);
    let latencies = intervals.take(None);
    let errors = run_errors.saturating_sub(counted);
    if measured <= start && latencies.is_empty() && errors == 0 {
        return None;
    }
    Some(IntervalReport::new(
        start.min(measured),
        measured,
        &latencies,
        errors,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parts_are_handed_over_by_interval_and_add_up() {
        let t0 = Instant::now();
        let window = Window {
            start: t0,
            end: t0 + ms(350),
        };
        let intervals = Intervals::new(ms(100), 2);
        let mut a = ThreadInterval::new(0);
        let mut b = ThreadInterval::new(1);
        a.record(&intervals, &window, t0 + ms(10), ms(1));
        a.record(&intervals, &window, t0 + ms(20), ms(1));
        b.record(&intervals, &window, t0 + ms(30), ms(2));
        assert!(!intervals.passed(1));
        // Thread a completes in interval 1: interval 0 is handed over.
        a.record(&intervals, &window, t0 + ms(110), ms(3));
        assert!(!intervals.passed(1), "thread b still holds its part");
        // Thread b is idle; its tick hands its part over.
        b.tick(&intervals, &window, t0 + ms(101));
        assert!(intervals.passed(1));
        assert_eq!(intervals.take(Some(0)).len(), 3);
        // Thread b idle through interval 1 and 2, then done; a finishes.
        b.tick(&intervals, &window, t0 + ms(250));
        assert!(!intervals.passed(2));
        a.finish(&intervals);
        assert!(intervals.passed(2) && !intervals.passed(u64::MAX));
        assert_eq!(intervals.take(Some(1)).len(), 1);
        b.record(&intervals, &window, t0 + ms(300), ms(1));
        b.finish(&intervals);
        let rest = last(&intervals, 3, ms(350), 5, 2).expect("a last interval");
        assert_eq!((rest.start_s, rest.end_s), (0.3, 0.35));
        assert_eq!((rest.messages, rest.errors), (1, 3));
        assert!(last(&intervals, 4, ms(350), 5, 5).is_none());
    }
}
