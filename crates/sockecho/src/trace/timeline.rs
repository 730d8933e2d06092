//! A connection's states in the order the trace saw them, and how long it
//! saw each: the `states` line that ends each traced connection. Pure:
//! fed states and instants, it renders text and JSON.
//!
//! A state's time runs from the first time the trace saw the connection
//! in it to the first time it saw it in the next, so a state the
//! connection passed through between two looks (a loopback handshake
//! takes microseconds) is not listed, and each time is as fine as the
//! looks were. The last state, unless the kernel's tables no longer held
//! the connection (`CLOSED`), is marked as still going on (`+` in text).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::tcp_info::{LISTEN, state_name};

/// The states one connection was seen in.
#[derive(Debug, Clone, Default)]
pub(super) struct Timeline {
    stays: Vec<Stay>,
    /// When the trace last looked at the connection.
    last_look: Option<Instant>,
    /// The kernel's tables no longer hold the connection: `CLOSED` ends it.
    gone: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stay {
    state: u8,
    /// First seen in it; `None` for the listener's LISTEN, which was the
    /// listener's state, not the connection's, and has no time.
    since: Option<Instant>,
}

/// The connection is no longer in the kernel's tables: RFC 793's CLOSED
/// (Linux numbers no such state; 0 is none of its numbers).
const GONE: u8 = 0;

impl Timeline {
    /// A connection `accept` returned in `state` at `at`: it came through
    /// a listener (LISTEN), and the listener's samples may have seen it
    /// waiting before (`waited`: SYN_RECV, then in the accept queue, each
    /// state with when it was first seen).
    pub(super) fn accepted(waited: &[(u8, Instant)], state: u8, at: Instant) -> Timeline {
        let mut timeline = Timeline::default();
        timeline.stays.push(Stay {
            state: LISTEN,
            since: None,
        });
        for &(state, since) in waited {
            timeline.see(state, since);
        }
        timeline.see(state, at);
        timeline
    }

    /// A connection `connect` made: SYN_SENT from `started` (the call put
    /// the socket there), then `state` once it returned at `at`.
    pub(super) fn connected(started: Instant, state: u8, at: Instant) -> Timeline {
        let mut timeline = Timeline::default();
        timeline.see(SYN_SENT, started);
        timeline.see(state, at);
        timeline
    }

    /// The trace saw the connection in `state` at `at`.
    pub(super) fn see(&mut self, state: u8, at: Instant) {
        if self.gone {
            return;
        }
        if self.stays.last().is_none_or(|last| last.state != state) {
            self.stays.push(Stay {
                state,
                since: Some(at),
            });
        }
        self.last_look = Some(self.last_look.map_or(at, |last| last.max(at)));
    }

    /// The kernel's tables no longer held the connection at `at`.
    pub(super) fn gone(&mut self, at: Instant) {
        self.see(GONE, at);
        self.gone = true;
    }

    /// Whether the connection has left the kernel's tables.
    pub(super) fn is_gone(&self) -> bool {
        self.gone
    }

    /// The last state seen.
    pub(super) fn last(&self) -> Option<u8> {
        self.stays.last().map(|stay| stay.state)
    }

    /// Each state, its time (none for LISTEN and CLOSED) and whether it
    /// was still going on when the trace stopped looking.
    fn entries(&self) -> Vec<(String, Option<Duration>, bool)> {
        let count = self.stays.len();
        self.stays
            .iter()
            .enumerate()
            .map(|(i, stay)| {
                let name = if stay.state == GONE {
                    "CLOSED".to_owned()
                } else {
                    state_name(stay.state)
                };
                let last = i + 1 == count;
                let until = match self.stays.get(i + 1) {
                    Some(next) => next.since,
                    None => self.last_look,
                };
                let time = match (stay.since, until) {
                    (Some(since), Some(until)) if stay.state != GONE => {
                        Some(until.saturating_duration_since(since))
                    }
                    _ => None,
                };
                (name, time, last && stay.state != GONE)
            })
            .collect()
    }

    /// `LISTEN>SYN_RECV:1.0s>ESTABLISHED:2.3s>CLOSE_WAIT:80us>CLOSED`.
    pub(super) fn text(&self) -> String {
        let mut text = String::new();
        for (i, (name, time, ongoing)) in self.entries().into_iter().enumerate() {
            if i > 0 {
                text.push('>');
            }
            text.push_str(&name);
            if let Some(time) = time {
                let _ = write!(text, ":{}", span(time));
            }
            if ongoing {
                text.push('+');
            }
        }
        text
    }

