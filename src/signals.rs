//! Signals to the library's shutdown tokens: the first SIGINT, SIGTERM or
//! SIGHUP cancels `stop` (drain), the second `force` (a user pressing
//! Ctrl-C twice means it).
//!
//! SIGHUP is the terminal closing: its default action kills the process
//! at once, leaving open connections cut and Unix socket files behind, so
//! it stops like SIGTERM (until a reload gives it another meaning).

use std::io;

use sockecho::Shutdown;
use tokio::signal::unix::{SignalKind, signal};

/// A [`Shutdown`] driven by SIGINT, SIGTERM and SIGHUP.
pub fn on_signals() -> io::Result<Shutdown> {
    let shutdown = Shutdown::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let tokens = shutdown.clone();
    tokio::spawn(async move {
        for (token, stage) in [(&tokens.stop, "drain"), (&tokens.force, "force")] {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
            tracing::info!(stage, "signal received");
            token.cancel();
        }
    });
    Ok(shutdown)
}
