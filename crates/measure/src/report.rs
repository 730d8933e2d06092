//! The result of a bench run: contract JSON, human text, merging.
//!
//! A [`BenchReport`] is plain data that serializes to exactly the keys the
//! contract names for `bench --json`, plus a few optional extras. The
//! latency histogram travels inside it as base64, so `report merge` can
//! combine runs from many machines exactly rather than averaging
//! percentiles (which is meaningless).
//!
//! Beyond one run's numbers a report may carry: the raw latency beside
//! the corrected one (`latency_raw_us`, open loop), connection times
//! (`connect_us`), how far the client fell behind its own schedule
//! (`behind_schedule`), the wall-clock start of the measured window
//! (`started_at`), a rate search (`find_rate`), interval records
//! (`intervals`), and after a merge its inputs (`inputs`; see
//! [`merge`](crate::merge)).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::histogram::{HistogramError, LatencyHistogram};
use crate::stats::round_us;

/// Why a report could not be built, read or merged.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The text is not a bench report in JSON.
    #[error("not a sockecho bench report")]
    Json(#[source] serde_json::Error),
    /// `latency_us.histogram` could not be encoded or decoded.
    #[error("bad latency histogram")]
    Histogram(#[source] HistogramError),
    /// The histogram does not hold one latency per message, so the file
    /// was edited or truncated and its percentiles cannot be trusted.
    #[error(
        "latency histogram holds {histogram} latencies but the report counts {messages} messages"
    )]
    CountMismatch {
        /// Latencies in the histogram.
        histogram: u64,
        /// The report's `messages`.
        messages: u64,
    },
    /// `report merge` was given nothing to merge.
    #[error("no reports to merge")]
    NoReports,
    /// Two inputs measured different things (another transport, another
    /// message size) or are the same run twice: pooling them would
    /// describe no real workload, or count one run twice.
    #[error("cannot merge {other} with {first}: {why}")]
    Incompatible {
        /// The earlier input it conflicts with.
        first: String,
        /// The input refused.
        other: String,
        /// What differs, in words.
        why: String,
    },
}

/// What the user asked for: the run's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchParams {
    /// The endpoint as the user would type it (`tcp://127.0.0.1:9999`).
    pub endpoint: String,
    /// Connections (or datagram flows) opened.
    pub connections: u64,
    /// Bytes per message.
    pub message_size: u64,
    /// Messages each connection keeps in flight.
    pub pipeline: u32,
    /// Total paced send rate in messages per second; `None` when closed-loop.
    pub rate: Option<f64>,
}

/// What the run measured, apart from latencies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchCounts {
    /// Measured time, warmup excluded.
    pub duration: Duration,
    /// Connection or I/O errors.
    pub errors: u64,
    /// Echoes whose bytes differed from what was sent.
    pub mismatches: u64,
    /// Datagrams that never came back; `None` over streams, which do not
    /// lose messages without an error.
    pub lost: Option<u64>,
    /// Datagrams answered more than once; `None` over streams.
    pub duplicates: Option<u64>,
}

/// Latency percentiles without their histogram: `latency_raw_us`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyPercentiles {
    /// Fastest echo.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest echo.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencyPercentiles {
    /// The percentiles of `h`, clamped to `[min, max]` as in
    /// [`LatencySummary`].
    pub fn from_histogram(h: &LatencyHistogram) -> Self {
        let min = h.min() as f64;
        let max = (h.max() as f64).max(min);
        let at = |p: f64| (h.percentile(p) as f64).clamp(min, max);
        Self {
            min,
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p999: at(99.9),
            max,
            mean: round_us(h.mean().clamp(min, max)),
        }
    }
}

/// `connect_us`: how long each connection took to establish (the TLS
/// handshake included on `tls://`), in microseconds, with its histogram so
/// that merged reports stay exact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectSummary {
    /// Fastest connection.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest connection.
    pub max: f64,
    /// Base64 of the HdrHistogram V2 compressed encoding, one value per
    /// connection made.
    pub histogram: String,
}

impl ConnectSummary {
    /// The summary of `h`, one value per connection.
    pub fn from_histogram(h: &LatencyHistogram) -> Result<Self, ReportError> {
        let p = LatencyPercentiles::from_histogram(h);
        Ok(Self {
            min: p.min,
            p50: p.p50,
            p99: p.p99,
            max: p.max,
            histogram: h.to_base64().map_err(ReportError::Histogram)?,
        })
    }

