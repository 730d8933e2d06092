//! What `serve --metrics` counts, and its scrape in the Prometheus text
//! format (through the Prometheus project's `prometheus-client` crate).
//!
//! Counting never takes a lock and never contends on one cache line: each
//! [`Counter`] is [`SHARDS`] atomics, one cache line each, and a thread
//! adds to the one its index picks (threads get indexes in turn as they
//! first count), so the engines' threads each write their own line. A
//! scrape adds the shards up. The hot paths count as cheaply as that
//! allows: the epoll engine per read and write (one relaxed add, beside
//! the system call), the io_uring engine once per round of completions,
//! the UDP batch thread once per batch, datagram by datagram only on the
//! one-at-a-time loop. With no `--metrics` nothing is counted at all.
//!
//! Series, each labelled `endpoint` (the endpoint as bound), but the last:
//!
//! | series | type | labels |
//! |---|---|---|
//! | `sockecho_connections_open` | gauge | stream endpoints |
//! | `sockecho_connections_total` | counter | stream connections served |
//! | `sockecho_connections_refused_total` | counter | `reason`: `access_list`, `max_conns_per_ip`, `max_conns`, `proxy_untrusted`, `proxy_header` |
//! | `sockecho_bytes_received_total`, `sockecho_bytes_sent_total` | counter | every endpoint |
//! | `sockecho_datagrams_received_total`, `sockecho_datagrams_answered_total` | counter | datagram endpoints |
//! | `sockecho_datagrams_dropped_total` | counter | `reason`: the guard's (`access_list`, `port_zero`, `low_port`, `own_port`, `loop`, `rate`, `unnamed`) |
//! | `sockecho_http_requests_total` | counter | `code`: the status answered |
//! | `sockecho_websocket_messages_total` | counter | `type`: `text`, `binary` (messages echoed) |
//! | `sockecho_events_dropped_total` | counter | none: event lines dropped because standard output was not read |

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::endpoint::{Endpoint, Kind};
use crate::events::Events;
use crate::guard::NoReply;

mod scrape;

pub use scrape::{CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT, serve};

/// Atomics per counter: more than the threads of a typical server, so
/// that each engine thread adds to a cache line of its own.
pub const SHARDS: usize = 16;

/// One cache line holding one atomic, so that two threads' shards never
/// share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// A counter added to by many threads without contention: a shard per
/// thread (modulo [`SHARDS`]), summed when read.
#[derive(Debug, Default)]
pub struct Counter([Slot; SHARDS]);

/// Which shard this thread adds to: threads are numbered in the order they
/// first count.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl Counter {
    /// Adds `n` (a relaxed add to this thread's shard).
    #[inline]
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0[shard()].0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The sum of every shard.
    pub fn get(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, slot| {
            sum.wrapping_add(slot.0.load(Ordering::Relaxed))
        })
    }
}

/// Why a stream connection was refused, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--allow`/`--deny` (or their files) refuse the address.
    AccessList,
    /// `--max-conns-per-ip`.
    PerSource,
    /// `--max-conns`.
    MaxConns,
    /// A PROXY header from a peer not trusted to send one.
    ProxyUntrusted,
    /// No PROXY header, or a malformed one.
    ProxyHeader,
}

impl Refused {
    const ALL: [Refused; 5] = [
        Refused::AccessList,
        Refused::PerSource,
        Refused::MaxConns,
        Refused::ProxyUntrusted,
        Refused::ProxyHeader,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::AccessList => "access_list",
            Refused::PerSource => "max_conns_per_ip",
            Refused::MaxConns => "max_conns",
            Refused::ProxyUntrusted => "proxy_untrusted",
            Refused::ProxyHeader => "proxy_header",
        }
    }
}

/// The guard's reasons for not answering a datagram, in label order.
const NO_REPLY: [NoReply; 7] = [
    NoReply::Denied,
    NoReply::PortZero,
    NoReply::LowPort,
    NoReply::Itself,
    NoReply::Loop,
    NoReply::Rate,
    NoReply::Unnamed,
];

fn no_reply_index(why: NoReply) -> usize {
    NO_REPLY.iter().position(|r| *r == why).unwrap_or(0)
}

fn no_reply_label(why: NoReply) -> &'static str {
    match why {
        NoReply::Denied => "access_list",
        NoReply::PortZero => "port_zero",
        NoReply::LowPort => "low_port",
        NoReply::Itself => "own_port",
        NoReply::Loop => "loop",
        NoReply::Rate => "rate",
        NoReply::Unnamed => "unnamed",
    }
}

