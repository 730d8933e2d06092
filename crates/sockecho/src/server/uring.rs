//! The io_uring engine for TCP echo: one ring per thread, every thread
//! accepting on the same listening sockets, every connection's receives and
//! sends queued on its thread's ring (through `sockecho-uring`, the one
//! io_uring layer).
//!
//! Why: an epoll server pays `epoll_wait`, `read` and `write` per message.
//! Here a whole round of completions is handled and the next round of
//! operations submitted in one `io_uring_enter`; each connection has one
//! long-lived multishot receive (armed once, not once per message), and
//! receives take their buffer from a per-thread registered buffer ring only
//! when data arrives, so an idle connection holds no buffer at all: its cost
//! is one small slab entry. Per echoed message that leaves one receive
//! completion and one send.
//!
//! Each connection goes: (greeting send) -> receive -> send it back ->
//! buffer back to the pool -> ... -> end of stream -> shutdown -> close.
//! Received buffers wait in a short per-connection queue while a send is in
//! flight; when the queue is full the multishot receive is cancelled and
//! armed again once the queue drains, so a peer that never reads stalls only
//! itself and holds at most a few buffers. Kernels without multishot receive
//! (before 6.0) get one single-shot receive per message instead
//! ([`RingReceive::SingleShot`] chooses that path on any kernel).
//!
//! Each thread accepts with one multishot accept per listener (Linux 5.19;
//! one single-shot accept at a time where the kernel lacks it), armed
//! again only when a completion comes without `IORING_CQE_F_MORE`: at once
//! after a success or a per-connection error, after a backoff when
//! descriptors or memory ran out. The backoff, the early wake-up when a
//! connection closes and the shedding of clients waiting while descriptors
//! are out are the epoll engine's (`accept.rs`); during such a backoff a
//! poll on the listener says when a client arrives, to be shed at once.
//!
//! A multishot accept gives no peer address: it is asked of the new
//! socket, and a connection reset before that has none left: it is
//! reported as from `unknown` and closed, never given an invented address.
//! A single-shot accept takes the address from the accept itself, which
//! the kernel gives even for a connection already reset.
//!
//! A connection whose receive brings half a buffer or more at once (large
//! messages: [`LargeTransfer::SPLICE_FROM`]) leaves the buffers once its
//! receive has ended and its echo is sent: from then on a poll on the ring
//! says when it is readable or writable, and the thread moves its bytes
//! socket to pipe to socket with `splice(2)`, the kernel passing page
//! references instead of copying them into a buffer and out again. (The
//! ring's own splice always runs on a kernel worker thread, a hand-off per
//! message: the thread calls `splice` itself, non-blocking.)
//!
//! The only `unsafe` is queuing operations that point at memory: the
//! received buffers being sent back (each held by its connection until the
//! send completes), the greeting (in the configuration, which the
//! engine's threads share until they end), and where a single-shot accept
//! writes its peer's address (held by the thread).
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sockecho_uring::{Buffer, Completion, Ring, opcode, squeue, types};
use socket2::{SockAddr, SockAddrStorage, SockRef};
use tokio::sync::OwnedSemaphorePermit;

use super::accept::{AcceptError, AcceptLog, Shed, Spare, closed_count, next_backoff};
use super::config::{LargeTransfer, RingReceive};
use super::{Context, Error};
use crate::endpoint::Endpoint;
use crate::guard::SourceSlot;
use crate::transport::Peer;

/// Receive buffers per thread at most (a power of two: it is also the
/// buffer ring's size), and their size: as large as the C reference's read
/// buffer, so a 64 KiB message is one receive. A connection holds buffers
/// only between a receive and the end of its echo.
const BUFFERS: u16 = 1024;
const BUFFER_SIZE: usize = 64 * 1024;
/// The fewest buffers kept in the ring. The kernel takes buffers from the
/// ring in the order they were added, so every buffer in it is one more in
/// the set the copies cycle through: the ring holds about twice the most
/// receives a recent round took (doubling when a receive finds it empty,
/// decaying slowly), not the whole pool. Buffers given back go on a stack
/// and the ring is topped up from its top once per round, so the kernel
/// fills buffers that are still in cache, and pool pages that were never
/// needed never become resident.
const MIN_RING: u16 = 4;
/// Received buffers a connection may queue behind the one being sent before
/// its multishot receive is paused.
const MAX_QUEUED: usize = 2;
/// The buffer group id of the pool.
const GROUP: u16 = 0;

/// The most registered (fixed) descriptors per ring: connections in slots
/// past it use their plain descriptor.
const FIXED_FILES: u32 = 65_536;

/// Submission queue entries per ring (completions: four times as many).
const ENTRIES: u32 = 4096;

/// How long a thread goes without a receive before it releases the
/// memory of its idle buffers.
const RELEASE_AFTER: Duration = Duration::from_millis(200);

/// How often the loop wakes by itself to look at the stop flags.
const TICK: Duration = Duration::from_millis(50);

/// What a completion is for: the low 3 bits of `user_data`; the rest is a
/// connection slot or a listener index.
const OP_ACCEPT: u64 = 0;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_IGNORE: u64 = 3; // buffer returns, cancels, file updates
const OP_ACCEPT_RETRY: u64 = 4; // the backoff timer after a failed accept
const OP_ACCEPT_POLL: u64 = 5; // a client arrived while descriptors are out
const OP_SPLICE_POLL: u64 = 6; // a spliced connection is readable or writable

/// Steps (a `splice` in or out) a spliced connection takes per wake-up at
/// most before the others get their turn (its poll, armed again, completes
/// at once if it is still ready).
const SPLICE_STEPS: usize = 4;
/// The most bytes a spliced connection reads at once: a pipe's default
/// capacity.
const SPLICE_BYTES: usize = 64 * 1024;

/// What every engine thread shares.
struct Shared {
    /// The listening sockets, with the endpoint each serves.
    listeners: Vec<(OwnedFd, Endpoint)>,
    /// The server's context: configuration, events, permits, admission.
    ctx: Context,
    /// Receives (and accepts) are multishot where the kernel has them.
    multishot: bool,
    /// Connections that send large messages are spliced.
    splice: bool,
    /// Failed accepts are logged at most once a second, whichever thread
    /// saw them.
    accept_log: std::sync::Mutex<AcceptLog>,
    /// The engine's hold on the process's spare descriptor, given up for a
    /// moment to shed waiting clients while descriptors are out.
    _spare: Spare,
    /// Stop accepting; open connections finish.
    stop: AtomicBool,
    /// Close every connection now.
    force: AtomicBool,
    /// `--metrics`: each listener's meter, in the order of `listeners`.
    meters: Vec<Option<Arc<crate::metrics::Meter>>>,
    /// Connections each thread took off the listeners, by thread: how
    /// evenly the kernel spreads them (logged when the engine stops).
    accepted: Vec<std::sync::atomic::AtomicU64>,
    /// Threads 1 and up: each its own listening socket per listener, in
    /// one `SO_REUSEPORT` group with the listener, so that the kernel
    /// spreads connections over the threads (empty: every thread accepts
    /// from the listener itself).
    siblings: Vec<Vec<OwnedFd>>,
}

