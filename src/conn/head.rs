//! The timed request head: the deadlines Pingora does not keep by itself.
//!
//! Pingora times each *read* of a request head (pingora-core 0.9.1,
//! `protocols/http/v1/server.rs`, `read_request_buf`: `timeout(read_timeout, read)` per
//! read, 60 s by default), so a client dripping one byte at a time (slowloris) would hold
//! its connection for as long as it likes. [`Timed`] wraps the
//! client's stream and bounds the whole head: from the connection's open (first request)
//! or from the first byte after a kept-alive pause, the head must end within
//! `header_read_timeout`, and the pause itself within `idle_timeout`. A head that is late
//! or too large gets 408 or 431 and the connection closes. Bodies are bounded in the
//! request flow (`proxy.rs`), which knows their framing.
//!
//! [`Timed`] stands in for the client's stream everywhere Pingora looks at one, so besides
//! reading and writing it passes every digest and TLS query through to the stream it wraps.

use super::h2frames::H2Frames;
use super::REFUSAL_WRITE_TIMEOUT;
use crate::config::ConnectionsConfig;
use crate::error::GateError;
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Room for the request line on top of `proxy.max_header_bytes` (which counts fields).
const REQUEST_LINE_ALLOWANCE: usize = 8 * 1024;

/// What [`Timed::next_request`] reads ahead: a typical request head in one read. The
/// buffer stays with the connection (one allocation per connection, not per request).
const STASH_BYTES: usize = 1024;

/// The deadlines [`Timed`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Whole request head.
    pub header: Duration,
    /// Pause before the next request on a kept-alive connection.
    pub idle: Duration,
    /// Largest request head, request line included.
    pub max_head: usize,
    /// Longest a write (or flush) may wait for the client to take bytes.
    pub write: Duration,
    /// Whole request body (HTTP/2 streams; HTTP/1.1 bodies are timed by the request flow).
    pub body: Duration,
}

impl Deadlines {
    /// From config.
    pub fn new(cfg: &ConnectionsConfig, max_header_bytes: usize) -> Self {
        Deadlines {
            header: cfg.header_read_timeout,
            idle: cfg.idle_timeout,
            max_head: max_header_bytes + REQUEST_LINE_ALLOWANCE,
            write: cfg.write_timeout,
            body: cfg.body_read_timeout,
        }
    }
}

/// Where a connection is in its current request, as far as reading goes.
#[derive(Debug)]
enum Phase {
    /// No byte of the next request yet. `first`: the connection's first request, whose
    /// head deadline runs from the open.
    Idle { first: bool },
    /// Inside a request head: bytes seen so far, newlines in a row (`\r` ignored), and
    /// whether the request line has begun (blank lines before it do not end anything).
    Head {
        seen: usize,
        newlines: u8,
        started: bool,
    },
    /// The head is complete: reads are the request flow's business.
    Open,
    /// Writing a refusal; then the connection reads as closed.
    Refusing { response: Vec<u8>, written: usize },
    /// Done: reads see end of stream.
    Closed,
}

/// A client stream that keeps the request-head deadlines (see the module docs).
#[derive(Debug)]
pub struct Timed {
    inner: Stream,
    deadlines: Deadlines,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
    /// Bytes read by [`Timed::next_request`] (already followed), handed out first from
    /// `stash_at`; the buffer is kept for the connection's next request.
    stash: Vec<u8>,
    stash_at: usize,
    /// Runs while a write, flush or shutdown waits for the client (made the first time one
    /// does, then reused): every write path, Pingora's untimed ones too (response heads,
    /// the final flush, an h2 connection's frames), ends when the client takes nothing for
    /// `Deadlines::write`.
    write_timer: Option<Pin<Box<Sleep>>>,
    write_waiting: bool,
    /// HTTP/2 (after the preface): the client's control frames, counted against a budget,
    /// and its unfinished request bodies.
    h2: Option<H2Frames>,
    /// A frame of ours for the h2 server (see [`Timed::poll_read_h2`]), handed out up to
    /// `injected_at`.
    injected: [u8; 9],
    injected_at: usize,
    /// Since when a connection past an h2 body deadline has been in the middle of a frame.
    h2_stuck_since: Option<std::time::Instant>,
}

