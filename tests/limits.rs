//! Limits and safety under hostile or careless peers (issue 5, promises 1,
//! 2, 3, 5, 6 and 7), through the real binary: bounded memory against a
//! peer that never reads, connection limits per server and per source,
//! descriptor exhaustion, drain under load, the UDP reflection guard's rate
//! limit, and access control; accept under pressure (issue 12: clients shed
//! while descriptors are out, the accept backoff ended by a close, no
//! invented peers). Stream behaviours run on both TCP engines.
//!
//! Figures worth a look (peak RSS, CPU while exhausted, recovery time) are
//! printed with `note:`; `cargo test --test limits -- --nocapture` shows them.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The io_uring engine (the default where the kernel has it) and epoll.
const ENGINES: [&[&str]; 2] = [&[], &["--epoll"]];

// ---------------------------------------------------------------------------
// Helpers

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// User plus system CPU time the process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name may hold spaces: fields are counted after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5); the state is 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_s: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / per_s as f64)
}

/// A TCP connection to `server` from the local address `from` (any of
/// 127.0.0.0/8 is this host's loopback on Linux).
fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    let local = SocketAddr::new(from.parse().expect("an IP address"), 0);
    socket.bind(&local.into()).expect("bind the client address");
    socket
        .connect_timeout(&server.into(), WAIT)
        .expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// Whether a just-accepted connection is closed without an echo: the
/// client reads the end of the stream (or a reset, if its byte arrived
/// after the close), within [`WAIT`].
fn is_closed_at_once(mut stream: TcpStream) -> bool {
    let _ = stream.write_all(b"x");
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("neither echoed nor closed: {e}"),
    }
}

fn echoes(stream: &mut TcpStream, data: &[u8]) -> bool {
    let mut back = vec![0u8; data.len()];
    stream.write_all(data).is_ok() && stream.read_exact(&mut back).is_ok() && back == data
}