impl Shared {
    /// The socket thread `thread` accepts listener `i`'s connections from.
    fn listener(&self, thread: usize, i: usize) -> std::os::fd::BorrowedFd<'_> {
        match thread.checked_sub(1).and_then(|t| self.siblings.get(t)) {
            Some(own) => own[i].as_fd(),
            None => self.listeners[i].0.as_fd(),
        }
    }
}

/// A listening socket for each listener, for each of `threads - 1` more
/// threads, joined with it in an `SO_REUSEPORT` group: the kernel then
/// hands each thread its share of the connections (by a hash of each
/// connection's addresses). With one listener shared, a thread's multishot
/// accept took nearly every connection (600 of 600 on two threads).
/// Setting the option on a listening socket and binding another beside it
/// makes the group (the kernel forms it when the second listens); a
/// second server started on the port still fails with "address in use",
/// as its socket does not ask to share.
fn siblings(
    listeners: &[(OwnedFd, Endpoint)],
    threads: usize,
    backlog: u32,
) -> io::Result<Vec<Vec<OwnedFd>>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    let mut all = Vec::with_capacity(threads.saturating_sub(1));
    for (fd, _) in listeners {
        SockRef::from(fd).set_reuse_port(true)?;
    }
    for _ in 1..threads {
        let mut own = Vec::with_capacity(listeners.len());
        for (fd, _) in listeners {
            let listener = SockRef::from(fd);
            let local = listener.local_addr()?;
            let addr = local
                .as_socket()
                .ok_or_else(|| io::Error::other("not an IP listener"))?;
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(listener.only_v6()?)?;
            }
            socket.set_nonblocking(true)?;
            socket.set_tcp_nodelay(true)?;
            socket.set_cloexec(true)?;
            socket.bind(&local)?;
            socket.listen(backlog)?;
            own.push(OwnedFd::from(socket));
        }
        all.push(own);
    }
    Ok(all)
}

/// The io_uring engine's threads, each with its ring set up, waiting for
/// [`Started::go`] before they accept.
pub(super) struct Started {
    go: Vec<std::sync::mpsc::Sender<()>>,
}

impl Started {
    /// Lets every thread accept. Called once the `listen ok` lines are out,
    /// so that no `connection` line comes before its endpoint's.
    pub(super) fn go(self) {
        for go in self.go {
            let _ = go.send(());
        }
    }
}

