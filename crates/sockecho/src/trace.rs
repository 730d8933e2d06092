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
//! What no descriptor can show comes from the kernel's socket
//! diagnostics (Linux `NETLINK_SOCK_DIAG`, what `ss` asks; `diag.rs`): a
//! listener's handshakes under way (SYN_RECV: a request socket has no
//! descriptor until `accept`), and a connection after its descriptor has
//! let go of it (FIN_WAIT2, TIME_WAIT: the kernel keeps TIME_WAIT in a
//! mini-socket of its own, and the descriptor reads CLOSE). After `close`
//! the trace follows the connection by its 4-tuple until the kernel's
//! tables no longer hold it or [`DEFAULT_FOLLOW`] (see
//! [`Tracer::follow_for`]) has passed, then ends it with its `states`
//! line (`timeline.rs`). Where the diagnostics are not there (not Linux)
//! or refused (a sandbox), one `sock_diag` line says so and the trace
//! goes on without them.
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
//! | `queue` | `local` (a listener's accept queue, at each accept and each interval); `syn_recv`: its handshakes under way, when they were read for this line (see [`Tracer::queue`]) |
//! | `accept` | `peer` |
//! | `connect` | `target`, `local`, `duration_us`; `error` when it failed |
//! | `sample` | `peer` (a live connection, every interval) |
//! | `eof` | `peer` (the peer half-closed: read returned 0) |
//! | `shutdown` | `peer`, `side` (`write`: our half-close) |
//! | `close` | `peer` (traced just before the descriptor is closed) |
//! | `syn_recv` | `local`, `peer`, `state`, `retransmits` (SYN-ACKs sent again), `timer_ms` (to the next): one per handshake under way, at most [`SYN_RECV_LISTED`] after each `queue` line |
//! | `diag` | `peer`, `state`, `timer_ms` (to the kernel's next step: the end of TIME_WAIT...): the kernel's tables hold the connection in another state than its descriptor last read (TIME_WAIT behind a CLOSE), or, after `close`, it moved on |
//! | `states` | `peer`, `timeline`: the connection's last line, the states the trace saw it in, in order, with the time in each (`LISTEN>SYN_RECV:1.0s>ESTABLISHED:2.3s>CLOSE_WAIT:80us>CLOSED`; `+` ends a state still going on when the trace stopped following, `CLOSED` says the kernel's tables no longer hold it; JSON: a list of `{"state","duration_us","ongoing"}`) |
//! | `sock_diag` | `error`: the kernel's socket diagnostics cannot be had, and why (once) |
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
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::events::{EventFormat, Out, Outbox, QUEUE_LINES};
use follow::{Conn, Watch, lock};
use record::Record;
use tcp_info::{CLOSE, SYN_RECV, TcpInfo};
use timeline::Timeline;

mod diag;
mod follow;
mod record;
mod tcp_info;
mod timeline;

/// How often a live connection and a listener's queue are sampled when no
/// interval is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a connection is followed after its close when no bound is
/// given: long enough to see FIN_WAIT2 end and TIME_WAIT begin, short
/// enough that `connect --trace` does not sit out TIME_WAIT's minute.
pub const DEFAULT_FOLLOW: Duration = Duration::from_secs(2);

/// Handshakes under way listed after each `queue` line at most (all are
/// counted in its `syn_recv`): a SYN flood must not flood the trace.
pub const SYN_RECV_LISTED: usize = 8;

/// Where trace events go, or nowhere. Cheap to clone: every connection task
/// holds one.
#[derive(Clone, Default)]
pub struct Tracer {
    /// `None` when tracing is off: every method returns at once.
    inner: Option<Arc<Sink>>,
}

struct Sink {
    /// Time between samples of a live connection or a listener's queue.
    interval: Duration,
    /// Where lines go; shared with the thread that follows closed
    /// connections.
    lines: Arc<Lines>,
    /// Whether the kernel's socket diagnostics answer: asked once, when a
    /// TCP socket first needs them.
    diag: OnceLock<bool>,
    /// Connections between socket calls and after their close.
    watch: Watch,
}

/// Lines rendered in the tracer's format, on their way out.
struct Lines {
    format: EventFormat,
    out: Out,
}

impl Lines {
    fn emit(&self, event: &'static str, fill: impl FnOnce(&mut Record)) {
        let mut record = Record::default();
        fill(&mut record);
        // Every trace line may be dropped: none is part of the contract's
        // promises the way `listen ok` is.
        self.out.send(record.render(event, self.format), false);
    }
}

impl Sink {
    /// Whether the kernel's socket diagnostics can be asked; the first
    /// time, asks, and says so once if not.
    fn diag(&self) -> bool {
        *self.diag.get_or_init(|| match diag::probe() {
            Ok(()) => true,
            Err(why) => {
                self.lines.emit("sock_diag", |r| r.text("error", &why));
                false
            }
        })
    }

