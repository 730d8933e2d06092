//! Behind load balancers and proxies, through the real binary: `serve
//! --proxy-protocol` behind the real HAProxy (`send-proxy`,
//! `send-proxy-v2`) and nginx's stream module (`proxy_protocol on`), and
//! against headers made by hand (trusted or not, missing, malformed,
//! trickled, LOCAL, with TLVs, over Unix sockets and TLS); the clients'
//! `--proxy-protocol`; which backend answered (`--id`, the greeting's
//! placeholders, `ping --greeting-line`, `bench --greeting-line` through
//! HAProxy to two backends).
//!
//! HAProxy and nginx listen on ports taken from a port-0 bind (released,
//! then written into their configuration); a port someone else took in
//! between is tried again with another.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

// --- helpers ----------------------------------------------------------------

/// A version 1 header from `src` to `dst`.
fn v1(src: &str, dst: &str) -> Vec<u8> {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 2 PROXY header over IPv4 from `src` to `dst`, with `tlvs`
/// (already encoded) after the addresses.
fn v2(src: &str, dst: &str, tlvs: &[u8]) -> Vec<u8> {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only here");
    };
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x21, 0x11]);
    h.extend(u16::try_from(12 + tlvs.len()).unwrap().to_be_bytes());
    h.extend(src.ip().octets());
    h.extend(dst.ip().octets());
    h.extend(src.port().to_be_bytes());
    h.extend(dst.port().to_be_bytes());
    h.extend(tlvs);
    h
}

/// One TLV.
fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend(u16::try_from(value.len()).unwrap().to_be_bytes());
    t.extend(value);
    t
}

/// A version 2 LOCAL header (a proxy's health check).
fn v2_local() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    h
}

/// `serve ENDPOINTS... OPTIONS... --json`, once every endpoint's `listen`
/// event (and a `tls://` one's fingerprint) came.
fn serve_json(endpoints: &[&str], options: &[&str]) -> Server {
    let mut args = vec!["serve"];
    args.extend_from_slice(endpoints);
    args.extend_from_slice(options);
    args.push("--json");
    let proc = Proc::sockecho(&args);
    let mut bound = Vec::new();
    for endpoint in endpoints {
        let listen: Value = serde_json::from_str(&proc.line()).unwrap();
        assert_eq!(listen["event"], "listen", "{listen}");
        bound.push(listen["endpoint"].as_str().unwrap().to_owned());
        if endpoint.starts_with("tls://") {
            let tls: Value = serde_json::from_str(&proc.line()).unwrap();
            assert_eq!(tls["event"], "tls", "{tls}");
        }
    }
    Server::new(proc, bound)
}

fn tcp(server: &Server) -> TcpStream {
    let stream = TcpStream::connect_timeout(&ip_addr_of(server.endpoint()), WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// The next event line as JSON.
#[track_caller]
fn event(server: &Server) -> Value {
    let line = server.line();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// The next `connection` and `closed` events of one connection.
#[track_caller]
fn connection_and_closed(server: &Server) -> (Value, Value) {
    let connection = event(server);
    assert_eq!(connection["event"], "connection", "{connection}");
    let closed = event(server);
    assert_eq!(closed["event"], "closed", "{closed}");
    (connection, closed)
}

/// Sends `bytes` (and half-closes); what comes back before the server
/// closes.
fn send_and_read(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut back = Vec::new();
    match stream.read_to_end(&mut back) {
        Ok(_) => back,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => back,
        Err(e) => panic!("reading the echo: {e}"),
    }
}

/// Whether something listens on 127.0.0.1:`port` (the kernel's table, so
/// finding out makes no connection a backend would see).
fn listening(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&want.as_str()) && fields.get(3) == Some(&"0A")
    })
}

/// A proxy (HAProxy, nginx) run in the foreground from a configuration
/// written for it, killed when dropped.
pub struct Balancer {
    _proc: Proc,
    /// Where clients connect: 127.0.0.1:PORT.
    pub addr: SocketAddr,
    _config: TempPath,
    _dir: Option<TempDir>,
}

