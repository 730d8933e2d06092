//! Bad input everywhere (issue 5, promise 8), through the real binary:
//! every byte value echoes exactly whatever the chunking, datagrams of
//! zero and of the largest size IPv4 carries echo whole, and garbage
//! arguments to every subcommand give an error and an exit code, never a
//! panic.
//!
//! The parsers themselves are fuzzed by the targets in `fuzz/` (run by
//! `.ci/run`) and property-tested beside their code.

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// The largest UDP payload over IPv4: 65,535 (IP total length) minus a
/// 20-byte IP header and an 8-byte UDP header.
const MAX_UDP_V4: usize = 65_507;

/// The same over IPv6, whose 40-byte header is not counted in its payload
/// length: 65,535 minus the 8-byte UDP header.
const MAX_UDP_V6: usize = 65_527;

/// A runner for a test that starts its server once and then tries many
/// cases against it. No failure file: the failing case is printed, and
/// these inputs are cheap to regenerate from it.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// All 256 byte values, each `copies` times, shuffled, then cut into
/// chunks of the given sizes (the last chunk takes what is left).
fn every_byte_in_chunks() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let bytes = (1usize..=4)
        .prop_flat_map(|copies| {
            Just((0..=255u8).cycle().take(256 * copies).collect::<Vec<_>>()).prop_shuffle()
        })
        .boxed();
    let chunks = prop::collection::vec(1usize..300, 1..40);
    (bytes, chunks)
}

