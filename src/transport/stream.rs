//! Stream transports (TCP, Unix stream) behind one [`Stream`] and one
//! [`Listener`].
//!
//! Every stream socket gets `TCP_NODELAY` where it applies: an echo writes
//! back what it read, and with Nagle's algorithm plus the peer's delayed ACK
//! a large message stalls for 40 ms at a time (ncat, socat and xinetd all
//! show it at 64 KiB messages).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net as std_unix;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::{SocketFile, abstract_addr, clear_stale_socket, unix_addr_text};
use crate::endpoint::{Endpoint, UnixAddr};
use crate::error::Error;

/// A connected byte stream over any stream transport.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain stream socket.
    Unix(UnixStream),
}

/// Who is on the other end of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// An IP peer.
    Ip(SocketAddr),
    /// A Unix-domain peer: its bound address if it has one (clients
    /// usually do not), and the process id the kernel reports for it.
    Unix {
        /// `PATH` or `@NAME`, when the peer bound one.
        addr: Option<String>,
        /// The peer's process id (SO_PEERCRED), when known.
        pid: Option<i32>,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => write!(f, "{addr}"),
            Peer::Unix {
                addr: Some(addr), ..
            } => write!(f, "unix:{addr}"),
            Peer::Unix {
                addr: None,
                pid: Some(pid),
            } => write!(f, "unix:unnamed(pid={pid})"),
            Peer::Unix {
                addr: None,
                pid: None,
            } => f.write_str("unix:unnamed"),
        }
    }
}

impl Peer {
    /// The IP address, for IP peers.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Ip(addr) => Some(addr.ip()),
            Peer::Unix { .. } => None,
        }
    }
}

impl Stream {
    /// Connects to a stream endpoint, trying each resolved address in turn,
    /// each attempt bounded by `timeout`.
    pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Stream, Error> {
        let attempt = async {
            match endpoint {
                Endpoint::Tcp(_) | Endpoint::Tls(_) => {
                    let addrs = endpoint.resolve().await?;
                    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                    for addr in addrs {
                        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                            Ok(Ok(stream)) => {
                                stream.set_nodelay(true)?;
                                return Ok(Stream::Tcp(stream));
                            }
                            Ok(Err(e)) => last = e,
                            Err(_) => last = io::Error::from(io::ErrorKind::TimedOut),
                        }
                    }
                    Err(last)
                }
                Endpoint::Unix(addr) => {
                    let std_addr = unix_socket_addr(addr)?;
                    // A local connect completes or fails at once; no need to
                    // go through the reactor.
                    let stream = std_unix::UnixStream::connect_addr(&std_addr)?;
                    stream.set_nonblocking(true)?;
                    Ok(Stream::Unix(UnixStream::from_std(stream)?))
                }
                Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a stream endpoint",
                )),
            }
        };
        attempt.await.map_err(|e| Error::connect(endpoint, e))
    }

    /// The remote end.
    pub fn peer(&self) -> io::Result<Peer> {
        match self {
            Stream::Tcp(s) => Ok(Peer::Ip(s.peer_addr()?)),
            Stream::Unix(s) => Ok(unix_peer(s)),
        }
    }
}

fn unix_peer(stream: &UnixStream) -> Peer {
    let addr = SockRef::from(stream)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_unix())
        .and_then(|a| unix_addr_text(&a));
    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
    Peer::Unix { addr, pid }
}

fn unix_socket_addr(addr: &UnixAddr) -> io::Result<std_unix::SocketAddr> {
    match addr {
        UnixAddr::Path(path) => std_unix::SocketAddr::from_pathname(path),
        UnixAddr::Abstract(name) => abstract_addr(name),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// Shuts down the write side only (a half-close): the peer reads the end
    /// of the stream and may still send.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

/// A listening stream socket and the endpoint it really listens on.
#[derive(Debug)]
pub struct Listener {
    inner: ListenerInner,
    /// The bound address (the ephemeral port filled in), as users write it.
    local: Endpoint,
    /// Removes the socket file on drop, for Unix path sockets.
    _file: Option<SocketFile>,
}

#[derive(Debug)]
enum ListenerInner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds and listens on a stream endpoint with the given backlog.
    ///
    /// TCP sockets get SO_REUSEADDR (a restarted server need not wait out
    /// TIME_WAIT) and IPv6 ones IPV6_V6ONLY (so `[::]:P` and `0.0.0.0:P`
    /// can be served side by side). A Unix socket file left by a dead
    /// server is replaced; any other file at the path is an error.
    pub async fn bind(endpoint: &Endpoint, backlog: u32) -> Result<Listener, Error> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match endpoint {
            Endpoint::Tcp(hp) | Endpoint::Tls(hp) => {
                let port = Some(hp.port);
                let addrs = endpoint
                    .resolve()
                    .await
                    .map_err(|e| Error::listen(endpoint, e, port))?;
                // Like nc and socat, a name that resolves to several
                // addresses is served on the first.
                let addr = addrs[0];
                let listener =
                    bind_tcp(addr, backlog).map_err(|e| Error::listen(endpoint, e, port))?;
                let real = listener
                    .local_addr()
                    .map_err(|e| Error::listen(endpoint, e, port))?;
                Ok(Listener {
                    inner: ListenerInner::Tcp(listener),
                    local: endpoint.with_addr(real),
                    _file: None,
                })
            }
            Endpoint::Unix(addr) => {
                let fail = |e: io::Error| Error::listen(endpoint, e, None);
                if let UnixAddr::Path(path) = addr {
                    clear_stale_socket(path, |p| std_unix::UnixStream::connect(p).map(drop))
                        .map_err(|reason| Error::Listen {
                            endpoint: endpoint.to_string(),
                            reason,
                            source: None,
                        })?;
                }
                let std_listener =
                    std_unix::UnixListener::bind_addr(&unix_socket_addr(addr).map_err(fail)?)
                        .map_err(fail)?;
                // std listens with its own backlog; listen(2) again sets ours.
                SockRef::from(&std_listener).listen(backlog).map_err(fail)?;
                std_listener.set_nonblocking(true).map_err(fail)?;
                let file = match addr {
                    UnixAddr::Path(path) => SocketFile::new(path),
                    UnixAddr::Abstract(_) => None,
                };
                Ok(Listener {
                    inner: ListenerInner::Unix(UnixListener::from_std(std_listener).map_err(fail)?),
                    local: endpoint.clone(),
                    _file: file,
                })
            }
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Err(Error::Usage(format!(
                "{endpoint} is a datagram endpoint, not a stream"
            ))),
        }
    }

    /// The endpoint as really bound (ephemeral port filled in).
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// Accepts one connection, with `TCP_NODELAY` set on it.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match &self.inner {
            ListenerInner::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                // A failure here (the peer already gone) ends only this
                // connection, later, on its first read or write.
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), Peer::Ip(peer)))
            }
            ListenerInner::Unix(l) => {
                let (stream, _) = l.accept().await?;
                let peer = unix_peer(&stream);
                Ok((Stream::Unix(stream), peer))
            }
        }
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}
