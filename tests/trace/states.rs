//! `--trace` beyond the descriptor: the kernel's socket diagnostics show a
//! listener's handshakes under way (SYN_RECV) and a connection after its
//! close (FIN_WAIT2, TIME_WAIT), and each connection ends with a `states`
//! line. Each state really happens here: the handshake's last ACK is held
//! back by iptables in a namespace of the test's own, TIME_WAIT comes of
//! closing first, and its end of a new connection taking its 4-tuple.
//!
//! Where the kernel has no socket diagnostics (a sandbox such as gVisor),
//! the tests that need them skip with a note, even when interop tests are
//! required: there is nothing there to see. Whether it has them is asked
//! by python3, not by the code under test, so a broken probe in sockecho
//! cannot make these tests skip themselves on a kernel that has them.

use std::io::{BufRead, BufReader};
use std::sync::OnceLock;

use super::*;
use crate::common::netns::{Netns, skip};

/// Whether this kernel answers `NETLINK_SOCK_DIAG` requests for TCP (a
/// dump of the listening sockets, as `ss -tln` asks); a note when not.
fn kernel_has_sock_diag() -> bool {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    let answer = ANSWER.get_or_init(|| {
        if !require_tool("python3") {
            return Err("python3 is not installed".into());
        }
        // nlmsghdr (len, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST|NLM_F_DUMP,
        // seq, pid), inet_diag_req_v2 (AF_INET, IPPROTO_TCP, no
        // extensions, 1 << TCP_LISTEN), a zero socket id; the answer's
        // first message must not be NLMSG_ERROR.
        let script = "import socket, struct\n\
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)\n\
            s.send(struct.pack('=LHHLLBBBBL', 72, 20, 0x301, 1, 0, 2, 6, 0, 0, 1 << 10) + bytes(48))\n\
            kind = struct.unpack('=LH', s.recv(65536)[:6])[1]\n\
            raise SystemExit(0 if kind != 2 else 1)\n";
        let out = run("python3", &["-c", script], b"");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("the kernel answers no inet_diag request: {}", out.stderr))
        }
    });
    if let Err(why) = answer {
        eprintln!("note: {why}; skipping this test");
    }
    answer.is_ok()
}

/// A `states` line's timeline: each state, its time, and whether it was
/// still going on (`+`).
fn timeline(line: &str) -> Vec<(String, Option<Duration>, bool)> {
    let text = fields(line)
        .get("timeline")
        .unwrap_or_else(|| panic!("no timeline in {line:?}"))
        .to_string();
    text.split('>')
        .map(|entry| {
            let (entry, ongoing) = match entry.strip_suffix('+') {
                Some(entry) => (entry, true),
                None => (entry, false),
            };
            match entry.split_once(':') {
                Some((state, time)) => (state.to_owned(), Some(parse_time(time)), ongoing),
                None => (entry.to_owned(), None, ongoing),
            }
        })
        .collect()
}

/// `80us`, `1.2ms`, `2.3s`.
#[track_caller]
fn parse_time(text: &str) -> Duration {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        panic!("not a time: {text:?}")
    };
    let number: f64 = number.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
    Duration::from_secs_f64(number * scale)
}

/// The states of a timeline, in order.
fn names(timeline: &[(String, Option<Duration>, bool)]) -> Vec<&str> {
    timeline.iter().map(|(state, ..)| state.as_str()).collect()
}

#[test]
fn the_lesson_replay_ends_each_side_with_the_states_it_passed_through() {
    if !kernel_has_sock_diag() {
        return;
    }
    let (server_err, client_err) = lesson_replay();
    // The server read the client's FIN (CLOSE_WAIT), sent its own, and
    // its connection left the kernel's tables.
    let lines = trace_lines(&server_err);
    let states = lines[find(&lines, 0, "states", &[])];
    let steps = timeline(states);
    let seen = names(&steps);
    assert_eq!(
        seen[..3],
        ["LISTEN", "ESTABLISHED", "CLOSE_WAIT"],
        "{states}"
    );
    assert_eq!(seen.last(), Some(&"CLOSED"), "{states}");
    assert!(
        !lines.iter().any(|l| event(l) == "sock_diag"),
        "{server_err}"
    );

    // The client closed first: its FIN went out (FIN_WAIT1, or already
    // past it when the trace read the state); once the server's FIN came
    // its descriptor reads CLOSE, and the kernel's tables say TIME_WAIT.
    let lines = trace_lines(&client_err);
    let eof = find(&lines, 0, "eof", &[("state", "CLOSE")]);
    let diag = find(&lines, 0, "diag", &[("state", "TIME_WAIT")]);
    assert!(diag <= eof + 1, "{client_err}");
    let states = lines[find(&lines, eof, "states", &[])];
    let steps = timeline(states);
    let seen = names(&steps);
    assert_eq!(seen[..2], ["SYN_SENT", "ESTABLISHED"], "{states}");
    assert_eq!(seen.last(), Some(&"TIME_WAIT"), "{states}");
}

