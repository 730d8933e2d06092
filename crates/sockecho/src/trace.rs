//! Tracing: the socket's life as the first lesson teaches it, live.
//!
//! Each socket call (socket, bind, listen, accept, connect, shutdown,
//! close) becomes one line on standard error, followed on the same line by
//! what the kernel says about the socket afterwards. On Linux that view
//! comes from `getsockopt(TCP_INFO)`:
//!
//! - every TCP socket: its state, named as the kernel names it
//!   (`include/net/tcp_states.h`: `LISTEN`, `ESTABLISHED`, `FIN_WAIT2`...);
//! - a connection: `rtt_us`, `rttvar_us` (smoothed RTT and its variation,
//!   microseconds), `retransmits` (`tcpi_total_retrans`), `snd_cwnd`
//!   (segments), `bytes_acked`;
//! - a listener: `queue` (connections that finished the handshake and wait
//!   for accept, `tcpi_unacked`) against `queue_max` (the backlog the
//!   kernel applies, `tcpi_sacked`: the listen backlog capped at
//!   `net.core.somaxconn`). Linux admits one more than the backlog before
//!   it drops SYNs, so a full queue reads `queue=6 queue_max=5`.
//!
//! Unix sockets and platforms without TCP_INFO get the socket calls
//! without kernel fields: a field we cannot read is left out, never made
//! up.
//!
//! Text lines read `trace: EVENT key=value...`; JSON lines are one object
//! per line with `event` first and the same keys, numbers as numbers. The
//! events and their keys:
//!
//! | event | keys (besides the kernel's) |
//! |---|---|
//! | `socket` | `family` (`AF_INET`, `AF_INET6`, `AF_UNIX`), `type` |
//! | `bind` | `addr` (asked for), `local` (bound, port filled in) |
//! | `listen` | `local`, `backlog` (asked for) |
//! | `queue` | `local` (a listener's accept queue, at each accept and each interval) |
//! | `accept` | `peer` |
//! | `connect` | `target`, `local`, `duration_us`; `error` when it failed |
//! | `sample` | `peer` (a live connection, every interval) |
//! | `eof` | `peer` (the peer half-closed: read returned 0) |
//! | `shutdown` | `peer`, `side` (`write`: our half-close) |
//! | `close` | `peer` (traced just before the descriptor is closed) |
//! | `dropped` | `count` (lines lost to a standard error nobody read, [`Tracer::stderr`]) |
//!
//! Text values holding a space, a quote, `=`, a backslash or a control
//! character are quoted and escaped as Rust writes strings (`"a\nb"`), so
//! a peer's name cannot break a line or forge another.
//!
//! A disabled [`Tracer`] is one `None` check per call and formats nothing,
//! so the echo path pays nothing when tracing is off; an enabled one
//! writes at socket calls and timer ticks, never per message, and hands
//! each line to a writer thread rather than wait on standard error.

use std::convert::Infallible;
use std::fmt::{self, Display};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::events::{EventFormat, Out, Outbox, QUEUE_LINES};
use tcp_info::{LISTEN, TcpInfo, state_name};

mod tcp_info;

/// How often a live connection and a listener's queue are sampled when no
/// interval is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Where trace events go, or nowhere. Cheap to clone: every connection task
/// holds one.
#[derive(Clone, Default)]
pub struct Tracer {
    /// `None` when tracing is off: every method returns at once.
    inner: Option<Arc<Sink>>,
}

struct Sink {
    format: EventFormat,
    /// Time between samples of a live connection or a listener's queue.
    interval: Duration,
    out: Out,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("format", &self.inner.as_ref().map(|s| s.format))
            .field("interval", &self.inner.as_ref().map(|s| s.interval))
            .finish()
    }
}

impl Tracer {
    /// No tracing: the default.
    pub fn disabled() -> Tracer {
        Tracer { inner: None }
    }

