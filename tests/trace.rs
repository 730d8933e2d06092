//! `--trace` on `serve` and `connect`: the socket calls of the lesson and
//! the TCP states, RTT and accept queue the kernel reports, on standard
//! error, as text and as JSON lines. What only the kernel's socket
//! diagnostics show (SYN_RECV, TIME_WAIT, the `states` timeline) is in
//! `trace/states.rs`.

mod states;

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The `trace:` lines of a process's standard error.
fn trace_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("trace: "))
        .collect()
}

/// The event of a text trace line (`trace: accept peer=...` gives
/// `accept`).
fn event(line: &str) -> &str {
    line["trace: ".len()..]
        .split(' ')
        .next()
        .unwrap_or_default()
}

/// The `key=value` fields of a text trace line.
fn fields(line: &str) -> HashMap<&str, &str> {
    line.split(' ')
        .skip(2)
        .filter_map(|field| field.split_once('='))
        .collect()
}

/// A number field of a text trace line; fails the test if it is missing.
#[track_caller]
fn number(line: &str, key: &str) -> u64 {
    fields(line)
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"))
}

/// The first line, from `start` on, whose event is `name` and that has
/// every `key=value` of `want`; returns its index.
#[track_caller]
fn find(lines: &[&str], start: usize, name: &str, want: &[(&str, &str)]) -> usize {
    lines
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, line)| {
            let f = fields(line);
            event(line) == name && want.iter().all(|(k, v)| f.get(k) == Some(v))
        })
        .map(|(i, _)| i)
        .unwrap_or_else(|| {
            panic!(
                "no `{name}` line with {want:?} after line {start} in:\n{}",
                lines.join("\n")
            )
        })
}

/// `sockecho ARGS...` with standard input held open until [`finish`]:
/// the test decides when the client sees the end of its input.
struct Interactive {
    child: KillOnDrop,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    stderr: Receiver<Vec<u8>>,
}

impl Interactive {
    fn start(args: &[&str]) -> Interactive {
        let mut command = Command::new(BIN);
        command.args(args);
        Interactive::spawn(command)
    }

    /// [`start`](Interactive::start) for a command made elsewhere (run in a
    /// namespace, under a seccomp filter).
    fn spawn(mut command: Command) -> Interactive {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sockecho");
        let read_all = |mut from: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let mut all = Vec::new();
                let _ = from.read_to_end(&mut all);
                let _ = tx.send(all);
            });
            rx
        };
        let stdout = read_all(Box::new(child.stdout.take().unwrap()));
        let stderr = read_all(Box::new(child.stderr.take().unwrap()));
        Interactive {
            stdin: child.stdin.take(),
            child: KillOnDrop(child),
            stdout,
            stderr,
        }
    }

    /// Closes standard input and waits (at most [`WAIT`]) for the exit.
    fn finish(mut self) -> (ExitStatus, String, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        let text = |rx: &Receiver<Vec<u8>>| {
            let left = deadline.saturating_duration_since(Instant::now());
            let bytes = rx.recv_timeout(left).expect("the client exits in time");
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let stdout = text(&self.stdout);
        let stderr = text(&self.stderr);
        let status = loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the client did not exit");
            // Polled with a deadline: std has no wait with a timeout.
            thread::sleep(Duration::from_millis(5));
        };
        (status, stdout, stderr)
    }
}

