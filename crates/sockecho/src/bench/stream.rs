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
    let mut pacer = shared.pacer(id).map(|p| Ticker::new(p, shared.window));
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
            let room = sockecho_flow::stream::MAX_QUEUED.saturating_sub(flow.owed());
            tally.overflowed += pacer.poll_schedule(cx, room, |due| flow.schedule(due));
        }
        loop {
            let mut progressed = false;
            if let Some(chunk) = flow.to_send(&shared.pattern) {
                // Open loop: the raw latency is timed from the start of the
                // write (on loopback the echo can be back before the
                // write returns).
                let writing = pacer.is_some().then(Instant::now);
                match Pin::new(&mut stream).poll_write(cx, chunk) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Ending::Io(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        match writing {
                            Some(at) => flow.sent_at(n, at),
                            None => flow.sent(n),
                        }
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
                    let measured = shared.window.contains(now);
                    let checked = flow.received_timed(got, now, &shared.pattern, |due, wrote| {
                        record::complete_timed(shared, due, wrote, now);
                        tally.messages += u64::from(measured);
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
    if let Some(pacer) = &pacer {
        tally.behind.add(&pacer.behind);
    }
    tally
}

/// The most messages one poll takes from an open-loop schedule. A
/// schedule can fall behind by millions (a client paced faster than it
/// can send, or stopped for a while); taking them all in one poll would
/// keep the task from ever looking at the run's end, a stop signal or its
/// socket. Past this many the task yields and wakes itself at once.
pub(super) const SCHEDULE_BUDGET: u64 = 4096;

/// An open-loop schedule on tokio's timer: hands over each message's
/// intended send time once it is due (see [`sockecho_flow::Pacer::due`]),
/// and keeps account of how late it did so.
pub(super) struct Ticker {
    pacer: sockecho_flow::Pacer,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The measured window: lateness counts for messages due in it.
    window: sockecho_flow::Window,
    /// How far this connection fell behind its schedule in the window.
    pub(super) behind: sockecho_flow::Behind,
}

impl Ticker {
    pub(super) fn new(pacer: sockecho_flow::Pacer, window: sockecho_flow::Window) -> Ticker {
        let sleep = Box::pin(tokio::time::sleep_until(pacer.next().into()));
        Ticker {
            pacer,
            sleep,
            window,
            behind: sockecho_flow::Behind::default(),
        }
    }

    /// Hands the messages due now to `take` (which says `false` when it
    /// has no room for one), at most [`SCHEDULE_BUDGET`] of them; returns
    /// how many were dropped: refused by `take`, or skipped because more
    /// were due than the `room` the caller has left (the oldest go, in one
    /// step: [`sockecho_flow::Pacer::skip`]). The caller counts them as
    /// overflow.
    ///
    /// Bounded work whatever the rate: when the budget runs out with
    /// messages still due, the task is woken again at once; otherwise the
    /// timer is set to wake it when the next one is due.
    pub(super) fn poll_schedule(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
        mut take: impl FnMut(Instant) -> bool,
    ) -> u64 {
        let now = Instant::now();
        let mut dropped = self.pacer.skip(now, room as u64);
        for _ in 0..SCHEDULE_BUDGET {
            let Some((due, late)) = self.pacer.due_late(now) else {
                self.arm(cx);
                return dropped;
            };
            if self.window.contains(now - late) {
                self.behind.note(late);
            }
            if !take(due) {
                dropped += 1;
            }
        }
        if self.pacer.behind(now) > 0 {
            cx.waker().wake_by_ref();
        } else {
            self.arm(cx);
        }
        dropped
    }

    /// Sets the timer to wake the task when the next message is due.
    fn arm(&mut self, cx: &mut Context<'_>) {
        let next = self.pacer.next().into();
        if self.sleep.deadline() != next {
            self.sleep.as_mut().reset(next);
        }
        // Already past (time went by since `now`): a ready timer registers
        // no wake-up, so wake the task here or it would wait for I/O.
        if self.sleep.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use std::time::Duration;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn lateness_in_the_window_is_the_clients_own_and_counted() {
        // A message every millisecond since 50 ms ago: the oldest are
        // handed over late, by the client alone (nothing was sent yet).
        let now = Instant::now();
        let Some(start) = now.checked_sub(Duration::from_millis(50)) else {
            return;
        };
        let window = sockecho_flow::Window {
            start,
            end: now + Duration::from_secs(1),
        };
        let pacer = sockecho_flow::Pacer::new(start, Duration::from_millis(1), 0, 1);
        let mut ticker = Ticker::new(pacer, window);
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        ticker.poll_schedule(&mut cx, 1_000, |_| true);
        let b = ticker.behind;
        assert!(b.scheduled >= 50, "{b:?}");
        assert!(b.late >= 45, "{b:?}");
        assert!(b.max_late >= Duration::from_millis(45), "{b:?}");
        // Messages due before the window (the warmup) are not counted.
        let later = sockecho_flow::Window {
            start: now + Duration::from_secs(1),
            end: now + Duration::from_secs(2),
        };
        let pacer = sockecho_flow::Pacer::new(start, Duration::from_millis(1), 0, 1);
        let mut ticker = Ticker::new(pacer, later);
        ticker.poll_schedule(&mut cx, 1_000, |_| true);
        assert_eq!(ticker.behind, sockecho_flow::Behind::default());
    }

    #[tokio::test]
    async fn a_poll_takes_a_bounded_batch_however_far_behind() {
        // A message every nanosecond, ten seconds behind: 1e10 due. Taken
        // one by one in a single poll, that poll would never end (the
        // schedule moves on faster than the loop turns).
        let now = Instant::now();
        let start = now
            .checked_sub(Duration::from_secs(10))
            .unwrap_or(now - Duration::from_secs(1));
        let behind = now.duration_since(start).as_nanos() as u64;
        let window = sockecho_flow::Window {
            start,
            end: now + Duration::from_secs(1),
        };
        let mut ticker = Ticker::new(
            sockecho_flow::Pacer::new(start, Duration::from_nanos(1), 0, 1),
            window,
        );
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);

        let mut taken = 0u64;
        let dropped = ticker.poll_schedule(&mut cx, 100_000, |_| {
            taken += 1;
            true
        });
        assert_eq!(taken, SCHEDULE_BUDGET);
        assert_eq!(ticker.behind.scheduled, SCHEDULE_BUDGET);
        // Everything but the 100,000 kept was dropped in one step.
        assert!(dropped >= behind - 100_000, "{dropped}");
        // Still behind: the task is woken to come back at once.
        assert_eq!(count.0.load(Ordering::Relaxed), 1);

        // With no room left, all that is due is dropped, nothing taken.
        let dropped = ticker.poll_schedule(&mut cx, 0, |_| panic!("no room"));
        assert!(dropped >= 100_000 - SCHEDULE_BUDGET, "{dropped}");

        // A message refused by `take` counts as dropped too.
        let mut refused = 0;
        let dropped = ticker.poll_schedule(&mut cx, 10, |_| {
            refused += 1;
            false
        });
        assert!(refused >= 1 && dropped >= refused, "{refused} {dropped}");
    }
}
