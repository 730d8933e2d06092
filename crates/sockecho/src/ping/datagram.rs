//! Probes over datagrams (UDP, Unix datagram).
//!
//! Probes go out on schedule whatever the replies do, and replies are read
//! as they come: one may arrive after the next probe was sent, twice, out
//! of order, mangled, or never. The datagram flow core of `sockecho-flow`
//! tracks them by sequence number and classifies each reply as ping(8)
//! does (valid, duplicate, reordered, late, corrupt); this file sends,
//! receives, verifies and reports.
//!
//! What is lost is known only at the end: probes sent minus probes that
//! got a reply, after waiting up to the timeout for the last one.

use std::time::{Duration, Instant};

use sockecho_flow::probe::Probe;
use sockecho_flow::{DatagramFlow, PingSchedule, Reply};
use tokio_util::sync::CancellationToken;

use super::tally::{Order, Tally};
use super::{PingConfig, PingEvent, since};
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

/// Classifies one reply (`echo`, up to a byte longer than a probe) and
/// reports it.
fn reply(
    flow: &mut DatagramFlow,
    echo: &[u8],
    size: usize,
    start: Instant,
    report: &mut Tally<'_, '_>,
) -> Result<(), Error> {
    let now = Instant::now();
    let bytes = echo.len();
    let header = match Probe::read_header(echo) {
        Ok(header) => header,
        Err(how) => return report.stray(PingEvent::NotAProbe { bytes, how }),
    };
    let seq = header.seq;
    let mut mismatch = None;
    let verdict = flow.reply(seq, |sent_at| {
        // The send time we kept, not the one in the reply: the reply's is
        // verified against it, but only an intact one is trusted.
        let probe = Probe {
            seq,
            sent_ns: since(start, sent_at),
        };
        mismatch = probe.verify(echo, size).err();
        mismatch.is_none()
    });
    match verdict {
        Reply::NeverSent { .. } => report.stray(PingEvent::NeverSent { bytes, seq }),
        Reply::TooOld { .. } => report.too_late(bytes, seq),
        Reply::Duplicate { sent_at, .. } => report.duplicate(bytes, seq, now - sent_at),
        Reply::Valid {
            sent_at,
            late,
            reordered,
            first,
            ..
        } => report.valid(bytes, seq, now - sent_at, first, Order { late, reordered }),
        Reply::Corrupt { first, .. } => match mismatch {
            Some(how) => report.corrupt(bytes, seq, first, how),
            None => Ok(()),
        },
    }
}

/// Pings a datagram endpoint until `count` probes are settled or `stop`
/// fires.
pub(super) async fn run(
    config: &PingConfig,
    stop: &CancellationToken,
    report: &mut Tally<'_, '_>,
) -> Result<(), Error> {
    let endpoint = &config.endpoint;
    // A name's first address may have nobody there (`localhost` is `::1`
    // first, the server may be on 127.0.0.1 only): the one that answers.
    let located = Datagram::locate(endpoint, config.timeout.min(Datagram::LOCATE_WAIT)).await?;
    let socket = Datagram::connect(&located).await?;
    let size = config.size;
    let max = socket.max_datagram();
    if size > max {
        return Err(Error::Config(format!(
            "probe size must be at most {max} bytes over {}",
            endpoint.scheme()
        )));
    }
    let start = report.begin(PingEvent::Begin { size })?;
    // The two buffers of the run. The echo buffer has one byte more, so
    // that a reply longer than the probe shows as such instead of being
    // silently truncated to the right size.
    let mut send = vec![0u8; size];
    let mut echo = vec![0u8; size + 1];
    // Sized to the timeout, it never grows: a probe whose slot is needed
    // again is reported timed out (it is, for any sane interval).
    let window = window_len(config);
    let mut flow = DatagramFlow::new(window, window, config.timeout);
    let mut expired = Vec::new();
    let mut schedule = PingSchedule::new(start, config.interval);
    loop {
        let more = config.count.is_none_or(|n| flow.next_seq() < n);
        let expiry = flow.next_expiry();
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
            _ = stop.cancelled() => break,
            received = socket.recv(&mut echo) => match received {
                Ok(n) => reply(&mut flow, &echo[..n], size, start, report)?,
                // An ICMP "port unreachable" answered an earlier probe; the
                // kernel does not say which, but they come back in order:
                // the oldest one waiting is settled (lost) now rather than
                // after its timeout.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    report.unreachable()?;
                    flow.give_up_oldest(flow.next_seq());
                }
                Err(e) => return Err(Error::io(format!("receiving from {endpoint}"), e)),
            },
            _ = tokio::time::sleep_until(expiry.unwrap_or(start).into()), if expiry.is_some() => {
                flow.expire(Instant::now(), |e| expired.push(e.seq));
            }
            _ = tokio::time::sleep_until(send_at.into()), if more => {
                let seq = flow.next_seq();
                Probe::fill(seq, &mut send);
                let now = Instant::now();
                let (_, early) = flow.send(now);
                // The slot this probe takes was the oldest probe's.
                expired.extend(early.map(|e| e.seq));
                Probe { seq, sent_ns: since(start, now) }.write_header(&mut send);
                schedule.advance();
                report.sent();
                let sent =
                    send_probe(&socket, &send, config.timeout, report, &mut flow, seq).await?;
                if let Err(why) = sent {
                    flow.unsent(seq);
                    report.emit(PingEvent::SendFailed { seq, why: &why })?;
                }
            }
        }
        for seq in expired.drain(..) {
            report.emit(PingEvent::Timeout { seq })?;
        }
    }
    Ok(())
}

