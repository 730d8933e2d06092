//! `sockecho serve` through real sockets: every endpoint form echoes
//! byte-exactly, several endpoints from one process, concurrency, the
//! lesson replay, the event lines, signals and limits.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;

// --- every transport echoes ------------------------------------------------

#[test]
fn tcp_ipv4_echoes_1mib_with_half_close() {
    let server = serve(&["tcp://127.0.0.1:0"], &[]);
    assert!(server.endpoint().starts_with("tcp://127.0.0.1:"));
    assert_ne!(server.port(), 0, "listen ok shows the real port");
    assert_stream_echoes(server.endpoint(), 1);
}

#[test]
fn tcp_ipv6_echoes_1mib_with_half_close() {
    if !has_ipv6() {
        return;
    }
    let server = serve(&["tcp://[::1]:0"], &[]);
    assert!(server.endpoint().starts_with("tcp://[::1]:"));
    assert_stream_echoes(server.endpoint(), 2);
}

#[test]
fn host_name_endpoint_echoes() {
    let server = serve(&["localhost:0"], &[]);
    // The printed endpoint is the address really bound, not the name.
    let addr = ip_addr_of(server.endpoint());
    assert!(addr.ip().is_loopback(), "{}", server.endpoint());
    assert_ne!(addr.port(), 0);
    assert_stream_echoes(server.endpoint(), 3);
}

#[test]
fn unix_path_echoes_1mib_with_half_close() {
    let path = TempPath::new("stream.sock");
    let server = serve(&[&format!("unix:{}", path.text())], &[]);
    assert_eq!(server.endpoint(), format!("unix:{}", path.text()));
    assert_stream_echoes(server.endpoint(), 4);
}

#[test]
fn unix_abstract_echoes_1mib_with_half_close() {
    let endpoint = format!("unix:@{}", unique("abstract"));
    let server = serve(&[&endpoint], &[]);
    assert_eq!(server.endpoint(), endpoint);
    assert_stream_echoes(server.endpoint(), 5);
}

#[test]
fn udp_ipv4_datagrams_echo_exactly() {
    let server = serve(&["udp://127.0.0.1:0"], &[]);
    assert!(server.endpoint().starts_with("udp://127.0.0.1:"));
    assert_datagrams_echo(server.endpoint());
}

#[test]
fn udp_ipv6_datagrams_echo_exactly() {
    if !has_ipv6() {
        return;
    }
    let server = serve(&["udp://[::1]:0"], &[]);
    assert!(server.endpoint().starts_with("udp://[::1]:"));
    assert_datagrams_echo(server.endpoint());
}

#[test]
fn unix_dgram_path_datagrams_echo_exactly() {
    let path = TempPath::new("server.dgram");
    let server = serve(&[&format!("unix-dgram:{}", path.text())], &[]);
    assert_eq!(server.endpoint(), format!("unix-dgram:{}", path.text()));
    assert_datagrams_echo(server.endpoint());
}

#[test]
fn unix_dgram_abstract_datagrams_echo_exactly() {
    let endpoint = format!("unix-dgram:@{}", unique("dgram"));
    let server = serve(&[&endpoint], &[]);
    assert_eq!(server.endpoint(), endpoint);
    assert_datagrams_echo(server.endpoint());
}

#[test]
fn several_endpoints_from_one_process_in_order() {
    let path = TempPath::new("multi.sock");
    let unix = format!("unix:{}", path.text());
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0", &unix], &[]);
    let [tcp, udp, got_unix] = &server.endpoints[..] else {
        unreachable!()
    };
    assert!(tcp.starts_with("tcp://127.0.0.1:"), "{tcp}");
    assert!(udp.starts_with("udp://127.0.0.1:"), "{udp}");
    assert_eq!(got_unix, &unix);
    assert_stream_echoes(tcp, 6);
    assert_datagrams_echo(udp);
    assert_stream_echoes(got_unix, 7);
}

// --- concurrency -----------------------------------------------------------

