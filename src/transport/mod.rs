//! One stream type and one datagram type over every socket family, so that
//! serve, connect, ping and bench are each written once.
//!
//! - [`stream`]: TCP and Unix stream sockets as one [`Stream`] (an
//!   `AsyncRead + AsyncWrite` with half-close) and one [`Listener`].
//! - [`datagram`]: UDP and Unix datagram sockets as one [`Datagram`].
//! - [`tls`]: rustls configuration for `tls://` endpoints (the handshake
//!   turns a TCP [`Stream`] into a TLS one).

pub mod datagram;
pub mod inherit;
pub mod stream;
pub mod tls;

pub use datagram::{Datagram, DatagramPeer};
pub use stream::{Listener, Peer, Stream};

use std::io;
use std::path::{Path, PathBuf};

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
pub(crate) fn clear_stale_socket(
    path: &Path,
    probe: impl Fn(&Path) -> io::Result<()>,
) -> Result<(), String> {
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
