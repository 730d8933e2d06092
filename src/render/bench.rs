//! bench's report as text (in the spirit of iperf3 and wrk) or JSON, its
//! interval lines and JSON stream, a rate search's steps and answer, and
//! its live progress line on a terminal.

use std::fmt::Write as _;
use std::time::Duration;

use sockecho::bench::Progress;
use sockecho::measure::interval::IntervalReport;
use sockecho::measure::report::{BehindSchedule, BenchReport, FindStep};

/// Prints `report` on standard output as text or JSON.
pub fn print_report(report: &BenchReport, json: bool) -> Result<(), sockecho::Error> {
    let mut text = if json { report.to_json() } else { text(report) };
    if json {
        text.push('\n');
    }
    super::write_stdout(|out| out.write_all(text.as_bytes()))
}

/// A human summary: parameters, then throughput, latency, and problems.
pub fn text(report: &BenchReport) -> String {
    let mut out = String::new();
    let mut params = format!(
        "{} connection{}, {}-byte messages",
        report.connections,
        if report.connections == 1 { "" } else { "s" },
        report.message_size
    );
    if let Some(k) = report.pipeline.filter(|&k| k > 1) {
        let _ = write!(params, ", pipeline {k}");
    }
    if let Some(rate) = report.rate {
        // Whole messages where that is precise enough; a slow rate in
        // full, not rounded to `rate 0`.
        if rate >= 10.0 {
            let _ = write!(params, ", rate {rate:.0} msg/s");
        } else {
            let _ = write!(params, ", rate {rate} msg/s");
        }
    }
    let _ = writeln!(
        out,
        "bench {}: {params}, {:.2} s",
        report.endpoint, report.duration_s
    );
    let mib = report.bytes_per_s / (1024.0 * 1024.0);
    let mbit = report.bytes_per_s * 8.0 / 1e6;
    let _ = writeln!(
        out,
        "  messages  {}  {:.1} msg/s  {mib:.2} MiB/s ({mbit:.2} Mbit/s)",
        report.messages, report.msgs_per_s
    );
    let l = &report.latency_us;
    let _ = writeln!(
        out,
        "  latency   min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
        format_us(l.min),
        format_us(l.p50),
        format_us(l.p90),
        format_us(l.p99),
        format_us(l.p999),
        format_us(l.max),
        format_us(l.mean)
    );
    if let Some(raw) = &report.latency_raw_us {
        // The corrected line above times each message from when it was
        // due; this one from when it went out, as a client blind to
        // coordinated omission would.
        let _ = writeln!(
            out,
            "  raw       min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}  (from each actual send)",
            format_us(raw.min),
            format_us(raw.p50),
            format_us(raw.p90),
            format_us(raw.p99),
            format_us(raw.p999),
            format_us(raw.max),
            format_us(raw.mean)
        );
    }
    if let Some(c) = &report.connect_us {
        let _ = writeln!(
            out,
            "  connect   min {}  p50 {}  p99 {}  max {}",
            format_us(c.min),
            format_us(c.p50),
            format_us(c.p99),
            format_us(c.max)
        );
    }
    // `--greeting-line`: each backend's share, one line each.
    for (i, (line, share)) in report.backends.iter().flatten().enumerate() {
        let percent = if report.messages > 0 {
            share.messages as f64 * 100.0 / report.messages as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  {}{}  {} connection{}, {} messages ({percent:.1}%)",
            if i == 0 { "backends  " } else { "          " },
            sockecho::events::escape(line),
            share.connections,
            if share.connections == 1 { "" } else { "s" },
            share.messages
        );
    }
    let _ = write!(
        out,
        "  errors    {}  mismatches {}",
        report.errors, report.mismatches
    );
    if let Some(lost) = report.lost {
        let _ = write!(out, "  lost {lost}");
    }
    if let Some(dups) = report.duplicates {
        let _ = write!(out, "  duplicates {dups}");
    }
    out.push('\n');
    for input in report.inputs.iter().flatten() {
        let _ = writeln!(
            out,
            "  input     {}  started {}  {:.2} s  {} messages",
            input.file,
            input.started_at.as_deref().unwrap_or("(unknown)"),
            input.duration_s,
            input.messages
        );
    }
    out
}

/// An interval's line: `  2.00-3.00 s  152340 msgs  152340.0 msg/s  p50
/// 41us  p99 354us  max 1.20ms  errors 0`.
pub fn interval_line(i: &IntervalReport) -> String {
    format!(
        "  {:.2}-{:.2} s  {} msgs  {:.1} msg/s  p50 {}  p99 {}  max {}  errors {}\n",
        i.start_s,
        i.end_s,
        i.messages,
        i.msgs_per_s,
        format_us(i.latency_us.p50),
        format_us(i.latency_us.p99),
        format_us(i.latency_us.max),
        i.errors
    )
}

