//! Batched UDP I/O for the datagram loop (Linux): `recvmmsg(2)` takes up to
//! [`BATCH`] datagrams in one system call and `sendmmsg(2)` sends all their
//! replies in one; replies to one peer of one size go out as a single UDP
//! GSO send (`UDP_SEGMENT`, Linux 4.18+), so the kernel walks its IP output
//! path once for the lot and cuts it into datagrams at the last moment.
//!
//! Nothing is decided here: which replies share a send is [`plan`], a pure
//! function; the guard, the mode, `--once` and what to do on an error stay
//! in the datagram loop (`datagram.rs`).
//!
//! Why `unsafe`: neither std, tokio nor socket2 offers recvmmsg, sendmmsg or
//! a control message on send, so they are called through libc with headers
//! that point at memory. The argument is the same for every call: each
//! header, I/O vector and control buffer is built on the stack of the
//! function that makes the call (so nothing holding a raw pointer outlives
//! it), and points only at memory that function borrows for the whole call
//! (`&mut self` to receive, `&self` to send); every length handed to the
//! kernel is that of the memory it points at; and what the kernel writes
//! back (datagram and address lengths) is clamped to the buffers before
//! anything is read with it. The calls block (the socket is a blocking
//! one, served by a thread of its own), which changes none of this.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr;

/// Datagrams taken by one receive, and so replies sent by one send: as
/// many as the batched C reference (`c_udp_echo PORT 32`).
pub(super) const BATCH: usize = 32;

/// Segments in one GSO send: the kernel's `UDP_MAX_SEGMENTS` since 4.18
/// (later kernels allow more).
const MAX_SEGMENTS: usize = 64;

/// Bytes in one GSO send: the largest UDP payload over IPv4 (one IP
/// packet, before the kernel cuts it), also safe over IPv6.
const MAX_GSO_BYTES: usize = crate::transport::datagram::MAX_UDP_PAYLOAD;

/// Room for the control messages of one datagram, aligned as a `cmsghdr`
/// must be: received, a timestamp (`CMSG_SPACE(16)`, 32 bytes on 64-bit
/// Linux) and a destination (`CMSG_SPACE(20)`, 40); sent, a `UDP_SEGMENT`
/// (24) and a source (40).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 128]);

/// One reply to send: to `peer`, the first `len` bytes of receive slot
/// `slot` (the datagram itself for echo, chargen's text copied over it),
/// from `local` when the socket is bound to a wildcard address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) peer: SocketAddr,
    pub(super) local: Option<Local>,
    pub(super) slot: usize,
    pub(super) len: usize,
}

/// Where a datagram arrived, on a socket bound to a wildcard address
/// (`IP_PKTINFO`, `IPV6_PKTINFO`): its destination address and the
/// interface it came in on. The reply leaves from that address and out of
/// that interface, so a client connected to any of the host's addresses
/// accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Local {
    pub(super) addr: std::net::IpAddr,
    pub(super) ifindex: u32,
}

/// One send: replies `start..end` of the planned order, to one peer, all
/// `seg` bytes long but the last, which may be shorter. A run of one is a
/// plain datagram; a longer one is a GSO send of `seg`-byte segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) seg: usize,
}

impl Run {
    /// Whether this is a GSO send (more than one datagram).
    pub(super) fn is_gso(&self) -> bool {
        self.end - self.start > 1
    }
}

/// Decides which replies share a send. `items` are the replies in the
/// order received, as (peer, length); `order` gets them reordered so that
/// each run in `runs` is contiguous in it.
///
/// A run takes a reply and then the next replies to the same peer, skipping
/// other peers' in between, while each has the run's length (the first
/// one's), up to one shorter reply that ends it, at most [`MAX_SEGMENTS`]
/// and [`MAX_GSO_BYTES`] in all. A reply to that peer that cannot join
/// (longer, empty, or past a limit) ends the run too, so one peer's replies
/// always leave in the order its datagrams came; only replies to different
/// peers are reordered. Replies longer than `max_seg` (0: GSO off) and empty
/// ones are never coalesced: a segment must have bytes, and one longer than
/// the route's MTU allows is refused by the kernel.
///
/// `taken` is scratch space, kept by the caller so that planning a batch
/// allocates nothing.
pub(super) fn plan<P: PartialEq>(
    items: &[(P, usize)],
    max_seg: usize,
    taken: &mut Vec<bool>,
    order: &mut Vec<usize>,
    runs: &mut Vec<Run>,
) {
    order.clear();
    runs.clear();
    taken.clear();
    taken.resize(items.len(), false);
    for first in 0..items.len() {
        if taken[first] {
            continue;
        }
        taken[first] = true;
        let start = order.len();
        order.push(first);
        let (peer, seg) = (&items[first].0, items[first].1);
        if seg > 0 && seg <= max_seg {
            let (mut segments, mut bytes) = (1, seg);
            for next in first + 1..items.len() {
                if taken[next] || items[next].0 != *peer {
                    continue;
                }
                let len = items[next].1;
                if len == 0 || len > seg || segments == MAX_SEGMENTS || bytes + len > MAX_GSO_BYTES
                {
                    break;
                }
                taken[next] = true;
                order.push(next);
                segments += 1;
                bytes += len;
                if len < seg {
                    break;
                }
            }
        }
        runs.push(Run {
            start,
            end: order.len(),
            seg,
        });
    }
}

