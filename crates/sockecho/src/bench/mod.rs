//! `bench`: load an echo server and measure it honestly.
//!
//! - [`run`] starts a thread per core, each connecting its share of the
//!   connections (or datagram flows), drives them, and folds the results
//!   into a [`BenchReport`].
//! - What each flow sends and what each echo means is decided by the flow
//!   cores of `sockecho-flow` ([`StreamFlow`](sockecho_flow::StreamFlow),
//!   [`DatagramFlow`](sockecho_flow::DatagramFlow)); the drivers here do
//!   only the I/O: `stream` and `datagram` on tokio (one hand-written
//!   future per connection), `uring` and `uring_dgram` on io_uring for
//!   closed-loop TCP, Unix stream and UDP runs where the kernel offers it.
//! - `record` is what every driver does with a completion or an error:
//!   the histogram, the progress counters.
//!
//! With a rate the load is open-loop: each connection has a schedule of
//! intended send times, and latency is measured from the intended time, so
//! a server that stalls shows the stall in every message queued behind it
//! (no coordinated omission). The raw latency, from each message's actual
//! send, is kept beside it, and so is how far the client itself fell
//! behind its schedule, so that a slow client is never taken for a slow
//! server.
//!
//! Beyond one run: [`find_rate`] searches for the highest open-loop rate
//! that meets a latency target; intervals report a run as it goes
//! ([`run_observed`]); a start time by the wall clock lets runs on many
//! machines measure the same window; source addresses spread connections
//! past one address's port range.

mod datagram;
mod files;
mod find;
mod interval;
#[cfg(target_os = "linux")]
mod nofile;
mod record;
mod source;
mod stream;
#[cfg(target_os = "linux")]
mod uring;
#[cfg(target_os = "linux")]
mod uring_dgram;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sockecho_flow::{Behind, Pattern, Tally, Window};
use sockecho_measure::histogram::LatencyHistogram;
use sockecho_measure::interval::IntervalReport;
use sockecho_measure::report::{
    BackendShare, BehindSchedule, BenchCounts, BenchParams, BenchReport, ConnectSummary,
    LatencyPercentiles,
};
use tokio_util::sync::CancellationToken;

use crate::endpoint::{Endpoint, Kind};
use crate::error::{Error, Setting};
use crate::guard::Cidr;

pub use files::{merge_files, merge_reports, read_reports};
pub use find::DEFAULT_TIME as DEFAULT_FIND_TIME;
pub use find::{DEFAULT_START_RATE, FindOutcome, FindRate, LatencyTarget, find_rate};
pub use sockecho_flow::search::DEFAULT_STEPS as DEFAULT_FIND_STEPS;
pub use sockecho_flow::search::Stop as FindStop;

pub use sockecho_flow::HEADER as DATAGRAM_HEADER;

/// Connections when none are given.
pub const DEFAULT_CONNECTIONS: usize = 10;
/// Bytes per message when none are given.
pub const DEFAULT_MESSAGE_SIZE: usize = 64;
/// How long to measure when not told.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How long an unanswered datagram waits before it counts as lost.
pub const DEFAULT_LOSS_TIMEOUT: Duration = Duration::from_secs(1);

/// The fastest one connection's open-loop schedule is paced: a message
/// every 100 ns. Taking a message from the schedule costs a clock
/// comparison and a queue push, some tens of nanoseconds; a schedule
/// faster than that moves on faster than any client can follow it (a
/// connection sends a few million small messages a second at best), so
/// such a rate is refused rather than half-kept. More connections pace
/// more.
pub const MAX_RATE_PER_CONNECTION: f64 = 1e7;

/// The slowest one connection's schedule is paced: a message every
/// 1,000,000 s (11.6 days), longer than any run (a duration is at most a
/// day). A slower schedule sends nothing but connection 0's first message,
/// and at the extreme its interval fits no `Duration` (`--rate 1e-20`):
/// refused, rather than run as something other than what was asked.
pub const MIN_RATE_PER_CONNECTION: f64 = 1e-6;

/// How far ahead a start time may be: a day, the longest a run lasts.
/// Further is taken for a mistake (a date typed wrong) rather than waited
/// out.
pub const MAX_START_WAIT: Duration = Duration::from_secs(86_400);

