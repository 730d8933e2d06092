//! Probes over a byte stream (TCP, Unix stream, TLS), and `--connect`.
//!
//! One probe is in flight at a time on one connection: the echo of probe k
//! is exactly the next `size` bytes. A reply that does not come within the
//! timeout leaves the stream out of step (its bytes may still arrive and
//! would be read as the next probe's echo), so the connection is dropped
//! and the next probe opens a new one.

use std::io;
use std::time::Instant;

use sockecho_flow::PingSchedule;
use sockecho_flow::probe::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use super::tally::{Order, Tally};
use super::{PingConfig, PingEvent, next_slot, since};
use crate::error::{Error, reason};
use crate::transport::Stream;

/// A connection, split so that a probe is written while its echo is read:
/// written whole before reading, a probe larger than the socket buffers
/// would deadlock against an echo server blocked on writing it back.
struct Connection {
    /// Reads the echo.
    reader: ReadHalf<Stream>,
    /// Writes the probe; dropped with `reader`, which closes the socket.
    writer: WriteHalf<Stream>,
}

impl Connection {
    /// Connects (with a PROXY header first when asked), and with
    /// `greeting_line` reads the server's greeting line: the connection,
    /// and the line for the caller to report.
    async fn open(config: &PingConfig) -> Result<(Connection, Option<String>), Error> {
        let tls = crate::transport::tls::client_for(&config.endpoint, &config.tls)?;
        let trace = crate::trace::Tracer::disabled();
        let mut stream = Stream::connect_via(
            &config.endpoint,
            config.timeout,
            &trace,
            tls.as_ref(),
            config.proxy.as_ref(),
        )
        .await?;
        // Over WebSocket, each probe is one binary message.
        stream.frame_messages(config.size);
        let line = if config.greeting_line {
            Some(greeting_line(&mut stream, config).await?)
        } else {
            None
        };
        let (reader, writer) = tokio::io::split(stream);
        Ok((Connection { reader, writer }, line))
    }

    /// Sends `probe` and reads back exactly as many bytes.
    async fn exchange(&mut self, probe: &[u8], echo: &mut [u8]) -> io::Result<()> {
        tokio::try_join!(self.writer.write_all(probe), self.reader.read_exact(echo))?;
        Ok(())
    }
}

/// How one probe's exchange ended.
enum Outcome {
    /// `size` bytes came back (checked afterwards).
    Echoed,
    /// The connection failed or the server closed it.
    Failed(io::Error),
    /// No full echo within the timeout.
    TimedOut,
    /// The user asked to stop.
    Stopped,
}

/// Pings a stream endpoint until `count` probes are done or `stop` fires.
pub(super) async fn run(
    config: &PingConfig,
    stop: &CancellationToken,
    report: &mut Tally<'_, '_>,
) -> Result<(), Error> {
    // Refused at the start is an error, not 100 % loss: the user most
    // likely has the wrong address.
    let (first, line) = Connection::open(config).await?;
    let mut connection = Some(first);
    let size = config.size;
    let start = report.begin(PingEvent::Begin { size })?;
    if let Some(line) = line {
        report.backend(&line)?;
    }
    // The two buffers of the run; nothing else is allocated per probe.
    let mut send = vec![0u8; size];
    let mut echo = vec![0u8; size];
    let mut schedule = PingSchedule::new(start, config.interval);
    let mut seq = 0u64;
    while config.count.is_none_or(|n| seq < n) && next_slot(&mut schedule, stop).await {
        report.sent();
        let conn = match &mut connection {
            Some(conn) => conn,
            None => match Connection::open(config).await {
                Ok((conn, line)) => {
                    if let Some(line) = line {
                        report.backend(&line)?;
                    }
                    connection.insert(conn)
                }
                Err(error) => {
                    report.emit(PingEvent::ConnectFailed { seq, error: &error })?;
                    seq += 1;
                    continue;
                }
            },
        };
        Probe::fill(seq, &mut send);
        let sent_at = Instant::now();
        let probe = Probe {
            seq,
            sent_ns: since(start, sent_at),
        };
        probe.write_header(&mut send);
        let exchange = tokio::time::timeout_at(
            (sent_at + config.timeout).into(),
            conn.exchange(&send, &mut echo),
        );
        let outcome = tokio::select! {
            _ = stop.cancelled() => Outcome::Stopped,
            done = exchange => match done {
                Ok(Ok(())) => Outcome::Echoed,
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => Outcome::TimedOut,
            },
        };
        match outcome {
            Outcome::Echoed => {
                let rtt = sent_at.elapsed();
                match probe.verify(&echo, size) {
                    Ok(()) => report.valid(size, seq, rtt, true, Order::default())?,
                    // Exactly `size` bytes were read, so the stream stays in
                    // step: keep the connection.
                    Err(how) => report.corrupt(size, seq, true, how)?,
                }
            }
            Outcome::Failed(e) => {
                connection = None;
                let why = if e.kind() == io::ErrorKind::UnexpectedEof {
                    "connection closed by the server".to_owned()
                } else {
                    reason(&e)
                };
                report.emit(PingEvent::Reconnecting { seq, why: &why })?;
            }
            Outcome::TimedOut => {
                connection = None;
                report.emit(PingEvent::Timeout { seq })?;
                report.emit(PingEvent::OutOfStep)?;
            }
            Outcome::Stopped => break,
        }
        seq += 1;
    }
    Ok(())
}

