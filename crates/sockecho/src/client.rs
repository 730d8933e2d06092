//! `sockecho connect`: standard input (or `-m` messages) to the socket, the
//! socket to standard output, with a proper half-close.
//!
//! Written over any `AsyncRead` input and `AsyncWrite` output, so that the
//! binary passes standard input and output and tests pass buffers.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::endpoint::{Endpoint, Kind};
use crate::error::Error;
use crate::trace::Tracer;
use crate::transport::{Datagram, Stream};

/// How long a stream connect may take when no timeout is given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a datagram's reply when no timeout is given.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a datagram waits for its reply before it is sent again (then
/// twice as long each time, within the timeout).
pub const RETRY_FIRST: Duration = Duration::from_millis(25);

/// What `connect` sends and how long it waits.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// The server.
    pub endpoint: Endpoint,
    /// `-m` messages, each sent followed by `\n` (stream) or as one
    /// datagram; `None` means copy the input instead.
    pub messages: Option<Vec<String>>,
    /// Stream: the connect timeout. Datagram: how long to wait for each
    /// reply. `None` picks the defaults above.
    pub timeout: Option<Duration>,
    /// How a `tls://` server is verified.
    pub tls: crate::transport::tls::ClientTlsOptions,
    /// Streams: send a PROXY protocol header first, as a load balancer
    /// would.
    pub proxy: Option<crate::transport::proxy::ProxyClient>,
}

/// Runs the client: sends `input` (or the messages) and writes what comes
/// back to `output`, until the server closes (stream) or every datagram is
/// answered. `trace` follows the stream socket's calls and the kernel's
/// view of it (datagram sockets are not traced), and after the close the
/// connection itself (into TIME_WAIT) up to the tracer's bound
/// ([`Tracer::follow_for`]) before returning.
///
/// A closed `output` (a reader such as `head` that has seen enough) ends the
/// client successfully, as it does for `cat`.
pub async fn connect<I, O>(
    config: &ConnectConfig,
    trace: &Tracer,
    input: I,
    output: O,
) -> Result<(), Error>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let result = match config.endpoint.kind() {
        Kind::Stream => stream_client(config, trace, input, output).await,
        Kind::Datagram => datagram_client(config, input, output).await,
    };
    match result {
        Err(e) if e.is_closed_output() => Ok(()),
        other => other,
    }
}

async fn stream_client<I, O>(
    config: &ConnectConfig,
    trace: &Tracer,
    input: I,
    output: O,
) -> Result<(), Error>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let endpoint = &config.endpoint;
    let timeout = config.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let tls = crate::transport::tls::client_for(endpoint, &config.tls)?;
    let stream = Stream::connect_via(
        endpoint,
        timeout,
        trace,
        tls.as_ref(),
        config.proxy.as_ref(),
    )
    .await?;
    // Trace lines name the peer as the server's name us: by its address.
    let peer = if trace.is_enabled() {
        stream
            .peer()
            .map_or_else(|_| endpoint.to_string(), |p| p.to_string())
    } else {
        String::new()
    };
    let result = exchange(config, trace, stream, &peer, input, output).await;
    // The socket is closed by now: the trace follows the connection
    // (into TIME_WAIT, this side having closed first) up to its bound.
    trace.followed().await;
    result
}

