//! `serve http://`, `https://`, `ws://` and `--metrics` against real
//! clients it did not write: headless Chromium's WebSocket, Python's
//! `websockets`, curl (HTTP/1.1, chunked uploads, HEAD, HTTP/2 over TLS)
//! and a real Prometheus server scraping the metrics.
//!
//! A missing tool skips its test with a note, unless
//! `SOCKECHO_REQUIRE_INTEROP=1` (set by CI), where it fails instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// The longest a browser or a Prometheus server may take: they start
/// slower than the small tools, the more so on a loaded CI machine.
const SLOW_WAIT: Duration = Duration::from_secs(60);

/// A fresh directory under the temporary directory, removed with all in
/// it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    /// The path of `name` inside, as text.
    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Writes `name` inside; returns its path as text.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.file(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {path}: {e}"));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What [`run_for`] saw.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `program ARGS...` to its end, standard input closed, failing the
/// test (and killing it) after `limit`. Its output goes to files in `dir`,
/// not pipes: a browser's helper processes may hold a pipe open after
/// the browser exits, a file they cannot.
fn run_for(program: &str, args: &[&str], dir: &TempDir, limit: Duration) -> Ran {
    let tag = unique("run");
    let (out_path, err_path) = (
        dir.file(&format!("{tag}.out")),
        dir.file(&format!("{tag}.err")),
    );
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create the output file"))
        .stderr(File::create(&err_path).expect("create the error file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut child = KillOnDrop(child);
    let read =
        |path: &str| String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            panic!(
                "`{program} {}` did not finish within {limit:?}; stderr: {}",
                args.join(" "),
                tail(&read(&err_path))
            );
        }
        // Polled with a deadline: std offers no wait with a timeout.
        thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// The last 4000 bytes of a tool's chatter, for failure messages.
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(4000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// `ws://` or `wss://` for an `http://` or `https://` endpoint from
/// `listen ok`, with `path`.
fn ws_url(endpoint: &str, path: &str) -> String {
    let rest = endpoint
        .strip_prefix("http")
        .unwrap_or_else(|| panic!("{endpoint} is not an http(s):// endpoint"));
    format!("ws{rest}{path}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 (RFC 4648, padded), for the reflection's `body_base64`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `request` as is over a fresh TCP connection to `endpoint` and
/// reads the answer to the end of the stream: (head, body).
fn raw_http(endpoint: &str, request: &str) -> (String, Vec<u8>) {
    let mut conn = connect(endpoint);
    conn.write_all(request.as_bytes())
        .expect("send the request");
    let answer = conn.read_to_close();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(&answer)));
    (
        String::from_utf8_lossy(&answer[..split]).into_owned(),
        answer[split + 4..].to_vec(),
    )
}

// ---------------------------------------------------------------------------
// Headless Chromium

/// The page Chromium loads: for each `[tag, url]` of `targets` in turn, it
/// opens a WebSocket, sends a text message (non-ASCII, written with escapes
/// so that the dumped script cannot be mistaken for the echo), 256 bytes
/// 0..=255 and 70000 bytes as binary, closes with 4321, and writes what
/// came back into `#out`.
///
/// Headless Chromium's virtual time runs ahead while nothing loads: an open
/// WebSocket does not hold it back, a fetch in flight does. So a chain of
/// short fetches to `hold` (the server's own `echo_delay`) holds
/// `--dump-dom` back until the last socket has closed; at most 600 of
/// them, then the page gives up and says so.
fn chromium_page(targets: &[[&str; 2]], hold: &str) -> String {
    r#"<!doctype html>
<html><head><meta charset="utf-8"><title>sockecho</title></head>
<body><pre id="out">pending</pre>
<script>
"use strict";
const TARGETS = TARGETS_JSON;
const lines = [];
let done = false;
const show = () => { document.getElementById("out").textContent = lines.join("\n"); };
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const bytes = new Uint8Array(256);
for (let i = 0; i < 256; i++) bytes[i] = i;
const big = new Uint8Array(70000);
for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 255;
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
function run(tag, url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      ws.send("h\u00e9llo \u2713 1 \u{1F980}");
      ws.send(bytes.buffer);
      ws.send(big);
    };
    let received = 0;
    ws.onmessage = (e) => {
      received += 1;
      const kind = typeof e.data === "string" ? "string" : e.data.constructor.name;
      if (typeof e.data === "string") {
        lines.push(tag + " text " + kind + " " + e.data);
      } else if (e.data.byteLength === 256) {
        lines.push(tag + " binary " + kind + " " + e.data.byteLength + " " + hex(e.data));
      } else {
        const verdict = same(new Uint8Array(e.data), big) ? "equal" : "different";
        lines.push(tag + " big " + kind + " " + e.data.byteLength + " " + verdict);
      }
      if (received === 3) ws.close(4321, "done");
    };
    ws.onerror = () => lines.push(tag + " error");
    ws.onclose = (e) => {
      lines.push(tag + " close " + e.code + " " + e.wasClean);
      resolve();
    };
  });
}
(async () => {
  for (const [tag, url] of TARGETS) await run(tag, url);
  show();
  done = true;
})();
(async () => {
  for (let i = 0; i < 600 && !done; i++) {
    try {
      await fetch("HOLD_URL", { mode: "no-cors", cache: "no-store" });
    } catch (e) {}
  }
  if (!done) {
    lines.push("gave up waiting");
    show();
  }
})();
</script>
</body></html>
"#
    .replace("TARGETS_JSON", &json!(targets).to_string())
    .replace("HOLD_URL", hold)
}

#[test]
fn chromium_websocket_echoes_text_and_binary_messages_over_ws_and_wss() {
    if !require_tool("chromium") {
        return;
    }
    let server = serve(&["http://127.0.0.1:0", "https://127.0.0.1:0"], &["-q"]);
    let (ws, wss) = (
        ws_url(&server.endpoints[0], "/chromium"),
        ws_url(&server.endpoints[1], "/chromium"),
    );
    let hold = format!("{}/hold?echo_delay=50ms", server.endpoints[0]);
    let dir = TempDir::new("chromium");
    let page = dir.write(
        "page.html",
        chromium_page(&[["ws", &ws], ["wss", &wss]], &hold),
    );
    let profile = dir.file("profile");
    std::fs::create_dir(&profile).expect("create the profile directory");
    let started = Instant::now();
    let ran = run_for(
        "chromium",
        &[
            "--headless",
            // Root (CI, containers) has no sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            // Without these Chromium reaches for Google's servers, which
            // a closed network never answers.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // wss:// to the self-signed certificate.
            "--ignore-certificate-errors",
            &format!("--user-data-dir={profile}"),
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("file://{page}"),
        ],
        &dir,
        SLOW_WAIT,
    );
    let dom = &ran.stdout;
    let out = dom
        .split_once(r#"<pre id="out">"#)
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(out, _)| out)
        .unwrap_or_else(|| {
            panic!(
                "no #out in Chromium's DOM ({}): {dom}\nstderr: {}",
                ran.status,
                tail(&ran.stderr)
            )
        });
    let bytes: Vec<u8> = (0..=255).collect();
    let want = ["ws", "wss"]
        .map(|tag| {
            format!(
                "{tag} text string h\u{e9}llo \u{2713} 1 \u{1F980}\n\
                 {tag} binary ArrayBuffer 256 {}\n\
                 {tag} big ArrayBuffer 70000 equal\n\
                 {tag} close 4321 true",
                hex(&bytes)
            )
        })
        .join("\n");
    assert_eq!(
        out,
        want,
        "what Chromium's WebSockets got back ({}); Chromium's stderr: {}",
        ran.status,
        tail(&ran.stderr)
    );
    eprintln!("chromium round trips: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Python's websockets

/// A Python with the `websockets` package: `python3` on PATH, else the
/// system's (a pyenv or venv python3 on PATH lacks Debian's
/// python3-websockets). `None` (test skipped) without one.
fn python_with_websockets() -> Option<String> {
    if !require_tool("python3") {
        return None;
    }
    for python in ["python3", "/usr/bin/python3"] {
        if python.starts_with('/') && !Path::new(python).exists() {
            continue;
        }
        let out = run(
            python,
            &["-c", "import websockets; print(websockets.__version__)"],
            b"",
        );
        if out.status.success() {
            return Some(python.to_owned());
        }
    }
    assert!(
        !interop_required(),
        "Python's websockets (python3-websockets) is not installed, and \
         SOCKECHO_REQUIRE_INTEROP=1 says interop tests must run"
    );
    eprintln!("note: Python's websockets is not installed; skipping this interop test");
    None
}

/// The client: `echo URL...` runs the echo checks on each URL, `limit URL`
/// the message-limit checks; prints one JSON object. Written for the API
/// websockets 10.4 (Debian 12) shares with later versions: `connect`
/// awaited, `send` of a list sends one fragmented message, `ping` returns
/// the pong's future, `close_code` is the code the server's close carried.
const PY_CLIENT: &str = r#"
import asyncio, json, ssl, sys
import websockets

TIMEOUT = 20

async def connect(url):
    options = dict(max_size=None, compression=None)
    if url.startswith("wss://"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        options["ssl"] = context
    return await asyncio.wait_for(websockets.connect(url, **options), TIMEOUT)

async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)

def seen(message):
    if isinstance(message, str):
        return ["text", message]
    return ["binary", message.hex() if len(message) <= 16 else len(message)]

async def echo(url):
    got = {}
    ws = await connect(url)
    await ws.send(["frag1 ", "fr\u00e4g2 ", "frag3 \u2713"])
    got["fragmented_text"] = seen(await recv(ws))
    await ws.send([b"\x00\x01", b"\xfe\xff"])
    got["fragmented_binary"] = seen(await recv(ws))
    data = bytes(range(256)) * 300
    await ws.send(data)
    back = await recv(ws)
    got["binary"] = seen(back) + [back == data]
    await ws.send("")
    got["empty_text"] = seen(await recv(ws))
    pong = await ws.ping(b"sockecho-ping")
    await asyncio.wait_for(pong, TIMEOUT)
    got["pong"] = True
    await asyncio.wait_for(ws.close(4001, "bye"), TIMEOUT)
    got["close_code"] = ws.close_code
    got["close_reason"] = ws.close_reason
    return got

async def over(url, *messages):
    ws = await connect(url)
    try:
        for message in messages:
            await ws.send(message)
            back = await recv(ws)
        return "echoed %d" % len(back)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd is not None else "closed without a close frame"
    finally:
        await asyncio.wait_for(ws.close(), TIMEOUT)

async def limit(url):
    return {
        "at_limit": await over(url, b"a" * 1000),
        "over_limit": await over(url, b"a" * 1000, b"b" * 5000),
        "text_over_limit": await over(url, "c" * 1001),
        "fragments_over_limit": await over(url, [b"d" * 600, b"e" * 600]),
    }

async def main(mode, urls):
    if mode == "echo":
        result = {url: await echo(url) for url in urls}
    else:
        result = await limit(urls[0])
    print(json.dumps(result))

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"#;

/// Runs [`PY_CLIENT`] with `args`; its JSON.
fn python_client(python: &str, args: &[&str]) -> Value {
    let dir = TempDir::new("websockets");
    let script = dir.write("client.py", PY_CLIENT);
    let ran = run_for(
        python,
        &[&[script.as_str()], args].concat(),
        &dir,
        SLOW_WAIT,
    );
    assert!(
        ran.status.success(),
        "the websockets client failed ({}): {}{}",
        ran.status,
        ran.stdout,
        tail(&ran.stderr)
    );
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}): {}", ran.stdout))
}

#[test]
fn python_websockets_fragments_binary_ping_and_close_code_over_ws_and_wss() {
    let Some(python) = python_with_websockets() else {
        return;
    };
    let server = serve(&["http://127.0.0.1:0", "https://127.0.0.1:0"], &["-q"]);
    let urls: Vec<String> = server
        .endpoints
        .iter()
        .map(|e| ws_url(e, "/python"))
        .collect();
    let got = python_client(&python, &["echo", &urls[0], &urls[1]]);
    for url in &urls {
        let got = &got[url.as_str()];
        assert_eq!(
            got,
            &json!({
                "fragmented_text": ["text", "frag1 fr\u{e4}g2 frag3 \u{2713}"],
                "fragmented_binary": ["binary", "0001feff"],
                "binary": ["binary", 76800, true],
                "empty_text": ["text", ""],
                "pong": true,
                "close_code": 4001,
                "close_reason": "bye",
            }),
            "websockets against {url}"
        );
    }
}

#[test]
fn python_websockets_message_over_the_limit_is_closed_with_1009() {
    let Some(python) = python_with_websockets() else {
        return;
    };
    let server = serve(&["http://127.0.0.1:0"], &["-q", "--max-message", "1000"]);
    let got = python_client(&python, &["limit", &ws_url(server.endpoint(), "/limit")]);
    assert_eq!(
        got,
        json!({
            "at_limit": "echoed 1000",
            "over_limit": 1009,
            "text_over_limit": 1009,
            "fragments_over_limit": 1009,
        }),
        "a 1000-byte message is echoed; more, whole or in fragments, is closed with 1009"
    );
}

// ---------------------------------------------------------------------------
// curl

/// What curl got: the status code, `%{http_version}`, the response head
/// and the body.
struct Reply {
    code: u16,
    version: String,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    /// The body as the reflection's JSON.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\nhead: {}",
                String::from_utf8_lossy(&self.body),
                self.head
            )
        })
    }

    /// The value of response header `name` (any case), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Runs `curl -sS ARGS...`, which must succeed.
