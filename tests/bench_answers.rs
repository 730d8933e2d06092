//! bench's answers beyond one run, through the real binary: the highest
//! rate meeting a latency target against a server of known capacity,
//! corrected and raw latency, connection times, interval records that add
//! up, runs started together whose windows overlap in the merge (and
//! refusals of what cannot merge), source addresses spread over a block,
//! and the charts that compare runs.

use crate::common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::common::{TempPath, serve, sockecho};
use serde_json::Value;
use sockecho::measure::histogram::LatencyHistogram;

fn bench_json(args: &[&str]) -> (Value, i32, String) {
    common::bench_report(&[], args)
}

/// Messages per second the rate-limited echo serves, all connections
/// together.
const CAPACITY: f64 = 400.0;

/// A TCP echo that serves at most [`CAPACITY`] 64-byte messages a second,
/// all connections together, one after the other: each message waits for
/// the next free slot, a slot every 1/CAPACITY s. Below the capacity an
/// echo takes one slot (2.5 ms); above it a queue builds and latency
/// grows without bound, as at a saturated server. Runs until the test
/// process ends.
fn rate_limited_echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let next_slot = Arc::new(Mutex::new(Instant::now()));
    let slot = Duration::from_secs_f64(1.0 / CAPACITY);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let next_slot = next_slot.clone();
            thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut message = [0u8; 64];
                while conn.read_exact(&mut message).is_ok() {
                    let due = {
                        let mut next = next_slot.lock().unwrap();
                        *next = (*next).max(Instant::now()) + slot;
                        *next
                    };
                    thread::sleep(due.saturating_duration_since(Instant::now()));
                    if conn.write_all(&message).is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("tcp://127.0.0.1:{port}")
}