/// Sends probe `seq`. A pending ICMP error from an earlier probe may
/// surface here rather than on a receive; it is reported, settles the
/// oldest earlier probe still waiting, and the send is tried again. A Unix
/// datagram send blocks while the server's queue is full, hence the
/// timeout. The inner error is why this probe did not go out.
async fn send_probe(
    socket: &Datagram,
    probe: &[u8],
    timeout: Duration,
    report: &mut Tally<'_, '_>,
    flow: &mut DatagramFlow,
    seq: u64,
) -> Result<Result<(), String>, Error> {
    for attempt in 0..2 {
        match tokio::time::timeout(timeout, socket.send(probe)).await {
            Ok(Ok(_)) => return Ok(Ok(())),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused && attempt == 0 => {
                report.unreachable()?;
                flow.give_up_oldest(seq);
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

    fn config(count: Option<u64>, interval_ms: u64, timeout_ms: u64) -> PingConfig {
        PingConfig {
            count,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            ..PingConfig::new("udp://127.0.0.1:9".parse().unwrap())
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
        let mut seen = Vec::new();
        let mut observer = |event: PingEvent<'_>| {
            seen.push(format!("{event:?}"));
            Ok(())
        };
        let mut report = Tally::new(&mut observer);
        let start = Instant::now();
        let mut flow = DatagramFlow::new(4, 4, Duration::from_secs(1));
        let mut bufs = Vec::new();
        for seq in 0..3 {
            let now = Instant::now();
            flow.send(now);
            report.sent();
            let mut buf = vec![0u8; 64];
            Probe {
                seq,
                sent_ns: since(start, now),
            }
            .encode(&mut buf);
            bufs.push(buf);
        }
        reply(&mut flow, &bufs[1], 64, start, &mut report).unwrap();
        reply(&mut flow, &bufs[1], 64, start, &mut report).unwrap(); // DUP
        reply(&mut flow, &bufs[0], 64, start, &mut report).unwrap(); // reordered
        let mut bad = bufs[2].clone();
        bad[40] ^= 1;
        reply(&mut flow, &bad, 64, start, &mut report).unwrap(); // corrupt, answered
        reply(&mut flow, &bufs[2][..10], 64, start, &mut report).unwrap(); // stray
        let mut future = bufs[0].clone();
        future[15] = 9; // seq 9, never sent
        reply(&mut flow, &future, 64, start, &mut report).unwrap();
        let s = report.finish("udp://x".to_owned());
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
        let text = seen.join("\n");
        assert!(text.contains("Reply { bytes: 64, seq: 0"), "{text}");
        assert!(text.contains("reordered: true"), "{text}");
        assert!(
            text.contains("Corrupt { bytes: 64, seq: 2, how: Byte { offset: 40"),
            "{text}"
        );
        assert!(text.contains("NeverSent { bytes: 64, seq: 9 }"), "{text}");
    }
}