/// `--connect`: one new connection per probe, timing the handshake alone
/// (as tcping does), then closing it. Refusals and timeouts are lost probes.
pub(super) async fn handshakes(
    config: &PingConfig,
    stop: &CancellationToken,
    report: &mut Tally<'_, '_>,
) -> Result<(), Error> {
    // Resolve once, so that each probe times the handshake and not the
    // resolver.
    let endpoint = &config.endpoint;
    let addrs = endpoint
        .resolve()
        .await
        .map_err(|e| Error::connect(endpoint, e))?;
    let Some(&addr) = addrs.first() else {
        return Err(Error::connect(
            endpoint,
            io::Error::new(io::ErrorKind::NotFound, "no address"),
        ));
    };
    let target = endpoint.with_addr(addr);
    let start = report.begin(PingEvent::BeginHandshakes { addr })?;
    let mut schedule = PingSchedule::new(start, config.interval);
    let mut seq = 0u64;
    while config.count.is_none_or(|n| seq < n) && next_slot(&mut schedule, stop).await {
        report.sent();
        let began = Instant::now();
        let attempt =
            tokio::time::timeout(config.timeout, Stream::connect(&target, config.timeout));
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            result = attempt => result,
        };
        match result {
            Ok(Ok(mut stream)) => {
                // The handshake alone is timed; the header and the greeting
                // come after.
                let rtt = began.elapsed();
                let backend = tokio::select! {
                    _ = stop.cancelled() => break,
                    backend = after_handshake(&mut stream, &target, config) => backend,
                };
                drop(stream);
                match backend {
                    Ok(backend) => report.connected(seq, rtt, backend.as_deref())?,
                    Err(error) => report.emit(PingEvent::ConnectFailed { seq, error: &error })?,
                }
            }
            Ok(Err(error @ Error::Connect { .. })) if !matches!(&error, Error::Connect { source, .. } if source.kind() == io::ErrorKind::TimedOut) =>
            {
                report.emit(PingEvent::ConnectFailed { seq, error: &error })?;
            }
            Ok(Err(_)) | Err(_) => report.emit(PingEvent::Timeout { seq })?,
        }
        seq += 1;
    }
    Ok(())
}

/// `--connect`: what follows a timed handshake: the PROXY header, when
/// asked, and with `greeting_line` the line that names the backend.
async fn after_handshake(
    stream: &mut Stream,
    target: &crate::endpoint::Endpoint,
    config: &PingConfig,
) -> Result<Option<String>, Error> {
    if let Some(proxy) = &config.proxy {
        tokio::time::timeout(
            config.timeout,
            crate::transport::proxy::send_header(stream, proxy),
        )
        .await
        .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
        .map_err(|e| Error::connect(target, e))?;
    }
    if !config.greeting_line {
        return Ok(None);
    }
    greeting_line(stream, config).await.map(Some)
}

/// The server's greeting line, within the probe timeout.
async fn greeting_line(stream: &mut Stream, config: &PingConfig) -> Result<String, Error> {
    tokio::time::timeout(config.timeout, stream.read_greeting_line())
        .await
        .unwrap_or_else(|_| {
            let wait = crate::duration::format(config.timeout);
            Err(io::Error::other(format!("no greeting line within {wait}")))
        })
        .map_err(|e| Error::connect(&config.endpoint, e))
}
