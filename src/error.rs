//! The library's error type: every failure names the operation and the
//! endpoint it concerned, and says why in words a user understands.
//!
//! `io::ErrorKind` is turned into words in exactly one place, [`reason`], so
//! that every subcommand says "connection refused" the same way.

use std::io;
use std::time::Duration;

use crate::endpoint::ParseEndpointError;

/// Everything that can go wrong in sockecho's library.
///
/// The `Display` form is the `WHAT: WHY` part of the one-line
/// `error: WHAT: WHY` message the binary prints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint string that does not follow the contract's syntax; a
    /// usage error (the binary exits 2).
    #[error("invalid endpoint '{text}': {source}")]
    Endpoint {
        /// The text as the user wrote it.
        text: String,
        /// What is wrong with it.
        source: ParseEndpointError,
    },
    /// A configuration that cannot work (conflicting or out-of-range
    /// options); a usage error (the binary exits 2).
    #[error("{0}")]
    Usage(String),
    /// Binding or listening failed.
    #[error("cannot listen on {endpoint}: {reason}")]
    Listen {
        /// The endpoint as given.
        endpoint: String,
        /// Why, in words (with a hint where one helps).
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<io::Error>,
    },
    /// Connecting (or, for datagrams, reaching) a server failed.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// Why, in words.
        reason: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A datagram got no reply in time.
    #[error("no reply from {endpoint}: nothing came back within {}", crate::duration::format(*timeout))]
    NoReply {
        /// The endpoint that did not answer.
        endpoint: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A file or value that is not what it should be (a bench report that
    /// does not parse, a plot that cannot be drawn).
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being read or made, e.g. `a.json`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing our own output (standard output) failed.
    #[error("cannot write the output: {}", reason(.0))]
    Output(#[source] io::Error),
    /// Any other I/O failure, with what we were doing.
    #[error("{what}: {}", reason(source))]
    Io {
        /// What we were doing, e.g. `reading standard input`.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl Error {
    /// True when our output's reader went away (`| head`): not a failure,
    /// as for `cat`.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// True for errors the user made on the command line (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Endpoint { .. } | Error::Usage(_))
    }

    /// A listen failure on `endpoint`, with a hint for the common causes.
    pub(crate) fn listen(endpoint: impl ToString, source: io::Error, port: Option<u16>) -> Error {
        let mut why = reason(&source);
        if source.kind() == io::ErrorKind::PermissionDenied && port.is_some_and(|p| p < 1024) {
            why.push_str(
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; \
                 pick a port above 1023, e.g. 9999)",
            );
        }
        Error::Listen {
            endpoint: endpoint.to_string(),
            reason: why,
            source: Some(source),
        }
    }

    /// A connect failure on `endpoint`.
    pub(crate) fn connect(endpoint: impl ToString, source: io::Error) -> Error {
        Error::Connect {
            endpoint: endpoint.to_string(),
            reason: reason(&source),
            source,
        }
    }

    /// `what` is not what it should be; `err`'s whole chain says why, on
    /// one line.
    pub(crate) fn invalid(what: impl Into<String>, err: &dyn std::error::Error) -> Error {
        let mut reason = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Invalid {
            what: what.into(),
            reason,
        }
    }

    /// Any other I/O failure while doing `what`.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<ParseEndpointError> for Error {
    fn from(source: ParseEndpointError) -> Error {
        Error::Endpoint {
            text: source.text().to_owned(),
            source,
        }
    }
}

/// An I/O error in words: the kinds users meet every day get a fixed phrase,
/// the rest the operating system's message without its `(os error N)` tail.
pub fn reason(err: &io::Error) -> String {
    use io::ErrorKind::*;
    let fixed = match err.kind() {
        AddrInUse => "address already in use",
        AddrNotAvailable => "address not available on this host",
        PermissionDenied => "permission denied",
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        ConnectionAborted => "connection aborted",
        NotFound => "no such file or directory",
        TimedOut => "timed out",
        BrokenPipe => "broken pipe",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_owned();
    }
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_lowercase(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_kinds_read_as_words() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(reason(&refused), "connection refused");
        let os = io::Error::from_raw_os_error(98); // EADDRINUSE on Linux
        assert_eq!(reason(&os), "address already in use");
        let other = io::Error::from_raw_os_error(22); // EINVAL
        assert_eq!(reason(&other), "invalid argument");
    }

    #[test]
    fn low_port_permission_error_carries_a_hint() {
        let err = Error::listen(
            "tcp://0.0.0.0:80",
            io::Error::from(io::ErrorKind::PermissionDenied),
            Some(80),
        );
        let text = err.to_string();
        assert!(text.starts_with("cannot listen on tcp://0.0.0.0:80: permission denied"));
        assert!(text.contains("CAP_NET_BIND_SERVICE"), "{text}");
        let high = Error::listen(
            "tcp://0.0.0.0:8080",
            io::Error::from(io::ErrorKind::PermissionDenied),
            Some(8080),
        );
        assert!(!high.to_string().contains("CAP_NET_BIND_SERVICE"));
    }
}
