//! One bench connection over a byte stream (TCP, Unix, TLS), without its
//! socket.
//!
//! Messages are `size` bytes of the [`Pattern`] laid end to end from the
//! connection's base, so the stream is one long known byte string: what
//! to write next is a slice of it, and every byte that comes back is
//! checked against it at its offset. A message is complete when the last
//! of its bytes has come back; its latency is from when it was sent (closed
//! loop) or due (open loop, so a stalled server shows in every message it
//! delayed). Open-loop flows also keep when each message's first byte was
//! actually written, for the raw latency beside the corrected one
//! ([`received_timed`](StreamFlow::received_timed)).

use std::collections::VecDeque;
use std::time::Instant;

use crate::pattern::{Difference, PERIOD, Pattern};

/// Messages one open-loop connection may owe (server stalled) before new
/// ones are dropped from the schedule and counted as overflow: bounds the
/// client's memory at a few MiB per connection.
pub const MAX_QUEUED: usize = 1 << 20;

/// The state of one stream flow: what is due, sent and echoed.
#[derive(Debug, Clone)]
pub struct StreamFlow {
    /// Where this connection's bytes start in the pattern.
    base: u64,
    /// Bytes per message.
    size: u64,
    /// Closed loop: each completion makes the next message due at once.
    closed_loop: bool,
    /// When each message not yet echoed was sent (or was due), oldest
    /// first.
    times: VecDeque<Instant>,
    /// Open loop: when the first byte of each message not yet echoed was
    /// written, oldest first (a message owed but not yet begun has none).
    /// Closed loop leaves it empty: a message is written as soon as it is
    /// due, so the two times are one.
    written: VecDeque<Instant>,
    /// Bytes due to be written (every message due, whole).
    queued: u64,
    /// Bytes written.
    sent: u64,
    /// Bytes echoed and verified.
    received: u64,
    /// More came back than was ever sent (a greeting, a broken echo).
    unsolicited: bool,
}

impl StreamFlow {
    /// A closed-loop flow for connection `id`: `pipeline` messages of
    /// `size` bytes due at `now`, each completion making the next one due.
    pub fn closed_loop(id: usize, size: usize, pipeline: usize, now: Instant) -> StreamFlow {
        let mut flow = StreamFlow::new(id, size, pipeline, true);
        for _ in 0..pipeline {
            flow.times.push_back(now);
            flow.queued += flow.size;
        }
        flow
    }

    /// An open-loop flow for connection `id`: messages become due only
    /// through [`schedule`](StreamFlow::schedule).
    pub fn open_loop(id: usize, size: usize) -> StreamFlow {
        StreamFlow::new(id, size, 1, false)
    }

    fn new(id: usize, size: usize, pipeline: usize, closed_loop: bool) -> StreamFlow {
        StreamFlow {
            base: Pattern::base(id),
            size: size.max(1) as u64,
            closed_loop,
            times: VecDeque::with_capacity(pipeline.max(1)),
            written: VecDeque::new(),
            queued: 0,
            sent: 0,
            received: 0,
            unsolicited: false,
        }
    }

    /// Open loop: one more message is due, timed from `due`. `false` when
    /// [`MAX_QUEUED`] messages are owed already: the message is dropped
    /// from the schedule, and the caller counts the overflow.
    pub fn schedule(&mut self, due: Instant) -> bool {
        if self.times.len() >= MAX_QUEUED {
            return false;
        }
        self.times.push_back(due);
        self.queued += self.size;
        true
    }

