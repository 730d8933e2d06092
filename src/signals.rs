//! Signals to the library's shutdown tokens: the first SIGINT or SIGTERM
//! cancels `stop` (drain), the second `force` (a user pressing Ctrl-C
//! twice means it).

use std::io;

use sockecho::Shutdown;
use tokio::signal::unix::{SignalKind, signal};

/// A [`Shutdown`] driven by SIGINT and SIGTERM.
pub fn on_signals() -> io::Result<Shutdown> {
    let shutdown = Shutdown::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let tokens = shutdown.clone();
    tokio::spawn(async move {
        for (token, stage) in [(&tokens.stop, "drain"), (&tokens.force, "force")] {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!(stage, "signal received");
            token.cancel();
        }
    });
    Ok(shutdown)
}
