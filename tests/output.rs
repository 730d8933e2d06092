//! What `serve` prints, when nobody reads it and when peers choose what it
//! prints: event lines never hold up serving (the contract's "Event
//! output"), and a peer's name cannot break a line or forge another.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::common::*;

/// Connections made while nobody reads standard output: their 2 event
/// lines each are well past what a pipe (64 KiB) and the queue (4096
/// lines) hold together, so some must be dropped.
const STALLED_CONNECTIONS: usize = 4000;

/// One connection after another, each echoing a line and closing; every
/// echo must come within [`WAIT`] (`conn.echo` fails the test otherwise).
fn echo_through(endpoint: &str, connections: usize) {
    for i in 0..connections {
        let mut conn = connect(endpoint);
        let line = format!("echo {i}\n");
        assert_bytes_eq(
            &conn.echo(line.as_bytes()),
            line.as_bytes(),
            &format!("echo of connection {i} while nothing reads the events"),
        );
        conn.shutdown_write();
        assert!(conn.read_to_close().is_empty());
    }
}

/// The count in a `dropped` line, text or JSON; `None` for other lines.
fn dropped_count(line: &str, json: bool) -> Option<u64> {
    if json {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        return (value["event"] == "dropped").then(|| {
            value["count"]
                .as_u64()
                .unwrap_or_else(|| panic!("no count: {line}"))
        });
    }
    let rest = line.strip_prefix("dropped ")?;
    let count = rest
        .strip_suffix(" event lines (standard output was not being read)")
        .unwrap_or_else(|| panic!("unexpected dropped line: {line:?}"));
    Some(count.parse().expect("a count of lines"))
}

/// Whether a line is a per-connection event (`connection` or `closed`).
fn per_connection(line: &str, json: bool) -> bool {
    if json {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        return value["event"] == "connection" || value["event"] == "closed";
    }
    line.starts_with("connection from ") || line.starts_with("closed ")
}

/// `serve` with standard output held (read up to `listen ok`, then not at
/// all) keeps echoing; once it is read again, the lines seen and the counts
/// of lines dropped add up to two per connection.
fn stalled_reader_costs_lines_not_echo(options: &[&str]) {
    let json = options.contains(&"--json");
    let args = [&["serve", "tcp://127.0.0.1:0"][..], options].concat();
    let (mut server, go) = Proc::sockecho_held(&args, 1);
    let listen = server.line();
    let endpoint = if json {
        let value: serde_json::Value = serde_json::from_str(&listen).unwrap();
        value["endpoint"].as_str().unwrap().to_owned()
    } else {
        listen.strip_prefix("listen ok ").unwrap().to_owned()
    };

    let started = Instant::now();
    echo_through(&endpoint, STALLED_CONNECTIONS);
    eprintln!(
        "{STALLED_CONNECTIONS} connections with a stalled reader of the events in {:?}",
        started.elapsed()
    );

    go.send(()).unwrap();
    let want = 2 * STALLED_CONNECTIONS as u64;
    let (mut seen, mut dropped, mut dropped_lines) = (0u64, 0u64, 0);
    while seen + dropped < want {
        let line = server.line();
        if let Some(count) = dropped_count(&line, json) {
            assert!(count > 0, "{line}");
            dropped += count;
            dropped_lines += 1;
        } else {
            assert!(per_connection(&line, json), "unexpected line {line:?}");
            seen += 1;
        }
    }
    assert_eq!(seen + dropped, want, "lines seen and dropped add up");
    assert!(dropped > 0, "a stalled reader must have cost lines");
    eprintln!("{seen} event lines written, {dropped} dropped ({dropped_lines} dropped lines)");

    // Output flows again: a new connection's lines come, none dropped.
    echo_through(&endpoint, 1);
    for _ in 0..2 {
        let line = server.line();
        assert!(per_connection(&line, json), "{line:?}");
    }
    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(
        exited.status.success(),
        "{:?} {}",
        exited.status,
        exited.stderr
    );
    assert!(exited.rest.is_empty(), "nothing more: {:?}", exited.rest);
    assert!(!exited.stderr.contains("panicked"), "{}", exited.stderr);
}

