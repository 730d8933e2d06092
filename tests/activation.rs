//! Sockets handed over instead of bound, with the real tools: systemd
//! socket activation (`systemd-socket-activate`, listening and
//! per-connection `--accept`, stream and datagram) and xinetd (`--inetd`,
//! stream `nowait` and datagram `wait`).

use crate::common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{BIN, Proc, TempPath, closed_tcp_port, closed_udp_port, connect, require_tool};

/// Connects to 127.0.0.1:`port` until it answers (the tool is binding it),
/// for at most ten seconds.
fn wait_listening(port: u16) -> common::Conn {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return connect(&format!("tcp://127.0.0.1:{port}"));
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn udp_exchange(port: u16, message: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    // Until the tool has bound the port, datagrams are refused (ICMP) and
    // the error comes back at once: retry for up to ten seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        socket.send(message).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => return buf[..n].to_vec(),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("no reply from udp port {port}");
}

#[test]
fn systemd_listening_stream_socket() {
    if !require_tool("systemd-socket-activate") {
        return;
    }
    let port = closed_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Proc::spawn("systemd-socket-activate", &["-l", &listen, BIN, "serve"]);
    let mut conn = wait_listening(port);
    assert_eq!(conn.echo(b"activated"), b"activated");
    // serve adopted the socket it was given instead of binding its default.
    assert_eq!(server.line(), format!("listen ok tcp://{listen}"));
}

#[test]
fn systemd_datagram_socket() {
    if !require_tool("systemd-socket-activate") {
        return;
    }
    let port = closed_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Proc::spawn(
        "systemd-socket-activate",
        &["-d", "-l", &listen, BIN, "serve"],
    );
    assert_eq!(udp_exchange(port, b"datagram"), b"datagram");
    assert_eq!(server.line(), format!("listen ok udp://{listen}"));
}

#[test]
fn systemd_accept_mode_serves_one_connection_per_process() {
    if !require_tool("systemd-socket-activate") {
        return;
    }
    let port = closed_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let _tool = Proc::spawn(
        "systemd-socket-activate",
        &["--accept", "-l", &listen, BIN, "serve", "-q"],
    );
    for round in 0..2 {
        let mut conn = wait_listening(port);
        let message = format!("connection {round}");
        assert_eq!(conn.echo(message.as_bytes()), message.as_bytes());
        conn.shutdown_write();
        assert_eq!(conn.read_to_close(), b"");
    }
}

#[test]
fn xinetd_stream_nowait_and_datagram_wait() {
    if !require_tool("xinetd") {
        return;
    }
    let (tcp, udp) = (closed_tcp_port(), closed_udp_port());
    let conf = TempPath::new("xinetd.conf");
    let pid = TempPath::new("xinetd.pid");
    let service = |name: &str, kind: &str, protocol: &str, wait: &str, port: u16| {
        format!(
            "service {name}\n{{\n  type = UNLISTED\n  socket_type = {kind}\n  protocol = {protocol}\n  \
             wait = {wait}\n  user = root\n  server = {BIN}\n  server_args = serve --inetd\n  \
             port = {port}\n  bind = 127.0.0.1\n}}\n"
        )
    };
    let text = format!(
        "defaults\n{{\n}}\n{}{}",
        service("sockecho-stream", "stream", "tcp", "no", tcp),
        service("sockecho-dgram", "dgram", "udp", "yes", udp)
    );
    std::fs::File::create(conf.path())
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let _xinetd = Proc::spawn(
        "xinetd",
        &["-dontfork", "-f", &conf.text(), "-pidfile", &pid.text()],
    );
    // Stream, nowait: one sockecho per connection, nothing but the echo on
    // the socket (no listen ok line, no log).
    let mut conn = wait_listening(tcp);
    assert_eq!(conn.echo(b"through xinetd"), b"through xinetd");
    conn.shutdown_write();
    assert_eq!(conn.read_to_close(), b"", "only the echo came back");
    // Datagram, wait: sockecho gets the UDP socket itself.
    assert_eq!(
        udp_exchange(udp, b"udp through xinetd"),
        b"udp through xinetd"
    );
}

#[test]
fn inetd_without_a_socket_is_a_clear_error() {
    let out = common::sockecho(&["serve", "--inetd"], b"");
    assert_eq!(out.code(), 2, "{}", out.stderr);
}

#[test]
fn contrib_units_pass_systemd_analyze_verify() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = TempPath::new("units");
    std::fs::create_dir_all(dir.path()).unwrap();
    let contrib = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd");
    for unit in ["sockecho.socket", "sockecho.service"] {
        let text = std::fs::read_to_string(format!("{contrib}/{unit}")).unwrap();
        // The unit names the installed path; verify against this build.
        let text = text.replace("/usr/local/bin/sockecho", BIN);
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let socket = dir.path().join("sockecho.socket");
    let service = dir.path().join("sockecho.service");
    let out = common::run(
        "systemd-analyze",
        &[
            "verify",
            socket.to_str().unwrap(),
            service.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stderr.trim().is_empty(),
        "systemd-analyze complains: {}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(dir.path());
}
