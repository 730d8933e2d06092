//! The command line: clap types whose `///` docs are the help text, and
//! their conversion to the library's configurations (every default comes
//! from the library's constants). Nothing outside the binary sees a clap
//! type, and the library sees no flag: `flag_of` maps a library
//! [`Setting`] back to the flag that sets it, for error messages.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sockecho::bench::BenchConfig;
use sockecho::client::ConnectConfig;
use sockecho::endpoint::{DEFAULT, Endpoint};
use sockecho::error::Setting;
use sockecho::events::EventFormat;
use sockecho::guard::{AccessList, Cidr};
use sockecho::ping::PingConfig;
use sockecho::server::{self, ServeConfig};
use sockecho::trace::Tracer;

pub mod generate;

/// A duration as users type it (`500ms`, `30s`, `5m`, `0.2`), shown back
/// the same way in `--help`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::str::FromStr for Span {
    type Err = sockecho::duration::ParseDurationError;

    fn from_str(text: &str) -> Result<Span, Self::Err> {
        sockecho::duration::parse(text).map(Span)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&sockecho::duration::format(self.0))
    }
}

/// The flag that sets a library setting, for error messages.
pub fn flag_of(setting: Setting) -> &'static str {
    match setting {
        Setting::MaxConns => "--max-conns",
        Setting::TlsKeyPair => "--tls-cert/--tls-key",
        Setting::Pipeline => "--pipeline",
        Setting::Rate => "--rate",
        Setting::Connections => "--connections",
        Setting::MessageSize => "--size",
        Setting::ProbeSize => "--size",
        Setting::ConnectOnly => "--connect",
        Setting::Inetd => "--inetd",
        Setting::MaxConnsPerIp => "--max-conns-per-ip",
        Setting::Access => "--allow/--deny",
        Setting::AllowLowPorts => "--allow-low-ports",
        Setting::UdpRate => "--udp-rate",
        Setting::Duration => "--duration",
        Setting::LossTimeout => "--timeout",
        Setting::ProxyProtocol => "--proxy-protocol",
        Setting::ProxyFrom => "--proxy-from",
        Setting::Greeting => "--greeting",
        Setting::AllowFile => "--allow-file",
        Setting::DenyFile => "--deny-file",
        Setting::GreetingLine => "--greeting-line",
        Setting::StartAt => "--start-at",
        Setting::Source => "--source",
        Setting::FindRate => "--find-rate",
        Setting::Metrics => "--metrics",
        _ => "an option",
    }
}

/// The flag for a setting named in a log line's `setting` field.
pub fn flag_named(name: &str) -> Option<&'static str> {
    Setting::ALL
        .iter()
        .find(|s| s.name() == name)
        .map(|s| flag_of(*s))
}

/// Every ENDPOINT form the parser takes (one line each, so a test can
/// check `--help` against `sockecho::endpoint::SCHEMES`), after the help
/// of every subcommand that takes endpoints and in the man page.
pub const ENDPOINT_FORMS: &str = "\
Endpoints (the default is the lesson's tcp://127.0.0.1:9999):
  PORT                tcp://127.0.0.1:PORT
  HOST:PORT           TCP; HOST is an IPv4 address or a name (localhost:9999)
  [V6]:PORT           TCP over IPv6 ([::1]:9999)
  [V6%ZONE]:PORT      link-local IPv6 and its interface ([fe80::1%eth0]:9999)
  tcp://HOST:PORT     TCP; after any scheme HOST may be [V6] or [V6%ZONE]
  udp://HOST:PORT     UDP datagrams
  tls://HOST:PORT     TLS over TCP
  unix:PATH           Unix stream socket at PATH
  unix:@NAME          Unix stream socket NAME in Linux's abstract namespace
  unix-dgram:PATH     Unix datagram socket at PATH
  unix-dgram:@NAME    Unix datagram socket NAME in the abstract namespace
  http://HOST:PORT    HTTP: serve reflects each request as JSON (PORT: 80 if left out)
  https://HOST:PORT   HTTP over TLS, HTTP/2 by ALPN (PORT: 443 if left out)
  ws://HOST:PORT      WebSocket: clients send messages; serve: as http://
  wss://HOST:PORT     WebSocket over TLS; serve: as https://
  ws://HOST:PORT/PATH after http(s):// and ws(s)://, the path a client asks for";

