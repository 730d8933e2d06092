//! The command line: clap types whose `///` docs are the help text, and
//! their conversion to the library's configurations. Nothing below this
//! module sees a clap type.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sockecho::bench::BenchConfig;
use sockecho::client::ConnectConfig;
use sockecho::endpoint::{DEFAULT, Endpoint};
use sockecho::events::{EventFormat, Events};
use sockecho::ping::PingConfig;
use sockecho::server::guard::rate::DEFAULT_UDP_RATE;
use sockecho::server::guard::{AccessList, Cidr};
use sockecho::server::{DEFAULT_BACKLOG, DEFAULT_MAX_CONNS, ServeConfig};
use sockecho::trace::Tracer;

pub mod generate;

/// Echo server and client for TCP, UDP and Unix sockets over IPv4 and IPv6.
///
/// ENDPOINT forms: PORT (tcp://127.0.0.1:PORT), HOST:PORT, [V6]:PORT,
/// tcp://HOST:PORT, udp://HOST:PORT, unix:PATH, unix:@NAME (abstract),
/// unix-dgram:PATH. The default is the lesson's tcp://127.0.0.1:9999.
#[derive(Debug, Parser)]
#[command(name = "sockecho", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// More log output on standard error (-v info, -vv debug, -vvv trace);
    /// RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve RFC 862 echo on every ENDPOINT given, from one process.
    ///
    /// Prints `listen ok ENDPOINT` once each endpoint accepts traffic, then
    /// `connection from PEER on ENDPOINT` and `closed PEER in=N out=N` per
    /// stream connection. SIGINT or SIGTERM stops accepting and drains; a
    /// second signal closes everything at once.
    Serve(ServeArgs),
    /// Connect to an echo server: standard input (or -m messages) to the
    /// socket, the socket to standard output.
    ///
    /// Streams: at the end of input the write side is shut down and output
    /// continues until the server closes. Datagrams: each -m or each input
    /// line is one datagram; each reply is printed on its own line.
    Connect(ConnectArgs),
    /// Measure round trips: COUNT probes, each verified byte for byte, in
    /// ping(8)'s style.
    ///
    /// Over TCP all probes share one connection (or, with --connect, each
    /// probe times a new handshake); over UDP lost, duplicated and
    /// reordered replies are counted. Exits 0 when at least one valid
    /// reply came and none was corrupt.
    Ping(PingArgs),
    /// Load an echo server: CONNS connections sending SIZE-byte messages
    /// for DURATION, every echoed byte verified, latency in an HdrHistogram.
    Bench(BenchArgs),
    /// Work with bench reports.
    Report {
        /// What to do with them.
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Print a completion script for SHELL on standard output.
    ///
    /// bash: `sockecho completions bash > ~/.local/share/bash-completion/completions/sockecho`;
    /// zsh: write `_sockecho` into a directory on $fpath; fish: `sockecho
    /// completions fish > ~/.config/fish/completions/sockecho.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on standard output: the top-level page
    /// with a section for every subcommand.
    ///
    /// Read it with `sockecho man | man -l -`, or install it with
    /// `sockecho man > /usr/local/share/man/man1/sockecho.1`.
    Man,
}

/// `sockecho report` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Merge `bench --json` results from several processes or machines:
    /// messages and throughput add up, percentiles come from the merged
    /// histogram.
    Merge {
        /// Bench JSON files.
        #[arg(value_name = "FILE.json", required = true)]
        files: Vec<std::path::PathBuf>,
        /// Print the merged report as JSON.
        #[arg(long)]
        json: bool,
        /// Write a latency-percentile chart (SVG).
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<std::path::PathBuf>,
    },
}

/// `sockecho ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The echo server.
    #[arg(value_name = "ENDPOINT", default_value = DEFAULT)]
    pub endpoint: Endpoint,

    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// Stop after COUNT probes (default: until interrupted).
    #[arg(short, long, value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Time between probes.
    #[arg(short, long, value_name = "INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,

    /// Bytes per probe, header included (at least 24).
    #[arg(short, long, value_name = "SIZE", default_value_t = 64)]
    pub size: usize,

    /// How long to wait for each reply.
    #[arg(short = 'W', long, value_name = "TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    pub timeout: Duration,

    /// TCP: time the connection handshake alone, one new connection per
    /// probe (as tcping does).
    #[arg(long)]
    pub connect: bool,

    /// Print only one JSON object with the summary.
    #[arg(long)]
    pub json: bool,
}

/// `sockecho bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The echo server.
    #[arg(value_name = "ENDPOINT", default_value = DEFAULT)]
    pub endpoint: Endpoint,

    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// Connections (datagram flows over UDP and Unix datagram sockets).
    #[arg(short, long = "connections", value_name = "CONNS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connections: u64,

    /// Bytes per message.
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub size: u64,

    /// How long to measure (after the warmup).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,

    /// Load before measuring; its messages are not counted.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Total send rate, messages per second, paced open-loop: latency is
    /// measured from each message's intended send time.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,

    /// Messages in flight per connection.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pipeline: u64,

    /// Datagrams: how long before an unanswered one counts as lost.
    #[arg(short = 'W', long, value_name = "TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    pub timeout: Duration,

    /// Print only one JSON object with the report.
    #[arg(long)]
    pub json: bool,

    /// Write a latency-percentile chart (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,

    /// Client threads, each driving its share of the connections (default:
    /// one per available core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,

    /// Use tokio's epoll reactor even where io_uring is available (by
    /// default closed-loop TCP and Unix stream runs use io_uring).
    #[arg(long)]
    pub epoll: bool,
}