    /// Decodes the histogram.
    pub fn histogram(&self) -> Result<LatencyHistogram, ReportError> {
        LatencyHistogram::from_base64(&self.histogram).map_err(ReportError::Histogram)
    }
}

/// `behind_schedule`: how far an open-loop client fell behind its own
/// schedule in the measured window. Latency timed from the intended send
/// time includes this lateness; a slow client must not pass for a slow
/// server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BehindSchedule {
    /// Messages due in the measured window.
    pub scheduled: u64,
    /// Of those, how many the client handed to the socket more than 2 ms
    /// (a timer's slack) after they were due.
    pub late: u64,
    /// The latest one was, in microseconds.
    pub max_late_us: f64,
    /// Messages dropped from the schedule, never sent, because a
    /// connection fell more than a million messages behind.
    pub dropped: u64,
}

impl BehindSchedule {
    /// Whether the client kept its schedule: nothing late, nothing
    /// dropped.
    pub fn kept(&self) -> bool {
        self.late == 0 && self.dropped == 0
    }
}

/// One step of a rate search (`find_rate.steps`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindStep {
    /// The rate asked, messages per second.
    pub rate: f64,
    /// The rate achieved: echoes per second in the measured window.
    pub achieved: f64,
    /// The target's percentile, in microseconds; `null` when it cannot be
    /// told (no echo, or more datagrams lost than the percentile allows).
    pub latency_us: Option<f64>,
    /// Whether the step met the target at the rate asked.
    pub pass: bool,
    /// Messages this client itself sent more than 2 ms late in the step
    /// (`behind_schedule.late`): a step failed by a client that could not
    /// keep its pace says little about the server.
    #[serde(default)]
    pub client_late: u64,
}

/// `find_rate`: a search for the highest open-loop rate meeting a latency
/// target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindRate {
    /// The target, as given (`p99<2ms`).
    pub target: String,
    /// The highest rate that met it, messages per second; `null` when none
    /// did.
    pub rate: Option<f64>,
    /// Every step, in the order run.
    pub steps: Vec<FindStep>,
    /// Why the search ended: `narrowed` (the answer, within the
    /// precision), `ceiling` (every rate passed up to the most the client
    /// paces), `floor` (every rate failed down to the least), `steps` or
    /// `time` (stopped early, out of steps or time).
    pub stopped: String,
}

/// The `latency_us` object: percentiles in microseconds plus the histogram
/// they came from.
///
/// Every value is read from the histogram, whose values are bucket bounds
/// (within 0.1 %): min the bottom of the lowest bucket, max and the
/// percentiles the top of theirs. So a percentile lies within `[min, max]`
/// by construction; it is clamped there all the same, so that the
/// contract's promise ("every percentile lies between min and max") holds
/// whatever histogram a merged file carried, and the mean likewise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Fastest echo.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest echo.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Base64 of the HdrHistogram V2 compressed encoding, holding exactly
    /// `messages` latencies.
    pub histogram: String,
}

/// One bench result, as `bench --json` prints it and `report merge` reads
/// and writes it. Field names are the contract's JSON keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Endpoint measured; after a merge of different endpoints, the
    /// distinct ones joined with `,` in first-seen order.
    pub endpoint: String,
    /// Connections (or datagram flows), summed over merged runs.
    pub connections: u64,
    /// Bytes per message.
    pub message_size: u64,
    /// Measured seconds, warmup excluded; the longest run after a merge.
    pub duration_s: f64,
    /// Echoes received and timed.
    pub messages: u64,
    /// Echoes per second; summed over merged (concurrent) runs.
    pub msgs_per_s: f64,
    /// Echoed payload bytes per second, one direction; summed when merged.
    pub bytes_per_s: f64,
    /// Connection or I/O errors.
    pub errors: u64,
    /// Echoes that differed from what was sent.
    pub mismatches: u64,
    /// Latency percentiles and histogram.
    pub latency_us: LatencySummary,
    /// Messages in flight per connection (extra key); absent after merging
    /// runs that used different values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<u32>,
    /// Paced total send rate, msgs/s (extra key); absent when closed-loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Datagrams lost (extra key); absent over streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Datagrams answered more than once (extra key); absent over streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    /// When the measured window began (the warmup's end), RFC 3339 in
    /// UTC; absent in reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Open loop: latency timed from each message's actual send rather
    /// than its intended one (what a client blind to coordinated omission
    /// would report), beside the corrected `latency_us`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_raw_us: Option<LatencyPercentiles>,
    /// Open loop: how far the client fell behind its own schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_schedule: Option<BehindSchedule>,
    /// Time to establish each connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<ConnectSummary>,
    /// A rate search's steps and answer (`bench --find-rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find_rate: Option<FindRate>,
    /// Interval records (`bench --json --interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Vec<crate::interval::IntervalReport>>,
    /// After a merge: one entry per input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<crate::merge::MergeInput>>,
    /// `bench --greeting-line`: per distinct greeting line (each backend
    /// behind a load balancer), the connections greeted with it and the
    /// messages they completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<std::collections::BTreeMap<String, BackendShare>>,
}