/// A WebSocket message's type, as the `type` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A text message (UTF-8).
    Text,
    /// A binary message.
    Binary,
}

/// The lowest and highest status an HTTP answer can have.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 500;

/// Everything counted for one endpoint (one bound socket).
#[derive(Debug)]
pub struct Meter {
    /// The endpoint as bound: the `endpoint` label.
    endpoint: String,
    kind: Kind,
    web: bool,
    connections: Counter,
    closed: Counter,
    refused: [Counter; 5],
    bytes_in: Counter,
    bytes_out: Counter,
    datagrams_in: Counter,
    datagrams_answered: Counter,
    dropped: [Counter; 7],
    /// HTTP answers by status (100 to 599). Plain atomics, not shards: a
    /// request costs far more than a contended add, and shards of 500
    /// counters would cost half a megabyte per endpoint.
    statuses: Box<[AtomicU64]>,
    messages: [Counter; 2],
}

impl Meter {
    fn new(endpoint: &Endpoint) -> Meter {
        Meter {
            endpoint: endpoint.to_string(),
            kind: endpoint.kind(),
            web: endpoint.web().is_some(),
            connections: Counter::default(),
            closed: Counter::default(),
            refused: Default::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            datagrams_in: Counter::default(),
            datagrams_answered: Counter::default(),
            dropped: Default::default(),
            statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            messages: Default::default(),
        }
    }

    /// A stream connection was admitted (it counts as open until
    /// [`closed`](Meter::closed)).
    pub fn opened(&self) {
        self.connections.add(1);
    }

    /// A stream connection ended.
    pub fn closed(&self) {
        self.closed.add(1);
    }

    /// A stream connection was refused.
    pub fn refused(&self, why: Refused) {
        let index = Refused::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[index].add(1);
    }

    /// Bytes received.
    #[inline]
    pub fn received(&self, bytes: u64) {
        self.bytes_in.add(bytes);
    }

    /// Bytes sent.
    #[inline]
    pub fn sent(&self, bytes: u64) {
        self.bytes_out.add(bytes);
    }

    /// An HTTP request was answered with `status`.
    pub fn answered(&self, status: u16) {
        if let Some(slot) = status
            .checked_sub(FIRST_STATUS)
            .and_then(|i| self.statuses.get(usize::from(i)))
        {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A WebSocket message was echoed.
    pub fn message(&self, kind: MessageType) {
        self.messages[kind as usize].add(1);
    }

    /// What a datagram loop counted over a batch (or one datagram).
    pub fn datagrams(&self, tally: &DatagramTally) {
        self.datagrams_in.add(tally.received);
        self.datagrams_answered.add(tally.answered);
        self.bytes_in.add(tally.bytes_in);
        self.bytes_out.add(tally.bytes_out);
        for (counter, n) in self.dropped.iter().zip(tally.dropped) {
            counter.add(n);
        }
    }

    /// Open stream connections now.
    pub fn open(&self) -> u64 {
        // Closed is read first: a connection opened in between makes the
        // gauge one too high for a moment, never below zero.
        let closed = self.closed.get();
        self.connections.get().saturating_sub(closed)
    }
}

/// A datagram loop's counts between two folds into its [`Meter`]: kept by
/// the loop itself, so a batch of datagrams costs a handful of adds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DatagramTally {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams answered.
    pub answered: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent in replies.
    pub bytes_out: u64,
    /// Datagrams not answered, by the guard's reason.
    pub dropped: [u64; 7],
}

impl DatagramTally {
    /// One datagram the guard refused a reply, for `why`.
    pub(crate) fn drop(&mut self, why: NoReply) {
        self.dropped[no_reply_index(why)] += 1;
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == DatagramTally::default()
    }
}

/// The counters of one server, one [`Meter`] per endpoint; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every endpoint's meter, in the order they were added: a lock taken
    /// at start and at each scrape, never while counting.
    meters: Mutex<Vec<Arc<Meter>>>,
    /// Where the server's event lines go: how many were dropped.
    events: Mutex<Events>,
}

impl Metrics {
    /// No endpoint yet.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The meter of `endpoint` (as bound), made on first use.
    pub fn meter(&self, endpoint: &Endpoint) -> Arc<Meter> {
        let mut meters = self
            .inner
            .meters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let name = endpoint.to_string();
        if let Some(meter) = meters.iter().find(|m| m.endpoint == name) {
            return meter.clone();
        }
        let meter = Arc::new(Meter::new(endpoint));
        meters.push(meter.clone());
        meter
    }

