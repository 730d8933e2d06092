//! Faults on the path between client and server (issue 5, promise 9).
//!
//! Real packet loss: each test makes a network namespace of its own, runs
//! `sockecho serve` and the client on that namespace's loopback, and has
//! iptables drop a random 5% of the packets arriving there. These machines
//! have namespaces and iptables but no netem qdisc, so loss is the one fault
//! the kernel injects. Where a namespace cannot be made (no root, no
//! iptables) the tests skip with a note, unless `SOCKECHO_REQUIRE_INTEROP=1`
//! (set by CI), where that is a failure.
//!
//! Delay, reordering and duplication of datagrams, and a stream cut into
//! 1-byte writes with pauses, come from small proxies written here, whose
//! faults follow a fixed schedule so the client's report can be checked
//! count for count.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::netns::{Netns, skip};
use crate::common::*;
use serde_json::Value;

/// The probability iptables drops each packet with, in each direction.
const LOSS: f64 = 0.05;

// ---------------------------------------------------------------------------
// Loss in a network namespace

/// What the fault tests do to a namespace.
trait Faults {
    fn drop_randomly(&self, p: f64) -> bool;
    fn dropped(&self) -> u64;
}

impl Faults for Netns {
    /// Has iptables drop each packet arriving on the loopback with
    /// probability `p`: a sent packet is lost with `p`, a round trip with
    /// `1 - (1 - p)^2`. `false` (with a note) where iptables cannot.
    fn drop_randomly(&self, p: f64) -> bool {
        let p = p.to_string();
        let rule = [
            "iptables",
            "-A",
            "INPUT",
            "-i",
            "lo",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ];
        let out = self.exec(&rule, b"");
        if !out.status.success() {
            skip::<()>(&format!("iptables cannot add a drop rule: {}", out.stderr));
            return false;
        }
        true
    }

    /// Packets the drop rule has dropped so far.
    fn dropped(&self) -> u64 {
        let listing = self.exec_ok(&["iptables", "-L", "INPUT", "-v", "-n", "-x"]);
        listing
            .lines()
            .find(|line| line.contains("DROP") && line.contains("statistic"))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|pkts| pkts.parse().ok())
            .unwrap_or_else(|| panic!("no drop rule in {listing}"))
    }
}

/// A namespace with the drop rule in place, or `None` (skipped).
fn lossy_namespace() -> Option<Netns> {
    let ns = Netns::create()?;
    ns.drop_randomly(LOSS).then_some(ns)
}

fn json_of(out: &Output, what: &str) -> Value {
    let stdout = out.stdout_text();
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: {e}: {stdout:?}; stderr: {}", out.stderr))
}

#[test]
fn tcp_16mib_stays_byte_exact_under_5_percent_loss() {
    let Some(ns) = lossy_namespace() else { return };
    let server = ns.serve(&["tcp://127.0.0.1:0"], &[]);
    let data = random_bytes(16 * MIB, 16);
    let before = ns.dropped();
    let out = ns.exec(&[BIN, "connect", server.endpoint()], &data);
    let dropped = ns.dropped() - before;
    assert_eq!(out.code(), 0, "connect: {}", out.stderr);
    assert_bytes_eq(&out.stdout, &data, "16 MiB through 5% loss");
    // Without drops the test would prove nothing.
    assert!(dropped > 0, "iptables dropped no packet");
    eprintln!(
        "16 MiB echoed byte-exact in {:?} with {dropped} packets dropped",
        out.elapsed
    );
}