#[test]
fn a_handshake_whose_last_ack_is_held_back_is_seen_in_syn_recv() {
    if !kernel_has_sock_diag() || !require_tool("iptables") {
        return;
    }
    let Some(ns) = Netns::create() else {
        return;
    };
    // Conntrack counts each connection's packets from its client: the
    // second is the handshake's last ACK, dropped; the ACK the client
    // sends again when the server resends its SYN-ACK (a second later)
    // passes, and nothing after is touched.
    let rule = [
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--tcp-flags",
        "ALL",
        "ACK",
        "-m",
        "connbytes",
        "--connbytes",
        "2:2",
        "--connbytes-dir",
        "original",
        "--connbytes-mode",
        "packets",
        "-j",
        "DROP",
    ];
    let added = ns.exec(&rule, b"");
    if !added.status.success() {
        skip::<()>(&format!(
            "iptables cannot hold back an ACK: {}",
            added.stderr
        ));
        return;
    }
    let mut server = ns.serve(
        &["tcp://127.0.0.1:0"],
        &[
            "--once",
            "--greeting",
            "hi",
            "--trace",
            "--trace-interval",
            "100ms",
        ],
    );
    let mut command = Command::new("ip");
    command.args(ns.wrap(&[
        BIN,
        "connect",
        "--trace",
        "--trace-follow",
        "0s",
        server.endpoint(),
    ]));
    let client = Interactive::spawn(command);

    let syn = wait_for_trace(&server, "a handshake in SYN_RECV", |line| {
        event(line) == "syn_recv"
    });
    assert_eq!(fields(&syn)["state"], "SYN_RECV", "{syn}");
    let peer = fields(&syn)["peer"].to_owned();
    let accept = wait_for_trace(&server, "the accept", |line| event(line) == "accept");
    assert_eq!(fields(&accept)["peer"], peer, "{accept}");
    // The handshake ended with the SYN-ACK sent again.
    assert!(number(&accept, "retransmits") >= 1, "{accept}");
    let line = server.line();
    assert!(line.starts_with("connection from "), "{line}");
    let (status, stdout, client_err) = client.finish();
    assert!(status.success(), "client: {client_err}");
    assert_eq!(stdout, "hi");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "server: {}", exited.stderr);

    let lines = trace_lines(&exited.stderr);
    let first = find(&lines, 0, "syn_recv", &[("peer", &peer)]);
    assert!(
        number(lines[first - 1], "syn_recv") >= 1,
        "the queue line counts it: {}",
        lines[first - 1]
    );
    assert!(
        !lines[..first].iter().any(|line| event(line) == "accept"),
        "SYN_RECV seen before the accept:\n{}",
        lines.join("\n")
    );
    find(&lines, first + 1, "accept", &[("peer", &peer)]);
    let states = lines[find(&lines, first, "states", &[("peer", &peer)])];
    let steps = timeline(states);
    assert_eq!(
        names(&steps)[..3],
        ["LISTEN", "SYN_RECV", "ESTABLISHED"],
        "{states}"
    );
    // Held a second; first seen within a sample (100ms) of the SYN.
    let held = steps[1].1.expect("a time in SYN_RECV");
    assert!(held >= Duration::from_millis(500), "{states}");

    // The client saw its own side ESTABLISHED at once: the two ends did
    // not agree while the ACK was held back.
    let client = trace_lines(&client_err);
    let connect = client[find(&client, 0, "connect", &[("state", "ESTABLISHED")])];
    let connected = Duration::from_micros(number(connect, "duration_us"));
    assert!(connected < held, "{connect}\n{states}");
}