/// `sockecho serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Endpoints to serve.
    #[arg(value_name = "ENDPOINT", default_value = DEFAULT)]
    pub endpoints: Vec<Endpoint>,

    /// tls://: the certificate chain to present (PEM); without it and
    /// --tls-key, a self-signed certificate is made at start and its
    /// SHA-256 fingerprint printed after the listen ok line.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// tls://: the private key for --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// The service: echo (RFC 862), discard (RFC 863: read, send nothing)
    /// or chargen (RFC 864: rotating 72-character lines; over UDP one
    /// datagram no larger than the request).
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: ModeArg,

    /// Run from inetd or xinetd: serve the connection (`nowait`) or the
    /// datagram socket (`wait`) on standard input, print nothing, log
    /// nothing. Without it, sockets passed by systemd socket activation
    /// (LISTEN_FDS) are served instead of binding.
    #[arg(long)]
    pub inetd: bool,

    /// Send TEXT (exactly those bytes) to each stream connection before
    /// echoing.
    #[arg(long, value_name = "TEXT")]
    pub greeting: Option<String>,

    /// Serve one stream connection (or one datagram) to its end, then exit.
    #[arg(long)]
    pub once: bool,

    /// Listen backlog: connections the kernel queues before accept (the
    /// lesson used 5; the kernel caps it at net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,

    /// Stream connections served at once; more are accepted and closed
    /// at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_conns: u64,

    /// Close a connection that makes no progress for DURATION: no byte
    /// received, or a write that cannot complete (0: never). It bounds each
    /// operation, so a peer trickling bytes is still served; what stops
    /// slow peers holding every slot is --max-conns-per-ip with --max-conns.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub idle_timeout: Duration,

    /// Stream connections open at once from one source address; more are
    /// accepted and closed at once (default: no limit but --max-conns).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_conns_per_ip: Option<u64>,

    /// Serve only peers in CIDR (e.g. 10.0.0.0/8, 2001:db8::/32, or one
    /// address); repeatable. With any --allow, everything else is refused.
    /// Checked before any byte is read (TCP) or per datagram (UDP).
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<Cidr>,

    /// Refuse peers in CIDR; repeatable; wins over --allow. A refused TCP
    /// peer is closed at once; a refused UDP source gets no reply.
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<Cidr>,

    /// UDP: replies per second to one source address (a burst of as many
    /// is allowed; 0: unlimited). Applies to sockets bound to a
    /// non-loopback address: a loopback one hears only this host.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UDP_RATE)]
    pub udp_rate: u32,

    /// After a stop signal, how long open connections may finish.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,

    /// Answer datagrams from source ports below 1024 (off by default: a
    /// spoofed datagram from another echo port would loop forever).
    #[arg(long)]
    pub allow_low_ports: bool,

    /// Print only `listen ok` lines, not one per connection.
    #[arg(short, long)]
    pub quiet: bool,

    /// Print events as JSON lines (with --trace, trace lines too).
    #[arg(long)]
    pub json: bool,

    /// Trace the socket's life on standard error: each socket call
    /// (socket, bind, listen, accept, shutdown, close) and the TCP state,
    /// RTT, retransmits and accept queue the kernel reports after it.
    #[arg(long)]
    pub trace: bool,

    /// With --trace: how often to sample each connection and each
    /// listener's accept queue.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval,
          default_value = "1s", requires = "trace")]
    pub trace_interval: Duration,

    /// With --trace, for teaching: wait DURATION before each accept, so
    /// pending connections pile up in the backlog (see --backlog).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "trace")]
    pub trace_pause_accept: Option<Duration>,

    /// Threads serving (default: one per available core): the io_uring
    /// engine's threads, and the epoll engine's runtime workers.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,

    /// Serve TCP with tokio's epoll reactor (a task per connection) even
    /// where io_uring is available.
    #[arg(long)]
    pub epoll: bool,
}

/// `--mode`: the classic small services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// RFC 862: send back everything received.
    Echo,
    /// RFC 863: read everything, send nothing.
    Discard,
    /// RFC 864: send rotating 72-character lines.
    Chargen,
}

/// How clients verify a `tls://` server (connect, ping, bench).
#[derive(Debug, Args)]
pub struct TlsClientArgs {
    /// tls://: trust only the CA certificates in this PEM file (default:
    /// the system's roots).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// tls://: do not verify the server's certificate (test rigs only).
    #[arg(long, conflicts_with = "tls_ca")]
    pub insecure: bool,
}

