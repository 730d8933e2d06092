//! The server's contract output: one line per event on standard output,
//! as text or JSON, flushed at once so scripts can wait on it.
//!
//! This is the only place that writes contract lines; logs go to standard
//! error through `tracing` and never mix with these.
//!
//! Event lines never hold up serving (the contract's "Event output"):
//! [`Events::stdout`] hands each line to one writer thread through a
//! bounded queue (`Outbox`), so a reader of standard output that stalls
//! (`serve | sleep 30`, a terminal paused with Ctrl-S, a slow log shipper)
//! costs lines, never echo. When the queue is full, per-connection lines
//! are dropped and counted, and the count is said in one line where the
//! gap is, once output flows again: `dropped N event lines (standard output
//! was not being read)`, or `{"event":"dropped","count":N}`. `listen ok`
//! and `tls fingerprint` lines are never dropped.
//!
//! Text lines escape control characters and backslashes (`\n`, `\t`,
//! `\u{1b}`, `\\`): a peer's Unix socket name is the peer's to choose, and
//! one holding a newline must not print a second, forged line (`listen ok
//! ...`) that scripts would believe. JSON lines are escaped by JSON.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use serde::Serialize;

use crate::endpoint::Endpoint;

/// How many lines wait for a stalled standard output before per-connection
/// lines are dropped: a few seconds of a busy server's connections, a few
/// hundred KiB at most.
pub const QUEUE_LINES: usize = 4096;

/// How long [`Events::finish`] (and the drop of the last handle) waits for
/// queued lines to be written by default: output that nobody reads must
/// not hold up the exit for longer.
pub const FINISH_WAIT: Duration = Duration::from_secs(1);

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    /// `listen ok tcp://127.0.0.1:9999`, `connection from ...`, `closed ...`.
    #[default]
    Text,
    /// One JSON object per line with the key `event`.
    Json,
}

/// Where the server's events go. Cheap to clone: every connection task
/// holds one.
#[derive(Clone, Default)]
pub struct Events {
    inner: Option<Arc<Sink>>,
}

struct Sink {
    format: EventFormat,
    /// Drops the per-connection lines (`-q`), keeping `listen ok`.
    quiet: bool,
    out: Out,
}

/// A line's way out: straight to the caller's function, or through the
/// queue to a writer thread (events and trace lines alike).
pub(crate) enum Out {
    Call(Box<dyn Fn(&str) + Send + Sync>),
    Queue(Outbox),
}

impl Out {
    /// Sends `line` (newline included) on its way; `keep`: never dropped.
    pub(crate) fn send(&self, line: String, keep: bool) {
        match self {
            Out::Call(out) => out(&line),
            Out::Queue(outbox) => outbox.push(line, keep),
        }
    }

    /// [`Outbox::finish`] for a queue; nothing to do for a function.
    pub(crate) fn finish(&self, within: Duration) -> u64 {
        match self {
            Out::Call(_) => 0,
            Out::Queue(outbox) => outbox.finish(within),
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("format", &self.inner.as_ref().map(|s| s.format))
            .finish()
    }
}

/// What a connection's JSON events say beyond its peer: the proxy it came
/// through, what its PROXY header and its TLS handshake said. Text lines
/// leave them out (the contract's lines are exactly as they were).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionFacts<'a> {
    /// The proxy's own address, when a PROXY header named the client.
    pub proxy: Option<&'a str>,
    /// The header's TLVs (version 2), when it had any.
    pub proxy_tlvs: Option<&'a crate::proxy::Tlvs>,
    /// What the TLS handshake settled, on `tls://` endpoints.
    pub tls: Option<&'a crate::transport::tls::TlsFacts>,
}

#[derive(Serialize)]
struct Record<'a> {
    event: &'a str,
    endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_tlvs: Option<&'a crate::proxy::Tlvs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a crate::transport::tls::TlsFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    /// HTTP requests served on the connection (`http://` endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<u64>,
}

impl Events {
    /// Events written to standard output by a writer thread of their own,
    /// so that a stalled reader never holds up serving (per-connection
    /// lines are dropped and counted instead). Call
    /// [`finish`](Events::finish) before exiting, or the last lines may be
    /// lost.
    pub fn stdout(format: EventFormat, quiet: bool) -> Events {
        // A closed stdout (`| head`) must not stop the server: the writer
        // ignores write errors, like a dropped log line.
        Events::writer(format, quiet, std::io::stdout())
    }

