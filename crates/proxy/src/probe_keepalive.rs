//! Keep-alive active probes: Sluice's opt-in probe mode (`sluice:probe-keepalive=on` on
//! an upstream), where one connection per address is reused from probe to probe instead
//! of Kong's connection per probe. Kong's behaviour stays the default ([`crate::probe`]).
//!
//! Why: at 10,000 probes a second, three quarters of a fresh-connection probe's CPU is
//! the kernel's connect/accept/close (BENCHMARKS.md, "Active probe cost").
//!
//! What a probe does in this mode:
//! - `http`/`https`: `GET <http_path> HTTP/1.1` with `Connection: keep-alive` on the kept
//!   connection, then the **whole** response is read (status line, headers, a body framed
//!   by `Content-Length`, chunked, or the connection's end), within bounds. The outcome is
//!   Kong's classification of the status line, as in the default mode; the connection is
//!   kept when the response allows it (HTTP/1.1 without `Connection: close`, or HTTP/1.0
//!   with `Connection: keep-alive`) and its body was framed.
//! - `tcp` (and the gRPC types, which fall back to tcp): the kept connection's liveness is
//!   checked without sending anything: if no byte, FIN or RST arrived since the last probe
//!   the probe is a success. Kernel TCP keep-alive runs on that connection so that a host
//!   that vanished without a RST still turns the connection into an error.
//!
//! Reuse rules, per probe:
//! - A kept connection older than the upstream's `probe-keepalive-max-age`, or one on
//!   which something arrived while idle (the peer closed it, or sent stray bytes), is
//!   dropped and the probe opens a fresh connection at once: not a failure.
//! - A reused connection that fails before any response byte (write error, or EOF/RST
//!   as the first thing read) was closed by the backend while idle, racing our request:
//!   the probe reconnects once, at once, and only the fresh connection's outcome counts.
//! - Any failure, timeout or unreadable answer drops the connection; the next probe
//!   starts fresh. A killed backend is therefore seen exactly as in Kong's mode: its
//!   connections end, the reconnect is refused, and that refusal is the counted outcome.
//!
//! Limits that make a misbehaving peer a failure rather than a memory or CPU sink: a
//! line longer than [`LINE_MAX`], a head longer than [`HEAD_MAX`], a body longer than
//! [`BODY_MAX`], or malformed framing is an HTTP failure (status 0, as a non-HTTP answer
//! is in Kong's mode).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_core::event::ProbeOutcome;
use sluice_core::topology::{ActiveHealthCheck, ProbeType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::probe::{self, HttpVersion};
use crate::tls;

/// The read buffer of one probe, and so the longest status or header line accepted.
/// Real health answers have lines well under 1 KiB; 4 KiB leaves room for long cookies or
/// tokens. The buffer lives in the probe's future only while the probe runs (at most the
/// upstream's `concurrency` at once), so its size does not scale with the target count.
pub const LINE_MAX: usize = 4096;

/// Longest response head (status line and headers) accepted. Health answers carry a few
/// hundred bytes of headers; 16 KiB is generous and still stops a peer streaming headers.
pub const HEAD_MAX: usize = 16 * 1024;

/// Longest response body read. It must be read whole to reuse the connection; 64 KiB is
/// far above any health answer (typically a few bytes to a few KiB of JSON) and bounds
/// the CPU one probe can be made to spend.
pub const BODY_MAX: u64 = 64 * 1024;

/// A probe connection kept between probes of one address.
#[derive(Debug)]
pub struct Kept {
    conn: Conn,
    /// When the connection was opened: it is replaced once older than the max age.
    opened: Instant,
    /// The request last sent on this connection (`http`/`https`), sent again while the
    /// check's path and headers and the Host are unchanged (only a reload changes them):
    /// rendering it per probe was a `format!` and several allocations per probe. Boxed:
    /// `tcp` connections never have one, and idle kept connections are many.
    request: Option<Box<Rendered>>,
}

/// A rendered keep-alive request and what it was rendered from.
#[derive(Debug)]
struct Rendered {
    host: Box<str>,
    path: Box<str>,
    headers: Vec<(String, Vec<String>)>,
    bytes: Box<[u8]>,
}

impl Rendered {
    fn new(check: &ActiveHealthCheck, host_header: &str) -> Rendered {
        Rendered {
            host: host_header.into(),
            path: check.http_path.as_str().into(),
            headers: check.headers.clone(),
            bytes: probe::build_request(check, host_header, HttpVersion::KeepAlive)
                .into_bytes()
                .into_boxed_slice(),
        }
    }

    /// Whether [`probe::build_request`] would render the same bytes now.
    fn matches(&self, check: &ActiveHealthCheck, host_header: &str) -> bool {
        *self.host == *host_header
            && *self.path == *check.http_path
            && self.headers == check.headers
    }
}

impl Kept {
    /// When the connection was opened.
    pub fn opened(&self) -> Instant {
        self.opened
    }
}

/// A plain or TLS probe connection (the data plane's upstream stream type).
type Conn = crate::upstream::Stream;

/// Run one keep-alive probe against `addr`, reusing `kept` when it is still usable.
/// Returns the outcome and the connection to keep for the next probe, if any. A new
/// `https` connection presents `client` (the upstream's `client_certificate`) when set.
pub async fn probe(
    addr: SocketAddr,
    check: &ActiveHealthCheck,
    host_header: &str,
    max_age: Duration,
    kept: Option<Kept>,
    client: Option<&tls::ClientIdentity>,
) -> (ProbeOutcome, Option<Kept>) {
    let timeout = probe::effective_timeout(check);
    let reusable = kept.filter(|k| k.opened.elapsed() < max_age && idle_and_open(k.conn.tcp()));
    if let Some(kept) = reusable {
        match exchange(kept, check, host_header, Instant::now() + timeout).await {
            Attempt::Done(outcome, kept) => return (outcome, kept),
            // Closed by the backend while idle: reconnect at once; not a failure.
            Attempt::Stale => {}
        }
    }
    let deadline = Instant::now() + timeout;
    let conn = match open(addr, check, host_header, deadline, client).await {
        Ok(conn) => conn,
        Err(outcome) => return (outcome, None),
    };
    let fresh = Kept {
        conn,
        opened: Instant::now(),
        request: None,
    };
    match exchange(fresh, check, host_header, deadline).await {
        Attempt::Done(outcome, kept) => (outcome, kept),
        // On a fresh connection, a close before any answer is a failed receive (Kong).
        Attempt::Stale => (ProbeOutcome::TcpFailure, None),
    }
}

/// What a keep-alive probe needs before it can be answered.
#[derive(Debug)]
pub enum Ready {
    /// Answered now: a `tcp`-type probe whose kept connection is younger than the max age
    /// and on which nothing arrived. [`probe`] would return `TcpSuccess` and this
    /// connection without awaiting anything.
    Success(Kept),
    /// Run [`probe`] with this connection (`None`: none kept, or the kept one was found
    /// unusable and dropped, as [`probe`] drops it).
    Run(Option<Kept>),
}

/// Answer a probe without a future when [`probe`] would not wait (`now`: the caller's
/// current time, read once for a batch of probes). In steady state every `tcp`-type
/// keep-alive probe is answered here: no boxed future, no task poll, no clock read per
/// probe, which at 10,000 probes a second was a large share of what these probes cost.
pub fn try_now(
    check: &ActiveHealthCheck,
    max_age: Duration,
    kept: Option<Kept>,
    now: Instant,
) -> Ready {
    match kept {
        None => Ready::Run(None),
        Some(kept) => match answers_now(check, max_age, &kept, now) {
            None => Ready::Run(Some(kept)),
            Some(true) => Ready::Success(kept),
            // Dropped here, so `probe` never sees it (the check may have consumed a
            // stray byte: it cannot be repeated).
            Some(false) => Ready::Run(None),
        },
    }
}

/// [`try_now`] on a connection left where it is kept: `None` when the probe type needs an
/// exchange (run [`probe`]); `Some(true)` when the probe is a success now and the
/// connection stays kept; `Some(false)` when the connection is unusable: drop it and run
/// [`probe`] without it. The same test as [`probe`]'s for a reused connection.
pub fn answers_now(
    check: &ActiveHealthCheck,
    max_age: Duration,
    kept: &Kept,
    now: Instant,
) -> Option<bool> {
    if !matches!(
        check.probe_type,
        ProbeType::Tcp | ProbeType::Grpc | ProbeType::Grpcs
    ) {
        return None;
    }
    Some(now.saturating_duration_since(kept.opened) < max_age && idle_and_open(kept.conn.tcp()))
}

/// Whether an idle connection still looks open: nothing (no byte, FIN or RST) arrived
/// since its last exchange. Anything that did arrive makes it unusable: a close, or
/// stray bytes (e.g. a `408` some servers send before closing an idle connection) that
/// would be misread as the next answer. Costs no system call while the reactor has seen
/// no event on the socket.
fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Connect (and for `https`, handshake) before `deadline`, classified as in Kong's mode.
async fn open(
    addr: SocketAddr,
    check: &ActiveHealthCheck,
    host_header: &str,
    deadline: Instant,
    client: Option<&tls::ClientIdentity>,
) -> Result<Conn, ProbeOutcome> {
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(ProbeOutcome::Timeout),
        Ok(Err(_)) => return Err(ProbeOutcome::TcpFailure),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    match check.probe_type {
        ProbeType::Tcp | ProbeType::Grpc | ProbeType::Grpcs => {
            set_tcp_keepalive(&stream, check);
            Ok(Conn::Plain(stream))
        }
        ProbeType::Http => Ok(Conn::Plain(stream)),
        ProbeType::Https => Box::pin(probe::tls_handshake(
            stream,
            deadline,
            check,
            host_header,
            client,
        ))
        .await
        .map(|tls| Conn::Tls(Box::new(tls)))
        .ok_or(ProbeOutcome::TcpFailure),
    }
}

/// Kernel TCP keep-alive on a kept `tcp`-mode connection. Without a request, a host that
/// vanished without sending a RST (power loss, partition) leaves the connection looking
/// open forever; keep-alive probes turn that into a socket error after about
/// `interval × (1 + retries)`, the next probe then reconnects and its timeout counts.
/// The kernel's probes start after one probe interval of silence and repeat every
/// interval; the retry count is the upstream's `unhealthy.timeouts` (at least 1), so the
/// extra delay matches the threshold the user chose for timeouts.
fn set_tcp_keepalive(stream: &TcpStream, check: &ActiveHealthCheck) {
    let interval = check
        .healthy_interval
        .max(check.unhealthy_interval)
        .max(Duration::from_secs(1));
    let retries = u32::from(check.unhealthy_timeouts.max(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(interval)
        .with_interval(interval)
        .with_retries(retries);
    // Best effort: without it the connection is still replaced after the max age.
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// The result of one exchange on a connection.
enum Attempt {
    /// A counted outcome, and the connection if it can be reused.
    Done(ProbeOutcome, Option<Kept>),
    /// The connection failed before any response byte: it was already closed.
    Stale,
}

async fn exchange(
    mut kept: Kept,
    check: &ActiveHealthCheck,
    host_header: &str,
    deadline: Instant,
) -> Attempt {
    if matches!(
        check.probe_type,
        ProbeType::Tcp | ProbeType::Grpc | ProbeType::Grpcs
    ) {
        // Connected (fresh) or still open (reused, checked by the caller).
        return Attempt::Done(ProbeOutcome::TcpSuccess, Some(kept));
    }
    let request = match kept.request.take() {
        Some(rendered) if rendered.matches(check, host_header) => rendered,
        _ => Box::new(Rendered::new(check, host_header)),
    };
    let sent = timeout_at(deadline, async {
        kept.conn.write_all(&request.bytes).await?;
        kept.conn.flush().await
    })
    .await;
    match sent {
        Err(_) => return Attempt::Done(ProbeOutcome::Timeout, None),
        Ok(Err(_)) => return Attempt::Stale,
        Ok(Ok(())) => {}
    }
    let mut reader = Reader::new(&mut kept.conn);
    match timeout_at(deadline, read_response(&mut reader)).await {
        Err(_) => Attempt::Done(ProbeOutcome::Timeout, None),
        Ok(Response::Closed) => Attempt::Stale,
        Ok(Response::Failed(outcome)) => Attempt::Done(outcome, None),
        Ok(Response::Complete { status, reusable }) => {
            let keep = reusable && reader.is_drained();
            kept.request = Some(request);
            Attempt::Done(ProbeOutcome::Status(status), keep.then_some(kept))
        }
    }
}

/// How reading one response ended.
#[derive(Debug, PartialEq)]
enum Response {
    /// EOF or an error before any byte.
    Closed,
    /// A counted failure: a close or error mid-answer (`TcpFailure`), or an answer that
    /// is not HTTP, too large or badly framed (`Status(0)`).
    Failed(ProbeOutcome),
    /// A whole response; `reusable` when its framing and headers allow another request.
    Complete { status: u16, reusable: bool },
}

/// Why a read stopped.
#[derive(Debug, PartialEq)]
enum ReadError {
    /// The peer closed the connection (EOF) or it failed (reset, other error).
    Closed,
    /// A line longer than [`LINE_MAX`].
    TooLong,
}

/// A bounded line reader over a probe connection: one fixed buffer, no allocation.
struct Reader<'s, S> {
    stream: &'s mut S,
    buf: [u8; LINE_MAX],
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Bytes received so far in this response.
    received: usize,
}

impl<'s, S: AsyncRead + Unpin> Reader<'s, S> {
    fn new(stream: &'s mut S) -> Self {
        Reader {
            stream,
            buf: [0; LINE_MAX],
            start: 0,
            end: 0,
            received: 0,
        }
    }

    /// Whether every received byte was consumed: anything left over would be misread as
    /// the next answer, so such a connection is not reused.
    fn is_drained(&self) -> bool {
        self.start == self.end
    }

    /// Read more bytes after the unconsumed ones (moved to the front first).
    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let Some(spare) = self.buf.get_mut(self.end..).filter(|s| !s.is_empty()) else {
            return Err(ReadError::TooLong);
        };
        match self.stream.read(spare).await {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(n) => {
                self.end += n;
                self.received += n;
                Ok(())
            }
        }
    }

    /// The next line without its `\n` (and `\r`), consumed; its bytes stay valid until
    /// the next call.
    async fn line(&mut self) -> Result<&[u8], ReadError> {
        let newline = loop {
            let pending = self.buf.get(self.start..self.end).unwrap_or(&[]);
            if let Some(at) = pending.iter().position(|&b| b == b'\n') {
                break self.start + at;
            }
            self.fill().await?;
        };
        let begin = self.start;
        self.start = newline + 1;
        let line = self.buf.get(begin..newline).unwrap_or(&[]);
        Ok(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// Consume exactly `n` bytes.
    async fn discard(&mut self, mut n: u64) -> Result<(), ReadError> {
        loop {
            let available = (self.end - self.start) as u64;
            let take = available.min(n);
            // `take` ≤ the unconsumed length, which is a `usize`.
            self.start += usize::try_from(take).unwrap_or(0);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Consume everything until the peer closes, failing past `limit` bytes.
    async fn discard_to_end(&mut self, limit: u64) -> Result<bool, ReadError> {
        let mut total = 0u64;
        loop {
            total += (self.end - self.start) as u64;
            self.start = self.end;
            if total > limit {
                return Ok(false);
            }
            match self.fill().await {
                Ok(()) => {}
                Err(ReadError::Closed) => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The framing and reuse facts of a response head.
#[derive(Debug, Default, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

/// Read one whole response: the status line, the headers and the body.
async fn read_response<S: AsyncRead + Unpin>(reader: &mut Reader<'_, S>) -> Response {
    const HTTP_FAILURE: Response = Response::Failed(ProbeOutcome::Status(0));
    let head = match read_head(reader).await {
        Ok(head) => head,
        Err(ReadError::Closed) if reader.received == 0 => return Response::Closed,
        Err(ReadError::Closed) => return Response::Failed(ProbeOutcome::TcpFailure),
        Err(ReadError::TooLong) => return HTTP_FAILURE,
    };
    let Some(head) = head else {
        return HTTP_FAILURE;
    };
    // 1xx, 204 and 304 answers have no body (RFC 9112 §6.3).
    let bodiless = head.status < 200 || head.status == 204 || head.status == 304;
    let body = if bodiless {
        Ok(true)
    } else if head.chunked {
        read_chunked(reader).await
    } else if let Some(length) = head.content_length {
        if length > BODY_MAX {
            return HTTP_FAILURE;
        }
        reader.discard(length).await.map(|()| true)
    } else {
        // Delimited by the connection's end: read it, never reuse the connection.
        return match reader.discard_to_end(BODY_MAX).await {
            Ok(true) => Response::Complete {
                status: head.status,
                reusable: false,
            },
            Ok(false) | Err(ReadError::TooLong) => HTTP_FAILURE,
            Err(ReadError::Closed) => Response::Failed(ProbeOutcome::TcpFailure),
        };
    };
    match body {
        Ok(true) => Response::Complete {
            status: head.status,
            reusable: head.keep_alive,
        },
        Ok(false) | Err(ReadError::TooLong) => HTTP_FAILURE,
        Err(ReadError::Closed) => Response::Failed(ProbeOutcome::TcpFailure),
    }
}

/// The status line and headers. `Ok(None)` when the answer is not HTTP or its head is
/// malformed or too long.
async fn read_head<S: AsyncRead + Unpin>(
    reader: &mut Reader<'_, S>,
) -> Result<Option<Head>, ReadError> {
    let line = reader.line().await?;
    let ProbeOutcome::Status(status) = probe::parse_status_line(line) else {
        return Ok(None);
    };
    if status == 0 {
        return Ok(None);
    }
    // HTTP/1.1 and later keep the connection by default, HTTP/1.0 closes it.
    let mut keep_alive = !line
        .get(5..8)
        .is_some_and(|version| version == b"1.0" || version.starts_with(b"0."));
    let mut head = Head {
        status,
        ..Head::default()
    };
    let mut head_bytes = line.len();
    loop {
        let line = reader.line().await?;
        head_bytes += line.len() + 2;
        if head_bytes > HEAD_MAX {
            return Ok(None);
        }
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Ok(None);
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or(&[]).trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, head.content_length) {
                (None, _) => return Ok(None),
                // Differing repeated lengths are a framing attack (RFC 9112 §6.3).
                (Some(n), Some(seen)) if n != seen => return Ok(None),
                (Some(n), _) => head.content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.chunked = has_token(value, b"chunked");
            if !head.chunked {
                // Another coding (e.g. gzip alone) has no framing we can follow.
                return Ok(None);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(value, b"close") {
                keep_alive = false;
            } else if has_token(value, b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    head.keep_alive = keep_alive;
    Ok(Some(head))
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// A chunked body and its trailers. `Ok(false)` when it is malformed or too long.
async fn read_chunked<S: AsyncRead + Unpin>(reader: &mut Reader<'_, S>) -> Result<bool, ReadError> {
    let mut total = 0u64;
    loop {
        let line = reader.line().await?;
        let digits = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or(&[])
            .trim_ascii();
        let size = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty())
            .and_then(|d| u64::from_str_radix(d, 16).ok());
        let Some(size) = size else {
            return Ok(false);
        };
        if size == 0 {
            break;
        }
        total = total.saturating_add(size);
        if total > BODY_MAX {
            return Ok(false);
        }
        reader.discard(size).await?;
        if !reader.line().await?.is_empty() {
            return Ok(false);
        }
    }
    // Trailers, up to the empty line; bounded like a head.
    let mut trailer_bytes = 0usize;
    loop {
        let line = reader.line().await?;
        if line.is_empty() {
            return Ok(true);
        }
        trailer_bytes += line.len() + 2;
        if trailer_bytes > HEAD_MAX {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Response, bool) {
        let mut stream = bytes;
        let mut reader = Reader::new(&mut stream);
        let response = read_response(&mut reader).await;
        (response, reader.is_drained())
    }

    fn complete(status: u16, reusable: bool) -> Response {
        Response::Complete { status, reusable }
    }

    #[tokio::test]
    async fn framed_bodies_are_read_whole() {
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await,
            (complete(200, true), true)
        );
        assert_eq!(
            read(b"HTTP/1.1 503 x\r\ntransfer-encoding: chunked\r\n\r\n2;x=y\r\nok\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n").await,
            (complete(503, true), true)
        );
        assert_eq!(
            read(b"HTTP/1.1 204 No Content\r\n\r\n").await,
            (complete(204, true), true)
        );
    }

    #[tokio::test]
    async fn connection_headers_and_versions_decide_reuse() {
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await,
            (complete(200, false), true)
        );
        assert_eq!(
            read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").await,
            (complete(200, false), true)
        );
        assert_eq!(
            read(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").await,
            (complete(200, true), true)
        );
        // No framing: the body ends with the connection, which is then not reusable.
        assert_eq!(
            read(b"HTTP/1.0 200 OK\r\n\r\nbody until close").await,
            (complete(200, false), true)
        );
    }

    #[tokio::test]
    async fn garbage_and_oversized_answers_are_http_failures() {
        let failure = Response::Failed(ProbeOutcome::Status(0));
        assert_eq!(read(b"SSH-2.0-OpenSSH\r\n").await.0, failure);
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").await.0,
            failure
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
                .await
                .0,
            failure
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .await
                .0,
            failure
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .await
                .0,
            failure
        );
        let huge_length = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            BODY_MAX + 1
        );
        assert_eq!(read(huge_length.as_bytes()).await.0, failure);
        let long_line = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'x'; LINE_MAX]].concat();
        assert_eq!(read(&long_line).await.0, failure);
        let many_headers = [
            b"HTTP/1.1 200 OK\r\n".as_slice(),
            &b"X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(HEAD_MAX / 40),
        ]
        .concat();
        assert_eq!(read(&many_headers).await.0, failure);
        let big_chunk = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            BODY_MAX + 1
        );
        assert_eq!(read(big_chunk.as_bytes()).await.0, failure);
    }

    #[tokio::test]
    async fn closes_are_told_apart_by_whether_anything_arrived() {
        assert_eq!(read(b"").await.0, Response::Closed);
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok")
                .await
                .0,
            Response::Failed(ProbeOutcome::TcpFailure)
        );
        assert_eq!(
            read(b"HTTP/1.1 200").await.0,
            Response::Failed(ProbeOutcome::TcpFailure)
        );
    }

    #[tokio::test]
    async fn bytes_after_the_answer_prevent_reuse() {
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 408").await,
            (complete(200, true), false)
        );
    }
}
