//! `sockecho bench` and `sockecho report`: call the library, print as the
//! run goes (interval lines, a JSON stream, a rate search's steps), then
//! the report, warnings and the chart, and turn the outcome into an exit
//! code.

use std::io::IsTerminal;
use std::process::ExitCode;

use sockecho::bench::{FindStop, Progress};
use sockecho::measure::report::BenchReport;

use crate::cli::{BenchArgs, ReportCommand};
use crate::plot::{self, Scale};
use crate::render::{self, bench as text};

/// How the run is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Lines for people.
    Text,
    /// One JSON object at the end.
    Json,
    /// JSON lines as the run goes, then the end.
    Stream,
}

/// `sockecho bench`.
pub async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let shutdown = crate::signals::on_signals()?;
    let output = if args.json_stream {
        Output::Stream
    } else if args.json {
        Output::Json
    } else {
        Output::Text
    };
    let scale = if args.log_latency {
        Scale::Log
    } else {
        Scale::Linear
    };
    if let Some(path) = &args.plot {
        // Found now, not after the whole run.
        plot::check_writable(path)?;
    }
    let config = args.to_config();
    let progress = Progress::new();
    // Interval lines and a search's steps are the progress; a bar would
    // tangle with them on the terminal.
    let quiet_progress = args.interval.is_some() || args.find_rate.is_some();
    let bar = (output == Output::Text && !quiet_progress && std::io::stderr().is_terminal())
        .then(|| text::progress_bar(progress.clone()));

    let mut intervals = Vec::new();
    let mut answer = None;
    let outcome = if let Some(find) = args.find_rate() {
        if output == Output::Text {
            let header = format!(
                "find-rate {} over {}: {} connections, {}-byte messages, {} per step, at most {} steps\n",
                find.target,
                config.endpoint,
                config.connections,
                config.message_size,
                sockecho::duration::format(config.duration),
                find.steps
            );
            render::write_stdout(|out| out.write_all(header.as_bytes()))?;
        }
        let name = find.target.name();
        let mut n = 0;
        let mut on_step = |step: &sockecho::measure::report::FindStep| {
            n += 1;
            if output == Output::Text {
                let line = text::step_line(n, &name, step);
                // A reader gone is found when the report is printed.
                let _ = render::write_stdout(|out| out.write_all(line.as_bytes()));
            }
        };
        let found =
            sockecho::bench::find_rate(&config, &find, &shutdown.stop, &progress, &mut on_step)
                .await;
        match found {
            Ok(found) => {
                answer = Some((
                    find.target.to_string(),
                    found.rate,
                    found.lowest_failed,
                    found.stopped,
                ));
                Ok(found.outcome)
            }
            Err(e) => Err(e),
        }
    } else {
        let mut on_interval = |i: sockecho::measure::interval::IntervalReport| {
            match output {
                Output::Text => {
                    let _ = render::write_stdout(|out| {
                        out.write_all(text::interval_line(&i).as_bytes())
                    });
                }
                Output::Stream => {
                    let _ = render::write_stdout(|out| {
                        out.write_all(text::interval_event(&i).as_bytes())
                    });
                }
                Output::Json => {}
            }
            intervals.push(i);
        };
        sockecho::bench::run_observed(&config, &shutdown.stop, &progress, &mut on_interval).await
    };
    if let Some(bar) = bar {
        bar.finish().await;
    }
    let mut outcome = outcome?;
    if output == Output::Json && args.interval.is_some() {
        outcome.report.intervals = Some(intervals);
    }
    match output {
        Output::Stream => {
            let line = text::event("end", &outcome.report.to_json());
            render::write_stdout(|out| out.write_all(line.as_bytes()))?;
        }
        Output::Json => text::print_report(&outcome.report, true)?,
        Output::Text => text::print_report(&outcome.report, false)?,
    }
    if let Some(behind) = &outcome.report.behind_schedule
        && let Some(line) = text::behind_warning(behind)
    {
        eprintln!("warning: {line}");
    }
    // A faulty server is never reported as healthy.
    let mut failure = outcome.failure();
    if let Some((target, rate, failed, stopped)) = answer {
        let found = say_answer(&target, rate, failed, stopped, output == Output::Text)?;
        if !found && failure.is_none() {
            failure = Some(format!("no rate tried met {target}"));
        }
    }
    if let Some(failure) = &failure {
        eprintln!("error: {failure}");
    }
    // A failed run with no latency has no chart; its error says why.
    if let Some(path) = &args.plot
        && (outcome.report.messages > 0 || failure.is_none())
    {
        plot::write_report(&outcome.report, path, scale)?;
    }
    Ok(if failure.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a search's answer last (in text; a search stopped early says
/// so first, on standard error too): `max rate meeting p99<2ms: N msg/s`.
/// Whether a rate met the target.
fn say_answer(
    target: &str,
    rate: Option<f64>,
    failed: Option<f64>,
    stopped: FindStop,
    print: bool,
) -> Result<bool, sockecho::Error> {
    let mut lines = String::new();
    if stopped.early() {
        let why = match stopped {
            FindStop::Steps => "out of steps (--find-steps)",
            FindStop::Time => "out of time (--find-time)",
            _ => "stopped",
        };
        let between = match (rate, failed) {
            (Some(lo), Some(hi)) => format!(
                ": the answer lies between {} and {} msg/s",
                text::rate(lo),
                text::rate(hi)
            ),
            (Some(lo), None) => format!(
                ": {} msg/s passed, higher rates were not tried",
                text::rate(lo)
            ),
            _ => String::new(),
        };
        let note =
            format!("the search stopped early, {why}, before narrowing to within 5%{between}");
        eprintln!("warning: {note}");
        lines.push_str(&format!("{note}\n"));
    }
    match (rate, stopped) {
        (Some(rate), FindStop::Ceiling) => lines.push_str(&format!(
            "max rate meeting {target}: {} msg/s (every rate tried passed, up to the most this client paces)\n",
            text::rate(rate)
        )),
        (Some(rate), _) => lines.push_str(&format!(
            "max rate meeting {target}: {} msg/s\n",
            text::rate(rate)
        )),
        (None, _) => lines.push_str(&format!(
            "max rate meeting {target}: none (every rate tried failed, down to {} msg/s)\n",
            failed.map_or_else(|| "none".to_owned(), text::rate)
        )),
    }
    if print {
        render::write_stdout(|out| out.write_all(lines.as_bytes()))?;
    }
    Ok(rate.is_some())
}

/// `sockecho report merge` and `sockecho report plot`.
pub fn report(command: ReportCommand) -> anyhow::Result<()> {
    match command {
        ReportCommand::Merge {
            files,
            json,
            plot: chart,
            log_latency,
        } => {
            if let Some(path) = &chart {
                plot::check_writable(path)?;
            }
            let inputs = sockecho::bench::read_reports(&files, true)?;
            let merged = sockecho::bench::merge_reports(&inputs)?;
            for warning in &merged.warnings {
                eprintln!("warning: {warning}");
            }
            text::print_report(&merged.report, json)?;
            if let Some(path) = chart {
                plot::write_merge(&merged.report, &inputs, &path, scale(log_latency))?;
            }
        }
        ReportCommand::Plot {
            files,
            plot: path,
            log_latency,
        } => {
            plot::check_writable(&path)?;
            let inputs: Vec<(String, BenchReport)> = sockecho::bench::read_reports(&files, false)?;
            plot::write_overlay(&inputs, &path, scale(log_latency))?;
        }
    }
    Ok(())
}

fn scale(log: bool) -> Scale {
    if log { Scale::Log } else { Scale::Linear }
}
