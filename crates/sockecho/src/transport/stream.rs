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
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net as std_unix;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};

use super::{SocketFile, unix_addr_text, unix_socket_addr};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::trace::Tracer;

/// The longest greeting line a client reads to name the backend that
/// answered (bench's and ping's `greeting_line`), its `\n` included.
pub const GREETING_LINE_MAX: usize = 1024;

/// A connected byte stream over any stream transport.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain stream socket.
    Unix(UnixStream),
    /// TLS over TCP (client or server side), boxed: its state is large.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// A client's WebSocket (`ws://`, `wss://`) over TCP or TLS, as bytes
    /// (see [`super::websocket`]).
    Ws(Box<super::websocket::WsStream>),
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

impl Stream {
    /// Connects to a stream endpoint, trying each resolved address in turn,
    /// each attempt bounded by `timeout`.
    pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Stream, Error> {
        Stream::connect_with(endpoint, timeout, &Tracer::disabled(), None).await
    }

    /// [`connect_traced`](Stream::connect_traced), then, for `tls://`
    /// endpoints, the TLS handshake (bounded by `timeout` too), verifying
    /// the server with `tls` (or, when `None`, against the system's roots).
    pub async fn connect_with(
        endpoint: &Endpoint,
        timeout: Duration,
        trace: &Tracer,
        tls: Option<&super::tls::ClientTls>,
    ) -> Result<Stream, Error> {
        Stream::connect_via(endpoint, timeout, trace, tls, None).await
    }

    /// [`connect_with`](Stream::connect_with), sending a PROXY protocol
    /// header first when `proxy` says so: right after the connection is
    /// made, before the TLS handshake, as a load balancer would.
    pub async fn connect_via(
        endpoint: &Endpoint,
        timeout: Duration,
        trace: &Tracer,
        tls: Option<&super::tls::ClientTls>,
        proxy: Option<&super::proxy::ProxyClient>,
    ) -> Result<Stream, Error> {
        let stream = Stream::connect_traced(endpoint, timeout, trace).await?;
        Stream::after_connect(stream, endpoint, timeout, tls, proxy).await
    }

    /// What follows a connect to `endpoint`: the PROXY header, when
    /// `proxy` says so, then for `tls://`, `https://` and `wss://` the TLS
    /// handshake, each bounded by `timeout`.
    pub(crate) async fn after_connect(
        mut stream: Stream,
        endpoint: &Endpoint,
        timeout: Duration,
        tls: Option<&super::tls::ClientTls>,
        proxy: Option<&super::proxy::ProxyClient>,
    ) -> Result<Stream, Error> {
        if let Some(proxy) = proxy {
            tokio::time::timeout(timeout, super::proxy::send_header(&mut stream, proxy))
                .await
                .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
                .map_err(|e| Error::connect(endpoint, e))?;
        }
        let stream = Stream::tls_if(stream, endpoint, timeout, tls).await?;
        if endpoint.is_websocket() {
            let ws = super::websocket::handshake(stream, endpoint, timeout).await?;
            return Ok(Stream::Ws(Box::new(ws)));
        }
        Ok(stream)
    }

    /// The TLS handshake on `stream` for `tls://`, `https://` and
    /// `wss://` endpoints; any other stream as it is.
    async fn tls_if(
        stream: Stream,
        endpoint: &Endpoint,
        timeout: Duration,
        tls: Option<&super::tls::ClientTls>,
    ) -> Result<Stream, Error> {
        let (hp, tcp) = match (endpoint.host_port(), stream) {
            (Some(hp), Stream::Tcp(tcp)) if endpoint.is_tls() => (hp, tcp),
            (_, stream) => return Ok(stream),
        };
        let default;
        let tls = match tls {
            Some(tls) => tls,
            None => {
                default = super::tls::ClientTls::new(&Default::default())?;
                &default
            }
        };
        let host = hp.host.to_string();
        let handshake = tokio::time::timeout(timeout, tls.handshake(&host, tcp))
            .await
            .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
            .map_err(|e| {
                let (reason, hint) = super::tls::handshake_failure(&e);
                Error::Connect {
                    endpoint: endpoint.to_string(),
                    reason,
                    hint,
                    source: e,
                }
            })?;
        Ok(Stream::Tls(Box::new(handshake.into())))
    }

