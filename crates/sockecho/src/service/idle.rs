//! A connection's idle timeout: one timer for the connection's life.

use std::io;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A connection's idle timeout, moved on lazily. A timeout per operation
/// would put a timer into tokio's wheel and take it out again twice per
/// message; here an operation that completes costs one clock read, and the
/// timer is re-armed only when it fires early (at most once per idle
/// period).
#[derive(Debug)]
pub struct Idle {
    limit: Option<Duration>,
    timer: Option<std::pin::Pin<Box<Sleep>>>,
    /// When an operation last completed.
    last: Instant,
}

impl Idle {
    /// A timeout of `limit` (`None`: never) from now.
    pub fn new(limit: Option<Duration>) -> Idle {
        Idle {
            limit,
            timer: None,
            last: Instant::now(),
        }
    }

    /// Something completed: the connection made progress now.
    pub fn progress(&mut self) {
        if self.limit.is_some() {
            self.last = Instant::now();
        }
    }

    /// Completes once nothing has progressed for the limit (never without
    /// one). Cancel-safe: select on it beside the connection's work.
    pub async fn expired(&mut self) {
        let Some(limit) = self.limit else {
            return std::future::pending().await;
        };
        let last = self.last;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last + limit)));
        loop {
            timer.as_mut().await;
            let due = self.last + limit;
            if Instant::now() >= due {
                return;
            }
            timer.as_mut().reset(due);
        }
    }

    /// Runs `op`; fails with "idle timeout" once nothing has completed for
    /// the limit.
    pub async fn within<T>(&mut self, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        if self.limit.is_none() {
            return op.await;
        }
        let done = tokio::select! {
            biased;
            result = op => Some(result),
            () = self.expired() => None,
        };
        match done {
            Some(result) => {
                self.progress();
                result
            }
            None => Err(timed_out()),
        }
    }
}

/// The error an idle connection ends with.
pub fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "idle timeout")
}
