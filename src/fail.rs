//! Errors as the contract has them: one `error: WHAT: WHY` line on
//! standard error and an exit code (2 for usage errors, 1 for the rest).
//! Library errors name settings; here they are said with the flags that
//! set them.

use std::process::ExitCode;

use sockecho::Error;
use sockecho::error::Hint;

use crate::cli::flag_of;

/// Help and version go to standard output (exit 0); a usage error (bad
/// endpoint, unknown flag) is one `error: WHAT: WHY` line and exit 2,
/// without clap's usage block, so scripts see one line as for every other
/// error.
pub fn usage(err: &clap::Error) -> ExitCode {
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

/// Prints one `error: WHAT: WHY` line and picks the exit code: 2 for
/// errors in what the user asked for, 1 for everything else.
pub fn other(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<Error>() {
        // A reader that stopped reading our output (`| head`) is not a
        // failure: exit quietly, as cat and ripgrep do.
        Some(lib) if lib.is_closed_output() => ExitCode::SUCCESS,
        Some(lib) => {
            // The library's message already says what and why; its source
            // would only repeat the why.
            eprintln!("error: {}", words(lib));
            ExitCode::from(if lib.is_config() { 2 } else { 1 })
        }
        None => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// A library error in the command line's words: settings by their flags,
/// hints with the flags that act on them.
pub fn words(err: &Error) -> String {
    match err {
        Error::Setting { setting, reason } => format!("{}: {reason}", flag_of(*setting)),
        Error::Connect {
            endpoint,
            reason,
            hint: Some(hint),
            ..
        } => format!(
            "cannot connect to {endpoint}: {reason} ({})",
            hint_words(*hint)
        ),
        other => other.to_string(),
    }
}

fn hint_words(hint: Hint) -> &'static str {
    match hint {
        Hint::UntrustedCertificate => {
            "trust its CA with --tls-ca FILE, pin it with --tls-fingerprint sha256:HEX, or skip checks with --insecure"
        }
        Hint::NameNotInCertificate => {
            "remake it with -addext subjectAltName=IP:ADDRESS or DNS:NAME, or connect by a name it holds with --tls-sni NAME"
        }
        Hint::CaCertificate => {
            "remake it with -addext basicConstraints=critical,CA:FALSE, trust exactly that certificate with --tls-ca FILE, or pin it with --tls-fingerprint sha256:HEX"
        }
        _ => "see --help",
    }
}
