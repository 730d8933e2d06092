//! What every integration test needs: start the real `sockecho` binary (or
//! another program), read its event lines with a timeout, and talk to it
//! over real sockets.
//!
//! Rules kept here so the test files need not repeat them: every wait has a
//! deadline ([`WAIT`]), every child is killed when its guard drops, every
//! server binds port 0 (or a unique Unix name) and is reached at the address
//! its `listen ok` line gives.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod netns;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sockecho");

/// The longest any single wait may take before the test fails. Generous,
/// because a loaded two-core CI machine runs every test file at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// One MiB: the size of the big echo round trips.
pub const MIB: usize = 1024 * 1024;

/// A name no other test, and no other run of this test binary, uses.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sockecho-test-{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A unique path under the temporary directory, removed on drop.
pub struct TempPath(PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> TempPath {
        let path = std::env::temp_dir().join(unique(tag));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as text, for endpoints such as `unix:PATH`.
    pub fn text(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift64*): reproducible failures,
/// no extra crate.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compares two byte strings without dumping megabytes on failure.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}

/// Whether this host has an IPv6 loopback to test on.
pub fn has_ipv6() -> bool {
    let ok = TcpListener::bind("[::1]:0").is_ok() && UdpSocket::bind("[::1]:0").is_ok();
    if !ok {
        eprintln!("note: no IPv6 loopback on this host; skipping the IPv6 part");
    }
    ok
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// A UDP port on 127.0.0.1 that nothing is bound to (bound, then released).
pub fn closed_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    socket.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Processes

/// A child process killed (and reaped) when dropped, whatever the test did.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit, failing the test after `deadline`.
fn wait_until(child: &mut Child, deadline: Instant, what: &str) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit in time");
        // Polled with a deadline: std offers no wait with a timeout.
        thread::sleep(Duration::from_millis(5));
    }
}

/// Standard error read to its end on a thread: the bytes so far are
/// always readable (for failure messages), and [`Collected::finish`] waits,
/// with a deadline, for the pipe to close so that nothing is cut off.
struct Collected {
    seen: Arc<Mutex<Vec<u8>>>,
    done: Receiver<()>,
}

impl Collected {
    fn start(mut from: impl Read + Send + 'static) -> Collected {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(());
        });
        Collected { seen, done }
    }

    fn so_far(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Everything, once the writer has closed the pipe (it has exited).
    fn finish(&self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        // A timeout here means a grandchild holds the pipe: take what came.
        let _ = self.done.recv_timeout(left);
        self.so_far()
    }
}

/// A long-running child (a server) whose standard output is read line by
/// line on a thread and handed over through a channel, so that every wait
/// for a line has a timeout.
pub struct Proc {
    child: KillOnDrop,
    what: String,
    lines: Receiver<String>,
    stderr: Collected,
}

/// How a [`Proc`] ended.
pub struct Exited {
    pub status: ExitStatus,
    /// The standard output lines not yet read when it exited.
    pub rest: Vec<String>,
    pub stderr: String,
}

impl Proc {
    /// Starts `sockecho ARGS...`.
    pub fn sockecho(args: &[&str]) -> Proc {
        Proc::spawn(BIN, args)
    }

    /// Starts `sockecho ARGS...` with the environment variables `env` set.
    pub fn sockecho_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_env(BIN, args, env)
    }

    /// Starts `program ARGS...` with standard input closed.
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(program, args, &[])
    }

    fn spawn_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = Collected::start(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child: KillOnDrop(child),
            what: format!("{program} {}", args.join(" ")),
            lines,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(Some(_)))
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.so_far()
    }

    /// The next standard output line, or `None` at end of output. Fails
    /// the test if none comes within [`WAIT`].
    pub fn try_line(&self) -> Option<String> {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "no output line from `{}` within {WAIT:?}; stderr: {}",
                self.what,
                self.stderr()
            ),
        }
    }

    /// The next standard output line; the end of output fails the test.
    #[track_caller]
    pub fn line(&self) -> String {
        self.try_line().unwrap_or_else(|| {
            panic!(
                "`{}` closed its output early; stderr: {}",
                self.what,
                self.stderr()
            )
        })
    }

    /// The next line, which must be `listen ok ENDPOINT`; returns ENDPOINT.
    #[track_caller]
    pub fn listen_ok(&self) -> String {
        let line = self.line();
        match line.strip_prefix("listen ok ") {
            Some(endpoint) => endpoint.to_owned(),
            None => panic!("expected `listen ok ENDPOINT`, got {line:?}"),
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits (at most [`WAIT`]) for the process to exit.
    pub fn wait_exit(&mut self) -> Exited {
        let deadline = Instant::now() + WAIT;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "`{}` did not exit within {WAIT:?}; output so far: {rest:?}",
                    self.what
                ),
            }
        }
        let status = wait_until(&mut self.child.0, deadline, &self.what);
        let stderr = self.stderr.finish(deadline);
        assert!(
            !stderr.contains("panicked"),
            "`{}` panicked: {stderr}",
            self.what
        );
        Exited {
            status,
            rest,
            stderr,
        }
    }
}

