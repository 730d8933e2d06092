//! The server: binds every endpoint, runs one accept loop per stream
//! listener and one receive loop per datagram socket, and drains on
//! shutdown.
//!
//! How a byte flows: [`Server::bind`] makes the sockets; [`Server::run`]
//! prints `listen ok` for each and spawns its loop; a stream's accept loop
//! takes a connection permit, spawns [`service::echo`] for the connection
//! and emits `connection`/`closed` events around it; a datagram loop echoes
//! each datagram the guard lets through.

mod accept;
mod datagram;
pub mod guard;
pub mod service;
#[cfg(target_os = "linux")]
mod udp_batch;
#[cfg(target_os = "linux")]
pub mod uring;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::endpoint::{Endpoint, Kind};
use crate::error::Error;
use crate::events::Events;
use crate::shutdown::Shutdown;
use crate::trace::Tracer;
use crate::transport::datagram::BoundDatagram;
use crate::transport::{Datagram, Listener, Peer, Stream};
use guard::{AccessList, Admission, SourceSlot};

/// The listen backlog when none is given: the kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux) anyway.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Connections served at once when no limit is given. Each costs a file
/// descriptor and one buffer; past it, connections are accepted and closed
/// at once so clients see the end of the stream rather than a hang.
pub const DEFAULT_MAX_CONNS: usize = 10_000;

/// How long an inetd `wait` datagram server waits for the next datagram
/// before exiting (inetd starts it again when one comes).
pub const INETD_DATAGRAM_IDLE: Duration = Duration::from_secs(10);

/// How long a TLS client may take to finish its handshake (less when
/// `--idle-timeout` is shorter): a silent client must not hold a slot.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections may finish after a stop signal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may make no progress (no byte received, or a
/// write that cannot complete) before it is closed. Long enough for any
/// interactive session, short enough that peers that vanished without a
/// FIN or a reset give their slot back within minutes. It bounds each
/// operation, so a peer trickling a byte at a time is still served: the
/// defence against slow peers holding slots is `--max-conns-per-ip` with
/// `--max-conns`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Everything `serve` needs to know, free of any command-line type.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// What to serve; at least one.
    pub endpoints: Vec<Endpoint>,
    /// Sent to each stream connection before the echo begins.
    pub greeting: Vec<u8>,
    /// Serve one stream connection or one datagram, then stop.
    pub once: bool,
    /// The listen backlog for stream endpoints.
    pub backlog: u32,
    /// Stream connections served at once, across all endpoints.
    pub max_conns: usize,
    /// Close a connection that makes no progress for this long.
    pub idle_timeout: Option<Duration>,
    /// How long open connections may finish after a stop.
    pub drain_timeout: Duration,
    /// Answer datagrams from ports below 1024 (see [`guard`]).
    pub allow_low_ports: bool,
    /// `--allow`/`--deny`: who is served (stream peers at accept, datagram
    /// sources per datagram); Unix-domain peers are not filtered.
    pub access: AccessList,
    /// Stream connections open at once from one source address; `None`:
    /// no limit but `max_conns`.
    pub max_conns_per_ip: Option<usize>,
    /// Datagram replies per second to one source address (a token bucket
    /// with a burst of as many); 0: unlimited. Applies to sockets bound to
    /// a non-loopback address (see [`guard::DatagramGuard`]).
    pub udp_rate: u32,
    /// Where `listen`, `connection` and `closed` events go.
    pub events: Events,
    /// `--trace`: socket calls and the kernel's TCP view on standard error.
    /// Tracing needs the accept loop and the task per connection, so it
    /// keeps TCP off the io_uring engine.
    pub trace: Tracer,
    /// `--trace-pause-accept`, for teaching: the accept loop waits this long
    /// before each accept, so pending connections pile up in the backlog
    /// where `--trace` shows the queue fill.
    pub pause_accept: Option<Duration>,
    /// Threads of the io_uring engine; `None`: one per available core.
    pub threads: Option<usize>,
    /// Which engine serves TCP.
    pub engine: Engine,
    /// The certificate `tls://` endpoints present (none given: a
    /// self-signed one is made at start).
    pub tls: crate::transport::tls::ServerTlsOptions,
    /// Echo, discard or chargen.
    pub mode: service::Mode,
    /// Exit once no datagram came for this long (inetd `wait` services,
    /// which inetd restarts with the next datagram).
    pub exit_when_idle: Option<Duration>,
}

/// How TCP connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// io_uring where the kernel offers it and the options allow (not
    /// `--once`), else epoll.
    #[default]
    Auto,
    /// tokio's epoll reactor, a task per connection.
    Epoll,
}

