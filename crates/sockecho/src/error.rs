//! The library's error type: every failure names the operation and the
//! endpoint it concerned, and says why in words a user understands.
//!
//! `io::ErrorKind` is turned into words in exactly one place, [`reason`], so
//! that every subcommand says "connection refused" the same way.
//!
//! The library knows settings, not command-line flags: an error about a
//! setting names it as a [`Setting`], and a program with flags (the
//! `sockecho` binary) says which flag that is.

use std::io;
use std::time::Duration;

use crate::endpoint::ParseEndpointError;

/// A setting of the library's configurations, named in errors about its
/// value (and, as the `setting` field, in log lines about what it
/// refused) so that a caller can point its user at the right knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// `server::Limits::max_conns`.
    MaxConns,
    /// `ServerTlsOptions::cert` without `key`, or the other way round.
    TlsKeyPair,
    /// `BenchConfig::pipeline`.
    Pipeline,
    /// `BenchConfig::rate`.
    Rate,
    /// `BenchConfig::connections`.
    Connections,
    /// `BenchConfig::message_size`.
    MessageSize,
    /// `PingConfig::size`.
    ProbeSize,
    /// `PingConfig::connect_only`.
    ConnectOnly,
    /// Serving the socket inetd hands over on standard input.
    Inetd,
    /// `server::Limits::max_conns_per_ip`.
    MaxConnsPerIp,
    /// `ServeConfig::access`: the allow and deny lists.
    Access,
    /// `server::UdpGuard::allow_low_ports`.
    AllowLowPorts,
    /// `server::UdpGuard::rate`.
    UdpRate,
    /// `BenchConfig::duration`.
    Duration,
    /// `BenchConfig::timeout`: when an unanswered bench datagram is lost.
    LossTimeout,
    /// `ServeConfig::proxy`: every stream connection begins with a PROXY
    /// protocol header.
    ProxyProtocol,
    /// `server::ProxyProtocol::trusted`: who may send a PROXY header.
    ProxyFrom,
    /// `ServiceConfig::greeting`, a template with placeholders.
    Greeting,
    /// `ServeConfig::allow_file`: more peers to serve, from a file.
    AllowFile,
    /// `ServeConfig::deny_file`: more peers to refuse, from a file.
    DenyFile,
    /// `BenchConfig::greeting_line`: read each connection's greeting line.
    GreetingLine,
    /// `BenchConfig::start_at`: when the run starts, by the wall clock.
    StartAt,
    /// `BenchConfig::source`: the source addresses connections spread over.
    Source,
    /// `bench::FindRate::target`: the latency a rate search must meet, and
    /// the search's bounds.
    FindRate,
    /// `ServeConfig::metrics`: where the scrape endpoint listens.
    Metrics,
}

impl Setting {
    /// The setting's name in the library's configuration.
    pub fn name(self) -> &'static str {
        match self {
            Setting::MaxConns => "max_conns",
            Setting::TlsKeyPair => "tls cert and key",
            Setting::Pipeline => "pipeline",
            Setting::Rate => "rate",
            Setting::Connections => "connections",
            Setting::MessageSize => "message_size",
            Setting::ProbeSize => "size",
            Setting::ConnectOnly => "connect_only",
            Setting::Inetd => "inetd",
            Setting::MaxConnsPerIp => "max_conns_per_ip",
            Setting::Access => "access",
            Setting::AllowLowPorts => "allow_low_ports",
            Setting::UdpRate => "udp_rate",
            Setting::Duration => "duration",
            Setting::LossTimeout => "timeout",
            Setting::ProxyProtocol => "proxy_protocol",
            Setting::ProxyFrom => "proxy_from",
            Setting::Greeting => "greeting",
            Setting::AllowFile => "allow_file",
            Setting::DenyFile => "deny_file",
            Setting::GreetingLine => "greeting_line",
            Setting::StartAt => "start_at",
            Setting::Source => "source",
            Setting::FindRate => "find_rate",
            Setting::Metrics => "metrics",
        }
    }

    /// Every setting, for a caller that maps names to its own words.
    pub const ALL: [Setting; 25] = [
        Setting::MaxConns,
        Setting::TlsKeyPair,
        Setting::Pipeline,
        Setting::Rate,
        Setting::Connections,
        Setting::MessageSize,
        Setting::ProbeSize,
        Setting::ConnectOnly,
        Setting::Inetd,
        Setting::MaxConnsPerIp,
        Setting::Access,
        Setting::AllowLowPorts,
        Setting::UdpRate,
        Setting::Duration,
        Setting::LossTimeout,
        Setting::ProxyProtocol,
        Setting::ProxyFrom,
        Setting::Greeting,
        Setting::AllowFile,
        Setting::DenyFile,
        Setting::GreetingLine,
        Setting::StartAt,
        Setting::Source,
        Setting::FindRate,
        Setting::Metrics,
    ];
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Advice that goes with a connect failure, in terms of settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hint {
    /// The server's certificate could not be verified: trust its CA, pin
    /// it, or (test rigs only) skip verification.
    UntrustedCertificate,
    /// The server presented a CA certificate (`CA:TRUE`) as its own:
    /// remake it as an end entity, trust exactly that file, or pin it.
    CaCertificate,
    /// The certificate does not name the host connected to: remake it
    /// with that name, or connect by a name it holds.
    NameNotInCertificate,
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hint::UntrustedCertificate => f.write_str(
                "trust its CA (ClientTlsOptions::ca), or skip checks (ClientTlsOptions::insecure)",
            ),
            Hint::CaCertificate => f.write_str(
                "remake it without CA:TRUE, trust exactly that certificate (ClientTlsOptions::ca), or pin it (ClientTlsOptions::fingerprint)",
            ),
            Hint::NameNotInCertificate => f.write_str(
                "remake it with a subjectAltName for that name, or connect by a name it holds (ClientTlsOptions::sni)",
            ),
        }
    }
}

/// Everything that can go wrong in sockecho's library.
///
/// The `Display` form is a `WHAT: WHY` phrase, in the library's terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint string that does not follow the contract's syntax.
    #[error("invalid endpoint '{text}': {source}")]
    Endpoint {
        /// The text as the user wrote it.
        text: String,
        /// What is wrong with it.
        source: ParseEndpointError,
    },
    /// A setting whose value cannot work.
    #[error("{setting}: {reason}")]
    Setting {
        /// Which setting.
        setting: Setting,
        /// Why not, in words that do not name the setting again.
        reason: String,
    },
    /// A configuration that cannot work as a whole (no endpoint, an
    /// endpoint of the wrong kind), or a probe or message that does not
    /// fit.
    #[error("{0}")]
    Config(String),
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
    #[error("cannot connect to {endpoint}: {reason}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// Why, in words.
        reason: String,
        /// What might help, when something might.
        hint: Option<Hint>,
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

    /// True for errors in what the caller asked for (an endpoint, a
    /// setting, a configuration), as opposed to failures on the way.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Endpoint { .. } | Error::Setting { .. } | Error::Config(_)
        )
    }

    /// A setting whose value cannot work, and why.
    pub(crate) fn setting(setting: Setting, reason: impl Into<String>) -> Error {
        Error::Setting {
            setting,
            reason: reason.into(),
        }
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
            hint: None,
            source,
        }
    }

    /// `what` is not what it should be; `err`'s whole chain says why, on
    /// one line.
    pub fn invalid(what: impl Into<String>, err: &dyn std::error::Error) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: chain(err),
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

/// An error and every cause behind it, on one line, `: ` between them.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
