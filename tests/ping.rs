//! `sockecho ping` through the real binary: against the project's own
//! server over every transport, and against deliberately faulty servers
//! written here, whose faults the report must count exactly.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

use serde_json::Value;

use crate::common;

use crate::common::WAIT;

/// A finished run.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<common::Output> for Ran {
    fn from(out: common::Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: out.stdout_text(),
            stderr: out.stderr,
        }
    }
}

impl Ran {
    fn json(&self) -> Value {
        assert_eq!(
            self.stdout.lines().count(),
            1,
            "one JSON object, nothing else: {self:?}"
        );
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn count(&self, needle: &str) -> usize {
        self.stdout.lines().filter(|l| l.contains(needle)).count()
    }
}

fn ping(args: &[&str]) -> Ran {
    common::sockecho(&[&["ping"], args].concat(), b"").into()
}

/// A fresh socket path in the temporary directory (removed by the server).
fn socket_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(common::unique(what))
}

/// `sockecho serve -q` on the given endpoints, and the endpoints it really
/// listens on, from its `listen ok` lines.
fn serve(endpoints: &[&str]) -> (common::Server, Vec<String>) {
    let server = common::serve(endpoints, &["-q"]);
    let listening = server.endpoints.clone();
    (server, listening)
}

fn assert_clean(ran: &Ran, probes: usize) {
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.count("bytes from"), probes, "{ran:?}");
    let summary = format!("{probes} probes transmitted, {probes} received, 0% loss");
    assert!(ran.stdout.contains(&summary), "{ran:?}");
    assert!(ran.stdout.contains("rtt min/avg/max/mdev = "), "{ran:?}");
    assert!(ran.stdout.contains("rtt p50/p90/p99 = "), "{ran:?}");
}

#[test]
fn pings_own_server_over_every_transport() {
    let stream = socket_path("stream");
    let dgram = socket_path("dgram");
    let unix = format!("unix:{}", stream.display());
    let unix_dgram = format!("unix-dgram:{}", dgram.display());
    let (_server, endpoints) =
        serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0", &unix, &unix_dgram]);
    assert_eq!(endpoints[2], unix);
    let runs: Vec<_> = endpoints
        .iter()
        .map(|e| {
            let e = e.clone();
            thread::spawn(move || ping(&[&e, "-c", "3", "-i", "50ms"]))
        })
        .collect();
    for (endpoint, run) in endpoints.iter().zip(runs) {
        let ran = run.join().expect("ping thread");
        assert_clean(&ran, 3);
        let header = format!("PING {endpoint}: 64 bytes per probe");
        assert!(ran.stdout.starts_with(&header), "{ran:?}");
        for seq in 0..3 {
            assert!(ran.stdout.contains(&format!("seq={seq} time=")), "{ran:?}");
        }
    }
}

#[test]
fn json_has_every_contract_key() {
    let (_server, endpoints) = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    for endpoint in &endpoints {
        let ran = ping(&[endpoint, "-c", "3", "-i", "20ms", "-s", "100", "--json"]);
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let json = ran.json();
        assert_eq!(json["endpoint"], endpoint.as_str());
        assert_eq!(json["sent"], 3);
        assert_eq!(json["received"], 3);
        assert_eq!(json["lost"], 0);
        assert_eq!(json["duplicates"], 0);
        assert_eq!(json["corrupt"], 0);
        let rtt = &json["rtt_us"];
        for key in ["min", "mean", "max", "stddev", "p50", "p90", "p99"] {
            assert!(rtt[key].is_number(), "rtt_us.{key} in {json}");
        }
        let (min, max) = (rtt["min"].as_f64().unwrap(), rtt["max"].as_f64().unwrap());
        assert!(0.0 < min && min <= max, "{json}");
    }
}

#[test]
fn connect_mode_times_tcp_handshakes() {
    let (_server, endpoints) = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    let ran = ping(&[&endpoints[0], "-c", "3", "-i", "20ms", "--connect"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.count("connected to "), 3, "{ran:?}");
    assert!(
        ran.stdout
            .contains("3 probes transmitted, 3 received, 0% loss")
    );

    let ran = ping(&[&endpoints[1], "-c", "1", "--connect"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("--connect"), "{ran:?}");
}

#[test]
fn probe_smaller_than_its_header_is_a_usage_error() {
    let ran = ping(&["udp://127.0.0.1:9", "-c", "1", "-s", "10"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert_eq!(
        ran.stderr.trim(),
        "error: probe size must be at least 24 bytes (the header)"
    );
    assert!(ran.stdout.is_empty(), "{ran:?}");
}

/// A UDP echo server with a fault schedule, by arrival order: drops every
/// third datagram (2, 5, 8), answers datagram 3 twice and corrupts byte 40
/// of datagram 4. Returns after `datagrams` datagrams or a quiet `WAIT`.
fn faulty_udp_server(datagrams: usize) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    socket.set_read_timeout(Some(WAIT)).expect("read timeout");
    let addr = socket.local_addr().expect("local addr");
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for k in 0..datagrams {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                return;
            };
            let reply = &mut buf[..n];
            match k {
                _ if k % 3 == 2 => continue,
                3 => {
                    let _ = socket.send_to(reply, peer);
                    let _ = socket.send_to(reply, peer);
                }
                4 => {
                    reply[40] ^= 0xff;
                    let _ = socket.send_to(reply, peer);
                }
                _ => {
                    let _ = socket.send_to(reply, peer);
                }
            }
        }
    });
    format!("udp://{addr}")
}

