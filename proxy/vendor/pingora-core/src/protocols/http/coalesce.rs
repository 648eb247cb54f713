// Dime: writes collected into one (see proxy/vendor/README.md, change 5).

//! Fewer, larger writes on a viewer's connection.
//!
//! **HTTP/2** ([`Mode::Batch`]). h2 flushes its connection at the end of every poll of it, and
//! the connection's task is woken once for each stream whose handler produced a frame. With many
//! streams in flight, every response went out on its own: its own TLS record and its own
//! `sendmsg`. Here writes collect in a buffer, and a flush is put off by a trip through the
//! runtime's run queue (the task wakes itself and returns `Pending`), so the stream handlers
//! that are runnable add their frames first; it is put off again while the trip added frames (a
//! handler often needs the connection's task, for flow-control capacity, between its header
//! and its body), at most [`MAX_DEFERRALS`] times. The batch then goes out in one write.
//!
//! **HTTP/1.1 over TLS** ([`Mode::JoinHeader`]). pingora writes a response's header, then its
//! body, and rustls makes a TLS record of every write: two records, two encryptions, for a
//! small response that fits in one. Here the first write after a flush (the header) is held
//! and goes out with the next one when the two fit in a record; anything else is written at
//! once, so a body still streaming from a fill is never held back.
//!
//! Either way the buffer is given back once written, so an idle connection holds none.

use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocols::digest::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest,
};
use crate::protocols::raw_connect::ProxyDigest;
use crate::protocols::tls::SslDigest;
use crate::protocols::{Peek, Shutdown, Ssl, Stream, TlsRef, UniqueID, UniqueIDType, ALPN};

/// A batch is written at once when it would grow past this, and a write at least this large
/// with nothing buffered goes straight through.
const BATCH_LIMIT: usize = 64 * 1024;

/// How many trips through the run queue one flush may wait for.
const MAX_DEFERRALS: u8 = 8;

/// The most a held header and the write after it may come to, to be joined: one TLS record.
const JOIN_LIMIT: usize = 16 * 1024;

/// What a [`CoalescedStream`] collects (see the module's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every write until a flush, which waits for the runnable tasks (HTTP/2).
    Batch,
    /// The first write after a flush, joined with the next (HTTP/1.1 over TLS).
    JoinHeader,
}

/// A stream that collects writes (see the module's text).
#[derive(Debug)]
pub struct CoalescedStream {
    inner: Stream,
    mode: Mode,
    /// [`Mode::JoinHeader`]: the next write starts a response, to be held.
    hold_next: bool,
    batch: Vec<u8>,
    /// How much of `batch` is already written to `inner`.
    written: usize,
    /// How many times the flush of this batch has been put off.
    deferrals: u8,
    /// The batch's length when its flush was last put off.
    len_at_deferral: usize,
}

impl CoalescedStream {
    pub fn new(inner: Stream, mode: Mode) -> Self {
        CoalescedStream {
            inner,
            mode,
            hold_next: true,
            batch: Vec::new(),
            written: 0,
            deferrals: 0,
            len_at_deferral: 0,
        }
    }

    /// Write the whole batch to the inner stream, then give its buffer back.
    fn poll_write_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.batch.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.batch[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.batch = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for CoalescedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CoalescedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match this.mode {
            Mode::Batch => {
                if !this.batch.is_empty() && this.batch.len() + buf.len() > BATCH_LIMIT {
                    ready!(this.poll_write_batch(cx))?;
                }
                if this.batch.is_empty() && buf.len() >= BATCH_LIMIT {
                    return Pin::new(&mut this.inner).poll_write(cx, buf);
                }
                this.batch.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            Mode::JoinHeader => {
                if this.hold_next && this.batch.is_empty() && buf.len() < JOIN_LIMIT {
                    this.hold_next = false;
                    this.batch.extend_from_slice(buf);
                    return Poll::Ready(Ok(buf.len()));
                }
                if !this.batch.is_empty() && this.batch.len() + buf.len() <= JOIN_LIMIT {
                    // The held header and this write leave together, now. Accepted either
                    // way: what the socket does not take yet goes before the next write.
                    this.batch.extend_from_slice(buf);
                    if let Poll::Ready(Err(e)) = this.poll_write_batch(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(buf.len()));
                }
                ready!(this.poll_write_batch(cx))?;
                this.hold_next = false;
                Pin::new(&mut this.inner).poll_write(cx, buf)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let grew = this.batch.len() > this.len_at_deferral;
        if this.mode == Mode::Batch
            && this.written < this.batch.len()
            && (this.deferrals == 0 || grew && this.deferrals < MAX_DEFERRALS)
        {
            // Let the runnable stream handlers add their frames to this batch first. A task
            // that wakes itself while it runs goes to the back of the run queue.
            this.deferrals += 1;
            this.len_at_deferral = this.batch.len();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_write_batch(cx))?;
        this.deferrals = 0;
        this.len_at_deferral = 0;
        this.hold_next = true;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_write_batch(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for CoalescedStream {
    async fn shutdown(&mut self) {
        // What is still in the batch goes out first; an error is the shutdown's to find.
        let _ = std::future::poll_fn(|cx| self.poll_write_batch(cx)).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for CoalescedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for CoalescedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for CoalescedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for CoalescedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for CoalescedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for CoalescedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
