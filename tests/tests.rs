//! The integration tests: one binary (ripgrep's `tests/tests.rs`), each
//! file below a module, all sharing `common`: the helpers that start the
//! real `sockecho` binary on port 0, read its `listen ok` lines and talk
//! to it over real sockets.

mod common;

mod activation;
mod bad_input;
mod bench;
mod bench_answers;
mod bench_udp;
mod connect;
mod datagrams;
mod embedded;
mod engines;
mod errors;
mod faults;
mod interop;
mod limits;
mod modes;
mod operations;
mod output;
mod ping;
mod proxy;
mod resets;
mod serve;
mod tls;
mod trace;
mod udp_batch;
mod web;
mod web_interop;