impl Proc {
    /// Starts `sockecho ARGS...` whose standard output is read as far as its
    /// first `first` lines, then not at all until the returned sender sends
    /// (or is dropped): a reader that stalls, as `serve | sleep 30` does.
    pub fn sockecho_held(args: &[&str], first: usize) -> (Proc, mpsc::Sender<()>) {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = Collected::start(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        let (go, gate) = mpsc::channel::<()>();
        thread::spawn(move || {
            for (n, line) in BufReader::new(stdout).lines().enumerate() {
                if n == first {
                    // Sent or dropped: either way, read on.
                    let _ = gate.recv();
                }
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let proc = Proc {
            child: KillOnDrop(child),
            what: format!("sockecho {}", args.join(" ")),
            lines,
            stderr,
        };
        (proc, go)
    }

    /// Waits (at most [`WAIT`]) for the process to exit, reading none of
    /// its standard output.
    pub fn wait_status(&mut self) -> ExitStatus {
        wait_until(&mut self.child.0, Instant::now() + WAIT, &self.what)
    }
}

/// A running `sockecho serve` and the endpoints its `listen ok` lines gave,
/// in the order they were printed.
///
/// When it is dropped at the end of a test that passed, it checks what a
/// test does not look at, as nginx's test suite does after every test:
/// the server printed no panic and no `ERROR` line (unless the test said
/// it expects one), and, still running, holds no more descriptors than it
/// did once serving (every connection the test made was closed).
pub struct Server {
    pub proc: Proc,
    pub endpoints: Vec<String>,
    /// Open descriptors once every `listen ok` line came.
    fds_serving: Option<usize>,
    /// Texts of `ERROR` lines the test expects.
    expected_errors: Vec<&'static str>,
}

impl Server {
    /// A server whose `listen ok` lines all came.
    pub fn new(proc: Proc, endpoints: Vec<String>) -> Server {
        let fds_serving = open_fds(proc.pid());
        Server {
            proc,
            endpoints,
            fds_serving,
            expected_errors: Vec::new(),
        }
    }

    /// The test makes the server log an `ERROR` line containing `text`:
    /// not a failure of the side check.
    pub fn expect_error(&mut self, text: &'static str) {
        self.expected_errors.push(text);
    }

    /// The first (or only) endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[0]
    }

    /// `host:port` of the first endpoint, which must be an IP one.
    pub fn addr(&self) -> String {
        ip_addr_of(self.endpoint()).to_string()
    }

    /// The port of the first endpoint, which must be an IP one.
    pub fn port(&self) -> u16 {
        ip_addr_of(self.endpoint()).port()
    }
}

/// How long a server may take, after a test ends, to close what the
/// test's connections left (it sees each end when its peer closes).
const SETTLE: Duration = Duration::from_secs(5);

/// The descriptors `pid` has open (Linux); `None` where /proc cannot say.
fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count())
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that failed has said why; its server may be anywhere.
        if thread::panicking() {
            return;
        }
        let unexpected = |stderr: &str| -> Vec<String> {
            stderr
                .lines()
                .filter(|l| {
                    l.contains("panicked")
                        || (l.contains(" ERROR ")
                            && !self.expected_errors.iter().any(|e| l.contains(e)))
                })
                .map(str::to_owned)
                .collect()
        };
        let running = matches!(self.proc.child.0.try_wait(), Ok(None));
        if running && let Some(serving) = self.fds_serving {
            let deadline = Instant::now() + SETTLE;
            while let Some(now) = open_fds(self.proc.pid()) {
                if now <= serving {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "`{}` holds {now} descriptors {SETTLE:?} after the test, \
                     {serving} once serving: a connection was never closed; stderr: {}",
                    self.proc.what,
                    self.proc.stderr()
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
        let bad = unexpected(&self.proc.stderr());
        assert!(
            bad.is_empty(),
            "`{}` logged what no test expects: {bad:#?}",
            self.proc.what
        );
    }
}

impl std::ops::Deref for Server {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// Starts `sockecho serve ENDPOINTS... OPTIONS...` and waits for one
/// `listen ok` line per endpoint.
///
/// With `SOCKECHO_TEST_ENGINE=epoll` in the environment the server runs
/// with `--epoll`, so `.ci/run` passes the whole suite through both engines.
pub fn serve(endpoints: &[&str], options: &[&str]) -> Server {
    let mut args = vec!["serve"];
    args.extend_from_slice(endpoints);
    args.extend_from_slice(options);
    if std::env::var("SOCKECHO_TEST_ENGINE").is_ok_and(|e| e == "epoll")
        && !args.contains(&"--epoll")
    {
        args.push("--epoll");
    }
    let proc = Proc::sockecho(&args);
    let endpoints = endpoints.iter().map(|_| proc.listen_ok()).collect();
    Server::new(proc, endpoints)
}

/// What a finished command left.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The exit code; a death by signal fails the test.
    #[track_caller]
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal; stderr: {}", self.stderr))
    }
}

/// Runs `sockecho OPTIONS... bench ARGS... --json` (OPTIONS such as
/// `-vv`, which makes standard error name the driver): the parsed report,
/// the exit code and standard error. Fails the test if no JSON came.
pub fn bench_report(options: &[&str], args: &[&str]) -> (serde_json::Value, i32, String) {
    let out = sockecho(&[options, &["bench"], args, &["--json"]].concat(), b"");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench printed no JSON ({e}): {} {}",
            out.stdout_text(),
            out.stderr
        )
    });
    (report, out.code(), out.stderr.clone())
}

