//! Interval records: what a run did in each slice of its measured window
//! (`bench --interval`, `--json-stream`), in the manner of iperf3's
//! per-interval lines.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;
use crate::report::round_to;

/// One interval: `{"event":"interval",...}` in a JSON stream carries these
/// keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalReport {
    /// Where the interval begins, seconds into the measured window.
    pub start_s: f64,
    /// Where it ends.
    pub end_s: f64,
    /// Echoes completed in it. The intervals of a run add up to its
    /// report's `messages`.
    pub messages: u64,
    /// Echoes per second over the interval.
    pub msgs_per_s: f64,
    /// Errors counted in it.
    pub errors: u64,
    /// Its latencies.
    pub latency_us: IntervalLatency,
}

/// An interval's latency percentiles in microseconds, each within
/// `[min, max]` of its histogram; all 0 when it completed nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalLatency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest echo.
    pub max: f64,
}

impl IntervalReport {
    /// The record of the interval from `start` to `end` into the measured
    /// window, whose echoes' latencies are `latencies`, with `errors`.
    pub fn new(
        start: Duration,
        end: Duration,
        latencies: &LatencyHistogram,
        errors: u64,
    ) -> IntervalReport {
        let seconds = end.saturating_sub(start).as_secs_f64();
        let messages = latencies.len();
        let (min, max) = (latencies.min() as f64, latencies.max() as f64);
        let at = |p: f64| (latencies.percentile(p) as f64).clamp(min, max.max(min));
        IntervalReport {
            start_s: round_to(start.as_secs_f64(), 6),
            end_s: round_to(end.as_secs_f64(), 6),
            messages,
            msgs_per_s: if seconds > 0.0 {
                round_to(messages as f64 / seconds, 3)
            } else {
                0.0
            },
            errors,
            latency_us: IntervalLatency {
                p50: at(50.0),
                p99: at(99.0),
                max: max.max(min),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_reads_its_histogram() {
        let mut h = LatencyHistogram::new();
        h.record_n(100, 99);
        h.record(5000);
        let ms = Duration::from_millis;
        let r = IntervalReport::new(ms(500), ms(1000), &h, 2);
        assert_eq!(
            (r.start_s, r.end_s, r.messages, r.errors),
            (0.5, 1.0, 100, 2)
        );
        assert_eq!(r.msgs_per_s, 200.0);
        assert_eq!(r.latency_us.p50, 100.0);
        // The top of 5000's bucket, within the histogram's 0.1 %.
        assert!((5000.0..5006.0).contains(&r.latency_us.max), "{r:?}");
        let empty = IntervalReport::new(ms(0), ms(0), &LatencyHistogram::new(), 0);
        assert_eq!((empty.msgs_per_s, empty.latency_us.p99), (0.0, 0.0));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in ["start_s", "end_s", "messages", "msgs_per_s", "errors"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in ["p50", "p99", "max"] {
            assert!(v["latency_us"].get(key).is_some(), "{key}");
        }
    }
}
