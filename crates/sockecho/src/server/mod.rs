//! The server: binds every endpoint, serves each on the engine chosen for
//! it, and drains on shutdown.
//!
//! How a byte flows: [`Server::bind`] makes the sockets; [`Server::start`]
//! chooses each stream listener's engine once ([`EngineChoice`]), starts
//! the io_uring engine's threads if any listener goes there, prints
//! `listen ok` for each endpoint in the order given, and spawns the rest:
//! an accept loop per epoll listener (a task per connection, serving
//! through the [`Service`](crate::service::Service) seam), a receive loop
//! per datagram socket. [`Running::wait`] returns once a stop has drained.

mod accept;
mod config;
mod datagram;
mod engine;
#[cfg(target_os = "linux")]
mod linger;
mod metered;
mod reload;
mod traced;
#[cfg(target_os = "linux")]
mod udp_batch;
#[cfg(target_os = "linux")]
mod uring;

pub use config::{
    DEFAULT_BACKLOG, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNS,
    DEFAULT_UDP_RATE, EngineConfig, EnginePreference, INETD_DATAGRAM_IDLE, LargeTransfer, Limits,
    ListenConfig, PROXY_HEADER_TIMEOUT, ProxyProtocol, RingReceive, ServeConfig, ServiceConfig,
    TLS_HANDSHAKE_TIMEOUT, UdpGuard,
};
pub use engine::{Engine, EngineChoice, Reason};
pub use reload::Reloader;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::endpoint::{Endpoint, Kind};
use crate::error::{Error, Setting};
use crate::events::Events;
use crate::guard::{Admission, SharedAccess, SourceSlot};
use crate::metrics::{Meter, Metrics, Refused};
use crate::service::Http;
use crate::shutdown::Shutdown;
use crate::trace::Tracer;
use crate::transport::datagram::BoundDatagram;
use crate::transport::tls::ServerTls;
use crate::transport::{Datagram, Listener, Peer, Stream};

/// What a running server reports to and listens to. Not configuration:
/// each run gets its own.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    /// Where `listen`, `connection` and `closed` events go (default:
    /// nowhere).
    pub events: Events,
    /// Where trace lines go (default: tracing off).
    pub trace: Tracer,
    /// When to stop accepting and drain, and when to close everything.
    pub shutdown: Shutdown,
}

impl Handles {
    /// Silent handles whose server drains and returns once `stop` is
    /// cancelled.
    pub fn stop_on(stop: CancellationToken) -> Handles {
        Handles {
            shutdown: Shutdown {
                stop,
                force: CancellationToken::new(),
            },
            ..Handles::default()
        }
    }
}

/// A server whose sockets are bound and listening, ready to
/// [`start`](Server::start).
#[derive(Debug)]
pub struct Server {
    config: ServeConfig,
    /// The bound sockets, in the order the endpoints were given (so the
    /// `listen ok` lines come in that order too).
    sockets: Vec<Bound>,
    /// The endpoints as really bound, in the order given.
    local: Vec<Endpoint>,
    /// What `tls://` endpoints present; `None` when there are none.
    tls: Option<ServerTls>,
    /// The access list in force: the configuration's blocks and its
    /// files', replaced when a reload reads the files again.
    access: Arc<SharedAccess>,
    /// Tracing was on when the sockets were made (it keeps TCP off the
    /// io_uring engine, which has no per-connection trace).
    traced: bool,
    /// `--metrics`: the scrape listener, and its URL.
    metrics: Option<(tokio::net::TcpListener, String)>,
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
    events: Events,
    trace: Tracer,
    /// Cancelled when accepting must stop (signal, or `once` served).
    accepting: CancellationToken,
    /// Cancelled when open connections must close now.
    force: CancellationToken,
    /// One permit per open stream connection (`max_conns`), shared by
    /// every listener and engine.
    permits: Arc<Semaphore>,
    /// The access list and the per-source limit, shared by every listener
    /// and engine thread; its throttle logs every refusal.
    admission: Arc<Admission>,
    tracker: TaskTracker,
    /// The TLS acceptor for `tls://` listeners.
    tls: Option<ServerTls>,
    /// Every UDP port this server serves: no datagram from one of them is
    /// answered (a loop within the process).
    udp_ports: Arc<[u16]>,
    /// The HTTP reflection and WebSocket echo, for web endpoints.
    http: Arc<Http>,
    /// What `--metrics` counts; `None`: nothing is counted.
    metrics: Option<Metrics>,
}