/// A batch's replies planned into sends, with the space planning needs,
/// kept from batch to batch.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// The replies, reordered so that each run is a stretch of it.
    pub(super) order: Vec<Reply>,
    /// The sends, in the order they go.
    pub(super) runs: Vec<Run>,
    items: Vec<((SocketAddr, Option<Local>), usize)>,
    taken: Vec<bool>,
    indices: Vec<usize>,
}

impl Plan {
    /// Plans `replies` (see [`plan`]).
    pub(super) fn make(&mut self, replies: &[Reply], max_seg: usize) {
        self.items.clear();
        // One send has one source: replies from different local
        // addresses never share one.
        self.items
            .extend(replies.iter().map(|r| ((r.peer, r.local), r.len)));
        plan(
            &self.items,
            max_seg,
            &mut self.taken,
            &mut self.indices,
            &mut self.runs,
        );
        self.order.clear();
        self.order.extend(self.indices.iter().map(|&i| replies[i]));
    }
}

/// What a failed GSO send of `seg`-byte segments says about the next ones:
/// the largest segment still worth coalescing (0: GSO off for good), or
/// `None` when the error is not about GSO (the replies failed as plain
/// datagrams would have).
///
/// EINVAL and EMSGSIZE are what the kernel answers when a segment and its
/// headers exceed the route's MTU (a GSO datagram is never fragmented), so
/// only segments of that size and larger stop being coalesced; EIO (no
/// checksum offload on the way out, or IPsec) and ENOPROTOOPT/EOPNOTSUPP
/// (no UDP GSO) turn it off.
pub(super) fn gso_refused(err: &io::Error, seg: usize) -> Option<usize> {
    match err.raw_os_error()? {
        libc::EINVAL | libc::EMSGSIZE => Some(seg.saturating_sub(1)),
        libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP => Some(0),
        _ => None,
    }
}

/// The largest segment to coalesce on this socket at first: any (the
/// kernel's limits are in [`plan`]) where the kernel knows `UDP_SEGMENT`,
/// else 0 (a kernel older than 4.18 would ignore the control message and
/// send all the segments as one datagram, so it must never see one).
pub(super) fn gso_max_segment(fd: RawFd) -> usize {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a live, writable c_int and `len` holds its size,
    // so the kernel writes at most that many bytes into it; both outlive
    // the call. Any descriptor is safe to pass (a bad one fails).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 { MAX_GSO_BYTES } else { 0 }
}

/// Receive buffers for one socket, allocated once: `slots` datagrams of up
/// to `size` bytes each, with their senders, when each reached the socket,
/// and (on a wildcard-bound socket) where it arrived.
pub(super) struct Batch {
    slots: usize,
    size: usize,
    /// `slots` buffers of `size` bytes, back to back.
    bufs: Box<[u8]>,
    /// Each datagram's sender as the kernel wrote it.
    names: Box<[libc::sockaddr_storage]>,
    name_lens: [libc::socklen_t; BATCH],
    lens: [usize; BATCH],
    /// Each datagram's control messages as the kernel wrote them.
    controls: Box<[Control]>,
    /// When each datagram reached the socket (the kernel's receive
    /// timestamp, nanoseconds of the real-time clock; 0 if none came).
    arrived: [u64; BATCH],
    /// Where each datagram arrived, when the socket asked (wildcard bind).
    local: [Option<Local>; BATCH],
}

