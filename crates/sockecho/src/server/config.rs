//! What `serve` is told, concern by concern, with every default defined
//! here once. Runtime handles (where events and trace lines go, when to
//! stop) are not configuration: they are [`Handles`](super::Handles),
//! passed to [`Server::run`](super::Server::run).

use std::time::Duration;

use std::path::PathBuf;

use crate::endpoint::Endpoint;
use crate::guard::{AccessList, Cidr};
use crate::service::Mode;
use crate::transport::tls::ServerTlsOptions;

/// The listen backlog when none is given: the kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux) anyway.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Connections served at once when no limit is given. Each costs a file
/// descriptor and one buffer; past it, connections are accepted and closed
/// at once so clients see the end of the stream rather than a hang.
pub const DEFAULT_MAX_CONNS: usize = 10_000;

/// How long open connections may finish after a stop.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may make no progress (no byte received, or a
/// write that cannot complete) before it is closed. Long enough for any
/// interactive session, short enough that peers that vanished without a
/// FIN or a reset give their slot back within minutes. It bounds each
/// operation, so a peer trickling a byte at a time is still served: the
/// defence against slow peers holding slots is the per-source limit with
/// the overall one.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Replies per second per source address a UDP socket bound to a
/// non-loopback address sends at most: far above what `ping` or a protocol
/// test sends, far below what makes an echo server a useful reflector.
pub const DEFAULT_UDP_RATE: u32 = 1000;

/// How long an inetd `wait` datagram server waits for the next datagram
/// before exiting (inetd starts it again when one comes).
pub const INETD_DATAGRAM_IDLE: Duration = Duration::from_secs(10);

/// How long a TLS client may take to finish its handshake (less when the
/// idle timeout is shorter): a silent client must not hold a slot.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take to send its whole PROXY protocol header
/// (less when the idle timeout is shorter). A proxy sends it at once, with
/// the connection; a peer that trickles it must not hold a slot for long.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `serve` needs to know, free of any command-line type.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    /// What to serve; at least one.
    pub endpoints: Vec<Endpoint>,
    /// What each connection and datagram gets.
    pub service: ServiceConfig,
    /// How much is served at once, and for how long.
    pub limits: Limits,
    /// Who is served: stream peers at accept, datagram sources per
    /// datagram; Unix-domain peers are not filtered.
    pub access: AccessList,
    /// More blocks to serve, one a line (`#` comments), read at start and
    /// again at each [`Reloader::reload`](super::Reloader::reload).
    pub allow_file: Option<PathBuf>,
    /// More blocks to refuse, read as `allow_file` is.
    pub deny_file: Option<PathBuf>,
    /// Stream connections begin with a PROXY protocol header from a
    /// trusted proxy (`None`: no header is expected, and one would be
    /// echoed like any bytes).
    pub proxy: Option<ProxyProtocol>,
    /// Which datagrams get a reply at all (reflection and loop guards).
    pub udp_guard: UdpGuard,
    /// The certificate `tls://` endpoints present (none given: a
    /// self-signed one is made at start).
    pub tls: ServerTlsOptions,
    /// Which engine serves TCP, and on how many threads.
    pub engine: EngineConfig,
    /// The listening sockets themselves.
    pub listen: ListenConfig,
    /// Serve one stream connection or one datagram, then stop.
    pub once: bool,
    /// Exit once no datagram came for this long (inetd `wait` services,
    /// which inetd restarts with the next datagram).
    pub exit_when_idle: Option<Duration>,
    /// Serve `GET /metrics` (the Prometheus text format) on this `tcp://`
    /// address; `None`: count nothing.
    pub metrics: Option<Endpoint>,
}

impl ServeConfig {
    /// A configuration with every default, serving `endpoints`.
    pub fn new(endpoints: Vec<Endpoint>) -> ServeConfig {
        ServeConfig {
            endpoints,
            ..ServeConfig::default()
        }
    }
}

/// What each connection and datagram gets.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// Echo, discard or chargen.
    pub mode: Mode,
    /// Sent to each stream connection before the service begins (never to
    /// datagrams): a template whose `{id}`, `{peer}` and `{local}` are
    /// filled in for each connection (`{{` and `}}` are literal braces;
    /// see [`crate::service::greeting`]).
    pub greeting: Vec<u8>,
    /// This server's name, for `{id}`; `None`: the host name.
    pub id: Option<String>,
    /// What `http://` and `ws://` endpoints' connections may hold and take.
    pub http: crate::service::HttpLimits,
}

