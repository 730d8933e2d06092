//! `--mode discard` (RFC 863) and `--mode chargen` (RFC 864) beside echo,
//! over TCP and UDP, through the real binary.

use crate::common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::Duration;

use crate::common::{connect, ip_addr_of, random_bytes, serve};

/// RFC 864's line `n` (0-based): 72 printable characters from the n-th one.
fn chargen_line(n: usize) -> Vec<u8> {
    let printable: Vec<u8> = (b' '..=b'~').collect();
    let mut line: Vec<u8> = (0..72).map(|i| printable[(n + i) % 95]).collect();
    line.extend_from_slice(b"\r\n");
    line
}

#[test]
fn tcp_discard_reads_everything_and_sends_nothing() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--mode", "discard"]);
    let mut conn = connect(server.endpoint());
    let data = random_bytes(100_000, 3);
    conn.write_all(&data).unwrap();
    conn.shutdown_write();
    assert_eq!(conn.read_to_close(), b"", "discard sends nothing back");
    let closed = (0..4)
        .map(|_| server.line())
        .find(|l| l.starts_with("closed "))
        .expect("a closed line");
    assert!(closed.ends_with("in=100000 out=0"), "{closed}");
}

#[test]
fn tcp_chargen_sends_rotating_lines_past_the_client_half_close() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--mode", "chargen", "-q"]);
    let mut conn = connect(server.endpoint());
    // Half-closing does not stop chargen: only closing does.
    conn.shutdown_write();
    let mut got = vec![0u8; 100 * 74];
    conn.read_exact(&mut got).unwrap();
    for (n, line) in got.chunks(74).enumerate() {
        assert_eq!(line, chargen_line(n % 95), "line {n}");
    }
}

#[test]
fn udp_chargen_replies_no_larger_than_the_request() {
    let server = serve(&["udp://127.0.0.1:0"], &["--mode", "chargen", "-q"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(ip_addr_of(server.endpoint())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for request in [10usize, 100, 512, 1400] {
        client.send(&vec![b'x'; request]).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(n, request.min(512), "reply to {request} bytes");
        assert_eq!(&buf[..n], &chargen_cycle()[..n]);
    }
}

fn chargen_cycle() -> Vec<u8> {
    (0..95).flat_map(chargen_line).collect()
}

#[test]
fn udp_discard_never_replies() {
    let server = serve(&["udp://127.0.0.1:0"], &["--mode", "discard", "-q"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(ip_addr_of(server.endpoint())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    client.send(b"anyone?").unwrap();
    let mut buf = [0u8; 64];
    let err = client.recv(&mut buf).expect_err("discard must not reply");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}

#[test]
fn unknown_mode_is_a_usage_error() {
    let out = common::sockecho(&["serve", "--mode", "daytime"], b"");
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(out.stderr.contains("daytime"), "{}", out.stderr);
}
