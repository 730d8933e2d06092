//! `--find-rate TARGET`: the highest open-loop rate whose latency
//! percentile meets a target (`p99<2ms`), found by running a bench per
//! step. What to try next and whether a step passed is the search core's
//! ([`sockecho_flow::search`]); here are the runs, the target's syntax and
//! the report.
//!
//! Every step is open loop, so its latency is timed from each message's
//! intended send time: a server that cannot keep the pace shows in the
//! percentile rather than slowing the client down (tcpkali's `-r
//! @latency` idea, without coordinated omission). Datagrams lost count as
//! slower than any echo.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sockecho_flow::search::{self, Next, RateSearch, SearchLimits, Stop};
use sockecho_measure::report::{FindStep, ReportError};
use tokio_util::sync::CancellationToken;

use super::{BenchConfig, BenchOutcome, MAX_RATE_PER_CONNECTION, MIN_RATE_PER_CONNECTION};
use super::{Progress, run, validate};
use crate::error::{Error, Setting};

/// The first rate tried when none is given, messages per second.
pub const DEFAULT_START_RATE: f64 = 1000.0;

/// How long a search may take when not told: long enough for
/// [`search::DEFAULT_STEPS`] steps of a few seconds each.
pub const DEFAULT_TIME: Duration = Duration::from_secs(600);

/// What a step costs beyond its warmup and measured time, for the time
/// bound: connecting, and the polite close (up to a second).
const STEP_SLACK: Duration = Duration::from_millis(1500);

/// A latency target: a percentile and the limit it must stay under
/// (`p99<2ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyTarget {
    /// The percentile, 0 to 100 (`p999` is 99.9).
    pub percentile: f64,
    /// It must be under this.
    pub limit: Duration,
    /// As written.
    text: String,
}

impl LatencyTarget {
    /// The percentile as reports name it: `p99`, `p99.9`, `p50`.
    pub fn name(&self) -> String {
        format!("p{}", self.percentile)
    }
}

impl std::fmt::Display for LatencyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for LatencyTarget {
    type Err = Error;

    /// `pN<DURATION`: `p99<2ms`, `p999<10ms` (99.9), `p99.99<50ms`,
    /// `p50<200us`, `p100<1s` (the slowest echo). As in the reports'
    /// keys, digits after the first two are decimals: `p999` is 99.9.
    fn from_str(text: &str) -> Result<LatencyTarget, Error> {
        let text = text.trim();
        let bad = |why: &str| {
            Error::setting(
                Setting::FindRate,
                format!("invalid target '{text}': {why} (examples: p99<2ms, p999<10ms, p50<200us)"),
            )
        };
        let (left, right) = text
            .split_once('<')
            .ok_or_else(|| bad("expected PERCENTILE<DURATION"))?;
        let digits = left
            .trim()
            .strip_prefix(['p', 'P'])
            .ok_or_else(|| bad("a percentile starts with p"))?;
        let percentile =
            percentile(digits).ok_or_else(|| bad("not a percentile from p1 to p100"))?;
        let limit = crate::duration::parse(right.trim()).map_err(|e| bad(&e.to_string()))?;
        if limit.is_zero() {
            return Err(bad("no latency is under 0"));
        }
        Ok(LatencyTarget {
            percentile,
            limit,
            text: text.to_owned(),
        })
    }
}

/// `99` -> 99, `999` -> 99.9, `9999` -> 99.99, `995` -> 99.5, `99.5`,
/// `100`. Three or more digits without a dot are a 99-point-something
/// (as the reports' `p999`); `p101` is refused, not read as 10.1.
fn percentile(digits: &str) -> Option<f64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = if digits.contains('.') || digits.len() <= 2 || digits == "100" {
        digits.parse().ok()?
    } else if let Some(decimals) = digits.strip_prefix("99") {
        format!("99.{decimals}").parse().ok()?
    } else {
        return None;
    };
    (value > 0.0 && value <= 100.0).then_some(value)
}

/// How a search runs: its target and bounds.
#[derive(Debug, Clone)]
pub struct FindRate {
    /// What each step must meet.
    pub target: LatencyTarget,
    /// The most steps.
    pub steps: u32,
    /// The longest the whole search may take; no step starts that could
    /// not end within it.
    pub time: Duration,
}

impl FindRate {
    /// A search for `target` with the default bounds.
    pub fn new(target: LatencyTarget) -> FindRate {
        FindRate {
            target,
            steps: search::DEFAULT_STEPS,
            time: DEFAULT_TIME,
        }
    }
}

/// How a search ended.
#[derive(Debug)]
pub struct FindOutcome {
    /// The run at the highest rate that met the target, or when none did
    /// the last step's; its report carries `find_rate`. A step whose echo
    /// differed ends the search there, as a failed run.
    pub outcome: BenchOutcome,
    /// The highest rate that met the target.
    pub rate: Option<f64>,
    /// The lowest rate that did not.
    pub lowest_failed: Option<f64>,
    /// Why the search ended.
    pub stopped: Stop,
    /// Steps run.
    pub steps: usize,
}

