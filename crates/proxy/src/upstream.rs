//! The HTTP/1.1 client side of one upstream connection: write a request head (and a
//! body), read the response head, then the response body, all inside the task of the
//! request that holds the connection.
//!
//! Why not hyper's client connection: hyper runs each client connection as a separate
//! task that the request task reaches through channels, and it parses every response
//! head into a `HeaderMap`. Here the request task writes and reads the socket itself
//! (no second task, no channel, no wake-up in between), and the response head stays the
//! bytes that arrived, with the positions of its headers, so the fast lane
//! ([`crate::fastlane`]) can copy it to the client with a few headers changed.
//!
//! What the retry rules need is kept exact: a write that fails before any byte left is
//! [`ExchangeError::NotSent`] (the request may go out again on a fresh connection), and
//! every other failure says whether it happened while writing or while reading.
//!
//! A connection is reusable after an exchange only when the response said nothing
//! against it (`Connection: close`, HTTP/1.0 without keep-alive, a body delimited by the
//! close) and its body was read to the end; an idle pooled connection is checked for a
//! close from the peer before it is used again ([`UpstreamConn::is_closed`], no system
//! call while the connection is quiet).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::body::{RequestBodyError, UpstreamBody};
use crate::head;
use crate::pool::{Pool, PoolKey};
use crate::wire::{self, ChunkedDecoder, Decoded, Framing, HeaderPos, RawHeaders};

/// Most headers read in one response head. hyper's default is 100; real responses carry
/// 10-30.
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// Largest response head accepted (status line and headers). nginx's default
/// `proxy_buffer_size` is 4-8 KiB and bigger heads fail there with 502; 64 KiB accepts
/// every real head (large `Set-Cookie` sets included) and bounds a hostile upstream.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Request bodies up to this size are copied into the head's buffer and written with
/// it; larger ones go as a second segment. 4 KiB: copying it costs less than a segment.
const INLINE_BODY: usize = 4 * 1024;

/// A write buffer grown past this (a huge head) is not kept with the idle connection.
const MAX_KEPT_OUT: usize = 64 * 1024;

/// Read-buffer growth step. One read of 16 KiB takes a typical API response (head and
/// body) whole; bodies larger than that stream in pieces of this size.
const READ_CHUNK: usize = 16 * 1024;

/// A plain or TLS connection to an upstream.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One upstream connection with its read buffer.
#[derive(Debug)]
pub struct UpstreamConn {
    stream: Stream,
    buf: BytesMut,
    /// The request is assembled here and written with one contiguous buffer: the
    /// kernel's per-segment cost for eight small `iovec`s was more than copying them.
    out: Vec<u8>,
    /// The read-timeout timer of the exchanges on this connection, kept between them
    /// (see [`UpstreamConn::take_timer`]).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A response's header positions, given back after its head was written
    /// ([`ResponseBody::recycle_positions`]) for the next response to fill.
    spare_positions: Vec<HeaderPos>,
}

/// The request to write, in pieces that are shared between attempts.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `METHOD target HTTP/1.1\r\n`.
    pub line: &'a [u8],
    /// The `Host` value for this attempt.
    pub host: Option<&'a [u8]>,
    /// Every other header line, each ending in `\r\n` (no final empty line).
    pub headers: &'a [u8],
    /// A HEAD request: the response has no body whatever its headers say.
    pub head_request: bool,
    /// A streamed body goes out with chunked framing (its length is unknown).
    pub chunked: bool,
}

/// How an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Not one byte was written: the connection was already closed.
    #[error("connection closed before the request was sent")]
    NotSent,
    #[error("writing the request failed: {0}")]
    Write(io::Error),
    /// The client's streamed body failed (not the upstream's fault).
    #[error(transparent)]
    Body(RequestBodyError),
    #[error("reading the response failed: {0}")]
    Read(io::Error),
    /// The upstream closed before a complete response head.
    #[error("connection closed before a complete response head")]
    Closed,
    /// The response head is not valid HTTP/1.x or is too large.
    #[error("invalid response head")]
    Invalid,
}

/// A response head as received.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    /// The head bytes (status line, headers, final empty line) and the headers' places.
    pub headers: RawHeaders,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub reusable: bool,
}

impl ResponseHead {
    /// Every header as `(name, value)` byte slices, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> {
        self.headers.iter()
    }
}