impl ServeConfig {
    /// A configuration with every default, serving `endpoints`.
    pub fn new(endpoints: Vec<Endpoint>) -> ServeConfig {
        ServeConfig {
            endpoints,
            greeting: Vec::new(),
            once: false,
            backlog: DEFAULT_BACKLOG,
            max_conns: DEFAULT_MAX_CONNS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            allow_low_ports: false,
            access: AccessList::default(),
            max_conns_per_ip: None,
            udp_rate: guard::rate::DEFAULT_UDP_RATE,
            events: Events::silent(),
            trace: Tracer::disabled(),
            pause_accept: None,
            threads: None,
            engine: Engine::Auto,
            tls: Default::default(),
            mode: service::Mode::Echo,
            exit_when_idle: None,
        }
    }
}

/// A server whose sockets are bound and listening, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: ServeConfig,
    /// The bound sockets, in the order the endpoints were given (so the
    /// `listen ok` lines come in that order too).
    sockets: Vec<Bound>,
    /// The endpoints as really bound, in the order given.
    local: Vec<Endpoint>,
    /// What `tls://` endpoints present; `None` when there are none.
    tls: Option<crate::transport::tls::ServerTls>,
}

/// One bound socket of either kind.
#[derive(Debug)]
enum Bound {
    Stream(Listener),
    Datagram(BoundDatagram),
    /// One connection handed over by inetd (`nowait`): served, then done.
    Connection(Stream, Peer, Endpoint),
}

/// What every task of one server shares.
#[derive(Debug, Clone)]
struct Context {
    config: Arc<ServeConfig>,
    /// Cancelled when accepting must stop (signal, or `--once` served).
    accepting: CancellationToken,
    /// Cancelled when open connections must close now.
    force: CancellationToken,
    /// One permit per open stream connection (`--max-conns`).
    permits: Arc<Semaphore>,
    /// `--allow`/`--deny` and `--max-conns-per-ip`, shared by every
    /// listener and engine thread.
    admission: Arc<Admission>,
    tracker: TaskTracker,
    /// The TLS acceptor for `tls://` listeners.
    tls: Option<crate::transport::tls::ServerTls>,
}

impl Server {
    /// Binds every endpoint of `config`. Nothing is served until
    /// [`run`](Server::run); the first endpoint that cannot be bound fails
    /// the whole call.
    pub async fn bind(config: ServeConfig) -> Result<Server, Error> {
        if config.endpoints.is_empty() {
            return Err(Error::Usage("no endpoint to serve".to_owned()));
        }
        if config.max_conns == 0 {
            return Err(Error::Usage("--max-conns must be at least 1".to_owned()));
        }
        let mut sockets = Vec::new();
        let mut local = Vec::new();
        for endpoint in &config.endpoints {
            match endpoint.kind() {
                Kind::Stream => {
                    let listener =
                        Listener::bind_traced(endpoint, config.backlog, &config.trace).await?;
                    tracing::debug!(endpoint = %listener.local_endpoint(), backlog = config.backlog, "listening");
                    local.push(listener.local_endpoint().clone());
                    sockets.push(Bound::Stream(listener));
                }
                Kind::Datagram => {
                    let bound = Datagram::bind(endpoint).await?;
                    tracing::debug!(endpoint = %bound.local, "bound");
                    local.push(bound.local.clone());
                    sockets.push(Bound::Datagram(bound));
                }
            }
        }
        // One certificate for every tls:// endpoint, valid for their names.
        let tls = if config
            .endpoints
            .iter()
            .any(|e| matches!(e, Endpoint::Tls(_)))
        {
            let names: Vec<String> = config
                .endpoints
                .iter()
                .filter_map(|e| e.host_port())
                .map(|hp| hp.host.to_string().trim_matches(['[', ']']).to_owned())
                .collect();
            Some(crate::transport::tls::ServerTls::new(&config.tls, &names)?)
        } else {
            None
        };
        Ok(Server {
            config,
            sockets,
            local,
            tls,
        })
    }

    /// A server for sockets handed over instead of bound: by systemd
    /// socket activation, or by inetd on standard input (see
    /// [`crate::transport::inherit`]). `config.endpoints` is ignored.
    pub async fn adopt(
        config: ServeConfig,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<Server, Error> {
        use crate::transport::inherit::{Adopted, adopt};
        if fds.is_empty() {
            return Err(Error::Usage("no socket handed over".to_owned()));
        }
        let mut sockets = Vec::new();
        let mut local = Vec::new();
        for fd in fds {
            match adopt(fd)? {
                Adopted::Listener(listener) => {
                    local.push(listener.local_endpoint().clone());
                    sockets.push(Bound::Stream(listener));
                }
                Adopted::Datagram(bound) => {
                    local.push(bound.local.clone());
                    sockets.push(Bound::Datagram(bound));
                }
                Adopted::Connection(stream, peer, endpoint) => {
                    local.push(endpoint.clone());
                    sockets.push(Bound::Connection(stream, peer, endpoint));
                }
            }
        }
        Ok(Server {
            config,
            sockets,
            local,
            tls: None,
        })
    }

    /// The endpoints as really bound (ephemeral ports filled in), in the
    /// order they were given.
    pub fn local_endpoints(&self) -> &[Endpoint] {
        &self.local
    }

    /// Serves until `stop` is cancelled (then drains) or, with `once`, until
    /// the one connection or datagram is served.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) -> Result<(), Error> {
        self.run_until(Shutdown {
            stop,
            force: CancellationToken::new(),
        })
        .await
    }

