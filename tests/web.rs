//! The application-layer echo: HTTP requests reflected as JSON, WebSocket
//! messages echoed (spoken here byte by byte, so nothing but Rust is
//! needed), the `ws://` clients, and `--metrics`. The same features
//! against real browsers, curl, Python and Prometheus are in
//! `web_interop`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{self, Conn, WAIT, serve, sockecho};

/// Sends `request` on a fresh connection to the server's first endpoint
/// and reads until the server closes (the request asks it to).
fn exchange(server: &common::Server, request: &[u8]) -> Vec<u8> {
    exchange_at(server.endpoint(), request)
}

/// [`exchange`] with the endpoint `endpoint`.
fn exchange_at(endpoint: &str, request: &[u8]) -> Vec<u8> {
    let mut conn = common::connect(endpoint);
    conn.write_all(request).unwrap();
    conn.read_to_close()
}

/// One HTTP/1.1 response read off a connection: status, headers (as
/// sent), body (by Content-Length, or to the end of the stream).
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response from `conn`; `head_only` for the answer to HEAD.
fn read_response(conn: &mut impl Read, head_only: bool) -> Response {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 64 * 1024, "no end of head: {head:?}");
        let n = conn.read(&mut byte).expect("read the response head");
        assert_eq!(
            n,
            1,
            "closed in the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only {
        return response;
    }
    match response.header("content-length") {
        Some(len) => {
            let mut body = vec![0u8; len.parse().unwrap()];
            conn.read_exact(&mut body).expect("read the body");
            response.body = body;
        }
        None => response.body = read_to_end(conn),
    }
    response
}

/// Everything up to the end of the stream (a reset ends it too).
fn read_to_end(conn: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("waiting for the end of the stream: {e}"),
        }
    }
}

/// The one response in `bytes`.
fn parse_one(bytes: &[u8]) -> Response {
    read_response(&mut &bytes[..], false)
}

