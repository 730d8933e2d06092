//! An io_uring driver for closed-loop UDP benches: the datagram twin of
//! `uring.rs`.
//!
//! Why: the tokio flow pays per datagram a `send`, a `recv`, a `recv` that
//! finds nothing (`EAGAIN`), and its share of `epoll_wait` and of the
//! runtime's scheduling. Here every flow of the thread is a connected UDP
//! socket registered with one ring; each datagram in flight is one Send
//! (its own buffer) and each flow keeps one Recv armed, and a whole round
//! of them enters the kernel in one `io_uring_enter`.
//!
//! The flow's semantics are the tokio flow's (`datagram.rs`), byte for
//! byte: the same datagrams (sequence number, then the pattern), the same
//! verification, a datagram unanswered for the loss timeout counts as lost
//! (when sent inside the measured window) and its slot is reused, a reply
//! whose sequence number was answered lately is a duplicate, an older one
//! is late (already counted lost), one never sent is a mismatch.
//!
//! The only `unsafe` is pushing entries that point at buffers (a flow's
//! send and receive buffers, boxed slices that never move and are not
//! freed while an operation on them is in flight: teardown cancels and
//! waits for every operation) and is why this module allows it.
#![allow(unsafe_code)]

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use tokio::time::Instant;

use super::datagram::{HEADER, HISTORY};
use super::pattern::Pattern;
use super::{Ending, Outcome, Shared};
use crate::endpoint::Endpoint;
use crate::error::Error;

/// How often the wait wakes up by itself to look at the clock and the stop
/// flag when no completion comes.
const TICK: Duration = Duration::from_millis(50);

/// How long teardown waits for cancelled operations before giving up on
/// the ring (and leaking its buffers rather than freeing them under it).
const TEARDOWN: Duration = Duration::from_secs(1);

/// recv(2) flag: return a datagram's real length even when it was cut to
/// the buffer, so a too-long echo is reported with its length.
const MSG_TRUNC: i32 = 0x20;

/// Connects a UDP flow: a socket of its own, bound to an ephemeral port of
/// the server's family and connected to it, as `Datagram::connect` does.
pub(super) fn connect(endpoint: &Endpoint) -> Result<UdpSocket, Error> {
    let attempt = || -> io::Result<UdpSocket> {
        let Endpoint::Udp(hp) = endpoint else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not for io_uring",
            ));
        };
        use std::net::ToSocketAddrs;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in (hp.host.to_string().trim_matches(['[', ']']), hp.port).to_socket_addrs()? {
            let local: std::net::SocketAddr = if addr.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(local).and_then(|s| {
                s.connect(addr)?;
                s.set_nonblocking(true)?;
                Ok(s)
            });
            match socket {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    attempt().map_err(|e| Error::connect(endpoint, e))
}

/// Which operation a completion belongs to: the low two bits of
/// `user_data`; then the slot (10 bits: `--pipeline` is at most 1024), then
/// the flow's index.
const SEND: u64 = 0;
const RECV: u64 = 1;
const CANCEL: u64 = 2;
const SLOT_BITS: u32 = 10;

fn tag(flow: usize, slot: usize, kind: u64) -> u64 {
    ((flow as u64) << (SLOT_BITS + 2)) | ((slot as u64) << 2) | kind
}

/// A datagram in flight, or a free place for one. Its send buffer is the
/// flow's `out[slot * size..][..size]`.
#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    sent_at: Instant,
    /// Waiting for its echo.
    active: bool,
    /// Its Send is in flight: the buffer is the kernel's until it completes.
    sending: bool,
}