const FAULTY_UDP_ARGS: [&str; 6] = ["-c", "9", "-i", "20ms", "-W", "300ms"];

#[test]
fn faulty_udp_server_is_counted_exactly() {
    let endpoint = faulty_udp_server(9);
    let mut args = vec![endpoint.as_str()];
    args.extend_from_slice(&FAULTY_UDP_ARGS);
    args.push("--json");
    let ran = ping(&args);
    // A corrupt reply is never a success.
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let json = ran.json();
    let counts: Vec<_> = [
        "sent",
        "received",
        "lost",
        "duplicates",
        "corrupt",
        "reordered",
    ]
    .iter()
    .map(|k| json[k].as_u64().unwrap_or_else(|| panic!("{k} in {json}")))
    .collect();
    assert_eq!(counts, [9, 5, 3, 1, 1, 0], "{json}");
}

#[test]
fn faulty_udp_server_lines_name_each_fault() {
    let endpoint = faulty_udp_server(9);
    let mut args = vec![endpoint.as_str()];
    args.extend_from_slice(&FAULTY_UDP_ARGS);
    let ran = ping(&args);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    for seq in [2, 5, 8] {
        let line = format!("Request timeout for seq={seq}");
        assert!(ran.stdout.contains(&line), "{ran:?}");
    }
    assert_eq!(ran.count("Request timeout"), 3, "{ran:?}");
    assert_eq!(ran.count("seq=3 time="), 2, "{ran:?}");
    assert_eq!(ran.count("(DUP!)"), 1, "{ran:?}");
    assert!(ran.stdout.contains("seq=4 corrupt at byte 40"), "{ran:?}");
    assert!(
        ran.stdout
            .contains("9 probes transmitted, 5 received, 44.4% loss, 1 duplicates, 1 corrupt"),
        "{ran:?}"
    );
}

/// A TCP echo server for one connection that flips byte 40 of probe
/// `corrupt` (probes of `size` bytes).
fn faulty_tcp_server(size: usize, corrupt: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut buf = vec![0u8; size];
        for k in 0.. {
            if conn.read_exact(&mut buf).is_err() {
                return;
            }
            if k == corrupt {
                buf[40] ^= 0xff;
            }
            if conn.write_all(&buf).is_err() {
                return;
            }
        }
    });
    format!("tcp://{addr}")
}