/// The shortest interval reported: finer slices would cost the threads a
/// hand-over each time and say little.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// How far ahead of the go signal an open-loop schedule starts: the time
/// for every thread to wake, start its runtime and arm its connections.
/// Without it the first messages of each connection go out late, by the
/// client's start-up alone, and a short run's tail is that start-up.
pub const OPEN_LOOP_LEAD: Duration = Duration::from_millis(20);

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
    /// How a `tls://` server is verified.
    pub tls: crate::transport::tls::ClientTlsOptions,
    /// Wait, connected, until this wall-clock time before the warmup
    /// starts, so that runs on many machines measure the same window.
    pub start_at: Option<SystemTime>,
    /// Spread connections over the addresses of this block, each bound
    /// to one before it connects (TCP, TLS, UDP).
    pub source: Option<Cidr>,
    /// Report the run in intervals of this length as it goes
    /// ([`run_observed`]); at least [`MIN_INTERVAL`].
    pub intervals: Option<Duration>,
    /// Streams: each connection sends a PROXY protocol header first, as a
    /// load balancer would.
    pub proxy: Option<crate::transport::proxy::ProxyClient>,
    /// Streams: each connection first reads the line the server greets
    /// with (`serve --greeting '{id}\n'`: which backend answered), and the
    /// report counts connections and messages per line (`backends`).
    pub greeting_line: bool,
}