#[test]
fn the_side_that_closes_first_is_followed_into_fin_wait2_and_time_wait() {
    if !kernel_has_sock_diag() {
        return;
    }
    let server = serve(
        &["tcp://127.0.0.1:0"],
        &["--trace", "--idle-timeout", "200ms", "--trace-follow", "1s"],
    );
    let mut conn = connect(server.endpoint());
    let me = conn.local_addr();
    let ours = |line: &str, name: &str, state: &str| {
        event(line) == name
            && fields(line).get("peer") == Some(&me.as_str())
            && fields(line).get("state") == Some(&state)
    };
    // The server closes first, at its idle timeout: its FIN is here.
    assert_eq!(conn.read_to_close(), b"");
    let close = wait_for_trace(&server, "the server's close", |l| {
        event(l) == "close" && fields(l).get("peer") == Some(&me.as_str())
    });
    assert_eq!(fields(&close)["state"], "ESTABLISHED", "{close}");
    // Its FIN acknowledged, ours not sent yet: FIN_WAIT2, which only the
    // kernel's tables show (the descriptor is closed).
    wait_for_trace(&server, "FIN_WAIT2", |l| ours(l, "diag", "FIN_WAIT2"));
    drop(conn);
    let time_wait = wait_for_trace(&server, "TIME_WAIT", |l| ours(l, "diag", "TIME_WAIT"));
    let left = number(&time_wait, "timer_ms");
    assert!(left > 0 && left <= 60_000, "{time_wait}");
    let states = wait_for_trace(&server, "the states line", |l| {
        event(l) == "states" && fields(l).get("peer") == Some(&me.as_str())
    });
    let steps = timeline(&states);
    // FIN_WAIT1 too, when a look came before the client's ACK of the FIN
    // (which it may delay).
    let mut seen = names(&steps);
    seen.retain(|state| *state != "FIN_WAIT1");
    assert_eq!(
        seen,
        ["LISTEN", "ESTABLISHED", "FIN_WAIT2", "TIME_WAIT"],
        "{states}"
    );
    // Still in TIME_WAIT at the bound (Linux keeps it a minute).
    let (_, time, ongoing) = *steps.last().unwrap();
    assert!(ongoing, "{states}");
    assert!(time.unwrap() >= Duration::from_millis(500), "{states}");
}

#[test]
fn time_wait_is_timed_until_the_kernel_lets_the_connection_go() {
    if !kernel_has_sock_diag() {
        return;
    }
    let server = serve(
        &["tcp://127.0.0.1:0"],
        &["--trace", "--idle-timeout", "200ms", "--trace-follow", "5s"],
    );
    let target = ip_addr_of(server.endpoint());
    // Two connections from one port, one after the other.
    let from_port = |port: u16| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        let local: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        socket.bind(&local.into()).unwrap();
        socket.connect_timeout(&target.into(), WAIT).unwrap();
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    };
    let mut first = from_port(0);
    let me = first.local_addr().unwrap();
    let mut rest = Vec::new();
    // The server closes first (idle timeout); we close second, and the
    // server's side waits in TIME_WAIT.
    first.read_to_end(&mut rest).unwrap();
    drop(first);
    let peer = me.to_string();
    wait_for_trace(&server, "TIME_WAIT", |l| {
        event(l) == "diag"
            && fields(l).get("peer") == Some(&peer.as_str())
            && fields(l).get("state") == Some(&"TIME_WAIT")
    });
    // A new connection from the same port: the kernel ends the TIME_WAIT
    // for it (its SYN is newer than anything the old one saw).
    let _second = from_port(me.port());
    let states = wait_for_trace(&server, "the first connection's states", |l| {
        event(l) == "states" && fields(l).get("peer") == Some(&peer.as_str())
    });
    let steps = timeline(&states);
    assert_eq!(
        names(&steps)[names(&steps).len() - 2..],
        ["TIME_WAIT", "CLOSED"],
        "{states}"
    );
    assert!(steps[steps.len() - 2].1.is_some(), "how long: {states}");
    assert!(!steps.iter().any(|(_, _, ongoing)| *ongoing), "{states}");
}