/// `json` (one object) as a JSON stream's event: `{"event":"NAME",...}`.
pub fn event(name: &str, json: &str) -> String {
    let body = json.strip_prefix('{').unwrap_or(json);
    let sep = if body.starts_with('}') { "" } else { "," };
    format!("{{\"event\":\"{name}\"{sep}{body}\n")
}

/// An interval as a JSON stream line.
pub fn interval_event(i: &IntervalReport) -> String {
    // Numbers and a nested object of numbers: serde_json cannot fail.
    event("interval", &serde_json::to_string(i).unwrap_or_default())
}

/// A rate search's step as it ends: `  step 3  rate 4000 msg/s  achieved
/// 3998.7 msg/s  p99 310us  pass`.
pub fn step_line(n: usize, name: &str, step: &FindStep) -> String {
    let latency = step
        .latency_us
        .map_or_else(|| "n/a (lost)".to_owned(), format_us);
    let late = if step.client_late > 0 {
        format!("  (this client sent {} late)", step.client_late)
    } else {
        String::new()
    };
    format!(
        "  step {n:<2} rate {} msg/s  achieved {:.1} msg/s  {name} {latency}  {}{late}\n",
        rate(step.rate),
        step.achieved,
        if step.pass { "pass" } else { "fail" }
    )
}

/// A rate as steps and answers print it: whole above 10 msg/s.
pub fn rate(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

/// The loud line for a client that fell behind its own schedule, or
/// `None` when it kept it.
pub fn behind_warning(b: &BehindSchedule) -> Option<String> {
    if b.kept() {
        return None;
    }
    let share = if b.scheduled > 0 {
        100.0 * b.late as f64 / b.scheduled as f64
    } else {
        0.0
    };
    let mut line = format!(
        "this client fell behind its own schedule: {} of {} messages ({share:.1}%) \
         went out more than 2ms late, the latest by {}",
        b.late,
        b.scheduled,
        format_us(b.max_late_us)
    );
    if b.dropped > 0 {
        let _ = write!(line, ", and {} were dropped, never sent", b.dropped);
    }
    line.push_str(
        "; the latencies include the client's own lateness (try more --threads, \
         fewer --connections or a lower --rate)",
    );
    Some(line)
}

/// A latency in the unit a reader takes in at a glance, as wrk does:
/// `850us`, `12.34ms`, `1.50s`.
pub fn format_us(us: f64) -> String {
    if us < 1_000.0 {
        // Whole microseconds below 100 would hide a mean's fraction.
        if us < 100.0 && us.fract() != 0.0 {
            format!("{us:.1}us")
        } else {
            format!("{us:.0}us")
        }
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1_000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// The live progress line on standard error (elapsed time, current rate,
/// errors), redrawn four times a second until [`Bar::finish`].
pub struct Bar {
    done: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts drawing `progress`.
pub fn progress_bar(progress: Progress) -> Bar {
    let (done, mut finished) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let mut last = (std::time::Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut finished => break,
            }
            let now = std::time::Instant::now();
            let messages = progress.messages();
            let rate = messages.saturating_sub(last.1) as f64
                / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, messages);
            let phase = if progress.measuring() { "" } else { "warmup " };
            bar.set_message(format!(
                "{phase}{rate:.0} msgs/s  errors {}",
                progress.errors()
            ));
            bar.tick();
        }
        bar.finish_and_clear();
    });
    Bar { done, task }
}

