//! What the user sees: one ping(8)-style line per event, then the summary,
//! or with `--json` the summary alone as one JSON object.
//!
//! Both probe paths (stream and datagram) report through one [`Report`],
//! so the counters mean the same thing whatever the transport.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use super::PingSummary;
use super::probe::Mismatch;
use crate::error::Error;
use crate::stats::{Loss, RttStats};

/// Counters and output of one ping run.
pub(super) struct Report<'a> {
    /// Where lines go; flushed after each, so a pipe sees them live.
    out: &'a mut (dyn Write + Send),
    /// Print nothing until the summary, and that as JSON.
    json: bool,
    /// The endpoint as the user reads it, formatted once (no allocation
    /// per line).
    endpoint: String,
    /// When the first probe went out; the summary's `time`.
    start: Instant,
    /// Probes sent (or, with `--connect`, handshakes tried).
    sent: u64,
    /// Distinct probes answered by a valid echo.
    received: u64,
    /// Distinct probes that got any reply we could tie to them, valid or
    /// corrupt: `sent - answered` is the loss, so a corrupt echo is counted
    /// as corrupt and not a second time as lost.
    answered: u64,
    /// Valid echoes of a probe already answered.
    duplicates: u64,
    /// Echoes that differ from their probe, or that no probe of ours could
    /// have produced.
    corrupt: u64,
    /// Valid first echoes of a probe older than one already answered.
    reordered: u64,
    /// Valid first echoes that came after their probe's timeout.
    late: u64,
    /// ICMP "port unreachable" (or its Unix equivalent) reports.
    unreachable: u64,
    /// Round-trip times of valid first echoes.
    rtt: RttStats,
}

/// How a valid echo stands against the others, for its line's suffix.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Order {
    /// It came after its timeout had been reported.
    pub late: bool,
    /// A later probe had been answered first.
    pub reordered: bool,
}

impl<'a> Report<'a> {
    pub(super) fn new(out: &'a mut (dyn Write + Send), json: bool, endpoint: String) -> Self {
        Report {
            out,
            json,
            endpoint,
            start: Instant::now(),
            sent: 0,
            received: 0,
            answered: 0,
            duplicates: 0,
            corrupt: 0,
            reordered: 0,
            late: 0,
            unreachable: 0,
            rtt: RttStats::new(),
        }
    }

    /// The run begins now (the connection is up): prints `PING ...: WHAT`
    /// and starts the clock.
    pub(super) fn begin(&mut self, what: fmt::Arguments<'_>) -> Result<Instant, Error> {
        let endpoint = &self.endpoint;
        line(self.out, self.json, format_args!("PING {endpoint}: {what}"))?;
        self.start = Instant::now();
        Ok(self.start)
    }

    /// A free-form line (reconnects, send errors), text mode only.
    pub(super) fn note(&mut self, text: fmt::Arguments<'_>) -> Result<(), Error> {
        line(self.out, self.json, text)
    }

    /// One more probe went out (or was due and could not be sent: it still
    /// counts, as lost, so that an outage shows as loss).
    pub(super) fn sent(&mut self) {
        self.sent += 1;
    }

    /// A valid echo. `first` is false when the probe was already tied to a
    /// corrupt echo (it counts as received but not again as answered).
    pub(super) fn valid(
        &mut self,
        bytes: usize,
        seq: u64,
        rtt: Duration,
        first: bool,
        order: Order,
    ) -> Result<(), Error> {
        self.received += 1;
        self.answered += u64::from(first);
        self.late += u64::from(order.late);
        self.reordered += u64::from(order.reordered);
        self.rtt.record(rtt);
        let late = if order.late { " (late)" } else { "" };
        let reordered = if order.reordered { " (reordered)" } else { "" };
        let endpoint = &self.endpoint;
        let time = Millis(rtt);
        line(
            self.out,
            self.json,
            format_args!(
                "{bytes} bytes from {endpoint}: seq={seq} time={time} ms{reordered}{late}"
            ),
        )
    }

