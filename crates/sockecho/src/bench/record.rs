//! What every driver (tokio or io_uring, stream or datagram) does with a
//! completion and an error: the latency into this thread's histograms when
//! it falls in the measured window (the corrected one, the raw one of an
//! open loop, the current interval's when intervals are recorded), and
//! the run's progress counters.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::time::Instant;

use sockecho_flow::Tally;
use sockecho_measure::histogram::LatencyHistogram;

use super::interval::ThreadInterval;
use super::{Ending, Shared};

/// Completions a thread counts locally before adding them to the shared
/// progress counter: the progress display needs no per-message atomic.
const PROGRESS_BATCH: u64 = 64;

thread_local! {
    /// The latencies measured on this bench thread, all its connections
    /// together. One histogram per thread, not per connection: a histogram
    /// spanning 1 us to an hour is a few hundred KiB, and thousands of
    /// them would cost gigabytes and a cache miss per record.
    static LATENCIES: RefCell<LatencyHistogram> = RefCell::new(LatencyHistogram::new());
    /// Open loop: the same echoes timed from their actual send.
    static RAW: RefCell<LatencyHistogram> = RefCell::new(LatencyHistogram::new());
    /// With intervals: this thread's part of the interval under way.
    static INTERVAL: RefCell<ThreadInterval> = RefCell::new(ThreadInterval::default());
    /// Completions not yet added to the progress counter.
    static UNREPORTED: Cell<u64> = const { Cell::new(0) };
}

/// What one thread measured, handed back at its end.
#[derive(Debug, Default)]
pub(super) struct Latencies {
    /// Timed from when each message was sent, or due (open loop).
    pub(super) corrected: LatencyHistogram,
    /// Open loop: timed from when each was actually written.
    pub(super) raw: LatencyHistogram,
}

/// This thread is bench thread `thread`: its intervals are handed over in
/// that thread's slot.
pub(super) fn begin(thread: usize) {
    INTERVAL.with_borrow_mut(|i| *i = ThreadInterval::new(thread));
}

/// A message sent (or due) at `sent` came back intact at `now`.
#[inline]
pub(super) fn complete(shared: &Shared, sent: Instant, now: Instant) {
    if shared.window.contains(now) {
        let latency = now.duration_since(sent);
        LATENCIES.with_borrow_mut(|h| h.record_duration(latency));
        if let Some(intervals) = &shared.intervals {
            INTERVAL.with_borrow_mut(|i| i.record(intervals, &shared.window, now, latency));
        }
    }
    count(shared);
}

/// A message due at `due` and written at `wrote` came back intact at
/// `now`: its corrected latency is from `due`, and in an open loop its
/// raw one from `wrote`.
#[inline]
pub(super) fn complete_timed(shared: &Shared, due: Instant, wrote: Instant, now: Instant) {
    if shared.interval.is_some() && shared.window.contains(now) {
        RAW.with_borrow_mut(|h| h.record_duration(now.saturating_duration_since(wrote)));
    }
    complete(shared, due, now);
}

/// Counts one completion for the progress display, in batches.
#[inline]
fn count(shared: &Shared) {
    UNREPORTED.with(|n| {
        let count = n.get() + 1;
        if count == PROGRESS_BATCH {
            shared
                .progress
                .0
                .messages
                .fetch_add(PROGRESS_BATCH, Ordering::Relaxed);
            n.set(0);
        } else {
            n.set(count);
        }
    });
}

/// The clock says `now`: with intervals, hands over the one under way if
/// it has ended, even when nothing completed since (an idle thread must
/// not hold an interval back). Cheap enough to call on every wake-up.
#[inline]
pub(super) fn tick(shared: &Shared, now: Instant) {
    if let Some(intervals) = &shared.intervals {
        INTERVAL.with_borrow_mut(|i| i.tick(intervals, &shared.window, now));
    }
}

/// This thread is done driving: hands over the interval under way, and
/// says that it has nothing more.
pub(super) fn finish(shared: &Shared) {
    if let Some(intervals) = &shared.intervals {
        INTERVAL.with_borrow_mut(|i| i.finish(intervals));
    }
}

/// Connection `id` had an I/O error: counted in its tally and, at once, in
/// the progress counters.
pub(super) fn error(shared: &Shared, tally: &mut Tally, id: usize, e: &std::io::Error) {
    tally.error(id, &crate::error::reason(e));
    shared.progress.0.errors.fetch_add(1, Ordering::Relaxed);
}

/// Connection `id` failed for a reason that is not an I/O error (its
/// driver died): counted like one.
pub(super) fn failed(shared: &Shared, tally: &mut Tally, id: usize, why: &str) {
    tally.error(id, why);
    shared.progress.0.errors.fetch_add(1, Ordering::Relaxed);
}

/// How connection `id`'s run ended, into its tally.
pub(super) fn end(
    shared: &Shared,
    tally: &mut Tally,
    id: usize,
    ending: Ending,
    unsolicited: bool,
) {
    match ending {
        Ending::Done => {}
        Ending::Io(e) => {
            tracing::debug!(connection = id, cause = %e, "connection failed");
            error(shared, tally, id, &e);
        }
        Ending::Mismatch(diff) => {
            let what = if unsolicited { "unsolicited" } else { "stream" };
            tally.mismatch(id, diff, what);
        }
    }
}

/// Takes this thread's latencies, leaving empty histograms.
pub(super) fn take_latencies() -> Latencies {
    Latencies {
        corrected: LATENCIES.with_borrow_mut(std::mem::take),
        raw: RAW.with_borrow_mut(std::mem::take),
    }
}
