//! Files handed to `report merge` and histograms from other tools: a bench
//! report read from JSON, and a latency histogram read from base64, never
//! panic whatever the bytes. The first input byte picks which one the rest
//! of the input feeds, so one target covers both readers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockecho_measure::histogram::LatencyHistogram;
use sockecho_measure::report::BenchReport;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if pick % 2 == 0 {
        if let Ok(report) = BenchReport::from_json(text) {
            // What `report merge` does with a file it accepted (its text
            // form is the binary's, from the same fields).
            let _ = report.histogram();
            let _ = report.to_json();
            // Merged with itself and a copy under another name: its times
            // and durations compared, whatever they hold.
            let inputs = [("a".to_owned(), report.clone()), ("b".to_owned(), report)];
            let _ = sockecho_measure::merge::merge_named(&inputs);
            let _ = sockecho_measure::merge::merge_named(&inputs[..1]);
        }
    } else if let Ok(histogram) = LatencyHistogram::from_base64(text) {
        let _ = histogram.percentile(99.0);
        let _ = histogram.mean();
        let _ = histogram.to_base64();
    }
});