    /// Serves until `shutdown.stop` (drain, then return) or `shutdown.force`
    /// (close everything now).
    pub async fn run_until(self, shutdown: Shutdown) -> Result<(), Error> {
        let ctx = Context {
            permits: Arc::new(Semaphore::new(self.config.max_conns)),
            admission: Arc::new(Admission::new(
                self.config.access.clone(),
                self.config.max_conns_per_ip,
            )),
            config: Arc::new(self.config),
            accepting: CancellationToken::new(),
            force: shutdown.force.clone(),
            tracker: TaskTracker::new(),
            tls: self.tls,
        };
        let use_uring = uring_suits(&ctx.config);
        let mut epoll_logged = false;
        let mut only_connections = false;
        let mut ring_listeners = Vec::new();
        for socket in self.sockets {
            match socket {
                #[cfg(target_os = "linux")]
                Bound::Stream(listener)
                    if use_uring && matches!(listener.local_endpoint(), Endpoint::Tcp(_)) =>
                {
                    ctx.config.events.listen(listener.local_endpoint());
                    let endpoint = listener.local_endpoint().clone();
                    let fd = listener
                        .into_fd()
                        .map_err(|e| Error::listen(&endpoint, e, None))?;
                    ring_listeners.push((fd, endpoint));
                }
                Bound::Stream(listener) => {
                    ctx.config.events.listen(listener.local_endpoint());
                    if !epoll_logged {
                        epoll_logged = true;
                        tracing::info!(
                            engine = "epoll",
                            threads = tokio::runtime::Handle::current().metrics().num_workers(),
                            why = epoll_reason(&ctx.config, listener.local_endpoint()),
                            "serving streams"
                        );
                    }
                    if let (Endpoint::Tls(_), Some(tls)) = (listener.local_endpoint(), &ctx.tls)
                        && let Some(fingerprint) = &tls.self_signed_fingerprint
                    {
                        ctx.config
                            .events
                            .tls_fingerprint(listener.local_endpoint(), fingerprint);
                    }
                    let span =
                        tracing::info_span!("listener", endpoint = %listener.local_endpoint());
                    ctx.tracker
                        .spawn(accept::accept_loop(listener, ctx.clone()).instrument(span));
                }
                Bound::Datagram(bound) => {
                    ctx.config.events.listen(&bound.local);
                    let span = tracing::info_span!("datagram", endpoint = %bound.local);
                    ctx.tracker
                        .spawn(datagram::datagram_loop(bound, ctx.clone()).instrument(span));
                }
                Bound::Connection(stream, peer, endpoint) => {
                    let task_ctx = ctx.clone();
                    let permit = ctx.permits.clone().try_acquire_owned().ok();
                    ctx.tracker.spawn(async move {
                        accept::serve_connection(stream, peer, &endpoint, &task_ctx).await;
                        drop(permit);
                    });
                    // Nothing else to accept: the server ends with it.
                    only_connections = true;
                }
            }
        }
        if only_connections {
            ctx.accepting.cancel();
        }
        if !ring_listeners.is_empty() {
            #[cfg(target_os = "linux")]
            spawn_uring(ring_listeners, &ctx)?;
        }
        ctx.tracker.close();

        tokio::select! {
            _ = shutdown.stop.cancelled() => {}
            _ = shutdown.force.cancelled() => {}
            _ = ctx.accepting.cancelled() => {
                // `--once`: the one connection runs to its end unless a
                // signal comes first.
                tokio::select! {
                    _ = ctx.tracker.wait() => return Ok(()),
                    _ = shutdown.stop.cancelled() => {}
                    _ = shutdown.force.cancelled() => {}
                }
            }
        }
        ctx.accepting.cancel();
        let open = ctx.config.max_conns - ctx.permits.available_permits();
        tracing::info!(open, drain_timeout = ?ctx.config.drain_timeout, "stopped accepting; draining");
        tokio::select! {
            _ = ctx.tracker.wait() => {}
            _ = tokio::time::sleep(ctx.config.drain_timeout) => {
                tracing::info!("drain timeout reached; closing the remaining connections");
                ctx.force.cancel();
                ctx.tracker.wait().await;
            }
            _ = shutdown.force.cancelled() => ctx.tracker.wait().await,
        }
        Ok(())
    }
}