fn cut<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for &size in sizes {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Writes each chunk with its own write call (TCP_NODELAY, so each leaves
/// as its own segment), half-closes, and returns everything echoed.
fn echo_in_chunks(endpoint: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut conn = connect(endpoint);
    if let Conn::Tcp(s) = &conn {
        s.set_nodelay(true).unwrap();
    }
    let mut writer = conn.try_clone();
    thread::scope(|scope| {
        let sent = scope.spawn(move || {
            for chunk in chunks {
                std::io::Write::write_all(&mut writer, chunk)?;
            }
            writer.shutdown_write();
            std::io::Result::Ok(())
        });
        let back = conn.read_to_close();
        sent.join().unwrap().expect("write every chunk");
        back
    })
}

#[test]
fn every_byte_value_echoes_over_streams_in_any_chunking() {
    let unix = TempPath::new("bytes.sock");
    let server = serve(
        &["tcp://127.0.0.1:0", &format!("unix:{}", unix.text())],
        &[],
    );
    for endpoint in &server.endpoints {
        runner(48)
            .run(&every_byte_in_chunks(), |(data, sizes)| {
                let chunks = cut(&data, &sizes);
                let back = echo_in_chunks(endpoint, &chunks);
                if back != data {
                    return Err(TestCaseError::fail(format!(
                        "{endpoint}: {} bytes in {} chunks came back as {} bytes, \
                         first difference at {:?}",
                        data.len(),
                        chunks.len(),
                        back.len(),
                        back.iter().zip(&data).position(|(a, b)| a != b)
                    )));
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn every_byte_value_echoes_in_datagrams() {
    let unix = TempPath::new("bytes.dgram");
    let server = serve(
        &["udp://127.0.0.1:0", &format!("unix-dgram:{}", unix.text())],
        &[],
    );
    for endpoint in &server.endpoints {
        let client = connect_dgram(endpoint);
        runner(32)
            .run(&every_byte_in_chunks(), |(data, sizes)| {
                for datagram in cut(&data, &sizes) {
                    let back = client.exchange(datagram);
                    prop_assert_eq!(&back, &datagram, "{}", endpoint);
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn zero_length_and_largest_udp_datagrams_echo_whole() {
    let server = serve(&["udp://127.0.0.1:0"], &[]);
    let client = connect_dgram(server.endpoint());
    let biggest = random_bytes(MAX_UDP_V4, 65);
    for payload in [&[][..], &biggest, &[][..], &biggest[..1]] {
        let back = client.exchange(payload);
        assert_bytes_eq(&back, payload, &format!("{}-byte datagram", payload.len()));
    }
}

/// The largest IPv6 UDP payload is 20 bytes more than IPv4's.
#[test]
fn largest_ipv6_udp_datagram_echoes_whole() {
    if !has_ipv6() {
        return;
    }
    let server = serve(&["udp://[::1]:0"], &[]);
    let client = connect_dgram(server.endpoint());
    let biggest = random_bytes(MAX_UDP_V6, 66);
    for payload in [&[][..], &biggest] {
        let back = client.exchange(payload);
        assert_bytes_eq(&back, payload, &format!("{}-byte datagram", payload.len()));
    }
}

// ---------------------------------------------------------------------------
// Garbage arguments

/// How long one garbage command may run. Most end at once with a usage
/// error; a few are valid commands (a server on port 0, a ping to a closed
/// UDP port) that would run on, and are stopped here: still running is not
/// a failure, a panic or a death by signal is.
const GARBAGE_RUN: Duration = Duration::from_millis(1500);

/// Cases per subcommand: a few hundred in all, about a second.
const GARBAGE_CASES: u32 = 40;

/// The subcommands, as argv prefixes.
const SUBCOMMANDS: [&[&str]; 7] = [
    &["serve", "tcp://127.0.0.1:0"],
    &["connect"],
    &["ping"],
    &["bench"],
    &["report", "merge"],
    &["completions"],
    &["man"],
];

/// Values that break naive parsers: empty, signs, overflow, floats that are
/// not numbers, units, endpoints almost right, CIDRs out of range, odd text.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "-",
    "--",
    "=",
    "0",
    "-1",
    "1",
    "65536",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999",
    "1.5",
    "NaN",
    "inf",
    "-inf",
    "1e999",
    "0.0000000001",
    "25h",
    "1ms",
    "0s",
    "µs",
    "1µs",
    "1.2.3s",
    "udp://127.0.0.1:0",
    "tcp://127.0.0.1:0",
    "[::1]:0",
    "[::1",
    "unix:",
    "unix:@",
    "unix-dgram:/nonexistent/dir/x",
    "tls://127.0.0.1:0",
    "10.0.0.0/8",
    "::/0",
    "300.1.1.1/33",
    "fe80::1%lo",
    "/dev/null",
    "a,b",
    "\u{202e}x",
    "\u{1f600}",
];

/// The flags a subcommand's `--help` lists, so new flags are covered
/// without touching this file. Help, version and verbosity are left out:
/// they are not where garbage does harm.
fn flags_of(subcommand: &[&str]) -> Vec<String> {
    let mut args = subcommand
        .iter()
        .take_while(|a| !a.contains("://"))
        .copied()
        .collect::<Vec<_>>();
    args.push("--help");
    let out = sockecho(&args, b"");
    assert_eq!(out.code(), 0, "{args:?}: {}", out.stderr);
    let mut flags: Vec<String> = out
        .stdout_text()
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .filter(|word| {
            let name = word.trim_start_matches('-');
            let dashes = word.len() - name.len();
            (dashes == 1 && name.len() == 1 || dashes == 2 && name.len() > 1)
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .filter(|f| !["-h", "--help", "-V", "--version", "-v", "--verbose"].contains(f))
        .map(str::to_owned)
        .collect();
    // Flags no subcommand has, so that every list has some.
    flags.extend(["--no-such-flag".to_owned(), "-Z".to_owned()]);
    flags.sort();
    flags.dedup();
    flags
}

/// One argument: a flag, a hostile value, a flag glued to a value, or
/// arbitrary printable text.
fn garbage_arg(flags: Vec<String>) -> BoxedStrategy<String> {
    let hostile = prop::sample::select(HOSTILE).prop_map(str::to_owned);
    let glued = (
        prop::sample::select(flags.clone()),
        prop::sample::select(HOSTILE),
    )
        .prop_map(|(flag, value)| format!("{flag}={value}"));
    prop_oneof![
        3 => prop::sample::select(flags),
        3 => hostile,
        1 => glued,
        2 => "\\PC{0,24}",
    ]
    .boxed()
}

/// How a garbage command ended.
enum Ended {
    Exited(ExitStatus),
    /// Still running at [`GARBAGE_RUN`]; stopped.
    StillRunning,
}

/// Runs `sockecho ARGS...` in `dir` (so a `--plot FILE` lands there) with
/// no input, stopping it after [`GARBAGE_RUN`]. Returns how it ended and
/// its standard error.
fn run_garbage(args: &[String], dir: &Path) -> (Ended, String) {
    let err_path = dir.join("stderr");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("start sockecho");
    let deadline = Instant::now() + GARBAGE_RUN;
    let ended = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Ended::Exited(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break Ended::StillRunning;
        }
        // Polled: std has no wait with a timeout.
        thread::sleep(Duration::from_millis(2));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    (ended, stderr)
}

#[test]
fn garbage_arguments_give_errors_never_panics() {
    let dir = TempDir::new("garbage");
    // Exit 0, exit 1, exit 2, still running.
    let counts = std::cell::RefCell::new([0u32; 4]);
    for subcommand in SUBCOMMANDS {
        let arg = garbage_arg(flags_of(subcommand));
        let argv = prop::collection::vec(arg, 1..6);
        runner(GARBAGE_CASES)
            .run(&argv, |garbage| {
                let mut args: Vec<String> = subcommand.iter().map(|s| s.to_string()).collect();
                args.extend(garbage);
                let (ended, stderr) = run_garbage(&args, dir.path());
                prop_assert!(
                    !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
                    "a panic on {:?}: {}",
                    args,
                    stderr
                );
                match ended {
                    Ended::StillRunning => counts.borrow_mut()[3] += 1,
                    Ended::Exited(status) => {
                        let code = status.code();
                        prop_assert!(
                            matches!(code, Some(0..=2)),
                            "{:?} ended with {:?}: {}",
                            args,
                            status,
                            stderr
                        );
                        let code = code.unwrap_or_default() as usize;
                        counts.borrow_mut()[code] += 1;
                        if code == 2 {
                            prop_assert!(
                                stderr.starts_with("error: "),
                                "usage error without `error: ` on {:?}: {:?}",
                                args,
                                stderr
                            );
                        }
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let counts = counts.into_inner();
    eprintln!(
        "garbage argv: {} exited 0, {} exited 1, {} usage errors, {} still running (stopped)",
        counts[0], counts[1], counts[2], counts[3]
    );
    assert!(
        counts[2] > counts[0] + counts[1] + counts[3],
        "{counts:?}: too few usage errors to trust the generator"
    );
}

/// A unique directory under the temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
