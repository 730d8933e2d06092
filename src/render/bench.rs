//! bench's report as text (in the spirit of iperf3 and wrk) or JSON, and
//! its live progress line on a terminal.

use std::fmt::Write as _;
use std::time::Duration;

use sockecho::bench::Progress;
use sockecho::measure::report::BenchReport;

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
    out
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
    fn units() {
        assert_eq!(format_us(0.0), "0us");
        assert_eq!(format_us(12.34), "12.3us");
        assert_eq!(format_us(999.0), "999us");
        assert_eq!(format_us(1_234.0), "1.23ms");
        assert_eq!(format_us(61_000_000.0), "61.00s");
    }
}
