//! `sockecho bench`: load an echo server and measure it honestly.
//!
//! - [`run`] connects every connection (or datagram flow), drives each as
//!   one task, shows progress, and folds the results into a
//!   [`report::BenchReport`].
//! - `stream` and `datagram` hold the per-connection drivers: one
//!   hand-written future each, written once for every transport of its
//!   kind. Closed-loop runs over TCP, Unix streams and UDP take the
//!   io_uring drivers instead (`uring`, `uring_dgram`) where the kernel
//!   offers io_uring; `--epoll` keeps them on tokio.
//! - [`pattern`] gives the bytes sent, so every echoed byte is verified
//!   with one `memcmp`.
//! - [`histogram`] records latencies into a high-dynamic-range histogram and
//!   serializes it (base64 of HdrHistogram's V2 compressed format) so runs
//!   from many machines can be merged exactly.
//! - [`report`] turns a run's parameters, counters and histogram into the
//!   contract's JSON object and a human summary, and merges reports.
//! - [`plot`] draws the latency-by-percentile chart written by `--plot`.
//!
//! With `--rate` the load is open-loop: each connection has a schedule of
//! intended send times, and latency is measured from the intended time, so
//! a server that stalls shows the stall in every message queued behind it
//! (no coordinated omission).

mod datagram;
pub mod histogram;
pub mod pattern;
pub mod plot;
pub mod report;
mod stream;
#[cfg(target_os = "linux")]
mod uring;
#[cfg(target_os = "linux")]
mod uring_dgram;
mod worker;

use std::future::Future as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::endpoint::{Endpoint, Kind};
use crate::error::Error;
use histogram::LatencyHistogram;
use pattern::{Difference, Pattern};
use report::{BenchCounts, BenchParams, BenchReport};

/// Messages one connection may owe (open loop, server stalled) before new
/// ones are dropped from the schedule and counted as overflow: bounds the
/// client's memory at a few MiB per connection.
const MAX_QUEUED: usize = 1 << 20;

/// tokio's timer fires up to a millisecond late (its wheel has 1 ms slots);
/// see [`Pacer::poll_due`].
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Completions a connection counts locally before adding them to the
/// shared progress counter: the progress line needs no per-message atomic.
const PROGRESS_BATCH: u64 = 64;

/// What `bench` does.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The echo server.
    pub endpoint: Endpoint,
    /// Connections (datagram flows).
    pub connections: usize,
    /// Bytes per message.
    pub message_size: usize,
    /// How long to measure, after the warmup.
    pub duration: Duration,
    /// Load before measuring, not counted.
    pub warmup: Duration,
    /// Total paced send rate, messages per second (open loop).
    pub rate: Option<f64>,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Datagrams: when an unanswered one counts as lost.
    pub timeout: Duration,
    /// Threads driving the connections; `None`: one per available core.
    pub threads: Option<usize>,
    /// Which I/O driver to use.
    pub driver: Driver,
    /// Show a live progress line on standard error.
    pub progress: bool,
    /// Cancelled to end the run early; what was measured is reported.
    pub stop: CancellationToken,
    /// How a `tls://` server is verified.
    pub tls: crate::transport::tls::ClientTlsOptions,
}

/// How bench connections do their I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// io_uring where the run and the kernel allow it, else epoll.
    #[default]
    Auto,
    /// tokio's epoll reactor always.
    Epoll,
}

/// The result of a run: the report, and the first wrong byte if any.
#[derive(Debug)]
pub struct BenchOutcome {
    /// The contract's report.
    pub report: BenchReport,
    /// Where the first echoed byte differed from what was sent, in words
    /// (`connection 3, byte offset 1234: sent 0x41, got 0x42`).
    pub first_mismatch: Option<String>,
    /// The first connection error, in words, when `errors` is not zero.
    pub first_error: Option<String>,
}

