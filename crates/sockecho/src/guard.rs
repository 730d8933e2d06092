//! Who is served, and which datagrams get a reply. No I/O here: pure
//! decisions, unit- and property-tested.
//!
//! Access control (the allow and deny lists) and the per-source connection
//! limit are decided once per stream connection, right
//! after accept and before any byte is read, and once per datagram: never
//! per message of an open connection.
//!
//! An echo server answering any datagram is a reflector: a spoofed datagram
//! "from" another echo or chargen port starts a loop between two servers
//! that never ends (CVE-1999-0103), and a spoofed source aims every reply at
//! a victim. So by default no reply goes to a source port below 1024, nor to
//! the server's own address, and replies to each source address are rate
//! limited (`guard::rate`).

pub(crate) mod loops;
pub(crate) mod rate;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use crate::error::Setting;
use crate::transport::DatagramPeer;
use rate::{LogThrottle, SourceRates};

/// An address block, as the allow and deny lists take it: `10.0.0.0/8`,
/// `2001:db8::/32`, or a bare address (one host: /32 or /128).
///
/// Host bits below the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`),
/// as iptables does. An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) is
/// stored as the IPv4 block it names, so it matches the same peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The first address of the block (host bits cleared).
    network: IpAddr,
    /// Leading bits that must match: at most 32 (IPv4) or 128 (IPv6).
    prefix: u8,
}

/// Why a text is not an address block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address block '{text}': {why} (examples: 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)")]
pub struct CidrError {
    text: String,
    why: &'static str,
}

impl Cidr {
    /// The block of `addr`'s first `prefix` bits; `None` if `prefix` is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let network = match addr {
            IpAddr::V4(v4) if prefix <= 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask(prefix, 32) as u32))
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask(prefix, 128)))
            }
            _ => return None,
        };
        Some(Cidr { network, prefix })
    }

    /// The first address of the block.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// How many leading bits must match.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in the block. An IPv4-mapped IPv6 peer
    /// (`::ffff:a.b.c.d`, as a dual-stack socket reports an IPv4 client)
    /// is the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask(self.prefix, 32) as u32 == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask(self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// A `width`-bit number whose top `bits` bits are set.
fn mask(bits: u8, width: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        (u128::MAX << (128 - u32::from(bits))) >> (128 - u32::from(width))
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into the IPv4 one, so
/// rules, counts and buckets see one client as one address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let err = |why| CidrError {
            text: text.to_owned(),
            why,
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| err("not an IPv4 or IPv6 address"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            // Digits only: u8's parser would take "+8" too.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| err("prefix too long"))?
            }
            Some(_) => return Err(err("the prefix after '/' must be a number of bits")),
        };
        if prefix > width {
            return Err(err(if width == 32 {
                "an IPv4 prefix is at most /32"
            } else {
                "an IPv6 prefix is at most /128"
            }));
        }
        Cidr::new(addr, prefix).ok_or_else(|| err("prefix too long"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The allow and deny lists: deny wins over allow; with any allow rule,
/// everything not allowed is denied; with no rule at all, everyone is
/// served. Unix-domain peers have no address and are not filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl AccessList {
    /// The rules, in any order (the first match does not matter: any deny
    /// match refuses).
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>) -> AccessList {
        AccessList { allow, deny }
    }

    /// No rule: everyone is served, and nothing needs checking.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a peer at `ip` may be served.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }
}

impl AccessList {
    /// The blocks served.
    pub fn allowed(&self) -> &[Cidr] {
        &self.allow
    }

    /// The blocks refused.
    pub fn denied(&self) -> &[Cidr] {
        &self.deny
    }

    /// This list with `allow` and `deny` blocks added (from files).
    pub fn with(&self, allow: &[Cidr], deny: &[Cidr]) -> AccessList {
        AccessList {
            allow: self.allow.iter().chain(allow).copied().collect(),
            deny: self.deny.iter().chain(deny).copied().collect(),
        }
    }
}

/// The address blocks in an access file (`--allow-file`, `--deny-file`):
/// one a line, as `--allow` takes them; `#` starts a comment, blank lines
/// are skipped. The error names the line.
pub fn parse_access_file(text: &str) -> Result<Vec<Cidr>, String> {
    let mut blocks = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        blocks.push(
            line.parse::<Cidr>()
                .map_err(|e| format!("line {}: {e}", n + 1))?,
        );
    }
    Ok(blocks)
}