impl BenchConfig {
    /// A bench of `endpoint` with every default.
    pub fn new(endpoint: Endpoint) -> BenchConfig {
        BenchConfig {
            endpoint,
            connections: DEFAULT_CONNECTIONS,
            message_size: DEFAULT_MESSAGE_SIZE,
            duration: DEFAULT_DURATION,
            warmup: Duration::ZERO,
            rate: None,
            pipeline: 1,
            timeout: DEFAULT_LOSS_TIMEOUT,
            threads: None,
            driver: Driver::Auto,
            tls: Default::default(),
            start_at: None,
            source: None,
            intervals: None,
            proxy: None,
            greeting_line: false,
        }
    }
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

/// A run's live counters, for a progress display: the caller keeps a
/// clone and reads it while [`run`] goes on.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<ProgressCounters>);

#[derive(Debug, Default)]
struct ProgressCounters {
    /// Echoes completed so far (warmup included), in batches.
    messages: AtomicU64,
    /// Errors so far, connection failures included.
    errors: AtomicU64,
    /// Set once the warmup is over and the measured part began.
    measuring: AtomicBool,
}

impl Progress {
    /// Counters at zero.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Echoes completed so far, warmup included (counted in batches, so a
    /// little behind).
    pub fn messages(&self) -> u64 {
        self.0.messages.load(Ordering::Relaxed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    /// Whether the warmup is over.
    pub fn measuring(&self) -> bool {
        self.0.measuring.load(Ordering::Relaxed)
    }
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
    /// Why the run must count as failed, in words, if it must: a wrong byte
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

/// What every flow of the run reads.
struct Shared {
    message_size: usize,
    pipeline: usize,
    timeout: Duration,
    /// Seconds between one connection's sends, open loop.
    interval: Option<Duration>,
    connections: usize,
    pattern: Pattern,
    start: Instant,
    /// The measured part: after the warmup, until the end.
    window: Window,
    /// Set (before `halt` is cancelled) when the run is stopped: a plain
    /// flag each connection checks per poll. The token's own check takes
    /// a lock shared by every thread.
    halted: AtomicBool,
    /// Wakes every connection when the run is stopped.
    halt: CancellationToken,
    progress: Progress,
    /// With interval records: where the threads hand them over.
    intervals: Option<interval::Intervals>,
}

impl Shared {
    /// The open-loop schedule of connection `id`, staggered so that the
    /// connections' sends interleave instead of bunching.
    fn pacer(&self, id: usize) -> Option<sockecho_flow::Pacer> {
        let interval = self.interval?;
        Some(sockecho_flow::Pacer::new(
            self.start,
            interval,
            id,
            self.connections,
        ))
    }

    /// Whether the run is over (its end, or a stop).
    fn over(&self, now: Instant) -> bool {
        now >= self.window.end || self.halted.load(Ordering::Relaxed)
    }
}

/// How a connection's run ended.
enum Ending {
    Done,
    Io(std::io::Error),
    Mismatch(sockecho_flow::Difference),
}

/// What one thread hands back: each connection's tally, and the latencies
/// of all of them.
type ThreadResult = (Vec<(usize, Tally)>, record::Latencies);

/// Runs a bench: connects, loads, measures, reports. `stop` ends it early
/// (what was measured is reported); `progress` counts as it goes.
///
/// Fails only if no connection at all can be made; a connection that fails
/// later is counted in `errors` and the run goes on with the others.
///
/// On Linux, a run with more connections than the soft descriptor limit
/// allows raises that limit towards the hard one, as load tools do (wrk,
/// iperf3); more connections than even the hard limit allows are refused
/// before anything starts ([`Setting::Connections`]).
pub async fn run(
    config: &BenchConfig,
    stop: &CancellationToken,
    progress: &Progress,
) -> Result<BenchOutcome, Error> {
    run_observed(config, stop, progress, &mut |_| {}).await
}

/// [`run`], handing `on_interval` each interval record as the run goes
/// when [`BenchConfig::intervals`] is set: every whole interval of the
/// measured window as it ends, then the last (perhaps shorter) one. Their
/// messages add up to the report's.
pub async fn run_observed(
    config: &BenchConfig,
    stop: &CancellationToken,
    progress: &Progress,
    on_interval: &mut (dyn FnMut(IntervalReport) + Send),
) -> Result<BenchOutcome, Error> {
    validate(config)?;
    let kind = config.endpoint.kind();
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, config.connections);
    #[cfg(target_os = "linux")]
    nofile::ensure(config.connections, threads)?;
    let interval = match config.rate {
        Some(rate) => Some(interval_of(config.connections, rate)?),
        None => None,
    };

    // One thread per core, each with its own single-threaded runtime (or
    // ring) and its share of the connections, as a hand-written epoll
    // client would: no work stealing, no cross-thread wakeups on the hot
    // path. A socket belongs to the runtime that made it, so each thread
    // connects its own.
    let use_uring = uring_suits(config);
    tracing::debug!(
        driver = if use_uring { "io_uring" } else { "epoll" },
        threads,
        "bench driver"
    );
    let tls = crate::transport::tls::client_for(&config.endpoint, &config.tls)?;
    // Every flow goes to the one address of a name that answers (ping and
    // connect do the same); reports still name the endpoint as given.
    let located = match kind {
        Kind::Datagram => {
            use crate::transport::Datagram;
            let wait = config.timeout.min(Datagram::LOCATE_WAIT);
            Datagram::locate(&config.endpoint, wait).await?
        }
        Kind::Stream => config.endpoint.clone(),
    };
    let sources = config.source.as_ref().map(source::Sources::new);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(threads);
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let ids: Vec<usize> = (t..config.connections).step_by(threads).collect();
        let target = worker::Target {
            endpoint: located.clone(),
            kind,
            tls: tls.clone(),
            uring: use_uring,
            thread: t,
            sources,
            proxy: config.proxy,
            greeting_line: config.greeting_line,
            message_size: config.message_size,
        };
        let ready_tx = ready_tx.clone();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || worker::worker(ids, target, ready_tx, go_rx, done_tx))
            .map_err(|e| Error::io("starting a bench thread", e))?;
        workers.push((go_tx, done_rx, handle));
    }
    drop(ready_tx);

    // Connect everything before the clock starts.
    let mut connected = 0usize;
    let mut connected_by_thread = vec![0usize; threads];
    let mut connect_errors = 0u64;
    let mut first_error = None;
    let mut connect_times = LatencyHistogram::new();
    // `greeting_line`: each connection's line (its backend).
    let mut backend_of = std::collections::HashMap::new();
    while let Some(ready) = ready_rx.recv().await {
        backend_of.extend(ready.backends);
        connected += ready.connected;
        if let Some(n) = connected_by_thread.get_mut(ready.thread) {
            *n = ready.connected;
        }
        connect_errors += ready.errors;
        connect_times.add(&ready.connect_times);
        if first_error.is_none() {
            first_error = ready.first_error;
        }
    }
    if connected == 0 {
        // Dropping the senders lets every worker thread end.
        return Err(first_error.unwrap_or_else(|| Error::Config("no connections".to_owned())));
    }
    if let Some(at) = config.start_at
        && !wait_for_start(at, stop).await
    {
        return Err(Error::Config(
            "stopped while waiting for the start time; nothing was measured".to_owned(),
        ));
    }

