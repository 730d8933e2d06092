//! Every error a user can cause: one `error: WHAT: WHY` line on standard
//! error, the contract's exit code (2 usage, 1 otherwise), never a panic.

use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::common::*;

/// `error: WHAT: WHY`: a colon after `error:` separates what from why.
#[track_caller]
fn assert_what_why(line: &str) {
    let rest = line.strip_prefix("error: ").unwrap();
    assert!(rest.contains(": "), "not `error: WHAT: WHY`: {line:?}");
}

#[test]
fn malformed_endpoints_are_usage_errors_naming_the_text() {
    for bad in [
        "bad host:80",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:99999",
        "sctp://127.0.0.1:80",
        "::1:80",
        "unix:",
        "localhost",
    ] {
        for sub in ["serve", "connect"] {
            let out = sockecho(&[sub, bad], b"");
            let line = assert_error_line(&out, 2);
            assert_what_why(&line);
            assert!(
                out.stderr.contains(&format!("'{bad}'")),
                "{sub} {bad}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains("127.0.0.1:9999"),
                "{sub} {bad}: no valid example in {}",
                out.stderr
            );
        }
    }
}

#[test]
fn a_mistyped_scheme_gets_the_form_meant_not_blame_on_ipv6() {
    for (typed, meant) in [
        ("udp:127.0.0.1:7000", "udp://127.0.0.1:7000"),
        ("udp:7000", "udp://127.0.0.1:7000"),
        ("udp//127.0.0.1:7000", "udp://127.0.0.1:7000"),
        ("UDP://127.0.0.1:7000", "udp://127.0.0.1:7000"),
        ("upd://127.0.0.1:7000", "udp://127.0.0.1:7000"),
        ("tcp:/x", "tcp://HOST:PORT"),
        ("udp//x", "udp://HOST:PORT"),
        ("unix://tmp/e.sock", "unix:/tmp/e.sock"),
        ("unix-dgram//tmp/e.dgram", "unix-dgram:/tmp/e.dgram"),
        ("::1:7000", "[::1]:7000"),
    ] {
        for sub in ["serve", "connect", "ping", "bench"] {
            let out = sockecho(&[sub, typed], b"");
            let line = assert_error_line(&out, 2);
            assert_what_why(&line);
            assert!(
                line.contains(&format!("'{typed}'")),
                "{sub} {typed}: {line}"
            );
            assert!(
                line.contains(&format!("did you mean {meant}?")),
                "{sub} {typed}: no `did you mean {meant}?` in {line}"
            );
            // Only a real IPv6 address is told about brackets.
            if !typed.starts_with(':') {
                assert!(!line.contains("brackets"), "{sub} {typed}: {line}");
            }
        }
    }
}

#[test]
fn unknown_flags_are_usage_errors() {
    for sub in ["serve", "connect"] {
        let out = sockecho(&[sub, "--no-such-flag"], b"");
        let line = assert_error_line(&out, 2);
        assert!(line.contains("--no-such-flag"), "{line}");
    }
    let out = sockecho(&["--no-such-flag"], b"");
    assert_error_line(&out, 2);
}

#[test]
fn address_in_use() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", tcp.local_addr().unwrap());
    let out = sockecho(&["serve", &endpoint], b"");
    let line = assert_error_line(&out, 1);
    assert_eq!(
        line,
        format!("error: cannot listen on {endpoint}: address already in use")
    );

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("udp://{}", udp.local_addr().unwrap());
    let out = sockecho(&["serve", &endpoint], b"");
    let line = assert_error_line(&out, 1);
    assert!(line.contains("address already in use"), "{line}");

    let path = TempPath::new("busy.sock");
    let _live = UnixListener::bind(path.path()).unwrap();
    let out = sockecho(&["serve", &format!("unix:{}", path.text())], b"");
    let line = assert_error_line(&out, 1);
    assert_what_why(&line);
    assert!(line.contains("address already in use"), "{line}");
}

#[test]
fn one_bad_endpoint_fails_the_whole_serve() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("tcp://{}", tcp.local_addr().unwrap());
    let out = sockecho(&["serve", "udp://127.0.0.1:0", &busy], b"");
    let line = assert_error_line(&out, 1);
    assert!(line.contains("address already in use"), "{line}");
}

#[test]
fn connection_refused() {
    let endpoint = format!("tcp://127.0.0.1:{}", closed_tcp_port());
    let out = sockecho(&["connect", &endpoint, "-m", "hi"], b"");
    let line = assert_error_line(&out, 1);
    assert_eq!(
        line,
        format!("error: cannot connect to {endpoint}: connection refused")
    );

    let path = TempPath::new("nobody.sock");
    let out = sockecho(&["connect", &format!("unix:{}", path.text())], b"");
    let line = assert_error_line(&out, 1);
    assert_what_why(&line);
}

#[test]
fn unix_path_that_is_a_regular_file_is_not_replaced() {
    let path = TempPath::new("regular");
    std::fs::write(path.path(), b"precious").unwrap();
    for endpoint in [
        format!("unix:{}", path.text()),
        format!("unix-dgram:{}", path.text()),
    ] {
        let out = sockecho(&["serve", &endpoint], b"");
        let line = assert_error_line(&out, 1);
        assert_what_why(&line);
        assert!(line.contains("not a socket"), "{line}");
        assert_eq!(std::fs::read(path.path()).unwrap(), b"precious");
    }
}

#[test]
fn stale_unix_socket_file_is_replaced() {
    let path = TempPath::new("stale.sock");
    drop(UnixListener::bind(path.path()).unwrap());
    assert!(path.path().exists(), "the dead listener left its file");
    let server = serve(&[&format!("unix:{}", path.text())], &[]);
    let back = echo_stream(connect(server.endpoint()), b"fresh");
    assert_eq!(back, b"fresh");
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

#[test]
fn low_port_permission_denied_has_a_hint() {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if start.is_some_and(|p| p <= 1) {
        eprintln!("note: every port is unprivileged on this host; skipping");
        return;
    }
    let setpriv = "/usr/bin/setpriv";
    let out = if !is_root() {
        sockecho(&["serve", "tcp://127.0.0.1:1"], b"")
    } else if Path::new(setpriv).exists() {
        let args = [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "serve",
            "tcp://127.0.0.1:1",
        ];
        let out = run(setpriv, &args, b"");
        if out.stderr.starts_with("setpriv:") {
            eprintln!("note: setpriv cannot run the binary as nobody; skipping");
            return;
        }
        out
    } else {
        eprintln!("note: running as root without {setpriv}; skipping");
        return;
    };
    let line = assert_error_line(&out, 1);
    assert!(
        line.starts_with("error: cannot listen on tcp://127.0.0.1:1: permission denied"),
        "{line}"
    );
    assert!(line.contains("CAP_NET_BIND_SERVICE"), "{line}");
}

#[test]
fn a_link_local_address_without_a_zone_says_a_zone_is_needed() {
    for args in [
        &["connect", "[fe80::1]:9999", "-m", "x"][..],
        &["serve", "udp://[fe80::1]:0"],
        &["ping", "udp://[fe80::1%no-such-if0]:9999", "-c", "1"],
    ] {
        let out = sockecho(args, b"");
        let line = assert_error_line(&out, 1);
        assert!(
            line.contains("needs a zone") || line.contains("no network interface named"),
            "{args:?}: {line}"
        );
    }
}
