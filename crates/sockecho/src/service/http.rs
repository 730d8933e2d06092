//! The application-layer echo of `http://`, `https://`, `ws://` and
//! `wss://` endpoints: every HTTP request is answered with a JSON
//! reflection of itself (`reflect.rs`), and a WebSocket upgrade turns the
//! connection into a WebSocket echo (`super::websocket`).
//!
//! hyper speaks the protocol: HTTP/1.1 with keep-alive, pipelining,
//! chunked bodies and HEAD; HTTP/2 where a TLS handshake settled on `h2`
//! by ALPN. Around it, per connection:
//!
//! - A tap on the stream (`Tap`) sees every byte hyper reads and writes:
//!   it counts them, notes progress for the idle timeout, and on HTTP/1
//!   follows the request heads as they arrived (`head.rs`), since hyper's
//!   `HeaderMap` keeps neither the case nor the order of names.
//! - A watch (`watch`) ends the connection when it makes no progress for
//!   the idle timeout, or, with a `408 Request Timeout`, when a request
//!   head has begun and is not whole within [`HttpLimits::head_timeout`]
//!   (hyper would only close).
//! - Each request's body is read within [`HttpLimits::max_body`] bytes
//!   (more: `413`) and [`HttpLimits::body_timeout`] (`408`); hyper refuses
//!   a head over [`HttpLimits::max_head`] bytes or
//!   [`HttpLimits::max_headers`] headers with `431`. Memory per connection
//!   is those bounds, whatever the peer sends.

mod head;
pub mod reflect;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use self::head::{Heads, RawHead};
use self::reflect::{Origin, Reflection};
use super::{Connection, Counts, Service, ServiceStream, Serving};
use crate::metrics::Meter;

/// Bytes a request head may take (request line and headers): hyper's read
/// buffer for the connection, so a body is read in pieces no larger.
pub const DEFAULT_MAX_HEAD: usize = 32 * 1024;

/// Headers a request may have.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Bytes a request body may have: it is held whole to be reflected.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Bytes a WebSocket message (or frame) may have: a fragmented message is
/// put together whole before it is echoed.
pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024;

/// How long a begun request head may take to arrive whole.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request body may take to arrive whole.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Streams one HTTP/2 connection may have open at once.
const MAX_STREAMS: u32 = 100;

/// How long the `408` answer may take to be written to a client that
/// stalled.
const TIMEOUT_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// What an HTTP connection may hold and take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Bytes of one request head; more: `431`.
    pub max_head: usize,
    /// Headers of one request; more: `431`.
    pub max_headers: usize,
    /// Bytes of one request body; more: `413`.
    pub max_body: usize,
    /// Bytes of one WebSocket message; more: closed with `1009`.
    pub max_message: usize,
    /// A begun head not whole within this: `408`.
    pub head_timeout: Duration,
    /// A body not whole within this: `408`.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_head: DEFAULT_MAX_HEAD,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body: DEFAULT_MAX_BODY,
            max_message: DEFAULT_MAX_MESSAGE,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// The HTTP reflection and WebSocket echo service.
#[derive(Debug, Clone)]
pub struct Http {
    limits: HttpLimits,
    /// This server's name, in every answer.
    id: String,
}

impl Http {
    /// The service with `limits`, answering as the server named `id`.
    pub fn new(limits: HttpLimits, id: impl Into<String>) -> Http {
        Http {
            limits,
            id: id.into(),
        }
    }
}

impl Service for Http {
    /// Serves HTTP on the connection until the client closes it (or asks
    /// to), a limit ends it, or it becomes a WebSocket that closes. A
    /// greeting is not sent: it would be read as a malformed response.
    fn serve<'a>(&'a self, c: Connection<'a>) -> Serving<'a> {
        Box::pin(serve(self, c))
    }

    /// HTTP is not served over datagrams.
    fn reply(&self, _buf: &mut [u8], _len: usize) -> Option<usize> {
        None
    }
}

