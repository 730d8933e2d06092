//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2):
//! the header a load balancer or proxy sends ahead of a connection's bytes
//! to say who the client really is.
//!
//! Parsed and written here with no I/O, as quinn-proto does its protocol:
//! the server reads a header off a socket in `transport::proxy`, clients
//! write one there, and this module is tested by feeding it bytes (unit
//! tests, property tests, and `fuzz/fuzz_targets/proxy_header.rs`).
//!
//! [`parse`] takes the bytes read so far and says either what the header
//! is and how long, or how many more bytes may be read *without reading
//! past the header* ([`Need`]): the bytes after it belong to the client and
//! must reach the echo (or a TLS handshake) untouched. A version 2 header
//! says its length in its first 16 bytes; a version 1 header is a line, so
//! its end is found by looking (`Need::line`).
//!
//! Limits: a version 1 header is at most 107 bytes (the specification's
//! own bound), a version 2 header at most [`MAX_LEN`]; anything longer is
//! refused, so a peer cannot make the server hold more.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The longest version 1 header, CRLF included (the specification's
/// `PROXY TCP6` line with the longest addresses and ports).
pub const V1_MAX: usize = 107;

/// The shortest version 1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN: usize = 15;

/// What every version 1 header begins with.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12 bytes every version 2 header begins with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 2 header's fixed part: signature, version and command,
/// family and protocol, length.
const V2_FIXED: usize = 16;

/// The longest version 2 header accepted, fixed part included: room for
/// the addresses and every TLV HAProxy sends (ALPN, authority, a unique
/// ID of up to 128 bytes, the TLS facts) several times over. The protocol
/// allows 16 + 65535 bytes; a peer claiming more than this is refused
/// rather than buffered.
pub const MAX_LEN: usize = 4096;

/// The longest unique ID the specification allows (`PP2_TYPE_UNIQUE_ID`).
const MAX_UNIQUE_ID: usize = 128;

/// Which version of the protocol a header is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Version 1: one line of text.
    V1,
    /// Version 2: binary, with optional TLVs.
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The connection was made by the proxy itself (a health check): it is
    /// served as a connection from the proxy (version 2 `LOCAL`).
    Local,
    /// The connection is relayed for the client the addresses name.
    Proxy,
}

/// The addresses a header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// None (version 1 `UNKNOWN`, version 2 `UNSPEC` or `LOCAL`): the
    /// connection's own addresses stand.
    Unknown,
    /// The client (`source`) and the address it connected to on the proxy
    /// (`destination`).
    Ip {
        /// The original client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// Unix socket names (version 2 `AF_UNIX`), as sent: a path's bytes,
    /// or `@` and an abstract name's.
    Unix {
        /// The client's socket name.
        source: Vec<u8>,
        /// The name the client connected to.
        destination: Vec<u8>,
    },
}

/// The TLS facts a proxy that terminated TLS passes on
/// (`PP2_TYPE_SSL` and its sub-TLVs). Values are kept as sent (JSON
/// events show them as text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ssl {
    /// The client connected over TLS (`PP2_CLIENT_SSL`).
    pub client_ssl: bool,
    /// The client presented a certificate, on this connection or its
    /// session (`PP2_CLIENT_CERT_CONN`, `PP2_CLIENT_CERT_SESS`).
    pub client_cert: bool,
    /// The proxy verified the client's certificate (`verify` is 0).
    pub verified: bool,
    /// The TLS version (`PP2_SUBTYPE_SSL_VERSION`, e.g. `TLSv1.3`).
    pub version: Option<Vec<u8>>,
    /// The client certificate's common name (`PP2_SUBTYPE_SSL_CN`).
    pub cn: Option<Vec<u8>>,
    /// The cipher (`PP2_SUBTYPE_SSL_CIPHER`).
    pub cipher: Option<Vec<u8>>,
    /// The certificate's signature algorithm (`PP2_SUBTYPE_SSL_SIG_ALG`).
    pub sig_alg: Option<Vec<u8>>,
    /// The certificate's key algorithm (`PP2_SUBTYPE_SSL_KEY_ALG`).
    pub key_alg: Option<Vec<u8>>,
}

/// The TLVs of a version 2 header that say something about the client,
/// kept as sent (JSON events show them as text; a unique ID that is not
/// UTF-8, as hex).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tlvs {
    /// The protocol the client negotiated (`PP2_TYPE_ALPN`).
    pub alpn: Option<Vec<u8>>,
    /// The host name the client asked for (`PP2_TYPE_AUTHORITY`, its SNI).
    pub authority: Option<Vec<u8>>,
    /// The proxy's ID for the connection (`PP2_TYPE_UNIQUE_ID`), at most
    /// 128 bytes.
    pub unique_id: Option<Vec<u8>>,
    /// What the proxy knows of the client's TLS (`PP2_TYPE_SSL`).
    pub ssl: Option<Ssl>,
    /// The network namespace the proxy accepted in (`PP2_TYPE_NETNS`).
    pub netns: Option<Vec<u8>>,
    /// Other TLVs (a cloud provider's own), as type and raw value.
    pub other: Vec<(u8, Vec<u8>)>,
}

