//! One stream type and one datagram type over every socket family, so that
//! serve, connect, ping and bench are each written once.
//!
//! - [`stream`]: TCP and Unix stream sockets as one [`Stream`] (an
//!   `AsyncRead + AsyncWrite` with half-close) and one [`Listener`].
//! - [`datagram`]: UDP and Unix datagram sockets as one [`Datagram`].
//! - [`tls`]: rustls configuration for `tls://` endpoints (the handshake
//!   turns a TCP [`Stream`] into a TLS one).
//! - [`websocket`]: a client's `ws://` connection as a byte stream (each
//!   line or each fixed-size piece one message).
//! - [`proxy`]: PROXY protocol headers read off accepted streams and sent
//!   by clients.

pub mod datagram;
pub mod inherit;
pub mod proxy;
pub mod stream;
pub mod tls;
pub mod websocket;

pub use datagram::{Datagram, DatagramPeer};
pub use stream::{Listener, Peer, Stream};

use std::io;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use crate::endpoint::{Endpoint, UnixAddr};
use crate::error::Error;

/// A stream that can say when it has data to read, so that a service
/// takes a buffer only then (an idle connection then holds none).
pub trait ReadReady {
    /// Ready when a read would not wait (data, end of stream or an error).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for Stream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            // Decrypted bytes may wait inside the TLS layer while the socket
            // has nothing new: the read itself must be asked.
            Stream::Tls(_) | Stream::Ws(_) => Poll::Ready(Ok(())),
        }
    }
}

impl ReadReady for tokio::io::DuplexStream {
    /// In-memory pipes (tests, benchmarks): always worth a read.
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl<S: ReadReady + ?Sized> ReadReady for &mut S {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_read_ready(cx)
    }
}

/// Removes a Unix socket file when the socket that made it is dropped, so a
/// cleanly stopped server leaves nothing behind.
///
/// It only removes the file if it is still the one we created (same inode):
/// another server may have replaced it meanwhile.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    inode: u64,
}

impl SocketFile {
    pub(crate) fn new(path: &Path) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::symlink_metadata(path).ok()?.ino();
        Some(SocketFile {
            path: path.to_owned(),
            inode,
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes way for a Unix socket at `path`: nothing there is fine; a socket
/// file nobody listens on (left by a server that died) is removed; a live
/// socket is "address in use"; anything else is not ours to delete.
///
/// `probe` tries to reach a server at the path, the way a client would.
fn clear_stale_socket(path: &Path, probe: impl Fn(&Path) -> io::Result<()>) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::error::reason(&e)),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket (remove it or choose another path)",
            path.display()
        ));
    }
    match probe(path) {
        Ok(()) => Err("address already in use (a server is listening on it)".to_owned()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::debug!(path = %path.display(), "removing stale socket file");
            std::fs::remove_file(path).map_err(|e| crate::error::reason(&e))
        }
        // Not ours to judge (e.g. permission denied): let bind report it.
        Err(_) => Ok(()),
    }
}