impl Bar {
    /// Stops drawing and clears the line.
    pub async fn finish(self) {
        let _ = self.done.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockecho::measure::histogram::LatencyHistogram;
    use sockecho::measure::report::{BenchCounts, BenchParams};

    fn report(h: &LatencyHistogram) -> BenchReport {
        let params = BenchParams {
            endpoint: "tcp://127.0.0.1:9999".to_owned(),
            connections: 2,
            message_size: 64,
            pipeline: 1,
            rate: None,
        };
        let counts = BenchCounts {
            duration: Duration::from_secs(2),
            errors: 1,
            ..BenchCounts::default()
        };
        BenchReport::new(&params, &counts, h).expect("builds")
    }

    #[test]
    fn text_summary() {
        let mut h = LatencyHistogram::new();
        h.record_n(50, 900);
        h.record_n(2_500, 99);
        h.record(1_500_000);
        let text = text(&report(&h));
        assert!(
            text.starts_with(
                "bench tcp://127.0.0.1:9999: 2 connections, 64-byte messages, 2.00 s\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("messages  1000  500.0 msg/s  0.03 MiB/s"),
            "{text}"
        );
        assert!(
            text.contains("min 50us  p50 50us  p90 50us  p99 2.50ms"),
            "{text}"
        );
        assert!(text.contains("max 1.50s"), "{text}");
        assert!(text.contains("errors    1  mismatches 0"), "{text}");
    }

    #[test]
    fn slow_rates_are_not_rounded_to_zero() {
        let mut r = report(&LatencyHistogram::new());
        r.rate = Some(0.25);
        assert!(text(&r).contains(", rate 0.25 msg/s,"), "{}", text(&r));
        r.rate = Some(1500.4);
        assert!(text(&r).contains(", rate 1500 msg/s,"), "{}", text(&r));
    }

    #[test]
    fn raw_connect_and_input_lines() {
        use sockecho::measure::merge::MergeInput;
        use sockecho::measure::report::{ConnectSummary, LatencyPercentiles};
        let mut h = LatencyHistogram::new();
        h.record_n(50, 10);
        let mut r = report(&h);
        assert!(!text(&r).contains("raw"));
        r.latency_raw_us = Some(LatencyPercentiles::from_histogram(&h));
        let mut c = LatencyHistogram::new();
        c.record_n(120, 2);
        r.connect_us = Some(ConnectSummary::from_histogram(&c).unwrap());
        r.inputs = Some(vec![MergeInput {
            file: "a.json".to_owned(),
            started_at: Some("2025-06-01T12:00:00.000Z".to_owned()),
            duration_s: 2.0,
            messages: 10,
        }]);
        let text = text(&r);
        assert!(text.contains("\n  raw       min 50us  p50 50us"), "{text}");
        assert!(text.contains("(from each actual send)\n"), "{text}");
        assert!(text.contains("\n  connect   min 120us  p50 120us  p99 120us  max 120us\n"));
        assert!(text.contains(
            "\n  input     a.json  started 2025-06-01T12:00:00.000Z  2.00 s  10 messages\n"
        ));
    }

    #[test]
    fn events_intervals_steps_and_the_loud_line() {
        assert_eq!(event("end", "{\"a\":1}"), "{\"event\":\"end\",\"a\":1}\n");
        assert_eq!(event("end", "{}"), "{\"event\":\"end\"}\n");
        let mut h = LatencyHistogram::new();
        h.record_n(40, 100);
        let i = IntervalReport::new(Duration::from_secs(1), Duration::from_secs(2), &h, 0);
        assert_eq!(
            interval_line(&i),
            "  1.00-2.00 s  100 msgs  100.0 msg/s  p50 40us  p99 40us  max 40us  errors 0\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&interval_event(&i)).expect("one JSON line");
        assert_eq!(
            (json["event"].as_str(), json["messages"].as_u64()),
            (Some("interval"), Some(100))
        );
        let step = FindStep {
            rate: 4000.0,
            achieved: 3998.66,
            latency_us: Some(310.0),
            pass: true,
            client_late: 0,
        };
        assert_eq!(
            step_line(3, "p99", &step),
            "  step 3  rate 4000 msg/s  achieved 3998.7 msg/s  p99 310us  pass\n"
        );
        let late = FindStep {
            pass: false,
            client_late: 54,
            ..step
        };
        assert!(step_line(4, "p99", &late).ends_with("  fail  (this client sent 54 late)\n"));
        let kept = BehindSchedule {
            scheduled: 10,
            ..BehindSchedule::default()
        };
        assert_eq!(behind_warning(&kept), None);
        let late = BehindSchedule {
            scheduled: 1000,
            late: 25,
            max_late_us: 35_200.0,
            dropped: 0,
        };
        let line = behind_warning(&late).expect("loud");
        assert!(
            line.starts_with(
                "this client fell behind its own schedule: 25 of 1000 messages (2.5%) went out \
             more than 2ms late, the latest by 35.20ms;"
            ),
            "{line}"
        );
    }

    #[test]
    fn units() {
        assert_eq!(format_us(0.0), "0us");
        assert_eq!(format_us(12.34), "12.3us");
        assert_eq!(format_us(999.0), "999us");
        assert_eq!(format_us(1_234.0), "1.23ms");
        assert_eq!(format_us(61_000_000.0), "61.00s");
    }
}