#[test]
fn tcp_bench_sees_no_mismatch_under_5_percent_loss() {
    let Some(ns) = lossy_namespace() else { return };
    let server = ns.serve(&["tcp://127.0.0.1:0"], &[]);
    let before = ns.dropped();
    // A retransmission timeout is 200 ms and doubles: -W 3s leaves room for
    // a packet lost three times over, so a timeout here would be a bug.
    let argv = [
        BIN,
        "bench",
        server.endpoint(),
        "-c",
        "4",
        "-s",
        "1024",
        "-d",
        "2s",
        "-W",
        "3s",
        "--json",
    ];
    let out = ns.exec(&argv, b"");
    let dropped = ns.dropped() - before;
    let report = json_of(&out, "bench --json");
    assert_eq!(out.code(), 0, "bench: {report} {}", out.stderr);
    assert_eq!(report["mismatches"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    assert!(dropped > 0, "iptables dropped no packet");
    eprintln!(
        "bench under 5% loss: {} messages, 0 mismatches, {dropped} packets dropped",
        report["messages"]
    );
}

#[test]
fn udp_ping_reports_the_configured_loss() {
    let Some(ns) = lossy_namespace() else { return };
    let server = ns.serve(&["udp://127.0.0.1:0"], &[]);
    const PROBES: u64 = 200;
    let argv = [
        BIN,
        "ping",
        server.endpoint(),
        "-c",
        "200",
        "-i",
        "5ms",
        "-W",
        "300ms",
        "--json",
    ];
    let out = ns.exec(&argv, b"");
    let report = json_of(&out, "ping --json");
    assert_eq!(out.code(), 0, "ping: {report} {}", out.stderr);
    let count = |key: &str| report[key].as_u64().unwrap_or_else(|| panic!("{key}"));
    assert_eq!(count("sent"), PROBES, "{report}");
    assert_eq!(count("received") + count("lost"), PROBES, "{report}");
    assert_eq!(count("corrupt"), 0, "{report}");
    assert_eq!(count("duplicates"), 0, "{report}");
    // Probe and reply each cross the drop rule: a round trip is lost with
    // 1 - 0.95^2 = 9.75%. Over 200 probes one standard deviation is about
    // 2.1 points; the band is more than 3.5 of them on each side.
    let expected = 100.0 * (1.0 - (1.0 - LOSS).powi(2));
    let measured = report["loss_percent"].as_f64().unwrap();
    assert!(
        (2.0..=20.0).contains(&measured),
        "loss {measured}% is far from the expected {expected:.2}%: {report}"
    );
    assert!(
        (100.0 * count("lost") as f64 / PROBES as f64 - measured).abs() < 0.1,
        "loss_percent disagrees with lost/sent: {report}"
    );
    eprintln!("udp ping under 5% drop per direction: {measured}% loss, {expected:.2}% expected");
}

// ---------------------------------------------------------------------------
// A datagram proxy that delays, reorders, duplicates and drops

/// What the proxy does to the server's reply to the k-th datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Forwarded after [`BASE_DELAY`].
    Pass,
    /// Held back and forwarded just after the next reply: reordered.
    Swap,
    /// Forwarded twice: one duplicate.
    Twice,
    /// Forwarded after [`LATE_DELAY`], past the client's timeout: late (and
    /// reordered, since later replies overtake it).
    Late,
    /// Never forwarded: lost.
    Drop,
}

/// Every reply waits this long, so the round trips it shows have a floor.
const BASE_DELAY: Duration = Duration::from_millis(3);

/// Past the ping's `-W 300ms` by 300 ms, and well before its last probe.
const LATE_DELAY: Duration = Duration::from_millis(600);

/// The schedule, by reply number; replies come in probe order (one client,
/// the loopback), so reply k is probe k's.
fn schedule(k: usize) -> Fault {
    match k {
        5 => Fault::Swap,
        10 => Fault::Late,
        20 => Fault::Twice,
        30 => Fault::Drop,
        _ => Fault::Pass,
    }
}

/// A UDP proxy in front of `server`: datagrams from the client go through
/// at once, replies follow [`schedule`]. Runs until `stop` is set (or a
/// minute at most).
struct UdpProxy {
    front: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl UdpProxy {
    fn start(server: SocketAddr) -> UdpProxy {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(server).unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let deadline = Instant::now() + Duration::from_secs(60);
        let live = {
            let stop = stop.clone();
            move || !stop.load(Ordering::Relaxed) && Instant::now() < deadline
        };

        let requests = {
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (client, live) = (client.clone(), live.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while live() {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *client.lock().unwrap() = Some(from);
                        let _ = back.send(&buf[..n]);
                    }
                }
            })
        };

        let replies = thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            // Replies waiting for their time, in release order (a stable
            // sort keeps a swapped pair in the order pushed).
            let mut queue: Vec<(Instant, Vec<u8>)> = Vec::new();
            let mut held: Option<Vec<u8>> = None;
            let mut k = 0;
            while live() {
                if let Ok(n) = back.recv(&mut buf) {
                    let now = Instant::now();
                    let reply = buf[..n].to_vec();
                    match schedule(k) {
                        Fault::Pass => {
                            queue.push((now + BASE_DELAY, reply));
                            if let Some(earlier) = held.take() {
                                queue.push((now + BASE_DELAY, earlier));
                            }
                        }
                        Fault::Swap => held = Some(reply),
                        Fault::Twice => {
                            queue.push((now + BASE_DELAY, reply.clone()));
                            queue.push((now + BASE_DELAY, reply));
                        }
                        Fault::Late => queue.push((now + LATE_DELAY, reply)),
                        Fault::Drop => {}
                    }
                    queue.sort_by_key(|(at, _)| *at);
                    k += 1;
                }
                let Some(to) = *client.lock().unwrap() else {
                    continue;
                };
                let now = Instant::now();
                let due = queue.iter().take_while(|(at, _)| *at <= now).count();
                for (_, reply) in queue.drain(..due) {
                    let _ = front.send_to(&reply, to);
                }
            }
        });
        UdpProxy {
            front: addr,
            stop,
            threads: vec![requests, replies],
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn ping_counts_exactly_what_a_udp_proxy_delays_reorders_duplicates_and_drops() {
    let server = serve(&["udp://127.0.0.1:0"], &[]);
    let proxy = UdpProxy::start(ip_addr_of(server.endpoint()));
    let endpoint = format!("udp://{}", proxy.front);
    // 80 probes 20 ms apart: the late reply (probe 10, sent at 200 ms, back
    // at 800 ms) comes 300 ms after its timeout and 800 ms before the end.
    let out = sockecho(
        &[
            "ping", &endpoint, "-c", "80", "-i", "20ms", "-W", "300ms", "--json",
        ],
        b"",
    );
    drop(proxy);
    let report = json_of(&out, "ping --json");
    assert_eq!(out.code(), 0, "ping: {report} {}", out.stderr);
    let counts: Vec<u64> = [
        "sent",
        "received",
        "lost",
        "duplicates",
        "reordered",
        "late",
        "corrupt",
    ]
    .iter()
    .map(|k| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    })
    .collect();
    // One dropped: 79 of 80 received (the late one counts, as in ping(8));
    // one duplicate; the swapped and the late reply are out of order.
    assert_eq!(counts, [80, 79, 1, 1, 2, 1, 0], "{report}");
    let min_rtt_us = report["rtt_us"]["min"].as_f64().unwrap();
    assert!(
        min_rtt_us >= BASE_DELAY.as_micros() as f64,
        "every reply was delayed {BASE_DELAY:?}, yet the fastest took {min_rtt_us} us"
    );
}