    /// `[{"state":"LISTEN"},{"state":"ESTABLISHED","duration_us":2300000},
    /// ...,{"state":"TIME_WAIT","duration_us":...,"ongoing":true}]`.
    pub(super) fn json(&self) -> String {
        let entries: Vec<serde_json::Value> = self
            .entries()
            .into_iter()
            .map(|(name, time, ongoing)| {
                let mut entry = serde_json::Map::new();
                entry.insert("state".into(), name.into());
                if let Some(time) = time {
                    let us = u64::try_from(time.as_micros()).unwrap_or(u64::MAX);
                    entry.insert("duration_us".into(), us.into());
                }
                if ongoing {
                    entry.insert("ongoing".into(), true.into());
                }
                entry.into()
            })
            .collect();
        serde_json::Value::from(entries).to_string()
    }
}

/// `TCP_SYN_SENT` (`include/net/tcp_states.h`).
const SYN_SENT: u8 = 2;

/// A time as a learner reads it: `80us`, `1.2ms`, `2.3s`.
fn span(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTABLISHED: u8 = 1;
    const SYN_RECV: u8 = 3;
    const CLOSE_WAIT: u8 = 8;
    const FIN_WAIT1: u8 = 4;
    const TIME_WAIT: u8 = 6;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_accepted_connection_starts_at_the_listener() {
        let t0 = Instant::now();
        let mut t = Timeline::accepted(&[(SYN_RECV, t0)], ESTABLISHED, t0 + ms(1000));
        t.see(ESTABLISHED, t0 + ms(1500));
        t.see(CLOSE_WAIT, t0 + ms(3300));
        t.gone(t0 + ms(3300) + Duration::from_micros(80));
        assert!(t.is_gone());
        assert_eq!(
            t.text(),
            "LISTEN>SYN_RECV:1.0s>ESTABLISHED:2.3s>CLOSE_WAIT:80us>CLOSED"
        );
        let json: serde_json::Value = serde_json::from_str(&t.json()).unwrap();
        assert_eq!(json[0], serde_json::json!({"state": "LISTEN"}));
        assert_eq!(
            json[1],
            serde_json::json!({"state": "SYN_RECV", "duration_us": 1_000_000})
        );
        assert_eq!(json[4], serde_json::json!({"state": "CLOSED"}));
    }

    #[test]
    fn a_state_not_left_is_still_going_on() {
        let t0 = Instant::now();
        let mut t = Timeline::connected(t0, ESTABLISHED, t0 + Duration::from_micros(150));
        let fin = t0 + ms(10) + Duration::from_micros(150);
        t.see(FIN_WAIT1, fin);
        t.see(TIME_WAIT, fin + ms(2));
        t.see(TIME_WAIT, fin + ms(2002));
        assert!(!t.is_gone());
        assert_eq!(t.last(), Some(TIME_WAIT));
        assert_eq!(
            t.text(),
            "SYN_SENT:150us>ESTABLISHED:10.0ms>FIN_WAIT1:2.0ms>TIME_WAIT:2.0s+"
        );
        let json: serde_json::Value = serde_json::from_str(&t.json()).unwrap();
        assert_eq!(
            json[3],
            serde_json::json!({"state": "TIME_WAIT", "duration_us": 2_000_000, "ongoing": true})
        );
    }

    #[test]
    fn a_wait_in_the_accept_queue_is_not_counted_as_the_handshake() {
        let t0 = Instant::now();
        let waited = [(SYN_RECV, t0), (ESTABLISHED, t0 + ms(3000))];
        let mut t = Timeline::accepted(&waited, CLOSE_WAIT, t0 + ms(10_000));
        t.gone(t0 + ms(10_001));
        assert_eq!(
            t.text(),
            "LISTEN>SYN_RECV:3.0s>ESTABLISHED:7.0s>CLOSE_WAIT:1.0ms>CLOSED"
        );
    }

    #[test]
    fn nothing_is_seen_after_the_connection_is_gone() {
        let t0 = Instant::now();
        let mut t = Timeline::accepted(&[], CLOSE_WAIT, t0);
        t.gone(t0 + ms(1));
        t.see(ESTABLISHED, t0 + ms(2));
        assert_eq!(t.text(), "LISTEN>CLOSE_WAIT:1.0ms>CLOSED");
    }
}
