//! Signals to the library's shutdown tokens: the first SIGINT, SIGTERM or
//! SIGHUP cancels `stop` (drain), the second `force` (a user pressing
//! Ctrl-C twice means it).
//!
//! SIGHUP has two meanings, told apart by what `serve` was given:
//!
//! - With files to read again (`--allow-file`, `--deny-file`, `--tls-cert`
//!   and `--tls-key`, `--tls-client-ca`), it reloads them, as nginx and
//!   HAProxy do: open connections stay, the log says what changed. A
//!   server set up that way is meant to run on, as a daemon does.
//! - Without, there is nothing to reload, and SIGHUP is what it is for a
//!   program in a terminal: the terminal closing. Its default action would
//!   kill the process at once, leaving open connections cut and Unix
//!   socket files behind, so it stops like SIGTERM (drain, then exit 0).
//!   Ignoring it would leave a server running with nowhere to write.

use std::io;
use std::sync::{Arc, OnceLock};

use sockecho::Shutdown;
use sockecho::server::Reloader;
use tokio::signal::unix::{SignalKind, signal};

/// Where `serve` puts its reloader once the server is bound: a SIGHUP that
/// finds none (before that, or with no file to read again) stops.
pub type ReloadSlot = Arc<OnceLock<Reloader>>;

/// A [`Shutdown`] driven by SIGINT, SIGTERM and SIGHUP.
pub fn on_signals() -> io::Result<Shutdown> {
    on_serve_signals().map(|(shutdown, _)| shutdown)
}

/// [`on_signals`], with SIGHUP reloading what the slot's reloader reads,
/// once it is there and has files to read.
pub fn on_serve_signals() -> io::Result<(Shutdown, ReloadSlot)> {
    let shutdown = Shutdown::new();
    let slot = ReloadSlot::default();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let tokens = shutdown.clone();
    let reloads = slot.clone();
    tokio::spawn(async move {
        for (token, stage) in [(&tokens.stop, "drain"), (&tokens.force, "force")] {
            loop {
                let hup = tokio::select! {
                    _ = interrupt.recv() => false,
                    _ = terminate.recv() => false,
                    _ = hangup.recv() => true,
                };
                match reloads.get() {
                    Some(reloader) if hup && reloader.has_files() => {
                        tracing::info!("SIGHUP: reading the files again");
                        // Small files; the reloader logs what changed, or
                        // why a part stays as it was.
                        let _ = reloader.reload();
                    }
                    _ => break,
                }
            }
            tracing::info!(stage, "signal received");
            token.cancel();
        }
    });
    Ok((shutdown, slot))
}
