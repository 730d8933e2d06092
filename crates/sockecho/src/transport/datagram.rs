//! Datagram transports (UDP, Unix datagram) behind one [`Datagram`].
//!
//! Replies to Unix datagram senders go out through socket2, because
//! tokio's `send_to` takes a path and cannot name an abstract-namespace
//! address.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net as std_unix;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use socket2::{SockAddr, SockRef};
use tokio::io::Interest;
use tokio::net::{UdpSocket, UnixDatagram};

use super::{SocketFile, abstract_addr, unix_addr_text, unix_socket_addr};
use crate::endpoint::{Endpoint, Host};
use crate::error::Error;

/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The largest UDP payload over IPv6 (65,535 minus the UDP header; the
/// IPv6 header is not counted in its payload length).
pub const MAX_UDP6_PAYLOAD: usize = 65_527;

/// A datagram socket of either family.
#[derive(Debug)]
pub enum Datagram {
    /// UDP over IPv4 or IPv6.
    Udp(UdpSocket),
    /// A Unix-domain datagram socket.
    Unix(UnixDatagram),
}

/// Where a datagram came from, to send the reply back.
// The Unix variant is large (two sockaddr_un), but boxing it would allocate
// once per datagram on the hot path; the value lives on the stack briefly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum DatagramPeer {
    /// An IP sender.
    Ip(SocketAddr),
    /// A Unix-domain sender (unnamed senders cannot be answered).
    Unix {
        /// The sender's address as the kernel gave it.
        addr: std_unix::SocketAddr,
        /// The same address in the form a reply is sent to.
        reply: SockAddr,
    },
}

impl fmt::Display for DatagramPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramPeer::Ip(addr) => write!(f, "{addr}"),
            DatagramPeer::Unix { addr, .. } => match unix_addr_text(addr) {
                Some(text) => write!(f, "unix:{text}"),
                None => f.write_str("unix:unnamed"),
            },
        }
    }
}

/// A bound datagram socket plus what must outlive it.
#[derive(Debug)]
pub struct BoundDatagram {
    /// The socket.
    pub socket: Datagram,
    /// The endpoint as really bound (ephemeral port filled in).
    pub local: Endpoint,
    /// Removes the socket file on drop, for Unix path sockets.
    _file: Option<SocketFile>,
}

impl Datagram {
    /// Binds a datagram endpoint for serving.
    ///
    /// UDP sockets do not get SO_REUSEADDR: on Linux it would let a second
    /// server bind the same port silently instead of failing with "address
    /// in use". IPv6 sockets are IPV6_V6ONLY, as for TCP.
    ///
    /// A name that resolves to several addresses is served on each (see
    /// [`bind_every`](super::bind_every)): one socket per address.
    pub async fn bind(endpoint: &Endpoint) -> Result<Vec<BoundDatagram>, Error> {
        match endpoint {
            Endpoint::Udp(_) => {
                let bound = super::bind_every(endpoint, bind_udp, UdpSocket::local_addr).await?;
                Ok(bound
                    .into_iter()
                    .map(|(socket, real)| BoundDatagram {
                        socket: Datagram::Udp(socket),
                        local: endpoint.with_addr(real),
                        _file: None,
                    })
                    .collect())
            }
            Endpoint::UnixDgram(addr) => {
                let fail = |e| Error::listen(endpoint, e, None);
                let (socket, file) =
                    super::bind_unix(endpoint, addr, std_unix::UnixDatagram::bind_addr, |p| {
                        std_unix::UnixDatagram::unbound()?.connect(p)
                    })?;
                Ok(vec![BoundDatagram {
                    socket: Datagram::Unix(async_unix(socket).map_err(fail)?),
                    local: endpoint.clone(),
                    _file: file,
                }])
            }
            _ => Err(Error::Config(format!(
                "{endpoint} is a stream endpoint, not a datagram one"
            ))),
        }
    }