impl UpstreamConn {
    pub fn new(stream: Stream) -> Self {
        UpstreamConn {
            stream,
            buf: BytesMut::new(),
            out: Vec::new(),
            timer: None,
            spare_positions: Vec::new(),
        }
    }

    /// The timer an exchange on this connection waits on, if an earlier exchange left
    /// one: a caller takes it for the exchange and gives it back with
    /// [`UpstreamConn::put_timer`]. Arming a fresh timer per request (insert into and
    /// remove from tokio's timer wheel) cost more than the rest of the wait; a kept
    /// timer is moved only when it would fire late, and when it fires early (at an
    /// earlier exchange's deadline) the caller looks at its own deadline and moves it.
    pub fn take_timer(&mut self) -> Option<Pin<Box<tokio::time::Sleep>>> {
        self.timer.take()
    }

    /// Give back the timer taken with [`UpstreamConn::take_timer`].
    pub fn put_timer(&mut self, timer: Pin<Box<tokio::time::Sleep>>) {
        self.timer = Some(timer);
    }

    /// Whether the peer closed this connection, just released by its exchange (or sent
    /// bytes nobody asked for, which makes it as unusable). While the socket is quiet
    /// this is a look at the reactor's readiness, not a system call. It also leaves a
    /// no-op waker in the socket's reader slot, in place of the waker of the task that
    /// read the response: an idle connection must not keep that task alive or wake it.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        // The kept read timer holds the same task's waker: swapped for the no-op one
        // too (if it fired already, it is moved at the next exchange anyway).
        if let Some(timer) = self.timer.as_mut() {
            let _ = timer.as_mut().poll(&mut cx);
        }
        if self.stream.tcp().poll_read_ready(&mut cx).is_pending() {
            return false;
        }
        self.probe_closed(&mut cx)
    }

    /// [`Self::is_closed`] for a connection that has stayed idle since an `is_closed`
    /// said it was open (so no task's waker is left to replace). Reads tokio's readiness
    /// for the socket without registering a waker: `poll_read_ready` takes the
    /// registration's waiter lock and stores the waker whenever the socket is quiet,
    /// the common case, and that was most of a check-out's cost.
    pub fn idle_is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        // `Ok` only when readiness is set; the closure does no I/O, so it clears nothing.
        if self
            .stream
            .tcp()
            .try_io(Interest::READABLE, || Ok(()))
            .is_err()
        {
            return false;
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        self.probe_closed(&mut cx)
    }

    /// The socket is readable: end of stream, an error, unasked bytes, or (TLS) a record
    /// the TLS layer consumes itself (a session ticket), after which it is quiet again.
    fn probe_closed(&mut self, cx: &mut Context<'_>) -> bool {
        let mut probe = [0u8; 1];
        let mut read = ReadBuf::new(&mut probe);
        !matches!(
            Pin::new(&mut self.stream).poll_read(cx, &mut read),
            Poll::Pending
        )
    }

    /// Hand the connection over as a raw stream (after a `101`), with the bytes already
    /// read past the response head.
    pub fn into_parts(self) -> (Stream, Bytes) {
        (self.stream, self.buf.freeze())
    }

    /// Write the request (head and body) and read the response head.
    pub async fn exchange(
        &mut self,
        request: &RequestParts<'_>,
        body: &mut UpstreamBody,
    ) -> Result<ResponseHead, ExchangeError> {
        self.write_request(request, body).await?;
        self.read_head(request.head_request).await
    }

    async fn write_request(
        &mut self,
        request: &RequestParts<'_>,
        body: &mut UpstreamBody,
    ) -> Result<(), ExchangeError> {
        let framing: &[u8] = if request.chunked {
            b"transfer-encoding: chunked\r\n"
        } else {
            b""
        };
        let host = request.host.unwrap_or_default();
        {
            let full: &[u8] = match body {
                UpstreamBody::Full(Some(bytes)) => bytes,
                _ => b"",
            };
            // Head and a small body in one buffer; a large body goes as its own segment
            // (copying it would cost more than the extra segment).
            let inline_body = full.len() <= INLINE_BODY;
            let out = &mut self.out;
            out.clear();
            out.extend_from_slice(request.line);
            if !host.is_empty() {
                out.extend_from_slice(b"host: ");
                out.extend_from_slice(host);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(request.headers);
            out.extend_from_slice(framing);
            out.extend_from_slice(b"\r\n");
            if inline_body {
                out.extend_from_slice(full);
            }
            let mut slices = [
                IoSlice::new(out),
                IoSlice::new(if inline_body { b"" } else { full }),
            ];
            wire::write_all_vectored(&mut self.stream, &mut slices)
                .await
                .map_err(|(written, e)| {
                    if written == 0 && is_closed_error(&e) {
                        ExchangeError::NotSent
                    } else {
                        ExchangeError::Write(e)
                    }
                })?;
            if self.out.capacity() > MAX_KEPT_OUT {
                self.out = Vec::new();
            }
        }
        if matches!(body, UpstreamBody::Streaming { .. }) {
            self.write_streamed_body(body, request.chunked).await?;
        }
        Ok(())
    }

    /// Copy a streamed request body from the client, as it arrives.
    async fn write_streamed_body(
        &mut self,
        body: &mut UpstreamBody,
        chunked: bool,
    ) -> Result<(), ExchangeError> {
        use tokio::io::AsyncWriteExt as _;
        let mut prefix = Vec::with_capacity(20);
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
            match frame {
                None => break,
                Some(Err(e)) => return Err(ExchangeError::Body(e)),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    prefix.clear();
                    if chunked {
                        wire::chunk_prefix(data.len(), &mut prefix);
                    }
                    let suffix: &[u8] = if chunked { b"\r\n" } else { b"" };
                    let mut slices = [
                        IoSlice::new(&prefix),
                        IoSlice::new(&data),
                        IoSlice::new(suffix),
                    ];
                    wire::write_all_vectored(&mut self.stream, &mut slices)
                        .await
                        .map_err(|(_, e)| ExchangeError::Write(e))?;
                }
            }
        }
        if chunked {
            self.stream
                .write_all(wire::LAST_CHUNK)
                .await
                .map_err(ExchangeError::Write)?;
        }
        Ok(())
    }

    /// Read until a final (non-1xx, or `101`) response head is complete.
    async fn read_head(&mut self, head_request: bool) -> Result<ResponseHead, ExchangeError> {
        loop {
            if !self.buf.is_empty() {
                match parse_response(
                    &self.buf,
                    head_request,
                    std::mem::take(&mut self.spare_positions),
                )? {
                    Parsed::Complete(head) => {
                        if (100..200).contains(&head.status) && head.status != 101 {
                            // An interim response (100 Continue, 103 Early Hints): the
                            // final one follows on the same connection.
                            let _ = self.buf.split_to(head.len);
                            continue;
                        }
                        let raw = self.buf.split_to(head.len).freeze();
                        return Ok(ResponseHead {
                            status: head.status,
                            headers: RawHeaders {
                                raw,
                                positions: head.headers,
                                connection_plain: head.connection_plain,
                                crlf_lines: head.crlf_lines,
                            },
                            framing: head.framing,
                            reusable: head.reusable,
                        });
                    }
                    Parsed::Partial => {}
                }
            }
            if self.buf.len() >= MAX_RESPONSE_HEAD {
                return Err(ExchangeError::Invalid);
            }
            self.buf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(ExchangeError::Closed),
                Ok(_) => {}
                Err(e) => return Err(ExchangeError::Read(e)),
            }
        }
    }

    /// Read more bytes into the buffer. `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