    /// [`connect`](Stream::connect), tracing the socket and connect calls
    /// of each attempt.
    pub async fn connect_traced(
        endpoint: &Endpoint,
        timeout: Duration,
        trace: &Tracer,
    ) -> Result<Stream, Error> {
        let attempt = async {
            match endpoint {
                Endpoint::Tcp(_)
                | Endpoint::Tls(_)
                | Endpoint::Http(_)
                | Endpoint::Https(_)
                | Endpoint::Ws(_)
                | Endpoint::Wss(_) => {
                    let addrs = endpoint.resolve().await?;
                    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                    for addr in addrs {
                        // socket(2) and connect(2) apart (as TcpStream::connect
                        // does them inside), so --trace can show each.
                        let socket = match addr {
                            SocketAddr::V4(_) => TcpSocket::new_v4()?,
                            SocketAddr::V6(_) => TcpSocket::new_v6()?,
                        };
                        trace.socket(family(&addr), "SOCK_STREAM", Some(socket.as_raw_fd()));
                        let started = Instant::now();
                        let outcome = tokio::time::timeout(timeout, socket.connect(addr))
                            .await
                            .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)));
                        match outcome {
                            Ok(stream) => {
                                if trace.is_enabled() {
                                    let local = stream.local_addr()?;
                                    let fd = Some(stream.as_raw_fd());
                                    trace.connect(&addr, started.elapsed(), Ok(&local), fd);
                                }
                                stream.set_nodelay(true)?;
                                return Ok(Stream::Tcp(stream));
                            }
                            Err(e) => {
                                trace.connect(&addr, started.elapsed(), Err(&e), None);
                                last = e;
                            }
                        }
                    }
                    Err(last)
                }
                Endpoint::Unix(addr) => {
                    let std_addr = unix_socket_addr(addr)?;
                    // std makes the socket and connects in one call; both
                    // are traced once it returns.
                    let started = Instant::now();
                    // A local connect completes or fails at once; no need to
                    // go through the reactor.
                    let connected = std_unix::UnixStream::connect_addr(&std_addr);
                    trace.socket("AF_UNIX", "SOCK_STREAM", None);
                    let stream = match connected {
                        Ok(stream) => {
                            trace.connect(endpoint, started.elapsed(), Ok(&"unix:unnamed"), None);
                            stream
                        }
                        Err(e) => {
                            trace.connect(endpoint, started.elapsed(), Err(&e), None);
                            return Err(e);
                        }
                    };
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

    /// A connected stream socket handed over (inetd `nowait`).
    pub(crate) fn adopt(fd: std::os::fd::OwnedFd) -> io::Result<Stream> {
        let is_unix = SockRef::from(&fd).domain()? == socket2::Domain::UNIX;
        if is_unix {
            let s = std_unix::UnixStream::from(fd);
            s.set_nonblocking(true)?;
            Ok(Stream::Unix(UnixStream::from_std(s)?))
        } else {
            let s = std::net::TcpStream::from(fd);
            s.set_nonblocking(true)?;
            let _ = s.set_nodelay(true);
            Ok(Stream::Tcp(TcpStream::from_std(s)?))
        }
    }

    /// On a WebSocket client stream, how written bytes become messages
    /// (every `size` bytes one binary message, for probes and bench
    /// messages); any other stream has no messages, and is left as it is.
    pub fn frame_messages(&mut self, size: usize) {
        if let (Stream::Ws(ws), Some(size)) = (self, std::num::NonZeroUsize::new(size)) {
            ws.set_framing(super::websocket::Framing::Fixed(size));
        }
    }

    /// The remote end.
    pub fn peer(&self) -> io::Result<Peer> {
        match self {
            Stream::Tcp(s) => Ok(Peer::Ip(s.peer_addr()?)),
            Stream::Unix(s) => Ok(unix_peer(s)),
            Stream::Tls(s) => Ok(Peer::Ip(s.get_ref().0.peer_addr()?)),
            Stream::Ws(s) => s.get_ref().peer(),
        }
    }

    /// The socket, taken out of tokio's reactor (still non-blocking), for
    /// an io_uring ring to drive. TLS streams cannot be handed over: their
    /// state is in user space.
    pub(crate) fn into_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        match self {
            Stream::Tcp(s) => Ok(s.into_std()?.into()),
            Stream::Unix(s) => Ok(s.into_std()?.into()),
            Stream::Tls(_) | Stream::Ws(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TLS or WebSocket stream cannot leave its layer",
            )),
        }
    }

    /// Reads the one line a server greets with (`serve --greeting
    /// '{id}\n'`: which backend answered), through its `\n` and not a byte
    /// further, so the echo that follows is read whole. Returns it without
    /// its line end (`\n` or `\r\n`). A byte at a time: once per
    /// connection, and nothing after the line may be taken. No `\n` within
    /// [`GREETING_LINE_MAX`] bytes, or the end of the stream before it, is
    /// an error.
    pub async fn read_greeting_line(&mut self) -> io::Result<String> {
        use tokio::io::AsyncReadExt;
        let mut line = Vec::new();
        loop {
            let byte = match self.read_u8().await {
                Ok(byte) => byte,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed before a whole greeting line came",
                    ));
                }
                Err(e) => return Err(e),
            };
            if byte == b'\n' {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if line.len() + 1 == GREETING_LINE_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the greeting line is longer than {GREETING_LINE_MAX} bytes"),
                ));
            }
            line.push(byte);
        }
    }

    /// The local address of an IP connection (`127.0.0.1:7000`); `None`
    /// for a Unix one.
    pub fn local_text(&self) -> Option<String> {
        let addr = match self {
            Stream::Tcp(s) => s.local_addr(),
            Stream::Tls(s) => s.get_ref().0.local_addr(),
            Stream::Ws(s) => return s.get_ref().local_text(),
            Stream::Unix(_) => return None,
        };
        addr.ok().map(|a| a.to_string())
    }

    /// The descriptor of a TCP connection, for tracing to ask the kernel
    /// about (TCP_INFO); `None` for Unix sockets, which have no TCP state.
    pub fn tcp_fd(&self) -> Option<RawFd> {
        match self {
            Stream::Tcp(s) => Some(s.as_raw_fd()),
            Stream::Unix(_) => None,
            Stream::Tls(s) => Some(s.get_ref().0.as_raw_fd()),
            Stream::Ws(s) => s.get_ref().tcp_fd(),
        }
    }
}