    /// Events written to `out` (flushed after each batch of lines) by a
    /// writer thread, through a queue of [`QUEUE_LINES`] lines, as
    /// [`stdout`](Events::stdout) does: for a log file or a pipe of the
    /// caller's.
    pub fn writer(format: EventFormat, quiet: bool, out: impl Write + Send + 'static) -> Events {
        let dropped = match format {
            EventFormat::Text => dropped_text,
            EventFormat::Json => dropped_json,
        };
        let outbox = Outbox::start("sockecho-events", QUEUE_LINES, Box::new(out), dropped);
        Events::with(format, quiet, Out::Queue(outbox))
    }

    /// Events handed, one line at a time (newline included), to `out`, on
    /// the thread that emits them: `out` must not block (tests, embedding).
    pub fn to(
        format: EventFormat,
        quiet: bool,
        out: impl Fn(&str) + Send + Sync + 'static,
    ) -> Events {
        Events::with(format, quiet, Out::Call(Box::new(out)))
    }

    fn with(format: EventFormat, quiet: bool, out: Out) -> Events {
        Events {
            inner: Some(Arc::new(Sink { format, quiet, out })),
        }
    }

    /// No events at all (a server embedded in another program's tests).
    pub fn silent() -> Events {
        Events { inner: None }
    }

    /// Writes what is queued (saying how many lines were dropped, if any
    /// were), waiting at most `within` for the output to take it, then
    /// stops the writer thread: the program is about to exit. Returns how
    /// many lines could not be written in time (the output was not being
    /// read); later lines are discarded. Nothing to do for
    /// [`to`](Events::to) and [`silent`](Events::silent) sinks. The last
    /// handle's drop does the same with [`FINISH_WAIT`].
    pub fn finish(&self, within: Duration) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |sink| sink.out.finish(within))
    }

    /// Event lines dropped so far because standard output was not being
    /// read (0 for sinks that never drop).
    pub fn dropped_total(&self) -> u64 {
        match self.inner.as_deref().map(|sink| &sink.out) {
            Some(Out::Queue(outbox)) => outbox.dropped_total(),
            _ => 0,
        }
    }

    /// `serve --metrics` serves its scrapes at `url`
    /// (`http://127.0.0.1:9100/metrics`): after the `listen ok` lines,
    /// never dropped.
    pub fn metrics(&self, url: &str) {
        let record = || Record::new_at("metrics", url.to_owned());
        self.emit(false, record, || format!("metrics ok {url}"));
    }

    /// The endpoint is bound and accepting traffic.
    pub fn listen(&self, endpoint: &Endpoint) {
        self.emit(
            false,
            || Record::new("listen", endpoint),
            || format!("listen ok {endpoint}"),
        );
    }

    /// A `tls://` endpoint presents a self-signed certificate made at
    /// start: its SHA-256 fingerprint, right after its `listen ok` line.
    pub fn tls_fingerprint(&self, endpoint: &Endpoint, fingerprint: &str) {
        let value = format!("sha256:{fingerprint}");
        let record = || {
            let mut record = Record::new("tls", endpoint);
            record.fingerprint = Some(value.clone());
            record
        };
        self.emit(false, record, || format!("tls fingerprint {value}"));
    }

    /// A stream connection was accepted.
    pub fn connection(&self, peer: &dyn std::fmt::Display, endpoint: &Endpoint) {
        self.connection_with(peer, endpoint, &ConnectionFacts::default());
    }

    /// A stream connection was accepted (and its PROXY header read, its
    /// TLS handshake done): `facts` go into the JSON event.
    pub fn connection_with(
        &self,
        peer: &dyn std::fmt::Display,
        endpoint: &Endpoint,
        facts: &ConnectionFacts<'_>,
    ) {
        let record = || {
            let mut record = Record::new("connection", endpoint);
            record.peer = Some(peer.to_string());
            record.proxy = facts.proxy;
            record.proxy_tlvs = facts.proxy_tlvs;
            record.tls = facts.tls;
            record
        };
        self.emit(true, record, || {
            format!("connection from {peer} on {endpoint}")
        });
    }

    /// A stream connection ended; `reason` is set when it ended on an error
    /// or a limit rather than a clean close.
    pub fn closed(
        &self,
        peer: &dyn std::fmt::Display,
        endpoint: &Endpoint,
        bytes_in: u64,
        bytes_out: u64,
        reason: Option<&str>,
    ) {
        self.closed_via(peer, endpoint, bytes_in, bytes_out, reason, None);
    }

    /// [`closed`](Events::closed) for a connection that came through the
    /// proxy `proxy` (its JSON event says so).
    pub fn closed_via(
        &self,
        peer: &dyn std::fmt::Display,
        endpoint: &Endpoint,
        bytes_in: u64,
        bytes_out: u64,
        reason: Option<&str>,
        proxy: Option<&str>,
    ) {
        self.closed_counted(peer, endpoint, bytes_in, bytes_out, None, reason, proxy);
    }

    /// [`closed_via`](Events::closed_via) for a connection that served
    /// `requests` HTTP requests (its JSON event says how many; the text
    /// line is the contract's as ever).
    #[allow(clippy::too_many_arguments)]
    pub fn closed_counted(
        &self,
        peer: &dyn std::fmt::Display,
        endpoint: &Endpoint,
        bytes_in: u64,
        bytes_out: u64,
        requests: Option<u64>,
        reason: Option<&str>,
        proxy: Option<&str>,
    ) {
        let record = || {
            let mut record = Record::new("closed", endpoint);
            record.requests = requests;
            record.peer = Some(peer.to_string());
            record.proxy = proxy;
            record.bytes_in = Some(bytes_in);
            record.bytes_out = Some(bytes_out);
            record.reason = reason;
            record
        };
        self.emit(true, record, || {
            // Exactly the contract's line: scripts match it. Why a
            // connection failed is in the JSON event's `reason` (and the
            // debug log).
            format!("closed {peer} in={bytes_in} out={bytes_out}")
        });
    }

    /// `per_connection` lines are the ones `-q` leaves out and a full
    /// queue drops. The record and the text are made only for a line that
    /// is written, in the format it is written in (a busy server with `-q`
    /// formats no address per connection).
    fn emit<'a>(
        &self,
        per_connection: bool,
        record: impl FnOnce() -> Record<'a>,
        text: impl FnOnce() -> String,
    ) {
        let Some(sink) = &self.inner else { return };
        if per_connection && sink.quiet {
            return;
        }
        let mut line = match sink.format {
            EventFormat::Text => escape_controls(text()),
            EventFormat::Json => serde_json::to_string(&record()).unwrap_or_default(),
        };
        line.push('\n');
        sink.out.send(line, !per_connection);
    }
}

