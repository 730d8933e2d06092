//! The classic small services: echo (RFC 862), discard (RFC 863) and
//! chargen (RFC 864), over any stream and for datagrams.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Connection, STREAM_BUFFER, Service, ServiceStream, Serving};
use super::{Counts, Idle};

/// RFC 862: every byte or datagram comes back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

/// RFC 863: everything is read and thrown away; nothing is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

/// RFC 864: rotating 72-character lines, for as long as the peer reads;
/// over datagrams one datagram of them, no larger than the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chargen;

impl Service for Echo {
    /// Sends the greeting, then writes back every byte read until the peer
    /// half-closes, then half-closes too.
    ///
    /// Each chunk is written back before the next read, so a peer that
    /// sends without reading fills its own window and stalls only itself;
    /// memory per connection stays one buffer, and only while data is
    /// there. Idle bounds each read and each write: a peer that makes no
    /// progress for that long is dropped.
    fn serve<'a>(&'a self, mut c: Connection<'a>) -> Serving<'a> {
        Box::pin(async move {
            let mut idle = greet(&mut c).await?;
            loop {
                let (buf, n) = read_chunk(c.stream, &mut idle, c.counts).await?;
                if n == 0 {
                    break;
                }
                idle.within(c.stream.write_all(&buf[..n])).await?;
                c.counts.bytes_out += n as u64;
            }
            // The peer half-closed and everything it sent is echoed: end
            // our side too, so it reads the end of the stream after the
            // last byte.
            idle.within(c.stream.shutdown()).await
        })
    }

    fn reply(&self, _buf: &mut [u8], len: usize) -> Option<usize> {
        Some(len)
    }

    fn is_echo(&self) -> bool {
        true
    }
}

impl Service for Discard {
    /// Reads and counts everything until the peer's end of stream, sends
    /// nothing (but the greeting), then closes.
    fn serve<'a>(&'a self, mut c: Connection<'a>) -> Serving<'a> {
        Box::pin(async move {
            let mut idle = greet(&mut c).await?;
            while read_chunk(c.stream, &mut idle, c.counts).await?.1 > 0 {}
            idle.within(c.stream.shutdown()).await
        })
    }

    fn reply(&self, _buf: &mut [u8], _len: usize) -> Option<usize> {
        None
    }
}

impl Service for Chargen {
    /// Sends the rotating lines for as long as the peer reads them (a peer
    /// that stops reading stalls only itself), reading and discarding what
    /// it sends, until it closes.
    fn serve<'a>(&'a self, mut c: Connection<'a>) -> Serving<'a> {
        Box::pin(async move {
            let mut idle = greet(&mut c).await?;
            let cycle = chargen_cycle();
            let (mut reader, mut writer) = tokio::io::split(c.stream);
            let mut offset = 0usize;
            let mut scratch = [0u8; 512];
            // The peer's half-close does not end chargen (it still reads,
            // as `nc HOST 19 </dev/null` does): only its close does, seen
            // as a failed write, which is chargen's normal end.
            let mut reading = true;
            loop {
                tokio::select! {
                    read = reader.read(&mut scratch), if reading => {
                        match read? {
                            0 => reading = false,
                            n => c.counts.bytes_in += n as u64,
                        }
                    }
                    written = writer.write(&cycle[offset..]) => {
                        let n = match written {
                            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                            Ok(n) => n,
                            Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
                                return Ok(());
                            }
                            Err(e) => return Err(e),
                        };
                        c.counts.bytes_out += n as u64;
                        offset = (offset + n) % cycle.len();
                    }
                    () = idle.expired() => return Err(super::idle::timed_out()),
                }
                // Either direction moving keeps the connection alive.
                idle.progress();
            }
        })
    }

    fn reply(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        // RFC 864 answers with up to 512 characters; never more than the
        // request, so a forged source cannot be flooded with more than it
        // (seemingly) sent.
        let reply = &chargen_cycle()[..len.min(512).min(buf.len())];
        buf[..reply.len()].copy_from_slice(reply);
        Some(reply.len())
    }
}

/// Starts a connection: its idle timeout from now, and the greeting sent,
/// if there is one.
async fn greet(c: &mut Connection<'_>) -> io::Result<Idle> {
    let mut idle = Idle::new(c.idle);
    if !c.greeting.is_empty() {
        idle.within(c.stream.write_all(c.greeting)).await?;
        c.counts.bytes_out += c.greeting.len() as u64;
    }
    Ok(idle)
}

/// Waits for data, then reads it into a pool buffer: an idle connection
/// holds no buffer (ten thousand idle connections would otherwise pin
/// 160 MiB). Returns the buffer and the bytes read (0 at the end of the
/// stream), counted in `counts`.
async fn read_chunk(
    stream: &mut dyn ServiceStream,
    idle: &mut Idle,
    counts: &mut Counts,
) -> io::Result<(Buffer, usize)> {
    idle.within(std::future::poll_fn(|cx| stream.poll_read_ready(cx)))
        .await?;
    let mut buf = Buffer::take();
    let n = idle.within(stream.read(&mut buf)).await?;
    counts.bytes_in += n as u64;
    Ok((buf, n))
}