/// What a connection's tap, watch and request handler share.
#[derive(Debug)]
struct Shared {
    start: Instant,
    /// HTTP/1 heads as they arrived, oldest first, for the handler.
    heads: Mutex<VecDeque<RawHead>>,
    /// When the head now arriving began (ms since `start`, plus one); 0:
    /// none is arriving.
    head_since: AtomicU64,
    /// When a byte last moved either way (ms since `start`).
    last_progress: AtomicU64,
    /// Bytes were written since the last flush: a response is under way.
    unflushed: AtomicBool,
    /// The handler answered an upgrade to WebSocket.
    upgraded: AtomicBool,
    /// Requests answered.
    requests: AtomicU64,
    /// Wakes the watch when a head begins.
    head_begun: Notify,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            start: Instant::now(),
            heads: Mutex::new(VecDeque::new()),
            head_since: AtomicU64::new(0),
            last_progress: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            head_begun: Notify::new(),
        }
    }

    /// Milliseconds since the connection began.
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn progress(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }
}

/// The stream as hyper and the WebSocket see it: every byte counted and
/// followed on its way.
struct Tap<'a> {
    io: &'a mut dyn ServiceStream,
    counts: &'a mut Counts,
    shared: Arc<Shared>,
    /// HTTP/1: the heads, followed; `None` on HTTP/2 and once a WebSocket.
    heads: Option<Heads>,
}

impl Tap<'_> {
    /// Follows bytes just read: heads completed go to the handler; a head
    /// beginning starts its clock.
    fn follow(&mut self, bytes: &[u8]) {
        let Some(heads) = self.heads.as_mut() else {
            return;
        };
        heads.feed(bytes);
        let mut done = None;
        while let Some(head) = heads.take() {
            done.get_or_insert_with(Vec::new).push(head);
        }
        if let Some(done) = done {
            self.shared
                .heads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(done);
        }
        let begun = heads.head_begun();
        let since = self.shared.head_since.load(Ordering::Relaxed);
        if begun && since == 0 {
            self.shared
                .head_since
                .store(self.shared.now() + 1, Ordering::Relaxed);
            self.shared.head_begun.notify_one();
        } else if !begun && since != 0 {
            self.shared.head_since.store(0, Ordering::Relaxed);
        }
        if heads.stopped() {
            self.heads = None;
        }
    }
}

impl Drop for Tap<'_> {
    fn drop(&mut self) {
        self.counts.requests = Some(self.shared.requests.load(Ordering::Relaxed));
    }
}

