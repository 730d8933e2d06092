//! Sockets handed over instead of bound: by systemd socket activation
//! (`LISTEN_PID`/`LISTEN_FDS`, descriptors 3 and up) or by inetd/xinetd
//! (the connection, or the datagram socket, on standard input).
//!
//! Each descriptor is looked at (stream or datagram, listening or
//! connected, IP or Unix) and becomes the same [`Listener`], [`Datagram`]
//! or [`Stream`] a bound endpoint would, so the server serves it the same
//! way.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, SockRef, Type};

use super::datagram::BoundDatagram;
use super::{Datagram, Listener, Peer, Stream};
use crate::endpoint::{Endpoint, UnixAddr};
use crate::error::{Error, Setting};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A socket handed over, ready to serve.
#[derive(Debug)]
pub enum Adopted {
    /// A listening stream socket: accept on it.
    Listener(Listener),
    /// A datagram socket: answer what arrives on it.
    Datagram(BoundDatagram),
    /// One connected stream (inetd `nowait`): serve it, then exit.
    Connection(Stream, Peer, Endpoint),
}

/// The sockets systemd passed to this process, if it did: `LISTEN_PID` must
/// be our pid (the variables may have been meant for a parent) and
/// `LISTEN_FDS` their count.
pub fn systemd_sockets() -> Result<Option<Vec<OwnedFd>>, Error> {
    let (Ok(pid), Ok(count)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: RawFd = count
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("LISTEN_FDS={count} is not a number")))?;
    if !(0..=1024).contains(&count) {
        return Err(Error::Config(format!("LISTEN_FDS={count} is out of range")));
    }
    let fds = (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(|fd| {
            // SAFETY: with LISTEN_PID naming this process, systemd's
            // protocol hands us descriptors 3..3+LISTEN_FDS to own; each is
            // adopted exactly once, here, before anything else could use it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    Ok(Some(fds))
}

/// The socket inetd put on standard input (a copy of the descriptor, so
/// standard input itself stays as it is).
pub fn stdin_socket() -> Result<OwnedFd, Error> {
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("reading standard input", e))?;
    if SockRef::from(&fd).r#type().is_err() {
        return Err(Error::setting(
            Setting::Inetd,
            "standard input is not a socket (inetd or xinetd hands one over; \
             to bind an endpoint instead, leave this out)",
        ));
    }
    Ok(fd)
}

/// Looks at a handed-over socket and wraps it for serving.
pub fn adopt(fd: OwnedFd) -> Result<Adopted, Error> {
    let fail = |e: io::Error| Error::io("using a socket handed over", e);
    let sock = SockRef::from(&fd);
    let kind = sock.r#type().map_err(fail)?;
    let domain = sock.domain().map_err(fail)?;
    let local = sock.local_addr().map_err(fail)?;
    let endpoint = endpoint_of(&local, domain, kind)?;
    if kind == Type::DGRAM {
        return Datagram::adopt(fd, endpoint)
            .map(Adopted::Datagram)
            .map_err(fail);
    }
    if sock.is_listener().map_err(fail)? {
        return Listener::adopt(fd, endpoint)
            .map(Adopted::Listener)
            .map_err(fail);
    }
    let stream = Stream::adopt(fd).map_err(fail)?;
    let peer = stream.peer().map_err(fail)?;
    Ok(Adopted::Connection(stream, peer, endpoint))
}

/// The endpoint a socket serves, from its local address.
fn endpoint_of(local: &socket2::SockAddr, domain: Domain, kind: Type) -> Result<Endpoint, Error> {
    let datagram = kind == Type::DGRAM;
    if let Some(addr) = local.as_socket() {
        let text = if datagram {
            format!("udp://{addr}")
        } else {
            format!("tcp://{addr}")
        };
        return Ok(text.parse()?);
    }
    if domain == Domain::UNIX {
        let name = local
            .as_unix()
            .as_ref()
            .and_then(super::unix_addr_text)
            .unwrap_or_else(|| "@unnamed".to_owned());
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => UnixAddr::Abstract(abstract_name.to_owned()),
            None => UnixAddr::Path(name.into()),
        };
        return Ok(if datagram {
            Endpoint::UnixDgram(addr)
        } else {
            Endpoint::Unix(addr)
        });
    }
    Err(Error::Config(
        "a socket handed over is neither IP nor Unix".to_owned(),
    ))
}