impl Tlvs {
    /// No TLV at all.
    pub fn is_empty(&self) -> bool {
        *self == Tlvs::default()
    }
}

/// A PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Which version it came in.
    pub version: Version,
    /// Relayed for a client, or the proxy's own connection.
    pub command: Command,
    /// Who the client is and what it connected to.
    pub addresses: Addresses,
    /// What a version 2 header adds.
    pub tlvs: Tlvs,
}

/// How many more bytes [`parse`] needs, and how they may be read without
/// taking any byte past the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// At most this many more bytes belong to the header.
    pub up_to: usize,
    /// The header is a line whose end is not known yet: read up to and
    /// including the first `\n` among the next `up_to` bytes (a peek says
    /// where it is), and no further. Otherwise any read of at most `up_to`
    /// bytes stays within the header.
    pub line: bool,
}

/// What [`parse`] made of the bytes so far.
// A header is parsed once per connection and moved once: boxing it would
// cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, the first `len` bytes of the input.
    Done {
        /// The header.
        header: Header,
        /// Its length: the client's own bytes start after it.
        len: usize,
    },
    /// Not yet a whole header.
    More(Need),
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes begin with neither version's signature.
    #[error("no PROXY protocol header (the connection did not begin with one)")]
    Missing,
    /// Longer than the limit.
    #[error("PROXY protocol header too long (more than {0} bytes)")]
    TooLong(usize),
    /// The signature is there but what follows is not a valid header.
    #[error("malformed PROXY protocol {version} header: {why}")]
    Malformed {
        /// Which version it claimed to be.
        version: Version,
        /// What is wrong.
        why: &'static str,
    },
}

fn malformed(version: Version, why: &'static str) -> ParseError {
    ParseError::Malformed { version, why }
}

/// Whether `buf` could be the start of `sig` (or begins with it).
fn begins(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

/// Parses the bytes read so far from the start of a connection: a whole
/// header, how many more bytes it needs, or why it is not one. As soon as
/// the bytes cannot begin a header, it says so (a client that sends
/// `hello` is refused at once, not after a timeout). Bytes after a whole
/// header are left alone.
pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    match (begins(buf, V1_PREFIX), begins(buf, V2_SIGNATURE)) {
        (false, false) => Err(ParseError::Missing),
        // Only the empty input begins both.
        (true, true) => Ok(Parsed::More(Need {
            up_to: V1_MIN,
            line: false,
        })),
        (true, false) => parse_v1(buf),
        (false, true) => parse_v2(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ParseError> {
    let bad = |why| malformed(Version::V1, why);
    let searched = &buf[..buf.len().min(V1_MAX)];
    if let Some(newline) = searched.iter().position(|&b| b == b'\n') {
        if newline == 0 || buf[newline - 1] != b'\r' {
            return Err(bad("the line does not end with CRLF"));
        }
        let line = std::str::from_utf8(&buf[..newline - 1]).map_err(|_| bad("not ASCII text"))?;
        let header = parse_v1_line(line).map_err(bad)?;
        return Ok(Parsed::Done {
            header,
            len: newline + 1,
        });
    }
    if buf.len() >= V1_MAX {
        return Err(ParseError::TooLong(V1_MAX));
    }
    if let Some(cr) = buf.iter().position(|&b| b == b'\r')
        && cr + 1 < buf.len()
    {
        return Err(bad("a CR inside the line"));
    }
    Ok(Parsed::More(if buf.len() < V1_MIN {
        // Every version 1 header is at least this long.
        Need {
            up_to: V1_MIN - buf.len(),
            line: false,
        }
    } else {
        Need {
            up_to: V1_MAX - buf.len(),
            line: true,
        }
    }))
}

/// `PROXY TCP4 SRC DST SPORT DPORT`, `PROXY TCP6 ...` or `PROXY UNKNOWN
/// ...`, without its CRLF.
fn parse_v1_line(line: &str) -> Result<Header, &'static str> {
    let mut fields = line.split(' ');
    if fields.next() != Some("PROXY") {
        return Err("it does not begin with 'PROXY '");
    }
    let v6 = match fields.next() {
        // "the receiver must ignore anything presented before the CRLF".
        Some("UNKNOWN") => {
            return Ok(Header {
                version: Version::V1,
                command: Command::Proxy,
                addresses: Addresses::Unknown,
                tlvs: Tlvs::default(),
            });
        }
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err("the protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let mut next = || fields.next().ok_or("too few fields");
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err("too many fields");
    }
    let ip = |text: &str| -> Result<IpAddr, &'static str> {
        if v6 {
            text.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| "not an IPv6 address after TCP6")
        } else {
            text.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| "not an IPv4 address after TCP4")
        }
    };
    let port = |text: &str| -> Result<u16, &'static str> {
        if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a port is not a number from 0 to 65535");
        }
        text.parse()
            .map_err(|_| "a port is not a number from 0 to 65535")
    };
    Ok(Header {
        version: Version::V1,
        command: Command::Proxy,
        addresses: Addresses::Ip {
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        },
        tlvs: Tlvs::default(),
    })
}