    /// A datagram socket handed over (systemd, inetd `wait`), serving
    /// `local`.
    pub(crate) fn adopt(fd: std::os::fd::OwnedFd, local: Endpoint) -> io::Result<BoundDatagram> {
        let socket = match local {
            Endpoint::UnixDgram(_) => Datagram::Unix(async_unix(std_unix::UnixDatagram::from(fd))?),
            _ => {
                let s = std::net::UdpSocket::from(fd);
                s.set_nonblocking(true)?;
                Datagram::Udp(UdpSocket::from_std(s)?)
            }
        };
        Ok(BoundDatagram {
            socket,
            local,
            _file: None,
        })
    }

    /// A client socket connected to `endpoint`: bound to an ephemeral
    /// address of its own (Unix clients get a unique abstract name, since
    /// an unnamed Unix socket cannot receive replies), and connected so
    /// that only the server's datagrams reach it.
    pub async fn connect(endpoint: &Endpoint) -> Result<Datagram, Error> {
        let fail = |e| Error::connect(endpoint, e);
        match endpoint {
            Endpoint::Udp(_) => {
                let addrs = endpoint.resolve().await.map_err(fail)?;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for addr in addrs {
                    match Datagram::connect_ip(addr).await {
                        Ok(socket) => return Ok(socket),
                        Err(e) => last = e,
                    }
                }
                Err(fail(last))
            }
            Endpoint::UnixDgram(addr) => {
                let socket = client_unix_datagram().map_err(fail)?;
                socket
                    .connect_addr(&unix_socket_addr(addr).map_err(fail)?)
                    .map_err(fail)?;
                Ok(Datagram::Unix(async_unix(socket).map_err(fail)?))
            }
            _ => Err(Error::Config(format!(
                "{endpoint} is a stream endpoint, not a datagram one"
            ))),
        }
    }

    /// How long [`locate`](Datagram::locate) waits, at most, for an
    /// address to refuse its probe before taking it: a refusal comes back
    /// within a round trip.
    pub const LOCATE_WAIT: Duration = Duration::from_millis(500);

    /// Which address of `endpoint` a datagram client should use: for a UDP
    /// name with several addresses (`localhost`: `::1`, then `127.0.0.1`),
    /// the first one that does not refuse an empty datagram within `wait`
    /// ("port unreachable" means nobody is there; silence or an echo means
    /// somebody may be), as a TCP client moves on from a refused connect.
    /// Returns the endpoint of that address (`udp://127.0.0.1:P`), or
    /// `endpoint` itself when there is nothing to choose (an address
    /// literal, a name with one address). The probe's socket is closed: a
    /// late echo of it reaches nobody.
    pub async fn locate(endpoint: &Endpoint, wait: Duration) -> Result<Endpoint, Error> {
        let Endpoint::Udp(hp) = endpoint else {
            return Ok(endpoint.clone());
        };
        if matches!(hp.host, Host::Ip(_) | Host::Zoned(..)) {
            return Ok(endpoint.clone());
        }
        let fail = |e| Error::connect(endpoint, e);
        let addrs = endpoint.resolve().await.map_err(fail)?;
        let Some((last, others)) = addrs.split_last() else {
            return Err(fail(io::Error::new(io::ErrorKind::NotFound, "no address")));
        };
        if others.is_empty() {
            return Ok(endpoint.clone());
        }
        let mut reply = [0u8; 1];
        for addr in others {
            let Ok(socket) = Datagram::connect_ip(*addr).await else {
                continue;
            };
            let answer = async {
                socket.send(&[]).await?;
                socket.recv(&mut reply).await
            };
            match tokio::time::timeout(wait, answer).await {
                // Refused, or unreachable: the next address.
                Ok(Err(_)) => continue,
                Ok(Ok(_)) | Err(_) => return Ok(endpoint.with_addr(*addr)),
            }
        }
        Ok(endpoint.with_addr(*last))
    }

    /// A UDP client socket connected to `addr`, bound to an ephemeral port
    /// of its family. (Nothing answers a UDP connect: a server that is not
    /// there shows only when a datagram draws "port unreachable", so a
    /// client of a name with several addresses tries the next on that.)
    pub(crate) async fn connect_ip(addr: SocketAddr) -> io::Result<Datagram> {
        let local: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        Ok(Datagram::Udp(socket))
    }