#[test]
fn faulty_tcp_server_corruption_is_caught() {
    let endpoint = faulty_tcp_server(64, 1);
    let ran = ping(&[&endpoint, "-c", "3", "-i", "20ms"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stdout.contains("seq=1 corrupt at byte 40"), "{ran:?}");
    assert_eq!(ran.count(" time="), 2, "{ran:?}");
    assert!(
        ran.stdout
            .contains("3 probes transmitted, 2 received, 33.3% loss, 0 duplicates, 1 corrupt"),
        "{ran:?}"
    );

    let endpoint = faulty_tcp_server(64, 1);
    let json = ping(&[&endpoint, "-c", "3", "-i", "20ms", "--json"]).json();
    assert_eq!(json["corrupt"], 1, "{json}");
    assert_eq!(json["received"], 2, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
}

#[test]
fn silent_stream_times_out_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let endpoint = format!("tcp://{}", listener.local_addr().expect("addr"));
    let (accepted_tx, accepted) = mpsc::channel();
    thread::spawn(move || {
        // Accept and never answer; keep each connection open until ping
        // closes it (a close would read as "closed by the server").
        let mut held = Vec::new();
        for _ in 0..2 {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            held.push(conn);
            let _ = accepted_tx.send(());
        }
        let mut last = held.pop().expect("a connection");
        last.set_read_timeout(Some(WAIT)).expect("read timeout");
        let _ = std::io::copy(&mut last, &mut std::io::sink());
    });
    let ran = ping(&[&endpoint, "-c", "2", "-i", "50ms", "-W", "100ms"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(ran.count("Request timeout for seq="), 2, "{ran:?}");
    assert!(ran.stdout.contains("reconnecting to "), "{ran:?}");
    assert!(
        ran.stdout
            .contains("2 probes transmitted, 0 received, 100% loss")
    );
    // The second probe went over a new connection.
    for _ in 0..2 {
        accepted.recv_timeout(WAIT).expect("a connection per probe");
    }
}

#[test]
fn refused_tcp_is_an_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let ran = ping(&[&endpoint, "-c", "1"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr.trim(),
        format!("error: cannot connect to {endpoint}: connection refused")
    );
}

#[test]
fn udp_to_a_closed_port_is_total_loss() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("udp://127.0.0.1:{port}");
    let ran = ping(&[&endpoint, "-c", "2", "-i", "20ms", "-W", "200ms"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stdout
            .contains("2 probes transmitted, 0 received, 100% loss")
    );
    assert!(
        ran.stdout.contains("destination port unreachable"),
        "{ran:?}"
    );
}

#[test]
fn runs_until_interrupted() {
    let (_server, endpoints) = serve(&["udp://127.0.0.1:0"]);
    let mut ping = common::Proc::sockecho(&["ping", &endpoints[0], "-i", "20ms"]);
    assert!(ping.line().starts_with("PING "));
    assert!(ping.line().contains("seq=0 time="));
    ping.signal("INT");
    let exited = ping.wait_exit();
    let ran = Ran {
        code: exited.status.code(),
        stdout: exited.rest.join("\n"),
        stderr: exited.stderr,
    };
    assert!(ran.stdout.contains("ping statistics ---"), "{ran:?}");
    assert!(ran.stdout.contains("rtt min/avg/max/mdev"), "{ran:?}");
}

#[test]
fn json_percentiles_lie_between_min_and_max_and_print_briefly() {
    // One probe: its percentiles are its round trip. Read raw from the
    // microsecond histogram they were the whole microsecond above or below
    // (`"max":209.525`, `"p99":210.0`).
    let (_server, endpoints) = serve(&["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]);
    for endpoint in &endpoints {
        for count in ["1", "5"] {
            let ran = ping(&[endpoint, "-c", count, "-i", "10ms", "--json"]);
            assert_eq!(ran.code, Some(0), "{ran:?}");
            let json = ran.json();
            let rtt = &json["rtt_us"];
            let (min, max) = (rtt["min"].as_f64().unwrap(), rtt["max"].as_f64().unwrap());
            for key in ["p50", "p90", "p99", "mean"] {
                let v = rtt[key].as_f64().unwrap();
                assert!(
                    min <= v && v <= max,
                    "{key} {v} outside [{min}, {max}]: {json}"
                );
            }
            if count == "1" {
                assert_eq!(rtt["p50"], rtt["min"], "{json}");
                assert_eq!(rtt["p99"], rtt["max"], "{json}");
            }
            // Microseconds to the nanosecond, no binary tail.
            for key in ["min", "mean", "max", "stddev", "p50", "p90", "p99"] {
                let text = rtt[key].to_string();
                let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
                assert!(decimals <= 3, "rtt_us.{key} = {text}");
            }
            let loss = json["loss_percent"].to_string();
            assert!(loss.len() <= 7, "{loss}");
        }
    }
}

#[test]
fn a_corrupt_reply_alone_is_not_a_received_one() {
    // Every reply has byte 40 flipped.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    socket.set_read_timeout(Some(WAIT)).expect("read timeout");
    let endpoint = format!("udp://{}", socket.local_addr().expect("addr"));
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            buf[40] ^= 0xff;
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
    let ran = ping(&[&endpoint, "-c", "2", "-i", "20ms", "-W", "2s"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(ran.count("corrupt at byte 40"), 2, "{ran:?}");
    assert!(
        ran.stdout
            .contains("2 probes transmitted, 0 received, 100% loss, 0 duplicates, 2 corrupt"),
        "{ran:?}"
    );
    assert!(
        !ran.stdout.contains("rtt min"),
        "no round trip to show: {ran:?}"
    );
    let json = ping(&[&endpoint, "-c", "1", "-W", "2s", "--json"]).json();
    assert_eq!(
        (&json["received"], &json["lost"], &json["corrupt"]),
        (&Value::from(0), &Value::from(0), &Value::from(1)),
        "answered, wrongly: not lost, not received: {json}"
    );
    assert_eq!(json["loss_percent"], 100.0, "{json}");
}

#[test]
fn udp_port_unreachable_settles_its_probe_at_once() {
    // Each probe draws ICMP port unreachable: it is lost, and known lost
    // then, so the run does not wait out -W for it.
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("udp://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let ran = ping(&[&endpoint, "-c", "3", "-i", "20ms", "-W", "8s"]);
    let took = started.elapsed();
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(ran.count("destination port unreachable"), 3, "{ran:?}");
    assert_eq!(ran.count("Request timeout"), 0, "{ran:?}");
    assert!(
        ran.stdout
            .contains("3 probes transmitted, 0 received, 100% loss"),
        "{ran:?}"
    );
    assert!(ran.stdout.contains(", 3 unreachable"), "{ran:?}");
    // Not the 8 s of one more timeout: a bound on waiting, not a figure.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}
