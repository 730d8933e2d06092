//! The io_uring driver for closed-loop stream benches (TCP, Unix stream),
//! on the one io_uring layer (`sockecho-uring`).
//!
//! Why: a hand-written epoll client pays two system calls per message (read
//! and write) plus its share of `epoll_wait`. Here every connection's next
//! send and receive go into one submission queue and a whole round of them
//! enters the kernel in one `io_uring_enter`, so the client spends its time
//! in TCP rather than in system call entry and exit. What to send and what
//! each echo means is the stream flow core's, as for the tokio driver.
//!
//! The only `unsafe` is queuing operations that point at buffers: each
//! connection's receive buffer is a `Box<[u8]>` that never moves or drops
//! while an operation on it is in flight (the loop returns only when
//! nothing is), and sends point into the shared pattern, which outlives
//! the ring.
#![allow(unsafe_code)]

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use sockecho_flow::{StreamFlow, Tally};
use sockecho_uring::{Completion, Ring, opcode, types};

use super::stream::CLOSE_GRACE;
use super::{Ending, Shared, record};

/// How often the wait wakes up by itself to look at the clock and the stop
/// flag when no completion comes.
pub(super) const TICK: Duration = Duration::from_millis(50);

/// Which operation a completion belongs to: the low bit of `user_data`.
const SEND: u64 = 0;
const RECV: u64 = 1;

struct Conn {
    id: usize,
    fd: OwnedFd,
    flow: StreamFlow,
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
    tally: Tally,
}

impl Conn {
    fn shutdown(&self, how: Shutdown) {
        let _ = socket2::SockRef::from(&self.fd).shutdown(how);
    }
}

/// Drives `conns` (connected, non-blocking stream sockets) on one ring
/// until the run ends; returns each connection's tally.
pub(super) fn drive_all(
    conns: Vec<(usize, OwnedFd)>,
    shared: &Shared,
) -> io::Result<Vec<(usize, Tally)>> {
    let entries = (2 * conns.len() + 8).next_power_of_two().clamp(8, 32_768) as u32;
    let mut ring = Ring::new(entries, entries * 2)?;
    let buf_len = (shared.message_size * shared.pipeline).clamp(4096, 65536);
    let now = Instant::now();
    let mut conns: Vec<Conn> = conns
        .into_iter()
        .map(|(id, fd)| Conn {
            id,
            fd,
            flow: StreamFlow::closed_loop(id, shared.message_size, shared.pipeline, now),
            buf: vec![0u8; buf_len].into_boxed_slice(),
            send_in_flight: false,
            recv_in_flight: false,
            finished: false,
            closed: false,
            fixed: None,
            tally: Tally::default(),
        })
        .collect();
    let fds: Vec<RawFd> = conns.iter().map(|c| c.fd.as_raw_fd()).collect();
    if ring.register_files(&fds) {
        for (i, conn) in conns.iter_mut().enumerate() {
            conn.fixed = Some(i as u32);
        }
    }
    match run_ring(&mut ring, &mut conns, shared) {
        Ok(()) => Ok(conns.into_iter().map(|c| (c.id, c.tally)).collect()),
        Err(e) => {
            // Operations may still be in flight into the receive buffers:
            // cut the sockets off and leak the buffers rather than free
            // memory the kernel may still write.
            for c in &conns {
                c.shutdown(Shutdown::Both);
            }
            std::mem::forget(conns);
            std::mem::forget(ring);
            Err(e)
        }
    }
}

