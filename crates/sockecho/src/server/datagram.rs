//! Datagram sockets: one receive loop per socket, each datagram checked by
//! the guard, then answered by the service.
//!
//! On Linux a UDP socket is served in batches, on a thread of its own
//! ([`batched`], with the system calls in `udp_batch.rs`): one `recvmmsg`
//! takes up to 32 datagrams, one `sendmmsg` sends their replies, replies to
//! one peer of one size going out as one GSO send. Unix datagram sockets,
//! and every socket elsewhere, are a tokio task taking one datagram at a
//! time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Context;
use crate::endpoint::Endpoint;
use crate::guard::loops::{Verdict, fingerprint};
use crate::guard::rate::LogThrottle;
use crate::guard::{AccessList, DatagramGuard, NoReply};
use crate::metrics::DatagramTally;
use crate::transport::DatagramPeer;
use crate::transport::datagram::BoundDatagram;

/// Receives datagrams and echoes each one the guard lets through, until
/// told to stop (or, with `--once`, after one).
pub(super) async fn datagram_loop(bound: BoundDatagram, ctx: Context) {
    let local_ip = match &bound.local {
        Endpoint::Udp(_) => bound.local.host_port().and_then(|hp| match hp.host {
            crate::endpoint::Host::Ip(ip) => Some(SocketAddr::new(ip, hp.port)),
            crate::endpoint::Host::Zoned(ip, _) => Some(SocketAddr::new(ip.into(), hp.port)),
            crate::endpoint::Host::Name(_) => None,
        }),
        _ => None,
    };
    let mut guard = DatagramGuard::new(
        local_ip,
        ctx.config.udp_guard.allow_low_ports,
        AccessList::default(),
        ctx.config.udp_guard.rate,
    )
    .with_shared_access(ctx.admission.access().clone())
    .with_own_ports(ctx.udp_ports.clone());
    // Dropped datagrams are logged at most once a second, with a count:
    // a flood of them must not become a flood of log lines.
    let mut drops = LogThrottle::new();
    // --metrics: what this socket counts.
    let meter = ctx.meter(&bound.local);
    #[cfg(target_os = "linux")]
    if matches!(bound.socket, crate::transport::Datagram::Udp(_)) {
        let max = bound.socket.max_datagram();
        let crate::transport::Datagram::Udp(udp) = bound.socket else {
            return;
        };
        // Off tokio's reactor: the thread below blocks in the kernel.
        let udp = match udp.into_std() {
            Ok(udp) => udp,
            Err(e) => {
                tracing::error!(cause = %e, "cannot take the UDP socket off the reactor");
                return;
            }
        };
        let udp = std::sync::Arc::new(udp);
        let span = tracing::Span::current();
        let thread = tokio::task::spawn_blocking({
            let (udp, ctx) = (udp.clone(), ctx.clone());
            move || {
                let _span = span.entered();
                batched::udp_thread(&udp, max, &ctx, &mut guard, &mut drops, meter.as_deref());
            }
        });
        tokio::pin!(thread);
        tokio::select! {
            _ = &mut thread => return,
            _ = ctx.accepting.cancelled() => {}
        }
        // Wake the thread from its receive. Shutting down the read side of
        // a UDP socket, even an unconnected one (when Linux also answers
        // ENOTCONN), wakes every receiver blocked on it, and any receive
        // after it returns at once.
        let _ = socket2::SockRef::from(&*udp).shutdown(std::net::Shutdown::Read);
        let _ = thread.await;
        return;
    }
    let socket = &bound.socket;
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
        // One datagram at a time: counted as it goes (this loop serves
        // Unix datagram sockets, and UDP off Linux).
        let mut tally = DatagramTally {
            received: 1,
            bytes_in: n as u64,
            ..DatagramTally::default()
        };
        let count = |tally: &DatagramTally| {
            if let Some(meter) = &meter {
                meter.datagrams(tally);
            }
        };
        if let Err(why) = admitted(&mut guard, &mut drops, &peer, None, Instant::now()) {
            tally.drop(why);
            count(&tally);
            continue;
        }
        let wall = wall_clock();
        if let DatagramPeer::Ip(addr) = peer
            && !answers_no_loop(&mut guard, &mut drops, addr, &buf[..n], wall, wall)
        {
            tally.drop(NoReply::Loop);
            count(&tally);
            continue;
        }
        let Some(len) = ctx.config.service.mode.service().reply(&mut buf, n) else {
            count(&tally);
            continue;
        };
        if let DatagramPeer::Ip(addr) = peer {
            guard.replied(addr, fingerprint(&buf[..len]), wall_clock());
        }
        match socket.send_to(&buf[..len], &peer).await {
            Ok(_) => {
                tally.answered = 1;
                tally.bytes_out = len as u64;
            }
            Err(e) => tracing::debug!(%peer, cause = %e, "reply failed"),
        }
        count(&tally);
        if ctx.config.once {
            ctx.accepting.cancel();
            return;
        }
    }
}