impl Context {
    /// The meter of `endpoint` (as bound), when counting.
    fn meter(&self, endpoint: &Endpoint) -> Option<Arc<Meter>> {
        self.metrics.as_ref().map(|m| m.meter(endpoint))
    }
}

impl Server {
    /// Binds every endpoint of `config`. Nothing is served until
    /// [`start`](Server::start); the first endpoint that cannot be bound
    /// fails the whole call.
    pub async fn bind(config: ServeConfig) -> Result<Server, Error> {
        Server::bind_traced(config, &Tracer::disabled()).await
    }

    /// [`bind`](Server::bind), tracing the socket, bind and listen calls.
    pub async fn bind_traced(config: ServeConfig, trace: &Tracer) -> Result<Server, Error> {
        if config.endpoints.is_empty() {
            return Err(Error::Config("no endpoint to serve".to_owned()));
        }
        let (config, access) = prepare(config)?;
        let mut sockets = Vec::new();
        let mut local = Vec::new();
        for endpoint in &config.endpoints {
            match endpoint.kind() {
                // A name may stand for several addresses: a socket (and a
                // `listen ok` line) for each.
                Kind::Stream => {
                    for listener in
                        Listener::bind_traced(endpoint, config.listen.backlog, trace).await?
                    {
                        tracing::debug!(endpoint = %listener.local_endpoint(), backlog = config.listen.backlog, "listening");
                        local.push(listener.local_endpoint().clone());
                        sockets.push(Bound::Stream(listener));
                    }
                }
                Kind::Datagram => {
                    for bound in Datagram::bind(endpoint).await? {
                        tracing::debug!(endpoint = %bound.local, "bound");
                        local.push(bound.local.clone());
                        sockets.push(Bound::Datagram(bound));
                    }
                }
            }
        }
        // One certificate for every tls://, https:// and wss:// endpoint,
        // valid for their names.
        let tls = if config.endpoints.iter().any(Endpoint::is_tls) {
            let names: Vec<String> = config
                .endpoints
                .iter()
                .filter_map(|e| e.host_port())
                .map(|hp| hp.host.to_string().trim_matches(['[', ']']).to_owned())
                .collect();
            Some(ServerTls::new(&config.tls, &names)?)
        } else {
            None
        };
        let metrics = bind_metrics(config.metrics.as_ref()).await?;
        Ok(Server {
            config,
            sockets,
            local,
            tls,
            access,
            traced: trace.is_enabled(),
            metrics,
        })
    }

    /// A server for sockets handed over instead of bound: by systemd
    /// socket activation, or by inetd on standard input (see
    /// `transport::inherit`). `config.endpoints` is ignored.
    pub async fn adopt(
        config: ServeConfig,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<Server, Error> {
        use crate::transport::inherit::{Adopted, adopt};
        if fds.is_empty() {
            return Err(Error::Config("no socket handed over".to_owned()));
        }
        let (config, access) = prepare(config)?;
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
        let metrics = bind_metrics(config.metrics.as_ref()).await?;
        Ok(Server {
            config,
            sockets,
            local,
            tls: None,
            access,
            traced: false,
            metrics,
        })
    }

    /// What re-reads this server's files (access lists, TLS certificates)
    /// while it serves: keep it, and call it when asked to (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader::new(&self.config, self.access.clone(), self.tls.clone())
    }

