//! The one address syntax every subcommand shares.
//!
//! | text | endpoint |
//! |---|---|
//! | `9999` | `tcp://127.0.0.1:9999` |
//! | `HOST:PORT`, `[V6]:PORT` | TCP |
//! | `tcp://HOST:PORT`, `udp://HOST:PORT`, `tls://HOST:PORT` | TCP, UDP, TLS over TCP |
//! | `unix:PATH`, `unix:@NAME` | Unix stream socket at PATH, or in Linux's abstract namespace |
//! | `unix-dgram:PATH`, `unix-dgram:@NAME` | Unix datagram socket |
//! | `http://HOST:PORT[/PATH]`, `https://...` | HTTP over TCP, or over TLS: the request reflected as JSON |
//! | `ws://HOST:PORT[/PATH]`, `wss://...` | WebSocket over TCP, or over TLS (on `serve`, the same as `http://`, `https://`) |
//! | `[fe80::1%eth0]:PORT` | after any IP scheme too: a link-local address and its zone |
//!
//! [`Endpoint`]'s `Display` writes the canonical form (`tcp://[::1]:7000`),
//! which parses back to the same value. A text that does not parse gets
//! an error naming it and, where a typo is likely, the form meant
//! (`udp:127.0.0.1:7000`: did you mean `udp://127.0.0.1:7000`?).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

mod hint;

/// The lesson's address, the default for every subcommand.
pub const DEFAULT: &str = "tcp://127.0.0.1:9999";

/// Every scheme an endpoint may start with: `tcp`, `udp` and `tls` before
/// `://HOST:PORT`, `unix` and `unix-dgram` before `:PATH` or `:@NAME`,
/// `http`, `https`, `ws` and `wss` before `://HOST:PORT[/PATH]`. Help
/// texts that list the forms are tested against it.
pub const SCHEMES: [&str; 9] = [
    "tcp",
    "udp",
    "tls",
    "unix",
    "unix-dgram",
    "http",
    "https",
    "ws",
    "wss",
];

/// The longest `/PATH` an `http://` or `ws://` endpoint takes: far more
/// than any route, short enough to print in a line.
pub const MAX_PATH: usize = 2048;

/// Shown with every parse error, so a user sees at once what would work.
const EXAMPLES: &str = "e.g. 9999, 127.0.0.1:9999, [::1]:9999, udp://127.0.0.1:9999, \
                        tls://127.0.0.1:9999, unix:/tmp/echo.sock, unix:@echo, \
                        unix-dgram:/tmp/echo.dgram, http://127.0.0.1:9999, \
                        ws://127.0.0.1:9999/echo";

/// Where a socket lives: transport plus address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP stream socket.
    Tcp(HostPort),
    /// UDP datagrams.
    Udp(HostPort),
    /// TLS over TCP.
    Tls(HostPort),
    /// A Unix-domain stream socket.
    Unix(UnixAddr),
    /// A Unix-domain datagram socket.
    UnixDgram(UnixAddr),
    /// HTTP/1.1 over TCP: `serve` reflects each request as JSON (and
    /// accepts WebSocket upgrades).
    Http(WebAddr),
    /// HTTP over TLS (HTTP/2 where ALPN settles on it).
    Https(WebAddr),
    /// WebSocket over TCP: clients speak WebSocket; on `serve` the same as
    /// [`Endpoint::Http`].
    Ws(WebAddr),
    /// WebSocket over TLS; on `serve` the same as [`Endpoint::Https`].
    Wss(WebAddr),
}

/// Where an HTTP or WebSocket endpoint is: host, port and the path a
/// client asks for (`serve` answers every path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebAddr {
    /// The host and port (80 for `http`/`ws`, 443 for `https`/`wss` when
    /// the text gives none, as in a URL).
    pub at: HostPort,
    /// `/PATH`, with any `?query`, as written; `None` when the text has
    /// none (a client then asks for `/`).
    pub path: Option<String>,
}

impl WebAddr {
    /// The request target a client sends: the path, or `/`.
    pub fn target(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// Whether an endpoint carries a byte stream or datagrams: the two shapes
/// every subcommand is written for once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP, TLS, Unix stream: an ordered byte stream with half-close.
    Stream,
    /// UDP, Unix datagram: messages with boundaries, no connection.
    Datagram,
}

/// An IP host (literal or name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host as written: an address literal or a name to resolve.
    pub host: Host,
    /// The port; 0 on `serve` asks the kernel for an ephemeral one.
    pub port: u16,
}

