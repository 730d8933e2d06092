//! One shutdown mechanism for the whole server: a [`Shutdown`] pair of
//! cancellation tokens. `stop` says "stop accepting and drain"; `force`
//! says "close everything now".
//!
//! The binary wires them to signals with [`on_signals`]: the first SIGINT
//! or SIGTERM cancels `stop`, a second one cancels `force`.

use std::io;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The two stages of stopping a server.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop accepting; let open connections finish within the drain timeout.
    pub stop: CancellationToken,
    /// Close every connection at once and return.
    pub force: CancellationToken,
}

impl Shutdown {
    /// A fresh pair, cancelled by nobody yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }
}

/// A [`Shutdown`] driven by SIGINT and SIGTERM: the first cancels `stop`,
/// the second `force` (a user pressing Ctrl-C twice means it).
pub fn on_signals() -> io::Result<Shutdown> {
    let shutdown = Shutdown::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let tokens = shutdown.clone();
    tokio::spawn(async move {
        for token in [&tokens.stop, &tokens.force] {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!(
                stage = if token == &tokens.stop {
                    "drain"
                } else {
                    "force"
                },
                "signal received"
            );
            token.cancel();
        }
    });
    Ok(shutdown)
}
