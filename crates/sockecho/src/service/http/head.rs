//! Request heads as they arrived, without I/O: names in their case, in
//! their order, repeated names apart, which hyper's `HeaderMap` does not
//! keep (it lowercases names and groups repeats).
//!
//! [`Heads`] watches the bytes hyper reads from an HTTP/1 connection, in
//! order, and keeps the head of each request as it completes, parsed with
//! httparse (hyper's own parser). To find the next head it steps over each
//! body as hyper does: `Content-Length` bytes, or chunked framing to its
//! last chunk and trailers. It never decides anything: hyper answers
//! every request; a head found here only says how it was written, and
//! one that does not match what hyper read is not used. Anything it
//! cannot follow (an upgrade, a framing hyper refuses, a head over the
//! limit) ends the watching for the connection: heads are then given as
//! hyper has them.
//!
//! Memory stays bounded: the head being read is at most `max_head` bytes
//! (hyper refuses a longer one with 431), a chunk-size or trailer line at
//! most [`MAX_LINE`].

use std::collections::VecDeque;

/// The longest chunk-size line (extensions included) or trailer line
/// followed; a longer one ends the watching.
pub const MAX_LINE: usize = 4096;

/// One request head as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHead {
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent (`/path?query`).
    pub target: String,
    /// Each header in order: its name as written, its value.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Where the watcher is in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a head (the bytes so far are in `buf`).
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Skipping a chunked body.
    Chunked(Chunk),
    /// Lost the thread, or an upgrade: no more heads on this connection.
    Stopped,
}

/// Where a chunked body's framing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The chunk-size line: its value so far, whether a digit came, whether
    /// the extensions began, its length.
    Size {
        value: u64,
        digits: bool,
        extension: bool,
        line: usize,
    },
    /// Chunk data left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, ended by an empty line:
    /// the current line's length.
    Trailer(usize),
}

/// The heads of one HTTP/1 connection's requests, as they arrive.
#[derive(Debug)]
pub struct Heads {
    state: State,
    /// The head being read.
    buf: Vec<u8>,
    /// Longest head followed.
    max_head: usize,
    /// Most headers in one head.
    max_headers: usize,
    /// Heads complete and not yet taken, oldest first.
    done: VecDeque<RawHead>,
}

impl Heads {
    /// Watches heads of at most `max_head` bytes and `max_headers` headers
    /// (hyper's limits for the connection).
    pub fn new(max_head: usize, max_headers: usize) -> Heads {
        Heads {
            state: State::Head,
            buf: Vec::new(),
            max_head,
            max_headers,
            done: VecDeque::new(),
        }
    }

    /// Whether a head has begun and is not complete: bytes other than the
    /// blank lines allowed between requests have come.
    pub fn head_begun(&self) -> bool {
        self.state == State::Head && self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// Whether the watching ended (an upgrade, or framing not followed).
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The oldest complete head not yet taken.
    pub fn take(&mut self) -> Option<RawHead> {
        self.done.pop_front()
    }

    /// Follows the bytes just read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        // Bytes past a completed head go round again (a loop, not
        // recursion: a read may hold a thousand pipelined requests).
        let mut carry = self.step(bytes);
        while let Some(rest) = carry {
            carry = self.step(&rest);
        }
    }

