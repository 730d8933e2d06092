//! What the program prints: ping's lines and summary, bench's report and
//! progress, the engines in the start-up log.

pub mod bench;
pub mod ping;

use std::io::Write;

use sockecho::server::{Engine, EngineChoice, Reason};

/// Writes to standard output and flushes; a reader that stopped early
/// (`| head`) shows as [`sockecho::Error::Output`] with a broken pipe,
/// which the program treats as success.
pub fn write_stdout(
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), sockecho::Error> {
    let mut out = std::io::stdout().lock();
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(sockecho::Error::Output)
}

/// Logs, at start-up, which engine serves the stream listeners and why
/// (once per engine), naming the flag behind a choice the user made.
pub fn log_engines(engines: &[EngineChoice]) {
    let mut logged = Vec::new();
    for choice in engines {
        if logged.contains(&choice.engine) {
            continue;
        }
        logged.push(choice.engine);
        match choice.engine {
            Engine::IoUring => {
                tracing::info!(engine = "io_uring", threads = choice.threads, "serving TCP");
            }
            Engine::Epoll => tracing::info!(
                engine = "epoll",
                threads = choice.threads,
                why = why(choice.reason),
                "serving streams"
            ),
        }
    }
}

/// Why a listener is on the epoll engine, in the command line's words.
fn why(reason: Reason) -> &'static str {
    match reason {
        Reason::Requested => "--epoll",
        Reason::Once => "--once",
        Reason::Traced => "--trace",
        Reason::Service => "--mode",
        Reason::ProxyProtocol => "--proxy-protocol",
        Reason::Greeting => "--greeting placeholders",
        Reason::NotPlainTcp => "not plain TCP",
        Reason::Http => "HTTP and WebSocket",
        Reason::Unavailable => "io_uring unavailable here",
        Reason::Available => "io_uring available",
    }
}
