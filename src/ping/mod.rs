//! `sockecho ping`: probes with a sequence number and a timestamp, each
//! echo verified byte for byte, round-trip times in ping(8)'s style.
//!
//! - [`probe`]: the wire format and the byte-for-byte check.
//! - `stream`: TCP, Unix stream (and TLS, through [`Stream`]): one probe in
//!   flight on one connection; and `--connect`, one handshake per probe.
//! - `datagram`: UDP, Unix datagram: probes sent on schedule while replies
//!   are read, so loss, duplicates and reordering can be told apart.
//! - `report`: the lines and the summary.
//!
//! [`Stream`]: crate::transport::Stream

mod datagram;
pub mod probe;
mod report;
mod stream;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::endpoint::{Endpoint, Kind};
use crate::error::Error;
use crate::stats::RttSummary;
use probe::HEADER_LEN;
use report::Report;

/// The largest probe over a stream: one probe is in flight at a time, with
/// two buffers of this size; beyond a few MiB a round trip measures
/// throughput, not latency.
pub const MAX_STREAM_PROBE: usize = 16 << 20;

/// What `ping` sends and how.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// The echo server.
    pub endpoint: Endpoint,
    /// Probes to send; `None` means until `stop` is cancelled (Ctrl-C).
    pub count: Option<u64>,
    /// Time between probe sends.
    pub interval: Duration,
    /// Bytes per probe, header included.
    pub size: usize,
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// TCP only: time the handshake of a new connection per probe instead.
    pub connect_only: bool,
    /// Print one JSON object at the end instead of text lines.
    pub json: bool,
    /// Cancelled to stop early; the summary is still printed.
    pub stop: CancellationToken,
    /// How a `tls://` server is verified.
    pub tls: crate::transport::tls::ClientTlsOptions,
}

/// The outcome of a ping run.
///
/// `lost` is `sent` minus the probes that got any reply tied to them: a
/// corrupt echo counts in `corrupt`, not also in `lost`. A late reply
/// (after its timeout, while the run still listens) counts as received,
/// as ping(8) counts it, and also in `late`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PingSummary {
    /// The endpoint pinged.
    pub endpoint: String,
    /// Probes sent.
    pub sent: u64,
    /// Distinct valid replies.
    pub received: u64,
    /// Probes never answered.
    pub lost: u64,
    /// Replies received more than once.
    pub duplicates: u64,
    /// Replies whose bytes differed from the probe.
    pub corrupt: u64,
    /// Replies that arrived after a later probe's reply.
    pub reordered: u64,
    /// Replies that arrived after their timeout. Included in `received`,
    /// except those to a probe so old it is no longer tracked (see
    /// `datagram`'s window), whose probe stays lost.
    pub late: u64,
    /// "Destination port unreachable" reports (datagrams only).
    pub unreachable: u64,
    /// `lost` as a percentage of `sent`.
    pub loss_percent: f64,
    /// From the first probe to the end of the run, milliseconds.
    pub time_ms: u64,
    /// Round-trip statistics over valid replies, microseconds.
    pub rtt_us: RttSummary,
}

impl PingSummary {
    /// The contract's success: at least one valid reply and none corrupt.
    pub fn success(&self) -> bool {
        self.received > 0 && self.corrupt == 0
    }
}

/// Runs the pings, writing per-probe lines and the summary (or the JSON
/// object) to `out`.
///
/// A server that cannot be reached at the start is an error
/// ([`Error::Connect`]); once running, failures are counted, never fatal.
pub async fn run(
    config: &PingConfig,
    out: &mut (dyn std::io::Write + Send),
) -> Result<PingSummary, Error> {
    if config.size < HEADER_LEN {
        return Err(Error::Usage(format!(
            "probe size must be at least {HEADER_LEN} bytes (the header)"
        )));
    }
    let mut report = Report::new(out, config.json, config.endpoint.to_string());
    if config.connect_only {
        if !matches!(config.endpoint, Endpoint::Tcp(_)) {
            return Err(Error::Usage(format!(
                "--connect times TCP handshakes; {} is not a tcp:// endpoint",
                config.endpoint
            )));
        }
        stream::handshakes(config, &mut report).await?;
    } else {
        match config.endpoint.kind() {
            Kind::Stream => {
                if config.size > MAX_STREAM_PROBE {
                    return Err(Error::Usage(format!(
                        "probe size must be at most {MAX_STREAM_PROBE} bytes over a stream"
                    )));
                }
                stream::run(config, &mut report).await?;
            }
            Kind::Datagram => datagram::run(config, &mut report).await?,
        }
    }
    report.finish()
}

/// When each probe is due: the k-th at `start + k * interval`, so the pace
/// never drifts with the time spent waiting or printing.
///
/// A sender that falls behind (a stream reply slower than the interval)
/// sends at once and then rejoins the grid; it does not burst to make up
/// the missed slots.
#[derive(Debug)]
struct Schedule {
    /// Slot 0.
    start: Instant,
    /// Between slots; 0 means back to back.
    interval: Duration,
    /// The slot of the next probe.
    slot: u64,
}

impl Schedule {
    fn new(start: Instant, interval: Duration) -> Self {
        Schedule {
            start,
            interval,
            slot: 0,
        }
    }

    /// When the next probe is due, given that it is `now`.
    fn due(&mut self, now: Instant) -> Instant {
        let step = self.interval.as_nanos();
        // With no interval (back to back) no slot is ever missed.
        if let Some(latest) = now
            .saturating_duration_since(self.start)
            .as_nanos()
            .checked_div(step)
        {
            self.slot = self.slot.max(u64::try_from(latest).unwrap_or(u64::MAX));
        }
        let offset = step.saturating_mul(u128::from(self.slot));
        self.start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// The due probe went out.
    fn advance(&mut self) {
        self.slot += 1;
    }
    /// Waits for the next probe's slot and claims it; `false` if `stop`
    /// came first.
    async fn next(&mut self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep_until(self.due(Instant::now())) => {
                self.advance();
                true
            }
        }
    }
}

/// Nanoseconds from `start` to `now`, as the probe header carries them.
fn since(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn schedule_keeps_the_grid_and_skips_missed_slots() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(start, ms(100));
        assert_eq!(s.due(start), start);
        s.advance();
        // On time: the next slot, whatever the time spent meanwhile.
        assert_eq!(s.due(start + ms(30)), start + ms(100));
        s.advance();
        // 350 ms in, slot 2 (200 ms) was missed: send now (slot 3 is due
        // at 300 ms, already past), then back on the grid at 400 ms.
        assert_eq!(s.due(start + ms(350)), start + ms(300));
        s.advance();
        assert_eq!(s.due(start + ms(351)), start + ms(400));
    }

    #[tokio::test]
    async fn rejects_probes_smaller_than_the_header() {
        let config = PingConfig {
            endpoint: "udp://127.0.0.1:9".parse().unwrap(),
            count: Some(1),
            interval: Duration::from_millis(10),
            size: 10,
            timeout: Duration::from_millis(10),
            connect_only: false,
            json: false,
            stop: CancellationToken::new(),
            tls: Default::default(),
        };
        let err = run(&config, &mut Vec::new()).await.unwrap_err();
        assert!(err.is_usage());
        assert_eq!(
            err.to_string(),
            "probe size must be at least 24 bytes (the header)"
        );
    }
}
