//! An io_uring driver for the common bench: closed-loop, over TCP or Unix
//! stream sockets.
//!
//! Why: a hand-written epoll client pays two system calls per message (read
//! and write) plus its share of `epoll_wait`. Here every connection's next
//! send and receive go into one submission queue and a whole round of them
//! enters the kernel in one `io_uring_enter`, so the client spends its time
//! in TCP rather than in system call entry and exit. The driver is chosen
//! at start-up only where the kernel offers io_uring with fast poll and
//! extended wait arguments (Linux 5.11+); containers that block io_uring,
//! open-loop runs and Unix datagrams use the tokio drivers (closed-loop UDP
//! has its own ring driver, `uring_dgram.rs`).
//!
//! The only `unsafe` is pushing entries that point at buffers: each
//! connection's receive buffer is a `Box<[u8]>` that never moves or drops
//! while an operation on it is in flight (teardown waits for every
//! operation to complete), and sends point into the shared pattern, which
//! outlives the ring.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use tokio::time::Instant;

use super::pattern::{PERIOD, Pattern};
use super::{Ending, Outcome, Shared};
use crate::endpoint::{Endpoint, UnixAddr};
use crate::error::Error;

/// How often the wait wakes up by itself to look at the clock and the stop
/// flag when no completion comes.
const TICK: Duration = Duration::from_millis(50);

/// How long a finished connection waits for the server to close after our
/// half-close, as in the tokio driver.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Whether this kernel (and container) offers what the driver needs.
/// Probed once.
pub(super) fn available() -> bool {
    static PROBED: OnceLock<bool> = OnceLock::new();
    *PROBED.get_or_init(|| match IoUring::new(8) {
        Ok(ring) => {
            let ok = ring.params().is_feature_fast_poll() && ring.params().is_feature_ext_arg();
            tracing::debug!(ok, "io_uring probed");
            ok
        }
        Err(e) => {
            tracing::debug!(cause = %e, "io_uring unavailable; using epoll");
            false
        }
    })
}

/// A connected, non-blocking stream socket owned by this driver.
pub(super) enum RawStream {
    Tcp(std::net::TcpStream),
    Unix(UnixStream),
}

impl RawStream {
    /// Connects to a TCP or Unix stream endpoint (TLS is not for this
    /// driver), trying each resolved address in turn.
    pub(super) fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<RawStream, Error> {
        let attempt = || -> io::Result<RawStream> {
            match endpoint {
                Endpoint::Tcp(hp) => {
                    use std::net::ToSocketAddrs;
                    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                    for addr in
                        (hp.host.to_string().trim_matches(['[', ']']), hp.port).to_socket_addrs()?
                    {
                        match std::net::TcpStream::connect_timeout(&addr, timeout) {
                            Ok(s) => {
                                s.set_nodelay(true)?;
                                s.set_nonblocking(true)?;
                                return Ok(RawStream::Tcp(s));
                            }
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                }
                Endpoint::Unix(addr) => {
                    let std_addr = match addr {
                        UnixAddr::Path(path) => {
                            std::os::unix::net::SocketAddr::from_pathname(path)?
                        }
                        UnixAddr::Abstract(name) => crate::transport::abstract_addr(name)?,
                    };
                    let s = UnixStream::connect_addr(&std_addr)?;
                    s.set_nonblocking(true)?;
                    Ok(RawStream::Unix(s))
                }
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not for io_uring",
                )),
            }
        };
        attempt().map_err(|e| Error::connect(endpoint, e))
    }

    fn fd(&self) -> RawFd {
        match self {
            RawStream::Tcp(s) => s.as_raw_fd(),
            RawStream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            RawStream::Tcp(s) => s.shutdown(how),
            RawStream::Unix(s) => s.shutdown(how),
        };
    }
}

/// Which operation a completion belongs to: the low bit of `user_data`.
const SEND: u64 = 0;
const RECV: u64 = 1;

struct Conn {
    id: usize,
    stream: RawStream,
    base: u64,
    times: VecDeque<Instant>,
    queued: u64,
    sent: u64,
    received: u64,
    /// Never moved or freed while a receive is in flight.
    buf: Box<[u8]>,
    send_in_flight: bool,
    recv_in_flight: bool,
    /// Measuring has ended for this connection (error, or the run ended).
    finished: bool,
    /// Saw the server's end of stream after our half-close.
    closed: bool,
    /// Index among the ring's registered files, when registration worked.
    fixed: Option<u32>,
    outcome: Outcome,
}

