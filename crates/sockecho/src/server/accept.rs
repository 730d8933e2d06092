//! Stream connections on the epoll engine: the accept loop (admission,
//! permits, what an accept error means) and each connection's task (TLS
//! handshake, the service, its events and trace).
//!
//! Also what both engines share when accepting fails (the io_uring engine,
//! `uring.rs`, uses the same pieces):
//!
//! - [`AcceptError`] sorts an accept's error. A per-connection one (the
//!   client gave up, a network error on the new socket) is retried at once;
//!   running out of descriptors or memory backs off from
//!   [`MIN_BACKOFF`], doubling to [`MAX_BACKOFF`], so the loop neither
//!   dies nor spins.
//! - A backoff ends early when a connection closes anywhere in the process
//!   ([`connection_closed`]): that is when a descriptor comes free, and
//!   waiting out a second-long backoff then would leave clients queued for
//!   nothing.
//! - While out of descriptors, clients waiting in the backlog are shed
//!   rather than left there until they time out: the [`Spare`] descriptor
//!   (libuv's trick) is closed, what waits is accepted and closed (the
//!   client reads the end of the stream), and the spare is opened again.
//!   That happens at each failed accept and, during the backoff, as each
//!   client arrives (the listener watched for readiness, as libuv's loop
//!   does), so a shed client waits for no timer: the backoff paces the
//!   retries of accepting for real, never the shedding.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdRegisterError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::traced::TracedStream;
use super::{Context, PROXY_HEADER_TIMEOUT, ProxyProtocol, TLS_HANDSHAKE_TIMEOUT};
use crate::endpoint::Endpoint;
use crate::error::Setting;
use crate::events::ConnectionFacts;
use crate::guard::SourceSlot;
use crate::guard::rate::LogThrottle;
use crate::proxy::{Addresses, Command, Tlvs};
use crate::service::greeting::{Placeholders, render};
use crate::service::{Connection, Counts, ServiceStream};
use crate::transport::tls::TlsFacts;
use crate::transport::{Listener, Peer, Stream};

/// The first wait after an accept fails for want of descriptors or memory,
/// doubled at each failure that follows, up to [`MAX_BACKOFF`]: short
/// enough that a brief shortage costs clients nothing noticeable, long
/// enough at its cap that a lasting one costs the server about one wake-up
/// a second.
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(5);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Per-connection accept errors retried at once before the loop lets the
/// rest of the runtime run: a flood of clients that give up before they
/// are accepted must not starve the connections already open.
const RETRY_BUDGET: u32 = 64;

/// Clients shed per wake-up at most while out of descriptors (each costs an
/// accept and a close, a few microseconds): a full backlog is emptied over
/// a few wake-ups, not in one long stall.
pub(super) const SHED_BUDGET: usize = 64;

