//! The io_uring driver for closed-loop UDP benches, on the one io_uring
//! layer (`sockecho-uring`).
//!
//! Why: the tokio flow pays per datagram a `send`, a `recv`, a `recv` that
//! finds nothing (`EAGAIN`), and its share of `epoll_wait` and of the
//! runtime's scheduling. Here every flow of the thread is a connected UDP
//! socket registered with one ring; each datagram in flight is one Send
//! (from a send buffer of its own) and each flow keeps one Recv armed, and
//! a whole round of them enters the kernel in one `io_uring_enter`.
//!
//! What each reply means, and when a datagram is lost, is the datagram
//! flow core's (`sockecho-flow`), shared with the tokio driver: this file
//! only sends, receives and cancels.
//!
//! The only `unsafe` is queuing operations that point at buffers (a flow's
//! send and receive buffers, boxed slices that never move and are not
//! freed while an operation on them is in flight: teardown cancels and
//! waits for every operation).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use sockecho_flow::{DatagramFlow, Pattern, Tally, fill_datagram};
use sockecho_uring::{Completion, Ring, opcode, types};

use super::uring::TICK;
use super::{Ending, Shared, record};

/// How long teardown waits for cancelled operations before giving up on
/// the ring (and leaking its buffers rather than freeing them under it).
const TEARDOWN: Duration = Duration::from_secs(1);

/// Which operation a completion belongs to: the low two bits of
/// `user_data`; then the send buffer (10 bits: the pipeline is at most
/// 1024), then the flow's index.
const SEND: u64 = 0;
const RECV: u64 = 1;
const CANCEL: u64 = 2;
const SLOT_BITS: u32 = 10;

/// The most datagrams in flight per flow this driver handles (a
/// completion names its send buffer in [`SLOT_BITS`] bits).
pub(super) const MAX_PIPELINE: usize = 1 << SLOT_BITS;

fn tag(flow: usize, slot: usize, kind: u64) -> u64 {
    ((flow as u64) << (SLOT_BITS + 2)) | ((slot as u64) << 2) | kind
}

struct Flow {
    id: usize,
    fd: OwnedFd,
    base: u64,
    /// Index among the ring's registered files, when registration worked.
    fixed: Option<u32>,
    /// What is in flight, answered, lost.
    flow: DatagramFlow,
    /// Send buffers, one per datagram that may be in flight; never moved
    /// or freed while a Send from them is in flight.
    out: Box<[u8]>,
    /// Which send buffers a Send is reading (the kernel's until it
    /// completes), and the datagram each last carried.
    sending: Box<[Option<u64>]>,
    /// The receive buffer (a byte more than a datagram, so a longer echo
    /// shows); never moved or freed while the Recv is in flight.
    inbox: Box<[u8]>,
    recv_in_flight: bool,
    /// Measuring has ended for this flow (an error, or the run's end).
    finished: bool,
    tally: Tally,
}

