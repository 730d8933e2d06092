//! One bench connection over a stream transport, as one hand-written
//! future: it writes whatever is due and reads whatever has arrived in the
//! same poll, so a large message or a deep pipeline can never deadlock
//! against a server that echoes while it reads.
//!
//! The hot path (per message) allocates nothing, takes no lock and makes
//! no syscall beyond the read and the write: completions are timed with one
//! clock read per `read` call, however many messages it completed.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::pattern::{PERIOD, Pattern};
use super::{Ending, MAX_QUEUED, Outcome, Shared};
use crate::transport::Stream;

/// Drives connection `id` until the run ends, then returns what it saw.
pub(super) async fn drive(id: usize, mut stream: Stream, shared: &Shared) -> Outcome {
    let size = shared.message_size as u64;
    let base = Pattern::base(id);
    let pattern = &shared.pattern;
    let mut outcome = Outcome::new();
    // When each message in flight was sent (or, open-loop, was due).
    let mut times: VecDeque<Instant> = VecDeque::with_capacity(shared.pipeline.max(1));
    let mut queued: u64 = 0; // bytes due to be written
    let mut sent: u64 = 0; // bytes written
    let mut received: u64 = 0; // bytes read back and verified
    let mut buf = vec![0u8; (shared.message_size * shared.pipeline).clamp(4096, 65536)];
    let mut pacer = shared.pacer(id);
    if pacer.is_none() {
        let now = Instant::now();
        for _ in 0..shared.pipeline {
            times.push_back(now);
            queued += size;
        }
    }
    let mut end = super::RunEnd::new(shared);

    let ending = poll_fn(|cx| {
        if end.poll(cx, shared) {
            return Poll::Ready(Ending::Done);
        }
        if let Some(pacer) = pacer.as_mut() {
            while let Some(due) = pacer.poll_due(cx) {
                if times.len() < MAX_QUEUED {
                    times.push_back(due);
                    queued += size;
                } else {
                    outcome.overflowed += 1;
                }
            }
        }
        loop {
            let mut progressed = false;
            if sent < queued {
                let chunk = pattern.at(base + sent, (queued - sent).min(PERIOD as u64) as usize);
                match Pin::new(&mut stream).poll_write(cx, chunk) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Ending::Io(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        sent += n as u64;
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
                    if received + got.len() as u64 > sent {
                        // Bytes we never sent (a greeting, or a broken echo):
                        // checked against what we would send next, they fail.
                        outcome.unsolicited = true;
                    }
                    if let Err(diff) = pattern.check(base + received, got, received) {
                        return Poll::Ready(Ending::Mismatch(diff));
                    }
                    let before = received / size;
                    received += got.len() as u64;
                    let after = received / size;
                    if after > before {
                        let now = Instant::now();
                        for _ in before..after {
                            let Some(start) = times.pop_front() else {
                                break;
                            };
                            outcome.complete(shared, start, now);
                            if pacer.is_none() {
                                times.push_back(now);
                                queued += size;
                            }
                        }
                        if now >= shared.end {
                            return Poll::Ready(Ending::Done);
                        }
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
    outcome.end(id, ending);
    outcome
}

/// How long a finished connection waits for the server to close after our
/// half-close.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
