//! The io_uring engine for TCP echo: one ring per thread, every thread
//! accepting on the same listening sockets, every connection's receives and
//! sends queued on its thread's ring.
//!
//! Why: an epoll server pays `epoll_wait`, `read` and `write` per message.
//! Here a whole round of completions is handled and the next round of
//! operations submitted in one `io_uring_enter`; each connection has one
//! long-lived multishot receive (armed once, not once per message), and
//! receives take their buffer from a per-thread registered buffer ring only
//! when data arrives, so an idle connection holds no buffer at all: its cost
//! is one small slab entry. Giving a buffer back is a store to the ring's
//! tail, not an operation. Per echoed message that leaves one receive
//! completion and one send.
//!
//! Each connection goes: (greeting send) -> receive -> send it back ->
//! buffer back to the ring -> ... -> end of stream -> shutdown -> close.
//! Received buffers wait in a short per-connection queue while a send is in
//! flight; when the queue is full the multishot receive is cancelled and
//! armed again once the queue drains, so a peer that never reads stalls only
//! itself and holds at most a few buffers. Kernels without multishot receive
//! (before 6.0) get one single-shot receive per message instead;
//! `SOCKECHO_URING_SINGLESHOT=1` in the environment chooses that path on any
//! kernel (the tests run the engine suite both ways).
//!
//! The only `unsafe` is sharing memory with the kernel: entries that point
//! into the buffer pool or the greeting (both live as long as the thread's
//! loop; a connection's slot is freed only once none of its operations is in
//! flight), and the buffer ring itself.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use socket2::SockRef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::endpoint::Endpoint;
use crate::events::Events;
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

/// Submission queue entries per ring.
const ENTRIES: u32 = 4096;

/// How often the loop wakes by itself to look at the stop flags.
const TICK: Duration = Duration::from_millis(50);

/// How long accepting pauses when descriptors run out (EMFILE/ENFILE), so
/// exhaustion neither kills the server nor spins a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a completion is for: the low 3 bits of `user_data`; the rest is a
/// connection slot or a listener index.
const OP_ACCEPT: u64 = 0;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_IGNORE: u64 = 3; // link timeouts, buffer returns, cancels
const OP_ACCEPT_RETRY: u64 = 4;

const MSG_NOSIGNAL: i32 = 0x4000;
/// On a send: the kernel retries a short send itself (Linux 5.19+), so a
/// send completes short only on an error.
const MSG_WAITALL: i32 = 0x100;
const ENOBUFS: i32 = 105;
const ECANCELED: i32 = 125;
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const ETIME: i32 = 62;
const EINTR: i32 = 4;
const EBUSY: i32 = 16;
const EINVAL: i32 = 22;

/// Whether this kernel (and container) offers what the engine needs:
/// io_uring with fast poll, extended wait arguments and registered buffer
/// rings (Linux 5.19+). Probed once.
pub fn available() -> bool {
    static PROBED: OnceLock<bool> = OnceLock::new();
    *PROBED.get_or_init(|| {
        let Ok(ring) = IoUring::new(8) else {
            return false;
        };
        let params = ring.params();
        let mut probe = io_uring::Probe::new();
        if ring.submitter().register_probe(&mut probe).is_err() {
            return false;
        }
        params.is_feature_fast_poll()
            && params.is_feature_ext_arg()
            && probe.is_supported(opcode::Accept::CODE)
            && probe.is_supported(opcode::Send::CODE)
            && probe.is_supported(opcode::Recv::CODE)
            && BufRing::new(&ring, 1).is_ok()
    })
}

/// A registered buffer ring (`IORING_REGISTER_PBUF_RING`): the page-aligned
/// array of buffer descriptors the kernel takes receive buffers from. The
/// application adds a buffer by writing the next entry and moving the tail.
struct BufRing {
    entries: *mut types::BufRingEntry,
    layout: std::alloc::Layout,
    /// Our copy of the tail; the kernel reads the one in the shared memory.
    tail: u16,
    mask: u16,
}

impl BufRing {
    /// Allocates a ring of `size` entries (a power of two) and registers it
    /// as buffer group [`GROUP`] of `ring`.
    fn new(ring: &IoUring, size: u16) -> io::Result<Self> {
        let layout = std::alloc::Layout::from_size_align(
            size as usize * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let this = BufRing {
            entries,
            layout,
            tail: 0,
            mask: size - 1,
        };
        // SAFETY: the memory is page-aligned, holds `size` entries, and is
        // freed only after the group is unregistered or the ring is gone
        // (see Drop, and `run_thread`, which leaks it on error).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, size, GROUP, 0)?;
        }
        Ok(this)
    }

