//! Round-trip statistics and packet loss for `sockecho ping`.
//!
//! Pure arithmetic, no I/O: the ping loop feeds in round-trip times and
//! counters, and reads back the numbers ping(8) users expect (min, avg,
//! max, mdev, loss percent) plus the percentiles the contract adds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;

/// Accumulates round-trip times.
///
/// Min, max, mean and standard deviation are exact (kept as running
/// values over the samples as given, with sub-microsecond precision);
/// percentiles come from a [`LatencyHistogram`] (1 µs to 1 hour, 3
/// significant digits), so they are within 0.1 % and whole microseconds.
///
/// A histogram value is the top of its bucket of whole microseconds, so
/// read raw it can lie above the exact maximum (a 209.525 µs sample reads
/// as 210 µs) or below the exact minimum. Every percentile is therefore
/// clamped to the exact `[min, max]`: a reader can never see a p99 slower
/// than the slowest round trip. The clamp moves a percentile by less than
/// the histogram's own precision (one bucket), so it loses nothing.
#[derive(Clone, Debug, Default)]
pub struct RttStats {
    /// Number of samples recorded.
    count: u64,
    /// Smallest sample, µs; meaningless while `count` is 0.
    min: f64,
    /// Largest sample, µs; meaningless while `count` is 0.
    max: f64,
    /// Running mean, µs (Welford's method).
    mean: f64,
    /// Running sum of squared deviations from the mean, µs² (Welford's
    /// method). Dividing by `count` gives the population variance without
    /// the cancellation that `E[x²] - E[x]²` suffers when RTTs are large
    /// and close together.
    m2: f64,
    /// Every sample, for the percentiles.
    histogram: LatencyHistogram,
}

/// The `rtt_us` object of `ping --json`: round-trip times in microseconds.
///
/// All fields are 0 when no reply came; `received` in the same report
/// says whether that is the case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RttSummary {
    /// Fastest round trip.
    pub min: f64,
    /// Mean round trip (ping(8)'s `avg`).
    pub mean: f64,
    /// Slowest round trip.
    pub max: f64,
    /// Population standard deviation, `sqrt(E[x²] - E[x]²)`: ping(8)'s
    /// `mdev`.
    pub stddev: f64,
    /// Median round trip.
    pub p50: f64,
    /// 90th percentile round trip.
    pub p90: f64,
    /// 99th percentile round trip.
    pub p99: f64,
}

impl RttStats {
    /// An accumulator holding no sample.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one round-trip time.
    pub fn record(&mut self, rtt: Duration) {
        self.record_us(rtt.as_secs_f64() * 1e6);
    }

    /// Records one round-trip time given in microseconds.
    ///
    /// A negative value (a clock that stepped backwards) counts as 0 and a
    /// non-finite one is ignored, so one bad reading cannot turn every
    /// statistic into NaN.
    pub fn record_us(&mut self, us: f64) {
        if !us.is_finite() {
            return;
        }
        let us = us.max(0.0);
        if self.count == 0 {
            self.min = us;
            self.max = us;
        } else {
            self.min = self.min.min(us);
            self.max = self.max.max(us);
        }
        self.count += 1;
        // Welford's update: exact in exact arithmetic, stable in floats.
        let delta = us - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (us - self.mean);
        // `as` saturates; the histogram saturates again to its range.
        self.histogram.record(us.round() as u64);
    }

    /// Number of round trips recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no round trip was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Fastest round trip in µs; 0 when empty.
    pub fn min(&self) -> f64 {
        if self.is_empty() { 0.0 } else { self.min }
    }

    /// Slowest round trip in µs; 0 when empty.
    pub fn max(&self) -> f64 {
        if self.is_empty() { 0.0 } else { self.max }
    }

    /// Mean round trip in µs; 0 when empty.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Population standard deviation in µs (ping(8)'s mdev); 0 when empty.
    pub fn stddev(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0).sqrt()
        }
    }

    /// Round trip at percentile `p` (0 ..= 100) in µs; 0 when empty.
    /// Clamped to the exact `[min, max]` (see [`RttStats`]).
    pub fn percentile(&self, p: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        (self.histogram.percentile(p) as f64).clamp(self.min, self.max)
    }

    /// The histogram of every sample, for plots and merging.
    pub fn histogram(&self) -> &LatencyHistogram {
        &self.histogram
    }

    /// All statistics at once, in the shape of the contract's `rtt_us`:
    /// percentiles clamped to `[min, max]` (see [`RttStats`]), every value
    /// rounded to the nanosecond ([`round_us`]).
    pub fn summary(&self) -> RttSummary {
        // The mean of samples in [min, max] lies there too, but a float
        // sum may stray by an ulp; clamp it like the percentiles.
        let mean = if self.is_empty() {
            0.0
        } else {
            self.mean().clamp(self.min, self.max)
        };
        // Rounding is monotonic, so the rounded percentiles stay within
        // the rounded min and max.
        RttSummary {
            min: round_us(self.min()),
            mean: round_us(mean),
            max: round_us(self.max()),
            stddev: round_us(self.stddev()),
            p50: round_us(self.percentile(50.0)),
            p90: round_us(self.percentile(90.0)),
            p99: round_us(self.percentile(99.0)),
        }
    }
}

/// A time in microseconds rounded to three decimals (the nanosecond), as
/// reports print it: the clock measures no finer, and JSON readers get
/// `15.062` rather than the binary float's `15.062000000000001`.
pub fn round_us(us: f64) -> f64 {
    if us.is_finite() {
        (us * 1000.0).round() / 1000.0
    } else {
        us
    }
}

