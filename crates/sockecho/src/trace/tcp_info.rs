//! The kernel's view of a TCP socket through its descriptor:
//! `getsockopt(TCP_INFO)` on Linux (nothing elsewhere), its two addresses,
//! and the kernel's names for TCP states.

// getsockopt(2) is a C call, and the tracer is handed descriptor numbers;
// the blocks below are unsafe, each with its SAFETY note (the other unsafe
// modules are listed in lib.rs).
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use socket2::SockRef;

/// `TCP_LISTEN` in `include/net/tcp_states.h`.
pub(super) const LISTEN: u8 = 10;

/// The kernel's name for a TCP state (`include/net/tcp_states.h`, as `ss`
/// and `/proc/net/tcp` number them).
pub(super) fn state_name(state: u8) -> String {
    let name = match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        LISTEN => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        // A state newer than this table: the number, not a guess.
        other => return other.to_string(),
    };
    name.to_owned()
}

/// `TCP_ESTABLISHED`.
pub(super) const ESTABLISHED: u8 = 1;

/// `TCP_CLOSE_WAIT`: the peer's FIN came, ours not sent yet.
pub(super) const CLOSE_WAIT: u8 = 8;

/// `TCP_CLOSE`: what a descriptor reads once its connection has left it
/// (closed, or moved to a TIME_WAIT mini-socket the descriptor cannot see).
pub(super) const CLOSE: u8 = 7;

/// `TCP_SYN_RECV`: a handshake under way, as inet_diag reports a request
/// socket.
pub(super) const SYN_RECV: u8 = 3;

/// `TCP_NEW_SYN_RECV`: the kernel's own state for a request socket (it
/// reports it as SYN_RECV).
pub(super) const NEW_SYN_RECV: u8 = 12;

/// The local address of socket `fd`, `None` if it has none (or is not an
/// IP socket).
pub(super) fn local_address(fd: RawFd) -> Option<SocketAddr> {
    with_socket(fd, |socket| socket.local_addr().ok()?.as_socket())
}

/// The local and peer addresses of the connected socket `fd`: the
/// connection's 4-tuple, by which the kernel's socket diagnostics find it
/// once the descriptor is closed. `None` if it is not connected (a socket
/// whose connection already left it reads as not connected).
pub(super) fn addresses(fd: RawFd) -> Option<(SocketAddr, SocketAddr)> {
    with_socket(fd, |socket| {
        let local = socket.local_addr().ok()?.as_socket()?;
        let peer = socket.peer_addr().ok()?.as_socket()?;
        Some((local, peer))
    })
}

/// Whether the IPv6 socket `fd` takes IPv4 connections too (not
/// `IPV6_V6ONLY`); false for any other.
pub(super) fn dual_stack(fd: RawFd) -> bool {
    with_socket(fd, |socket| socket.only_v6().ok().map(|only| !only)).unwrap_or(false)
}

fn with_socket<T>(fd: RawFd, ask: impl FnOnce(SockRef<'_>) -> Option<T>) -> Option<T> {
    if fd < 0 {
        return None;
    }
    // SAFETY: the tracer's callers hand it the descriptor of a socket they
    // hold open for the duration of the call (as for `TcpInfo::read`);
    // getsockname and getpeername only write into socket2's own buffers,
    // so even a stale number is a wrong answer or an error, never a
    // memory error.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    ask(SockRef::from(&fd))
}

/// What TCP_INFO told us. A figure is `None` when the kernel's struct is
/// too short to hold it (an older kernel than the libc headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcpInfo {
    pub(super) state: u8,
    /// Connection: unacknowledged segments. Listener: accept queue length.
    pub(super) unacked: Option<u32>,
    /// Connection: SACKed segments. Listener: accept queue limit.
    pub(super) sacked: Option<u32>,
    pub(super) rtt_us: Option<u32>,
    pub(super) rttvar_us: Option<u32>,
    pub(super) snd_cwnd: Option<u32>,
    pub(super) total_retrans: Option<u32>,
    pub(super) bytes_acked: Option<u64>,
}

impl TcpInfo {
    /// Asks the kernel about the TCP socket `fd`; `None` if it will not say
    /// (not a TCP socket, closed, or no TCP_INFO on this platform).
    ///
    /// Any descriptor is safe to pass: getsockopt only writes into our own
    /// buffer, and a stale one fails with EBADF or answers for whatever
    /// socket now holds the number, which is a wrong trace, never a
    /// memory error.
    #[cfg(target_os = "linux")]
    pub(super) fn read(fd: RawFd) -> Option<TcpInfo> {
        use std::mem::{offset_of, size_of};
        // SAFETY: `tcp_info` is a plain C struct of integers, for which all
        // zero bytes are a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>()).ok()?;
        // SAFETY: `info` is a live, writable `tcp_info` and `len` holds its
        // size, so the kernel writes at most `len` bytes into it and stores
        // the length it wrote back in `len`; both outlive the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return None;
        }
        let len = usize::try_from(len).ok()?;
        // Each figure only if the kernel's struct reached that far.
        macro_rules! field {
            ($name:ident) => {
                (offset_of!(libc::tcp_info, $name) + size_of_val(&info.$name) <= len)
                    .then_some(info.$name)
            };
        }
        Some(TcpInfo {
            state: field!(tcpi_state)?,
            unacked: field!(tcpi_unacked),
            sacked: field!(tcpi_sacked),
            rtt_us: field!(tcpi_rtt),
            rttvar_us: field!(tcpi_rttvar),
            snd_cwnd: field!(tcpi_snd_cwnd),
            total_retrans: field!(tcpi_total_retrans),
            bytes_acked: field!(tcpi_bytes_acked),
        })
    }

    /// No TCP_INFO on this platform: the kernel fields are left out.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn read(_fd: RawFd) -> Option<TcpInfo> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn unknown_states_are_numbers_not_guesses() {
        assert_eq!(state_name(1), "ESTABLISHED");
        assert_eq!(state_name(10), "LISTEN");
        assert_eq!(state_name(99), "99");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tcp_info_reads_a_listener_queue_and_nothing_from_other_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let info = TcpInfo::read(listener.as_raw_fd()).expect("TCP_INFO of a listener");
        assert_eq!(state_name(info.state), "LISTEN");
        assert_eq!(info.unacked, Some(0));
        assert!(info.sacked.is_some_and(|limit| limit > 0));

        let pending = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // The server side of the handshake may finish a moment after the
        // client's connect returns (under load, in ksoftirqd).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpInfo::read(listener.as_raw_fd()).unwrap().unacked != Some(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "one connection waits for accept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let client = TcpInfo::read(pending.as_raw_fd()).unwrap();
        assert_eq!(state_name(client.state), "ESTABLISHED");

        let unix = std::os::unix::net::UnixDatagram::unbound().unwrap();
        assert_eq!(TcpInfo::read(unix.as_raw_fd()), None);
        assert_eq!(TcpInfo::read(-1), None);
    }
}