/// A host: an address literal, or a name resolved when used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// An IPv6 literal with a zone (`[fe80::1%eth0]`, RFC 6874): the
    /// interface a link-local address is on, by name or index.
    Zoned(Ipv6Addr, String),
    /// A name such as `localhost`, resolved by the system resolver.
    Name(String),
}

/// The address of a Unix-domain socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file in the file system.
    Path(PathBuf),
    /// A name in Linux's abstract namespace (written `@NAME`; no file, gone
    /// when the last socket closes).
    Abstract(String),
}

/// Why an endpoint did not parse. Its `Display` names the bad text, the
/// form most likely meant where a typo is likely, and valid forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseEndpointError {
    text: String,
    why: String,
    /// The form the user most likely meant (`udp://127.0.0.1:7000` for
    /// `udp:127.0.0.1:7000`), or the form to follow (`udp://HOST:PORT`).
    hint: Option<String>,
}

impl ParseEndpointError {
    fn new(text: &str, why: impl Into<String>) -> Self {
        ParseEndpointError {
            text: text.to_owned(),
            why: why.into(),
            hint: None,
        }
    }

    /// The text that failed to parse.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The endpoint the user most likely meant, if a typo is likely.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for ParseEndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in '{}'", self.why, self.text)?;
        if let Some(hint) = &self.hint {
            write!(f, ": did you mean {hint}?")?;
        }
        write!(f, " ({EXAMPLES})")
    }
}

impl std::error::Error for ParseEndpointError {}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::Tcp(HostPort {
            host: Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: 9999,
        })
    }
}

impl Endpoint {
    /// Stream or datagram.
    pub fn kind(&self) -> Kind {
        match self {
            Endpoint::Tcp(_)
            | Endpoint::Tls(_)
            | Endpoint::Unix(_)
            | Endpoint::Http(_)
            | Endpoint::Https(_)
            | Endpoint::Ws(_)
            | Endpoint::Wss(_) => Kind::Stream,
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Kind::Datagram,
        }
    }

    /// Whether the connection runs TLS first (`tls`, `https`, `wss`).
    pub fn is_tls(&self) -> bool {
        matches!(
            self,
            Endpoint::Tls(_) | Endpoint::Https(_) | Endpoint::Wss(_)
        )
    }

    /// The HTTP or WebSocket address, for `http`, `https`, `ws` and `wss`
    /// endpoints (the application-layer echo).
    pub fn web(&self) -> Option<&WebAddr> {
        match self {
            Endpoint::Http(web) | Endpoint::Https(web) | Endpoint::Ws(web) | Endpoint::Wss(web) => {
                Some(web)
            }
            _ => None,
        }
    }

    /// Why a client that measures echoes (`ping`, `bench`) cannot drive
    /// this endpoint: `http://` and `https://` answer requests with JSON,
    /// not with the bytes sent. `None` for every other endpoint.
    pub fn not_measurable(&self) -> Option<String> {
        let (web, ws) = match self {
            Endpoint::Http(web) => (web, "ws"),
            Endpoint::Https(web) => (web, "wss"),
            _ => return None,
        };
        Some(format!(
            "{self} answers HTTP requests with JSON, not with what was sent: \
             echoes are measured over WebSocket ({ws}://{}{}) or raw bytes (tcp://{})",
            web.at,
            web.path.as_deref().unwrap_or(""),
            web.at
        ))
    }

    /// Whether clients speak WebSocket to it (`ws`, `wss`).
    pub fn is_websocket(&self) -> bool {
        matches!(self, Endpoint::Ws(_) | Endpoint::Wss(_))
    }

