//! The flow cores of sockecho's load tools, without I/O, the way
//! quinn-proto is to quinn: plain data in, decisions out.
//!
//! A *flow* is one bench connection, one bench datagram socket or one ping
//! run. Its core decides what to send next, what an arriving echo means
//! (complete, duplicate, late, corrupt, never sent), when a datagram
//! counts as lost, and which round trips go into the histogram. The
//! drivers in the `sockecho` crate (tokio tasks, io_uring rings) keep only
//! their I/O: they hand the core the bytes that arrived and the time, and
//! do what it says. So every driver measures the same thing, and the cores
//! are tested here by feeding them bytes and instants.
//!
//! - [`pattern`]: the bytes bench sends, checked with one `memcmp`.
//! - [`stream`]: [`StreamFlow`], a byte stream with up to K messages in
//!   flight (closed loop) or a schedule (open loop).
//! - [`datagram`]: [`DatagramFlow`], datagrams tracked by sequence number
//!   in one window: loss by timeout, duplicates, late and reordered
//!   replies. Bench and ping both use it.
//! - [`probe`]: ping's probe on the wire and the check of its echo.
//! - [`schedule`]: open-loop send times for bench, ping(8)'s grid, and
//!   how far a client fell behind its own schedule ([`Behind`]).
//! - [`search`]: `--find-rate`'s search over open-loop rates: what to try
//!   next, whether a step passed, when to stop.
//! - [`tally`]: what one bench flow counted (errors, mismatches, loss).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sockecho_flow::{DatagramFlow, Reply};
//!
//! let t0 = Instant::now();
//! let mut flow = DatagramFlow::new(16, 16, Duration::from_secs(1));
//! let (seq, _) = flow.send(t0);
//! // The echo came back intact: the core says it completes datagram 0.
//! let reply = flow.reply(seq, |_sent_at| true);
//! assert!(matches!(reply, Reply::Valid { seq: 0, late: false, .. }));
//! // The same bytes again: a duplicate.
//! assert!(matches!(flow.reply(seq, |_| true), Reply::Duplicate { .. }));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod datagram;
pub mod pattern;
pub mod probe;
pub mod schedule;
pub mod search;
pub mod stream;
pub mod tally;

pub use datagram::{DatagramFlow, Expired, Reply};
pub use pattern::{Difference, Pattern};
pub use schedule::{Behind, Pacer, PingSchedule};
pub use stream::StreamFlow;
pub use tally::{HEADER, Tally, fill_datagram};

use std::time::Instant;

/// The part of a run that is measured: a completion counts (its latency
/// goes into the histogram) when it comes at or after `start` (the end of
/// the warmup) and before `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When measuring starts: the end of the warmup.
    pub start: Instant,
    /// When the run ends.
    pub end: Instant,
}

impl Window {
    /// Whether something that happened at `at` is measured.
    pub fn contains(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}
