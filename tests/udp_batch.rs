//! UDP served in batches: one `recvmmsg` takes many datagrams, one
//! `sendmmsg` sends their replies, and replies to one peer of one size go
//! out as a single GSO send that the kernel cuts into datagrams. None of
//! that may show: every datagram still gets exactly its own bytes back, at
//! its own sender, in the order sent, whatever else shares its batch.
//!
//! Bursts are sent back to back so that batches hold many datagrams from
//! one peer (GSO runs) and from several (runs must never mix peers). Each
//! test keeps what it has in flight well under what the server's default
//! receive buffer holds (about 256 datagrams of up to 100 bytes, 92 of up
//! to 1,472, 48 of 2,800, 3 of 65,507 on Linux), so the kernel never drops
//! one and every loss is the server's.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::*;

/// A UDP client on the loopback address of `server`'s family, connected to
/// it, with every receive bounded by [`WAIT`].
fn client(server: SocketAddr) -> UdpSocket {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let socket = UdpSocket::bind(local).expect("bind a client");
    socket.connect(server).expect("connect the client");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// Datagram `index` of client `who`: `size` bytes that no other datagram of
/// the test has (its client and index first, then bytes from that seed).
fn payload(who: u8, index: usize, size: usize) -> Vec<u8> {
    let mut data = random_bytes(size, (u64::from(who) << 32) | index as u64);
    if size >= 2 {
        data[0] = who;
        data[1] = index as u8;
    }
    data
}

/// Client `who`'s payloads, one per size.
fn payloads(who: u8, sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| payload(who, i, size))
        .collect()
}

/// Sends every payload back to back, then reads as many replies and
/// checks each against the request of the same rank: same bytes, same
/// sender, same order.
#[track_caller]
fn burst_round_trip(socket: &UdpSocket, requests: &[Vec<u8>], what: &str) {
    for request in requests {
        assert_eq!(socket.send(request).expect("send"), request.len());
    }
    let mut buf = vec![0u8; 70_000];
    for (i, request) in requests.iter().enumerate() {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: reply {i} of {}: {e}", requests.len()));
        let reply = &buf[..n];
        if reply != request.as_slice() && reply.len() >= 2 && request.len() >= 2 {
            assert_eq!(
                (reply[0], reply[1]),
                (request[0], request[1]),
                "{what}: reply {i} is another datagram's (client, index)"
            );
        }
        assert_bytes_eq(reply, request, &format!("{what}: reply {i}"));
    }
}

/// Sizes of up to 100 bytes (about 832 bytes of receive buffer each) with
/// runs of equal sizes, shorter tails, longer follow-ups, empty and one-byte
/// datagrams: 64 in all.
fn small_mixed_sizes() -> Vec<usize> {
    let mut sizes = Vec::new();
    sizes.extend([64; 8]);
    sizes.extend([64, 64, 30]);
    sizes.extend([30, 30, 30, 31]);
    sizes.extend([2; 5]);
    sizes.extend([100, 100, 100, 99, 100, 98]);
    sizes.extend([0, 0, 7, 0, 7, 7]);
    sizes.extend([1; 6]);
    sizes.extend([50, 49, 48, 47, 46, 45, 44, 43]);
    sizes.extend([16; 14]);
    sizes.extend([17, 100, 3, 3]);
    assert_eq!(sizes.len(), 64);
    sizes
}

#[test]
fn many_clients_bursts_each_come_back_to_their_sender() {
    let server = serve(&["udp://127.0.0.1:0"], &["-q"]);
    let addr = ip_addr_of(server.endpoint());
    let sizes = small_mixed_sizes();
    // Eight clients, two at a time bursting together (128 datagrams in
    // flight at most), all with the same sizes: a GSO run that took a
    // datagram of the other client's would show as a wrong reply.
    for wave in 0..4u8 {
        let start = Barrier::new(2);
        thread::scope(|scope| {
            for side in 0..2u8 {
                let (start, sizes) = (&start, &sizes);
                scope.spawn(move || {
                    let who = wave * 2 + side;
                    let socket = client(addr);
                    let requests = payloads(who, sizes);
                    start.wait();
                    burst_round_trip(&socket, &requests, &format!("client {who}"));
                });
            }
        });
    }
}

