//! The tokio driver of one bench flow over a datagram transport: its own
//! connected socket, up to K datagrams in flight, each carrying its
//! sequence number in its first 8 bytes so replies are matched exactly. The
//! datagram flow core decides what each reply means and when a datagram is
//! lost (unanswered for the loss timeout); a lossy network slows the flow
//! down, it never hangs it.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::Instant;

use sockecho_flow::{DatagramFlow, Pattern, Tally, fill_datagram};
use tokio::io::ReadBuf;

use super::stream::{RunEnd, Ticker};
use super::{Ending, Shared, record};
use crate::transport::Datagram;

/// Datagrams a flow remembers by sequence number at first: a duplicate
/// arriving up to this many datagrams late is still told from a late reply.
pub(super) const HISTORY: usize = 1024;

/// The most it remembers: the window grows to this rather than give up on
/// a datagram still waiting for its echo.
pub(super) const MAX_HISTORY: usize = 1 << 16;

/// A flow's datagram window for `capacity` datagrams in flight.
pub(super) fn window(capacity: usize, shared: &Shared) -> DatagramFlow {
    DatagramFlow::new(HISTORY.max(2 * capacity), MAX_HISTORY, shared.timeout)
}

/// Drives flow `id` until the run ends, then returns what it saw.
pub(super) async fn drive(id: usize, socket: Datagram, shared: &Shared) -> Tally {
    let size = shared.message_size;
    let base = Pattern::base(id);
    let pattern = &shared.pattern;
    let mut tally = Tally::default();
    let mut pacer = shared.pacer(id).map(|p| Ticker::new(p, shared.window));
    let closed_loop = pacer.is_none();
    // Open-loop runs need room for the backlog a slow server builds up.
    let capacity = if closed_loop {
        shared.pipeline
    } else {
        shared.pipeline.max(256)
    };
    let mut flow = window(capacity, shared);
    // Messages due to be sent, with the time each was due.
    let mut due: VecDeque<Instant> = VecDeque::with_capacity(capacity);
    let mut out = vec![0u8; size];
    let mut buf = vec![0u8; socket.max_datagram().max(size + 1)];
    if closed_loop {
        due.extend(std::iter::repeat_n(Instant::now(), capacity));
    }
    let mut end = RunEnd::new(shared);
    let mut loss_timer = Box::pin(tokio::time::sleep_until(shared.window.end.into()));

    let ending = poll_fn(|cx| {
        if end.poll(cx, shared) {
            return Poll::Ready(Ending::Done);
        }
        if let Some(pacer) = pacer.as_mut() {
            // The same cap on what one flow may owe as over streams.
            let cap = sockecho_flow::stream::MAX_QUEUED;
            let room = cap.saturating_sub(due.len());
            tally.overflowed += pacer.poll_schedule(cx, room, |at| {
                let fits = due.len() < cap;
                if fits {
                    due.push_back(at);
                }
                fits
            });
        }
        loop {
            let mut progressed = false;
            // Expire datagrams unanswered for the timeout.
            if flow.in_flight() > 0 && loss_timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                flow.expire(now, |expired| {
                    tally.expired(expired, shared.window.start);
                    if closed_loop {
                        due.push_back(now);
                    }
                });
                let next = flow.next_expiry().unwrap_or(shared.window.end);
                loss_timer.as_mut().reset(next.into());
                progressed = true;
            }
            // Send what is due while a slot is free.
            while flow.in_flight() < capacity {
                let Some(&at) = due.front() else { break };
                fill_datagram(pattern, base, flow.next_seq(), &mut out);
                // Open loop: the raw latency is timed from the start of
                // the send, the corrected one from when it was due.
                let wrote = if closed_loop { at } else { Instant::now() };
                match socket.poll_send(cx, &out) {
                    Poll::Ready(Ok(_)) => {
                        due.pop_front();
                        let was_idle = flow.in_flight() == 0;
                        let (_, early) = flow.send_at(at, wrote);
                        if let Some(expired) = early {
                            tally.expired(expired, shared.window.start);
                            if closed_loop {
                                due.push_back(Instant::now());
                            }
                        }
                        if was_idle {
                            loss_timer.as_mut().reset((at + shared.timeout).into());
                        }
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // ICMP port unreachable for an earlier datagram,
                        // reported here and not on a receive: this one was
                        // not sent; count it, send it again.
                        record::error(shared, &mut tally, id, &e);
                        progressed = true;
                        break;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Ending::Io(e)),
                    Poll::Pending => break,
                }
            }
            let mut read = ReadBuf::new(&mut buf);
            match socket.poll_recv(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    progressed = true;
                    let got = read.filled();
                    let before = flow.in_flight();
                    let completed =
                        tally.datagram_reply(&mut flow, pattern, id, base, size, got, got.len());
                    let now = Instant::now();
                    if let Some((due, wrote)) = completed {
                        record::complete_timed(shared, due, wrote, now);
                    }
                    if closed_loop {
                        // Each datagram answered (rightly or not) frees its
                        // place for the next.
                        for _ in flow.in_flight()..before {
                            due.push_back(now);
                        }
                    }
                    if now >= shared.window.end {
                        return Poll::Ready(Ending::Done);
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // ICMP port unreachable for an earlier datagram: the
                    // datagram is lost; keep going, the server may come back.
                    record::error(shared, &mut tally, id, &e);
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
    record::end(shared, &mut tally, id, ending, false);
    if let Some(pacer) = &pacer {
        tally.behind.add(&pacer.behind);
    }
    tally
}