fn is_closed_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::WriteZero
    )
}

struct ParsedHead {
    status: u16,
    len: usize,
    headers: Vec<HeaderPos>,
    connection_plain: bool,
    crlf_lines: bool,
    framing: Framing,
    reusable: bool,
}

enum Parsed {
    Complete(ParsedHead),
    Partial,
}

/// Parse a response head at the start of `buf`.
/// `headers` is an emptied vector to fill (a connection's spare one: no allocation per
/// response).
fn parse_response(
    buf: &[u8],
    head_request: bool,
    mut headers: Vec<HeaderPos>,
) -> Result<Parsed, ExchangeError> {
    let line = match head::status_line(buf) {
        Ok(head::Status::Complete(line)) => line,
        Ok(head::Status::Partial) => return Ok(Parsed::Partial),
        Err(head::Invalid) => return Err(ExchangeError::Invalid),
    };
    headers.clear();
    let block = match head::header_block(buf, line.end, MAX_RESPONSE_HEADERS, &mut headers) {
        Ok(head::Status::Complete(block)) => block,
        Ok(head::Status::Partial) => return Ok(Parsed::Partial),
        Err(head::Invalid) => return Err(ExchangeError::Invalid),
    };
    let status = line.code;
    let http10 = line.minor == 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut connection_plain = true;
    for header in &headers {
        // By length first: most names are none of the three.
        let name = match header.name.len() {
            10 | 14 | 17 => buf.get(header.name.clone()).unwrap_or_default(),
            _ => continue,
        };
        let value = buf.get(header.value.clone()).unwrap_or_default();
        if wire::name_is(name, b"content-length") {
            let n = wire::parse_content_length(value).ok_or(ExchangeError::Invalid)?;
            if length.is_some_and(|previous| previous != n) {
                return Err(ExchangeError::Invalid);
            }
            length = Some(n);
        } else if wire::name_is(name, b"transfer-encoding") {
            transfer_encoding = true;
            // Chunked must be the last coding for the length to be knowable.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if wire::name_is(name, b"connection") {
            let tokens = wire::ConnectionTokens::of(value);
            close |= tokens.close;
            keep_alive |= tokens.keep_alive;
            connection_plain &= !tokens.names_other;
        }
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    // Both headers present is a smuggling signal (RFC 9112 §6.3): do not reuse.
    let reusable = !close
        && (!http10 || keep_alive)
        && framing != Framing::UntilClose
        && !(transfer_encoding && length.is_some())
        && status != 101;
    Ok(Parsed::Complete(ParsedHead {
        status,
        len: block.end,
        headers,
        connection_plain,
        crlf_lines: block.crlf_only,
        framing,
        reusable,
    }))
}

/// A connection lent to one exchange; back to the pool when the body ended cleanly.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    key: PoolKey,
    conn: Box<UpstreamConn>,
}