// Version 2's families and TLV types (proxy-protocol.txt, section 2.2).
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_CRC32C: u8 = 0x03;
const PP2_TYPE_NOOP: u8 = 0x04;
const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
const PP2_TYPE_NETNS: u8 = 0x30;
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
const PP2_CLIENT_CERT_SESS: u8 = 0x04;
/// A Unix socket name's room in the address block.
const UNIX_NAME: usize = 108;

fn parse_v2(buf: &[u8]) -> Result<Parsed, ParseError> {
    let bad = |why| malformed(Version::V2, why);
    if buf.len() < V2_FIXED {
        return Ok(Parsed::More(Need {
            up_to: V2_FIXED - buf.len(),
            line: false,
        }));
    }
    if buf[12] >> 4 != 2 {
        return Err(bad("the version is not 2"));
    }
    let command = match buf[12] & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(bad("the command is neither LOCAL nor PROXY")),
    };
    let family = buf[13] >> 4;
    if family > AF_UNIX || buf[13] & 0x0f > 2 {
        return Err(bad("unknown address family or protocol"));
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_LEN {
        return Err(ParseError::TooLong(MAX_LEN));
    }
    if buf.len() < len {
        return Ok(Parsed::More(Need {
            up_to: len - buf.len(),
            line: false,
        }));
    }
    let done = |addresses, tlvs| {
        Ok(Parsed::Done {
            header: Header {
                version: Version::V2,
                command,
                addresses,
                tlvs,
            },
            len,
        })
    };
    // LOCAL: "the receiver must ... use the real connection endpoints and
    // discard the protocol block including the family".
    if command == Command::Local {
        return done(Addresses::Unknown, Tlvs::default());
    }
    let body = &buf[V2_FIXED..len];
    let (addresses, rest) = match family {
        AF_INET => {
            let a = body
                .get(..12)
                .ok_or_else(|| bad("too short for IPv4 addresses"))?;
            let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            let addresses = Addresses::Ip {
                source: SocketAddrV4::new(ip(0), port(8)).into(),
                destination: SocketAddrV4::new(ip(4), port(10)).into(),
            };
            (addresses, &body[12..])
        }
        AF_INET6 => {
            let a = body
                .get(..36)
                .ok_or_else(|| bad("too short for IPv6 addresses"))?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            let addresses = Addresses::Ip {
                source: SocketAddrV6::new(ip(0), port(32), 0, 0).into(),
                destination: SocketAddrV6::new(ip(16), port(34), 0, 0).into(),
            };
            (addresses, &body[36..])
        }
        AF_UNIX => {
            let a = body
                .get(..2 * UNIX_NAME)
                .ok_or_else(|| bad("too short for Unix socket names"))?;
            let addresses = Addresses::Unix {
                source: unix_name(&a[..UNIX_NAME]),
                destination: unix_name(&a[UNIX_NAME..]),
            };
            (addresses, &body[2 * UNIX_NAME..])
        }
        // UNSPEC: "the receiver should ignore address information".
        _ => (Addresses::Unknown, body),
    };
    let tlvs = parse_tlvs(rest, &buf[..len]).map_err(bad)?;
    done(addresses, tlvs)
}

/// A Unix socket name from its NUL-padded field: a path, or `@NAME` for an
/// abstract name (which begins with a NUL).
fn unix_name(field: &[u8]) -> Vec<u8> {
    let (mut out, name) = match field.split_first() {
        Some((0, rest)) => (b"@".to_vec(), rest),
        _ => (Vec::new(), field),
    };
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    out.extend_from_slice(&name[..end]);
    out
}