    /// The scheme as written in the canonical form (`tcp`, `unix-dgram`...).
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Tcp(_) => "tcp",
            Endpoint::Udp(_) => "udp",
            Endpoint::Tls(_) => "tls",
            Endpoint::Unix(_) => "unix",
            Endpoint::UnixDgram(_) => "unix-dgram",
            Endpoint::Http(_) => "http",
            Endpoint::Https(_) => "https",
            Endpoint::Ws(_) => "ws",
            Endpoint::Wss(_) => "wss",
        }
    }

    /// The host and port, for IP endpoints.
    pub fn host_port(&self) -> Option<&HostPort> {
        match self {
            Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) => Some(hp),
            Endpoint::Http(web) | Endpoint::Https(web) | Endpoint::Ws(web) | Endpoint::Wss(web) => {
                Some(&web.at)
            }
            Endpoint::Unix(_) | Endpoint::UnixDgram(_) => None,
        }
    }

    /// The same transport at another IP address: how a server reports the
    /// address it really bound (`tcp://127.0.0.1:0` becomes `...:41234`).
    /// An address with a scope keeps the zone it was given by name.
    pub fn with_addr(&self, addr: SocketAddr) -> Endpoint {
        let host = match addr {
            SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                let zone = match self.host_port().map(|hp| &hp.host) {
                    Some(Host::Zoned(_, zone)) => zone.clone(),
                    _ => v6.scope_id().to_string(),
                };
                Host::Zoned(*v6.ip(), zone)
            }
            _ => Host::Ip(addr.ip()),
        };
        let hp = HostPort {
            host,
            port: addr.port(),
        };
        let web = |web: &WebAddr| WebAddr {
            at: hp.clone(),
            path: web.path.clone(),
        };
        match self {
            Endpoint::Udp(_) => Endpoint::Udp(hp),
            Endpoint::Tls(_) => Endpoint::Tls(hp),
            Endpoint::Http(w) => Endpoint::Http(web(w)),
            Endpoint::Https(w) => Endpoint::Https(web(w)),
            Endpoint::Ws(w) => Endpoint::Ws(web(w)),
            Endpoint::Wss(w) => Endpoint::Wss(web(w)),
            _ => Endpoint::Tcp(hp),
        }
    }

    /// Resolves an IP endpoint to socket addresses, in the resolver's order.
    /// Unix endpoints give an empty list.
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let Some(hp) = self.host_port() else {
            return Ok(Vec::new());
        };
        match &hp.host {
            Host::Ip(IpAddr::V6(ip)) if is_link_local(ip) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a link-local address needs a zone, the interface it is on: [{ip}%IFACE]:{}",
                    hp.port
                ),
            )),
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, hp.port)]),
            Host::Zoned(ip, zone) => {
                let scope = zone_index(zone)?;
                Ok(vec![SocketAddr::V6(std::net::SocketAddrV6::new(
                    *ip, hp.port, 0, scope,
                ))])
            }
            Host::Name(name) => {
                let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), hp.port))
                    .await?
                    .collect();
                addrs.dedup();
                if addrs.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} has no address"),
                    ));
                }
                Ok(addrs)
            }
        }
    }
}

/// Whether `ip` is link-local unicast (`fe80::/10`): usable only with a
/// zone saying which interface.
fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The interface index a zone names: a number, or an interface name
/// (`/sys/class/net/NAME/ifindex` on Linux).
fn zone_index(zone: &str) -> io::Result<u32> {
    if let Ok(index) = zone.parse::<u32>() {
        return Ok(index);
    }
    let path = std::path::Path::new("/sys/class/net")
        .join(zone)
        .join("ifindex");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no network interface named '{zone}'"),
            )
        })
}

impl FromStr for Endpoint {
    type Err = ParseEndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text).map_err(|mut err| {
            err.hint = hint::suggest(text);
            err
        })
    }
}