/// Polls a running process's standard error (with a deadline) until a
/// trace line satisfies `want`; returns that line.
#[track_caller]
fn wait_for_trace(proc: &Proc, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let stderr = proc.stderr();
        if let Some(line) = trace_lines(&stderr).into_iter().find(|l| want(l)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no trace line with {what} within {WAIT:?}:\n{stderr}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The lesson, traced: `serve --once --greeting` and `connect`, the client
/// holding its input open until the server has accepted, so that both see
/// the connection ESTABLISHED before anyone closes.
fn lesson_replay() -> (String, String) {
    let mut server = serve(
        &["tcp://127.0.0.1:0"],
        &[
            "--once",
            "--greeting",
            "Connection success",
            "--backlog",
            "5",
            "--trace",
        ],
    );
    let client = Interactive::start(&["connect", "--trace", server.endpoint()]);
    let line = server.line();
    assert!(line.starts_with("connection from "), "{line}");
    let (status, stdout, client_err) = client.finish();
    assert!(status.success(), "client: {client_err}");
    assert_eq!(stdout, "Connection success");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "server: {}", exited.stderr);
    (exited.stderr, client_err)
}

#[test]
fn the_lesson_replay_shows_its_calls_and_states_in_order() {
    let (server_err, client_err) = lesson_replay();
    let lines = trace_lines(&server_err);
    let socket = find(
        &lines,
        0,
        "socket",
        &[("family", "AF_INET"), ("type", "SOCK_STREAM")],
    );
    let bind = find(&lines, socket + 1, "bind", &[]);
    let listen = find(
        &lines,
        bind + 1,
        "listen",
        &[("backlog", "5"), ("state", "LISTEN")],
    );
    let accept = find(&lines, listen + 1, "accept", &[("state", "ESTABLISHED")]);
    // The client half-closes at the end of its input: the server reads the
    // end of the stream with the peer's FIN received, then closes.
    let eof = find(&lines, accept + 1, "eof", &[("state", "CLOSE_WAIT")]);
    let shutdown = find(&lines, eof + 1, "shutdown", &[("side", "write")]);
    find(&lines, shutdown + 1, "close", &[]);

    let lines = trace_lines(&client_err);
    let socket = find(&lines, 0, "socket", &[("family", "AF_INET")]);
    let connect = find(&lines, socket + 1, "connect", &[("state", "ESTABLISHED")]);
    find(&lines, connect + 1, "close", &[]);
}

#[test]
fn the_side_that_half_closes_first_waits_in_fin_wait() {
    // A plain listener plays the server, so the test decides when it
    // closes: only after the client's trace of its own half-close.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp://{}", listener.local_addr().unwrap());
    let (tx, accepted) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(stream, _)| stream));
    });
    let mut client = Proc::sockecho(&["connect", "--trace", &target, "-m", "hello"]);
    let mut server_side = accepted.recv_timeout(WAIT).unwrap().unwrap();
    server_side.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    server_side
        .read_to_end(&mut got)
        .expect("the client's half-close");
    assert_eq!(got, b"hello\n");

    // Our side is still open: the client's FIN is out (FIN_WAIT1) or
    // acknowledged (FIN_WAIT2), and no FIN came back yet.
    let shutdown = wait_for_trace(&client, "the client's shutdown", |line| {
        event(line) == "shutdown"
    });
    let state = fields(&shutdown)["state"];
    assert!(
        state == "FIN_WAIT1" || state == "FIN_WAIT2",
        "client after its half-close: {shutdown}"
    );
    drop(server_side);
    let exited = client.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    let lines = trace_lines(&exited.stderr);
    let eof = find(&lines, 0, "eof", &[]);
    find(&lines, eof + 1, "close", &[]);
}

#[test]
fn the_side_that_reads_the_end_of_stream_is_in_close_wait() {
    let server = serve(&["tcp://127.0.0.1:0"], &["--trace"]);
    let mut conn = connect(server.endpoint());
    assert_eq!(conn.echo(b"x"), b"x");
    conn.shutdown_write();
    assert_eq!(conn.read_to_close(), b"");
    let me = conn.local_addr();
    wait_for_trace(&server, "the close", |line| event(line) == "close");
    let stderr = server.stderr();
    let lines: Vec<&str> = trace_lines(&stderr)
        .into_iter()
        .filter(|line| fields(line).get("peer") == Some(&me.as_str()))
        .collect();
    // The peer's FIN arrived; the server's own side is still open.
    let eof = find(&lines, 0, "eof", &[("state", "CLOSE_WAIT")]);
    let shutdown = find(&lines, eof + 1, "shutdown", &[("side", "write")]);
    // After its own FIN: waiting for the last ACK, or already closed.
    let state = fields(lines[shutdown])["state"];
    assert!(
        state == "LAST_ACK" || state == "CLOSE",
        "server after its half-close: {}",
        lines[shutdown]
    );
    find(&lines, shutdown + 1, "close", &[]);
}