/// Accepts stream connections until told to stop. Errors never end the
/// loop (see [`AcceptError`]). `spare` holds the process's spare
/// descriptor and a duplicate of the listener, both opened when the server
/// started (before its `listen ok` line, so the process's descriptor count
/// is what it will stay at from then on).
pub(super) async fn accept_loop(listener: Listener, mut spare: Spare, ctx: Context) {
    let endpoint = listener.local_endpoint().clone();
    let meter = ctx.meter(&endpoint);
    let mut backoff = Duration::ZERO;
    let mut retries = 0;
    let mut log = AcceptLog::new();
    // The listener's duplicate, registered for readiness only while out of
    // descriptors (see `back_off`): otherwise every arrival would cost the
    // reactor a second event.
    let mut watching: Option<AsyncFd<OwnedFd>> = None;
    // --trace: the accept queue is sampled on its own clock, paused or not.
    let trace = &ctx.trace;
    let queue_fd = listener.tcp_fd();
    // Trace lines name an IP socket by its address alone, as `bind` did.
    let local: &(dyn std::fmt::Display + Sync) = match endpoint.host_port() {
        Some(address) => address,
        None => &endpoint,
    };
    let mut ticks = trace.ticks();
    loop {
        if let Some(pause) = ctx.config.listen.pause_accept {
            // For teaching: connections finish their handshake meanwhile
            // and wait in the accept queue, up to the backlog.
            let resume = tokio::time::sleep(pause);
            tokio::pin!(resume);
            loop {
                tokio::select! {
                    () = &mut resume => break,
                    () = ticks.tick() => trace.queue(local, queue_fd),
                    () = ctx.accepting.cancelled() => return,
                }
            }
        }
        // Read before accepting: a connection closed from here on may have
        // freed the descriptor a failed accept lacked.
        let closed_before = closed_count();
        let accepted = loop {
            tokio::select! {
                accepted = listener.accept() => break accepted,
                () = ticks.tick() => trace.queue(local, queue_fd),
                () = ctx.accepting.cancelled() => return,
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                if let Some(watch) = watching.take() {
                    // Out of descriptors a moment ago: no more watching.
                    spare.watch = Some(watch.into_inner());
                }
                let Some(pair) = Spare::reclaim(pair) else {
                    continue;
                };
                backoff = Duration::ZERO;
                retries = 0;
                trace.accept(&pair.1, pair.0.tcp_fd());
                trace.queue(local, queue_fd);
                pair
            }
            Err(e) => {
                let class = AcceptError::of(&e);
                if class == AcceptError::PerConnection {
                    tracing::debug!(cause = %e, "accept failed");
                    retries += 1;
                    if retries >= RETRY_BUDGET {
                        retries = 0;
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                // Shedding only while no connection has closed since: a
                // descriptor freed is for a client, and the backoff below
                // then ends at once.
                let out = class == AcceptError::NoDescriptors && closed_count() == closed_before;
                let shed = if out {
                    if watching.is_none()
                        && let Some(fd) = spare.watch.take()
                    {
                        // Registering takes no descriptor.
                        match watch(fd) {
                            Ok(watch) => watching = Some(watch),
                            Err(e) => {
                                let (fd, cause) = e.into_parts();
                                tracing::debug!(%cause, "cannot watch the listener");
                                spare.watch = Some(fd);
                            }
                        }
                    }
                    Spare::shed(listener.as_fd())
                } else {
                    Shed::default()
                };
                backoff = next_backoff(backoff, shed);
                log.failed(&e, shed, backoff);
                let arrivals = match &watching {
                    Some(watch) if out => Some(Arrivals {
                        watch,
                        listener: listener.as_fd(),
                        log: &mut log,
                    }),
                    _ => None,
                };
                if !back_off(backoff, closed_before, &ctx.accepting, arrivals).await {
                    return;
                }
                continue;
            }
        };
        // Before any byte is read: the access list, the per-source and
        // the overall limits. Behind a proxy only the overall one: the
        // others are for the client the header names, once it is read.
        let admitted = if ctx.config.proxy.is_some() {
            super::admit_permit(&ctx, &peer, meter.as_deref())
                .map(|permit| (SourceSlot::uncounted(), permit))
        } else {
            super::admit(&ctx, &peer, meter.as_deref())
        };
        let Some(admitted) = admitted else {
            trace.close(&peer, stream.tcp_fd());
            drop(stream);
            continue;
        };
        if ctx.config.once {
            ctx.accepting.cancel();
        }
        let span = tracing::info_span!("conn", %peer);
        let task_ctx = ctx.clone();
        let task_endpoint = endpoint.clone();
        let task_meter = meter.clone();
        ctx.tracker.spawn(
            async move {
                serve_connection(stream, peer, &task_endpoint, &task_ctx, task_meter).await;
                drop(admitted);
            }
            .instrument(span),
        );
        if ctx.config.once {
            return;
        }
    }
}

/// Who a connection is from, as its events name it.
struct Arrival {
    /// The client: the socket's peer, or behind a proxy the client its
    /// PROXY header names.
    peer: Peer,
    /// The proxy's own address, when a header came.
    proxy: Option<String>,
    /// The header's TLVs, when it had any.
    tlvs: Option<Tlvs>,
    /// The address the client connected to, when the header names it.
    local: Option<String>,
}

/// Serves one accepted connection to its end: its PROXY header (with
/// `proxy`), the access list for the client it names, its TLS handshake,
/// its events and the service (counted in `meter` with `--metrics`).
pub(super) async fn serve_connection(
    mut stream: Stream,
    peer: Peer,
    endpoint: &Endpoint,
    ctx: &Context,
    meter: Option<std::sync::Arc<crate::metrics::Meter>>,
) {
    let events = &ctx.events;
    let socket_peer = peer;
    // Held for the connection's life: the client's place in the
    // per-source count, once the header says who it is.
    let mut _source = None;
    let arrival = match &ctx.config.proxy {
        None => Arrival {
            peer: socket_peer.clone(),
            proxy: None,
            tlvs: None,
            local: None,
        },
        Some(proxy) => {
            let arrival = match proxied(&mut stream, &socket_peer, proxy, ctx).await {
                Ok(arrival) => arrival,
                Err((why, setting)) => {
                    // Closed before any byte is echoed, with a reason.
                    drop(stream);
                    connection_closed();
                    let reason = if setting == Setting::ProxyFrom {
                        crate::metrics::Refused::ProxyUntrusted
                    } else {
                        crate::metrics::Refused::ProxyHeader
                    };
                    super::refused(ctx, &socket_peer, &why, setting, meter.as_deref(), reason);
                    events.connection(&socket_peer, endpoint);
                    events.closed(&socket_peer, endpoint, 0, 0, Some(&why));
                    return;
                }
            };
            // As a direct client's would have been at accept.
            match super::admit_source(ctx, &arrival.peer, meter.as_deref()) {
                Some(slot) => _source = Some(slot),
                None => {
                    drop(stream);
                    connection_closed();
                    return;
                }
            }
            arrival
        }
    };
    let peer = &arrival.peer;
    let proxy = arrival.proxy.as_deref();
    let mut facts = ConnectionFacts {
        proxy,
        proxy_tlvs: arrival.tlvs.as_ref(),
        tls: None,
    };
    // Open from here to the end of this function, for `--metrics`.
    let _open = super::metered::Open::new(meter.clone());
    let web = endpoint.web().is_some();
    let tls_facts: TlsFacts;
    if let (true, Some(tls)) = (endpoint.is_tls(), &ctx.tls) {
        let Stream::Tcp(tcp) = stream else {
            return;
        };
        // The handshake runs in the connection's task, so a slow or silent
        // client never holds up accepting; it is bounded like any read.
        let limit = ctx
            .config
            .limits
            .idle_timeout
            .map_or(TLS_HANDSHAKE_TIMEOUT, |idle| {
                idle.min(TLS_HANDSHAKE_TIMEOUT)
            });
        // https:// and wss:// offer HTTP/2 and HTTP/1.1 by ALPN.
        let acceptor = if web {
            tls.web_acceptor()
        } else {
            tls.acceptor()
        };
        let handshake = tokio::select! {
            done = tokio::time::timeout(limit, acceptor.accept(tcp)) => {
                done.unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)))
            }
            _ = ctx.force.cancelled() => Err(std::io::Error::other("closed by shutdown")),
        };
        match handshake {
            Ok(tls_stream) => {
                tls_facts = TlsFacts::of(tls_stream.get_ref().1);
                facts.tls = Some(&tls_facts);
                stream = Stream::Tls(Box::new(tls_stream.into()));
            }
            Err(e) => {
                // The connection is gone with the handshake.
                connection_closed();
                tracing::debug!(cause = %e, "TLS handshake failed");
                let reason = format!("TLS handshake failed: {}", crate::error::reason(&e));
                events.connection_with(peer, endpoint, &facts);
                events.closed_via(peer, endpoint, 0, 0, Some(&reason), proxy);
                return;
            }
        }
    }
    events.connection_with(peer, endpoint, &facts);
    let trace = &ctx.trace;
    let tcp = stream.tcp_fd();
    let service = crate::service::for_endpoint(ctx.config.service.mode, endpoint, &ctx.http);
    // HTTP answers what it is asked, and is never greeted: a greeting
    // would be read as a malformed answer.
    let greeting_template: &[u8] = if web {
        b""
    } else {
        &ctx.config.service.greeting
    };
    let local_text = || {
        arrival
            .local
            .clone()
            .or_else(|| stream.local_text())
            .unwrap_or_else(|| endpoint.to_string())
    };
    // What the HTTP reflection tells of the connection.
    let (peer_text, local) = if web {
        (peer.to_string(), Some(local_text()))
    } else {
        (String::new(), None)
    };
    // `{peer}`, `{local}` and `{id}`, filled in for this connection (the
    // greeting itself when it has none).
    let rendered = crate::service::greeting::is_template(greeting_template).then(|| {
        let local = local_text();
        let values = Placeholders {
            id: ctx.config.service.id.as_deref().unwrap_or_default(),
            peer: &peer.to_string(),
            local: &local,
        };
        render(greeting_template, &values).into_owned()
    });
    let greeting: &[u8] = rendered.as_deref().unwrap_or(greeting_template);
    let mut counts = Counts::default();
    let result = tokio::select! {
        result = async {
            // --trace watches the end of stream and the half-close through
            // a wrapper, so the untraced service is exactly what it was.
            let mut traced;
            let stream: &mut dyn ServiceStream = if trace.is_enabled() {
                traced = TracedStream::new(&mut stream, trace, &socket_peer, tcp);
                &mut traced
            } else {
                &mut stream
            };
            let mut metered;
            let stream: &mut dyn ServiceStream = match meter.as_deref() {
                Some(meter) => {
                    metered = super::metered::Metered::new(stream, meter);
                    &mut metered
                }
                None => stream,
            };
            service
                .serve(Connection {
                    stream,
                    greeting,
                    idle: ctx.config.limits.idle_timeout,
                    counts: &mut counts,
                    about: crate::service::About {
                        endpoint: Some(endpoint),
                        peer: &peer_text,
                        local: local.as_deref(),
                        facts,
                        meter: meter.as_ref(),
                    },
                })
                .await
        } => result,
        _ = ctx.force.cancelled() => Err(std::io::Error::other("closed by shutdown")),
        never = trace.sample_every(&socket_peer, tcp), if trace.is_enabled() => match never {},
    };
    trace.close(&socket_peer, tcp);
    drop(stream);
    // Before the event: a backoff waiting for a descriptor ends.
    connection_closed();
    let reason = match &result {
        Ok(()) => None,
        Err(e) => {
            tracing::debug!(cause = %e, "connection ended");
            Some(crate::error::reason(e))
        }
    };
    events.closed_counted(
        peer,
        endpoint,
        counts.bytes_in,
        counts.bytes_out,
        counts.requests,
        reason.as_deref(),
        proxy,
    );
}

