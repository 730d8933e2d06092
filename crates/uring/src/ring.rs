//! The ring: setup with fallback, pushes, waits, completions, and the
//! small pieces of memory the kernel reads when an entry is issued.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::bufring::BufRing;

/// What this kernel (and container: some block io_uring) offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Sockets are polled inside the kernel (no punt to a worker thread
    /// for an operation that would block): Linux 5.7.
    pub fast_poll: bool,
    /// A wait can carry its own timeout: Linux 5.11.
    pub ext_arg: bool,
    /// Registered rings of provided buffers: Linux 5.19.
    pub buf_ring: bool,
    /// The socket operations: accept, send, receive.
    pub sockets: bool,
}

impl Features {
    /// What the bench drivers need: sockets polled in the kernel and
    /// waits with a timeout.
    pub fn for_clients(&self) -> bool {
        self.fast_poll && self.ext_arg
    }

    /// What the server's engine needs on top: accept, and a buffer ring
    /// so idle connections hold no buffer.
    pub fn for_server(&self) -> bool {
        self.for_clients() && self.sockets && self.buf_ring
    }
}

/// What this kernel offers, probed once; `None` when no ring can be made
/// at all (an old kernel, or a container whose seccomp profile blocks it).
pub fn probe() -> Option<&'static Features> {
    static PROBED: OnceLock<Option<Features>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let mut ring = Ring::new(8, 16).ok()?;
            let params = ring.ring.params();
            let mut probe = io_uring::Probe::new();
            let sockets = ring.ring.submitter().register_probe(&mut probe).is_ok()
                && probe.is_supported(opcode::Accept::CODE)
                && probe.is_supported(opcode::Send::CODE)
                && probe.is_supported(opcode::Recv::CODE);
            Some(Features {
                fast_poll: params.is_feature_fast_poll(),
                ext_arg: params.is_feature_ext_arg(),
                buf_ring: ring.register_buf_ring(0, 1, 64).is_ok(),
                sockets,
            })
        })
        .as_ref()
}

/// One completion: which operation (`user_data`), its result (a count or
/// a negative errno) and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// What the operation was tagged with when pushed.
    pub user_data: u64,
    /// Bytes, a descriptor, or `-errno`.
    pub result: i32,
    /// `IORING_CQE_F_*`.
    pub flags: u32,
}

impl Completion {
    /// The operation stays armed and more completions will come
    /// (multishot operations).
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer the kernel picked for this completion, if any.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// The errno of a failed operation, `None` on success.
    pub fn errno(&self) -> Option<i32> {
        (self.result < 0).then_some(-self.result)
    }
}

/// Values the kernel reads when an entry is *issued* (inside the next
/// submit), not when it completes: registered-file updates and timeouts.
/// Kept until the submission queue has gone into the kernel whole, never
/// moved meanwhile (fixed capacity, one slot per entry of the queue).
struct Arena<T> {
    slots: Box<[T]>,
    used: usize,
}

impl<T: Copy> Arena<T> {
    fn new(len: usize, fill: T) -> Arena<T> {
        Arena {
            slots: vec![fill; len].into_boxed_slice(),
            used: 0,
        }
    }

    /// A place for `value` that stays put until [`reset`](Arena::reset);
    /// `None` when full (submit, then reset, then try again).
    fn put(&mut self, value: T) -> Option<*const T> {
        let slot = self.slots.get_mut(self.used)?;
        *slot = value;
        self.used += 1;
        Some(slot as *const T)
    }

    fn reset(&mut self) {
        self.used = 0;
    }
}

/// An io_uring instance and what must live as long as it.
pub struct Ring {
    ring: IoUring,
    /// Operations pushed whose last completion has not been reaped.
    in_flight: usize,
    files: Arena<RawFd>,
    timeouts: Arena<types::Timespec>,
    /// Registered buffer rings, unregistered before they are freed.
    buf_rings: Vec<BufRing>,
    /// Task work runs only inside our waits (`IORING_SETUP_DEFER_TASKRUN`):
    /// between two calls into the kernel, no operation writes memory.
    deferred: bool,
}

/// Written into a registered-file slot to empty it.
static UNREGISTERED: RawFd = -1;

