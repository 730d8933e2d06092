//! The per-connection and per-datagram services. Echo (RFC 862) for now;
//! written over `AsyncRead + AsyncWrite` so every stream transport shares it.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from one stream connection: large enough for one read to
/// take what a loopback peer usually has queued, small enough that ten
/// thousand busy connections stay within a few hundred MiB.
pub const STREAM_BUFFER: usize = 16 * 1024;

/// What a connection moved, kept outside the service future so that the
/// counts survive when the future is cancelled (drain deadline).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer, the greeting included.
    pub bytes_out: u64,
}

/// Echoes a stream connection to its end: sends `greeting`, then writes
/// back every byte read until the peer half-closes, then half-closes too.
///
/// Each chunk is written back before the next read, so a peer that sends
/// without reading fills its own window and stalls only itself; memory per
/// connection stays one buffer. `idle` bounds each read and each write: a
/// peer that makes no progress for that long is dropped.
pub async fn echo<S>(
    stream: &mut S,
    greeting: &[u8],
    idle: Option<Duration>,
    counts: &mut Counts,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    let mut idle = Idle::new(idle);
    greet(stream, greeting, &mut idle, counts).await?;
    loop {
        let (buf, n) = read_chunk(stream, &mut idle, counts).await?;
        if n == 0 {
            break;
        }
        idle.within(stream.write_all(&buf[..n])).await?;
        counts.bytes_out += n as u64;
    }
    // The peer half-closed and everything it sent is echoed: end our side
    // too, so it reads the end of the stream after the last byte.
    idle.within(stream.shutdown()).await
}

/// Sends the greeting, if there is one.
async fn greet<S>(
    stream: &mut S,
    greeting: &[u8],
    idle: &mut Idle,
    counts: &mut Counts,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if !greeting.is_empty() {
        idle.within(stream.write_all(greeting)).await?;
        counts.bytes_out += greeting.len() as u64;
    }
    Ok(())
}

/// Waits for data, then reads it into a pool buffer: an idle connection
/// holds no buffer (ten thousand idle connections would otherwise pin
/// 160 MiB). Returns the buffer and the bytes read (0 at the end of the
/// stream), counted in `counts`.
async fn read_chunk<S>(
    stream: &mut S,
    idle: &mut Idle,
    counts: &mut Counts,
) -> io::Result<(Buffer, usize)>
where
    S: AsyncRead + ReadReady + Unpin,
{
    idle.within(std::future::poll_fn(|cx| stream.poll_read_ready(cx)))
        .await?;
    let mut buf = Buffer::take();
    let n = idle.within(stream.read(&mut buf)).await?;
    counts.bytes_in += n as u64;
    Ok((buf, n))
}

/// A stream that can say when it has data to read, so that `echo` takes a
/// buffer only then.
pub trait ReadReady {
    /// Ready when a read would not wait (data, end of stream or an error).
    fn poll_read_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>>;
}

impl ReadReady for crate::transport::Stream {
    fn poll_read_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self {
            crate::transport::Stream::Tcp(s) => s.poll_read_ready(cx),
            crate::transport::Stream::Unix(s) => s.poll_read_ready(cx),
            // Decrypted bytes may wait inside the TLS layer while the socket
            // has nothing new: the read itself must be asked.
            crate::transport::Stream::Tls(_) => std::task::Poll::Ready(Ok(())),
        }
    }
}

impl ReadReady for tokio::io::DuplexStream {
    /// In-memory pipes (tests): always worth a read.
    fn poll_read_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
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

/// Which classic small service a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// RFC 862: every byte or datagram comes back.
    #[default]
    Echo,
    /// RFC 863: everything is read and thrown away; nothing is sent.
    Discard,
    /// RFC 864: a stream of rotating 72-character lines; over UDP one
    /// datagram of them per datagram received.
    Chargen,
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

/// The reply to a chargen datagram of `request_len` bytes: RFC 864 answers
/// with up to 512 characters; never more than the request, so a spoofed
/// source cannot be flooded with more than it (seemingly) sent.
pub fn chargen_datagram(request_len: usize) -> &'static [u8] {
    &chargen_cycle()[..request_len.min(512)]
}