#[test]
fn fifty_clients_are_served_at_once() {
    const CLIENTS: usize = 50;
    let server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let mut conns: Vec<Conn> = (0..CLIENTS).map(|_| connect(server.endpoint())).collect();
    // All fifty are open; the last one connected is answered first, which
    // a server handling one connection at a time could not do.
    for (i, conn) in conns.iter_mut().enumerate().rev() {
        let hello = format!("hello from {i}");
        assert_eq!(conn.echo(hello.as_bytes()), hello.as_bytes());
    }
    std::thread::scope(|scope| {
        for (i, conn) in conns.into_iter().enumerate() {
            scope.spawn(move || {
                let data = random_bytes(64 * 1024, 100 + i as u64);
                let back = echo_stream(conn, &data);
                assert_bytes_eq(&back, &data, &format!("client {i}"));
            });
        }
    });
}

#[test]
fn silent_or_stalled_clients_do_not_delay_others() {
    let server = serve(&["tcp://127.0.0.1:0"], &[]);
    let _silent = connect(server.endpoint());
    assert!(server.line().starts_with("connection from "));

    // A client that sends without ever reading fills the buffers and
    // stalls only itself.
    let stalled = connect(server.endpoint());
    assert!(server.line().starts_with("connection from "));
    stalled.set_nonblocking(true);
    let mut writer = stalled.try_clone();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    for _ in 0..4096 {
        match writer.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("stalled client write: {e}"),
        }
    }
    assert!(sent > 0);

    let started = Instant::now();
    let mut other = connect(server.endpoint());
    other.set_timeouts(Duration::from_secs(5));
    assert_eq!(other.echo(b"still served"), b"still served");
    assert!(started.elapsed() < Duration::from_secs(5));
}

// --- the lesson and the event lines ---------------------------------------

#[test]
fn lesson_replay_with_connect() {
    let mut server = serve(
        &["tcp://127.0.0.1:0"],
        &["--once", "--greeting", "Connection success"],
    );
    let endpoint = server.endpoint().to_owned();
    assert!(endpoint.starts_with("tcp://127.0.0.1:"), "{endpoint}");

    let client = sockecho(&["connect", &endpoint], b"");
    assert_eq!(client.code(), 0, "connect failed: {}", client.stderr);
    assert_eq!(client.stdout_text(), "Connection success");

    let exited = server.wait_exit();
    assert!(exited.status.success(), "serve --once: {}", exited.stderr);
    let [connection, closed] = &exited.rest[..] else {
        panic!(
            "expected connection and closed lines, got {:?}",
            exited.rest
        )
    };
    let peer = connection
        .strip_prefix("connection from ")
        .and_then(|rest| rest.strip_suffix(&format!(" on {endpoint}")))
        .unwrap_or_else(|| panic!("bad connection line {connection:?}"));
    let peer_addr = ip_addr_of(&format!("tcp://{peer}"));
    assert_eq!(peer_addr.ip().to_string(), "127.0.0.1");
    assert_eq!(closed, &format!("closed {peer} in=0 out=18"));
}

#[test]
fn once_on_udp_exits_after_one_datagram() {
    let mut server = serve(&["udp://127.0.0.1:0"], &["--once"]);
    let client = connect_dgram(server.endpoint());
    assert_eq!(client.exchange(b"only one"), b"only one");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "serve --once: {}", exited.stderr);
}

#[test]
fn closed_line_counts_bytes_and_greeting() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--greeting", "hello "]);
    let conn = connect(server.endpoint());
    let me = conn.local_addr();
    let data = random_bytes(1000, 8);
    let back = echo_stream(conn, &data);
    assert_eq!(&back[..6], b"hello ");
    assert_bytes_eq(&back[6..], &data, "echo after the greeting");
    assert_eq!(
        server.line(),
        format!("connection from {me} on {}", server.endpoint())
    );
    assert_eq!(server.line(), format!("closed {me} in=1000 out=1006"));
}

#[test]
fn quiet_keeps_listen_ok_and_drops_connection_lines() {
    let mut server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let back = echo_stream(connect(server.endpoint()), b"quiet please");
    assert_eq!(back, b"quiet please");
    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    assert!(exited.rest.is_empty(), "-q printed {:?}", exited.rest);
}