/// Reads a trusted proxy's PROXY header off `stream` (bounded by
/// [`PROXY_HEADER_TIMEOUT`], or the idle timeout when shorter): who the
/// connection is really from. `Err`: why it is refused, and the setting
/// behind the refusal.
async fn proxied(
    stream: &mut Stream,
    socket_peer: &Peer,
    proxy: &ProxyProtocol,
    ctx: &Context,
) -> Result<Arrival, (String, Setting)> {
    if !proxy.trusts(socket_peer) {
        return Err((
            "not a trusted proxy: only trusted proxies may send a PROXY protocol header".to_owned(),
            Setting::ProxyFrom,
        ));
    }
    let limit = ctx
        .config
        .limits
        .idle_timeout
        .map_or(PROXY_HEADER_TIMEOUT, |idle| idle.min(PROXY_HEADER_TIMEOUT));
    let refused = |why: String| (why, Setting::ProxyProtocol);
    let header = tokio::select! {
        read = tokio::time::timeout(limit, crate::transport::proxy::read_header(stream)) => match read {
            Ok(Ok(header)) => header,
            Ok(Err(e)) => return Err(refused(e.to_string())),
            Err(_) => return Err(refused(format!(
                "no whole PROXY protocol header within {}",
                crate::duration::format(limit)
            ))),
        },
        _ = ctx.force.cancelled() => return Err(refused("closed by shutdown".to_owned())),
    };
    let tlvs = (!header.tlvs.is_empty()).then_some(header.tlvs);
    let proxy = Some(socket_peer.to_string());
    Ok(match (header.command, header.addresses) {
        (
            Command::Proxy,
            Addresses::Ip {
                source,
                destination,
            },
        ) => Arrival {
            peer: Peer::Ip(source),
            proxy,
            tlvs,
            local: Some(destination.to_string()),
        },
        (
            Command::Proxy,
            Addresses::Unix {
                source,
                destination,
            },
        ) => Arrival {
            peer: Peer::Unix {
                addr: Some(String::from_utf8_lossy(&source).into_owned()),
                pid: None,
            },
            proxy,
            tlvs,
            local: Some(format!("unix:{}", String::from_utf8_lossy(&destination))),
        },
        // LOCAL (a health check) or no addresses: the proxy itself.
        _ => Arrival {
            peer: socket_peer.clone(),
            proxy,
            tlvs,
            local: None,
        },
    })
}