impl TlsClientArgs {
    fn options(&self) -> sockecho::transport::tls::ClientTlsOptions {
        sockecho::transport::tls::ClientTlsOptions {
            ca: self.tls_ca.clone(),
            insecure: self.insecure,
        }
    }
}

/// `sockecho connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server.
    #[arg(value_name = "ENDPOINT", default_value = DEFAULT)]
    pub endpoint: Endpoint,

    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// Send TEXT followed by a newline (or, over datagrams, as one
    /// datagram) instead of reading standard input; repeatable.
    #[arg(short, long = "message", value_name = "TEXT")]
    pub messages: Vec<String>,

    /// Streams: connect timeout (default 10s). Datagrams: how long to wait
    /// for each reply (default 1s).
    #[arg(short = 'w', long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Trace the stream socket's life on standard error: socket, connect
    /// (with its duration), shutdown, close, and the TCP state, RTT and
    /// retransmits the kernel reports after each.
    #[arg(long)]
    pub trace: bool,

    /// With --trace: how often to sample the connection.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval,
          default_value = "1s", requires = "trace")]
    pub trace_interval: Duration,

    /// With --trace: trace lines as JSON objects, one per line.
    #[arg(long, requires = "trace")]
    pub json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, sockecho::duration::ParseDurationError> {
    sockecho::duration::parse(text)
}

/// A duration a timer can tick at: more than zero.
fn parse_interval(text: &str) -> Result<Duration, String> {
    match sockecho::duration::parse(text) {
        Ok(d) if d.is_zero() => Err(format!("invalid interval '{text}': must be more than 0")),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// The `--trace` tracer, on standard error, or none.
fn tracer(on: bool, format: EventFormat, interval: Duration) -> Tracer {
    if on {
        Tracer::stderr(format, interval)
    } else {
        Tracer::disabled()
    }
}

impl ServeArgs {
    /// The library's configuration, with events on standard output.
    pub fn into_config(self) -> ServeConfig {
        let format = if self.json {
            EventFormat::Json
        } else {
            EventFormat::Text
        };
        ServeConfig {
            greeting: self.greeting.map(String::into_bytes).unwrap_or_default(),
            once: self.once,
            backlog: self.backlog,
            max_conns: usize::try_from(self.max_conns).unwrap_or(usize::MAX),
            // Zero means never: a zero timer would close every connection.
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            drain_timeout: self.drain_timeout,
            allow_low_ports: self.allow_low_ports,
            access: AccessList::new(self.allow, self.deny),
            max_conns_per_ip: self
                .max_conns_per_ip
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            udp_rate: self.udp_rate,
            // Under inetd standard output is the client's socket.
            events: if self.inetd {
                Events::silent()
            } else {
                Events::stdout(format, self.quiet)
            },
            trace: tracer(self.trace, format, self.trace_interval),
            pause_accept: self.trace_pause_accept,
            threads: self
                .threads
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            engine: if self.epoll {
                sockecho::server::Engine::Epoll
            } else {
                sockecho::server::Engine::Auto
            },
            mode: match self.mode {
                ModeArg::Echo => sockecho::server::service::Mode::Echo,
                ModeArg::Discard => sockecho::server::service::Mode::Discard,
                ModeArg::Chargen => sockecho::server::service::Mode::Chargen,
            },
            tls: sockecho::transport::tls::ServerTlsOptions {
                cert: self.tls_cert,
                key: self.tls_key,
            },
            ..ServeConfig::new(self.endpoints)
        }
    }
}

impl PingArgs {
    /// The library's configuration; `stop` ends an unbounded run early.
    pub fn into_config(self, stop: tokio_util::sync::CancellationToken) -> PingConfig {
        PingConfig {
            endpoint: self.endpoint,
            count: self.count,
            interval: self.interval,
            size: self.size,
            timeout: self.timeout,
            connect_only: self.connect,
            json: self.json,
            stop,
            tls: self.tls.options(),
        }
    }
}

impl BenchArgs {
    /// The library's configuration; `stop` ends the run early.
    pub fn into_config(
        self,
        stop: tokio_util::sync::CancellationToken,
        progress: bool,
    ) -> BenchConfig {
        BenchConfig {
            endpoint: self.endpoint,
            connections: usize::try_from(self.connections).unwrap_or(usize::MAX),
            message_size: usize::try_from(self.size).unwrap_or(usize::MAX),
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            pipeline: usize::try_from(self.pipeline).unwrap_or(usize::MAX),
            timeout: self.timeout,
            threads: self
                .threads
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            driver: if self.epoll {
                sockecho::bench::Driver::Epoll
            } else {
                sockecho::bench::Driver::Auto
            },
            progress,
            stop,
            tls: self.tls.options(),
        }
    }
}

impl ConnectArgs {
    /// The library's configuration.
    pub fn into_config(self) -> ConnectConfig {
        ConnectConfig {
            endpoint: self.endpoint,
            messages: (!self.messages.is_empty()).then_some(self.messages),
            timeout: self.timeout,
            trace: tracer(
                self.trace,
                if self.json {
                    EventFormat::Json
                } else {
                    EventFormat::Text
                },
                self.trace_interval,
            ),
            tls: self.tls.options(),
        }
    }
}
