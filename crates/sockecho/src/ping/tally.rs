//! The counts of one ping run: each probe path (stream and datagram)
//! reports what happens here, which counts it, hands the event to the
//! caller, and makes the summary, so the counters mean the same thing
//! whatever the transport.

use std::time::{Duration, Instant};

use super::{Mismatch, Observer, PingEvent, PingSummary};
use crate::error::Error;
use sockecho_measure::stats::{Loss, RttStats};

/// Counters of one ping run, and where its events go.
pub(super) struct Tally<'a, 'o> {
    observer: &'a mut Observer<'o>,
    /// When the first probe went out; the summary's `time`.
    start: Instant,
    /// Probes sent (or, with `connect_only`, handshakes tried).
    sent: u64,
    /// Distinct probes answered by a valid echo.
    received: u64,
    /// Distinct probes that got any reply we could tie to them, valid or
    /// corrupt: `sent - answered` is the loss, so a corrupt echo is counted
    /// as corrupt and not a second time as lost.
    answered: u64,
    /// Valid echoes of a probe already answered.
    duplicates: u64,
    /// Echoes that differ from their probe, or that no probe of ours could
    /// have produced.
    corrupt: u64,
    /// Valid first echoes of a probe older than one already answered.
    reordered: u64,
    /// Valid first echoes that came after their probe's timeout.
    late: u64,
    /// ICMP "port unreachable" (or its Unix equivalent) reports.
    unreachable: u64,
    /// Round-trip times of valid first echoes.
    rtt: RttStats,
    /// Connections per greeting line (`greeting_line`).
    backends: std::collections::BTreeMap<String, u64>,
}

/// How a valid echo stands against the others.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Order {
    /// It came after its timeout had been reported.
    pub late: bool,
    /// A later probe had been answered first.
    pub reordered: bool,
}

impl<'a, 'o> Tally<'a, 'o> {
    pub(super) fn new(observer: &'a mut Observer<'o>) -> Self {
        Tally {
            observer,
            start: Instant::now(),
            sent: 0,
            received: 0,
            answered: 0,
            duplicates: 0,
            corrupt: 0,
            reordered: 0,
            late: 0,
            unreachable: 0,
            rtt: RttStats::new(),
            backends: std::collections::BTreeMap::new(),
        }
    }

    /// Hands an event to the caller.
    pub(super) fn emit(&mut self, event: PingEvent<'_>) -> Result<(), Error> {
        (self.observer)(event).map_err(Error::Output)
    }

    /// The run begins now (the connection is up): starts the clock.
    pub(super) fn begin(&mut self, event: PingEvent<'_>) -> Result<Instant, Error> {
        self.emit(event)?;
        self.start = Instant::now();
        Ok(self.start)
    }

    /// One more probe went out (or was due and could not be sent: it still
    /// counts, as lost, so that an outage shows as loss).
    pub(super) fn sent(&mut self) {
        self.sent += 1;
    }

    /// A valid echo. `first` is false when the probe was already tied to a
    /// corrupt echo (it counts as received but not again as answered).
    pub(super) fn valid(
        &mut self,
        bytes: usize,
        seq: u64,
        rtt: Duration,
        first: bool,
        order: Order,
    ) -> Result<(), Error> {
        self.received += 1;
        self.answered += u64::from(first);
        self.late += u64::from(order.late);
        self.reordered += u64::from(order.reordered);
        self.rtt.record(rtt);
        self.emit(PingEvent::Reply {
            bytes,
            seq,
            rtt,
            reordered: order.reordered,
            late: order.late,
        })
    }

    /// A second valid echo of a probe already answered.
    pub(super) fn duplicate(&mut self, bytes: usize, seq: u64, rtt: Duration) -> Result<(), Error> {
        self.duplicates += 1;
        self.emit(PingEvent::Duplicate { bytes, seq, rtt })
    }

    /// An echo of probe `seq` that differs from it. `first`: the first
    /// reply tied to that probe (it is answered, not lost).
    pub(super) fn corrupt(
        &mut self,
        bytes: usize,
        seq: u64,
        first: bool,
        how: Mismatch,
    ) -> Result<(), Error> {
        self.corrupt += 1;
        self.answered += u64::from(first);
        self.emit(PingEvent::Corrupt { bytes, seq, how })
    }