/// How much is served at once, and for how long.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Stream connections served at once, across all endpoints; more are
    /// accepted and closed at once.
    pub max_conns: usize,
    /// Stream connections open at once from one source address; `None`:
    /// no limit but `max_conns`.
    pub max_conns_per_ip: Option<usize>,
    /// Close a connection that makes no progress for this long; `None`:
    /// never.
    pub idle_timeout: Option<Duration>,
    /// How long open connections may finish after a stop.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_conns: DEFAULT_MAX_CONNS,
            max_conns_per_ip: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Which datagrams get a reply: an echo server answering any datagram is
/// a reflector (see [`crate::guard`]).
#[derive(Debug, Clone)]
pub struct UdpGuard {
    /// Answer datagrams from source ports below 1024 (off by default: a
    /// forged datagram from another echo port would loop forever).
    pub allow_low_ports: bool,
    /// Replies per second to one source address (a token bucket with a
    /// burst of as many); 0: unlimited. Applies to sockets bound to a
    /// non-loopback address: a loopback one hears only this host.
    pub rate: u32,
}

impl Default for UdpGuard {
    fn default() -> UdpGuard {
        UdpGuard {
            allow_low_ports: false,
            rate: DEFAULT_UDP_RATE,
        }
    }
}

/// Which engine serves TCP, and on how many threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// io_uring where it can, or epoll always.
    pub prefer: EnginePreference,
    /// Threads of the io_uring engine; `None`: one per available core.
    /// (The epoll engine runs on the caller's tokio runtime.)
    pub threads: Option<usize>,
    /// How the io_uring engine receives (multishot where the kernel has it,
    /// or one receive per message, as on kernels before 6.0).
    pub receive: RingReceive,
    /// How the io_uring engine echoes a connection that sends large
    /// messages.
    pub large: LargeTransfer,
}

/// Which engine a server prefers for TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnginePreference {
    /// io_uring where the kernel offers it and nothing else rules it out.
    #[default]
    Auto,
    /// tokio's epoll reactor, a task per connection.
    Epoll,
}

/// How the io_uring engine receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingReceive {
    /// One long-lived multishot receive per connection where the kernel
    /// has it (Linux 6.0), else one receive per message.
    #[default]
    Multishot,
    /// One receive per message, and one accept per connection (with the
    /// peer's address from the accept itself), on every kernel: the path
    /// kernels before 6.0 take, chosen to test it on newer ones.
    SingleShot,
}

/// How the io_uring engine echoes a connection once a receive brings at
/// least [`LargeTransfer::SPLICE_FROM`] bytes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LargeTransfer {
    /// From then on its bytes go socket to pipe to socket with `splice(2)`
    /// and never through the engine's buffers: the kernel moves page
    /// references instead of copying each byte in and out of user memory
    /// (a pipe per such connection; where one cannot be made, it stays on
    /// buffers).
    #[default]
    Splice,
    /// Through the engine's buffers, like small messages.
    Buffers,
}

impl LargeTransfer {
    /// The receive size that moves a connection to splicing: half a
    /// buffer, far above what a client of small messages sends at once.
    pub const SPLICE_FROM: usize = 32 * 1024;
}

/// The listening sockets.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The listen backlog for stream endpoints (the lesson used 5).
    pub backlog: u32,
    /// For teaching, with tracing: wait this long before each accept, so
    /// pending connections pile up in the backlog where the trace shows
    /// the queue fill.
    pub pause_accept: Option<Duration>,
}

impl Default for ListenConfig {
    fn default() -> ListenConfig {
        ListenConfig {
            backlog: DEFAULT_BACKLOG,
            pause_accept: None,
        }
    }
}

/// PROXY protocol on stream endpoints: each connection begins with a
/// header (version 1 or 2) that names the original client, and only
/// trusted proxies may send one.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocol {
    /// The proxies trusted to send a header; empty: loopback peers. Unix
    /// socket peers are always trusted (the socket file's permissions say
    /// who may connect).
    pub trusted: Vec<Cidr>,
}

impl ProxyProtocol {
    /// Whether `peer` may send a PROXY header.
    pub fn trusts(&self, peer: &crate::transport::Peer) -> bool {
        match peer {
            crate::transport::Peer::Ip(addr) => {
                if self.trusted.is_empty() {
                    crate::guard::canonical(addr.ip()).is_loopback()
                } else {
                    self.trusted.iter().any(|c| c.contains(addr.ip()))
                }
            }
            crate::transport::Peer::Unix { .. } => true,
        }
    }
}