/// Reads an access file (see [`parse_access_file`]).
pub fn read_access_file(path: &std::path::Path) -> Result<Vec<Cidr>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::error::reason(&e)))?;
    parse_access_file(&text).map_err(|e| format!("{} {e}", path.display()))
}

/// The access list in force, replaced whole when its files are read again
/// (a reload), shared by the accept loops and the datagram loops. Accepts
/// read it under a lock (once per connection); a datagram loop keeps its
/// own copy and looks only at the generation per datagram (one atomic
/// load), taking the new list when it moved.
#[derive(Debug, Default)]
pub(crate) struct SharedAccess {
    list: RwLock<Arc<AccessList>>,
    generation: AtomicU64,
}

impl SharedAccess {
    pub(crate) fn new(list: AccessList) -> SharedAccess {
        SharedAccess {
            list: RwLock::new(Arc::new(list)),
            generation: AtomicU64::new(0),
        }
    }

    /// The list in force now.
    pub(crate) fn current(&self) -> Arc<AccessList> {
        self.list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `list` in force for every connection and datagram from now on.
    pub(crate) fn replace(&self, list: AccessList) {
        *self.list.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(list);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Why a stream peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The access list says no.
    Denied,
    /// As many connections from that address as allowed are open already.
    TooManyFromSource,
}

impl Refusal {
    /// The setting that refused.
    pub fn setting(self) -> Setting {
        match self {
            Refusal::Denied => Setting::Access,
            Refusal::TooManyFromSource => Setting::MaxConnsPerIp,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Denied => "address not allowed by the access list",
            Refusal::TooManyFromSource => "too many connections from this address",
        })
    }
}

/// Open connections per source address, shared by every listener and
/// engine thread. Behind a mutex: it is touched once per accept and once per
/// close, never per message.
type SourceCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Decides, once per stream connection and before any byte is read,
/// whether it is served: the access list, then the per-source limit.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// The access list, replaced on a reload.
    access: Arc<SharedAccess>,
    /// The per-source limit, and the counts it limits; `None`: unlimited
    /// (no lock taken at all).
    per_source: Option<(usize, SourceCounts)>,
    /// Refusals are logged at most once a second, with their count.
    refusals: Mutex<LogThrottle>,
}

impl Admission {
    /// `max_per_source`: open connections allowed from one address.
    #[cfg(test)]
    pub fn new(access: AccessList, max_per_source: Option<usize>) -> Admission {
        Admission::sharing(Arc::new(SharedAccess::new(access)), max_per_source)
    }

    /// An admission whose access list is `access`, replaced by whoever
    /// else holds it.
    pub fn sharing(access: Arc<SharedAccess>, max_per_source: Option<usize>) -> Admission {
        Admission {
            access,
            per_source: max_per_source.map(|max| (max, SourceCounts::default())),
            refusals: Mutex::new(LogThrottle::new()),
        }
    }

    /// A slot for a connection from `ip`, held until the connection ends
    /// (dropping it frees the slot), or why it is refused.
    pub fn admit(&self, ip: IpAddr) -> Result<SourceSlot, Refusal> {
        if !self.access.current().permits(ip) {
            return Err(Refusal::Denied);
        }
        let Some((max, counts)) = &self.per_source else {
            return Ok(SourceSlot(None));
        };
        let ip = canonical(ip);
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let open = map.entry(ip).or_insert(0);
        if *open >= *max {
            return Err(Refusal::TooManyFromSource);
        }
        *open += 1;
        Ok(SourceSlot(Some((counts.clone(), ip))))
    }

    /// The access list in force, for the datagram loops and reloads.
    pub fn access(&self) -> &Arc<SharedAccess> {
        &self.access
    }

    /// Counts a refusal; `Some(refusals since the last line)` when a log
    /// line is due (at most one a second, however hard peers push).
    pub fn note_refusal(&self, now: Instant) -> Option<u64> {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hit(now)
    }

    /// Addresses with a connection open, when connections are counted.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.per_source.as_ref().map_or(0, |(_, counts)| {
            counts.lock().unwrap_or_else(PoisonError::into_inner).len()
        })
    }
}