/// What a failed accept means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AcceptError {
    /// This one connection failed (the client reset or gave up before it
    /// was accepted, or a network error was pending on the new socket):
    /// the kernel has taken it off the queue, so accepting again at once
    /// goes on to the next.
    PerConnection,
    /// The process or the system is out of descriptors (EMFILE, ENFILE):
    /// shed what waits, back off.
    NoDescriptors,
    /// Out of memory or socket buffers (ENOMEM, ENOBUFS): back off.
    NoMemory,
    /// Anything else (the listener itself is in trouble: EINVAL, EBADF, a
    /// security module's EPERM): retrying at once could spin, so back off
    /// as for a shortage.
    Other,
}

impl AcceptError {
    /// Sorts an accept's error: by its errno on Linux, by its kind
    /// elsewhere (where running out of descriptors is then only backed off
    /// from, not shed).
    pub(super) fn of(err: &io::Error) -> AcceptError {
        #[cfg(target_os = "linux")]
        if let Some(errno) = err.raw_os_error() {
            return AcceptError::of_errno(errno);
        }
        use io::ErrorKind::*;
        match err.kind() {
            ConnectionAborted | ConnectionReset | Interrupted | WouldBlock => {
                AcceptError::PerConnection
            }
            OutOfMemory => AcceptError::NoMemory,
            _ => AcceptError::Other,
        }
    }

