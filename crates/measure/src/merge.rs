//! `report merge`: many runs into one report, honestly.
//!
//! - Messages, errors, connections and throughput add up (the runs were
//!   concurrent); latencies come from the merged histograms, exactly as if
//!   one process had timed every message.
//! - Inputs that measured different things are refused, naming both: another
//!   transport (TCP with UDP), another message size, or the same run twice
//!   (a copy of one file).
//! - What merges but may mislead is said in warnings: measured windows that
//!   do not overlap (their rates add up as if concurrent), inputs without
//!   a start time to check, different endpoints or pipelines, paced and
//!   unpaced runs together.
//! - The merged report keeps each input (`inputs`).

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;
use crate::report::round_to;
use crate::report::{BehindSchedule, BenchReport, ConnectSummary, LatencySummary, ReportError};
use crate::wallclock;

/// One input of a merge, as `inputs` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeInput {
    /// The file (as named on the command line).
    pub file: String,
    /// When its measured window began; `null` for reports of versions that
    /// did not say.
    pub started_at: Option<String>,
    /// Its measured seconds.
    pub duration_s: f64,
    /// Its echoes.
    pub messages: u64,
}

/// A merged report and what the caller should say about it.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The merged report, with `inputs`.
    pub report: BenchReport,
    /// Things that merged but may mislead, one line each (no trailing
    /// period), for standard error.
    pub warnings: Vec<String>,
}

/// The transport an endpoint's text names: `tcp`, `udp`, `tls`, `unix`,
/// `unix-dgram` (the bare forms, `PORT`, `HOST:PORT`, `[V6]:PORT`, are
/// TCP). A merged report's endpoints all share theirs; the first says it.
pub fn transport(endpoint: &str) -> &str {
    let first = endpoint.split(',').next().unwrap_or(endpoint);
    if let Some((scheme, _)) = first.split_once("://") {
        return scheme;
    }
    if first.starts_with("unix-dgram:") {
        "unix-dgram"
    } else if first.starts_with("unix:") {
        "unix"
    } else {
        "tcp"
    }
}

impl BenchReport {
    /// Merges runs made at the same time from several processes or
    /// machines into one report ([`merge_named`], the inputs named
    /// `report 1`, `report 2`...; its warnings dropped).
    pub fn merge(reports: &[BenchReport]) -> Result<BenchReport, ReportError> {
        let named: Vec<(String, BenchReport)> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("report {}", i + 1), r.clone()))
            .collect();
        merge_named(&named).map(|m| m.report)
    }
}