#[test]
fn a_stalled_reader_of_text_events_costs_lines_not_echo() {
    // The default engine: io_uring where the kernel has it.
    stalled_reader_costs_lines_not_echo(&[]);
}

#[test]
fn a_stalled_reader_of_json_events_costs_lines_not_echo_on_epoll() {
    stalled_reader_costs_lines_not_echo(&["--json", "--epoll"]);
}

#[test]
fn serve_exits_on_a_signal_even_when_nothing_ever_reads_its_output() {
    let (mut server, _go) = Proc::sockecho_held(&["serve", "tcp://127.0.0.1:0"], 1);
    let endpoint = server.listen_ok();
    // Enough lines to fill the pipe: the writer is blocked on it.
    echo_through(&endpoint, 1500);
    let signalled = Instant::now();
    server.signal("TERM");
    // At most a bounded wait for the output, then the exit (the held
    // reader never reads again).
    let status = server.wait_status();
    assert!(status.success(), "{status:?}; stderr: {}", server.stderr());
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
}

/// A Unix stream client bound to `name` (a path, or `\0NAME` for an
/// abstract name) and connected to the server at `server` (either form).
fn unix_client_named(name: &Path, server: &Path) -> UnixStream {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).expect("socket");
    socket
        .bind(&SockAddr::unix(name).expect("client address"))
        .expect("bind the client");
    socket
        .connect(&SockAddr::unix(server).expect("server address"))
        .expect("connect");
    let stream = UnixStream::from(OwnedFd::from(socket));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn peer_and_endpoint_names_cannot_forge_event_or_trace_lines() {
    // No slash: the name is a file in the temporary directory too.
    let forged = "\nlisten ok unix:@forged";
    let name = format!("{}{forged}", unique("server"));
    let server = serve(&[&format!("unix:@{name}")], &["--trace"]);
    // The endpoint's own newline is escaped in its `listen ok` line.
    let escaped = name.replace('\n', "\\n");
    assert_eq!(server.endpoint(), format!("unix:@{escaped}"));

    // Path clients: the server reports their names. (An abstract client's
    // name is not reported at all today: it shows as `unix:unnamed`.) One
    // forges a line, one holds a newline and no space (which trace lines
    // quote anyway).
    let clients = [TempPath::new(forged), TempPath::new("a\nb")];
    let server_addr = format!("\0{name}");
    for client in &clients {
        let mut conn = Conn::Unix(unix_client_named(client.path(), Path::new(&server_addr)));
        assert_eq!(conn.echo(b"hi\n"), b"hi\n");
        conn.shutdown_write();
        assert!(conn.read_to_close().is_empty());
        // One line each, the newlines escaped, never a `listen ok` line.
        let peer = format!("unix:{}", client.text().replace('\n', "\\n"));
        assert_eq!(
            server.line(),
            format!("connection from {peer} on unix:@{escaped}")
        );
        assert_eq!(server.line(), format!("closed {peer} in=3 out=3"));
    }

    let mut server = server;
    server.signal("TERM");
    let exited = server.wait_exit();
    assert!(exited.status.success(), "{}", exited.stderr);
    assert!(exited.rest.is_empty(), "{:?}", exited.rest);
    // Trace lines too: the peer's newline is escaped inside a quoted value.
    let accepts: Vec<&str> = exited
        .stderr
        .lines()
        .filter(|l| l.starts_with("trace: accept "))
        .collect();
    assert_eq!(accepts.len(), 2, "{}", exited.stderr);
    for (accept, client) in accepts.iter().zip(&clients) {
        let peer = format!("{:?}", format!("unix:{}", client.text()));
        assert!(
            accept.starts_with(&format!("trace: accept peer={peer}")),
            "{accept:?}"
        );
    }
    assert!(
        !exited.stderr.lines().any(|l| l.starts_with("listen ok")),
        "{}",
        exited.stderr
    );
}
