//! The kernel's socket diagnostics: what it says about TCP sockets that
//! have no descriptor to ask. A handshake under way is a request socket
//! until `accept`, and a connection closed first on this side lives on in
//! a TIME_WAIT mini-socket after `close`; `getsockopt(TCP_INFO)` sees
//! neither, `ss -tan` does. This is what `ss` asks: `inet_diag` requests on
//! a `NETLINK_SOCK_DIAG` socket (`include/uapi/linux/inet_diag.h`,
//! `sock_diag(7)`).
//!
//! The requests and replies are a few fixed C structs, laid out here by
//! hand over socket2's safe socket calls: no `unsafe` and no netlink crate
//! for three questions (is it there, which connections wait on a
//! listener, where is this 4-tuple now). [`encode`] and [`decode`] are pure and
//! tested on bytes; the functions that ask the kernel open a socket per
//! question, so the tracer holds no descriptor between questions.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::tcp_info::{CLOSE_WAIT, ESTABLISHED, LISTEN, NEW_SYN_RECV, SYN_RECV};

/// `SOCK_DIAG_BY_FAMILY` (`linux/sock_diag.h`): the one request type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `nlmsghdr` flags (`linux/netlink.h`).
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// `nlmsghdr` types the kernel answers with besides ours.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `sizeof(struct nlmsghdr)`: len u32, type u16, flags u16, seq u32, pid u32.
const HEADER: usize = 16;
/// `sizeof(struct inet_diag_sockid)`: sport, dport (big-endian u16), src and
/// dst (16 bytes each, an IPv4 address in the first 4), interface u32,
/// cookie (two u32).
const SOCKID: usize = 48;
/// `sizeof(struct inet_diag_req_v2)`: family, protocol, extensions, pad,
/// states (u32), then the socket id.
const REQUEST: usize = 8 + SOCKID;
/// `sizeof(struct inet_diag_msg)`: family, state, timer, retransmits, the
/// socket id, then expires, rqueue, wqueue, uid, inode (u32 each).
const MESSAGE: usize = 4 + SOCKID + 20;
/// `INET_DIAG_NOCOOKIE`: any socket with the addresses asked for.
const NO_COOKIE: [u8; 8] = [0xff; 8];
/// `AF_INET`, `AF_INET6` and `IPPROTO_TCP` as Linux numbers them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
/// `ENOENT`, `ESTALE`: an exact lookup found no socket, or another socket
/// than the one whose cookie we gave (the 4-tuple was reused).
const ENOENT: i32 = 2;
const ESTALE: i32 = 116;

/// How long the kernel may take to answer before we give up on it: it
/// answers from memory, in microseconds, so this only bounds a kernel
/// that misbehaves.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// A receive buffer larger than any one dump batch (the kernel caps its
/// batches at 32 KiB): a shorter one would truncate a batch.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A TCP socket as the kernel's diagnostics describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DiagSocket {
    /// The kernel's state number (`include/net/tcp_states.h`); a request
    /// socket reads SYN_RECV, a TIME_WAIT mini-socket TIME_WAIT (or
    /// FIN_WAIT2 when it stands in for an orphaned FIN_WAIT2).
    pub(super) state: u8,
    /// This side's address (an IPv4-mapped IPv6 address as IPv4).
    pub(super) local: SocketAddr,
    /// The other side's address (likewise).
    pub(super) remote: SocketAddr,
    /// Milliseconds until the socket's timer fires, when one runs: the
    /// next SYN-ACK of a handshake, the end of TIME_WAIT, a retransmission.
    pub(super) timer_ms: Option<u32>,
    /// Retransmissions: for a request socket, SYN-ACKs sent again.
    pub(super) retransmits: u8,
    /// The socket's cookie, as the kernel wrote it: it names this one
    /// socket (and the TIME_WAIT mini-socket that takes over from it), so
    /// a later connection with the same 4-tuple is not taken for it.
    pub(super) cookie: [u8; 8],
    /// The inode of the socket's file, 0 while it has none: a connection
    /// waiting in a listener's accept queue (or a request socket).
    pub(super) inode: u32,
}

/// Where an exact lookup found a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lookup {
    /// In the kernel's tables, in this state.
    Found(DiagSocket),
    /// No longer in the kernel's tables (or its 4-tuple now belongs to
    /// another socket).
    Gone,
}

