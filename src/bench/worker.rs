//! The bench's threads: each connects its share of the connections on its
//! own single-threaded runtime (or its own io_uring ring: `uring.rs` for
//! streams, `uring_dgram.rs` for UDP), waits for the common start, drives
//! them, and hands back their outcomes and latencies.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Ending, Outcome, Shared, ThreadResult, datagram, stream, take_latencies};
#[cfg(target_os = "linux")]
use super::{uring, uring_dgram};
use crate::endpoint::{Endpoint, Kind};
use crate::error::Error;
use crate::transport::{Datagram, Stream};

enum Conn {
    Stream(Stream),
    Datagram(Datagram),
}

/// The io_uring flavour of [`worker`]: blocking connects on this thread
/// (`connect`, once per connection), then one ring for all of them
/// (`drive`).
#[cfg(target_os = "linux")]
fn uring_worker<S>(
    ids: Vec<usize>,
    connect: impl Fn() -> Result<S, Error>,
    drive: impl FnOnce(Vec<(usize, S)>, &Shared) -> io::Result<Vec<(usize, Outcome)>>,
    ready_tx: tokio::sync::mpsc::Sender<Ready>,
    go_rx: std::sync::mpsc::Receiver<Arc<Shared>>,
    done_tx: tokio::sync::oneshot::Sender<ThreadResult>,
) {
    let mut conns = Vec::with_capacity(ids.len());
    let mut ready = Ready {
        connected: 0,
        errors: 0,
        first_error: None,
    };
    for id in ids {
        match connect() {
            Ok(conn) => conns.push((id, conn)),
            Err(e) => {
                ready.errors += 1;
                ready.first_error.get_or_insert(e);
            }
        }
    }
    ready.connected = conns.len();
    let nothing = conns.is_empty();
    if ready_tx.blocking_send(ready).is_err() || nothing {
        return;
    }
    drop(ready_tx);
    let Ok(shared) = go_rx.recv() else { return };
    let ids: Vec<usize> = conns.iter().map(|(id, _)| *id).collect();
    let outcomes = match drive(conns, &shared) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(cause = %e, "io_uring driver failed");
            ids.into_iter()
                .map(|id| {
                    let mut outcome = Outcome::new();
                    outcome.end(id, Ending::Io(io::Error::new(e.kind(), e.to_string())));
                    (id, outcome)
                })
                .collect()
        }
    };
    let _ = done_tx.send((outcomes, take_latencies()));
}

/// What a worker thread connects to.
pub(super) struct Target {
    pub(super) endpoint: Endpoint,
    pub(super) kind: Kind,
    /// The TLS client, for `tls://` endpoints.
    pub(super) tls: Option<crate::transport::tls::ClientTls>,
}

/// What a worker thread reports once its connections are made.
pub(super) struct Ready {
    pub(super) connected: usize,
    pub(super) errors: u64,
    pub(super) first_error: Option<Error>,
}

/// One bench thread: connects connections `ids`, waits for the common
/// start, drives them all on its own runtime, and hands back the outcomes.
pub(super) fn worker(
    ids: Vec<usize>,
    target: Target,
    use_uring: bool,
    ready_tx: tokio::sync::mpsc::Sender<Ready>,
    go_rx: std::sync::mpsc::Receiver<Arc<Shared>>,
    done_tx: tokio::sync::oneshot::Sender<ThreadResult>,
) {
    let Target {
        endpoint,
        kind,
        tls,
    } = target;
    #[cfg(target_os = "linux")]
    if use_uring {
        return match kind {
            Kind::Stream => uring_worker(
                ids,
                || uring::RawStream::connect(&endpoint, Duration::from_secs(10)),
                uring::drive_all,
                ready_tx,
                go_rx,
                done_tx,
            ),
            Kind::Datagram => uring_worker(
                ids,
                || uring_dgram::connect(&endpoint),
                uring_dgram::drive_all,
                ready_tx,
                go_rx,
                done_tx,
            ),
        };
    }
    let _ = use_uring;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready_tx.blocking_send(Ready {
                connected: 0,
                errors: ids.len() as u64,
                first_error: Some(Error::io("starting a bench runtime", e)),
            });
            return;
        }
    };
    let (conns, ready) = runtime.block_on(async {
        let mut connecting = tokio::task::JoinSet::new();
        for id in ids {
            let endpoint = endpoint.clone();
            let tls = tls.clone();
            connecting.spawn(async move {
                let conn = match kind {
                    Kind::Stream => Stream::connect_with(
                        &endpoint,
                        Duration::from_secs(10),
                        &crate::trace::Tracer::disabled(),
                        tls.as_ref(),
                    )
                    .await
                    .map(Conn::Stream),
                    Kind::Datagram => Datagram::connect(&endpoint).await.map(Conn::Datagram),
                };
                (id, conn)
            });
        }
        let mut conns = Vec::new();
        let mut ready = Ready {
            connected: 0,
            errors: 0,
            first_error: None,
        };
        while let Some(joined) = connecting.join_next().await {
            match joined {
                Ok((id, Ok(conn))) => conns.push((id, conn)),
                Ok((_, Err(e))) => {
                    ready.errors += 1;
                    ready.first_error.get_or_insert(e);
                }
                Err(_) => ready.errors += 1,
            }
        }
        ready.connected = conns.len();
        (conns, ready)
    });
    let nothing = conns.is_empty();
    if ready_tx.blocking_send(ready).is_err() || nothing {
        return;
    }
    drop(ready_tx);
    let Ok(shared) = go_rx.recv() else { return };
    let outcomes = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (id, conn) in conns {
            let shared = shared.clone();
            tasks.spawn(async move {
                let outcome = match conn {
                    Conn::Stream(s) => stream::drive(id, s, &shared).await,
                    Conn::Datagram(d) => datagram::drive(id, d, &shared).await,
                };
                shared.errors.fetch_add(outcome.errors, Ordering::Relaxed);
                (id, outcome)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(pair) = joined {
                outcomes.push(pair);
            }
        }
        outcomes
    });
    let _ = done_tx.send((outcomes, take_latencies()));
}