    /// Sorts an errno from an accept (io_uring hands them over bare).
    #[cfg(target_os = "linux")]
    pub(super) fn of_errno(errno: i32) -> AcceptError {
        match errno {
            // accept(2), "Error handling": Linux passes errors pending on
            // the new socket to accept, and they should be treated like
            // EAGAIN (ENETDOWN ... ENETUNREACH). ECONNABORTED: the client
            // reset before it was accepted; EINTR and EAGAIN: nothing wrong.
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::ECONNRESET
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::EINTR
            | libc::EAGAIN => AcceptError::PerConnection,
            libc::EMFILE | libc::ENFILE => AcceptError::NoDescriptors,
            libc::ENOMEM | libc::ENOBUFS => AcceptError::NoMemory,
            _ => AcceptError::Other,
        }
    }
}

/// What one shedding did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Shed {
    /// Clients accepted and closed.
    pub(super) count: usize,
    /// It stopped at [`SHED_BUDGET`]: more are likely waiting.
    pub(super) full: bool,
    /// Nothing was shed: a descriptor was free after all (freed since the
    /// accept failed, or held a moment by another thread's accept), so
    /// accepting again now can serve the client.
    pub(super) free: bool,
}

/// The wait after a failed accept, given the last one (zero after a
/// success) and what shedding did: doubled from [`MIN_BACKOFF`] up to
/// [`MAX_BACKOFF`], but back to the minimum when shedding stopped at its
/// budget, so that a flood of clients is shed about as fast as it comes
/// rather than a backlog's worth a second (the rest of the flood would
/// then wait for SYN retransmits), or found a descriptor free.
pub(super) fn next_backoff(last: Duration, shed: Shed) -> Duration {
    if shed.full || shed.free {
        MIN_BACKOFF
    } else {
        (last * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
    }
}

/// Registers the listener's duplicate with the reactor, for readiness only
/// (it is never read from: clients are accepted on the listener itself).
#[allow(unsafe_code)]
fn watch(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, AsyncFdRegisterError<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns `fd`, so the descriptor stays open, naming
    // the same socket, for the `AsyncFd`'s whole life, and `OwnedFd` always
    // gives that same descriptor.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
}

/// What a backoff for want of descriptors watches: clients arriving on the
/// listener, shed as they come.
struct Arrivals<'a> {
    watch: &'a AsyncFd<OwnedFd>,
    listener: BorrowedFd<'a>,
    log: &'a mut AcceptLog,
}