    /// A second valid echo of a probe already answered.
    pub(super) fn duplicate(&mut self, bytes: usize, seq: u64, rtt: Duration) -> Result<(), Error> {
        self.duplicates += 1;
        let endpoint = &self.endpoint;
        let time = Millis(rtt);
        line(
            self.out,
            self.json,
            format_args!("{bytes} bytes from {endpoint}: seq={seq} time={time} ms (DUP!)"),
        )
    }

    /// An echo of probe `seq` that differs from it. `first`: the first
    /// reply tied to that probe (it is answered, not lost).
    pub(super) fn corrupt(
        &mut self,
        bytes: usize,
        seq: u64,
        first: bool,
        how: Mismatch,
    ) -> Result<(), Error> {
        self.corrupt += 1;
        self.answered += u64::from(first);
        let endpoint = &self.endpoint;
        line(
            self.out,
            self.json,
            format_args!("{bytes} bytes from {endpoint}: seq={seq} {how}"),
        )
    }

    /// A reply no probe of ours could have produced: not one of ours, or
    /// for a sequence number never sent.
    pub(super) fn stray(&mut self, bytes: usize, why: fmt::Arguments<'_>) -> Result<(), Error> {
        self.corrupt += 1;
        let endpoint = &self.endpoint;
        line(
            self.out,
            self.json,
            format_args!("{bytes} bytes from {endpoint}: corrupt reply: {why}"),
        )
    }

    /// A reply to a probe too old to be checked any more: it counts as
    /// late, and its probe stays lost.
    pub(super) fn too_late(&mut self, bytes: usize, seq: u64) -> Result<(), Error> {
        self.late += 1;
        let endpoint = &self.endpoint;
        line(
            self.out,
            self.json,
            format_args!("{bytes} bytes from {endpoint}: seq={seq} too late to check (ignored)"),
        )
    }

    /// No reply to `seq` within the timeout.
    pub(super) fn timeout(&mut self, seq: u64) -> Result<(), Error> {
        line(
            self.out,
            self.json,
            format_args!("Request timeout for seq={seq}"),
        )
    }

    /// The peer's host said no one listens there.
    pub(super) fn unreachable(&mut self) -> Result<(), Error> {
        self.unreachable += 1;
        let endpoint = &self.endpoint;
        line(
            self.out,
            self.json,
            format_args!("From {endpoint}: destination port unreachable"),
        )
    }

    /// `--connect`: a handshake completed in `rtt`.
    pub(super) fn connected(&mut self, seq: u64, rtt: Duration) -> Result<(), Error> {
        self.received += 1;
        self.answered += 1;
        self.rtt.record(rtt);
        let endpoint = &self.endpoint;
        let time = Millis(rtt);
        line(
            self.out,
            self.json,
            format_args!("connected to {endpoint}: seq={seq} time={time} ms"),
        )
    }

    /// Prints the summary (text or JSON) and returns it.
    pub(super) fn finish(self) -> Result<PingSummary, Error> {
        let elapsed = self.start.elapsed();
        let lost = self.sent.saturating_sub(self.answered);
        let loss = Loss::new(self.sent, self.sent - lost);
        let summary = PingSummary {
            endpoint: self.endpoint,
            sent: self.sent,
            received: self.received,
            lost,
            duplicates: self.duplicates,
            corrupt: self.corrupt,
            reordered: self.reordered,
            late: self.late,
            unreachable: self.unreachable,
            loss_percent: loss.percent(),
            time_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            rtt_us: self.rtt.summary(),
        };
        let out = self.out;
        let fail = Error::Output;
        if self.json {
            serde_json::to_writer(&mut *out, &summary).map_err(|e| fail(e.into()))?;
            out.write_all(b"\n").map_err(fail)?;
        } else {
            write_text_summary(out, &summary).map_err(fail)?;
        }
        out.flush().map_err(fail)?;
        Ok(summary)
    }
}