/// Starts the io_uring engine's threads on `listeners`, and a task (tracked
/// like the accept loops) that passes the stop and force signals on and
/// ends when every engine thread has. Returns once every thread has set up
/// its ring, or the first failure to (then no thread serves).
pub(super) fn start(listeners: Vec<(OwnedFd, Endpoint)>, ctx: &Context) -> Result<Started, Error> {
    let threads = ctx
        .config
        .engine
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let meters = listeners.iter().map(|(_, e)| ctx.meter(e)).collect();
    let siblings = match siblings(&listeners, threads, ctx.config.listen.backlog) {
        Ok(siblings) => siblings,
        Err(e) => {
            tracing::info!(cause = %e, "cannot give each io_uring thread a listener of its own; they share one");
            Vec::new()
        }
    };
    let shared = Arc::new(Shared {
        siblings,
        meters,
        accepted: (0..threads).map(|_| Default::default()).collect(),
        listeners,
        ctx: ctx.clone(),
        multishot: ctx.config.engine.receive == RingReceive::Multishot,
        splice: ctx.config.engine.large == LargeTransfer::Splice,
        accept_log: std::sync::Mutex::new(AcceptLog::new()),
        // Opened before the `listen ok` lines: the descriptor count is
        // what it stays at from then on.
        _spare: Spare::open(),
        stop: AtomicBool::new(false),
        force: AtomicBool::new(false),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut finished = Vec::with_capacity(threads);
    let mut go = Vec::with_capacity(threads);
    let mut failure = None;
    for t in 0..threads {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (thread_shared, ready_tx) = (shared.clone(), ready_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ring-{t}"))
            .spawn(move || {
                if let Err(e) = run_thread(&thread_shared, t, &ready_tx, &go_rx) {
                    tracing::error!(cause = %e, "io_uring engine thread failed");
                }
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => {
                finished.push(done_rx);
                go.push(go_tx);
            }
            Err(e) => {
                failure = Some(Error::io("starting an engine thread", e));
                break;
            }
        }
    }
    drop(ready_tx);
    // Every thread started says whether its ring is up.
    for _ in 0..go.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(Error::io("setting up an io_uring engine thread", e));
            }
            Err(_) => {
                failure.get_or_insert(Error::io(
                    "setting up an io_uring engine thread",
                    io::Error::other("the thread ended early"),
                ));
            }
        }
    }
    if let Some(failure) = failure {
        // Dropping the go senders ends every thread that did start.
        return Err(failure);
    }
    let (accepting, force) = (ctx.accepting.clone(), ctx.force.clone());
    ctx.tracker.spawn(async move {
        let all_done = async move {
            for done in finished {
                let _ = done.await;
            }
        };
        signals(&shared, all_done, accepting, force).await;
        let accepted: Vec<u64> = shared
            .accepted
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        tracing::info!(
            ?accepted,
            "io_uring engine stopped: connections accepted by each thread"
        );
    });
    Ok(Started { go })
}

/// Passes the stop and force signals on to the engine's threads until
/// they are `all_done`.
async fn signals(
    shared: &Shared,
    all_done: impl std::future::Future<Output = ()>,
    accepting: tokio_util::sync::CancellationToken,
    force: tokio_util::sync::CancellationToken,
) {
    {
        tokio::pin!(all_done);
        tokio::select! {
            _ = &mut all_done => return,
            _ = accepting.cancelled() => {
                shared.stop.store(true, Ordering::Relaxed);
                // Refuse new connections at once, as the epoll engine does
                // by dropping its listeners: on Linux, shutting down a
                // listening socket's read side closes it to new connections
                // and fails the accepts in flight.
                for fd in shared.listeners.iter().map(|(fd, _)| fd).chain(shared.siblings.iter().flatten()) {
                    let _ = SockRef::from(fd).shutdown(std::net::Shutdown::Read);
                }
            }
        }
        tokio::select! {
            _ = &mut all_done => return,
            _ = force.cancelled() => shared.force.store(true, Ordering::Relaxed),
        }
        all_done.await;
    }
}

struct Conn {
    fd: OwnedFd,
    /// Its descriptor is also in the ring's table of registered files at
    /// the index of its slot: operations name it there, so the kernel takes
    /// no reference on the file per operation.
    fixed: bool,
    /// Its places in the per-source count and the connection limit, given
    /// back when the connection ends.
    _admitted: (SourceSlot, OwnedSemaphorePermit),
    peer: Peer,
    listener: u16,
    bytes_in: u64,
    bytes_out: u64,
    /// The greeting is being sent (its bytes come from the configuration).
    greeting: bool,
    /// The received buffer being sent back, and how much of it is sent.
    /// Held until its send completes: the kernel reads it meanwhile.
    buffer: Option<Buffer>,
    send_off: u32,
    send_len: u32,
    /// Buffers received while an earlier one was still being sent, in
    /// order: the next to send. At MAX_QUEUED the receive is paused, so a
    /// peer that never reads stalls only itself, while large messages flow
    /// (receives overlap the current send).
    queued: VecDeque<Buffer>,
    send_in_flight: bool,
    recv_in_flight: bool,
    /// The receive in flight is multishot (it stays armed until it ends).
    recv_multishot: bool,
    /// A cancel of the multishot receive is in flight (queue full).
    pausing: bool,
    /// Waiting for the pool to have a buffer again.
    starved: bool,
    /// The last receive filled its buffer: more is likely waiting.
    full: bool,
    /// Why it ended, once it has.
    ending: Option<String>,
    /// The peer ended its side: finish after the echo in flight.
    eof: bool,
    /// When an operation of its last completed (or it was accepted).
    last_active: Instant,
    /// A receive brought a large message: move to splicing once the
    /// receive has ended and everything received is sent.
    splice_wanted: bool,
    /// Spliced: its bytes go through a pipe, not the buffers.
    spliced: Option<Box<Spliced>>,
}

/// A spliced connection's pipe, and what it holds.
struct Spliced {
    read: io::PipeReader,
    write: io::PipeWriter,
    /// Bytes in the pipe, received and not yet sent back.
    piped: usize,
    /// A poll is in flight: for writable while the pipe holds bytes, else
    /// for readable.
    polling: bool,
}

impl Spliced {
    /// A pipe for `fd`, which becomes non-blocking (`splice` on a socket
    /// waits unless the socket itself is non-blocking; nothing else of
    /// the connection goes through a system call that could block). The
    /// pipe's side never waits: every `splice` says `SPLICE_F_NONBLOCK`.
    fn new(fd: &OwnedFd) -> io::Result<Spliced> {
        let (read, write) = io::pipe()?;
        SockRef::from(fd).set_nonblocking(true)?;
        Ok(Spliced {
            read,
            write,
            piped: 0,
            polling: false,
        })
    }
}

/// Moves up to `len` bytes from `from` to `to` without blocking (`None`:
/// neither side is ready).
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: splice with no offsets reads and writes no memory of ours.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Runs one engine thread: sets its ring up and says so on `ready`, waits
/// for the word to `go` (none: the server did not start), then serves
/// until the server stops and its connections end.
fn run_thread(
    shared: &Arc<Shared>,
    index: usize,
    ready: &std::sync::mpsc::Sender<io::Result<()>>,
    go: &std::sync::mpsc::Receiver<()>,
) -> io::Result<()> {
    let set_up = || -> io::Result<Ring> {
        let mut ring = Ring::new(ENTRIES, ENTRIES * 4)?;
        ring.register_buf_ring(GROUP, BUFFERS, BUFFER_SIZE)?;
        Ok(ring)
    };
    let mut ring = match set_up() {
        Ok(ring) => {
            let _ = ready.send(Ok(()));
            ring
        }
        Err(e) => {
            // `start` reports it, once for all threads: no log line here.
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    if go.recv().is_err() {
        return Ok(());
    }
    let fixed_files = ring.register_sparse_files(FIXED_FILES);
    let mut thread = Thread {
        index,
        last_receive: Instant::now(),
        released: true,
        taken: 0,
        peak: u32::from(MIN_RING) << 8,
        multishot: shared.multishot,
        fixed_files,
        quiet_sends: 0,
        conns: Vec::new(),
        free: Vec::new(),
        waiting_for_buffer: Vec::new(),
        accepting: (0..shared.listeners.len())
            .map(|_| Accepting::default())
            .collect(),
        accept_multishot: shared.multishot,
        accept_confirmed: false,
        round_closed: closed_count(),
        idle: shared.ctx.config.limits.idle_timeout,
        now: Instant::now(),
        next_sweep: Instant::now(),
        stopping: false,
        forced: false,
        round_bytes: vec![(0, 0); shared.listeners.len()],
    };
    if !thread.multishot {
        tracing::debug!("single-shot receives");
    }
    let result = thread.run(&mut ring, shared);
    if result.is_err() {
        // Sends in flight may still read the greeting, which the shared
        // configuration holds: keep it alive for good. (The ring keeps its
        // buffer pool itself when operations are left in flight.)
        std::mem::forget(shared.clone());
        std::mem::forget(thread);
    }
    result
}

/// One listener's accepting on one thread.
#[derive(Default)]
struct Accepting {
    /// An accept is in flight (a multishot one until a completion comes
    /// without `IORING_CQE_F_MORE`).
    armed: bool,
    /// The accept in flight (or the last one) is multishot.
    multishot: bool,
    /// The backoff's timer is in flight, and a cancel went after it
    /// (`woken`: a connection closed meanwhile).
    timer: bool,
    woken: bool,
    /// A poll for arriving clients is in flight (during a backoff for want
    /// of descriptors).
    poll: bool,
    /// The last backoff; zero once an accept succeeds.
    backoff: Duration,
    /// The process's count of closed connections as the backoff began.
    closed_seen: u64,
    /// Where a single-shot accept writes its peer's address: boxed, so it
    /// stays put while the kernel may write it.
    peer: Box<PeerAddr>,
}

/// A peer address as accept(2) writes it.
struct PeerAddr {
    storage: SockAddrStorage,
    len: libc::socklen_t,
}

impl Default for PeerAddr {
    fn default() -> PeerAddr {
        PeerAddr {
            storage: SockAddrStorage::zeroed(),
            len: 0,
        }
    }
}

impl PeerAddr {
    /// The address the last accept wrote, if it is an IP one; leaves the
    /// storage zeroed for the next.
    fn take(&mut self) -> Option<std::net::SocketAddr> {
        let storage = std::mem::replace(&mut self.storage, SockAddrStorage::zeroed());
        let len = self.len.min(storage.size_of());
        // SAFETY: the kernel wrote an address of the family it names and
        // `len` bytes into the storage (or left it zeroed: family 0, which
        // `as_socket` refuses); `len` is at most the storage's size.
        let addr = unsafe { SockAddr::new(storage, len) };
        addr.as_socket()
    }
}

/// The peer of a connection reset before its address could be asked (a
/// multishot accept gives none, and the socket has none left): the events
/// say `unknown` rather than invent one.
struct UnknownPeer;

impl std::fmt::Display for UnknownPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unknown")
    }
}

struct Thread {
    /// Which of the engine's threads (its place in `Shared::accepted`).
    index: usize,
    /// When a round last brought a receive.
    last_receive: Instant,
    /// The pool's idle memory was released since then.
    released: bool,
    /// Buffers receives took this round, and the recent most in a round
    /// (decaying by 1/64 a round; fixed point, 8 fractional bits): the ring
    /// is topped up to twice that.
    taken: u32,
    peak: u32,
    /// Receives are multishot (cleared, for good, if the kernel refuses).
    multishot: bool,
    /// Slots in the ring's registered-file table (0 where the kernel or
    /// the descriptor limit refused one).
    fixed_files: u32,
    /// Sends queued this round whose completion needs no follow-up: the
    /// next wait asks for that many completions more, so one system call
    /// both submits them and sleeps until the next message.
    quiet_sends: u32,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    waiting_for_buffer: Vec<u32>,
    /// Each listener's accepting on this thread, in the order of
    /// `Shared::listeners`; never resized (single-shot accepts write into
    /// it).
    accepting: Box<[Accepting]>,
    /// Accepts are multishot (cleared, for good, if the kernel refuses).
    accept_multishot: bool,
    /// A multishot accept has succeeded: an EINVAL is no longer taken for
    /// a kernel without them.
    accept_confirmed: bool,
    /// The process's count of closed connections as this round's wait
    /// began: a backoff that starts this round ends early once it moves.
    round_closed: u64,
    /// The idle timeout, enforced by [`Thread::sweep`].
    idle: Option<Duration>,
    /// The time as of the last wake-up: one clock read per round, not one
    /// per completion.
    now: Instant,
    /// When idle connections are next looked for.
    next_sweep: Instant,
    stopping: bool,
    forced: bool,
    /// `--metrics`: bytes received and sent this round, per listener,
    /// added to the meters once per round rather than once per message.
    round_bytes: Vec<(u64, u64)>,
}

impl Thread {
    fn run(&mut self, ring: &mut Ring, shared: &Shared) -> io::Result<()> {
        self.refill(ring)?;
        for i in 0..shared.listeners.len() {
            self.arm_accept(ring, shared, i)?;
        }
        let mut done: Vec<Completion> = Vec::with_capacity(ENTRIES as usize);
        loop {
            if !self.stopping && shared.stop.load(Ordering::Relaxed) {
                self.stopping = true;
                for (i, accepting) in self.accepting.iter().enumerate() {
                    if accepting.armed {
                        ring.cancel(accept_data(i), OP_IGNORE)?;
                    }
                    if accepting.timer {
                        // A backoff of up to a second must not hold up the
                        // end of the thread.
                        ring.cancel(retry_data(i), OP_IGNORE)?;
                    }
                    if accepting.poll {
                        ring.cancel(poll_data(i), OP_IGNORE)?;
                    }
                }
            }
            if !self.forced && shared.force.load(Ordering::Relaxed) {
                self.forced = true;
                self.stopping = true;
                for conn in self.conns.iter_mut().flatten() {
                    conn.ending
                        .get_or_insert_with(|| "closed by shutdown".to_owned());
                    let _ = SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Both);
                }
                // Connections waiting for a pool buffer have nothing in
                // flight to complete: finish them here.
                for slot in std::mem::take(&mut self.waiting_for_buffer) {
                    self.advance(ring, shared, slot)?;
                }
            }
            // Every slot is either in use or on the free list: no walk over
            // ten thousand connections per wake-up to count them.
            let open_here = self.conns.len() - self.free.len();
            let accepting = self.accepting.iter().any(|a| a.armed || a.timer || a.poll);
            if self.stopping && open_here == 0 && !accepting {
                return Ok(());
            }
            self.wake_backoffs(ring)?;
            // Sends usually complete during the submission itself. Waiting
            // for one completion would return at once with theirs, and a
            // second system call would wait for the next message: wait for
            // one completion beyond the quiet sends instead (the tick still
            // bounds the wait). Not while connections wait for a buffer: a
            // send completion gives one back.
            self.refill(ring)?;
            let want = if self.waiting_for_buffer.is_empty() {
                (1 + self.quiet_sends as usize).min(ENTRIES as usize)
            } else {
                1
            };
            self.quiet_sends = 0;
            self.round_closed = closed_count();
            ring.wait(want, TICK)?;
            self.now = Instant::now();
            self.sweep(ring, shared)?;
            done.clear();
            ring.reap(&mut done);
            for completion in &done {
                let index = (completion.user_data >> 3) as usize;
                match completion.user_data & 7 {
                    OP_ACCEPT => self.on_accept(ring, shared, index, completion)?,
                    OP_ACCEPT_RETRY => {
                        // The backoff ran out, or was cut short (a close,
                        // or the stop).
                        let accepting = &mut self.accepting[index];
                        accepting.timer = false;
                        if accepting.poll {
                            // The accept watches for clients from now on.
                            ring.cancel(poll_data(index), OP_IGNORE)?;
                        }
                        if !self.stopping {
                            self.arm_accept(ring, shared, index)?;
                        }
                    }
                    OP_ACCEPT_POLL => self.on_arrival(ring, shared, index, completion.result)?,
                    OP_RECV => self.on_recv(ring, shared, index, completion)?,
                    OP_SEND => self.on_send(ring, shared, index, completion.result)?,
                    OP_SPLICE_POLL => {
                        self.on_splice_ready(ring, shared, index, completion.result)?
                    }
                    _ => {}
                }
            }
            self.count_round(shared);
            self.release_when_idle(ring);
        }
    }

    /// After [`RELEASE_AFTER`] without a receive, gives back the memory of the
    /// buffers the last burst touched (once per quiet spell): a burst of
    /// ten thousand one-byte echoes had left 4 MiB of the pool resident.
    fn release_when_idle(&mut self, ring: &mut Ring) {
        if self.taken > 0 {
            self.last_receive = self.now;
            self.released = false;
        } else if !self.released && self.now.duration_since(self.last_receive) >= RELEASE_AFTER {
            self.released = true;
            let bytes = ring.release_idle_buffers(GROUP);
            tracing::debug!(bytes, "idle: buffer memory released");
        }
    }

    /// Adds this round's bytes to the meters (with `--metrics`).
    fn count_round(&mut self, shared: &Shared) {
        for (bytes, meter) in self.round_bytes.iter_mut().zip(&shared.meters) {
            if let Some(meter) = meter
                && *bytes != (0, 0)
            {
                meter.received(bytes.0);
                meter.sent(bytes.1);
            }
            *bytes = (0, 0);
        }
    }

    /// Ends the backoffs that began before a connection closed: a
    /// descriptor is free again. This thread's closes are seen in the round
    /// they happen, other threads' (and the epoll engine's) at this
    /// thread's next round, within a tick.
    fn wake_backoffs(&mut self, ring: &mut Ring) -> io::Result<()> {
        let closed = closed_count();
        for (i, accepting) in self.accepting.iter_mut().enumerate() {
            if accepting.timer && !accepting.woken && accepting.closed_seen != closed {
                // The timer completes with ECANCELED (or ETIME, if it ran
                // out meanwhile): either way the accept is armed again.
                ring.cancel(retry_data(i), OP_IGNORE)?;
                accepting.woken = true;
            }
        }
        Ok(())
    }

    /// Arms listener `i`'s accept on this thread, unless an accept of it or
    /// its backoff is in flight already.
    fn arm_accept(&mut self, ring: &mut Ring, shared: &Shared, i: usize) -> io::Result<()> {
        let multishot = self.accept_multishot;
        let accepting = &mut self.accepting[i];
        if accepting.armed || accepting.timer {
            return Ok(());
        }
        let fd = types::Fd(shared.listener(self.index, i).as_raw_fd());
        let entry = if multishot {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            let peer = &mut *accepting.peer;
            peer.len = peer.storage.size_of();
            let addr = (&raw mut peer.storage).cast::<libc::sockaddr>();
            opcode::Accept::new(fd, addr, &raw mut peer.len)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        accepting.armed = true;
        accepting.multishot = multishot;
        let entry = entry.user_data(accept_data(i));
        // SAFETY: a multishot accept points at no memory. A single-shot one
        // writes its peer's address into this listener's `PeerAddr`, boxed
        // (it does not move) in the thread's `accepting`, which is never
        // resized and outlives every operation (the thread ends only once
        // no accept is in flight, or forgets itself); nothing reads or
        // writes it until the accept's completion (`armed` keeps a second
        // accept of the listener from being queued meanwhile). The listener
        // stays open while the engine runs (the shared state holds it until
        // every thread has ended).
        unsafe { ring.push(&entry) }
    }

    /// After a failed accept of listener `i` (`errno`; `ended`: the accept
    /// is no longer armed): armed again at once after a per-connection
    /// error (the kernel took that connection off the queue; the accept
    /// runs again in the next submission, so each listener is retried at
    /// most once per round: that is the budget per wake-up), after a
    /// backoff otherwise, waiting clients shed first when descriptors ran
    /// out.
    fn accept_failed(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        i: usize,
        errno: i32,
        ended: bool,
        stop: bool,
    ) -> io::Result<()> {
        if stop || !ended {
            // Stopping (the accept was cancelled, or the listener shut
            // down), or still armed: nothing to arm.
            return Ok(());
        }
        if errno == libc::EINVAL && self.accept_multishot && !self.accept_confirmed {
            // A kernel before 5.19: no multishot accept. Single-shot from
            // now.
            self.accept_multishot = false;
            tracing::debug!("multishot accept not supported: one accept at a time");
            return self.arm_accept(ring, shared, i);
        }
        let cause = io::Error::from_raw_os_error(errno);
        let class = AcceptError::of_errno(errno);
        if class == AcceptError::PerConnection || errno == libc::ECANCELED {
            tracing::debug!(cause = %cause, "accept failed");
            return self.arm_accept(ring, shared, i);
        }
        // Shedding only while no connection has closed since this round
        // began: a descriptor freed is for a client (the backoff then ends
        // at the end of the round).
        let shed = if class == AcceptError::NoDescriptors && closed_count() == self.round_closed {
            Spare::shed(shared.listener(self.index, i))
        } else {
            Shed::default()
        };
        let accepting = &mut self.accepting[i];
        accepting.backoff = next_backoff(accepting.backoff, shed);
        accepting.closed_seen = self.round_closed;
        accepting.timer = true;
        accepting.woken = false;
        let backoff = accepting.backoff;
        shared
            .accept_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .failed(&cause, shed, backoff);
        ring.timeout(backoff, retry_data(i))?;
        if class == AcceptError::NoDescriptors {
            self.watch_arrivals(ring, shared, i)?;
        }
        Ok(())
    }

    /// While listener `i` backs off for want of descriptors, a poll that
    /// completes when a client is waiting (at once if one is already).
    fn watch_arrivals(&mut self, ring: &mut Ring, shared: &Shared, i: usize) -> io::Result<()> {
        let accepting = &mut self.accepting[i];
        if accepting.poll || !accepting.timer || self.stopping {
            return Ok(());
        }
        let fd = types::Fd(shared.listener(self.index, i).as_raw_fd());
        let entry = opcode::PollAdd::new(fd, libc::POLLIN as u32)
            .build()
            .user_data(poll_data(i));
        accepting.poll = true;
        // SAFETY: a poll points at no memory; the listener stays open while
        // the engine runs.
        unsafe { ring.push(&entry) }
    }

    /// A client arrived while listener `i` backs off (or the poll was
    /// cancelled: the backoff is over): shed it, and watch again while
    /// the spare is there to shed with (without it the poll would complete
    /// at once, again and again, with the client still waiting).
    fn on_arrival(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        i: usize,
        result: i32,
    ) -> io::Result<()> {
        let accepting = &mut self.accepting[i];
        accepting.poll = false;
        if !accepting.timer || self.stopping {
            return Ok(());
        }
        if result < 0 {
            // The last backoff's poll, cancelled as it ended, completing
            // after this one began: this one is watched too.
            if -result == libc::ECANCELED {
                self.watch_arrivals(ring, shared, i)?;
            }
            return Ok(());
        }
        if accepting.closed_seen != closed_count() {
            // A descriptor came free: this round's end cuts the backoff
            // short and the client is accepted, not shed.
            return Ok(());
        }
        let shed = Spare::shed(shared.listener(self.index, i));
        shared
            .accept_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .shed(shed);
        let accepting = &mut self.accepting[i];
        if shed.free {
            // A descriptor is free after all: the backoff ends now, and the
            // client is accepted.
            if !accepting.woken {
                ring.cancel(retry_data(i), OP_IGNORE)?;
                accepting.woken = true;
            }
            return Ok(());
        }
        if Spare::is_held() {
            self.watch_arrivals(ring, shared, i)?;
        }
        Ok(())
    }

    fn on_accept(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        i: usize,
        completion: &Completion,
    ) -> io::Result<()> {
        let stop = self.stopping || shared.stop.load(Ordering::Relaxed);
        let accepting = &mut self.accepting[i];
        // A multishot accept stays armed while its completions say "more";
        // it is armed again only once one does not.
        let ended = !(accepting.multishot && completion.more());
        if ended {
            accepting.armed = false;
        }
        if completion.result < 0 {
            return self.accept_failed(ring, shared, i, -completion.result, ended, stop);
        }
        // SAFETY: a successful accept returns a new descriptor that nothing
        // else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(completion.result as RawFd) };
        shared.accepted[self.index].fetch_add(1, Ordering::Relaxed);
        // What a single-shot accept wrote, read before it is armed again.
        let from_accept = if accepting.multishot {
            None
        } else {
            accepting.peer.take()
        };
        if accepting.multishot {
            self.accept_confirmed = true;
        }
        accepting.backoff = Duration::ZERO;
        if stop {
            return Ok(()); // accepted as the stop came: dropped, closing it
        }
        if ended {
            self.arm_accept(ring, shared, i)?;
        }
        let Some(fd) = Spare::reclaim(fd) else {
            return Ok(()); // given up for the spare
        };
        let sock = SockRef::from(&fd);
        let addr = match from_accept {
            Some(addr) => Ok(addr),
            None => sock.peer_addr().and_then(|a| {
                a.as_socket()
                    .ok_or_else(|| io::Error::other("not an IP address"))
            }),
        };
        let peer = match addr {
            Ok(addr) => Peer::Ip(addr),
            Err(e) => {
                // Reset before its address was asked: nothing is left to
                // serve, nor an address to give. Reported as what it was,
                // then closed (dropped).
                let why = sock.take_error().ok().flatten().unwrap_or(e);
                let endpoint = &shared.listeners[i].1;
                let why = crate::error::reason(&why);
                shared.ctx.events.connection(&UnknownPeer, endpoint);
                shared
                    .ctx
                    .events
                    .closed(&UnknownPeer, endpoint, 0, 0, Some(&why));
                return Ok(());
            }
        };
        // Before any byte is read: the access list, the per-source and the
        // overall limits.
        let meter = shared.meters[i].as_deref();
        let Some(admitted) = super::admit(&shared.ctx, &peer, meter) else {
            return Ok(()); // dropped: the client reads the end of the stream
        };
        if let Some(meter) = meter {
            meter.opened();
        }
        // TCP_NODELAY came from the listener (`transport::stream`).
        shared.ctx.events.connection(&peer, &shared.listeners[i].1);
        let greeting = &shared.ctx.config.service.greeting;
        let conn = Conn {
            fd,
            fixed: false,
            _admitted: admitted,
            peer,
            listener: i as u16,
            bytes_in: 0,
            bytes_out: 0,
            greeting: !greeting.is_empty(),
            buffer: None,
            send_off: 0,
            send_len: greeting.len() as u32,
            queued: VecDeque::new(),
            send_in_flight: false,
            recv_in_flight: false,
            recv_multishot: false,
            pausing: false,
            starved: false,
            full: false,
            ending: None,
            eof: false,
            last_active: self.now,
            splice_wanted: false,
            spliced: None,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.conns[slot as usize] = Some(conn);
                slot
            }
            None => {
                self.conns.push(Some(conn));
                (self.conns.len() - 1) as u32
            }
        };
        if slot < self.fixed_files
            && let Some(conn) = self.conns[slot as usize].as_mut()
        {
            // Registered before its first operation: entries are issued in
            // order, and a files update completes as it is issued.
            ring.update_file(slot, Some(conn.fd.as_raw_fd()), OP_IGNORE)?;
            conn.fixed = true;
        }
        self.advance(ring, shared, slot)
    }

    /// Queues the connection's next operations (a send of what is due, a
    /// receive if there is room), or finishes it once nothing is left.
    fn advance(&mut self, ring: &mut Ring, shared: &Shared, slot: u32) -> io::Result<()> {
        let (forced, multishot) = (self.forced, self.multishot);
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return Ok(());
        };
        let fd = target(conn, slot);
        if conn.splice_wanted
            && !conn.recv_in_flight
            && !conn.send_in_flight
            && !conn.greeting
            && conn.buffer.is_none()
            && conn.queued.is_empty()
        {
            conn.splice_wanted = false;
            if conn.ending.is_none() && !conn.eof {
                match Spliced::new(&conn.fd) {
                    Ok(spliced) => {
                        tracing::debug!(peer = %conn.peer, "large messages: the connection is spliced");
                        conn.spliced = Some(Box::new(spliced));
                    }
                    Err(e) => {
                        tracing::debug!(cause = %e, "cannot splice: the connection stays on buffers")
                    }
                }
            }
        }
        let mut send = None;
        let mut recv = None;
        let mut poll = None;
        if conn.ending.is_none() && !conn.send_in_flight {
            if !conn.greeting
                && conn.buffer.is_none()
                && let Some(next) = conn.queued.pop_front()
            {
                conn.send_off = 0;
                conn.send_len = next.len() as u32;
                conn.buffer = Some(next);
            }
            let base = match (&conn.buffer, conn.greeting) {
                (_, true) => Some(shared.ctx.config.service.greeting.as_ptr()),
                (Some(buffer), false) => Some(buffer.as_ptr()),
                (None, false) => None,
            };
            if let Some(base) = base {
                // `send_off < send_len <=` the bytes at `base`.
                let ptr = base.wrapping_add(conn.send_off as usize);
                let len = conn.send_len - conn.send_off;
                let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
                let entry = match fd {
                    Target::Fd(fd) => opcode::Send::new(fd, ptr, len).flags(flags).build(),
                    Target::Fixed(fd) => opcode::Send::new(fd, ptr, len).flags(flags).build(),
                };
                send = Some(entry.user_data(slot_data(slot, OP_SEND)));
                conn.send_in_flight = true;
            }
        }
        if conn.ending.is_none()
            && !conn.eof
            && !forced
            && !conn.recv_in_flight
            && !conn.starved
            && !conn.greeting
            && conn.queued.is_empty()
            && !conn.splice_wanted
            && conn.spliced.is_none()
            // A multishot receive stays armed across sends. A single-shot
            // one overlaps a send only when the last receive filled its
            // buffer (a large transfer); for small messages, receiving after
            // the send completes is cheaper.
            && (multishot || conn.buffer.is_none() || conn.full)
        {
            recv = Some(recv_entry(multishot, fd, slot));
            conn.recv_in_flight = true;
            conn.recv_multishot = multishot;
        } else if conn.recv_in_flight
            && conn.recv_multishot
            && !conn.pausing
            && (conn.queued.len() >= MAX_QUEUED || conn.ending.is_some() || conn.splice_wanted)
        {
            // The peer sends faster than it reads: stop receiving until the
            // queue drains (the receive then ends with ECANCELED). Or the
            // connection is ending: a multishot receive would stay armed.
            // Or it is to be spliced: its bytes stop coming through buffers.
            ring.cancel(slot_data(slot, OP_RECV), OP_IGNORE)?;
            conn.pausing = true;
        }
        if let Some(spliced) = conn.spliced.as_deref_mut()
            && conn.ending.is_none()
            && !spliced.polling
            && (spliced.piped > 0 || !conn.eof)
        {
            // Writable to empty the pipe, else readable (an end of stream
            // or an error counts as readable too).
            let mask = if spliced.piped > 0 {
                libc::POLLOUT
            } else {
                libc::POLLIN
            } as u32;
            let entry = match fd {
                Target::Fd(fd) => opcode::PollAdd::new(fd, mask).build(),
                Target::Fixed(fd) => opcode::PollAdd::new(fd, mask).build(),
            };
            poll = Some(entry.user_data(slot_data(slot, OP_SPLICE_POLL)));
            spliced.polling = true;
        }
        // A send whose completion only gives its buffer back (its receive
        // stays armed, nothing queued behind it, no end to finish): the loop
        // need not wake up for it. See `Thread::quiet_sends`.
        if send.is_some()
            && !conn.greeting
            && conn.queued.is_empty()
            && conn.recv_in_flight
            && conn.recv_multishot
            && !conn.pausing
            && !conn.eof
            && conn.ending.is_none()
        {
            self.quiet_sends += 1;
        }
        let busy = conn.send_in_flight
            || conn.recv_in_flight
            || conn.spliced.as_ref().is_some_and(|s| s.polling)
            || conn.starved && conn.ending.is_none();
        let drained = conn.buffer.is_none()
            && conn.queued.is_empty()
            && !conn.greeting
            && conn.spliced.as_ref().is_none_or(|s| s.piped == 0);
        if let Some(entry) = send {
            // SAFETY: the send reads the greeting, which the shared
            // configuration keeps for the engine's life, or the
            // connection's current buffer, which it holds (and does not
            // touch) until the send's completion; `fd` stays open as long
            // (the connection closes only once nothing is in flight).
            unsafe { ring.push(&entry)? };
        }
        if let Some(entry) = recv {
            // SAFETY: the receive writes into a buffer of the ring's own
            // pool, picked by the kernel, which the ring keeps alive; the
            // descriptor stays open until its completion, as above.
            unsafe { ring.push(&entry)? };
        }
        if let Some(entry) = poll {
            // SAFETY: a poll points at no memory; the descriptor stays open
            // until its completion, as above.
            unsafe { ring.push(&entry)? };
        }
        let still_ok = self.conns[slot as usize]
            .as_ref()
            .is_some_and(|c| c.ending.is_none());
        if busy || (still_ok && !drained) {
            return Ok(());
        }
        // The end: the peer's end of stream with everything echoed (then
        // our half-close, so it reads the end after the last byte), or an
        // error or a limit with nothing left in flight.
        let conn = self.conns[slot as usize]
            .take()
            .expect("slot checked above");
        self.free.push(slot);
        if conn.fixed {
            // Out of the table (queued before any operation of the slot's
            // next connection); the descriptor closes below.
            ring.update_file(slot, None, OP_IGNORE)?;
        }
        if conn.ending.is_none() {
            let _ = SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write);
        }
        // The descriptor goes right after the end of stream, before the
        // event: a backoff waiting for one ends, and a client told of the
        // end (that might come at once) finds it free.
        drop(conn.fd);
        super::accept::connection_closed();
        if let Some(meter) = &shared.meters[conn.listener as usize] {
            meter.closed();
        }
        shared.ctx.events.closed(
            &conn.peer,
            &shared.listeners[conn.listener as usize].1,
            conn.bytes_in,
            conn.bytes_out,
            conn.ending.as_deref(),
        );
        // Dropping the rest gives its buffers back to the pool.
        Ok(())
    }

    fn on_recv(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        slot: usize,
        completion: &Completion,
    ) -> io::Result<()> {
        let (forced, now) = (self.forced, self.now);
        let result = completion.result;
        // The buffer the kernel filled is ours now, whatever became of the
        // connection.
        let buffer = match (result > 0, completion.buffer()) {
            (true, Some(bid)) => ring
                .buf_ring(GROUP)
                .and_then(|bufs| bufs.take(bid, result as usize)),
            _ => None,
        };
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        // A multishot receive stays armed while its completions say "more".
        if !(conn.recv_multishot && completion.more()) {
            conn.recv_in_flight = false;
            conn.recv_multishot = false;
            conn.pausing = false;
        }
        conn.last_active = now;
        if result > 0 {
            let Some(buffer) = buffer else {
                conn.ending = Some("receive without a buffer".to_owned());
                return self.advance(ring, shared, slot as u32);
            };
            self.taken += 1;
            conn.bytes_in += result as u64;
            self.round_bytes[conn.listener as usize].0 += result as u64;
            conn.full = result as usize == BUFFER_SIZE;
            if shared.splice && result as usize >= LargeTransfer::SPLICE_FROM {
                conn.splice_wanted = true;
            }
            if conn.buffer.is_none() && !conn.greeting {
                conn.send_off = 0;
                conn.send_len = result as u32;
                conn.buffer = Some(buffer);
            } else {
                conn.queued.push_back(buffer);
            }
        } else if result == 0 {
            conn.eof = true;
        } else if -result == libc::ENOBUFS && conn.splice_wanted {
            // The receive ended for want of a buffer, and none is needed:
            // the connection moves to splicing.
        } else if -result == libc::ENOBUFS {
            // The ring ran dry: keep more buffers in it from now on, and
            // receive again once it is topped up (end of this round), or
            // once a buffer comes back if the whole pool is in use.
            conn.starved = true;
            self.waiting_for_buffer.push(slot as u32);
            if self.peak < u32::from(BUFFERS) << 8 {
                self.peak = (self.peak * 2).max(u32::from(MIN_RING) << 8);
                tracing::debug!(peak = self.peak >> 8, "receive buffer ring grown");
            }
        } else if -result == libc::ECANCELED && !forced && conn.ending.is_none() {
            // Paused (queue full): `advance` arms it again once drained.
        } else if -result == libc::EINVAL
            && self.multishot
            && conn.bytes_in == 0
            && conn.ending.is_none()
        {
            // A kernel before 6.0: no multishot receive. Single-shot from now.
            self.multishot = false;
            tracing::debug!("multishot receive not supported: one receive per message");
        } else {
            conn.ending
                .get_or_insert_with(|| ending_reason(result, forced));
        }
        self.advance(ring, shared, slot as u32)
    }

    fn on_send(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        slot: usize,
        result: i32,
    ) -> io::Result<()> {
        let (forced, now) = (self.forced, self.now);
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        conn.send_in_flight = false;
        conn.last_active = now;
        if result < 0 {
            conn.ending
                .get_or_insert_with(|| ending_reason(result, forced));
            return self.advance(ring, shared, slot as u32);
        }
        conn.send_off += result as u32;
        conn.bytes_out += result as u64;
        self.round_bytes[conn.listener as usize].1 += result as u64;
        if conn.send_off >= conn.send_len {
            conn.greeting = false;
            // Sent whole: the buffer goes back to the pool.
            conn.buffer = None;
        }
        self.advance(ring, shared, slot as u32)
    }

    /// A spliced connection is ready (or ended, or failed): moves what the
    /// pipe holds to the socket, then what the socket holds to the pipe and
    /// on, until one side would block or it has had its turn; `advance`
    /// then polls for what it waits for.
    fn on_splice_ready(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        slot: usize,
        result: i32,
    ) -> io::Result<()> {
        let (forced, now) = (self.forced, self.now);
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        let Some(spliced) = conn.spliced.as_deref_mut() else {
            return Ok(());
        };
        spliced.polling = false;
        conn.last_active = now;
        if result < 0 {
            conn.ending
                .get_or_insert_with(|| ending_reason(result, forced));
            return self.advance(ring, shared, slot as u32);
        }
        let socket = conn.fd.as_raw_fd();
        let (mut read, mut written) = (0, 0);
        for _ in 0..SPLICE_STEPS {
            if conn.ending.is_some() {
                break;
            }
            let step = if spliced.piped > 0 {
                let step = splice(spliced.read.as_raw_fd(), socket, spliced.piped);
                if let Ok(Some(n)) = step {
                    spliced.piped -= n;
                    written += n;
                }
                step
            } else if conn.eof {
                break;
            } else {
                let step = splice(socket, spliced.write.as_raw_fd(), SPLICE_BYTES);
                match step {
                    Ok(Some(0)) => conn.eof = true,
                    Ok(Some(n)) => {
                        spliced.piped += n;
                        read += n;
                    }
                    _ => {}
                }
                step
            };
            match step {
                // Echoed all it had: the next read would most often find
                // the socket empty, a system call for nothing. The poll
                // armed next completes at once if more is there.
                Ok(Some(_)) if spliced.piped == 0 && written > 0 => break,
                Ok(Some(_)) => {}
                Ok(None) => break, // would block: polled for
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    conn.ending = Some(ending_reason(-errno, forced));
                }
            }
        }
        conn.bytes_in += read as u64;
        conn.bytes_out += written as u64;
        let round = &mut self.round_bytes[conn.listener as usize];
        round.0 += read as u64;
        round.1 += written as u64;
        self.advance(ring, shared, slot as u32)
    }

    /// Tops the ring up to its target, most recently given back buffers
    /// first, then untouched ones; then lets connections that found it
    /// empty receive again.
    fn refill(&mut self, ring: &mut Ring) -> io::Result<()> {
        self.peak = (self.peak - self.peak / 64).max(self.taken << 8);
        self.taken = 0;
        let target = (self.peak >> 7).clamp(u32::from(MIN_RING), u32::from(BUFFERS)) as u16;
        let Some(bufs) = ring.buf_ring(GROUP) else {
            return Ok(());
        };
        while bufs.in_ring() < target && bufs.provide() {}
        // One waiting connection per buffer in the ring: more would find
        // it empty again.
        for _ in 0..bufs.in_ring() {
            let Some(slot) = self.waiting_for_buffer.pop() else {
                break;
            };
            if let Some(conn) = self.conns[slot as usize].as_mut() {
                conn.starved = false;
            }
            self.resume(ring, slot)?;
        }
        Ok(())
    }

    fn resume(&mut self, ring: &mut Ring, slot: u32) -> io::Result<()> {
        // `advance` needs `Shared` only to finish a connection; a starved
        // one has a receive to arm, so a plain re-arm is enough here.
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return Ok(());
        };
        if conn.recv_in_flight
            || conn.eof
            || conn.ending.is_some()
            || !conn.queued.is_empty()
            || conn.splice_wanted
            || conn.spliced.is_some()
        {
            return Ok(());
        }
        let entry = recv_entry(self.multishot, target(conn, slot), slot);
        conn.recv_in_flight = true;
        conn.recv_multishot = self.multishot;
        // SAFETY: as in `advance`: the kernel picks the receive's buffer
        // from the ring's pool; the descriptor outlives the operation.
        unsafe { ring.push(&entry) }
    }

    /// The idle timeout: ends connections that made no progress for that
    /// long, looked for a few times per timeout (at most once a second).
    /// A linked timeout on every operation would do the same at the price
    /// of an extra submission and completion per message; a connection's
    /// last progress costs one store per completion instead.
    fn sweep(&mut self, ring: &mut Ring, shared: &Shared) -> io::Result<()> {
        let Some(idle) = self.idle else {
            return Ok(());
        };
        if self.now < self.next_sweep {
            return Ok(());
        }
        self.next_sweep =
            self.now + (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut starved = Vec::new();
        for (slot, conn) in self.conns.iter_mut().enumerate() {
            let Some(conn) = conn else { continue };
            if conn.ending.is_none() && self.now.duration_since(conn.last_active) >= idle {
                conn.ending = Some("idle timeout".to_owned());
                // Its operations in flight end with an end of stream or an
                // error, and `advance` then closes it.
                let _ = SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Both);
                if conn.starved {
                    starved.push(slot as u32);
                }
            }
        }
        for slot in starved {
            self.waiting_for_buffer.retain(|s| *s != slot);
            if let Some(conn) = self.conns[slot as usize].as_mut() {
                conn.starved = false;
            }
            self.advance(ring, shared, slot)?;
        }
        Ok(())
    }
}