/// Waits out `backoff`, or less: until a connection closes anywhere in the
/// process after `closed_before` (see [`closed_count`]). Meanwhile, with
/// `arrivals`, each client that arrives is shed at once. `false` when
/// accepting must stop.
async fn back_off(
    backoff: Duration,
    closed_before: u64,
    stop: &CancellationToken,
    mut arrivals: Option<Arrivals<'_>>,
) -> bool {
    let closed = CLOSED.notified();
    tokio::pin!(closed);
    // Registered before the count is read again, so a close in between
    // is seen one way or the other.
    closed.as_mut().enable();
    if closed_count() != closed_before {
        return true;
    }
    let sleep = tokio::time::sleep(backoff);
    tokio::pin!(sleep);
    loop {
        // Only while the spare is held: without it nothing can be shed,
        // and the listener, left ready, would wake this loop for nothing.
        let watch = arrivals
            .as_ref()
            .filter(|_| Spare::is_held())
            .map(|a| a.watch);
        let arrived = async move {
            match watch {
                Some(watch) => watch.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut sleep => return true,
            () = &mut closed => return true,
            () = stop.cancelled() => return false,
            ready = arrived => match ready {
                Ok(mut ready) => {
                    if closed_count() != closed_before {
                        // A descriptor came free: accept this client.
                        return true;
                    }
                    // Cleared before the queue is emptied: a client that
                    // arrives meanwhile makes it ready again.
                    ready.clear_ready();
                    if let Some(a) = arrivals.as_mut() {
                        let shed = Spare::shed(a.listener);
                        a.log.shed(shed);
                        if shed.free {
                            return true;
                        }
                    }
                }
                // The reactor is going away: the timer alone, then.
                Err(_) => arrivals = None,
            },
        }
    }
}

/// Connections closed in this process, by either engine: a backoff for
/// want of descriptors ends when this moves.
static CLOSED_COUNT: AtomicU64 = AtomicU64::new(0);
/// Wakes the epoll engine's accept loops when a connection closes (the
/// io_uring engine's threads look at [`CLOSED_COUNT`] each round instead).
static CLOSED: Notify = Notify::const_new();

/// Says that a served connection's descriptor has just been closed. Called
/// by both engines once per connection; it costs an atomic add and a look
/// at the (usually empty) list of waiting accept loops.
pub(super) fn connection_closed() {
    CLOSED_COUNT.fetch_add(1, Ordering::Release);
    CLOSED.notify_waiters();
}

/// How many connections have closed in this process so far (see
/// [`connection_closed`]).
pub(super) fn closed_count() -> u64 {
    CLOSED_COUNT.load(Ordering::Acquire)
}

/// One descriptor held in reserve (`/dev/null`, or `/` where there is no
/// `/dev`), given up for a moment when the process runs out, so clients
/// waiting in the backlog can be accepted and closed at once (they read the
/// end of the stream, and can go elsewhere) instead of waiting there until
/// they time out. libuv's `uv__emfile_trick`.
///
/// One for the whole process, open while any server holds a `Spare` (each
/// epoll accept loop does, and each io_uring engine): descriptors run out
/// for the process, not for a listener. Libuv's loop is one thread; here
/// another thread's accept can take the descriptor a shedding just freed,
/// and then the spare cannot be opened again. So every successful accept
/// checks it is there ([`Spare::reclaim`], one atomic load), and gives up
/// that connection to get it back if need be.
#[derive(Debug)]
pub(super) struct Spare {
    /// For the epoll engine, a duplicate of the listener: its own
    /// registration with the reactor says when a client arrives, which
    /// tokio's listener cannot say without accepting (and an accept fails
    /// at once while descriptors are out, whether or not a client waits).
    watch: Option<OwnedFd>,
}

/// The process's spare and how many hold it.
struct Reserve {
    users: usize,
    file: Option<std::fs::File>,
    /// It could be opened once: a spare missing later was lost to a race,
    /// not unavailable here.
    opened_once: bool,
}

static RESERVE: std::sync::Mutex<Reserve> = std::sync::Mutex::new(Reserve {
    users: 0,
    file: None,
    opened_once: false,
});

/// The spare is open, read without the lock. Cleared before the spare is
/// closed to shed, so an accept that took its descriptor sees it clear.
static HELD: AtomicBool = AtomicBool::new(false);

fn reserve() -> std::sync::MutexGuard<'static, Reserve> {
    RESERVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Reserve {
    /// Opens the spare if it is not open (and can be).
    fn fill(&mut self) {
        if self.file.is_none() && self.users > 0 {
            self.file = open_spare();
            self.opened_once |= self.file.is_some();
        }
        HELD.store(self.file.is_some(), Ordering::SeqCst);
    }
}

fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null")
        .or_else(|_| std::fs::File::open("/"))
        .ok()
}

