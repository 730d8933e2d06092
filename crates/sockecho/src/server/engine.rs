//! Which engine serves each stream listener: decided once, as one value
//! that both picks the engine and says why, so what runs and what the
//! start-up log says cannot disagree.

use std::fmt;

use super::config::{EnginePreference, ServeConfig};
use crate::endpoint::Endpoint;

/// The engines that serve stream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// tokio's epoll reactor: a task per connection, any service, any
    /// stream transport.
    Epoll,
    /// The io_uring engine: a ring per thread serving plain TCP echo.
    IoUring,
}

impl Engine {
    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Epoll => "epoll",
            Engine::IoUring => "io_uring",
        }
    }
}

/// Why a listener is served by its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// io_uring is available and nothing rules it out.
    Available,
    /// The configuration asks for epoll.
    Requested,
    /// Not plain TCP (TLS, Unix): only the epoll engine serves those.
    NotPlainTcp,
    /// HTTP and WebSocket (`http://`, `ws://`...): hyper on tokio.
    Http,
    /// Serving one connection: the accept loop stops after it.
    Once,
    /// Tracing needs the accept loop and a task per connection.
    Traced,
    /// The service is not plain echo.
    Service,
    /// Each connection begins with a PROXY protocol header to read first.
    ProxyProtocol,
    /// The greeting is filled in for each connection.
    Greeting,
    /// The kernel (or container) does not offer what io_uring needs.
    Unavailable,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Available => "io_uring available",
            Reason::Requested => "epoll requested",
            Reason::NotPlainTcp => "not plain TCP",
            Reason::Http => "HTTP and WebSocket",
            Reason::Once => "serving once",
            Reason::Traced => "tracing",
            Reason::Service => "not plain echo",
            Reason::ProxyProtocol => "PROXY protocol",
            Reason::Greeting => "greeting placeholders",
            Reason::Unavailable => "io_uring unavailable here",
        })
    }
}

/// The engine that serves one listener, how many threads it runs, and why
/// it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineChoice {
    /// The listener, as bound.
    pub endpoint: Endpoint,
    /// The engine.
    pub engine: Engine,
    /// Its threads: the io_uring engine's own, or the tokio runtime's
    /// workers.
    pub threads: usize,
    /// Why this engine.
    pub reason: Reason,
}

/// Chooses the engine for a stream listener on `endpoint`; `traced` says
/// whether tracing is on.
pub(super) fn choose(config: &ServeConfig, endpoint: &Endpoint, traced: bool) -> EngineChoice {
    let reason = if config.engine.prefer == EnginePreference::Epoll {
        Reason::Requested
    } else if endpoint.web().is_some() {
        Reason::Http
    } else if !matches!(endpoint, Endpoint::Tcp(_)) {
        Reason::NotPlainTcp
    } else if config.once {
        Reason::Once
    } else if traced || config.listen.pause_accept.is_some() {
        Reason::Traced
    } else if !config.service.mode.service().is_echo() {
        Reason::Service
    } else if config.proxy.is_some() {
        Reason::ProxyProtocol
    } else if crate::service::greeting::is_template(&config.service.greeting) {
        Reason::Greeting
    } else if !uring_available() {
        Reason::Unavailable
    } else {
        Reason::Available
    };
    let (engine, threads) = if reason == Reason::Available {
        let threads = config
            .engine
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        (Engine::IoUring, threads)
    } else {
        let workers = tokio::runtime::Handle::try_current()
            .map_or(1, |handle| handle.metrics().num_workers());
        (Engine::Epoll, workers)
    };
    EngineChoice {
        endpoint: endpoint.clone(),
        engine,
        threads,
        reason,
    }
}

#[cfg(target_os = "linux")]
fn uring_available() -> bool {
    sockecho_uring::probe().is_some_and(|f| f.for_server())
}

#[cfg(not(target_os = "linux"))]
fn uring_available() -> bool {
    false
}
