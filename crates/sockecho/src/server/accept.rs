//! Stream connections on the epoll engine: the accept loop (admission,
//! permits, backoff on descriptor exhaustion) and each connection's task
//! (TLS handshake, the service, its events and trace).

use std::time::Duration;

use tracing::Instrument;

use super::traced::TracedStream;
use super::{Context, TLS_HANDSHAKE_TIMEOUT};
use crate::endpoint::Endpoint;
use crate::service::{Connection, Counts, ServiceStream};
use crate::transport::{Listener, Peer, Stream};

/// Accepts stream connections until told to stop. Errors never end the
/// loop: descriptor exhaustion backs off (so the loop neither dies nor
/// spins) and everything else is one failed connection.
pub(super) async fn accept_loop(listener: Listener, ctx: Context) {
    let endpoint = listener.local_endpoint().clone();
    let mut backoff = Duration::ZERO;
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
        let accepted = loop {
            tokio::select! {
                accepted = listener.accept() => break accepted,
                () = ticks.tick() => trace.queue(local, queue_fd),
                () = ctx.accepting.cancelled() => return,
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::ZERO;
                trace.accept(&pair.1, pair.0.tcp_fd());
                trace.queue(local, queue_fd);
                pair
            }
            Err(e) if is_resource_exhaustion(&e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                tracing::warn!(cause = %e, retry_in = ?backoff, "cannot accept");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = ctx.accepting.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::debug!(cause = %e, "accept failed");
                continue;
            }
        };
        // Before any byte is read: the access list, the per-source and
        // the overall limits.
        let Some(admitted) = super::admit(&ctx, &peer) else {
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
        ctx.tracker.spawn(
            async move {
                serve_connection(stream, peer, &task_endpoint, &task_ctx).await;
                drop(admitted);
            }
            .instrument(span),
        );
        if ctx.config.once {
            return;
        }
    }
}

pub(super) async fn serve_connection(
    mut stream: Stream,
    peer: Peer,
    endpoint: &Endpoint,
    ctx: &Context,
) {
    let events = &ctx.events;
    events.connection(&peer, endpoint);
    if let (Endpoint::Tls(_), Some(tls)) = (endpoint, &ctx.tls) {
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
        let handshake = tokio::select! {
            done = tokio::time::timeout(limit, tls.acceptor.accept(tcp)) => {
                done.unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)))
            }
            _ = ctx.force.cancelled() => Err(std::io::Error::other("closed by shutdown")),
        };
        match handshake {
            Ok(tls_stream) => stream = Stream::Tls(Box::new(tls_stream.into())),
            Err(e) => {
                tracing::debug!(cause = %e, "TLS handshake failed");
                let reason = format!("TLS handshake failed: {}", crate::error::reason(&e));
                events.closed(&peer, endpoint, 0, 0, Some(&reason));
                return;
            }
        }
    }
    let trace = &ctx.trace;
    let tcp = stream.tcp_fd();
    let service = ctx.config.service.mode.service();
    let mut counts = Counts::default();
    let result = tokio::select! {
        result = async {
            // --trace watches the end of stream and the half-close through
            // a wrapper, so the untraced service is exactly what it was.
            let mut traced;
            let stream: &mut dyn ServiceStream = if trace.is_enabled() {
                traced = TracedStream::new(&mut stream, trace, &peer, tcp);
                &mut traced
            } else {
                &mut stream
            };
            service
                .serve(Connection {
                    stream,
                    greeting: &ctx.config.service.greeting,
                    idle: ctx.config.limits.idle_timeout,
                    counts: &mut counts,
                })
                .await
        } => result,
        _ = ctx.force.cancelled() => Err(std::io::Error::other("closed by shutdown")),
        never = trace.sample_every(&peer, tcp), if trace.is_enabled() => match never {},
    };
    trace.close(&peer, tcp);
    drop(stream);
    let reason = match &result {
        Ok(()) => None,
        Err(e) => {
            tracing::debug!(cause = %e, "connection ended");
            Some(crate::error::reason(e))
        }
    };
    events.closed(
        &peer,
        endpoint,
        counts.bytes_in,
        counts.bytes_out,
        reason.as_deref(),
    );
}

/// Errors that mean "out of descriptors or memory for now": accepting again
/// at once would fail again, so the loop backs off.
fn is_resource_exhaustion(err: &std::io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(err.raw_os_error(), Some(23 | 24 | 105 | 12))
        || err.kind() == std::io::ErrorKind::OutOfMemory
}