fn write_text_summary(out: &mut dyn Write, s: &PingSummary) -> std::io::Result<()> {
    writeln!(out, "--- {} ping statistics ---", s.endpoint)?;
    write!(
        out,
        "{} probes transmitted, {} received, {}% loss, {} duplicates, {} corrupt, {} reordered",
        s.sent,
        s.received,
        Percent(s.loss_percent),
        s.duplicates,
        s.corrupt,
        s.reordered
    )?;
    if s.late > 0 {
        write!(out, ", {} late", s.late)?;
    }
    if s.unreachable > 0 {
        write!(out, ", {} unreachable", s.unreachable)?;
    }
    writeln!(out, ", time {}ms", s.time_ms)?;
    if s.received > 0 {
        let r = &s.rtt_us;
        let ms = |us: f64| us / 1000.0;
        writeln!(
            out,
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            ms(r.min),
            ms(r.mean),
            ms(r.max),
            ms(r.stddev)
        )?;
        writeln!(
            out,
            "rtt p50/p90/p99 = {:.3}/{:.3}/{:.3} ms",
            ms(r.p50),
            ms(r.p90),
            ms(r.p99)
        )?;
    }
    Ok(())
}

/// Writes one line and flushes it; nothing in JSON mode.
fn line(out: &mut dyn Write, json: bool, text: fmt::Arguments<'_>) -> Result<(), Error> {
    if json {
        return Ok(());
    }
    let fail = Error::Output;
    out.write_fmt(text).map_err(fail)?;
    out.write_all(b"\n").map_err(fail)?;
    out.flush().map_err(fail)
}

/// A round-trip time in milliseconds with the precision iputils ping(8)
/// uses: three significant digits or so, whole milliseconds from 100 ms.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if ms >= 100.0 {
            write!(f, "{ms:.0}")
        } else if ms >= 10.0 {
            write!(f, "{ms:.1}")
        } else if ms >= 1.0 {
            write!(f, "{ms:.2}")
        } else {
            write!(f, "{ms:.3}")
        }
    }
}

/// A loss percentage: whole numbers as such (`0`, `100`), others to one
/// decimal (`33.3`).
struct Percent(f64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 * 10.0).round();
        if tenths % 10.0 == 0.0 {
            write!(f, "{:.0}", tenths / 10.0)
        } else {
            write!(f, "{:.1}", tenths / 10.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_percents_read_like_ping() {
        let ms = |us: u64| Millis(Duration::from_micros(us)).to_string();
        assert_eq!(ms(123), "0.123");
        assert_eq!(ms(1_234), "1.23");
        assert_eq!(ms(12_345), "12.3");
        assert_eq!(ms(123_456), "123");
        let pct = |p: f64| Percent(p).to_string();
        assert_eq!(pct(0.0), "0");
        assert_eq!(pct(100.0), "100");
        assert_eq!(pct(100.0 / 3.0), "33.3");
    }

    #[test]
    fn corrupt_echo_is_not_also_lost() {
        let mut out = Vec::new();
        let mut report = Report::new(&mut out, false, "udp://127.0.0.1:9".to_owned());
        for _ in 0..3 {
            report.sent();
        }
        let rtt = Duration::from_micros(100);
        report.valid(64, 0, rtt, true, Order::default()).unwrap();
        report.duplicate(64, 0, rtt).unwrap();
        let how = Mismatch::Byte {
            offset: 30,
            expected: 1,
            got: 2,
        };
        report.corrupt(64, 1, true, how).unwrap();
        report.timeout(2).unwrap();
        let s = report.finish().unwrap();
        assert_eq!(
            (s.sent, s.received, s.lost, s.duplicates, s.corrupt),
            (3, 1, 1, 1, 1)
        );
        assert!(!s.success());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("seq=0 time=0.100 ms (DUP!)"), "{text}");
        assert!(text.contains("seq=1 corrupt at byte 30"), "{text}");
        assert!(text.contains("Request timeout for seq=2"), "{text}");
        assert!(
            text.contains("3 probes transmitted, 1 received, 33.3% loss, 1 duplicates, 1 corrupt"),
            "{text}"
        );
    }
}