/// The event loop: submit, wait (at most a tick), handle completions,
/// re-arm; then the polite close; returns once nothing is in flight.
fn run_ring(ring: &mut Ring, conns: &mut [Conn], shared: &Shared) -> io::Result<()> {
    for (i, conn) in conns.iter_mut().enumerate() {
        arm(ring, conn, i, shared)?;
    }
    let mut done: Vec<Completion> = Vec::with_capacity(conns.len() * 2);
    let mut measuring = true;
    let mut grace_end = None;
    loop {
        let now = Instant::now();
        record::tick(shared, now);
        if measuring && shared.over(now) {
            measuring = false;
            for c in conns.iter_mut().filter(|c| !c.finished) {
                c.finished = true;
                c.shutdown(Shutdown::Write);
            }
            grace_end = Some(now + CLOSE_GRACE);
        }
        if !measuring {
            if ring.in_flight() == 0 {
                return Ok(());
            }
            if grace_end.is_some_and(|t| now >= t) {
                // The server did not close in time: cut the rest off; their
                // operations complete with an end of stream or an error.
                grace_end = None;
                for c in conns.iter().filter(|c| !c.closed) {
                    c.shutdown(Shutdown::Both);
                }
            }
        }
        ring.wait(1, TICK)?;
        done.clear();
        ring.reap(&mut done);
        for completion in &done {
            let index = (completion.user_data >> 1) as usize;
            let conn = &mut conns[index];
            if completion.user_data & 1 == SEND {
                conn.send_in_flight = false;
                on_send(conn, completion.result, shared);
            } else {
                conn.recv_in_flight = false;
                on_recv(conn, completion.result, shared);
            }
            arm(ring, conn, index, shared)?;
        }
    }
}

/// Ends the connection's measuring with `ending`, cutting it off.
fn fail(conn: &mut Conn, ending: Ending, shared: &Shared) {
    if !conn.finished {
        conn.finished = true;
        conn.closed = true;
        let unsolicited = conn.flow.unsolicited();
        record::end(shared, &mut conn.tally, conn.id, ending, unsolicited);
        conn.shutdown(Shutdown::Both);
    }
}

fn on_send(conn: &mut Conn, result: i32, shared: &Shared) {
    if result < 0 {
        fail(
            conn,
            Ending::Io(io::Error::from_raw_os_error(-result)),
            shared,
        );
    } else {
        conn.flow.sent(result as usize);
    }
}

fn on_recv(conn: &mut Conn, result: i32, shared: &Shared) {
    if result < 0 {
        if conn.finished {
            conn.closed = true;
        } else {
            fail(
                conn,
                Ending::Io(io::Error::from_raw_os_error(-result)),
                shared,
            );
        }
        return;
    }
    if result == 0 {
        conn.closed = true;
        if !conn.finished {
            let eof = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            );
            fail(conn, Ending::Io(eof), shared);
        }
        return;
    }
    if conn.finished {
        return; // Echoes still in flight after the end: not measured.
    }
    let now = Instant::now();
    let got = &conn.buf[..result as usize];
    let measured = u64::from(shared.window.contains(now));
    if let Err(diff) = conn.flow.received(got, now, &shared.pattern, |sent| {
        record::complete(shared, sent, now);
        conn.tally.messages += measured;
    }) {
        fail(conn, Ending::Mismatch(diff), shared);
    }
}

/// Queues the connection's next send (if bytes are due) and receive (if
/// none is pending).
fn arm(ring: &mut Ring, conn: &mut Conn, index: usize, shared: &Shared) -> io::Result<()> {
    if !conn.finished
        && !conn.send_in_flight
        && let Some(chunk) = conn.flow.to_send(&shared.pattern)
    {
        let (ptr, len) = (chunk.as_ptr(), chunk.len() as u32);
        let entry = match conn.fixed {
            Some(i) => opcode::Send::new(types::Fixed(i), ptr, len),
            None => opcode::Send::new(types::Fd(conn.fd.as_raw_fd()), ptr, len),
        };
        // A send to a peer that has gone must fail with EPIPE, not kill
        // us with SIGPIPE.
        let entry = entry
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(((index as u64) << 1) | SEND);
        // SAFETY: the send reads the shared pattern, which outlives the
        // ring; the socket stays open until the loop has reaped every
        // completion.
        unsafe { ring.push(&entry)? };
        conn.send_in_flight = true;
    }
    if !conn.closed && !conn.recv_in_flight {
        let (ptr, len) = (conn.buf.as_mut_ptr(), conn.buf.len() as u32);
        let entry = match conn.fixed {
            Some(i) => opcode::Recv::new(types::Fixed(i), ptr, len),
            None => opcode::Recv::new(types::Fd(conn.fd.as_raw_fd()), ptr, len),
        };
        let entry = entry.build().user_data(((index as u64) << 1) | RECV);
        // SAFETY: the receive writes into the connection's boxed buffer,
        // which is neither moved, read nor dropped until its completion
        // (`drive_all` returns only when nothing is in flight, and leaks
        // the buffers when it fails).
        unsafe { ring.push(&entry)? };
        conn.recv_in_flight = true;
    }
    Ok(())
}
