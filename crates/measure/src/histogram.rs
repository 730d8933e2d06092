//! Latency histogram: record, percentiles, merge, serialize.
//!
//! A thin wrapper around [`hdrhistogram::Histogram`] with the range and
//! precision fixed once for the whole crate, so every histogram that
//! `bench`, `ping` and `report merge` build can be merged with every other
//! without a range check failing at the end of a long run.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{
    DeserializeError, Deserializer, Serializer as _, V2DeflateSerializeError, V2DeflateSerializer,
};

/// Resolution of the histogram, in microseconds: values are whole
/// microseconds, so an echo faster than half a microsecond reads as 0.
pub const LOWEST_US: u64 = 1;

/// Largest latency the histogram tells apart: one hour, in microseconds.
/// A reply slower than that is recorded as one hour rather than dropped.
pub const HIGHEST_US: u64 = 3_600 * 1_000_000;

/// Significant decimal digits kept for every value: 3 means a value is
/// known to within 0.1 %, which costs a few tens of KiB per histogram.
pub const SIGNIFICANT_FIGURES: u8 = 3;

/// Longest base64 text [`LatencyHistogram::from_base64`] accepts. A
/// histogram with this crate's range encodes to a few KiB at most; the cap
/// keeps a corrupt or hostile report file from costing gigabytes before it
/// is rejected.
pub const MAX_ENCODED_LEN: usize = 16 * 1024 * 1024;