    /// The endpoints as really bound (ephemeral ports filled in), in the
    /// order they were given; a name that resolves to several addresses
    /// (`localhost`: `::1` and `127.0.0.1`) is bound on each, all on one
    /// port, and gives one endpoint per address, in the resolver's order.
    pub fn local_endpoints(&self) -> &[Endpoint] {
        &self.local
    }

    /// Serves until `handles.shutdown.stop` (then drains) or, with `once`,
    /// until the one connection or datagram is served.
    pub async fn run(self, handles: Handles) -> Result<(), Error> {
        self.start(handles)?.wait().await
    }

    /// Starts serving: chooses each stream listener's engine, starts the
    /// io_uring engine's threads if any listener goes there, then emits
    /// `listen ok` for every endpoint in the order given and spawns its
    /// loop. Must be called inside a tokio runtime. Fails, with nothing
    /// announced, when an engine cannot start.
    pub fn start(self, handles: Handles) -> Result<Running, Error> {
        let config = Arc::new(self.config);
        let udp_ports = self
            .local
            .iter()
            .filter(|e| matches!(e, Endpoint::Udp(_)))
            .filter_map(|e| e.host_port().map(|hp| hp.port))
            .collect();
        let http = Arc::new(Http::new(
            config.service.http,
            config.service.id.clone().unwrap_or_default(),
        ));
        let metrics = self.metrics.as_ref().map(|_| Metrics::new());
        if let Some(metrics) = &metrics {
            metrics.count_events_of(&handles.events);
        }
        let ctx = Context {
            http,
            metrics,
            udp_ports,
            permits: Arc::new(Semaphore::new(config.limits.max_conns)),
            admission: Arc::new(Admission::sharing(
                self.access,
                config.limits.max_conns_per_ip,
            )),
            config,
            events: handles.events,
            trace: handles.trace,
            accepting: CancellationToken::new(),
            force: handles.shutdown.force.clone(),
            tracker: TaskTracker::new(),
            tls: self.tls,
        };
        let traced = self.traced || ctx.trace.is_enabled();
        let mut engines = Vec::new();
        let mut plan = Vec::with_capacity(self.sockets.len());
        let mut ring_listeners = Vec::new();
        for socket in self.sockets {
            match socket {
                Bound::Stream(listener) => {
                    let choice = engine::choose(&ctx.config, listener.local_endpoint(), traced);
                    let endpoint = listener.local_endpoint().clone();
                    let task = match choice.engine {
                        Engine::IoUring => {
                            let fd = listener
                                .into_fd()
                                .map_err(|e| Error::listen(&endpoint, e, None))?;
                            ring_listeners.push((fd, endpoint.clone()));
                            Task::Ring
                        }
                        // Its spare descriptors are opened now, before the
                        // `listen ok` lines: the count stays as it is then.
                        Engine::Epoll => {
                            let spare = accept::Spare::for_listener(&listener);
                            Task::Accept(listener, spare)
                        }
                    };
                    engines.push(choice);
                    plan.push((endpoint, task));
                }
                Bound::Datagram(bound) => plan.push((bound.local.clone(), Task::Datagram(bound))),
                Bound::Connection(stream, peer, endpoint) => {
                    plan.push((endpoint, Task::Connection(stream, peer)));
                }
            }
        }
        // The io_uring engine's threads set their rings up first: a failure
        // there is an error before any `listen ok` line. They accept only
        // once the lines are out.
        #[cfg(target_os = "linux")]
        let ring_engine = if ring_listeners.is_empty() {
            None
        } else {
            Some(uring::start(ring_listeners, &ctx)?)
        };
        let mut only_connections = !plan.is_empty();
        for (endpoint, task) in plan {
            if !matches!(task, Task::Connection(..)) {
                only_connections = false;
                ctx.events.listen(&endpoint);
                if let (true, Some(tls)) = (endpoint.is_tls(), &ctx.tls)
                    && let Some(fingerprint) = &tls.self_signed_fingerprint
                {
                    ctx.events.tls_fingerprint(&endpoint, fingerprint);
                }
            }
            // Every endpoint has its series from the start, at zero.
            let _ = ctx.meter(&endpoint);
            match task {
                Task::Ring => {}
                Task::Accept(listener, spare) => {
                    let span = tracing::info_span!("listener", %endpoint);
                    ctx.tracker
                        .spawn(accept::accept_loop(listener, spare, ctx.clone()).instrument(span));
                }
                Task::Datagram(bound) => {
                    let span = tracing::info_span!("datagram", %endpoint);
                    ctx.tracker
                        .spawn(datagram::datagram_loop(bound, ctx.clone()).instrument(span));
                }
                Task::Connection(stream, peer) => {
                    let task_ctx = ctx.clone();
                    let permit = ctx.permits.clone().try_acquire_owned().ok();
                    let meter = ctx.meter(&endpoint);
                    ctx.tracker.spawn(async move {
                        accept::serve_connection(stream, peer, &endpoint, &task_ctx, meter).await;
                        drop(permit);
                    });
                }
            }
        }
        if let (Some((listener, url)), Some(metrics)) = (self.metrics, &ctx.metrics) {
            ctx.events.metrics(&url);
            let span = tracing::info_span!("metrics", %url);
            ctx.tracker.spawn(
                crate::metrics::serve(listener, metrics.clone(), ctx.accepting.clone())
                    .instrument(span),
            );
        }
        #[cfg(target_os = "linux")]
        if let Some(engine) = ring_engine {
            engine.go();
        }
        // Handed one connection and nothing to accept: the server ends
        // with it.
        if only_connections {
            ctx.accepting.cancel();
        }
        ctx.tracker.close();
        Ok(Running {
            ctx,
            engines,
            shutdown: handles.shutdown,
        })
    }
}

