//! The `sockecho` binary: parse the command line, start logging, make one
//! library call, turn its result into an exit code. All logic lives in the
//! library.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Usage errors (bad endpoint, unknown flag) exit 2 from here.
    let cli = Cli::parse();
    init_logging(cli.verbose);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    let result = runtime.block_on(run(cli.command));
    // Standard input is read on a blocking thread that may sit in read(2)
    // forever; waiting for it would hang the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let shutdown = sockecho::shutdown::on_signals()?;
            let server = sockecho::Server::bind(args.into_config()).await?;
            server.run_until(shutdown).await?;
        }
        Command::Connect(args) => {
            sockecho::connect(&args.into_config(), tokio::io::stdin(), tokio::io::stdout()).await?;
        }
    }
    Ok(())
}

/// Prints one `error: WHAT: WHY` line and picks the exit code: 2 for usage
/// errors, 1 for everything else.
fn fail(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<sockecho::Error>() {
        // The library's message already says what and why; its source
        // would only repeat the why.
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

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