    let lead = if interval.is_some() {
        OPEN_LOOP_LEAD
    } else {
        Duration::ZERO
    };
    let start = Instant::now() + lead;
    let wall_start = SystemTime::now() + lead;
    let measure_start = start + config.warmup;
    progress
        .0
        .errors
        .fetch_add(connect_errors, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        message_size: config.message_size,
        pipeline: config.pipeline,
        timeout: config.timeout,
        interval,
        connections: config.connections,
        pattern: Pattern::new(),
        start,
        window: Window {
            start: measure_start,
            end: measure_start + config.duration,
        },
        halted: AtomicBool::new(false),
        halt: CancellationToken::new(),
        progress: progress.clone(),
        intervals: config.intervals.map(|every| {
            let intervals = interval::Intervals::new(every, threads);
            let idle = connected_by_thread
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == 0);
            for (t, _) in idle {
                intervals.idle(t);
            }
            intervals
        }),
    });
    let mut results = Vec::with_capacity(threads);
    for (go_tx, done_rx, handle) in workers {
        // A worker whose connections all failed has already ended.
        let _ = go_tx.send(shared.clone());
        results.push((done_rx, handle));
    }
    let finished = CancellationToken::new();
    let watcher = {
        let (shared, stop, finished) = (shared.clone(), stop.clone(), finished.clone());
        tokio::spawn(async move {
            let warmup_over = tokio::time::sleep_until(measure_start.into());
            tokio::pin!(warmup_over);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => {
                        shared.halted.store(true, Ordering::SeqCst);
                        shared.halt.cancel();
                        return Some(Instant::now());
                    }
                    _ = finished.cancelled() => return None,
                    () = &mut warmup_over, if !shared.progress.measuring() => {
                        shared.progress.0.measuring.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // Interval records, as every thread passes each boundary.
    let (interval_tx, mut interval_rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = shared.intervals.is_some().then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some(intervals) = &shared.intervals else {
                return (0, 0);
            };
            let errors = || shared.progress.errors();
            let halt = shared.halt.clone();
            interval::collect(intervals, shared.window, errors, halt, interval_tx).await
        })
    });

    let mut counts = BenchCounts {
        errors: connect_errors,
        lost: (kind == Kind::Datagram).then_some(0),
        duplicates: (kind == Kind::Datagram).then_some(0),
        ..BenchCounts::default()
    };
    let mut first_error = first_error.map(|e| e.to_string());
    let mut first_mismatch: Option<(usize, String)> = None;
    let mut histogram = LatencyHistogram::new();
    let mut raw = LatencyHistogram::new();
    let mut tallies = Vec::with_capacity(config.connections);
    let mut dead = Vec::new();
    {
        let gathering = async {
            for (t, (done, handle)) in results.into_iter().enumerate() {
                if let Ok((thread_tallies, latencies)) = done.await {
                    tallies.extend(thread_tallies);
                    histogram.add(&latencies.corrected);
                    raw.add(&latencies.raw);
                    continue;
                }
                // No results: the thread had nothing to drive (every connect
                // failed, counted already), or it died and took its
                // connections' results with it. Those must fail the run, never
                // vanish from it.
                let joined = tokio::task::spawn_blocking(move || handle.join()).await;
                let why = match joined {
                    Ok(Ok(())) => continue,
                    Ok(Err(payload)) => worker::panic_message(payload.as_ref()),
                    Err(e) => e.to_string(),
                };
                dead.push((t, why));
            }
        };
        tokio::pin!(gathering);
        loop {
            tokio::select! {
                () = &mut gathering => break,
                Some(report) = interval_rx.recv() => on_interval(report),
            }
        }
    }
    for (t, why) in dead {
        let lost = connected_by_thread.get(t).copied().unwrap_or(0) as u64;
        counts.errors += lost;
        progress.0.errors.fetch_add(lost, Ordering::Relaxed);
        first_error.get_or_insert_with(|| format!("bench thread {t} failed: {why}"));
    }
    let mut overflowed = 0u64;
    let mut behind = Behind::default();
    let mut backends = std::collections::BTreeMap::<String, BackendShare>::new();
    for line in backend_of.values() {
        backends.entry(line.clone()).or_default().connections += 1;
    }
    for (id, tally) in tallies {
        if let Some(line) = backend_of.get(&id) {
            backends.entry(line.clone()).or_default().messages += tally.messages;
        }
        counts.errors += tally.errors;
        counts.mismatches += tally.mismatches;
        if let Some(lost) = counts.lost.as_mut() {
            *lost += tally.lost;
        }
        if let Some(dups) = counts.duplicates.as_mut() {
            *dups += tally.duplicates;
        }
        if first_error.is_none() {
            first_error = tally.first_error;
        }
        overflowed += tally.overflowed;
        behind.add(&tally.behind);
        if let Some(text) = tally.first_mismatch {
            // Report the lowest-numbered connection's, for a stable message.
            if first_mismatch.as_ref().is_none_or(|(i, _)| id < *i) {
                first_mismatch = Some((id, text));
            }
        }
    }
    finished.cancel();
    let halted_at = watcher.await.ok().flatten();
    // Measuring stopped at the end, or when the run was stopped (not when
    // the polite close after it finished).
    let ended = halted_at
        .unwrap_or(shared.window.end)
        .min(shared.window.end)
        .min(Instant::now());
    counts.duration = ended.saturating_duration_since(measure_start);
    if let (Some(collector), Some(intervals)) = (collector, &shared.intervals) {
        // The collector ends at the window's end or the stop; what the
        // threads handed over after its last interval is the last one.
        shared.halt.cancel();
        let (reported, counted) = collector.await.unwrap_or((0, 0));
        while let Ok(report) = interval_rx.try_recv() {
            on_interval(report);
        }
        let (done, errors) = (reported, counts.errors);
        if let Some(report) = interval::last(intervals, done, counts.duration, errors, counted) {
            on_interval(report);
        }
    }
    let params = BenchParams {
        endpoint: config.endpoint.to_string(),
        connections: config.connections as u64,
        message_size: config.message_size as u64,
        pipeline: config.pipeline as u32,
        rate: config.rate,
    };
    let invalid =
        |e: sockecho_measure::report::ReportError| Error::invalid("building the report", &e);
    let mut report = BenchReport::new(&params, &counts, &histogram).map_err(invalid)?;
    report.started_at = Some(sockecho_measure::wallclock::format_rfc3339(
        wall_start + config.warmup,
    ));
    if !connect_times.is_empty() {
        report.connect_us = Some(ConnectSummary::from_histogram(&connect_times).map_err(invalid)?);
    }
    if config.greeting_line {
        report.backends = Some(backends);
    }
    if config.rate.is_some() {
        report.latency_raw_us = Some(LatencyPercentiles::from_histogram(&raw));
        report.behind_schedule = Some(BehindSchedule {
            scheduled: behind.scheduled,
            late: behind.late,
            max_late_us: sockecho_measure::stats::round_us(behind.max_late.as_secs_f64() * 1e6),
            dropped: overflowed,
        });
    }
    Ok(BenchOutcome {
        report,
        first_mismatch: first_mismatch.map(|(_, text)| text),
        first_error,
    })
}