/// Merges `(name, report)` inputs into one report:
///
/// - messages, errors, mismatches, lost, duplicates and connections add
///   up; throughput (msgs/s, bytes/s) and paced rate add up, since the
///   runs were concurrent; `duration_s` is the longest run, `started_at`
///   the earliest;
/// - latencies and connection times come from the merged histograms;
///   `latency_raw_us` (which carries no histogram), `find_rate` and
///   `intervals` are one run's and are left out;
/// - `endpoint` is the common one, or the distinct ones joined with `,` in
///   first-seen order; `pipeline` is kept when common;
/// - refused ([`ReportError::Incompatible`]): another transport, another
///   message size, the same run twice.
pub fn merge_named(inputs: &[(String, BenchReport)]) -> Result<Merged, ReportError> {
    let (_, first) = inputs.first().ok_or(ReportError::NoReports)?;
    refuse_incompatible(inputs)?;
    let mut latencies = LatencyHistogram::new();
    let mut connects = Some(LatencyHistogram::new());
    let mut behind = Some(BehindSchedule::default());
    let mut endpoints: Vec<&str> = Vec::new();
    let mut pipelines: Vec<Option<u32>> = Vec::new();
    let mut merged = first.clone();
    merged.connections = 0;
    merged.duration_s = 0.0;
    merged.msgs_per_s = 0.0;
    merged.bytes_per_s = 0.0;
    merged.errors = 0;
    merged.mismatches = 0;
    merged.rate = Some(0.0);
    merged.lost = None;
    merged.duplicates = None;
    merged.latency_raw_us = None;
    merged.find_rate = None;
    merged.intervals = None;
    merged.backends = None;
    let mut starts = Vec::new();
    for (_, report) in inputs {
        latencies.add(&report.histogram()?);
        if !endpoints.contains(&report.endpoint.as_str()) {
            endpoints.push(&report.endpoint);
        }
        if !pipelines.contains(&report.pipeline) {
            pipelines.push(report.pipeline);
        }
        merged.connections = merged.connections.saturating_add(report.connections);
        merged.duration_s = merged.duration_s.max(report.duration_s);
        merged.msgs_per_s = round_to(merged.msgs_per_s + report.msgs_per_s, 3);
        merged.bytes_per_s = round_to(merged.bytes_per_s + report.bytes_per_s, 3);
        merged.errors = merged.errors.saturating_add(report.errors);
        merged.mismatches = merged.mismatches.saturating_add(report.mismatches);
        // A rate is only meaningful if every run was paced.
        merged.rate = merged.rate.zip(report.rate).map(|(a, b)| a + b);
        if let Some(lost) = report.lost {
            merged.lost = Some(merged.lost.unwrap_or(0).saturating_add(lost));
        }
        if let Some(dups) = report.duplicates {
            merged.duplicates = Some(merged.duplicates.unwrap_or(0).saturating_add(dups));
        }
        // Kept only when every input has one: part of the runs would
        // pass for all of them.
        connects = match (connects, &report.connect_us) {
            (Some(mut all), Some(c)) => {
                all.add(&c.histogram()?);
                Some(all)
            }
            _ => None,
        };
        behind = behind
            .zip(report.behind_schedule.as_ref())
            .map(|(a, b)| BehindSchedule {
                scheduled: a.scheduled + b.scheduled,
                late: a.late + b.late,
                max_late_us: a.max_late_us.max(b.max_late_us),
                dropped: a.dropped + b.dropped,
            });
        // Backends add up, line by line, across every input that has them.
        for (line, share) in report.backends.iter().flatten() {
            let all = merged.backends.get_or_insert_with(Default::default);
            let sum = all.entry(line.clone()).or_default();
            sum.connections = sum.connections.saturating_add(share.connections);
            sum.messages = sum.messages.saturating_add(share.messages);
        }
        starts.push(report.started_at.as_deref().map(wallclock::parse));
    }
    merged.endpoint = endpoints.join(",");
    if pipelines.len() > 1 {
        merged.pipeline = None;
    }
    merged.messages = latencies.len();
    merged.latency_us = LatencySummary::from_histogram(&latencies)?;
    merged.connect_us = match connects {
        Some(h) if !h.is_empty() => Some(ConnectSummary::from_histogram(&h)?),
        _ => None,
    };
    merged.behind_schedule = behind;
    // The earliest start: the merged window begins there.
    merged.started_at = inputs
        .iter()
        .zip(&starts)
        .filter_map(|((_, r), s)| Some((s.clone()?.ok()?, r.started_at.clone()?)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, text)| text);
    merged.inputs = Some(
        inputs
            .iter()
            .map(|(name, r)| MergeInput {
                file: name.clone(),
                started_at: r.started_at.clone(),
                duration_s: r.duration_s,
                messages: r.messages,
            })
            .collect(),
    );
    let mut warnings = Vec::new();
    if let Some(w) = windows_apart(inputs, &starts) {
        warnings.push(w);
    }
    let undated: Vec<&str> = inputs
        .iter()
        .zip(&starts)
        .filter(|(_, s)| !matches!(s, Some(Ok(_))))
        .map(|((name, _), _)| name.as_str())
        .collect();
    if !undated.is_empty() && inputs.len() > 1 {
        warnings.push(format!(
            "{} {} no readable started_at (written by an older sockecho?): \
             whether the runs overlapped cannot be checked",
            undated.join(", "),
            if undated.len() == 1 { "has" } else { "have" }
        ));
    }
    if endpoints.len() > 1 {
        warnings.push(format!(
            "the inputs measured different endpoints ({}): their latencies are pooled as one",
            endpoints.join(", ")
        ));
    }
    if pipelines.len() > 1 {
        let depths: Vec<String> = pipelines
            .iter()
            .map(|p| p.map_or("unknown".to_owned(), |k| k.to_string()))
            .collect();
        warnings.push(format!(
            "the inputs kept different numbers of messages in flight (--pipeline {}): \
             their latencies are pooled as one",
            depths.join(", ")
        ));
    }
    let paced = inputs.iter().filter(|(_, r)| r.rate.is_some()).count();
    if paced > 0 && paced < inputs.len() {
        warnings.push(
            "some inputs were paced (--rate) and some were not: open-loop and closed-loop \
             latencies are pooled as one"
                .to_owned(),
        );
    }
    Ok(Merged {
        report: merged,
        warnings,
    })
}