impl BenchOutcome {
    /// Why the run must fail (exit 1), in words, if it must: a wrong byte
    /// (which connection, which offset), connection errors, or no echo at
    /// all. A faulty server is never reported as healthy.
    pub fn failure(&self) -> Option<String> {
        let report = &self.report;
        if let Some(mismatch) = &self.first_mismatch {
            return Some(format!("echo differs from what was sent: {mismatch}"));
        }
        if report.errors > 0 {
            let first = self.first_error.as_deref().unwrap_or("unknown");
            return Some(format!(
                "{} connection errors in the run: first, {first}",
                report.errors
            ));
        }
        if report.messages == 0 && report.duration_s > 0.0 {
            return Some(format!(
                "no echo came back from {}: nothing in {:.1} s",
                report.endpoint, report.duration_s
            ));
        }
        None
    }
}

/// What every connection task reads.
struct Shared {
    message_size: usize,
    pipeline: usize,
    timeout: Duration,
    /// Seconds between one connection's sends, open loop.
    interval: Option<Duration>,
    connections: usize,
    pattern: Pattern,
    start: Instant,
    measure_start: Instant,
    end: Instant,
    /// Set (before `halt` is cancelled) when the user stops the run: a
    /// plain flag each connection checks per poll. The token's own check
    /// takes a lock shared by every thread.
    halted: std::sync::atomic::AtomicBool,
    /// Wakes every connection when the run is stopped.
    halt: CancellationToken,
    /// Completions so far, for the progress line.
    progress: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    /// The open-loop schedule of connection `id`, staggered so that the
    /// connections' sends interleave instead of bunching.
    fn pacer(&self, id: usize) -> Option<Pacer> {
        let interval = self.interval?;
        let offset = interval.mul_f64(id as f64 / self.connections as f64);
        let next = self.start + offset;
        Some(Pacer {
            next,
            interval,
            sleep: Box::pin(sleep_until(next)),
        })
    }
}

/// The end of a connection's run: the deadline, or the user's stop.
struct RunEnd {
    deadline: std::pin::Pin<Box<Sleep>>,
    stop: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl RunEnd {
    fn new(shared: &Shared) -> RunEnd {
        RunEnd {
            deadline: Box::pin(sleep_until(shared.end)),
            stop: Box::pin(shared.halt.clone().cancelled_owned()),
            registered: false,
        }
    }

    /// True once the run is over. The timer and the stop signal are polled
    /// once, to register the task's waker (a task's waker never changes);
    /// after that two flag checks are enough, far cheaper per message.
    fn poll(&mut self, cx: &mut Context<'_>, shared: &Shared) -> bool {
        if self.registered {
            return self.deadline.is_elapsed() || shared.halted.load(Ordering::Relaxed);
        }
        self.registered = true;
        self.deadline.as_mut().poll(cx).is_ready() || self.stop.as_mut().poll(cx).is_ready()
    }
}

/// An open-loop schedule: yields each intended send time once it is due.
struct Pacer {
    next: Instant,
    interval: Duration,
    sleep: std::pin::Pin<Box<Sleep>>,
}

impl Pacer {
    /// The next send time that is due, if any. A send that is late by no
    /// more than the timer's own granularity is timed from when the timer
    /// fired: that lateness is the client's clock, not the server's doing.
    /// Later than that, it is timed from when it was due, so a stall (of
    /// the server, or of the whole machine) shows in every message it
    /// delayed.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Option<Instant> {
        let now = Instant::now();
        if now < self.next {
            let _ = self.sleep.as_mut().poll(cx);
            return None;
        }
        let due = if now - self.next <= TIMER_SLACK {
            now
        } else {
            self.next
        };
        self.next += self.interval;
        self.sleep.as_mut().reset(self.next);
        Some(due)
    }
}

/// How a connection's run ended.
enum Ending {
    Done,
    Io(std::io::Error),
    Mismatch(Difference),
}

thread_local! {
    /// The latencies measured on this bench thread, all its connections
    /// together. One histogram per thread, not per connection: a histogram
    /// spanning 1 us to an hour is a few hundred KiB, and thousands of
    /// them would cost gigabytes and a cache miss per record.
    static LATENCIES: std::cell::RefCell<LatencyHistogram> =
        std::cell::RefCell::new(LatencyHistogram::new());
}