/// The text line saying how many event lines were dropped.
fn dropped_text(count: u64) -> String {
    format!("dropped {count} event lines (standard output was not being read)\n")
}

/// The JSON line saying how many event lines (or trace lines) were dropped.
pub(crate) fn dropped_json(count: u64) -> String {
    format!("{{\"event\":\"dropped\",\"count\":{count}}}\n")
}

impl<'a> Record<'a> {
    fn new(event: &'a str, endpoint: &Endpoint) -> Record<'a> {
        Record::new_at(event, endpoint.to_string())
    }

    fn new_at(event: &'a str, endpoint: String) -> Record<'a> {
        Record {
            event,
            endpoint,
            requests: None,
            peer: None,
            proxy: None,
            proxy_tlvs: None,
            tls: None,
            bytes_in: None,
            bytes_out: None,
            reason: None,
            fingerprint: None,
        }
    }
}

/// Whether a character would break a text line or be read as something it
/// is not: control characters (newline, carriage return, escape...) and
/// the backslash that introduces an escape.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\'
}

/// `text` with control characters and backslashes escaped as Rust writes
/// them (`\n`, `\t`, `\0`, `\u{1b}`, `\\`); the same string, not a copy,
/// when there is nothing to escape (nearly always).
pub(crate) fn escape_controls(text: String) -> String {
    match escape(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

/// `text` with control characters and backslashes escaped, as event lines
/// print a peer's names (borrowed when there is nothing to escape): for
/// any text a peer chose that goes to a terminal.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Lines on their way to one writer thread through a bounded queue, so
/// that whoever emits a line never waits on whoever reads the output.
///
/// A line pushed as droppable when [`QUEUE_LINES`] (the capacity) are
/// already waiting is dropped and counted; the count becomes one line of
/// its own (made by the `dropped` function given) in the place of the gap:
/// before the next line queued, or after the last one when the queue
/// drains. Lines that must not be lost (`listen ok`) are queued whatever
/// the length: there are a handful of them, before serving starts.
///
/// One lock per line, never held while writing: lines are per connection
/// or per socket call, never per message.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines, or for the end.
    wake: Condvar,
    /// Lines dropped since the start, for `serve --metrics` (read without
    /// the lock).
    dropped_total: std::sync::atomic::AtomicU64,
    /// [`Outbox::finish`] waits here for the writer to be done.
    done: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Entry>,
    /// Lines dropped since the last entry was queued.
    dropped: u64,
    /// Finish asked: write what is queued, then stop.
    closing: bool,
    /// The writer has stopped; lines pushed now are discarded.
    stopped: bool,
}

enum Entry {
    Line(String),
    /// This many lines were dropped here.
    Dropped(u64),
}

/// Lines the writer takes from the queue at a time: one write and one
/// flush for all of them.
const BATCH: usize = 256;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a queue that is
        // still consistent (pushes and pops are single calls).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Outbox {
    /// Starts the writer thread, named `name`, writing to `out`.
    pub(crate) fn start(
        name: &str,
        capacity: usize,
        out: Box<dyn Write + Send>,
        dropped: fn(u64) -> String,
    ) -> Outbox {
        let shared = Arc::new(Shared {
            // The queue grows only as far as lines wait: an idle server
            // holds no buffer of thousands of lines.
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            dropped_total: std::sync::atomic::AtomicU64::new(0),
            done: Condvar::new(),
            capacity,
        });
        let writer_shared = shared.clone();
        let writer = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_lines(&writer_shared, out, dropped));
        let writer = match writer {
            Ok(handle) => Some(handle),
            Err(_) => {
                // No thread (out of threads or memory): no output rather
                // than a server that cannot start; pushes are discarded.
                shared.lock().stopped = true;
                None
            }
        };
        Outbox {
            shared,
            writer: Mutex::new(writer),
        }
    }