    /// The connections waiting on the listener `fd` (handshakes under way,
    /// connections in its accept queue) and its address, when the
    /// diagnostics are there and the listener's pace allows reading them.
    fn waiting(&self, fd: RawFd) -> Option<(SocketAddr, Vec<diag::DiagSocket>)> {
        let now = Instant::now();
        if !self.diag() || !lock(&self.watch.pace).allows(fd, now, self.interval) {
            return None;
        }
        let addr = tcp_info::local_address(fd)?;
        let found = diag::waiting(addr, tcp_info::dual_stack(fd));
        lock(&self.watch.pace).read(fd, now, now.elapsed());
        // A read the kernel refused is left out of this sample.
        Some((addr, found.ok()?))
    }

    /// A trace line read `state` on the connection of descriptor `fd`. A
    /// descriptor reads CLOSE both when its connection is closed and when
    /// the kernel moved it to a TIME_WAIT mini-socket; the kernel's tables
    /// tell which.
    fn seen(&self, fd: RawFd, state: u8) {
        let now = Instant::now();
        let mut conns = lock(&self.watch.conns);
        let Some(conn) = conns.get_mut(&fd) else {
            return;
        };
        conn.said(state);
        let looked = state == CLOSE && self.diag() && conn.look(&self.lines, now).is_ok();
        if !looked {
            conn.timeline.see(state, now);
        }
    }

    /// The descriptor `fd` is being closed, its last reading `state`: the
    /// connection is followed from here, or its timeline ends now.
    fn closed(&self, fd: RawFd, state: Option<u8>) {
        if let Some(state) = state {
            self.seen(fd, state);
        }
        let Some(conn) = lock(&self.watch.conns).remove(&fd) else {
            return;
        };
        if conn.timeline.is_gone() || !self.diag() {
            conn.finish(&self.lines);
        } else {
            self.watch.follow(conn, &self.lines);
        }
    }
}

