//! Probes over datagrams (UDP, Unix datagram).
//!
//! Probes go out on schedule whatever the replies do, and replies are read
//! as they come: one may arrive after the next probe was sent, twice, out
//! of order, mangled, or never. Each is classified as ping(8) does:
//!
//! - valid: the first intact echo of a probe we sent;
//! - duplicate: an intact echo of a probe already answered;
//! - reordered: valid, but a later probe was answered first;
//! - late: valid, but after its timeout was reported ("Request timeout").
//!   Like ping(8), which counts every reply it sees before it exits, a
//!   late echo is received (not lost), and is also counted as late;
//! - corrupt: bytes that differ from the probe named in the header, or no
//!   probe of ours at all (bad magic, a sequence number never sent).
//!
//! What is lost is known only at the end: probes sent minus probes that
//! got a reply, after waiting up to the timeout for the last one.

use std::time::Duration;

use tokio::time::Instant;

use super::probe::Probe;
use super::report::{Order, Report};
use super::{PingConfig, Schedule, since};
use crate::error::{Error, reason};
use crate::transport::Datagram;

/// The most probes tracked at once. A reply to a probe older than the last
/// `MAX_WINDOW` sent is counted as too late to check; with the window sized
/// to cover the timeout (see [`window_len`]) that only happens past this
/// cap, e.g. `-i 1ms -W 100s`. 64 Ki slots of 24 bytes: 1.5 MiB.
const MAX_WINDOW: usize = 1 << 16;

/// The fewest probes tracked (unless the run sends fewer): a reply up to a
/// minute late at the default one-second interval is still recognised as
/// a late echo rather than dismissed as too late to check.
const MIN_WINDOW: usize = 64;

/// Where a probe stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// The slot holds no probe yet.
    #[default]
    Free,
    /// Sent, no reply yet, timeout not reached.
    Pending,
    /// Its timeout passed without a reply (or it could not be sent).
    TimedOut,
    /// A valid echo came.
    Answered,
    /// Only a corrupt echo came so far.
    Corrupted,
}

/// One tracked probe.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Which probe the slot holds: the ring reuses slots, so a reply's
    /// sequence number must match this one to be tied to it.
    seq: u64,
    /// When it was sent, as its header says (ns since the run began).
    sent_ns: u64,
    /// What has come back for it so far.
    state: State,
}

/// The probes still worth tracking, in a ring indexed by sequence number:
/// allocated once, so the hot path allocates nothing however long it runs.
struct Window {
    /// Probe `seq` lives at `seq % slots.len()`.
    slots: Vec<Slot>,
}

