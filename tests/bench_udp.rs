//! `sockecho bench` over UDP, through both drivers: io_uring (the default
//! for closed-loop UDP runs where the kernel offers it) and tokio's epoll
//! reactor (`--epoll`, and open-loop `--rate` runs). Faulty UDP echoes
//! written here (corrupting, lengthening, dropping, duplicating, late)
//! follow a fixed schedule by sequence number, so each driver's report is
//! checked count for count, and both must report the same.

use crate::common;

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Proc, echo, faulty_echo, serve};
use serde_json::Value;

/// The default driver, then tokio's.
const DRIVERS: [&[&str]; 2] = [&[], &["--epoll"]];

/// Runs `sockecho -vv bench ARGS --json`: the report, the exit code, and
/// standard error (which names the driver).
fn bench(args: &[&str]) -> (Value, i32, String) {
    common::bench_report(&["-vv"], args)
}

/// Whether this kernel offers what the io_uring bench drivers need (the
/// same probe as theirs); where it does not, the default is epoll.
fn uring_here() -> bool {
    io_uring::IoUring::new(8).is_ok_and(|ring| {
        ring.params().is_feature_fast_poll() && ring.params().is_feature_ext_arg()
    })
}

/// The driver bench says it took, from its debug log.
fn driver_of(stderr: &str) -> &'static str {
    if stderr.contains(r#"driver="io_uring""#) {
        "io_uring"
    } else if stderr.contains(r#"driver="epoll""#) {
        "epoll"
    } else {
        panic!("no driver named in the log: {stderr}")
    }
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {report}"))
}