/// Whether the guard lets `peer` have a reply (`dst`: where the datagram
/// arrived, when known), or why not; drops are logged at most once a
/// second, with their count.
fn admitted(
    guard: &mut DatagramGuard,
    drops: &mut LogThrottle,
    peer: &DatagramPeer,
    dst: Option<std::net::IpAddr>,
    now: Instant,
) -> Result<(), NoReply> {
    guard.check_at(peer, dst, now).inspect_err(|why| {
        if let Some(dropped) = drops.hit(now) {
            let setting = why.setting().map(|s| s.name());
            tracing::warn!(%peer, why = %why, dropped, setting, "datagrams dropped, no reply");
        }
    })
}

/// Whether a datagram of `bytes` from `peer`, which reached the socket at
/// `arrived` and is handled at `now` (nanoseconds of the real-time clock),
/// gets a reply as far as the loop guard is concerned. A loop found is
/// logged at once (it is rare, and it is news), the datagrams of a held
/// peer count with the other drops.
fn answers_no_loop(
    guard: &mut DatagramGuard,
    drops: &mut LogThrottle,
    peer: SocketAddr,
    bytes: &[u8],
    arrived: u64,
    now: u64,
) -> bool {
    match guard.reflection(peer, fingerprint(bytes), arrived, now) {
        Verdict::Answer => true,
        Verdict::LoopFound { hold } => {
            // Counted with the other drops: a flood of forged loops must
            // not become a flood of lines.
            if let Some(dropped) = drops.hit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    hold = ?std::time::Duration::from_nanos(hold),
                    dropped,
                    "echo loop? the peer sent back exactly our last replies, in lockstep \
                     (another echo server, CVE-2024-2169, or a client repeating itself): \
                     no reply to it for the hold"
                );
            }
            false
        }
        Verdict::Held => {
            if let Some(dropped) = drops.hit(Instant::now()) {
                tracing::warn!(%peer, why = %NoReply::Loop, dropped, "datagrams dropped, no reply");
            }
            false
        }
    }
}

/// Now on the real-time clock, in nanoseconds: the clock of the kernel's
/// receive timestamps the loop guard compares with.
fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The Linux UDP loop: a thread of its own per socket, blocked in the
/// kernel in `recvmmsg` as the batched C reference is, with no reactor
/// between the socket and the loop. The same batches served by a tokio
/// task (readiness through epoll, then `recvmmsg` until it would block)
/// cost more CPU per datagram in `PROTO=udp scripts/compare.sh`, most with
/// one flow, where every batch is a wake-up: the task paid `epoll_wait`,
/// one more `recvmmsg` to learn the queue was empty, and the scheduler's
/// work on top.
#[cfg(target_os = "linux")]
mod batched {
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::{AsRawFd, RawFd};
    use std::time::{Duration, Instant};

    use super::super::udp_batch::{self, Batch, Plan, Reply};
    use super::{
        Context, DatagramGuard, DatagramTally, LogThrottle, NoReply, admitted, answers_no_loop,
        wall_clock,
    };
    use crate::guard::loops::fingerprint;
    use crate::metrics::Meter;
    use crate::transport::DatagramPeer;

    /// How long a send waits for room in the socket buffer before the
    /// thread looks at the stop signal again.
    const SEND_TICK: Duration = Duration::from_millis(100);

