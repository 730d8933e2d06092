//! sockecho against clients and servers it did not write: the lesson's own
//! Python scripts, netcat (OpenBSD) and socat.
//!
//! A missing tool skips its test with a note, unless
//! `SOCKECHO_REQUIRE_INTEROP=1` (set by CI), where it fails instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::common::*;

/// The lesson's scripts: `$SOCKECHO_LESSON_DIR`, else `../shared/lesson`
/// next to the crate, else the copy in `tests/lesson`.
fn lesson_dir() -> Option<PathBuf> {
    let candidates = std::env::var_os("SOCKECHO_LESSON_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/lesson")),
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lesson")),
        ]);
    for dir in candidates {
        if dir.join("client.py").is_file() && dir.join("server.py").is_file() {
            return Some(dir);
        }
    }
    assert!(
        !interop_required(),
        "the lesson's scripts are missing (set SOCKECHO_LESSON_DIR), and \
         SOCKECHO_REQUIRE_INTEROP=1 says interop tests must run"
    );
    eprintln!("note: the lesson's scripts are not found; skipping");
    None
}

fn script(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn lesson_client_against_sockecho_serve() {
    let Some(dir) = lesson_dir() else { return };
    if !require_tool("python3") {
        return;
    }
    let mut server = serve(
        &["tcp://127.0.0.1:0"],
        &["--once", "--greeting", "Connection success"],
    );
    let port = server.port().to_string();
    let out = run("python3", &[&script(&dir, "client.py"), &port], b"");
    assert_eq!(out.code(), 0, "client.py: {}", out.stderr);
    assert_eq!(out.stdout_text(), "Connection success\n");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "serve --once: {}", exited.stderr);
}

#[test]
fn sockecho_connect_against_lesson_server() {
    let Some(dir) = lesson_dir() else { return };
    if !require_tool("python3") {
        return;
    }
    // server.py takes a fixed port: take a free one, and try again should
    // another process grab it before the script binds it.
    for _ in 0..5 {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port().to_string()
        };
        let mut server = Proc::spawn("python3", &["-u", &script(&dir, "server.py"), &port]);
        match server.try_line() {
            Some(line) => assert_eq!(line, "listen ok"),
            None => continue,
        }
        let out = sockecho(&["connect", &format!("tcp://127.0.0.1:{port}")], b"");
        assert_eq!(out.code(), 0, "connect: {}", out.stderr);
        assert_eq!(out.stdout_text(), "Connection success");
        let exited = server.wait_exit();
        assert!(exited.status.success(), "server.py: {}", exited.stderr);
        assert!(
            exited.rest.iter().any(|l| l.starts_with("connection (")),
            "{:?}",
            exited.rest
        );
        return;
    }
    panic!("server.py could not bind a free port in 5 tries");
}

#[test]
fn netcat_echoes_through_sockecho() {
    if !require_tool("nc") {
        return;
    }
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &["-q"]);
    let tcp = ip_addr_of(&server.endpoints[0]);
    let udp = ip_addr_of(&server.endpoints[1]);

    // -N: shut down the write side at end of input, then read to the end.
    let data = random_bytes(256 * 1024, 30);
    let (host, port) = (tcp.ip().to_string(), tcp.port().to_string());
    let out = run("nc", &["-N", &host, &port], &data);
    assert_eq!(out.code(), 0, "nc: {}", out.stderr);
    assert_bytes_eq(&out.stdout, &data, "nc -N over TCP");

    let (host, port) = (udp.ip().to_string(), udp.port().to_string());
    let out = run("nc", &["-u", "-w1", &host, &port], b"over udp\n");
    assert_eq!(out.stdout_text(), "over udp\n", "nc -u: {}", out.stderr);
}

#[test]
fn socat_echoes_through_sockecho() {
    if !require_tool("socat") {
        return;
    }
    let path = TempPath::new("socat.sock");
    let server = serve(
        &[
            "tcp://127.0.0.1:0",
            "udp://127.0.0.1:0",
            &format!("unix:{}", path.text()),
        ],
        &["-q"],
    );
    let tcp = ip_addr_of(&server.endpoints[0]);
    let udp = ip_addr_of(&server.endpoints[1]);
    let data = random_bytes(256 * 1024, 31);

    // -t 5: after our end of input, wait up to 5 s for the echo's end (it
    // ends as soon as the server closes).
    for target in [
        format!("TCP:{tcp}"),
        format!("UNIX-CONNECT:{}", path.text()),
    ] {
        let out = run("socat", &["-t", "5", "-", &target], &data);
        assert_eq!(out.code(), 0, "socat {target}: {}", out.stderr);
        assert_bytes_eq(&out.stdout, &data, &format!("socat {target}"));
    }

    // A datagram has no end: socat stops 1 s after its input ends.
    let out = run(
        "socat",
        &["-t", "1", "-", &format!("UDP:{udp}")],
        b"dgram\n",
    );
    assert_eq!(out.code(), 0, "socat UDP: {}", out.stderr);
    assert_eq!(out.stdout_text(), "dgram\n");
}

#[test]
fn sockecho_connect_against_socat_echo() {
    if !require_tool("socat") {
        return;
    }
    for _ in 0..5 {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        // socat says it is listening only on standard error (-d -d), so
        // the shell joins the two streams.
        let command =
            format!("exec socat -d -d TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr PIPE 2>&1");
        let socat = Proc::spawn("sh", &["-c", &command]);
        let mut listening = false;
        while let Some(line) = socat.try_line() {
            if line.contains("listening on") {
                listening = true;
                break;
            }
        }
        if !listening {
            continue;
        }
        let data = random_bytes(64 * 1024, 32);
        let out = sockecho(&["connect", &format!("tcp://127.0.0.1:{port}")], &data);
        assert_eq!(out.code(), 0, "connect: {}", out.stderr);
        assert_bytes_eq(&out.stdout, &data, "sockecho connect through socat PIPE");
        return;
    }
    panic!("socat could not listen on a free port in 5 tries");
}