/// Waits, by the wall clock, until `at`; `false` if `stop` came first. A
/// time already past starts at once (saying so: the runs it was to be
/// synchronised with may have started already).
async fn wait_for_start(at: SystemTime, stop: &CancellationToken) -> bool {
    let wait = match at.duration_since(SystemTime::now()) {
        Ok(wait) => wait,
        Err(passed) => {
            tracing::warn!(
                start_at = %sockecho_measure::wallclock::format_rfc3339(at),
                passed = %crate::duration::format(passed.duration()),
                "the start time has passed: starting now"
            );
            return true;
        }
    };
    tracing::info!(
        start_at = %sockecho_measure::wallclock::format_rfc3339(at),
        wait = %crate::duration::format(wait),
        "connected; waiting for the start time"
    );
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = stop.cancelled() => false,
    }
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
                Endpoint::Udp(_) => config.pipeline <= uring_dgram::MAX_PIPELINE,
                _ => false,
            }
            && sockecho_uring::probe().is_some_and(|f| f.for_clients())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = config;
        false
    }
}

fn validate(config: &BenchConfig) -> Result<(), Error> {
    if let Some(why) = config.endpoint.not_measurable() {
        return Err(Error::Config(why));
    }
    if config.connections == 0 {
        return Err(Error::setting(Setting::Connections, "must be at least 1"));
    }
    if config.duration.is_zero() {
        return Err(Error::setting(
            Setting::Duration,
            "must be more than 0: a run of no time measures nothing",
        ));
    }
    if config.pipeline == 0 {
        return Err(Error::setting(Setting::Pipeline, "must be at least 1"));
    }
    if config.message_size == 0 {
        return Err(Error::setting(
            Setting::MessageSize,
            "must be at least 1 byte",
        ));
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
    if let Some(rate) = config.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(Error::setting(
            Setting::Rate,
            "must be a positive number of messages per second",
        ));
    }
    if let Some(rate) = config.rate {
        interval_of(config.connections, rate)?;
    }
    if let Some(block) = &config.source {
        source::validate(block, &config.endpoint)?;
    }
    if let Some(at) = config.start_at
        && at
            .duration_since(SystemTime::now())
            .is_ok_and(|wait| wait > MAX_START_WAIT)
    {
        return Err(Error::setting(
            Setting::StartAt,
            format!(
                "{} is more than a day away: a start time is for runs on many machines \
                 to start together, minutes from now",
                sockecho_measure::wallclock::format_rfc3339(at)
            ),
        ));
    }
    if config.endpoint.kind() == Kind::Datagram && config.timeout.is_zero() {
        return Err(Error::setting(
            Setting::LossTimeout,
            "must be more than 0 over datagrams: every datagram would count as \
             lost before its echo could come back",
        ));
    }
    if let Endpoint::UnixDgram(_) = config.endpoint
        && let Some(max) = max_unix_datagram()
        && config.message_size > max
    {
        return Err(Error::setting(
            Setting::MessageSize,
            format!(
                "Unix datagrams carry at most {max} bytes here (the default socket \
                 send buffer, net.core.wmem_default, less 32 bytes)"
            ),
        ));
    }
    if config.endpoint.kind() == Kind::Datagram {
        if config.message_size < DATAGRAM_HEADER {
            return Err(Error::setting(
                Setting::MessageSize,
                "datagram bench messages need at least 8 bytes (their sequence number)",
            ));
        }
        if matches!(config.endpoint, Endpoint::Udp(_))
            && config.message_size > crate::transport::datagram::MAX_UDP_PAYLOAD
        {
            return Err(Error::setting(
                Setting::MessageSize,
                "UDP messages can carry at most 65507 bytes",
            ));
        }
    }
    Ok(())
}