    /// Follows `bytes` until they run out (`None`) or a head completes:
    /// then `Some` of the bytes after it, to follow next.
    fn step(&mut self, mut bytes: &[u8]) -> Option<Vec<u8>> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Stopped => return None,
                State::Head => {
                    // A head ends with an empty line: parse only once one
                    // may have come (the search starts just before the new
                    // bytes), so a head trickled a byte at a time costs
                    // linear time, not quadratic.
                    let from = self.buf.len().saturating_sub(3);
                    let room = (self.max_head + 1).saturating_sub(self.buf.len());
                    let take = bytes.len().min(room);
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let tail = &self.buf[from..];
                    let ended = tail.windows(2).any(|w| w == b"\n\n")
                        || tail.windows(3).any(|w| w == b"\n\r\n");
                    if ended && let Some(used) = self.parse() {
                        // What follows the head is its body or the next
                        // request.
                        let mut rest = self.buf.split_off(used);
                        self.buf.clear();
                        rest.extend_from_slice(bytes);
                        return Some(rest);
                    }
                    if self.state == State::Head && self.buf.len() > self.max_head {
                        self.state = State::Stopped;
                    }
                }
                State::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Chunked(chunk) => {
                    let (used, next) = step_chunk(*chunk, bytes);
                    bytes = &bytes[used..];
                    self.state = next;
                }
            }
        }
        None
    }

    /// Parses the head in `buf`: `Some(bytes used)` once complete (the
    /// state then set for its body), `None` while partial (or when it ended
    /// the watching).
    fn parse(&mut self) -> Option<usize> {
        let mut slots = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut request = httparse::Request::new(&mut slots);
        let used = match request.parse(&self.buf) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => return None,
            // hyper refuses it too (400 or 431) and closes.
            Err(_) => {
                self.state = State::Stopped;
                return None;
            }
        };
        let method = request.method.unwrap_or_default().to_owned();
        let target = request.path.unwrap_or_default().to_owned();
        let headers: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        let named = |name: &'static str| named(&headers, name);
        let upgrade = method.eq_ignore_ascii_case("CONNECT")
            || (named("upgrade").next().is_some()
                && named("connection").any(|v| has_token(v, "upgrade")));
        let chunked = named("transfer-encoding")
            .last()
            .map(|v| last_token_is(v, "chunked"));
        let length: Vec<Option<u64>> = named("content-length")
            .map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
            })
            .collect();
        self.state = match (chunked, length.as_slice()) {
            _ if upgrade => State::Stopped,
            (Some(true), _) => State::Chunked(Chunk::Size {
                value: 0,
                digits: false,
                extension: false,
                line: 0,
            }),
            // A request coded otherwise hyper refuses.
            (Some(false), _) => State::Stopped,
            (None, []) => State::Head,
            (None, [Some(n), rest @ ..]) if rest.iter().all(|m| *m == Some(*n)) => {
                if *n == 0 {
                    State::Head
                } else {
                    State::Body(*n)
                }
            }
            (None, _) => State::Stopped,
        };
        self.done.push_back(RawHead {
            method,
            target,
            headers,
        });
        Some(used)
    }
}

/// The values of the headers called `name` (any case), in order.
fn named<'h>(
    headers: &'h [(String, Vec<u8>)],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Whether the comma-separated header value holds `token` (any case).