impl Spare {
    /// Holds the process's spare, opening it if no server had (shedding
    /// does without if even that fails).
    pub(super) fn open() -> Spare {
        let mut reserve = reserve();
        reserve.users += 1;
        reserve.fill();
        Spare { watch: None }
    }

    /// [`Spare::open`], and a duplicate of `listener` to watch while
    /// descriptors are out (the epoll engine's accept loop).
    pub(super) fn for_listener(listener: &Listener) -> Spare {
        let mut spare = Spare::open();
        spare.watch = listener.as_fd().try_clone_to_owned().ok();
        spare
    }

    /// Whether the spare is open (shedding can work).
    pub(super) fn is_held() -> bool {
        HELD.load(Ordering::SeqCst)
    }

    /// After a successful accept: `conn`, to be served; or, when the spare
    /// was lost (another thread's accept took the descriptor a shedding
    /// freed) and no descriptor is free to open it again, `None`: the
    /// connection is closed (its client reads the end of the stream) and
    /// the spare opened with its descriptor. Without the spare every later
    /// client would wait in the backlog until some connection closes; one
    /// client shed is the smaller loss.
    pub(super) fn reclaim<T>(conn: T) -> Option<T> {
        if Spare::is_held() {
            return Some(conn);
        }
        let mut reserve = reserve();
        reserve.fill();
        if reserve.file.is_some() || !reserve.opened_once {
            return Some(conn);
        }
        drop(conn);
        reserve.fill();
        None
    }

    /// Closes the spare, accepts and closes up to [`SHED_BUDGET`] clients
    /// waiting on `listener` (which must be non-blocking, as every listener
    /// here is), and opens the spare again; unless a descriptor is free
    /// after all (`free`, nobody shed).
    pub(super) fn shed(listener: BorrowedFd<'_>) -> Shed {
        let mut reserve = reserve();
        if reserve.file.is_none() {
            // Lost: a descriptor free now becomes the spare again, and no
            // client is shed this time.
            reserve.fill();
            return Shed {
                free: reserve.file.is_some(),
                ..Shed::default()
            };
        }
        // Really out? A descriptor free now is for a client, not to shed
        // one with: another thread's accept may have held it for a moment
        // (io_uring takes one before looking at the queue), or a close
        // freed it. One failed open (EMFILE) when really out.
        if open_spare().is_some() {
            return Shed {
                free: true,
                ..Shed::default()
            };
        }
        reserve.trick(listener)
    }
}

impl Reserve {
    /// The trick itself: the spare (held) closed, up to [`SHED_BUDGET`]
    /// waiting clients accepted and closed, the spare opened again.
    fn trick(&mut self, listener: BorrowedFd<'_>) -> Shed {
        HELD.store(false, Ordering::SeqCst);
        self.file = None;
        let listener = SockRef::from(&listener);
        let mut shed = Shed::default();
        for _ in 0..SHED_BUDGET {
            match listener.accept() {
                // Closed at once: the client reads the end of the stream.
                Ok((client, _)) => {
                    drop(client);
                    shed.count += 1;
                }
                Err(e) if AcceptError::of(&e) == AcceptError::PerConnection => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        break; // nobody else waits
                    }
                }
                // Out again (another thread took the freed descriptor), or
                // the listener in trouble: the backoff deals with it.
                Err(_) => break,
            }
        }
        shed.full = shed.count == SHED_BUDGET;
        self.fill();
        shed
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let mut reserve = reserve();
        reserve.users -= 1;
        if reserve.users == 0 {
            reserve.file = None;
            HELD.store(false, Ordering::SeqCst);
        }
    }
}

