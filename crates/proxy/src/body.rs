//! Request and response bodies as they cross the gateway.
//!
//! Request side: a body that fits in [`REPLAY_LIMIT`] is read completely before the
//! first attempt and can be sent again on a retry (`UpstreamBody::Full`). A larger (or
//! unknown-length, still-running) body is streamed: the first part already read is sent,
//! then the rest straight from the client. Once such an attempt has started, the body is
//! gone and a retry is only possible when the connect itself failed.
//!
//! Response side: [`ClientBody`] is either a gateway-made body or the upstream's body
//! streamed through with a per-read timeout (Kong's `read_timeout` counts between two
//! successive reads), counting bytes, returning the upstream connection to the pool when
//! the body ended cleanly, and finishing the request's record exactly once. An HTTP/2
//! upstream's body (gRPC services) is relayed frame by frame, trailers included, under
//! the same read timeout.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::upstream::{BodyError, ResponseBody};

/// Request bodies up to this size are buffered so a retry can resend them.
///
/// 64 KiB holds nearly every API request (JSON documents, form posts) while costing at
/// most 64 KiB per in-flight request: 10,000 concurrent uploads stay under 640 MiB even
/// in the worst case. nginx's default `client_body_buffer_size` is 8–16 KiB (it spills
/// to disk beyond that); Envoy's default retry buffer is 64 KiB
/// (`per_connection_buffer_limit_bytes`-bound), which is the figure followed here.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// Longest wait between two reads of a client's request body (nginx's
/// `client_body_timeout` default, which Kong keeps).
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The request body sent upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    /// A complete body (possibly empty), replayable by cloning the `Bytes`.
    Full(Option<Bytes>),
    /// The beginning already read, then the rest of the client's stream.
    Streaming {
        head: Option<Bytes>,
        rest: Incoming,
        /// Bytes still allowed by the gateway's body limit (`u64::MAX` = unlimited).
        remaining_limit: u64,
        /// Write progress, watched by the attempt's write/read timeouts.
        progress: Option<Arc<WriteProgress>>,
    },
}

/// How far the upload of a streamed body got, for Kong's per-phase timeouts:
/// `write_timeout` between two successive writes, then `read_timeout` from the end of
/// the body to the response header.
#[derive(Debug)]
pub struct WriteProgress {
    base: Instant,
    /// Milliseconds after `base` of the last chunk handed to the connection.
    last_write_ms: AtomicU64,
    done: AtomicBool,
    /// The connection asked for more and the client has not sent it yet: the upstream
    /// is not to blame for this wait.
    waiting_on_client: AtomicBool,
}

impl WriteProgress {
    pub fn new() -> Arc<WriteProgress> {
        Arc::new(WriteProgress {
            base: Instant::now(),
            last_write_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            waiting_on_client: AtomicBool::new(false),
        })
    }

    fn touch(&self, done: bool) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_write_ms.store(ms, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
        if done {
            self.done.store(true, Ordering::Relaxed);
        }
    }

    /// The whole body has been handed to the connection.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// The attempt is waiting for the client's next body chunk.
    pub fn is_waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }

    /// When the current phase times out: `read` after the end of the body;
    /// [`CLIENT_BODY_TIMEOUT`] while waiting on the client; else `write` after the last
    /// write (the upstream stopped draining).
    pub fn deadline(&self, write: Duration, read: Duration) -> Instant {
        let last = self.base + Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed));
        last + if self.is_done() {
            read
        } else if self.is_waiting_on_client() {
            CLIENT_BODY_TIMEOUT
        } else {
            write
        }
    }
}

impl UpstreamBody {
    pub fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            UpstreamBody::Full(None)
        } else {
            UpstreamBody::Full(Some(bytes))
        }
    }
}

