//! What the tracer remembers about connections between socket calls:
//! each traced connection's addresses and timeline while its descriptor
//! is open ([`Watch::conns`]), the connections a listener's samples saw
//! waiting for `accept` ([`Waiting`]), and, after `close`, the connections it
//! follows through the kernel's socket diagnostics until the kernel's
//! tables no longer hold them or the follow bound is reached
//! ([`Follows`], one thread for all of them).
//!
//! Every piece of state here ends with the thing it describes: a
//! connection's entry is taken out at its `close` (or replaced when its
//! descriptor number is reused by the next `accept`), a waiting
//! connection's when it is accepted or a sample no longer finds it, a
//! followed connection when it is gone or its bound is reached; each
//! collection also has a fixed cap.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Lines;
use super::diag::{self, DiagSocket, Lookup};
use super::timeline::Timeline;

/// How often a connection is looked up after its close: fine enough to
/// time a TIME_WAIT to a few tens of milliseconds, at a lookup of a few
/// microseconds each.
const POLL: Duration = Duration::from_millis(20);

/// Connections followed at once at most; past it, a closing connection's
/// timeline is written at its close, ending where the trace last saw it
/// (a busy server traced closes thousands a second, each in TIME_WAIT for
/// a minute).
const MAX_FOLLOWED: usize = 256;

/// Waiting connections remembered at most between a listener's samples
/// and their `accept`.
const MAX_WAITING: usize = 1024;

/// A traced connection: who, its 4-tuple, what the trace saw.
#[derive(Debug)]
pub(super) struct Conn {
    /// As the trace lines name the other side.
    pub(super) peer: String,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) timeline: Timeline,
    /// The socket's cookie once the diagnostics have answered for it, so
    /// that a later socket with the same 4-tuple is not taken for it.
    cookie: Option<[u8; 8]>,
    /// The state the last line read through the descriptor said, and the
    /// one the last `diag` line said: a `diag` line is written only when
    /// the kernel's tables say something new (a descriptor reading CLOSE
    /// after a `diag` line said TIME_WAIT says nothing new).
    said: Option<u8>,
    diag_said: Option<u8>,
}

impl Conn {
    pub(super) fn new(
        peer: String,
        (local, remote): (SocketAddr, SocketAddr),
        timeline: Timeline,
    ) -> Conn {
        let said = timeline.last();
        Conn {
            peer,
            local: diag::canonical(local),
            remote: diag::canonical(remote),
            timeline,
            cookie: None,
            said,
            diag_said: None,
        }
    }

    /// A trace line read `state` through the descriptor.
    pub(super) fn said(&mut self, state: u8) {
        self.said = Some(state);
    }

    /// Asks the kernel's diagnostics where the connection is now: a `diag`
    /// line when that differs from what was last said, and the timeline.
    pub(super) fn look(&mut self, lines: &Lines, at: Instant) -> std::io::Result<()> {
        match diag::lookup(self.local, self.remote, self.cookie)? {
            Lookup::Found(socket) => {
                self.cookie.get_or_insert(socket.cookie);
                if self.diag_said.or(self.said) != Some(socket.state) {
                    self.diag_said = Some(socket.state);
                    lines.emit("diag", |r| {
                        r.text("peer", &self.peer);
                        r.diag(&socket);
                    });
                }
                self.timeline.see(socket.state, at);
            }
            Lookup::Gone => self.timeline.gone(at),
        }
        Ok(())
    }

    /// The `states` line that ends the connection's trace.
    pub(super) fn finish(&self, lines: &Lines) {
        lines.emit("states", |r| {
            r.text("peer", &self.peer);
            r.timeline(&self.timeline);
        });
    }
}

/// The tracer's memory of connections (see the module docs).
#[derive(Default)]
pub(super) struct Watch {
    /// Traced connections whose descriptor is open, by descriptor.
    pub(super) conns: Mutex<HashMap<RawFd, Conn>>,
    /// What listeners' samples saw of connections not accepted yet.
    pub(super) waiting: Mutex<Waiting>,
    /// When each listener's waiting connections may be read again.
    pub(super) pace: Mutex<Pace>,
    /// The connections followed after their close, shared with the thread.
    follows: Arc<Follows>,
    /// The thread that follows closed connections, started with the first.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// How long a connection is followed after its close, in microseconds.
    bound_us: AtomicU64,
}

impl Watch {
    /// Follows each connection for at most `bound` (a day at most) after
    /// its close.
    pub(super) fn set_bound(&self, bound: Duration) {
        let bound = bound.min(Duration::from_secs(24 * 3600));
        let us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        self.bound_us.store(us, Ordering::Relaxed);
    }

