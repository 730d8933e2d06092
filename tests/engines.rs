//! The behaviours every TCP engine must share, run against both: io_uring
//! (the default where the kernel has it) and epoll (`--epoll`). The rest of
//! the suite runs on the default engine, and `.ci/run` runs it once more
//! with `SOCKECHO_TEST_ENGINE=epoll`.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use crate::common::{connect, echo_stream, random_bytes, serve, wait_until_refused};

const ENGINES: [&[&str]; 2] = [&[], &["--epoll"]];

#[test]
fn echo_half_close_and_counts() {
    for engine in ENGINES {
        let opts = [&["--greeting", "hi "], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let data = random_bytes(1 << 20, 7);
        let back = echo_stream(connect(server.endpoint()), &data);
        assert_eq!(&back[..3], b"hi ", "{engine:?}");
        assert!(back[3..] == data[..], "{engine:?}: echo differs");
        let closed = closed_line(&server);
        assert!(
            closed.ends_with(&format!("in={} out={}", data.len(), data.len() + 3)),
            "{engine:?}: {closed}"
        );
    }
}

/// The server's next `closed` line, within its next four lines.
#[track_caller]
fn closed_line(server: &common::Proc) -> String {
    (0..4)
        .map(|_| server.line())
        .find(|l| l.starts_with("closed "))
        .expect("a closed line")
}

#[test]
fn many_clients_at_once() {
    for engine in ENGINES {
        let opts = [&["-q"], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let endpoint = server.endpoint().to_owned();
        let clients: Vec<_> = (0..40)
            .map(|i| {
                let endpoint = endpoint.clone();
                std::thread::spawn(move || {
                    let data = random_bytes(64 * 1024, i);
                    echo_stream(connect(&endpoint), &data) == data
                })
            })
            .collect();
        for client in clients {
            assert!(client.join().unwrap(), "{engine:?}");
        }
    }
}

/// More connections streaming at once than the io_uring engine's buffer
/// ring holds (it starts with 4 buffers and grows as rounds take more, and
/// each connection queues a few while its send is in flight): receives
/// find the ring empty and wait for it to be refilled, and receives pause
/// and resume. Every byte still comes back to its own connection, in
/// order.
#[test]
fn more_streams_than_buffers() {
    for engine in ENGINES {
        let opts = [&["-q", "--threads", "1"], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let endpoint = server.endpoint().to_owned();
        let clients: Vec<_> = (0..120)
            .map(|i| {
                let endpoint = endpoint.clone();
                std::thread::spawn(move || {
                    let data = random_bytes(768 * 1024, 1000 + i);
                    echo_stream(connect(&endpoint), &data) == data
                })
            })
            .collect();
        for (i, client) in clients.into_iter().enumerate() {
            assert!(
                client.join().unwrap(),
                "{engine:?}: client {i} got other bytes"
            );
        }
    }
}

#[test]
fn max_conns_refuses_the_extra_connection() {
    for engine in ENGINES {
        let opts = [&["-q", "--max-conns", "2"], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let mut first = connect(server.endpoint());
        let mut second = connect(server.endpoint());
        assert_eq!(first.echo(b"1"), b"1");
        assert_eq!(second.echo(b"2"), b"2");
        let mut third = connect(server.endpoint());
        assert_eq!(third.read_to_close(), b"", "{engine:?}");
        assert_eq!(first.echo(b"still"), b"still", "{engine:?}");
    }
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    for engine in ENGINES {
        let opts = [&["--idle-timeout", "300ms"], engine].concat();
        let server = serve(&["tcp://127.0.0.1:0"], &opts);
        let mut busy = connect(server.endpoint());
        assert_eq!(busy.echo(b"x"), b"x");
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let n = match busy.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("{engine:?}: not closed: {e}"),
        };
        assert_eq!(n, 0, "{engine:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{engine:?}");
    }
}

#[test]
fn stop_refuses_then_drain_deadline_closes() {
    for engine in ENGINES {
        let opts = [&["--drain-timeout", "200ms"], engine].concat();
        let mut server = serve(&["tcp://127.0.0.1:0"], &opts);
        let endpoint = server.endpoint().to_owned();
        let mut open = connect(&endpoint);
        assert_eq!(open.echo(b"before"), b"before");
        server.signal("TERM");
        wait_until_refused(&endpoint);
        assert_eq!(
            open.echo(b"during"),
            b"during",
            "{engine:?}: echo in the drain"
        );
        assert_eq!(open.read_to_close(), b"", "{engine:?}");
        let exited = server.wait_exit();
        assert!(exited.status.success(), "{engine:?}: {}", exited.stderr);
    }
}

/// The start-up log names the engine chosen and its threads; `--threads`
/// sizes both engines.
#[test]
fn startup_log_names_the_engine() {
    let started = |args: &[&str]| {
        let mut server = common::Proc::sockecho(args);
        server.listen_ok();
        server.signal("TERM");
        let exited = server.wait_exit();
        assert!(exited.status.success(), "{args:?}: {}", exited.stderr);
        exited.stderr
    };
    let log = started(&[
        "-v",
        "serve",
        "--epoll",
        "--threads",
        "3",
        "tcp://127.0.0.1:0",
    ]);
    assert!(
        log.contains(r#"engine="epoll" threads=3 why="--epoll""#),
        "{log}"
    );
    let log = started(&["-v", "serve", "--threads", "3", "tcp://127.0.0.1:0"]);
    assert!(
        log.contains(r#"engine="io_uring" threads=3"#)
            || log.contains(r#"engine="epoll" threads=3 why="io_uring unavailable here""#),
        "{log}"
    );
    let log = started(&["-v", "serve", "--mode", "discard", "tcp://127.0.0.1:0"]);
    assert!(
        log.contains(r#"engine="epoll""#) && log.contains(r#"why="--mode""#),
        "{log}"
    );
}

/// The io_uring engine's single-shot receive path (kernels before 6.0, or
/// `SOCKECHO_URING_SINGLESHOT=1`) echoes as the multishot one does. `.ci/run`
/// also runs this whole file with the variable set.
#[test]
fn single_shot_receives_echo_streams() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(common::BIN)
        .args(["-vv", "serve", "-q", "--threads", "1", "tcp://127.0.0.1:0"])
        .env("SOCKECHO_URING_SINGLESHOT", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sockecho");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listen ok line");
    let endpoint = line
        .trim()
        .strip_prefix("listen ok ")
        .expect("listen ok")
        .to_owned();
    let clients: Vec<_> = (0..24)
        .map(|i| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let data = random_bytes(512 * 1024, 2000 + i);
                echo_stream(connect(&endpoint), &data) == data
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert!(client.join().unwrap(), "client {i} got other bytes");
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    if log.contains(r#"engine="io_uring""#) {
        assert!(log.contains("single-shot receives"), "{log}");
    }
}

/// The server's own socket for the connection whose client end is at
/// `client` (port), found in the kernel's table and borrowed with
/// pidfd_getfd(2): `None` where the kernel or our privilege does not
/// allow it.
#[cfg(target_os = "linux")]
fn server_socket_of(pid: u32, server_port: u16, client_port: u16) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (local, remote) = (
        format!("0100007F:{server_port:04X}"),
        format!("0100007F:{client_port:04X}"),
    );
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&remote.as_str()))
            .then(|| f.get(9).map(|s| (*s).to_owned()))
            .flatten()
    })?;
    let link = format!("socket:[{inode}]");
    let target = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == link))?
        .file_name()
        .to_string_lossy()
        .parse::<i32>()
        .ok()?;
    // SAFETY: plain system calls on integers; a descriptor they return is
    // new and owned here.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0);
        if pidfd < 0 {
            return None;
        }
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let fd = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            target,
            0,
        );
        (fd >= 0).then(|| std::os::fd::OwnedFd::from_raw_fd(fd as i32))
    }
}

