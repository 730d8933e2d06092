//! One bench flow over a datagram transport: its own connected socket,
//! up to K datagrams in flight, each carrying its sequence number in its
//! first 8 bytes so replies are matched exactly. A datagram unanswered for
//! the loss timeout counts as lost and its slot is reused: a lossy network
//! slows the flow down, it never hangs it.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::task::Poll;

use tokio::io::ReadBuf;
use tokio::time::{Instant, sleep_until};

use super::pattern::Pattern;
use super::{Ending, MAX_QUEUED, Outcome, Shared};
use crate::transport::Datagram;

/// Bytes of each datagram that carry its sequence number.
pub const HEADER: usize = 8;

/// How many recent sequence numbers a flow remembers as answered. A
/// duplicate arriving more than this many datagrams late counts as late.
pub(super) const HISTORY: u64 = 1024;

#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    sent_at: Instant,
    active: bool,
}

/// Drives flow `id` until the run ends, then returns what it saw.
pub(super) async fn drive(id: usize, socket: Datagram, shared: &Shared) -> Outcome {
    let size = shared.message_size;
    let base = Pattern::base(id);
    let pattern = &shared.pattern;
    let mut outcome = Outcome::new();
    let mut pacer = shared.pacer(id);
    // Open-loop runs need room for the backlog a slow server builds up.
    let capacity = if pacer.is_some() {
        shared.pipeline.max(256)
    } else {
        shared.pipeline
    };
    let mut slots = vec![
        Slot {
            seq: 0,
            sent_at: Instant::now(),
            active: false,
        };
        capacity
    ];
    // Messages due to be sent, with the time each was due.
    let mut due: VecDeque<Instant> = VecDeque::with_capacity(capacity);
    let mut next_seq: u64 = 0;
    // `seq + 1` of the datagrams answered lately, at `seq % HISTORY`: tells
    // a duplicate reply from a late one without remembering every datagram.
    let mut answered = vec![0u64; HISTORY as usize];
    let mut in_flight = 0usize;
    let mut out = vec![0u8; size];
    let mut buf = vec![0u8; socket.max_datagram().max(size + 1)];
    if pacer.is_none() {
        let now = Instant::now();
        due.extend(std::iter::repeat_n(now, capacity));
    }
    let mut end = super::RunEnd::new(shared);
    let mut loss_timer = Box::pin(sleep_until(shared.end));

    let ending = poll_fn(|cx| {
        if end.poll(cx, shared) {
            return Poll::Ready(Ending::Done);
        }
        if let Some(pacer) = pacer.as_mut() {
            while let Some(at) = pacer.poll_due(cx) {
                if due.len() < MAX_QUEUED {
                    due.push_back(at);
                } else {
                    outcome.overflowed += 1;
                }
            }
        }
        loop {
            let mut progressed = false;
            // Expire datagrams unanswered for the timeout.
            if in_flight > 0 && loss_timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let mut earliest = None::<Instant>;
                for slot in slots.iter_mut().filter(|s| s.active) {
                    if now.duration_since(slot.sent_at) >= shared.timeout {
                        slot.active = false;
                        in_flight -= 1;
                        if slot.sent_at >= shared.measure_start {
                            outcome.lost += 1;
                        }
                        if pacer.is_none() {
                            due.push_back(now);
                        }
                    } else {
                        earliest =
                            Some(earliest.map_or(slot.sent_at, |e: Instant| e.min(slot.sent_at)));
                    }
                }
                let next = earliest.map_or(shared.end, |e| e + shared.timeout);
                loss_timer.as_mut().reset(next);
                progressed = true;
            }
            // Send what is due while a slot is free.
            while in_flight < capacity {
                let Some(&at) = due.front() else { break };
                let seq = next_seq;
                out[..HEADER].copy_from_slice(&seq.to_le_bytes());
                out[HEADER..]
                    .copy_from_slice(pattern.at(base + seq.wrapping_mul(31), size - HEADER));
                match socket.poll_send(cx, &out) {
                    Poll::Ready(Ok(_)) => {
                        due.pop_front();
                        next_seq += 1;
                        let slot = slots
                            .iter_mut()
                            .find(|s| !s.active)
                            .expect("a free slot: in_flight < capacity");
                        *slot = Slot {
                            seq,
                            sent_at: at,
                            active: true,
                        };
                        if in_flight == 0 {
                            loss_timer.as_mut().reset(at + shared.timeout);
                        }
                        in_flight += 1;
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // ICMP port unreachable for an earlier datagram,
                        // reported here and not on a receive: this one was
                        // not sent; count it, send it again.
                        outcome.note_refused(id, &e);
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
                    let Some(header) = got.first_chunk::<HEADER>() else {
                        outcome.note_short(id, got.len(), "a datagram shorter than its header");
                        continue;
                    };
                    let seq = u64::from_le_bytes(*header);
                    let Some(slot) = slots.iter_mut().find(|s| s.active && s.seq == seq) else {
                        if seq >= next_seq {
                            outcome.note_short(
                                id,
                                got.len(),
                                "a datagram with a sequence number never sent",
                            );
                        } else if answered[(seq % HISTORY) as usize] == seq + 1 {
                            outcome.duplicates += 1;
                        } else {
                            // Answered after its loss timeout: already
                            // counted lost.
                            outcome.stale += 1;
                        }
                        continue;
                    };
                    answered[(seq % HISTORY) as usize] = seq + 1;
                    slot.active = false;
                    in_flight -= 1;
                    let now = Instant::now();
                    if got.len() != size {
                        outcome.note_short(id, got.len(), "a datagram of the wrong length");
                    } else if let Err(diff) =
                        pattern.check(base + seq.wrapping_mul(31), &got[HEADER..], HEADER as u64)
                    {
                        outcome.note_mismatch(id, diff, "datagram");
                    } else {
                        outcome.complete(shared, slot.sent_at, now);
                    }
                    if pacer.is_none() {
                        due.push_back(now);
                    }
                    if now >= shared.end {
                        return Poll::Ready(Ending::Done);
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // ICMP port unreachable for an earlier datagram: the
                    // datagram is lost; keep going, the server may come back.
                    outcome.note_refused(id, &e);
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
    outcome.end(id, ending);
    outcome
}