/// Runs `sockecho ARGS...` to its end with `stdin` as standard input.
pub fn sockecho(args: &[&str], stdin: &[u8]) -> Output {
    let out = run(BIN, args, stdin);
    // Whatever the test checks, a panic is never the answer.
    assert!(
        !out.stderr.contains("panicked"),
        "`sockecho {}` panicked: {}",
        args.join(" "),
        out.stderr
    );
    out
}

/// Runs `program ARGS...` to its end with `stdin` as standard input,
/// failing the test if it takes longer than [`WAIT`].
pub fn run(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let started = Instant::now();
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let stderr = Collected::start(child.stderr.take().unwrap());
    let mut child = KillOnDrop(child);
    let data = stdin.to_vec();
    // A program that exits without reading its input is its own business:
    // the write error (broken pipe) is ignored.
    thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let (tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out);
        let _ = tx.send(read.map(|_| out));
    });
    let stdout = match done.recv_timeout(WAIT) {
        Ok(read) => read.expect("read standard output"),
        Err(_) => panic!(
            "`{what}` did not finish within {WAIT:?}; stderr: {}",
            stderr.so_far()
        ),
    };
    let status = wait_until(&mut child.0, started + WAIT, &what);
    let stderr = stderr.finish(started + WAIT);
    Output {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// The first line of standard error, checked for the contract's shape:
/// `error: WHAT: WHY`, and never a panic.
#[track_caller]
pub fn assert_error_line(out: &Output, code: i32) -> String {
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
        "a panic instead of an error message: {}",
        out.stderr
    );
    assert_eq!(out.code(), code, "exit code; stderr: {}", out.stderr);
    let first = out.stderr.lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with("error: "),
        "stderr must start with `error: `: {:?}",
        out.stderr
    );
    // One line, `error: WHAT: WHY`: the WHY after a second `: `.
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "one error line: {:?}",
        out.stderr
    );
    assert!(
        first["error: ".len()..].contains(": "),
        "error line must read `error: WHAT: WHY`: {first:?}"
    );
    first
}

// ---------------------------------------------------------------------------
// Sockets

/// The socket address of an IP endpoint as printed by `listen ok`
/// (`tcp://127.0.0.1:41234`, `udp://[::1]:5000`).
#[track_caller]
pub fn ip_addr_of(endpoint: &str) -> SocketAddr {
    let rest = endpoint
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{endpoint:?} is not an IP endpoint"));
    rest.parse()
        .unwrap_or_else(|e| panic!("{endpoint:?}: {rest:?} is not an address: {e}"))
}

/// A Unix address from the text after `unix:` or `unix-dgram:`.
fn unix_addr(text: &str) -> UnixAddr {
    match text.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()).expect("abstract address"),
        None => UnixAddr::from_pathname(text).expect("path address"),
    }
}

