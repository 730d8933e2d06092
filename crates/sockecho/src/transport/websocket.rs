//! The client side of `ws://` and `wss://` endpoints: a WebSocket
//! connection (on tokio-tungstenite) seen as a byte stream, so that
//! `connect`, `ping` and `bench` drive it exactly as they drive TCP.
//!
//! What is written becomes messages by a [`Framing`]:
//!
//! - [`Framing::Lines`] (the default, for `connect`): each line written,
//!   without its `\n`, is one message: text when it is UTF-8, binary
//!   otherwise. Each message read comes out as its payload and a `\n`.
//! - [`Framing::Fixed`] (for `ping` and `bench`): every `N` bytes written
//!   are one binary message, whatever the writes' sizes; the payloads read
//!   come out back to back. An echo of messages is then an echo of bytes,
//!   and every check the stream clients make (byte for byte, in order)
//!   holds over WebSocket too.
//!
//! Pings from the server are answered; a close ends what is read (the
//! close is answered with its code); a half-close (`shutdown`) sends a
//! close frame and the reading goes on until the server's close.

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use super::Stream;
use crate::endpoint::Endpoint;
use crate::error::Error;

/// The longest line [`Framing::Lines`] holds before sending it as it is:
/// input without line ends cannot grow memory without bound.
pub const MAX_LINE: usize = 1 << 20;

/// How written bytes become messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each line (without its `\n`) is one message; each message read is
    /// its payload and a `\n`.
    Lines,
    /// Every this many bytes are one binary message; payloads read come
    /// back to back.
    Fixed(NonZeroUsize),
}

/// A client WebSocket connection as a byte stream (see the module's
/// documentation).
pub struct WsStream {
    ws: WebSocketStream<Stream>,
    framing: Framing,
    /// The message being written, not yet whole.
    partial: Vec<u8>,
    /// A whole message the connection has not taken yet.
    pending: Option<Message>,
    /// Handed over and not yet flushed.
    unflushed: bool,
    /// The payload being read, and how much of it was handed out.
    reading: Bytes,
    read_off: usize,
    /// [`Framing::Lines`]: the `\n` after the payload is still due.
    newline: bool,
    /// The server closed: reads return the end of the stream.
    eof: bool,
}

impl std::fmt::Debug for WsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("framing", &self.framing)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// The WebSocket opening handshake (RFC 6455 section 4.1) on `stream`,
/// connected (and through TLS, for `wss://`) to `endpoint`, bounded by
/// `timeout`.
pub(crate) async fn handshake(
    stream: Stream,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<WsStream, Error> {
    let url = endpoint.to_string();
    let shake = tokio_tungstenite::client_async_with_config(url.as_str(), stream, None);
    let (ws, _response) = tokio::time::timeout(timeout, shake)
        .await
        .map_err(|_| Error::connect(endpoint, io::ErrorKind::TimedOut.into()))?
        .map_err(|e| {
            let why = match e {
                WsError::Io(e) => e,
                WsError::Http(response) => io::Error::other(format!(
                    "the server answered the WebSocket upgrade with HTTP {} (not 101 Switching Protocols)",
                    response.status()
                )),
                WsError::Protocol(p) => io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no WebSocket handshake: {p} (is it a WebSocket server?)"),
                ),
                other => io::Error::other(format!("WebSocket handshake failed: {other}")),
            };
            Error::connect(endpoint, why)
        })?;
    Ok(WsStream::new(ws))
}

/// Maps a WebSocket error to the I/O error the stream clients expect.
fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl WsStream {
    fn new(ws: WebSocketStream<Stream>) -> WsStream {
        WsStream {
            ws,
            framing: Framing::Lines,
            partial: Vec::new(),
            pending: None,
            unflushed: false,
            reading: Bytes::new(),
            read_off: 0,
            newline: false,
            eof: false,
        }
    }

    /// Sets how written bytes become messages (and read ones come out).
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
    }

    /// The byte stream under the WebSocket.
    pub fn get_ref(&self) -> &Stream {
        self.ws.get_ref()
    }

    /// A whole message from the bytes gathered.
    fn take_message(&mut self) -> Message {
        let payload = std::mem::take(&mut self.partial);
        match self.framing {
            Framing::Lines => match String::from_utf8(payload) {
                Ok(text) => Message::text(text),
                Err(e) => Message::binary(e.into_bytes()),
            },
            Framing::Fixed(_) => Message::binary(payload),
        }
    }

    /// Hands the pending message to the connection (Pending while it has
    /// no room), then starts writing it out.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
            if let Some(message) = self.pending.take() {
                Pin::new(&mut self.ws)
                    .start_send(message)
                    .map_err(io_error)?;
                self.unflushed = true;
            }
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io_error)?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// [`poll_out`](WsStream::poll_out), where waiting is not an answer:
    /// only an error matters (the waker is set either way).
    fn push_out(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_out(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            ready!(this.poll_out(cx))?;
        }
        let taken = match this.framing {
            Framing::Fixed(size) => {
                let n = buf.len().min(size.get() - this.partial.len());
                this.partial.extend_from_slice(&buf[..n]);
                if this.partial.len() == size.get() {
                    this.pending = Some(this.take_message());
                }
                n
            }
            Framing::Lines => match buf.iter().position(|&b| b == b'\n') {
                Some(end) if this.partial.len() + end <= MAX_LINE => {
                    this.partial.extend_from_slice(&buf[..end]);
                    this.pending = Some(this.take_message());
                    end + 1
                }
                _ => {
                    let n = buf.len().min(MAX_LINE - this.partial.len());
                    this.partial.extend_from_slice(&buf[..n]);
                    if this.partial.len() == MAX_LINE {
                        this.pending = Some(this.take_message());
                    }
                    n
                }
            },
        };
        this.push_out(cx)?;
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_out(cx)
    }

    /// Sends what is left as a last message, then a close frame: the
    /// server answers it with its own, which ends what is read.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        if !this.partial.is_empty() {
            this.pending = Some(this.take_message());
            ready!(this.poll_out(cx))?;
        }
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What was written goes out even while the writer waits on the
        // echo (a message handed over is flushed here too).
        this.push_out(cx)?;
        loop {
            if this.read_off < this.reading.len() {
                let n = buf.remaining().min(this.reading.len() - this.read_off);
                buf.put_slice(&this.reading[this.read_off..this.read_off + n]);
                this.read_off += n;
                return Poll::Ready(Ok(()));
            }
            if this.newline {
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                buf.put_slice(b"\n");
                this.newline = false;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let payload = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    this.eof = true;
                    continue;
                }
                // Answered as it was read (tungstenite queues the answer
                // and writes it out with the next read or write).
                Some(Ok(Message::Close(_))) => {
                    this.eof = true;
                    let _ = this.push_out(cx);
                    continue;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => Bytes::from(text),
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            };
            this.reading = payload;
            this.read_off = 0;
            this.newline = this.framing == Framing::Lines;
        }
    }
}