/// A server on the sockets this process should serve: the connection or
/// datagram socket inetd put on standard input (`inetd`), else the sockets
/// systemd passed (socket activation), else `config.endpoints`, bound.
pub async fn open(config: ServeConfig, inetd: bool) -> Result<Server, Error> {
    use crate::transport::inherit;
    if inetd {
        let config = ServeConfig {
            exit_when_idle: Some(INETD_DATAGRAM_IDLE),
            ..config
        };
        return Server::adopt(config, vec![inherit::stdin_socket()?]).await;
    }
    if let Some(fds) = inherit::systemd_sockets()? {
        tracing::info!(sockets = fds.len(), "serving the sockets systemd passed");
        return Server::adopt(config, fds).await;
    }
    Server::bind(config).await
}

/// The io_uring engine serves TCP endpoints when the kernel offers it and
/// no option needs the accept loop and per-connection tasks (`--once`,
/// `--trace`, `--trace-pause-accept`, `--mode` other than echo).
fn uring_suits(config: &ServeConfig) -> bool {
    #[cfg(target_os = "linux")]
    {
        config.engine == Engine::Auto
            && !config.once
            && !config.trace.is_enabled()
            && config.pause_accept.is_none()
            && config.mode == service::Mode::Echo
            && uring::available()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = config;
        false
    }
}

/// Why a stream endpoint is served by the epoll engine, for the start-up log.
fn epoll_reason(config: &ServeConfig, endpoint: &Endpoint) -> &'static str {
    if config.engine != Engine::Auto {
        "--epoll"
    } else if !matches!(endpoint, Endpoint::Tcp(_)) {
        "not plain TCP"
    } else if config.once {
        "--once"
    } else if config.trace.is_enabled() || config.pause_accept.is_some() {
        "--trace"
    } else if config.mode != service::Mode::Echo {
        "--mode"
    } else {
        "io_uring unavailable here"
    }
}

/// Starts the io_uring engine's threads on `listeners`, and a task (tracked
/// like the accept loops) that passes the stop and force signals on and
/// ends when every engine thread has.
#[cfg(target_os = "linux")]
fn spawn_uring(
    listeners: Vec<(std::os::fd::OwnedFd, Endpoint)>,
    ctx: &Context,
) -> Result<(), Error> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let threads = ctx
        .config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let shared = Arc::new(uring::Shared {
        listeners,
        greeting: ctx.config.greeting.clone(),
        idle_timeout: ctx.config.idle_timeout,
        permits: ctx.permits.clone(),
        max_conns: ctx.config.max_conns,
        admission: ctx.admission.clone(),
        accept_errors: std::sync::Mutex::new(guard::rate::LogThrottle::new()),
        events: ctx.config.events.clone(),
        stop: AtomicBool::new(false),
        force: AtomicBool::new(false),
    });
    tracing::info!(engine = "io_uring", threads, "serving TCP");
    let mut finished = Vec::with_capacity(threads);
    for t in 0..threads {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("ring-{t}"))
            .spawn(move || {
                if let Err(e) = uring::run_thread(&shared) {
                    tracing::error!(cause = %e, "io_uring engine thread failed");
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::io("starting an engine thread", e))?;
        finished.push(done_rx);
    }
    let (accepting, force) = (ctx.accepting.clone(), ctx.force.clone());
    ctx.tracker.spawn(async move {
        let all_done = async move {
            for done in finished {
                let _ = done.await;
            }
        };
        tokio::pin!(all_done);
        tokio::select! {
            _ = &mut all_done => return,
            _ = accepting.cancelled() => {
                shared.stop.store(true, Ordering::Relaxed);
                // Refuse new connections at once, as the epoll engine does
                // by dropping its listeners: on Linux, shutting down a
                // listening socket's read side closes it to new connections
                // and fails the accepts in flight.
                for (fd, _) in &shared.listeners {
                    let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Read);
                }
            }
        }
        tokio::select! {
            _ = &mut all_done => return,
            _ = force.cancelled() => shared.force.store(true, Ordering::Relaxed),
        }
        all_done.await;
    });
    Ok(())
}

/// Decides, right after accept and before any byte is read, whether a
/// stream peer is served (`--allow`/`--deny`, `--max-conns-per-ip`); the
/// slot returned is held for the connection's life. `None`: close it now.
/// Refusals are logged at most once a second, with their count.
pub(crate) fn admit(admission: &Admission, peer: &Peer) -> Option<SourceSlot> {
    let Peer::Ip(addr) = peer else {
        return Some(SourceSlot::uncounted());
    };
    match admission.admit(addr.ip()) {
        Ok(slot) => Some(slot),
        Err(why) => {
            if let Some(refused) = admission.note_refusal(Instant::now()) {
                tracing::warn!(%peer, refused, why = %why, "connection refused");
            }
            None
        }
    }
}