/// Searches for the highest open-loop rate at which `find.target` holds:
/// one run of `config` per step (`config.rate`, when given, is the first
/// rate tried; its start time applies to the first step), each reported to
/// `on_step` as it ends.
///
/// A step passes when its percentile (lost datagrams counted as slower
/// than any echo) is under the limit, the rate achieved is the rate asked
/// (within 5 %), and it had no error. Fails if a step cannot connect at
/// all, or if no step fits in the time allowed.
pub async fn find_rate(
    config: &BenchConfig,
    find: &FindRate,
    stop: &CancellationToken,
    progress: &Progress,
    on_step: &mut (dyn FnMut(&FindStep) + Send),
) -> Result<FindOutcome, Error> {
    validate(config)?;
    if find.steps == 0 {
        return Err(Error::setting(Setting::FindRate, "needs at least one step"));
    }
    let conns = config.connections as f64;
    let began = Instant::now();
    let limits = SearchLimits {
        start: config.rate.unwrap_or(DEFAULT_START_RATE),
        min: (MIN_RATE_PER_CONNECTION * conns).max(1.0),
        max: MAX_RATE_PER_CONNECTION * conns,
        steps: find.steps,
        precision: search::DEFAULT_PRECISION,
        deadline: began.checked_add(find.time),
        step_time: config.warmup + config.duration + STEP_SLACK,
    };
    let mut search = RateSearch::new(limits);
    let mut step_config = config.clone();
    step_config.intervals = None;
    let mut steps: Vec<FindStep> = Vec::new();
    let mut best: Option<BenchOutcome> = None;
    let mut last: Option<BenchOutcome> = None;
    let stopped = loop {
        let rate = match search.next(Instant::now()) {
            Next::Try(rate) => rate,
            Next::Stop(why) => break why,
        };
        step_config.rate = Some(rate);
        let outcome = run(&step_config, stop, progress).await?;
        // Only the first step waits for the start time.
        step_config.start_at = None;
        if stop.is_cancelled() {
            // A step cut short measured less than it was asked to.
            last = Some(outcome);
            break Stop::Stopped;
        }
        let step = judge(&find.target, rate, &outcome)
            .map_err(|e| Error::invalid("reading a step's latencies", &e))?;
        on_step(&step);
        search.record(rate, step.pass);
        let mismatch = outcome.first_mismatch.is_some();
        steps.push(step.clone());
        if step.pass {
            best = Some(outcome);
        } else {
            last = Some(outcome);
        }
        if mismatch {
            // A server that echoes wrong bytes has no rate to find.
            best = None;
            break Stop::Stopped;
        }
    };
    let Some(mut outcome) = best.or(last) else {
        return Err(Error::setting(
            Setting::FindRate,
            format!(
                "no step fits in the time allowed ({}): a step takes {} or more",
                crate::duration::format(find.time),
                crate::duration::format(limits.step_time)
            ),
        ));
    };
    let rate = search.best();
    outcome.report.find_rate = Some(sockecho_measure::report::FindRate {
        target: find.target.to_string(),
        rate,
        steps,
        stopped: stopped.name().to_owned(),
    });
    Ok(FindOutcome {
        rate,
        lowest_failed: search.lowest_failed(),
        stopped,
        steps: search.steps() as usize,
        outcome,
    })
}

/// One step's record: the rate asked and achieved, the target's
/// percentile, and whether it passed.
fn judge(
    target: &LatencyTarget,
    rate: f64,
    outcome: &BenchOutcome,
) -> Result<FindStep, ReportError> {
    let report = &outcome.report;
    let latency = report
        .histogram()?
        .percentile_with_lost(target.percentile, report.lost.unwrap_or(0));
    let duration = Duration::try_from_secs_f64(report.duration_s).unwrap_or_default();
    let pass = outcome.failure().is_none()
        && search::judge(
            target.limit,
            latency.map(Duration::from_micros),
            rate,
            report.messages,
            report.connections,
            duration,
        );
    Ok(FindStep {
        rate,
        achieved: report.msgs_per_s,
        latency_us: latency.map(|us| us as f64),
        pass,
        client_late: report.behind_schedule.as_ref().map_or(0, |b| b.late),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_the_reports_name_percentiles() {
        for (text, p, limit) in [
            ("p99<2ms", 99.0, Duration::from_millis(2)),
            ("p999<10ms", 99.9, Duration::from_millis(10)),
            ("p9999<1s", 99.99, Duration::from_secs(1)),
            ("p99.5 < 500us", 99.5, Duration::from_micros(500)),
            ("p50<200us", 50.0, Duration::from_micros(200)),
            ("P5<1ms", 5.0, Duration::from_millis(1)),
            ("p100<1s", 100.0, Duration::from_secs(1)),
        ] {
            let t: LatencyTarget = text.parse().expect(text);
            assert_eq!((t.percentile, t.limit), (p, limit), "{text}");
            assert_eq!(t.to_string(), text);
        }
        assert_eq!("p999<1ms".parse::<LatencyTarget>().unwrap().name(), "p99.9");
        for text in [
            "", "p99", "99<2ms", "p99>2ms", "p0<1ms", "p101<1ms", "p99<0s", "p99<fast", "p9x<1ms",
        ] {
            match text.parse::<LatencyTarget>() {
                Err(Error::Setting { setting, reason }) => {
                    assert_eq!(setting, Setting::FindRate);
                    assert!(
                        reason.starts_with(&format!("invalid target '{text}'")),
                        "{reason}"
                    );
                    assert!(!reason.contains('\n'));
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
