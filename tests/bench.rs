//! `sockecho bench` and `sockecho report merge` through the real binary:
//! every transport against our own server, and deliberately faulty servers
//! written here (a corrupting TCP echo, a lossy UDP echo, a stalling echo)
//! whose faults bench must report exactly.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use crate::common::{TempPath, echo, faulty_echo, serve, sockecho};
use serde_json::Value;
use sockecho::measure::histogram::LatencyHistogram;

/// Runs `sockecho bench ARGS --json`: the parsed report, the exit code and
/// standard error.
fn bench_json(args: &[&str]) -> (Value, i32, String) {
    common::bench_report(&[], args)
}

fn histogram_of(report: &Value) -> LatencyHistogram {
    LatencyHistogram::from_base64(
        report["latency_us"]["histogram"]
            .as_str()
            .expect("histogram"),
    )
    .expect("histogram decodes")
}

#[test]
fn bench_every_transport_with_contract_keys() {
    let sock = TempPath::new("bench.sock");
    let unix = format!("unix:{}", sock.path().display());
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0", &unix], &["-q"]);
    // Each endpoint with the default driver (io_uring for TCP and Unix
    // streams where the kernel has it) and with tokio's epoll reactor.
    let runs = server
        .endpoints
        .iter()
        .flat_map(|e| [(e, None), (e, Some("--epoll"))]);
    for (endpoint, driver) in runs {
        let mut args = vec![endpoint.as_str(), "-c", "3", "-s", "64", "-d", "300ms"];
        args.extend(driver);
        let (report, code, stderr) = bench_json(&args);
        assert_eq!(code, 0, "{endpoint}: {stderr}");
        for key in [
            "endpoint",
            "connections",
            "message_size",
            "duration_s",
            "messages",
            "msgs_per_s",
            "bytes_per_s",
            "errors",
            "mismatches",
            "latency_us",
        ] {
            assert!(
                report.get(key).is_some(),
                "{endpoint}: key {key} missing in {report}"
            );
        }
        for key in [
            "min",
            "p50",
            "p90",
            "p99",
            "p999",
            "max",
            "mean",
            "histogram",
        ] {
            assert!(
                report["latency_us"].get(key).is_some(),
                "latency_us.{key} missing"
            );
        }
        assert_eq!(report["endpoint"], Value::from(endpoint.clone()));
        assert_eq!(report["connections"], 3);
        let messages = report["messages"].as_u64().unwrap();
        assert!(messages > 0, "{endpoint}: no messages");
        assert_eq!(report["mismatches"], 0);
        assert_eq!(report["errors"], 0, "{endpoint}");
        // The histogram holds exactly the messages counted.
        assert_eq!(histogram_of(&report).len(), messages);
        assert!(
            stderr.is_empty(),
            "no progress line when not on a terminal: {stderr}"
        );
    }
}

#[test]
fn large_pipelined_messages_do_not_deadlock() {
    // Each connection writes 3 x 200 kB before the first echo is complete:
    // a client that wrote everything before reading would deadlock against
    // an echo server whose socket buffers fill up. Both drivers.
    let server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    for driver in [&["--epoll"][..], &[]] {
        let args = [
            &[
                server.endpoint(),
                "-c",
                "2",
                "-s",
                "200000",
                "--pipeline",
                "3",
                "-d",
                "300ms",
            ][..],
            driver,
        ]
        .concat();
        let (report, code, stderr) = bench_json(&args);
        assert_eq!(code, 0, "{driver:?}: {stderr}");
        assert!(report["messages"].as_u64().unwrap() > 0, "{driver:?}");
        assert_eq!(report["mismatches"], 0, "{driver:?}");
    }
}

#[test]
fn a_corrupted_byte_fails_the_run_and_is_located() {
    // An echo server that flips one bit of the byte at stream offset 1000.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut offset = 0usize;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            if (offset..offset + n).contains(&1000) {
                buf[1000 - offset] ^= 0x01;
            }
            offset += n;
            if conn.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let out = sockecho(
        &[
            "bench",
            &format!("127.0.0.1:{port}"),
            "-c",
            "1",
            "-s",
            "64",
            "-d",
            "500ms",
        ],
        b"",
    );
    let stderr = &out.stderr;
    assert_eq!(out.code(), 1, "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(
        stderr.contains("connection 0") && stderr.contains("offset 1000"),
        "{stderr}"
    );
    let stdout = out.stdout_text();
    assert!(stdout.contains("mismatches 1"), "{stdout}");
}