    /// Follows `conn`, whose descriptor is being closed, until the kernel's
    /// tables no longer hold it or the bound is reached; then its `states`
    /// line. Where it cannot be followed (a zero bound, too many followed,
    /// the tracer finishing), the line is written now.
    pub(super) fn follow(&self, conn: Conn, lines: &Arc<Lines>) {
        let bound = Duration::from_micros(self.bound_us.load(Ordering::Relaxed));
        let mut state = lock(&self.follows.state);
        if bound.is_zero() || state.stop || state.count() >= MAX_FOLLOWED {
            drop(state);
            conn.finish(lines);
            return;
        }
        let mut thread = lock(&self.thread);
        if thread.is_none() {
            let (follows, out) = (self.follows.clone(), lines.clone());
            let started = std::thread::Builder::new()
                .name("sockecho-follow".into())
                .spawn(move || follows.run(&out));
            match started {
                Ok(handle) => *thread = Some(handle),
                Err(_) => {
                    drop(state);
                    conn.finish(lines);
                    return;
                }
            }
        }
        state.followed.push(Followed {
            conn,
            until: Instant::now() + bound,
        });
        self.follows.wake.notify_one();
    }

    /// Waits until no connection is followed any more.
    pub(super) async fn followed(&self) {
        let idle = &self.follows.idle;
        loop {
            let notified = idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up between the two is
            // not missed.
            notified.as_mut().enable();
            if lock(&self.follows.state).count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Stops following: each connection still followed is looked up once
    /// more (a LAST_ACK that ended a moment ago reads CLOSED), then its
    /// `states` line is written as far as it goes. Later closes get their
    /// line at once.
    pub(super) fn stop(&self, lines: &Lines) {
        lock(&self.follows.state).stop = true;
        self.follows.wake.notify_all();
        // Taken out first: no lock is held while the thread ends.
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let left = std::mem::take(&mut lock(&self.follows.state).followed);
        let now = Instant::now();
        for mut followed in left {
            let _ = followed.conn.look(lines, now);
            followed.conn.finish(lines);
        }
        self.follows.idle.notify_waiters();
    }
}

/// The connections followed after their close, and the thread's signals.
#[derive(Default)]
struct Follows {
    state: Mutex<FollowState>,
    /// Wakes the thread: a connection to follow, or stop.
    wake: Condvar,
    /// Tells [`Watch::followed`] that nothing is followed any more.
    idle: tokio::sync::Notify,
}

/// What the follow thread and the closing connections share.
#[derive(Default)]
struct FollowState {
    /// Connections waiting for their next look.
    followed: Vec<Followed>,
    /// Connections the thread has taken out to look up: still followed.
    busy: usize,
    /// The tracer is finishing: no more following.
    stop: bool,
}

impl FollowState {
    fn count(&self) -> usize {
        self.followed.len() + self.busy
    }
}

/// A connection followed after its close.
struct Followed {
    conn: Conn,
    /// When following ends, gone or not.
    until: Instant,
}

impl Follows {
    /// The follow thread: every [`POLL`], looks up each connection it
    /// follows, without holding the lock meanwhile (closes elsewhere must
    /// not wait on netlink).
    fn run(&self, lines: &Lines) {
        let mut state = lock(&self.state);
        loop {
            if state.stop {
                return;
            }
            if state.followed.is_empty() {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let mut batch = std::mem::take(&mut state.followed);
            state.busy = batch.len();
            drop(state);
            let now = Instant::now();
            batch.retain_mut(|followed| {
                let conn = &mut followed.conn;
                // A lookup the kernel refuses now ends the following: the
                // timeline says what was seen, nothing more.
                let ended = conn.look(lines, now).is_err()
                    || conn.timeline.is_gone()
                    || now >= followed.until;
                if ended {
                    conn.finish(lines);
                }
                !ended
            });
            state = lock(&self.state);
            state.busy = 0;
            state.followed.append(&mut batch);
            if state.followed.is_empty() {
                self.idle.notify_waiters();
            }
            if !state.stop {
                state = self
                    .wake
                    .wait_timeout(state, POLL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }
}

/// Connections a listener's samples saw waiting (in SYN_RECV, or in its
/// accept queue), by 4-tuple (local, remote), with each state they were
/// seen in and when first: the start of the timeline of the connection
/// `accept` returns.
#[derive(Default)]
pub(super) struct Waiting {
    seen: VecDeque<(FourTuple, Vec<(u8, Instant)>)>,
}

/// A connection's addresses: (local, remote).
type FourTuple = (SocketAddr, SocketAddr);

impl Waiting {
    /// A sample of the listener on `listener` found `now` waiting. One it
    /// no longer finds was accepted (and taken) or given up: forgotten.
    pub(super) fn sampled(&mut self, listener: SocketAddr, now: &[DiagSocket], at: Instant) {
        let listener = diag::canonical(listener);
        let ours = |local: &SocketAddr| {
            local.port() == listener.port()
                && (listener.ip().is_unspecified() || local.ip() == listener.ip())
        };
        self.seen
            .retain(|(key, _)| !ours(&key.0) || now.iter().any(|s| (s.local, s.remote) == *key));
        for socket in now {
            let key = (socket.local, socket.remote);
            match self.seen.iter_mut().find(|(k, _)| *k == key) {
                Some((_, states)) => {
                    if states
                        .last()
                        .is_none_or(|(state, _)| *state != socket.state)
                    {
                        states.push((socket.state, at));
                    }
                }
                None => self.seen.push_back((key, vec![(socket.state, at)])),
            }
        }
        while self.seen.len() > MAX_WAITING {
            self.seen.pop_front();
        }
    }

    /// What the samples saw of the connection `accept` returned: each
    /// state and when it was first seen in it.
    pub(super) fn take(&mut self, local: SocketAddr, remote: SocketAddr) -> Vec<(u8, Instant)> {
        let key = (diag::canonical(local), diag::canonical(remote));
        let Some(at) = self.seen.iter().position(|(k, _)| *k == key) else {
            return Vec::new();
        };
        self.seen
            .remove(at)
            .map(|(_, states)| states)
            .unwrap_or_default()
    }
}

/// How often a listener's waiting connections may be read: at most twice
/// an interval, and for at most a tenth of the time (the kernel walks its
/// whole connection table for it, milliseconds on a large one), so that
/// a traced server under load still accepts at its pace.
#[derive(Default)]
pub(super) struct Pace {
    /// By listener descriptor: when its table was last read, and how long
    /// that took.
    last: HashMap<RawFd, (Instant, Duration)>,
}

impl Pace {
    /// Whether the listener `fd` may be read at `now`, with samples
    /// `interval` apart.
    pub(super) fn allows(&self, fd: RawFd, now: Instant, interval: Duration) -> bool {
        self.last.get(&fd).is_none_or(|(at, took)| {
            now.saturating_duration_since(*at) >= (interval / 2).max(*took * 9)
        })
    }

    /// The listener `fd` was read at `at`, taking `took`.
    pub(super) fn read(&mut self, fd: RawFd, at: Instant, took: Duration) {
        self.last.insert(fd, (at, took));
    }
}

/// A lock, even one a panicking thread held: the data are trace lines'
/// bookkeeping, never worth a second panic.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn waiting(state: u8, local: &str, remote: &str) -> DiagSocket {
        DiagSocket {
            state,
            local: addr(local),
            remote: addr(remote),
            timer_ms: Some(1000),
            retransmits: 0,
            cookie: [0; 8],
            inode: 0,
        }
    }

    #[test]
    fn what_the_samples_saw_is_taken_by_the_accept() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut w = Waiting::default();
        let syn = waiting(3, "127.0.0.1:9999", "127.0.0.1:40000");
        let queued = DiagSocket {
            state: 1,
            ..syn.clone()
        };
        w.sampled(addr("0.0.0.0:9999"), std::slice::from_ref(&syn), t0);
        w.sampled(
            addr("0.0.0.0:9999"),
            std::slice::from_ref(&syn),
            t0 + Duration::from_millis(500),
        );
        w.sampled(addr("0.0.0.0:9999"), std::slice::from_ref(&queued), t1);
        assert_eq!(w.take(syn.local, syn.remote), [(3, t0), (1, t1)]);
        assert_eq!(w.take(syn.local, syn.remote), []);
    }

    #[test]
    fn a_connection_a_sample_no_longer_finds_is_forgotten() {
        let t0 = Instant::now();
        let mut w = Waiting::default();
        let syn = waiting(3, "127.0.0.1:9999", "127.0.0.1:40000");
        let other = waiting(3, "127.0.0.1:8888", "127.0.0.1:40001");
        w.sampled(addr("127.0.0.1:9999"), std::slice::from_ref(&syn), t0);
        w.sampled(addr("127.0.0.1:8888"), std::slice::from_ref(&other), t0);
        // Given up: this listener's sample no longer finds it. The other
        // listener's connection is not this sample's to judge.
        w.sampled(addr("127.0.0.1:9999"), &[], t0);
        assert_eq!(w.take(syn.local, syn.remote), []);
        assert_eq!(w.take(other.local, other.remote), [(3, t0)]);
    }

    #[test]
    fn a_listener_is_read_at_a_measured_pace() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut pace = Pace::default();
        assert!(pace.allows(3, t0, second));
        pace.read(3, t0, Duration::from_millis(15));
        // Right after an accept: not again so soon.
        assert!(!pace.allows(3, t0 + Duration::from_millis(10), second));
        assert!(pace.allows(3, t0 + Duration::from_millis(500), second));
        // Another listener has a pace of its own.
        assert!(pace.allows(4, t0, second));
        // A slow read (100ms) waits nine times as long, whatever the
        // interval.
        pace.read(3, t0, Duration::from_millis(100));
        let fast = Duration::from_millis(10);
        assert!(!pace.allows(3, t0 + Duration::from_millis(800), fast));
        assert!(pace.allows(3, t0 + Duration::from_millis(900), fast));
    }
}