#[track_caller]
fn curl(args: &[&str]) -> Reply {
    let head = TempPath::new("curl-head");
    let body = TempPath::new("curl-body");
    let (head_text, body_text) = (head.text(), body.text());
    let mut all = vec![
        "-sS",
        "--max-time",
        "8",
        "-D",
        &head_text,
        "-o",
        &body_text,
        "-w",
        "%{http_code} %{http_version}",
    ];
    all.extend_from_slice(args);
    let out = run("curl", &all, b"");
    assert_eq!(out.code(), 0, "curl {}: {}", args.join(" "), out.stderr);
    let written = out.stdout_text();
    let (code, version) = written
        .split_once(' ')
        .unwrap_or_else(|| panic!("curl -w wrote {written:?}"));
    Reply {
        code: code
            .parse()
            .unwrap_or_else(|_| panic!("curl -w wrote {written:?}")),
        version: version.to_owned(),
        head: std::fs::read_to_string(head.path()).unwrap_or_default(),
        body: std::fs::read(body.path()).unwrap_or_default(),
    }
}

/// The reflection's `headers` as (name, value) pairs.
#[track_caller]
fn headers(reflection: &Value) -> Vec<(String, String)> {
    reflection["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers array: {reflection}"))
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::String(value)]) => (name.clone(), value.clone()),
            _ => panic!("a header is not a [name, value] pair: {pair}"),
        })
        .collect()
}