impl Timed {
    /// Wraps a freshly accepted stream; its first head is due `header` from now.
    pub fn new(inner: Stream, deadlines: Deadlines, metrics: Arc<Metrics>) -> Self {
        Timed::opened_at(inner, deadlines, metrics, Instant::now())
    }

    /// Wraps a stream whose connection opened at `opened` (before a TLS handshake): its
    /// first head is due `header` from then, as for a plain connection.
    pub fn opened_at(
        inner: Stream,
        deadlines: Deadlines,
        metrics: Arc<Metrics>,
        opened: Instant,
    ) -> Self {
        Timed {
            inner,
            deadlines,
            phase: Phase::Idle { first: true },
            timer: Box::pin(tokio::time::sleep_until(opened + deadlines.header)),
            metrics,
            stash: Vec::new(),
            stash_at: 0,
            write_timer: None,
            write_waiting: false,
            h2: None,
            injected: MALFORMED_TRAILERS,
            injected_at: MALFORMED_TRAILERS.len(),
            h2_stuck_since: None,
        }
    }

    /// A request is done and the connection kept alive: the next one must begin within
    /// `idle` and its head end `header` after its first byte.
    pub fn rearm(&mut self) {
        // A connection that ended (a write that timed out) stays ended.
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.phase = Phase::Idle { first: false };
        let idle = self.deadlines.idle;
        self.timer.as_mut().reset(Instant::now() + idle);
    }

    /// Waits for the first bytes of the next request (under the idle or head deadline);
    /// `false` when the connection ended instead. Pingora's request future is large (tens
    /// of KiB), so an idle connection waits here, in a small one, and the proxy only sees
    /// it once a request is coming.
    pub async fn next_request(&mut self) -> bool {
        let mut stash = std::mem::take(&mut self.stash);
        stash.clear();
        stash.reserve(STASH_BYTES);
        let read = tokio::io::AsyncReadExt::read_buf(self, &mut stash).await;
        self.stash = stash;
        self.stash_at = 0;
        match read {
            Ok(n) if n > 0 => true,
            _ => {
                self.stash.clear();
                false
            }
        }
    }

