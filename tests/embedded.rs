//! The library as another project embeds it: a server started in-process
//! on port 0 (or a unique Unix name), found at the address it reports,
//! echoing over real sockets, then stopped, with every wait bounded.

use std::time::Duration;

use sockecho::{Endpoint, Events, Handles, ServeConfig, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::common::{TempPath, WAIT, random_bytes, unique};

/// Runs `test` on a fresh runtime, failing it past [`WAIT`].
fn within_wait<F: Future<Output = ()>>(test: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(WAIT, test)
            .await
            .expect("the embedded server test took too long");
    });
}

/// Binds `endpoints`, starts serving with events collected in memory, and
/// returns the endpoints as bound, the stop token, the events so far and
/// the server's task.
async fn start(
    endpoints: &[&str],
) -> (
    Vec<Endpoint>,
    CancellationToken,
    std::sync::Arc<std::sync::Mutex<String>>,
    tokio::task::JoinHandle<Result<(), sockecho::Error>>,
) {
    let endpoints = endpoints.iter().map(|e| e.parse().unwrap()).collect();
    let mut config = ServeConfig::new(endpoints);
    config.limits.drain_timeout = Duration::from_secs(1);
    let server = Server::bind(config).await.expect("bind");
    let local = server.local_endpoints().to_vec();
    let stop = CancellationToken::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    let handles = Handles {
        events: Events::to(sockecho::EventFormat::Text, false, move |line| {
            sink.lock().unwrap().push_str(line)
        }),
        ..Handles::stop_on(stop.clone())
    };
    let task = tokio::spawn(server.run(handles));
    (local, stop, seen, task)
}

fn addr(endpoint: &Endpoint) -> String {
    endpoint.to_string().split_once("://").unwrap().1.to_owned()
}

#[test]
fn tcp_echoes_in_process_and_stops() {
    within_wait(async {
        let (local, stop, seen, task) = start(&["tcp://127.0.0.1:0"]).await;
        assert_ne!(local[0].host_port().unwrap().port, 0, "the real port");
        let mut client = tokio::net::TcpStream::connect(addr(&local[0]))
            .await
            .unwrap();
        let data = random_bytes(100_000, 1);
        let (mut rd, mut wr) = client.split();
        let mut back = Vec::new();
        let (written, read) = tokio::join!(
            async {
                wr.write_all(&data).await?;
                wr.shutdown().await
            },
            rd.read_to_end(&mut back)
        );
        written.unwrap();
        read.unwrap();
        assert_eq!(back, data);
        drop(client);
        stop.cancel();
        task.await.unwrap().unwrap();
        let events = seen.lock().unwrap().clone();
        assert!(
            events.starts_with(&format!("listen ok {}\n", local[0])),
            "{events}"
        );
        assert!(events.contains("in=100000 out=100000"), "{events}");
    });
}

#[test]
fn udp_echoes_in_process_and_stops() {
    within_wait(async {
        let (local, stop, _, task) = start(&["udp://127.0.0.1:0"]).await;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(addr(&local[0])).await.unwrap();
        for payload in [&b"one datagram"[..], b"", &random_bytes(60_000, 2)] {
            socket.send(payload).await.unwrap();
            let mut buf = vec![0u8; 70_000];
            let n = socket.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], payload);
        }
        stop.cancel();
        task.await.unwrap().unwrap();
    });
}

#[test]
fn unix_echoes_in_process_and_stops() {
    within_wait(async {
        let path = TempPath::new("embedded.sock");
        let abstract_name = unique("embedded");
        let (local, stop, _, task) = start(&[
            &format!("unix:{}", path.text()),
            &format!("unix:@{abstract_name}"),
        ])
        .await;
        assert_eq!(local[0].to_string(), format!("unix:{}", path.text()));
        let mut client = tokio::net::UnixStream::connect(path.path()).await.unwrap();
        client.write_all(b"over a unix socket").await.unwrap();
        let mut back = [0u8; 18];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"over a unix socket");
        drop(client);
        stop.cancel();
        task.await.unwrap().unwrap();
        // A cleanly stopped server leaves no socket file behind.
        assert!(!path.path().exists(), "socket file left behind");
    });
}

#[test]
fn a_setting_that_cannot_work_is_named() {
    within_wait(async {
        let mut config = ServeConfig::new(vec!["tcp://127.0.0.1:0".parse().unwrap()]);
        config.limits.max_conns = 0;
        let err = Server::bind(config).await.unwrap_err();
        assert!(matches!(
            err,
            sockecho::Error::Setting {
                setting: sockecho::error::Setting::MaxConns,
                ..
            }
        ));
        assert!(err.is_config());
        assert_eq!(err.to_string(), "max_conns: must be at least 1");
    });
}

#[test]
fn bench_counts_errors_as_they_happen_on_every_driver() {
    // Nothing listens: every datagram draws "port unreachable", counted as
    // an error the moment it comes, on the io_uring driver as on tokio's.
    let port = crate::common::closed_udp_port();
    for driver in [
        sockecho::bench::Driver::Auto,
        sockecho::bench::Driver::Epoll,
    ] {
        within_wait(async move {
            let mut config = sockecho::bench::BenchConfig::new(
                format!("udp://127.0.0.1:{port}").parse().unwrap(),
            );
            config.connections = 2;
            config.duration = Duration::from_millis(300);
            config.timeout = Duration::from_millis(50);
            config.driver = driver;
            let progress = sockecho::bench::Progress::new();
            let outcome = sockecho::bench::run(&config, &CancellationToken::new(), &progress)
                .await
                .expect("bench runs");
            assert!(
                outcome.report.errors > 0,
                "{driver:?}: {:?}",
                outcome.report
            );
            assert_eq!(progress.errors(), outcome.report.errors, "{driver:?}");
            assert!(progress.measuring(), "{driver:?}: the warmup ended");
        });
    }
}

#[test]
fn each_listener_names_its_engine_and_why() {
    use sockecho::server::{Engine, Reason};
    within_wait(async {
        let endpoints = vec![
            "tcp://127.0.0.1:0".parse().unwrap(),
            "tls://127.0.0.1:0".parse().unwrap(),
        ];
        let running = Server::bind(ServeConfig::new(endpoints))
            .await
            .unwrap()
            .start(Handles::default())
            .unwrap();
        let engines = running.engines();
        assert_eq!(engines.len(), 2);
        assert!(
            matches!(
                (engines[0].engine, engines[0].reason),
                (Engine::IoUring, Reason::Available) | (Engine::Epoll, Reason::Unavailable)
            ),
            "{:?}",
            engines[0]
        );
        assert_eq!(
            (engines[1].engine, engines[1].reason),
            (Engine::Epoll, Reason::NotPlainTcp)
        );
        let mut config = ServeConfig::new(vec!["tcp://127.0.0.1:0".parse().unwrap()]);
        config.service.mode = sockecho::service::Mode::Discard;
        let running = Server::bind(config)
            .await
            .unwrap()
            .start(Handles::default())
            .unwrap();
        assert_eq!(running.engines()[0].reason, Reason::Service);
    });
}