/// What one socket becomes when serving starts.
enum Task {
    /// An io_uring engine thread accepts on it.
    Ring,
    /// The epoll engine's accept loop.
    Accept(Listener, accept::Spare),
    /// A datagram loop.
    Datagram(BoundDatagram),
    /// One connection handed over.
    Connection(Stream, Peer),
}

/// The scrape listener of `--metrics`, bound now (an error like any
/// endpoint's), and the URL it serves.
async fn bind_metrics(
    at: Option<&Endpoint>,
) -> Result<Option<(tokio::net::TcpListener, String)>, Error> {
    let Some(endpoint) = at else {
        return Ok(None);
    };
    if !matches!(endpoint, Endpoint::Tcp(_)) {
        return Err(Error::setting(
            Setting::Metrics,
            format!("{endpoint} is not a TCP address (HOST:PORT)"),
        ));
    }
    let fail = |e| Error::listen(endpoint, e, None);
    let addrs = endpoint.resolve().await.map_err(fail)?;
    let addr = addrs
        .first()
        .copied()
        .ok_or_else(|| fail(std::io::Error::other("no address")))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(fail)?;
    let real = listener.local_addr().map_err(fail)?;
    let host = match real {
        std::net::SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        std::net::SocketAddr::V4(v4) => v4.ip().to_string(),
    };
    Ok(Some((
        listener,
        format!("http://{host}:{}/metrics", real.port()),
    )))
}

/// Settings whose values cannot work, found before any socket is made;
/// then the configuration as served (the server's name filled in) and its
/// access list with the files' blocks.
fn prepare(mut config: ServeConfig) -> Result<(ServeConfig, Arc<SharedAccess>), Error> {
    if config.limits.max_conns == 0 {
        return Err(Error::setting(Setting::MaxConns, "must be at least 1"));
    }
    crate::service::greeting::check(&config.service.greeting)
        .map_err(|why| Error::setting(Setting::Greeting, why))?;
    if config.service.id.is_none() {
        config.service.id = Some(host_name());
    }
    let access = reload::access_list(&config)?;
    Ok((config, Arc::new(SharedAccess::new(access))))
}

/// This host's name (the kernel's, as `hostname` prints it), the server's
/// default `{id}`; `localhost` where it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    ctx: Context,
    engines: Vec<EngineChoice>,
    shutdown: Shutdown,
}

