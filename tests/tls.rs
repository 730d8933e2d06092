//! tls:// endpoints through the real binary: the self-signed certificate
//! and its fingerprint, a given certificate and CA, verification failures,
//! connect/ping/bench over TLS, and interop with the real `openssl s_client`
//! and `socat OPENSSL:` clients.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{TempPath, random_bytes, require_tool, run, serve, sockecho};

/// `host:port` of a tls:// endpoint.
fn addr(endpoint: &str) -> &str {
    endpoint.trim_start_matches("tls://")
}

/// A self-signed certificate for 127.0.0.1 and localhost, made by openssl:
/// (cert.pem, key.pem). `None` (test skipped) without openssl.
fn openssl_cert(tag: &str) -> Option<(TempPath, TempPath)> {
    if !require_tool("openssl") {
        return None;
    }
    let cert = TempPath::new(&format!("{tag}-cert.pem"));
    let key = TempPath::new(&format!("{tag}-key.pem"));
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
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            &key.text(),
            "-out",
            &cert.text(),
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "openssl req: {}", out.stderr);
    Some((cert, key))
}

#[test]
fn self_signed_certificate_fingerprint_follows_listen_ok() {
    let server = serve(&["tls://127.0.0.1:0"], &["-q"]);
    let line = server.line();
    let fingerprint = line
        .strip_prefix("tls fingerprint sha256:")
        .unwrap_or_else(|| panic!("no fingerprint line after listen ok: {line:?}"))
        .to_owned();
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    assert!(
        fingerprint
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );

    // The fingerprint is the certificate's, as openssl computes it.
    if require_tool("openssl") {
        let shown = run(
            "openssl",
            &[
                "s_client",
                "-connect",
                addr(server.endpoint()),
                "-showcerts",
            ],
            b"",
        );
        let pem = shown.stdout_text();
        let x509 = run(
            "openssl",
            &["x509", "-noout", "-fingerprint", "-sha256"],
            pem.as_bytes(),
        );
        let theirs = x509
            .stdout_text()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .trim()
            .replace(':', "")
            .to_lowercase();
        assert_eq!(theirs, fingerprint);
    }
}

#[test]
fn insecure_clients_echo_and_verifying_clients_refuse_a_self_signed_server() {
    let server = serve(&["tls://127.0.0.1:0"], &["-q"]);
    let endpoint = server.endpoint();
    // 1 MiB with half-close through TLS (close_notify, then FIN).
    let data = random_bytes(1 << 20, 11);
    let out = sockecho(&["connect", endpoint, "--insecure"], &data);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stdout == data,
        "TLS echo differs ({} bytes back)",
        out.stdout.len()
    );

    let out = sockecho(&["connect", endpoint, "-m", "x"], b"");
    let line = common::assert_error_line(&out, 1);
    assert!(
        line.starts_with(&format!("error: cannot connect to {endpoint}: ")),
        "{line}"
    );
    assert!(line.contains("certificate"), "{line}");
}