    /// Lines dropped since the start (a full queue).
    pub(crate) fn dropped_total(&self) -> u64 {
        self.shared
            .dropped_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `line` (newline included). A full queue drops it and counts
    /// it, unless `keep`: then it is queued whatever the length.
    pub(crate) fn push(&self, line: String, keep: bool) {
        let mut state = self.shared.lock();
        if state.stopped {
            return;
        }
        if !keep && state.queue.len() >= self.shared.capacity {
            state.dropped += 1;
            self.shared
                .dropped_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let was_empty = state.queue.is_empty();
        if state.dropped > 0 {
            let count = std::mem::take(&mut state.dropped);
            state.queue.push_back(Entry::Dropped(count));
        }
        state.queue.push_back(Entry::Line(line));
        drop(state);
        // The writer only waits on an empty queue.
        if was_empty {
            self.shared.wake.notify_one();
        }
    }

    /// Lets the writer write what is queued (and the count of lines
    /// dropped since), waits for it at most `within`, and stops it.
    /// Returns the lines not written (queued or dropped) when the output
    /// did not take them in time; the writer is then left behind, blocked
    /// on its write, and every later line is discarded.
    pub(crate) fn finish(&self, within: Duration) -> u64 {
        let mut state = self.shared.lock();
        state.closing = true;
        self.shared.wake.notify_one();
        state = self
            .shared
            .done
            .wait_timeout_while(state, within, |s| !s.stopped)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if !state.stopped {
            state.stopped = true;
            let queued = state.queue.iter().map(Entry::lines).sum::<u64>();
            let lost = queued + std::mem::take(&mut state.dropped);
            state.queue.clear();
            return lost;
        }
        drop(state);
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            // It has said it stopped: the join is immediate.
            let _ = writer.join();
        }
        0
    }
}

impl Drop for Outbox {
    /// The last handle is gone: what is queued still goes out, within
    /// [`FINISH_WAIT`].
    fn drop(&mut self) {
        if !self.shared.lock().stopped {
            self.finish(FINISH_WAIT);
        }
    }
}

impl Entry {
    /// The lines this entry stands for.
    fn lines(&self) -> u64 {
        match self {
            Entry::Line(_) => 1,
            Entry::Dropped(count) => *count,
        }
    }
}

/// The writer thread: takes lines in batches, writes and flushes each
/// batch, until finish is asked and the queue is empty.
fn write_lines(shared: &Shared, mut out: Box<dyn Write + Send>, dropped: fn(u64) -> String) {
    let mut batch = Vec::with_capacity(BATCH + 1);
    let mut bytes = Vec::with_capacity(PIPE_BUF);
    // After a broken pipe (`serve | head`) lines are taken and thrown
    // away: nobody will read them.
    let mut broken = false;
    loop {
        {
            let state = shared.lock();
            let mut state = shared
                .wake
                .wait_while(state, |s| {
                    s.queue.is_empty() && s.dropped == 0 && !s.closing && !s.stopped
                })
                .unwrap_or_else(PoisonError::into_inner);
            if state.stopped || (state.queue.is_empty() && state.dropped == 0) {
                state.stopped = true;
                drop(state);
                shared.done.notify_all();
                return;
            }
            let take = state.queue.len().min(BATCH);
            batch.extend(state.queue.drain(..take));
            // Drops after the last queued line are said once the queue
            // has drained: output flows again.
            if state.queue.is_empty() && state.dropped > 0 {
                batch.push(Entry::Dropped(std::mem::take(&mut state.dropped)));
            }
        }
        let mut write = |bytes: &mut Vec<u8>| {
            if !broken && let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
                broken = e.kind() == std::io::ErrorKind::BrokenPipe;
            }
            bytes.clear();
        };
        for entry in batch.drain(..) {
            let line = match entry {
                Entry::Line(line) => line,
                Entry::Dropped(count) => dropped(count),
            };
            // Whole lines of at most PIPE_BUF bytes a write: a pipe takes
            // each at once, so another writer to the same pipe (logs on
            // standard error) never lands inside one of these lines.
            if !bytes.is_empty() && bytes.len() + line.len() > PIPE_BUF {
                write(&mut bytes);
            }
            bytes.extend_from_slice(line.as_bytes());
        }
        write(&mut bytes);
    }
}