#[test]
fn json_events_carry_the_contract_keys() {
    let server = Proc::sockecho(&["serve", "tcp://127.0.0.1:0", "--json", "--greeting", "hi"]);
    let json = |line: String| -> serde_json::Value {
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    };
    let listen = json(server.line());
    assert_eq!(listen["event"], "listen");
    let endpoint = listen["endpoint"].as_str().expect("endpoint").to_owned();
    assert!(endpoint.starts_with("tcp://127.0.0.1:"), "{endpoint}");

    let conn = connect(&endpoint);
    let me = conn.local_addr();
    assert_eq!(echo_stream(conn, b"abc"), b"hiabc");

    let connection = json(server.line());
    assert_eq!(connection["event"], "connection");
    assert_eq!(connection["endpoint"], endpoint.as_str());
    assert_eq!(connection["peer"], me.as_str());
    let closed = json(server.line());
    assert_eq!(closed["event"], "closed");
    assert_eq!(closed["endpoint"], endpoint.as_str());
    assert_eq!(closed["peer"], me.as_str());
    assert_eq!(closed["bytes_in"], 3);
    assert_eq!(closed["bytes_out"], 5);
}

// --- signals and limits ----------------------------------------------------

fn idle_server_exits_zero_on(signal: &str) {
    let mut server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &[]);
    server.signal(signal);
    let exited = server.wait_exit();
    assert!(
        exited.status.success(),
        "SIG{signal}: {:?} {}",
        exited.status,
        exited.stderr
    );
}

#[test]
fn sigterm_exits_zero() {
    idle_server_exits_zero_on("TERM");
}

#[test]
fn sigint_exits_zero() {
    idle_server_exits_zero_on("INT");
}

#[test]
fn sighup_without_files_to_reload_drains_and_removes_the_socket_file_like_sigterm() {
    // The terminal closing sends SIGHUP: no kill without a drain, no
    // socket file left behind. With nothing to read again (no
    // --allow-file, --deny-file or TLS files) that is all SIGHUP can mean.
    idle_server_exits_zero_on("HUP");
    let path = TempPath::new("hup.sock");
    let mut server = serve(&[&format!("unix:{}", path.text())], &[]);
    let mut conn = connect(server.endpoint());
    assert_eq!(conn.echo(b"before\n"), b"before\n");
    assert!(server.line().starts_with("connection from "));
    server.signal("HUP");
    // Draining: the open connection still echoes, then ends cleanly.
    assert_eq!(conn.echo(b"during\n"), b"during\n");
    conn.shutdown_write();
    assert!(conn.read_to_close().is_empty());
    let exited = server.wait_exit();
    assert!(
        exited.status.success(),
        "SIGHUP: {:?} {}",
        exited.status,
        exited.stderr
    );
    assert!(
        exited.rest.iter().any(|l| l.starts_with("closed ")),
        "{:?}",
        exited.rest
    );
    assert!(
        !path.path().exists(),
        "the socket file is left behind after SIGHUP"
    );
}

#[test]
fn drain_timeout_closes_open_connections_after_a_signal() {
    let mut server = serve(&["tcp://127.0.0.1:0"], &["--drain-timeout", "200ms"]);
    let endpoint = server.endpoint().to_owned();
    let mut open = connect(&endpoint);
    assert_eq!(open.echo(b"before"), b"before");

    let signalled = Instant::now();
    server.signal("TERM");
    wait_until_refused(&endpoint);
    // The default drain is 5 s: closing well before proves the flag counts.
    assert_eq!(open.read_to_close(), b"", "no bytes after the drain");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "connection closed after {:?}, drain timeout was 200ms",
        signalled.elapsed()
    );
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    assert!(
        exited.rest.iter().any(|l| l.starts_with("closed ")),
        "the drained connection's closed line: {:?}",
        exited.rest
    );
}

