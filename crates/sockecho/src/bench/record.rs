//! What every driver (tokio or io_uring, stream or datagram) does with a
//! completion and an error: the latency into this thread's histogram when
//! it falls in the measured window, and the run's progress counters.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::time::Instant;

use sockecho_flow::Tally;
use sockecho_measure::histogram::LatencyHistogram;

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
    /// Completions not yet added to the progress counter.
    static UNREPORTED: Cell<u64> = const { Cell::new(0) };
}

/// A message sent (or due) at `sent` came back intact at `now`.
pub(super) fn complete(shared: &Shared, sent: Instant, now: Instant) {
    if shared.window.contains(now) {
        LATENCIES.with_borrow_mut(|h| h.record_duration(now.duration_since(sent)));
    }
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

/// Takes this thread's latencies, leaving an empty histogram.
pub(super) fn take_latencies() -> LatencyHistogram {
    LATENCIES.with_borrow_mut(std::mem::take)
}