#[test]
fn ipv6_bursts_from_two_clients_come_back_exactly() {
    if !has_ipv6() {
        return;
    }
    let server = serve(&["udp://[::1]:0"], &["-q"]);
    let addr = ip_addr_of(server.endpoint());
    let sizes = small_mixed_sizes();
    let start = Barrier::new(2);
    thread::scope(|scope| {
        for who in 0..2u8 {
            let (start, sizes) = (&start, &sizes);
            scope.spawn(move || {
                let socket = client(addr);
                let requests = payloads(who, sizes);
                start.wait();
                burst_round_trip(&socket, &requests, &format!("IPv6 client {who}"));
            });
        }
    });
}

#[test]
fn mixed_sizes_from_one_peer_split_into_the_right_datagrams() {
    let server = serve(&["udp://127.0.0.1:0"], &["-q"]);
    let socket = client(ip_addr_of(server.endpoint()));
    let small: Vec<Vec<u8>> = small_mixed_sizes()
        .into_iter()
        .enumerate()
        .map(|(i, size)| payload(1, i, size))
        .collect();
    burst_round_trip(&socket, &small, "small sizes");

    // Around an Ethernet MTU's payload (1,472): 30 datagrams.
    let mut sizes = vec![1400; 5];
    sizes.extend([1000, 1400, 1400, 1400, 1472, 1472, 1472, 1472, 200, 1472]);
    sizes.extend([0, 1400, 1400, 1400, 1400, 1400, 1400, 700, 700, 1]);
    sizes.extend([1472, 1472, 1472, 1471, 1472]);
    assert_eq!(sizes.len(), 30);
    let mtu: Vec<Vec<u8>> = sizes
        .into_iter()
        .enumerate()
        .map(|(i, size)| payload(2, i, size))
        .collect();
    burst_round_trip(&socket, &mtu, "MTU-sized");

    // 26 x 2,800 bytes: more than one GSO send may carry (64 KiB), so the
    // run must be cut by bytes, not only by count.
    let big: Vec<Vec<u8>> = (0..26).map(|i| payload(3, i, 2800)).collect();
    burst_round_trip(&socket, &big, "2800-byte run");
}

#[test]
fn max_size_datagrams_round_trip() {
    let server = serve(&["udp://127.0.0.1:0"], &["-q"]);
    let socket = client(ip_addr_of(server.endpoint()));
    let max = 65_507;
    burst_round_trip(&socket, &[payload(4, 0, max)], "one 65,507-byte datagram");
    // Two of them back to back, then small ones behind: a GSO send never
    // takes two maximal datagrams, and the small ones follow in order.
    let burst = vec![
        payload(4, 1, max),
        payload(4, 2, max),
        payload(4, 3, 10),
        payload(4, 4, 10),
    ];
    burst_round_trip(&socket, &burst, "maximal datagrams in a burst");
}

#[test]
fn once_serves_exactly_one_datagram_of_a_burst() {
    let mut server = serve(&["udp://127.0.0.1:0"], &["--once", "-q"]);
    let socket = client(ip_addr_of(server.endpoint()));
    let requests: Vec<Vec<u8>> = (0..8).map(|i| payload(5, i, 40)).collect();
    for request in &requests {
        socket.send(request).expect("send");
    }
    let mut buf = [0u8; 128];
    let n = socket.recv(&mut buf).expect("the one reply");
    assert_bytes_eq(&buf[..n], &requests[0], "the reply to the first datagram");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "serve --once: {}", exited.stderr);
    // Replies over loopback are in the client's queue before the server
    // can exit: nothing more is there now.
    socket.set_nonblocking(true).unwrap();
    match socket.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        // The closed server's port answers nothing; a refusal is no reply.
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        Ok(n) => panic!("--once sent a second reply ({n} bytes)"),
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn discard_answers_no_datagram_of_a_burst() {
    let server = serve(&["udp://127.0.0.1:0"], &["--mode", "discard", "-q"]);
    let socket = client(ip_addr_of(server.endpoint()));
    for (i, size) in small_mixed_sizes().into_iter().enumerate() {
        socket.send(&payload(6, i, size)).expect("send");
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    match socket.recv(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(n) => panic!("discard replied ({n} bytes)"),
        Err(e) => panic!("recv: {e}"),
    }
}

/// RFC 864's rotating lines, as many bytes of them as asked.
fn chargen_text(len: usize) -> Vec<u8> {
    let printable: Vec<u8> = (b' '..=b'~').collect();
    let mut text = Vec::new();
    for line in 0.. {
        if text.len() >= len {
            break;
        }
        text.extend((0..72).map(|i| printable[(line + i) % printable.len()]));
        text.extend_from_slice(b"\r\n");
    }
    text.truncate(len);
    text
}

#[test]
fn chargen_answers_every_datagram_of_a_burst() {
    let server = serve(&["udp://127.0.0.1:0"], &["--mode", "chargen", "-q"]);
    let socket = client(ip_addr_of(server.endpoint()));
    // 48 requests of up to 1,000 bytes: runs of 512-byte replies (from
    // requests of 512 and more) to coalesce, and shorter ones between.
    let sizes: Vec<usize> = (0..48)
        .map(|i| [600, 900, 512, 40, 1000, 0][i % 6])
        .collect();
    for (i, &size) in sizes.iter().enumerate() {
        socket.send(&payload(7, i, size)).expect("send");
    }
    let mut buf = [0u8; 2048];
    for (i, &size) in sizes.iter().enumerate() {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("chargen reply {i}: {e}"));
        assert_bytes_eq(
            &buf[..n],
            &chargen_text(size.min(512)),
            &format!("chargen reply {i} to {size} bytes"),
        );
    }
}