/// The most a write to a pipe delivers in one piece (`PIPE_BUF` on Linux;
/// elsewhere at least 512, and lines are rarely longer).
const PIPE_BUF: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(10);

    fn capture(format: EventFormat, quiet: bool) -> (Events, Arc<Mutex<String>>) {
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        let events = Events::to(format, quiet, move |line| {
            sink.lock().unwrap().push_str(line)
        });
        (events, seen)
    }

    /// An output that blocks every write until the test opens it, like a
    /// pipe nobody reads; it says when a write starts.
    #[derive(Clone)]
    struct Stalled {
        open: Arc<(Mutex<bool>, Condvar)>,
        seen: Arc<Mutex<Vec<u8>>>,
        started: mpsc::Sender<()>,
    }

    impl Stalled {
        fn new() -> (Stalled, mpsc::Receiver<()>) {
            let (started, writes) = mpsc::channel();
            let out = Stalled {
                open: Arc::new((Mutex::new(false), Condvar::new())),
                seen: Arc::new(Mutex::new(Vec::new())),
                started,
            };
            (out, writes)
        }

        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(self.seen.lock().unwrap().clone()).unwrap()
        }

        /// Waits (at most [`WAIT`]) until what was written contains `want`.
        fn wait_for(&self, want: &str) -> String {
            let deadline = Instant::now() + WAIT;
            loop {
                let text = self.text();
                if text.contains(want) {
                    return text;
                }
                assert!(Instant::now() < deadline, "{want:?} never came: {text:?}");
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.started.send(());
            let (open, cond) = &*self.open;
            let guard = cond
                .wait_while(open.lock().unwrap(), |open| !*open)
                .unwrap();
            drop(guard);
            self.seen.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn numbered(count: u64) -> String {
        format!("[{count} dropped]\n")
    }

    /// An outbox of `capacity` lines whose writer has taken `first` and is
    /// blocked writing it.
    fn stalled_outbox(capacity: usize) -> (Outbox, Stalled) {
        let (out, writes) = Stalled::new();
        let outbox = Outbox::start("test-writer", capacity, Box::new(out.clone()), numbered);
        outbox.push("first\n".into(), true);
        writes
            .recv_timeout(WAIT)
            .expect("the writer starts writing");
        (outbox, out)
    }

    #[test]
    fn a_full_queue_drops_lines_and_says_how_many_where_the_gap_is() {
        let (outbox, out) = stalled_outbox(2);
        outbox.push("a\n".into(), false);
        outbox.push("b\n".into(), false);
        // Full: these three are dropped, without waiting.
        let started = Instant::now();
        for line in ["c\n", "d\n", "e\n"] {
            outbox.push(line.into(), false);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // A line that must not be lost is queued anyway, after the count
        // (and beyond the capacity: the next droppable line is dropped).
        outbox.push("kept\n".into(), true);
        outbox.push("f\n".into(), false);
        out.open();
        assert_eq!(outbox.finish(WAIT), 0);
        assert_eq!(out.text(), "first\na\nb\n[3 dropped]\nkept\n[1 dropped]\n");
    }

    #[test]
    fn drops_are_said_once_output_flows_again_without_another_line() {
        let (outbox, out) = stalled_outbox(1);
        outbox.push("a\n".into(), false);
        outbox.push("b\n".into(), false);
        outbox.push("c\n".into(), false);
        out.open();
        assert_eq!(out.wait_for("dropped"), "first\na\n[2 dropped]\n");
        assert_eq!(outbox.finish(WAIT), 0);
    }

    #[test]
    fn finish_says_the_drops_still_pending() {
        let (outbox, out) = stalled_outbox(0);
        outbox.push("a\n".into(), false);
        out.open();
        assert_eq!(outbox.finish(WAIT), 0);
        assert_eq!(out.text(), "first\n[1 dropped]\n");
        // Lines after finish are discarded, not queued for nobody.
        outbox.push("late\n".into(), true);
        assert_eq!(outbox.shared.lock().queue.len(), 0);
    }

    #[test]
    fn finish_gives_up_on_an_output_nobody_reads() {
        let (outbox, out) = stalled_outbox(2);
        outbox.push("a\n".into(), false);
        outbox.push("b\n".into(), false);
        outbox.push("c\n".into(), false);
        let started = Instant::now();
        // Two queued and one dropped are lost; the writer stays blocked.
        assert_eq!(outbox.finish(Duration::from_millis(50)), 3);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Dropping the last handle does not wait again.
        let started = Instant::now();
        drop(outbox);
        assert!(started.elapsed() < Duration::from_millis(500));
        // Let the writer thread end.
        out.open();
    }

    #[test]
    fn dropping_the_last_handle_writes_what_is_queued() {
        let (out, _writes) = Stalled::new();
        out.open();
        let events = Events::writer(EventFormat::Text, false, out.clone());
        events.listen(&Endpoint::default());
        drop(events.clone());
        drop(events);
        assert_eq!(out.text(), "listen ok tcp://127.0.0.1:9999\n");
    }

    #[test]
    fn events_drop_per_connection_lines_never_listen_ok() {
        for format in [EventFormat::Text, EventFormat::Json] {
            let (out, writes) = Stalled::new();
            let events = Events::writer(format, false, out.clone());
            let ep = Endpoint::default();
            events.listen(&ep);
            writes
                .recv_timeout(WAIT)
                .expect("the writer starts writing");
            let extra = 10;
            for _ in 0..QUEUE_LINES + extra {
                events.connection(&"127.0.0.1:1", &ep);
            }
            events.tls_fingerprint(&ep, "ab");
            out.open();
            assert_eq!(events.finish(WAIT), 0);
            let text = out.text();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 1 + QUEUE_LINES + 2, "{format:?}");
            let (dropped, fingerprint) = (lines[1 + QUEUE_LINES], lines[2 + QUEUE_LINES]);
            match format {
                EventFormat::Text => {
                    assert_eq!(
                        dropped,
                        "dropped 10 event lines (standard output was not being read)"
                    );
                    assert_eq!(fingerprint, "tls fingerprint sha256:ab");
                }
                EventFormat::Json => {
                    let value: serde_json::Value = serde_json::from_str(dropped).unwrap();
                    assert_eq!(value, serde_json::json!({"event": "dropped", "count": 10}));
                    assert!(fingerprint.contains("\"sha256:ab\""), "{fingerprint}");
                }
            }
        }
    }

    #[test]
    fn text_lines_escape_control_characters_and_backslashes() {
        let (events, seen) = capture(EventFormat::Text, false);
        let ep: Endpoint = "unix:/tmp/a\\b".parse().unwrap();
        events.connection(&"unix:/tmp/x\nlisten ok tcp://1.2.3.4:5\t\u{1b}[2J", &ep);
        assert_eq!(
            *seen.lock().unwrap(),
            "connection from unix:/tmp/x\\nlisten ok tcp://1.2.3.4:5\\t\\u{1b}[2J \
             on unix:/tmp/a\\\\b\n"
        );
        // Nothing to escape: the line as it was.
        assert_eq!(
            escape("café 127.0.0.1:1"),
            Cow::Borrowed("café 127.0.0.1:1")
        );
        assert_eq!(escape("\u{85}\r\0"), "\\u{85}\\r\\0");
    }

    #[test]
    fn json_lines_keep_control_characters_as_json_escapes() {
        let (events, seen) = capture(EventFormat::Json, false);
        events.connection(&"unix:x\ny", &Endpoint::default());
        let line = seen.lock().unwrap().clone();
        assert_eq!(line.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["peer"], "unix:x\ny");
    }

    #[test]
    fn text_lines_follow_the_contract() {
        let (events, seen) = capture(EventFormat::Text, false);
        let ep: Endpoint = "tcp://127.0.0.1:9999".parse().unwrap();
        events.listen(&ep);
        events.connection(&"127.0.0.1:5555", &ep);
        events.closed(&"127.0.0.1:5555", &ep, 3, 21, None);
        assert_eq!(
            *seen.lock().unwrap(),
            "listen ok tcp://127.0.0.1:9999\n\
             connection from 127.0.0.1:5555 on tcp://127.0.0.1:9999\n\
             closed 127.0.0.1:5555 in=3 out=21\n"
        );
    }

    #[test]
    fn quiet_keeps_listen_only() {
        let (events, seen) = capture(EventFormat::Text, true);
        let ep = Endpoint::default();
        events.listen(&ep);
        events.connection(&"x", &ep);
        events.closed(&"x", &ep, 0, 0, None);
        assert_eq!(*seen.lock().unwrap(), "listen ok tcp://127.0.0.1:9999\n");
    }

    #[test]
    fn connection_facts_go_into_json_and_never_into_text() {
        let tls = crate::transport::tls::TlsFacts {
            version: "TLSv1.3".to_owned(),
            cipher: "TLS_AES_128_GCM_SHA256".to_owned(),
            sni: None,
            alpn: Some("h2".to_owned()),
            client_subject: None,
        };
        let tlvs = crate::proxy::Tlvs {
            authority: Some(b"echo.example".to_vec()),
            ..Default::default()
        };
        let facts = ConnectionFacts {
            proxy: Some("127.0.0.1:5000"),
            proxy_tlvs: Some(&tlvs),
            tls: Some(&tls),
        };
        let ep: Endpoint = "tls://127.0.0.1:9443".parse().unwrap();
        let (events, seen) = capture(EventFormat::Json, false);
        events.connection_with(&"192.0.2.7:40000", &ep, &facts);
        events.closed_via(&"192.0.2.7:40000", &ep, 1, 1, None, facts.proxy);
        let text = seen.lock().unwrap().clone();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["peer"], "192.0.2.7:40000");
        assert_eq!(lines[0]["proxy"], "127.0.0.1:5000");
        assert_eq!(lines[0]["proxy_tlvs"]["authority"], "echo.example");
        assert_eq!(lines[0]["tls"]["alpn"], "h2");
        // Absent, SNI is null rather than missing; no client certificate,
        // no subject.
        assert!(
            lines[0]["tls"]
                .get("sni")
                .is_some_and(serde_json::Value::is_null)
        );
        assert!(lines[0]["tls"].get("client_subject").is_none());
        assert_eq!(lines[1]["proxy"], "127.0.0.1:5000");
        assert!(lines[1].get("tls").is_none());

        let (events, seen) = capture(EventFormat::Text, false);
        events.connection_with(&"192.0.2.7:40000", &ep, &facts);
        assert_eq!(
            *seen.lock().unwrap(),
            "connection from 192.0.2.7:40000 on tls://127.0.0.1:9443\n"
        );
    }

    #[test]
    fn json_lines_carry_the_contract_keys() {
        let (events, seen) = capture(EventFormat::Json, false);
        let ep = Endpoint::default();
        events.listen(&ep);
        events.closed(&"127.0.0.1:1", &ep, 5, 6, Some("idle timeout"));
        let text = seen.lock().unwrap().clone();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"], "listen");
        assert_eq!(lines[0]["endpoint"], "tcp://127.0.0.1:9999");
        assert_eq!(lines[1]["event"], "closed");
        assert_eq!(lines[1]["peer"], "127.0.0.1:1");
        assert_eq!(lines[1]["bytes_in"], 5);
        assert_eq!(lines[1]["bytes_out"], 6);
        assert_eq!(lines[1]["reason"], "idle timeout");
    }
}
