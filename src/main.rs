//! The `sockecho` binary: parse the command line, start logging, make one
//! library call, print what it returns, turn its result into an exit code.
//! All logic lives in the library crates; what is here is the program's
//! edge: flags (`cli`), signals, terminal output (`render`, `plot`), and
//! errors as one `error: WHAT: WHY` line with the contract's exit code
//! (`fail`).

mod bench;
mod cli;
mod fail;
mod plot;
mod render;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return fail::usage(&err),
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
        Err(e) => return fail::other(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    let result = runtime.block_on(run(cli.command));
    // Standard input is read on a blocking thread that may sit in read(2)
    // forever; waiting for it would hang the exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => fail::other(&err),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(args).await?,
        Command::Connect(args) => {
            let trace = cli::tracer(
                args.trace,
                args.json,
                args.trace_interval,
                args.trace_follow,
            );
            let config = args.to_config();
            sockecho::connect(&config, &trace, tokio::io::stdin(), tokio::io::stdout()).await?;
        }
        Command::Ping(args) => {
            let shutdown = signals::on_signals()?;
            let config = args.to_config();
            let summary = render::ping::run(&config, args.json, &shutdown.stop).await?;
            // Like ping(8): the summary says what went wrong; exit 1 alone
            // tells scripts.
            if !summary.success() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Bench(args) => return bench::bench(args).await,
        Command::Report { command } => bench::report(command)?,
        Command::Completions { shell } => {
            render::write_stdout(|out| cli::generate::completions(shell, out))?;
        }
        Command::Man => render::write_stdout(cli::generate::man)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `sockecho serve`: bind (or adopt inetd's or systemd's sockets), name
/// each listener's engine in the log, serve until the signals say stop.
async fn serve(args: cli::ServeArgs) -> anyhow::Result<()> {
    let (shutdown, reloads) = signals::on_serve_signals()?;
    let trace = cli::tracer(
        args.trace,
        args.json,
        args.trace_interval,
        args.trace_follow,
    );
    // Under inetd standard output is the client's socket.
    let events = if args.inetd {
        sockecho::Events::silent()
    } else {
        sockecho::Events::stdout(cli::format(args.json), args.quiet)
    };
    // Event and trace lines go out through writer threads of their own,
    // so that a reader that stalls never stalls serving. Whatever the
    // outcome, what they still hold is written before the exit: within one
    // bounded wait, given up when nobody reads the output.
    let (finish_events, finish_trace) = (events.clone(), trace.clone());
    let served = async {
        let server = sockecho::server::open(args.to_config(), args.inetd, &trace).await?;
        // From now on SIGHUP reads the server's files again (if it has any).
        let _ = reloads.set(server.reloader());
        let running = server.start(sockecho::Handles {
            events,
            trace,
            shutdown,
        })?;
        render::log_engines(running.engines());
        running.wait().await?;
        anyhow::Ok(())
    }
    .await;
    let deadline = std::time::Instant::now() + sockecho::events::FINISH_WAIT;
    finish_events.finish(sockecho::events::FINISH_WAIT);
    finish_trace.finish(deadline.saturating_duration_since(std::time::Instant::now()));
    served
}

/// Log fields as tracing writes them (`message key=value ...`), but a
/// library `setting` field, which names the knob behind a refusal, is
/// said with its flag: `see=--udp-rate`.
fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| match field.name() {
        "message" => write!(writer, "{value:?}"),
        "setting" => {
            let name = format!("{value:?}");
            match cli::flag_named(name.trim_matches('"')) {
                Some(flag) => write!(writer, "see={flag}"),
                None => write!(writer, "setting={name}"),
            }
        }
        name => write!(writer, "{name}={value:?}"),
    })
    .delimited(" ")
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
        Some(v) => EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            // rustls logs what a peer did wrong at warn (every `ncat
            // --ssl 127.0.0.1 P` connection: "Illegal SNI extension:
            // ignoring IP address presented as hostname"): a line per
            // connection that any peer can cause, and our own debug log
            // already says why a handshake or a connection failed. Below
            // -vv rustls keeps to its errors; RUST_LOG decides otherwise.
            // What a reload (SIGHUP) changed is said at info level, and
            // shown by default: the user asked for it.
            if v < 2 {
                EnvFilter::new(format!(
                    "{level},rustls=error,sockecho::server::reload=info"
                ))
            } else {
                EnvFilter::new(level)
            }
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(log_fields())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