#[test]
fn curl_post_chunked_upload_binary_body_and_head_are_reflected() {
    if !require_tool("curl") {
        return;
    }
    let server = serve(&["http://127.0.0.1:0"], &["-q", "--id", "web-interop"]);
    let base = server.endpoint().to_owned();
    let dir = TempDir::new("curl");

    // A POST with a text body and headers whose case and order must stay.
    let body = "first line\nsecond: h\u{e9}llo \u{2713}\n\ttab & <angle> \"quote\"\n";
    let file = dir.write("body.txt", body);
    let reply = curl(&[
        "-H",
        "X-First: 1",
        "-H",
        "x-second: two",
        "-H",
        "X-Dup: a",
        "-H",
        "X-Dup: b",
        "-H",
        "Content-Type: text/plain; charset=utf-8",
        "--data-binary",
        &format!("@{file}"),
        &format!("{base}/reflect/deep?x=1&y=two&empty="),
    ]);
    assert_eq!(reply.code, 200);
    assert_eq!(reply.version, "1.1");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.head
    );
    let got = reply.json();
    assert_eq!(got["method"], "POST", "{got}");
    assert_eq!(got["path"], "/reflect/deep", "{got}");
    assert_eq!(got["query"], "x=1&y=two&empty=", "{got}");
    assert_eq!(got["body"], body, "{got}");
    assert_eq!(got["id"], "web-interop", "{got}");
    assert!(
        got["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{got}"
    );
    let pairs = headers(&got);
    let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    assert_eq!(
        pairs.first(),
        Some(&pair("Host", &base["http://".len()..])),
        "{pairs:?}"
    );
    let first = pairs
        .iter()
        .position(|p| *p == pair("X-First", "1"))
        .unwrap_or_else(|| panic!("no X-First: 1 exactly: {pairs:?}"));
    assert_eq!(
        pairs[first..first + 5],
        [
            pair("X-First", "1"),
            pair("x-second", "two"),
            pair("X-Dup", "a"),
            pair("X-Dup", "b"),
            pair("Content-Type", "text/plain; charset=utf-8"),
        ],
        "curl's headers in the order sent, each name as sent: {pairs:?}"
    );
    assert!(
        pairs.contains(&pair("Content-Length", &body.len().to_string())),
        "{pairs:?}"
    );

    // A chunked upload of 200 KB of text (several chunks), reflected whole.
    let text: String = random_bytes(200_000, 41)
        .iter()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789 \n"[usize::from(*b) % 38]))
        .collect();
    let file = dir.write("chunked.txt", &text);
    let reply = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{file}"),
        &format!("{base}/chunked"),
    ]);
    assert_eq!(reply.code, 200);
    let got = reply.json();
    assert_eq!(got["method"], "POST");
    assert!(
        got["body"].as_str() == Some(text.as_str()),
        "the chunked upload's {} bytes are not the body: {} bytes",
        text.len(),
        got["body"].as_str().map_or(0, str::len)
    );
    let pairs = headers(&got);
    assert!(
        pairs.contains(&pair("Transfer-Encoding", "chunked")),
        "{pairs:?}"
    );
    assert!(
        !pairs
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length")),
        "curl sent no Content-Length: {pairs:?}"
    );

    // A body that is not UTF-8 comes back as body_base64.
    let bytes: Vec<u8> = (0..=255).collect();
    let file = dir.write("binary.bin", &bytes);
    let reply = curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{file}"),
        &format!("{base}/binary"),
    ]);
    assert_eq!(reply.code, 200);
    let got = reply.json();
    assert_eq!(got["body_base64"], base64(&bytes), "{got}");
    assert!(got["body"].is_null(), "no text body for bytes: {got}");

    // HEAD: curl -I sees the reflection's head; a raw HEAD sees no body
    // after it (curl would not read one).
    let reply = curl(&["-I", &format!("{base}/head?q=1")]);
    assert_eq!(reply.code, 200, "{}", reply.head);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.head
    );
    let (head, rest) = raw_http(
        &base,
        "HEAD /head HTTP/1.1\r\nHost: sockecho\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        rest.is_empty(),
        "a body after a HEAD answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    // A GET after the same head, for comparison, has its body.
    let (_, rest) = raw_http(
        &base,
        "GET /head HTTP/1.1\r\nHost: sockecho\r\nConnection: close\r\n\r\n",
    );
    let got: Value = serde_json::from_slice(&rest).expect("GET's body is JSON");
    assert_eq!(got["method"], "GET");
}