#[test]
fn udp_closed_loop_takes_io_uring_and_epoll_or_rate_take_tokio() {
    let server = serve(&["udp://127.0.0.1:0"], &["-q"]);
    let endpoint = server.endpoint();
    let default = if uring_here() { "io_uring" } else { "epoll" };
    for (extra, want) in [
        (&[][..], default),
        (&["--pipeline", "4"][..], default),
        (&["--epoll"][..], "epoll"),
        (&["--rate", "2000"][..], "epoll"),
    ] {
        let args = [&[endpoint, "-c", "3", "-d", "300ms"], extra].concat();
        let (report, code, stderr) = bench(&args);
        assert_eq!(code, 0, "{extra:?}: {stderr}");
        assert_eq!(driver_of(&stderr), want, "{extra:?}");
        let messages = count(&report, "messages");
        assert!(messages > 0, "{extra:?}: {report}");
        for key in ["errors", "mismatches", "lost", "duplicates"] {
            assert_eq!(count(&report, key), 0, "{extra:?}: {key} in {report}");
        }
        let histogram = sockecho::measure::histogram::LatencyHistogram::from_base64(
            report["latency_us"]["histogram"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(histogram.len(), messages, "{extra:?}");
    }
}

#[test]
fn udp_corrupt_echoes_fail_the_run_on_both_drivers() {
    // One flipped bit in datagram 5's payload (datagram byte offset 20).
    let flipped = faulty_echo(|seq, d| {
        let mut reply = d.to_vec();
        if seq == 5 {
            reply[20] ^= 0x01;
        }
        vec![(Duration::ZERO, reply)]
    });
    // Datagram 5 comes back 100 bytes longer: reported at its real length
    // (the io_uring receive must not stop at its buffer's).
    let longer = faulty_echo(|seq, d| {
        let mut reply = d.to_vec();
        if seq == 5 {
            reply.extend_from_slice(&[0u8; 100]);
        }
        vec![(Duration::ZERO, reply)]
    });
    // Datagram 5 comes back with a sequence number never sent.
    let unknown = faulty_echo(|seq, d| {
        let mut reply = d.to_vec();
        if seq == 5 {
            reply[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        }
        vec![(Duration::ZERO, reply)]
    });
    for driver in DRIVERS {
        for (endpoint, says) in [
            (&flipped, "connection 0, datagram byte offset 20: sent 0x"),
            (
                &longer,
                "connection 0: a datagram of the wrong length (164 bytes)",
            ),
            (
                &unknown,
                "connection 0: a datagram with a sequence number never sent (64 bytes)",
            ),
        ] {
            // -W 50ms: the datagram answered with a wrong sequence number
            // is lost, and the flow goes on after it.
            let args = [
                &[endpoint.as_str(), "-c", "1", "-d", "300ms", "-W", "50ms"],
                driver,
            ]
            .concat();
            let (report, code, stderr) = bench(&args);
            assert_eq!(code, 1, "{driver:?} {says}: {stderr}");
            assert_eq!(
                count(&report, "mismatches"),
                1,
                "{driver:?} {says}: {report}"
            );
            assert!(
                stderr.contains(&format!("error: echo differs from what was sent: {says}")),
                "{driver:?}: want {says:?} in {stderr}"
            );
            assert!(count(&report, "messages") > 5, "{driver:?}: {report}");
        }
    }
}

#[test]
fn udp_loss_is_counted_exactly_on_both_drivers() {
    // Datagrams 3, 7 and 11 of every flow are never answered.
    let lossy = faulty_echo(|seq, d| {
        if [3, 7, 11].contains(&seq) {
            vec![]
        } else {
            echo(d)
        }
    });
    for driver in DRIVERS {
        for pipeline in ["1", "4"] {
            let args = [
                &[
                    lossy.as_str(),
                    "-c",
                    "3",
                    "-d",
                    "800ms",
                    "-W",
                    "100ms",
                    "--pipeline",
                    pipeline,
                ][..],
                driver,
            ]
            .concat();
            let (report, code, stderr) = bench(&args);
            assert_eq!(code, 0, "{driver:?} pipeline {pipeline}: {stderr}");
            assert_eq!(
                count(&report, "lost"),
                9,
                "{driver:?} pipeline {pipeline}: {report}"
            );
            assert_eq!(count(&report, "duplicates"), 0, "{driver:?}: {report}");
            assert_eq!(count(&report, "mismatches"), 0, "{driver:?}: {report}");
            assert!(count(&report, "messages") > 30, "{driver:?}: {report}");
        }
    }
}

#[test]
fn udp_duplicates_and_late_replies_are_told_apart_on_both_drivers() {
    // Datagram 5 is answered twice; datagram 9 is answered after 250 ms,
    // when the client has long counted it lost (-W 50ms).
    let faulty = faulty_echo(|seq, d| match seq {
        5 => [echo(d), echo(d)].concat(),
        9 => vec![(Duration::from_millis(250), d.to_vec())],
        _ => echo(d),
    });
    for driver in DRIVERS {
        let args = [
            &[faulty.as_str(), "-c", "2", "-d", "600ms", "-W", "50ms"][..],
            driver,
        ]
        .concat();
        let (report, code, stderr) = bench(&args);
        assert_eq!(code, 0, "{driver:?}: {stderr}");
        assert_eq!(count(&report, "duplicates"), 2, "{driver:?}: {report}");
        // The late reply is neither a message, a duplicate nor a mismatch.
        assert_eq!(count(&report, "lost"), 2, "{driver:?}: {report}");
        assert_eq!(count(&report, "mismatches"), 0, "{driver:?}: {report}");
    }
}

#[test]
fn a_udp_server_that_never_answers_costs_its_duration_not_a_hang() {
    // Reads everything, answers nothing: every datagram is lost, the run
    // fails for want of any echo, and ends on time (the receives left
    // waiting at the end are cancelled).
    let silent = faulty_echo(|_, _| vec![]);
    for driver in DRIVERS {
        let started = Instant::now();
        let args = [
            &[silent.as_str(), "-c", "2", "-d", "400ms", "-W", "50ms"][..],
            driver,
        ]
        .concat();
        let (report, code, stderr) = bench(&args);
        assert_eq!(code, 1, "{driver:?}: {stderr}");
        assert!(
            stderr.contains("error: no echo came back"),
            "{driver:?}: {stderr}"
        );
        assert_eq!(count(&report, "messages"), 0);
        assert!(count(&report, "lost") >= 2 * 6, "{driver:?}: {report}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{driver:?}: took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn udp_port_unreachable_is_an_error_not_the_end_of_the_flow() {
    // Nothing listens: each datagram draws ICMP port unreachable. Both
    // drivers count the refusals and keep sending for the whole run.
    let closed = common::closed_udp_port();
    let endpoint = format!("udp://127.0.0.1:{closed}");
    for driver in DRIVERS {
        let args = [
            &[endpoint.as_str(), "-c", "2", "-d", "500ms", "-W", "100ms"][..],
            driver,
        ]
        .concat();
        let (report, code, stderr) = bench(&args);
        assert_eq!(code, 1, "{driver:?}: {stderr}");
        assert!(
            stderr.contains("connection errors in the run: first, connection")
                && stderr.contains("connection refused"),
            "{driver:?}: {stderr}"
        );
        assert!(count(&report, "errors") >= 2 * 3, "{driver:?}: {report}");
        assert!(count(&report, "lost") >= 2 * 3, "{driver:?}: {report}");
        let duration = report["duration_s"].as_f64().unwrap();
        assert!(
            duration >= 0.45,
            "{driver:?}: the run was cut short: {report}"
        );
    }
}

#[test]
fn a_stopped_udp_run_reports_what_it_measured() {
    let server = serve(&["udp://127.0.0.1:0"], &["-q"]);
    for driver in DRIVERS {
        let args = [
            &["bench", server.endpoint(), "-c", "4", "-d", "30s", "--json"][..],
            driver,
        ]
        .concat();
        let mut bench = Proc::sockecho(&args);
        thread::sleep(Duration::from_millis(500));
        bench.signal("INT");
        let exited = bench.wait_exit();
        assert!(exited.status.success(), "{driver:?}: {}", exited.stderr);
        let report: Value = serde_json::from_str(&exited.rest.join("\n"))
            .unwrap_or_else(|e| panic!("{driver:?}: no JSON ({e}): {:?}", exited.rest));
        let duration = report["duration_s"].as_f64().unwrap();
        assert!((0.2..5.0).contains(&duration), "{driver:?}: {report}");
        assert!(count(&report, "messages") > 0, "{driver:?}: {report}");
        assert_eq!(count(&report, "mismatches"), 0, "{driver:?}: {report}");
    }
}