/// Echo server and client for TCP, UDP and Unix sockets over IPv4 and IPv6.
///
/// Every subcommand takes ENDPOINTs in one syntax, listed below; the
/// default is the lesson's tcp://127.0.0.1:9999.
#[derive(Debug, Parser)]
#[command(name = "sockecho", version, propagate_version = true, after_help = ENDPOINT_FORMS)]
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
    /// second signal closes everything at once. SIGHUP re-reads
    /// --allow-file, --deny-file and the TLS files, keeping open
    /// connections (with none of those files, it stops like SIGTERM: the
    /// terminal closed).
    #[command(after_help = ENDPOINT_FORMS)]
    Serve(ServeArgs),
    /// Connect to an echo server: standard input (or -m messages) to the
    /// socket, the socket to standard output.
    ///
    /// Streams: at the end of input the write side is shut down and output
    /// continues until the server closes. Datagrams: each -m or each input
    /// line is one datagram; each reply is printed on its own line.
    #[command(after_help = ENDPOINT_FORMS)]
    Connect(ConnectArgs),
    /// Measure round trips: COUNT probes, each verified byte for byte, in
    /// ping(8)'s style.
    ///
    /// Over TCP all probes share one connection (or, with --connect, each
    /// probe times a new handshake); over UDP lost, duplicated and
    /// reordered replies are counted. Exits 0 when at least one valid
    /// reply came and none was corrupt.
    #[command(after_help = ENDPOINT_FORMS)]
    Ping(PingArgs),
    /// Load an echo server: CONNS connections sending SIZE-byte messages
    /// for DURATION, every echoed byte verified, latency in an HdrHistogram.
    #[command(after_help = ENDPOINT_FORMS)]
    Bench(BenchArgs),
    /// Work with bench reports.
    Report {
        /// What to do with them.
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Print a completion script for SHELL on standard output.
    ///
    /// bash: `mkdir -p ~/.local/share/bash-completion/completions`, then
    /// `sockecho completions bash > ~/.local/share/bash-completion/completions/sockecho`;
    /// zsh: write `_sockecho` into a directory on $fpath; fish: `mkdir -p
    /// ~/.config/fish/completions`, then `sockecho completions fish >
    /// ~/.config/fish/completions/sockecho.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on standard output: the top-level page
    /// with a section for every subcommand.
    ///
    /// Read it with `sockecho man | man -l -`, or install it with `sudo
    /// mkdir -p /usr/local/share/man/man1`, then `sockecho man | sudo tee
    /// /usr/local/share/man/man1/sockecho.1`.
    Man,
}