/// Why a histogram could not be encoded or decoded.
///
/// The underlying library error, where there is one, is the
/// [`source`](std::error::Error::source), so a caller printing the chain
/// gets both the reason and the detail.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// The text is longer than [`MAX_ENCODED_LEN`].
    #[error("histogram is too long ({len} bytes of base64; at most {MAX_ENCODED_LEN} accepted)")]
    TooLong {
        /// Length of the rejected text, in bytes.
        len: usize,
    },
    /// The text is not standard base64.
    #[error("histogram is not valid base64")]
    Base64(#[source] base64::DecodeError),
    /// The bytes are not an HdrHistogram V2 (compressed) encoding.
    #[error("histogram is not a valid HdrHistogram V2 encoding")]
    Decode(#[source] DeserializeError),
    /// The histogram could not be serialized (a count beyond what the
    /// format can hold, which only saturated counts reach).
    #[error("cannot serialize histogram")]
    Encode(#[source] V2DeflateSerializeError),
}

/// Latencies in microseconds, recorded with constant relative precision
/// from [`LOWEST_US`] to [`HIGHEST_US`].
///
/// Recording never fails and never allocates: out-of-range values saturate
/// to the bounds, because a latency silently dropped would make the tail
/// look better than it was.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    /// Counts per bucket; always built with the crate's fixed bounds, so
    /// [`LatencyHistogram::add`] cannot fail.
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for LatencyHistogram {
    /// Equal when both hold the same count in every bucket.
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl LatencyHistogram {
    /// An empty histogram with the crate's fixed range and precision.
    pub fn new() -> Self {
        let inner = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
            // The arguments are constants checked by the tests below.
            .expect("constant histogram bounds are valid");
        Self { inner }
    }

    /// Records one latency of `us` microseconds, saturating to the range.
    ///
    /// Hot path: no allocation, no error.
    pub fn record(&mut self, us: u64) {
        self.inner.saturating_record(us);
    }

    /// Records `count` latencies of `us` microseconds each, saturating to
    /// the range. Used to replay coordinated-omission corrections and to
    /// rebuild histograms.
    pub fn record_n(&mut self, us: u64, count: u64) {
        self.inner.saturating_record_n(us, count);
    }

    /// Records a latency measured as a [`Duration`], rounded to the nearest
    /// microsecond.
    pub fn record_duration(&mut self, latency: Duration) {
        self.record(duration_to_us(latency));
    }

    /// Adds every count of `other` to this histogram, as if its samples had
    /// been recorded here: how per-connection and per-machine results are
    /// merged without losing precision.
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Both sides share the same bounds by construction, so `add` only
        // copies counts; were it ever to fail, re-recording is equivalent.
        if self.inner.add(&other.inner).is_err() {
            self.add_by_recording(&other.inner);
        }
    }

    /// Number of latencies recorded.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether no latency was recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The latency at quantile `q` (0.0 ..= 1.0; out-of-range values are
    /// clamped), in microseconds; 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        self.inner.value_at_quantile(q)
    }

    /// The latency at percentile `p` (0.0 ..= 100.0), in microseconds; 0
    /// when empty. `percentile(99.9)` is the p99.9 of the reports.
    pub fn percentile(&self, p: f64) -> u64 {
        self.value_at_quantile(p / 100.0)
    }

    /// The latency at percentile `p` of these latencies and `lost` more
    /// that never came back, counted as slower than any: `None` when the
    /// percentile falls among the lost (more than `100 - p` percent of
    /// everything was lost), or when there is nothing at all. Clamped to
    /// `[min, max]`, as the reports' percentiles are.
    ///
    /// A datagram that never came back is the slowest echo of all; leaving
    /// it out would make a lossy run look faster than a clean one.
    pub fn percentile_with_lost(&self, p: f64, lost: u64) -> Option<u64> {
        let n = self.len();
        let total = n.saturating_add(lost);
        if total == 0 {
            return None;
        }
        let p = if p.is_nan() {
            100.0
        } else {
            p.clamp(0.0, 100.0)
        };
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        if rank > n {
            return None;
        }
        let at = self.value_at_quantile(rank as f64 / n as f64);
        Some(at.clamp(self.min(), self.max().max(self.min())))
    }

    /// Smallest latency recorded, in microseconds (within the precision);
    /// 0 when empty.
    pub fn min(&self) -> u64 {
        if self.is_empty() { 0 } else { self.inner.min() }
    }

    /// Largest latency recorded, in microseconds (within the precision);
    /// 0 when empty.
    pub fn max(&self) -> u64 {
        self.inner.max()
    }

    /// Mean latency in microseconds; 0.0 when empty.
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.inner.mean()
        }
    }

    /// The underlying histogram, for iteration the wrapper does not offer.
    pub fn as_hdr(&self) -> &Histogram<u64> {
        &self.inner
    }

    /// Base64 (standard alphabet, padded) of the HdrHistogram V2 compressed
    /// encoding: the contract's `latency_us.histogram`, readable by every
    /// HdrHistogram implementation (Java, C, Go, Python, Rust).
    pub fn to_base64(&self) -> Result<String, HistogramError> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.inner, &mut bytes)
            .map_err(HistogramError::Encode)?;
        Ok(STANDARD.encode(bytes))
    }

    /// Decodes the text written by [`LatencyHistogram::to_base64`] (or by
    /// another HdrHistogram implementation, compressed or not).
    ///
    /// Surrounding whitespace is ignored. A histogram encoded with other
    /// bounds or precision is re-recorded into this crate's, saturating
    /// values outside the range, so the result can always be merged.
    pub fn from_base64(text: &str) -> Result<Self, HistogramError> {
        let text = text.trim();
        if text.len() > MAX_ENCODED_LEN {
            return Err(HistogramError::TooLong { len: text.len() });
        }
        let bytes = STANDARD.decode(text).map_err(HistogramError::Base64)?;
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(HistogramError::Decode)?;
        let mut histogram = Self::new();
        let same_layout = decoded.low() == LOWEST_US
            && decoded.high() == HIGHEST_US
            && decoded.sigfig() == SIGNIFICANT_FIGURES;
        if same_layout {
            histogram.inner = decoded;
        } else {
            histogram.add_by_recording(&decoded);
        }
        Ok(histogram)
    }

    /// Adds `other`'s counts one bucket at a time, saturating values that do
    /// not fit this histogram's range.
    fn add_by_recording(&mut self, other: &Histogram<u64>) {
        for bucket in other.iter_recorded() {
            self.inner
                .saturating_record_n(bucket.value_iterated_to(), bucket.count_at_value());
        }
    }
}