#[test]
fn connection_finishing_within_the_drain_keeps_its_echo() {
    let mut server = serve(&["tcp://127.0.0.1:0"], &["--drain-timeout", "30s"]);
    let endpoint = server.endpoint().to_owned();
    let mut open = connect(&endpoint);
    assert_eq!(open.echo(b"before"), b"before");

    server.signal("TERM");
    wait_until_refused(&endpoint);
    assert_eq!(open.echo(b"during the drain"), b"during the drain");
    open.shutdown_write();
    assert_eq!(open.read_to_close(), b"");
    // Exits as soon as the last connection ends, not after 30 s.
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
}

#[test]
fn max_conns_closes_the_extra_connection_at_once() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--max-conns", "2"]);
    let endpoint = server.endpoint().to_owned();
    let mut first = connect(&endpoint);
    let mut second = connect(&endpoint);
    assert_eq!(first.echo(b"1"), b"1");
    assert_eq!(second.echo(b"2"), b"2");

    let mut third = connect(&endpoint);
    third.set_timeouts(Duration::from_secs(5));
    // The refused connection reads the end of the stream (or a reset when
    // our byte arrived after the close), never an echo and never a hang.
    let _ = third.write_all(b"3");
    assert_eq!(third.read_to_close(), b"", "the third connection echoed");

    assert_eq!(first.echo(b"still 1"), b"still 1");
    assert_eq!(second.echo(b"still 2"), b"still 2");

    // A freed slot serves the next client. The slot is released just
    // after the `closed` line is written, so a client racing it may be
    // refused a few times more (milliseconds on a loaded machine): polled
    // with a deadline, not a sleep.
    first.shutdown_write();
    assert_eq!(first.read_to_close(), b"");
    let closed = (0..10)
        .map(|_| server.line())
        .find(|line| line.starts_with("closed "));
    assert!(closed.is_some(), "no closed line for the first connection");
    let deadline = Instant::now() + WAIT;
    let served = std::iter::from_fn(|| {
        (Instant::now() < deadline).then(|| {
            let mut fourth = connect(&endpoint);
            let mut back = [0u8; 1];
            let ok = fourth.write_all(b"4").is_ok()
                && fourth.read_exact(&mut back).is_ok()
                && back == *b"4";
            if !ok {
                std::thread::sleep(Duration::from_millis(5));
            }
            ok
        })
    })
    .any(|ok| ok);
    assert!(served, "a freed slot does not serve a new client");
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--idle-timeout", "300ms"]);
    let mut silent = connect(server.endpoint());
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = match silent.read(&mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
        Err(e) => panic!("a silent connection was not closed: {e}"),
    };
    assert_eq!(n, 0, "expected the end of the stream");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "closed after {waited:?}, idle timeout was 300ms"
    );
}

/// Refusals are counted by every engine thread into one throttled warning
/// (at most one line a second for the whole server), not a line a second
/// per thread, each with a count of its own.
#[test]
fn refusals_from_every_engine_thread_share_one_throttled_warning() {
    for engine in [&["--threads", "4"][..], &["--epoll", "--threads", "4"]] {
        let options = [&["-q", "--max-conns", "1"][..], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &options);
        let mut held = connect(server.endpoint());
        assert_eq!(held.echo(b"held\n"), b"held\n");
        let refused = 40;
        let started = Instant::now();
        for _ in 0..refused {
            let mut conn = connect(server.endpoint());
            conn.set_timeouts(WAIT);
            assert!(conn.read_to_close().is_empty(), "{engine:?}");
        }
        let window = started.elapsed();
        let deadline = Instant::now() + WAIT;
        while !server.stderr().contains("connection refused") {
            assert!(Instant::now() < deadline, "{engine:?}: no warning");
            std::thread::sleep(Duration::from_millis(5));
        }
        let stderr = server.stderr();
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("connection refused"))
            .collect();
        // A line at the first refusal, then at most one a second.
        assert!(
            lines.len() as u64 <= 1 + window.as_secs(),
            "{engine:?}: {} lines in {window:?}: {lines:#?}",
            lines.len()
        );
        assert!(lines[0].contains("refused=1"), "{engine:?}: {}", lines[0]);
    }
}