/// `sockecho report` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Merge `bench --json` results from several processes or machines:
    /// messages and throughput add up, percentiles come from the merged
    /// histogram.
    ///
    /// Inputs that measured different things (another transport, another
    /// message size) or the same run twice are refused; windows that do
    /// not overlap, and other differences, are warned of on standard error.
    Merge {
        /// Bench JSON files.
        #[arg(value_name = "FILE.json", required = true)]
        files: Vec<std::path::PathBuf>,
        /// Print the merged report as JSON.
        #[arg(long)]
        json: bool,
        /// Write a latency-percentile chart (SVG): each input, and the
        /// merged curve in bold.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<std::path::PathBuf>,
        /// With --plot: latency on a logarithmic axis.
        #[arg(long, requires = "plot")]
        log_latency: bool,
    },
    /// Draw the latency-percentile curves of several `bench --json`
    /// reports in one chart, one per file, named in a legend.
    Plot {
        /// Bench JSON files.
        #[arg(value_name = "FILE.json", required = true)]
        files: Vec<std::path::PathBuf>,
        /// The chart to write (SVG).
        #[arg(long, value_name = "FILE.svg", required = true)]
        plot: std::path::PathBuf,
        /// Latency on a logarithmic axis, for curves decades apart.
        #[arg(long)]
        log_latency: bool,
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

    #[command(flatten)]
    pub proxy: ProxyClientArgs,

    /// Streams: read the line each connection is greeted with first (serve
    /// --greeting '{id}\n'), which names the backend that answered; with
    /// --connect, each probe's line says it.
    #[arg(long)]
    pub greeting_line: bool,

    /// Stop after COUNT probes (default: until interrupted).
    #[arg(short, long, value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Time between probes.
    #[arg(short, long, value_name = "INTERVAL", default_value_t = Span(sockecho::ping::DEFAULT_INTERVAL))]
    pub interval: Span,

    /// Bytes per probe, header included (at least 24).
    #[arg(short, long, value_name = "SIZE", default_value_t = sockecho::ping::DEFAULT_SIZE)]
    pub size: usize,

    /// How long to wait for each reply.
    #[arg(short = 'W', long, value_name = "TIMEOUT", default_value_t = Span(sockecho::ping::DEFAULT_TIMEOUT))]
    pub timeout: Span,

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

    #[command(flatten)]
    pub proxy: ProxyClientArgs,

    /// Streams: each connection first reads the line it is greeted with
    /// (serve --greeting '{id}\n'); the report counts connections and
    /// messages per line: each backend's share behind a load balancer.
    #[arg(long)]
    pub greeting_line: bool,

    /// Connections (datagram flows over UDP and Unix datagram sockets).
    #[arg(short, long = "connections", value_name = "CONNS", default_value_t = sockecho::bench::DEFAULT_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connections: u64,

    /// Bytes per message.
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value_t = sockecho::bench::DEFAULT_MESSAGE_SIZE as u64,
          value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub size: u64,

    /// How long to measure (after the warmup).
    #[arg(short, long, value_name = "DURATION", default_value_t = Span(sockecho::bench::DEFAULT_DURATION))]
    pub duration: Span,

    /// Load before measuring; its messages are not counted.
    #[arg(long, value_name = "DURATION", default_value_t = Span(Duration::ZERO))]
    pub warmup: Span,

    /// Total send rate, messages per second, paced open-loop: latency is
    /// measured from each message's intended send time.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,

    /// Messages in flight per connection.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pipeline: u64,

    /// Datagrams: how long before an unanswered one counts as lost.
    #[arg(short = 'W', long, value_name = "TIMEOUT", default_value_t = Span(sockecho::bench::DEFAULT_LOSS_TIMEOUT))]
    pub timeout: Span,

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

    /// Search open-loop rates for the highest whose latency percentile
    /// meets TARGET (p99<2ms, p999<10ms, p50<200us): one run of --duration
    /// per step, starting at --rate (default 1000), doubling while steps
    /// pass, then narrowing to within 5 %. A step passes when its
    /// percentile is under the limit at the rate asked (within 5 %).
    #[arg(long, value_name = "TARGET", value_parser = parse_find_rate,
          conflicts_with_all = ["interval", "json_stream"])]
    pub find_rate: Option<sockecho::bench::LatencyTarget>,

    /// With --find-rate: the most steps the search runs.
    #[arg(long, value_name = "N", requires = "find_rate",
          default_value_t = sockecho::bench::DEFAULT_FIND_STEPS,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub find_steps: u32,

    /// With --find-rate: the longest the search may take; no step starts
    /// that could not end within it.
    #[arg(long, value_name = "DURATION", requires = "find_rate",
          default_value_t = Span(sockecho::bench::DEFAULT_FIND_TIME))]
    pub find_time: Span,

    /// Print a line per DURATION of the measured time as the run goes
    /// (with --json, the report holds them as `intervals`).
    #[arg(long, value_name = "DURATION", value_parser = parse_bench_interval)]
    pub interval: Option<Span>,

    /// Write JSON lines as the run goes: an `{"event":"interval",...}`
    /// object per interval (every --interval, default 1s), then
    /// `{"event":"end",...}` with the whole report.
    #[arg(long)]
    pub json_stream: bool,

    /// Connect, then wait until TIME by the wall clock before the warmup
    /// starts, so that runs on many machines measure the same window: RFC
    /// 3339 (2025-06-01T12:00:00Z) or @UNIX_SECONDS.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,

    /// Spread connections over the source addresses of ADDR or CIDR
    /// (127.0.0.0/24 on loopback), each bound to one in turn: past the one
    /// local port range a single source address has per destination.
    #[arg(long, value_name = "ADDR|CIDR")]
    pub source: Option<Cidr>,

    /// With --plot: latency on a logarithmic axis.
    #[arg(long, requires = "plot")]
    pub log_latency: bool,
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

    /// tls://: require a client certificate issued by a CA in FILE (PEM),
    /// or that is itself in FILE (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// tls://: an ALPN protocol to offer (h2, http/1.1...); repeatable, in
    /// order of preference.
    #[arg(long = "tls-alpn", value_name = "PROTO")]
    pub tls_alpn: Vec<String>,

    /// Every stream connection begins with a PROXY protocol header
    /// (version 1 or 2, as HAProxy's send-proxy and send-proxy-v2 send it),
    /// which names the original client: the events, --allow/--deny and
    /// --max-conns-per-ip use that client. A connection from an untrusted
    /// address, without a header or with a malformed one is closed before
    /// any byte is echoed.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// With --proxy-protocol: a proxy trusted to send the header
    /// (repeatable; default: loopback peers; Unix socket peers always).
    #[arg(long, value_name = "CIDR", requires = "proxy_protocol")]
    pub proxy_from: Vec<Cidr>,

    /// This server's name, for the greeting's {id} (default: the host
    /// name).
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,

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
    /// echoing. {id} (--id), {peer} (the client) and {local} (the address
    /// it connected to) are filled in; {{ and }} are literal braces.
    #[arg(long, value_name = "TEXT")]
    pub greeting: Option<String>,

    /// Serve one stream connection (or one datagram) to its end, then exit.
    #[arg(long)]
    pub once: bool,

    /// Serve GET /metrics in the Prometheus text format on HOST:PORT (port
    /// 0: any free port); the URL follows the listen ok lines as `metrics
    /// ok URL`.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_metrics)]
    pub metrics: Option<Endpoint>,

    /// http://: the largest request body reflected, in bytes; a larger one
    /// is answered 413.
    #[arg(long, value_name = "BYTES", default_value_t = sockecho::service::http::DEFAULT_MAX_BODY as u64,
          value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    pub max_body: u64,

    /// ws://: the largest WebSocket message (or frame) echoed, in bytes; a
    /// larger one closes the connection with code 1009.
    #[arg(long, value_name = "BYTES", default_value_t = sockecho::service::http::DEFAULT_MAX_MESSAGE as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_message: u64,

    /// http://: how long a begun request head may take to arrive whole,
    /// and then its body (past it: 408 Request Timeout). Default: 10s for
    /// the head, 30s for the body.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub request_timeout: Option<Span>,

    /// Listen backlog: connections the kernel queues before accept (the
    /// lesson used 5; the kernel caps it at net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_BACKLOG)]
    pub backlog: u32,

    /// Stream connections served at once; more are accepted and closed
    /// at once.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_conns: u64,

    /// Close a connection that makes no progress for DURATION: no byte
    /// received, or a write that cannot complete (0: never). It bounds each
    /// operation, so a peer trickling bytes is still served; what stops
    /// slow peers holding every slot is --max-conns-per-ip with --max-conns.
    #[arg(long, value_name = "DURATION", default_value_t = Span(server::DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout: Span,

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

    /// Serve the peers in FILE too, as --allow does: one CIDR a line, #
    /// comments. Read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub allow_file: Option<std::path::PathBuf>,

    /// Refuse the peers in FILE too, as --deny does: one CIDR a line, #
    /// comments. Read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub deny_file: Option<std::path::PathBuf>,

    /// UDP: replies per second to one source address (a burst of as many
    /// is allowed; 0: unlimited). Applies to sockets bound to a
    /// non-loopback address: a loopback one hears only this host.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_UDP_RATE)]
    pub udp_rate: u32,

    /// After a stop signal, how long open connections may finish.
    #[arg(long, value_name = "DURATION", default_value_t = Span(server::DEFAULT_DRAIN_TIMEOUT))]
    pub drain_timeout: Span,

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
          default_value_t = Span(sockecho::trace::DEFAULT_INTERVAL), requires = "trace")]
    pub trace_interval: Span,

    /// With --trace, for teaching: wait DURATION before each accept, so
    /// pending connections pile up in the backlog (see --backlog).
    #[arg(long, value_name = "DURATION", requires = "trace")]
    pub trace_pause_accept: Option<Span>,

    /// With --trace: after each close, follow the connection through the
    /// kernel's socket diagnostics (FIN_WAIT2, TIME_WAIT, LAST_ACK) until
    /// it is gone or DURATION has passed; 0s: not at all. Linux keeps
    /// TIME_WAIT for 60s.
    #[arg(long, value_name = "DURATION",
          default_value_t = Span(sockecho::trace::DEFAULT_FOLLOW), requires = "trace")]
    pub trace_follow: Span,

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

    /// tls://: accept exactly the server certificate whose SHA-256
    /// fingerprint serve printed (tls fingerprint sha256:HEX), whoever
    /// issued it.
    #[arg(long, value_name = "sha256:HEX", value_parser = parse_fingerprint,
          conflicts_with_all = ["tls_ca", "insecure"])]
    pub tls_fingerprint: Option<[u8; 32]>,

    /// tls://: the name to send as SNI and to verify, instead of the
    /// endpoint's host (clients send no SNI for an IP address).
    #[arg(long, value_name = "NAME")]
    pub tls_sni: Option<String>,

    /// tls://: an ALPN protocol to offer; repeatable, in order of
    /// preference.
    #[arg(long = "tls-alpn", value_name = "PROTO")]
    pub tls_alpn: Vec<String>,

    /// tls://: a client certificate chain (PEM) to present, for servers
    /// that ask for one (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// tls://: the private key for --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// A fingerprint as serve prints it, for --tls-fingerprint.
fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    sockecho::parse_fingerprint(text)
}

impl TlsClientArgs {
    fn options(&self) -> sockecho::ClientTlsOptions {
        sockecho::ClientTlsOptions {
            ca: self.tls_ca.clone(),
            insecure: self.insecure,
            fingerprint: self.tls_fingerprint,
            sni: self.tls_sni.clone(),
            alpn: self.tls_alpn.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }
}

/// A PROXY protocol header sent first by a client (connect, ping, bench),
/// as a load balancer would send it to the server.
#[derive(Debug, Args)]
pub struct ProxyClientArgs {
    /// Streams: send a PROXY protocol header of this version first (v1:
    /// text, v2: binary), naming --proxy-source as the client and the
    /// connection's destination.
    #[arg(long = "proxy-protocol", value_name = "VERSION", value_enum)]
    pub proxy_protocol: Option<ProxyVersionArg>,

    /// With --proxy-protocol: the client the header names (default: the
    /// connection's own local address).
    #[arg(long, value_name = "HOST:PORT", requires = "proxy_protocol")]
    pub proxy_source: Option<std::net::SocketAddr>,
}

/// `--proxy-protocol`'s versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyVersionArg {
    /// Version 1: one line of text (`PROXY TCP4 ...`).
    V1,
    /// Version 2: binary.
    V2,
}