struct Flow {
    id: usize,
    socket: UdpSocket,
    base: u64,
    /// Index among the ring's registered files, when registration worked.
    fixed: Option<u32>,
    slots: Box<[Slot]>,
    /// Active slots.
    in_flight: usize,
    next_seq: u64,
    /// Send buffers, one per slot; never moved or freed while a Send is in
    /// flight.
    out: Box<[u8]>,
    /// The receive buffer (a byte more than a datagram, so a longer echo
    /// shows); never moved or freed while the Recv is in flight.
    inbox: Box<[u8]>,
    recv_in_flight: bool,
    /// `seq + 1` of the datagrams answered lately, at `seq % HISTORY`.
    answered: Box<[u64]>,
    /// Measuring has ended for this flow (an error, or the run's end).
    finished: bool,
    outcome: Outcome,
}

impl Flow {
    fn fd(&self) -> types::Fd {
        types::Fd(self.socket.as_raw_fd())
    }
}

/// The ring, and what every operation on it shares.
struct Driver<'a> {
    ring: IoUring,
    shared: &'a Shared,
    size: usize,
    /// Operations pushed and not yet completed (cancels included).
    pending: usize,
    /// The earliest time a datagram in flight can be lost (a bound: it may
    /// be earlier than the real one, never later).
    next_expiry: Instant,
}