#[test]
fn a_paused_accept_loop_shows_the_backlog_full() {
    let server = serve(
        &["tcp://127.0.0.1:0"],
        &[
            "--trace",
            "--backlog",
            "5",
            "--trace-pause-accept",
            "3s",
            "--trace-interval",
            "100ms",
        ],
    );
    let addr = ip_addr_of(server.endpoint());
    // Eight handshakes against a backlog of 5: the kernel queues six
    // (backlog + 1) and drops the rest's SYNs, so those connects wait for
    // a retransmission; they run on their own threads, kept alive until
    // the test ends.
    let (tx, held) = mpsc::channel();
    for _ in 0..8 {
        let tx = tx.clone();
        thread::spawn(move || {
            if let Ok(stream) = TcpStream::connect_timeout(&addr, WAIT) {
                let _ = tx.send(stream);
            }
        });
    }
    let full = wait_for_trace(&server, "queue >= 5 of queue_max=5", |line| {
        event(line) == "queue"
            && fields(line).get("queue_max") == Some(&"5")
            && number(line, "queue") >= 5
    });
    assert_eq!(fields(&full)["state"], "LISTEN", "{full}");
    // Seen by the interval's sample while accept waits, not in the burst
    // before an accept loop that keeps up.
    let stderr = server.stderr();
    let lines = trace_lines(&stderr);
    let seen = lines.iter().position(|line| *line == full).unwrap();
    assert!(
        !lines[..seen].iter().any(|line| event(line) == "accept"),
        "the queue filled while accept was paused:\n{}",
        lines.join("\n")
    );
    drop(held);
}

#[test]
fn rtt_is_a_positive_number_of_microseconds_on_loopback() {
    let (server_err, client_err) = lesson_replay();
    let server = trace_lines(&server_err);
    let accept = server[find(&server, 0, "accept", &[])];
    assert!(number(accept, "rtt_us") > 0, "{accept}");
    let client = trace_lines(&client_err);
    let connect = client[find(&client, 0, "connect", &[])];
    assert!(number(connect, "rtt_us") > 0, "{connect}");
    assert!(number(connect, "rttvar_us") > 0, "{connect}");
    for key in ["retransmits", "snd_cwnd", "bytes_acked", "duration_us"] {
        number(connect, key);
    }
}

#[test]
fn live_connections_are_sampled_every_interval() {
    let server = serve(
        &["tcp://127.0.0.1:0"],
        &["--trace", "--trace-interval", "50ms"],
    );
    let mut conn = connect(server.endpoint());
    assert_eq!(conn.echo(b"x"), b"x");
    let me = conn.local_addr();
    let sample = wait_for_trace(&server, "a sample of the connection", |line| {
        event(line) == "sample" && fields(line).get("peer") == Some(&me.as_str())
    });
    assert_eq!(fields(&sample)["state"], "ESTABLISHED", "{sample}");
    assert!(number(&sample, "bytes_acked") >= 1, "{sample}");
    // The listener's queue is sampled on the same clock.
    wait_for_trace(&server, "a queue sample", |line| event(line) == "queue");
}