/// The parser itself; [`Endpoint::from_str`] adds the hint to its errors.
fn parse(text: &str) -> Result<Endpoint, ParseEndpointError> {
    let fail = |why: &str| ParseEndpointError::new(text, why);
    if text.is_empty() {
        return Err(fail("empty endpoint"));
    }
    if let Some(rest) = text.strip_prefix("unix-dgram:") {
        return Ok(Endpoint::UnixDgram(parse_unix(text, rest)?));
    }
    if let Some(rest) = text.strip_prefix("unix:") {
        return Ok(Endpoint::Unix(parse_unix(text, rest)?));
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        if let Some(default_port) = web_default_port(scheme) {
            let web = parse_web(text, rest, default_port)?;
            return Ok(match scheme {
                "http" => Endpoint::Http(web),
                "https" => Endpoint::Https(web),
                "ws" => Endpoint::Ws(web),
                _ => Endpoint::Wss(web),
            });
        }
        let hp = parse_host_port(text, rest)?;
        return match scheme {
            "tcp" => Ok(Endpoint::Tcp(hp)),
            "udp" => Ok(Endpoint::Udp(hp)),
            "tls" => Ok(Endpoint::Tls(hp)),
            _ => Err(fail(&match hint::scheme_named(scheme) {
                Some(ours) => format!("the scheme '{scheme}' is written '{ours}'"),
                None => format!("unknown scheme '{scheme}' (known: {})", SCHEMES.join(", ")),
            })),
        };
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let port = parse_port(text, text)?;
        return Ok(Endpoint::Tcp(HostPort {
            host: Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port,
        }));
    }
    // `udp:7000` is not TCP to a host named udp: a scheme lost its `//`.
    if let Some((word, sep, _)) = hint::split(text)
        && let Some(why) = hint::misspelled_separator(word, sep)
    {
        return Err(fail(&why));
    }
    Ok(Endpoint::Tcp(parse_host_port(text, text)?))
}

/// The port a web scheme means when none is written (as in a URL), or
/// `None` for the other schemes.
fn web_default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `HOST[:PORT][/PATH]` of a web endpoint. The path is kept as written:
/// visible ASCII (a URL's characters, `%` escapes included), no `#`
/// fragment (never sent to a server), at most [`MAX_PATH`] bytes.
fn parse_web(text: &str, rest: &str, default_port: u16) -> Result<WebAddr, ParseEndpointError> {
    let fail = |why: &str| ParseEndpointError::new(text, why);
    // A host or an IPv6 literal (zone included) never holds a `/`.
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], Some(&rest[at..])),
        None => (rest, None),
    };
    if let Some(path) = path {
        if path.len() > MAX_PATH {
            return Err(fail(&format!("path longer than {MAX_PATH} bytes")));
        }
        if let Some(bad) = path.chars().find(|c| !c.is_ascii_graphic() || *c == '#') {
            return Err(fail(&format!(
                "{} in the path (a URL path is visible ASCII, %-escaped, without a #fragment)",
                match bad {
                    '#' => "'#'".to_owned(),
                    c => format!("{c:?}"),
                }
            )));
        }
    }
    // No port: the scheme's, as in a URL (`ws://example.com/chat`).
    let has_port = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed
            .split_once(']')
            .is_some_and(|(_, after)| !after.is_empty()),
        None => authority.contains(':'),
    };
    let at = if has_port || authority.is_empty() {
        parse_host_port(text, authority)?
    } else {
        parse_host_port(text, &format!("{authority}:{default_port}"))?
    };
    Ok(WebAddr {
        at,
        path: path.map(str::to_owned),
    })
}

fn parse_unix(text: &str, rest: &str) -> Result<UnixAddr, ParseEndpointError> {
    // Accept the URL-ish `unix:///tmp/x` too; it means `unix:/tmp/x`.
    // `unix://tmp/x` would be the relative path tmp/x, almost never what
    // was meant: an error whose hint is unix:/tmp/x.
    if let Some(after) = rest.strip_prefix("//")
        && !after.is_empty()
        && !after.starts_with(['/', '@'])
    {
        let scheme = &text[..text.len() - rest.len() - 1];
        return Err(ParseEndpointError::new(
            text,
            format!("'{scheme}://' needs a third '/' before a path"),
        ));
    }
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err(ParseEndpointError::new(text, "empty abstract socket name"));
        }
        // sun_path holds 108 bytes, one of them the leading NUL.
        if name.len() > 107 {
            return Err(ParseEndpointError::new(
                text,
                "abstract name longer than 107 bytes",
            ));
        }
        return Ok(UnixAddr::Abstract(name.to_owned()));
    }
    if rest.is_empty() {
        return Err(ParseEndpointError::new(text, "missing socket path"));
    }
    // sun_path holds 108 bytes including the terminating NUL.
    if rest.len() > 107 {
        return Err(ParseEndpointError::new(
            text,
            "socket path longer than 107 bytes",
        ));
    }
    if rest.contains('\0') {
        return Err(ParseEndpointError::new(text, "NUL byte in socket path"));
    }
    Ok(UnixAddr::Path(PathBuf::from(rest)))
}

