//! The WebSocket echo (RFC 6455) of `http://` and `ws://` endpoints, once
//! a request has upgraded its connection (`super::http`), on
//! tokio-tungstenite.
//!
//! - Every text or binary message comes back as the same type with the
//!   same payload. A message sent in fragments is put together first (at
//!   most the message limit) and comes back whole, as one frame: the echo
//!   is of messages, as browsers and every WebSocket API see them, not of
//!   frames.
//! - A ping is answered with a pong carrying its payload; a pong is not
//!   answered.
//! - A close is answered with a close of the same code (and reason), then
//!   the connection ends; a close with a code the protocol forbids is
//!   answered with 1002.
//! - A message or frame over the limit closes the connection with 1009,
//!   a text message that is not UTF-8 with 1007, any other protocol error
//!   with 1002.
//! - Each message is written back before the next is read: a peer that
//!   never reads stalls only itself, and memory stays one message.

use std::io;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::metrics::{MessageType, Meter};

/// The WebSocket settings of the echo: messages and frames of at most
/// `max_message` bytes.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Echoes messages on `ws` until the peer closes (`Ok`) or the
/// connection fails.
pub async fn echo<S>(mut ws: WebSocketStream<S>, meter: Option<&Meter>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = match ws.next().await {
            // The peer's close was answered with its code (tungstenite
            // does that as it reads the close).
            None | Some(Err(Error::ConnectionClosed | Error::AlreadyClosed)) => return Ok(()),
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(refuse(&mut ws, e).await),
        };
        let kind = match &message {
            Message::Text(_) => MessageType::Text,
            Message::Binary(_) => MessageType::Binary,
            // Pings were answered as they were read; pongs need nothing;
            // a close is answered, and the stream then ends.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                continue;
            }
        };
        match ws.send(message).await {
            Ok(()) => {}
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => return Ok(()),
            Err(e) => return Err(io::Error::other(e)),
        }
        if let Some(meter) = meter {
            meter.message(kind);
        }
    }
}

/// Closes the connection with the code for what the peer did wrong (best
/// effort), and says it as an I/O error.
async fn refuse<S>(ws: &mut WebSocketStream<S>, e: Error) -> io::Error
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let code = match &e {
        Error::Capacity(_) => Some(CloseCode::Size),
        Error::Utf8(_) => Some(CloseCode::Invalid),
        Error::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    };
    if let Some(code) = code {
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        let _ = ws.close(Some(frame)).await;
    }
    match e {
        Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}