/// A directory removed (with what is in it) when dropped.
pub struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `program` with the configuration `config(port)` on a free port
/// (tried again with another when it turns out taken), and waits until it
/// listens there.
fn start_balancer(
    program: &str,
    args: impl Fn(&Path, &Path) -> Vec<String>,
    config: impl Fn(u16, &Path) -> String,
) -> Balancer {
    let dir = std::env::temp_dir().join(unique(program));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    for _ in 0..5 {
        let port = closed_tcp_port();
        let file = TempPath::new(&format!("{program}.cfg"));
        std::fs::write(file.path(), config(port, &dir.0)).unwrap();
        let args = args(file.path(), &dir.0);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = Proc::spawn(program, &args);
        let deadline = Instant::now() + WAIT;
        loop {
            if listening(port) {
                return Balancer {
                    _proc: proc,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    _config: file,
                    _dir: Some(dir),
                };
            }
            if proc.has_exited() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{program} is not listening on {port}: {}",
                proc.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
        let stderr = proc.stderr();
        assert!(
            stderr.contains("ddress already in use") || stderr.contains("cannot bind"),
            "{program} did not start: {stderr}"
        );
        // Taken meanwhile: another port.
    }
    panic!("{program}: no free port in five tries");
}

/// HAProxy in TCP mode, round robin over `backends` (`host:port`), each
/// sent a header with `send` (`send-proxy`, `send-proxy-v2`, or nothing).
fn haproxy(backends: &[SocketAddr], send: &str) -> Option<Balancer> {
    if !require_tool("haproxy") {
        return None;
    }
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("    server s{} {addr} {send}\n", i + 1))
        .collect();
    Some(start_balancer(
        "haproxy",
        |config, _| vec!["-db".into(), "-f".into(), config.display().to_string()],
        |port, _| {
            format!(
                "global\n    maxconn 256\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
                 backend be\n    balance roundrobin\n{servers}"
            )
        },
    ))
}

/// nginx's stream module passing connections to `backend` with
/// `proxy_protocol on` (a version 1 header).
fn nginx(backend: SocketAddr) -> Option<Balancer> {
    if !require_tool("nginx") {
        return None;
    }
    let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
    if !Path::new(module).exists() {
        assert!(
            !interop_required(),
            "nginx's stream module is not installed (libnginx-mod-stream), and SOCKECHO_REQUIRE_INTEROP=1 says interop tests must run"
        );
        eprintln!("note: nginx's stream module is not installed; skipping this interop test");
        return None;
    }
    Some(start_balancer(
        "nginx",
        |config, dir| {
            vec![
                "-e".into(),
                "stderr".into(),
                "-p".into(),
                dir.display().to_string(),
                "-c".into(),
                config.display().to_string(),
            ]
        },
        |port, dir| {
            format!(
                "load_module {module};\n\
                 daemon off;\nmaster_process off;\npid {}/nginx.pid;\nerror_log stderr;\n\
                 events {{}}\n\
                 stream {{\n  server {{\n    listen 127.0.0.1:{port};\n    proxy_pass {backend};\n    proxy_protocol on;\n    proxy_half_close on;\n  }}\n}}\n",
                dir.display()
            )
        },
    ))
}

// --- behind the real HAProxy and nginx --------------------------------------

/// Through HAProxy with `send`: the client gets back exactly what it sent,
/// and the events name the client, with HAProxy as `proxy`.
fn through_haproxy(send: &str) {
    let server = serve_json(&["tcp://127.0.0.1:0"], &["--proxy-protocol"]);
    let Some(haproxy) = haproxy(&[ip_addr_of(server.endpoint())], send) else {
        return;
    };
    let client = TcpStream::connect_timeout(&haproxy.addr, WAIT).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let me = client.local_addr().unwrap().to_string();
    let data = random_bytes(256 * 1024, 41);
    let back = send_and_read(client, &data);
    assert_bytes_eq(&back, &data, &format!("echo through HAProxy {send}"));
    let (connection, closed) = connection_and_closed(&server);
    assert_eq!(connection["peer"], me, "{connection}");
    let proxy = connection["proxy"].as_str().expect("a proxy key");
    assert_ne!(proxy, me);
    assert!(proxy.starts_with("127.0.0.1:"), "{proxy}");
    assert_eq!(closed["peer"], me);
    assert_eq!(closed["proxy"], proxy);
    // The header is not counted as the client's bytes.
    assert_eq!(closed["bytes_in"], data.len());
    assert_eq!(closed["bytes_out"], data.len());
    drop(haproxy);
}