fn has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether the last of the comma-separated codings is `token`.
fn last_token_is(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Steps a chunked body's framing over `bytes`: how many were used, and
/// the state after them.
fn step_chunk(mut chunk: Chunk, bytes: &[u8]) -> (usize, State) {
    let mut i = 0;
    while i < bytes.len() {
        match &mut chunk {
            Chunk::Data(left) => {
                let n = (*left).min((bytes.len() - i) as u64);
                *left -= n;
                i += n as usize;
                if *left == 0 {
                    chunk = Chunk::DataEnd;
                }
                continue;
            }
            Chunk::Size {
                value,
                digits,
                extension,
                line,
            } => {
                let b = bytes[i];
                *line += 1;
                if *line > MAX_LINE {
                    return (i, State::Stopped);
                }
                match b {
                    b'\n' if !*digits => return (i, State::Stopped),
                    b'\n' if *value == 0 => chunk = Chunk::Trailer(0),
                    b'\n' => chunk = Chunk::Data(*value),
                    b'\r' => {}
                    b';' => *extension = true,
                    _ if *extension => {}
                    _ => match (b as char).to_digit(16) {
                        Some(d) => match value.checked_mul(16) {
                            Some(v) => {
                                *value = v + u64::from(d);
                                *digits = true;
                            }
                            None => return (i, State::Stopped),
                        },
                        None if b == b' ' || b == b'\t' => {}
                        None => return (i, State::Stopped),
                    },
                }
            }
            Chunk::DataEnd => match bytes[i] {
                b'\r' => {}
                b'\n' => {
                    chunk = Chunk::Size {
                        value: 0,
                        digits: false,
                        extension: false,
                        line: 0,
                    };
                }
                _ => return (i, State::Stopped),
            },
            Chunk::Trailer(line) => match bytes[i] {
                b'\n' if *line == 0 => return (i + 1, State::Head),
                b'\n' => *line = 0,
                b'\r' => {}
                _ => {
                    *line += 1;
                    if *line > MAX_LINE {
                        return (i, State::Stopped);
                    }
                }
            },
        }
        i += 1;
    }
    (i, State::Chunked(chunk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Three pipelined requests: a fixed-length body, a chunked one with
    /// an extension and a trailer, and a bodiless one.
    const PIPELINE: &[u8] = b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 5\r\n\r\nhello\
PUT /b HTTP/1.1\r\nHOST: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;ext=1\r\nwiki\r\n0\r\nX-Trailer: t\r\n\r\n\
\r\nGET /c HTTP/1.1\r\nhost: h\r\n\r\n";

    fn names(head: &RawHead) -> Vec<&str> {
        head.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn heads_of(chunks: &[&[u8]]) -> (Vec<RawHead>, Heads) {
        let mut heads = Heads::new(16 * 1024, 100);
        for chunk in chunks {
            heads.feed(chunk);
        }
        let mut all = Vec::new();
        while let Some(head) = heads.take() {
            all.push(head);
        }
        (all, heads)
    }

    #[test]
    fn pipelined_heads_keep_case_order_and_repeats() {
        let (all, heads) = heads_of(&[PIPELINE]);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].method, "POST");
        assert_eq!(all[0].target, "/a?x=1");
        assert_eq!(names(&all[0]), ["Host", "X-Two", "x-two", "Content-Length"]);
        assert_eq!(all[0].headers[2].1, b"2");
        assert_eq!(all[1].target, "/b");
        assert_eq!(names(&all[1]), ["HOST", "Transfer-Encoding"]);
        assert_eq!(all[2].target, "/c");
        assert!(!heads.head_begun());
        assert!(!heads.stopped());
    }

    #[test]
    fn a_partial_head_has_begun() {
        let (all, heads) = heads_of(&[b"\r\nGET / HT"]);
        assert!(all.is_empty());
        assert!(heads.head_begun());
        let (_, heads) = heads_of(&[b"\r\n\r\n"]);
        assert!(
            !heads.head_begun(),
            "blank lines between requests are not a head"
        );
    }

    #[test]
    fn an_upgrade_ends_the_watching() {
        let (all, heads) = heads_of(&[
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n\x81\x85",
        ]);
        assert_eq!(all.len(), 1);
        assert!(heads.stopped());
    }

    #[test]
    fn too_large_or_malformed_ends_the_watching() {
        let mut heads = Heads::new(64, 100);
        heads.feed(&[b'a'; 100]);
        assert!(heads.stopped());
        let (_, heads) = heads_of(&[b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"]);
        assert!(heads.stopped());
        let (_, heads) =
            heads_of(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
        assert!(heads.stopped());
        let (_, heads) =
            heads_of(&[b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"]);
        assert!(heads.stopped());
    }

    proptest! {
        /// However the bytes are cut, the same three heads come out.
        #[test]
        fn any_cutting_gives_the_same_heads(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30)) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(PIPELINE.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points.into_iter().chain([PIPELINE.len()]) {
                chunks.push(&PIPELINE[start..p]);
                start = p;
            }
            let (whole, _) = heads_of(&[PIPELINE]);
            let (cut, heads) = heads_of(&chunks);
            prop_assert_eq!(cut, whole);
            prop_assert!(!heads.stopped());
        }

        /// Any bytes at all: no panic, and memory bounded by the limits.
        #[test]
        fn any_bytes_are_harmless(data in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let mut heads = Heads::new(1024, 16);
            heads.feed(&data);
            prop_assert!(heads.buf.len() <= 1025);
        }
    }
}
