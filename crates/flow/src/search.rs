//! `bench --find-rate`'s search, without the runs: which open-loop rate to
//! try next, whether a step passed, and when to stop.
//!
//! The search doubles the rate from where it starts while steps pass (or
//! halves it while they fail), then narrows the gap between the highest
//! rate that passed and the lowest that failed by trying their geometric
//! mean, until the two are within [`SearchLimits::precision`] of each
//! other. It is bounded in steps and in time, and says why it stopped
//! ([`Stop`]) so that a search cut short is never taken for an answer.
//!
//! A step passes when its latency percentile is under the target **and**
//! the rate achieved is the rate asked ([`judge`]): a server (or client)
//! that cannot keep the pace shows in the percentile only if latency is
//! timed from the intended send times, and a run that sent fewer messages
//! than asked measured a lighter load than the one it is named for.

use std::time::{Duration, Instant};

/// How far the rate achieved may fall short of the rate asked, as a
/// fraction, before a step fails. Besides it, each connection may be a
/// message short: a run's edges cut off the message a connection had in
/// flight, and at a low rate over a short step that one message is a
/// large fraction.
pub const ACHIEVED_SHORTFALL: f64 = 0.05;

/// How close the highest passing and lowest failing rates must come
/// before the search ends: within 5 % of each other.
pub const DEFAULT_PRECISION: f64 = 0.05;

/// The most steps a search takes when not told: from 1,000 msg/s,
/// doubling reaches 1,000,000 in ten, and four more narrow the gap of the
/// last doubling to under 5 %.
pub const DEFAULT_STEPS: u32 = 16;

/// What bounds a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchLimits {
    /// The first rate tried, messages per second.
    pub start: f64,
    /// The lowest rate the client can pace: the search never goes below.
    pub min: f64,
    /// The highest rate the client can pace: the search never goes above.
    pub max: f64,
    /// The most steps (runs) the search makes.
    pub steps: u32,
    /// The search ends once the lowest failing rate is within this
    /// fraction above the highest passing one.
    pub precision: f64,
    /// No step starts that could not end by then.
    pub deadline: Option<Instant>,
    /// How long one step takes, for the deadline: the warmup and the
    /// measured time, and some slack for connecting and closing.
    pub step_time: Duration,
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The highest passing and lowest failing rates are within the
    /// precision: the answer.
    Narrowed,
    /// Every rate tried passed, up to the highest the client can pace.
    Ceiling,
    /// Every rate tried failed, down to the lowest the client can pace.
    Floor,
    /// Out of steps before narrowing: stopped early.
    Steps,
    /// Out of time before narrowing: stopped early.
    Time,
    /// Stopped from outside (a signal) before narrowing. The search never
    /// says this itself; its driver does.
    Stopped,
}

impl Stop {
    /// Whether the search ended before it could narrow its answer.
    pub fn early(self) -> bool {
        matches!(self, Stop::Steps | Stop::Time | Stop::Stopped)
    }

    /// The reason as reports name it: `narrowed`, `ceiling`, `floor`,
    /// `steps`, `time`, `stopped`.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Narrowed => "narrowed",
            Stop::Ceiling => "ceiling",
            Stop::Floor => "floor",
            Stop::Steps => "steps",
            Stop::Time => "time",
            Stop::Stopped => "stopped",
        }
    }
}

/// What the search wants next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Run a step at this rate, messages per second.
    Try(f64),
    /// The search is over.
    Stop(Stop),
}

/// The state of one search: the highest rate that passed, the lowest that
/// failed, and the steps taken.
#[derive(Debug, Clone)]
pub struct RateSearch {
    limits: SearchLimits,
    /// The highest rate that passed.
    passed: Option<f64>,
    /// The lowest rate that failed.
    failed: Option<f64>,
    /// Steps recorded.
    steps: u32,
}

impl RateSearch {
    /// A search within `limits`, nothing tried yet.
    pub fn new(limits: SearchLimits) -> RateSearch {
        RateSearch {
            limits,
            passed: None,
            failed: None,
            steps: 0,
        }
    }

    /// What to do next, at `now`.
    pub fn next(&self, now: Instant) -> Next {
        let l = &self.limits;
        let rate = match (self.passed, self.failed) {
            (Some(lo), Some(hi)) if hi <= lo * (1.0 + l.precision) => {
                return Next::Stop(Stop::Narrowed);
            }
            (Some(lo), Some(hi)) => (lo * hi).sqrt(),
            (Some(lo), None) if lo >= l.max => return Next::Stop(Stop::Ceiling),
            (Some(lo), None) => (lo * 2.0).min(l.max),
            (None, Some(hi)) if hi <= l.min => return Next::Stop(Stop::Floor),
            (None, Some(hi)) => (hi / 2.0).max(l.min),
            (None, None) => l.start.clamp(l.min, l.max),
        };
        if self.steps >= l.steps {
            return Next::Stop(Stop::Steps);
        }
        if l.deadline.is_some_and(|end| now + l.step_time > end) {
            return Next::Stop(Stop::Time);
        }
        Next::Try(round(rate))
    }

    /// A step at `rate` passed or failed.
    pub fn record(&mut self, rate: f64, pass: bool) {
        self.steps += 1;
        if pass {
            self.passed = Some(self.passed.map_or(rate, |lo| lo.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |hi| hi.min(rate)));
        }
    }

    /// The highest rate that passed: the answer, once the search stops.
    pub fn best(&self) -> Option<f64> {
        self.passed
    }

    /// The lowest rate that failed.
    pub fn lowest_failed(&self) -> Option<f64> {
        self.failed
    }

    /// Steps taken.
    pub fn steps(&self) -> u32 {
        self.steps
    }
}