/// The stream client's exchange on `stream`, to the end of both
/// directions; the stream is closed when it returns.
async fn exchange<I, O>(
    config: &ConnectConfig,
    trace: &Tracer,
    stream: Stream,
    peer: &str,
    mut input: I,
    mut output: O,
) -> Result<(), Error>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let endpoint = &config.endpoint;
    // Valid while either half lives: both live to the end of this function.
    let tcp = stream.tcp_fd();
    let (mut from_server, mut to_server) = tokio::io::split(stream);

    let send = async {
        match &config.messages {
            Some(messages) => {
                for message in messages {
                    to_server.write_all(message.as_bytes()).await?;
                    to_server.write_all(b"\n").await?;
                }
            }
            None => {
                tokio::io::copy(&mut input, &mut to_server).await?;
            }
        }
        // End of input: half-close, so the server sees the end of the
        // stream and closes after echoing what is still in flight.
        to_server.shutdown().await?;
        trace.shutdown(&peer, "write", tcp);
        io::Result::Ok(())
    };
    let receive = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from_server
                .read(&mut buf)
                .await
                .map_err(|e| Error::io(format!("receiving from {endpoint}"), e))?;
            if n == 0 {
                trace.eof(&peer, tcp);
                break;
            }
            output.write_all(&buf[..n]).await.map_err(Error::Output)?;
            // Interactive use: show each reply as it arrives.
            output.flush().await.map_err(Error::Output)?;
        }
        Ok(())
    };
    // Tracing: the connection sampled every interval while it lives.
    let sampler = trace.sample_every(&peer, tcp);
    tokio::pin!(send, receive, sampler);
    let mut sending = true;
    let result = loop {
        tokio::select! {
            sent = &mut send, if sending => {
                sending = false;
                if let Err(e) = sent {
                    // The server closing first is its right (the lesson's
                    // server sends and closes); we still print what it sent.
                    if !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                        break Err(Error::io(format!("sending to {endpoint}"), e));
                    }
                }
            }
            received = &mut receive => break received,
            never = &mut sampler, if trace.is_enabled() => match never {},
        }
    };
    trace.close(&peer, tcp);
    result
}

async fn datagram_client<I, O>(config: &ConnectConfig, input: I, mut output: O) -> Result<(), Error>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let endpoint = &config.endpoint;
    let timeout = config.timeout.unwrap_or(DEFAULT_REPLY_TIMEOUT);
    let mut socket = Datagram::connect(endpoint).await?;
    // A name's other addresses, tried in turn while the one in use is
    // refused before anything came back (`localhost` is `::1` first on
    // many hosts, and the server may be on 127.0.0.1 only).
    let mut others = match endpoint {
        crate::endpoint::Endpoint::Udp(_) => endpoint.resolve().await.unwrap_or_default(),
        _ => Vec::new(),
    }
    .into_iter()
    .skip(1);
    let mut answered = false;
    let mut reply = vec![0u8; socket.max_datagram()];
    // The last message sent more than once: a late reply to it must not
    // be taken for the reply to the next.
    let mut resent: Option<Vec<u8>> = None;
    let mut exchange = async |message: &[u8]| -> Result<(), Error> {
        let mut sent = socket.send(message).await;
        // A datagram or its reply may be lost (or held back by a server's
        // loop guard, when the same bytes go back and forth): send it again
        // after RETRY_FIRST, then twice as long each time, until the
        // timeout, as DNS and TFTP clients do.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = RETRY_FIRST.min(timeout);
        let mut sent_again = false;
        let n = loop {
            let received = match sent {
                Ok(_) => {
                    let until = (tokio::time::Instant::now() + wait).min(deadline);
                    tokio::time::timeout_at(until, socket.recv(&mut reply)).await
                }
                Err(e) => Ok(Err(e)),
            };
            match received {
                Ok(Ok(n)) => {
                    let stale = resent
                        .as_deref()
                        .is_some_and(|old| old != message && old == &reply[..n]);
                    if !stale {
                        answered = true;
                        break n;
                    }
                    sent = Ok(0);
                }
                // Nobody there: the name's next address, if nothing came
                // back from this one yet.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused && !answered => {
                    let Some(next) = others.next() else {
                        return Err(Error::connect(endpoint, e));
                    };
                    socket = Datagram::connect_ip(next)
                        .await
                        .map_err(|e| Error::connect(endpoint, e))?;
                    sent = socket.send(message).await;
                }
                Ok(Err(e)) => return Err(Error::connect(endpoint, e)),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::NoReply {
                        endpoint: endpoint.to_string(),
                        timeout,
                    });
                }
                Err(_) => {
                    sent = socket.send(message).await;
                    sent_again = true;
                    wait *= 2;
                }
            }
        };
        if sent_again {
            resent = Some(message.to_vec());
        }
        output.write_all(&reply[..n]).await.map_err(Error::Output)?;
        output.write_all(b"\n").await.map_err(Error::Output)?;
        output.flush().await.map_err(Error::Output)
    };
    match &config.messages {
        Some(messages) => {
            for message in messages {
                exchange(message.as_bytes()).await?;
            }
        }
        None => {
            let mut lines = BufReader::new(input);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = lines
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| Error::io("reading standard input", e))?;
                if n == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                exchange(&line).await?;
            }
        }
    }
    Ok(())
}