#[test]
fn lost_datagrams_are_counted_exactly() {
    // A UDP echo that never answers the datagrams with sequence numbers 3, 7
    // and 11 (bench's first 8 bytes), and answers everything else.
    let endpoint = faulty_echo(|seq, datagram| {
        if [3, 7, 11].contains(&seq) {
            Vec::new()
        } else {
            echo(datagram)
        }
    });
    let (report, code, stderr) = bench_json(&[
        &endpoint, "-c", "1", "-s", "64", "-d", "600ms", "-W", "100ms",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["lost"], 3, "{report}");
    assert_eq!(report["mismatches"], 0);
    assert!(report["messages"].as_u64().unwrap() > 10);
}

#[test]
fn a_server_stall_shows_in_open_loop_percentiles() {
    // An echo that stops for 300 ms after its 50th read. Open loop at
    // 500 msg/s, latency timed from each message's intended send time: the
    // ~150 messages due during the stall all wait for it. (A closed-loop
    // client would see the stall in one message only: coordinated omission.)
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        for reads in 0..100_000 {
            let Ok(n) = conn.read(&mut buf) else { break };
            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                break;
            }
            if reads == 50 {
                thread::sleep(Duration::from_millis(300)); // the fault under test
            }
        }
    });
    let (report, code, stderr) = bench_json(&[
        &format!("127.0.0.1:{port}"),
        "-c",
        "1",
        "-s",
        "64",
        "-d",
        "1s",
        "--rate",
        "500",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let p90 = report["latency_us"]["p90"].as_f64().unwrap();
    assert!(
        p90 >= 50_000.0,
        "the stall is hidden: p90 = {p90} us in {report}"
    );
    // Pacing: never more than the schedule allows.
    assert!(report["messages"].as_u64().unwrap() <= 501, "{report}");
}

#[test]
fn report_merge_equals_one_run_over_both_histograms() {
    let server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let endpoint = server.endpoint();
    let (a, _, _) = bench_json(&[endpoint, "-c", "2", "-d", "200ms"]);
    let (b, _, _) = bench_json(&[endpoint, "-c", "3", "-d", "200ms"]);
    let (file_a, file_b) = (TempPath::new("a.json"), TempPath::new("b.json"));
    std::fs::write(file_a.path(), a.to_string()).unwrap();
    std::fs::write(file_b.path(), b.to_string()).unwrap();
    let svg = TempPath::new("merged.svg");
    let out = sockecho(
        &[
            "report",
            "merge",
            &file_a.text(),
            &file_b.text(),
            "--json",
            "--plot",
            &svg.text(),
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();

    let messages = a["messages"].as_u64().unwrap() + b["messages"].as_u64().unwrap();
    assert_eq!(merged["messages"], messages);
    assert_eq!(merged["connections"], 5);
    let mut both = histogram_of(&a);
    both.add(&histogram_of(&b));
    assert_eq!(histogram_of(&merged), both);
    for (key, q) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
        assert_eq!(
            merged["latency_us"][key].as_f64().unwrap(),
            both.percentile(q) as f64,
            "{key}"
        );
    }
    let sum = a["msgs_per_s"].as_f64().unwrap() + b["msgs_per_s"].as_f64().unwrap();
    assert!((merged["msgs_per_s"].as_f64().unwrap() - sum).abs() < 1e-6);

    let text = std::fs::read_to_string(svg.path()).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(texts.contains("sockecho bench"), "title missing: {texts}");
}

#[test]
fn bench_plot_and_text_report() {
    let server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let svg = TempPath::new("bench.svg");
    let out = sockecho(
        &[
            "bench",
            server.endpoint(),
            "-c",
            "2",
            "-d",
            "200ms",
            "--plot",
            &svg.text(),
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let stdout = out.stdout_text();
    for word in ["msg/s", "latency", "p50", "p99", "p99.9", "max"] {
        assert!(stdout.contains(word), "{word} missing in {stdout}");
    }
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert!(
        words
            .windows(4)
            .any(|w| w == ["errors", "0", "mismatches", "0"]),
        "{stdout}"
    );
    let text = std::fs::read_to_string(svg.path()).unwrap();
    roxmltree::Document::parse(&text).expect("well-formed SVG");
    assert!(
        text.contains("2 conns x 64 B"),
        "the title carries the parameters"
    );
}

#[test]
fn refused_and_invalid_runs_fail_clearly() {
    let closed = common::closed_tcp_port();
    let out = sockecho(
        &["bench", &format!("127.0.0.1:{closed}"), "-d", "100ms"],
        b"",
    );
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains("error: cannot connect to"),
        "{}",
        out.stderr
    );
    let out = sockecho(&["bench", "udp://127.0.0.1:9", "-s", "4"], b"");
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("at least 8 bytes"), "{}", out.stderr);
    let out = sockecho(&["report", "merge", "/nonexistent/a.json"], b"");
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr
            .starts_with("error: cannot read /nonexistent/a.json"),
        "{}",
        out.stderr
    );
}

#[test]
fn writes_flush_under_pressure() {
    // Many connections with pipelining over a Unix socket: exercises the
    // write-pending path of the driver (socket buffers full).
    let sock = TempPath::new("press.sock");
    let unix = format!("unix:{}", sock.path().display());
    let server = serve(&[&unix], &["-q"]);
    let (report, code, stderr) = bench_json(&[
        server.endpoint(),
        "-c",
        "20",
        "-s",
        "4096",
        "--pipeline",
        "16",
        "-d",
        "300ms",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["mismatches"], 0);
    assert!(report["messages"].as_u64().unwrap() > 0);
}

#[test]
fn duplicated_datagrams_are_counted_not_taken_for_echoes() {
    // A UDP echo that answers the datagram with sequence number 5 twice.
    let endpoint = faulty_echo(|seq, datagram| {
        if seq == 5 {
            [echo(datagram), echo(datagram)].concat()
        } else {
            echo(datagram)
        }
    });
    let (report, code, stderr) = bench_json(&[&endpoint, "-c", "1", "-d", "300ms"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["mismatches"], 0);
}

#[test]
fn a_server_that_never_echoes_fails_the_run() {
    // Accepts and reads, never writes back.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
    });
    let out = sockecho(
        &[
            "bench",
            &format!("127.0.0.1:{port}"),
            "-c",
            "1",
            "-d",
            "300ms",
        ],
        b"",
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("error: no echo came back"),
        "{}",
        out.stderr
    );
}

#[test]
fn refused_connections_fail_the_run() {
    // Our own server with room for two connections: the other two bench
    // connections are accepted and closed at once.
    let server = serve(&["tcp://127.0.0.1:0"], &["-q", "--max-conns", "2"]);
    let out = sockecho(
        &[
            "bench",
            server.endpoint(),
            "-c",
            "4",
            "-d",
            "300ms",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 2, "{report}");
    assert!(report["messages"].as_u64().unwrap() > 0);
    assert!(
        out.stderr.contains("error: 2 connection errors"),
        "{}",
        out.stderr
    );
}