#[test]
fn haproxy_send_proxy_v1_echoes_exactly_and_names_the_client() {
    through_haproxy("send-proxy");
}

#[test]
fn haproxy_send_proxy_v2_echoes_exactly_and_names_the_client() {
    through_haproxy("send-proxy-v2");
}

#[test]
fn nginx_stream_proxy_protocol_names_the_client() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--proxy-protocol"]);
    let Some(nginx) = nginx(ip_addr_of(server.endpoint())) else {
        return;
    };
    let client = TcpStream::connect_timeout(&nginx.addr, WAIT).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let me = client.local_addr().unwrap().to_string();
    let back = send_and_read(client, b"through nginx\n");
    assert_eq!(back, b"through nginx\n");
    assert_eq!(
        server.line(),
        format!("connection from {me} on {}", server.endpoint())
    );
    assert_eq!(server.line(), format!("closed {me} in=14 out=14"));
}

/// Without --proxy-protocol, what HAProxy sends is echoed like any bytes:
/// the report, the reason for the flag.
#[test]
fn without_the_flag_a_header_is_just_bytes() {
    let server = serve(&["tcp://127.0.0.1:0"], &[]);
    let mut bytes = v1("192.0.2.1:1000", "192.0.2.2:2000");
    bytes.extend(b"hello");
    assert_eq!(send_and_read(tcp(&server), &bytes), bytes);
}

// --- headers made by hand --------------------------------------------------

#[test]
fn a_header_and_the_clients_first_bytes_in_one_packet_are_told_apart() {
    let path = TempPath::new("proxied.sock");
    let unix = format!("unix:{}", path.text());
    let server = serve(&["tcp://127.0.0.1:0", &unix], &["--proxy-protocol"]);
    let tcp_endpoint = server.endpoints[0].clone();
    for header in [
        v1("203.0.113.5:4000", "198.51.100.1:80"),
        v2("203.0.113.5:4000", "198.51.100.1:80", &[]),
        b"PROXY UNKNOWN\r\n".to_vec(),
    ] {
        let mut bytes = header.clone();
        bytes.extend(b"hello\nworld");
        // One write: header and data arrive together.
        let back = send_and_read(tcp(&server), &bytes);
        assert_eq!(back, b"hello\nworld", "over TCP after {header:?}");
        let line = server.line();
        let peer = if header.starts_with(b"PROXY UNKNOWN") {
            // No addresses: the connection's own peer.
            "127.0.0.1:".to_owned()
        } else {
            "203.0.113.5:4000".to_owned()
        };
        assert!(
            line.starts_with(&format!("connection from {peer}"))
                && line.ends_with(&format!("on {tcp_endpoint}")),
            "{line}"
        );
        assert!(server.line().starts_with(&format!("closed {peer}")));

        // Over a Unix socket (no peek there: read a byte at a time).
        let mut conn = connect(&unix);
        conn.write_all(&bytes).unwrap();
        conn.shutdown_write();
        assert_eq!(conn.read_to_close(), b"hello\nworld", "over Unix");
        assert!(server.line().starts_with("connection from "));
        assert!(server.line().starts_with("closed "));
    }
}

