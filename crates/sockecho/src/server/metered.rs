//! `--metrics` around a served connection on the epoll engine: the bytes
//! it moves are counted as they move, so the services stay free of
//! metrics code. One relaxed add to this thread's shard per read or write
//! (see [`crate::metrics`]): no lock, no shared cache line.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Meter;
use crate::service::ServiceStream;
use crate::transport::ReadReady;

/// A stream whose bytes are counted in `meter`.
pub struct Metered<'a> {
    inner: &'a mut dyn ServiceStream,
    meter: &'a Meter,
}

impl<'a> Metered<'a> {
    /// Counts what `inner` moves in `meter`.
    pub fn new(inner: &'a mut dyn ServiceStream, meter: &'a Meter) -> Metered<'a> {
        Metered { inner, meter }
    }
}

impl ReadReady for Metered<'_> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
}

impl AsyncRead for Metered<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.meter.received((buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl AsyncWrite for Metered<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.meter.sent(n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.meter.sent(n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A stream connection counted open for as long as it is held.
pub struct Open(Option<std::sync::Arc<Meter>>);

impl Open {
    /// Counts a connection opened (when counting).
    pub fn new(meter: Option<std::sync::Arc<Meter>>) -> Open {
        if let Some(meter) = &meter {
            meter.opened();
        }
        Open(meter)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(meter) = &self.0 {
            meter.closed();
        }
    }
}