impl Lease {
    pub fn new(pool: Arc<Pool>, key: PoolKey, conn: Box<UpstreamConn>) -> Self {
        Lease { pool, key, conn }
    }

    /// The exchange completed at `now`: the connection can carry another request.
    fn release(self, now: Instant) {
        let Lease { pool, key, conn } = self;
        pool.checkin(key, conn, now);
    }

    /// The connection as a raw stream (see [`UpstreamConn::into_parts`]).
    pub fn into_parts(self) -> (Stream, Bytes) {
        self.conn.into_parts()
    }
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream body read failed: {0}")]
    Read(io::Error),
    #[error("upstream closed the connection before the body ended")]
    Truncated,
    #[error(transparent)]
    Chunked(#[from] wire::ChunkError),
}

enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
    /// Broke midway (read error, truncation, bad chunk): not the end of the body.
    Failed,
}

/// The response body, read from the leased connection as the consumer asks for it.
pub struct ResponseBody {
    lease: Option<Lease>,
    state: BodyState,
    reusable: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("done", &self.is_end())
            .finish_non_exhaustive()
    }
}

/// A response from the upstream: its head, and its body still on the connection.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub head: ResponseHead,
    pub body: ResponseBody,
}

impl UpstreamResponse {
    /// The response to an exchange on `lease`'s connection.
    pub fn new(head: ResponseHead, lease: Lease) -> Self {
        let body = ResponseBody::new(lease, head.framing, head.reusable, head.status == 101);
        UpstreamResponse { head, body }
    }
}

impl ResponseBody {
    /// `upgrade`: a `101`; the connection is kept for [`ResponseBody::take_lease`].
    pub fn new(lease: Lease, framing: Framing, reusable: bool, upgrade: bool) -> Self {
        let state = match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let mut body = ResponseBody {
            lease: Some(lease),
            state,
            reusable,
        };
        if body.is_end() && !upgrade {
            body.finish();
        }
        body
    }