    /// Hands buffer `bid` (`len` bytes at `addr`) to the kernel.
    fn add(&mut self, addr: *mut u8, len: u32, bid: u16) {
        // SAFETY: the index is masked into the ring; the kernel reads an
        // entry only once the tail has moved past it, which happens below.
        unsafe {
            let entry = &mut *self.entries.add((self.tail & self.mask) as usize);
            entry.set_addr(addr as u64);
            entry.set_len(len);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 in the ring's first entry, shared with
        // the kernel; the release store publishes the entry written above.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; dropped only once
        // nothing is in flight (or with the ring already gone).
        unsafe { std::alloc::dealloc(self.entries.cast(), self.layout) }
    }
}

/// What every engine thread shares.
pub struct Shared {
    /// The listening sockets, with the endpoint each serves.
    pub listeners: Vec<(OwnedFd, Endpoint)>,
    /// Sent to each connection before the echo.
    pub greeting: Vec<u8>,
    /// Close a connection that makes no progress for this long.
    pub idle_timeout: Option<Duration>,
    /// One permit per open connection, shared with the epoll engine
    /// (`--max-conns`).
    pub permits: Arc<Semaphore>,
    /// The limit, for the refusal log line.
    pub max_conns: usize,
    /// `--allow`/`--deny` and `--max-conns-per-ip`, decided at accept.
    pub admission: Arc<super::guard::Admission>,
    /// Descriptor exhaustion is logged at most once a second (every thread
    /// retries every ACCEPT_BACKOFF).
    pub accept_errors: std::sync::Mutex<super::guard::rate::LogThrottle>,
    /// Where connection events go.
    pub events: Events,
    /// Stop accepting; open connections finish.
    pub stop: AtomicBool,
    /// Close every connection now.
    pub force: AtomicBool,
}

struct Conn {
    fd: OwnedFd,
    /// Its descriptor is also in the ring's table of registered files at
    /// the index of its slot: operations name it there, so the kernel takes
    /// no reference on the file per operation.
    fixed: bool,
    /// Released when the connection ends.
    _permit: OwnedSemaphorePermit,
    /// Its place in the per-source count (`--max-conns-per-ip`), freed
    /// when the connection ends.
    _source: super::guard::SourceSlot,
    peer: Peer,
    listener: u16,
    bytes_in: u64,
    bytes_out: u64,
    /// The greeting is being sent (its bytes come from `Shared`).
    greeting: bool,
    /// The pool buffer being sent back, and how much of it is sent.
    buffer: Option<u16>,
    send_off: u32,
    send_len: u32,
    /// Buffers received while an earlier one was still being sent, in
    /// order: the next to send. At MAX_QUEUED the receive is paused, so a
    /// peer that never reads stalls only itself, while large messages flow
    /// (receives overlap the current send).
    queued: VecDeque<(u16, u32)>,
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
}

/// Runs one engine thread until the server stops and its connections end.
pub fn run_thread(shared: &Shared) -> io::Result<()> {
    let mut ring = IoUring::builder()
        .setup_cqsize(ENTRIES * 4)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(ENTRIES)
        .or_else(|_| IoUring::builder().setup_cqsize(ENTRIES * 4).build(ENTRIES))?;
    // Zeroed pages: only buffers the kernel actually fills become resident.
    let mut pool = vec![0u8; BUFFERS as usize * BUFFER_SIZE].into_boxed_slice();
    let bufs = BufRing::new(&ring, BUFFERS)?;
    let mut thread = Thread {
        bufs,
        provided: 0,
        free_bufs: Vec::with_capacity(BUFFERS as usize),
        in_ring: 0,
        taken: 0,
        peak: (MIN_RING as u32) << 8,
        multishot: std::env::var_os("SOCKECHO_URING_SINGLESHOT").is_none(),
        fixed_fds: fixed_table(&ring),
        quiet_sends: 0,
        conns: Vec::new(),
        free: Vec::new(),
        waiting_for_buffer: Vec::new(),
        accepts_in_flight: 0,
        accept_retry: vec![false; shared.listeners.len()],
        idle: shared.idle_timeout,
        now: Instant::now(),
        next_sweep: Instant::now(),
        backoff: types::Timespec::from(ACCEPT_BACKOFF),
        pool_addr: pool.as_mut_ptr(),
        stopping: false,
        forced: false,
        refused: 0,
        last_refusal_log: None,
    };
    if !thread.multishot {
        tracing::debug!("single-shot receives (SOCKECHO_URING_SINGLESHOT)");
    }
    let result = thread.run(&mut ring, shared);
    if result.is_err() {
        // Operations may still point into the pool and the buffer ring:
        // keep both alive.
        std::mem::forget(pool);
        std::mem::forget(thread);
    } else {
        // Nothing is in flight: the ring can let go of the buffers.
        let _ = ring.submitter().unregister_buf_ring(GROUP);
    }
    result
}

struct Thread {
    /// The ring the kernel takes receive buffers from.
    bufs: BufRing,
    /// Pool buffers ever handed out (the rest of the pool is untouched).
    provided: u16,
    /// Given-back buffers not in the ring, most recent last.
    free_bufs: Vec<u16>,
    /// Buffers in the ring now.
    in_ring: u16,
    /// Buffers receives took this round, and the recent most in a round
    /// (decaying by 1/64 a round; fixed point, 8 fractional bits): the ring
    /// is topped up to twice that.
    taken: u32,
    peak: u32,
    /// Receives are multishot (cleared, for good, if the kernel refuses).
    multishot: bool,
    /// The descriptors of the ring's registered-file table, one per slot
    /// (empty where the kernel or the descriptor limit refused a table):
    /// files updates read them from here.
    fixed_fds: Box<[RawFd]>,
    /// Sends queued this round whose completion needs no follow-up: the
    /// next wait asks for that many completions more, so one system call
    /// both submits them and sleeps until the next message.
    quiet_sends: u32,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    waiting_for_buffer: Vec<u32>,
    accepts_in_flight: usize,
    /// Listeners whose accept waits out a descriptor-exhaustion backoff.
    accept_retry: Vec<bool>,
    /// `--idle-timeout`, enforced by [`Thread::sweep`].
    idle: Option<Duration>,
    /// The time as of the last wake-up: one clock read per round, not one
    /// per completion.
    now: Instant,
    /// When idle connections are next looked for.
    next_sweep: Instant,
    backoff: types::Timespec,
    pool_addr: *mut u8,
    stopping: bool,
    forced: bool,
    refused: u64,
    last_refusal_log: Option<Instant>,
}

impl Thread {
    fn run(&mut self, ring: &mut IoUring, shared: &Shared) -> io::Result<()> {
        self.refill(ring)?;
        for i in 0..shared.listeners.len() {
            self.arm_accept(ring, shared, i)?;
        }
        let tick = types::Timespec::from(TICK);
        let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(ENTRIES as usize);
        loop {
            if !self.stopping && shared.stop.load(Ordering::Relaxed) {
                self.stopping = true;
                for i in 0..shared.listeners.len() {
                    let cancel = opcode::AsyncCancel::new(accept_data(i))
                        .build()
                        .user_data(OP_IGNORE);
                    push(ring, &cancel)?;
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
            if self.stopping && open_here == 0 && self.accepts_in_flight == 0 {
                return Ok(());
            }
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
            let args = types::SubmitArgs::new().timespec(&tick);
            match ring.submitter().submit_with_args(want, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(ETIME | EINTR | EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.now = Instant::now();
            self.sweep(ring, shared)?;
            done.clear();
            done.extend(
                ring.completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &done {
                let index = (user_data >> 3) as usize;
                match user_data & 7 {
                    OP_ACCEPT => self.on_accept(ring, shared, index, result)?,
                    OP_ACCEPT_RETRY => {
                        self.accept_retry[index] = false;
                        self.accepts_in_flight -= 1;
                        if !self.stopping {
                            self.arm_accept(ring, shared, index)?;
                        }
                    }
                    OP_RECV => self.on_recv(ring, shared, index, result, flags)?,
                    OP_SEND => self.on_send(ring, shared, index, result)?,
                    _ => {}
                }
            }
        }
    }

    fn arm_accept(&mut self, ring: &mut IoUring, shared: &Shared, i: usize) -> io::Result<()> {
        let fd = types::Fd(shared.listeners[i].0.as_raw_fd());
        let entry = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc_flags::SOCK_CLOEXEC)
            .build()
            .user_data(accept_data(i));
        push(ring, &entry)?;
        self.accepts_in_flight += 1;
        Ok(())
    }

    fn on_accept(
        &mut self,
        ring: &mut IoUring,
        shared: &Shared,
        i: usize,
        result: i32,
    ) -> io::Result<()> {
        self.accepts_in_flight -= 1;
        if result < 0 {
            if matches!(-result, EMFILE | ENFILE | ENOBUFS) && !self.stopping {
                let due = shared
                    .accept_errors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .hit(Instant::now());
                if let Some(failed) = due {
                    tracing::warn!(cause = %io::Error::from_raw_os_error(-result), failed, retry_in = ?ACCEPT_BACKOFF, "cannot accept");
                }
                let entry = opcode::Timeout::new(&self.backoff)
                    .build()
                    .user_data(((i as u64) << 3) | OP_ACCEPT_RETRY);
                push(ring, &entry)?;
                self.accept_retry[i] = true;
                self.accepts_in_flight += 1;
            } else if !self.stopping && -result != ECANCELED {
                tracing::debug!(cause = %io::Error::from_raw_os_error(-result), "accept failed");
                self.arm_accept(ring, shared, i)?;
            }
            return Ok(());
        }
        // SAFETY: a successful accept returns a new descriptor that nothing
        // else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(result as RawFd) };
        if self.stopping {
            return Ok(()); // accepted as the stop came: dropped, closing it
        }
        self.arm_accept(ring, shared, i)?;
        let sock = SockRef::from(&fd);
        let peer = match sock.peer_addr().ok().and_then(|a| a.as_socket()) {
            Some(addr) => Peer::Ip(addr),
            None => Peer::Ip(SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        // Before any byte is read: --allow/--deny, --max-conns-per-ip.
        let Some(source) = super::admit(&shared.admission, &peer) else {
            return Ok(()); // dropped: closed at once
        };
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            self.refused += 1;
            if self
                .last_refusal_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                tracing::warn!(
                    max_conns = shared.max_conns,
                    refused = self.refused,
                    "connection refused: too many open connections"
                );
                self.last_refusal_log = Some(Instant::now());
            }
            return Ok(()); // dropped: the client reads the end of the stream
        };
        let _ = sock.set_tcp_nodelay(true);
        shared.events.connection(&peer, &shared.listeners[i].1);
        let conn = Conn {
            fd,
            fixed: false,
            _permit: permit,
            _source: source,
            peer,
            listener: i as u16,
            bytes_in: 0,
            bytes_out: 0,
            greeting: !shared.greeting.is_empty(),
            buffer: None,
            send_off: 0,
            send_len: shared.greeting.len() as u32,
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
        if let (Some(conn), Some(entry)) = (
            self.conns[slot as usize].as_mut(),
            self.fixed_fds.get_mut(slot as usize),
        ) {
            // Registered before its first operation: entries are issued in
            // order, and a files update completes as it is issued.
            *entry = conn.fd.as_raw_fd();
            let update = opcode::FilesUpdate::new(entry, 1)
                .offset(slot as i32)
                .build()
                .user_data(OP_IGNORE);
            conn.fixed = true;
            push(ring, &update)?;
        }
        self.advance(ring, shared, slot)
    }

    /// Queues the connection's next operations (a send of what is due, a
    /// receive if there is room), or finishes it once nothing is left.
    fn advance(&mut self, ring: &mut IoUring, shared: &Shared, slot: u32) -> io::Result<()> {
        let (forced, multishot) = (self.forced, self.multishot);
        let pool = self.pool_addr;
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return Ok(());
        };
        let fd = target(conn, slot);
        let mut entries: [Option<squeue::Entry>; 2] = [None, None];
        if conn.ending.is_none() && !conn.send_in_flight {
            if !conn.greeting && conn.buffer.is_none() {
                if let Some((bid, len)) = conn.queued.pop_front() {
                    conn.buffer = Some(bid);
                    conn.send_off = 0;
                    conn.send_len = len;
                }
            }
            if conn.greeting || conn.buffer.is_some() {
                let base = match conn.buffer {
                    Some(bid) if !conn.greeting => {
                        // SAFETY: a buffer id names one of the pool's BUFFERS
                        // slices of BUFFER_SIZE bytes.
                        unsafe { pool.add(bid as usize * BUFFER_SIZE) }
                    }
                    _ => shared.greeting.as_ptr(),
                };
                // SAFETY: send_off < send_len <= the slice's length.
                let ptr = unsafe { base.add(conn.send_off as usize) };
                let len = conn.send_len - conn.send_off;
                let send = match fd {
                    Target::Fd(fd) => opcode::Send::new(fd, ptr, len)
                        .flags(MSG_NOSIGNAL | MSG_WAITALL)
                        .build(),
                    Target::Fixed(fd) => opcode::Send::new(fd, ptr, len)
                        .flags(MSG_NOSIGNAL | MSG_WAITALL)
                        .build(),
                };
                entries[0] = Some(send.user_data(slot_data(slot, OP_SEND)));
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
            // A multishot receive stays armed across sends. A single-shot
            // one overlaps a send only when the last receive filled its
            // buffer (a large transfer); for small messages, receiving after
            // the send completes is cheaper.
            && (multishot || conn.buffer.is_none() || conn.full)
        {
            entries[1] = Some(recv_entry(multishot, fd, slot));
            conn.recv_in_flight = true;
            conn.recv_multishot = multishot;
        } else if conn.recv_in_flight
            && conn.recv_multishot
            && !conn.pausing
            && (conn.queued.len() >= MAX_QUEUED || conn.ending.is_some())
        {
            // The peer sends faster than it reads: stop receiving until the
            // queue drains (the receive then ends with ECANCELED). Or the
            // connection is ending: a multishot receive would stay armed.
            entries[1] = Some(
                opcode::AsyncCancel::new(slot_data(slot, OP_RECV))
                    .build()
                    .user_data(OP_IGNORE),
            );
            conn.pausing = true;
        }
        // A send whose completion only gives its buffer back (its receive
        // stays armed, nothing queued behind it, no end to finish): the loop
        // need not wake up for it. See `Thread::quiet_sends`.
        if entries[0].is_some()
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
        let busy =
            conn.send_in_flight || conn.recv_in_flight || conn.starved && conn.ending.is_none();
        let drained = conn.buffer.is_none() && conn.queued.is_empty() && !conn.greeting;
        for entry in entries.into_iter().flatten() {
            self.push_with_idle(ring, entry)?;
        }
        if busy || (conn_ok(&self.conns[slot as usize]) && !drained) {
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
            let update = opcode::FilesUpdate::new(&UNREGISTERED, 1)
                .offset(slot as i32)
                .build()
                .user_data(OP_IGNORE);
            push(ring, &update)?;
        }
        if conn.ending.is_none() {
            let _ = SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write);
        }
        for bid in conn
            .buffer
            .into_iter()
            .chain(conn.queued.iter().map(|&(b, _)| b))
        {
            self.return_buffer(bid);
        }
        shared.events.closed(
            &conn.peer,
            &shared.listeners[conn.listener as usize].1,
            conn.bytes_in,
            conn.bytes_out,
            conn.ending.as_deref(),
        );
        Ok(())
    }

    fn on_recv(
        &mut self,
        ring: &mut IoUring,
        shared: &Shared,
        slot: usize,
        result: i32,
        flags: u32,
    ) -> io::Result<()> {
        let (forced, now) = (self.forced, self.now);
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        // A multishot receive stays armed while its completions say "more".
        if !(conn.recv_multishot && cqueue::more(flags)) {
            conn.recv_in_flight = false;
            conn.recv_multishot = false;
            conn.pausing = false;
        }
        conn.last_active = now;
        if result > 0 {
            let Some(bid) = cqueue::buffer_select(flags) else {
                conn.ending = Some("receive without a buffer".to_owned());
                return self.advance(ring, shared, slot as u32);
            };
            self.in_ring -= 1;
            self.taken += 1;
            conn.bytes_in += result as u64;
            conn.full = result as usize == BUFFER_SIZE;
            if conn.buffer.is_none() && !conn.greeting {
                conn.buffer = Some(bid);
                conn.send_off = 0;
                conn.send_len = result as u32;
            } else {
                conn.queued.push_back((bid, result as u32));
            }
        } else if result == 0 {
            conn.eof = true;
        } else if -result == ENOBUFS {
            // The ring ran dry: keep more buffers in it from now on, and
            // receive again once it is topped up (end of this round), or
            // once a buffer comes back if the whole pool is in use.
            conn.starved = true;
            self.waiting_for_buffer.push(slot as u32);
            if self.peak < (BUFFERS as u32) << 8 {
                self.peak = (self.peak * 2).max((MIN_RING as u32) << 8);
                tracing::debug!(peak = self.peak >> 8, "receive buffer ring grown");
            }
        } else if -result == ECANCELED && !forced && conn.ending.is_none() {
            // Paused (queue full): `advance` arms it again once drained.
        } else if -result == EINVAL && self.multishot && conn.bytes_in == 0 && conn.ending.is_none()
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
        ring: &mut IoUring,
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
        if conn.send_off >= conn.send_len {
            conn.greeting = false;
            if let Some(bid) = conn.buffer.take() {
                self.return_buffer(bid);
            }
        }
        self.advance(ring, shared, slot as u32)
    }

    /// Tops the ring up to its target, most recently given back buffers
    /// first, then untouched ones; then lets connections that found it
    /// empty receive again.
    fn refill(&mut self, ring: &mut IoUring) -> io::Result<()> {
        self.peak = (self.peak - self.peak / 64).max(self.taken << 8);
        self.taken = 0;
        let target = (self.peak >> 7).clamp(MIN_RING as u32, BUFFERS as u32) as u16;
        while self.in_ring < target {
            let bid = match self.free_bufs.pop() {
                Some(bid) => bid,
                None if self.provided < BUFFERS => {
                    self.provided += 1;
                    self.provided - 1
                }
                None => break,
            };
            // SAFETY: `bid` < BUFFERS names one of the pool's slices.
            let addr = unsafe { self.pool_addr.add(bid as usize * BUFFER_SIZE) };
            self.bufs.add(addr, BUFFER_SIZE as u32, bid);
            self.in_ring += 1;
        }
        // One waiting connection per buffer in the ring: more would find
        // it empty again.
        for _ in 0..self.in_ring {
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

    /// A buffer is free again: onto the stack the ring is refilled from.
    fn return_buffer(&mut self, bid: u16) {
        self.free_bufs.push(bid);
    }

    fn resume(&mut self, ring: &mut IoUring, slot: u32) -> io::Result<()> {
        // `advance` needs `Shared` only to finish a connection; a starved
        // one has a receive to arm, so a plain re-arm is enough here.
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return Ok(());
        };
        if conn.recv_in_flight || conn.eof || conn.ending.is_some() || !conn.queued.is_empty() {
            return Ok(());
        }
        let entry = recv_entry(self.multishot, target(conn, slot), slot);
        conn.recv_in_flight = true;
        conn.recv_multishot = self.multishot;
        self.push_with_idle(ring, entry)
    }

    /// Pushes a connection's operation.
    fn push_with_idle(&self, ring: &mut IoUring, entry: squeue::Entry) -> io::Result<()> {
        push(ring, &entry)
    }

    /// `--idle-timeout`: ends connections that made no progress for that
    /// long, looked for a few times per timeout (at most once a second).
    /// A linked timeout on every operation would do the same at the price
    /// of an extra submission and completion per message; a connection's
    /// last progress costs one store per completion instead.
    fn sweep(&mut self, ring: &mut IoUring, shared: &Shared) -> io::Result<()> {
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

fn conn_ok(conn: &Option<Conn>) -> bool {
    conn.as_ref().is_some_and(|c| c.ending.is_none())
}

fn ending_reason(result: i32, forced: bool) -> String {
    // Only a forced stop cancels operations (idle connections are shut
    // down instead, and already carry their reason).
    if -result == ECANCELED || forced {
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

/// Registers an empty table of files with `ring`, as large as the kernel and
/// the descriptor limit allow (up to FIXED_FILES), and returns its mirror.
fn fixed_table(ring: &IoUring) -> Box<[RawFd]> {
    let mut size = FIXED_FILES;
    while size >= 64 {
        if ring.submitter().register_files_sparse(size).is_ok() {
            return vec![-1; size as usize].into_boxed_slice();
        }
        size /= 2;
    }
    Box::default()
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

/// Written into a registered-file slot to empty it.
static UNREGISTERED: RawFd = -1;

fn accept_data(listener: usize) -> u64 {
    ((listener as u64) << 3) | OP_ACCEPT
}

fn slot_data(slot: u32, op: u64) -> u64 {
    ((slot as u64) << 3) | op
}

mod libc_flags {
    pub const SOCK_CLOEXEC: i32 = 0o2_000_000;
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: entries point into the buffer pool or the greeting, both
        // alive for the whole loop, or at timespecs owned by the thread
        // state; see the module docs.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
