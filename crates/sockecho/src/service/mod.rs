//! What a server does with a connection or a datagram: the [`Service`]
//! seam.
//!
//! Every engine and every transport serves through it: the epoll engine
//! hands each stream connection to [`Service::serve`], both datagram loops
//! ask [`Service::reply`] what to send back. The classic small services
//! (echo, discard, chargen: RFC 862, 863, 864) are in `classic`; the
//! application-layer echo of `http://` and `ws://` endpoints (each request
//! reflected as JSON, WebSocket messages echoed) is [`Http`], in `http`
//! and `websocket`: the endpoint's scheme names it, whatever the mode
//! ([`for_endpoint`]). The io_uring engine serves plain echo itself and is
//! chosen only for a service that says it is echo ([`Service::is_echo`]).

mod classic;
pub mod greeting;
pub mod http;
mod idle;
pub mod websocket;

pub use classic::{Chargen, Discard, Echo};
pub use http::{Http, HttpLimits};
pub use idle::Idle;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::endpoint::Endpoint;
use crate::events::ConnectionFacts;
use crate::metrics::Meter;
use crate::transport::ReadReady;

/// Bytes read from one stream connection at a time: large enough for one
/// read to take what a loopback peer usually has queued, small enough that
/// ten thousand busy connections stay within a few hundred MiB.
pub const STREAM_BUFFER: usize = 16 * 1024;

/// What a connection moved, kept outside the service future so that the
/// counts survive when the future is cancelled (drain deadline).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer, the greeting included.
    pub bytes_out: u64,
    /// HTTP requests answered, for services that count them (`None`
    /// for the byte and datagram services).
    pub requests: Option<u64>,
}

/// A stream as a service sees it: any transport (TCP, Unix, TLS, or the
/// tracing wrapper around one).
pub trait ServiceStream: AsyncRead + AsyncWrite + ReadReady + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + ?Sized> ServiceStream for T {}

/// One stream connection handed to a service.
pub struct Connection<'a> {
    /// The connection.
    pub stream: &'a mut dyn ServiceStream,
    /// Sent first, before the service proper.
    pub greeting: &'a [u8],
    /// How long the connection may make no progress (`None`: forever).
    pub idle: Option<Duration>,
    /// Bytes in and out, updated as they move.
    pub counts: &'a mut Counts,
    /// Who the connection is from and what its handshakes settled, for a
    /// service that reports it (the HTTP reflection).
    pub about: About<'a>,
}

/// Who a connection is from and what its handshakes settled.
#[derive(Debug, Clone, Copy, Default)]
pub struct About<'a> {
    /// The endpoint it came in on (as bound).
    pub endpoint: Option<&'a Endpoint>,
    /// The client, as the events name it (behind a proxy, the client its
    /// PROXY header names).
    pub peer: &'a str,
    /// The address the client connected to (`127.0.0.1:8080`), when known.
    pub local: Option<&'a str>,
    /// The proxy it came through and its TLS handshake.
    pub facts: ConnectionFacts<'a>,
    /// Where `--metrics` counts what it does (HTTP answers, WebSocket
    /// messages), when on.
    pub meter: Option<&'a std::sync::Arc<Meter>>,
}

/// A future a service returns for one connection.
pub type Serving<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

/// A service: what a server does with each stream connection and each
/// datagram.
pub trait Service: Send + Sync + std::fmt::Debug {
    /// Serves one stream connection to its end: `Ok` when it ended
    /// cleanly, the error that ended it otherwise.
    fn serve<'a>(&'a self, connection: Connection<'a>) -> Serving<'a>;

    /// The reply to a datagram of `len` bytes held at the start of `buf`,
    /// written into `buf` (the request itself, for echo): its length, or
    /// `None` for no reply. Never longer than the request, so a forged
    /// source is never sent more than it (seemingly) sent.
    fn reply(&self, buf: &mut [u8], len: usize) -> Option<usize>;

    /// Whether this is plain echo, which the io_uring engine serves
    /// itself without going through [`serve`](Service::serve).
    fn is_echo(&self) -> bool {
        false
    }
}

/// Which service a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// RFC 862: every byte or datagram comes back.
    #[default]
    Echo,
    /// RFC 863: everything is read and thrown away; nothing is sent.
    Discard,
    /// RFC 864: a stream of rotating 72-character lines; over datagrams
    /// one datagram of them per datagram received.
    Chargen,
}

/// The service for a connection on `endpoint`: the HTTP reflection (and
/// WebSocket echo) on `http://`, `https://`, `ws://` and `wss://`, whatever
/// the mode; the mode's service (`Mode::service`) on every other stream.
pub fn for_endpoint<'s>(mode: Mode, endpoint: &Endpoint, http: &'s Http) -> &'s dyn Service {
    if endpoint.web().is_some() {
        http
    } else {
        mode.service()
    }
}

impl Mode {
    /// The service this mode names: the one place a mode becomes code.
    pub fn service(self) -> &'static dyn Service {
        match self {
            Mode::Echo => &Echo,
            Mode::Discard => &Discard,
            Mode::Chargen => &Chargen,
        }
    }
}