    /// The next bytes to write (at most one pattern period), or `None`
    /// when everything due is written.
    #[inline]
    pub fn to_send<'p>(&self, pattern: &'p Pattern) -> Option<&'p [u8]> {
        (self.sent < self.queued).then(|| {
            let len = (self.queued - self.sent).min(PERIOD as u64) as usize;
            pattern.at(self.base + self.sent, len)
        })
    }

    /// `n` bytes of what [`to_send`](StreamFlow::to_send) offered were
    /// written.
    #[inline]
    pub fn sent(&mut self, n: usize) {
        self.sent += n as u64;
    }

    /// [`sent`](StreamFlow::sent), at `now`: each message whose first byte
    /// is among the `n` is timed as written then. For open-loop flows,
    /// whose raw latency is timed from the write.
    #[inline]
    pub fn sent_at(&mut self, n: usize, now: Instant) {
        // Message j begins at byte j * size: those beginning in
        // [sent, sent + n) are ceil((sent + n) / size) - ceil(sent / size).
        let began = |bytes: u64| bytes.div_ceil(self.size);
        let starting = began(self.sent + n as u64) - began(self.sent);
        for _ in 0..starting {
            self.written.push_back(now);
        }
        self.sent += n as u64;
    }

    /// Bytes came back at `now`: checks every one against the pattern, and
    /// calls `complete` with the send (or due) time of each message they
    /// finish, oldest first. A wrong byte ends the flow: where it is.
    #[inline]
    pub fn received(
        &mut self,
        got: &[u8],
        now: Instant,
        pattern: &Pattern,
        mut complete: impl FnMut(Instant),
    ) -> Result<(), Difference> {
        self.received_timed(got, now, pattern, |due, _| complete(due))
    }

    /// [`received`](StreamFlow::received), calling `complete` with two
    /// times for each message finished: when it was sent or due (the
    /// corrected latency's start), and when its first byte was actually
    /// written (the raw latency's; the same time in a closed loop, or for
    /// bytes written through [`sent`](StreamFlow::sent)).
    #[inline]
    pub fn received_timed(
        &mut self,
        got: &[u8],
        now: Instant,
        pattern: &Pattern,
        mut complete: impl FnMut(Instant, Instant),
    ) -> Result<(), Difference> {
        if self.received + got.len() as u64 > self.sent {
            // Bytes we never sent: checked against what we would send
            // next, they fail, and the mismatch says so.
            self.unsolicited = true;
        }
        pattern.check(self.base + self.received, got, self.received)?;
        let before = self.received / self.size;
        self.received += got.len() as u64;
        for _ in before..self.received / self.size {
            let Some(sent) = self.times.pop_front() else {
                break;
            };
            let written = self.written.pop_front().unwrap_or(sent);
            complete(sent, written);
            if self.closed_loop {
                self.times.push_back(now);
                self.queued += self.size;
            }
        }
        Ok(())
    }

    /// Whether bytes arrived that were never sent: a mismatch is then
    /// "unsolicited" rather than a wrong echo.
    pub fn unsolicited(&self) -> bool {
        self.unsolicited
    }

    /// Messages due and not yet echoed.
    pub fn owed(&self) -> usize {
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Echoes what `flow` offers back to it in chunks of `cut` bytes until
    /// `want` messages completed; returns the completions seen.
    fn echo_in_chunks(flow: &mut StreamFlow, pattern: &Pattern, cut: usize, want: usize) -> usize {
        let t = Instant::now();
        let mut done = 0;
        for _ in 0..100_000 {
            if done >= want {
                break;
            }
            let Some(chunk) = flow.to_send(pattern) else {
                break;
            };
            let echoed = chunk[..chunk.len().min(cut)].to_vec();
            flow.sent(echoed.len());
            flow.received(&echoed, t, pattern, |_| done += 1).unwrap();
        }
        done
    }

    #[test]
    fn closed_loop_keeps_pipeline_messages_due() {
        let pattern = Pattern::new();
        let t0 = Instant::now();
        let mut flow = StreamFlow::closed_loop(3, 64, 4, t0);
        assert_eq!(flow.owed(), 4);
        assert_eq!(flow.to_send(&pattern).unwrap().len(), 256);
        flow.sent(256);
        assert!(flow.to_send(&pattern).is_none());
        let echo = pattern.at(Pattern::base(3), 100).to_vec();
        let mut sent_times = Vec::new();
        let t1 = t0 + Duration::from_millis(1);
        flow.received(&echo, t1, &pattern, |s| sent_times.push(s))
            .unwrap();
        // 100 bytes finish one 64-byte message, which makes the next due.
        assert_eq!(sent_times, vec![t0]);
        assert_eq!(flow.owed(), 4);
        assert_eq!(flow.to_send(&pattern).unwrap().len(), 64);
        assert!(!flow.unsolicited());
    }

    #[test]
    fn a_wrong_byte_is_found_at_its_stream_offset() {
        let pattern = Pattern::new();
        let t0 = Instant::now();
        let mut flow = StreamFlow::closed_loop(0, 64, 1, t0);
        flow.sent(64);
        let mut echo = pattern.at(Pattern::base(0), 64).to_vec();
        flow.received(&echo[..10], t0, &pattern, |_| {}).unwrap();
        echo[20] ^= 1;
        let diff = flow
            .received(&echo[10..], t0, &pattern, |_| panic!("no completion"))
            .unwrap_err();
        assert_eq!(diff.offset, 20);
    }

    #[test]
    fn bytes_never_sent_are_unsolicited() {
        let pattern = Pattern::new();
        let mut flow = StreamFlow::closed_loop(0, 64, 1, Instant::now());
        assert!(
            flow.received(b"Connection success", Instant::now(), &pattern, |_| {})
                .is_err()
        );
        assert!(flow.unsolicited());
    }

    #[test]
    fn open_loop_owes_what_is_scheduled_and_caps_it() {
        let pattern = Pattern::new();
        let t0 = Instant::now();
        let mut flow = StreamFlow::open_loop(1, 10);
        assert!(flow.to_send(&pattern).is_none());
        assert!(flow.schedule(t0));
        assert!(flow.schedule(t0 + Duration::from_millis(1)));
        assert_eq!(flow.to_send(&pattern).unwrap().len(), 20);
        flow.sent(20);
        let mut seen = Vec::new();
        flow.received(pattern.at(Pattern::base(1), 20), t0, &pattern, |s| {
            seen.push(s)
        })
        .unwrap();
        assert_eq!(seen, vec![t0, t0 + Duration::from_millis(1)]);
        assert_eq!(flow.owed(), 0, "open loop: nothing due by itself");
        flow.times.extend(std::iter::repeat_n(t0, MAX_QUEUED));
        assert!(!flow.schedule(t0), "the queue is capped");
    }

    #[test]
    fn open_loop_times_each_message_from_its_first_written_byte() {
        let pattern = Pattern::new();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut flow = StreamFlow::open_loop(2, 10);
        for _ in 0..3 {
            flow.schedule(t0);
        }
        // Message 0 begins at 1 ms, message 1 at 2 ms (its first byte is
        // byte 10), message 2 at 5 ms.
        flow.sent_at(4, at(1));
        flow.sent_at(8, at(2));
        flow.sent_at(8, at(3));
        flow.sent_at(10, at(5));
        let mut seen = Vec::new();
        let echo = pattern.at(Pattern::base(2), 30);
        flow.received_timed(echo, at(9), &pattern, |due, wrote| seen.push((due, wrote)))
            .unwrap();
        assert_eq!(seen, vec![(t0, at(1)), (t0, at(2)), (t0, at(5))]);
        assert!(flow.written.is_empty());
    }

    proptest! {
        /// However the echo is cut, every message completes exactly once.
        #[test]
        fn any_chunking_completes_each_message_once(size in 1usize..3000, pipeline in 1usize..8, cut in 1usize..5000) {
            let pattern = Pattern::new();
            let mut flow = StreamFlow::closed_loop(7, size, pipeline, Instant::now());
            let done = echo_in_chunks(&mut flow, &pattern, cut, 20);
            prop_assert!(done >= 20);
            prop_assert_eq!(done as u64, flow.received / size as u64);
            prop_assert_eq!(flow.owed(), pipeline);
            prop_assert!(!flow.unsolicited());
        }
    }
}