impl Flow {
    fn target(&self) -> Target {
        match self.fixed {
            Some(i) => Target::Fixed(types::Fixed(i)),
            None => Target::Fd(types::Fd(self.fd.as_raw_fd())),
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    Fd(types::Fd),
    Fixed(types::Fixed),
}

/// The ring, and what every operation on it shares.
struct Driver<'a> {
    ring: Ring,
    shared: &'a Shared,
    /// The earliest time a datagram in flight can be lost (a bound: it may
    /// be earlier than the real one, never later).
    next_expiry: Instant,
}

/// Drives `flows` (connected, non-blocking UDP sockets) on one ring until
/// the run ends; returns each flow's tally.
pub(super) fn drive_all(
    flows: Vec<(usize, OwnedFd)>,
    shared: &Shared,
) -> io::Result<Vec<(usize, Tally)>> {
    let k = shared.pipeline;
    let size = shared.message_size;
    let entries = ((k + 1) * flows.len() + 8)
        .next_power_of_two()
        .clamp(8, 32_768) as u32;
    let mut ring = Ring::new(entries, entries * 2)?;
    let mut flows: Vec<Flow> = flows
        .into_iter()
        .map(|(id, fd)| Flow {
            id,
            fd,
            base: Pattern::base(id),
            fixed: None,
            flow: super::datagram::window(k, shared),
            out: vec![0u8; size * k].into_boxed_slice(),
            sending: vec![None; k].into_boxed_slice(),
            inbox: vec![0u8; size + 1].into_boxed_slice(),
            recv_in_flight: false,
            finished: false,
            tally: Tally::default(),
        })
        .collect();
    let fds: Vec<RawFd> = flows.iter().map(|f| f.fd.as_raw_fd()).collect();
    if ring.register_files(&fds) {
        for (i, flow) in flows.iter_mut().enumerate() {
            flow.fixed = Some(i as u32);
        }
    }
    let mut driver = Driver {
        ring,
        shared,
        next_expiry: Instant::now() + shared.timeout,
    };
    match driver.run(&mut flows) {
        Ok(()) => Ok(flows.into_iter().map(|f| (f.id, f.tally)).collect()),
        Err(e) => {
            // Operations may still be in flight on the buffers: leak them
            // (and the ring) rather than free memory the kernel may still
            // read or write.
            std::mem::forget(flows);
            std::mem::forget(driver);
            Err(e)
        }
    }
}

impl Driver<'_> {
    /// The event loop: submit, wait (at most a tick, or until the next
    /// datagram can be lost), handle completions, send and re-arm; at the
    /// end cancel what is in flight and return once nothing is.
    fn run(&mut self, flows: &mut [Flow]) -> io::Result<()> {
        let shared = self.shared;
        let now = Instant::now();
        for index in 0..flows.len() {
            self.fill(flows, index, now)?;
        }
        let mut done: Vec<Completion> = Vec::with_capacity(2 * flows.len() + 8);
        let mut measuring = true;
        let mut teardown_end = None;
        loop {
            let now = Instant::now();
            record::tick(shared, now);
            if measuring && shared.over(now) {
                measuring = false;
                for index in 0..flows.len() {
                    self.finish(flows, index)?;
                }
                teardown_end = Some(now + TEARDOWN);
            }
            if !measuring {
                if self.ring.in_flight() == 0 {
                    return Ok(());
                }
                if teardown_end.is_some_and(|t| now >= t) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "io_uring operations outlived their cancellation",
                    ));
                }
            }
            if measuring && now >= self.next_expiry {
                self.expire(flows, now)?;
            }
            let wait = if measuring {
                (self.next_expiry.min(shared.window.end) - now)
                    .clamp(Duration::from_micros(10), TICK)
            } else {
                TICK
            };
            self.ring.wait(1, wait)?;
            done.clear();
            self.ring.reap(&mut done);
            for completion in &done {
                let index = (completion.user_data >> (SLOT_BITS + 2)) as usize;
                let slot = ((completion.user_data >> 2) & ((1 << SLOT_BITS) - 1)) as usize;
                match completion.user_data & 3 {
                    SEND => self.on_send(flows, index, slot, completion.result)?,
                    RECV => self.on_recv(flows, index, completion.result)?,
                    _ => {} // A cancel's own completion: nothing to do.
                }
            }
        }
    }

    /// Sends a new datagram from every free send buffer while fewer than
    /// the pipeline are in flight (closed loop), timed from `now`, and arms
    /// the flow's receive.
    fn fill(&mut self, flows: &mut [Flow], index: usize, now: Instant) -> io::Result<()> {
        let flow = &mut flows[index];
        if flow.finished {
            return Ok(());
        }
        let size = self.shared.message_size;
        let pattern = &self.shared.pattern;
        let target = flow.target();
        let mut slot = 0;
        while flow.flow.in_flight() < flow.sending.len() && slot < flow.sending.len() {
            if flow.sending[slot].is_some() {
                slot += 1;
                continue;
            }
            let seq = flow.flow.next_seq();
            let out = &mut flow.out[slot * size..][..size];
            fill_datagram(pattern, flow.base, seq, out);
            let (ptr, len) = (out.as_ptr(), size as u32);
            let entry = match target {
                Target::Fixed(fd) => opcode::Send::new(fd, ptr, len),
                Target::Fd(fd) => opcode::Send::new(fd, ptr, len),
            }
            .build()
            .user_data(tag(index, slot, SEND));
            let (_, early) = flow.flow.send(now);
            if let Some(expired) = early {
                flow.tally.expired(expired, self.shared.window.start);
            }
            flow.sending[slot] = Some(seq);
            self.next_expiry = self.next_expiry.min(now + self.shared.timeout);
            // SAFETY: the entry points into `flow.out`, a boxed slice that
            // is neither moved nor freed, nor this slot's part rewritten
            // (`sending`), until the Send completes.
            unsafe { self.ring.push(&entry)? };
        }
        if !flow.recv_in_flight {
            let (ptr, len) = (flow.inbox.as_mut_ptr(), flow.inbox.len() as u32);
            let entry = match target {
                Target::Fixed(fd) => opcode::Recv::new(fd, ptr, len),
                Target::Fd(fd) => opcode::Recv::new(fd, ptr, len),
            }
            // A datagram's real length even when it was cut to the buffer,
            // so a too-long echo is reported with its length.
            .flags(libc::MSG_TRUNC)
            .build()
            .user_data(tag(index, 0, RECV));
            flow.recv_in_flight = true;
            // SAFETY: the entry points into `flow.inbox`, a boxed slice that
            // is neither moved, read nor freed until the Recv completes.
            unsafe { self.ring.push(&entry)? };
        }
        Ok(())
    }

    fn on_send(
        &mut self,
        flows: &mut [Flow],
        index: usize,
        slot: usize,
        result: i32,
    ) -> io::Result<()> {
        let flow = &mut flows[index];
        let seq = flow.sending[slot].take();
        if flow.finished {
            return Ok(());
        }
        if result >= 0 {
            // A datagram due may have been waiting for this buffer (its
            // predecessor lost before its Send completed): the clock is
            // read only then.
            if flow.flow.in_flight() < flow.sending.len() {
                return self.fill(flows, index, Instant::now());
            }
            return Ok(());
        }
        let e = io::Error::from_raw_os_error(-result);
        if e.kind() == io::ErrorKind::ConnectionRefused {
            // ICMP port unreachable for an earlier datagram, reported here
            // and not on the receive: this one was not sent. Count it, and
            // send another; the server may come back.
            record::error(self.shared, &mut flow.tally, flow.id, &e);
            if let Some(seq) = seq {
                flow.flow.unsent(seq);
            }
            return self.fill(flows, index, Instant::now());
        }
        self.fail(flows, index, e)
    }

    fn on_recv(&mut self, flows: &mut [Flow], index: usize, result: i32) -> io::Result<()> {
        let shared = self.shared;
        let flow = &mut flows[index];
        flow.recv_in_flight = false;
        if flow.finished {
            return Ok(()); // Cancelled, or an echo after the end: not measured.
        }
        if result < 0 {
            let e = io::Error::from_raw_os_error(-result);
            if e.kind() == io::ErrorKind::ConnectionRefused {
                record::error(shared, &mut flow.tally, flow.id, &e);
                return self.fill(flows, index, Instant::now());
            }
            return self.fail(flows, index, e);
        }
        let len = result as usize;
        let got = &flow.inbox[..len.min(flow.inbox.len())];
        let completed = flow.tally.datagram_reply(
            &mut flow.flow,
            &shared.pattern,
            flow.id,
            flow.base,
            shared.message_size,
            got,
            len,
        );
        let now = Instant::now();
        if let Some((sent, _)) = completed {
            record::complete(shared, sent, now);
        }
        self.fill(flows, index, now)
    }

    /// Expires every datagram unanswered for the timeout (counted lost
    /// when sent inside the measured window), sends new ones in their
    /// place, and finds the next time one can be lost.
    fn expire(&mut self, flows: &mut [Flow], now: Instant) -> io::Result<()> {
        let measure_start = self.shared.window.start;
        let mut earliest = now + self.shared.timeout;
        for index in 0..flows.len() {
            let flow = &mut flows[index];
            if flow.finished {
                continue;
            }
            let before = flow.flow.in_flight();
            let tally = &mut flow.tally;
            flow.flow.expire(now, |e| tally.expired(e, measure_start));
            if flow.flow.in_flight() < before {
                self.fill(flows, index, now)?;
            }
            if let Some(next) = flows[index].flow.next_expiry() {
                earliest = earliest.min(next);
            }
        }
        self.next_expiry = earliest;
        Ok(())
    }

    /// Ends a flow's measuring: no more sends; its operations in flight are
    /// cancelled (a receive on a quiet socket would never complete).
    fn finish(&mut self, flows: &mut [Flow], index: usize) -> io::Result<()> {
        let flow = &mut flows[index];
        if flow.finished {
            return Ok(());
        }
        flow.finished = true;
        if flow.recv_in_flight {
            self.ring
                .cancel(tag(index, 0, RECV), tag(index, 0, CANCEL))?;
        }
        for (slot, sending) in flow.sending.iter().enumerate() {
            if sending.is_some() {
                self.ring
                    .cancel(tag(index, slot, SEND), tag(index, 0, CANCEL))?;
            }
        }
        Ok(())
    }

    fn fail(&mut self, flows: &mut [Flow], index: usize, e: io::Error) -> io::Result<()> {
        let flow = &mut flows[index];
        record::end(self.shared, &mut flow.tally, flow.id, Ending::Io(e), false);
        self.finish(flows, index)
    }
}