/// Whether a new connection from `from` is echoed within [`WAIT`]. A slot
/// is released just after the connection's `closed` line, so a client
/// racing the release may be refused a few times first: polled, paced, with
/// a deadline.
fn served_soon(from: &str, server: SocketAddr) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if echoes(&mut connect_from(from, server), b"again") {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Polls (with a deadline) until the server's standard error holds `text`:
/// it is read on another thread.
#[track_caller]
fn wait_for_stderr(server: &Proc, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !server.stderr().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{text:?} never logged: {}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `tool` can be run; if not, a visible skip, or a failure under
/// `SOCKECHO_REQUIRE_INTEROP=1` (CI installs it).
fn have_tool(tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("SOCKECHO_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{tool} is required (SOCKECHO_REQUIRE_INTEROP=1) but cannot run"
        );
        eprintln!("note: SKIPPED: {tool} is not available on this host");
    }
    ok
}

/// Position-dependent test data: byte `i` of a stream is `PATTERN[i % len]`.
/// A prime length, so chunk boundaries never line up with the repetition
/// and a dropped, repeated or reordered chunk shows.
fn pattern() -> Vec<u8> {
    random_bytes(1_000_003, 0x5eed)
}

/// Whether `got`, found at stream offset `at`, is what the pattern says.
fn matches_pattern(pattern: &[u8], at: u64, got: &[u8]) -> bool {
    let mut pos = (at % pattern.len() as u64) as usize;
    let mut rest = got;
    while !rest.is_empty() {
        let n = rest.len().min(pattern.len() - pos);
        if rest[..n] != pattern[pos..pos + n] {
            return false;
        }
        rest = &rest[n..];
        pos = 0;
    }
    true
}

// ---------------------------------------------------------------------------
// Promise 1: bounded memory whatever peers do

/// A client pushes up to 256 MiB without ever reading. Its writes must
/// stall (TCP or Unix flow control) while the server's resident memory stays
/// under 64 MiB and another client keeps echoing; then everything it did
/// get in comes back, byte-exact.
fn slow_reader_stalls_only_itself(endpoint: &str, options: &[&str]) {
    const LIMIT: usize = 256 * MIB;
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let opts = [&["-q"], options].concat();
    let server = serve(&[endpoint], &opts);
    let pid = server.pid();
    let what = format!("{} {options:?}", server.endpoint());
    let pattern = pattern();

    let mut pusher = connect(server.endpoint());
    pusher.set_nonblocking(true);
    let mut other = connect(server.endpoint());
    let ping = random_bytes(4096, 3);

    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_echo = Instant::now();
    let mut pushed = 0usize;
    let mut echoes_done = 0;
    let mut peak_rss = 0;
    // Bounded: 10 s at most, or until the writes have stalled for 1 s.
    while pushed < LIMIT
        && last_progress.elapsed() < Duration::from_secs(1)
        && started.elapsed() < Duration::from_secs(10)
    {
        let at = pushed % pattern.len();
        let end = (at + MIB).min(pattern.len());
        match pusher.write(&pattern[at..end]) {
            Ok(n) => {
                pushed += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Polled: nothing to wait on but the peer's window.
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{what}: pusher write failed after {pushed} bytes: {e}"),
        }
        if last_echo.elapsed() >= Duration::from_millis(50) {
            assert_eq!(other.echo(&ping), ping, "{what}: the other client");
            echoes_done += 1;
            peak_rss = peak_rss.max(status_kib(pid, "VmRSS"));
            last_echo = Instant::now();
        }
    }
    assert!(
        pushed < LIMIT,
        "{what}: all 256 MiB went in without reading: the server buffered it"
    );
    assert!(echoes_done > 0, "{what}: no echo while pushing");
    assert_eq!(other.echo(&ping), ping, "{what}: the other client, stalled");
    let hwm = status_kib(pid, "VmHWM");
    peak_rss = peak_rss.max(status_kib(pid, "VmRSS"));
    eprintln!(
        "note: {what}: pushed {:.1} MiB before the writes stalled; server peak RSS {:.1} MiB (VmHWM)",
        pushed as f64 / MIB as f64,
        hwm as f64 / 1024.0
    );
    assert!(
        hwm < RSS_LIMIT_KIB && peak_rss < RSS_LIMIT_KIB,
        "{what}: server memory peaked at {hwm} KiB (limit {RSS_LIMIT_KIB} KiB)"
    );

    // Nothing the server accepted is lost: read it all back.
    pusher.set_nonblocking(false);
    let mut reader = pusher.try_clone();
    let got = thread::scope(|scope| {
        let read = scope.spawn(move || reader.read_to_close());
        pusher.shutdown_write();
        read.join().unwrap()
    });
    assert_eq!(got.len(), pushed, "{what}: echoed byte count");
    assert!(
        matches_pattern(&pattern, 0, &got),
        "{what}: the echo differs from what was pushed"
    );
}

#[test]
fn slow_reader_cannot_grow_server_memory_tcp() {
    for engine in ENGINES {
        slow_reader_stalls_only_itself("tcp://127.0.0.1:0", engine);
    }
}

#[test]
fn slow_reader_cannot_grow_server_memory_unix() {
    let path = TempPath::new("slow.sock");
    slow_reader_stalls_only_itself(&format!("unix:{}", path.text()), &[]);
}

// ---------------------------------------------------------------------------
// Promise 2: connection limits, idle and slow peers

#[test]
fn max_conns_per_ip_refuses_the_extra_connection_from_one_source() {
    for engine in ENGINES {
        let opts = [&["--max-conns-per-ip", "2"], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let addr = ip_addr_of(server.endpoint());
        let mut first = connect_from("127.0.0.1", addr);
        let mut second = connect_from("127.0.0.1", addr);
        assert!(echoes(&mut first, b"1") && echoes(&mut second, b"2"));
        assert!(
            is_closed_at_once(connect_from("127.0.0.1", addr)),
            "{engine:?}: a third connection from 127.0.0.1 was served"
        );
        // Another source has its own count.
        let mut elsewhere = connect_from("127.0.0.2", addr);
        assert!(echoes(&mut elsewhere, b"other"), "{engine:?}: 127.0.0.2");
        assert!(echoes(&mut first, b"still"), "{engine:?}: the first, after");

        // Closing one frees its place: the slot is released as the
        // connection ends, so a client racing the close may be refused
        // once; a few tries, not a sleep.
        drop(first);
        let served = served_soon("127.0.0.1", addr);
        assert!(
            served,
            "{engine:?}: a freed per-source slot is never reused"
        );
        wait_for_stderr(&server, "--max-conns-per-ip");
    }
}

/// A slowloris peer that trickles a byte every 200 ms is served (each byte
/// is progress: that is echo), one that goes quiet past --idle-timeout is
/// closed, and --max-conns-per-ip keeps trickling peers from one address
/// from holding more than their share.
#[test]
fn slow_peers_cannot_hold_every_slot() {
    for engine in ENGINES {
        let opts = [
            &["-q", "--idle-timeout", "1s", "--max-conns-per-ip", "2"],
            engine,
        ]
        .concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let addr = ip_addr_of(server.endpoint());
        let mut trickle = connect_from("127.0.0.1", addr);
        let mut quiet = connect_from("127.0.0.1", addr);
        assert!(echoes(&mut quiet, b"q"));
        let quiet_since = Instant::now();
        assert!(
            is_closed_at_once(connect_from("127.0.0.1", addr)),
            "{engine:?}: a third slow peer from one address got a slot"
        );

        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_millis(2500) {
            assert!(
                echoes(&mut trickle, &[sent as u8]),
                "{engine:?}: the trickling peer was cut off after {sent} bytes"
            );
            sent += 1;
            // The peer's pace, not a synchronisation.
            thread::sleep(Duration::from_millis(200));
        }
        // The quiet one was closed at its idle timeout, well before now.
        let mut buf = [0u8; 4];
        let n = match quiet.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("{engine:?}: quiet peer not closed: {e}"),
        };
        assert_eq!(n, 0, "{engine:?}: quiet peer");
        assert!(quiet_since.elapsed() < Duration::from_secs(6));
        // Its slot is free again.
        let served = served_soon("127.0.0.1", addr);
        assert!(served, "{engine:?}: the timed-out peer's slot stays taken");
    }
}

#[test]
fn limits_have_documented_defaults() {
    let out = sockecho(&["serve", "--help"], b"");
    assert_eq!(out.code(), 0);
    let help = out.stdout_text();
    for (flag, default) in [
        ("--max-conns <N>", "[default: 10000]"),
        ("--idle-timeout <DURATION>", "[default: 5m]"),
        ("--udp-rate <N>", "[default: 1000]"),
        ("--drain-timeout <DURATION>", "[default: 5s]"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing from serve --help"));
        let section = &help[at..];
        let end = section[flag.len()..]
            .find("\n  -")
            .map_or(section.len(), |e| e + flag.len());
        assert!(
            section[..end].contains(default),
            "{flag}: {default} not in {:?}",
            &section[..end]
        );
    }
    for flag in ["--max-conns-per-ip", "--allow", "--deny"] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}

// ---------------------------------------------------------------------------
// Promise 3: descriptor exhaustion

/// Under `prlimit --nofile=64:64`, 200 connection attempts exhaust the
/// server's descriptors: it must keep serving what it has, not spin while
/// exhausted, and serve a fresh client within 5 s once they are freed (one
/// that comes while the server is still closing them may be shed and try
/// again, as a client would).
#[test]
fn fd_exhaustion_neither_kills_nor_spins() {
    if !have_tool("prlimit", &["--version"]) {
        return;
    }
    for engine in ENGINES {
        let mut args = vec!["--nofile=64:64", BIN, "serve", "tcp://127.0.0.1:0", "-q"];
        args.extend_from_slice(engine);
        let server = Proc::spawn("prlimit", &args);
        let endpoint = server.listen_ok();
        let addr = ip_addr_of(&endpoint);
        let pid = server.pid();
        let mut early = connect_from("127.0.0.1", addr);
        assert!(echoes(&mut early, b"early"));

        let held: Vec<TcpStream> = (0..200).map(|_| connect_from("127.0.0.1", addr)).collect();
        // Exhausted once the server says it cannot accept.
        wait_for_stderr(&server, "cannot accept");
        let cpu_before = cpu_time(pid);
        let window = Instant::now();
        // Polled through the window: the server must stay up and serving.
        while window.elapsed() < Duration::from_secs(2) {
            assert!(echoes(&mut early, b"still"), "{engine:?}: early client");
            thread::sleep(Duration::from_millis(100));
        }
        let used = cpu_time(pid) - cpu_before;
        eprintln!("note: {engine:?}: CPU while exhausted: {used:?} in 2 s");
        assert!(
            used < Duration::from_millis(500),
            "{engine:?}: the server spun while exhausted: {used:?} of CPU in 2 s"
        );
        let warnings = server.stderr().matches("cannot accept").count();
        assert!(
            warnings < 30,
            "{engine:?}: {warnings} `cannot accept` lines: a flood"
        );

        drop(held);
        drop(early);
        let freed = Instant::now();
        // A client that comes while the server is still closing them may
        // be shed (it reads the end of the stream at once): it tries again.
        loop {
            let mut fresh = connect_from("127.0.0.1", addr);
            fresh
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            if echoes(&mut fresh, b"fresh") {
                break;
            }
            assert!(
                freed.elapsed() < Duration::from_secs(5),
                "{engine:?}: no echo within 5 s of freeing descriptors"
            );
        }
        let recovered = freed.elapsed();
        eprintln!("note: {engine:?}: fresh client echoed {recovered:?} after freeing");
        assert!(recovered < Duration::from_secs(5));
    }
}

/// How long a client shed while the server is out of descriptors may take
/// to see its connection end: the accept backoff's cap (1 s) plus slack for
/// a loaded machine; far under a TCP connect timeout (SYNs are retried for
/// over two minutes) or a client's own (typically 10 to 75 s).
const SHED_BOUND: Duration = Duration::from_secs(5);

/// A server under `prlimit --nofile=64:64`, on one io_uring thread (one
/// accept backoff to reason about), and clients connected one at a time
/// until one is not served: returns the server, its address and the
/// clients it serves (holding every descriptor it has).
fn exhausted_server(engine: &[&str]) -> (Proc, SocketAddr, Vec<TcpStream>) {
    let mut args = vec![
        "--nofile=64:64",
        BIN,
        "serve",
        "tcp://127.0.0.1:0",
        "-q",
        "--threads",
        "1",
    ];
    args.extend_from_slice(engine);
    let server = Proc::spawn("prlimit", &args);
    let addr = ip_addr_of(&server.listen_ok());
    let mut served = Vec::new();
    for _ in 0..64 {
        let mut client = connect_from("127.0.0.1", addr);
        client.set_read_timeout(Some(SHED_BOUND)).unwrap();
        if !echoes(&mut client, b"x") {
            return (server, addr, served);
        }
        served.push(client);
    }
    panic!("{engine:?}: 64 clients served under a limit of 64 descriptors");
}

/// Whether a client the server cannot serve sees its connection end (the
/// end of the stream, or a reset) rather than wait: within [`SHED_BOUND`].
fn is_shed(mut client: TcpStream) -> bool {
    client.set_read_timeout(Some(SHED_BOUND)).unwrap();
    let mut buf = [0u8; 16];
    match client.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("neither shed nor waiting: {e}"),
    }
}

/// Waits (polling the server's log, with a deadline) for `lines` more
/// `cannot accept ... retry_in=1s` lines: the accept backoff is at its cap,
/// and (the log allows a line a second, one per wake-up at the cap) the
/// last one marks a wake-up that just happened, the next a second away.
#[track_caller]
fn wait_for_backoff_cap(server: &Proc, lines: usize) {
    let at_cap = || server.stderr().matches("retry_in=1s").count();
    let deadline = Instant::now() + WAIT;
    let want = at_cap() + lines;
    while at_cap() < want {
        assert!(
            Instant::now() < deadline,
            "the accept backoff never reached 1 s: {}",
            server.stderr()
        );
        // Polled: the server's log is read on another thread.
        thread::sleep(Duration::from_millis(5));
    }
}

/// While the server is out of descriptors, clients that connect are shed:
/// each sees its connection end within [`SHED_BOUND`] (most at once, as
/// they arrive) instead of waiting in the backlog until it gives up, the
/// clients already served stay served, and standard error gets a counted
/// line a second, not a line per client.
#[test]
fn clients_are_shed_while_descriptors_are_out() {
    if !have_tool("prlimit", &["--version"]) {
        return;
    }
    for engine in ENGINES {
        let (server, addr, mut served) = exhausted_server(engine);
        let exhausted = Instant::now();
        // From when the backoff is at its cap: a client shed only at its
        // wake-ups would wait up to a second.
        wait_for_backoff_cap(&server, 1);
        let started = Instant::now();
        let cpu_before = cpu_time(server.pid());
        // A connect loop: each client waits for its end, then the next.
        let mut waits = Vec::new();
        while started.elapsed() < Duration::from_secs(3) {
            let client = connect_from("127.0.0.1", addr);
            let connected = Instant::now();
            assert!(
                is_shed(client),
                "{engine:?}: a client connecting while the server is out of descriptors was \
                 left waiting over {SHED_BOUND:?}"
            );
            waits.push(connected.elapsed());
        }
        let cpu = cpu_time(server.pid()) - cpu_before;
        waits.sort();
        eprintln!(
            "note: {engine:?}: {} clients shed one after another, waits {:?} (median) {:?} \
             (max); server CPU {cpu:?} in {:?}",
            waits.len(),
            waits[waits.len() / 2],
            waits[waits.len() - 1],
            started.elapsed()
        );
        // Shed as they arrive, not at the backoff's wake-ups (a second
        // apart by now): the median, not the maximum, so a moment's
        // scheduling delay on a busy machine does not count.
        let median = waits[waits.len() / 2];
        assert!(
            median < Duration::from_millis(250),
            "{engine:?}: shed clients waited {median:?} (median): shed at the backoff's \
             wake-ups, not as they arrive"
        );
        for client in &mut served {
            assert!(echoes(client, b"still"), "{engine:?}: a served client");
        }
        let stderr = server.stderr();
        let lines = stderr.matches("cannot accept").count();
        let seconds = exhausted.elapsed().as_secs() + 2;
        assert!(
            (1..=seconds as usize).contains(&lines),
            "{engine:?}: {lines} `cannot accept` lines in about {seconds} s: {stderr}"
        );
        assert!(stderr.contains("shed="), "{engine:?}: {stderr}");
    }
}

/// The descriptors `pid` has open.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// Once the accept backoff has grown to its cap (1 s), a descriptor freed
/// by a closing connection serves the next client at once, not up to a
/// second later: the close ends the backoff, and a client that comes first
/// finds the descriptor free instead of being shed. The backoff's phase is
/// read from standard error (see [`wait_for_backoff_cap`]): without either,
/// the fresh client would be shed, or wait for the next wake-up, about a
/// second away.
#[test]
fn a_closing_connection_ends_the_accept_backoff() {
    if !have_tool("prlimit", &["--version"]) {
        return;
    }
    for engine in ENGINES {
        let (server, addr, mut served) = exhausted_server(engine);
        let pid = server.pid();
        // A first line at the cap, then the next: a wake-up just happened.
        wait_for_backoff_cap(&server, 1);
        wait_for_backoff_cap(&server, 1);
        let deadline = Instant::now() + WAIT;
        // One served client leaves; once the server has closed its
        // descriptor, a fresh client comes.
        let fds = fd_count(pid);
        let mut leaving = served.pop().unwrap();
        leaving.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        leaving.read_to_end(&mut rest).unwrap();
        while fd_count(pid) >= fds {
            assert!(
                Instant::now() < deadline,
                "{engine:?}: the connection's descriptor never closed"
            );
            thread::sleep(Duration::from_millis(1));
        }
        let freed = Instant::now();
        let mut fresh = connect_from("127.0.0.1", addr);
        assert!(
            echoes(&mut fresh, b"fresh"),
            "{engine:?}: the fresh client was not served once a descriptor was free"
        );
        let took = freed.elapsed();
        eprintln!(
            "note: {engine:?}: a fresh client echoed {took:?} after a close ended the backoff"
        );
        assert!(
            took < Duration::from_millis(500),
            "{engine:?}: a fresh client waited {took:?} after a descriptor came free: the \
             backoff (1 s) ran out instead of ending at the close"
        );
        // The rest are still served.
        assert!(echoes(&mut served[0], b"still"), "{engine:?}");
    }
}

/// Connections reset right after connecting (SO_LINGER 0, then close) are
/// never reported from an invented address: each `connection` and `closed`
/// line names the client's real address, or `unknown` where the io_uring
/// engine's multishot accept gave none and the socket had none left. Run on
/// the multishot accept, the single-shot one (`SOCKECHO_URING_SINGLESHOT`,
/// which takes the address from the accept) and epoll.
#[test]
fn reset_connections_are_never_given_an_invented_peer() {
    for (what, env, engine) in [
        ("io_uring multishot accept", None, &[][..]),
        (
            "io_uring single-shot accept",
            Some("SOCKECHO_URING_SINGLESHOT=1"),
            &[],
        ),
        ("epoll", None, &["--epoll"]),
    ] {
        let mut args: Vec<&str> = env.into_iter().collect();
        args.extend([BIN, "serve", "tcp://127.0.0.1:0", "--threads", "1"]);
        args.extend_from_slice(engine);
        let mut server = Proc::spawn("env", &args);
        let addr = ip_addr_of(&server.listen_ok());
        for _ in 0..200 {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.connect_timeout(&addr.into(), WAIT).unwrap();
            socket.set_linger(Some(Duration::ZERO)).unwrap();
            drop(socket); // a reset, at once
        }
        // A last, ordinary client; then the server drains and exits, so
        // every line it will print is in what it printed.
        let mut last = connect_from("127.0.0.1", addr);
        assert!(echoes(&mut last, b"last"), "{what}");
        let last_peer = last.local_addr().unwrap().to_string();
        drop(last);
        server.signal("TERM");
        let exited = server.wait_exit();
        assert!(exited.status.success(), "{what}: {}", exited.stderr);
        let (mut opened, mut closed, mut unknown) = (0, 0, 0);
        for line in &exited.rest {
            let peer = if let Some(rest) = line.strip_prefix("connection from ") {
                opened += 1;
                rest.split(' ').next().unwrap_or_default()
            } else if let Some(rest) = line.strip_prefix("closed ") {
                closed += 1;
                rest.split(' ').next().unwrap_or_default()
            } else {
                panic!("{what}: unexpected line {line:?}");
            };
            if peer == "unknown" {
                unknown += 1;
                continue;
            }
            let ip = peer
                .parse::<SocketAddr>()
                .unwrap_or_else(|_| panic!("{what}: peer {peer:?} in {line:?}"));
            assert!(
                ip.ip().is_loopback() && ip.port() != 0,
                "{what}: an invented peer in {line:?}"
            );
        }
        assert_eq!(opened, closed, "{what}: a connection without its end");
        assert!(
            exited
                .rest
                .iter()
                .any(|l| l.starts_with(&format!("closed {last_peer} "))),
            "{what}: the last client's end is missing"
        );
        eprintln!(
            "note: {what}: {opened} connections reported of 201, {} of their lines `unknown`",
            unknown
        );
    }
}

// ---------------------------------------------------------------------------
// Promise 5: drain

/// Clients streaming as fast as they can when SIGTERM comes: each reads
/// back a byte-exact prefix of what it sent, the server exits 0 by the
/// drain deadline (plus slack), and no client hangs.
#[test]
fn sigterm_under_load_leaves_every_client_a_prefix() {
    const CLIENTS: usize = 4;
    for engine in ENGINES {
        let opts = [&["-q", "--drain-timeout", "1s"], engine].concat();
        let mut server = serve(&["tcp://127.0.0.1:0"], &opts);
        let pattern = Arc::new(pattern());
        let received: Arc<Vec<AtomicU64>> =
            Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let conn = connect(server.endpoint());
                let (pattern, received) = (pattern.clone(), received.clone());
                thread::spawn(move || stream_until_closed(conn, &pattern, &received[i]))
            })
            .collect();
        // Every client is mid-stream.
        let deadline = Instant::now() + WAIT;
        while received
            .iter()
            .any(|r| r.load(Ordering::Relaxed) < MIB as u64)
        {
            assert!(
                Instant::now() < deadline,
                "{engine:?}: clients never got going"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let signalled = Instant::now();
        server.signal("TERM");
        let exited = server.wait_exit();
        let took = signalled.elapsed();
        assert!(exited.status.success(), "{engine:?}: {}", exited.stderr);
        assert!(
            took < Duration::from_secs(4),
            "{engine:?}: exit {took:?} after SIGTERM, drain timeout 1s"
        );
        for (i, client) in clients.into_iter().enumerate() {
            let (sent, got, ok) = client.join().unwrap();
            assert!(ok, "{engine:?}: client {i} read bytes it never sent");
            assert!(got <= sent, "{engine:?}: client {i}: {got} back of {sent}");
        }
    }
}

/// Streams the pattern into `conn` on one thread and checks what comes
/// back on this one, until the server ends the connection. Returns (bytes
/// sent, bytes received, whether every received byte matched).
fn stream_until_closed(conn: Conn, pattern: &[u8], received: &AtomicU64) -> (u64, u64, bool) {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let mut writer = conn.try_clone();
        let stop = &stop;
        let sender = scope.spawn(move || {
            let mut sent = 0u64;
            let started = Instant::now();
            // Bounded: the server closes us within seconds of the signal.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                let at = (sent % pattern.len() as u64) as usize;
                let end = (at + 64 * 1024).min(pattern.len());
                match writer.write(&pattern[at..end]) {
                    Ok(n) => sent += n as u64,
                    Err(_) => break, // reset or broken pipe: the server closed
                }
            }
            sent
        });
        let mut reader = conn;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        let mut ok = true;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    ok &= matches_pattern(pattern, got, &buf[..n]);
                    got += n as u64;
                    received.store(got, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        // The server is gone: a blocked write fails at once.
        let _ = match &reader {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
        (sender.join().unwrap(), got, ok)
    })
}

/// A second signal does not wait for the drain: with a 30 s drain timeout
/// and a busy connection, the server exits within 2 s of the second one.
#[test]
fn second_signal_exits_at_once() {
    for engine in ENGINES {
        let opts = [&["-q", "--drain-timeout", "30s"], engine].concat();
        let mut server = serve(&["tcp://127.0.0.1:0"], &opts);
        let endpoint = server.endpoint().to_owned();
        let pattern = Arc::new(pattern());
        let received = Arc::new(AtomicU64::new(0));
        let busy = {
            let conn = connect(&endpoint);
            let (pattern, received) = (pattern.clone(), received.clone());
            thread::spawn(move || stream_until_closed(conn, &pattern, &received))
        };
        let deadline = Instant::now() + WAIT;
        while received.load(Ordering::Relaxed) < MIB as u64 {
            assert!(
                Instant::now() < deadline,
                "{engine:?}: the client never got going"
            );
            thread::sleep(Duration::from_millis(5));
        }
        server.signal("TERM");
        // Two signals at once could arrive as one: wait until the first
        // has been acted on (the listener is closed).
        wait_until_refused(&endpoint);
        let second = Instant::now();
        server.signal("TERM");
        let exited = server.wait_exit();
        let took = second.elapsed();
        assert!(exited.status.success(), "{engine:?}: {}", exited.stderr);
        assert!(
            took < Duration::from_secs(2),
            "{engine:?}: exit {took:?} after the second signal"
        );
        let (_, _, ok) = busy.join().unwrap();
        assert!(ok, "{engine:?}: the busy client read bytes it never sent");
    }
}

// ---------------------------------------------------------------------------
// Promise 6: UDP reflection guard

/// Counts the datagrams waiting on `socket` without blocking.
fn drain_count(socket: &UdpSocket) -> usize {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut n = 0;
    loop {
        match socket.recv(&mut buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// A UDP client bound to `from`, connected to port `port` on 127.0.0.1.
fn udp_from(from: &str, port: u16) -> UdpSocket {
    let socket = UdpSocket::bind(format!("{from}:0")).unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// Sends 40 datagrams from `from`, then one from 127.0.0.3 whose reply
/// proves the server has handled all 40 (one socket, handled in order);
/// returns how many of the 40 were answered.
fn answered_of_40(port: u16, from: &str) -> usize {
    let flood = udp_from(from, port);
    for i in 0..40u8 {
        flood.send(&[i; 32]).unwrap();
    }
    let marker = udp_from("127.0.0.3", port);
    marker.send(b"marker").unwrap();
    let mut buf = [0u8; 64];
    let n = marker.recv(&mut buf).expect("the marker's reply");
    assert_eq!(&buf[..n], b"marker");
    drain_count(&flood)
}

#[test]
fn udp_rate_limits_replies_per_source_and_logs_a_count() {
    // Bound to every address, so reachable from outside: rate limited.
    let server = serve(&["udp://0.0.0.0:0"], &["--udp-rate", "5"]);
    let port = server.port();
    let answered = answered_of_40(port, "127.0.0.1");
    assert!(
        (5..=8).contains(&answered),
        "{answered} of 40 answered at --udp-rate 5 (burst 5)"
    );
    // Another source has its own bucket.
    let answered = answered_of_40(port, "127.0.0.2");
    assert!((5..=8).contains(&answered), "127.0.0.2: {answered} of 40");
    // Dropped datagrams are logged with a count, never one line each.
    wait_for_stderr(&server, "datagrams dropped");
    let lines = server.stderr().matches("datagrams dropped").count();
    assert!(
        lines <= 3,
        "{lines} log lines for ~65 drops: {}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("--udp-rate"),
        "{}",
        server.stderr()
    );

    // 0: unlimited.
    let open = serve(&["udp://0.0.0.0:0"], &["--udp-rate", "0"]);
    assert_eq!(answered_of_40(open.port(), "127.0.0.1"), 40, "--udp-rate 0");
    // A loopback-bound socket hears only this host: no rate limit.
    let local = serve(&["udp://127.0.0.1:0"], &["--udp-rate", "5"]);
    assert_eq!(answered_of_40(local.port(), "127.0.0.1"), 40, "loopback");
}

#[test]
fn udp_replies_are_never_larger_than_requests() {
    let path = TempPath::new("sizes.dgram");
    let unix = format!("unix-dgram:{}", path.text());
    let server = serve(&["udp://127.0.0.1:0", &unix], &[]);
    for endpoint in &server.endpoints {
        let client = connect_dgram(endpoint);
        let sizes: &[usize] = if endpoint.starts_with("udp") {
            &[0, 1, 100, 1472, 9000, 65_507]
        } else {
            &[0, 1, 100, 65_507]
        };
        for &size in sizes {
            let request = random_bytes(size, size as u64);
            let reply = client.exchange(&request);
            assert!(
                reply.len() <= request.len(),
                "{endpoint}: a {size}-byte request got a {}-byte reply",
                reply.len()
            );
            assert_bytes_eq(&reply, &request, &format!("{endpoint}: {size} bytes"));
        }
    }
}

// ---------------------------------------------------------------------------
// Promise 7: access control

#[test]
fn allow_and_deny_filter_tcp_peers_before_any_byte() {
    for engine in ENGINES {
        // 127.0.0.0/30 allowed but 127.0.0.2 denied: deny wins; 127.0.0.5 is
        // outside every allow rule.
        let opts = [&["--allow", "127.0.0.0/30", "--deny", "127.0.0.2"], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let addr = ip_addr_of(server.endpoint());
        assert!(
            is_closed_at_once(connect_from("127.0.0.2", addr)),
            "{engine:?}: denied peer served"
        );
        assert!(
            is_closed_at_once(connect_from("127.0.0.5", addr)),
            "{engine:?}: peer outside --allow served"
        );
        let mut allowed = connect_from("127.0.0.1", addr);
        assert!(echoes(&mut allowed, b"allowed"), "{engine:?}");
        // The refused peers never got a `connection` line.
        let line = server.line();
        assert!(
            line.starts_with("connection from 127.0.0.1:"),
            "{engine:?}: {line}"
        );
        wait_for_stderr(&server, "connection refused");
    }
}

/// TLS endpoints are filtered at accept too, before the handshake: a
/// denied peer reads the end of the stream at once, without sending a
/// byte, while an allowed one is held open waiting for its ClientHello.
#[test]
fn deny_applies_to_tls_before_the_handshake() {
    let server = serve(&["tls://127.0.0.1:0"], &["-q", "--deny", "127.0.0.2"]);
    let addr = ip_addr_of(server.endpoint());
    let mut denied = connect_from("127.0.0.2", addr);
    let mut buf = [0u8; 16];
    let n = match denied.read(&mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
        Err(e) => panic!("denied TLS peer not closed: {e}"),
    };
    assert_eq!(n, 0, "denied TLS peer got bytes");
    let mut allowed = connect_from("127.0.0.1", addr);
    allowed
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let err = allowed
        .read(&mut buf)
        .expect_err("an allowed TLS peer is held for its handshake");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
}

#[test]
fn deny_applies_to_ipv6_peers() {
    if !has_ipv6() {
        return;
    }
    for engine in ENGINES {
        let opts = [&["--deny", "::1/128"], engine].concat();
        let server = serve(&["tcp://[::1]:0"], &opts);
        let addr = ip_addr_of(server.endpoint());
        assert!(
            is_closed_at_once(connect_from("::1", addr)),
            "{engine:?}: ::1 denied but served"
        );
    }
    // An IPv4 rule leaves IPv6 peers alone.
    let server = serve(&["tcp://[::1]:0"], &["--deny", "127.0.0.0/8"]);
    let mut conn = connect_from("::1", ip_addr_of(server.endpoint()));
    assert!(echoes(&mut conn, b"v6"));
}

#[test]
fn allow_and_deny_filter_udp_sources() {
    let server = serve(
        &["udp://127.0.0.1:0"],
        &["--allow", "127.0.0.0/30", "--deny", "127.0.0.2"],
    );
    let port = server.port();
    let denied = udp_from("127.0.0.2", port);
    let outside = udp_from("127.0.0.5", port);
    denied.send(b"denied").unwrap();
    outside.send(b"outside").unwrap();
    // The allowed reply comes after the server has handled both.
    let allowed = udp_from("127.0.0.1", port);
    allowed.send(b"allowed").unwrap();
    let mut buf = [0u8; 64];
    let n = allowed.recv(&mut buf).expect("the allowed source's reply");
    assert_eq!(&buf[..n], b"allowed");
    assert_eq!(drain_count(&denied), 0, "denied source answered");
    assert_eq!(drain_count(&outside), 0, "source outside --allow answered");
}

#[test]
fn bad_address_blocks_are_usage_errors() {
    for bad in ["10.0.0.0/33", "nonsense", "::/129", "10.0.0.0/-1"] {
        let out = sockecho(&["serve", "--allow", bad], b"");
        let line = assert_error_line(&out, 2);
        assert!(line.contains(bad), "{bad}: {line}");
        let out = sockecho(&["serve", "--deny", bad], b"");
        assert_error_line(&out, 2);
    }
}
