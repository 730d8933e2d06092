//! Whether the UDP batch thread looks for the next datagram awhile before
//! it sleeps in the kernel, and for how long.
//!
//! A thread that sleeps as soon as its socket is empty pays a wake-up (a
//! context switch; on a VM an inter-processor interrupt) per batch. When
//! one peer keeps a few datagrams in flight, batches are one to four
//! datagrams and the peer's next datagram always finds the thread asleep:
//! one flow went at half the plain `recvfrom`/`sendto` loop's rate, at
//! more CPU per datagram. Looking for up to [`MAX`] first (non-blocking
//! receives) catches such a peer awake. Looking costs CPU when nothing
//! comes soon, and with many flows whose datagrams arrive spread out it
//! costs more than the wake-ups it saves. So:
//!
//! - the thread looks only when the last gap between batches was short
//!   enough that looking would have caught it (a ping a second, or a
//!   server with nothing to do, never spins), and
//! - a [`Chooser`] measures the thread's own CPU time per datagram with
//!   looking on and with it off, epoch by epoch, keeps the cheaper, and
//!   now and then tries the other again, since traffic changes.

use std::time::Duration;

/// The longest look: above what a wake-up costs here, below the
/// turnaround of a peer with one datagram in flight over a network.
pub(super) const MAX: Duration = Duration::from_micros(50);

/// Datagrams per measured epoch.
const EPOCH: u64 = 2048;

/// Every this many epochs, one runs the mode not chosen, to measure it
/// again.
const EXPLORE_EVERY: u64 = 16;

/// The mode's cost is the mean of its epochs with this weight on the
/// newest.
const WEIGHT: f64 = 0.25;

/// Picks, epoch by epoch, whether to look, by the CPU time per datagram
/// each choice cost. Pure: the caller measures.
#[derive(Debug, Clone)]
pub(super) struct Chooser {
    /// Mean cost (CPU nanoseconds per datagram) of off (0) and on (1).
    cost: [Option<f64>; 2],
    /// Epochs ended.
    epochs: u64,
    /// Looking in the epoch under way.
    on: bool,
}

impl Chooser {
    pub(super) fn new() -> Chooser {
        // The first two epochs measure each mode once.
        Chooser {
            cost: [None, None],
            epochs: 0,
            on: true,
        }
    }

    /// Looking in the epoch under way.
    pub(super) fn on(&self) -> bool {
        self.on
    }

    /// The epoch under way cost `cost` per datagram; returns whether to
    /// look in the next.
    pub(super) fn epoch_ended(&mut self, cost: f64) -> bool {
        let slot = &mut self.cost[usize::from(self.on)];
        *slot = Some(match *slot {
            Some(mean) => mean + WEIGHT * (cost - mean),
            None => cost,
        });
        self.epochs += 1;
        let better = match self.cost {
            [Some(off), Some(on)] => on < off,
            [None, _] => false,
            [_, None] => true,
        };
        self.on = if self.epochs.is_multiple_of(EXPLORE_EVERY) {
            !better
        } else {
            better
        };
        self.on
    }
}

/// The batch thread's looking: the gap rule and the chooser, with the
/// thread's CPU clock.
#[derive(Debug)]
pub(super) struct Linger {
    max: Duration,
    /// The last gap was short enough to catch by looking.
    gap_short: bool,
    chooser: Chooser,
    /// Datagrams in the epoch under way, and the thread's CPU time at
    /// its start.
    datagrams: u64,
    cpu_at_start: Option<Duration>,
}

impl Linger {
    /// Looking at most [`MAX`] (`SOCKECHO_LINGER_US` sets another
    /// maximum for experiments; 0 never looks).
    pub(super) fn new() -> Linger {
        let max = std::env::var("SOCKECHO_LINGER_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(MAX, Duration::from_micros);
        Linger {
            max,
            gap_short: false,
            chooser: Chooser::new(),
            datagrams: 0,
            cpu_at_start: thread_cpu(),
        }
    }

    /// How long to look now, if at all.
    pub(super) fn look(&self) -> Option<Duration> {
        (self.gap_short && self.chooser.on() && !self.max.is_zero()).then_some(self.max)
    }

    /// `datagrams` came `gap` after the last batch ended (found by
    /// looking, or after a sleep).
    pub(super) fn came(&mut self, gap: Duration, datagrams: usize) {
        self.gap_short = gap <= self.max;
        self.datagrams += datagrams as u64;
        if self.datagrams < EPOCH {
            return;
        }
        let now = thread_cpu();
        if let (Some(start), Some(now)) = (self.cpu_at_start, now) {
            let cost = now.saturating_sub(start).as_nanos() as f64 / self.datagrams as f64;
            self.chooser.epoch_ended(cost);
        }
        self.cpu_at_start = now;
        self.datagrams = 0;
    }
}

/// The CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`, which
/// neither std nor socket2 reads).
#[allow(unsafe_code)]
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let done = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (done == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `epochs` epochs where off costs `off` and on costs `on`;
    /// returns the share of epochs run with looking on.
    fn share_on(chooser: &mut Chooser, epochs: u64, off: f64, on: f64) -> f64 {
        let mut looked = 0;
        for _ in 0..epochs {
            let cost = if chooser.on() { on } else { off };
            looked += u64::from(chooser.on());
            chooser.epoch_ended(cost);
        }
        looked as f64 / epochs as f64
    }

    #[test]
    fn the_cheaper_mode_wins_and_the_other_is_tried_now_and_then() {
        let mut chooser = Chooser::new();
        let on = share_on(&mut chooser, 160, 4000.0, 2500.0);
        assert!(on > 0.85 && on < 1.0, "{on}");
        let mut chooser = Chooser::new();
        let on = share_on(&mut chooser, 160, 2500.0, 4000.0);
        assert!(on > 0.0 && on < 0.15, "{on}");
    }

    #[test]
    fn a_change_in_traffic_changes_the_choice() {
        let mut chooser = Chooser::new();
        let on = share_on(&mut chooser, 64, 4000.0, 2500.0);
        assert!(on > 0.85, "{on}");
        // Looking became dear: within a few explorations it is dropped.
        let on = share_on(&mut chooser, 160, 2500.0, 6000.0);
        assert!(on < 0.2, "{on}");
    }

    #[test]
    fn a_long_gap_never_looks() {
        let mut linger = Linger::new();
        linger.came(Duration::from_micros(10), 1);
        assert_eq!(linger.look(), Some(MAX));
        linger.came(Duration::from_millis(1), 1);
        assert_eq!(linger.look(), None);
    }
}