/// The client exceeded the body limit or its body stream failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("request body exceeds the configured limit")]
    TooLarge,
    #[error("client request body failed: {0}")]
    Client(#[from] hyper::Error),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Streaming {
                head,
                rest,
                remaining_limit,
                progress,
            } => {
                if let Some(head) = head.take() {
                    if let Some(p) = progress {
                        p.touch(rest.is_end_stream());
                    }
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                match Pin::new(&mut *rest).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            let len = data.len() as u64;
                            if len > *remaining_limit {
                                return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                            }
                            *remaining_limit -= len;
                        }
                        if let Some(p) = progress {
                            p.touch(rest.is_end_stream());
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Ready(None) => {
                        if let Some(p) = progress {
                            p.touch(true);
                        }
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        if let Some(p) = progress {
                            p.waiting_on_client.store(true, Ordering::Relaxed);
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(bytes) => bytes.is_none(),
            UpstreamBody::Streaming { head, rest, .. } => head.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamBody::Streaming { head, rest, .. } => {
                let head_len = head.as_ref().map_or(0, |b| b.len() as u64);
                let rest_hint = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest_hint.lower() + head_len);
                if let Some(upper) = rest_hint.upper() {
                    hint.set_upper(upper + head_len);
                }
                hint
            }
        }
    }
}

/// The client's request body after the gateway read what it could buffer.
#[derive(Debug)]
pub enum ReadBody {
    /// The whole body (replayable).
    Complete(Bytes),
    /// More than [`REPLAY_LIMIT`]: what was read, and the rest still in the stream.
    Partial { head: Bytes, rest: Incoming },
}

/// Read the client's body up to [`REPLAY_LIMIT`] (and never past `limit`).
pub async fn read_request_body(mut body: Incoming, limit: u64) -> Result<ReadBody, ReadBodyError> {
    if body.is_end_stream() {
        return Ok(ReadBody::Complete(Bytes::new()));
    }
    let mut first: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(
            CLIENT_BODY_TIMEOUT,
            http_body_util::BodyExt::frame(&mut body),
        )
        .await
        {
            Err(_) => return Err(ReadBodyError::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ReadBodyError::Aborted),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            // Trailers: HTTP/1.1 upstreams get no trailers; drop them.
            continue;
        };
        total += data.len() as u64;
        if total > limit {
            return Err(ReadBodyError::TooLarge);
        }
        // Keep a single chunk as is (no copy); concatenate only when there are several.
        match first.take() {
            None if buffer.is_empty() => first = Some(data),
            None => buffer.extend_from_slice(&data),
            Some(previous) => {
                buffer.extend_from_slice(&previous);
                buffer.extend_from_slice(&data);
            }
        }
        if total as usize > REPLAY_LIMIT {
            let head = first.take().unwrap_or_else(|| buffer.split().freeze());
            return Ok(ReadBody::Partial { head, rest: body });
        }
        if body.is_end_stream() {
            break;
        }
    }
    Ok(ReadBody::Complete(first.unwrap_or_else(|| buffer.freeze())))
}

/// Why the client's body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBodyError {
    TooLarge,
    TimedOut,
    Aborted,
}

/// Called exactly once when the response to the client ends, however it ends.
pub trait Finish: Send + 'static {
    /// `bytes_out` body bytes were sent; `clean` is false when the upstream body broke
    /// or timed out midway or the client went away.
    fn finish(self: Box<Self>, bytes_out: u64, clean: bool);
}

/// The response body sent to the client.
pub struct ClientBody {
    inner: Inner,
    bytes_out: u64,
    finish: Option<Box<dyn Finish>>,
}

// One per response, created once and never moved in bulk: boxing the upstream variant
// would add an allocation to every relayed response to shrink the rare gateway-made one.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Full(Option<Bytes>),
    Upstream {
        /// Returns its connection to the pool by itself when it reads the last byte.
        body: ResponseBody,
        read_timeout: Duration,
        /// Armed at the first wait for upstream bytes, not before: most answers are
        /// complete when their head arrives, and they never pay for a timer (a heap
        /// allocation and a timer-wheel entry per request).
        timer: Option<Pin<Box<Sleep>>>,
        /// An upstream body error held back for one poll: hyper then flushes the head
        /// and the bytes already relayed before it aborts the connection, so the client
        /// sees the status and a short body (as with nginx) rather than nothing.
        deferred_error: Option<ClientBodyError>,
    },
    /// An HTTP/2 upstream's body (gRPC): data and trailers frames as they arrive.
    H2 {
        body: Incoming,
        read_timeout: Duration,
        /// Armed at the first wait, as above.
        timer: Option<Pin<Box<Sleep>>>,
    },
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody")
            .field("bytes_out", &self.bytes_out)
            .finish_non_exhaustive()
    }
}