/// The time between one connection's messages at a total `rate` over
/// `connections`, or why that rate cannot be paced: each connection's
/// share must lie within [`MIN_RATE_PER_CONNECTION`] and
/// [`MAX_RATE_PER_CONNECTION`].
fn interval_of(connections: usize, rate: f64) -> Result<Duration, Error> {
    let conns = connections.max(1) as f64;
    let each = rate / conns;
    let over = |n: usize| format!("{n} connection{}", if n == 1 { "" } else { "s" });
    if each > MAX_RATE_PER_CONNECTION {
        return Err(Error::setting(
            Setting::Rate,
            format!(
                "{} msg/s over {} is more than the client can pace: at most {} msg/s \
                 per connection (a message every 100 ns); use more connections or a lower rate",
                number(rate),
                over(connections),
                number(MAX_RATE_PER_CONNECTION)
            ),
        ));
    }
    let interval = Duration::try_from_secs_f64(conns / rate).ok();
    match interval {
        Some(interval) if each >= MIN_RATE_PER_CONNECTION => Ok(interval),
        _ => Err(Error::setting(
            Setting::Rate,
            format!(
                "{} msg/s over {} is too low to schedule: at least {} msg/s per \
                 connection (a message every 11.6 days)",
                number(rate),
                over(connections),
                number(MIN_RATE_PER_CONNECTION)
            ),
        )),
    }
}