impl ProxyClientArgs {
    /// The library's header settings, when a header is asked for.
    pub fn client(&self) -> Option<sockecho::ProxyClient> {
        self.proxy_protocol.map(|version| sockecho::ProxyClient {
            version: match version {
                ProxyVersionArg::V1 => sockecho::proxy::Version::V1,
                ProxyVersionArg::V2 => sockecho::proxy::Version::V2,
            },
            source: self.proxy_source,
        })
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

    #[command(flatten)]
    pub proxy: ProxyClientArgs,

    /// Send TEXT followed by a newline (or, over datagrams, as one
    /// datagram) instead of reading standard input; repeatable.
    #[arg(short, long = "message", value_name = "TEXT")]
    pub messages: Vec<String>,

    /// Streams: connect timeout (default 10s). Datagrams: how long to wait
    /// for each reply (default 1s).
    #[arg(short = 'w', long, value_name = "DURATION")]
    pub timeout: Option<Span>,

    /// Trace the stream socket's life on standard error: socket, connect
    /// (with its duration), shutdown, close, and the TCP state, RTT and
    /// retransmits the kernel reports after each.
    #[arg(long)]
    pub trace: bool,

    /// With --trace: how often to sample the connection.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval,
          default_value_t = Span(sockecho::trace::DEFAULT_INTERVAL), requires = "trace")]
    pub trace_interval: Span,

    /// With --trace: after the close, follow the connection through the
    /// kernel's socket diagnostics (FIN_WAIT2, TIME_WAIT) until it is
    /// gone or DURATION has passed, before exiting; 0s: not at all. Linux
    /// keeps TIME_WAIT for 60s.
    #[arg(long, value_name = "DURATION",
          default_value_t = Span(sockecho::trace::DEFAULT_FOLLOW), requires = "trace")]
    pub trace_follow: Span,

    /// With --trace: trace lines as JSON objects, one per line.
    #[arg(long, requires = "trace")]
    pub json: bool,
}