/// The TLVs in `data`; `header` is the whole header, which a CRC32C TLV
/// covers.
fn parse_tlvs(mut data: &[u8], header: &[u8]) -> Result<Tlvs, &'static str> {
    let mut tlvs = Tlvs::default();
    let mut crc = None;
    while !data.is_empty() {
        let (kind, value, rest) = split_tlv(data)?;
        match kind {
            PP2_TYPE_ALPN => tlvs.alpn = Some(value.to_vec()),
            PP2_TYPE_AUTHORITY => tlvs.authority = Some(value.to_vec()),
            PP2_TYPE_CRC32C => {
                let sum: [u8; 4] = value
                    .try_into()
                    .map_err(|_| "a CRC32C TLV is not 4 bytes")?;
                // Where its value sits in the header, to zero it for the check.
                let at = header.len() - data.len() + 3;
                crc = Some((u32::from_be_bytes(sum), at));
            }
            PP2_TYPE_NOOP => {}
            PP2_TYPE_UNIQUE_ID => {
                if value.len() > MAX_UNIQUE_ID {
                    return Err("a unique ID longer than 128 bytes");
                }
                tlvs.unique_id = Some(value.to_vec());
            }
            PP2_TYPE_SSL => tlvs.ssl = Some(parse_ssl(value)?),
            PP2_TYPE_NETNS => tlvs.netns = Some(value.to_vec()),
            _ => tlvs.other.push((kind, value.to_vec())),
        }
        data = rest;
    }
    if let Some((sum, at)) = crc {
        let mut copy = header.to_vec();
        copy[at..at + 4].fill(0);
        if crc32c(&copy) != sum {
            return Err("its CRC32C checksum does not match");
        }
    }
    Ok(tlvs)
}

/// One TLV off the front of `data`: its type, its value and what follows.
fn split_tlv(data: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let [kind, hi, lo, rest @ ..] = data else {
        return Err("a TLV is cut short");
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if rest.len() < len {
        return Err("a TLV is longer than the header");
    }
    Ok((*kind, &rest[..len], &rest[len..]))
}

fn parse_ssl(value: &[u8]) -> Result<Ssl, &'static str> {
    let [client, v0, v1, v2, v3, sub @ ..] = value else {
        return Err("an SSL TLV is shorter than 5 bytes");
    };
    let mut sub = sub;
    let mut ssl = Ssl {
        client_ssl: client & PP2_CLIENT_SSL != 0,
        client_cert: client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS) != 0,
        verified: u32::from_be_bytes([*v0, *v1, *v2, *v3]) == 0,
        ..Ssl::default()
    };
    while !sub.is_empty() {
        let (kind, value, rest) = split_tlv(sub)?;
        let text = Some(value.to_vec());
        match kind {
            PP2_SUBTYPE_SSL_VERSION => ssl.version = text,
            PP2_SUBTYPE_SSL_CN => ssl.cn = text,
            PP2_SUBTYPE_SSL_CIPHER => ssl.cipher = text,
            PP2_SUBTYPE_SSL_SIG_ALG => ssl.sig_alg = text,
            PP2_SUBTYPE_SSL_KEY_ALG => ssl.key_alg = text,
            _ => {}
        }
        sub = rest;
    }
    Ok(ssl)
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// CRC-32C (Castagnoli), as `PP2_TYPE_CRC32C` uses it. Bit by bit: a
/// header is checked once per connection, never per message.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

impl Header {
    /// A header relaying a connection from `source` to `destination`.
    pub fn proxied(source: SocketAddr, destination: SocketAddr) -> Header {
        Header {
            version: Version::V2,
            command: Command::Proxy,
            addresses: Addresses::Ip {
                source,
                destination,
            },
            tlvs: Tlvs::default(),
        }
    }

    /// A header that names no addresses (version 1 `UNKNOWN`, version 2
    /// `UNSPEC`): for a connection over a Unix socket.
    pub fn unknown() -> Header {
        Header {
            version: Version::V2,
            command: Command::Proxy,
            addresses: Addresses::Unknown,
            tlvs: Tlvs::default(),
        }
    }