#[test]
fn curl_http2_over_https_is_reflected_as_http2() {
    if !require_tool("curl") {
        return;
    }
    let server = serve(&["https://127.0.0.1:0"], &["-q"]);
    let line = server.line();
    assert!(line.starts_with("tls fingerprint sha256:"), "{line}");
    let url = format!("{}/h2?v=2", server.endpoint());

    let reply = curl(&[
        "-k",
        "--http2",
        "-H",
        "X-Over: h2",
        "--data-binary",
        "over h2",
        &url,
    ]);
    assert_eq!(reply.code, 200);
    assert_eq!(reply.version, "2", "curl's %{{http_version}}");
    let got = reply.json();
    assert_eq!(got["http_version"], "HTTP/2", "{got}");
    assert_eq!(got["method"], "POST", "{got}");
    assert_eq!(got["path"], "/h2", "{got}");
    assert_eq!(got["query"], "v=2", "{got}");
    assert_eq!(got["body"], "over h2", "{got}");
    // HTTP/2 sends header names in lower case.
    assert!(
        headers(&got).contains(&("x-over".to_owned(), "h2".to_owned())),
        "{got}"
    );

    // The same server speaks HTTP/1.1 to a client that offers only that.
    let reply = curl(&["-k", "--http1.1", &url]);
    assert_eq!(reply.version, "1.1");
    assert_eq!(reply.json()["http_version"], "HTTP/1.1");
}