/// `--metrics HOST:PORT` (or `tcp://HOST:PORT`): a TCP address.
fn parse_metrics(text: &str) -> Result<Endpoint, String> {
    match text.parse::<Endpoint>() {
        Ok(endpoint @ Endpoint::Tcp(_)) => Ok(endpoint),
        Ok(other) => Err(format!(
            "'{other}' is not a TCP address: the metrics are served over HTTP on HOST:PORT (127.0.0.1:9100)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration a timer can tick at: more than zero.
fn parse_interval(text: &str) -> Result<Span, String> {
    match sockecho::duration::parse(text) {
        Ok(d) if d.is_zero() => Err(format!("invalid interval '{text}': must be more than 0")),
        Ok(d) => Ok(Span(d)),
        Err(e) => Err(e.to_string()),
    }
}

/// A bench interval: at least `sockecho::bench::MIN_INTERVAL`.
fn parse_bench_interval(text: &str) -> Result<Span, String> {
    let span = parse_interval(text)?;
    if span.0 < sockecho::bench::MIN_INTERVAL {
        return Err(format!(
            "invalid interval '{text}': at least {} (finer slices say little)",
            sockecho::duration::format(sockecho::bench::MIN_INTERVAL)
        ));
    }
    Ok(span)
}

/// `--find-rate`: the library's target syntax, its refusal in its words.
fn parse_find_rate(text: &str) -> Result<sockecho::bench::LatencyTarget, String> {
    text.parse().map_err(|e| match e {
        sockecho::Error::Setting { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// `--start-at`: RFC 3339 or `@UNIX_SECONDS`.
fn parse_start_at(text: &str) -> Result<std::time::SystemTime, String> {
    sockecho::measure::wallclock::parse(text).map_err(|e| e.to_string())
}

/// The trace sink on standard error, or none.
pub fn tracer(on: bool, json: bool, interval: Span, follow: Span) -> Tracer {
    if on {
        Tracer::stderr(format(json), interval.0).follow_for(follow.0)
    } else {
        Tracer::disabled()
    }
}

/// Text or JSON lines.
pub fn format(json: bool) -> EventFormat {
    if json {
        EventFormat::Json
    } else {
        EventFormat::Text
    }
}

impl ServeArgs {
    /// The library's configuration.
    pub fn to_config(&self) -> ServeConfig {
        ServeConfig {
            endpoints: self.endpoints.clone(),
            service: server::ServiceConfig {
                mode: match self.mode {
                    ModeArg::Echo => sockecho::service::Mode::Echo,
                    ModeArg::Discard => sockecho::service::Mode::Discard,
                    ModeArg::Chargen => sockecho::service::Mode::Chargen,
                },
                greeting: self
                    .greeting
                    .clone()
                    .map(String::into_bytes)
                    .unwrap_or_default(),
                id: self.id.clone(),
                http: sockecho::service::HttpLimits {
                    max_body: usize::try_from(self.max_body).unwrap_or(usize::MAX),
                    max_message: usize::try_from(self.max_message).unwrap_or(usize::MAX),
                    head_timeout: self
                        .request_timeout
                        .map_or(sockecho::service::http::DEFAULT_HEAD_TIMEOUT, |t| t.0),
                    body_timeout: self
                        .request_timeout
                        .map_or(sockecho::service::http::DEFAULT_BODY_TIMEOUT, |t| t.0),
                    ..Default::default()
                },
            },
            limits: server::Limits {
                max_conns: usize::try_from(self.max_conns).unwrap_or(usize::MAX),
                max_conns_per_ip: self
                    .max_conns_per_ip
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                // Zero means never: a zero timer would close every connection.
                idle_timeout: (!self.idle_timeout.0.is_zero()).then_some(self.idle_timeout.0),
                drain_timeout: self.drain_timeout.0,
            },
            access: AccessList::new(self.allow.clone(), self.deny.clone()),
            allow_file: self.allow_file.clone(),
            deny_file: self.deny_file.clone(),
            proxy: self.proxy_protocol.then(|| server::ProxyProtocol {
                trusted: self.proxy_from.clone(),
            }),
            udp_guard: server::UdpGuard {
                allow_low_ports: self.allow_low_ports,
                rate: self.udp_rate,
            },
            tls: sockecho::ServerTlsOptions {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                client_ca: self.tls_client_ca.clone(),
                alpn: self.tls_alpn.clone(),
            },
            engine: server::EngineConfig {
                prefer: if self.epoll {
                    server::EnginePreference::Epoll
                } else {
                    server::EnginePreference::Auto
                },
                threads: self
                    .threads
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                // The engines' tests run the pre-6.0 receive path on any
                // kernel with this variable set.
                receive: if std::env::var_os("SOCKECHO_URING_SINGLESHOT").is_some() {
                    server::RingReceive::SingleShot
                } else {
                    server::RingReceive::Multishot
                },
                // And the buffer path for large messages, to test it and to
                // measure what splicing gives.
                large: if std::env::var_os("SOCKECHO_URING_NO_SPLICE").is_some() {
                    server::LargeTransfer::Buffers
                } else {
                    server::LargeTransfer::Splice
                },
            },
            listen: server::ListenConfig {
                backlog: self.backlog,
                pause_accept: self.trace_pause_accept.map(|span| span.0),
            },
            once: self.once,
            exit_when_idle: None,
            metrics: self.metrics.clone(),
        }
    }
}

impl PingArgs {
    /// The library's configuration.
    pub fn to_config(&self) -> PingConfig {
        PingConfig {
            endpoint: self.endpoint.clone(),
            count: self.count,
            interval: self.interval.0,
            size: self.size,
            timeout: self.timeout.0,
            connect_only: self.connect,
            tls: self.tls.options(),
            proxy: self.proxy.client(),
            greeting_line: self.greeting_line,
        }
    }
}

impl BenchArgs {
    /// The library's configuration.
    pub fn to_config(&self) -> BenchConfig {
        BenchConfig {
            endpoint: self.endpoint.clone(),
            connections: usize::try_from(self.connections).unwrap_or(usize::MAX),
            message_size: usize::try_from(self.size).unwrap_or(usize::MAX),
            duration: self.duration.0,
            warmup: self.warmup.0,
            rate: self.rate,
            pipeline: usize::try_from(self.pipeline).unwrap_or(usize::MAX),
            timeout: self.timeout.0,
            threads: self
                .threads
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            driver: if self.epoll {
                sockecho::bench::Driver::Epoll
            } else {
                sockecho::bench::Driver::Auto
            },
            tls: self.tls.options(),
            start_at: self.start_at,
            source: self.source,
            // iperf3's default: a JSON stream reports every second.
            intervals: self
                .interval
                .map(|span| span.0)
                .or(self.json_stream.then_some(Duration::from_secs(1))),
            proxy: self.proxy.client(),
            greeting_line: self.greeting_line,
        }
    }

    /// The rate search `--find-rate` asks for.
    pub fn find_rate(&self) -> Option<sockecho::bench::FindRate> {
        let target = self.find_rate.clone()?;
        Some(sockecho::bench::FindRate {
            target,
            steps: self.find_steps,
            time: self.find_time.0,
        })
    }
}

impl ConnectArgs {
    /// The library's configuration.
    pub fn to_config(&self) -> ConnectConfig {
        ConnectConfig {
            endpoint: self.endpoint.clone(),
            messages: (!self.messages.is_empty()).then(|| self.messages.clone()),
            timeout: self.timeout.map(|span| span.0),
            tls: self.tls.options(),
            proxy: self.proxy.client(),
        }
    }
}