/// What a request asks for, in `inet_diag_req_v2`'s terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ask {
    /// A dump of every matching socket, or the one socket with this id.
    dump: bool,
    family: u8,
    /// A bit per state (`1 << state`) a dump returns.
    states: u32,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    cookie: [u8; 8],
}

/// One message of the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Socket(DiagSocket),
    /// The end of a dump.
    Done,
    /// An error (a positive errno), or 0 for an acknowledgement.
    Error(i32),
}

/// Whether the kernel answers socket-diagnostic requests for TCP here: a
/// dump of the listening sockets, as `ss -tln` asks. `Err` says why not,
/// in words, for the one trace line that says so.
pub(super) fn probe() -> Result<(), String> {
    let ask = Ask {
        dump: true,
        family: AF_INET,
        states: 1 << LISTEN,
        local: None,
        remote: None,
        cookie: NO_COOKIE,
    };
    match exchange(&ask) {
        Ok(replies) => match first_error(&replies) {
            None => Ok(()),
            Some(errno) => Err(format!(
                "the kernel refused an inet_diag request: {}",
                crate::error::reason(&io::Error::from_raw_os_error(errno))
            )),
        },
        Err(Failure::Open(e)) => Err(format!(
            "cannot open a NETLINK_SOCK_DIAG socket: {}",
            crate::error::reason(&e)
        )),
        Err(Failure::Exchange(e)) => Err(format!(
            "no answer to an inet_diag request: {}",
            crate::error::reason(&e)
        )),
    }
}

/// The connections that wait on the listener bound to `listener`, whose
/// local port is the listener's (and whose local address is, unless it
/// listens on every address): handshakes under way (request sockets, in
/// SYN_RECV) and connections in its accept queue (ESTABLISHED or
/// CLOSE_WAIT, with no file yet). A dual-stack IPv6 listener is asked
/// about IPv4 connections too.
///
/// The kernel walks its whole table of connections for this (request
/// sockets hang off no listener): milliseconds on a large table, so
/// callers ask at a measured pace.
pub(super) fn waiting(listener: SocketAddr, dual_stack: bool) -> io::Result<Vec<DiagSocket>> {
    let families: &[u8] = match listener {
        SocketAddr::V4(_) => &[AF_INET],
        SocketAddr::V6(_) if dual_stack => &[AF_INET6, AF_INET],
        SocketAddr::V6(_) => &[AF_INET6],
    };
    let wanted = canonical(listener);
    let mut found = Vec::new();
    for &family in families {
        let ask = Ask {
            dump: true,
            family,
            // The kernel keeps request sockets as NEW_SYN_RECV and reports
            // them as SYN_RECV; either bit asks for them.
            states: 1 << SYN_RECV | 1 << NEW_SYN_RECV | 1 << ESTABLISHED | 1 << CLOSE_WAIT,
            // The kernel skips sockets on other local ports itself.
            local: Some(SocketAddr::new(unspecified(family), wanted.port())),
            remote: None,
            cookie: NO_COOKIE,
        };
        let replies = exchange(&ask).map_err(Failure::into_io)?;
        if let Some(errno) = first_error(&replies) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        found.extend(replies.into_iter().filter_map(|reply| match reply {
            // An accepted connection has a file: not waiting any more.
            Reply::Socket(s)
                if s.local.port() == wanted.port()
                    && (wanted.ip().is_unspecified() || s.local.ip() == wanted.ip())
                    && (s.state == SYN_RECV || s.inode == 0) =>
            {
                Some(s)
            }
            _ => None,
        }));
    }
    Ok(found)
}