impl Ring {
    /// A ring of `sq_entries` submission and `cq_entries` completion
    /// entries, with one issuer and task work deferred to our waits where
    /// the kernel offers that (Linux 6.1), plain otherwise.
    pub fn new(sq_entries: u32, cq_entries: u32) -> io::Result<Ring> {
        let (ring, deferred) = match IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(sq_entries)
        {
            Ok(ring) => (ring, true),
            Err(_) => (
                IoUring::builder()
                    .setup_cqsize(cq_entries)
                    .build(sq_entries)?,
                false,
            ),
        };
        let len = ring.params().sq_entries() as usize;
        Ok(Ring {
            ring,
            in_flight: 0,
            files: Arena::new(len, -1),
            timeouts: Arena::new(len, types::Timespec::new()),
            buf_rings: Vec::new(),
            deferred,
        })
    }

    /// Gives the memory of buffer group `group`'s idle buffers (in the
    /// ring, or given back and not yet in it) back to the system: after a
    /// burst touched many of them, an idle server need not keep them
    /// resident. They read as zeros until the kernel fills them again.
    /// Only on a ring whose task work is deferred to our waits, and only
    /// with no completion left to reap: then no receive can be writing
    /// into a buffer of the ring, nor a completion name one whose bytes
    /// would be lost. Returns the bytes released (0 where it could not).
    pub fn release_idle_buffers(&mut self, group: u16) -> usize {
        if !self.deferred || !self.ring.completion().is_empty() {
            return 0;
        }
        match self.buf_rings.iter_mut().find(|b| b.group() == group) {
            // SAFETY: task work runs only inside our waits and every
            // completion has been reaped: nothing the kernel does before
            // our next call into it writes a buffer, and no completion
            // names a buffer of the ring (see the function's contract).
            Some(bufs) => unsafe { bufs.release_idle() },
            None => 0,
        }
    }