/// Drives `flows` on one ring until the run ends; returns each flow's
/// outcome.
pub(super) fn drive_all(
    flows: Vec<(usize, UdpSocket)>,
    shared: &Shared,
) -> io::Result<Vec<(usize, Outcome)>> {
    let k = shared.pipeline;
    let size = shared.message_size;
    let entries = ((k + 1) * flows.len() + 8)
        .next_power_of_two()
        .clamp(8, 32_768) as u32;
    let ring = IoUring::builder()
        .setup_cqsize(entries * 2)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::builder().setup_cqsize(entries * 2).build(entries))?;
    let now = Instant::now();
    let mut flows: Vec<Flow> = flows
        .into_iter()
        .map(|(id, socket)| Flow {
            id,
            socket,
            base: Pattern::base(id),
            fixed: None,
            slots: vec![
                Slot {
                    seq: 0,
                    sent_at: now,
                    active: false,
                    sending: false,
                };
                k
            ]
            .into_boxed_slice(),
            in_flight: 0,
            next_seq: 0,
            out: vec![0u8; size * k].into_boxed_slice(),
            inbox: vec![0u8; size + 1].into_boxed_slice(),
            recv_in_flight: false,
            answered: vec![0u64; HISTORY as usize].into_boxed_slice(),
            finished: false,
            outcome: Outcome::new(),
        })
        .collect();
    let fds: Vec<RawFd> = flows.iter().map(|f| f.socket.as_raw_fd()).collect();
    for (flow, fixed) in flows
        .iter_mut()
        .zip(super::uring::register_fixed(&ring, &fds))
    {
        flow.fixed = fixed;
    }
    let mut driver = Driver {
        ring,
        shared,
        size,
        pending: 0,
        next_expiry: now + shared.timeout,
    };
    match driver.run(&mut flows) {
        Ok(()) => Ok(flows.into_iter().map(|f| (f.id, f.outcome)).collect()),
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
        let mut done: Vec<(u64, i32)> = Vec::with_capacity(2 * flows.len() + 8);
        let mut measuring = true;
        let mut teardown_end = None;
        loop {
            let now = Instant::now();
            if measuring && (now >= shared.end || shared.halted.load(Ordering::Relaxed)) {
                measuring = false;
                for index in 0..flows.len() {
                    self.finish(flows, index)?;
                }
                teardown_end = Some(now + TEARDOWN);
            }
            if !measuring {
                if self.pending == 0 {
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
                (self.next_expiry.min(shared.end) - now).clamp(Duration::from_micros(10), TICK)
            } else {
                TICK
            };
            let timespec = types::Timespec::from(wait);
            super::uring::submit_and_wait(&self.ring, &timespec)?;
            done.clear();
            done.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result())),
            );
            self.pending -= done.len();
            for &(user_data, result) in &done {
                let index = (user_data >> (SLOT_BITS + 2)) as usize;
                let slot = ((user_data >> 2) & ((1 << SLOT_BITS) - 1)) as usize;
                match user_data & 3 {
                    SEND => self.on_send(flows, index, slot, result)?,
                    RECV => self.on_recv(flows, index, result)?,
                    _ => {} // A cancel's own completion: nothing to do.
                }
            }
        }
    }

    /// Sends a new datagram in every free slot (closed loop: as many in
    /// flight as `--pipeline`), and arms the flow's receive.
    fn fill(&mut self, flows: &mut [Flow], index: usize, now: Instant) -> io::Result<()> {
        let flow = &mut flows[index];
        if flow.finished {
            return Ok(());
        }
        let size = self.size;
        let pattern = &self.shared.pattern;
        let mut slot = 0;
        while flow.in_flight < flow.slots.len() && slot < flow.slots.len() {
            if flow.slots[slot].active || flow.slots[slot].sending {
                slot += 1;
                continue;
            }
            let seq = flow.next_seq;
            flow.next_seq += 1;
            let out = &mut flow.out[slot * size..][..size];
            out[..HEADER].copy_from_slice(&seq.to_le_bytes());
            out[HEADER..].copy_from_slice(
                pattern.at(flow.base.wrapping_add(seq.wrapping_mul(31)), size - HEADER),
            );
            let (ptr, len) = (out.as_ptr(), size as u32);
            let entry = match flow.fixed {
                Some(i) => opcode::Send::new(types::Fixed(i), ptr, len),
                None => opcode::Send::new(flow.fd(), ptr, len),
            }
            .build()
            .user_data(tag(index, slot, SEND));
            flow.slots[slot] = Slot {
                seq,
                sent_at: now,
                active: true,
                sending: true,
            };
            flow.in_flight += 1;
            self.next_expiry = self.next_expiry.min(now + self.shared.timeout);
            // SAFETY: the entry points into `flow.out`, a boxed slice that
            // is neither moved nor freed, nor this slot's part rewritten
            // (`sending`), until the Send completes.
            unsafe { self.push(&entry)? };
        }
        if !flow.recv_in_flight {
            let (ptr, len) = (flow.inbox.as_mut_ptr(), flow.inbox.len() as u32);
            let entry = match flow.fixed {
                Some(i) => opcode::Recv::new(types::Fixed(i), ptr, len),
                None => opcode::Recv::new(flow.fd(), ptr, len),
            }
            .flags(MSG_TRUNC)
            .build()
            .user_data(tag(index, 0, RECV));
            flow.recv_in_flight = true;
            // SAFETY: the entry points into `flow.inbox`, a boxed slice that
            // is neither moved nor freed until the Recv completes.
            unsafe { self.push(&entry)? };
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
        flow.slots[slot].sending = false;
        if flow.finished {
            return Ok(());
        }
        if result >= 0 {
            // A datagram due may have been waiting for this buffer (its slot
            // lost before its Send completed).
            if flow.in_flight < flow.slots.len() {
                return self.fill(flows, index, Instant::now());
            }
            return Ok(());
        }
        let e = io::Error::from_raw_os_error(-result);
        if e.kind() == io::ErrorKind::ConnectionRefused {
            // ICMP port unreachable for an earlier datagram, reported here
            // and not on the receive: this one was not sent. Count it, and
            // send another; the server may come back.
            flow.outcome.note_refused(flow.id, &e);
            if flow.slots[slot].active {
                flow.slots[slot].active = false;
                flow.in_flight -= 1;
            }
            return self.fill(flows, index, Instant::now());
        }
        self.fail(flows, index, e)
    }

    fn on_recv(&mut self, flows: &mut [Flow], index: usize, result: i32) -> io::Result<()> {
        let shared = self.shared;
        let size = self.size;
        let flow = &mut flows[index];
        flow.recv_in_flight = false;
        if flow.finished {
            return Ok(()); // Cancelled, or an echo after the end: not measured.
        }
        if result < 0 {
            let e = io::Error::from_raw_os_error(-result);
            if e.kind() == io::ErrorKind::ConnectionRefused {
                flow.outcome.note_refused(flow.id, &e);
                return self.fill(flows, index, Instant::now());
            }
            return self.fail(flows, index, e);
        }
        let len = result as usize;
        let got = &flow.inbox[..len.min(flow.inbox.len())];
        let outcome = &mut flow.outcome;
        let id = flow.id;
        let Some(header) = got.first_chunk::<HEADER>() else {
            outcome.note_short(id, len, "a datagram shorter than its header");
            return self.fill(flows, index, Instant::now());
        };
        let seq = u64::from_le_bytes(*header);
        let Some(slot) = flow.slots.iter_mut().find(|s| s.active && s.seq == seq) else {
            if seq >= flow.next_seq {
                outcome.note_short(id, len, "a datagram with a sequence number never sent");
            } else if flow.answered[(seq % HISTORY) as usize] == seq + 1 {
                outcome.duplicates += 1;
            } else {
                // Answered after its loss timeout: already counted lost.
                outcome.stale += 1;
            }
            return self.fill(flows, index, Instant::now());
        };
        flow.answered[(seq % HISTORY) as usize] = seq + 1;
        slot.active = false;
        flow.in_flight -= 1;
        let now = Instant::now();
        if len != size {
            outcome.note_short(id, len, "a datagram of the wrong length");
        } else if let Err(diff) = shared.pattern.check(
            flow.base.wrapping_add(seq.wrapping_mul(31)),
            &got[HEADER..],
            HEADER as u64,
        ) {
            outcome.note_mismatch(id, diff, "datagram");
        } else {
            outcome.complete(shared, slot.sent_at, now);
        }
        self.fill(flows, index, now)
    }

    /// Counts every datagram unanswered for the timeout as lost (when sent
    /// inside the measured window), frees its slot for a new one, and finds
    /// the next time one can be lost.
    fn expire(&mut self, flows: &mut [Flow], now: Instant) -> io::Result<()> {
        let shared = self.shared;
        let mut earliest = now;
        for index in 0..flows.len() {
            let flow = &mut flows[index];
            if flow.finished {
                continue;
            }
            let mut freed = false;
            for slot in flow.slots.iter_mut().filter(|s| s.active) {
                if now.duration_since(slot.sent_at) >= shared.timeout {
                    slot.active = false;
                    flow.in_flight -= 1;
                    if slot.sent_at >= shared.measure_start {
                        flow.outcome.lost += 1;
                    }
                    freed = true;
                } else {
                    earliest = earliest.min(slot.sent_at);
                }
            }
            if freed {
                self.fill(flows, index, now)?;
            }
        }
        // Datagrams sent just now (by `fill`) lowered `next_expiry` only to
        // `now + timeout`; the oldest survivor may be due sooner.
        self.next_expiry = earliest + shared.timeout;
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
        let mut targets = Vec::new();
        if flow.recv_in_flight {
            targets.push(tag(index, 0, RECV));
        }
        for (slot, s) in flow.slots.iter().enumerate() {
            if s.sending {
                targets.push(tag(index, slot, SEND));
            }
        }
        for target in targets {
            let entry = opcode::AsyncCancel::new(target)
                .build()
                .user_data(tag(index, 0, CANCEL));
            // SAFETY: a cancel points at no memory.
            unsafe { self.push(&entry)? };
        }
        Ok(())
    }

    fn fail(&mut self, flows: &mut [Flow], index: usize, e: io::Error) -> io::Result<()> {
        let id = flows[index].id;
        flows[index].outcome.end(id, Ending::Io(e));
        self.finish(flows, index)
    }

    /// Queues `entry`, handing the queue to the kernel first when it is
    /// full.
    ///
    /// # Safety
    ///
    /// Whatever memory `entry` points at must stay valid (not moved, not
    /// freed, and not written while the kernel reads it) until its
    /// completion has been reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's promise, passed on.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.pending += 1;
                return Ok(());
            }
            self.ring.submit()?;
        }
    }
}