/// `rate` to three significant figures (`181019.3` -> `181000`): a rate
/// known within the search's precision is not known finer, and round
/// numbers read better in each step's line. Never rounds to zero.
fn round(rate: f64) -> f64 {
    if !(rate.is_finite() && rate > 0.0) {
        return rate;
    }
    let scale = 10f64.powi(2 - rate.log10().floor() as i32);
    let rounded = (rate * scale).round() / scale;
    if rounded > 0.0 { rounded } else { rate }
}

/// Whether a step passed: `latency` (the target's percentile; `None` when
/// it cannot be told, as when more messages were lost than the percentile
/// allows) is under `limit`, and the `completed` messages over `duration`
/// make the `asked` rate, within [`ACHIEVED_SHORTFALL`] and a message per
/// connection.
pub fn judge(
    limit: Duration,
    latency: Option<Duration>,
    asked: f64,
    completed: u64,
    connections: u64,
    duration: Duration,
) -> bool {
    let expected = asked * duration.as_secs_f64() * (1.0 - ACHIEVED_SHORTFALL);
    let kept_pace = completed as f64 + connections as f64 >= expected;
    kept_pace && latency.is_some_and(|l| l < limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SearchLimits {
        SearchLimits {
            start: 1000.0,
            min: 1.0,
            max: 1e7,
            steps: 30,
            precision: DEFAULT_PRECISION,
            deadline: None,
            step_time: Duration::from_secs(1),
        }
    }

    /// Runs a search against a server that passes every rate up to
    /// `capacity`; returns the rates tried and why it stopped.
    fn search(limits: SearchLimits, capacity: f64) -> (Vec<f64>, Stop, RateSearch) {
        let mut s = RateSearch::new(limits);
        let mut tried = Vec::new();
        let now = Instant::now();
        loop {
            match s.next(now) {
                Next::Try(rate) => {
                    tried.push(rate);
                    s.record(rate, rate <= capacity);
                }
                Next::Stop(why) => return (tried, why, s),
            }
        }
    }

    #[test]
    fn doubles_then_narrows_to_the_capacity() {
        let (tried, why, s) = search(limits(), 50_000.0);
        assert_eq!(why, Stop::Narrowed);
        assert_eq!(&tried[..7], &[1e3, 2e3, 4e3, 8e3, 16e3, 32e3, 64e3]);
        let best = s.best().unwrap();
        let failed = s.lowest_failed().unwrap();
        assert!(best <= 50_000.0 && failed > 50_000.0, "{best} {failed}");
        assert!(failed <= best * 1.05, "{best} {failed}");
        assert!(tried.len() <= 12, "{tried:?}");
    }

    #[test]
    fn halves_when_the_start_fails_and_stops_at_the_floor() {
        let (tried, why, s) = search(limits(), 300.0);
        assert_eq!(why, Stop::Narrowed);
        assert_eq!(&tried[..3], &[1000.0, 500.0, 250.0]);
        assert!(s.best().unwrap() <= 300.0);
        let mut l = limits();
        l.min = 100.0;
        let (tried, why, s) = search(l, 10.0);
        assert_eq!(why, Stop::Floor);
        assert_eq!(tried, vec![1000.0, 500.0, 250.0, 125.0, 100.0]);
        assert_eq!(s.best(), None);
    }

    #[test]
    fn every_rate_passing_stops_at_the_ceiling() {
        let mut l = limits();
        l.max = 5_000.0;
        let (tried, why, _) = search(l, f64::INFINITY);
        assert_eq!(why, Stop::Ceiling);
        assert_eq!(tried, vec![1000.0, 2000.0, 4000.0, 5000.0]);
    }

    #[test]
    fn bounded_in_steps_and_time_and_says_so() {
        let mut l = limits();
        l.steps = 4;
        let (tried, why, _) = search(l, 1e6);
        assert_eq!(tried.len(), 4);
        assert_eq!(why, Stop::Steps);
        assert!(why.early());
        let now = Instant::now();
        let mut l = limits();
        l.deadline = Some(now + Duration::from_millis(2500));
        let mut s = RateSearch::new(l);
        assert_eq!(s.next(now), Next::Try(1000.0));
        s.record(1000.0, true);
        assert_eq!(s.next(now + Duration::from_secs(1)), Next::Try(2000.0));
        s.record(2000.0, true);
        // A step of a second would end past the deadline.
        assert_eq!(s.next(now + Duration::from_secs(2)), Next::Stop(Stop::Time));
        assert!(!Stop::Narrowed.early() && !Stop::Ceiling.early());
    }

    #[test]
    fn rates_are_round() {
        assert_eq!(round(181_019.3), 181_000.0);
        assert_eq!(round(0.123_456), 0.123);
        assert_eq!(round(1000.0), 1000.0);
        assert_eq!(round(1e-9), 1e-9);
    }

    #[test]
    fn a_step_passes_only_at_the_pace_asked_and_under_the_limit() {
        let ms = Duration::from_millis;
        let second = Duration::from_secs(1);
        assert!(judge(ms(2), Some(ms(1)), 1000.0, 1000, 10, second));
        // Latency at or over the limit, or unknown: fails.
        assert!(!judge(ms(2), Some(ms(2)), 1000.0, 1000, 10, second));
        assert!(!judge(ms(2), None, 1000.0, 1000, 10, second));
        // 5 % short, less a message per connection, still keeps the pace.
        assert!(judge(ms(2), Some(ms(1)), 1000.0, 940, 10, second));
        assert!(!judge(ms(2), Some(ms(1)), 1000.0, 900, 10, second));
        // Short steps at low rates: a message per connection of slack.
        assert!(judge(ms(2), Some(ms(1)), 100.0, 22, 10, ms(300)));
    }
}