/// One backend's share of a run (`backends`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendShare {
    /// Connections greeted with this backend's line.
    pub connections: u64,
    /// Messages those connections completed in the measured window.
    pub messages: u64,
}

impl LatencySummary {
    /// The summary of `h`: percentiles clamped to `[min, max]`, the mean
    /// rounded to the nanosecond (see [`LatencySummary`]).
    pub fn from_histogram(h: &LatencyHistogram) -> Result<Self, ReportError> {
        // `max()` is never below `min()`; the clamp keeps that so should
        // it ever change.
        let p = LatencyPercentiles::from_histogram(h);
        Ok(Self {
            min: p.min,
            p50: p.p50,
            p90: p.p90,
            p99: p.p99,
            p999: p.p999,
            max: p.max,
            mean: p.mean,
            histogram: h.to_base64().map_err(ReportError::Histogram)?,
        })
    }
}

/// `count / seconds`, or 0 for a run too short to measure; rounded to
/// three decimals, as printed (a rate is not known finer than that, and
/// JSON readers should not see a float's binary tail).
fn per_second(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        round_to(count / seconds, 3)
    } else {
        0.0
    }
}

/// `x` rounded to `decimals` decimal places (finite values only).
pub(crate) fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    if x.is_finite() {
        (x * scale).round() / scale
    } else {
        x
    }
}

impl BenchReport {
    /// Builds the report of one run. `messages` is the histogram's count,
    /// so the two can never disagree.
    pub fn new(
        params: &BenchParams,
        counts: &BenchCounts,
        latencies: &LatencyHistogram,
    ) -> Result<Self, ReportError> {
        // To the microsecond: what the clock says, without a float's tail.
        let duration_s = round_to(counts.duration.as_secs_f64(), 6);
        let messages = latencies.len();
        let bytes = messages as f64 * params.message_size as f64;
        Ok(Self {
            endpoint: params.endpoint.clone(),
            connections: params.connections,
            message_size: params.message_size,
            duration_s,
            messages,
            msgs_per_s: per_second(messages as f64, duration_s),
            bytes_per_s: per_second(bytes, duration_s),
            errors: counts.errors,
            mismatches: counts.mismatches,
            latency_us: LatencySummary::from_histogram(latencies)?,
            pipeline: Some(params.pipeline),
            rate: params.rate,
            lost: counts.lost,
            duplicates: counts.duplicates,
            started_at: None,
            latency_raw_us: None,
            behind_schedule: None,
            connect_us: None,
            find_rate: None,
            intervals: None,
            inputs: None,
            backends: None,
        })
    }

    /// The report as one line of JSON, as `--json` prints it.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and options in structs with string keys:
        // serde_json cannot fail on that (a non-finite float becomes `null`).
        serde_json::to_string(self).expect("a BenchReport always serializes to JSON")
    }

    /// Reads a report written by `bench --json` or `report merge --json`,
    /// checking that its histogram decodes and holds `messages` latencies.
    pub fn from_json(text: &str) -> Result<Self, ReportError> {
        let report: Self = serde_json::from_str(text).map_err(ReportError::Json)?;
        report.histogram()?;
        Ok(report)
    }

    /// Decodes the latency histogram, checking it holds `messages`
    /// latencies.
    pub fn histogram(&self) -> Result<LatencyHistogram, ReportError> {
        let h = LatencyHistogram::from_base64(&self.latency_us.histogram)
            .map_err(ReportError::Histogram)?;
        if h.len() != self.messages {
            return Err(ReportError::CountMismatch {
                histogram: h.len(),
                messages: self.messages,
            });
        }
        Ok(h)
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