/// One connection's place in the per-source count: dropped when the
/// connection ends, it frees the place (and forgets an address with no
/// connection left, so the table holds only open connections' sources).
#[derive(Debug)]
pub(crate) struct SourceSlot(Option<(SourceCounts, IpAddr)>);

impl SourceSlot {
    /// A slot for a peer that is not counted (Unix-domain, or no limit).
    pub fn uncounted() -> SourceSlot {
        SourceSlot(None)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.0.take() {
            let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(open) = map.get_mut(&ip) {
                *open -= 1;
                if *open == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Decides whether a datagram's sender gets a reply. One per datagram
/// socket, owned by its receive loop (no lock).
#[derive(Debug)]
pub(crate) struct DatagramGuard {
    /// The server's own address, when it is an IP socket.
    local: Option<SocketAddr>,
    /// Answer sources below port 1024 too.
    allow_low_ports: bool,
    /// The access list: a refused source gets no reply.
    access: Arc<AccessList>,
    /// Where a reloaded access list comes from, and the generation
    /// `access` was taken at.
    shared: Option<(Arc<SharedAccess>, u64)>,
    /// Replies per second per source address; `None` when
    /// unlimited, or when the socket is bound to a loopback address (it
    /// hears only this host: the kernel drops datagrams that arrive from
    /// outside with a loopback source, so no remote victim can be aimed at).
    rates: Option<SourceRates>,
    /// Every UDP port this process serves: a datagram "from" one of them
    /// at one of our addresses would start a loop within the process
    /// (FreeBSD inetd's `check_loop`).
    own_ports: std::sync::Arc<[u16]>,
    /// Loops with other servers, by what comes back.
    loops: loops::LoopGuard,
    /// Reports rate-table sources forgotten for room, once a second.
    forgotten: LogThrottle,
}

impl DatagramGuard {
    /// A guard for a socket bound at `local`; `rate_per_s` 0 means no rate
    /// limit.
    pub fn new(
        local: Option<SocketAddr>,
        allow_low_ports: bool,
        access: AccessList,
        rate_per_s: u32,
    ) -> DatagramGuard {
        let reachable = local.is_some_and(|addr| !canonical(addr.ip()).is_loopback());
        DatagramGuard {
            local,
            allow_low_ports,
            access: Arc::new(access),
            shared: None,
            rates: (reachable && rate_per_s > 0).then(|| SourceRates::new(rate_per_s)),
            own_ports: local.map(|l| l.port()).into_iter().collect(),
            loops: loops::LoopGuard::new(),
            forgotten: LogThrottle::new(),
        }
    }

    /// The access list `shared` holds now and from each reload on.
    pub fn with_shared_access(mut self, shared: Arc<SharedAccess>) -> DatagramGuard {
        self.access = shared.current();
        self.shared = Some((shared.clone(), shared.generation()));
        self
    }

    /// Every UDP port this process serves, this socket's among them.
    pub fn with_own_ports(mut self, ports: std::sync::Arc<[u16]>) -> DatagramGuard {
        self.own_ports = ports;
        self
    }

    /// `Ok` if `peer` may get a reply to a datagram received at `now`, else
    /// why not. A reply granted uses up one of the source's tokens.
    #[cfg(test)]
    pub fn check(&mut self, peer: &DatagramPeer, now: Instant) -> Result<(), NoReply> {
        self.check_at(peer, None, now)
    }

    /// [`check`](DatagramGuard::check) for a datagram that arrived at
    /// `dst` (known on a wildcard-bound socket).
    pub fn check_at(
        &mut self,
        peer: &DatagramPeer,
        dst: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), NoReply> {
        // A reload replaced the list: take the new one (a load per
        // datagram, a lock per reload).
        if let Some((shared, seen)) = &mut self.shared {
            let now = shared.generation();
            if now != *seen {
                *seen = now;
                self.access = shared.current();
            }
        }
        match peer {
            DatagramPeer::Ip(addr) => {
                if !self.access.permits(addr.ip()) {
                    return Err(NoReply::Denied);
                }
                if addr.port() == 0 {
                    return Err(NoReply::PortZero);
                }
                if addr.port() < 1024 && !self.allow_low_ports {
                    return Err(NoReply::LowPort);
                }
                let ip = canonical(addr.ip());
                let ours = ip.is_loopback()
                    || dst.is_some_and(|dst| canonical(dst) == ip)
                    || self.local.is_some_and(|l| canonical(l.ip()) == ip);
                if ours && self.own_ports.contains(&addr.port()) {
                    return Err(NoReply::Itself);
                }
                // Last, so refused sources use no bucket and no table room.
                if let Some(rates) = &mut self.rates {
                    let allowed = rates.allow(addr.ip(), now);
                    for _ in 0..rates.take_forgotten() {
                        if let Some(forgotten) = self.forgotten.hit(now) {
                            tracing::warn!(
                                forgotten,
                                max = rate::MAX_SOURCES,
                                "reply-rate table full: sources forgotten (each starts again with a full bucket)"
                            );
                        }
                    }
                    if !allowed {
                        return Err(NoReply::Rate);
                    }
                }
                Ok(())
            }
            DatagramPeer::Unix { addr, .. } => {
                if crate::transport::unix_addr_text(addr).is_none() {
                    return Err(NoReply::Unnamed);
                }
                Ok(())
            }
        }
    }
}

/// Why a datagram gets no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoReply {
    /// The access list says no.
    Denied,
    /// Source port 0: nothing can be sent there.
    PortZero,
    /// A source port below 1024: another echo or chargen port, perhaps.
    LowPort,
    /// One of this process's own ports at one of its addresses: a reply
    /// would come straight back.
    Itself,
    /// An echo loop with another server (see [`loops`]).
    Loop,
    /// The source's reply rate is used up.
    Rate,
    /// An unnamed Unix sender: there is no address to answer.
    Unnamed,
}

impl DatagramGuard {
    /// What the loop guard says of a datagram from `peer` whose bytes have
    /// fingerprint `bytes` ([`loops::fingerprint`]), which reached the
    /// socket at `arrived` and is handled at `now` (nanoseconds of one
    /// clock).
    pub fn reflection(
        &mut self,
        peer: SocketAddr,
        bytes: u64,
        arrived: u64,
        now: u64,
    ) -> loops::Verdict {
        self.loops.check(peer, bytes, arrived, now)
    }

    /// A reply to `peer` with fingerprint `bytes` leaves at `at`.
    pub fn replied(&mut self, peer: SocketAddr, bytes: u64, at: u64) {
        self.loops.replied(peer, bytes, at);
    }
}

impl NoReply {
    /// The setting that would let the reply through, if one would.
    pub fn setting(self) -> Option<Setting> {
        match self {
            NoReply::Denied => Some(Setting::Access),
            NoReply::LowPort => Some(Setting::AllowLowPorts),
            NoReply::Rate => Some(Setting::UdpRate),
            NoReply::PortZero | NoReply::Itself | NoReply::Loop | NoReply::Unnamed => None,
        }
    }
}

impl fmt::Display for NoReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoReply::Denied => "source not allowed by the access list",
            NoReply::PortZero => "source port 0",
            NoReply::LowPort => "source port below 1024",
            NoReply::Itself => "source is one of this server's own ports",
            NoReply::Loop => "echo loop with another server (CVE-2024-2169)",
            NoReply::Rate => "reply rate limit reached for this source",
            NoReply::Unnamed => "unnamed Unix sender cannot be answered",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn ip(text: &str) -> DatagramPeer {
        DatagramPeer::Ip(text.parse().unwrap())
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn guard(local: &str, low: bool) -> DatagramGuard {
        DatagramGuard::new(Some(local.parse().unwrap()), low, AccessList::default(), 0)
    }

    #[test]
    fn low_ports_need_permission() {
        let now = Instant::now();
        let mut g = guard("127.0.0.1:7", false);
        assert!(g.check(&ip("127.0.0.1:19"), now).is_err());
        assert!(g.check(&ip("127.0.0.1:0"), now).is_err());
        assert!(g.check(&ip("127.0.0.1:1023"), now).is_err());
        assert!(g.check(&ip("127.0.0.1:1024"), now).is_ok());
        let mut open = DatagramGuard::new(None, true, AccessList::default(), 0);
        assert!(open.check(&ip("127.0.0.1:19"), now).is_ok());
    }

    #[test]
    fn never_answers_its_own_ports() {
        let now = Instant::now();
        let mut g = guard("127.0.0.1:5000", true);
        assert!(g.check(&ip("127.0.0.1:5000"), now).is_err());
        // Another loopback address on our port: another server, or us.
        assert!(g.check(&ip("127.0.0.2:5000"), now).is_err());
        assert!(g.check(&ip("127.0.0.2:5001"), now).is_ok());
        let mut wildcard = guard("0.0.0.0:5000", true);
        assert!(wildcard.check(&ip("127.0.0.1:5000"), now).is_err());
        assert!(wildcard.check(&ip("10.1.2.3:5000"), now).is_ok());
        // Arrived at 10.1.2.3: that is one of our addresses.
        let to_us = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            wildcard.check_at(&ip("10.1.2.3:5000"), to_us, now),
            Err(NoReply::Itself)
        );
        // Every port of the process counts, not only this socket's.
        let mut all = guard("0.0.0.0:5000", true).with_own_ports([5000, 6000].into());
        assert!(all.check(&ip("127.0.0.9:6000"), now).is_err());
        assert!(all.check(&ip("127.0.0.9:6001"), now).is_ok());
    }

    #[test]
    fn datagram_access_and_rate() {
        let now = Instant::now();
        let access = AccessList::new(vec![cidr("10.0.0.0/8")], vec![cidr("10.0.0.9")]);
        let mut g = DatagramGuard::new(Some("0.0.0.0:7000".parse().unwrap()), false, access, 3);
        assert!(g.check(&ip("192.0.2.1:4000"), now).is_err(), "not allowed");
        assert!(g.check(&ip("10.0.0.9:4000"), now).is_err(), "denied");
        for _ in 0..3 {
            assert!(g.check(&ip("10.0.0.1:4000"), now).is_ok());
        }
        let err = g.check(&ip("10.0.0.1:4001"), now).unwrap_err();
        assert!(err.to_string().contains("rate limit"), "{err}");
        assert!(g.check(&ip("10.0.0.2:4000"), now).is_ok(), "per source");
        assert!(
            g.check(&ip("10.0.0.1:4000"), now + Duration::from_millis(400))
                .is_ok(),
            "refilled"
        );
        // Bound to loopback: only this host can reach it, no rate limit.
        let mut local = DatagramGuard::new(
            Some("127.0.0.1:7000".parse().unwrap()),
            false,
            AccessList::default(),
            1,
        );
        for _ in 0..100 {
            assert!(local.check(&ip("127.0.0.1:4000"), now).is_ok());
        }
    }

    #[test]
    fn cidr_parses_blocks_and_bare_addresses() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0.0/8/8",
            "[::1]/128",
            "host.example",
            "10.0.0.0/1000",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains("examples:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn cidr_matches_its_block_only() {
        let net = cidr("192.168.0.0/16");
        assert!(net.contains(addr("192.168.0.1")));
        assert!(net.contains(addr("192.168.255.255")));
        assert!(!net.contains(addr("192.169.0.0")));
        assert!(!net.contains(addr("::1")));
        // A dual-stack socket reports IPv4 clients as mapped addresses.
        assert!(net.contains(addr("::ffff:192.168.3.4")));
        assert!(cidr("0.0.0.0/0").contains(addr("::ffff:1.2.3.4")));
        assert!(!cidr("0.0.0.0/0").contains(addr("2001:db8::1")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(addr("2001:db8:ffff::1")));
        assert!(!v6.contains(addr("2001:db9::")));
        assert!(!v6.contains(addr("10.0.0.1")));
    }

    #[test]
    fn deny_wins_and_allow_closes_the_rest() {
        let open = AccessList::default();
        assert!(open.is_open() && open.permits(addr("203.0.113.1")));
        let deny_only = AccessList::new(vec![], vec![cidr("10.0.0.0/8")]);
        assert!(!deny_only.permits(addr("10.2.3.4")));
        assert!(deny_only.permits(addr("11.0.0.1")));
        let both = AccessList::new(
            vec![cidr("10.0.0.0/8"), cidr("::1")],
            vec![cidr("10.9.0.0/16")],
        );
        assert!(both.permits(addr("10.1.0.1")));
        assert!(both.permits(addr("::1")));
        assert!(!both.permits(addr("10.9.1.1")), "deny wins");
        assert!(!both.permits(addr("::ffff:10.9.1.1")), "mapped, denied");
        assert!(!both.permits(addr("192.0.2.1")), "not allowed");
    }

    #[test]
    fn per_source_slots_are_freed_on_drop() {
        let admission = Admission::new(AccessList::default(), Some(2));
        let a = admission.admit(addr("10.0.0.1")).unwrap();
        let b = admission.admit(addr("::ffff:10.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(addr("10.0.0.1")).unwrap_err(),
            Refusal::TooManyFromSource,
            "the mapped form counts as the same source"
        );
        let other = admission.admit(addr("10.0.0.2")).unwrap();
        drop(a);
        let c = admission.admit(addr("10.0.0.1")).unwrap();
        drop((b, c, other));
        assert_eq!(admission.sources(), 0, "no open connection, no entry");
        let denied = Admission::new(AccessList::new(vec![], vec![cidr("10.0.0.1")]), None);
        assert_eq!(denied.admit(addr("10.0.0.1")).unwrap_err(), Refusal::Denied);
        assert!(denied.admit(addr("10.0.0.2")).is_ok());
    }

    #[test]
    fn refusals_are_logged_once_a_second() {
        let admission = Admission::default();
        let t0 = Instant::now();
        assert_eq!(admission.note_refusal(t0), Some(1));
        for i in 1..100 {
            assert_eq!(admission.note_refusal(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(
            admission.note_refusal(t0 + Duration::from_secs(1)),
            Some(100)
        );
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        ]
    }

    proptest! {
        /// The text form round-trips, and a bare address is its own block.
        #[test]
        fn cidr_text_round_trips(ip in any_ip(), prefix in 0u8..=128) {
            let width = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = prefix % (width + 1);
            let block = Cidr::new(ip, prefix).unwrap();
            prop_assert_eq!(block.to_string().parse::<Cidr>().unwrap(), block);
            prop_assert!(block.contains(ip));
            prop_assert!(ip.to_string().parse::<Cidr>().unwrap().contains(ip));
        }

        /// `contains` agrees with a bit-by-bit comparison of the prefix.
        #[test]
        fn cidr_contains_means_same_leading_bits(a in any::<u128>(), b in any::<u128>(), prefix in 0u8..=128, v4 in any::<bool>()) {
            let (net, peer, width) = if v4 {
                (IpAddr::V4(Ipv4Addr::from(a as u32)), IpAddr::V4(Ipv4Addr::from(b as u32)), 32u32)
            } else {
                (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)), 128)
            };
            // Mapped addresses are IPv4 ones in disguise: skip them here.
            prop_assume!(canonical(net) == net && canonical(peer) == peer);
            let prefix = u32::from(prefix) % (width + 1);
            let bits = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                IpAddr::V6(v6) => u128::from(v6),
            };
            let same = (0..prefix).all(|i| (bits(net) >> (127 - i)) & 1 == (bits(peer) >> (127 - i)) & 1);
            let block = Cidr::new(net, prefix as u8).unwrap();
            prop_assert_eq!(block.contains(peer), same);
        }

        /// Any IPv4 rule treats a peer and its mapped IPv6 form alike.
        #[test]
        fn mapped_peers_match_ipv4_rules(net in any::<u32>(), peer in any::<u32>(), prefix in 0u8..=32) {
            let block = Cidr::new(IpAddr::V4(Ipv4Addr::from(net)), prefix).unwrap();
            let v4 = Ipv4Addr::from(peer);
            prop_assert_eq!(block.contains(IpAddr::V4(v4)), block.contains(IpAddr::V6(v4.to_ipv6_mapped())));
        }

        /// Deny always wins; with allow rules, an unmatched peer is refused.
        #[test]
        fn access_list_semantics(peer in any_ip(), allow in proptest::collection::vec((any_ip(), 0u8..=128), 0..4), deny in proptest::collection::vec((any_ip(), 0u8..=128), 0..4)) {
            let blocks = |rules: Vec<(IpAddr, u8)>| -> Vec<Cidr> {
                rules.into_iter().map(|(ip, p)| Cidr::new(ip, p % if ip.is_ipv4() { 33 } else { 129 }).unwrap()).collect()
            };
            let (allow, deny) = (blocks(allow), blocks(deny));
            let denied = deny.iter().any(|c| c.contains(peer));
            let allowed = allow.is_empty() || allow.iter().any(|c| c.contains(peer));
            let list = AccessList::new(allow, deny);
            prop_assert_eq!(list.permits(peer), allowed && !denied);
        }
    }
}