/// Probes sent against distinct replies received, as ping(8) counts them.
///
/// `received` counts each sequence number at most once: a duplicated reply
/// is reported separately and does not hide a lost one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// Probes sent.
    pub sent: u64,
    /// Distinct probes that came back intact (duplicates excluded).
    pub received: u64,
}

impl Loss {
    /// Loss over `sent` probes of which `received` distinct ones came back.
    pub fn new(sent: u64, received: u64) -> Self {
        Self { sent, received }
    }

    /// Probes that never came back. Never negative: should a caller count
    /// more replies than probes, nothing is lost.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// Percent of probes lost, 0.0 ..= 100.0; 0 when nothing was sent.
    pub fn percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost() as f64 * 100.0 / self.sent as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(samples: &[f64]) -> RttStats {
        let mut s = RttStats::new();
        for &x in samples {
            s.record_us(x);
        }
        s
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn one_to_four_by_hand() {
        let s = stats_of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.count(), 4);
        assert_eq!((s.min(), s.max()), (1.0, 4.0));
        assert!(close(s.mean(), 2.5));
        // E[x²] = 30/4 = 7.5; E[x]² = 6.25; mdev = sqrt(1.25).
        assert!(close(s.stddev(), 1.25f64.sqrt()), "{}", s.stddev());
        let sum = s.summary();
        assert_eq!((sum.p50, sum.p90, sum.p99), (2.0, 4.0, 4.0));
    }

    #[test]
    fn keeps_sub_microsecond_precision_for_exact_stats() {
        let mut s = RttStats::new();
        s.record(Duration::from_nanos(10_250));
        s.record(Duration::from_nanos(10_750));
        assert!(close(s.min(), 10.25) && close(s.max(), 10.75));
        assert!(close(s.mean(), 10.5));
        assert!(close(s.stddev(), 0.25));
    }

    #[test]
    fn large_close_values_do_not_cancel() {
        // sqrt(E[x²]-E[x]²) in f64 loses these digits; Welford does not.
        let base = 1e9;
        let s = stats_of(&[base + 1.0, base + 2.0, base + 3.0, base + 4.0]);
        assert!(close(s.stddev(), 1.25f64.sqrt()), "{}", s.stddev());
    }

    #[test]
    fn percentiles_from_many_samples() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        let s = stats_of(&samples);
        let sum = s.summary();
        assert_eq!((sum.p50, sum.p90, sum.p99), (500.0, 900.0, 990.0));
        assert!(close(sum.mean, 500.5));
    }

    #[test]
    fn empty_and_bad_samples() {
        let s = stats_of(&[f64::NAN, f64::INFINITY]);
        assert!(s.is_empty());
        assert_eq!(s.summary(), RttSummary::default());
        let s = stats_of(&[-5.0, 3.0]);
        assert_eq!((s.min(), s.max()), (0.0, 3.0));
    }

    #[test]
    fn summary_has_contract_keys() {
        let json = serde_json::to_value(stats_of(&[7.0]).summary()).expect("serializes");
        for key in ["min", "mean", "max", "p50", "p90", "p99"] {
            assert_eq!(json[key], 7.0, "{key}");
        }
        assert_eq!(json["stddev"], 0.0);
    }

    #[test]
    fn percentiles_never_pass_the_exact_extremes() {
        // The sample that `ping --json` printed as max 209.525, p99 210.0.
        let s = stats_of(&[209.525]);
        let sum = s.summary();
        assert_eq!((sum.min, sum.max), (209.525, 209.525));
        assert_eq!((sum.p50, sum.p90, sum.p99), (209.525, 209.525, 209.525));
        // And below the minimum: 10.4 reads as 10 from the histogram.
        let sum = stats_of(&[10.4, 10.45]).summary();
        assert!(sum.p50 >= sum.min, "{sum:?}");
    }

    #[test]
    fn printed_values_are_rounded_to_the_nanosecond() {
        let sum = stats_of(&[15.062, 15.0620000001, 15.062]).summary();
        assert_eq!(sum.min, 15.062);
        assert_eq!(
            serde_json::to_value(sum).expect("serializes")["mean"].to_string(),
            "15.062"
        );
        assert_eq!(round_us(1.0004999), 1.0);
        assert_eq!(round_us(2.0 / 3.0), 0.667);
    }

    proptest::proptest! {
        /// Whatever the samples, every percentile lies within [min, max].
        #[test]
        fn percentiles_lie_between_min_and_max(
            samples in proptest::collection::vec(0.0f64..5e6, 1..200)
        ) {
            let s = stats_of(&samples);
            let sum = s.summary();
            for (name, p) in [("p50", sum.p50), ("p90", sum.p90), ("p99", sum.p99)] {
                proptest::prop_assert!(
                    sum.min <= p && p <= sum.max,
                    "{name} {p} outside [{}, {}]", sum.min, sum.max
                );
            }
            proptest::prop_assert!(sum.min <= sum.mean && sum.mean <= sum.max);
            for q in [0.0, 50.0, 99.9, 100.0] {
                let p = s.percentile(q);
                proptest::prop_assert!(s.min() <= p && p <= s.max());
            }
        }
    }

    #[test]
    fn loss_follows_ping8() {
        assert_eq!(Loss::new(0, 0).percent(), 0.0);
        assert_eq!(Loss::new(4, 4).percent(), 0.0);
        assert_eq!(Loss::new(4, 3).percent(), 25.0);
        assert_eq!(Loss::new(3, 0).percent(), 100.0);
        assert_eq!(Loss::new(3, 1).lost(), 2);
        // More distinct replies than probes cannot make loss negative.
        assert_eq!(Loss::new(2, 5).lost(), 0);
        assert_eq!(Loss::new(2, 5).percent(), 0.0);
    }
}
