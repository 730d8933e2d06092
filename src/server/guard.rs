//! Which datagrams get a reply. No I/O here: pure decisions, unit-tested.
//!
//! An echo server answering any datagram is a reflector: a spoofed datagram
//! "from" another echo or chargen port starts a loop between two servers
//! that never ends (CVE-1999-0103). So by default no reply goes to a source
//! port below 1024, nor to the server's own address.

use std::net::SocketAddr;

use crate::transport::DatagramPeer;

/// Decides whether a datagram's sender gets a reply.
#[derive(Debug, Clone)]
pub struct DatagramGuard {
    /// The server's own address, when it is an IP socket.
    local: Option<SocketAddr>,
    /// `--allow-low-ports`: answer sources below port 1024 too.
    allow_low_ports: bool,
}

impl DatagramGuard {
    /// A guard for a socket bound at `local`.
    pub fn new(local: Option<SocketAddr>, allow_low_ports: bool) -> DatagramGuard {
        DatagramGuard {
            local,
            allow_low_ports,
        }
    }

    /// `Ok` if `peer` may get a reply, else why not.
    pub fn check(&self, peer: &DatagramPeer) -> Result<(), &'static str> {
        match peer {
            DatagramPeer::Ip(addr) => {
                if addr.port() == 0 {
                    return Err("source port 0");
                }
                if addr.port() < 1024 && !self.allow_low_ports {
                    return Err("source port below 1024 (see --allow-low-ports)");
                }
                if let Some(local) = self.local {
                    let same_port = addr.port() == local.port();
                    if same_port
                        && (local.ip() == addr.ip()
                            || (local.ip().is_unspecified() && addr.ip().is_loopback()))
                    {
                        return Err("source is this server's own address");
                    }
                }
                Ok(())
            }
            DatagramPeer::Unix { addr, .. } => {
                if crate::transport::unix_addr_text(addr).is_none() {
                    return Err("unnamed Unix sender cannot be answered");
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> DatagramPeer {
        DatagramPeer::Ip(text.parse().unwrap())
    }

    #[test]
    fn low_ports_need_permission() {
        let guard = DatagramGuard::new(Some("127.0.0.1:7".parse().unwrap()), false);
        assert!(guard.check(&ip("127.0.0.1:19")).is_err());
        assert!(guard.check(&ip("127.0.0.1:0")).is_err());
        assert!(guard.check(&ip("127.0.0.1:1023")).is_err());
        assert!(guard.check(&ip("127.0.0.1:1024")).is_ok());
        let open = DatagramGuard::new(None, true);
        assert!(open.check(&ip("127.0.0.1:19")).is_ok());
    }

    #[test]
    fn never_answers_itself() {
        let guard = DatagramGuard::new(Some("127.0.0.1:5000".parse().unwrap()), true);
        assert!(guard.check(&ip("127.0.0.1:5000")).is_err());
        assert!(guard.check(&ip("127.0.0.2:5000")).is_ok());
        let wildcard = DatagramGuard::new(Some("0.0.0.0:5000".parse().unwrap()), true);
        assert!(wildcard.check(&ip("127.0.0.1:5000")).is_err());
        assert!(wildcard.check(&ip("10.1.2.3:5000")).is_ok());
    }
}
