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
