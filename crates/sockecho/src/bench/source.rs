//! `--source ADDR|CIDR`: connections spread over source addresses.
//!
//! One source address reaches one destination through at most one local
//! port range (`net.ipv4.ip_local_port_range`, about 28,000 ports by
//! default): a bench of more connections than that to one server runs out
//! of ports (`EADDRNOTAVAIL`). Each address of a block brings a range of
//! its own: connection `i` binds the block's `i`-th usable address (round
//! robin) before it connects. On loopback every address of 127.0.0.0/8 is
//! local; elsewhere the addresses must be assigned to an interface.
//!
//! A TCP socket is bound with `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+): the
//! port is chosen at `connect`, as for an unbound socket, so it need only
//! make the connection's four-tuple unique (and ports in TIME_WAIT from an
//! earlier run are reused as `connect` would), rather than be free on that
//! address for every destination. The option is the one `unsafe` call
//! here: socket2 does not offer it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, UdpSocket};

use crate::endpoint::{Endpoint, Host};
use crate::error::{Error, Setting};
use crate::guard::Cidr;
use crate::transport::{Datagram, Stream};

/// The usable addresses of a block: all of it, but for IPv4 blocks of
/// more than two addresses the network and broadcast addresses, and for
/// IPv6 blocks of more than two the subnet-router anycast address (the
/// first), which a host should not send from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sources {
    /// The first usable address, as a number.
    first: u128,
    /// How many there are (at least one).
    count: u128,
    /// IPv4 or IPv6.
    v4: bool,
}

impl Sources {
    /// The usable addresses of `block`.
    pub(super) fn new(block: &Cidr) -> Sources {
        let (network, width, v4) = match block.network() {
            IpAddr::V4(ip) => (u128::from(u32::from(ip)), 32, true),
            IpAddr::V6(ip) => (u128::from(ip), 128, false),
        };
        let host_bits = width - u32::from(block.prefix());
        let size = if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        let (first, count) = match (size, v4) {
            (0..=2, _) => (network, size.max(1)),
            (_, true) => (network + 1, size - 2),
            (_, false) => (network + 1, size - 1),
        };
        Sources { first, count, v4 }
    }

    /// How many addresses the block offers.
    #[cfg(test)]
    pub(super) fn count(&self) -> u128 {
        self.count
    }

    /// The source address of connection `id`.
    pub(super) fn for_connection(&self, id: usize) -> IpAddr {
        let n = self.first + (id as u128 % self.count);
        if self.v4 {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(n))
        }
    }

    /// Whether these are IPv4 addresses.
    pub(super) fn is_v4(&self) -> bool {
        self.v4
    }
}

/// Checks that `block` can be the source of a bench of `endpoint`: an IP
/// endpoint (TCP, TLS, UDP) whose address, when written as a literal, is
/// of the block's family.
pub(super) fn validate(block: &Cidr, endpoint: &Endpoint) -> Result<(), Error> {
    let Some(hp) = endpoint.host_port() else {
        return Err(Error::setting(
            Setting::Source,
            format!("source addresses apply to TCP, TLS and UDP endpoints, not to {endpoint}"),
        ));
    };
    let v4 = Sources::new(block).is_v4();
    let literal = match &hp.host {
        Host::Ip(ip) => Some(ip.is_ipv4()),
        Host::Zoned(..) => Some(false),
        Host::Name(_) => None,
    };
    if literal.is_some_and(|endpoint_v4| endpoint_v4 != v4) {
        let family = |v4| if v4 { "IPv4" } else { "IPv6" };
        return Err(Error::setting(
            Setting::Source,
            format!(
                "{}/{} is {} but {endpoint} is {}",
                block.network(),
                block.prefix(),
                family(v4),
                family(!v4)
            ),
        ));
    }
    Ok(())
}

/// The addresses of `endpoint` of `from`'s family.
async fn addresses(endpoint: &Endpoint, from: IpAddr) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = endpoint
        .resolve()
        .await?
        .into_iter()
        .filter(|a| a.is_ipv4() == from.is_ipv4())
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address of the source's family (IPv4 or IPv6)",
        ));
    }
    Ok(addrs)
}