/// Takes this thread's latencies, leaving an empty histogram.
fn take_latencies() -> LatencyHistogram {
    LATENCIES.with_borrow_mut(std::mem::take)
}

/// What one thread hands back: each connection's outcome, and the
/// latencies of all of them.
type ThreadResult = (Vec<(usize, Outcome)>, LatencyHistogram);

/// What one connection measured.
struct Outcome {
    errors: u64,
    mismatches: u64,
    first_mismatch: Option<String>,
    lost: u64,
    /// Replies after their loss timeout (already counted lost).
    stale: u64,
    /// Datagrams answered more than once.
    duplicates: u64,
    /// The first I/O error, in words.
    first_error: Option<String>,
    /// Open-loop messages dropped from the schedule (see `MAX_QUEUED`).
    overflowed: u64,
    /// Bytes arrived that were never sent.
    unsolicited: bool,
    unreported: u64,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            errors: 0,
            mismatches: 0,
            first_mismatch: None,
            lost: 0,
            stale: 0,
            duplicates: 0,
            first_error: None,
            overflowed: 0,
            unsolicited: false,
            unreported: 0,
        }
    }

    /// A message came back intact at `now`: count it if inside the
    /// measured window.
    fn complete(&mut self, shared: &Shared, sent: Instant, now: Instant) {
        if now >= shared.measure_start && now < shared.end {
            LATENCIES.with_borrow_mut(|h| h.record_duration(now.duration_since(sent)));
        }
        self.unreported += 1;
        if self.unreported == PROGRESS_BATCH {
            shared.progress.fetch_add(PROGRESS_BATCH, Ordering::Relaxed);
            self.unreported = 0;
        }
    }

    fn note_mismatch(&mut self, id: usize, diff: Difference, what: &str) {
        self.mismatches += 1;
        self.first_mismatch.get_or_insert_with(|| {
            format!(
                "connection {id}, {what} byte offset {}: sent 0x{:02x}, got 0x{:02x}",
                diff.offset, diff.expected, diff.got
            )
        });
    }

    fn note_short(&mut self, id: usize, len: usize, what: &str) {
        self.mismatches += 1;
        self.first_mismatch
            .get_or_insert_with(|| format!("connection {id}: {what} ({len} bytes)"));
    }

    /// A datagram flow heard ICMP port unreachable: an error, counted, but
    /// not the end of the flow (the server may come back).
    fn note_refused(&mut self, id: usize, e: &std::io::Error) {
        self.errors += 1;
        self.first_error
            .get_or_insert_with(|| format!("connection {id}: {}", crate::error::reason(e)));
    }

    fn end(&mut self, id: usize, ending: Ending) {
        match ending {
            Ending::Done => {}
            Ending::Io(e) => {
                tracing::debug!(connection = id, cause = %e, "connection failed");
                self.errors += 1;
                self.first_error.get_or_insert_with(|| {
                    format!("connection {id}: {}", crate::error::reason(&e))
                });
            }
            Ending::Mismatch(diff) => {
                let what = if self.unsolicited {
                    "unsolicited"
                } else {
                    "stream"
                };
                self.note_mismatch(id, diff, what);
            }
        }
    }
}