fn parse_host_port(text: &str, rest: &str) -> Result<HostPort, ParseEndpointError> {
    let fail = |why: &str| ParseEndpointError::new(text, why);
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (inner, after) = bracketed
            .split_once(']')
            .ok_or_else(|| fail("missing ']' after IPv6 address"))?;
        // A zone after `%` (or `%25`, its form in URLs, RFC 6874).
        let (address, zone) = match inner.split_once('%') {
            Some((address, zone)) => {
                let zone = match zone.strip_prefix("25") {
                    Some(rest) if !rest.is_empty() && zone.len() > 2 => rest,
                    _ => zone,
                };
                (address, Some(zone))
            }
            None => (inner, None),
        };
        let ip: Ipv6Addr = address
            .parse()
            .map_err(|_| fail(&format!("'{address}' is not an IPv6 address")))?;
        let host = match zone {
            None => Host::Ip(IpAddr::V6(ip)),
            Some(zone) if is_zone(zone) => Host::Zoned(ip, zone.to_owned()),
            Some(zone) => {
                return Err(fail(&format!(
                    "'{zone}' is not a zone (an interface name or index, as in [fe80::1%eth0]:9999)"
                )));
            }
        };
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| fail("missing ':PORT' after ']'"))?;
        return Ok(HostPort {
            host,
            port: parse_port(text, port)?,
        });
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| fail("missing ':PORT'"))?;
    if host.contains(':') {
        return Err(fail("IPv6 addresses need brackets, as in [::1]:9999"));
    }
    if host.is_empty() {
        return Err(fail("missing host before ':PORT'"));
    }
    let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
        Host::Ip(IpAddr::V4(ip))
    } else if is_host_name(host) {
        Host::Name(host.to_owned())
    } else {
        return Err(fail(&format!("'{host}' is not a host name or address")));
    };
    Ok(HostPort {
        host,
        port: parse_port(text, port)?,
    })
}