#[test]
fn curl_status_delay_and_size_limits() {
    if !require_tool("curl") {
        return;
    }
    let server = serve(&["http://127.0.0.1:0"], &["-q", "--max-body", "1000"]);
    let base = server.endpoint().to_owned();

    let reply = curl(&["-H", "X-Echo-Status: 418", &format!("{base}/teapot")]);
    assert_eq!(reply.code, 418);
    assert_eq!(
        reply.json()["path"],
        "/teapot",
        "the reflection comes with any status"
    );
    let reply = curl(&[&format!("{base}/down?echo_status=503")]);
    assert_eq!(reply.code, 503);
    assert_eq!(reply.json()["query"], "echo_status=503");

    let started = Instant::now();
    let reply = curl(&[&format!("{base}/slow?echo_delay=300ms")]);
    assert_eq!(reply.code, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered after {:?}, asked for 300ms",
        started.elapsed()
    );

    let dir = TempDir::new("curl-limits");
    let at = dir.write("at.txt", "a".repeat(1000));
    let over = dir.write("over.txt", "b".repeat(5000));
    let reply = curl(&["--data-binary", &format!("@{at}"), &format!("{base}/at")]);
    assert_eq!(reply.code, 200, "a body of exactly --max-body");
    assert_eq!(reply.json()["body"], "a".repeat(1000));
    for chunked in [false, true] {
        let mut args = vec![
            "--data-binary".to_owned(),
            format!("@{over}"),
            format!("{base}/over"),
        ];
        if chunked {
            args.extend(["-H".to_owned(), "Transfer-Encoding: chunked".to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = curl(&args);
        assert_eq!(
            reply.code, 413,
            "5000 bytes over --max-body 1000, chunked: {chunked}"
        );
        assert!(
            !String::from_utf8_lossy(&reply.body).contains(&"b".repeat(1001)),
            "the refused body is not reflected"
        );
    }

    // A request head over the server's limit (32 KiB) gets 431.
    let big = format!("X-Big: {}", "h".repeat(40 * 1024));
    let reply = curl(&["-H", &big, &format!("{base}/big-head")]);
    assert_eq!(reply.code, 431);
}

// ---------------------------------------------------------------------------
// Prometheus

/// A Prometheus server scraping `target` (HOST:PORT) every second, its
/// data in `dir`; returns it once it is ready, and the address of its API.
/// Its port is found free then bound by Prometheus: should another process
/// take it first, Prometheus exits and another port is tried.
fn start_prometheus(target: &str, dir: &TempDir) -> (Proc, String) {
    let config = dir.write(
        "prometheus.yml",
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: sockecho\n    scrape_interval: 1s\n    \
             metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    );
    let storage = dir.file("data");
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", closed_tcp_port());
        // Prometheus logs to standard error; the shell joins it to standard
        // output, which Proc reads line by line.
        let prometheus = Proc::spawn(
            "sh",
            &[
                "-c",
                r#"exec "$0" "$@" 2>&1"#,
                "prometheus",
                &format!("--config.file={config}"),
                &format!("--storage.tsdb.path={storage}"),
                &format!("--web.listen-address={addr}"),
            ],
        );
        let deadline = Instant::now() + SLOW_WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline && seen.len() < 1000 {
            let Some(line) = prometheus.try_line() else {
                break;
            };
            if line.contains("Server is ready to receive web requests") {
                return (prometheus, addr);
            }
            seen.push(line);
        }
        let log = seen.join("\n");
        if log.contains("address already in use") {
            continue;
        }
        panic!("Prometheus did not become ready:\n{log}");
    }
    panic!("Prometheus found no free port in 5 tries");
}

/// The samples an instant query gives: (metric name, `endpoint` label) to
/// value. `Err` (with what came) for anything but a successful answer.
fn prometheus_query(api: &str, query: &str) -> Result<BTreeMap<(String, String), f64>, String> {
    let (head, body) = raw_http(
        &format!("tcp://{api}"),
        &format!(
            "GET /api/v1/query?query={} HTTP/1.0\r\nHost: {api}\r\n\r\n",
            percent_encode(query)
        ),
    );
    let text = String::from_utf8_lossy(&body);
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {head}\n{text}"))?;
    if answer["status"] != "success" {
        return Err(answer.to_string());
    }
    let mut samples = BTreeMap::new();
    for result in answer["data"]["result"].as_array().into_iter().flatten() {
        let label = |name: &str| {
            result["metric"][name]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let value = result["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("a sample without a value: {result}"))?;
        samples.insert((label("__name__"), label("endpoint")), value);
    }
    Ok(samples)
}

#[test]
fn prometheus_scrapes_the_metrics_endpoint() {
    if !require_tool("prometheus") {
        return;
    }
    let server = serve(
        &["tcp://127.0.0.1:0", "http://127.0.0.1:0"],
        &["-q", "--metrics", "127.0.0.1:0"],
    );
    let (tcp, http) = (server.endpoints[0].clone(), server.endpoints[1].clone());
    let line = server.line();
    let target = line
        .strip_prefix("metrics ok http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("expected `metrics ok http://HOST:PORT/metrics`, got {line:?}"))
        .to_owned();

    // Traffic first: three TCP echoes of 16 bytes, one HTTP request.
    for _ in 0..3 {
        let mut conn = connect(&tcp);
        assert_eq!(conn.echo(b"hello prometheus"), b"hello prometheus");
    }
    let request = "GET /prometheus HTTP/1.1\r\nHost: sockecho\r\nConnection: close\r\n\r\n";
    let (head, _) = raw_http(&http, request);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let dir = TempDir::new("prometheus");
    let started = Instant::now();
    let (_prometheus, api) = start_prometheus(&target, &dir);
    let query = r#"{__name__=~"sockecho_(connections_total|connections_open|bytes_received_total|bytes_sent_total)"}"#;
    let key = |name: &str, endpoint: &str| (name.to_owned(), endpoint.to_owned());
    let want = BTreeMap::from([
        (key("sockecho_connections_total", &tcp), 3.0),
        (key("sockecho_connections_open", &tcp), 0.0),
        (key("sockecho_bytes_received_total", &tcp), 48.0),
        (key("sockecho_bytes_sent_total", &tcp), 48.0),
        (key("sockecho_connections_total", &http), 1.0),
        (key("sockecho_connections_open", &http), 0.0),
        (
            key("sockecho_bytes_received_total", &http),
            request.len() as f64,
        ),
    ]);
    // Prometheus scrapes its first target some seconds after it starts
    // (its target updates are batched every 5 s): poll, with a deadline.
    let deadline = Instant::now() + SLOW_WAIT;
    loop {
        let answer = prometheus_query(&api, query);
        if let Ok(samples) = &answer {
            let matches = want.iter().all(|(k, v)| samples.get(k) == Some(v));
            let sent = samples.get(&key("sockecho_bytes_sent_total", &http));
            if matches && sent.is_some_and(|&s| s > 0.0) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never showed {want:?} (and HTTP bytes sent > 0); last answer: {answer:?}"
        );
        thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "prometheus scraped the counters after {:?}",
        started.elapsed()
    );
}