/// The `headers` array of a reflection as `(name, value)` pairs.
fn headers_of(json: &serde_json::Value) -> Vec<(String, String)> {
    json["headers"]
        .as_array()
        .expect("headers is an array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_owned(),
                pair[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_request_is_reflected_with_its_headers_as_they_arrived() {
    let server = serve(&["http://127.0.0.1:0"], &["--id", "backend-7"]);
    let body = "a=1&b=two";
    let request = format!(
        "POST /some/path?x=1&y=%20z HTTP/1.1\r\nHost: example.test\r\nX-Zeta: last-first\r\n\
         x-alpha: one\r\nX-Alpha: Two\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conn = common::connect(server.endpoint());
    conn.write_all(request.as_bytes()).unwrap();
    let response = read_response(&mut conn, false);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/some/path");
    assert_eq!(json["query"], "x=1&y=%20z");
    assert_eq!(json["body"], body);
    assert_eq!(json["id"], "backend-7");
    assert_eq!(json["peer"], conn.local_addr());
    let want: Vec<(String, String)> = [
        ("Host", "example.test"),
        ("X-Zeta", "last-first"),
        ("x-alpha", "one"),
        ("X-Alpha", "Two"),
        ("Content-Length", "9"),
        ("Connection", "close"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(headers_of(&json), want);
    // Asked to close: the server does.
    assert!(conn.read_to_close().is_empty());
}

#[test]
fn keep_alive_chunked_bodies_and_head() {
    let server = serve(&["http://127.0.0.1:0"], &[]);
    let mut conn = common::connect(server.endpoint());
    // Three requests written at once (pipelined), answered in order on
    // the one connection.
    let requests = "GET /first HTTP/1.1\r\nHost: h\r\n\r\n\
                    POST /second HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
                    HEAD /third HTTP/1.1\r\nHost: h\r\n\r\n";
    conn.write_all(requests.as_bytes()).unwrap();
    let first = read_response(&mut conn, false);
    assert_eq!(first.json()["path"], "/first");
    assert_eq!(first.json()["query"], "");
    let second = read_response(&mut conn, false);
    assert_eq!(second.json()["path"], "/second");
    assert_eq!(second.json()["body"], "hello world");
    let third = read_response(&mut conn, true);
    assert_eq!(third.status, 200);
    let declared: usize = third.header("content-length").unwrap().parse().unwrap();
    assert!(declared > 0, "HEAD says the length a GET would have");
    // No body follows the HEAD answer: the next thing read is the answer
    // to the next request.
    conn.write_all(b"GET /fourth HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let fourth = read_response(&mut conn, false);
    assert_eq!(fourth.json()["path"], "/fourth");
}

#[test]
fn a_body_that_is_not_text_is_reflected_in_base64() {
    let server = serve(&["http://127.0.0.1:0"], &[]);
    let body = [0u8, 159, 146, 150, 255, 10];
    let mut request = format!(
        "PUT /bin HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let json = parse_one(&exchange(&server, &request)).json();
    assert!(
        json.get("body").is_none_or(serde_json::Value::is_null),
        "{json}"
    );
    assert_eq!(json["body_base64"], "AJ+Slv8K");
}

#[test]
fn status_and_headers_are_set_by_header_and_by_query() {
    let server = serve(&["http://127.0.0.1:0"], &[]);
    let by_header = parse_one(&exchange(
        &server,
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Echo-Status: 418\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(by_header.status, 418);
    assert_eq!(by_header.json()["method"], "GET");
    let by_query = parse_one(&exchange(
        &server,
        b"GET /?echo_status=503&echo_delay=10ms HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(by_query.status, 503);
    let bad = parse_one(&exchange(
        &server,
        b"GET /?echo_status=99 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(bad.status, 400, "a status that is no status is refused");
    // A response of a given size (any size costs the server no memory),
    // and extra response headers.
    let sized = parse_one(&exchange(
        &server,
        b"GET /?echo_header=X-B:%202 HTTP/1.1\r\nHost: h\r\nX-Echo-Size: 300000\r\n\
          X-Echo-Header: X-A: 1\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(sized.status, 200);
    assert_eq!(sized.body.len(), 300_000);
    assert_eq!(sized.header("x-a"), Some("1"));
    assert_eq!(sized.header("x-b"), Some("2"));
}

#[test]
fn oversized_requests_get_413_and_431() {
    let server = serve(&["http://127.0.0.1:0"], &["--max-body", "1000"]);
    // Declared too large: refused before the body is read.
    let declared = parse_one(&exchange(
        &server,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(declared.status, 413);
    // Chunked and too large: refused once past the limit.
    let mut conn = common::connect(server.endpoint());
    conn.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
    // The server may close while we still write: only the answer counts.
    for _ in 0..4 {
        if conn.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let chunked = read_response(&mut conn, false);
    assert_eq!(chunked.status, 413);
    drop(conn);
    // A head over the limit: 431, whatever follows.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "y".repeat(40 * 1024)
    );
    let mut conn = common::connect(server.endpoint());
    let _ = conn.write_all(big.as_bytes());
    let head = read_response(&mut conn, false);
    assert_eq!(head.status, 431);
    // Too many headers: 431 too.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let mut conn = common::connect(server.endpoint());
    let _ = conn.write_all(many.as_bytes());
    assert_eq!(read_response(&mut conn, false).status, 431);
}

/// The resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn memory_stays_bounded_whatever_a_peer_sends() {
    let server = serve(&["http://127.0.0.1:0"], &["--max-body", "65536"]);
    // Warm up the allocator with one ordinary request.
    parse_one(&exchange(
        &server,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ));
    let before = rss_kib(server.pid());
    // Eight clients at once, each sending 8 MiB: a body past the limit,
    // chunked, and a head that never ends.
    let sent = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8)
            .map(|i| {
                let endpoint = server.endpoint().to_owned();
                scope.spawn(move || {
                    let mut conn = common::connect(&endpoint);
                    let start: &[u8] = if i % 2 == 0 {
                        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    } else {
                        b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless: "
                    };
                    let _ = conn.write_all(start);
                    let piece = if i % 2 == 0 {
                        format!("10000\r\n{}\r\n", "z".repeat(0x10000)).into_bytes()
                    } else {
                        vec![b'a'; 0x10000]
                    };
                    let mut sent = 0usize;
                    for _ in 0..128 {
                        match conn.write(&piece) {
                            Ok(n) if n > 0 => sent += n,
                            _ => break,
                        }
                    }
                    let answer = conn.read_to_close();
                    (sent, answer)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (i, (_, answer)) in sent.iter().enumerate() {
        let text = String::from_utf8_lossy(answer);
        let want = if i % 2 == 0 { " 413 " } else { " 431 " };
        assert!(text.contains(want), "client {i} got {text:?}");
    }
    let after = rss_kib(server.pid());
    assert!(
        after < before + 16 * 1024,
        "rss grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_request_head_that_never_ends_gets_408() {
    let server = serve(&["http://127.0.0.1:0"], &["--request-timeout", "300ms"]);
    let mut conn = common::connect(server.endpoint());
    conn.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .unwrap();
    let answer = conn.read_to_close();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    // A body that stalls: 408 too.
    let mut conn = common::connect(server.endpoint());
    conn.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let response = read_response(&mut conn, false);
    assert_eq!(response.status, 408);
}

/// The next JSON event of `server` whose `event` is `kind`, skipping
/// others (a bounded number).
fn next_event(server: &common::Proc, kind: &str) -> serde_json::Value {
    for _ in 0..20 {
        let line = server.line();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if event["event"] == kind {
            return event;
        }
    }
    panic!("no {kind} event in 20 lines");
}

#[test]
fn json_events_count_requests_and_https_offers_http2() {
    let mut server = common::Proc::sockecho(&[
        "serve",
        "http://127.0.0.1:0",
        "https://127.0.0.1:0",
        "--json",
    ]);
    let http = next_event(&server, "listen")["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let https = next_event(&server, "listen")["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut conn = common::connect(&http);
    conn.write_all(
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let _ = conn.read_to_close();
    assert_eq!(next_event(&server, "connection")["endpoint"], http);
    let closed = next_event(&server, "closed");
    assert_eq!(closed["requests"], 2, "{closed}");
    // https:// offers HTTP/2 and HTTP/1.1 by ALPN: a client asking for h2
    // gets it (curl speaks it in `web_interop`).
    let port = common::ip_addr_of(&https).port();
    let out = sockecho(
        &[
            "connect",
            &format!("tls://127.0.0.1:{port}"),
            "--insecure",
            "--tls-alpn",
            "h2",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let connection = next_event(&server, "connection");
    assert_eq!(connection["tls"]["alpn"], "h2", "{connection}");
    server.signal("TERM");
    assert!(server.wait_exit().status.success());
}

// WebSocket, spoken by hand (RFC 6455).

/// A WebSocket connection, its handshake done.
fn ws_connect(endpoint: &str) -> TcpStream {
    let addr = common::ip_addr_of(endpoint);
    let mut tcp = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_write_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET /chat HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut conn = Conn::Tcp(tcp.try_clone().unwrap());
    let response = read_response(&mut conn, true);
    assert_eq!(response.status, 101);
    // RFC 6455's own example key and answer.
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    tcp
}

/// Writes one masked frame (as a client must).
fn send_frame(tcp: &mut TcpStream, fin: bool, opcode: u8, payload: &[u8]) {
    let mut frame = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).unwrap();
}

/// Reads one frame (servers do not mask): (fin, opcode, payload).
fn read_frame(tcp: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).expect("a frame");
    assert_eq!(head[1] & 0x80, 0, "a server frame is not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            tcp.read_exact(&mut n).unwrap();
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            tcp.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    tcp.read_exact(&mut payload).unwrap();
    (head[0] & 0x80 != 0, head[0] & 0x0f, payload)
}

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

#[test]
fn websocket_messages_come_back_as_they_went() {
    let server = serve(&["http://127.0.0.1:0"], &[]);
    let mut ws = ws_connect(server.endpoint());
    send_frame(&mut ws, true, TEXT, "héllo ✓".as_bytes());
    assert_eq!(
        read_frame(&mut ws),
        (true, TEXT, "héllo ✓".as_bytes().to_vec())
    );
    let binary: Vec<u8> = (0..=255).collect();
    send_frame(&mut ws, true, BINARY, &binary);
    assert_eq!(read_frame(&mut ws), (true, BINARY, binary));
    let large = common::random_bytes(200_000, 15);
    send_frame(&mut ws, true, BINARY, &large);
    let (_, opcode, back) = read_frame(&mut ws);
    assert_eq!(opcode, BINARY);
    common::assert_bytes_eq(&back, &large, "a 200 kB message");
    // A fragmented message comes back whole, with a ping in its middle
    // answered at once.
    send_frame(&mut ws, false, TEXT, b"frag");
    send_frame(&mut ws, true, PING, b"are you there");
    assert_eq!(read_frame(&mut ws), (true, PONG, b"are you there".to_vec()));
    send_frame(&mut ws, false, 0, b"ment");
    send_frame(&mut ws, true, 0, b"ed!");
    assert_eq!(read_frame(&mut ws), (true, TEXT, b"fragmented!".to_vec()));
    // A close is answered with the same code.
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    send_frame(&mut ws, true, CLOSE, &close);
    let (_, opcode, payload) = read_frame(&mut ws);
    assert_eq!(opcode, CLOSE);
    assert_eq!(payload[..2], 4001u16.to_be_bytes());
    let mut rest = Vec::new();
    let _ = ws.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the close: {rest:?}");
}

#[test]
fn websocket_errors_close_with_their_codes() {
    let server = serve(&["http://127.0.0.1:0"], &["--max-message", "1000"]);
    let mut ws = ws_connect(server.endpoint());
    send_frame(&mut ws, true, BINARY, &[7u8; 5000]);
    let (_, opcode, payload) = read_frame(&mut ws);
    assert_eq!(opcode, CLOSE);
    assert_eq!(payload[..2], 1009u16.to_be_bytes(), "message too big");
    let mut ws = ws_connect(server.endpoint());
    send_frame(&mut ws, true, TEXT, &[0xff, 0xfe]);
    let (_, opcode, payload) = read_frame(&mut ws);
    assert_eq!(opcode, CLOSE);
    assert_eq!(
        payload[..2],
        1007u16.to_be_bytes(),
        "text that is not UTF-8"
    );
}

#[test]
fn ws_clients_connect_ping_and_bench() {
    let server = serve(&["http://127.0.0.1:0", "https://127.0.0.1:0"], &[]);
    let port = common::ip_addr_of(&server.endpoints[0]).port();
    let ws = format!("ws://127.0.0.1:{port}/echo");
    let out = sockecho(&["connect", &ws, "-m", "hello", "-m", "two words"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "hello\ntwo words\n");
    // Lines of standard input, each one message.
    let out = sockecho(&["connect", &ws], b"first\nsecond\n");
    assert_eq!(out.stdout_text(), "first\nsecond\n", "{}", out.stderr);
    let out = sockecho(
        &["ping", &ws, "-c", "3", "-i", "20ms", "-s", "200", "--json"],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let ping: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ping["received"], 3);
    assert_eq!(ping["corrupt"], 0);
    for options in [&["--pipeline", "4"][..], &["--rate", "2000"][..]] {
        let mut args = vec![
            ws.as_str(),
            "-c",
            "3",
            "-s",
            "300",
            "-d",
            "500ms",
            "--warmup",
            "0s",
        ];
        args.extend_from_slice(options);
        let (report, code, stderr) = common::bench_report(&[], &args);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(report["endpoint"], ws);
        assert_eq!(report["mismatches"], 0);
        assert_eq!(report["errors"], 0);
        assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
        assert!(report["latency_us"]["histogram"].is_string());
    }
    // wss:// through TLS, the certificate pinned by the fingerprint serve
    // printed.
    let tls_port = common::ip_addr_of(&server.endpoints[1]).port();
    let wss = format!("wss://127.0.0.1:{tls_port}");
    let out = sockecho(&["connect", &wss, "--insecure", "-m", "over tls"], b"");
    assert_eq!(out.stdout_text(), "over tls\n", "{}", out.stderr);
}

#[test]
fn ws_clients_say_when_the_server_is_no_websocket_server() {
    let server = serve(&["127.0.0.1:0"], &[]);
    let port = server.port();
    let out = sockecho(
        &["connect", &format!("ws://127.0.0.1:{port}"), "-m", "x"],
        b"",
    );
    let line = common::assert_error_line(&out, 1);
    assert!(line.contains("cannot connect to ws://127.0.0.1:"), "{line}");
    // bench and ping measure echoes: http:// answers JSON, so they refuse
    // it with the forms that work.
    let out = sockecho(
        &["bench", &format!("http://127.0.0.1:{port}"), "-d", "1s"],
        b"",
    );
    let line = common::assert_error_line(&out, 2);
    assert!(line.contains("ws://127.0.0.1:"), "{line}");
}

// --metrics

/// `GET /metrics` from `url` (`http://IP:PORT/metrics`): the samples by
/// their full text before the value.
fn scrape(url: &str) -> Vec<(String, f64)> {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, _) = rest.split_once('/').unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut conn = Conn::Tcp(tcp);
    let response = read_response(&mut conn, false);
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        response.headers
    );
    String::from_utf8(response.body)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn sample(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name} in {samples:#?}"))
}

/// Scrapes until `name` reaches `want` (the server counts a connection's
/// end after the client sees it), bounded by [`WAIT`].
fn scrape_until(url: &str, name: &str, want: f64) -> Vec<(String, f64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(url);
        if samples.iter().any(|(n, v)| n == name && *v == want) || Instant::now() > deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_every_endpoint() {
    let server = serve(
        &[
            "tcp://127.0.0.1:0",
            "udp://127.0.0.1:0",
            "http://127.0.0.1:0",
        ],
        &["--metrics", "127.0.0.1:0"],
    );
    let line = server.line();
    let url = line
        .strip_prefix("metrics ok ")
        .unwrap_or_else(|| panic!("expected `metrics ok URL`, got {line:?}"))
        .to_owned();
    let (tcp, udp, http) = (
        server.endpoints[0].clone(),
        server.endpoints[1].clone(),
        server.endpoints[2].clone(),
    );
    let zero = scrape(&url);
    assert_eq!(
        sample(
            &zero,
            &format!("sockecho_connections_total{{endpoint=\"{tcp}\"}}")
        ),
        0.0
    );
    // Three TCP connections, 1000 bytes each; one open while scraping.
    for _ in 0..2 {
        let back = common::echo_stream(common::connect(&tcp), &[5u8; 1000]);
        assert_eq!(back.len(), 1000);
    }
    let mut open = common::connect(&tcp);
    assert_eq!(open.echo(&[6u8; 1000]).len(), 1000);
    let client = common::connect_dgram(&udp);
    for _ in 0..4 {
        assert_eq!(client.exchange(b"datagram"), b"datagram");
    }
    parse_one(&exchange_at(
        &http,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ));
    // The io_uring engine counts a send once its completion is reaped,
    // which may wait for the engine's next wake-up (at most its tick).
    let samples = scrape_until(
        &url,
        &format!("sockecho_bytes_sent_total{{endpoint=\"{tcp}\"}}"),
        3000.0,
    );
    let get = |name: &str, endpoint: &str| {
        sample(&samples, &format!("{name}{{endpoint=\"{endpoint}\"}}"))
    };
    assert_eq!(get("sockecho_connections_open", &tcp), 1.0);
    assert_eq!(get("sockecho_connections_total", &tcp), 3.0);
    assert_eq!(get("sockecho_bytes_received_total", &tcp), 3000.0);
    assert_eq!(get("sockecho_bytes_sent_total", &tcp), 3000.0);
    assert_eq!(get("sockecho_datagrams_received_total", &udp), 4.0);
    assert_eq!(get("sockecho_datagrams_answered_total", &udp), 4.0);
    assert_eq!(get("sockecho_bytes_received_total", &udp), 32.0);
    assert_eq!(get("sockecho_connections_total", &http), 1.0);
    assert_eq!(
        sample(
            &samples,
            &format!("sockecho_http_requests_total{{endpoint=\"{http}\",code=\"200\"}}")
        ),
        1.0
    );
    assert_eq!(sample(&samples, "sockecho_events_dropped_total"), 0.0);
    drop(open);
    let samples = scrape_until(
        &url,
        &format!("sockecho_connections_open{{endpoint=\"{tcp}\"}}"),
        0.0,
    );
    assert_eq!(get_open(&samples, &tcp), 0.0);
}

fn get_open(samples: &[(String, f64)], endpoint: &str) -> f64 {
    sample(
        samples,
        &format!("sockecho_connections_open{{endpoint=\"{endpoint}\"}}"),
    )
}

#[test]
fn metrics_count_refusals_and_websocket_messages() {
    let server = serve(
        &["tcp://127.0.0.1:0", "http://127.0.0.1:0"],
        &["--metrics", "127.0.0.1:0", "--deny", "127.0.0.1"],
    );
    let line = server.line();
    let url = line.strip_prefix("metrics ok ").unwrap().to_owned();
    let tcp = server.endpoints[0].clone();
    let mut refused = common::connect(&tcp);
    assert!(refused.read_to_close().is_empty());
    let samples = scrape_until(
        &url,
        &format!("sockecho_connections_refused_total{{endpoint=\"{tcp}\",reason=\"access_list\"}}"),
        1.0,
    );
    assert_eq!(
        sample(
            &samples,
            &format!(
                "sockecho_connections_refused_total{{endpoint=\"{tcp}\",reason=\"access_list\"}}"
            )
        ),
        1.0
    );
    drop(server);
    let server = serve(&["http://127.0.0.1:0"], &["--metrics", "127.0.0.1:0"]);
    let line = server.line();
    let url = line.strip_prefix("metrics ok ").unwrap().to_owned();
    let http = server.endpoints[0].clone();
    let mut ws = ws_connect(&http);
    send_frame(&mut ws, true, TEXT, b"one");
    read_frame(&mut ws);
    send_frame(&mut ws, true, BINARY, b"two");
    read_frame(&mut ws);
    send_frame(&mut ws, true, BINARY, b"three");
    read_frame(&mut ws);
    let samples = scrape(&url);
    let messages = |kind: &str| {
        sample(
            &samples,
            &format!("sockecho_websocket_messages_total{{endpoint=\"{http}\",type=\"{kind}\"}}"),
        )
    };
    assert_eq!(messages("text"), 1.0);
    assert_eq!(messages("binary"), 2.0);
    assert_eq!(
        sample(
            &samples,
            &format!("sockecho_http_requests_total{{endpoint=\"{http}\",code=\"101\"}}")
        ),
        1.0
    );
    drop(ws);
}

#[test]
fn metrics_must_be_a_tcp_address() {
    let out = sockecho(
        &["serve", "127.0.0.1:0", "--metrics", "udp://127.0.0.1:0"],
        b"",
    );
    let line = common::assert_error_line(&out, 2);
    assert!(line.contains("--metrics"), "{line}");
}

#[test]
fn a_proxy_headers_client_is_reflected() {
    let server = serve(&["http://127.0.0.1:0"], &["--proxy-protocol"]);
    let answer = exchange(
        &server,
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n\
          GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let json = parse_one(&answer).json();
    assert_eq!(json["peer"], "198.51.100.9:5555");
    assert_eq!(json["client"], "198.51.100.9:5555");
    assert!(
        json["proxy"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{json}"
    );
}