#[test]
fn a_given_certificate_verifies_against_its_ca_and_not_another() {
    let Some((cert, key)) = openssl_cert("given") else {
        return;
    };
    let Some((other, _other_key)) = openssl_cert("other") else {
        return;
    };
    let server = serve(
        &["tls://127.0.0.1:0"],
        &["--tls-cert", &cert.text(), "--tls-key", &key.text()],
    );
    let endpoint = server.endpoint().to_owned();
    let out = sockecho(
        &[
            "connect",
            &endpoint,
            "--tls-ca",
            &cert.text(),
            "-m",
            "trusted",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout, b"trusted\n");
    // No fingerprint line for a certificate the user gave.
    assert!(server.line().starts_with("connection from "));

    let out = sockecho(
        &["connect", &endpoint, "--tls-ca", &other.text(), "-m", "x"],
        b"",
    );
    let line = common::assert_error_line(&out, 1);
    assert!(line.contains("invalid peer certificate"), "{line}");

    // A missing or half-given key is a clear error, not a panic.
    let out = sockecho(
        &["serve", "tls://127.0.0.1:0", "--tls-cert", &cert.text()],
        b"",
    );
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let out = sockecho(
        &[
            "serve",
            "tls://127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            &key.text(),
        ],
        b"",
    );
    let line = common::assert_error_line(&out, 1);
    assert!(line.contains("/nonexistent.pem"), "{line}");
}

#[test]
fn ping_and_bench_over_tls() {
    let server = serve(&["tls://127.0.0.1:0"], &["-q"]);
    let endpoint = server.endpoint();
    let out = sockecho(
        &[
            "ping",
            endpoint,
            "--insecure",
            "-c",
            "2",
            "-i",
            "50ms",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["received"], 2);
    let out = sockecho(
        &[
            "bench",
            endpoint,
            "--insecure",
            "-c",
            "2",
            "-d",
            "300ms",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["messages"].as_u64().unwrap() > 0);
    assert_eq!(report["mismatches"], 0);
}

#[test]
fn openssl_s_client_echoes() {
    if !require_tool("openssl") {
        return;
    }
    let server = serve(&["tls://127.0.0.1:0"], &["-q"]);
    let mut client = common::KillOnDrop(
        Command::new("openssl")
            .args(["s_client", "-connect", addr(server.endpoint()), "-quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client"),
    );
    let mut stdin = client.0.stdin.take().unwrap();
    let stdout = client.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    stdin.write_all(b"hello through openssl\n").unwrap();
    stdin.flush().unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an echo from s_client");
    assert_eq!(line, "hello through openssl\n");
}

#[test]
fn socat_openssl_echoes() {
    if !require_tool("socat") {
        return;
    }
    let server = serve(&["tls://127.0.0.1:0"], &["-q"]);
    let data = random_bytes(64 * 1024, 5);
    let target = format!("OPENSSL:{},verify=0", addr(server.endpoint()));
    let out = run("socat", &["-t", "5", "-", &target], &data);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stdout == data,
        "socat OPENSSL echo differs ({} bytes)",
        out.stdout.len()
    );
}

#[test]
fn json_events_carry_the_fingerprint() {
    let server = common::Proc::sockecho(&["serve", "tls://127.0.0.1:0", "--json"]);
    let listen: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
    assert_eq!(listen["event"], "listen");
    let line = server.line();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "tls");
    assert!(
        event["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

/// `echo LINE | ncat --ssl HOST PORT`: ncat ends its input with a TCP FIN
/// and no TLS close_notify, and sends the IP address as SNI. The server
/// takes that as the end of the input: it echoes, ends the TLS session
/// with close_notify (ncat exits 0), records no error reason, and prints
/// no warning.
#[test]
fn ncat_ssl_ends_without_close_notify_and_exits_zero() {
    if !require_tool("ncat") {
        return;
    }
    let mut server = common::Proc::sockecho(&["serve", "tls://127.0.0.1:0", "--json"]);
    let listen: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
    let endpoint = listen["endpoint"].as_str().unwrap().to_owned();
    let fingerprint: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
    assert_eq!(fingerprint["event"], "tls");
    let (host, port) = addr(&endpoint).rsplit_once(':').unwrap();

    let line = b"hello through ncat\n";
    let out = run("ncat", &["--ssl", host, port], line);
    assert_eq!(out.code(), 0, "ncat: {}", out.stderr);
    assert_eq!(out.stdout, line, "ncat's echo; stderr: {}", out.stderr);

    let connection: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
    assert_eq!(connection["event"], "connection");
    let closed: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
    assert_eq!(closed["event"], "closed");
    assert_eq!(closed["bytes_in"], line.len());
    assert_eq!(closed["bytes_out"], line.len());
    assert!(
        closed.get("reason").is_none(),
        "a clean end of input is no error: {closed}"
    );

    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    // Nothing a peer does prints a line per connection at the default
    // level (rustls warns of the IP address ncat sends as SNI).
    assert!(
        !exited.stderr.contains("WARN") && !exited.stderr.contains("SNI"),
        "{}",
        exited.stderr
    );
}

/// A TLS server (Python's ssl module) that sends one line, then ends the
/// TCP stream without a TLS close_notify (`SSLSocket.shutdown` is the
/// socket's, not TLS's), then waits for the client to close. Prints its
/// port first.
const SERVER_WITHOUT_CLOSE_NOTIFY: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
listener.settimeout(10)
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.settimeout(10)
tls = ctx.wrap_socket(conn, server_side=True)
tls.sendall(b"hello without close_notify\n")
tls.shutdown(socket.SHUT_WR)
while tls.recv(4096):
    pass
"#;

/// The client side of the same: `sockecho connect tls://` against a server
/// that ends without close_notify prints everything and exits 0.
#[test]
fn connect_takes_a_server_end_without_close_notify_as_the_end() {
    if !require_tool("python3") {
        return;
    }
    let Some((cert, key)) = openssl_cert("no-close-notify") else {
        return;
    };
    let server = common::Proc::spawn(
        "python3",
        &["-c", SERVER_WITHOUT_CLOSE_NOTIFY, &cert.text(), &key.text()],
    );
    let port = server.line();
    let endpoint = format!("tls://127.0.0.1:{port}");
    let out = sockecho(&["connect", &endpoint, "--tls-ca", &cert.text()], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "hello without close_notify\n");
}

// --- TLS facts, mutual TLS, pinning, certificates made the usual way --------

/// Runs `openssl ARGS...`, which must succeed.
fn openssl(args: &[&str]) {
    let out = run("openssl", args, b"");
    assert_eq!(out.code(), 0, "openssl {}: {}", args.join(" "), out.stderr);
}

/// A certificate made the way most guides make one: `openssl req -x509
/// -newkey rsa:2048 -nodes` with `extra` arguments, which marks it CA:TRUE.
/// (cert.pem, key.pem); `None` without openssl.
fn usual_cert(tag: &str, subject: &str, extra: &[&str]) -> Option<(TempPath, TempPath)> {
    if !require_tool("openssl") {
        return None;
    }
    let cert = TempPath::new(&format!("{tag}-cert.pem"));
    let key = TempPath::new(&format!("{tag}-key.pem"));
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
    ];
    args.extend_from_slice(extra);
    let (k, c) = (key.text(), cert.text());
    args.extend_from_slice(&["-keyout", &k, "-out", &c]);
    openssl(&args);
    Some((cert, key))
}

/// `openssl s_client ARGS -connect ADDR -quiet`, sent one line; the line
/// echoed back (empty when none came).
fn s_client_line(addr: &str, args: &[&str], line: &[u8]) -> String {
    let mut all = vec!["s_client", "-connect", addr, "-quiet"];
    all.extend_from_slice(args);
    let mut client = common::KillOnDrop(
        Command::new("openssl")
            .args(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client"),
    );
    let mut stdin = client.0.stdin.take().unwrap();
    let stdout = client.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = String::new();
        let _ = BufReader::new(stdout).read_line(&mut got);
        let _ = tx.send(got);
    });
    let _ = stdin.write_all(line);
    let _ = stdin.flush();
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default()
}

/// The next line of a `--json` server, as JSON.
fn json_line(server: &common::Proc) -> serde_json::Value {
    let line = server.line();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// `serve tls://127.0.0.1:0 OPTIONS --json`, past its `listen` (and, with
/// a self-signed certificate, `tls`) events: the server, its endpoint and
/// its fingerprint, if printed.
fn serve_tls_json(options: &[&str]) -> (common::Proc, String, Option<String>) {
    let mut args = vec!["serve", "tls://127.0.0.1:0", "--json"];
    args.extend_from_slice(options);
    let server = common::Proc::sockecho(&args);
    let listen = json_line(&server);
    let endpoint = listen["endpoint"].as_str().unwrap().to_owned();
    let fingerprint = if options.contains(&"--tls-cert") {
        None
    } else {
        let tls = json_line(&server);
        assert_eq!(tls["event"], "tls");
        Some(tls["fingerprint"].as_str().unwrap().to_owned())
    };
    (server, endpoint, fingerprint)
}

#[test]
fn connection_events_carry_the_tls_facts_openssl_asked_for() {
    if !require_tool("openssl") {
        return;
    }
    let (server, endpoint, _) = serve_tls_json(&["--tls-alpn", "h2", "--tls-alpn", "http/1.1"]);
    let echoed = s_client_line(
        addr(&endpoint),
        &["-servername", "echo.test", "-alpn", "h2"],
        b"facts\n",
    );
    assert_eq!(echoed, "facts\n");
    let connection = json_line(&server);
    assert_eq!(connection["event"], "connection");
    let tls = &connection["tls"];
    assert_eq!(tls["version"], "TLSv1.3", "{connection}");
    assert_eq!(tls["sni"], "echo.test");
    assert_eq!(tls["alpn"], "h2");
    assert!(tls["cipher"].as_str().unwrap().starts_with("TLS_"), "{tls}");
    assert!(tls.get("client_subject").is_none(), "{tls}");

    // sockecho's own client: SNI and ALPN as asked; by IP, no SNI (null).
    let out = sockecho(
        &[
            "connect",
            &endpoint,
            "--insecure",
            "--tls-sni",
            "localhost",
            "--tls-alpn",
            "http/1.1",
            "-m",
            "x",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let mut tls = serde_json::Value::Null;
    while tls.is_null() {
        let event = json_line(&server);
        if event["event"] == "connection" {
            tls = event["tls"].clone();
        }
    }
    assert_eq!(tls["sni"], "localhost");
    assert_eq!(tls["alpn"], "http/1.1");
    let out = sockecho(&["connect", &endpoint, "--insecure", "-m", "x"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let mut tls = serde_json::Value::Null;
    while tls.is_null() {
        let event = json_line(&server);
        if event["event"] == "connection" {
            tls = event["tls"].clone();
        }
    }
    assert!(
        tls.get("sni").is_some_and(serde_json::Value::is_null),
        "{tls}"
    );
    assert!(
        tls.get("alpn").is_some_and(serde_json::Value::is_null),
        "{tls}"
    );
}

#[test]
fn mutual_tls_with_openssl_and_a_certificate_made_the_usual_way() {
    let Some((cert, key)) = usual_cert("client", "/CN=client/O=Echo", &[]) else {
        return;
    };
    let (server, endpoint, _) = serve_tls_json(&["--tls-client-ca", &cert.text()]);
    let echoed = s_client_line(
        addr(&endpoint),
        &["-cert", &cert.text(), "-key", &key.text()],
        b"mutual\n",
    );
    assert_eq!(echoed, "mutual\n");
    let connection = json_line(&server);
    assert_eq!(
        connection["tls"]["client_subject"], "CN=client, O=Echo",
        "{connection}"
    );
    assert_eq!(json_line(&server)["event"], "closed");

    // Without a certificate: no echo, and the closed event says why.
    assert_eq!(s_client_line(addr(&endpoint), &[], b"anonymous\n"), "");
    let connection = json_line(&server);
    assert!(connection.get("tls").is_none(), "{connection}");
    let closed = json_line(&server);
    let reason = closed["reason"].as_str().unwrap();
    assert!(reason.contains("TLS handshake failed"), "{reason}");
    assert_eq!(closed["bytes_out"], 0);

    // sockecho's own client presents one with --tls-cert/--tls-key.
    let out = sockecho(
        &[
            "connect",
            &endpoint,
            "--insecure",
            "--tls-cert",
            &cert.text(),
            "--tls-key",
            &key.text(),
            "-m",
            "own client",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "own client\n");
    let out = sockecho(
        &[
            "connect",
            &endpoint,
            "--insecure",
            "--tls-cert",
            &cert.text(),
            "-m",
            "x",
        ],
        b"",
    );
    assert_eq!(
        out.code(),
        2,
        "a certificate without its key: {}",
        out.stderr
    );
}

#[test]
fn a_server_certificate_made_the_usual_way_works_with_tls_ca() {
    let Some((cert, key)) = usual_cert(
        "usual",
        "/CN=localhost",
        &["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
    ) else {
        return;
    };
    let server = serve(
        &["tls://127.0.0.1:0"],
        &["-q", "--tls-cert", &cert.text(), "--tls-key", &key.text()],
    );
    let out = sockecho(
        &[
            "connect",
            server.endpoint(),
            "--tls-ca",
            &cert.text(),
            "-m",
            "CA:TRUE is fine",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "CA:TRUE is fine\n");

    // No subjectAltName at all: its common name is the name, as OpenSSL
    // checks it; by IP the error says what to add.
    let Some((bare, bare_key)) = usual_cert("bare", "/CN=localhost", &[]) else {
        return;
    };
    let server = serve(
        &["tls://127.0.0.1:0"],
        &[
            "-q",
            "--tls-cert",
            &bare.text(),
            "--tls-key",
            &bare_key.text(),
        ],
    );
    let endpoint = server.endpoint();
    let out = sockecho(
        &[
            "connect",
            endpoint,
            "--tls-ca",
            &bare.text(),
            "--tls-sni",
            "localhost",
            "-m",
            "cn",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let out = sockecho(
        &["connect", endpoint, "--tls-ca", &bare.text(), "-m", "x"],
        b"",
    );
    let line = common::assert_error_line(&out, 1);
    assert!(
        line.contains("CN=localhost and no subjectAltName, not 127.0.0.1"),
        "{line}"
    );
    assert!(line.contains("--tls-sni NAME"), "{line}");

    // A CA:TRUE certificate issued by another CA: refused by any TLS
    // client, and the error says what to change.
    let Some((ca, ca_key)) = usual_cert("ca", "/CN=Test CA", &[]) else {
        return;
    };
    let leaf_key = TempPath::new("leaf-key.pem");
    let csr = TempPath::new("leaf.csr");
    let leaf = TempPath::new("leaf-cert.pem");
    let ext = TempPath::new("leaf.ext");
    std::fs::write(
        ext.path(),
        "basicConstraints=critical,CA:TRUE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=leaf",
        "-keyout",
        &leaf_key.text(),
        "-out",
        &csr.text(),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr.text(),
        "-CA",
        &ca.text(),
        "-CAkey",
        &ca_key.text(),
        "-set_serial",
        "7",
        "-days",
        "1",
        "-extfile",
        &ext.text(),
        "-out",
        &leaf.text(),
    ]);
    let server = serve(
        &["tls://127.0.0.1:0"],
        &[
            "-q",
            "--tls-cert",
            &leaf.text(),
            "--tls-key",
            &leaf_key.text(),
        ],
    );
    let out = sockecho(
        &[
            "connect",
            server.endpoint(),
            "--tls-ca",
            &ca.text(),
            "-m",
            "x",
        ],
        b"",
    );
    let line = common::assert_error_line(&out, 1);
    assert!(line.contains("CA:TRUE"), "{line}");
    assert!(
        line.contains("basicConstraints=critical,CA:FALSE"),
        "{line}"
    );
    assert!(line.contains("--tls-fingerprint"), "{line}");
}

#[test]
fn clients_pin_the_fingerprint_serve_printed() {
    let server = serve(&["tls://127.0.0.1:0"], &["-q"]);
    let endpoint = server.endpoint().to_owned();
    let line = server.line();
    let pin = line.strip_prefix("tls fingerprint ").unwrap().to_owned();
    let out = sockecho(
        &[
            "connect",
            &endpoint,
            "--tls-fingerprint",
            &pin,
            "-m",
            "pinned",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "pinned\n");
    let out = sockecho(
        &["ping", &endpoint, "--tls-fingerprint", &pin, "-c", "1"],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);

    let other = format!("sha256:{}", "ab".repeat(32));
    let out = sockecho(
        &["connect", &endpoint, "--tls-fingerprint", &other, "-m", "x"],
        b"",
    );
    let line = common::assert_error_line(&out, 1);
    assert!(line.contains("not the one pinned"), "{line}");
    assert!(line.contains(&pin), "the fingerprint it has: {line}");

    let out = sockecho(
        &[
            "connect",
            &endpoint,
            "--tls-fingerprint",
            "sha256:12",
            "-m",
            "x",
        ],
        b"",
    );
    let line = common::assert_error_line(&out, 2);
    assert!(line.contains("64 hex digits"), "{line}");
    let out = sockecho(
        &[
            "connect",
            &endpoint,
            "--tls-fingerprint",
            &pin,
            "--insecure",
            "-m",
            "x",
        ],
        b"",
    );
    assert_eq!(out.code(), 2, "{}", out.stderr);
}
