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
    async fn open(config: &PingConfig) -> Result<Connection, Error> {
        let tls = crate::transport::tls::client_for(&config.endpoint, &config.tls)?;
        let trace = crate::trace::Tracer::disabled();
        let stream =
            Stream::connect_with(&config.endpoint, config.timeout, &trace, tls.as_ref()).await?;
        let (reader, writer) = tokio::io::split(stream);
        Ok(Connection { reader, writer })
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
    let mut connection = Some(Connection::open(config).await?);
    let size = config.size;
    let start = report.begin(PingEvent::Begin { size })?;
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
                Ok(conn) => connection.insert(conn),
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
            Ok(Ok(stream)) => {
                let rtt = began.elapsed();
                drop(stream);
                report.connected(seq, rtt)?;
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
