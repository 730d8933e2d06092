//! One shutdown mechanism for the whole server: a [`Shutdown`] pair of
//! cancellation tokens. `stop` says "stop accepting and drain"; `force`
//! says "close everything now".
//!
//! A program wires them to what it waits for (the `sockecho` binary: the
//! first SIGINT or SIGTERM cancels `stop`, a second one `force`).

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