/// A [`Duration`] in whole microseconds, rounded to nearest and saturating
/// at `u64::MAX` (which the histogram then saturates to [`HIGHEST_US`]).
pub fn duration_to_us(d: Duration) -> u64 {
    // In 64-bit arithmetic (this runs once per message): whole seconds,
    // then the rounded microseconds of the rest.
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add((u64::from(d.subsec_nanos()) + 500) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000 {
            h.record(us);
        }
        h
    }

    #[test]
    fn percentiles_of_uniform_samples() {
        let h = sample();
        assert_eq!(h.len(), 1000);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 1000);
        assert_eq!(h.percentile(50.0), 500);
        assert_eq!(h.value_at_quantile(0.9), 900);
        assert_eq!(h.percentile(99.0), 990);
        assert!((h.mean() - 500.5).abs() < 0.5, "mean {}", h.mean());
    }

    #[test]
    fn lost_latencies_count_as_slower_than_any() {
        let h = sample();
        assert_eq!(h.percentile_with_lost(99.0, 0), Some(990));
        // 1000 echoes and 10 lost: the p99 is the 1000th of 1010, the
        // slowest echo; the p99.9 falls among the lost.
        assert_eq!(h.percentile_with_lost(99.0, 10), Some(1000));
        assert_eq!(h.percentile_with_lost(99.9, 10), None);
        assert_eq!(h.percentile_with_lost(50.0, 1000), Some(1000));
        assert_eq!(h.percentile_with_lost(50.0, 1001), None);
        assert_eq!(LatencyHistogram::new().percentile_with_lost(50.0, 0), None);
        assert_eq!(LatencyHistogram::new().percentile_with_lost(50.0, 3), None);
    }

    #[test]
    fn out_of_range_values_saturate_instead_of_vanishing() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        h.record(u64::MAX);
        h.record_n(HIGHEST_US * 10, 3);
        assert_eq!(h.len(), 5);
        assert_eq!(h.min(), 0);
        assert!(h.as_hdr().equivalent(h.max(), HIGHEST_US));
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = LatencyHistogram::new();
        assert!(h.is_empty());
        assert_eq!((h.min(), h.max(), h.percentile(99.0)), (0, 0, 0));
        assert_eq!(h.mean(), 0.0);
        assert_eq!(h.value_at_quantile(f64::NAN), 0);
    }

    #[test]
    fn durations_round_to_nearest_microsecond() {
        assert_eq!(duration_to_us(Duration::from_nanos(1_499)), 1);
        assert_eq!(duration_to_us(Duration::from_nanos(1_500)), 2);
        assert_eq!(duration_to_us(Duration::MAX), u64::MAX);
        let mut h = LatencyHistogram::new();
        h.record_duration(Duration::from_millis(3));
        assert!(h.as_hdr().equivalent(h.max(), 3000), "{}", h.max());
    }

    #[test]
    fn add_equals_recording_everything_in_one() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        let mut all = LatencyHistogram::new();
        for us in 1..=5000u64 {
            let v = us * us % 100_003;
            if us % 3 == 0 { &mut a } else { &mut b }.record(v);
            all.record(v);
        }
        a.add(&b);
        assert_eq!(a, all);
        assert_eq!(a.percentile(99.9), all.percentile(99.9));
    }

    #[test]
    fn base64_round_trip_is_exact() {
        let h = sample();
        let text = h.to_base64().expect("encodes");
        // V2 compressed cookie 0x1c849304, base64 of its first bytes.
        assert!(text.starts_with("HISTF"), "{text}");
        let back = LatencyHistogram::from_base64(&format!(" {text}\n")).expect("decodes");
        assert_eq!(back, h);
    }

    #[test]
    fn foreign_layout_is_rerecorded_into_ours() {
        let mut foreign: Histogram<u64> = Histogram::new_with_bounds(1, 10_000, 2).expect("bounds");
        foreign.record_n(42, 7).expect("in range");
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&foreign, &mut bytes)
            .expect("encodes");
        let h = LatencyHistogram::from_base64(&STANDARD.encode(bytes)).expect("decodes");
        assert_eq!(h.len(), 7);
        assert_eq!(h.as_hdr().high(), HIGHEST_US);
        assert!(h.as_hdr().equivalent(h.max(), 42));
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let good = sample().to_base64().expect("encodes");
        let truncated = &good[..good.len() / 2];
        let flipped: String = good
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 20 {
                    if c == 'A' { 'B' } else { 'A' }
                } else {
                    c
                }
            })
            .collect();
        for bad in ["", "!!!not base64!!!", "AAAA", truncated, &flipped] {
            let err = LatencyHistogram::from_base64(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(!msg.contains('\n') && msg.starts_with("histogram"), "{msg}");
        }
        let long = "A".repeat(MAX_ENCODED_LEN + 4);
        assert!(matches!(
            LatencyHistogram::from_base64(&long),
            Err(HistogramError::TooLong { .. })
        ));
    }
}
