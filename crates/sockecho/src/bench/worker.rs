//! The bench's threads: each connects its share of the connections on its
//! own single-threaded runtime (the same connect for every driver), waits
//! for the common start, drives them (on that runtime, or on an io_uring
//! ring: `uring.rs` for streams, `uring_dgram.rs` for UDP), and hands back
//! their tallies and latencies.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockecho_flow::Tally;
use sockecho_measure::histogram::LatencyHistogram;

use super::{Shared, ThreadResult, datagram, record, stream};
use crate::endpoint::{Endpoint, Kind};
use crate::error::Error;
use crate::transport::{Datagram, Stream};

/// How long one connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

enum Conn {
    Stream(Stream),
    Datagram(Datagram),
}

impl Conn {
    /// The socket, off tokio's reactor, for an io_uring ring.
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        match self {
            Conn::Stream(s) => s.into_fd(),
            Conn::Datagram(d) => d.into_fd(),
        }
    }
}

/// What a worker thread connects to, and how it drives.
pub(super) struct Target {
    pub(super) endpoint: Endpoint,
    pub(super) kind: Kind,
    /// The TLS client, for `tls://` endpoints.
    pub(super) tls: Option<crate::transport::tls::ClientTls>,
    /// Drive on an io_uring ring rather than on tokio.
    pub(super) uring: bool,
    /// Which thread of the run this is.
    pub(super) thread: usize,
    /// The source addresses connections spread over (`--source`).
    pub(super) sources: Option<super::source::Sources>,
    /// Streams: a PROXY protocol header sent first on each connection.
    pub(super) proxy: Option<crate::transport::proxy::ProxyClient>,
    /// Bytes per message (over WebSocket, one binary message each).
    pub(super) message_size: usize,
    /// Streams: read each connection's greeting line (its backend) first.
    pub(super) greeting_line: bool,
}

/// What a worker thread reports once its connections are made.
pub(super) struct Ready {
    /// Which thread reports.
    pub(super) thread: usize,
    pub(super) connected: usize,
    pub(super) errors: u64,
    pub(super) first_error: Option<Error>,
    /// How long each connection that was made took to establish.
    pub(super) connect_times: LatencyHistogram,
    /// `greeting_line`: each connection's line, by connection.
    pub(super) backends: Vec<(usize, String)>,
}

/// One bench thread: connects connections `ids`, waits for the common
/// start, drives them all, and hands back the tallies.
pub(super) fn worker(
    ids: Vec<usize>,
    target: Target,
    ready_tx: tokio::sync::mpsc::Sender<Ready>,
    go_rx: std::sync::mpsc::Receiver<Arc<Shared>>,
    done_tx: tokio::sync::oneshot::Sender<ThreadResult>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready_tx.blocking_send(Ready {
                thread: target.thread,
                connected: 0,
                errors: ids.len() as u64,
                first_error: Some(Error::io("starting a bench runtime", e)),
                connect_times: LatencyHistogram::new(),
                backends: Vec::new(),
            });
            return;
        }
    };
    let (conns, ready) = runtime.block_on(connect_all(ids, &target));
    let nothing = conns.is_empty();
    if ready_tx.blocking_send(ready).is_err() || nothing {
        return;
    }
    drop(ready_tx);
    let Ok(shared) = go_rx.recv() else { return };
    record::begin(target.thread);
    let tallies = if target.uring {
        drive_uring(conns, target.kind, &shared)
    } else {
        runtime.block_on(drive_tokio(conns, &shared))
    };
    record::finish(&shared);
    let _ = done_tx.send((tallies, record::take_latencies()));
}

/// Connects every connection of this thread, at once.
async fn connect_all(ids: Vec<usize>, target: &Target) -> (Vec<(usize, Conn)>, Ready) {
    let mut connecting = tokio::task::JoinSet::new();
    for id in ids {
        let endpoint = target.endpoint.clone();
        let tls = target.tls.clone();
        let kind = target.kind;
        let from = target.sources.map(|s| s.for_connection(id));
        let (proxy, greeting_line) = (target.proxy, target.greeting_line);
        let message_size = target.message_size;
        connecting.spawn(async move {
            // Timed from here: the TLS handshake is part of connecting.
            let began = Instant::now();
            let conn = match (kind, from) {
                // Connected plain from the source address, then the PROXY
                // header (before any TLS handshake), TLS and WebSocket.
                (Kind::Stream, Some(from)) => {
                    match super::source::connect_stream(&endpoint, from, CONNECT_TIMEOUT).await {
                        Ok(tcp) => {
                            let (tls, proxy) = (tls.as_ref(), proxy.as_ref());
                            Stream::after_connect(tcp, &endpoint, CONNECT_TIMEOUT, tls, proxy).await
                        }
                        Err(e) => Err(e),
                    }
                    .map(Conn::Stream)
                }
                (Kind::Datagram, Some(from)) => super::source::connect_datagram(&endpoint, from)
                    .await
                    .map(Conn::Datagram),
                (Kind::Stream, None) => Stream::connect_via(
                    &endpoint,
                    CONNECT_TIMEOUT,
                    &crate::trace::Tracer::disabled(),
                    tls.as_ref(),
                    proxy.as_ref(),
                )
                .await
                .map(Conn::Stream),
                (Kind::Datagram, None) => Datagram::connect(&endpoint).await.map(Conn::Datagram),
            };
            let took = began.elapsed();
            // Over WebSocket, each message is one binary message.
            let conn = conn.map(|conn| match conn {
                Conn::Stream(mut stream) => {
                    stream.frame_messages(message_size);
                    Conn::Stream(stream)
                }
                other => other,
            });
            // Which backend answered: the line it greets with, read before
            // the clock starts (and not timed as connecting).
            let (conn, backend) = match conn {
                Ok(Conn::Stream(mut stream)) if greeting_line => {
                    let line = tokio::time::timeout(CONNECT_TIMEOUT, stream.read_greeting_line())
                        .await
                        .unwrap_or_else(|_| {
                            let wait = crate::duration::format(CONNECT_TIMEOUT);
                            Err(std::io::Error::other(format!(
                                "no greeting line within {wait}"
                            )))
                        });
                    match line {
                        Ok(line) => (Ok(Conn::Stream(stream)), Some(line)),
                        Err(e) => (Err(Error::connect(&endpoint, e)), None),
                    }
                }
                other => (other, None),
            };
            (id, conn, took, backend)
        });
    }
    let mut conns = Vec::new();
    let mut ready = Ready {
        thread: target.thread,
        connected: 0,
        errors: 0,
        first_error: None,
        connect_times: LatencyHistogram::new(),
        backends: Vec::new(),
    };
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok((id, Ok(conn), took, backend)) => {
                ready.connect_times.record_duration(took);
                conns.push((id, conn));
                if let Some(line) = backend {
                    ready.backends.push((id, line));
                }
            }
            Ok((_, Err(e), _, _)) => {
                ready.errors += 1;
                ready.first_error.get_or_insert(e);
            }
            Err(_) => ready.errors += 1,
        }
    }
    ready.connected = conns.len();
    (conns, ready)
}