/// A blocking client stream to a `listen ok` endpoint, with timeouts set.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Connects to a stream endpoint as printed by `listen ok`.
#[track_caller]
pub fn connect(endpoint: &str) -> Conn {
    let conn = try_connect(endpoint).unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
    conn.set_timeouts(WAIT);
    conn
}

/// Connects to a stream endpoint, returning the error if it fails.
pub fn try_connect(endpoint: &str) -> io::Result<Conn> {
    if let Some(rest) = endpoint.strip_prefix("unix:") {
        return UnixStream::connect_addr(&unix_addr(rest)).map(Conn::Unix);
    }
    TcpStream::connect_timeout(&ip_addr_of(endpoint), WAIT).map(Conn::Tcp)
}

impl Conn {
    pub fn set_timeouts(&self, limit: Duration) {
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(limit)).unwrap();
                s.set_write_timeout(Some(limit)).unwrap();
            }
            Conn::Unix(s) => {
                s.set_read_timeout(Some(limit)).unwrap();
                s.set_write_timeout(Some(limit)).unwrap();
            }
        }
    }

    pub fn try_clone(&self) -> Conn {
        match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone().unwrap()),
            Conn::Unix(s) => Conn::Unix(s.try_clone().unwrap()),
        }
    }

    /// Half-close: no more bytes from us, the other direction stays open.
    pub fn shutdown_write(&self) {
        match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write).unwrap(),
            Conn::Unix(s) => s.shutdown(Shutdown::Write).unwrap(),
        }
    }

    /// The client's own address as the server's events name it (TCP only).
    pub fn local_addr(&self) -> String {
        match self {
            Conn::Tcp(s) => s.local_addr().unwrap().to_string(),
            Conn::Unix(_) => panic!("local_addr of a Unix client"),
        }
    }

    pub fn set_nonblocking(&self, on: bool) {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(on).unwrap(),
            Conn::Unix(s) => s.set_nonblocking(on).unwrap(),
        }
    }

    /// Writes `data` and reads exactly as many bytes back.
    #[track_caller]
    pub fn echo(&mut self, data: &[u8]) -> Vec<u8> {
        self.write_all(data).expect("write");
        let mut back = vec![0u8; data.len()];
        self.read_exact(&mut back).expect("read the echo");
        back
    }

    /// Reads until the end of the stream (a reset counts as the end too);
    /// fails on a read timeout.
    #[track_caller]
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return all,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("waiting for the end of the stream: {e}"),
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The half-close round trip: one thread writes all of `data` then shuts
/// down its write side, this one reads to the end of the stream. Returns
/// what came back (the greeting, if any, included).
#[track_caller]
pub fn echo_stream(mut conn: Conn, data: &[u8]) -> Vec<u8> {
    let mut writer = conn.try_clone();
    thread::scope(|scope| {
        let sent = scope.spawn(move || {
            writer.write_all(data)?;
            writer.shutdown_write();
            io::Result::Ok(())
        });
        let back = conn.read_to_close();
        sent.join().unwrap().expect("write everything");
        back
    })
}

/// Echoes 1 MiB of random bytes through a stream endpoint with half-close
/// and checks every byte.
#[track_caller]
pub fn assert_stream_echoes(endpoint: &str, seed: u64) {
    let data = random_bytes(MIB, seed);
    let back = echo_stream(connect(endpoint), &data);
    assert_bytes_eq(&back, &data, &format!("1 MiB echo over {endpoint}"));
}