/// Asks the kernel for what [`Batch::recv`] reads besides the datagrams:
/// every datagram's receive timestamp (`SO_TIMESTAMPNS`: the loop guard
/// tells a reflection of a reply from a datagram sent before it) and, on
/// a socket bound to a wildcard address, where it arrived (`IP_PKTINFO`,
/// `IPV6_RECVPKTINFO`), so replies leave from there. Returns whether the
/// destination is asked for.
pub(super) fn enable_control(fd: RawFd, local: SocketAddr) -> io::Result<bool> {
    let on: libc::c_int = 1;
    let set = |level, name| -> io::Result<()> {
        // SAFETY: `on` is a live c_int and the length given is its size;
        // the kernel only reads it. Any descriptor is safe to pass.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)?;
    if !local.ip().is_unspecified() {
        return Ok(false);
    }
    match local {
        SocketAddr::V4(_) => set(libc::IPPROTO_IP, libc::IP_PKTINFO)?,
        SocketAddr::V6(_) => {
            set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
            // A dual-stack socket (handed over by inetd or systemd) gets
            // IPv4 datagrams too; for those the kernel gives IP_PKTINFO.
            let _ = set(libc::IPPROTO_IP, libc::IP_PKTINFO);
        }
    }
    Ok(true)
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slots", &self.slots)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Room for `slots` (1 to [`BATCH`]) datagrams of `size` bytes. The
    /// buffers are zeroed lazily by the allocator: pages no datagram
    /// reaches are never touched.
    pub(super) fn new(slots: usize, size: usize) -> Batch {
        let slots = slots.clamp(1, BATCH);
        // SAFETY: `sockaddr_storage` is a C struct of integers, for which
        // all zero bytes are a valid value.
        let empty: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        Batch {
            slots,
            size,
            bufs: vec![0u8; slots * size].into_boxed_slice(),
            names: vec![empty; slots].into_boxed_slice(),
            name_lens: [0; BATCH],
            lens: [0; BATCH],
            controls: vec![Control([0; 128]); slots].into_boxed_slice(),
            arrived: [0; BATCH],
            local: [None; BATCH],
        }
    }

    /// Receives up to `slots` datagrams on a blocking socket: with `wait`,
    /// waits for the first (up to the socket's receive timeout, then
    /// `WouldBlock`), else takes only what is there (`WouldBlock` when
    /// nothing is); either way takes those already waiting behind the
    /// first (`MSG_WAITFORONE`). Returns how many came. A datagram longer
    /// than `size` is cut, as recvfrom(2) cuts it.
    pub(super) fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        let mut iovs = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: `mmsghdr` is a C struct of integers and pointers, for
        // which all zero bytes (null pointers, zero lengths) are valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let iov_base = iovs.as_mut_ptr();
        let buf_base = self.bufs.as_mut_ptr();
        let name_base = self.names.as_mut_ptr();
        let control_base = self.controls.as_mut_ptr();
        for (i, (iov, hdr)) in iovs.iter_mut().zip(&mut hdrs).enumerate() {
            if i == self.slots {
                break;
            }
            *iov = libc::iovec {
                iov_base: buf_base.wrapping_add(i * self.size).cast(),
                iov_len: self.size,
            };
            hdr.msg_hdr.msg_name = name_base.wrapping_add(i).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov_base.wrapping_add(i);
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = control_base.wrapping_add(i).cast();
            hdr.msg_hdr.msg_controllen = size_of::<Control>() as _;
        }
        // SAFETY: the first `slots` headers each point at one I/O vector,
        // one address slot and one control buffer of their own, and each
        // vector at `size` bytes of `bufs` of its own (slot i at offset
        // i * size, within the slots * size bytes allocated); `&mut self`
        // keeps those buffers borrowed, and `iovs` and `hdrs` live on this
        // stack, until the call returns. The kernel writes only within the
        // lengths given.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                self.slots as libc::c_uint,
                (libc::MSG_WAITFORONE | if wait { 0 } else { libc::MSG_DONTWAIT }) as _,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(self.slots);
        for (i, hdr) in hdrs.iter().take(n).enumerate() {
            self.lens[i] = (hdr.msg_len as usize).min(self.size);
            self.name_lens[i] = hdr
                .msg_hdr
                .msg_namelen
                .min(size_of::<libc::sockaddr_storage>() as libc::socklen_t);
            let (arrived, local) = read_control(&hdr.msg_hdr);
            self.arrived[i] = arrived;
            self.local[i] = local;
        }
        Ok(n)
    }

    /// When datagram `slot` of the last receive reached the socket
    /// (nanoseconds of the real-time clock), if the kernel said.
    pub(super) fn arrived(&self, slot: usize) -> Option<u64> {
        (self.arrived[slot] != 0).then_some(self.arrived[slot])
    }

    /// Where datagram `slot` of the last receive arrived, when asked.
    pub(super) fn local(&self, slot: usize) -> Option<Local> {
        self.local[slot]
    }

    /// The bytes of datagram `slot` of the last receive.
    pub(super) fn datagram(&self, slot: usize) -> &[u8] {
        &self.bufs[slot * self.size..][..self.lens[slot]]
    }

    /// The bytes of the reply planned for `reply`.
    pub(super) fn reply_bytes(&self, reply: &Reply) -> &[u8] {
        &self.bufs[reply.slot * self.size..][..reply.len]
    }

    /// Asks `service` for its reply to datagram `slot`, written over the
    /// datagram in place: the reply's length, or `None` for no reply.
    pub(super) fn reply(
        &mut self,
        slot: usize,
        service: &dyn crate::service::Service,
    ) -> Option<usize> {
        let buf = &mut self.bufs[slot * self.size..][..self.size];
        service
            .reply(buf, self.lens[slot])
            .map(|len| len.min(self.size))
    }

    /// The sender of datagram `slot` of the last receive; `None` if it is
    /// not an IP address (not on a UDP socket).
    pub(super) fn peer(&self, slot: usize) -> Option<SocketAddr> {
        let storage: *const libc::sockaddr_storage = &self.names[slot];
        let len = self.name_lens[slot] as usize;
        match libc::c_int::from(self.names[slot].ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a `sockaddr_in` here (its family
                // says so and its length covers one); `sockaddr_storage` is
                // larger than and aligned for every socket address.
                let sin = unsafe { &*storage.cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a `sockaddr_in6`.
                let sin6 = unsafe { &*storage.cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Sends `runs` (at most [`BATCH`] of them; each names a stretch of
    /// `order`, itself replies of the last receive) in one sendmmsg, each
    /// to the address its first datagram came from, and from the address
    /// it arrived at when the socket is bound to a wildcard: how many runs
    /// went (at least one), or the error of the first, which did not
    /// (`WouldBlock` once a blocking socket's send timeout passes with no
    /// room).
    pub(super) fn send(&self, fd: RawFd, order: &[Reply], runs: &[Run]) -> io::Result<usize> {
        let Some(first) = runs.first().map(|r| r.start) else {
            return Ok(0);
        };
        // As many runs as have all their datagrams within BATCH I/O vectors
        // (all of a batch's replies always do).
        let fit = runs.iter().take_while(|r| r.end - first <= BATCH).count();
        let runs = &runs[..fit.min(BATCH)];
        let Some(last) = runs.last() else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let order = &order[first..last.end];
        let mut iovs = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        for (iov, reply) in iovs.iter_mut().zip(order) {
            let buf = &self.bufs[reply.slot * self.size..][..reply.len];
            // The kernel only reads a send's buffers: the cast to `*mut`
            // is what the C type asks for, not a licence to write.
            *iov = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
        }
        // SAFETY: as in `recv`: plain C data, all zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut controls = [Control([0; 128]); BATCH];
        let iov_base = iovs.as_mut_ptr();
        for ((hdr, control), run) in hdrs.iter_mut().zip(&mut controls).zip(runs) {
            let reply = &order[run.start - first];
            let slot = reply.slot;
            let name: *const libc::sockaddr_storage = &self.names[slot];
            hdr.msg_hdr.msg_name = name.cast_mut().cast();
            hdr.msg_hdr.msg_namelen = self.name_lens[slot];
            hdr.msg_hdr.msg_iov = iov_base.wrapping_add(run.start - first);
            hdr.msg_hdr.msg_iovlen = (run.end - run.start) as _;
            let segment = run.is_gso().then_some(run.seg as u16);
            write_control(&mut hdr.msg_hdr, control, segment, reply.local);
        }
        // SAFETY: each of the first `runs.len()` headers points at an
        // address in `self.names` with its length as the kernel gave it,
        // at `end - start` I/O vectors of `iovs`, each at `len` bytes of
        // `bufs` (within its slot, as `len <= size`), and for a GSO run at
        // its control buffer; `&self` keeps `names` and `bufs` borrowed, and
        // `iovs`, `hdrs` and `controls` live on this stack, until the call
        // returns. The kernel only reads them (and writes `msg_len`).
        let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), runs.len() as libc::c_uint, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Reads a received datagram's control messages: its receive timestamp
/// (nanoseconds of the real-time clock, 0 if none) and where it arrived.
fn read_control(msg: &libc::msghdr) -> (u64, Option<Local>) {
    let mut arrived = 0;
    let mut local = None;
    // SAFETY: `msg` is a header the kernel just filled: `msg_control`
    // points at our control buffer and `msg_controllen` says how much of it
    // the kernel wrote, so CMSG_FIRSTHDR/CMSG_NXTHDR walk only within it;
    // each message's data is read unaligned, after checking its level, type
    // and length say it holds the struct read.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            let len = (*cmsg).cmsg_len as usize;
            let holds = |size: usize| len >= libc::CMSG_LEN(size as libc::c_uint) as usize;
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) if holds(size_of::<libc::timespec>()) => {
                    let ts = ptr::read_unaligned(data.cast::<libc::timespec>());
                    arrived = (ts.tv_sec as u64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add(ts.tv_nsec as u64);
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if holds(size_of::<libc::in_pktinfo>()) => {
                    let info = ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    local = Some(Local {
                        addr: Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()).into(),
                        ifindex: info.ipi_ifindex as u32,
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if holds(size_of::<libc::in6_pktinfo>()) =>
                {
                    let info = ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    local = Some(Local {
                        addr: Ipv6Addr::from(info.ipi6_addr.s6_addr).into(),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    (arrived, local)
}

/// Writes a send's control messages into `control` and points `msg` at
/// them: the GSO segment size, and the source address and interface.
fn write_control(
    msg: &mut libc::msghdr,
    control: &mut Control,
    segment: Option<u16>,
    local: Option<Local>,
) {
    if segment.is_none() && local.is_none() {
        return;
    }
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<Control>() as _;
    let mut used = 0usize;
    // SAFETY: `control` is 128 bytes, 8-aligned and zeroed, which holds a
    // UDP_SEGMENT message (CMSG_SPACE(2) = 24) and a source one (at most
    // CMSG_SPACE(20) = 40); CMSG_FIRSTHDR/CMSG_NXTHDR step through it as
    // `msg_controllen` (the whole buffer, zeroed) allows, each data block
    // written unaligned within its message. `msg_controllen` is then cut to
    // what was written; the buffer outlives the send (the caller's stack).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        let mut put = |level: libc::c_int, kind: libc::c_int, data: &[u8]| {
            if cmsg.is_null() {
                return;
            }
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data.len() as libc::c_uint) as _;
            ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(cmsg), data.len());
            used += libc::CMSG_SPACE(data.len() as libc::c_uint) as usize;
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        };
        if let Some(segment) = segment {
            put(libc::SOL_UDP, libc::UDP_SEGMENT, &segment.to_ne_bytes());
        }
        match local.map(|l| (l.addr, l.ifindex)) {
            Some((std::net::IpAddr::V4(addr), ifindex)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: ifindex as libc::c_int,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(addr.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                put(libc::IPPROTO_IP, libc::IP_PKTINFO, as_bytes(&info));
            }
            Some((std::net::IpAddr::V6(addr), ifindex)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: addr.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                put(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, as_bytes(&info));
            }
            None => {}
        }
    }
    msg.msg_controllen = used as _;
}

/// A C struct's bytes.
fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: `T` is one of libc's plain structs of integers (no padding
    // is read as anything but bytes the kernel ignores); the slice covers
    // exactly the value and borrows it.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans `items` and returns each run as the (peer, length) pairs it
    /// sends, with its segment size.
    fn runs(items: &[(char, usize)], max_seg: usize) -> Vec<(usize, Vec<(char, usize)>)> {
        let (mut taken, mut order, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        plan(items, max_seg, &mut taken, &mut order, &mut runs);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..items.len()).collect::<Vec<_>>(),
            "every reply exactly once"
        );
        assert_eq!(runs.first().map_or(0, |r| r.start), 0);
        assert_eq!(runs.last().map_or(0, |r| r.end), order.len());
        assert!(runs.windows(2).all(|w| w[0].end == w[1].start));
        runs.iter()
            .map(|r| {
                (
                    r.seg,
                    order[r.start..r.end].iter().map(|&i| items[i]).collect(),
                )
            })
            .collect()
    }

    const ANY: usize = MAX_GSO_BYTES;

    #[test]
    fn same_peer_same_size_is_one_send() {
        let items = [('a', 64); 5];
        assert_eq!(runs(&items, ANY), vec![(64, vec![('a', 64); 5])]);
    }

    #[test]
    fn a_shorter_reply_ends_a_run_and_a_longer_one_starts_the_next() {
        let items = [
            ('a', 64),
            ('a', 64),
            ('a', 30),
            ('a', 64),
            ('a', 100),
            ('a', 100),
        ];
        assert_eq!(
            runs(&items, ANY),
            vec![
                (64, vec![('a', 64), ('a', 64), ('a', 30)]),
                (64, vec![('a', 64)]),
                (100, vec![('a', 100), ('a', 100)]),
            ]
        );
    }

    #[test]
    fn peers_are_never_mixed_and_each_keeps_its_order() {
        let items = [
            ('a', 10),
            ('b', 10),
            ('a', 10),
            ('b', 10),
            ('c', 7),
            ('a', 9),
        ];
        assert_eq!(
            runs(&items, ANY),
            vec![
                (10, vec![('a', 10), ('a', 10), ('a', 9)]),
                (10, vec![('b', 10), ('b', 10)]),
                (7, vec![('c', 7)]),
            ]
        );
        // A reply of a's that cannot join stops the run: a's third reply
        // must not overtake its second.
        let items = [('a', 10), ('b', 5), ('a', 20), ('a', 10)];
        assert_eq!(
            runs(&items, ANY),
            vec![
                (10, vec![('a', 10)]),
                (5, vec![('b', 5)]),
                (20, vec![('a', 20), ('a', 10)]),
            ]
        );
    }

    #[test]
    fn empty_replies_travel_alone() {
        let items = [('a', 0), ('a', 0), ('a', 5), ('a', 0), ('a', 5)];
        assert_eq!(
            runs(&items, ANY),
            vec![
                (0, vec![('a', 0)]),
                (0, vec![('a', 0)]),
                (5, vec![('a', 5)]),
                (0, vec![('a', 0)]),
                (5, vec![('a', 5)]),
            ]
        );
    }

    #[test]
    fn limits_split_runs() {
        // Segments.
        let items = vec![('a', 1); MAX_SEGMENTS + 3];
        let got = runs(&items, ANY);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), MAX_SEGMENTS);
        assert_eq!(got[1].1.len(), 3);
        // Bytes: 46 x 1400 = 64,400 fits, a 47th would not.
        let items = vec![('a', 1400); 50];
        let got = runs(&items, ANY);
        assert_eq!(got[0].1.len(), 46);
        assert_eq!(got[1].1.len(), 4);
        // Two maximal datagrams never share a send.
        let items = [('a', MAX_GSO_BYTES); 2];
        assert_eq!(runs(&items, ANY).len(), 2);
    }

    #[test]
    fn max_seg_caps_or_disables_coalescing() {
        let items = [('a', 1400), ('a', 1400), ('a', 500), ('a', 500)];
        assert_eq!(
            runs(&items, 1000),
            vec![
                (1400, vec![('a', 1400)]),
                (1400, vec![('a', 1400)]),
                (500, vec![('a', 500), ('a', 500)]),
            ]
        );
        assert!(runs(&items, 0).iter().all(|(_, r)| r.len() == 1));
    }

    #[test]
    fn a_plan_carries_each_reply_whole() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:5001".parse().unwrap(),
        );
        let reply = |peer, slot, len| Reply {
            peer,
            local: None,
            slot,
            len,
        };
        let replies = [
            reply(a, 0, 8),
            reply(b, 1, 8),
            reply(a, 2, 8),
            reply(a, 3, 3),
        ];
        let mut plan = Plan::default();
        plan.make(&replies, ANY);
        assert_eq!(
            plan.order,
            vec![replies[0], replies[2], replies[3], replies[1]]
        );
        assert_eq!(
            plan.runs,
            vec![
                Run {
                    start: 0,
                    end: 3,
                    seg: 8
                },
                Run {
                    start: 3,
                    end: 4,
                    seg: 8
                },
            ]
        );
        assert!(plan.runs[0].is_gso() && !plan.runs[1].is_gso());
    }

    #[test]
    fn gso_errors_lower_or_end_coalescing() {
        let err = |code| io::Error::from_raw_os_error(code);
        assert_eq!(gso_refused(&err(libc::EINVAL), 1400), Some(1399));
        assert_eq!(gso_refused(&err(libc::EMSGSIZE), 9000), Some(8999));
        assert_eq!(gso_refused(&err(libc::EIO), 64), Some(0));
        assert_eq!(gso_refused(&err(libc::ENOPROTOOPT), 64), Some(0));
        assert_eq!(gso_refused(&err(libc::ENOBUFS), 64), None);
        assert_eq!(gso_refused(&err(libc::EPERM), 64), None);
    }
}