#[test]
fn find_rate_finds_the_capacity_of_a_rate_limited_server() {
    let endpoint = rate_limited_echo();
    let started = Instant::now();
    let (report, code, stderr) = bench_json(&[
        &endpoint,
        "-c",
        "2",
        "-d",
        "400ms",
        "--rate",
        "100",
        "--find-rate",
        "p90<25ms",
        "--find-steps",
        "8",
        "--find-time",
        "9s",
    ]);
    assert_eq!(code, 0, "{stderr}\n{report}");
    let find = &report["find_rate"];
    assert_eq!(find["target"], "p90<25ms");
    let steps = find["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps.len() <= 8, "bounded: {find}");
    for step in steps {
        for key in ["rate", "achieved", "latency_us", "pass"] {
            assert!(step.get(key).is_some(), "{key} missing in {step}");
        }
        // Far from the capacity the verdict is clear either way.
        let rate = step["rate"].as_f64().unwrap();
        if rate >= CAPACITY * 1.6 {
            assert_eq!(step["pass"], false, "above the capacity: {step}");
        }
        if rate <= CAPACITY * 0.3 {
            assert_eq!(step["pass"], true, "well below the capacity: {step}");
        }
    }
    assert_eq!(steps[0]["rate"], 100.0, "--rate is where the search starts");
    let found = find["rate"].as_f64().expect("a rate met the target");
    assert!(
        (CAPACITY * 0.4..=CAPACITY * 1.25).contains(&found),
        "{found} msg/s, for a server of {CAPACITY}: {find}"
    );
    // The report is the run at the rate found.
    assert_eq!(report["rate"].as_f64(), Some(found), "{report}");
    assert!(["narrowed", "steps"].contains(&find["stopped"].as_str().unwrap()));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn find_rate_prints_each_step_and_says_when_it_stopped_early() {
    let endpoint = rate_limited_echo();
    let out = sockecho(
        &[
            "bench",
            &endpoint,
            "-c",
            "2",
            "-d",
            "300ms",
            "--rate",
            "50",
            "--find-rate",
            "p99<50ms",
            "--find-steps",
            "2",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let stdout = out.stdout_text();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("find-rate p99<50ms over tcp://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("  step 1  rate 50 msg/s  achieved "),
        "{stdout}"
    );
    assert!(
        lines[1].contains(" msg/s  p99 ") && lines[1].contains("  pass"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("  step 2  rate 100 msg/s  achieved "),
        "{stdout}"
    );
    assert!(
        stdout.contains("the search stopped early, out of steps (--find-steps)"),
        "{stdout}"
    );
    assert!(
        out.stderr.contains("warning: the search stopped early"),
        "{}",
        out.stderr
    );
    assert_eq!(
        lines.last().copied(),
        Some("max rate meeting p99<50ms: 100 msg/s"),
        "the answer comes last: {stdout}"
    );

    // A target no rate meets: the answer says none, and the run fails.
    let out = sockecho(
        &[
            "bench",
            &endpoint,
            "-c",
            "1",
            "-d",
            "200ms",
            "--rate",
            "8",
            "--find-rate",
            "p50<1us",
            "--find-steps",
            "2",
        ],
        b"",
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(
        out.stdout_text().ends_with(
            "max rate meeting p50<1us: none (every rate tried failed, down to 4 msg/s)\n"
        ),
        "{}",
        out.stdout_text()
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "error: no rate tried met p50<1us"),
        "{}",
        out.stderr
    );

    for bad in ["p99", "p99>2ms", "p101<1ms", "p99<0s"] {
        let out = sockecho(&["bench", "--find-rate", bad], b"");
        let line = common::assert_error_line(&out, 2);
        assert!(line.contains(&format!("invalid target '{bad}'")), "{line}");
    }
    let out = sockecho(
        &["bench", "--find-rate", "p99<2ms", "--interval", "1s"],
        b"",
    );
    common::assert_error_line(&out, 2);
}

#[test]
fn corrected_and_raw_latency_and_a_client_that_falls_behind() {
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &["-q"]);
    for endpoint in &server.endpoints {
        // Closed loop: no raw latency, no schedule to fall behind.
        let (report, code, stderr) = bench_json(&[endpoint, "-c", "2", "-d", "200ms"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(report.get("latency_raw_us").is_none(), "{report}");
        assert!(report.get("behind_schedule").is_none(), "{report}");

        // One thread paced far faster than it can send: nearly every
        // message goes out late, by the client's own doing, and that is
        // said out loud.
        let (report, code, stderr) = bench_json(&[
            endpoint,
            "-c",
            "2",
            "--threads",
            "1",
            "--rate",
            "2e7",
            "-d",
            "300ms",
        ]);
        assert_eq!(code, 0, "{endpoint}: {stderr}");
        let behind = &report["behind_schedule"];
        assert!(behind["late"].as_u64().unwrap() > 0, "{report}");
        assert!(behind["max_late_us"].as_f64().unwrap() > 2000.0, "{report}");
        assert!(
            behind["scheduled"].as_u64().unwrap() >= behind["late"].as_u64().unwrap(),
            "{behind}"
        );
        assert!(
            stderr.contains("warning: this client fell behind its own schedule: "),
            "{endpoint}: the loud line: {stderr}"
        );
    }

    // A server that answers every datagram 50 ms late, and a flow that
    // keeps at most 256 in flight: at 20,000 msg/s the window is full and
    // most datagrams go out long after they were due (coordinated
    // omission). Timed from when each was due, latency shows that wait;
    // timed from when it went out, only the server's 50 ms.
    let slow =
        common::faulty_echo(|_, datagram| vec![(Duration::from_millis(50), datagram.to_vec())]);
    let (report, code, stderr) = bench_json(&[&slow, "-c", "1", "--rate", "20000", "-d", "500ms"]);
    assert_eq!(code, 0, "{stderr}");
    let raw = &report["latency_raw_us"];
    for key in ["min", "p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(raw[key].is_number(), "latency_raw_us.{key} in {report}");
    }
    assert!(raw.get("histogram").is_none(), "{raw}");
    let corrected = report["latency_us"]["p50"].as_f64().unwrap();
    let raw_p50 = raw["p50"].as_f64().unwrap();
    assert!(raw_p50 >= 50_000.0, "the server's delay: {raw}");
    assert!(
        raw_p50 * 2.0 < corrected,
        "raw p50 {raw_p50} us, corrected {corrected} us"
    );

    // In text, both lines.
    let out = sockecho(
        &[
            "bench",
            server.endpoint(),
            "-c",
            "2",
            "--rate",
            "200",
            "-d",
            "200ms",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let text = out.stdout_text();
    assert!(text.contains("\n  latency   min "), "{text}");
    assert!(text.contains("\n  raw       min "), "{text}");
    assert!(text.contains("(from each actual send)\n"), "{text}");
}

#[test]
fn connection_times_are_measured_on_every_transport() {
    let sock = TempPath::new("connect.sock");
    let unix = format!("unix:{}", sock.path().display());
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0", &unix], &["-q"]);
    // The handshake is part of connecting over TLS.
    let tls = serve(&["tls://127.0.0.1:0"], &["-q"]);
    assert!(tls.line().starts_with("tls fingerprint "));
    for endpoint in server.endpoints.iter().chain(&tls.endpoints) {
        let (report, code, stderr) =
            bench_json(&[endpoint, "-c", "3", "-d", "200ms", "--insecure"]);
        assert_eq!(code, 0, "{endpoint}: {stderr}");
        let c = &report["connect_us"];
        let value = |key: &str| {
            c[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{endpoint}: connect_us.{key} in {report}"))
        };
        let (min, p50, p99, max) = (value("min"), value("p50"), value("p99"), value("max"));
        assert!(min <= p50 && p50 <= p99 && p99 <= max, "{c}");
        let histogram =
            LatencyHistogram::from_base64(c["histogram"].as_str().expect("histogram")).unwrap();
        assert_eq!(histogram.len(), 3, "one time per connection: {c}");
    }
    let out = sockecho(&["bench", server.endpoint(), "-c", "2", "-d", "100ms"], b"");
    assert!(
        out.stdout_text().contains("\n  connect   min "),
        "{}",
        out.stdout_text()
    );
}

/// Every line of `text` as a JSON object.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The intervals, which must tile the measured window from 0 to its end,
/// add up to the report's messages.
fn assert_intervals_add_up(intervals: &[Value], report: &Value, what: &str) {
    assert!(intervals.len() >= 3, "{what}: {intervals:?}");
    let mut at = 0.0;
    let mut messages = 0;
    for i in intervals {
        for key in ["start_s", "end_s", "messages", "msgs_per_s", "errors"] {
            assert!(i.get(key).is_some(), "{what}: {key} in {i}");
        }
        for key in ["p50", "p99", "max"] {
            assert!(i["latency_us"][key].is_number(), "{what}: {key} in {i}");
        }
        assert_eq!(i["start_s"].as_f64(), Some(at), "{what}: contiguous: {i}");
        at = i["end_s"].as_f64().unwrap();
        messages += i["messages"].as_u64().unwrap();
    }
    assert_eq!(
        Some(at),
        report["duration_s"].as_f64(),
        "{what}: to the end"
    );
    assert_eq!(
        Some(messages),
        report["messages"].as_u64(),
        "{what}: the intervals add up to the run"
    );
}

#[test]
fn interval_records_add_up_to_the_final_count() {
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &["-q"]);
    let (tcp, udp) = (&server.endpoints[0], &server.endpoints[1]);
    // io_uring (closed-loop TCP where the kernel has it), tokio closed
    // and open loop: each hands its intervals over its own way.
    let runs: [&[&str]; 3] = [&[tcp], &[tcp, "--epoll"], &[udp, "--rate", "3000"]];
    for run in runs {
        let args = [
            &["bench"][..],
            run,
            &[
                "-c",
                "3",
                "-d",
                "700ms",
                "--interval",
                "200ms",
                "--json-stream",
            ],
        ]
        .concat();
        let out = sockecho(&args, b"");
        assert_eq!(out.code(), 0, "{run:?}: {}", out.stderr);
        let lines = json_lines(&out.stdout_text());
        let (end, intervals) = lines.split_last().expect("lines");
        assert_eq!(end["event"], "end", "{run:?}: the end comes last");
        assert!(
            end["latency_us"]["histogram"].is_string(),
            "every report key: {end}"
        );
        assert!(
            intervals.iter().all(|i| i["event"] == "interval"),
            "{run:?}"
        );
        assert_eq!(
            intervals.len(),
            4,
            "{run:?}: 3 x 200ms and 100ms: {intervals:?}"
        );
        assert_intervals_add_up(intervals, end, &format!("{run:?}"));
    }
    // --json-stream alone reports every second; --json --interval keeps
    // them in the report.
    let (report, code, stderr) = bench_json(&[tcp, "-d", "500ms", "--interval", "100ms"]);
    assert_eq!(code, 0, "{stderr}");
    let intervals = report["intervals"].as_array().expect("intervals");
    assert_intervals_add_up(intervals, &report, "--json --interval");
    let out = sockecho(&["bench", tcp, "-d", "1500ms", "--json-stream"], b"");
    let lines = json_lines(&out.stdout_text());
    assert_eq!(lines.len(), 3, "1s, 0.5s, end: {lines:?}");
    assert_eq!(lines[0]["end_s"], 1.0);
    // In text, a line per interval before the report.
    let out = sockecho(&["bench", tcp, "-d", "500ms", "--interval", "250ms"], b"");
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("  0.00-0.25 s  "), "{text}");
    assert!(lines[1].starts_with("  0.25-0.50 s  "), "{text}");
    assert!(lines[2].starts_with("bench tcp://"), "{text}");
    let out = sockecho(&["bench", tcp, "--interval", "1ms"], b"");
    common::assert_error_line(&out, 2);
}

/// `at` as RFC 3339 in UTC.
fn rfc3339(at: SystemTime) -> String {
    sockecho::measure::wallclock::format_rfc3339(at)
}

fn parse_time(text: &Value) -> SystemTime {
    sockecho::measure::wallclock::parse(text.as_str().expect("a time")).expect("RFC 3339")
}

/// Writes `report` to a new temporary file.
fn saved(report: &Value, name: &str) -> TempPath {
    let file = TempPath::new(name);
    std::fs::write(file.path(), report.to_string()).unwrap();
    file
}

#[test]
fn benches_started_at_one_time_overlap_in_the_merge() {
    let server = serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let endpoint = server.endpoint();
    // Far enough ahead for both to start and connect; once as RFC 3339,
    // once as Unix seconds: the same instant.
    let at = SystemTime::now() + Duration::from_millis(1500);
    // To the millisecond, as both forms below write it.
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64);
    let unix = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let (as_text, as_unix) = (
        rfc3339(at),
        format!("@{}.{:03}", unix.as_secs(), unix.subsec_millis()),
    );
    let bench = |start: &str| {
        common::Proc::sockecho(&[
            "bench",
            endpoint,
            "-c",
            "2",
            "-d",
            "400ms",
            "--start-at",
            start,
            "--json",
        ])
    };
    let mut runs = [bench(&as_text), bench(&as_unix)];
    let reports: Vec<Value> = runs
        .iter_mut()
        .map(|run| {
            let exited = run.wait_exit();
            assert!(exited.status.success(), "{}", exited.stderr);
            serde_json::from_str(&exited.rest.join("\n")).expect("a report")
        })
        .collect();
    for report in &reports {
        let started = parse_time(&report["started_at"]);
        // Measuring began at the start time, not when the process did.
        let off = started
            .duration_since(at)
            .unwrap_or_else(|e| panic!("started {:?} early: {report}", e.duration()));
        assert!(off < Duration::from_millis(300), "{off:?}: {report}");
    }
    let (a, b) = (saved(&reports[0], "a.json"), saved(&reports[1], "b.json"));
    let out = sockecho(&["report", "merge", &a.text(), &b.text(), "--json"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("overlap"),
        "windows overlap: {}",
        out.stderr
    );
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let inputs = merged["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 2);
    for (input, (file, report)) in inputs.iter().zip([(&a, &reports[0]), (&b, &reports[1])]) {
        assert_eq!(input["file"], file.text());
        assert_eq!(input["started_at"], report["started_at"]);
        assert_eq!(input["messages"], report["messages"]);
        assert_eq!(input["duration_s"], report["duration_s"]);
    }

    // Two runs one after the other: merged, with a warning naming both.
    let (first, _, _) = bench_json(&[endpoint, "-c", "1", "-d", "100ms"]);
    let (second, _, _) = bench_json(&[endpoint, "-c", "1", "-d", "100ms"]);
    let (c, d) = (saved(&first, "c.json"), saved(&second, "d.json"));
    let out = sockecho(&["report", "merge", &c.text(), &d.text()], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let warning = out.stderr.lines().next().unwrap_or_default();
    assert!(
        warning.starts_with("warning: the inputs' measured windows do not overlap: ")
            && warning.contains(&d.text())
            && warning.contains(&c.text()),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout_text()
            .contains(&format!("\n  input     {} ", c.text()))
    );

    // A start time already past starts at once, saying so; nonsense, or
    // a day away, is a usage error.
    let past = rfc3339(SystemTime::now() - Duration::from_secs(5));
    let (_, code, stderr) = bench_json(&[endpoint, "-d", "100ms", "--start-at", &past]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the start time has passed: starting now"),
        "{stderr}"
    );
    for bad in ["tomorrow", "2025-06-01T12:00:00", "@x"] {
        let out = sockecho(&["bench", endpoint, "--start-at", bad], b"");
        let line = common::assert_error_line(&out, 2);
        assert!(line.contains(&format!("invalid time '{bad}'")), "{line}");
    }
    let far = rfc3339(SystemTime::now() + Duration::from_secs(3 * 86_400));
    let out = sockecho(&["bench", endpoint, "--start-at", &far], b"");
    let line = common::assert_error_line(&out, 2);
    assert!(line.starts_with("error: --start-at: "), "{line}");
}

#[test]
fn merge_refuses_what_measured_different_things_and_copies() {
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &["-q"]);
    let (tcp, _, _) = bench_json(&[&server.endpoints[0], "-c", "1", "-d", "100ms"]);
    let (udp, _, _) = bench_json(&[&server.endpoints[1], "-c", "1", "-d", "100ms"]);
    let (big, _, _) = bench_json(&[&server.endpoints[0], "-c", "1", "-s", "128", "-d", "100ms"]);
    let (a, b, c) = (
        saved(&tcp, "a.json"),
        saved(&udp, "b.json"),
        saved(&big, "c.json"),
    );
    let copy = saved(&tcp, "copy.json");
    for (other, why) in [
        (&b, "they measured different transports (udp and tcp)"),
        (
            &c,
            "they measured different message sizes (128 and 64 bytes)",
        ),
        (
            &copy,
            "they hold the same run (a copy of one file?), which would count twice",
        ),
    ] {
        let out = sockecho(&["report", "merge", &a.text(), &other.text()], b"");
        let line = common::assert_error_line(&out, 2);
        assert_eq!(
            line,
            format!(
                "error: cannot merge {} with {}: {why}",
                other.text(),
                a.text()
            )
        );
    }
}

#[test]
fn connections_spread_over_source_addresses() {
    let server = serve(&["tcp://127.0.0.1:0"], &[]);
    let (report, code, stderr) = bench_json(&[
        server.endpoint(),
        "-c",
        "12",
        "-d",
        "200ms",
        "--source",
        "127.0.0.0/29",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["errors"], 0);
    let mut sources = HashSet::new();
    let mut connections = 0;
    while connections < 12 {
        let line = server.line();
        if let Some(rest) = line.strip_prefix("connection from ") {
            let peer = rest.split_whitespace().next().unwrap();
            sources.insert(peer.rsplit_once(':').unwrap().0.to_owned());
            connections += 1;
        }
    }
    let want: HashSet<String> = (1..=6).map(|i| format!("127.0.0.{i}")).collect();
    assert_eq!(sources, want, "six usable addresses in a /29, each used");
    // Closes, to keep the server's descriptor check green.
    let mut closed = 0;
    while closed < 12 {
        if server.line().starts_with("closed ") {
            closed += 1;
        }
    }

    // UDP flows too.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let seen_by_echo = seen.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let end = Instant::now() + common::WAIT;
        while Instant::now() < end {
            if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                seen_by_echo.lock().unwrap().insert(peer.ip().to_string());
                let _ = socket.send_to(&buf[..n], peer);
            }
        }
    });
    let endpoint = format!("udp://127.0.0.1:{port}");
    let (report, code, stderr) = bench_json(&[
        &endpoint,
        "-c",
        "4",
        "-d",
        "200ms",
        "--source",
        "127.0.0.8/30",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(report["messages"].as_u64().unwrap() > 0);
    let seen = seen.lock().unwrap().clone();
    let want: HashSet<String> = ["127.0.0.9", "127.0.0.10"].map(String::from).into();
    assert_eq!(seen, want);

    for (endpoint, source, says) in [
        (
            "unix:/tmp/none.sock",
            "127.0.0.0/24",
            "not to unix:/tmp/none.sock",
        ),
        (
            "tcp://[::1]:9",
            "127.0.0.0/24",
            "127.0.0.0/24 is IPv4 but tcp://[::1]:9 is IPv6",
        ),
        (
            "tcp://127.0.0.1:9",
            "127.0.0.0/33",
            "invalid address block '127.0.0.0/33'",
        ),
    ] {
        let out = sockecho(&["bench", endpoint, "--source", source, "-d", "100ms"], b"");
        let line = common::assert_error_line(&out, 2);
        assert!(line.contains(says), "{line}");
    }
}

#[test]
fn source_addresses_reach_past_one_port_range() {
    // In a namespace of its own whose local port range is four ports: one
    // source address reaches the server through four connections at
    // most; six addresses, through 24.
    let Some(ns) = common::netns::Netns::create() else {
        return;
    };
    ns.exec_ok(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=40000 40003",
    ]);
    let server = ns.serve(&["tcp://127.0.0.1:0"], &["-q"]);
    let bench = |extra: &[&str]| {
        let args = [
            &[
                common::BIN,
                "bench",
                server.endpoint(),
                "-c",
                "12",
                "-d",
                "200ms",
                "--json",
            ][..],
            extra,
        ]
        .concat();
        let out = ns.exec(&args, b"");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.code(), report, out.stderr)
    };
    // First with the block (the server took one of the four ports on
    // 127.0.0.1: three are left there, four on each other address)...
    let (code, report, stderr) = bench(&["--source", "127.0.0.0/29"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["connections"], 12);
    // ...then from the one address: it runs out of ports.
    let (code, _, stderr) = bench(&[]);
    assert_eq!(code, 1, "one address runs out of ports: {stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
}

#[test]
fn report_plot_overlays_runs_and_merge_draws_each_input() {
    let server = serve(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &["-q"]);
    let (tcp, _, _) = bench_json(&[&server.endpoints[0], "-c", "1", "-d", "150ms"]);
    let (udp, _, _) = bench_json(&[&server.endpoints[1], "-c", "1", "-d", "150ms"]);
    let (tcp2, _, _) = bench_json(&[&server.endpoints[0], "-c", "2", "-d", "150ms"]);
    let (a, b, c) = (
        saved(&tcp, "tcp.json"),
        saved(&udp, "udp.json"),
        saved(&tcp2, "tcp2.json"),
    );
    let texts_of = |svg: &TempPath| -> Vec<String> {
        let text = std::fs::read_to_string(svg.path()).expect("the chart");
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        let mut texts: Vec<String> = doc
            .descendants()
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_owned())
            .collect();
        texts.push(format!("polylines={lines}"));
        texts
    };
    // Runs of different transports compare in one chart, each named.
    let svg = TempPath::new("overlay.svg");
    let (a_name, b_name, svg_name) = (a.text(), b.text(), svg.text());
    for log in [&[][..], &["--log-latency"]] {
        let args = [
            &["report", "plot", &a_name, &b_name, "--plot", &svg_name][..],
            log,
        ]
        .concat();
        let out = sockecho(&args, b"");
        assert_eq!(out.code(), 0, "{}", out.stderr);
        assert!(out.stdout.is_empty(), "a chart, nothing else");
        let texts = texts_of(&svg);
        for want in [a.text(), b.text(), "percentile".to_owned()] {
            assert!(texts.contains(&want), "{want} not in {texts:?}");
        }
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("polylines=") && t != "polylines=0" && t != "polylines=1")
        );
    }
    // Merge: each input and the merged curve.
    let merged_svg = TempPath::new("merged.svg");
    let out = sockecho(
        &[
            "report",
            "merge",
            &a.text(),
            &c.text(),
            "--plot",
            &merged_svg.text(),
            "--log-latency",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let texts = texts_of(&merged_svg);
    for want in [a.text(), c.text(), "merged".to_owned()] {
        assert!(texts.contains(&want), "{want} not in {texts:?}");
    }
    let out = sockecho(&["report", "plot", &a.text()], b"");
    common::assert_error_line(&out, 2);
}