    /// The header in `version`'s encoding. Version 1 has no TLVs and no
    /// Unix names (those become `UNKNOWN`); its two addresses share a
    /// family, so an IPv4 one beside an IPv6 one is written IPv4-mapped.
    /// Version 2 `LOCAL` carries nothing else.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        match version {
            Version::V1 => self.encode_v1().into_bytes(),
            Version::V2 => self.encode_v2(),
        }
    }

    fn encode_v1(&self) -> String {
        match &self.addresses {
            Addresses::Ip {
                source,
                destination,
            } => {
                let (src, dst) = match (source.ip(), destination.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
                    (s, d) => (IpAddr::V6(mapped(s)), IpAddr::V6(mapped(d))),
                };
                let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {proto} {src} {dst} {} {}\r\n",
                    source.port(),
                    destination.port()
                )
            }
            _ => "PROXY UNKNOWN\r\n".to_owned(),
        }
    }

    fn encode_v2(&self) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        let (command, family) = match (self.command, &self.addresses) {
            (Command::Local, _) => (0x20, AF_UNSPEC << 4),
            (Command::Proxy, Addresses::Unknown) => (0x21, AF_UNSPEC << 4),
            (Command::Proxy, Addresses::Ip { source, .. }) if source.is_ipv4() => {
                (0x21, (AF_INET << 4) | 1)
            }
            (Command::Proxy, Addresses::Ip { .. }) => (0x21, (AF_INET6 << 4) | 1),
            (Command::Proxy, Addresses::Unix { .. }) => (0x21, (AF_UNIX << 4) | 1),
        };
        out.extend([command, family, 0, 0]);
        if self.command == Command::Proxy {
            match &self.addresses {
                Addresses::Unknown => {}
                Addresses::Ip {
                    source,
                    destination,
                } => match (source.ip(), destination.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        out.extend(s.octets());
                        out.extend(d.octets());
                    }
                    (s, d) => {
                        // The family was chosen by the source: IPv6 for
                        // both when they differ.
                        if s.is_ipv4() {
                            out[13] = (AF_INET6 << 4) | 1;
                        }
                        out.extend(mapped(s).octets());
                        out.extend(mapped(d).octets());
                    }
                },
                Addresses::Unix {
                    source,
                    destination,
                } => {
                    out.extend(unix_field(source));
                    out.extend(unix_field(destination));
                }
            }
            if let Addresses::Ip {
                source,
                destination,
            } = &self.addresses
            {
                out.extend(source.port().to_be_bytes());
                out.extend(destination.port().to_be_bytes());
            }
            self.tlvs.encode(&mut out);
        }
        let len = u16::try_from(out.len() - V2_FIXED).unwrap_or(u16::MAX);
        out[14..16].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// `ip` as IPv6 (an IPv4 address IPv4-mapped).
fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A Unix socket name as its 108-byte, NUL-padded field (cut to fit, as
/// the kernel's `sun_path`: a path filling it has no NUL).
fn unix_field(name: &[u8]) -> [u8; UNIX_NAME] {
    let mut field = [0u8; UNIX_NAME];
    let bytes = match name.strip_prefix(b"@") {
        Some(abstract_name) => {
            let mut b = vec![0u8];
            b.extend_from_slice(abstract_name);
            b
        }
        None => name.to_vec(),
    };
    let n = bytes.len().min(UNIX_NAME);
    field[..n].copy_from_slice(&bytes[..n]);
    field
}

impl Tlvs {
    /// Appends the TLVs (as version 2 writes them) to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        let mut put = |kind: u8, value: &[u8]| {
            out.push(kind);
            out.extend(u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(value);
        };
        if let Some(alpn) = &self.alpn {
            put(PP2_TYPE_ALPN, alpn);
        }
        if let Some(authority) = &self.authority {
            put(PP2_TYPE_AUTHORITY, authority);
        }
        if let Some(id) = &self.unique_id {
            put(PP2_TYPE_UNIQUE_ID, id);
        }
        if let Some(ssl) = &self.ssl {
            let mut value = vec![
                (u8::from(ssl.client_ssl) * PP2_CLIENT_SSL)
                    | (u8::from(ssl.client_cert) * PP2_CLIENT_CERT_CONN),
            ];
            value.extend(u32::from(!ssl.verified).to_be_bytes());
            for (kind, text) in [
                (PP2_SUBTYPE_SSL_VERSION, &ssl.version),
                (PP2_SUBTYPE_SSL_CN, &ssl.cn),
                (PP2_SUBTYPE_SSL_CIPHER, &ssl.cipher),
                (PP2_SUBTYPE_SSL_SIG_ALG, &ssl.sig_alg),
                (PP2_SUBTYPE_SSL_KEY_ALG, &ssl.key_alg),
            ] {
                if let Some(text) = text {
                    value.push(kind);
                    value.extend(u16::try_from(text.len()).unwrap_or(0).to_be_bytes());
                    value.extend_from_slice(text);
                }
            }
            put(PP2_TYPE_SSL, &value);
        }
        if let Some(netns) = &self.netns {
            put(PP2_TYPE_NETNS, netns);
        }
        for (kind, value) in &self.other {
            put(*kind, value);
        }
    }
}

impl serde::Serialize for Tlvs {
    /// As JSON events show them: only the TLVs present.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if let Some(alpn) = &self.alpn {
            map.serialize_entry("alpn", &String::from_utf8_lossy(alpn))?;
        }
        if let Some(authority) = &self.authority {
            map.serialize_entry("authority", &String::from_utf8_lossy(authority))?;
        }
        if let Some(id) = &self.unique_id {
            // An opaque ID: as text when it is, else in hex.
            match std::str::from_utf8(id) {
                Ok(text) => map.serialize_entry("unique_id", text)?,
                Err(_) => map.serialize_entry("unique_id_hex", &hex(id))?,
            }
        }
        if let Some(ssl) = &self.ssl {
            map.serialize_entry("ssl", &SslJson(ssl))?;
        }
        if let Some(netns) = &self.netns {
            map.serialize_entry("netns", &String::from_utf8_lossy(netns))?;
        }
        for (kind, value) in &self.other {
            map.serialize_entry(&format!("0x{kind:02x}"), &hex(value))?;
        }
        map.end()
    }
}

