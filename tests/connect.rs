//! `sockecho connect` against `sockecho serve` (and against plain std
//! sockets where the server must misbehave): messages, standard input with
//! half-close, datagrams, timeouts.

use std::net::UdpSocket;
use std::time::Duration;

use crate::common::*;

#[test]
fn messages_are_sent_each_with_a_newline() {
    let server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let out = sockecho(&["connect", server.endpoint(), "-m", "a", "-m", "b"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "a\nb\n");
}

#[test]
fn standard_input_round_trips_1mib_of_binary_data() {
    let server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let data = random_bytes(MIB, 20);
    let out = sockecho(&["connect", server.endpoint()], &data);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_bytes_eq(&out.stdout, &data, "cat file | sockecho connect | cmp");
}

#[test]
fn standard_input_round_trips_over_unix_streams() {
    let path = TempPath::new("connect.sock");
    let abstract_name = format!("unix:@{}", unique("connect"));
    let server = serve(&[&format!("unix:{}", path.text()), &abstract_name], &["-q"]);
    for (i, endpoint) in server.endpoints.iter().enumerate() {
        let data = random_bytes(256 * 1024, 21 + i as u64);
        let out = sockecho(&["connect", endpoint], &data);
        assert_eq!(out.code(), 0, "{endpoint}: {}", out.stderr);
        assert_bytes_eq(&out.stdout, &data, endpoint);
    }
}

#[test]
fn greeting_comes_before_the_echo() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--greeting", "welcome\n"]);
    let out = sockecho(&["connect", server.endpoint(), "-m", "ping"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "welcome\nping\n");
}

#[test]
fn datagram_replies_are_printed_one_per_line() {
    let path = TempPath::new("connect.dgram");
    let mut endpoints = vec![
        "udp://127.0.0.1:0".to_owned(),
        format!("unix-dgram:{}", path.text()),
        format!("unix-dgram:@{}", unique("connect-dgram")),
    ];
    if has_ipv6() {
        endpoints.push("udp://[::1]:0".to_owned());
    }
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let server = serve(&endpoints, &["-q"]);
    for endpoint in &server.endpoints {
        let out = sockecho(&["connect", endpoint, "-m", "hello", "-m", "world"], b"");
        assert_eq!(out.code(), 0, "{endpoint}: {}", out.stderr);
        assert_eq!(out.stdout_text(), "hello\nworld\n", "{endpoint}");

        // Without -m, each line of standard input is one datagram.
        let out = sockecho(&["connect", endpoint], b"one\ntwo words\nthree");
        assert_eq!(out.code(), 0, "{endpoint}: {}", out.stderr);
        assert_eq!(out.stdout_text(), "one\ntwo words\nthree\n", "{endpoint}");
    }
}

#[test]
fn datagram_to_a_port_nobody_listens_on_fails() {
    let endpoint = format!("udp://127.0.0.1:{}", closed_udp_port());
    let out = sockecho(&["connect", &endpoint, "-m", "anyone?"], b"");
    let line = assert_error_line(&out, 1);
    assert!(
        line.contains(&endpoint),
        "the message names the endpoint: {line}"
    );
    assert!(out.stdout.is_empty(), "printed {:?}", out.stdout_text());
}

#[test]
fn datagram_without_a_reply_times_out() {
    // A bound socket that never answers: no ICMP error, just silence.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let endpoint = format!("udp://{}", silent.local_addr().unwrap());
    let out = sockecho(
        &["connect", &endpoint, "-m", "hello?", "--timeout", "200ms"],
        b"",
    );
    let line = assert_error_line(&out, 1);
    assert!(line.starts_with("error: no reply"), "{line}");
    assert!(line.contains("200ms"), "{line}");
    // The 1 s default would not have been enough to tell the flag works.
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );

    let mut buf = [0u8; 64];
    let (n, _) = silent.recv_from(&mut buf).expect("the datagram was sent");
    assert_eq!(&buf[..n], b"hello?");
}