#[test]
fn connect_follows_its_own_time_wait_until_its_bound() {
    if !kernel_has_sock_diag() {
        return;
    }
    let server = serve(&["tcp://127.0.0.1:0"], &[]);
    let started = Instant::now();
    let out = sockecho(
        &[
            "connect",
            "--trace",
            "--trace-follow",
            "300ms",
            server.endpoint(),
            "-m",
            "hi",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "hi\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let lines = trace_lines(&out.stderr);
    // The client half-closed first; once the server's FIN came, its
    // descriptor reads CLOSE and the kernel's tables say TIME_WAIT.
    let eof = find(&lines, 0, "eof", &[("state", "CLOSE")]);
    let diag = find(&lines, 0, "diag", &[("state", "TIME_WAIT")]);
    assert!(diag <= eof + 1, "{}", lines.join("\n"));
    let states = lines[find(&lines, eof, "states", &[])];
    let steps = timeline(states);
    let names = names(&steps);
    assert_eq!(names[..2], ["SYN_SENT", "ESTABLISHED"], "{states}");
    assert_eq!(names.last(), Some(&"TIME_WAIT"), "{states}");
    let (_, time, ongoing) = steps.last().unwrap();
    assert!(*ongoing, "{states}");
    assert!(time.unwrap() >= Duration::from_millis(250), "{states}");
    // One diag line per change, not one per look.
    let diags = lines.iter().filter(|l| event(l) == "diag").count();
    assert_eq!(diags, 1, "{}", lines.join("\n"));
}

/// Makes `command` run without the kernel's socket diagnostics: a seccomp
/// filter fails `socket(AF_NETLINK, _, NETLINK_SOCK_DIAG)` with EPERM, as
/// a sandbox's policy would, and lets every other call through.
#[cfg(target_os = "linux")]
fn refuse_sock_diag(command: &mut Command) {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, sock_filter};
    use std::os::unix::process::CommandExt;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_unless = |k: u32, skip: u8| sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt: 0,
        jf: skip,
        k,
    };
    // struct seccomp_data: nr (u32), arch (u32), ip (u64), args (u64 each);
    // an argument's low half is first on little-endian machines.
    let low = if cfg!(target_endian = "little") { 0 } else { 4 };
    let arg = |n: u32| 16 + 8 * n + low;
    let filter = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jump_unless(libc::SYS_socket as u32, 5),
        stmt(BPF_LD | BPF_W | BPF_ABS, arg(0)),
        jump_unless(libc::AF_NETLINK as u32, 3),
        stmt(BPF_LD | BPF_W | BPF_ABS, arg(2)),
        jump_unless(libc::NETLINK_SOCK_DIAG as u32, 1),
        stmt(
            BPF_RET | BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: between fork and exec the closure makes two prctl calls
    // (async-signal-safe) on a filter built before the fork, and
    // allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const program,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(target_os = "linux")]
#[test]
fn where_sock_diag_is_refused_the_trace_says_so_once_and_goes_on() {
    let mut serve = Command::new(BIN);
    serve.args([
        "serve",
        "tcp://127.0.0.1:0",
        "--once",
        "--trace",
        "--trace-interval",
        "50ms",
    ]);
    refuse_sock_diag(&mut serve);
    let spawned = serve
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut server = match spawned {
        Ok(child) => KillOnDrop(child),
        Err(e) => {
            skip::<()>(&format!("cannot install a seccomp filter: {e}"));
            return;
        }
    };
    let (tx, lines) = mpsc::channel();
    let stdout = server.0.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listen = lines.recv_timeout(WAIT).expect("listen ok");
    let endpoint = listen.strip_prefix("listen ok ").expect(&listen).to_owned();

    let mut connect = Command::new(BIN);
    connect.args(["connect", "--trace", &endpoint, "-m", "hi"]);
    refuse_sock_diag(&mut connect);
    let client = Interactive::spawn(connect);
    let (status, stdout, client_err) = client.finish();
    assert!(status.success(), "client: {client_err}");
    assert_eq!(stdout, "hi\n");

    // The server exits after its one connection, closing its stderr.
    let mut stderr = server.0.stderr.take().unwrap();
    let (tx, read) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let server_err = read.recv_timeout(WAIT).expect("the server exits");
    let deadline = Instant::now() + WAIT;
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not exit");
        thread::sleep(Duration::from_millis(5));
    }
    for (who, stderr, calls) in [
        ("server", &server_err, &["listen", "accept", "close"][..]),
        ("client", &client_err, &["connect", "shutdown", "close"]),
    ] {
        let lines = trace_lines(stderr);
        let said: Vec<&&str> = lines.iter().filter(|l| event(l) == "sock_diag").collect();
        assert_eq!(said.len(), 1, "{who}: {stderr}");
        // (The reason is quoted: it holds spaces.)
        assert!(
            said[0].starts_with("trace: sock_diag error=\"")
                && said[0].contains("permission denied"),
            "{who}: {}",
            said[0]
        );
        // The trace goes on as without the diagnostics: the calls with
        // their TCP_INFO view, and nothing the kernel did not say.
        for call in calls {
            let line = lines[find(&lines, 0, call, &[])];
            assert!(fields(line).contains_key("state"), "{who}: {line}");
        }
        for line in &lines {
            assert!(!matches!(event(line), "diag" | "syn_recv"), "{who}: {line}");
            assert!(!fields(line).contains_key("syn_recv"), "{who}: {line}");
        }
        // The timeline ends where the descriptor last saw the connection.
        let states = lines[find(&lines, 0, "states", &[])];
        let steps = timeline(states);
        assert!(steps.last().unwrap().2, "{who}: {states}");
        assert!(
            !names(&steps)
                .iter()
                .any(|s| matches!(*s, "CLOSED" | "TIME_WAIT")),
            "{who}: {states}"
        );
    }
}
