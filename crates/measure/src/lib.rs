//! What sockecho measures, as plain data: no sockets, no clock, no output.
//!
//! - [`histogram`]: latencies in an HdrHistogram with one range and
//!   precision for the whole project, so any two can be merged; its
//!   base64 V2-deflate form travels inside bench reports.
//! - [`stats`]: round-trip statistics as ping(8) prints them (exact min,
//!   mean, max, mdev; percentiles from the histogram) and loss.
//! - [`report`]: a bench run's report with the contract's JSON keys, read
//!   back; [`merge`]: many runs merged exactly across processes and
//!   machines, refusing inputs that measured different things.
//! - [`interval`]: interval records (`--interval`, `--json-stream`).
//! - [`wallclock`]: RFC 3339 times (`started_at`, `--start-at`).
//!
//! ```
//! use sockecho_measure::histogram::LatencyHistogram;
//!
//! let mut a = LatencyHistogram::new();
//! a.record(120);
//! let mut b = LatencyHistogram::new();
//! b.record(80);
//! // A histogram survives its text form, so runs on many machines merge.
//! a.add(&LatencyHistogram::from_base64(&b.to_base64().unwrap()).unwrap());
//! assert_eq!(a.len(), 2);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod histogram;
pub mod interval;
pub mod merge;
pub mod report;
pub mod stats;
pub mod wallclock;

pub use histogram::LatencyHistogram;
pub use report::BenchReport;
pub use stats::RttStats;