    /// Serves a UDP socket on the calling thread, a batch at a time, until
    /// accepting is cancelled (the caller then shuts the socket's read side
    /// down to wake the receive), or after one datagram with `--once`, or
    /// once idle past the inetd limit. Every datagram goes through the
    /// guard and the mode exactly as in the one-at-a-time loop.
    ///
    /// The receive waits without a timeout (but the inetd limit), as the C
    /// reference's does: a timeout would arm a timer at every wait, one
    /// wait per batch.
    pub(super) fn udp_thread(
        socket: &UdpSocket,
        max_datagram: usize,
        ctx: &Context,
        guard: &mut DatagramGuard,
        drops: &mut LogThrottle,
        meter: Option<&Meter>,
    ) {
        if let Err(e) = socket
            .set_nonblocking(false)
            .and_then(|()| socket.set_read_timeout(ctx.config.exit_when_idle))
            .and_then(|()| socket.set_write_timeout(Some(SEND_TICK)))
        {
            tracing::error!(cause = %e, "cannot set the UDP socket's timeouts; not serving it");
            return;
        }
        let fd = socket.as_raw_fd();
        if let Err(e) = socket
            .local_addr()
            .and_then(|local| udp_batch::enable_control(fd, local))
        {
            // Replies then leave from the kernel's choice of source, and
            // the loop guard times datagrams when it reads them.
            tracing::warn!(cause = %e, "cannot ask for receive timestamps or destinations");
        }
        let mut state = State::new(fd, max_datagram, ctx.config.once);
        let mut last = Instant::now();
        let mut linger = super::super::linger::Linger::new();
        // When the last batch ended, and until when the loop looks for
        // the next without sleeping.
        let mut ended = Instant::now();
        let mut awake_until = None;
        loop {
            if ctx.accepting.is_cancelled() {
                return;
            }
            let wait = awake_until.is_none_or(|until| Instant::now() >= until);
            let n = match state.batch.recv(fd, wait) {
                Ok(n) => n,
                Err(e) if !wait && e.kind() == io::ErrorKind::WouldBlock => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    // Under inetd (`wait`), a datagram server that has
                    // nothing to do exits, and inetd starts it again with
                    // the next datagram.
                    if let Some(limit) = ctx.config.exit_when_idle
                        && last.elapsed() >= limit
                    {
                        tracing::debug!("idle: giving the socket back to inetd");
                        ctx.accepting.cancel();
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    // As in the one-at-a-time loop: an ICMP error is the
                    // peer's business; anything else, breathe.
                    tracing::debug!(cause = %e, "receive failed");
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
            };
            last = Instant::now();
            linger.came(last.saturating_duration_since(ended), n);
            let served = state.answer(n, last, ctx, guard, drops);
            state.sending(guard);
            // Only a full socket buffer for SEND_TICK gets here: wait again.
            while state.send(fd).is_err() {
                if ctx.accepting.is_cancelled() {
                    return;
                }
            }
            // --metrics: the batch's counts, in a handful of adds.
            if let Some(meter) = meter {
                meter.datagrams(&state.tally);
            }
            state.tally = DatagramTally::default();
            ended = Instant::now();
            awake_until = linger.look().map(|look| ended + look);
            if ctx.config.once && served {
                ctx.accepting.cancel();
                return;
            }
        }
    }

    /// What the loop keeps from batch to batch: no allocation per datagram
    /// (nor, once the vectors have grown to a batch, per batch).
    struct State {
        batch: Batch,
        replies: Vec<Reply>,
        plan: Plan,
        /// The largest reply coalesced into a GSO send; 0: GSO off.
        max_seg: usize,
        /// Runs of `plan` sent so far.
        next: usize,
        /// What this batch counted, for `--metrics`.
        tally: DatagramTally,
    }

    impl State {
        fn new(fd: RawFd, max_datagram: usize, once: bool) -> State {
            // `--once` serves exactly one datagram: take them one at a time,
            // so that those after it stay unread, as they always did.
            let slots = if once { 1 } else { udp_batch::BATCH };
            State {
                batch: Batch::new(slots, max_datagram),
                replies: Vec::with_capacity(slots),
                plan: Plan::default(),
                max_seg: udp_batch::gso_max_segment(fd),
                next: 0,
                tally: DatagramTally::default(),
            }
        }

        /// Puts the `n` datagrams just received through the guard and the
        /// mode, and plans their replies. Whether any was served (let
        /// through by the guard), as `--once` counts.
        fn answer(
            &mut self,
            n: usize,
            now: Instant,
            ctx: &Context,
            guard: &mut DatagramGuard,
            drops: &mut LogThrottle,
        ) -> bool {
            let mut served = false;
            let service = ctx.config.service.mode.service();
            let wall = wall_clock();
            self.replies.clear();
            for slot in 0..n {
                // Always an IP address on a UDP socket.
                let Some(peer) = self.batch.peer(slot) else {
                    continue;
                };
                let local = self.batch.local(slot);
                let dst = local.map(|l| l.addr);
                let datagram_len = self.batch.datagram(slot).len() as u64;
                self.tally.received += 1;
                self.tally.bytes_in += datagram_len;
                if let Err(why) = admitted(guard, drops, &DatagramPeer::Ip(peer), dst, now) {
                    self.tally.drop(why);
                    continue;
                }
                let arrived = self.batch.arrived(slot).unwrap_or(wall);
                let datagram = self.batch.datagram(slot);
                if !answers_no_loop(guard, drops, peer, datagram, arrived, wall) {
                    self.tally.drop(NoReply::Loop);
                    continue;
                }
                served = true;
                let Some(len) = self.batch.reply(slot, service) else {
                    continue;
                };
                // Counted as planned: a reply the kernel then refuses is
                // logged at debug, as one datagram among the batch.
                self.tally.answered += 1;
                self.tally.bytes_out += len as u64;
                self.replies.push(Reply {
                    peer,
                    local,
                    slot,
                    len,
                });
            }
            self.plan.make(&self.replies, self.max_seg);
            self.next = 0;
            served
        }

        /// Tells the loop guard the planned replies are leaving now (before
        /// they do: a reflection cannot come back before its reply left).
        fn sending(&self, guard: &mut DatagramGuard) {
            let at = wall_clock();
            for reply in &self.plan.order {
                guard.replied(reply.peer, fingerprint(self.batch.reply_bytes(reply)), at);
            }
        }

        /// Sends the planned replies not sent yet: `Ok` once all are gone,
        /// an error (`WouldBlock`) when the socket had no room for [`SEND_TICK`].
        /// A reply is lost only where a plain send_to of it would have
        /// failed too (logged, as the one-at-a-time loop logs it); a GSO
        /// send the kernel refuses is sent again as plain datagrams, and
        /// `max_seg` lowered (or GSO turned off) for the next batches.
        fn send(&mut self, fd: RawFd) -> io::Result<()> {
            while self.next < self.plan.runs.len() {
                let runs = &self.plan.runs[self.next..];
                let err = match self.batch.send(fd, &self.plan.order, runs) {
                    Ok(sent) => {
                        self.next += sent.max(1);
                        continue;
                    }
                    Err(e) => e,
                };
                match err.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return Err(err),
                    io::ErrorKind::Interrupted => continue,
                    _ => {}
                }
                let run = self.plan.runs[self.next];
                if run.is_gso()
                    && let Some(cap) = udp_batch::gso_refused(&err, run.seg)
                {
                    tracing::debug!(segment = run.seg, cause = %err, "GSO send refused; sending plain datagrams");
                    self.max_seg = cap.min(self.max_seg);
                    // Plan what is left again, under the new cap.
                    self.replies.clear();
                    self.replies
                        .extend_from_slice(&self.plan.order[run.start..]);
                    self.plan.make(&self.replies, self.max_seg);
                    self.next = 0;
                    continue;
                }
                for reply in &self.plan.order[run.start..run.end] {
                    tracing::debug!(peer = %reply.peer, cause = %err, "reply failed");
                }
                self.next += 1;
            }
            Ok(())
        }
    }
}
