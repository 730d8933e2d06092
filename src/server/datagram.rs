//! Datagram sockets: one receive loop per socket, each datagram checked by
//! the guard, then answered by the service.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Context, guard, service};
use crate::endpoint::Endpoint;
use crate::transport::datagram::BoundDatagram;
use guard::DatagramGuard;

/// Receives datagrams and echoes each one the guard lets through, until
/// told to stop (or, with `--once`, after one).
pub(super) async fn datagram_loop(bound: BoundDatagram, ctx: Context) {
    let socket = &bound.socket;
    let local_ip = match &bound.local {
        Endpoint::Udp(_) => bound.local.host_port().and_then(|hp| match hp.host {
            crate::endpoint::Host::Ip(ip) => Some(SocketAddr::new(ip, hp.port)),
            crate::endpoint::Host::Name(_) => None,
        }),
        _ => None,
    };
    let mut guard = DatagramGuard::new(
        local_ip,
        ctx.config.allow_low_ports,
        ctx.config.access.clone(),
        ctx.config.udp_rate,
    );
    // Dropped datagrams are logged at most once a second, with a count:
    // a flood of them must not become a flood of log lines.
    let mut drops = guard::rate::LogThrottle::new();
    // One buffer for the socket's lifetime: no allocation per datagram.
    let mut buf = vec![0u8; socket.max_datagram()];
    loop {
        // Under inetd (`wait`), a datagram server that has nothing to do
        // exits, and inetd starts it again with the next datagram.
        let quiet = async {
            match ctx.config.exit_when_idle {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            _ = ctx.accepting.cancelled() => return,
            () = quiet => {
                tracing::debug!("idle: giving the socket back to inetd");
                ctx.accepting.cancel();
                return;
            }
        };
        let (n, peer) = match received {
            Ok(pair) => pair,
            Err(e) => {
                // On Linux a UDP socket reports an ICMP error from an earlier
                // send (port unreachable) on its next receive: a property of
                // that peer, not of this socket. Anything else: breathe, so a
                // persistent error cannot spin the CPU.
                tracing::debug!(cause = %e, "receive failed");
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        if let Err(why) = guard.check(&peer, Instant::now()) {
            if let Some(dropped) = drops.hit(Instant::now()) {
                tracing::warn!(%peer, why, dropped, "datagrams dropped, no reply");
            }
            continue;
        }
        let reply = match ctx.config.mode {
            service::Mode::Echo => Some(&buf[..n]),
            service::Mode::Discard => None,
            service::Mode::Chargen => Some(service::chargen_datagram(n)),
        };
        if let Some(reply) = reply
            && let Err(e) = socket.send_to(reply, &peer).await
        {
            tracing::debug!(%peer, cause = %e, "reply failed");
        }
        if ctx.config.once {
            ctx.accepting.cancel();
            return;
        }
    }
}
