//! A registered ring of provided buffers (`IORING_REGISTER_PBUF_RING`),
//! and the owned buffers it hands out.
//!
//! The kernel takes a buffer from the ring when data arrives for a
//! receive that asked for one, and names it in the completion. From then
//! on the buffer is ours: [`BufRing::take`] wraps it in a [`Buffer`], which
//! reads as a byte slice and, when dropped, goes onto the pool's free
//! stack. [`BufRing::provide`] puts the most recently freed buffer (still
//! warm in the cache) back into the ring, or one never used yet.
//!
//! tokio-uring's `bufring` is the model: memory the kernel writes is owned
//! by one type, and a buffer cannot be forgotten or returned twice.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;

/// The page size [`BufRing::release_idle`] releases in (4 KiB on every
/// Linux target sockecho builds for; a larger page only releases less).
const PAGE: usize = 4096;

/// One entry of the ring, as the kernel reads it (`struct io_uring_buf`).
/// The first entry's `resv` is the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The buffers' memory, shared by the ring and every [`Buffer`] out of it.
struct Pool {
    /// `count * size` bytes from `vec![0; n]`, which the allocator zeroes
    /// lazily (calloc, fresh pages): pages no receive reaches never become
    /// resident. (An aligned `alloc_zeroed` would write every byte.)
    base: NonNull<u8>,
    len: usize,
    size: usize,
    count: u16,
    /// Buffers given back and not yet in the ring again, most recent last.
    free: RefCell<Vec<u16>>,
    /// Buffers never handed to the kernel yet: `fresh..count`.
    fresh: Cell<u16>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` come from `Box::into_raw` of a boxed
        // slice in `BufRing::register`; the last owner (the ring, or a
        // buffer outliving it) is going, and the ring unregistered the
        // group before letting go of its share.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.base.as_ptr(),
                self.len,
            )))
        }
    }
}

/// A buffer the kernel filled and handed over: the received bytes. It goes
/// back to the pool (not to the ring: see [`BufRing::provide`]) when
/// dropped.
pub struct Buffer {
    pool: Rc<Pool>,
    bid: u16,
    len: u32,
}

impl Buffer {
    /// Its id in the buffer group.
    pub fn id(&self) -> u16 {
        self.bid
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let offset = usize::from(self.bid) * self.pool.size;
        // SAFETY: the buffer is out of the ring (the kernel picked it and
        // completed the receive), so nothing writes it while this `Buffer`
        // lives; `len` was clamped to the buffer's size by `take`, and the
        // memory lives while the pool does, which this buffer keeps.
        unsafe {
            std::slice::from_raw_parts(self.pool.base.as_ptr().add(offset), self.len as usize)
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.pool.free.borrow_mut().push(self.bid);
    }
}

/// A registered buffer ring and its pool. Owned by a
/// [`Ring`](crate::Ring), which unregisters it before it is freed.
pub struct BufRing {
    group: u16,
    /// `count` ring entries, page aligned, shared with the kernel.
    entries: NonNull<RawBuf>,
    layout: Layout,
    /// Our copy of the tail; the kernel reads the one in shared memory.
    tail: u16,
    /// Buffers in the ring now (handed to the kernel, not yet picked).
    in_ring: u16,
    /// Which buffers are in the ring: a completion's buffer id is taken at
    /// most once, and only if the kernel really has it.
    in_kernel: Box<[bool]>,
    /// Buffers the kernel wrote into since their memory was last released
    /// (see [`release_idle`](BufRing::release_idle)).
    touched: Box<[bool]>,
    pool: Rc<Pool>,
}

impl BufRing {
    /// Allocates `count` buffers (a power of two, at most 32768) of `size`
    /// bytes and registers their ring with `ring` as group `group`. The
    /// ring starts empty: [`provide`](BufRing::provide) fills it.
    pub(crate) fn register(
        ring: &IoUring,
        group: u16,
        count: u16,
        size: usize,
    ) -> io::Result<BufRing> {
        let invalid = |why| io::Error::new(io::ErrorKind::InvalidInput, why);
        if !count.is_power_of_two() || count > 1 << 15 {
            return Err(invalid(
                "buffer ring size must be a power of two up to 32768",
            ));
        }
        let layout =
            Layout::from_size_align(usize::from(count) * std::mem::size_of::<RawBuf>(), 4096)
                .map_err(|_| invalid("buffer ring too large"))?;
        let len = usize::from(count)
            .checked_mul(size.max(1))
            .ok_or_else(|| invalid("buffer pool too large"))?;
        let memory = Box::into_raw(vec![0u8; len].into_boxed_slice());
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries = unsafe { std::alloc::alloc_zeroed(layout).cast::<RawBuf>() };
        let pool = Rc::new(Pool {
            // A boxed slice's pointer is never null.
            base: NonNull::new(memory.cast::<u8>()).ok_or(io::ErrorKind::OutOfMemory)?,
            len,
            size,
            count,
            free: RefCell::new(Vec::with_capacity(usize::from(count))),
            fresh: Cell::new(0),
        });
        let Some(entries) = NonNull::new(entries) else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let bufs = BufRing {
            group,
            entries,
            layout,
            tail: 0,
            in_ring: 0,
            in_kernel: vec![false; usize::from(count)].into_boxed_slice(),
            touched: vec![false; usize::from(count)].into_boxed_slice(),
            pool,
        };
        // SAFETY: the entries are page aligned and hold `count` of the
        // kernel's `io_uring_buf`; the memory is freed only after the group
        // is unregistered (the owning `Ring`'s drop), or never when
        // operations may still be in flight.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        Ok(bufs)
    }

    /// The buffer group id.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Buffers in the pool.
    pub fn count(&self) -> u16 {
        self.pool.count
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> usize {
        self.pool.size
    }

    /// Buffers in the ring now, waiting for data.
    pub fn in_ring(&self) -> u16 {
        self.in_ring
    }

    /// Puts one more buffer into the ring: the most recently given back
    /// (the hottest in cache), else one never used. `false` when every
    /// buffer is in the ring or held by a [`Buffer`].
    pub fn provide(&mut self) -> bool {
        let bid = match self.pool.free.borrow_mut().pop() {
            Some(bid) => bid,
            None if self.pool.fresh.get() < self.pool.count => {
                let bid = self.pool.fresh.get();
                self.pool.fresh.set(bid + 1);
                bid
            }
            None => return false,
        };
        let mask = self.pool.count - 1;
        let addr = self.pool.base.as_ptr() as u64 + u64::from(bid) * self.pool.size as u64;
        // SAFETY: the index is masked into the ring. Fewer than `count`
        // buffers are in the ring (this one was not), so the kernel has
        // consumed the entry at the tail; it reads an entry only once the
        // tail moves past it, below. The fields are written through raw
        // pointers: no reference into memory the kernel shares.
        unsafe {
            let entry = self.entries.as_ptr().add(usize::from(self.tail & mask));
            (&raw mut (*entry).addr).write(addr);
            (&raw mut (*entry).len).write(u32::try_from(self.pool.size).unwrap_or(u32::MAX));
            (&raw mut (*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the first entry's `resv`, a u16 the kernel
        // reads; an atomic release store publishes the entry written above.
        unsafe {
            let tail = &raw mut (*self.entries.as_ptr()).resv;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
        self.in_kernel[usize::from(bid)] = true;
        self.in_ring += 1;
        true
    }

    /// The buffer a completion named, holding the `len` bytes it received.
    /// `None` if the kernel does not have that buffer (a wrong id, or one
    /// taken already).
    pub fn take(&mut self, bid: u16, len: usize) -> Option<Buffer> {
        let held = self.in_kernel.get_mut(usize::from(bid))?;
        if !*held {
            return None;
        }
        *held = false;
        self.in_ring -= 1;
        self.touched[usize::from(bid)] = true;
        Some(Buffer {
            pool: self.pool.clone(),
            bid,
            len: u32::try_from(len.min(self.pool.size)).unwrap_or(u32::MAX),
        })
    }
}

impl BufRing {
    /// Releases the pages of every touched buffer not held by a
    /// [`Buffer`] (in the ring, or on the free stack) with
    /// `MADV_DONTNEED`: they read as zeros afterwards. Returns the bytes
    /// released.
    ///
    /// # Safety
    ///
    /// The kernel must not be writing into any buffer of the ring now or
    /// until this returns, and no completion not yet reaped may name one
    /// (see [`Ring::release_idle_buffers`](crate::Ring::release_idle_buffers)).
    pub(crate) unsafe fn release_idle(&mut self) -> usize {
        let free: Vec<u16> = self.pool.free.borrow().clone();
        let mut idle = self.in_kernel.clone();
        for bid in free {
            idle[usize::from(bid)] = true;
        }
        let size = self.pool.size;
        let mut released = 0;
        let mut bid = 0;
        while bid < idle.len() {
            if !(idle[bid] && self.touched[bid]) {
                bid += 1;
                continue;
            }
            // A run of neighbours, released in one call.
            let start = bid;
            while bid < idle.len() && idle[bid] && self.touched[bid] {
                self.touched[bid] = false;
                bid += 1;
            }
            // Only the pages wholly inside the run: the pool need not
            // begin on a page, and a page shared with a neighbour may hold
            // a buffer still in use.
            let from = self.pool.base.as_ptr() as usize + start * size;
            let to = from + (bid - start) * size;
            let (from, to) = (from.next_multiple_of(PAGE), to / PAGE * PAGE);
            if to <= from {
                continue;
            }
            // SAFETY: the range lies within the pool (bids below `count`,
            // `count * size` bytes from `base`), in buffers no `Buffer`
            // holds (each is in the ring or on the free stack), which the
            // kernel does not write meanwhile (the caller's contract).
            // MADV_DONTNEED on private anonymous memory only makes its
            // pages read as zeros again.
            let done =
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
            if done == 0 {
                released += to - from;
            }
        }
        released
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with this layout; the owning ring
        // unregistered the group first (or leaked this ring instead of
        // dropping it, when operations were still in flight).
        unsafe { std::alloc::dealloc(self.entries.as_ptr().cast(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Ring, opcode, probe, squeue, types};
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_receive_takes_a_buffer_that_comes_back_when_dropped() {
        if !probe().is_some_and(|f| f.buf_ring) {
            eprintln!("note: no buffer rings here; skipping");
            return;
        }
        let mut ring = Ring::new(8, 16).unwrap();
        ring.register_buf_ring(3, 4, 32).unwrap();
        let bufs = ring.buf_ring(3).unwrap();
        assert!(bufs.provide() && bufs.provide());
        assert_eq!(bufs.in_ring(), 2);
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.write_all(b"hello").unwrap();
        let recv = opcode::Recv::new(types::Fd(a.as_raw_fd()), std::ptr::null_mut(), 32)
            .buf_group(3)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(9);
        // SAFETY: the receive writes into the ring's own buffers, which the
        // ring keeps; `a` outlives the wait below.
        unsafe { ring.push(&recv).unwrap() };
        let done = crate::ring::wait_for(&mut ring, 1);
        let bid = done[0].buffer().expect("a buffer was picked");
        let bufs = ring.buf_ring(3).unwrap();
        let buffer = bufs.take(bid, done[0].result as usize).unwrap();
        assert_eq!(&buffer[..], b"hello");
        assert!(bufs.take(bid, 5).is_none(), "taken once only");
        assert_eq!(bufs.in_ring(), 1);
        drop(buffer);
        // The buffer just given back is the next one provided.
        assert!(bufs.provide());
        assert_eq!(bufs.in_ring(), 2);
        assert!(bufs.provide() && bufs.provide());
        assert!(!bufs.provide(), "all four are in the ring");
    }

    #[test]
    fn idle_buffers_are_released_and_held_ones_kept() {
        if !probe().is_some_and(|f| f.buf_ring) {
            eprintln!("note: no buffer rings here; skipping");
            return;
        }
        let mut ring = Ring::new(8, 16).unwrap();
        // Buffers of four pages each, so every one holds whole pages.
        ring.register_buf_ring(5, 4, 4 * super::PAGE).unwrap();
        let bufs = ring.buf_ring(5).unwrap();
        assert!(bufs.provide() && bufs.provide());
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut received = Vec::new();
        for message in [&b"first"[..], b"second"] {
            b.write_all(message).unwrap();
            let recv = opcode::Recv::new(types::Fd(a.as_raw_fd()), std::ptr::null_mut(), 64)
                .buf_group(5)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(1);
            // SAFETY: as above.
            unsafe { ring.push(&recv).unwrap() };
            let done = crate::ring::wait_for(&mut ring, 1);
            let bid = done[0].buffer().unwrap();
            let bufs = ring.buf_ring(5).unwrap();
            received.push(bufs.take(bid, done[0].result as usize).unwrap());
        }
        // One given back (now on the free stack), one still held.
        let held = received.pop().unwrap();
        drop(received);
        let released = ring.release_idle_buffers(5);
        assert_eq!(&held[..], b"second", "a held buffer is never released");
        if released == 0 {
            eprintln!("note: task work is not deferred here; nothing released");
            return;
        }
        assert!(released >= 3 * super::PAGE, "{released}");
        // Released twice: nothing more to give.
        assert_eq!(ring.release_idle_buffers(5), 0);
    }
}