    /// Whether the whole body has been read.
    pub fn is_end(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Bytes still expected, when the length is known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// Take the connection back out (a `101`: it becomes a tunnel).
    pub fn take_lease(&mut self) -> Option<Lease> {
        self.state = BodyState::Done;
        self.lease.take()
    }

    fn finish(&mut self) {
        self.finish_at(None);
    }

    /// The body ended; `now` when the caller has a recent clock reading (else one is
    /// taken, only if the connection goes back to the pool).
    fn finish_at(&mut self, now: Option<Instant>) {
        self.state = BodyState::Done;
        if let Some(lease) = self.lease.take()
            && self.reusable
            && lease.conn.buf.is_empty()
        {
            lease.release(now.unwrap_or_else(Instant::now));
        }
    }

    fn fail(&mut self) {
        self.state = BodyState::Failed;
        self.lease = None;
    }

    /// Give the response head's header positions back to the connection, once the head
    /// has been written, for its next response (nothing if the connection went back
    /// to the pool already).
    pub fn recycle_positions(&mut self, positions: Vec<HeaderPos>) {
        if let Some(lease) = self.lease.as_mut() {
            lease.conn.spare_positions = positions;
        }
    }

    /// A body that is already whole in the read buffer and at most `limit` bytes long
    /// is appended to `out` and consumed, and the connection goes back to the pool: the
    /// common small response is copied once, with no `Bytes` split off (and later
    /// dropped from) a buffer that then becomes shared. `None`, with nothing changed,
    /// for any other body.
    pub fn take_whole_into(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        received_at: Instant,
    ) -> Option<usize> {
        match self.state {
            BodyState::Done => Some(0),
            BodyState::Length(n) => {
                let n = usize::try_from(n).ok().filter(|&n| n <= limit)?;
                let conn = &mut self.lease.as_mut()?.conn;
                out.extend_from_slice(conn.buf.get(..n)?);
                conn.buf.advance(n);
                // It arrived with the head: the connection is idle since then.
                self.finish_at(Some(received_at));
                Some(n)
            }
            _ => None,
        }
    }

    /// Bytes already read past the head, for the first write to the client (the common
    /// case: a small response arrives whole with its head). Never reads the socket.
    pub fn take_buffered(&mut self) -> Option<Result<Bytes, BodyError>> {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let has_bytes = self.lease.as_ref().is_some_and(|l| !l.conn.buf.is_empty());
        if !has_bytes {
            return None;
        }
        match self.poll_step(&mut cx, false) {
            Poll::Ready(Some(result)) => Some(result),
            _ => None,
        }
    }

    /// The next piece of the body; `None` at its end. Reuse of the connection happens
    /// as soon as the last byte is read.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.poll_step(cx, true)
    }