/// RFC 863 over a stream: reads and counts everything until the peer's end
/// of stream, sends nothing (but the greeting), then closes.
pub async fn discard<S>(
    stream: &mut S,
    greeting: &[u8],
    idle: Option<Duration>,
    counts: &mut Counts,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    let mut idle = Idle::new(idle);
    greet(stream, greeting, &mut idle, counts).await?;
    while read_chunk(stream, &mut idle, counts).await?.1 > 0 {}
    idle.within(stream.shutdown()).await
}

/// RFC 864 over a stream: sends the rotating lines for as long as the peer
/// reads them (a peer that stops reading stalls only itself), reading and
/// discarding what it sends, until it closes or half-closes.
pub async fn chargen<S>(
    stream: &mut S,
    greeting: &[u8],
    idle: Option<Duration>,
    counts: &mut Counts,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    greet(stream, greeting, &mut Idle::new(idle), counts).await?;
    let cycle = chargen_cycle();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut offset = 0usize;
    let mut scratch = [0u8; 512];
    // The peer's half-close does not end chargen (it still reads, as
    // `nc HOST 19 </dev/null` does): only its close does, seen as a failed
    // write, which is chargen's normal end.
    let mut reading = true;
    loop {
        tokio::select! {
            read = within(idle, reader.read(&mut scratch)), if reading => {
                match read? {
                    0 => reading = false,
                    n => counts.bytes_in += n as u64,
                }
            }
            written = within(idle, writer.write(&cycle[offset..])) => {
                let n = match written {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                counts.bytes_out += n as u64;
                offset = (offset + n) % cycle.len();
            }
        }
    }
}

/// A connection's idle timeout: one timer for the connection's life,
/// moved on lazily. A timeout per operation would put a timer into tokio's
/// wheel and take it out again twice per message; here an operation that
/// completes costs one clock read, and the timer is re-armed only when it
/// fires early (at most once per idle period).
struct Idle {
    limit: Option<Duration>,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// When an operation last completed.
    last: tokio::time::Instant,
}

impl Idle {
    fn new(limit: Option<Duration>) -> Idle {
        Idle {
            limit,
            timer: None,
            last: tokio::time::Instant::now(),
        }
    }

    /// Runs `op`; fails with "idle timeout" once nothing has completed for
    /// the limit.
    async fn within<T>(&mut self, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        let Some(limit) = self.limit else {
            return op.await;
        };
        let last = self.last;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last + limit)));
        tokio::pin!(op);
        loop {
            tokio::select! {
                biased;
                result = &mut op => {
                    self.last = tokio::time::Instant::now();
                    return result;
                }
                () = timer.as_mut() => {
                    let due = self.last + limit;
                    if tokio::time::Instant::now() >= due {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                    }
                    timer.as_mut().reset(due);
                }
            }
        }
    }
}

/// Runs `op` under the idle timeout, if there is one.
async fn within<T>(
    idle: Option<Duration>,
    op: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match idle {
        None => op.await,
        Some(limit) => tokio::time::timeout(limit, op)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::duplex;

    /// Writes `chunks` one by one into an in-memory pipe served by `echo`,
    /// half-closes, and returns everything read back.
    async fn round_trip(chunks: Vec<Vec<u8>>, greeting: &[u8]) -> (Vec<u8>, Counts) {
        let (mut client, mut server) = duplex(4096);
        let greeting = greeting.to_vec();
        let served = tokio::spawn(async move {
            let mut counts = Counts::default();
            echo(&mut server, &greeting, None, &mut counts)
                .await
                .unwrap();
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
                bytes_out: 6
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_peer_is_dropped() {
        let (_client, mut server) = duplex(64);
        let mut counts = Counts::default();
        let err = echo(&mut server, b"", Some(Duration::from_secs(5)), &mut counts)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
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