/// Refuses inputs that measured different things, or one run twice.
fn refuse_incompatible(inputs: &[(String, BenchReport)]) -> Result<(), ReportError> {
    let Some((first_name, first)) = inputs.first() else {
        return Ok(());
    };
    for (i, (name, report)) in inputs.iter().enumerate().skip(1) {
        let refuse = |first: &str, why: String| ReportError::Incompatible {
            first: first.to_owned(),
            other: name.clone(),
            why,
        };
        let (a, b) = (transport(&first.endpoint), transport(&report.endpoint));
        if a != b {
            return Err(refuse(
                first_name,
                format!("they measured different transports ({b} and {a})"),
            ));
        }
        if report.message_size != first.message_size {
            return Err(refuse(
                first_name,
                format!(
                    "they measured different message sizes ({} and {} bytes)",
                    report.message_size, first.message_size
                ),
            ));
        }
        // The same run twice: a copy of one file under another name, told
        // by the same start (to the millisecond) and the same latencies.
        // Reports without a start time (older versions) cannot be told
        // from two runs that happened to match.
        let same_run = |(_, earlier): &(String, BenchReport)| {
            earlier.started_at.is_some()
                && earlier.messages == report.messages
                && earlier.started_at == report.started_at
                && earlier.duration_s == report.duration_s
                && earlier.endpoint == report.endpoint
                && earlier.latency_us.histogram == report.latency_us.histogram
        };
        if let Some((earlier, _)) = inputs[..i].iter().find(|input| same_run(input)) {
            return Err(refuse(
                earlier,
                "they hold the same run (a copy of one file?), which would count twice".to_owned(),
            ));
        }
    }
    Ok(())
}