/// An engine that cannot start (here: io_uring threads that find no
/// descriptor for their rings) is one error line and exit 1, with no
/// `listen ok` before it: a script that waits for that line must not
/// take a server that is about to fail for one that serves.
#[test]
fn no_listen_ok_when_the_engine_cannot_start() {
    let Ok(ring) = io_uring::IoUring::new(8) else {
        eprintln!("note: no io_uring here; skipping this test");
        return;
    };
    drop(ring);
    // Descriptors for the listener and the engine probe, not for 64 rings.
    let script = format!("ulimit -n 16; exec {BIN} serve tcp://127.0.0.1:0 --threads 64");
    let out = run("sh", &["-c", &script], b"");
    assert_eq!(out.stdout_text(), "", "listen ok printed: {}", out.stderr);
    let line = assert_error_line(&out, 1);
    assert!(line.contains("io_uring engine thread"), "{line}");
}

// --- SIGHUP with files to read again ------------------------------------------

/// A TCP connection to `server` from the local address `from` (any of
/// 127.0.0.0/8 is this host's loopback on Linux).
fn connect_from(from: &str, server: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    let local = std::net::SocketAddr::new(from.parse().unwrap(), 0);
    socket.bind(&local.into()).unwrap();
    socket.connect_timeout(&server.into(), WAIT).unwrap();
    let stream = std::net::TcpStream::from(socket);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// Whether a new connection from `from` is echoed (rather than closed at
/// once).
fn echoed_from(from: &str, server: std::net::SocketAddr) -> bool {
    let mut stream = connect_from(from, server);
    let _ = stream.write_all(b"knock");
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).is_ok() && &back == b"knock"
}

/// Polls (with a deadline) until the server's standard error holds `text`
/// `times` times.
#[track_caller]
fn wait_for_log(server: &Server, text: &str, times: usize) {
    let deadline = Instant::now() + WAIT;
    while server.stderr().matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "{text:?} never logged: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sighup_rereads_the_access_files_and_keeps_open_connections() {
    let deny = TempPath::new("deny.txt");
    std::fs::write(deny.path(), "# nobody yet\n").unwrap();
    let allow = TempPath::new("allow.txt");
    std::fs::write(allow.path(), "127.0.0.0/8 # this host\n").unwrap();
    let mut server = serve(
        &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"],
        &[
            "-q",
            "--deny-file",
            &deny.text(),
            "--allow-file",
            &allow.text(),
        ],
    );
    let addr = ip_addr_of(server.endpoint());
    let udp = connect_dgram(&server.endpoints[1]);
    assert_eq!(udp.exchange(b"before"), b"before");
    let mut open = connect_from("127.0.0.1", addr);
    assert_eq!(
        {
            open.write_all(b"open").unwrap();
            let mut b = [0u8; 4];
            open.read_exact(&mut b).unwrap();
            b
        },
        *b"open"
    );

    std::fs::write(deny.path(), "127.0.0.1 # stop this one\n").unwrap();
    server.signal("HUP");
    wait_for_log(&server, "deny 127.0.0.1/32 added", 1);
    // New connections and datagrams from 127.0.0.1 are refused...
    assert!(!echoed_from("127.0.0.1", addr));
    let mut buf = [0u8; 16];
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.connect(ip_addr_of(&server.endpoints[1])).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    silent.send(b"after").unwrap();
    assert!(silent.recv(&mut buf).is_err(), "a denied datagram answered");
    // ...others are served, and the connection open before stays.
    assert!(echoed_from("127.0.0.2", addr));
    open.write_all(b"stays").unwrap();
    let mut back = [0u8; 5];
    open.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"stays");

    // A file that no longer parses leaves the list in force as it was.
    std::fs::write(deny.path(), "127.0.0.1\nnot an address\n").unwrap();
    server.signal("HUP");
    wait_for_log(&server, "reload failed", 1);
    assert!(server.stderr().contains("line 2"), "{}", server.stderr());
    assert!(!echoed_from("127.0.0.1", addr));

    // Allowed again.
    std::fs::write(deny.path(), "").unwrap();
    server.signal("HUP");
    wait_for_log(&server, "deny 127.0.0.1/32 removed", 1);
    assert!(echoed_from("127.0.0.1", addr));
    let udp = connect_dgram(&server.endpoints[1]);
    assert_eq!(udp.exchange(b"again"), b"again");
    // Narrowing the allow file reaches the open-for-business side too.
    std::fs::write(allow.path(), "127.0.0.2\n").unwrap();
    server.signal("HUP");
    wait_for_log(&server, "allow 127.0.0.0/8 removed", 1);
    assert!(!echoed_from("127.0.0.1", addr));
    assert!(echoed_from("127.0.0.2", addr));
    drop(open);

    // Still serving, not stopped by the signals: SIGTERM stops it.
    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
}