/// Where the connection from `local` to `remote` is now: the socket with
/// `cookie` when one is given (see [`DiagSocket::cookie`]), any socket
/// with that 4-tuple otherwise.
pub(super) fn lookup(
    local: SocketAddr,
    remote: SocketAddr,
    cookie: Option<[u8; 8]>,
) -> io::Result<Lookup> {
    let (local, remote) = (canonical(local), canonical(remote));
    let family = if local.is_ipv4() && remote.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    };
    let ask = Ask {
        dump: false,
        family,
        states: u32::MAX,
        local: Some(local),
        remote: Some(remote),
        cookie: cookie.unwrap_or(NO_COOKIE),
    };
    let replies = exchange(&ask).map_err(Failure::into_io)?;
    for reply in replies {
        match reply {
            // Where no connection has the 4-tuple, the kernel's lookup
            // falls back to a listener on the local port: not ours.
            Reply::Socket(s) if s.local == local && s.remote == remote && s.state != LISTEN => {
                return Ok(Lookup::Found(s));
            }
            Reply::Socket(_) => return Ok(Lookup::Gone),
            Reply::Error(ENOENT | ESTALE) => return Ok(Lookup::Gone),
            Reply::Error(0) | Reply::Done => {}
            Reply::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
    Ok(Lookup::Gone)
}

/// Why an exchange with the kernel failed: no socket at all, or a socket
/// that would not carry the request.
enum Failure {
    Open(io::Error),
    Exchange(io::Error),
}

impl Failure {
    fn into_io(self) -> io::Error {
        match self {
            Failure::Open(e) | Failure::Exchange(e) => e,
        }
    }
}

/// Sends one request on a socket of its own and reads the whole answer:
/// up to the end of a dump, or the one message of an exact lookup.
#[cfg(target_os = "linux")]
fn exchange(ask: &Ask) -> Result<Vec<Reply>, Failure> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(libc::NETLINK_SOCK_DIAG)),
    )
    .map_err(Failure::Open)?;
    let exchange = || -> io::Result<Vec<Reply>> {
        socket.set_read_timeout(Some(ANSWER_WAIT))?;
        // No address: a netlink socket sends to the kernel by default.
        socket.send(&encode(ask))?;
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        let mut replies = Vec::new();
        loop {
            let n = (&socket).read(&mut buf)?;
            let before = replies.len();
            decode(&buf[..n], &mut replies)?;
            let ended = replies[before..]
                .iter()
                .any(|r| matches!(r, Reply::Done | Reply::Error(_)));
            if ended || !ask.dump {
                return Ok(replies);
            }
        }
    };
    exchange().map_err(Failure::Exchange)
}

/// Socket diagnostics are Linux's.
#[cfg(not(target_os = "linux"))]
fn exchange(_ask: &Ask) -> Result<Vec<Reply>, Failure> {
    Err(Failure::Open(io::Error::new(
        io::ErrorKind::Unsupported,
        "sock_diag is Linux's",
    )))
}

fn first_error(replies: &[Reply]) -> Option<i32> {
    replies.iter().find_map(|reply| match reply {
        Reply::Error(errno) if *errno != 0 => Some(*errno),
        _ => None,
    })
}

/// The request as the kernel reads it: an `nlmsghdr`, then an
/// `inet_diag_req_v2`. Host byte order but for ports and addresses.
fn encode(ask: &Ask) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + REQUEST);
    let flags = NLM_F_REQUEST | if ask.dump { NLM_F_DUMP } else { 0 };
    b.extend_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes()); // sequence: one request per socket
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id 0: the kernel
    // Family, protocol, no extension attributes, padding.
    b.extend_from_slice(&[ask.family, IPPROTO_TCP, 0, 0]);
    b.extend_from_slice(&ask.states.to_ne_bytes());
    let port = |a: Option<SocketAddr>| a.map_or(0, |a| a.port());
    b.extend_from_slice(&port(ask.local).to_be_bytes());
    b.extend_from_slice(&port(ask.remote).to_be_bytes());
    b.extend_from_slice(&address_bytes(ask.local));
    b.extend_from_slice(&address_bytes(ask.remote));
    b.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    b.extend_from_slice(&ask.cookie);
    b
}

/// An address as `inet_diag_sockid` holds it: 16 bytes, an IPv4 address in
/// the first 4.
fn address_bytes(addr: Option<SocketAddr>) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    match addr.map(|a| a.ip()) {
        Some(IpAddr::V4(ip)) => bytes[..4].copy_from_slice(&ip.octets()),
        Some(IpAddr::V6(ip)) => bytes = ip.octets(),
        None => {}
    }
    bytes
}

