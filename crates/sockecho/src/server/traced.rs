//! Tracing around a served connection: its end of stream and its
//! half-close become trace lines, so the services stay free of tracing
//! code.

use std::fmt::Display;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::trace::Tracer;
use crate::transport::ReadReady;

/// A stream whose end-of-stream and half-close are traced: wraps the
/// server's connection while tracing is on, so the echo loop itself
/// stays free of tracing code.
pub struct TracedStream<'a, S> {
    inner: &'a mut S,
    tracer: &'a Tracer,
    peer: &'a (dyn Display + Sync),
    tcp: Option<RawFd>,
    /// The end of the stream is traced once, however often it is read.
    eof_traced: bool,
}

impl<'a, S> TracedStream<'a, S> {
    /// Wraps `inner`, the connection to `peer` (TCP descriptor `tcp`).
    pub fn new(
        inner: &'a mut S,
        tracer: &'a Tracer,
        peer: &'a (dyn Display + Sync),
        tcp: Option<RawFd>,
    ) -> TracedStream<'a, S> {
        TracedStream {
            inner,
            tracer,
            peer,
            tcp,
            eof_traced: false,
        }
    }
}

impl<S: ReadReady> ReadReady for TracedStream<'_, S> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TracedStream<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let at_eof = matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && buf.remaining() > 0;
        if at_eof && !this.eof_traced {
            this.eof_traced = true;
            this.tracer.eof(this.peer, this.tcp);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TracedStream<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_shutdown(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            this.tracer.shutdown(this.peer, "write", this.tcp);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