    /// HTTP/2: reads the client's connection preface and the header of its first frame
    /// (which must be SETTINGS, RFC 9113 §3.4) within the head deadline, keeps them for the
    /// h2 server to read, and from then on passes reads through (HTTP/2 frames its own
    /// requests; the rest of that SETTINGS frame, and everything after, is under Pingora's
    /// h2 idle deadline). `false` when they did not arrive in time, the connection ended, or
    /// the bytes are not a preface (counted as `header_timeout` or `h2_preface_invalid`):
    /// the caller closes the connection (nothing HTTP/1 may be written to an h2 client).
    pub async fn h2_preface(&mut self) -> bool {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        // The preface, then a frame header: 3 bytes of length, type 4 (SETTINGS).
        const WANT: usize = 24 + 9;
        let mut got = Vec::with_capacity(64);
        let done = tokio::time::timeout_at(self.timer.deadline(), async {
            while got.len() < WANT {
                let mut buf = [0u8; 64];
                match tokio::io::AsyncReadExt::read(&mut self.inner, &mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                let seen = got.len().min(PREFACE.len());
                if got[..seen] != PREFACE[..seen] {
                    return false;
                }
            }
            got.get(27) == Some(&4)
        })
        .await;
        match done {
            Ok(true) => {
                self.stash = got;
                self.stash_at = 0;
                self.phase = Phase::Open;
                // A second past the request flow's own deadline (`proxy::prebuffer`), which
                // answers 408 while nothing went upstream: this one is the backstop for a
                // body that stalls later, when only a reset can end it.
                let backstop = self.deadlines.body + Duration::from_secs(1);
                self.h2 = Some(H2Frames::with_body_deadline(backstop));
                true
            }
            Ok(false) => {
                self.metrics
                    .connections_closed
                    .with_label_values(&["h2_preface_invalid"])
                    .inc();
                false
            }
            Err(_) => {
                self.metrics
                    .connections_closed
                    .with_label_values(&["header_timeout"])
                    .inc();
                false
            }
        }
    }

    /// Whether the current request's head has been read in full (its blank line seen);
    /// from then on reads pass straight through until [`Timed::rearm`].
    pub fn head_complete(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    fn refuse(&mut self, err: &GateError, reason: &'static str) {
        self.metrics
            .connections_closed
            .with_label_values(&[reason])
            .inc();
        self.phase = Phase::Refusing {
            response: err.http1_close(),
            written: 0,
        };
        self.timer
            .as_mut()
            .reset(Instant::now() + REFUSAL_WRITE_TIMEOUT);
    }

    /// Writes the pending refusal; `Ready` once it is written (or given up on).
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Phase::Refusing { response, written } = &mut self.phase else {
                return Poll::Ready(());
            };
            if *written >= response.len() {
                // Best effort: the client is about to see the connection close anyway.
                let _ = Pin::new(&mut self.inner).poll_flush(cx);
                self.phase = Phase::Closed;
                return Poll::Ready(());
            }
            match Pin::new(&mut self.inner).poll_write(cx, &response[*written..]) {
                Poll::Ready(Ok(n)) if n > 0 => *written += n,
                Poll::Ready(_) => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    if self.timer.as_mut().poll(cx).is_ready() {
                        self.phase = Phase::Closed;
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Follows the head through newly read bytes. Lines are found with `memchr`; of each
    /// line only its first bytes are looked at (a line with anything but `\r` ends a blank
    /// run), so a head costs a few instructions per line rather than per byte.
    fn scan(&mut self, new: &[u8]) {
        let Phase::Head {
            seen,
            newlines,
            started,
        } = &mut self.phase
        else {
            return;
        };
        let mut from = 0;
        for at in memchr::memchr_iter(b'\n', new) {
            if new[from..at].iter().any(|&b| b != b'\r') {
                *newlines = 0;
                *started = true;
            }
            *newlines = newlines.saturating_add(1);
            from = at + 1;
            // A blank line after the request line ends the head; blank lines before it are
            // tolerated by the parser (RFC 9112 §2.2).
            if *started && *newlines >= 2 {
                self.phase = Phase::Open;
                return;
            }
        }
        if new[from..].iter().any(|&b| b != b'\r') {
            *newlines = 0;
            *started = true;
        }
        *seen += new.len();
        if *seen > self.deadlines.max_head {
            let limit = self
                .deadlines
                .max_head
                .saturating_sub(REQUEST_LINE_ALLOWANCE);
            self.refuse(&GateError::HeadersTooLarge(limit), "header_too_large");
        }
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.stash_at < this.stash.len() {
            let rest = &this.stash[this.stash_at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            if let Some(h2) = this.h2.as_mut() {
                // The preface and a frame header or two: never over a budget.
                let within = h2.feed(&rest[..n]);
                debug_assert!(within);
            }
            this.stash_at += n;
            if this.stash_at == this.stash.len() {
                this.stash.clear();
                this.stash_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        match this.phase {
            Phase::Open => {
                if this.h2.is_none() {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                return this.poll_read_h2(cx, buf);
            }
            Phase::Closed => return Poll::Ready(Ok(())),
            Phase::Refusing { .. } => {
                // Nothing more is read: end of stream once the refusal is out.
                return this.poll_refusal(cx).map(Ok);
            }
            Phase::Idle { .. } | Phase::Head { .. } => {}
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if let Phase::Idle { first } = this.phase {
                    if !first {
                        let header = this.deadlines.header;
                        this.timer.as_mut().reset(Instant::now() + header);
                    }
                    this.phase = Phase::Head {
                        seen: 0,
                        newlines: 0,
                        started: false,
                    };
                }
                this.scan(new);
                // Bytes already read go up even if a refusal follows: the parser then sees
                // the stream end after them.
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match this.phase {
                    Phase::Idle { first: false } => {
                        // A kept-alive connection with nothing more to ask: a quiet close.
                        this.metrics
                            .connections_closed
                            .with_label_values(&["idle_timeout"])
                            .inc();
                        this.phase = Phase::Closed;
                        Poll::Ready(Ok(()))
                    }
                    _ => {
                        this.refuse(&GateError::RequestTimeout, "header_timeout");
                        this.poll_refusal(cx).map(Ok)
                    }
                }
            }
        }
    }
}

/// An empty HEADERS frame (END_HEADERS, no END_STREAM) for the stream id in bytes 5..9:
/// trailers that do not end the stream, which the h2 server answers with a stream error.
const MALFORMED_TRAILERS: [u8; 9] = [0, 0, 0, 1, 4, 0, 0, 0, 0];

/// Streams one connection may have ended past their body deadline; then it is closed. The
/// h2 server allows 1,024 stream errors per connection and then fails every stream on it
/// (`max_local_error_reset_streams`): closing first keeps that to this client.
const MAX_ENDED_STREAMS: u32 = 512;

impl Timed {
    /// An HTTP/2 connection's reads: the client's frames pass through, followed by
    /// [`H2Frames`] (control-frame budget, unfinished request bodies).
    ///
    /// Pingora reads an h2 request body without any deadline, so a stream whose body is not
    /// complete within `Deadlines::body` (and a second) of its HEADERS is ended here: the h2
    /// server is handed, between two of the client's frames, an empty HEADERS frame without
    /// END_STREAM on that stream. Trailers that do not end a stream are a stream error
    /// (RFC 9113 §8.1), which the h2 server answers as for any: RST_STREAM(PROTOCOL_ERROR)
    /// to the client, the body read fails (Pingora ends the request and its upstream
    /// connection), and whatever the client still sends on the stream is ignored. Streams
    /// the server reset are no longer followed ([`H2Frames::wrote`]), so the frame never
    /// reaches a stream the server may have forgotten.
    ///
    /// Past a deadline, reads stop at the next frame boundary so that the frame can go in;
    /// a client that stays in the middle of a frame (or header block) then blocks every
    /// stream of the connection, which is closed if it does not get out within
    /// `Deadlines::body`, however many bytes trickle in.
    fn poll_read_h2(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(h2) = self.h2.as_mut() else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if buf.remaining() == 0 {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        // A frame of ours goes out whole before any more of the client's bytes, over as
        // many reads as the reader's buffer needs.
        if let Some(rest) = self
            .injected
            .get(self.injected_at..)
            .filter(|r| !r.is_empty())
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.injected_at += n;
            return Poll::Ready(Ok(()));
        }
        let now = std::time::Instant::now();
        let due_passed = h2.next_due().is_some_and(|due| due <= now);
        // While the server's frames wait for the client, a reset h2 has queued may not have
        // reached `H2Frames::wrote` yet: nothing is handed in then.
        let overdue = due_passed && !self.write_waiting;
        if !due_passed {
            self.h2_stuck_since = None;
        } else if overdue && h2.at_frame_boundary() {
            self.h2_stuck_since = None;
            if h2.ended() >= MAX_ENDED_STREAMS {
                // h2 allows a connection 1,024 stream errors, then fails all its streams.
                return self.close_h2("h2_body_timeout", "too many HTTP/2 bodies past deadline");
            }
            if let Some(stream) = h2.take_overdue(now) {
                self.injected = MALFORMED_TRAILERS;
                self.injected[5..9].copy_from_slice(&stream.to_be_bytes());
                self.metrics.h2_body_timeouts.inc();
                let n = self.injected.len().min(buf.remaining());
                buf.put_slice(&self.injected[..n]);
                self.injected_at = n;
                return Poll::Ready(Ok(()));
            }
        } else {
            // Stuck in the middle of a frame or header block (bytes may trickle), or held
            // back by the write side: the connection gets one body deadline to let the frame
            // in, then it is closed (closing is safe where handing a frame in is not).
            let stuck = *self.h2_stuck_since.get_or_insert(now);
            if now.duration_since(stuck) >= self.deadlines.body {
                return self.close_h2("h2_body_timeout", "an HTTP/2 body stayed past its deadline");
            }
        }
        let before = buf.filled().len();
        let cap = if overdue {
            h2.bytes_to_boundary()
        } else {
            usize::MAX
        };
        let read = if cap < buf.remaining() {
            // Rare (a deadline has passed): through a buffer of exactly what is left of the
            // current frame.
            let mut scratch = vec![0u8; cap];
            let mut part = ReadBuf::new(&mut scratch);
            let read = Pin::new(&mut self.inner).poll_read(cx, &mut part);
            buf.put_slice(part.filled());
            read
        } else {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        };
        match read {
            Poll::Ready(Ok(())) => {
                let fresh = buf.filled().get(before..).unwrap_or_default();
                if !h2.feed(fresh) {
                    // Nothing of what was read reaches the h2 server: the connection ends.
                    buf.set_filled(before);
                    let reason = h2.closed_for();
                    return self.close_h2(reason, "HTTP/2 frame flood");
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // Nothing to read: wake when the next body falls due, or when a connection
                // stuck past one has had its body deadline to let the frame in.
                let wake = match (due_passed, self.h2_stuck_since) {
                    (true, Some(stuck)) => stuck + self.deadlines.body,
                    (false, _) => match h2.next_due() {
                        Some(due) => due,
                        None => return Poll::Pending,
                    },
                    // Not reached: past a due time, a frame was handed in or the clock runs.
                    (true, None) => return Poll::Pending,
                };
                let wake = Instant::from_std(wake);
                if self.timer.deadline() != wake {
                    self.timer.as_mut().reset(wake);
                }
                // `wake` is in the future: the timer registers this task and fires later.
                if self.timer.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            err => err,
        }
    }

    /// Ends an HTTP/2 connection from the read side, counted under `reason`.
    fn close_h2(&mut self, reason: &str, why: &'static str) -> Poll<io::Result<()>> {
        self.phase = Phase::Closed;
        self.metrics
            .connections_closed
            .with_label_values(&[reason])
            .inc();
        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)))
    }

    /// After a write-side poll: progress stops the write clock; waiting starts it (once)
    /// and, past `Deadlines::write`, turns into a timeout error.
    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            if self.write_waiting
                && self.h2.as_ref().is_some_and(|h2| {
                    h2.next_due()
                        .is_some_and(|due| due <= std::time::Instant::now())
                })
            {
                // The read side held a frame back while this write waited: let it go in now
                // rather than at its next wake.
                cx.waker().wake_by_ref();
            }
            self.write_waiting = false;
            return r;
        }
        if !self.write_waiting {
            let due = Instant::now() + self.deadlines.write;
            match self.write_timer.as_mut() {
                Some(t) => t.as_mut().reset(due),
                None => self.write_timer = Some(Box::pin(tokio::time::sleep_until(due))),
            }
            self.write_waiting = true;
        }
        let fired = self
            .write_timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if !fired {
            return Poll::Pending;
        }
        self.write_waiting = false;
        self.metrics
            .connections_closed
            .with_label_values(&["write_timeout"])
            .inc();
        self.phase = Phase::Closed;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no bytes for the write deadline",
        )))
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.phase, Phase::Refusing { .. } | Phase::Closed) {
            // The refusal is the connection's last response.
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(h2)) = (&r, self.h2.as_mut()) {
            h2.wrote(buf.get(..*n).unwrap_or_default());
        }
        self.write_progress(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.phase, Phase::Closed) {
            // Ended (a write timed out, or a refusal went out): nothing more waits here.
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.phase, Phase::Closed) {
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.write_progress(cx, r)
    }
}

#[async_trait]
impl Shutdown for Timed {
    async fn shutdown(&mut self) {
        // Through the write deadline, like every other write.
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for Timed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Timed {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Timed {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Timed {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Timed {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Timed {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);
    const WRITE: Duration = Duration::from_secs(5);

    fn timed() -> Result<(Timed, DuplexStream), prometheus::Error> {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let d = Deadlines {
            body: Duration::from_secs(30),
            header: HEADER,
            idle: IDLE,
            max_head: 1024 + REQUEST_LINE_ALLOWANCE,
            write: WRITE,
        };
        let t = Timed::new(Box::new(ours), d, Arc::new(Metrics::new()?));
        Ok((t, theirs))
    }

    /// A client that takes no bytes: the write (any write path: Pingora's response heads
    /// and final flushes are not timed by Pingora) ends at the write deadline, counted; one
    /// that reads, however slowly, keeps its connection.
    #[tokio::test(start_paused = true)]
    async fn writes_the_client_does_not_take_end_at_the_write_deadline(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut t, mut client) = timed()?;
        let metrics = t.metrics.clone();
        let started = Instant::now();
        let stuck = t.write_all(&vec![b'x'; 256 * 1024]).await;
        assert_eq!(stuck.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= WRITE && started.elapsed() < WRITE * 2);
        assert_eq!(
            metrics
                .connections_closed
                .with_label_values(&["write_timeout"])
                .get(),
            1
        );
        // A slow reader: 16 KiB every 4 s (under the 5 s deadline) keeps the writes going.
        let (mut t, mut client2) = timed()?;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut total = 0;
            while total < 256 * 1024 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                match client2.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        t.write_all(&vec![b'y'; 256 * 1024]).await?;
        t.flush().await?;
        drop(t);
        assert!(reader.await? >= 256 * 1024 - 64 * 1024);
        let _ = client.read(&mut [0u8; 1]).await;
        Ok(())
    }

    /// A client's preface, SETTINGS and HEADERS on stream 1 (END_HEADERS, no END_STREAM, a
    /// 3-byte block), then `more`; taken through `h2_preface` with `body` as the deadline.
    async fn h2_opened(
        t: &mut Timed,
        client: &mut DuplexStream,
        body: Duration,
        more: &[u8],
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        t.deadlines.body = body;
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
        hello.extend([0, 0, 3, 1, 4, 0, 0, 0, 1, 0x82, 0x86, 0x84]);
        hello.extend(more);
        client.write_all(&hello).await?;
        assert!(t.h2_preface().await);
        Ok(hello)
    }

    /// Reads until the connection ends (waiting at most 5 s) and checks that it ended in an
    /// error within 2.5 s, counted as `h2_body_timeout`.
    async fn closed_for_h2_body_timeout(t: &mut Timed) {
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match t.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        let took = started.elapsed();
        assert!(
            matches!(ended, Ok(Err(_))),
            "not closed: {ended:?} after {took:?}"
        );
        assert!(took < Duration::from_millis(2500), "closed after {took:?}");
        assert_eq!(
            t.metrics
                .connections_closed
                .with_label_values(&["h2_body_timeout"])
                .get(),
            1
        );
    }

    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Past an h2 body deadline the h2 server is handed malformed trailers for the stream,
    /// a few bytes at a time when its buffer is small, and then waits without spinning.
    #[tokio::test]
    async fn an_overdue_h2_body_gets_its_stream_error_frame_and_nothing_spins(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        let hello = h2_opened(&mut t, &mut client, Duration::ZERO, &[]).await?;
        let mut seen = [0u8; 64];
        let mut got = 0;
        while got < hello.len() {
            got += t.read(&mut seen[got..]).await?;
        }
        // The backstop is a second past the (zero) body deadline.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let counter = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        for _ in 0..3 {
            let mut small = [0u8; 4];
            let mut buf = ReadBuf::new(&mut small);
            assert!(matches!(
                Pin::new(&mut t).poll_read(&mut cx, &mut buf),
                Poll::Ready(Ok(()))
            ));
            out.extend_from_slice(buf.filled());
        }
        assert_eq!(out, [0, 0, 0, 1, 4, 0, 0, 0, 1]);
        let mut buf = [0u8; 4];
        let mut buf = ReadBuf::new(&mut buf);
        assert!(Pin::new(&mut t).poll_read(&mut cx, &mut buf).is_pending());
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(t.metrics.h2_body_timeouts.get(), 1);
        Ok(())
    }

    /// Past an h2 body deadline, a client that drips a frame a byte at a time (never at a
    /// boundary, never silent) is closed once it has had a body deadline to get out.
    #[tokio::test]
    async fn an_h2_frame_dripped_past_a_deadline_ends_the_connection(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        // A DATA frame of 16,384 bytes on stream 1, of which only the header comes at once.
        let data = [0, 0x40, 0, 0, 0, 0, 0, 0, 1];
        h2_opened(&mut t, &mut client, Duration::from_millis(300), &data).await?;
        let drip = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if client.write_all(b"x").await.is_err() {
                    break;
                }
            }
        });
        // Due 1.3 s after its HEADERS, then 300 ms to reach a boundary.
        closed_for_h2_body_timeout(&mut t).await;
        drip.abort();
        Ok(())
    }