/// Drives `conns` on one ring until the run ends; returns each
/// connection's outcome.
pub(super) fn drive_all(
    conns: Vec<(usize, RawStream)>,
    shared: &Shared,
) -> io::Result<Vec<(usize, Outcome)>> {
    let entries = (2 * conns.len() + 8).next_power_of_two().clamp(8, 32_768) as u32;
    let mut ring = IoUring::builder()
        .setup_cqsize(entries * 2)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::builder().setup_cqsize(entries * 2).build(entries))?;
    let size = shared.message_size as u64;
    let buf_len = (shared.message_size * shared.pipeline).clamp(4096, 65536);
    let now = Instant::now();
    let mut conns: Vec<Conn> = conns
        .into_iter()
        .map(|(id, stream)| {
            let mut times = VecDeque::with_capacity(shared.pipeline);
            times.extend(std::iter::repeat_n(now, shared.pipeline));
            Conn {
                id,
                stream,
                base: Pattern::base(id),
                times,
                queued: size * shared.pipeline as u64,
                sent: 0,
                received: 0,
                buf: vec![0u8; buf_len].into_boxed_slice(),
                send_in_flight: false,
                recv_in_flight: false,
                finished: false,
                closed: false,
                fixed: None,
                outcome: Outcome::new(),
            }
        })
        .collect();
    let fds: Vec<RawFd> = conns.iter().map(|c| c.stream.fd()).collect();
    for (conn, fixed) in conns.iter_mut().zip(register_fixed(&ring, &fds)) {
        conn.fixed = fixed;
    }
    match run_ring(&mut ring, &mut conns, shared, entries as usize) {
        Ok(()) => Ok(conns.into_iter().map(|c| (c.id, c.outcome)).collect()),
        Err(e) => {
            // Operations may still be in flight into the receive buffers:
            // cut the sockets off and leak the buffers rather than free
            // memory the kernel may still write.
            for c in &conns {
                c.stream.shutdown(Shutdown::Both);
            }
            std::mem::forget(conns);
            Err(e)
        }
    }
}