/// The `cannot accept` warning, at most once a second (a backoff at its
/// minimum would otherwise print two hundred a second), with how many
/// accepts failed and how many clients were shed since the last one.
#[derive(Debug)]
pub(super) struct AcceptLog {
    throttle: LogThrottle,
    shed: usize,
}

impl AcceptLog {
    pub(super) const fn new() -> AcceptLog {
        AcceptLog {
            throttle: LogThrottle::new(),
            shed: 0,
        }
    }

    /// Counts clients shed as they arrived, for the next line.
    pub(super) fn shed(&mut self, shed: Shed) {
        self.shed += shed.count;
    }

    /// Counts one failed accept (and what shedding did about it), logging
    /// when a line is due.
    pub(super) fn failed(&mut self, cause: &io::Error, shed: Shed, retry_in: Duration) {
        self.shed += shed.count;
        if let Some(failed) = self.throttle.hit(Instant::now()) {
            let shed = std::mem::take(&mut self.shed);
            tracing::warn!(cause = %cause, failed, shed, retry_in = ?retry_in, "cannot accept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn errors_are_sorted_as_accept_2_says() {
        for errno in [libc::ECONNABORTED, libc::EPROTO, libc::ECONNRESET] {
            assert_eq!(AcceptError::of_errno(errno), AcceptError::PerConnection);
        }
        for errno in [libc::EMFILE, libc::ENFILE] {
            assert_eq!(AcceptError::of_errno(errno), AcceptError::NoDescriptors);
        }
        for errno in [libc::ENOMEM, libc::ENOBUFS] {
            assert_eq!(AcceptError::of_errno(errno), AcceptError::NoMemory);
        }
        assert_eq!(AcceptError::of_errno(libc::EINVAL), AcceptError::Other);
        let would_block = io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(AcceptError::of(&would_block), AcceptError::PerConnection);
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(AcceptError::of(&emfile), AcceptError::NoDescriptors);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_a_full_shed_resets_it() {
        let mut backoff = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..10 {
            backoff = next_backoff(backoff, Shed::default());
            waits.push(backoff.as_millis());
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        let some = Shed {
            count: 3,
            ..Shed::default()
        };
        assert_eq!(next_backoff(backoff, some), MAX_BACKOFF);
        let full = Shed {
            count: SHED_BUDGET,
            full: true,
            free: false,
        };
        assert_eq!(next_backoff(backoff, full), MIN_BACKOFF);
        let free = Shed {
            free: true,
            ..Shed::default()
        };
        assert_eq!(next_backoff(backoff, free), MIN_BACKOFF);
    }

    #[test]
    fn shedding_closes_what_waits_and_keeps_the_spare() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let spare = Spare::open();
        assert!(Spare::is_held());
        // Descriptors to spare here: nobody is shed.
        let free = Shed {
            free: true,
            ..Shed::default()
        };
        assert_eq!(Spare::shed(listener.as_fd()), free);
        // The trick, as when out of descriptors.
        let shed = reserve().trick(listener.as_fd());
        let three = Shed {
            count: 3,
            ..Shed::default()
        };
        assert_eq!(shed, three);
        assert!(Spare::is_held(), "the spare is opened again");
        for mut client in clients {
            use std::io::Read;
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 1];
            assert_eq!(client.read(&mut buf).unwrap(), 0, "shed: end of stream");
        }
        // Nothing waits now: nothing shed, nothing blocks.
        assert_eq!(reserve().trick(listener.as_fd()), Shed::default());
        assert_eq!(Spare::reclaim(7), Some(7), "held: the connection is served");
        drop(spare);
    }

    #[test]
    fn a_close_ends_a_backoff_early() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let stop = CancellationToken::new();
            let before = closed_count();
            let waiter = tokio::spawn({
                let stop = stop.clone();
                async move { back_off(Duration::from_secs(30), before, &stop, None).await }
            });
            tokio::task::yield_now().await;
            connection_closed();
            let woke = tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("the backoff ended early")
                .unwrap();
            assert!(woke);
            // A close before the wait began counts too.
            assert!(back_off(Duration::from_secs(30), before, &stop, None).await);
        });
    }
}