    /// Trace lines on standard error, sampling every `interval` (a zero
    /// interval is taken as 1 ms: a timer cannot tick continuously).
    ///
    /// A writer thread of its own writes them, through a queue of
    /// [`QUEUE_LINES`] lines, as the events on standard output are: a
    /// standard error that is read slowly (a terminal paused with Ctrl-S,
    /// a slow log shipper) costs trace lines, never serving. Lines that
    /// find the queue full are dropped and counted, and the count is said
    /// in their place once the output flows again: `trace: dropped
    /// count=N`, or `{"event":"dropped","count":N}`. Call
    /// [`finish`](Tracer::finish) before exiting (the last handle's drop
    /// does it too), or the last lines may be lost.
    pub fn stderr(format: EventFormat, interval: Duration) -> Tracer {
        let dropped = match format {
            EventFormat::Text => dropped_text,
            EventFormat::Json => crate::events::dropped_json,
        };
        // Each batch is one write: lines from concurrent connections do
        // not interleave; a closed stderr must not stop the server (the
        // writer ignores write errors).
        let outbox = Outbox::start(
            "sockecho-trace",
            QUEUE_LINES,
            Box::new(io::stderr()),
            dropped,
        );
        Tracer::with(format, interval, Out::Queue(outbox))
    }

    /// Trace lines handed, one at a time (newline included), to `out`, on
    /// the thread that traces: `out` must not block (tests, embedding).
    pub fn to(
        format: EventFormat,
        interval: Duration,
        out: impl Fn(&str) + Send + Sync + 'static,
    ) -> Tracer {
        Tracer::with(format, interval, Out::Call(Box::new(out)))
    }

    fn with(format: EventFormat, interval: Duration, out: Out) -> Tracer {
        Tracer {
            inner: Some(Arc::new(Sink {
                format,
                interval: interval.max(Duration::from_millis(1)),
                out,
            })),
        }
    }