/// The address family as socket(2) names it.
fn family(addr: &SocketAddr) -> &'static str {
    match addr {
        SocketAddr::V4(_) => "AF_INET",
        SocketAddr::V6(_) => "AF_INET6",
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

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            // A peer that ends its input with a TCP FIN and no TLS
            // close_notify (ncat, many HTTP clients) has still ended it:
            // rustls says so as UnexpectedEof ("peer closed connection
            // without sending TLS close_notify"), read here as the end of
            // the stream, so the echo sends back what it read, ends its own
            // side with close_notify and closes cleanly, and a client
            // prints all the server sent. (The truncation close_notify
            // guards against matters to a protocol whose length is in its
            // framing; an echo has none.)
            Stream::Tls(s) => match Pin::new(s.as_mut()).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(()))
                }
                other => other,
            },
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    /// Shuts down the write side only (a half-close): the peer reads the end
    /// of the stream and may still send.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            // One message per buffer's worth, as written.
            Stream::Ws(s) => {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &**b);
                Pin::new(s.as_mut()).poll_write(cx, first)
            }
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

/// The listening descriptor, for the accept loop to shed waiting clients
/// with while the process is out of descriptors (see `server::accept`).
impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match &self.inner {
            ListenerInner::Tcp(l) => l.as_fd(),
            ListenerInner::Unix(l) => l.as_fd(),
        }
    }
}