impl AsyncRead for Tap<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.counts.bytes_in += new.len() as u64;
                this.shared.progress();
                if this.heads.is_some() {
                    this.follow(new);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Tap<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.counts.bytes_out += n as u64;
            this.shared.unflushed.store(true, Ordering::Relaxed);
            this.shared.progress();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.counts.bytes_out += n as u64;
            this.shared.unflushed.store(true, Ordering::Relaxed);
            this.shared.progress();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            this.shared.unflushed.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

/// Why the watch ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stalled {
    /// A request head began and did not arrive whole in time.
    Head,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Completes when the connection stalls: a head begun and not whole
/// within `head_timeout` (when given), or no byte moved for `idle`.
async fn watch(shared: &Shared, idle: Option<Duration>, head_timeout: Option<Duration>) -> Stalled {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    loop {
        // Registered before the state is read: a head that begins after
        // the read still wakes this loop.
        let begun = shared.head_begun.notified();
        let now = shared.now();
        let head = match (head_timeout, shared.head_since.load(Ordering::Relaxed)) {
            (Some(limit), since) if since > 0 => Some(since - 1 + ms(limit)),
            _ => None,
        };
        if head.is_some_and(|due| now >= due) {
            return Stalled::Head;
        }
        let quiet = idle.map(|limit| shared.last_progress.load(Ordering::Relaxed) + ms(limit));
        if quiet.is_some_and(|due| now >= due) {
            return Stalled::Idle;
        }
        let next = match (head, quiet) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wake = async {
            match next {
                Some(due) => {
                    tokio::time::sleep_until(shared.start + Duration::from_millis(due)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake => {}
            () = begun => {}
        }
    }
}

/// What every request of one connection needs: `'static`, since HTTP/2
/// runs each stream's handler as a task of its own.
#[derive(Debug)]
struct Handler {
    limits: HttpLimits,
    origin: Origin,
    shared: Arc<Shared>,
    meter: Option<Arc<Meter>>,
}

/// An answer's body: the JSON (or an error), or bytes of a given size.
type Body = Either<Full<Bytes>, Filler>;

async fn serve(http: &Http, c: Connection<'_>) -> io::Result<()> {
    let Connection {
        stream,
        counts,
        about,
        idle,
        ..
    } = c;
    let mut origin = Origin::of(&about.facts, about.peer, about.local, &http.id);
    origin.endpoint = about.endpoint.map(ToString::to_string).unwrap_or_default();
    let h2 = about
        .facts
        .tls
        .is_some_and(|tls| tls.alpn.as_deref() == Some("h2"));
    let shared = Arc::new(Shared::new());
    let handler = Arc::new(Handler {
        limits: http.limits,
        origin,
        shared: shared.clone(),
        meter: about.meter.cloned(),
    });
    let service = {
        let handler = handler.clone();
        hyper::service::service_fn(move |request| handler.clone().handle(request))
    };
    let limits = http.limits;
    if h2 {
        let tap = Tap {
            io: &mut *stream,
            counts: &mut *counts,
            shared: shared.clone(),
            heads: None,
        };
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_STREAMS);
        let conn = builder.serve_connection(TokioIo::new(tap), service);
        return tokio::select! {
            done = conn => done.map_err(|e| http_error(&e, handler.meter.as_deref())),
            _ = watch(&shared, idle, None) => Err(super::idle::timed_out()),
        };
    }
    let tap = Tap {
        io: &mut *stream,
        counts: &mut *counts,
        shared: shared.clone(),
        heads: Some(Heads::new(limits.max_head, limits.max_headers)),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // A client that sends its request, then shuts its side down (`nc
        // -N`, `sockecho connect`), still reads the answer.
        .half_close(true)
        .max_buf_size(limits.max_head.max(8192))
        .max_header_size(limits.max_head)
        .max_headers(limits.max_headers);
    let stalled = {
        let mut conn = Box::pin(
            builder
                .serve_connection(TokioIo::new(tap), service)
                .without_shutdown(),
        );
        let ended = tokio::select! {
            done = conn.as_mut() => Ok(done),
            stalled = watch(&shared, idle, Some(limits.head_timeout)) => Err(stalled),
        };
        // hyper lets go of the stream (and the tap counts its requests).
        drop(conn);
        match ended {
            Ok(Ok(parts)) => {
                let read_buf = parts.read_buf;
                let mut tap = parts.io.into_inner();
                if !shared.upgraded.load(Ordering::Relaxed) {
                    // The client closed, or asked to: end our side too.
                    return tap.shutdown().await;
                }
                // The bytes after the upgrade request are WebSocket
                // frames, not heads.
                tap.heads = None;
                let config = super::websocket::config(limits.max_message);
                let ws = tokio_tungstenite::WebSocketStream::from_partially_read(
                    tap,
                    read_buf.to_vec(),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    Some(config),
                )
                .await;
                return tokio::select! {
                    done = super::websocket::echo(ws, handler.meter.as_deref()) => done,
                    _ = watch(&shared, idle, None) => Err(super::idle::timed_out()),
                };
            }
            Ok(Err(e)) => return Err(http_error(&e, handler.meter.as_deref())),
            Err(stalled) => stalled,
        }
    };
    if stalled == Stalled::Idle {
        return Err(super::idle::timed_out());
    }
    // A head began and did not come whole. hyper is not in the middle of
    // an answer (nothing unflushed): the 408 is the next thing the client
    // reads.
    if !shared.unflushed.load(Ordering::Relaxed) {
        let answer =
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let sent = tokio::time::timeout(TIMEOUT_ANSWER_WAIT, async {
            stream.write_all(answer).await?;
            stream.shutdown().await
        })
        .await;
        if matches!(sent, Ok(Ok(()))) {
            counts.bytes_out += answer.len() as u64;
            if let Some(meter) = &handler.meter {
                meter.answered(408);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no whole request head within {}",
            crate::duration::format(limits.head_timeout)
        ),
    ))
}

/// The error a connection ended with, as an I/O error; a request hyper
/// refused and answered itself (400, 414, 431) is counted as answered.
fn http_error(e: &hyper::Error, meter: Option<&Meter>) -> io::Error {
    if let Some(meter) = meter {
        if e.is_parse_too_large() {
            meter.answered(431);
        } else if e.is_parse() {
            meter.answered(400);
        }
    }
    io::Error::other(e.to_string())
}

impl Handler {
    /// Answers one request, counting it.
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let response = self.answer(request).await;
        if let Some(meter) = &self.meter {
            meter.answered(response.status().as_u16());
        }
        Ok(response)
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        let version = match request.version() {
            hyper::Version::HTTP_09 => "HTTP/0.9",
            hyper::Version::HTTP_10 => "HTTP/1.0",
            hyper::Version::HTTP_11 => "HTTP/1.1",
            hyper::Version::HTTP_2 => "HTTP/2",
            hyper::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP",
        };
        let target = request.uri().to_string();
        // The head as it arrived (HTTP/1), if it is this request's; else
        // as hyper has it (names lowercase, repeats together).
        let raw = self
            .shared
            .heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .filter(|raw| {
                raw.method == request.method().as_str()
                    && raw.target == target
                    && raw.headers.len() == request.headers().len()
            });
        let (target, headers) = match raw {
            Some(raw) => (raw.target, raw.headers),
            None => {
                let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
                // HTTP/2 has no Host header: its `:authority` stands in.
                if !request.headers().contains_key(header::HOST)
                    && let Some(authority) = request.uri().authority()
                {
                    headers.push((
                        ":authority".to_owned(),
                        authority.as_str().as_bytes().to_vec(),
                    ));
                }
                headers.extend(
                    request
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())),
                );
                let target = request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| target.clone(), |pq| pq.as_str().to_owned());
                (target, headers)
            }
        };
        if request.version() == hyper::Version::HTTP_11 && wants_websocket(&request) {
            return self.upgrade(&request);
        }
        let (_, query) = reflect::split_target(&target);
        let knobs = match reflect::knobs(
            headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            query,
        ) {
            Ok(knobs) => knobs,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        };
        let max = self.limits.max_body;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            // Refused before a byte of it is read (and before `100
            // Continue`, for a client that waits for one).
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is over {max} bytes"),
            );
        }
        let method = request.method().as_str().to_owned();
        let read = Limited::new(request.into_body(), max).collect();
        let body = match tokio::time::timeout(self.limits.body_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is over {max} bytes"),
                );
            }
            Ok(Err(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body could not be read: {e}"),
                );
            }
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "no whole body within {}",
                        crate::duration::format(self.limits.body_timeout)
                    ),
                );
            }
        };
        if let Some(delay) = knobs.delay {
            tokio::time::sleep(delay).await;
        }
        let status = knobs
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let mut response = match knobs.size {
            Some(size) => {
                let mut response = Response::new(Either::Right(Filler { left: size }));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            None => {
                let reflection =
                    Reflection::of(&method, &target, version, &headers, &body, &self.origin);
                json(&reflection)
            }
        };
        *response.status_mut() = status;
        if matches!(status.as_u16(), 204 | 304) {
            *response.body_mut() = Either::Left(Full::new(Bytes::new()));
        }
        for (name, value) in knobs.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }

    /// The answer to a WebSocket upgrade request (RFC 6455 section 4.2):
    /// `101 Switching Protocols`, after which the connection is the
    /// WebSocket echo; or why it cannot be.
    fn upgrade(&self, request: &Request<Incoming>) -> Response<Body> {
        let version = request
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .and_then(|v| v.to_str().ok());
        if version.map(str::trim) != Some("13") {
            let mut response = error(
                StatusCode::UPGRADE_REQUIRED,
                "this server speaks WebSocket version 13",
            );
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return response;
        }
        let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
            return error(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key header");
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        self.shared.upgraded.store(true, Ordering::Relaxed);
        response
    }
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket` with
/// `Connection: upgrade`, on GET).
fn wants_websocket(request: &Request<Incoming>) -> bool {
    let has = |name: HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    request.method() == hyper::Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

/// A JSON answer, indented for people (keys in the order of the
/// contract), each header pair on one line.
fn json(value: &impl serde::Serialize) -> Response<Body> {
    let mut text = collapse_flat_arrays(&serde_json::to_vec_pretty(value).unwrap_or_default());
    text.push(b'\n');
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(text))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Pretty JSON with every array that holds no array or object (a
/// header's `["Host", "x"]`) written on one line.
fn collapse_flat_arrays(pretty: &[u8]) -> Vec<u8> {
    /// The end of the string starting at `start` (its closing quote).
    fn string_end(text: &[u8], start: usize) -> usize {
        let mut i = start + 1;
        while i < text.len() && text[i] != b'"' {
            i += if text[i] == b'\\' { 2 } else { 1 };
        }
        i.min(text.len().saturating_sub(1))
    }
    let mut out = Vec::with_capacity(pretty.len());
    let mut i = 0;
    while i < pretty.len() {
        match pretty[i] {
            b'"' => {
                let end = string_end(pretty, i);
                out.extend_from_slice(&pretty[i..=end]);
                i = end + 1;
            }
            b'[' => {
                // Its items, if it holds only plain values.
                let mut items = Vec::new();
                let mut item = Vec::new();
                let mut j = i + 1;
                let end = loop {
                    match pretty.get(j) {
                        None | Some(b'[' | b'{') => break None,
                        Some(b']') => break Some(j),
                        Some(b'"') => {
                            let close = string_end(pretty, j);
                            item.extend_from_slice(&pretty[j..=close]);
                            j = close + 1;
                            continue;
                        }
                        Some(b',') => items.push(std::mem::take(&mut item)),
                        Some(c) if c.is_ascii_whitespace() => {}
                        Some(&c) => item.push(c),
                    }
                    j += 1;
                };
                match end {
                    Some(end) => {
                        if !item.is_empty() {
                            items.push(item);
                        }
                        out.push(b'[');
                        out.extend_from_slice(&items.join(&b", "[..]));
                        out.push(b']');
                        i = end + 1;
                    }
                    None => {
                        out.push(b'[');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// An error answer: `{"error": why}` with `status`.
fn error(status: StatusCode, why: &str) -> Response<Body> {
    let mut response = json(&serde_json::json!({ "error": why }));
    *response.status_mut() = status;
    response
}

/// What a size-knob answer is made of: one static block, sent as many
/// times as it takes, so any size costs no memory.
static FILL: [u8; 64 * 1024] = {
    let mut block = [0u8; 64 * 1024];
    let digits = b"0123456789abcdef";
    let mut i = 0;
    while i < block.len() {
        block[i] = digits[i % digits.len()];
        i += 1;
    }
    block
};

/// A body of a given size: the fill pattern, repeated.
#[derive(Debug)]
pub struct Filler {
    left: u64,
}

impl hyper::body::Body for Filler {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(FILL.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILL[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::collapse_flat_arrays;

    #[test]
    fn pretty_json_reads_back_the_same_with_pairs_on_one_line() {
        let value = serde_json::json!({
            "method": "GET",
            "headers": [["Host", "a \"quoted\" [b], {c}"], ["X-Empty", ""], ["X-Ü", "ü ✓"]],
            "forwarded": [{"for": "192.0.2.1", "proto": "https"}],
            "empty": {},
            "none": [],
            "n": [1.5, true, null],
        });
        let text = collapse_flat_arrays(&serde_json::to_vec_pretty(&value).unwrap());
        let text = String::from_utf8(text).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        assert!(
            text.contains("    [\"Host\", \"a \\\"quoted\\\" [b], {c}\"],\n"),
            "{text}"
        );
        assert!(text.contains("\"n\": [1.5, true, null]"), "{text}");
    }
}
