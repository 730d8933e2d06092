//! UDP as deployments meet it: replies from the address each datagram was
//! sent to on wildcard-bound sockets (IPv4, IPv6, sockets handed over by
//! systemd), echo loops with other servers that end by themselves
//! (CVE-2024-2169), and honest clients that repeat themselves still
//! answered.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::netns::Netns;
use crate::common::*;

/// Sends `message` from an unconnected socket bound to `from` (an
/// address, port 0) to `to`; returns the reply and where it came from.
fn unconnected_exchange(from: &str, to: SocketAddr, message: &[u8]) -> (Vec<u8>, SocketAddr) {
    let socket = UdpSocket::bind(from).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket.send_to(message, to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, source) = socket.recv_from(&mut buf).expect("a reply");
    (buf[..n].to_vec(), source)
}

#[test]
fn a_wildcard_udp_server_answers_from_the_address_it_was_sent_to() {
    let server = serve(&["udp://0.0.0.0:0"], &["-q"]);
    let port = server.port();
    for to in ["127.0.0.2", "127.0.0.3", "127.0.0.1"] {
        let target: SocketAddr = format!("{to}:{port}").parse().unwrap();
        // An unconnected client sees where the reply came from.
        let (back, source) = unconnected_exchange("127.0.0.1:0", target, b"where from?");
        assert_eq!(back, b"where from?");
        assert_eq!(source, target, "the reply's source");
        // A connected client (ping, connect) only accepts it from there.
        let endpoint = format!("udp://{target}");
        let out = sockecho(&["connect", &endpoint, "-m", "hello", "-m", "again"], b"");
        assert_eq!(out.code(), 0, "{endpoint}: {}", out.stderr);
        assert_eq!(out.stdout_text(), "hello\nagain\n");
        let out = sockecho(&["ping", &endpoint, "-c", "3", "-i", "10ms", "--json"], b"");
        assert_eq!(out.code(), 0, "{endpoint}: {}", out.stderr);
    }
    // Batches of many flows, GSO runs among them: every datagram back.
    let (report, code, stderr) = bench_report(
        &[],
        &[
            &format!("udp://127.0.0.2:{port}"),
            "-c",
            "8",
            "--pipeline",
            "8",
            "-d",
            "300ms",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["lost"], 0, "{report}");
    assert!(report["messages"].as_u64().unwrap() > 100, "{report}");
}

#[test]
fn a_wildcard_ipv6_server_answers_from_the_address_it_was_sent_to() {
    // Two addresses of our own on a namespace's loopback.
    let Some(ns) = Netns::create() else {
        return;
    };
    for addr in ["fd00:5ec::1/128", "fd00:5ec::2/128"] {
        ns.exec_ok(&["ip", "-6", "addr", "add", addr, "dev", "lo", "nodad"]);
    }
    if !require_tool("python3") {
        return;
    }
    let server = ns.serve(&["udp://[::]:0"], &["-q"]);
    let port = ip_addr_of(server.endpoint()).port().to_string();
    // A client on ::1 sends to each address: the kernel alone would
    // answer from ::1, the address nearest the client.
    let client = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(('::1', 0))
s.settimeout(5)
s.sendto(b'where from?', (sys.argv[1], int(sys.argv[2])))
data, source = s.recvfrom(100)
print(data.decode(), source[0], source[1])
"#;
    for to in ["fd00:5ec::1", "fd00:5ec::2", "::1"] {
        let said = ns.exec_ok(&["python3", "-c", client, to, &port]);
        assert_eq!(
            said.trim(),
            format!("where from? {to} {port}"),
            "sent to {to}"
        );
    }
    let endpoint = format!("udp://[fd00:5ec::2]:{port}");
    let out = ns.exec(&[BIN, "ping", &endpoint, "-c", "3", "-i", "10ms"], b"");
    assert!(out.status.success(), "{endpoint}: {}", out.stdout_text());
}

#[test]
fn a_wildcard_socket_from_systemd_answers_from_the_address_it_was_sent_to() {
    if !require_tool("systemd-socket-activate") {
        return;
    }
    let port = closed_udp_port();
    // `-l PORT` makes a dual-stack IPv6 socket: IPv4 datagrams arrive on it
    // as mapped addresses, and their replies must still leave from the
    // IPv4 address they were sent to.
    let _server = Proc::spawn(
        "systemd-socket-activate",
        &["-d", "-l", &port.to_string(), BIN, "serve"],
    );
    let target: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(target).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    loop {
        // Until the tool has bound the port, datagrams are refused.
        socket.send(b"activated").unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            assert_eq!(&buf[..n], b"activated");
            break;
        }
        assert!(Instant::now() < deadline, "no reply from {target}");
    }
}

// ---------------------------------------------------------------------------
// Echo loops (CVE-2024-2169)