/// A warning when the inputs' measured windows have no instant in common:
/// the latest start is at or after the earliest end. Names that pair.
fn windows_apart(
    inputs: &[(String, BenchReport)],
    starts: &[Option<Result<std::time::SystemTime, wallclock::TimeError>>],
) -> Option<String> {
    let windows: Vec<(&str, std::time::SystemTime, std::time::SystemTime)> = inputs
        .iter()
        .zip(starts)
        .filter_map(|((name, r), s)| {
            let start = s.clone()?.ok()?;
            let length = std::time::Duration::try_from_secs_f64(r.duration_s).ok()?;
            Some((name.as_str(), start, start.checked_add(length)?))
        })
        .collect();
    let latest = windows.iter().max_by_key(|(_, start, _)| *start)?;
    let earliest_end = windows.iter().min_by_key(|(_, _, end)| *end)?;
    (latest.1 >= earliest_end.2).then(|| {
        format!(
            "the inputs' measured windows do not overlap: {} started at {}, after {} ended at {}; \
             their rates add up as if the runs were concurrent, which they were not \
             (start them together with bench --start-at)",
            latest.0,
            wallclock::format_rfc3339(latest.1),
            earliest_end.0,
            wallclock::format_rfc3339(earliest_end.2)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BenchCounts, BenchParams};
    use std::time::Duration;

    fn run(endpoint: &str, started_at: Option<&str>, secs: u64, base: u64) -> BenchReport {
        let mut h = LatencyHistogram::new();
        for i in 0..500 {
            h.record(base + i % 37);
        }
        let params = BenchParams {
            endpoint: endpoint.to_owned(),
            connections: 2,
            message_size: 64,
            pipeline: 1,
            rate: None,
        };
        let counts = BenchCounts {
            duration: Duration::from_secs(secs),
            ..BenchCounts::default()
        };
        let mut r = BenchReport::new(&params, &counts, &h).expect("builds");
        r.started_at = started_at.map(str::to_owned);
        r
    }

    fn named(runs: &[BenchReport]) -> Vec<(String, BenchReport)> {
        runs.iter()
            .enumerate()
            .map(|(i, r)| (format!("{}.json", (b'a' + i as u8) as char), r.clone()))
            .collect()
    }

    #[test]
    fn transports_are_told_by_their_scheme() {
        for (endpoint, want) in [
            ("tcp://127.0.0.1:1", "tcp"),
            ("127.0.0.1:1", "tcp"),
            ("9999", "tcp"),
            ("[::1]:1", "tcp"),
            ("udp://[::1]:1", "udp"),
            ("tls://h:1", "tls"),
            ("unix:/tmp/x", "unix"),
            ("unix:@name", "unix"),
            ("unix-dgram:/tmp/x", "unix-dgram"),
            ("udp://a:1,udp://b:1", "udp"),
        ] {
            assert_eq!(transport(endpoint), want, "{endpoint}");
        }
    }

    #[test]
    fn overlapping_windows_merge_quietly_and_keep_inputs() {
        let a = run("tcp://h:1", Some("2025-06-01T12:00:00.000Z"), 10, 10);
        let b = run("tcp://h:1", Some("2025-06-01T12:00:02.500Z"), 10, 20);
        let m = merge_named(&named(&[a, b])).expect("merges");
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let r = &m.report;
        assert_eq!(r.messages, 1000);
        assert_eq!(r.started_at.as_deref(), Some("2025-06-01T12:00:00.000Z"));
        let inputs = r.inputs.as_ref().expect("inputs");
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[1].file, "b.json");
        assert_eq!(
            inputs[1].started_at.as_deref(),
            Some("2025-06-01T12:00:02.500Z")
        );
        assert_eq!((inputs[1].duration_s, inputs[1].messages), (10.0, 500));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for key in ["file", "started_at", "duration_s", "messages"] {
            assert!(v["inputs"][0].get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn windows_apart_are_said_naming_both() {
        let a = run("tcp://h:1", Some("2025-06-01T12:00:00.000Z"), 10, 10);
        let b = run("tcp://h:1", Some("2025-06-01T12:00:10.000Z"), 10, 20);
        let c = run("tcp://h:1", Some("2025-06-01T12:00:05.000Z"), 10, 30);
        let m = merge_named(&named(&[a, b, c])).expect("merges");
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        let w = &m.warnings[0];
        assert!(
            w.starts_with(
                "the inputs' measured windows do not overlap: b.json started at \
                 2025-06-01T12:00:10.000Z, after a.json ended at 2025-06-01T12:00:10.000Z"
            ),
            "{w}"
        );
        // An undated input cannot be checked, and says so.
        let old = run("tcp://h:1", None, 10, 40);
        let a = run("tcp://h:1", Some("2025-06-01T12:00:00.000Z"), 10, 10);
        let m = merge_named(&named(&[a, old])).expect("merges");
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(m.warnings[0].starts_with("b.json has no readable started_at"));
        assert_eq!(m.report.inputs.unwrap()[1].started_at, None);
    }

    #[test]
    fn hostile_times_and_durations_do_not_panic() {
        let mut a = run("tcp://h:1", Some("9999-12-31T23:59:59Z"), 10, 10);
        a.duration_s = 1e19;
        let mut b = run("tcp://h:1", Some("not a time"), 10, 20);
        b.duration_s = f64::NAN;
        let c = run("tcp://h:1", Some("@999999999999.999999999"), 10, 30);
        let m = merge_named(&named(&[a, b, c])).expect("merges");
        assert!(
            m.warnings
                .iter()
                .any(|w| w.starts_with("b.json has no readable"))
        );
    }

    #[test]
    fn different_things_are_refused_naming_both() {
        let at = Some("2025-06-01T12:00:00.000Z");
        let tcp = run("tcp://h:1", at, 10, 10);
        let udp = run("udp://h:1", at, 10, 20);
        let err = merge_named(&named(&[tcp.clone(), udp])).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "cannot merge b.json with a.json: they measured different transports (udp and tcp)"
        );
        let mut big = run("tcp://h:1", at, 10, 20);
        big.message_size = 128;
        let err = merge_named(&named(&[tcp.clone(), big])).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "cannot merge b.json with a.json: they measured different message sizes (128 and 64 bytes)"
        );
        let other = run("tcp://h:1", at, 10, 30);
        let err = merge_named(&named(&[tcp.clone(), other, tcp])).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "cannot merge c.json with a.json: they hold the same run (a copy of one file?), \
             which would count twice"
        );
    }

    #[test]
    fn what_merges_but_may_mislead_is_warned() {
        let at = Some("2025-06-01T12:00:00.000Z");
        let a = run("tcp://h:1", at, 10, 10);
        let mut b = run("tcp://g:1", at, 10, 20);
        b.pipeline = Some(8);
        b.rate = Some(1000.0);
        let m = merge_named(&named(&[a, b])).expect("merges");
        assert_eq!(m.warnings.len(), 3, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("different endpoints (tcp://h:1, tcp://g:1)"));
        assert!(m.warnings[1].contains("(--pipeline 1, 8)"));
        assert!(m.warnings[2].starts_with("some inputs were paced"));
        assert_eq!((m.report.pipeline, m.report.rate), (None, None));
    }

    #[test]
    fn connection_times_merge_exactly_when_every_input_has_them() {
        let at = Some("2025-06-01T12:00:00.000Z");
        let mut a = run("tcp://h:1", at, 10, 10);
        let mut b = run("tcp://h:1", at, 10, 20);
        let mut ca = LatencyHistogram::new();
        ca.record_n(100, 3);
        let mut cb = LatencyHistogram::new();
        cb.record_n(900, 1);
        a.connect_us = Some(ConnectSummary::from_histogram(&ca).unwrap());
        b.connect_us = Some(ConnectSummary::from_histogram(&cb).unwrap());
        let m = merge_named(&named(&[a.clone(), b])).expect("merges");
        let c = m.report.connect_us.expect("merged");
        assert_eq!((c.min, c.max), (100.0, 900.0));
        assert_eq!(c.histogram().unwrap().len(), 4);
        let old = run("tcp://h:1", at, 10, 30);
        let m = merge_named(&named(&[a, old])).expect("merges");
        assert_eq!(m.report.connect_us, None);
    }
}