/// Runs a bench: connects, loads, measures, reports.
///
/// Fails only if no connection at all can be made; a connection that fails
/// later is counted in `errors` and the run goes on with the others.
pub async fn run(config: &BenchConfig) -> Result<BenchOutcome, Error> {
    validate(config)?;
    let kind = config.endpoint.kind();
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, config.connections);

    // One thread per core, each with its own single-threaded runtime and
    // its share of the connections, as a hand-written epoll client would:
    // no work stealing, no cross-thread wakeups on the hot path. A socket
    // belongs to the runtime that made it, so each thread connects its own.
    let use_uring = uring_suits(config);
    tracing::debug!(
        driver = if use_uring { "io_uring" } else { "epoll" },
        threads,
        "bench driver"
    );
    let tls = crate::transport::tls::client_for(&config.endpoint, &config.tls)?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(threads);
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let ids: Vec<usize> = (t..config.connections).step_by(threads).collect();
        let target = worker::Target {
            endpoint: config.endpoint.clone(),
            kind,
            tls: tls.clone(),
        };
        let ready_tx = ready_tx.clone();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || worker::worker(ids, target, use_uring, ready_tx, go_rx, done_tx))
            .map_err(|e| Error::io("starting a bench thread", e))?;
        workers.push((go_tx, done_rx));
    }
    drop(ready_tx);

    // Connect everything before the clock starts.
    let mut connected = 0usize;
    let mut connect_errors = 0u64;
    let mut first_error = None;
    while let Some(ready) = ready_rx.recv().await {
        connected += ready.connected;
        connect_errors += ready.errors;
        if first_error.is_none() {
            first_error = ready.first_error;
        }
    }
    if connected == 0 {
        // Dropping the senders lets every worker thread end.
        return Err(first_error.unwrap_or_else(|| Error::Usage("no connections".to_owned())));
    }

    let start = Instant::now();
    let measure_start = start + config.warmup;
    let shared = Arc::new(Shared {
        message_size: config.message_size,
        pipeline: config.pipeline,
        timeout: config.timeout,
        interval: config
            .rate
            .map(|rate| Duration::from_secs_f64(config.connections as f64 / rate)),
        connections: config.connections,
        pattern: Pattern::new(),
        start,
        measure_start,
        end: measure_start + config.duration,
        halted: std::sync::atomic::AtomicBool::new(false),
        halt: CancellationToken::new(),
        progress: AtomicU64::new(0),
        errors: AtomicU64::new(connect_errors),
    });
    let mut results = Vec::with_capacity(threads);
    for (go_tx, done_rx) in workers {
        // A worker whose connections all failed has already ended.
        let _ = go_tx.send(shared.clone());
        results.push(done_rx);
    }
    let finished = CancellationToken::new();
    let watcher = {
        let (shared, stop, finished) = (shared.clone(), config.stop.clone(), finished.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {
                    shared.halted.store(true, Ordering::SeqCst);
                    shared.halt.cancel();
                    Some(Instant::now())
                }
                _ = finished.cancelled() => None,
            }
        })
    };
    let progress = config
        .progress
        .then(|| spawn_progress(shared.clone(), finished.clone()));

    let mut counts = BenchCounts {
        errors: connect_errors,
        lost: (kind == Kind::Datagram).then_some(0),
        duplicates: (kind == Kind::Datagram).then_some(0),
        ..BenchCounts::default()
    };
    let mut first_error = first_error.map(|e| e.to_string());
    let mut first_mismatch: Option<(usize, String)> = None;
    let mut histogram = LatencyHistogram::new();
    let mut outcomes = Vec::with_capacity(config.connections);
    for done in results {
        if let Ok((thread_outcomes, latencies)) = done.await {
            outcomes.extend(thread_outcomes);
            histogram.add(&latencies);
        }
    }
    for (id, outcome) in outcomes {
        counts.errors += outcome.errors;
        counts.mismatches += outcome.mismatches;
        if let Some(lost) = counts.lost.as_mut() {
            *lost += outcome.lost;
        }
        if let Some(dups) = counts.duplicates.as_mut() {
            *dups += outcome.duplicates;
        }
        if first_error.is_none() {
            first_error = outcome.first_error;
        }
        if outcome.overflowed > 0 {
            tracing::warn!(
                messages = outcome.overflowed,
                "open-loop schedule overflowed: the server fell too far behind"
            );
        }
        if let Some(text) = outcome.first_mismatch {
            // Report the lowest-numbered connection's, for a stable message.
            if first_mismatch.as_ref().is_none_or(|(i, _)| id < *i) {
                first_mismatch = Some((id, text));
            }
        }
    }
    finished.cancel();
    let halted_at = watcher.await.ok().flatten();
    if let Some(bar) = progress {
        let _ = bar.await;
    }
    // Measuring stopped at the end, or when the user stopped the run (not
    // when the polite close after it finished).
    let ended = halted_at
        .unwrap_or(shared.end)
        .min(shared.end)
        .min(Instant::now());
    counts.duration = ended.saturating_duration_since(measure_start);
    let params = BenchParams {
        endpoint: config.endpoint.to_string(),
        connections: config.connections as u64,
        message_size: config.message_size as u64,
        pipeline: config.pipeline as u32,
        rate: config.rate,
    };
    let report = BenchReport::new(&params, &counts, &histogram)
        .map_err(|e| Error::invalid("building the report", &e))?;
    Ok(BenchOutcome {
        report,
        first_mismatch: first_mismatch.map(|(_, text)| text),
        first_error,
    })
}

