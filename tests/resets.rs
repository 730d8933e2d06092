//! Reliability promise 4: every accepted byte is echoed or the connection is
//! reported failed. Peers that reset (SO_LINGER 0), vanish mid-write or stop
//! reading end only their own connection: a `closed` line with the reason,
//! nothing on standard error at the default log level, and the other
//! clients keep echoing. Both TCP engines.

use crate::common;

use std::io::Write;
use std::time::Duration;

use crate::common::{connect, random_bytes, serve};

const ENGINES: [&[&str]; 2] = [&[], &["--epoll"]];

/// The `closed` line for the next connection that ends.
fn next_closed(server: &common::Server) -> String {
    (0..8)
        .map(|_| server.line())
        .find(|l| l.starts_with("closed "))
        .expect("a closed line")
}

#[test]
fn a_reset_mid_echo_ends_only_that_connection() {
    for engine in ENGINES {
        // JSON events: the closed event carries why it ended.
        let opts = [&["--json"], engine].concat();
        let args = [&["serve", "tcp://127.0.0.1:0"], &opts[..]].concat();
        let server = common::Proc::sockecho(&args);
        let listen: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
        let endpoint = listen["endpoint"].as_str().unwrap().to_owned();
        let mut bystander = connect(&endpoint);
        assert_eq!(bystander.echo(b"before"), b"before");
        assert!(server.line().contains("\"connection\""));

        // Send a lot without reading, then reset: the server is mid-echo,
        // its writes blocked on our full window.
        let victim = std::net::TcpStream::connect(common::ip_addr_of(&endpoint)).unwrap();
        victim
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let data = random_bytes(4 << 20, 9);
        let mut sent = 0;
        for chunk in data.chunks(64 * 1024) {
            match (&victim).write(chunk) {
                Ok(n) => sent += n,
                Err(_) => break, // the window is full: the server is stalled on us
            }
        }
        assert!(sent > 0);
        socket2::SockRef::from(&victim)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(victim); // RST
        let connected = server.line();
        assert!(
            connected.contains("\"connection\""),
            "{engine:?}: {connected}"
        );
        let closed: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
        assert_eq!(closed["event"], "closed", "{engine:?}: {closed}");
        let reason = closed["reason"].as_str().unwrap_or_default();
        assert!(
            reason == "connection reset by peer" || reason == "broken pipe",
            "{engine:?}: the failure is reported: {closed}"
        );
        assert_eq!(bystander.echo(b"after"), b"after", "{engine:?}");
        assert!(
            server.stderr().is_empty(),
            "{engine:?}: logged at default level: {}",
            server.stderr()
        );
    }
}

#[test]
fn a_peer_that_closes_with_echoes_unread_is_reported_not_fatal() {
    for engine in ENGINES {
        let server = serve(&["tcp://127.0.0.1:0"], engine);
        for round in 0..20 {
            let mut conn = connect(server.endpoint());
            conn.write_all(&random_bytes(256 * 1024, round)).unwrap();
            drop(conn); // closed with the echo unread: the kernel resets
        }
        let mut last = connect(server.endpoint());
        assert_eq!(last.echo(b"still serving"), b"still serving", "{engine:?}");
        last.shutdown_write();
        assert_eq!(last.read_to_close(), b"");
        assert!(
            server.stderr().is_empty(),
            "{engine:?}: {}",
            server.stderr()
        );
    }
}

#[test]
fn a_finished_echo_is_reported_without_a_reason() {
    for engine in ENGINES {
        let server = serve(&["tcp://127.0.0.1:0"], engine);
        let data = random_bytes(300_000, 4);
        let back = common::echo_stream(connect(server.endpoint()), &data);
        assert!(back == data, "{engine:?}");
        let closed = next_closed(&server);
        assert!(
            closed.ends_with("in=300000 out=300000"),
            "{engine:?}: {closed}"
        );
    }
}