impl Listener {
    /// Binds and listens on a stream endpoint with the given backlog,
    /// tracing the socket, bind and listen calls.
    ///
    /// TCP sockets get SO_REUSEADDR (a restarted server need not wait out
    /// TIME_WAIT) and IPv6 ones IPV6_V6ONLY (so `[::]:P` and `0.0.0.0:P`
    /// can be served side by side). A Unix socket file left by a dead
    /// server is replaced; any other file at the path is an error.
    ///
    /// A name that resolves to several addresses is served on each (see
    /// [`bind_every`](super::bind_every)): one listener per address.
    pub async fn bind_traced(
        endpoint: &Endpoint,
        backlog: u32,
        trace: &Tracer,
    ) -> Result<Vec<Listener>, Error> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match endpoint {
            Endpoint::Tcp(_)
            | Endpoint::Tls(_)
            | Endpoint::Http(_)
            | Endpoint::Https(_)
            | Endpoint::Ws(_)
            | Endpoint::Wss(_) => {
                let bound = super::bind_every(
                    endpoint,
                    |addr| bind_tcp(addr, backlog, trace),
                    TcpListener::local_addr,
                )
                .await?;
                Ok(bound
                    .into_iter()
                    .map(|(listener, real)| Listener {
                        inner: ListenerInner::Tcp(listener),
                        local: endpoint.with_addr(real),
                        _file: None,
                    })
                    .collect())
            }
            Endpoint::Unix(addr) => {
                let fail = |e: io::Error| Error::listen(endpoint, e, None);
                let (std_listener, file) =
                    super::bind_unix(endpoint, addr, std_unix::UnixListener::bind_addr, |p| {
                        std_unix::UnixStream::connect(p).map(drop)
                    })?;
                // std makes the socket, binds and listens in one call.
                trace.socket("AF_UNIX", "SOCK_STREAM", None);
                trace.bind(endpoint, endpoint, None);
                // std listens with its own backlog; listen(2) again sets ours.
                SockRef::from(&std_listener).listen(backlog).map_err(fail)?;
                trace.listen(endpoint, backlog, None);
                std_listener.set_nonblocking(true).map_err(fail)?;
                Ok(vec![Listener {
                    inner: ListenerInner::Unix(UnixListener::from_std(std_listener).map_err(fail)?),
                    local: endpoint.clone(),
                    _file: file,
                }])
            }
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Err(Error::Config(format!(
                "{endpoint} is a datagram endpoint, not a stream"
            ))),
        }
    }

    /// A listening socket handed over (systemd, inetd `wait`), serving
    /// `local`.
    pub(crate) fn adopt(fd: std::os::fd::OwnedFd, local: Endpoint) -> io::Result<Listener> {
        let inner = match local {
            Endpoint::Unix(_) => {
                let l = std_unix::UnixListener::from(fd);
                l.set_nonblocking(true)?;
                ListenerInner::Unix(UnixListener::from_std(l)?)
            }
            _ => {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                // Accepted connections inherit it (see `bind_tcp`).
                SockRef::from(&l).set_tcp_nodelay(true)?;
                ListenerInner::Tcp(TcpListener::from_std(l)?)
            }
        };
        Ok(Listener {
            inner,
            local,
            _file: None,
        })
    }

    /// The endpoint as really bound (ephemeral port filled in).
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// The listening descriptor, taken out of tokio's reactor so another
    /// engine (io_uring) can accept on it.
    pub fn into_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        match self.inner {
            ListenerInner::Tcp(l) => Ok(l.into_std()?.into()),
            ListenerInner::Unix(l) => Ok(l.into_std()?.into()),
        }
    }

    /// The listening descriptor of a TCP listener, for tracing to read
    /// its accept queue (TCP_INFO); `None` for Unix sockets.
    pub fn tcp_fd(&self) -> Option<RawFd> {
        match &self.inner {
            ListenerInner::Tcp(l) => Some(l.as_raw_fd()),
            ListenerInner::Unix(_) => None,
        }
    }

    /// Accepts one connection (TCP ones with `TCP_NODELAY`, inherited
    /// from the listener).
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match &self.inner {
            ListenerInner::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
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

fn bind_tcp(addr: SocketAddr, backlog: i32, trace: &Tracer) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    let fd = Some(socket.as_raw_fd());
    trace.socket(family(&addr), "SOCK_STREAM", fd);
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Every connection accepted from it inherits TCP_NODELAY (Linux copies
    // the listener's TCP options into each new connection): an echo's
    // small replies go out at once, at no system call per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    // The real address (an ephemeral port filled in), asked only when
    // someone will read it.
    let local = if trace.is_enabled() {
        socket.local_addr()?.as_socket()
    } else {
        None
    };
    let local: &dyn std::fmt::Display = match &local {
        Some(local) => local,
        None => &addr,
    };
    trace.bind(&addr, local, fd);
    socket.listen(backlog)?;
    trace.listen(local, backlog, fd);
    TcpListener::from_std(socket.into())
}