/// A body error toward the client: the upstream body broke or stalled. hyper then
/// aborts the client connection (or resets the h2 stream), which is the only honest
/// signal once the status line has been sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("upstream response body failed: {0}")]
    Upstream(BodyError),
    #[error("upstream response body stalled longer than read_timeout")]
    ReadTimeout,
    #[error("HTTP/2 upstream response body failed: {0}")]
    H2(hyper::Error),
}

impl ClientBody {
    /// A gateway-made body.
    pub fn full(bytes: Bytes, finish: Option<Box<dyn Finish>>) -> Self {
        ClientBody {
            inner: Inner::Full(if bytes.is_empty() { None } else { Some(bytes) }),
            bytes_out: 0,
            finish,
        }
    }

    /// The upstream's body, relayed.
    pub fn upstream(
        body: ResponseBody,
        read_timeout: Duration,
        finish: Option<Box<dyn Finish>>,
    ) -> Self {
        let end = body.is_end();
        let mut this = ClientBody {
            inner: Inner::Upstream {
                body,
                read_timeout,
                timer: None,
                deferred_error: None,
            },
            bytes_out: 0,
            finish,
        };
        if end {
            this.complete(true);
        }
        this
    }

    /// An HTTP/2 upstream's body (gRPC), relayed with its trailers.
    pub fn h2(body: Incoming, read_timeout: Duration, finish: Option<Box<dyn Finish>>) -> Self {
        let end = body.is_end_stream();
        let mut this = ClientBody {
            inner: Inner::H2 {
                body,
                read_timeout,
                timer: None,
            },
            bytes_out: 0,
            finish,
        };
        if end {
            this.complete(true);
        }
        this
    }

    fn complete(&mut self, clean: bool) {
        if let Some(finish) = self.finish.take() {
            finish.finish(self.bytes_out, clean);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(bytes) => match bytes.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Ready(None),
            },
            Inner::Upstream {
                deferred_error: Some(_),
                ..
            } => match &mut this.inner {
                Inner::Upstream { deferred_error, .. } => {
                    Poll::Ready(deferred_error.take().map(Err))
                }
                Inner::Full(_) | Inner::H2 { .. } => Poll::Ready(None),
            },
            Inner::H2 {
                body,
                read_timeout,
                timer,
            } => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Kong's read_timeout runs between two successive reads.
                    if let Some(timer) = timer {
                        timer.as_mut().reset(Instant::now() + *read_timeout);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError::H2(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    let timer =
                        timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*read_timeout)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(ClientBodyError::ReadTimeout))),
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
            Inner::Upstream {
                body,
                read_timeout,
                timer,
                deferred_error,
            } => match body.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // Kong's read_timeout runs between two successive reads.
                    if let Some(timer) = timer {
                        timer.as_mut().reset(Instant::now() + *read_timeout);
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Poll::Ready(Some(Err(e))) => {
                    *deferred_error = Some(ClientBodyError::Upstream(e));
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    let timer =
                        timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*read_timeout)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(ClientBodyError::ReadTimeout))),
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.complete(true);
                }
            }
            Poll::Ready(None) => this.complete(true),
            Poll::Ready(Some(Err(_))) => this.complete(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Upstream { body, .. } => body.is_end(),
            Inner::H2 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Upstream { body, .. } => match body.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Inner::H2 { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or hyper gave up). The pooled
        // connection is not reusable mid-body, so the lease is dropped, not released.
        if self.finish.is_some() {
            let clean = matches!(self.inner, Inner::Full(None));
            self.complete(clean && self.is_end_stream());
        }
    }
}