#[test]
fn json_trace_lines_are_json_objects_with_the_same_events() {
    let mut server = Proc::sockecho(&["serve", "tcp://127.0.0.1:0", "--once", "--trace", "--json"]);
    let listen: serde_json::Value = serde_json::from_str(&server.line()).expect("listen event");
    let endpoint = listen["endpoint"].as_str().expect("endpoint").to_owned();
    let out = sockecho(
        &["connect", "--trace", "--json", &endpoint, "-m", "hi"],
        b"",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let exited = server.wait_exit();
    for (who, stderr) in [("server", &exited.stderr), ("client", &out.stderr)] {
        let events: Vec<serde_json::Value> = stderr
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{who}: {line:?} is not JSON: {e}"))
            })
            .collect();
        let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
        assert_eq!(names.len(), events.len(), "{who}: every line has an event");
        let want: &[&str] = match who {
            "server" => &[
                "socket", "bind", "listen", "accept", "eof", "shutdown", "close", "states",
            ],
            _ => &["socket", "connect", "shutdown", "eof", "close", "states"],
        };
        for name in want {
            assert!(names.contains(name), "{who}: no {name} in {names:?}");
        }
        let first = |name: &str| events.iter().find(|e| e["event"] == name).unwrap();
        if who == "server" {
            assert_eq!(first("listen")["backlog"], 1024, "{who}");
            assert_eq!(first("listen")["state"], "LISTEN", "{who}");
            assert!(first("accept")["rtt_us"].as_u64().is_some(), "{who}");
        } else {
            assert_eq!(first("connect")["state"], "ESTABLISHED", "{who}");
        }
        // The timeline is a list of states, each with its time in
        // microseconds (but the listener's LISTEN and a final CLOSED).
        let timeline = first("states")["timeline"]
            .as_array()
            .unwrap_or_else(|| panic!("{who}: {:?}", first("states")))
            .clone();
        let start = if who == "server" {
            "LISTEN"
        } else {
            "SYN_SENT"
        };
        assert_eq!(timeline[0]["state"], start, "{who}: {timeline:?}");
        // The client sends its message and half-closes at once: by the
        // server's first look at the accepted socket it may already be in
        // CLOSE_WAIT. The timeline says what was seen, nothing made up.
        let seen_next: &[&str] = if who == "server" {
            &["ESTABLISHED", "CLOSE_WAIT"]
        } else {
            &["ESTABLISHED"]
        };
        assert!(
            seen_next.iter().any(|s| timeline[1]["state"] == *s),
            "{who}: {timeline:?}"
        );
        assert!(timeline[1]["duration_us"].as_u64().is_some(), "{who}");
    }
}

#[test]
fn unix_sockets_trace_their_calls_without_tcp_fields() {
    let path = TempPath::new("trace.sock");
    let endpoint = format!("unix:{}", path.text());
    let mut server = serve(&[&endpoint], &["--once", "--trace"]);
    let out = sockecho(&["connect", "--trace", &endpoint, "-m", "hi"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout_text(), "hi\n");
    let exited = server.wait_exit();

    let lines = trace_lines(&exited.stderr);
    let socket = find(&lines, 0, "socket", &[("family", "AF_UNIX")]);
    let bind = find(&lines, socket + 1, "bind", &[("addr", endpoint.as_str())]);
    let listen = find(&lines, bind + 1, "listen", &[]);
    let accept = find(&lines, listen + 1, "accept", &[]);
    find(&lines, accept + 1, "close", &[]);
    let client = trace_lines(&out.stderr);
    find(&client, 0, "connect", &[("target", endpoint.as_str())]);
    // No TCP there: no state, no RTT, no queue, rather than made-up ones.
    for line in lines.iter().chain(&client) {
        for key in ["state", "rtt_us", "queue"] {
            assert!(!fields(line).contains_key(key), "{key} in {line}");
        }
    }
}

#[test]
fn without_trace_nothing_is_traced() {
    let mut server = serve(&["tcp://127.0.0.1:0"], &["--once"]);
    let out = sockecho(&["connect", server.endpoint(), "-m", "hi"], b"");
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let exited = server.wait_exit();
    assert!(!exited.stderr.contains("trace"), "{}", exited.stderr);
    assert!(!out.stderr.contains("trace"), "{}", out.stderr);
}

#[test]
fn trace_options_need_trace() {
    for args in [
        &["serve", "--trace-pause-accept", "1s"][..],
        &["serve", "--trace-interval", "1s"],
        &["connect", "--json"],
        &["connect", "--trace-follow", "1s"],
        &["serve", "--trace-follow", "0s"],
        &["serve", "--trace", "--trace-interval", "0s"],
    ] {
        let out = sockecho(args, b"");
        assert_error_line(&out, 2);
    }
}