/// The event loop: submit, wait (at most a tick), handle completions,
/// re-arm; then the polite close; returns once nothing is in flight.
fn run_ring(
    ring: &mut IoUring,
    conns: &mut [Conn],
    shared: &Shared,
    entries: usize,
) -> io::Result<()> {
    for (i, conn) in conns.iter_mut().enumerate() {
        arm(ring, conn, i, &shared.pattern)?;
    }
    let tick = types::Timespec::from(TICK);
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(entries * 2);
    let mut measuring = true;
    let mut grace_end = None;
    loop {
        if measuring && (Instant::now() >= shared.end || shared.halted.load(Ordering::Relaxed)) {
            measuring = false;
            for c in conns.iter_mut().filter(|c| !c.finished) {
                c.finished = true;
                c.stream.shutdown(Shutdown::Write);
            }
            grace_end = Some(Instant::now() + CLOSE_GRACE);
        }
        if !measuring {
            if !conns.iter().any(|c| c.send_in_flight || c.recv_in_flight) {
                return Ok(());
            }
            if grace_end.is_some_and(|t| Instant::now() >= t) {
                // The server did not close in time: cut the rest off; their
                // operations complete with an end of stream or an error.
                grace_end = None;
                for c in conns.iter().filter(|c| !c.closed) {
                    c.stream.shutdown(Shutdown::Both);
                }
            }
        }
        submit_and_wait(ring, &tick)?;
        done.clear();
        done.extend(ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
        for &(user_data, result) in &done {
            let index = (user_data >> 1) as usize;
            let conn = &mut conns[index];
            if user_data & 1 == SEND {
                conn.send_in_flight = false;
                on_send(conn, result);
            } else {
                conn.recv_in_flight = false;
                on_recv(conn, result, shared);
            }
            arm(ring, conn, index, &shared.pattern)?;
        }
    }
}

/// Registers `fds` with `ring`, so operations spare the kernel a file
/// lookup each: every descriptor's index in the table, or `None` for all
/// where the kernel refused (they are then named by descriptor).
pub(super) fn register_fixed(ring: &IoUring, fds: &[RawFd]) -> impl Iterator<Item = Option<u32>> {
    let fixed = ring.submitter().register_files(fds).is_ok();
    (0..fds.len() as u32).map(move |i| fixed.then_some(i))
}

/// Submits what is queued and waits for a completion, or `timeout`; a wait
/// that ends early (the timeout, a signal, a busy ring) is not a failure.
pub(super) fn submit_and_wait(ring: &IoUring, timeout: &types::Timespec) -> io::Result<()> {
    let args = types::SubmitArgs::new().timespec(timeout);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(errno::ETIME | errno::EINTR | errno::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// errno values the wait may end with that are not failures.
mod errno {
    pub const EINTR: i32 = 4;
    pub const EBUSY: i32 = 16;
    pub const ETIME: i32 = 62;
}

fn fail(conn: &mut Conn, ending: Ending) {
    if !conn.finished {
        conn.finished = true;
        conn.closed = true;
        conn.outcome.end(conn.id, ending);
        conn.stream.shutdown(Shutdown::Both);
    }
}

fn on_send(conn: &mut Conn, result: i32) {
    if result < 0 {
        fail(conn, Ending::Io(io::Error::from_raw_os_error(-result)));
    } else {
        conn.sent += result as u64;
    }
}

fn on_recv(conn: &mut Conn, result: i32, shared: &Shared) {
    if result < 0 {
        if conn.finished {
            conn.closed = true;
        } else {
            fail(conn, Ending::Io(io::Error::from_raw_os_error(-result)));
        }
        return;
    }
    if result == 0 {
        conn.closed = true;
        if !conn.finished {
            fail(
                conn,
                Ending::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )),
            );
        }
        return;
    }
    if conn.finished {
        return; // Echoes still in flight after the end: not measured.
    }
    let got = &conn.buf[..result as usize];
    if conn.received + got.len() as u64 > conn.sent {
        conn.outcome.unsolicited = true;
    }
    if let Err(diff) = shared
        .pattern
        .check(conn.base + conn.received, got, conn.received)
    {
        fail(conn, Ending::Mismatch(diff));
        return;
    }
    let size = shared.message_size as u64;
    let before = conn.received / size;
    conn.received += got.len() as u64;
    let after = conn.received / size;
    if after > before {
        let now = Instant::now();
        for _ in before..after {
            let Some(start) = conn.times.pop_front() else {
                break;
            };
            conn.outcome.complete(shared, start, now);
            conn.times.push_back(now);
            conn.queued += size;
        }
    }
}

/// Queues the connection's next send (if bytes are due) and receive (if
/// none is pending).
fn arm(ring: &mut IoUring, conn: &mut Conn, index: usize, pattern: &Pattern) -> io::Result<()> {
    if !conn.finished && !conn.send_in_flight && conn.sent < conn.queued {
        let chunk = pattern.at(
            conn.base + conn.sent,
            (conn.queued - conn.sent).min(PERIOD as u64) as usize,
        );
        let (ptr, len) = (chunk.as_ptr(), chunk.len() as u32);
        let entry = match conn.fixed {
            Some(i) => opcode::Send::new(types::Fixed(i), ptr, len),
            None => opcode::Send::new(types::Fd(conn.stream.fd()), ptr, len),
        };
        let entry = entry
            .flags(MSG_NOSIGNAL)
            .build()
            .user_data(((index as u64) << 1) | SEND);
        push(ring, &entry)?;
        conn.send_in_flight = true;
    }
    if !conn.closed && !conn.recv_in_flight {
        let (ptr, len) = (conn.buf.as_mut_ptr(), conn.buf.len() as u32);
        let entry = match conn.fixed {
            Some(i) => opcode::Recv::new(types::Fixed(i), ptr, len),
            None => opcode::Recv::new(types::Fd(conn.stream.fd()), ptr, len),
        };
        let entry = entry.build().user_data(((index as u64) << 1) | RECV);
        push(ring, &entry)?;
        conn.recv_in_flight = true;
    }
    Ok(())
}

/// A send to a peer that has gone must fail with EPIPE, not kill us with
/// SIGPIPE.
const MSG_NOSIGNAL: i32 = 0x4000;

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry points either into the shared pattern, which
        // outlives the ring, or into a connection's boxed receive buffer,
        // which is neither moved nor dropped until its operation completes
        // (`drive_all` returns only when nothing is in flight).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        // The submission queue is full: hand it to the kernel and retry.
        ring.submit()?;
    }
}