impl Drop for Sink {
    /// The last handle is gone: stop following, so the last `states` lines
    /// are written before the lines' writer finishes.
    fn drop(&mut self) {
        self.watch.stop(&self.lines);
    }
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("format", &self.inner.as_ref().map(|s| s.lines.format))
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
        let watch = Watch::default();
        watch.set_bound(DEFAULT_FOLLOW);
        Tracer {
            inner: Some(Arc::new(Sink {
                interval: interval.max(Duration::from_millis(1)),
                lines: Arc::new(Lines { format, out }),
                diag: OnceLock::new(),
                watch,
            })),
        }
    }

    /// Follows each connection for at most `bound` after its close
    /// (default [`DEFAULT_FOLLOW`]); zero: not at all, the `states` line
    /// comes at the close. Linux keeps TIME_WAIT for 60 seconds: a bound
    /// past that sees it end.
    pub fn follow_for(self, bound: Duration) -> Tracer {
        if let Some(sink) = &self.inner {
            sink.watch.set_bound(bound);
        }
        self
    }

    /// Waits until every connection followed after its close is let go
    /// (gone from the kernel's tables, or at its bound) and its `states`
    /// line written: a client about to exit waits here. At once when
    /// nothing is followed.
    pub async fn followed(&self) {
        if let Some(sink) = &self.inner {
            sink.watch.followed().await;
        }
    }

    /// Stops following closed connections (each is looked up once more,
    /// then its `states` line written), writes what is queued (and how
    /// many lines were dropped), waiting at most `within` for standard
    /// error to take it, then stops the writer thread: the program is
    /// about to exit. Returns how many lines could not be written in
    /// time; later lines are discarded. Nothing to write for a disabled
    /// tracer or a [`to`](Tracer::to) sink.
    pub fn finish(&self, within: Duration) -> u64 {
        self.inner.as_ref().map_or(0, |sink| {
            sink.watch.stop(&sink.lines);
            sink.lines.out.finish(within)
        })
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
            r.listener(tcp.and_then(TcpInfo::read));
        });
        // A TCP socket's first trace: whether the kernel's diagnostics are
        // there is said now, once.
        if let (Some(sink), Some(_)) = (&self.inner, tcp) {
            sink.diag();
        }
    }

    /// A listener's accept queue: its length against its limit, and the
    /// handshakes under way on it (SYN_RECV, from the kernel's socket
    /// diagnostics), each then on a `syn_recv` line. Only TCP listeners
    /// have a queue the kernel reports; for others nothing is traced.
    ///
    /// Reading the handshakes walks the kernel's whole connection table,
    /// so a listener's are read at most twice an interval and for at most
    /// a tenth of the time; a `queue` line without `syn_recv` (right after
    /// an `accept`, say) is one for which they were not read.
    pub fn queue(&self, local: &dyn Display, tcp: Option<RawFd>) {
        let (Some(sink), Some(fd)) = (&self.inner, tcp) else {
            return;
        };
        let info = TcpInfo::read(fd);
        let waiting = sink.waiting(fd);
        let under_way: Vec<&diag::DiagSocket> = waiting
            .iter()
            .flat_map(|(_, waiting)| waiting)
            .filter(|socket| socket.state == SYN_RECV)
            .collect();
        self.emit("queue", |r| {
            r.text("local", local);
            r.listener(info);
            if waiting.is_some() {
                r.num("syn_recv", under_way.len() as u64);
            }
        });
        for socket in under_way.iter().take(SYN_RECV_LISTED) {
            self.emit("syn_recv", |r| {
                r.text("local", &socket.local);
                r.text("peer", &socket.remote);
                r.diag(socket);
                r.num("retransmits", u64::from(socket.retransmits));
            });
        }
        if let Some((addr, waiting)) = &waiting {
            lock(&sink.watch.waiting).sampled(*addr, waiting, Instant::now());
        }
    }

    /// `accept(2)` returned a connection from `peer`: its timeline starts
    /// at the listener, with what the listener's samples saw of it waiting
    /// (SYN_RECV, then in the accept queue), if they saw it.
    pub fn accept(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        let state = self.emit_connection("accept", tcp, |r| r.text("peer", peer));
        let (Some(sink), Some(fd), Some(state)) = (&self.inner, tcp, state) else {
            return;
        };
        let Some(addresses) = tcp_info::addresses(fd) else {
            return;
        };
        let waited = lock(&sink.watch.waiting).take(addresses.0, addresses.1);
        let timeline = Timeline::accepted(&waited, state, Instant::now());
        let conn = Conn::new(peer.to_string(), addresses, timeline);
        lock(&sink.watch.conns).insert(fd, conn);
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
        let tcp = tcp.filter(|_| outcome.is_ok());
        let state = self.emit_connection("connect", tcp, |r| {
            r.text("target", target);
            match outcome {
                Ok(local) => r.text("local", local),
                Err(e) => r.text("error", &crate::error::reason(e)),
            }
            r.num(
                "duration_us",
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            );
        });
        let (Some(sink), Some(fd), Some(state)) = (&self.inner, tcp, state) else {
            return;
        };
        sink.diag();
        let Some(addresses) = tcp_info::addresses(fd) else {
            return;
        };
        let now = Instant::now();
        let started = now.checked_sub(took).unwrap_or(now);
        let timeline = Timeline::connected(started, state, now);
        lock(&sink.watch.conns).insert(fd, Conn::new(target.to_string(), addresses, timeline));
    }

    /// A live connection's kernel view, between socket calls.
    pub fn sample(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        let state = self.emit_connection("sample", tcp, |r| r.text("peer", peer));
        self.seen(tcp, state);
    }

    /// A read returned the end of the stream: the peer half-closed.
    pub fn eof(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        let state = self.emit_connection("eof", tcp, |r| r.text("peer", peer));
        self.seen(tcp, state);
    }

    /// `shutdown(2)` of `side` (`write`: our half-close).
    pub fn shutdown(&self, peer: &dyn Display, side: &'static str, tcp: Option<RawFd>) {
        let state = self.emit_connection("shutdown", tcp, |r| {
            r.text("peer", peer);
            r.text("side", &side);
        });
        self.seen(tcp, state);
    }

    /// The connection is about to be closed (`close(2)` when the socket is
    /// dropped); the state is the last the descriptor can report. From
    /// here the kernel's diagnostics follow the connection (see
    /// [`follow_for`](Tracer::follow_for)); call it before the descriptor
    /// is closed, as its addresses are read through it.
    pub fn close(&self, peer: &dyn Display, tcp: Option<RawFd>) {
        let state = self.emit_connection("close", tcp, |r| r.text("peer", peer));
        if let (Some(sink), Some(fd)) = (&self.inner, tcp) {
            sink.closed(fd, state);
        }
    }

    /// A connection's event: `fill`'s fields, then the kernel's view of
    /// the connection (read once). Returns the state read.
    fn emit_connection(
        &self,
        event: &'static str,
        tcp: Option<RawFd>,
        fill: impl FnOnce(&mut Record),
    ) -> Option<u8> {
        let sink = self.inner.as_ref()?;
        let info = tcp.and_then(TcpInfo::read);
        sink.lines.emit(event, |r| {
            fill(r);
            r.connection(info);
        });
        info.map(|i| i.state)
    }

    /// The connection of `tcp` was seen in `state` (its timeline).
    fn seen(&self, tcp: Option<RawFd>, state: Option<u8>) {
        if let (Some(sink), Some(fd), Some(state)) = (&self.inner, tcp, state) {
            sink.seen(fd, state);
        }
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
        if let Some(sink) = &self.inner {
            sink.lines.emit(event, fill);
        }
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