#[test]
fn refused_untrusted_missing_malformed_and_slow_headers_echo_nothing() {
    // Trusted: only 10.0.0.0/8, so this host's loopback is not.
    let mut untrusting = serve_json(
        &["tcp://127.0.0.1:0"],
        &["--proxy-protocol", "--proxy-from", "10.0.0.0/8"],
    );
    let mut bytes = v1("192.0.2.1:1000", "192.0.2.2:2000");
    bytes.extend(b"hello");
    assert_eq!(send_and_read(tcp(&untrusting), &bytes), b"");
    let (connection, closed) = connection_and_closed(&untrusting);
    assert!(
        connection["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let reason = closed["reason"].as_str().unwrap();
    assert!(reason.contains("not a trusted proxy"), "{reason}");
    assert_eq!(closed["bytes_in"], 0);
    assert_eq!(closed["bytes_out"], 0);
    // Counted in the throttled log, with the flag that decides.
    untrusting.signal("TERM");
    let exited = untrusting.wait_exit();
    assert!(
        exited.stderr.contains("connection refused") && exited.stderr.contains("see=--proxy-from"),
        "{}",
        exited.stderr
    );

    let server = serve_json(
        &["tcp://127.0.0.1:0"],
        &["--proxy-protocol", "--idle-timeout", "300ms"],
    );
    for (bytes, why) in [
        (&b"hello\n"[..], "no PROXY protocol header"),
        (b"GET / HTTP/1.1\r\n\r\n", "no PROXY protocol header"),
        (
            b"PROXY TCP4 192.0.2.1\r\nhello",
            "malformed PROXY protocol v1 header",
        ),
        (
            b"\r\n\r\n\0\r\nQUIT\n\x21\x51\x00\x00hello",
            "malformed PROXY protocol v2 header",
        ),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 1", "closed before a whole"),
    ] {
        assert_eq!(send_and_read(tcp(&server), bytes), b"", "{why}");
        let (_, closed) = connection_and_closed(&server);
        let reason = closed["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{reason} for {bytes:?}");
    }

    // A header trickled slower than the timeout is cut off, and meanwhile
    // others are served.
    let mut slow = tcp(&server);
    slow.write_all(b"PROXY TCP4 ").unwrap();
    let mut fine = tcp(&server);
    let mut header = v1("192.0.2.9:9", "192.0.2.2:2000");
    header.extend(b"quick");
    fine.write_all(&header).unwrap();
    let mut back = [0u8; 5];
    fine.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"quick");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    drop(fine);
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let e = event(&server);
        if let Some(r) = e["reason"].as_str() {
            reasons.push(r.to_owned());
        }
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no whole PROXY protocol header within 300ms")),
        "{reasons:?}"
    );
}

#[test]
fn a_header_too_long_is_refused_without_being_read_whole() {
    let server = serve_json(&["tcp://127.0.0.1:0"], &["--proxy-protocol"]);
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.extend(vec![b'x'; 200]);
    assert_eq!(send_and_read(tcp(&server), &long), b"");
    let (_, closed) = connection_and_closed(&server);
    assert!(
        closed["reason"].as_str().unwrap().contains("too long"),
        "{closed}"
    );
    // A version 2 header that claims 60000 bytes is refused at once.
    let mut huge = V2_SIGNATURE.to_vec();
    huge.extend([0x21, 0x11, 0xea, 0x60]);
    let mut stream = tcp(&server);
    stream.write_all(&huge).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)));
    let (_, closed) = connection_and_closed(&server);
    assert!(
        closed["reason"].as_str().unwrap().contains("too long"),
        "{closed}"
    );
}

#[test]
fn a_local_header_is_served_as_the_proxy_itself_and_tlvs_are_shown() {
    let server = serve_json(&["tcp://127.0.0.1:0"], &["--proxy-protocol"]);
    let mut bytes = v2_local();
    bytes.extend(b"health");
    let stream = tcp(&server);
    let me = stream.local_addr().unwrap().to_string();
    assert_eq!(send_and_read(stream, &bytes), b"health");
    let (connection, _) = connection_and_closed(&server);
    assert_eq!(connection["peer"], me);
    assert_eq!(connection["proxy"], me);

    // HAProxy's TLVs for a client that came over TLS.
    let mut ssl = vec![0x07, 0, 0, 0, 0];
    ssl.extend(tlv(0x21, b"TLSv1.3"));
    ssl.extend(tlv(0x22, b"client.example"));
    ssl.extend(tlv(0x23, b"TLS_AES_256_GCM_SHA384"));
    let tlvs = [
        tlv(0x01, b"h2"),
        tlv(0x02, b"echo.example"),
        tlv(0x05, b"req-7"),
        tlv(0x20, &ssl),
        tlv(0x04, b"noop"),
    ]
    .concat();
    let mut bytes = v2("198.51.100.7:5000", "192.0.2.1:443", &tlvs);
    bytes.extend(b"x");
    assert_eq!(send_and_read(tcp(&server), &bytes), b"x");
    let (connection, _) = connection_and_closed(&server);
    assert_eq!(connection["peer"], "198.51.100.7:5000");
    let tlvs = &connection["proxy_tlvs"];
    assert_eq!(tlvs["alpn"], "h2", "{connection}");
    assert_eq!(tlvs["authority"], "echo.example");
    assert_eq!(tlvs["unique_id"], "req-7");
    assert_eq!(tlvs["ssl"]["version"], "TLSv1.3");
    assert_eq!(tlvs["ssl"]["cn"], "client.example");
    assert_eq!(tlvs["ssl"]["client_cert"], true);
    assert_eq!(tlvs["ssl"]["verified"], true);
}

