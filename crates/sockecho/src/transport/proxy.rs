//! PROXY protocol headers on the wire: read off an accepted stream by the
//! server, written by clients right after they connect (before any TLS
//! handshake, as HAProxy's `send-proxy` does). The protocol itself, with no
//! I/O, is [`crate::proxy`].
//!
//! Reading never takes a byte past the header, so what the client sent
//! after it reaches the echo (or the TLS handshake) untouched, with no
//! buffer to hand over: each read asks for at most what [`parse`] says
//! still belongs to the header, and a version 1 line, whose end is not
//! known in advance, is peeked at first (`MSG_PEEK`, as HAProxy reads it)
//! to read exactly through its `\n`. Over a Unix socket, where tokio offers
//! no peek, the rest of a version 1 line is read a byte at a time (at most
//! 92 reads, once per connection).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Stream;
use crate::proxy::{Header, ParseError, Parsed, V1_MAX, Version, parse};

/// A client's PROXY header: which version, and the source it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyClient {
    /// Version 1 (text) or 2 (binary).
    pub version: Version,
    /// The client the header names; `None`: the connection's own local
    /// address.
    pub source: Option<SocketAddr>,
}

/// Why no header could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The bytes are not a valid header.
    Parse(ParseError),
    /// The peer closed before a whole header came.
    Closed,
    /// The connection failed.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Parse(e) => write!(f, "{e}"),
            ReadError::Closed => f.write_str("closed before a whole PROXY protocol header came"),
            ReadError::Io(e) => write!(
                f,
                "reading the PROXY protocol header: {}",
                crate::error::reason(e)
            ),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// Reads a PROXY protocol header off the start of `stream` (a TCP or Unix
/// stream, before any TLS), and not one byte more. The caller bounds how
/// long it may take.
pub(crate) async fn read_header(stream: &mut Stream) -> Result<Header, ReadError> {
    // Grows to the header's length at most (bounded by `parse`).
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let need = match parse(&buf).map_err(ReadError::Parse)? {
            Parsed::Done { header, len } => {
                debug_assert_eq!(len, buf.len(), "read past the header");
                return Ok(header);
            }
            Parsed::More(need) => need,
        };
        let start = buf.len();
        let take = match (need.line, &*stream) {
            (true, Stream::Tcp(tcp)) => {
                let mut window = [0u8; V1_MAX];
                let n = tcp.peek(&mut window[..need.up_to.min(V1_MAX)]).await?;
                window[..n]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(n, |i| i + 1)
            }
            // No peek: one byte can never be past the line's end.
            (true, _) => 1,
            (false, _) => need.up_to,
        };
        buf.resize(start + take.max(1), 0);
        let n = stream.read(&mut buf[start..]).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.truncate(start + n);
    }
}

/// Sends `client`'s header on a freshly connected `stream`: its source
/// (or the connection's local address), and the connection's destination.
/// A Unix connection has no IP addresses: its header names none (`UNKNOWN`)
/// unless a source is given, then beside an unspecified destination.
pub(crate) async fn send_header(stream: &mut Stream, client: &ProxyClient) -> io::Result<()> {
    let (local, peer) = match &*stream {
        Stream::Tcp(tcp) => (Some(tcp.local_addr()?), Some(tcp.peer_addr()?)),
        Stream::Tls(tls) => {
            let tcp = tls.get_ref().0;
            (Some(tcp.local_addr()?), Some(tcp.peer_addr()?))
        }
        // Never so: the header goes before any TLS or WebSocket handshake.
        Stream::Unix(_) | Stream::Ws(_) => (None, None),
    };
    let header = match (client.source.or(local), peer) {
        (Some(source), Some(destination)) => Header::proxied(source, destination),
        (Some(source), None) => {
            let nowhere = match source.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            Header::proxied(source, SocketAddr::new(nowhere, 0))
        }
        (None, _) => Header::unknown(),
    };
    stream.write_all(&header.encode(client.version)).await?;
    stream.flush().await
}