struct SslJson<'a>(&'a Ssl);

impl serde::Serialize for SslJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let ssl = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("client_ssl", &ssl.client_ssl)?;
        map.serialize_entry("client_cert", &ssl.client_cert)?;
        map.serialize_entry("verified", &ssl.verified)?;
        for (key, value) in [
            ("version", &ssl.version),
            ("cn", &ssl.cn),
            ("cipher", &ssl.cipher),
            ("sig_alg", &ssl.sig_alg),
            ("key_alg", &ssl.key_alg),
        ] {
            if let Some(value) = value {
                map.serialize_entry(key, &String::from_utf8_lossy(value))?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done(bytes: &[u8]) -> (Header, usize) {
        match parse(bytes) {
            Ok(Parsed::Done { header, len }) => (header, len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn version_1_lines_as_the_specification_writes_them() {
        let (header, len) = done(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /");
        assert_eq!(len, 47);
        assert_eq!(header.version, Version::V1);
        assert_eq!(
            header.addresses,
            Addresses::Ip {
                source: addr("192.168.0.1:56324"),
                destination: addr("192.168.0.11:443"),
            }
        );
        let (header, _) = done(b"PROXY TCP6 ::1 2001:db8::1 1 65535\r\n");
        assert_eq!(
            header.addresses,
            Addresses::Ip {
                source: addr("[::1]:1"),
                destination: addr("[2001:db8::1]:65535"),
            }
        );
        let (header, len) = done(b"PROXY UNKNOWN\r\n");
        assert_eq!((header.addresses, len), (Addresses::Unknown, 15));
        // UNKNOWN: the rest of the line is ignored.
        let (_, len) = done(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!(len, 35);
    }

    #[test]
    fn malformed_version_1_lines_are_refused() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
        ] {
            let got = parse(bad);
            assert!(
                matches!(
                    got,
                    Err(ParseError::Malformed {
                        version: Version::V1,
                        ..
                    })
                ),
                "{:?}: {got:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
        assert_eq!(parse(long.as_bytes()), Err(ParseError::TooLong(V1_MAX)));
    }

    #[test]
    fn what_is_no_header_is_said_at_once() {
        assert_eq!(parse(b"hello\n"), Err(ParseError::Missing));
        assert_eq!(parse(b"G"), Err(ParseError::Missing));
        assert_eq!(parse(b"\r\n\r\nX"), Err(ParseError::Missing));
        assert_eq!(
            parse(b""),
            Ok(Parsed::More(Need {
                up_to: 15,
                line: false
            }))
        );
        assert_eq!(
            parse(b"PRO"),
            Ok(Parsed::More(Need {
                up_to: 12,
                line: false
            }))
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2."),
            Ok(Parsed::More(Need {
                up_to: 92,
                line: true
            }))
        );
    }

    /// HAProxy 2.6's `send-proxy-v2` header for a client at
    /// 127.0.0.1:40000 that connected to 127.0.0.1:8000, as captured.
    const HAPROXY_V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\
        \x7f\x00\x00\x01\x7f\x00\x00\x01\x9c\x40\x1f\x40";

    #[test]
    fn version_2_inet_local_and_unspec() {
        let (header, len) = done(HAPROXY_V2);
        assert_eq!(len, 28);
        assert_eq!(header.command, Command::Proxy);
        assert_eq!(
            header.addresses,
            Addresses::Ip {
                source: addr("127.0.0.1:40000"),
                destination: addr("127.0.0.1:8000"),
            }
        );
        // LOCAL: whatever follows in its block is discarded.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x11, 0, 3, 0xff, 0xff, 0xff]);
        let (header, len) = done(&local);
        assert_eq!(
            (header.command, header.addresses, len),
            (Command::Local, Addresses::Unknown, 19)
        );
        let (header, _) = done(&Header::unknown().encode(Version::V2));
        assert_eq!(header.addresses, Addresses::Unknown);
    }

    #[test]
    fn malformed_version_2_headers_are_refused() {
        let with = |at: usize, byte: u8| {
            let mut h = HAPROXY_V2.to_vec();
            h[at] = byte;
            h
        };
        for (bad, what) in [
            (with(12, 0x11), "version 1 in a version 2 header"),
            (with(12, 0x22), "command 2"),
            (with(13, 0x41), "family 4"),
            (with(13, 0x13), "protocol 3"),
            (with(15, 0x08), "too short for IPv4"),
        ] {
            let got = parse(&bad);
            assert!(
                matches!(
                    got,
                    Err(ParseError::Malformed {
                        version: Version::V2,
                        ..
                    })
                ),
                "{what}: {got:?}"
            );
        }
        let mut long = HAPROXY_V2.to_vec();
        long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&long), Err(ParseError::TooLong(MAX_LEN)));
        // A TLV that claims more than is there.
        let mut cut = HAPROXY_V2.to_vec();
        cut.extend([PP2_TYPE_ALPN, 0, 9, b'h', b'2']);
        cut[15] = 12 + 5;
        assert!(parse(&cut).is_err());
    }

    #[test]
    fn tlvs_as_haproxy_sends_them() {
        let header = Header {
            tlvs: Tlvs {
                alpn: Some(b"h2".to_vec()),
                authority: Some(b"echo.example".to_vec()),
                unique_id: Some(b"7F000001:9C40_1F40_0001".to_vec()),
                ssl: Some(Ssl {
                    client_ssl: true,
                    client_cert: true,
                    verified: true,
                    version: Some(b"TLSv1.3".to_vec()),
                    cn: Some(b"client".to_vec()),
                    cipher: Some(b"TLS_AES_256_GCM_SHA384".to_vec()),
                    sig_alg: Some(b"SHA256".to_vec()),
                    key_alg: Some(b"RSA2048".to_vec()),
                }),
                netns: None,
                other: vec![(0xea, vec![1, 2, 3])],
            },
            ..Header::proxied(addr("[2001:db8::7]:5000"), addr("[::1]:443"))
        };
        let bytes = header.encode(Version::V2);
        let (back, len) = done(&bytes);
        assert_eq!(len, bytes.len());
        assert_eq!(back, header);
        let json = serde_json::to_value(&back.tlvs).unwrap();
        assert_eq!(json["alpn"], "h2");
        assert_eq!(json["authority"], "echo.example");
        assert_eq!(json["ssl"]["cn"], "client");
        assert_eq!(json["ssl"]["verified"], true);
        assert_eq!(json["0xea"], "010203");
        // An ID that is not text is shown in hex.
        let binary = Tlvs {
            unique_id: Some(vec![0xff, 0x00]),
            ..Tlvs::default()
        };
        let json = serde_json::to_value(&binary).unwrap();
        assert_eq!(json["unique_id_hex"], "ff00");
    }

    #[test]
    fn a_crc32c_tlv_is_checked() {
        // RFC 3720's check value for CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let mut header = HAPROXY_V2.to_vec();
        header.extend([PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        header[15] = 12 + 7;
        let sum = crc32c(&header);
        let at = header.len() - 4;
        header[at..].copy_from_slice(&sum.to_be_bytes());
        done(&header);
        header[at] ^= 1;
        assert!(parse(&header).is_err());
    }

    #[test]
    fn unix_names_and_mixed_families() {
        let header = Header {
            addresses: Addresses::Unix {
                source: b"/run/client.sock".to_vec(),
                destination: b"@echo".to_vec(),
            },
            ..Header::unknown()
        };
        let (back, _) = done(&header.encode(Version::V2));
        assert_eq!(back.addresses, header.addresses);
        // v1 has one family per line: IPv4 beside IPv6 is written mapped.
        let mixed = Header::proxied(addr("10.0.0.1:1"), addr("[::1]:2"));
        let line = mixed.encode(Version::V1);
        assert_eq!(line, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n");
        let (back, _) = done(&mixed.encode(Version::V2));
        assert_eq!(
            back.addresses,
            Addresses::Ip {
                source: addr("[::ffff:10.0.0.1]:1"),
                destination: addr("[::1]:2"),
            }
        );
    }

    /// Reads `stream` as the server does: at each step, only as much as
    /// `parse` says still belongs to the header (through the first `\n`
    /// when it is a line).
    fn read_as_the_server_does(stream: &[u8]) -> Result<(Header, usize), ParseError> {
        let mut have = 0;
        loop {
            match parse(&stream[..have])? {
                Parsed::Done { header, len } => {
                    assert_eq!(len, have, "the header ends where reading stopped");
                    return Ok((header, len));
                }
                Parsed::More(need) => {
                    assert!(need.up_to > 0);
                    let available = &stream[have..];
                    assert!(
                        !available.is_empty(),
                        "asked for more than the stream holds"
                    );
                    let window = &available[..need.up_to.min(available.len())];
                    // A read takes at most `up_to`; a line, through its `\n`.
                    let take = if need.line {
                        window
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(window.len(), |i| i + 1)
                    } else {
                        window.len()
                    };
                    have += take;
                }
            }
        }
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    fn any_text() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
    }

    fn any_header() -> impl Strategy<Value = Header> {
        let addresses = prop_oneof![
            Just(Addresses::Unknown),
            (any_ip(), any::<u16>(), any::<u16>(), any::<bool>()).prop_map(
                |(ip, sport, dport, same)| {
                    let dst = if same {
                        ip
                    } else {
                        IpAddr::V4(Ipv4Addr::LOCALHOST)
                    };
                    let dst = match (ip, dst) {
                        (IpAddr::V6(_), IpAddr::V4(d)) => IpAddr::V6(d.to_ipv6_mapped()),
                        (_, d) => d,
                    };
                    Addresses::Ip {
                        source: SocketAddr::new(ip, sport),
                        destination: SocketAddr::new(dst, dport),
                    }
                }
            ),
            ("/[a-z/]{0,107}", "@[a-z]{1,107}").prop_map(|(source, destination)| {
                Addresses::Unix {
                    source: source.into_bytes(),
                    destination: destination.into_bytes(),
                }
            }),
        ];
        let ssl = proptest::option::of(
            (
                any::<(bool, bool, bool)>(),
                any_text(),
                any_text(),
                any_text(),
            )
                .prop_map(
                    |((client_ssl, client_cert, verified), version, cn, cipher)| Ssl {
                        client_ssl,
                        client_cert,
                        verified,
                        version,
                        cn,
                        cipher,
                        ..Ssl::default()
                    },
                ),
        );
        let tlvs = (any_text(), any_text(), any_text(), ssl, any_text()).prop_map(
            |(alpn, authority, unique_id, ssl, netns)| Tlvs {
                alpn,
                authority,
                unique_id,
                ssl,
                netns,
                other: Vec::new(),
            },
        );
        (addresses, tlvs, any::<bool>()).prop_map(|(addresses, tlvs, local)| Header {
            version: Version::V2,
            command: if local {
                Command::Local
            } else {
                Command::Proxy
            },
            addresses,
            tlvs,
        })
    }

    proptest! {
        #[test]
        fn version_2_round_trips_and_is_read_to_its_exact_end(
            header in any_header(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut stream = header.encode(Version::V2);
            let len = stream.len();
            stream.extend(&tail);
            let (back, read) = read_as_the_server_does(&stream).unwrap();
            prop_assert_eq!(read, len);
            if header.command == Command::Local {
                prop_assert_eq!(back.addresses, Addresses::Unknown);
            } else {
                prop_assert_eq!(back, header);
            }
        }

        #[test]
        fn version_1_round_trips_and_is_read_to_its_exact_end(
            header in any_header(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut stream = header.encode(Version::V1);
            let len = stream.len();
            prop_assert!(len <= V1_MAX);
            stream.extend(&tail);
            let (back, read) = read_as_the_server_does(&stream).unwrap();
            prop_assert_eq!(read, len);
            prop_assert_eq!(back.version, Version::V1);
            let want = match header.addresses {
                Addresses::Ip { .. } => header.addresses,
                _ => Addresses::Unknown,
            };
            prop_assert_eq!(back.addresses, want);
        }

        #[test]
        fn every_prefix_of_a_header_asks_for_more(header in any_header(), v1 in any::<bool>()) {
            let bytes = header.encode(if v1 { Version::V1 } else { Version::V2 });
            for cut in 0..bytes.len() {
                let parsed = parse(&bytes[..cut]);
                match parsed {
                    // Never more than the header holds, unless reading
                    // stops at the line's end anyway.
                    Ok(Parsed::More(need)) => prop_assert!(
                        need.up_to >= 1 && (need.line || cut + need.up_to <= bytes.len())
                    ),
                    other => prop_assert!(false, "prefix of {} bytes: {:?}", cut, other),
                }
            }
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            match parse(&bytes) {
                Ok(Parsed::Done { len, .. }) => prop_assert!(len <= bytes.len() && len <= MAX_LEN),
                Ok(Parsed::More(need)) => prop_assert!(need.up_to >= 1 && bytes.len() + need.up_to <= MAX_LEN),
                Err(_) => {}
            }
        }

        #[test]
        fn signature_prefixed_noise_never_panics(
            v1 in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut input = if v1 { V1_PREFIX.to_vec() } else { V2_SIGNATURE.to_vec() };
            input.extend(bytes);
            let _ = read_as_the_server_does_or_ends(&input);
        }
    }

    /// [`read_as_the_server_does`] on input that may end (or fail) first.
    fn read_as_the_server_does_or_ends(stream: &[u8]) -> Option<Result<Header, ParseError>> {
        let mut have = 0;
        loop {
            match parse(&stream[..have]) {
                Err(e) => return Some(Err(e)),
                Ok(Parsed::Done { header, len }) => {
                    assert_eq!(len, have);
                    return Some(Ok(header));
                }
                Ok(Parsed::More(need)) => {
                    let available = &stream[have..];
                    if available.is_empty() {
                        return None;
                    }
                    let window = &available[..need.up_to.min(available.len())];
                    have += if need.line {
                        window
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(window.len(), |i| i + 1)
                    } else {
                        window.len()
                    };
                }
            }
        }
    }
}