/// Binds a socket (`bind` makes it) at every address `endpoint` resolves
/// to, all on one port, as nginx does: a name such as `localhost` that
/// stands for both `::1` and `127.0.0.1` is served on both, so clients of
/// either family reach it. With port 0 the first address gets an ephemeral
/// port and the others take the same number (tried again, up to ten times,
/// where another socket already has it on one of them). An address this
/// host cannot bind (`::1` where IPv6 is off, a hosts-file entry for
/// another machine) is skipped with a warning when another one binds.
/// Each socket comes with the address it really bound.
pub(crate) async fn bind_every<S>(
    endpoint: &Endpoint,
    bind: impl Fn(std::net::SocketAddr) -> io::Result<S>,
    local: impl Fn(&S) -> io::Result<std::net::SocketAddr>,
) -> Result<Vec<(S, std::net::SocketAddr)>, Error> {
    let wanted = endpoint.host_port().map_or(0, |hp| hp.port);
    let fail = |e| Error::listen(endpoint, e, Some(wanted));
    let mut addrs = endpoint.resolve().await.map_err(fail)?;
    // A hosts file may list an address twice: bind it once.
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|addr| seen.insert(*addr));
    let mut last = None;
    'attempt: for _ in 0..10 {
        let mut bound = Vec::with_capacity(addrs.len());
        let mut skipped = Vec::new();
        let mut port = wanted;
        for addr in &addrs {
            let mut addr = *addr;
            addr.set_port(port);
            match bind(addr).and_then(|socket| Ok((local(&socket)?, socket))) {
                Ok((real, socket)) => {
                    port = real.port();
                    bound.push((socket, real));
                }
                // The ephemeral port the first address got is taken on
                // another: start again with a new one.
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse && wanted == 0 && !bound.is_empty() =>
                {
                    last = Some(e);
                    continue 'attempt;
                }
                Err(e) if cannot_bind_here(&e) && addrs.len() > 1 => skipped.push((addr, e)),
                Err(e) => return Err(fail(e)),
            }
        }
        if bound.is_empty() {
            // Not one address could be bound: the first one's reason.
            let e = skipped.into_iter().next().map_or_else(
                || io::Error::new(io::ErrorKind::NotFound, "no address"),
                |(_, e)| e,
            );
            return Err(fail(e));
        }
        for (addr, e) in skipped {
            tracing::warn!(%endpoint, address = %addr.ip(), error = %e, "one of the name's addresses is not served");
        }
        return Ok(bound);
    }
    Err(fail(
        last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()),
    ))
}

/// Whether a bind failed because this host has no such address or family,
/// rather than because of the port or a permission.
fn cannot_bind_here(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// The socket address of a Unix endpoint's address.
pub(crate) fn unix_socket_addr(addr: &UnixAddr) -> io::Result<std::os::unix::net::SocketAddr> {
    match addr {
        UnixAddr::Path(path) => std::os::unix::net::SocketAddr::from_pathname(path),
        UnixAddr::Abstract(name) => abstract_addr(name),
    }
}

/// Binds a Unix socket (stream or datagram: `bind` makes it) at `addr`
/// to serve `endpoint`, replacing a stale socket file first (`probe`
/// reaches a server at a path as a client would, see
/// [`clear_stale_socket`]). The guard removes the file when dropped.
pub(crate) fn bind_unix<S>(
    endpoint: &Endpoint,
    addr: &UnixAddr,
    bind: impl FnOnce(&std::os::unix::net::SocketAddr) -> io::Result<S>,
    probe: impl Fn(&Path) -> io::Result<()>,
) -> Result<(S, Option<SocketFile>), Error> {
    let fail = |e: io::Error| Error::listen(endpoint, e, None);
    if let UnixAddr::Path(path) = addr {
        clear_stale_socket(path, probe).map_err(|reason| Error::Listen {
            endpoint: endpoint.to_string(),
            reason,
            source: None,
        })?;
    }
    let socket = bind(&unix_socket_addr(addr).map_err(fail)?).map_err(fail)?;
    let file = match addr {
        UnixAddr::Path(path) => SocketFile::new(path),
        UnixAddr::Abstract(_) => None,
    };
    Ok((socket, file))
}

/// An abstract-namespace address (Linux only).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn abstract_addr(name: &str) -> io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

/// An abstract-namespace address (Linux only).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn abstract_addr(_name: &str) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract Unix socket names exist only on Linux",
    ))
}

/// The text of a Unix socket address: `PATH`, `@NAME`, or `None` if unnamed.
pub fn unix_addr_text(addr: &std::os::unix::net::SocketAddr) -> Option<String> {
    if let Some(path) = addr.as_pathname() {
        return Some(path.display().to_string());
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = addr.as_abstract_name() {
            return Some(format!("@{}", String::from_utf8_lossy(name)));
        }
    }
    None
}