    /// Writes what is queued (and how many lines were dropped), waiting at
    /// most `within` for standard error to take it, then stops the writer
    /// thread: the program is about to exit. Returns how many lines could
    /// not be written in time; later lines are discarded. Nothing to do
    /// for a disabled tracer or a [`to`](Tracer::to) sink.
    pub fn finish(&self, within: Duration) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |sink| sink.out.finish(within))
    }

    /// Whether anything is traced.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `socket(2)` made a socket of `family` (`AF_INET`...) and `kind`
    /// (`SOCK_STREAM`...). `tcp` is its descriptor if it is a TCP socket.
    pub fn socket(&self, family: &'static str, kind: &'static str, tcp: Option<RawFd>) {
        self.emit("socket", |r| {
            r.text("family", &family);
            r.text("type", &kind);
            r.state(tcp);
        });
    }

    /// `bind(2)` to `addr`; `local` is the address really bound.
    pub fn bind(&self, addr: &dyn Display, local: &dyn Display, tcp: Option<RawFd>) {
        self.emit("bind", |r| {
            r.text("addr", addr);
            r.text("local", local);
            r.state(tcp);
        });
    }

    /// `listen(2)` with `backlog`, and the accept queue it made.
    pub fn listen(&self, local: &dyn Display, backlog: i32, tcp: Option<RawFd>) {
        self.emit("listen", |r| {
            r.text("local", local);
            r.num("backlog", u64::try_from(backlog).unwrap_or(0));
            r.listener(tcp);
        });
    }

    /// A listener's accept queue: its length against its limit. Only TCP
    /// listeners have one the kernel reports; for others nothing is traced.
    pub fn queue(&self, local: &dyn Display, tcp: Option<RawFd>) {
        if tcp.is_none() {
            return;
        }
        self.emit("queue", |r| {
            r.text("local", local);
            r.listener(tcp);
        });
    }

    /// `accept(2)` returned a connection from `peer`.
    pub fn accept(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        self.emit("accept", |r| {
            r.text("peer", peer);
            r.connection(tcp);
        });
    }

    /// `connect(2)` to `target` finished after `took`: connected from
    /// `local`, or failed with `error`.
    pub fn connect(
        &self,
        target: &dyn Display,
        took: Duration,
        outcome: Result<&dyn Display, &io::Error>,
        tcp: Option<RawFd>,
    ) {
        self.emit("connect", |r| {
            r.text("target", target);
            match outcome {
                Ok(local) => r.text("local", local),
                Err(e) => r.text("error", &crate::error::reason(e)),
            }
            r.num(
                "duration_us",
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            );
            if outcome.is_ok() {
                r.connection(tcp);
            }
        });
    }

    /// A live connection's kernel view, between socket calls.
    pub fn sample(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        self.emit("sample", |r| {
            r.text("peer", peer);
            r.connection(tcp);
        });
    }

    /// A read returned the end of the stream: the peer half-closed.
    pub fn eof(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        self.emit("eof", |r| {
            r.text("peer", peer);
            r.connection(tcp);
        });
    }

    /// `shutdown(2)` of `side` (`write`: our half-close).
    pub fn shutdown(&self, peer: &dyn Display, side: &'static str, tcp: Option<RawFd>) {
        self.emit("shutdown", |r| {
            r.text("peer", peer);
            r.text("side", &side);
            r.connection(tcp);
        });
    }

    /// The connection is about to be closed (`close(2)` when the socket is
    /// dropped); the state is the last the descriptor can report.
    pub fn close(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        self.emit("close", |r| {
            r.text("peer", peer);
            r.connection(tcp);
        });
    }

    /// The time between samples, when tracing.
    pub fn interval(&self) -> Option<Duration> {
        self.inner.as_ref().map(|s| s.interval)
    }

    /// Samples a live connection every interval, forever: select on it
    /// beside the connection's work, in the connection's own task, so the
    /// samples end when the connection does. Never completes when tracing
    /// is off or the socket is not TCP (nothing to sample).
    pub async fn sample_every(
        &self,
        peer: &(dyn Display + Sync),
        tcp: Option<RawFd>,
    ) -> Infallible {
        if tcp.is_none() {
            return std::future::pending().await;
        }
        let mut ticks = self.ticks();
        loop {
            ticks.tick().await;
            self.sample(peer, tcp);
        }
    }

    /// A clock that ticks every interval from now (the first tick one
    /// interval away), or never when tracing is off.
    pub fn ticks(&self) -> Ticks {
        Ticks(self.interval().map(|period| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            // A stalled runtime samples late rather than in a burst.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        }))
    }

    fn emit(&self, event: &'static str, fill: impl FnOnce(&mut Record)) {
        let Some(sink) = &self.inner else { return };
        let mut record = Record::default();
        fill(&mut record);
        // Every trace line may be dropped: none is part of the contract's
        // promises the way `listen ok` is.
        sink.out.send(record.render(event, sink.format), false);
    }
}

/// The text line saying how many trace lines were dropped.
fn dropped_text(count: u64) -> String {
    format!("trace: dropped count={count}\n")
}

/// The sampling clock of [`Tracer::ticks`]: select on [`tick`](Ticks::tick)
/// beside the real work; with tracing off it never fires.
#[derive(Debug)]
pub struct Ticks(Option<tokio::time::Interval>);

impl Ticks {
    /// Waits for the next tick (forever, when tracing is off). Cancel-safe.
    pub async fn tick(&mut self) {
        match &mut self.0 {
            Some(ticks) => {
                ticks.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// One trace line's fields, in order, rendered as text or JSON.
#[derive(Default)]
struct Record {
    fields: Vec<(&'static str, Value)>,
}

enum Value {
    Text(String),
    Num(u64),
}

impl Record {
    fn text(&mut self, key: &'static str, value: &dyn Display) {
        self.fields.push((key, Value::Text(value.to_string())));
    }

    fn num(&mut self, key: &'static str, value: u64) {
        self.fields.push((key, Value::Num(value)));
    }

    /// The TCP state alone (a socket not yet connected or listening).
    fn state(&mut self, tcp: Option<RawFd>) {
        if let Some(info) = tcp.and_then(TcpInfo::read) {
            self.text("state", &state_name(info.state));
        }
    }

    /// State and the listener's accept queue.
    fn listener(&mut self, tcp: Option<RawFd>) {
        let Some(info) = tcp.and_then(TcpInfo::read) else {
            return;
        };
        self.text("state", &state_name(info.state));
        // Only a LISTEN socket reuses these two fields for its queue.
        if info.state == LISTEN {
            if let Some(queue) = info.unacked {
                self.num("queue", u64::from(queue));
            }
            if let Some(limit) = info.sacked {
                self.num("queue_max", u64::from(limit));
            }
        }
    }

    /// State and a connection's transmission figures.
    fn connection(&mut self, tcp: Option<RawFd>) {
        let Some(info) = tcp.and_then(TcpInfo::read) else {
            return;
        };
        self.text("state", &state_name(info.state));
        let figures = [
            ("rtt_us", info.rtt_us.map(u64::from)),
            ("rttvar_us", info.rttvar_us.map(u64::from)),
            ("retransmits", info.total_retrans.map(u64::from)),
            ("snd_cwnd", info.snd_cwnd.map(u64::from)),
            ("bytes_acked", info.bytes_acked),
        ];
        for (key, value) in figures {
            if let Some(value) = value {
                self.num(key, value);
            }
        }
    }

    fn render(&self, event: &str, format: EventFormat) -> String {
        let mut line = String::with_capacity(160);
        match format {
            EventFormat::Text => {
                line.push_str("trace: ");
                line.push_str(event);
                for (key, value) in &self.fields {
                    line.push(' ');
                    line.push_str(key);
                    line.push('=');
                    match value {
                        Value::Num(n) => line.push_str(&n.to_string()),
                        // Quoted only when a space or quote would make the
                        // line ambiguous (a Unix path, an error reason), or
                        // a control character or backslash would break it
                        // or forge another (a peer's socket name holding a
                        // newline): Debug quoting escapes those.
                        Value::Text(t)
                            if t.is_empty()
                                || t.contains([' ', '"', '=', '\\'])
                                || t.contains(char::is_control) =>
                        {
                            line.push_str(&format!("{t:?}"));
                        }
                        Value::Text(t) => line.push_str(t),
                    }
                }
            }
            EventFormat::Json => {
                let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
                line.push_str("{\"event\":");
                line.push_str(&quote(event));
                for (key, value) in &self.fields {
                    line.push(',');
                    line.push_str(&quote(key));
                    line.push(':');
                    match value {
                        Value::Num(n) => line.push_str(&n.to_string()),
                        Value::Text(t) => line.push_str(&quote(t)),
                    }
                }
                line.push('}');
            }
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn capture(format: EventFormat) -> (Tracer, Arc<Mutex<String>>) {
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        let tracer = Tracer::to(format, DEFAULT_INTERVAL, move |line| {
            sink.lock().unwrap().push_str(line)
        });
        (tracer, seen)
    }

    #[test]
    fn disabled_writes_nothing() {
        let tracer = Tracer::disabled();
        assert!(!tracer.is_enabled());
        tracer.socket("AF_INET", "SOCK_STREAM", None);
        assert_eq!(tracer.interval(), None);
    }

    #[test]
    fn text_lines_are_key_value_with_quoting_where_needed() {
        let (tracer, seen) = capture(EventFormat::Text);
        tracer.socket("AF_UNIX", "SOCK_STREAM", None);
        tracer.bind(&"unix:/tmp/a b", &"unix:/tmp/a b", None);
        assert_eq!(
            *seen.lock().unwrap(),
            "trace: socket family=AF_UNIX type=SOCK_STREAM\n\
             trace: bind addr=\"unix:/tmp/a b\" local=\"unix:/tmp/a b\"\n"
        );
    }

    #[test]
    fn text_values_with_control_characters_or_backslashes_are_escaped() {
        let (tracer, seen) = capture(EventFormat::Text);
        tracer.accept(&"unix:/tmp/x\nlisten ok tcp://1.2.3.4:5", None);
        tracer.accept(&"unix:/tmp/a\\b\u{1b}", None);
        assert_eq!(
            *seen.lock().unwrap(),
            "trace: accept peer=\"unix:/tmp/x\\nlisten ok tcp://1.2.3.4:5\"\n\
             trace: accept peer=\"unix:/tmp/a\\\\b\\u{1b}\"\n"
        );
    }

    #[test]
    fn the_dropped_line_reads_like_the_other_trace_lines() {
        assert_eq!(dropped_text(7), "trace: dropped count=7\n");
    }

    #[test]
    fn json_lines_keep_numbers_as_numbers() {
        let (tracer, seen) = capture(EventFormat::Json);
        tracer.listen(&"127.0.0.1:9999", 5, None);
        let line = seen.lock().unwrap().clone();
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(value["event"], "listen");
        assert_eq!(value["local"], "127.0.0.1:9999");
        assert_eq!(value["backlog"], 5);
    }

    #[test]
    fn failed_connect_names_the_error_and_no_state() {
        let (tracer, seen) = capture(EventFormat::Text);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        tracer.connect(
            &"127.0.0.1:1",
            Duration::from_micros(42),
            Err(&refused),
            None,
        );
        let line = seen.lock().unwrap().clone();
        assert!(
            line.starts_with("trace: connect target=127.0.0.1:1 error="),
            "{line}"
        );
        assert!(line.ends_with(" duration_us=42\n"), "{line}");
    }
}