#[test]
fn access_lists_and_per_source_limits_apply_to_the_original_client() {
    let server = serve(
        &["tcp://127.0.0.1:0"],
        &[
            "--proxy-protocol",
            "--deny",
            "192.0.2.0/24",
            "--max-conns-per-ip",
            "1",
        ],
    );
    // The proxy (this host) is allowed; the client it names is not.
    let mut denied = v1("192.0.2.7:1000", "198.51.100.1:80");
    denied.extend(b"hello");
    assert_eq!(send_and_read(tcp(&server), &denied), b"");
    // Another client through the same proxy is served.
    let mut open = tcp(&server);
    open.write_all(&v1("198.51.100.9:1000", "198.51.100.1:80"))
        .unwrap();
    open.write_all(b"first").unwrap();
    let mut back = [0u8; 5];
    open.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"first");
    assert!(
        server
            .line()
            .starts_with("connection from 198.51.100.9:1000 ")
    );
    // The same client again, while its first connection is open: past its
    // limit, although the proxy's own address has only one open.
    let mut again = v1("198.51.100.9:1001", "198.51.100.1:80");
    again.extend(b"second");
    assert_eq!(send_and_read(tcp(&server), &again), b"");
    // A different client is served at the same time.
    let mut other = v1("198.51.100.10:1000", "198.51.100.1:80");
    other.extend(b"third");
    assert_eq!(send_and_read(tcp(&server), &other), b"third");
    assert!(
        server
            .line()
            .starts_with("connection from 198.51.100.10:1000 ")
    );
    drop(open);
}

#[test]
fn tls_behind_a_proxy_reads_the_header_before_the_handshake() {
    let server = serve_json(&["tls://127.0.0.1:0"], &["--proxy-protocol"]);
    let out = sockecho(
        &[
            "connect",
            server.endpoint(),
            "--insecure",
            "--proxy-protocol",
            "v2",
            "--proxy-source",
            "203.0.113.50:6000",
            "-m",
            "over TLS, proxied",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "over TLS, proxied\n");
    let (connection, _) = connection_and_closed(&server);
    assert_eq!(connection["peer"], "203.0.113.50:6000");
    assert_eq!(connection["tls"]["version"], "TLSv1.3");
}

// --- the clients' --proxy-protocol ------------------------------------------

/// Every byte `sockecho connect ARGS` sends to a listener of the test's
/// own (to its half-close): what its header really is.
fn bytes_sent_by(args: &[&str]) -> (Vec<u8>, SocketAddr, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let endpoint = format!("tcp://{addr}");
    let mut full = vec!["connect", endpoint.as_str()];
    full.extend_from_slice(args);
    let full: Vec<String> = full.iter().map(|s| (*s).to_owned()).collect();
    let client = thread::spawn(move || {
        let args: Vec<&str> = full.iter().map(String::as_str).collect();
        sockecho(&args, b"")
    });
    let (mut conn, peer) = listener.accept().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = Vec::new();
    conn.read_to_end(&mut bytes).unwrap();
    drop(conn);
    let _ = client.join();
    (bytes, peer, addr)
}

#[test]
fn connect_sends_a_header_naming_its_own_address_or_the_source_given() {
    // Version 1, from the connection's own address.
    let (bytes, peer, addr) = bytes_sent_by(&["--proxy-protocol", "v1", "-m", "hi"]);
    let mut want = v1(&peer.to_string(), &addr.to_string());
    want.extend(b"hi\n");
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&want)
    );
    // Version 2, from the source given.
    let (bytes, _, addr) = bytes_sent_by(&[
        "--proxy-protocol",
        "v2",
        "--proxy-source",
        "192.0.2.44:1234",
        "-m",
        "hi",
    ]);
    let mut want = v2("192.0.2.44:1234", &addr.to_string(), &[]);
    want.extend(b"hi\n");
    assert_eq!(bytes, want);
}