    /// Queues `entry`, handing the queue to the kernel first when it is
    /// full.
    ///
    /// # Safety
    ///
    /// Whatever memory `entry` points at (a buffer to send from or receive
    /// into, an address, a descriptor table) must stay valid until the
    /// operation's last completion has been reaped with
    /// [`reap`](Ring::reap): not moved, not freed, and, while the kernel may
    /// write it, neither read nor written by anyone else. A descriptor it
    /// names must stay open as long.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's promise, passed on.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            self.submit()?;
        }
    }

    /// Asks the kernel to cancel the operation tagged `target`; the cancel
    /// itself completes tagged `user_data`.
    pub fn cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        // SAFETY: a cancel points at no memory.
        unsafe { self.push(&entry) }
    }

    /// An operation that completes (with `-ETIME`) after `after`.
    pub fn timeout(&mut self, after: Duration, user_data: u64) -> io::Result<()> {
        let spec = self.place(|ring| ring.timeouts.put(types::Timespec::from(after)))?;
        let entry = opcode::Timeout::new(spec).build().user_data(user_data);
        // SAFETY: the timespec is in the ring's arena, which keeps it until
        // the queue has been submitted; the kernel copies it when the
        // entry is issued, inside that submit.
        unsafe { self.push(&entry) }
    }

    /// Puts `fd` (or, with `None`, nothing) into slot `slot` of the
    /// registered-file table, in order with the entries around it: an
    /// operation queued after it may name the slot.
    pub fn update_file(&mut self, slot: u32, fd: Option<RawFd>, user_data: u64) -> io::Result<()> {
        let value = match fd {
            Some(fd) => self.place(|ring| ring.files.put(fd))?,
            None => &UNREGISTERED,
        };
        let offset = i32::try_from(slot)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file slot out of range"))?;
        let entry = opcode::FilesUpdate::new(value, 1)
            .offset(offset)
            .build()
            .user_data(user_data);
        // SAFETY: the descriptor is in the ring's arena (or a static),
        // kept until the queue has been submitted; the kernel reads it when
        // the entry is issued, inside that submit. A descriptor closed
        // before then is the caller's business, as for any operation: the
        // kernel takes its own reference once it is in the table.
        unsafe { self.push(&entry) }
    }

    /// A place in an arena, submitting to make room when it is full.
    fn place<T>(
        &mut self,
        mut put: impl FnMut(&mut Ring) -> Option<*const T>,
    ) -> io::Result<*const T> {
        if let Some(place) = put(self) {
            return Ok(place);
        }
        self.submit()?;
        put(self).ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "submission queue busy"))
    }

    /// Registers `fds` as the fixed-file table: operations name them by
    /// index and the kernel takes no reference per operation. `false`
    /// where the kernel refused (operations then name descriptors).
    pub fn register_files(&mut self, fds: &[RawFd]) -> bool {
        self.ring.submitter().register_files(fds).is_ok()
    }

    /// Registers an empty fixed-file table, as large as the kernel and the
    /// descriptor limit allow up to `max` slots (halving down to 64);
    /// returns its size, 0 if none could be made.
    pub fn register_sparse_files(&mut self, max: u32) -> u32 {
        let mut size = max;
        while size >= 64 {
            if self.ring.submitter().register_files_sparse(size).is_ok() {
                return size;
            }
            size /= 2;
        }
        0
    }

    /// Registers a ring of `count` (a power of two) provided buffers of
    /// `size` bytes as buffer group `group`; [`buf_ring`](Ring::buf_ring)
    /// reaches it.
    pub fn register_buf_ring(&mut self, group: u16, count: u16, size: usize) -> io::Result<()> {
        let bufs = BufRing::register(&self.ring, group, count, size)?;
        self.buf_rings.push(bufs);
        Ok(())
    }

    /// The buffer ring of group `group`, if one is registered.
    pub fn buf_ring(&mut self, group: u16) -> Option<&mut BufRing> {
        self.buf_rings.iter_mut().find(|b| b.group() == group)
    }

    /// Hands what is queued to the kernel.
    pub fn submit(&mut self) -> io::Result<()> {
        let result = self.ring.submit().map(drop);
        self.after_submit();
        result
    }

    /// Hands what is queued to the kernel and waits until `want`
    /// completions are ready, or `timeout` passes. A wait that ends early
    /// (the timeout, a signal, a full completion queue) is not a failure.
    pub fn wait(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let spec = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&spec);
        let result = match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.after_submit();
        result
    }

    /// The arenas' values have been read once the queue went in whole.
    fn after_submit(&mut self) {
        if self.ring.submission().is_empty() {
            self.files.reset();
            self.timeouts.reset();
        }
    }

    /// Moves every completion ready into `out` (after what it holds).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            let completion = Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            };
            if !completion.more() {
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            out.push(completion);
        }
    }

    /// Operations pushed whose last completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The ring's own descriptor.
    pub fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for bufs in std::mem::take(&mut self.buf_rings) {
            let _ = self.ring.submitter().unregister_buf_ring(bufs.group());
            if self.in_flight > 0 {
                // A receive may still hold one of its buffers: keep the
                // memory rather than free it under the kernel.
                std::mem::forget(bufs);
            }
        }
    }
}

/// Waits (at most five seconds) until `want` completions have come, and
/// returns them.
#[cfg(test)]
pub(crate) fn wait_for(ring: &mut Ring, want: usize) -> Vec<Completion> {
    let mut done = Vec::new();
    for _ in 0..100 {
        ring.wait(want - done.len(), Duration::from_millis(50))
            .unwrap();
        ring.reap(&mut done);
        if done.len() >= want {
            break;
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_completes_and_nothing_stays_in_flight() {
        if probe().is_none() {
            eprintln!("note: no io_uring here; skipping");
            return;
        }
        let mut ring = Ring::new(8, 16).unwrap();
        ring.timeout(Duration::from_millis(1), 7).unwrap();
        assert_eq!(ring.in_flight(), 1);
        let done = wait_for(&mut ring, 1);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].user_data, 7);
        assert_eq!(done[0].errno(), Some(libc::ETIME));
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_cancel_ends_a_receive_that_would_wait_forever() {
        if probe().is_none() {
            return;
        }
        let mut ring = Ring::new(8, 16).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut buf = vec![0u8; 16];
        let recv = opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 16)
            .build()
            .user_data(1);
        // SAFETY: `buf` and `a` outlive the loop below, which reaps the
        // receive's completion before either is dropped.
        unsafe { ring.push(&recv).unwrap() };
        ring.submit().unwrap();
        ring.cancel(1, 2).unwrap();
        let done = wait_for(&mut ring, 2);
        let recv = done.iter().find(|c| c.user_data == 1).unwrap();
        assert_eq!(recv.errno(), Some(libc::ECANCELED));
        assert_eq!(ring.in_flight(), 0);
        drop(buf);
    }
}