    fn poll_step(
        &mut self,
        cx: &mut Context<'_>,
        may_read: bool,
    ) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let Some(lease) = self.lease.as_mut() else {
                return Poll::Ready(None);
            };
            let conn = &mut lease.conn;
            match &mut self.state {
                BodyState::Done | BodyState::Failed => return Poll::Ready(None),
                BodyState::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                BodyState::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => {
                        // Look ahead: the terminating chunk often arrived already.
                        if !conn.buf.is_empty()
                            && let Ok(Decoded::End) = decoder.decode(&mut conn.buf)
                        {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(Decoded::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => {
                        self.fail();
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                BodyState::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
            if !may_read {
                return Poll::Pending;
            }
            let Some(lease) = self.lease.as_mut() else {
                return Poll::Ready(None);
            };
            match lease.conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(self.state, BodyState::UntilClose) {
                        // The close is this body's end; the connection is spent.
                        self.state = BodyState::Done;
                        self.lease = None;
                        return Poll::Ready(None);
                    }
                    self.fail();
                    return Poll::Ready(Some(Err(BodyError::Truncated)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.fail();
                    return Poll::Ready(Some(Err(BodyError::Read(e))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real loopback exchange: the upstream writes its answer in two pieces (head and
    /// first chunk, then the rest; whether they arrive in one read or two is up to the
    /// kernel, and both must decode alike), and the connection goes back to the pool at
    /// the last byte, ready for the next request.
    #[tokio::test]
    async fn a_chunked_response_in_two_writes_is_decoded_and_the_connection_is_pooled() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for _ in 0..2 {
                let mut request = vec![0u8; 1024];
                let n = socket.read(&mut request).await.unwrap();
                assert!(request[..n].starts_with(b"GET /x HTTP/1.1\r\nhost: up\r\n"));
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello")
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                socket
                    .write_all(b"\r\n6\r\n world\r\n0\r\n\r\n")
                    .await
                    .unwrap();
            }
            // Stay open until the client is done: a close would (rightly) keep the
            // connection out of the pool.
            let _ = socket.read(&mut [0u8; 1]).await;
        });
        let pool = Pool::new();
        let endpoint = crate::pool::Endpoint::plain(addr);
        for round in 0..2 {
            let conn = pool
                .get(
                    &endpoint,
                    std::time::Duration::from_secs(1),
                    tokio::time::Instant::now(),
                )
                .await
                .unwrap();
            assert_eq!(
                conn.reused,
                round == 1,
                "the second request reuses the first's"
            );
            let mut upstream = conn.conn;
            let parts = RequestParts {
                line: b"GET /x HTTP/1.1\r\n",
                host: Some(b"up"),
                headers: b"",
                head_request: false,
                chunked: false,
            };
            let head = upstream
                .exchange(&parts, &mut UpstreamBody::Full(None))
                .await
                .unwrap();
            assert_eq!((head.status, head.framing), (200, Framing::Chunked));
            let mut response =
                UpstreamResponse::new(head, Lease::new(pool.clone(), conn.key, upstream));
            let mut body = Vec::new();
            while let Some(data) = std::future::poll_fn(|cx| response.body.poll_data(cx)).await {
                body.extend_from_slice(&data.unwrap());
            }
            assert_eq!(body, b"hello world");
            assert_eq!(
                pool.idle_count(addr),
                1,
                "round {round}: back in the pool at the last byte"
            );
        }
        drop(pool);
        server.await.unwrap();
    }

    /// A small body that arrived whole with its head is copied out in one piece and the
    /// connection is pooled at once; a body over the limit, or not all here yet, is left
    /// for the streaming path untouched.
    #[tokio::test]
    async fn a_whole_small_body_is_taken_in_one_copy_and_the_rest_is_streamed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let answers: [&[u8]; 3] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            ];
            for answer in answers {
                let mut request = vec![0u8; 1024];
                let _ = socket.read(&mut request).await.unwrap();
                socket.write_all(answer).await.unwrap();
            }
            tokio::task::yield_now().await;
            socket.write_all(b"12345").await.unwrap();
            let _ = socket.read(&mut [0u8; 1]).await;
        });
        let pool = Pool::new();
        let endpoint = crate::pool::Endpoint::plain(addr);
        let parts = RequestParts {
            line: b"GET / HTTP/1.1\r\n",
            host: Some(b"up"),
            headers: b"",
            head_request: false,
            chunked: false,
        };
        // (limit, taken whole, the body)
        let rounds: [(usize, Option<usize>, &[u8]); 3] = [
            (64, Some(5), b"hello"),
            (8, None, b"hello world"),
            (64, None, b"hello12345"),
        ];
        for (round, (limit, taken, expected)) in rounds.into_iter().enumerate() {
            let conn = pool
                .get(
                    &endpoint,
                    std::time::Duration::from_secs(1),
                    tokio::time::Instant::now(),
                )
                .await
                .unwrap();
            let mut upstream = conn.conn;
            let head = upstream
                .exchange(&parts, &mut UpstreamBody::Full(None))
                .await
                .unwrap();
            // Let the whole answer arrive before looking (it is one write).
            tokio::task::yield_now().await;
            let mut response =
                UpstreamResponse::new(head, Lease::new(pool.clone(), conn.key, upstream));
            let mut out = b"HEAD|".to_vec();
            assert_eq!(
                response
                    .body
                    .take_whole_into(&mut out, limit, Instant::now()),
                taken,
                "round {round}"
            );
            let mut body = out.split_off(5);
            if taken.is_none() {
                assert!(body.is_empty(), "round {round}: nothing taken");
                while let Some(data) = std::future::poll_fn(|cx| response.body.poll_data(cx)).await
                {
                    body.extend_from_slice(&data.unwrap());
                }
            }
            assert_eq!(body, expected, "round {round}");
            assert_eq!(
                pool.idle_count(addr),
                1,
                "round {round}: pooled at the last byte"
            );
        }
        drop(pool);
        server.await.unwrap();
    }

    fn parse(text: &str, head_request: bool) -> ParsedHead {
        match parse_response(text.as_bytes(), head_request, Vec::new()) {
            Ok(Parsed::Complete(head)) => head,
            _ => panic!("not a complete head: {text:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false);
        assert_eq!(
            (h.status, h.framing, h.reusable),
            (200, Framing::Length(5), true)
        );
        let h = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty, "HEAD has no body");
        let h = parse("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Empty);
        let h = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        let h = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::UntilClose, false));
        let h = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(!h.reusable);
        let h = parse("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false);
        assert!(!h.reusable, "HTTP/1.0 without keep-alive");
        let h = parse(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                false,
                Vec::new()
            ),
            Err(ExchangeError::Invalid)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-le", false, Vec::new()),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(
            parse_response(b"garbage\r\n\r\n", false, Vec::new()),
            Err(ExchangeError::Invalid)
        ));
    }
}
