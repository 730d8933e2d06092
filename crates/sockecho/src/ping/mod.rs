//! `ping`: probes with a sequence number and a timestamp, each echo
//! verified byte for byte, round-trip times in ping(8)'s sense.
//!
//! - `stream`: TCP, Unix stream and TLS: one probe in flight on one
//!   connection; and `connect_only`, one handshake per probe.
//! - `datagram`: UDP and Unix datagram: probes sent on schedule while
//!   replies are read, classified by the datagram flow core of
//!   `sockecho-flow` (loss, duplicates, reordering, late replies).
//! - `tally`: the counts, the events as they happen, and the summary.
//!
//! The library says what happened ([`PingEvent`], then a [`PingSummary`]);
//! printing it (ping(8)'s lines, or JSON) is the caller's.

mod datagram;
mod stream;
mod tally;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::endpoint::{Endpoint, Kind};
use crate::error::{Error, Setting};
pub use sockecho_flow::probe::{HEADER_LEN, Mismatch};
pub use sockecho_measure::stats::RttSummary;

/// The largest probe over a stream: one probe is in flight at a time, with
/// two buffers of this size; beyond a few MiB a round trip measures
/// throughput, not latency.
pub const MAX_STREAM_PROBE: usize = 16 << 20;

/// Time between probes when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// How long to wait for each reply when no timeout is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes per probe when no size is given.
pub const DEFAULT_SIZE: usize = 64;

/// What `ping` sends and how.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// The echo server.
    pub endpoint: Endpoint,
    /// Probes to send; `None` means until stopped.
    pub count: Option<u64>,
    /// Time between probe sends.
    pub interval: Duration,
    /// Bytes per probe, header included.
    pub size: usize,
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// TCP only: time the handshake of a new connection per probe instead.
    pub connect_only: bool,
    /// How a `tls://` server is verified.
    pub tls: crate::transport::tls::ClientTlsOptions,
    /// Streams: each connection sends a PROXY protocol header first.
    pub proxy: Option<crate::transport::proxy::ProxyClient>,
    /// Streams: each connection first reads the server's greeting line
    /// (`serve --greeting '{id}\n'`), which names the backend that
    /// answered ([`PingEvent::Backend`], and with `connect_only` each
    /// probe's [`PingEvent::Connected`]).
    pub greeting_line: bool,
}

impl PingConfig {
    /// Probes to `endpoint` with every default.
    pub fn new(endpoint: Endpoint) -> PingConfig {
        PingConfig {
            endpoint,
            count: None,
            interval: DEFAULT_INTERVAL,
            size: DEFAULT_SIZE,
            timeout: DEFAULT_TIMEOUT,
            connect_only: false,
            tls: Default::default(),
            proxy: None,
            greeting_line: false,
        }
    }
}

/// Something that happened during a run, as it happened: ping(8) prints a
/// line for each.
#[derive(Debug)]
#[non_exhaustive]
pub enum PingEvent<'a> {
    /// Probing begins: `size`-byte probes.
    Begin {
        /// Bytes per probe.
        size: usize,
    },
    /// Handshake timing begins (`connect_only`), to `addr`.
    BeginHandshakes {
        /// The address each probe connects to.
        addr: SocketAddr,
    },
    /// A valid echo.
    Reply {
        /// Its length.
        bytes: usize,
        /// The probe's sequence number.
        seq: u64,
        /// Its round trip.
        rtt: Duration,
        /// A later probe had been answered first.
        reordered: bool,
        /// It came after its timeout was reported.
        late: bool,
    },
    /// A second valid echo of a probe already answered.
    Duplicate {
        /// Its length.
        bytes: usize,
        /// The probe's sequence number.
        seq: u64,
        /// Its round trip.
        rtt: Duration,
    },
    /// An echo of probe `seq` that differs from it.
    Corrupt {
        /// Its length.
        bytes: usize,
        /// The probe's sequence number.
        seq: u64,
        /// Where it first differs.
        how: Mismatch,
    },
    /// A reply that is not one of our probes at all.
    NotAProbe {
        /// Its length.
        bytes: usize,
        /// Where it differs from a probe's header.
        how: Mismatch,
    },
    /// A reply carrying a sequence number never sent.
    NeverSent {
        /// Its length.
        bytes: usize,
        /// The sequence number it carries.
        seq: u64,
    },
    /// A reply to a probe too old to be checked any more (ignored).
    TooLate {
        /// Its length.
        bytes: usize,
        /// The probe's sequence number.
        seq: u64,
    },
    /// No reply to probe `seq` within the timeout.
    Timeout {
        /// The probe's sequence number.
        seq: u64,
    },
    /// The server's host said nothing listens there (ICMP port
    /// unreachable).
    Unreachable,
    /// `connect_only`: a handshake completed.
    Connected {
        /// The probe's sequence number.
        seq: u64,
        /// How long the handshake took.
        rtt: Duration,
        /// With `greeting_line`: the line the server greeted with, which
        /// names the backend that answered.
        backend: Option<&'a str>,
    },
    /// With `greeting_line`, over a stream: the line the server greeted a
    /// new connection with (the backend that answers the probes on it).
    Backend {
        /// The line, without its newline.
        line: &'a str,
    },
    /// Probe `seq` could not connect (reconnecting over a stream, or
    /// `connect_only`).
    ConnectFailed {
        /// The probe's sequence number.
        seq: u64,
        /// Why.
        error: &'a Error,
    },
    /// Probe `seq` failed and the stream is opened again for the next.
    Reconnecting {
        /// The probe's sequence number.
        seq: u64,
        /// Why, in words.
        why: &'a str,
    },
    /// After a timeout over a stream: the connection is dropped, since a
    /// late echo would be read as the next probe's.
    OutOfStep,
    /// Probe `seq` could not be sent.
    SendFailed {
        /// The probe's sequence number.
        seq: u64,
        /// Why, in words.
        why: &'a str,
    },
}