    /// Receives one datagram and its sender. A datagram larger than `buf`
    /// is truncated, as recvfrom(2) does.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, DatagramPeer)> {
        match self {
            Datagram::Udp(s) => {
                let (n, peer) = s.recv_from(buf).await?;
                Ok((n, DatagramPeer::Ip(peer)))
            }
            Datagram::Unix(s) => {
                let (n, peer) = s.recv_from(buf).await?;
                let addr = std_unix::SocketAddr::from(peer);
                let reply = reply_addr(&addr)?;
                Ok((n, DatagramPeer::Unix { addr, reply }))
            }
        }
    }

    /// Sends one datagram to `peer`.
    pub async fn send_to(&self, buf: &[u8], peer: &DatagramPeer) -> io::Result<usize> {
        match (self, peer) {
            (Datagram::Udp(s), DatagramPeer::Ip(addr)) => s.send_to(buf, addr).await,
            (Datagram::Unix(s), DatagramPeer::Unix { reply, .. }) => {
                s.async_io(Interest::WRITABLE, || SockRef::from(s).send_to(buf, reply))
                    .await
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "peer of another address family",
            )),
        }
    }

    /// Sends one datagram on a connected socket.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Datagram::Udp(s) => s.send(buf).await,
            Datagram::Unix(s) => s.send(buf).await,
        }
    }

    /// Receives one datagram on a connected socket.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Datagram::Udp(s) => s.recv(buf).await,
            Datagram::Unix(s) => s.recv(buf).await,
        }
    }

    /// Polls sending one datagram on a connected socket (for drivers that
    /// multiplex sends and receives in one hand-written future).
    pub fn poll_send(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self {
            Datagram::Udp(s) => s.poll_send(cx, buf),
            Datagram::Unix(s) => s.poll_send(cx, buf),
        }
    }

    /// Polls receiving one datagram on a connected socket.
    pub fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self {
            Datagram::Udp(s) => s.poll_recv(cx, buf),
            Datagram::Unix(s) => s.poll_recv(cx, buf),
        }
    }

    /// The socket, taken out of tokio's reactor (still non-blocking), for
    /// an io_uring ring to drive.
    pub(crate) fn into_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        match self {
            Datagram::Udp(s) => Ok(s.into_std()?.into()),
            Datagram::Unix(s) => Ok(s.into_std()?.into()),
        }
    }

    /// The largest datagram worth receiving on this socket: a UDP payload's
    /// limit, or for Unix sockets the default socket buffer's size (larger
    /// datagrams cannot be sent without raising it).
    pub fn max_datagram(&self) -> usize {
        match self {
            // IPv6 carries 20 bytes more: there is no IPv4 header to fit.
            Datagram::Udp(s) if s.local_addr().is_ok_and(|a| a.is_ipv6()) => MAX_UDP6_PAYLOAD,
            Datagram::Udp(_) => MAX_UDP_PAYLOAD,
            Datagram::Unix(_) => 212_992,
        }
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn async_unix(socket: std_unix::UnixDatagram) -> io::Result<UnixDatagram> {
    socket.set_nonblocking(true)?;
    UnixDatagram::from_std(socket)
}

/// The address to answer a Unix datagram sender at. Unnamed senders get an
/// empty path, which the guard refuses before any reply is tried.
fn reply_addr(peer: &std_unix::SocketAddr) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(path) = peer.as_pathname() {
        return SockAddr::unix(path);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = peer.as_abstract_name() {
            // To socket2 an abstract name is a path whose first byte is NUL.
            let mut raw = Vec::with_capacity(name.len() + 1);
            raw.push(0);
            raw.extend_from_slice(name);
            return SockAddr::unix(std::ffi::OsStr::from_bytes(&raw));
        }
    }
    SockAddr::unix("")
}

/// A Unix datagram socket bound to a fresh abstract name, so that the
/// server's replies can reach it and nothing is left in the file system.
fn client_unix_datagram() -> io::Result<std_unix::UnixDatagram> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "sockecho-client-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    std_unix::UnixDatagram::bind_addr(&abstract_addr(&name)?)
}