    /// A reply no probe of ours could have produced: not one of ours, or
    /// for a sequence number never sent.
    pub(super) fn stray(&mut self, event: PingEvent<'_>) -> Result<(), Error> {
        self.corrupt += 1;
        self.emit(event)
    }

    /// A reply to a probe too old to be checked any more: it counts as
    /// late, and its probe stays lost.
    pub(super) fn too_late(&mut self, bytes: usize, seq: u64) -> Result<(), Error> {
        self.late += 1;
        self.emit(PingEvent::TooLate { bytes, seq })
    }

    /// The peer's host said no one listens there.
    pub(super) fn unreachable(&mut self) -> Result<(), Error> {
        self.unreachable += 1;
        self.emit(PingEvent::Unreachable)
    }

    /// `connect_only`: a handshake completed in `rtt`, to the backend
    /// that greeted with `backend`.
    pub(super) fn connected(
        &mut self,
        seq: u64,
        rtt: Duration,
        backend: Option<&str>,
    ) -> Result<(), Error> {
        self.received += 1;
        self.answered += 1;
        self.rtt.record(rtt);
        if let Some(line) = backend {
            self.count_backend(line);
        }
        self.emit(PingEvent::Connected { seq, rtt, backend })
    }

    /// A new stream connection greeted with `line`.
    pub(super) fn backend(&mut self, line: &str) -> Result<(), Error> {
        self.count_backend(line);
        self.emit(PingEvent::Backend { line })
    }

    fn count_backend(&mut self, line: &str) {
        // Bounded by the connections made, one line each.
        *self.backends.entry(line.to_owned()).or_default() += 1;
    }

    /// The summary of the run.
    ///
    /// `lost` counts probes that got no reply at all; the loss percentage
    /// counts probes that got no valid one (lost, or answered only by a
    /// corrupt echo), as ping(8) counts it (its `received` excludes
    /// corrupted replies too): so it always agrees with `received`, and a
    /// run whose only reply was corrupt says `0 received, 100% loss, 1
    /// corrupt`, not `0% loss`.
    pub(super) fn finish(self, endpoint: String) -> PingSummary {
        let elapsed = self.start.elapsed();
        let lost = self.sent.saturating_sub(self.answered);
        let loss = Loss::new(self.sent, self.received);
        PingSummary {
            endpoint,
            sent: self.sent,
            received: self.received,
            lost,
            duplicates: self.duplicates,
            corrupt: self.corrupt,
            reordered: self.reordered,
            late: self.late,
            unreachable: self.unreachable,
            // To three decimals, as printed: no float tail in JSON.
            loss_percent: (loss.percent() * 1000.0).round() / 1000.0,
            time_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            rtt_us: self.rtt.summary(),
            backends: self.backends,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_echo_is_not_also_lost() {
        let mut seen = Vec::new();
        let mut observer = |event: PingEvent<'_>| {
            seen.push(format!("{event:?}"));
            Ok(())
        };
        let mut tally = Tally::new(&mut observer);
        for _ in 0..3 {
            tally.sent();
        }
        let rtt = Duration::from_micros(100);
        tally.valid(64, 0, rtt, true, Order::default()).unwrap();
        tally.duplicate(64, 0, rtt).unwrap();
        let how = Mismatch::Byte {
            offset: 30,
            expected: 1,
            got: 2,
        };
        tally.corrupt(64, 1, true, how).unwrap();
        let s = tally.finish("udp://127.0.0.1:9".to_owned());
        assert_eq!(
            (s.sent, s.received, s.lost, s.duplicates, s.corrupt),
            (3, 1, 1, 1, 1)
        );
        // Two of three probes got no valid reply.
        assert_eq!(s.loss_percent, 66.667);
        assert!(!s.success());
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_corrupt_reply_alone_is_total_loss() {
        let mut observer = |_: PingEvent<'_>| Ok(());
        let mut tally = Tally::new(&mut observer);
        tally.sent();
        let how = Mismatch::Byte {
            offset: 30,
            expected: 1,
            got: 2,
        };
        tally.corrupt(64, 0, true, how).unwrap();
        let s = tally.finish("udp://127.0.0.1:9".to_owned());
        assert_eq!((s.sent, s.received, s.lost, s.corrupt), (1, 0, 0, 1));
        assert_eq!(s.loss_percent, 100.0);
        assert!(!s.success());
    }
}