/// The outcome of a ping run.
///
/// `lost` is `sent` minus the probes that got any reply tied to them: a
/// corrupt echo counts in `corrupt`, not also in `lost`. The loss
/// percentage, though, is of probes without a *valid* reply, `sent -
/// received`, as ping(8) has it. A late reply (after its timeout, while
/// the run still listens) counts as received, as ping(8) counts it, and
/// also in `late`.
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
    /// except those to a probe so old it is no longer tracked, whose probe
    /// stays lost.
    pub late: u64,
    /// "Destination port unreachable" reports (datagrams only).
    pub unreachable: u64,
    /// Probes without a valid reply (`sent - received`: lost, or answered
    /// only by a corrupt echo) as a percentage of `sent`, to three
    /// decimals.
    pub loss_percent: f64,
    /// From the first probe to the end of the run, milliseconds.
    pub time_ms: u64,
    /// Round-trip statistics over valid replies, microseconds.
    pub rtt_us: RttSummary,
    /// With `greeting_line`: connections per greeting line (per backend);
    /// left out of JSON when empty.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub backends: std::collections::BTreeMap<String, u64>,
}

impl PingSummary {
    /// Success as ping(8) has it: at least one valid reply and none
    /// corrupt.
    pub fn success(&self) -> bool {
        self.received > 0 && self.corrupt == 0
    }
}

/// What the caller does with each event; an error (its output is gone)
/// ends the run with [`Error::Output`].
pub type Observer<'o> = dyn FnMut(PingEvent<'_>) -> std::io::Result<()> + Send + 'o;

/// Runs the pings until `count` probes are settled or `stop` is cancelled,
/// handing each event to `observer`, and returns the summary.
///
/// A server that cannot be reached at the start is an error
/// ([`Error::Connect`]); once running, failures are counted, never fatal.
pub async fn run(
    config: &PingConfig,
    stop: &CancellationToken,
    observer: &mut Observer<'_>,
) -> Result<PingSummary, Error> {
    if config.size < HEADER_LEN {
        return Err(Error::Config(format!(
            "probe size must be at least {HEADER_LEN} bytes (the header)"
        )));
    }
    if let Some(why) = config.endpoint.not_measurable() {
        return Err(Error::Config(why));
    }
    if config.greeting_line && config.endpoint.kind() == Kind::Datagram {
        return Err(Error::setting(
            Setting::GreetingLine,
            format!(
                "only stream connections are greeted; {} is a datagram endpoint",
                config.endpoint
            ),
        ));
    }
    let mut tally = tally::Tally::new(observer);
    if config.connect_only {
        if !matches!(config.endpoint, Endpoint::Tcp(_)) {
            return Err(Error::setting(
                Setting::ConnectOnly,
                format!(
                    "times TCP handshakes; {} is not a tcp:// endpoint",
                    config.endpoint
                ),
            ));
        }
        stream::handshakes(config, stop, &mut tally).await?;
    } else {
        match config.endpoint.kind() {
            Kind::Stream => {
                if config.size > MAX_STREAM_PROBE {
                    return Err(Error::Config(format!(
                        "probe size must be at most {MAX_STREAM_PROBE} bytes over a stream"
                    )));
                }
                stream::run(config, stop, &mut tally).await?;
            }
            Kind::Datagram => datagram::run(config, stop, &mut tally).await?,
        }
    }
    Ok(tally.finish(config.endpoint.to_string()))
}

/// Waits for the next probe's slot on `schedule` and claims it; `false` if
/// `stop` came first.
async fn next_slot(schedule: &mut sockecho_flow::PingSchedule, stop: &CancellationToken) -> bool {
    let due = schedule.due(Instant::now());
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep_until(due.into()) => {
            schedule.advance();
            true
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

    #[tokio::test]
    async fn rejects_probes_smaller_than_the_header() {
        let config = PingConfig {
            count: Some(1),
            size: 10,
            ..PingConfig::new("udp://127.0.0.1:9".parse().unwrap())
        };
        let err = run(&config, &CancellationToken::new(), &mut |_| Ok(()))
            .await
            .unwrap_err();
        assert!(err.is_config());
        assert_eq!(
            err.to_string(),
            "probe size must be at least 24 bytes (the header)"
        );
    }
}