fn ending_reason(result: i32, forced: bool) -> String {
    // Only a forced stop cancels operations (idle connections are shut
    // down instead, and already carry their reason).
    if -result == libc::ECANCELED || forced {
        "closed by shutdown".to_owned()
    } else {
        crate::error::reason(&io::Error::from_raw_os_error(-result))
    }
}

/// A receive into a buffer from the ring: multishot (armed until it ends)
/// or one receive.
fn recv_entry(multishot: bool, fd: Target, slot: u32) -> squeue::Entry {
    let entry = match (multishot, fd) {
        (true, Target::Fd(fd)) => opcode::RecvMulti::new(fd, GROUP).build(),
        (true, Target::Fixed(fd)) => opcode::RecvMulti::new(fd, GROUP).build(),
        (false, Target::Fd(fd)) => opcode::Recv::new(fd, std::ptr::null_mut(), BUFFER_SIZE as u32)
            .buf_group(GROUP)
            .build(),
        (false, Target::Fixed(fd)) => {
            opcode::Recv::new(fd, std::ptr::null_mut(), BUFFER_SIZE as u32)
                .buf_group(GROUP)
                .build()
        }
    };
    let entry = if multishot {
        entry
    } else {
        entry.flags(squeue::Flags::BUFFER_SELECT)
    };
    entry.user_data(slot_data(slot, OP_RECV))
}

/// What an operation names: the registered descriptor where there is one.
#[derive(Clone, Copy)]
enum Target {
    Fd(types::Fd),
    Fixed(types::Fixed),
}

fn target(conn: &Conn, slot: u32) -> Target {
    if conn.fixed {
        Target::Fixed(types::Fixed(slot))
    } else {
        Target::Fd(types::Fd(conn.fd.as_raw_fd()))
    }
}

fn accept_data(listener: usize) -> u64 {
    ((listener as u64) << 3) | OP_ACCEPT
}

fn retry_data(listener: usize) -> u64 {
    ((listener as u64) << 3) | OP_ACCEPT_RETRY
}

fn poll_data(listener: usize) -> u64 {
    ((listener as u64) << 3) | OP_ACCEPT_POLL
}

fn slot_data(slot: u32, op: u64) -> u64 {
    (u64::from(slot) << 3) | op
}