    /// Past an h2 body deadline while the client takes none of the server's bytes (a reset
    /// h2 queued may be unwritten, so nothing is handed in): the connection is closed a body
    /// deadline later, not held until the client reads.
    #[tokio::test]
    async fn an_overdue_h2_body_behind_a_blocked_write_ends_the_connection(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        h2_opened(&mut t, &mut client, Duration::from_millis(300), &[]).await?;
        // The server's frames fill the client's buffer: the write waits.
        let blocked =
            tokio::time::timeout(Duration::from_millis(100), t.write_all(&[0u8; 256 * 1024])).await;
        assert!(blocked.is_err(), "the write did not wait");
        // Due 1.3 s after its HEADERS, then 300 ms.
        closed_for_h2_body_timeout(&mut t).await;
        assert_eq!(t.metrics.h2_body_timeouts.get(), 0, "nothing was handed in");
        drop(client);
        Ok(())
    }

    /// Reads what the gateway side sees until end of stream.
    async fn drain(t: &mut Timed) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = t.read(&mut buf).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    }

    async fn status_seen_by_client(client: &mut DuplexStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = client.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripped_head_is_cut_at_the_deadline() -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        // Blank lines first must not count as the end of the head.
        client
            .write_all(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a")
            .await?;
        let started = Instant::now();
        let seen = drain(&mut t).await;
        assert_eq!(seen, b"\r\n\r\nGET / HTTP/1.1\r\nHost: a");
        assert!(started.elapsed() >= HEADER);
        assert_eq!(
            status_seen_by_client(&mut client).await,
            "HTTP/1.1 408 Request Timeout"
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_head_lifts_the_deadline() -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        client
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n")
            .await?;
        let mut buf = [0u8; 512];
        assert!(t.read(&mut buf).await? > 0);
        tokio::time::sleep(HEADER * 3).await;
        client.write_all(b"x").await?;
        assert_eq!(t.read(&mut buf).await?, 1);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_read_while_waiting_are_handed_on() -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        assert!(t.next_request().await);
        let mut buf = [0u8; 7];
        assert_eq!(t.read(&mut buf).await?, 7);
        assert_eq!(&buf, b"GET / H");
        let mut rest = vec![0u8; 100];
        let n = t.read(&mut rest).await?;
        assert_eq!(&rest[..n], b"TTP/1.1\r\nHost: a\r\n\r\n");
        // Complete head: nothing times out any more.
        tokio::time::sleep(HEADER * 2).await;
        client.write_all(b"x").await?;
        assert_eq!(t.read(&mut rest).await?, 1);
        t.rearm();
        drop(client);
        assert!(
            !t.next_request().await,
            "a closed connection has no next request"
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_head_gets_431() -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000));
        client.write_all(big.as_bytes()).await?;
        drain(&mut t).await;
        assert_eq!(
            status_seen_by_client(&mut client).await,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_closes_quietly_when_idle(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
        let mut buf = [0u8; 512];
        assert!(t.read(&mut buf).await? > 0);
        t.rearm();
        let started = Instant::now();
        assert_eq!(t.read(&mut buf).await?, 0);
        assert!(started.elapsed() >= IDLE);
        drop(t);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await?;
        assert!(rest.is_empty(), "no response on an idle close");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_gets_its_own_deadline() -> Result<(), Box<dyn std::error::Error>> {
        let (mut t, mut client) = timed()?;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
        let mut buf = [0u8; 512];
        assert!(t.read(&mut buf).await? > 0);
        t.rearm();
        // Idle for most of the idle timeout, then a second head that starts but stalls.
        let reader = tokio::spawn(async move { drain(&mut t).await });
        tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
        client.write_all(b"GET /2 HTTP/1.1\r\n").await?;
        let started = Instant::now();
        let seen = reader.await?;
        assert_eq!(seen, b"GET /2 HTTP/1.1\r\n");
        assert!(started.elapsed() >= HEADER);
        assert_eq!(
            status_seen_by_client(&mut client).await,
            "HTTP/1.1 408 Request Timeout"
        );
        Ok(())
    }
}