#[test]
fn clients_behind_no_proxy_can_test_a_server_that_expects_one() {
    let server = serve(
        &["tcp://127.0.0.1:0"],
        &["--proxy-protocol", "--greeting", "{peer}\n"],
    );
    let endpoint = server.endpoint().to_owned();
    for version in ["v1", "v2"] {
        let out = sockecho(
            &[
                "connect",
                &endpoint,
                "--proxy-protocol",
                version,
                "--proxy-source",
                "198.51.100.3:3333",
                "-m",
                "hi",
            ],
            b"",
        );
        assert_eq!(out.code(), 0, "{}", out.stderr);
        assert_eq!(out.stdout_text(), "198.51.100.3:3333\nhi\n", "{version}");
        assert!(
            server
                .line()
                .starts_with("connection from 198.51.100.3:3333 ")
        );
        assert!(server.line().starts_with("closed 198.51.100.3:3333 "));
    }
    // ping over the one connection, and one handshake per probe, each
    // naming the backend by its greeting line.
    let out = sockecho(
        &[
            "ping",
            &endpoint,
            "--proxy-protocol",
            "v2",
            "--proxy-source",
            "198.51.100.4:4444",
            "--greeting-line",
            "-c",
            "2",
            "-i",
            "20ms",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let text = out.stdout_text();
    assert!(
        text.contains(&format!("greeting from {endpoint}: 198.51.100.4:4444")),
        "{text}"
    );
    assert!(text.contains("2 received"), "{text}");
    let out = sockecho(
        &[
            "ping",
            &endpoint,
            "--connect",
            "--proxy-protocol",
            "v1",
            "--greeting-line",
            "-c",
            "2",
            "-i",
            "20ms",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["received"], 2);
    let backends = summary["backends"].as_object().expect("backends");
    assert_eq!(
        backends.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        2
    );
    assert!(
        backends.keys().all(|k| k.starts_with("127.0.0.1:")),
        "{backends:?}"
    );
    // Datagram servers greet nobody: asking for a line is a usage error.
    for sub in ["ping", "bench"] {
        let out = sockecho(&[sub, "udp://127.0.0.1:9", "--greeting-line"], b"");
        let line = assert_error_line(&out, 2);
        assert!(line.starts_with("error: --greeting-line: "), "{line}");
    }
}

// --- which backend answered --------------------------------------------------

#[test]
fn the_greeting_names_the_server_the_client_and_the_address() {
    let server = serve(
        &["tcp://127.0.0.1:0"],
        &[
            "--id",
            "alpha",
            "--greeting",
            "id={id} peer={peer} local={local} {{literal}}\n",
        ],
    );
    let mut conn = tcp(&server);
    let me = conn.local_addr().unwrap();
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while !line.ends_with('\n') {
        conn.read_exact(&mut byte).unwrap();
        line.push(byte[0] as char);
    }
    assert_eq!(
        line,
        format!(
            "id=alpha peer={me} local={} {{literal}}\n",
            ip_addr_of(server.endpoint())
        )
    );
    assert_eq!(
        &{
            conn.write_all(b"echo").unwrap();
            let mut b = [0u8; 4];
            conn.read_exact(&mut b).unwrap();
            b
        },
        b"echo"
    );
    drop(conn);

    // By default {id} is the host name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let named = serve(&["tcp://127.0.0.1:0"], &["--greeting", "{id}\n", "-q"]);
    let out = sockecho(&["connect", named.endpoint()], b"");
    assert_eq!(out.stdout_text(), format!("{host}\n"));

    // A brace that is no placeholder is a usage error that says what to
    // write instead.
    let out = sockecho(&["serve", "tcp://127.0.0.1:0", "--greeting", "{name}"], b"");
    let line = assert_error_line(&out, 2);
    assert!(
        line.contains("--greeting") && line.contains("{name}"),
        "{line}"
    );
    assert!(line.contains("{{"), "{line}");
}

#[test]
fn ping_connect_names_the_backend_per_probe_through_haproxy() {
    let s1 = serve(
        &["tcp://127.0.0.1:0"],
        &["-q", "--id", "s1", "--greeting", "{id}\n"],
    );
    let s2 = serve(
        &["tcp://127.0.0.1:0"],
        &["-q", "--id", "s2", "--greeting", "{id}\n"],
    );
    let Some(haproxy) = haproxy(&[ip_addr_of(s1.endpoint()), ip_addr_of(s2.endpoint())], "") else {
        return;
    };
    let endpoint = format!("tcp://{}", haproxy.addr);
    let out = sockecho(
        &[
            "ping",
            &endpoint,
            "--connect",
            "--greeting-line",
            "-c",
            "4",
            "-i",
            "20ms",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let text = out.stdout_text();
    let s1_probes = text.matches("backend=s1").count();
    let s2_probes = text.matches("backend=s2").count();
    assert_eq!((s1_probes, s2_probes), (2, 2), "round robin: {text}");
}

#[test]
fn bench_through_haproxy_shows_both_backends_and_their_shares() {
    let s1 = serve(
        &["tcp://127.0.0.1:0"],
        &[
            "-q",
            "--proxy-protocol",
            "--id",
            "s1",
            "--greeting",
            "{id}\n",
        ],
    );
    let s2 = serve(
        &["tcp://127.0.0.1:0"],
        &[
            "-q",
            "--proxy-protocol",
            "--id",
            "s2",
            "--greeting",
            "{id}\n",
        ],
    );
    let Some(haproxy) = haproxy(
        &[ip_addr_of(s1.endpoint()), ip_addr_of(s2.endpoint())],
        "send-proxy-v2",
    ) else {
        return;
    };
    let endpoint = format!("tcp://{}", haproxy.addr);
    // Both drivers count: io_uring (the default here) and tokio's epoll.
    let mut reports = Vec::new();
    for driver in [&[][..], &["--epoll"][..]] {
        let mut args = vec![&endpoint[..], "-c", "4", "-d", "300ms", "--greeting-line"];
        args.extend_from_slice(driver);
        let (report, code, stderr) = bench_report(&[], &args);
        assert_eq!(code, 0, "{stderr}");
        let backends = report["backends"].as_object().expect("backends");
        assert_eq!(backends.len(), 2, "{report}");
        let mut messages = 0;
        for name in ["s1", "s2"] {
            let share = &backends[name];
            assert_eq!(share["connections"], 2, "round robin: {report}");
            assert!(share["messages"].as_u64().unwrap() > 0, "{report}");
            messages += share["messages"].as_u64().unwrap();
        }
        assert_eq!(messages, report["messages"].as_u64().unwrap(), "{driver:?}");
        reports.push(report);
    }
    // Merged reports add the shares up.
    let files: Vec<TempPath> = reports
        .iter()
        .map(|report| {
            let file = TempPath::new("backends.json");
            std::fs::write(file.path(), report.to_string()).unwrap();
            file
        })
        .collect();
    let out = sockecho(
        &[
            "report",
            "merge",
            &files[0].text(),
            &files[1].text(),
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["s1", "s2"] {
        let sum = |field: &str| {
            reports
                .iter()
                .map(|r| r["backends"][name][field].as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!(merged["backends"][name]["connections"], sum("connections"));
        assert_eq!(merged["backends"][name]["messages"], sum("messages"));
    }
    // The text report names them too.
    let out = sockecho(
        &[
            "bench",
            &endpoint,
            "-c",
            "2",
            "-d",
            "200ms",
            "--greeting-line",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let text = out.stdout_text();
    assert!(text.contains("backends"), "{text}");
    assert!(text.contains("s1") && text.contains("s2"), "{text}");
}
