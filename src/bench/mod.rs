//! Load generation for `sockecho bench` and `sockecho report merge`.
//!
//! The measurement side is split so that each piece can be tested without a
//! socket:
//!
//! - [`histogram`] records latencies into a high-dynamic-range histogram and
//!   serializes it (base64 of HdrHistogram's V2 compressed format) so runs
//!   from many machines can be merged exactly.
//! - [`report`] turns a run's parameters, counters and histogram into the
//!   contract's JSON object and a human summary, and merges reports.
//! - [`plot`] draws the latency-by-percentile chart written by `--plot`.

pub mod histogram;
pub mod plot;
pub mod report;