/// The messages of one datagram of the kernel's answer, appended to
/// `replies`; messages of other types (no-ops) are skipped. A message
/// that does not fit its own length is an error, never a guess.
fn decode(mut buf: &[u8], replies: &mut Vec<Reply>) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("inet_diag: {what}"));
    while buf.len() >= HEADER {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < HEADER || len > buf.len() {
            return Err(bad("a message longer than its datagram"));
        }
        let payload = &buf[HEADER..len];
        match kind {
            NLMSG_DONE => replies.push(Reply::Done),
            NLMSG_ERROR => {
                let code = payload
                    .get(0..4)
                    .ok_or_else(|| bad("a short error message"))?;
                // The kernel sends a negative errno.
                let code = i32::from_ne_bytes(code.try_into().unwrap());
                replies.push(Reply::Error(code.saturating_neg()));
            }
            SOCK_DIAG_BY_FAMILY => {
                let socket = socket(payload).ok_or_else(|| bad("a short socket message"))?;
                replies.push(Reply::Socket(socket));
            }
            _ => {}
        }
        // Messages are padded to 4 bytes (NLMSG_ALIGN).
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or_default();
    }
    Ok(())
}

/// An `inet_diag_msg` (its attributes, which we did not ask for, are
/// ignored).
fn socket(p: &[u8]) -> Option<DiagSocket> {
    if p.len() < MESSAGE {
        return None;
    }
    let family = p[0];
    let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    let address = |at: usize| -> Option<IpAddr> {
        let bytes = &p[at..at + 16];
        match family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(bytes).ok()?,
            ))),
            _ => None,
        }
    };
    let local = canonical(SocketAddr::new(address(8)?, port(4)));
    let remote = canonical(SocketAddr::new(address(24)?, port(6)));
    let timer = p[2];
    let expires = u32::from_ne_bytes(p[52..56].try_into().ok()?);
    Some(DiagSocket {
        state: p[1],
        local,
        remote,
        timer_ms: (timer != 0).then_some(expires),
        retransmits: p[3],
        cookie: p[44..52].try_into().ok()?,
        inode: u32::from_ne_bytes(p[68..72].try_into().ok()?),
    })
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) as the
/// IPv4 address it is, so that both sides of a comparison agree.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn unspecified(family: u8) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// An answer as the kernel would send it: a header, then `payload`.
    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HEADER + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    /// An `inet_diag_msg` for an IPv4 socket.
    fn diag_msg(state: u8, timer: u8, local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
        let mut p = vec![AF_INET, state, timer, 2];
        p.extend_from_slice(&local.port().to_be_bytes());
        p.extend_from_slice(&remote.port().to_be_bytes());
        p.extend_from_slice(&address_bytes(Some(local)));
        p.extend_from_slice(&address_bytes(Some(remote)));
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        p.extend_from_slice(&59_000u32.to_ne_bytes()); // expires
        p.extend_from_slice(&[0; 12]); // rqueue, wqueue, uid
        p.extend_from_slice(&77u32.to_ne_bytes()); // inode
        p.extend_from_slice(&[8, 0, 5, 0, 1, 0, 0, 0]); // an attribute
        p
    }

    #[test]
    fn a_request_is_laid_out_as_inet_diag_req_v2() {
        let ask = Ask {
            dump: false,
            family: AF_INET,
            states: u32::MAX,
            local: Some(addr("127.0.0.1:9999")),
            remote: Some(addr("127.0.0.2:51282")),
            cookie: NO_COOKIE,
        };
        let b = encode(&ask);
        assert_eq!(b.len(), 72);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 20);
        assert_eq!(
            u16::from_ne_bytes(b[6..8].try_into().unwrap()),
            NLM_F_REQUEST
        );
        assert_eq!(&b[16..20], &[AF_INET, IPPROTO_TCP, 0, 0]);
        // Ports in network byte order, then the addresses.
        assert_eq!(&b[24..26], &9999u16.to_be_bytes());
        assert_eq!(&b[26..28], &51282u16.to_be_bytes());
        assert_eq!(&b[28..32], &[127, 0, 0, 1]);
        assert_eq!(&b[44..48], &[127, 0, 0, 2]);
        assert_eq!(&b[64..72], &NO_COOKIE);
        let dump = encode(&Ask { dump: true, ..ask });
        assert_eq!(
            u16::from_ne_bytes(dump[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_DUMP
        );
    }

    #[test]
    fn an_answer_decodes_into_sockets_errors_and_the_end() {
        let (local, remote) = (addr("127.0.0.1:9999"), addr("127.0.0.1:40000"));
        let mut answer = message(SOCK_DIAG_BY_FAMILY, &diag_msg(6, 3, local, remote));
        answer.extend(message(1, &[])); // a no-op, skipped
        answer.extend(message(NLMSG_ERROR, &(-2i32).to_ne_bytes()));
        answer.extend(message(NLMSG_DONE, &0u32.to_ne_bytes()));
        let mut replies = Vec::new();
        decode(&answer, &mut replies).unwrap();
        assert_eq!(
            replies,
            [
                Reply::Socket(DiagSocket {
                    state: 6,
                    local,
                    remote,
                    timer_ms: Some(59_000),
                    retransmits: 2,
                    cookie: [1, 2, 3, 4, 5, 6, 7, 8],
                    inode: 77,
                }),
                Reply::Error(ENOENT),
                Reply::Done,
            ]
        );
    }

    #[test]
    fn a_socket_without_a_timer_has_no_timer_ms() {
        let (local, remote) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let mut replies = Vec::new();
        decode(
            &message(SOCK_DIAG_BY_FAMILY, &diag_msg(1, 0, local, remote)),
            &mut replies,
        )
        .unwrap();
        let Reply::Socket(s) = &replies[0] else {
            panic!("{replies:?}")
        };
        assert_eq!(s.timer_ms, None);
    }

    #[test]
    fn truncated_answers_are_errors_not_guesses() {
        let (local, remote) = (addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        let whole = message(SOCK_DIAG_BY_FAMILY, &diag_msg(1, 0, local, remote));
        let mut replies = Vec::new();
        // A header claiming more than the datagram holds.
        assert!(decode(&whole[..40], &mut replies).is_err());
        // A socket message shorter than inet_diag_msg.
        let short = message(SOCK_DIAG_BY_FAMILY, &[AF_INET, 1, 0, 0]);
        assert!(decode(&short, &mut replies).is_err());
        assert!(replies.is_empty());
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        assert_eq!(canonical(addr("[::ffff:127.0.0.1]:9")), addr("127.0.0.1:9"));
        assert_eq!(canonical(addr("[::1]:9")), addr("[::1]:9"));
    }

    /// The kernel's own answers (Linux, where sock_diag is there): a
    /// connection is found by its 4-tuple while it lives, and gone once it
    /// is closed on both sides.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_finds_a_live_connection_by_its_4_tuple() {
        if let Err(why) = probe() {
            eprintln!("note: {why}; skipping");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let Lookup::Found(found) = lookup(local, remote, None).unwrap() else {
            panic!("the client's socket is not found");
        };
        assert_eq!(found.state, 1, "ESTABLISHED: {found:?}");
        assert_eq!((found.local, found.remote), (local, remote));
        // Accepted, its server side has a file: not waiting on the
        // listener any more.
        let listening = listener.local_addr().unwrap();
        assert!(waiting(listening, false).unwrap().is_empty());
        let cookie = Some(found.cookie);
        drop(server);
        drop(client);
        // The client closed second: its side ends in LAST_ACK, then gone;
        // the server's side is in TIME_WAIT, with its own 4-tuple.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lookup(local, remote, cookie).unwrap() != Lookup::Gone {
            assert!(std::time::Instant::now() < deadline, "still there");
            std::thread::sleep(Duration::from_millis(1));
        }
        let Lookup::Found(tw) = lookup(remote, local, None).unwrap() else {
            panic!("the side that closed first is in TIME_WAIT");
        };
        assert_eq!(tw.state, 6, "TIME_WAIT: {tw:?}");
        assert!(tw.timer_ms.is_some(), "{tw:?}");
        // A 4-tuple nobody has: the listener the kernel's lookup falls
        // back to is not taken for it.
        assert_eq!(
            lookup(listening, addr("127.0.0.1:1"), None).unwrap(),
            Lookup::Gone
        );
        // A connection not accepted yet waits in the queue.
        let queued = std::net::TcpStream::connect(listening).unwrap();
        // The server's side of the handshake may end a moment after the
        // client's connect returns.
        let waits = loop {
            let waits = waiting(listening, false).unwrap();
            if waits.iter().all(|w| w.state != SYN_RECV) {
                break waits;
            }
            assert!(std::time::Instant::now() < deadline, "{waits:?}");
        };
        assert_eq!(waits.len(), 1, "{waits:?}");
        assert_eq!(waits[0].remote, queued.local_addr().unwrap());
        assert_eq!(
            (waits[0].state, waits[0].inode),
            (ESTABLISHED, 0),
            "{waits:?}"
        );
    }
}
