//! Tests for [`super::BenchReport`]: contract keys, JSON round trip,
//! validation, merging, text.

use super::*;

fn params(endpoint: &str) -> BenchParams {
    BenchParams {
        endpoint: endpoint.to_owned(),
        connections: 2,
        message_size: 64,
        pipeline: 1,
        rate: None,
    }
}

fn counts(secs: u64) -> BenchCounts {
    BenchCounts {
        duration: Duration::from_secs(secs),
        errors: 1,
        mismatches: 0,
        lost: None,
        duplicates: None,
    }
}

/// A histogram of `n` latencies spread from `start` µs upwards.
fn latencies(start: u64, n: u64) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for i in 0..n {
        h.record(start + i * 7 % 5_000);
    }
    h
}

fn report(endpoint: &str, h: &LatencyHistogram, secs: u64) -> BenchReport {
    BenchReport::new(&params(endpoint), &counts(secs), h).expect("builds")
}

#[test]
fn contract_keys_are_present() {
    let r = report("tcp://127.0.0.1:9999", &latencies(10, 1000), 2);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
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
        assert!(v.get(key).is_some(), "missing {key} in {v}");
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
            v["latency_us"].get(key).is_some(),
            "missing latency_us.{key}"
        );
    }
    assert_eq!(v["endpoint"], "tcp://127.0.0.1:9999");
    assert_eq!(v["messages"], 1000);
    assert_eq!(v["msgs_per_s"], 500.0);
    assert_eq!(v["bytes_per_s"], 500.0 * 64.0);
    assert_eq!(v["duration_s"], 2.0);
    assert!(v["latency_us"]["histogram"].is_string());
    assert!(v.get("rate").is_none(), "absent extras are omitted");
}

#[test]
fn json_round_trip() {
    let mut p = params("udp://[::1]:7");
    p.rate = Some(1000.0);
    let c = BenchCounts {
        lost: Some(3),
        duplicates: Some(2),
        ..counts(1)
    };
    let r = BenchReport::new(&p, &c, &latencies(5, 300)).expect("builds");
    let mut back = BenchReport::from_json(&r.to_json()).expect("reads back");
    // serde_json may round a float's last bit on the way back in.
    assert!((back.latency_us.mean - r.latency_us.mean).abs() < 1e-9);
    back.latency_us.mean = r.latency_us.mean;
    assert_eq!(back, r);
    assert_eq!(back.histogram().expect("decodes"), latencies(5, 300));
}

#[test]
fn zero_duration_gives_zero_throughput_not_infinity() {
    let r = report("x", &latencies(1, 10), 0);
    assert_eq!((r.msgs_per_s, r.bytes_per_s), (0.0, 0.0));
    assert!(BenchReport::from_json(&r.to_json()).is_ok());
}

#[test]
fn corrupt_histogram_is_an_error_not_a_panic() {
    let mut r = report("x", &latencies(1, 10), 1);
    r.latency_us.histogram = "definitely*not*base64".into();
    let err = BenchReport::from_json(&r.to_json()).expect_err("rejected");
    assert!(matches!(err, ReportError::Histogram(_)), "{err}");

    r.latency_us.histogram = "SElTVG9yeQ==".into(); // base64, not a histogram
    assert!(matches!(
        BenchReport::from_json(&r.to_json()),
        Err(ReportError::Histogram(_))
    ));
    assert!(matches!(
        BenchReport::merge(&[r]),
        Err(ReportError::Histogram(_))
    ));
}