thread_local! {
    /// Buffers between uses, per thread: a busy connection takes one for a
    /// read and its echo and gives it back, so the heap sees no churn.
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers a thread keeps for reuse; more are freed.
const POOL_MAX: usize = 64;

/// A pool buffer, given back when dropped (also when the echo fails or is
/// cancelled mid-way).
struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    fn take() -> Buffer {
        let buf = POOL
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| vec![0u8; STREAM_BUFFER].into_boxed_slice());
        Buffer(Some(buf))
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            POOL.with_borrow_mut(|pool| {
                if pool.len() < POOL_MAX {
                    pool.push(buf);
                }
            });
        }
    }
}

/// RFC 864's 95 printable characters, each line 72 of them starting one
/// further along, then CR LF: the whole cycle of 95 lines.
fn chargen_cycle() -> &'static [u8] {
    static CYCLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CYCLE.get_or_init(|| {
        let printable: Vec<u8> = (b' '..=b'~').collect();
        let mut cycle = Vec::with_capacity(95 * 74);
        for line in 0..printable.len() {
            cycle.extend((0..72).map(|i| printable[(line + i) % printable.len()]));
            cycle.extend_from_slice(b"\r\n");
        }
        cycle
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use tokio::io::duplex;

    /// Writes `chunks` one by one into an in-memory pipe served by `echo`,
    /// half-closes, and returns everything read back.
    async fn round_trip(chunks: Vec<Vec<u8>>, greeting: &[u8]) -> (Vec<u8>, Counts) {
        let (mut client, mut server) = duplex(4096);
        let greeting = greeting.to_vec();
        let served = tokio::spawn(async move {
            let mut counts = Counts::default();
            let connection = Connection {
                stream: &mut server,
                greeting: &greeting,
                idle: None,
                counts: &mut counts,
                about: Default::default(),
            };
            Echo.serve(connection).await.unwrap();
            counts
        });
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let writer = async {
            for chunk in &chunks {
                wr.write_all(chunk).await.unwrap();
            }
            wr.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let reader = rd.read_to_end(&mut back);
        let ((), read) = tokio::join!(writer, reader);
        read.unwrap();
        (back, served.await.unwrap())
    }

    #[tokio::test]
    async fn greeting_then_echo_then_half_close() {
        let (back, counts) = round_trip(vec![b"ab".to_vec(), b"c".to_vec()], b"hi ").await;
        assert_eq!(back, b"hi abc");
        assert_eq!(
            counts,
            Counts {
                bytes_in: 3,
                bytes_out: 6,
                requests: None,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_peer_is_dropped() {
        let (_client, mut server) = duplex(64);
        let mut counts = Counts::default();
        let connection = Connection {
            stream: &mut server,
            greeting: b"",
            idle: Some(Duration::from_secs(5)),
            counts: &mut counts,
            about: Default::default(),
        };
        let err = Echo.serve(connection).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chargen_reader_that_never_sends_is_not_idle() {
        let (mut client, mut server) = duplex(64);
        let served = tokio::spawn(async move {
            let mut counts = Counts::default();
            let connection = Connection {
                stream: &mut server,
                greeting: b"",
                idle: Some(Duration::from_secs(5)),
                counts: &mut counts,
                about: Default::default(),
            };
            Chargen.serve(connection).await
        });
        // Read for a minute of paused time, a little at a time.
        let mut buf = [0u8; 64];
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.read_exact(&mut buf).await.unwrap();
        }
        drop(client);
        assert!(served.await.unwrap().is_ok());
    }

    #[test]
    fn datagram_replies_are_never_longer_than_the_request() {
        let mut buf = vec![0u8; 2000];
        assert_eq!(Echo.reply(&mut buf, 700), Some(700));
        assert_eq!(Discard.reply(&mut buf, 700), None);
        assert_eq!(Chargen.reply(&mut buf, 700), Some(512));
        assert_eq!(&buf[..72], &chargen_cycle()[..72]);
        assert_eq!(Chargen.reply(&mut buf, 10), Some(10));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any bytes, cut into any chunks, come back identical.
        #[test]
        fn any_chunking_echoes_exactly(
            data in proptest::collection::vec(any::<u8>(), 0..70_000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points.into_iter().chain([data.len()]) {
                chunks.push(data[start..p].to_vec());
                start = p;
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (back, counts) = rt.block_on(round_trip(chunks, b""));
            prop_assert_eq!(counts.bytes_in, data.len() as u64);
            prop_assert_eq!(back, data);
        }
    }
}