#[test]
fn an_access_file_that_does_not_parse_is_a_usage_error_at_start() {
    let deny = TempPath::new("bad-deny.txt");
    std::fs::write(deny.path(), "10.0.0.0/8\n10.0.0.0/99\n").unwrap();
    let out = sockecho(
        &["serve", "tcp://127.0.0.1:0", "--deny-file", &deny.text()],
        b"",
    );
    let line = assert_error_line(&out, 2);
    assert!(line.starts_with("error: --deny-file: "), "{line}");
    assert!(line.contains("line 2"), "{line}");
    let out = sockecho(
        &[
            "serve",
            "tcp://127.0.0.1:0",
            "--allow-file",
            "/nonexistent/allow",
        ],
        b"",
    );
    let line = assert_error_line(&out, 2);
    assert!(line.contains("/nonexistent/allow: no such file"), "{line}");
}

#[test]
fn sighup_rereads_the_tls_certificate_and_keeps_open_connections() {
    if !require_tool("openssl") {
        return;
    }
    let cert = TempPath::new("reload-cert.pem");
    let key = TempPath::new("reload-key.pem");
    // A certificate for this host, as `openssl req` makes it, at the
    // server's paths; its SHA-256 fingerprint.
    let make = || {
        let out = run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                &key.text(),
                "-out",
                &cert.text(),
            ],
            b"",
        );
        assert_eq!(out.code(), 0, "{}", out.stderr);
        let out = run(
            "openssl",
            &[
                "x509",
                "-in",
                &cert.text(),
                "-noout",
                "-fingerprint",
                "-sha256",
            ],
            b"",
        );
        out.stdout_text().trim().to_owned()
    };
    let first = make();
    let mut server = serve(
        &["tls://127.0.0.1:0"],
        &["-q", "--tls-cert", &cert.text(), "--tls-key", &key.text()],
    );
    let endpoint = server.endpoint().to_owned();
    let pinned = |fingerprint: &str| {
        sockecho(
            &[
                "connect",
                &endpoint,
                "--tls-fingerprint",
                fingerprint,
                "-m",
                "pin",
            ],
            b"",
        )
        .code()
    };
    assert_eq!(pinned(&first), 0);
    // A TLS connection open across the reload.
    let mut open = std::process::Command::new(BIN)
        .args(["connect", &endpoint, "--tls-fingerprint", &first])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut input = open.stdin.take().unwrap();
    let mut output = std::io::BufReader::new(open.stdout.take().unwrap());
    let mut open = KillOnDrop(open);
    let mut echo_line = |text: &str| {
        use std::io::BufRead;
        input.write_all(text.as_bytes()).unwrap();
        input.flush().unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        line
    };
    assert_eq!(echo_line("before\n"), "before\n");

    let second = make();
    assert_ne!(first, second);
    server.signal("HUP");
    wait_for_log(&server, "replaced by sha256:", 1);
    assert_eq!(pinned(&second), 0, "new handshakes get the new certificate");
    assert_eq!(pinned(&first), 1, "and not the old one");
    assert_eq!(echo_line("after\n"), "after\n", "the open connection stays");
    let _ = open.0.kill();
    let _ = open.0.wait();

    // A key that does not go with the certificate: the pair in use stays.
    std::fs::write(key.path(), "not a key").unwrap();
    server.signal("HUP");
    wait_for_log(&server, "reload failed", 1);
    assert_eq!(pinned(&second), 0);
    server.signal("TERM");
    assert!(server.wait_exit().status.success());
}
