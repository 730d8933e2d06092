//! The `sockecho` binary: parse the command line, start logging, make one
//! library call, turn its result into an exit code. All logic lives in the
//! library.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, ReportCommand};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    // Under inetd, standard output and error may be the client's socket:
    // not a byte of log may go there.
    let inetd = matches!(&cli.command, Command::Serve(args) if args.inetd);
    init_logging(if inetd { None } else { Some(cli.verbose) });

    // `serve --threads N` sizes the epoll engine's runtime too (the
    // io_uring engine runs its own N threads beside it).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command
        && let Some(threads) = args.threads
    {
        builder.worker_threads(threads as usize);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    let result = runtime.block_on(run(cli.command));
    // Standard input is read on a blocking thread that may sit in read(2)
    // forever; waiting for it would hang the exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let shutdown = sockecho::shutdown::on_signals()?;
            let inetd = args.inetd;
            let server = sockecho::server::open(args.into_config(), inetd).await?;
            server.run_until(shutdown).await?;
        }
        Command::Connect(args) => {
            sockecho::connect(&args.into_config(), tokio::io::stdin(), tokio::io::stdout()).await?;
        }
        Command::Ping(args) => {
            let shutdown = sockecho::shutdown::on_signals()?;
            let config = args.into_config(shutdown.stop);
            let summary = sockecho::ping::run(&config, &mut std::io::stdout()).await?;
            // Like ping(8): the summary says what went wrong; exit 1 alone
            // tells scripts.
            if !summary.success() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Bench(args) => {
            let shutdown = sockecho::shutdown::on_signals()?;
            let (json, plot) = (args.json, args.plot.clone());
            let progress = !json && std::io::stderr().is_terminal();
            let outcome = sockecho::bench::run(&args.into_config(shutdown.stop, progress)).await?;
            print_report(&outcome.report, json, plot.as_deref())?;
            // A faulty server is never reported as healthy.
            if let Some(failure) = outcome.failure() {
                eprintln!("error: {failure}");
                return Ok(ExitCode::from(1));
            }
        }
        Command::Report {
            command: ReportCommand::Merge { files, json, plot },
        } => {
            let report = sockecho::bench::merge_files(&files)?;
            print_report(&report, json, plot.as_deref())?;
        }
        Command::Completions { shell } => {
            write_stdout(|out| cli::generate::completions(shell, out))?;
        }
        Command::Man => write_stdout(cli::generate::man)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes generated text (completions, man page) to standard output; a
/// reader that stops early (`| head`) is not a failure.
fn write_stdout(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
        Ok(()) => Ok(()),
    }
}

/// Prints a bench report as text or JSON, and its chart if asked for.
fn print_report(
    report: &sockecho::bench::report::BenchReport,
    json: bool,
    plot: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_text());
    }
    if let Some(path) = plot {
        sockecho::bench::write_plot(report, path)?;
    }
    Ok(())
}

/// Help and version go to standard output (exit 0); a usage error (bad
/// endpoint, unknown flag) is one `error: WHAT: WHY` line and exit 2,
/// without clap's usage block, so scripts see one line as for every other
/// error.
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
        _ => {}
    }
    // clap's first paragraph (some messages list their arguments on the
    // lines after a colon), on one line.
    let rendered = err.to_string();
    let first: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    match (err.kind(), err.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) => {
            eprintln!("error: unexpected argument '{arg}': no such option (see --help)");
        }
        // Keep clap's words, in the `error: WHAT: WHY` shape.
        _ if first["error: ".len().min(first.len())..].contains(": ") => eprintln!("{first}"),
        _ => eprintln!("{first}: see --help"),
    }
    ExitCode::from(2)
}

/// Prints one `error: WHAT: WHY` line and picks the exit code: 2 for usage
/// errors, 1 for everything else.
fn fail(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<sockecho::Error>() {
        // The library's message already says what and why; its source
        // would only repeat the why.
        // A reader that stopped reading our output (`| head`) is not a
        // failure: exit quietly, as cat and ripgrep do.
        Some(lib) if lib.is_closed_output() => ExitCode::SUCCESS,
        Some(lib) => {
            eprintln!("error: {lib}");
            ExitCode::from(if lib.is_usage() { 2 } else { 1 })
        }
        None => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: Option<u8>) {
    let level = match verbose {
        None => "off",
        Some(0) => "warn",
        Some(1) => "info",
        Some(2) => "debug",
        Some(_) => "trace",
    };
    let filter = match verbose {
        None => EnvFilter::new(level),
        Some(_) => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