/// Drives every connection as a task of this thread's runtime.
async fn drive_tokio(conns: Vec<(usize, Conn)>, shared: &Arc<Shared>) -> Vec<(usize, Tally)> {
    // With intervals, a timer on this thread hands each one over at its
    // end, even if no connection of the thread completes anything then.
    let ticker = shared.intervals.as_ref().map(|intervals| {
        let (shared, every) = (shared.clone(), intervals.every);
        tokio::spawn(async move {
            let mut next = shared.window.start;
            while !shared.over(next) {
                next += every;
                tokio::time::sleep_until(next.into()).await;
                record::tick(&shared, Instant::now());
            }
        })
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = HashMap::with_capacity(conns.len());
    for (id, conn) in conns {
        let shared = shared.clone();
        let task = tasks.spawn(async move {
            let tally = match conn {
                Conn::Stream(s) => stream::drive(id, s, &shared).await,
                Conn::Datagram(d) => datagram::drive(id, d, &shared).await,
            };
            (id, tally)
        });
        ids.insert(task.id(), id);
    }
    let tallies = collect(tasks, &ids, shared).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    tallies
}

/// Every task's tally. A task that died (a panic in a driver) still
/// gives one, with an error saying so: a connection whose results were
/// lost must fail the run, never pass for a clean one.
async fn collect(
    mut tasks: tokio::task::JoinSet<(usize, Tally)>,
    ids: &HashMap<tokio::task::Id, usize>,
    shared: &Shared,
) -> Vec<(usize, Tally)> {
    let mut tallies = Vec::with_capacity(ids.len());
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, pair)) => tallies.push(pair),
            Err(e) => {
                let Some(&id) = ids.get(&e.id()) else {
                    continue;
                };
                let why = if e.is_panic() {
                    format!(
                        "its driver failed: {}",
                        panic_message(e.into_panic().as_ref())
                    )
                } else {
                    "its driver was cancelled".to_owned()
                };
                let mut tally = Tally::default();
                record::failed(shared, &mut tally, id, &why);
                tallies.push((id, tally));
            }
        }
    }
    tallies
}

/// What a panic said, when it said it as text.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic".to_owned()
    }
}

/// Drives every connection on one io_uring ring.
#[cfg(target_os = "linux")]
fn drive_uring(conns: Vec<(usize, Conn)>, kind: Kind, shared: &Shared) -> Vec<(usize, Tally)> {
    let ids: Vec<usize> = conns.iter().map(|(id, _)| *id).collect();
    let fds: std::io::Result<Vec<(usize, OwnedFd)>> = conns
        .into_iter()
        .map(|(id, conn)| Ok((id, conn.into_fd()?)))
        .collect();
    let driven = fds.and_then(|fds| match kind {
        Kind::Stream => super::uring::drive_all(fds, shared),
        Kind::Datagram => super::uring_dgram::drive_all(fds, shared),
    });
    match driven {
        Ok(tallies) => tallies,
        Err(e) => {
            tracing::warn!(cause = %e, "io_uring driver failed");
            ids.into_iter()
                .map(|id| {
                    let mut tally = Tally::default();
                    record::error(shared, &mut tally, id, &e);
                    (id, tally)
                })
                .collect()
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn drive_uring(_: Vec<(usize, Conn)>, _: Kind, _: &Shared) -> Vec<(usize, Tally)> {
    unreachable!("io_uring is chosen only on Linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_driver_that_dies_fails_its_connection() {
        let shared = super::super::tests::shared();
        let mut tasks = tokio::task::JoinSet::new();
        let mut ids = HashMap::new();
        let fine = tasks.spawn(async { (0, Tally::default()) });
        ids.insert(fine.id(), 0);
        let dies = tasks.spawn(async {
            if true {
                panic!("range end index 65522 out of range");
            }
            (1, Tally::default())
        });
        ids.insert(dies.id(), 1);
        let mut tallies = collect(tasks, &ids, &shared).await;
        tallies.sort_by_key(|(id, _)| *id);
        assert_eq!(tallies.len(), 2, "a dead task still has its tally");
        assert_eq!(tallies[0].1, Tally::default());
        let dead = &tallies[1].1;
        assert_eq!(dead.errors, 1);
        assert_eq!(
            dead.first_error.as_deref(),
            Some("connection 1: its driver failed: range end index 65522 out of range")
        );
        assert_eq!(shared.progress.errors(), 1);
    }
}