/// Sends one datagram with a forged source `from` to `to` through a raw
/// socket, inside `ns` (root only).
fn forge(ns: &Netns, from: SocketAddr, to: SocketAddr, payload: &str) {
    let script = r#"
import socket, struct, sys
src, sport, dst, dport, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5].encode()
udp = struct.pack('!HHHH', sport, dport, 8 + len(payload), 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))
"#;
    let (sport, dport) = (from.port().to_string(), to.port().to_string());
    let (src, dst) = (from.ip().to_string(), to.ip().to_string());
    ns.exec_ok(&["python3", "-c", script, &src, &sport, &dst, &dport, payload]);
}

/// Datagrams the namespace's UDP stack takes in during `window`.
fn udp_in_during(ns: &Netns, window: Duration) -> u64 {
    let before = ns.udp_counter("InDatagrams");
    thread::sleep(window);
    ns.udp_counter("InDatagrams") - before
}

/// A loop started by one forged datagram between a sockecho on
/// 127.0.0.2 and `partner` (listening on `partner_addr`) ends within a
/// second: after it, the namespace's UDP stack goes quiet.
fn assert_loop_ends(ns: &Netns, sockecho: &Server, partner_addr: SocketAddr) {
    let a = ip_addr_of(sockecho.endpoint());
    forge(ns, partner_addr, a, "one forged datagram");
    // The time the loop has to end by itself; then nothing may move.
    thread::sleep(Duration::from_millis(1_200));
    let after = udp_in_during(ns, Duration::from_millis(500));
    assert!(
        after < 5,
        "{after} datagrams in half a second, long after the forged one: the loop goes on"
    );
    let log = sockecho.stderr();
    assert!(log.contains("echo loop"), "no loop logged: {log}");
}

#[test]
fn a_loop_between_two_sockecho_servers_ends_within_a_second() {
    if !require_tool("python3") {
        return;
    }
    let Some(ns) = Netns::create() else {
        return;
    };
    let a = ns.serve(&["udp://127.0.0.2:0"], &[]);
    let b = ns.serve(&["udp://127.0.0.3:0"], &[]);
    assert_loop_ends(&ns, &a, ip_addr_of(b.endpoint()));
}