/// Polls (with a deadline) until connecting to `endpoint` is refused: the
/// server has stopped accepting. Connections accepted meanwhile are closed
/// at once.
#[track_caller]
pub fn wait_until_refused(endpoint: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match try_connect(endpoint) {
            // Refused, or reset: a connection that raced into the accept
            // queue as the listener closed is reset by the kernel.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                return;
            }
            Err(e) => panic!("connect to {endpoint}: {e}"),
            Ok(conn) => drop(conn),
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint} still accepts connections after {WAIT:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A blocking datagram client bound to its own address (so replies can
/// reach it) and connected to a server.
pub struct DgramClient {
    socket: Dgram,
    /// The client's socket file, for a Unix path client.
    _path: Option<TempPath>,
}

enum Dgram {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// Connects a datagram client to an endpoint as printed by `listen ok`.
/// A Unix path server gets a path client, an abstract one an abstract
/// client, each with a unique name.
#[track_caller]
pub fn connect_dgram(endpoint: &str) -> DgramClient {
    if let Some(rest) = endpoint.strip_prefix("unix-dgram:") {
        let (socket, path) = if rest.starts_with('@') {
            let own = unix_addr(&format!("@{}", unique("client")));
            (UnixDatagram::bind_addr(&own).unwrap(), None)
        } else {
            let path = TempPath::new("client.dgram");
            (UnixDatagram::bind(path.path()).unwrap(), Some(path))
        };
        socket.connect_addr(&unix_addr(rest)).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        socket.set_write_timeout(Some(WAIT)).unwrap();
        return DgramClient {
            socket: Dgram::Unix(socket),
            _path: path,
        };
    }
    assert!(endpoint.starts_with("udp://"), "{endpoint} is not datagram");
    let server = ip_addr_of(endpoint);
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let socket = UdpSocket::bind(local).unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    DgramClient {
        socket: Dgram::Udp(socket),
        _path: None,
    }
}

impl DgramClient {
    pub fn send(&self, data: &[u8]) {
        let sent = match &self.socket {
            Dgram::Udp(s) => s.send(data),
            Dgram::Unix(s) => s.send(data),
        }
        .expect("send datagram");
        assert_eq!(sent, data.len(), "datagram sent whole");
    }

    /// The next datagram; fails on timeout.
    #[track_caller]
    pub fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let n = match &self.socket {
            Dgram::Udp(s) => s.recv(&mut buf),
            Dgram::Unix(s) => s.recv(&mut buf),
        }
        .expect("receive the echoed datagram");
        buf.truncate(n);
        buf
    }

    /// Sends one datagram and returns the reply.
    #[track_caller]
    pub fn exchange(&self, data: &[u8]) -> Vec<u8> {
        self.send(data);
        self.recv()
    }
}

/// Sends several datagrams (an empty one, a 60000-byte one and small ones)
/// through a datagram endpoint, each echoed exactly.
#[track_caller]
pub fn assert_datagrams_echo(endpoint: &str) {
    let client = connect_dgram(endpoint);
    let big = random_bytes(60_000, 7);
    let payloads: [&[u8]; 5] = [b"hello", b"", &big, b"x", b"line\nwith\0bytes"];
    for payload in payloads {
        let back = client.exchange(payload);
        assert_bytes_eq(
            &back,
            payload,
            &format!("{}-byte datagram over {endpoint}", payload.len()),
        );
    }
}

/// Whether interop tests must run (`SOCKECHO_REQUIRE_INTEROP=1`, as `.ci/run`
/// sets): then a missing tool fails the test instead of skipping it.
pub fn interop_required() -> bool {
    std::env::var("SOCKECHO_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// True if `name` is an executable on PATH.
pub fn has_tool(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// True if `name` is on PATH. If it is not: a visible note and `false`, or,
/// when interop is required, a failed test.
#[track_caller]
pub fn require_tool(name: &str) -> bool {
    let found = has_tool(name);
    if !found {
        assert!(
            !interop_required(),
            "{name} is not installed, and SOCKECHO_REQUIRE_INTEROP=1 says interop tests must run"
        );
        eprintln!("note: {name} is not installed; skipping this interop test");
    }
    found
}

/// What the faulty echo does with the datagram whose sequence number (its
/// first 8 bytes) is `seq`: each reply and how long to hold it back.
pub type Fault = fn(seq: u64, datagram: &[u8]) -> Vec<(Duration, Vec<u8>)>;

/// A UDP echo on 127.0.0.1 that applies `fault` to every datagram; returns
/// its `udp://` endpoint. It runs until the test process ends (at most
/// ten minutes).
pub fn faulty_echo(fault: Fault) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    thread::spawn(move || {
        let mut held: Vec<(Instant, SocketAddr, Vec<u8>)> = Vec::new();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + Duration::from_secs(600);
        while Instant::now() < end {
            let now = Instant::now();
            held.retain(|(due, peer, reply)| {
                if *due > now {
                    return true;
                }
                let _ = socket.send_to(reply, peer);
                false
            });
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
            for (delay, reply) in fault(seq, &buf[..n]) {
                if delay.is_zero() {
                    let _ = socket.send_to(&reply, peer);
                } else {
                    held.push((Instant::now() + delay, peer, reply));
                }
            }
        }
    });
    format!("udp://127.0.0.1:{port}")
}

/// An honest echo reply.
pub fn echo(datagram: &[u8]) -> Vec<(Duration, Vec<u8>)> {
    vec![(Duration::ZERO, datagram.to_vec())]
}