    /// The event sink whose dropped lines `sockecho_events_dropped_total`
    /// counts.
    pub fn count_events_of(&self, events: &Events) {
        *self
            .inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = events.clone();
    }

    /// The scrape: every series, in the OpenMetrics text format (`# EOF`
    /// last), as `prometheus-client` writes it.
    pub fn openmetrics(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collector(self.clone())));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// The scrape in the classic Prometheus text format (version 0.0.4),
    /// for scrapers that do not ask for OpenMetrics: the same samples, a
    /// counter's `# HELP` and `# TYPE` naming it with its `_total`, and no
    /// `# EOF` line.
    pub fn text(&self) -> String {
        let open = self.openmetrics();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            match counter_header(line) {
                Some((head, name, rest)) => {
                    let _ = writeln!(out, "{head}{name}_total{rest}");
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A `# HELP` or `# TYPE` line of one of our counters, cut around its name.
fn counter_header(line: &str) -> Option<(&str, &str, &str)> {
    let head = ["# HELP ", "# TYPE "]
        .into_iter()
        .find(|head| line.starts_with(head))?;
    let after = &line[head.len()..];
    let end = after.find(' ').unwrap_or(after.len());
    let name = &after[..end];
    COUNTERS
        .contains(&name)
        .then(|| (head, name, &after[end..]))
}

/// Our counters' family names (the samples carry `_total`).
const COUNTERS: [&str; 10] = [
    "sockecho_connections",
    "sockecho_connections_refused",
    "sockecho_bytes_received",
    "sockecho_bytes_sent",
    "sockecho_datagrams_received",
    "sockecho_datagrams_answered",
    "sockecho_datagrams_dropped",
    "sockecho_http_requests",
    "sockecho_websocket_messages",
    "sockecho_events_dropped",
];

/// Reads the meters at each scrape.
#[derive(Debug)]
struct Collector(Metrics);

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

fn labels(meter: &Meter) -> Labels {
    vec![("endpoint".into(), meter.endpoint.clone().into())]
}

fn with(meter: &Meter, key: &'static str, value: String) -> Labels {
    let mut set = labels(meter);
    set.push((key.into(), value.into()));
    set
}

/// One family: its descriptor, then one sample per label set.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    gauge: bool,
    samples: Vec<(Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let metric_type = if gauge {
        ConstGauge::new(0i64).metric_type()
    } else {
        ConstCounter::new(0u64).metric_type()
    };
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        let sample = family.encode_family(&labels)?;
        if gauge {
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(sample)?;
        } else {
            ConstCounter::new(value).encode(sample)?;
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let meters: Vec<Arc<Meter>> = self
            .0
            .inner
            .meters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let streams = || meters.iter().filter(|m| m.kind == Kind::Stream);
        let datagrams = || meters.iter().filter(|m| m.kind == Kind::Datagram);
        let each = |pick: &dyn Fn(&Meter) -> u64, set: &mut dyn Iterator<Item = &Arc<Meter>>| {
            set.map(|m| (labels(m), pick(m))).collect::<Vec<_>>()
        };
        let e = &mut encoder;
        family(
            e,
            "sockecho_connections_open",
            "Stream connections open now.",
            true,
            each(&|m| m.open(), &mut streams()),
        )?;
        family(
            e,
            "sockecho_connections",
            "Stream connections served (admitted) since the start.",
            false,
            each(&|m| m.connections.get(), &mut streams()),
        )?;
        let refused = streams()
            .flat_map(|m| {
                Refused::ALL.iter().enumerate().filter_map(move |(i, why)| {
                    let n = m.refused[i].get();
                    (n > 0).then(|| (with(m, "reason", why.label().to_owned()), n))
                })
            })
            .collect();
        family(
            e,
            "sockecho_connections_refused",
            "Stream connections refused, by reason.",
            false,
            refused,
        )?;
        family(
            e,
            "sockecho_bytes_received",
            "Bytes received from peers.",
            false,
            each(&|m| m.bytes_in.get(), &mut meters.iter()),
        )?;
        family(
            e,
            "sockecho_bytes_sent",
            "Bytes sent to peers.",
            false,
            each(&|m| m.bytes_out.get(), &mut meters.iter()),
        )?;
        family(
            e,
            "sockecho_datagrams_received",
            "Datagrams received.",
            false,
            each(&|m| m.datagrams_in.get(), &mut datagrams()),
        )?;
        family(
            e,
            "sockecho_datagrams_answered",
            "Datagrams answered.",
            false,
            each(&|m| m.datagrams_answered.get(), &mut datagrams()),
        )?;
        let dropped = datagrams()
            .flat_map(|m| {
                NO_REPLY.iter().enumerate().filter_map(move |(i, why)| {
                    let n = m.dropped[i].get();
                    (n > 0).then(|| (with(m, "reason", no_reply_label(*why).to_owned()), n))
                })
            })
            .collect();
        family(
            e,
            "sockecho_datagrams_dropped",
            "Datagrams not answered, by the guard's reason.",
            false,
            dropped,
        )?;
        let web = || meters.iter().filter(|m| m.web);
        let statuses = web()
            .flat_map(|m| {
                m.statuses.iter().enumerate().filter_map(move |(i, n)| {
                    let n = n.load(Ordering::Relaxed);
                    let code = usize::from(FIRST_STATUS) + i;
                    (n > 0).then(|| (with(m, "code", code.to_string()), n))
                })
            })
            .collect();
        family(
            e,
            "sockecho_http_requests",
            "HTTP requests answered, by status code.",
            false,
            statuses,
        )?;
        let messages = web()
            .flat_map(|m| {
                [(MessageType::Text, "text"), (MessageType::Binary, "binary")]
                    .into_iter()
                    .map(move |(kind, name)| {
                        let n = m.messages[kind as usize].get();
                        (with(m, "type", name.to_owned()), n)
                    })
            })
            .collect();
        family(
            e,
            "sockecho_websocket_messages",
            "WebSocket messages echoed, by type.",
            false,
            messages,
        )?;
        let events = self
            .0
            .inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped_total();
        family(
            e,
            "sockecho_events_dropped",
            "Event lines dropped because standard output was not being read.",
            false,
            vec![(Vec::new(), events)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_across_threads() {
        let counter = Arc::new(Counter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.add(3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.get(), 24_000);
    }

    #[test]
    fn a_scrape_has_the_contracts_series() {
        let metrics = Metrics::new();
        let tcp: Endpoint = "tcp://127.0.0.1:7".parse().unwrap();
        let udp: Endpoint = "udp://127.0.0.1:7".parse().unwrap();
        let web: Endpoint = "http://127.0.0.1:8".parse().unwrap();
        let m = metrics.meter(&tcp);
        m.opened();
        m.opened();
        m.closed();
        m.received(10);
        m.sent(12);
        m.refused(Refused::MaxConns);
        let mut tally = DatagramTally {
            received: 3,
            answered: 2,
            bytes_in: 30,
            bytes_out: 20,
            ..DatagramTally::default()
        };
        tally.drop(NoReply::LowPort);
        metrics.meter(&udp).datagrams(&tally);
        let w = metrics.meter(&web);
        w.answered(200);
        w.answered(404);
        w.answered(404);
        w.message(MessageType::Binary);
        let text = metrics.text();
        for line in [
            "# TYPE sockecho_connections_open gauge",
            "sockecho_connections_open{endpoint=\"tcp://127.0.0.1:7\"} 1",
            "# TYPE sockecho_connections_total counter",
            "sockecho_connections_total{endpoint=\"tcp://127.0.0.1:7\"} 2",
            "sockecho_bytes_received_total{endpoint=\"tcp://127.0.0.1:7\"} 10",
            "sockecho_bytes_sent_total{endpoint=\"tcp://127.0.0.1:7\"} 12",
            "sockecho_connections_refused_total{endpoint=\"tcp://127.0.0.1:7\",reason=\"max_conns\"} 1",
            "sockecho_datagrams_received_total{endpoint=\"udp://127.0.0.1:7\"} 3",
            "sockecho_datagrams_answered_total{endpoint=\"udp://127.0.0.1:7\"} 2",
            "sockecho_datagrams_dropped_total{endpoint=\"udp://127.0.0.1:7\",reason=\"low_port\"} 1",
            "sockecho_http_requests_total{endpoint=\"http://127.0.0.1:8\",code=\"404\"} 2",
            "sockecho_websocket_messages_total{endpoint=\"http://127.0.0.1:8\",type=\"binary\"} 1",
            "sockecho_events_dropped_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
        let open = metrics.openmetrics();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE sockecho_connections counter\n"),
            "{open}"
        );
    }
}