#[test]
fn a_loop_with_a_naive_echo_ends_within_a_second() {
    if !require_tool("python3") {
        return;
    }
    let Some(ns) = Netns::create() else {
        return;
    };
    // An echo that answers everything, every source port included.
    let naive = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.3', 0))
print(s.getsockname()[1], flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"#;
    let echo = ns.spawn(&["python3", "-c", naive]);
    let port: u16 = echo.line().trim().parse().unwrap();
    let a = ns.serve(&["udp://127.0.0.2:0"], &[]);
    assert_loop_ends(&ns, &a, format!("127.0.0.3:{port}").parse().unwrap());
}

#[test]
fn a_datagram_from_one_of_its_own_ports_gets_no_reply() {
    if !require_tool("python3") {
        return;
    }
    let Some(ns) = Netns::create() else {
        return;
    };
    // Two endpoints of one process: a forged datagram from the one to the
    // other is refused at once.
    let server = ns.serve(&["udp://127.0.0.2:0", "udp://127.0.0.3:0"], &[]);
    let (a, b) = (
        ip_addr_of(&server.endpoints[0]),
        ip_addr_of(&server.endpoints[1]),
    );
    let before = ns.udp_counter("InDatagrams");
    forge(&ns, b, a, "from our own port");
    thread::sleep(Duration::from_millis(300));
    let taken_in = ns.udp_counter("InDatagrams") - before;
    assert_eq!(taken_in, 1, "the forged datagram was answered");
}

#[test]
fn honest_clients_that_repeat_themselves_stay_answered() {
    let server = serve(&["udp://127.0.0.2:0"], &["-q"]);
    let endpoint = server.endpoint().to_owned();
    // `yes hi | sockecho connect`: the same bytes in lockstep with the
    // replies, 2,000 times.
    let lines = "hi\n".repeat(2_000);
    let out = sockecho(&["connect", &endpoint], lines.as_bytes());
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), lines, "every line answered once");
    // A burst of the same line, sent before any reply came back.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(ip_addr_of(&endpoint)).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    for _ in 0..50 {
        socket.send(b"hi\n").unwrap();
    }
    let mut buf = [0u8; 16];
    for i in 0..50 {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("reply {i} of 50: {e}"));
        assert_eq!(&buf[..n], b"hi\n");
    }
    // ping and bench: every datagram differs.
    let out = sockecho(&["ping", &endpoint, "-c", "200", "-i", "0", "--json"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["lost"], 0, "{summary}");
    let (report, code, stderr) = bench_report(&[], &[&endpoint, "-c", "4", "-d", "300ms"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["lost"], 0, "{report}");
}

#[test]
fn nc_sending_the_same_line_again_and_again_is_answered() {
    if !require_tool("nc") {
        return;
    }
    let server = serve(&["udp://127.0.0.2:0"], &["-q"]);
    let port = server.port();
    // netcat-openbsd sends each line it reads as one datagram: lines paced
    // 5 ms apart (each echoed long before the next), then -w1 waits a
    // second for the last reply.
    let script = format!(
        "for i in $(seq 30); do echo 'same line'; sleep 0.005; done | nc -u -w1 127.0.0.2 {port}"
    );
    let out = run("sh", &["-c", &script], b"");
    assert_eq!(
        out.stdout_text(),
        "same line\n".repeat(30),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// IPv6 zones (RFC 6874)

#[test]
fn link_local_addresses_work_with_a_zone() {
    let Some(ns) = Netns::create() else {
        return;
    };
    // A bridge with no port: an interface of our own (the dummy module
    // may be missing).
    ns.exec_ok(&["ip", "link", "add", "d0", "type", "bridge"]);
    ns.exec_ok(&["ip", "link", "set", "d0", "up"]);
    ns.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fe80::1/64",
        "dev",
        "d0",
        "nodad",
    ]);
    let server = ns.serve(&["udp://[fe80::1%d0]:0", "tcp://[fe80::1%d0]:0"], &["-q"]);
    // Printed with the zone it was given, by name.
    assert!(
        server.endpoints[0].starts_with("udp://[fe80::1%d0]:"),
        "{:?}",
        server.endpoints
    );
    for endpoint in &server.endpoints {
        let out = ns.exec(&[BIN, "ping", endpoint, "-c", "2", "-i", "10ms"], b"");
        assert!(out.status.success(), "{endpoint}: {}", out.stdout_text());
    }
    // The URL form of the zone, `%25`, and the interface's index work too.
    let port = server.endpoints[1].rsplit(':').next().unwrap();
    let index = ns.exec_ok(&["cat", "/sys/class/net/d0/ifindex"]);
    for target in [
        format!("[fe80::1%25d0]:{port}"),
        format!("[fe80::1%{}]:{port}", index.trim()),
    ] {
        let out = ns.exec(&[BIN, "connect", &target, "-m", "zoned"], b"");
        assert!(out.status.success(), "{target}: {}", out.stderr);
        assert_eq!(out.stdout_text(), "zoned\n");
    }
}

/// `localhost` is `::1` and `127.0.0.1` on Debian and Ubuntu (both in the
/// hosts file, IPv6 first): a server of the name serves both, on one
/// port, and a UDP client of the name finds a server on either, as a TCP
/// one does.
#[test]
fn a_name_with_two_addresses_is_served_on_both_and_found_on_either() {
    let Some(ns) = Netns::create() else {
        return;
    };
    ns.hosts("::1 localhost\n127.0.0.1 localhost\n");
    let mut argv = vec![BIN, "serve", "udp://localhost:0", "tcp://localhost:0", "-q"];
    if std::env::var("SOCKECHO_TEST_ENGINE").is_ok_and(|e| e == "epoll") {
        argv.push("--epoll");
    }
    let server = ns.spawn(&argv);
    let lines: Vec<String> = (0..4).map(|_| server.listen_ok()).collect();
    let port = |line: &str| line.rsplit(':').next().unwrap().to_owned();
    for (scheme, pair) in ["udp", "tcp"].iter().zip(lines.chunks(2)) {
        assert_eq!(
            pair,
            [
                format!("{scheme}://[::1]:{}", port(&pair[0])),
                format!("{scheme}://127.0.0.1:{}", port(&pair[0]))
            ],
            "{lines:?}"
        );
        // Each address echoes: clients of both families are served.
        for endpoint in pair {
            let out = ns.exec(&[BIN, "connect", endpoint, "-m", "either"], b"");
            assert!(out.status.success(), "{endpoint}: {}", out.stderr);
            assert_eq!(out.stdout_text(), "either\n", "{endpoint}");
        }
    }
    drop(server);

    // A server on 127.0.0.1 only: `udp://localhost:P` tries `::1`, is
    // refused, and goes on to `127.0.0.1`.
    let server = ns.serve(&["udp://127.0.0.1:0"], &["-q"]);
    let target = format!("udp://localhost:{}", port(server.endpoint()));
    let out = ns.exec(&[BIN, "connect", &target, "-m", "found"], b"");
    assert!(out.status.success(), "{target}: {}", out.stderr);
    assert_eq!(out.stdout_text(), "found\n");
    // ping and bench find it too, and name the endpoint as given.
    let json_of = |args: &[&str]| -> serde_json::Value {
        let out = ns.exec(&[&[BIN], args, &["--json"]].concat(), b"");
        assert!(
            out.status.success(),
            "{args:?}: {} {}",
            out.stdout_text(),
            out.stderr
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ping = json_of(&["ping", &target, "-c", "3", "-i", "10ms"]);
    assert_eq!(ping["received"], 3, "{ping}");
    assert_eq!(ping["endpoint"], target.as_str());
    let bench = json_of(&["bench", &target, "-c", "2", "-d", "200ms"]);
    assert_eq!(bench["errors"], 0, "{bench}");
    assert!(bench["messages"].as_u64() > Some(0), "{bench}");
    assert_eq!(bench["endpoint"], target.as_str());
}