/// A TCP connection to `endpoint` from source address `from` (any port),
/// each attempt bounded by `timeout`: plain, for
/// [`Stream::after_connect`] to add what the endpoint asks for.
pub(super) async fn connect_stream(
    endpoint: &Endpoint,
    from: IpAddr,
    timeout: Duration,
) -> Result<Stream, Error> {
    let named = format!("{endpoint} from {from}");
    let fail = |e: io::Error| Error::connect(&named, e);
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addresses(endpoint, from).await.map_err(fail)? {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(fail)?;
        port_at_connect(&socket);
        socket.bind(SocketAddr::new(from, 0)).map_err(fail)?;
        match tokio::time::timeout(timeout, socket.connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).map_err(fail)?;
                return Ok(Stream::Tcp(stream));
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::ErrorKind::TimedOut.into(),
        }
    }
    Err(fail(last))
}

/// Asks the kernel to choose `socket`'s port at `connect` rather than at
/// `bind` (`IP_BIND_ADDRESS_NO_PORT`). Best effort: where the option is
/// missing, the port is chosen at `bind`, which still works within one
/// port range per address.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn port_at_connect(socket: &TcpSocket) {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is the socket's own, open for the call; the
    // option value is a c_int that lives across it, with its size given.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn port_at_connect(_: &TcpSocket) {}

/// A UDP socket bound to source address `from` (any port), connected to
/// `endpoint`.
pub(super) async fn connect_datagram(endpoint: &Endpoint, from: IpAddr) -> Result<Datagram, Error> {
    let named = format!("{endpoint} from {from}");
    let fail = |e: io::Error| Error::connect(&named, e);
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addresses(endpoint, from).await.map_err(fail)? {
        let socket = UdpSocket::bind(SocketAddr::new(from, 0))
            .await
            .map_err(fail)?;
        match socket.connect(addr).await {
            Ok(()) => return Ok(Datagram::Udp(socket)),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(text: &str) -> Sources {
        Sources::new(&text.parse().expect("a block"))
    }

    #[test]
    fn a_block_spreads_over_its_usable_addresses() {
        let s = sources("127.0.0.0/29");
        assert_eq!(s.count(), 6);
        let got: Vec<String> = (0..8).map(|i| s.for_connection(i).to_string()).collect();
        assert_eq!(
            got,
            [
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.5",
                "127.0.0.6",
                "127.0.0.1",
                "127.0.0.2"
            ]
        );
        // One address is itself; a /31 is both of its (RFC 3021).
        let one = sources("10.1.2.3");
        assert_eq!(
            (one.count(), one.for_connection(5).to_string()),
            (1, "10.1.2.3".into())
        );
        assert_eq!(sources("10.0.0.0/31").count(), 2);
        assert_eq!(sources("127.0.0.0/8").count(), (1 << 24) - 2);
        let v6 = sources("fd00::/126");
        assert_eq!(v6.count(), 3);
        assert_eq!(v6.for_connection(0).to_string(), "fd00::1");
        assert!(sources("::/0").count() > 1u128 << 100);
    }

    #[test]
    fn unix_endpoints_and_the_other_family_are_refused() {
        let block: Cidr = "127.0.0.0/24".parse().unwrap();
        let ok: Endpoint = "tcp://127.0.0.1:9".parse().unwrap();
        assert!(validate(&block, &ok).is_ok());
        let named: Endpoint = "udp://localhost:9".parse().unwrap();
        assert!(validate(&block, &named).is_ok());
        for (endpoint, says) in [
            ("unix:/tmp/x.sock", "not to unix:/tmp/x.sock"),
            (
                "tcp://[::1]:9",
                "127.0.0.0/24 is IPv4 but tcp://[::1]:9 is IPv6",
            ),
        ] {
            let endpoint: Endpoint = endpoint.parse().unwrap();
            match validate(&block, &endpoint) {
                Err(Error::Setting { setting, reason }) => {
                    assert_eq!(setting, Setting::Source);
                    assert!(reason.contains(says), "{reason}");
                }
                other => panic!("not refused: {other:?}"),
            }
        }
    }
}