/// A rate as a reader takes it in: plain within a sensible range
/// (`1000000`, `0.5`), in exponent form outside it (`1e-19`).
fn number(x: f64) -> String {
    if (1e-3..1e12).contains(&x.abs()) || x == 0.0 {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// The largest Unix datagram a socket with the default send buffer can
/// send: Linux refuses (`EMSGSIZE`) a datagram longer than the send
/// buffer less 32 bytes. Read from a fresh socket, since the default is
/// the host's (`net.core.wmem_default`); `None` where that cannot be told.
fn max_unix_datagram() -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None).ok()?;
    socket.send_buffer_size().ok()?.checked_sub(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> BenchConfig {
        BenchConfig::new(endpoint.parse().expect("endpoint"))
    }

    /// A run's shared state for the drivers' tests: two connections,
    /// closed loop, measuring from now for a second.
    pub(super) fn shared() -> Shared {
        let start = Instant::now();
        Shared {
            message_size: 64,
            pipeline: 1,
            timeout: Duration::from_secs(1),
            interval: None,
            connections: 2,
            pattern: Pattern::new(),
            start,
            window: Window {
                start,
                end: start + Duration::from_secs(1),
            },
            halted: AtomicBool::new(false),
            halt: CancellationToken::new(),
            progress: Progress::new(),
            intervals: None,
        }
    }

    fn refusal(config: &BenchConfig) -> (Setting, String) {
        match validate(config) {
            Err(Error::Setting { setting, reason }) => (setting, reason),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn rates_the_client_cannot_pace_are_refused() {
        let mut c = config("tcp://127.0.0.1:9");
        c.connections = 1;
        for rate in [1e9, 2.5e7, 1e-19, 1e-20, 1e-300] {
            c.rate = Some(rate);
            let (setting, reason) = refusal(&c);
            assert_eq!(setting, Setting::Rate, "{rate}");
            assert!(!reason.contains('\n'), "{reason}");
        }
        c.rate = Some(1e9);
        assert!(
            refusal(&c)
                .1
                .starts_with("1000000000 msg/s over 1 connection is more")
        );
        c.rate = Some(1e-20);
        assert!(
            refusal(&c)
                .1
                .starts_with("1e-20 msg/s over 1 connection is too low")
        );
        // More connections pace more; the bounds themselves are kept.
        c.connections = 100;
        c.rate = Some(1e9);
        assert!(validate(&c).is_ok());
        c.connections = 1;
        for rate in [MAX_RATE_PER_CONNECTION, MIN_RATE_PER_CONNECTION, 1000.0] {
            c.rate = Some(rate);
            assert!(validate(&c).is_ok(), "{rate}");
            assert!(interval_of(1, rate).is_ok(), "{rate}");
        }
        assert_eq!(interval_of(4, 1000.0).unwrap(), Duration::from_millis(4));
    }

    #[test]
    fn runs_that_cannot_measure_are_refused() {
        let mut c = config("tcp://127.0.0.1:9");
        c.duration = Duration::ZERO;
        assert_eq!(refusal(&c).0, Setting::Duration);
        // The loss timeout matters only over datagrams.
        let mut c = config("tcp://127.0.0.1:9");
        c.timeout = Duration::ZERO;
        assert!(validate(&c).is_ok());
        let mut c = config("udp://127.0.0.1:9");
        c.timeout = Duration::ZERO;
        assert_eq!(refusal(&c).0, Setting::LossTimeout);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn unix_datagrams_are_refused_beyond_what_the_socket_can_send() {
        let max = max_unix_datagram().expect("a Unix datagram socket");
        assert!(max > 65_535, "{max}");
        let mut c = config("unix-dgram:/tmp/x.sock");
        c.message_size = max;
        assert!(validate(&c).is_ok());
        c.message_size = max + 1;
        let (setting, reason) = refusal(&c);
        assert_eq!(setting, Setting::MessageSize);
        assert!(reason.contains(&format!("at most {max} bytes")), "{reason}");
    }

    #[test]
    fn panic_messages_are_read_back() {
        let text: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(worker::panic_message(text.as_ref()), "boom");
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(worker::panic_message(owned.as_ref()), "bang");
        let other: Box<dyn std::any::Any + Send> = Box::new(7u8);
        assert_eq!(worker::panic_message(other.as_ref()), "a panic");
    }
}