#[test]
fn count_mismatch_is_detected() {
    let mut r = report("x", &latencies(1, 10), 1);
    r.messages = 11;
    let err = BenchReport::from_json(&r.to_json()).expect_err("rejected");
    assert!(
        matches!(
            err,
            ReportError::CountMismatch {
                histogram: 10,
                messages: 11
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "latency histogram holds 10 latencies but the report counts 11 messages"
    );
}

#[test]
fn not_json_is_an_error() {
    assert!(matches!(
        BenchReport::from_json("{"),
        Err(ReportError::Json(_))
    ));
    assert!(matches!(
        BenchReport::from_json(r#"{"endpoint":"x"}"#),
        Err(ReportError::Json(_))
    ));
}

#[test]
fn merge_equals_one_report_over_all_samples() {
    let a = latencies(10, 4000);
    let b = latencies(2000, 1000);
    let mut all = a.clone();
    all.add(&b);
    let ra = report("tcp://a:1", &a, 4);
    let mut rb = report("tcp://a:1", &b, 2);
    rb.mismatches = 2;

    let m = BenchReport::merge(&[ra.clone(), rb.clone()]).expect("merges");
    assert_eq!(m.messages, 5000);
    assert_eq!(m.histogram().expect("decodes"), all);
    let one = report("tcp://a:1", &all, 4);
    assert_eq!(m.latency_us, one.latency_us);
    assert_eq!(m.latency_us.p999, all.percentile(99.9) as f64);
    assert_eq!(m.endpoint, "tcp://a:1");
    assert_eq!((m.connections, m.errors, m.mismatches), (4, 2, 2));
    assert_eq!(m.duration_s, 4.0);
    assert_eq!(m.msgs_per_s, ra.msgs_per_s + rb.msgs_per_s);
    assert_eq!(m.msgs_per_s, 1000.0 + 500.0);
    assert_eq!(m.bytes_per_s, ra.bytes_per_s + rb.bytes_per_s);
    assert_eq!(m.pipeline, Some(1));
    assert_eq!((m.rate, m.lost), (None, None));
    // The merged report is itself a valid input.
    let back = BenchReport::from_json(&m.to_json()).expect("valid");
    assert_eq!(back.histogram().expect("decodes"), all);
}

#[test]
fn merge_endpoints_extras_and_sizes() {
    let h = latencies(1, 10);
    let mut a = report("tcp://a:1", &h, 1);
    let mut b = report("tcp://b:1", &h, 1);
    let c = report("tcp://a:1", &h, 1);
    a.rate = Some(100.0);
    b.rate = Some(50.0);
    b.lost = Some(4);
    b.pipeline = Some(8);
    let m = BenchReport::merge(&[a.clone(), b.clone(), c]).expect("merges");
    assert_eq!(m.endpoint, "tcp://a:1,tcp://b:1");
    assert_eq!((m.pipeline, m.rate, m.lost), (None, None, Some(4)));
    let m = BenchReport::merge(&[a.clone(), b.clone()]).expect("merges");
    assert_eq!(m.rate, Some(150.0));

    b.message_size = 128;
    let err = BenchReport::merge(&[a, b]).expect_err("sizes differ");
    assert_eq!(
        err.to_string(),
        "cannot merge report 2 with report 1: they measured different message sizes \
         (128 and 64 bytes)"
    );
    assert!(matches!(
        BenchReport::merge(&[]),
        Err(ReportError::NoReports)
    ));
}

#[test]
fn printed_floats_carry_no_binary_tail() {
    let mut h = LatencyHistogram::new();
    for us in [10, 11, 13] {
        h.record(us);
    }
    let c = BenchCounts {
        duration: Duration::from_nanos(3_000_000_123),
        ..counts(0)
    };
    let r = BenchReport::new(&params("x"), &c, &h).expect("builds");
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
    assert_eq!(v["duration_s"].to_string(), "3.0");
    assert_eq!(v["msgs_per_s"].to_string(), "1.0");
    // 34 / 3 µs, to the nanosecond.
    assert_eq!(v["latency_us"]["mean"].to_string(), "11.333");
}

proptest::proptest! {
    /// Whatever the latencies, in a report of one run or a merge of
    /// several, every percentile lies within [min, max].
    #[test]
    fn percentiles_lie_between_min_and_max(
        runs in proptest::collection::vec(
            proptest::collection::vec(0u64..10_000_000_000, 1..100), 1..4)
    ) {
        let mut reports = Vec::new();
        for samples in &runs {
            let mut h = LatencyHistogram::new();
            for &us in samples {
                h.record(us);
            }
            reports.push(report("x", &h, 1));
        }
        let merged = BenchReport::merge(&reports).expect("merges");
        for r in reports.iter().chain([&merged]) {
            let l = &r.latency_us;
            for (name, p) in [("p50", l.p50), ("p90", l.p90), ("p99", l.p99), ("p999", l.p999)] {
                proptest::prop_assert!(
                    l.min <= p && p <= l.max,
                    "{name} {p} outside [{}, {}]", l.min, l.max
                );
            }
            proptest::prop_assert!(l.min <= l.mean && l.mean <= l.max);
        }
    }
}
