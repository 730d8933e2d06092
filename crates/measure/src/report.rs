//! The result of a bench run: contract JSON, human text, merging.
//!
//! A [`BenchReport`] is plain data that serializes to exactly the keys the
//! contract names for `bench --json`, plus a few optional extras. The
//! latency histogram travels inside it as base64, so `report merge` can
//! combine runs from many machines exactly rather than averaging
//! percentiles (which is meaningless).

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
    /// Reports with different message sizes measure different things;
    /// their latencies cannot be pooled.
    #[error("cannot merge reports with different message sizes ({first} and {other} bytes)")]
    MessageSizeMismatch {
        /// The first report's message size.
        first: u64,
        /// The first differing message size.
        other: u64,
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
}

impl LatencySummary {
    /// The summary of `h`: percentiles clamped to `[min, max]`, the mean
    /// rounded to the nanosecond (see [`LatencySummary`]).
    fn from_histogram(h: &LatencyHistogram) -> Result<Self, ReportError> {
        let min = h.min() as f64;
        // `max()` is never below `min()`; `max(min)` keeps `clamp` from
        // panicking should that ever change.
        let max = (h.max() as f64).max(min);
        let at = |p: f64| (h.percentile(p) as f64).clamp(min, max);
        Ok(Self {
            min,
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p999: at(99.9),
            max,
            mean: round_us(h.mean().clamp(min, max)),
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
fn round_to(x: f64, decimals: i32) -> f64 {
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

    /// Merges runs made at the same time from several processes or
    /// machines into one report:
    ///
    /// - messages, errors, mismatches, lost and connections add up;
    /// - throughput (msgs/s, bytes/s) and paced rate add up, since the runs
    ///   were concurrent; `duration_s` is the longest run;
    /// - latencies come from the merged histogram, exactly as if one
    ///   process had timed every message;
    /// - `endpoint` is the common one, or the distinct ones joined with `,`
    ///   in first-seen order;
    /// - `message_size` must be the same everywhere
    ///   ([`ReportError::MessageSizeMismatch`] otherwise): pooling
    ///   latencies of different sizes would describe no real workload;
    /// - `pipeline` is kept when common and dropped otherwise.
    pub fn merge(reports: &[BenchReport]) -> Result<BenchReport, ReportError> {
        let first = reports.first().ok_or(ReportError::NoReports)?;
        let mut latencies = LatencyHistogram::new();
        let mut endpoints: Vec<&str> = Vec::new();
        let mut merged = BenchReport {
            endpoint: String::new(),
            connections: 0,
            message_size: first.message_size,
            duration_s: 0.0,
            messages: 0,
            msgs_per_s: 0.0,
            bytes_per_s: 0.0,
            errors: 0,
            mismatches: 0,
            latency_us: first.latency_us.clone(),
            pipeline: first.pipeline,
            rate: Some(0.0),
            lost: None,
            duplicates: None,
        };
        for report in reports {
            if report.message_size != first.message_size {
                return Err(ReportError::MessageSizeMismatch {
                    first: first.message_size,
                    other: report.message_size,
                });
            }
            latencies.add(&report.histogram()?);
            if !endpoints.contains(&report.endpoint.as_str()) {
                endpoints.push(&report.endpoint);
            }
            merged.connections = merged.connections.saturating_add(report.connections);
            merged.duration_s = merged.duration_s.max(report.duration_s);
            merged.messages = merged.messages.saturating_add(report.messages);
            merged.msgs_per_s = round_to(merged.msgs_per_s + report.msgs_per_s, 3);
            merged.bytes_per_s = round_to(merged.bytes_per_s + report.bytes_per_s, 3);
            merged.errors = merged.errors.saturating_add(report.errors);
            merged.mismatches = merged.mismatches.saturating_add(report.mismatches);
            if merged.pipeline != report.pipeline {
                merged.pipeline = None;
            }
            // A rate is only meaningful if every run was paced.
            merged.rate = merged.rate.zip(report.rate).map(|(a, b)| a + b);
            if let Some(lost) = report.lost {
                merged.lost = Some(merged.lost.unwrap_or(0).saturating_add(lost));
            }
            if let Some(dups) = report.duplicates {
                merged.duplicates = Some(merged.duplicates.unwrap_or(0).saturating_add(dups));
            }
        }
        merged.endpoint = endpoints.join(",");
        // Equal unless a count saturated; the histogram is the truth.
        merged.messages = latencies.len();
        merged.latency_us = LatencySummary::from_histogram(&latencies)?;
        Ok(merged)
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
