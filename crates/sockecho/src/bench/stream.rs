//! The tokio driver of one bench connection over a stream transport, as
//! one hand-written future: it writes whatever the flow core says is due
//! and reads whatever has arrived in the same poll, so a large message or a
//! deep pipeline can never deadlock against a server that echoes while it
//! reads.
//!
//! The hot path (per message) allocates nothing, takes no lock and makes
//! no syscall beyond the read and the write: completions are timed with one
//! clock read per `read` call, however many messages it completed.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use sockecho_flow::{StreamFlow, Tally};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::record;
use super::{Ending, Shared};
use crate::transport::Stream;

/// How long a finished connection waits for the server to close after our
/// half-close.
pub(super) const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Drives connection `id` until the run ends, then returns what it saw.
pub(super) async fn drive(id: usize, mut stream: Stream, shared: &Shared) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; (shared.message_size * shared.pipeline).clamp(4096, 65536)];
    let mut pacer = shared.pacer(id).map(Ticker::new);
    let mut flow = match pacer {
        Some(_) => StreamFlow::open_loop(id, shared.message_size),
        None => StreamFlow::closed_loop(id, shared.message_size, shared.pipeline, Instant::now()),
    };
    let mut end = RunEnd::new(shared);

    let ending = poll_fn(|cx| {
        if end.poll(cx, shared) {
            return Poll::Ready(Ending::Done);
        }
        if let Some(pacer) = pacer.as_mut() {
            while let Some(due) = pacer.poll_due(cx) {
                if !flow.schedule(due) {
                    tally.overflowed += 1;
                }
            }
        }
        loop {
            let mut progressed = false;
            if let Some(chunk) = flow.to_send(&shared.pattern) {
                match Pin::new(&mut stream).poll_write(cx, chunk) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Ending::Io(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        flow.sent(n);
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Ending::Io(e)),
                    Poll::Pending => {}
                }
            }
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let got = read.filled();
                    if got.is_empty() {
                        return Poll::Ready(Ending::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        )));
                    }
                    let now = Instant::now();
                    let checked = flow.received(got, now, &shared.pattern, |sent| {
                        record::complete(shared, sent, now);
                    });
                    if let Err(diff) = checked {
                        return Poll::Ready(Ending::Mismatch(diff));
                    }
                    if now >= shared.window.end {
                        return Poll::Ready(Ending::Done);
                    }
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Ending::Io(e)),
                Poll::Pending => {}
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    })
    .await;
    if matches!(ending, Ending::Done) {
        // Leave politely: half-close and take the echoes still in flight,
        // so the server sees a clean end rather than a reset. Bounded: a
        // server that never closes costs a second, not a hang.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.shutdown().await?;
            while stream.read(&mut buf).await? > 0 {}
            Ok::<_, io::Error>(())
        })
        .await;
    }
    record::end(shared, &mut tally, id, ending, flow.unsolicited());
    tally
}

/// An open-loop schedule on tokio's timer: yields each message's intended
/// send time once it is due (see [`sockecho_flow::Pacer::due`]).
pub(super) struct Ticker {
    pacer: sockecho_flow::Pacer,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Ticker {
    pub(super) fn new(pacer: sockecho_flow::Pacer) -> Ticker {
        let sleep = Box::pin(tokio::time::sleep_until(pacer.next().into()));
        Ticker { pacer, sleep }
    }

    /// The next send time that is due, if any; otherwise the timer is set
    /// to wake the task when one is.
    pub(super) fn poll_due(&mut self, cx: &mut Context<'_>) -> Option<Instant> {
        if let Some(due) = self.pacer.due(Instant::now()) {
            return Some(due);
        }
        let next = self.pacer.next().into();
        if self.sleep.deadline() != next {
            self.sleep.as_mut().reset(next);
        }
        let _ = self.sleep.as_mut().poll(cx);
        None
    }
}

/// The end of a connection's run: the deadline, or a stop.
pub(super) struct RunEnd {
    deadline: Pin<Box<tokio::time::Sleep>>,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl RunEnd {
    pub(super) fn new(shared: &Shared) -> RunEnd {
        RunEnd {
            deadline: Box::pin(tokio::time::sleep_until(shared.window.end.into())),
            stop: Box::pin(shared.halt.clone().cancelled_owned()),
            registered: false,
        }
    }

    /// True once the run is over. The timer and the stop signal are polled
    /// once, to register the task's waker (a task's waker never changes);
    /// after that two flag checks are enough, far cheaper per message.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, shared: &Shared) -> bool {
        if self.registered {
            return self.deadline.is_elapsed()
                || shared.halted.load(std::sync::atomic::Ordering::Relaxed);
        }
        self.registered = true;
        self.deadline.as_mut().poll(cx).is_ready() || self.stop.as_mut().poll(cx).is_ready()
    }
}

use std::future::Future as _;