impl Window {
    fn new(len: usize) -> Self {
        Window {
            slots: vec![Slot::default(); len.max(1)],
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    fn index(&self, seq: u64) -> usize {
        // The remainder is below `slots.len()`, a usize.
        (seq % self.len()) as usize
    }

    /// The probe `seq`, if it is still tracked.
    fn get(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = self.index(seq);
        let slot = &mut self.slots[i];
        (slot.state != State::Free && slot.seq == seq).then_some(slot)
    }

    /// Tracks a new probe, replacing the one `len()` older (which the
    /// caller has settled).
    fn insert(&mut self, seq: u64, sent_ns: u64) {
        let i = self.index(seq);
        self.slots[i] = Slot {
            seq,
            sent_ns,
            state: State::Pending,
        };
    }
}

/// Enough slots for every probe that can be awaiting its reply: those sent
/// within one timeout, plus slack for the one being sent; at least
/// [`MIN_WINDOW`], at most [`MAX_WINDOW`], and never more than `count` (a
/// short run needs no more).
fn window_len(config: &PingConfig) -> usize {
    let per_timeout = config.timeout.as_nanos() / config.interval.as_nanos().max(1);
    let mut len = usize::try_from(per_timeout)
        .unwrap_or(usize::MAX)
        .saturating_add(2)
        .clamp(MIN_WINDOW, MAX_WINDOW);
    if let Some(count) = config.count {
        len = len.min(usize::try_from(count).unwrap_or(usize::MAX));
    }
    len.max(1)
}

/// The bookkeeping of a run: which probes are out, which are settled.
struct Tracker {
    window: Window,
    /// Probes sent so far; the next sequence number.
    next_seq: u64,
    /// The oldest probe whose timeout may still be reported: every older
    /// one is answered or timed out.
    oldest: u64,
    /// The highest sequence number validly answered, to spot reordering.
    highest_valid: Option<u64>,
}

impl Tracker {
    /// Skips past probes already answered.
    fn settle(&mut self) {
        while self.oldest < self.next_seq
            && self
                .window
                .get(self.oldest)
                .is_none_or(|slot| slot.state != State::Pending)
        {
            self.oldest += 1;
        }
    }

    /// When the oldest pending probe times out, if one is pending.
    fn expiry(&mut self, start: Instant, timeout: Duration) -> Option<Instant> {
        self.settle();
        if self.oldest == self.next_seq {
            return None;
        }
        let sent_ns = self.window.get(self.oldest)?.sent_ns;
        Some(start + Duration::from_nanos(sent_ns) + timeout)
    }

    /// Reports the oldest pending probe as timed out.
    fn expire_oldest(&mut self, report: &mut Report<'_>) -> Result<(), Error> {
        let seq = self.oldest;
        if let Some(slot) = self.window.get(seq).filter(|s| s.state == State::Pending) {
            slot.state = State::TimedOut;
            report.timeout(seq)?;
        }
        self.oldest += 1;
        Ok(())
    }

    /// Classifies one reply of `n` bytes (in `echo[..n]`) and reports it.
    fn reply(
        &mut self,
        echo: &[u8],
        size: usize,
        start: Instant,
        report: &mut Report<'_>,
    ) -> Result<(), Error> {
        let now = Instant::now();
        let n = echo.len();
        let header = match Probe::read_header(echo) {
            Ok(header) => header,
            Err(how) => return report.stray(n, format_args!("not a probe: {how}")),
        };
        let seq = header.seq;
        if seq >= self.next_seq {
            return report.stray(n, format_args!("seq={seq} was never sent"));
        }
        let highest_valid = self.highest_valid;
        let Some(slot) = self.window.get(seq) else {
            return report.too_late(n, seq);
        };
        let probe = Probe {
            seq,
            sent_ns: slot.sent_ns,
        };
        // The send time we kept, not the one in the reply: the reply's is
        // verified against it below, but only an intact one is trusted.
        let rtt = now.saturating_duration_since(start + Duration::from_nanos(slot.sent_ns));
        let first = matches!(slot.state, State::Pending | State::TimedOut);
        match probe.verify(echo, size) {
            Ok(()) if slot.state == State::Answered => report.duplicate(n, seq, rtt),
            Ok(()) => {
                let order = Order {
                    late: slot.state == State::TimedOut,
                    reordered: highest_valid.is_some_and(|h| seq < h),
                };
                slot.state = State::Answered;
                self.highest_valid = Some(highest_valid.map_or(seq, |h| h.max(seq)));
                report.valid(n, seq, rtt, first, order)
            }
            Err(how) => {
                if first {
                    slot.state = State::Corrupted;
                }
                report.corrupt(n, seq, first, how)
            }
        }
    }
}

/// Pings a datagram endpoint until `count` probes are settled or `stop`
/// fires.
pub(super) async fn run(config: &PingConfig, report: &mut Report<'_>) -> Result<(), Error> {
    let endpoint = &config.endpoint;
    let socket = Datagram::connect(endpoint).await?;
    let size = config.size;
    let max = socket.max_datagram();
    if size > max {
        return Err(Error::Usage(format!(
            "probe size must be at most {max} bytes over {}",
            endpoint.scheme()
        )));
    }
    let start = report.begin(format_args!("{size} bytes per probe"))?;
    // The two buffers of the run. The echo buffer has one byte more, so
    // that a reply longer than the probe shows as such instead of being
    // silently truncated to the right size.
    let mut send = vec![0u8; size];
    let mut echo = vec![0u8; size + 1];
    let mut tracker = Tracker {
        window: Window::new(window_len(config)),
        next_seq: 0,
        oldest: 0,
        highest_valid: None,
    };
    let mut schedule = Schedule::new(start, config.interval);
    loop {
        let more = config.count.is_none_or(|n| tracker.next_seq < n);
        let expiry = tracker.expiry(start, config.timeout);
        if !more && expiry.is_none() {
            break; // every probe answered or timed out
        }
        // Disabled branches still build their future: give them any time.
        let send_at = if more {
            schedule.due(Instant::now())
        } else {
            start
        };
        // Not `biased`: a peer flooding us with replies must not starve
        // the timeouts and sends, or the run would never end.
        tokio::select! {
            _ = config.stop.cancelled() => break,
            received = socket.recv(&mut echo) => match received {
                Ok(n) => tracker.reply(&echo[..n], size, start, report)?,
                // An ICMP "port unreachable" answered an earlier probe; the
                // kernel does not say which.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    report.unreachable()?;
                }
                Err(e) => return Err(Error::io(format!("receiving from {endpoint}"), e)),
            },
            _ = tokio::time::sleep_until(expiry.unwrap_or(start)), if expiry.is_some() => {
                tracker.expire_oldest(report)?;
            }
            _ = tokio::time::sleep_until(send_at), if more => {
                let seq = tracker.next_seq;
                // The slot this probe takes must be settled first.
                while tracker.oldest + tracker.window.len() <= seq {
                    tracker.expire_oldest(report)?;
                }
                Probe::fill(seq, &mut send);
                let sent_ns = since(start, Instant::now());
                Probe { seq, sent_ns }.write_header(&mut send);
                tracker.window.insert(seq, sent_ns);
                tracker.next_seq += 1;
                schedule.advance();
                report.sent();
                if let Err(why) = send_probe(&socket, &send, config.timeout, report).await? {
                    if let Some(slot) = tracker.window.get(seq) {
                        slot.state = State::TimedOut;
                    }
                    report.note(format_args!("seq={seq}: cannot send: {why}"))?;
                }
            }
        }
    }
    Ok(())
}

/// Sends one probe. A pending ICMP error from an earlier probe may surface
/// here rather than on a receive; it is reported and the send tried again.
/// A Unix datagram send blocks while the server's queue is full, hence the
/// timeout. The inner error is why this probe did not go out.
async fn send_probe(
    socket: &Datagram,
    probe: &[u8],
    timeout: Duration,
    report: &mut Report<'_>,
) -> Result<Result<(), String>, Error> {
    for attempt in 0..2 {
        match tokio::time::timeout(timeout, socket.send(probe)).await {
            Ok(Ok(_)) => return Ok(Ok(())),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused && attempt == 0 => {
                report.unreachable()?;
            }
            Ok(Err(e)) => return Ok(Err(reason(&e))),
            Err(_) => return Ok(Err("timed out".to_owned())),
        }
    }
    Ok(Err("connection refused".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn config(count: Option<u64>, interval_ms: u64, timeout_ms: u64) -> PingConfig {
        PingConfig {
            endpoint: "udp://127.0.0.1:9".parse().unwrap(),
            count,
            interval: Duration::from_millis(interval_ms),
            size: 64,
            timeout: Duration::from_millis(timeout_ms),
            connect_only: false,
            json: false,
            stop: CancellationToken::new(),
            tls: Default::default(),
        }
    }

    #[test]
    fn window_covers_the_timeout() {
        assert_eq!(window_len(&config(None, 1000, 1000)), MIN_WINDOW);
        assert_eq!(window_len(&config(None, 10, 1000)), 102);
        assert_eq!(window_len(&config(Some(5), 10, 1000)), 5);
        assert_eq!(window_len(&config(None, 0, 1000)), MAX_WINDOW);
    }

    #[test]
    fn classifies_duplicates_reorders_and_corruption() {
        let start = Instant::now();
        let mut out = Vec::new();
        let mut report = Report::new(&mut out, false, "udp://x".to_owned());
        let mut t = Tracker {
            window: Window::new(4),
            next_seq: 0,
            oldest: 0,
            highest_valid: None,
        };
        let mut bufs = Vec::new();
        for seq in 0..3 {
            let p = Probe { seq, sent_ns: seq };
            t.window.insert(seq, seq);
            t.next_seq += 1;
            report.sent();
            let mut buf = vec![0u8; 64];
            p.encode(&mut buf);
            bufs.push(buf);
        }
        t.reply(&bufs[1], 64, start, &mut report).unwrap();
        t.reply(&bufs[1], 64, start, &mut report).unwrap(); // DUP
        t.reply(&bufs[0], 64, start, &mut report).unwrap(); // reordered
        let mut bad = bufs[2].clone();
        bad[40] ^= 1;
        t.reply(&bad, 64, start, &mut report).unwrap(); // corrupt, answered
        t.reply(&bufs[2][..10], 64, start, &mut report).unwrap(); // stray
        let mut future = bufs[0].clone();
        future[15] = 9; // seq 9, never sent
        t.reply(&future, 64, start, &mut report).unwrap();
        let s = report.finish().unwrap();
        assert_eq!(
            (
                s.sent,
                s.received,
                s.lost,
                s.duplicates,
                s.reordered,
                s.corrupt
            ),
            (3, 2, 0, 1, 1, 3)
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("seq=0 time="), "{text}");
        assert!(text.contains("(reordered)"), "{text}");
        assert!(text.contains("seq=2 corrupt at byte 40"), "{text}");
        assert!(text.contains("seq=9 was never sent"), "{text}");
    }
}