#[cfg(target_os = "linux")]
#[test]
fn accepted_connections_have_tcp_nodelay_on_both_engines() {
    for options in [&[][..], &["--epoll"][..]] {
        let server = serve(&["tcp://127.0.0.1:0"], options);
        let mut conn = connect(server.endpoint());
        assert_eq!(conn.echo(b"x"), b"x");
        let client_port: u16 = conn
            .local_addr()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let Some(fd) = server_socket_of(server.pid(), server.port(), client_port) else {
            assert!(
                !common::interop_required(),
                "cannot borrow the server's socket (pidfd_getfd needs root and Linux 5.6)"
            );
            eprintln!("note: cannot borrow the server's socket; skipping");
            return;
        };
        let nodelay = socket2::SockRef::from(&fd).tcp_nodelay().unwrap();
        assert!(
            nodelay,
            "TCP_NODELAY is off on the served connection ({options:?})"
        );
    }
}

/// The io_uring engine's threads share the connections: each has a
/// listening socket of its own in one `SO_REUSEPORT` group, and says how
/// many it accepted when the server stops. (With one listener shared,
/// one thread took 600 of 600.)
#[test]
fn io_uring_threads_share_the_connections() {
    let mut server =
        common::Proc::sockecho(&["-v", "serve", "--threads", "2", "tcp://127.0.0.1:0"]);
    let endpoint = server.listen_ok();
    for i in 0..200u8 {
        let mut conn = connect(&endpoint);
        assert_eq!(conn.echo(&[i]), [i]);
    }
    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    if !exited.stderr.contains(r#"engine="io_uring""#) {
        eprintln!("note: io_uring is not available here; skipping");
        return;
    }
    let line = exited
        .stderr
        .lines()
        .find(|l| l.contains("connections accepted by each thread"))
        .unwrap_or_else(|| panic!("no accepted counts in {}", exited.stderr));
    let counts: Vec<u64> = line
        .split("accepted=[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap()
        .split(", ")
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "{line}");
    assert_eq!(counts.iter().sum::<u64>(), 200, "{line}");
    // A fair coin gives fewer than 50 of 200 with odds below 1e-12.
    assert!(counts.iter().all(|&n| n >= 50), "{line}");
}

