//! Micro-benchmarks of what runs once per message: the echo loop over an
//! in-memory pipe, bench's verification of echoed bytes, the latency
//! histogram, and (once per connection) endpoint parsing.
//!
//! `cargo bench --bench hot_paths`. These time code, not the network: the
//! side-by-side server comparison is `scripts/compare.sh`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sockecho::endpoint::Endpoint;
use sockecho::measure::histogram::LatencyHistogram;
use sockecho::service::{Connection, Counts, Echo, Service};
use sockecho_flow::Pattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pattern_check(c: &mut Criterion) {
    let pattern = Pattern::new();
    let mut group = c.benchmark_group("pattern_check");
    for size in [64usize, 512, 65_536] {
        let echoed = pattern.at(1234, size).to_vec();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| pattern.check(black_box(1234), black_box(&echoed), 0))
        });
    }
    group.finish();
}

fn histogram_record(c: &mut Criterion) {
    let mut histogram = LatencyHistogram::new();
    let mut us = 1u64;
    c.bench_function("histogram_record", |b| {
        b.iter(|| {
            us = us.wrapping_mul(6364136223846793005).wrapping_add(1) % 100_000 + 1;
            histogram.record(black_box(us));
        })
    });
}

fn endpoint_parse(c: &mut Criterion) {
    c.bench_function("endpoint_parse", |b| {
        b.iter(|| black_box("tcp://[::1]:9999").parse::<Endpoint>())
    });
}

fn echo_loop(c: &mut Criterion) {
    // 1000 messages of 64 bytes through the echo service over a tokio duplex
    // pipe: the server loop's own cost per message, without the kernel.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("echo_loop");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000x64B", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let (mut client, mut server) = tokio::io::duplex(64 * 1024);
                let serve = tokio::spawn(async move {
                    let mut counts = Counts::default();
                    let connection = Connection {
                        stream: &mut server,
                        greeting: b"",
                        idle: None,
                        counts: &mut counts,
                        about: Default::default(),
                    };
                    Echo.serve(connection).await
                });
                let message = [7u8; 64];
                let mut back = [0u8; 64];
                for _ in 0..1000 {
                    client.write_all(&message).await.expect("write");
                    client.read_exact(&mut back).await.expect("read");
                }
                client.shutdown().await.expect("shutdown");
                let mut rest = Vec::new();
                client.read_to_end(&mut rest).await.expect("end");
                serve.await.expect("join").expect("echo");
            })
        })
    });
    group.finish();
}

criterion_group!(
    hot,
    pattern_check,
    histogram_record,
    endpoint_parse,
    echo_loop
);
criterion_main!(hot);