#[test]
fn unix_datagram_bursts_still_echo_in_order() {
    let path = TempPath::new("burst.dgram");
    let endpoint = format!("unix-dgram:{}", path.text());
    let server = serve(&[&endpoint], &["-q"]);
    let client = connect_dgram(server.endpoint());
    let requests: Vec<Vec<u8>> = small_mixed_sizes()
        .into_iter()
        .enumerate()
        .map(|(i, size)| payload(8, i, size))
        .collect();
    // A Unix sender blocks while the server's queue is full: nothing is
    // dropped. Read on another thread so that neither side waits forever.
    thread::scope(|scope| {
        let reader = scope.spawn(|| requests.iter().map(|_| client.recv()).collect::<Vec<_>>());
        for request in &requests {
            client.send(request);
        }
        let replies = reader.join().expect("reader");
        for (i, (reply, request)) in replies.iter().zip(&requests).enumerate() {
            assert_bytes_eq(reply, request, &format!("unix-dgram reply {i}"));
        }
    });
}

#[test]
fn a_stop_signal_ends_udp_serving_at_once() {
    // The default drain timeout is 5 s; the receive loop is blocked in the
    // kernel until the stop wakes it, so an exit well before then proves
    // it was woken rather than abandoned.
    let mut endpoints = vec!["udp://127.0.0.1:0", "udp://0.0.0.0:0"];
    if has_ipv6() {
        endpoints.push("udp://[::1]:0");
    }
    let mut server = serve(&endpoints, &["-q"]);
    let socket = client(ip_addr_of(&server.endpoints[0]));
    burst_round_trip(&socket, &[payload(9, 0, 10)], "before the signal");
    let signalled = std::time::Instant::now();
    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM",
        signalled.elapsed()
    );
}

#[test]
fn gso_refused_by_the_route_mtu_falls_back_to_plain_datagrams() {
    // On a loopback with Ethernet's MTU, a 2,000-byte datagram goes out in
    // IP fragments, but a GSO segment may not exceed the MTU: the kernel
    // refuses the coalesced send, and its datagrams must go again, plain.
    let Some(ns) = Netns::create() else {
        return;
    };
    ns.exec_ok(&["ip", "link", "set", "lo", "mtu", "1500"]);
    let server = Proc::spawn(
        "ip",
        &ns.wrap(&[BIN, "-vv", "serve", "udp://127.0.0.1:0", "-q"]),
    );
    let endpoint = server.listen_ok();
    // Two flows of 8 datagrams in flight each: replies to one flow share
    // batches, so runs of equal 2,000-byte replies form.
    let out = ns.exec(
        &[
            BIN,
            "bench",
            &endpoint,
            "-c",
            "2",
            "-s",
            "2000",
            "-d",
            "1s",
            "--pipeline",
            "8",
            "--threads",
            "1",
            "--json",
        ],
        b"",
    );
    assert!(out.status.success(), "bench: {}", out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench --json: {e}: {}", out.stdout_text()));
    assert!(report["messages"].as_u64().unwrap() > 100, "{report}");
    for key in ["errors", "mismatches", "lost", "duplicates"] {
        assert_eq!(report[key], 0, "{key}: {report}");
    }
    assert!(
        server.stderr().contains("GSO send refused"),
        "no GSO send was refused, so the fallback went untested: {}",
        server.stderr()
    );
}
