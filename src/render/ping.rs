//! ping(8)'s output: a line per event as it happens, then the summary; or,
//! with `--json`, the summary alone as one JSON object.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use sockecho::ping::{PingConfig, PingEvent, PingSummary};
use tokio_util::sync::CancellationToken;

use crate::fail::words;

/// Runs the pings, printing as they go, then the summary.
pub async fn run(
    config: &PingConfig,
    json: bool,
    stop: &CancellationToken,
) -> Result<PingSummary, sockecho::Error> {
    let endpoint = config.endpoint.to_string();
    let mut observer = |event: PingEvent<'_>| -> std::io::Result<()> {
        if json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", Line(&endpoint, &event))?;
        out.flush()
    };
    let summary = sockecho::ping::run(config, stop, &mut observer).await?;
    super::write_stdout(|out| {
        if json {
            serde_json::to_writer(&mut *out, &summary)?;
            out.write_all(b"\n")
        } else {
            write_summary(out, &summary)
        }
    })?;
    Ok(summary)
}

/// One event as ping(8) would print it.
struct Line<'a>(&'a str, &'a PingEvent<'a>);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = self.0;
        match self.1 {
            PingEvent::Begin { size } => write!(f, "PING {endpoint}: {size} bytes per probe"),
            PingEvent::BeginHandshakes { addr } => {
                write!(f, "PING {endpoint}: TCP handshake per probe to {addr}")
            }
            PingEvent::Reply {
                bytes,
                seq,
                rtt,
                reordered,
                late,
            } => {
                let reordered = if *reordered { " (reordered)" } else { "" };
                let late = if *late { " (late)" } else { "" };
                let time = Millis(*rtt);
                write!(
                    f,
                    "{bytes} bytes from {endpoint}: seq={seq} time={time} ms{reordered}{late}"
                )
            }
            PingEvent::Duplicate { bytes, seq, rtt } => write!(
                f,
                "{bytes} bytes from {endpoint}: seq={seq} time={} ms (DUP!)",
                Millis(*rtt)
            ),
            PingEvent::Corrupt { bytes, seq, how } => {
                write!(f, "{bytes} bytes from {endpoint}: seq={seq} {how}")
            }
            PingEvent::NotAProbe { bytes, how } => write!(
                f,
                "{bytes} bytes from {endpoint}: corrupt reply: not a probe: {how}"
            ),
            PingEvent::NeverSent { bytes, seq } => write!(
                f,
                "{bytes} bytes from {endpoint}: corrupt reply: seq={seq} was never sent"
            ),
            PingEvent::TooLate { bytes, seq } => write!(
                f,
                "{bytes} bytes from {endpoint}: seq={seq} too late to check (ignored)"
            ),
            PingEvent::Timeout { seq } => write!(f, "Request timeout for seq={seq}"),
            PingEvent::Unreachable => write!(f, "From {endpoint}: destination port unreachable"),
            PingEvent::Connected { seq, rtt, backend } => {
                write!(
                    f,
                    "connected to {endpoint}: seq={seq} time={} ms",
                    Millis(*rtt)
                )?;
                match backend {
                    Some(line) => write!(f, " backend={}", sockecho::events::escape(line)),
                    None => Ok(()),
                }
            }
            PingEvent::Backend { line } => write!(
                f,
                "greeting from {endpoint}: {}",
                sockecho::events::escape(line)
            ),
            PingEvent::ConnectFailed { seq, error } => write!(f, "seq={seq}: {}", words(error)),
            PingEvent::Reconnecting { seq, why } => {
                write!(f, "seq={seq}: {why}; reconnecting to {endpoint}")
            }
            PingEvent::OutOfStep => write!(
                f,
                "reconnecting to {endpoint}: a late echo would put the stream out of step"
            ),
            PingEvent::SendFailed { seq, why } => write!(f, "seq={seq}: cannot send: {why}"),
            other => write!(f, "{other:?}"),
        }
    }
}

fn write_summary(out: &mut dyn Write, s: &PingSummary) -> std::io::Result<()> {
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
    fn lines_read_like_ping() {
        let line = |event: PingEvent<'_>| Line("udp://127.0.0.1:9", &event).to_string();
        let rtt = Duration::from_micros(100);
        assert_eq!(
            line(PingEvent::Duplicate {
                bytes: 64,
                seq: 0,
                rtt
            }),
            "64 bytes from udp://127.0.0.1:9: seq=0 time=0.100 ms (DUP!)"
        );
        let how = sockecho::ping::Mismatch::Byte {
            offset: 30,
            expected: 1,
            got: 2,
        };
        assert_eq!(
            line(PingEvent::Corrupt {
                bytes: 64,
                seq: 1,
                how
            }),
            "64 bytes from udp://127.0.0.1:9: seq=1 corrupt at byte 30 (sent 0x01, got 0x02)"
        );
        assert_eq!(
            line(PingEvent::Timeout { seq: 2 }),
            "Request timeout for seq=2"
        );
    }
}