/// After a burst, an idle io_uring thread gives the memory of the buffers
/// it touched back (they read as zeros afterwards), and echoes stay whole:
/// large messages on many connections, then quiet until the release, then
/// the same again on the same connections.
#[test]
fn idle_buffer_memory_is_released_and_echoes_stay_whole() {
    let server = common::Proc::sockecho(&["-vv", "serve", "--threads", "1", "tcp://127.0.0.1:0"]);
    let endpoint = server.listen_ok();
    let data = random_bytes(200_000, 31);
    let mut conns: Vec<_> = (0..8).map(|_| connect(&endpoint)).collect();
    let round = |conns: &mut Vec<common::Conn>| {
        std::thread::scope(|scope| {
            for conn in conns.iter_mut() {
                let data = &data;
                scope.spawn(move || {
                    let mut writer = conn.try_clone();
                    let sending = std::thread::spawn({
                        let data = data.clone();
                        move || writer.write_all(&data).unwrap()
                    });
                    let mut back = vec![0u8; data.len()];
                    conn.read_exact(&mut back).unwrap();
                    sending.join().unwrap();
                    assert!(back == *data, "an echo came back changed");
                });
            }
        });
    };
    round(&mut conns);
    if !server.stderr().contains(r#"engine="io_uring""#) {
        eprintln!("note: io_uring is not available here; skipping");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let released = loop {
        let log = server.stderr();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("idle: buffer memory released"))
        {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no release within 10 s: {log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let bytes: u64 = released
        .split("bytes=")
        .nth(1)
        .and_then(|b| b.split_whitespace().next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("{released}"));
    // Where task work runs inside the waits (Linux 6.1 and later), the
    // 8 x 200 kB touched many buffers; before, nothing is released.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut version = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    if (version.next().unwrap_or(0), version.next().unwrap_or(0)) >= (6, 1) {
        assert!(bytes > 0, "{released}");
    }
    round(&mut conns);
}

/// The io_uring engine's receive paths for large messages: splicing (the
/// default, on multishot and single-shot receives) and the buffers
/// (`SOCKECHO_URING_NO_SPLICE`).
const LARGE_PATHS: [(&str, &[(&str, &str)]); 3] = [
    ("splice", &[]),
    ("splice, single-shot", &[("SOCKECHO_URING_SINGLESHOT", "1")]),
    ("buffers", &[("SOCKECHO_URING_NO_SPLICE", "1")]),
];

/// Starts `sockecho -vv serve --threads 1 OPTIONS tcp://127.0.0.1:0` with
/// `env`; `None` where io_uring is not available (the epoll engine has no
/// splice path).
fn uring_server(env: &[(&str, &str)], options: &[&str]) -> Option<(common::Proc, String)> {
    let args = [
        &["-vv", "serve", "--threads", "1"],
        options,
        &["tcp://127.0.0.1:0"],
    ]
    .concat();
    let server = common::Proc::sockecho_env(&args, env);
    let endpoint = server.listen_ok();
    if server.stderr().contains(r#"engine="io_uring""#) {
        Some((server, endpoint))
    } else {
        eprintln!("note: io_uring is not available here; skipping");
        None
    }
}

/// A connection that starts with small messages and goes on with large
/// ones moves to splicing mid-stream: every byte comes back in order, the
/// end of stream after the last one, and the counts are whole. Several
/// such connections at once; and a peer that sends without reading stalls
/// only itself, then gets everything once it reads.
#[test]
fn large_messages_are_spliced_and_come_back_whole() {
    for (path, env) in LARGE_PATHS {
        let Some((server, endpoint)) = uring_server(env, &[]) else {
            return;
        };
        let mut conn = connect(&endpoint);
        assert_eq!(conn.echo(b"small first"), b"small first", "{path}");
        let data = random_bytes(4 << 20, 41);
        let back = echo_stream(conn, &data);
        common::assert_bytes_eq(&back, &data, path);
        let closed = closed_line(&server);
        let total = data.len() + b"small first".len();
        assert!(
            closed.ends_with(&format!("in={total} out={total}")),
            "{path}: {closed}"
        );

        let clients: Vec<_> = (0..8)
            .map(|i| {
                let endpoint = endpoint.clone();
                std::thread::spawn(move || {
                    let data = random_bytes(1 << 20, 50 + i);
                    echo_stream(connect(&endpoint), &data) == data
                })
            })
            .collect();
        for (i, client) in clients.into_iter().enumerate() {
            assert!(client.join().unwrap(), "{path}: client {i} got other bytes");
        }

        // 16 MiB written before a byte is read: the pipe and both socket
        // buffers fill, the server waits for room, and meanwhile another
        // connection is served.
        let mut stalled = connect(&endpoint);
        let big = random_bytes(16 << 20, 60);
        let mut writer = stalled.try_clone();
        let sending = std::thread::spawn({
            let big = big.clone();
            move || writer.write_all(&big).map(|()| writer.shutdown_write())
        });
        let other = random_bytes(1 << 20, 61);
        common::assert_bytes_eq(&echo_stream(connect(&endpoint), &other), &other, path);
        let back = stalled.read_to_close();
        sending.join().unwrap().expect("write the 16 MiB");
        common::assert_bytes_eq(&back, &big, path);

        let log = server.stderr();
        let spliced = log.contains("the connection is spliced");
        assert_eq!(spliced, *path != *"buffers", "{path}: {log}");
    }
}

/// A spliced connection still ends by the idle timeout, and by the drain
/// deadline while the server waits for room to send to a peer that does
/// not read.
#[test]
fn spliced_connections_end_by_idle_timeout_and_drain_deadline() {
    let Some((server, endpoint)) = uring_server(&[], &["--idle-timeout", "300ms"]) else {
        return;
    };
    let mut idle = connect(&endpoint);
    let data = random_bytes(64 * 1024, 70);
    for _ in 0..4 {
        assert!(idle.echo(&data) == data, "the large echo differs");
    }
    let started = Instant::now();
    assert_eq!(idle.read_to_close(), b"", "not closed by the idle timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    let closed = closed_line(&server);
    assert!(closed.ends_with("in=262144 out=262144"), "{closed}");
    assert!(
        server.stderr().contains("the connection is spliced"),
        "{}",
        server.stderr()
    );

    // Writes until the server stops reading; never reads.
    let Some((mut server, endpoint)) = uring_server(&[], &["--drain-timeout", "200ms"]) else {
        return;
    };
    let stalled = connect(&endpoint);
    stalled.set_timeouts(Duration::from_millis(500));
    let mut writer = stalled.try_clone();
    let chunk = random_bytes(256 * 1024, 71);
    let mut sent = 0;
    while sent < 64 << 20 {
        match writer.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        server.stderr().contains("the connection is spliced"),
        "{}",
        server.stderr()
    );
    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    drop(stalled);
}