// ---------------------------------------------------------------------------
// A stream proxy that cuts everything into 1-byte writes

/// The pause after each 1-byte write.
const BYTE_PAUSE: Duration = Duration::from_micros(200);

/// Copies `from` to `to` one byte per write, pausing after each, then
/// passes the end of the stream on as a half-close. Each write is counted
/// in `writes`.
fn trickle(mut from: TcpStream, to: TcpStream, writes: Arc<AtomicUsize>) -> io::Result<()> {
    let mut to = to;
    let mut buf = [0u8; 4096];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return to.shutdown(Shutdown::Write);
        }
        for byte in &buf[..n] {
            to.write_all(std::slice::from_ref(byte))?;
            writes.fetch_add(1, Ordering::Relaxed);
            thread::sleep(BYTE_PAUSE);
        }
    }
}

/// A TCP proxy for one connection to `server`, trickling both directions.
/// Returns its address and the write counters (client to server, server
/// to client).
fn trickle_proxy(server: SocketAddr) -> (SocketAddr, [Arc<AtomicUsize>; 2]) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let [up_writes, down_writes] = counters.clone();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let deadline = Instant::now() + WAIT;
        let client = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return,
            }
        };
        let upstream = TcpStream::connect_timeout(&server, WAIT).unwrap();
        for s in [&client, &upstream] {
            s.set_nonblocking(false).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.set_write_timeout(Some(WAIT)).unwrap();
        }
        let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let up = thread::spawn(move || trickle(client, upstream, up_writes));
        let down = thread::spawn(move || trickle(u2, c2, down_writes));
        let _ = up.join();
        let _ = down.join();
    });
    (addr, counters)
}

#[test]
fn connect_round_trips_a_stream_cut_into_1_byte_writes() {
    let server = serve(&["tcp://127.0.0.1:0"], &[]);
    let (proxy, [up, down]) = trickle_proxy(ip_addr_of(server.endpoint()));
    // Every byte value, then random bytes: 3 KiB, about a second of 1-byte
    // writes each way (the two directions overlap).
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend(random_bytes(3 * 1024 - 256, 9));
    let out = sockecho(&["connect", &format!("tcp://{proxy}")], &data);
    assert_eq!(out.code(), 0, "connect: {}", out.stderr);
    assert_bytes_eq(&out.stdout, &data, "echo through 1-byte writes");
    assert_eq!(
        up.load(Ordering::Relaxed),
        data.len(),
        "writes to the server"
    );
    assert_eq!(
        down.load(Ordering::Relaxed),
        data.len(),
        "writes to the client"
    );
}