/// An interface name or index: what Linux allows in a name (at most 15
/// bytes, no `/`, no space), in the letters people use.
fn is_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 15
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// RFC 1123 host names, loosely: labels of letters, digits, `-` and `_`
/// (seen in the wild), at most 253 bytes. A name made only of digits and
/// dots is a malformed IPv4 address, not a name.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_port(text: &str, port: &str) -> Result<u16, ParseEndpointError> {
    if port.is_empty() {
        return Err(ParseEndpointError::new(text, "missing port"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseEndpointError::new(
            text,
            format!("port '{port}' is not a number"),
        ));
    }
    port.parse()
        .map_err(|_| ParseEndpointError::new(text, format!("port {port} is above 65535")))
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            // A zone that itself starts with `25` would read back as RFC
            // 6874's `%25` escape (`%25x` is zone `x`), so it gets one.
            Host::Zoned(ip, zone) if zone.len() > 2 && zone.starts_with("25") => {
                write!(f, "[{ip}%25{zone}]")
            }
            Host::Zoned(ip, zone) => write!(f, "[{ip}%{zone}]"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `unix:///x` parses as `/x` (the URL-ish form), so a path that
            // itself starts with `//` gets an extra `//` to read back.
            UnixAddr::Path(path) if path.to_string_lossy().starts_with("//") => {
                write!(f, "//{}", path.display())
            }
            UnixAddr::Path(path) => write!(f, "{}", path.display()),
            UnixAddr::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) => {
                write!(f, "{}://{hp}", self.scheme())
            }
            Endpoint::Unix(addr) | Endpoint::UnixDgram(addr) => {
                write!(f, "{}:{addr}", self.scheme())
            }
            Endpoint::Http(web) | Endpoint::Https(web) | Endpoint::Ws(web) | Endpoint::Wss(web) => {
                write!(
                    f,
                    "{}://{}{}",
                    self.scheme(),
                    web.at,
                    web.path.as_deref().unwrap_or("")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Endpoint {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} did not parse: {e}"))
    }

    #[test]
    fn every_contract_form_parses_to_its_canonical_text() {
        for (text, canonical) in [
            ("9999", "tcp://127.0.0.1:9999"),
            ("0", "tcp://127.0.0.1:0"),
            ("127.0.0.1:7", "tcp://127.0.0.1:7"),
            ("[::1]:7000", "tcp://[::1]:7000"),
            ("localhost:80", "tcp://localhost:80"),
            ("tcp://10.0.0.1:1", "tcp://10.0.0.1:1"),
            ("udp://[::1]:7000", "udp://[::1]:7000"),
            ("[fe80::1%eth0]:7", "tcp://[fe80::1%eth0]:7"),
            ("udp://[fe80::1%25eth0]:7", "udp://[fe80::1%eth0]:7"),
            ("[fe80::1%2]:7", "tcp://[fe80::1%2]:7"),
            ("[fe80::1%25250]:7", "tcp://[fe80::1%25250]:7"),
            ("udp://127.0.0.1:0", "udp://127.0.0.1:0"),
            ("tls://example.com:443", "tls://example.com:443"),
            ("unix:/tmp/e.sock", "unix:/tmp/e.sock"),
            ("unix:///tmp/e.sock", "unix:/tmp/e.sock"),
            ("unix:////x", "unix:////x"),
            ("unix:relative.sock", "unix:relative.sock"),
            ("unix:@echo", "unix:@echo"),
            ("unix://@echo", "unix:@echo"),
            ("unix-dgram:/tmp/e.dgram", "unix-dgram:/tmp/e.dgram"),
            ("unix-dgram:@echo", "unix-dgram:@echo"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://localhost", "http://localhost:80"),
            (
                "https://example.com/a/b?c=d&e=%20f",
                "https://example.com:443/a/b?c=d&e=%20f",
            ),
            ("ws://[::1]:7/echo", "ws://[::1]:7/echo"),
            ("wss://[fe80::1%25eth0]/", "wss://[fe80::1%eth0]:443/"),
            ("ws://127.0.0.1:0", "ws://127.0.0.1:0"),
        ] {
            assert_eq!(parse(text).to_string(), canonical, "{text}");
        }
        assert_eq!(parse(DEFAULT), Endpoint::default());
    }

    #[test]
    fn kinds() {
        assert_eq!(parse("udp://127.0.0.1:1").kind(), Kind::Datagram);
        assert_eq!(parse("unix-dgram:/x").kind(), Kind::Datagram);
        assert_eq!(parse("unix:@x").kind(), Kind::Stream);
        assert_eq!(parse("tls://[::1]:1").kind(), Kind::Stream);
        assert_eq!(parse("wss://[::1]:1").kind(), Kind::Stream);
        assert!(parse("https://h:1").is_tls() && !parse("ws://h:1").is_tls());
        assert_eq!(parse("ws://h:1").web().map(WebAddr::target), Some("/"));
        assert_eq!(
            parse("ws://h:1/x?y").web().map(WebAddr::target),
            Some("/x?y")
        );
    }

    #[test]
    fn malformed_endpoints_name_the_text_and_show_a_valid_form() {
        for bad in [
            "",
            "::1:80",
            "[::1]",
            "[::1]80",
            "[nope]:80",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:",
            "tcp://127.0.0.1:99999",
            "tcp://127.0.0.1:http",
            "tcp://:80",
            "sctp://127.0.0.1:80",
            "999.1.1.1:80",
            "bad host:80",
            "unix:",
            "unix:@",
            "unix-dgram:",
            "localhost",
            "65536",
            // A scheme with its separator mistyped, never a host named udp
            // or the relative path tmp/x.
            "udp:127.0.0.1:7000",
            "udp:7000",
            "tcp:/x",
            "udp//x",
            "UDP://127.0.0.1:7",
            "unix://tmp/x",
            "unix-dgram://x",
            "http://",
            "http:///x",
            "http://127.0.0.1:99999/",
            "ws://::1/x",
            "ws://h:1/a b",
            "ws://h:1/a#frag",
            "https://h:x/",
            "http:127.0.0.1:80",
        ] {
            let err = bad.parse::<Endpoint>().expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains(&format!("'{bad}'")), "{msg}");
            assert!(msg.contains("127.0.0.1:9999"), "{msg}");
        }
    }

    #[test]
    fn schemes_are_what_the_parser_takes() {
        // Every scheme listed parses, to an endpoint of that scheme.
        for scheme in SCHEMES {
            let text = if scheme.starts_with("unix") {
                format!("{scheme}:/tmp/x")
            } else {
                format!("{scheme}://127.0.0.1:1")
            };
            assert_eq!(parse(&text).scheme(), scheme, "{text}");
        }
        // And a scheme the parser takes is listed: the schemes other tools
        // and the application-echo forms use, tried as both shapes.
        for scheme in [
            "sctp",
            "quic",
            "dtls",
            "vsock",
            "unix-seqpacket",
            "unix-stream",
            "tcp4",
            "tcp6",
            "udp4",
            "udp6",
            "ssl",
            "file",
        ] {
            for text in [
                format!("{scheme}://127.0.0.1:1"),
                format!("{scheme}:/tmp/x"),
            ] {
                if let Ok(endpoint) = text.parse::<Endpoint>() {
                    assert!(
                        SCHEMES.contains(&endpoint.scheme()) && endpoint.scheme() == scheme,
                        "{text} parses as {endpoint}, but SCHEMES lacks {scheme}"
                    );
                }
            }
        }
    }

    #[test]
    fn with_addr_keeps_the_transport() {
        let real: SocketAddr = "[::1]:4242".parse().unwrap();
        assert_eq!(
            parse("udp://[::1]:0").with_addr(real).to_string(),
            "udp://[::1]:4242"
        );
        assert_eq!(
            parse("localhost:0").with_addr(real).to_string(),
            "tcp://[::1]:4242"
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<Endpoint>();
        }

        #[test]
        fn display_round_trips(
            scheme in prop::sample::select(vec!["tcp", "udp", "tls"]),
            v6 in any::<bool>(),
            a in any::<[u8; 16]>(),
            port in any::<u16>(),
        ) {
            let ip = if v6 {
                IpAddr::V6(Ipv6Addr::from(a))
            } else {
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            };
            let text = format!("{scheme}://{}", HostPort { host: Host::Ip(ip), port });
            let endpoint: Endpoint = text.parse().unwrap();
            prop_assert_eq!(endpoint.to_string(), text.clone());
            prop_assert_eq!(endpoint.to_string().parse::<Endpoint>().unwrap(), endpoint);
        }

        #[test]
        fn web_round_trips(
            scheme in prop::sample::select(vec!["http", "https", "ws", "wss"]),
            host in prop::sample::select(vec!["127.0.0.1", "[::1]", "localhost", "[fe80::1%eth0]"]),
            port in proptest::option::of(any::<u16>()),
            path in proptest::option::of("/[!-~&&[^#]]{0,40}"),
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let text = format!("{scheme}://{host}{port}{}", path.as_deref().unwrap_or(""));
            let endpoint: Endpoint = text.parse().unwrap();
            prop_assert_eq!(endpoint.scheme(), scheme);
            prop_assert_eq!(endpoint.web().unwrap().path.as_deref(), path.as_deref());
            let canonical = endpoint.to_string();
            prop_assert_eq!(canonical.parse::<Endpoint>().unwrap(), endpoint);
            if !port.is_empty() && !host.contains('%') {
                prop_assert_eq!(canonical, text);
            }
        }

        #[test]
        fn zoned_round_trips(a in any::<[u8; 16]>(), zone in "[a-z0-9_.-]{1,15}", port in any::<u16>()) {
            let host = Host::Zoned(Ipv6Addr::from(a), zone);
            let text = format!("udp://{}", HostPort { host, port });
            let endpoint: Endpoint = text.parse().unwrap();
            prop_assert_eq!(endpoint.to_string(), text);
        }

        #[test]
        fn unix_round_trips(path in "/[a-z0-9_./-]{1,60}", abstract_ in any::<bool>()) {
            let text = if abstract_ { format!("unix:@{}", &path[1..].replace('/', "_") ) } else { format!("unix:{path}") };
            if let Ok(endpoint) = text.parse::<Endpoint>() {
                prop_assert_eq!(endpoint.to_string().parse::<Endpoint>().unwrap(), endpoint);
            }
        }
    }
}