impl Running {
    /// The engine each stream listener is served by, and why, in the order
    /// the endpoints were given.
    pub fn engines(&self) -> &[EngineChoice] {
        &self.engines
    }

    /// Serves until the stop (then drains, for up to the drain timeout,
    /// or until the force) or, with `once`, until the one connection or
    /// datagram is served.
    pub async fn wait(self) -> Result<(), Error> {
        let Running { ctx, shutdown, .. } = self;
        tokio::select! {
            _ = shutdown.stop.cancelled() => {}
            _ = shutdown.force.cancelled() => {}
            _ = ctx.accepting.cancelled() => {
                // `once`: the one connection runs to its end unless a
                // signal comes first.
                tokio::select! {
                    _ = ctx.tracker.wait() => return Ok(()),
                    _ = shutdown.stop.cancelled() => {}
                    _ = shutdown.force.cancelled() => {}
                }
            }
        }
        ctx.accepting.cancel();
        let limits = &ctx.config.limits;
        let open = limits.max_conns - ctx.permits.available_permits();
        tracing::info!(open, drain_timeout = ?limits.drain_timeout, "stopped accepting; draining");
        tokio::select! {
            _ = ctx.tracker.wait() => {}
            _ = tokio::time::sleep(limits.drain_timeout) => {
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
/// systemd passed (socket activation), else `config.endpoints`, bound
/// (tracing the socket calls on `trace`).
pub async fn open(config: ServeConfig, inetd: bool, trace: &Tracer) -> Result<Server, Error> {
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
    Server::bind_traced(config, trace).await
}

/// Decides, right after accept and before any byte is read, whether a
/// stream peer is served (the access list, the per-source limit, then the
/// connection limit); what is returned is held for the connection's life.
/// `None`: close it now. Every refusal is counted in one throttled log.
fn admit(
    ctx: &Context,
    peer: &Peer,
    meter: Option<&Meter>,
) -> Option<(SourceSlot, tokio::sync::OwnedSemaphorePermit)> {
    let source = admit_source(ctx, peer, meter)?;
    let permit = admit_permit(ctx, peer, meter)?;
    Some((source, permit))
}

/// The access list and the per-source limit for `peer` (behind a proxy,
/// the client its header names): its slot, held for the connection's
/// life, or `None` (refused and logged).
fn admit_source(ctx: &Context, peer: &Peer, meter: Option<&Meter>) -> Option<SourceSlot> {
    match peer {
        Peer::Ip(addr) => match ctx.admission.admit(addr.ip()) {
            Ok(slot) => Some(slot),
            Err(why) => {
                let reason = match why {
                    crate::guard::Refusal::Denied => Refused::AccessList,
                    crate::guard::Refusal::TooManyFromSource => Refused::PerSource,
                };
                refused(ctx, peer, &why, why.setting(), meter, reason);
                None
            }
        },
        Peer::Unix { .. } => Some(SourceSlot::uncounted()),
    }
}

/// One of `max_conns` permits for `peer`, or `None` (refused and logged).
fn admit_permit(
    ctx: &Context,
    peer: &dyn std::fmt::Display,
    meter: Option<&Meter>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
        refused(
            ctx,
            peer,
            &format_args!(
                "too many open connections (the limit is {})",
                ctx.config.limits.max_conns
            ),
            Setting::MaxConns,
            meter,
            Refused::MaxConns,
        );
        return None;
    };
    Some(permit)
}

/// Counts a refused connection in the one throttled warning (and, with
/// `--metrics`, by its reason).
fn refused(
    ctx: &Context,
    peer: &dyn std::fmt::Display,
    why: &dyn std::fmt::Display,
    setting: Setting,
    meter: Option<&Meter>,
    reason: Refused,
) {
    if let Some(meter) = meter {
        meter.refused(reason);
    }
    if let Some(refused) = ctx.admission.note_refusal(Instant::now()) {
        let setting = setting.name();
        tracing::warn!(%peer, refused, why = %why, setting, "connection refused");
    }
}