/// Reads `bench --json` files and merges them into one report.
pub fn merge_files(paths: &[std::path::PathBuf]) -> Result<BenchReport, Error> {
    let mut reports = Vec::with_capacity(paths.len());
    for path in paths {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
        reports.push(BenchReport::from_json(&text).map_err(|e| Error::invalid(&what, &e))?);
    }
    BenchReport::merge(&reports).map_err(|e| Error::invalid("cannot merge the reports", &e))
}

/// Writes `report`'s latency-percentile chart to `path` (SVG), titled with
/// the run's parameters.
pub fn write_plot(report: &BenchReport, path: &std::path::Path) -> Result<(), Error> {
    let mut title = format!(
        "sockecho bench {}: {} conns x {} B, {:.1} s, {} msgs",
        report.endpoint,
        report.connections,
        report.message_size,
        report.duration_s,
        report.messages
    );
    if let Some(k) = report.pipeline.filter(|k| *k > 1) {
        title.push_str(&format!(", pipeline {k}"));
    }
    if let Some(rate) = report.rate {
        title.push_str(&format!(", rate {rate:.0}/s"));
    }
    let histogram = report
        .histogram()
        .map_err(|e| Error::invalid("reading the histogram", &e))?;
    plot::write_percentile_plot(path, &title, &[("latency", &histogram)])
        .map_err(|e| Error::invalid(format!("cannot write {}", path.display()), &e))
}

/// The io_uring drivers serve closed-loop TCP, Unix stream and UDP runs
/// where the kernel offers io_uring; everything else goes through tokio.
fn uring_suits(config: &BenchConfig) -> bool {
    #[cfg(target_os = "linux")]
    {
        config.rate.is_none()
            && config.driver != Driver::Epoll
            && match config.endpoint {
                Endpoint::Tcp(_) | Endpoint::Unix(_) => true,
                // A completion names its datagram's slot in 10 bits.
                Endpoint::Udp(_) => config.pipeline <= 1024,
                _ => false,
            }
            && uring::available()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = config;
        false
    }
}

fn validate(config: &BenchConfig) -> Result<(), Error> {
    let usage = |text: &str| Err(Error::Usage(text.to_owned()));
    if config.connections == 0 {
        return usage("bench needs at least one connection");
    }
    if config.pipeline == 0 {
        return usage("--pipeline must be at least 1");
    }
    if config.message_size == 0 {
        return usage("message size must be at least 1 byte");
    }
    if let Some(rate) = config.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return usage("--rate must be a positive number of messages per second");
    }
    if config.endpoint.kind() == Kind::Datagram {
        if config.message_size < datagram::HEADER {
            return usage("datagram bench messages need at least 8 bytes (their sequence number)");
        }
        if matches!(config.endpoint, Endpoint::Udp(_))
            && config.message_size > crate::transport::datagram::MAX_UDP_PAYLOAD
        {
            return usage("UDP messages can carry at most 65507 bytes");
        }
    }
    Ok(())
}

/// The live progress line: elapsed time, current rate, errors. Only on a
/// terminal (the caller decides), redrawn four times a second.
fn spawn_progress(shared: Arc<Shared>, finished: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = finished.cancelled() => break,
            }
            let now = Instant::now();
            let done = shared.progress.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, done);
            let phase = if now < shared.measure_start {
                "warmup "
            } else {
                ""
            };
            bar.set_message(format!(
                "{phase}{:.0} msgs/s  errors {}",
                rate,
                shared.errors.load(Ordering::Relaxed)
            ));
            bar.tick();
        }
        bar.finish_and_clear();
    })
}
