//! The client-facing HTTP/1.1 fast lane: the common request (HTTP/1.1, origin-form
//! target, no body or a small one with `Content-Length`, no upgrade, no `Expect`) is read,
//! routed, forwarded and answered on the raw bytes, inside the connection's own task.
//!
//! Everything else goes to hyper: the first request the fast lane does not take (an
//! h2c preface, a chunked or large body, `Expect: 100-continue`, a WebSocket upgrade,
//! HTTP/1.0, an absolute-form target, a head that does not parse or is too large) hands
//! the whole connection over, with the bytes already read replayed first, and hyper
//! serves it from there ([`crate::proxy::handle`]). So every protocol corner keeps
//! hyper's handling (its 400s and 431s included) and the fast lane only has to be right
//! about the simple case, which is nearly all API traffic.
//!
//! Decisions are shared with the hyper lane, not copied: the router, real-IP, hashing,
//! [`crate::forward::forward`] (balancing, retries, timeouts), error bodies and the
//! request record are the same functions. What differs is the representation: the
//! request's headers stay the bytes that arrived ([`RawHeaders`]), the upstream request is
//! written from them ([`headers::write_upstream_headers`]) and the response head is
//! copied from the upstream's with the hop-by-hop headers dropped and the gateway's
//! added. A differential test checks both lanes send the same upstream headers.
//!
//! Why: per request, hyper's server and client build an `http::Request`, a `Response`
//! and two `HeaderMap`s, and the client half runs as a second task reached through
//! channels. On one core that was about half of the gateway's user-space time
//! (BENCHMARKS.md, "Throughput").

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::REPLAY_LIMIT;
use crate::error::{ErrorKind, error_body};
use crate::forward::{Outgoing, OutgoingBody};
use crate::head;
use crate::headers::{self, ClientFacts, HeaderView};
use crate::ids;
use crate::proxy::{self, Completion, ConnInfo, Shared};
use crate::record::ResponseSource;
use crate::router::{RequestFacts, upstream_path_parts};
use crate::runtime::ServiceTarget;
use crate::server::{HEADER_READ_TIMEOUT, MAX_HEAD_BYTES};
use crate::upstream::{BodyError, ResponseBody};
use crate::wire::{self, Framing, RawHeaders};

/// Requests one connection serves back to back before it lets the others run. The fast
/// lane runs outside tokio's cooperative budget (see `server`): a proxied request waits
/// for its upstream and so yields anyway, but a client pipelining requests the gateway
/// answers itself (404s, redirects) would otherwise hold the thread. Every 16 keeps the
/// yield's cost (one reschedule) negligible per request and another connection's wait
/// to 16 small answers.
const REQUESTS_PER_YIELD: u32 = 16;

/// Body pieces relayed back to back before the relay lets other connections run (the
/// same reason as [`REQUESTS_PER_YIELD`]: a fast upstream and a fast client could keep
/// both sockets ready for the whole of a large body).
const CHUNKS_PER_YIELD: u32 = 16;

/// Most headers a fast-lane request may carry; more go to hyper (which takes 100).
/// Real requests carry 5-20; 64 keeps the parser's table on the stack small.
const MAX_FAST_HEADERS: usize = 64;

/// Read-buffer growth step for client connections: one read takes a typical request
/// head (and a small body) whole.
const READ_CHUNK: usize = 8 * 1024;

/// A response body that arrived whole with its head and is at most this long is copied
/// behind the client's head and written with it (one segment: the kernel's per-segment
/// cost is more than the copy).
const INLINE_RESPONSE_BODY: usize = 4 * 1024;

/// A client connection the fast lane can serve: plain TCP, or TLS after the handshake
/// (whose HTTP/1.1 is the same bytes once decrypted).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for S {}

/// What the connection loop does after a request.
enum After {
    /// Read the next request. With when the last one finished: the clock reading
    /// the record took, which starts the wait for the next head (one clock read fewer
    /// per request than reading it again).
    KeepAlive(Instant),
    /// Close the connection (the client asked, shutdown, or the response broke).
    Close,
}

/// A parsed request head the fast lane takes.
struct Head {
    len: usize,
    method: Method,
    /// Where the request target (path and query) is in the head.
    target: std::ops::Range<usize>,
    content_length: u64,
    /// The request carried a `Content-Length` header.
    has_length: bool,
    /// The first `Host` header's value, found while the head was parsed (not looked up
    /// again by name: a scan of every header, twice per request).
    host: Option<std::ops::Range<usize>>,
    close: bool,
}

/// Why the fast lane does not take a request.
enum Parse {
    Fast(Head),
    /// Incomplete: read more.
    Partial,
    /// Hyper's job.
    HandOff,
}

/// Parse a request head at the start of `buf`; on `Fast`, `positions` holds its
/// headers' places.
fn parse(buf: &BytesMut, max_body: u64, headers: &mut RawHeaders) -> Parse {
    // `Invalid` from the request line means "not for this lane" (HTTP/1.0, an
    // absolute or asterisk target, a fragment, bytes outside visible ASCII): hyper
    // gets the connection and judges the request by httparse's rules.
    let line = match head::request_line(buf) {
        Ok(head::Status::Complete(line)) => line,
        Ok(head::Status::Partial) => return Parse::Partial,
        Err(head::Invalid) => return Parse::HandOff,
    };
    headers.positions.clear();
    let block = match head::header_block(buf, line.end, MAX_FAST_HEADERS, &mut headers.positions) {
        Ok(head::Status::Complete(block)) => block,
        Ok(head::Status::Partial) => return Parse::Partial,
        Err(head::Invalid) => return Parse::HandOff,
    };
    let Ok(method) = Method::from_bytes(buf.get(line.method).unwrap_or_default()) else {
        return Parse::HandOff;
    };
    let target = line.target;
    let mut content_length: Option<u64> = None;
    let mut host = None;
    let mut close = false;
    let mut connection_plain = true;
    for header in &headers.positions {
        // By length first: most names are none of these.
        let name = match header.name.len() {
            4 | 6 | 7 | 10 | 14 | 17 => buf.get(header.name.clone()).unwrap_or_default(),
            _ => continue,
        };
        let value = buf.get(header.value.clone()).unwrap_or_default();
        if wire::name_is(name, b"host") {
            host.get_or_insert(header.value.clone());
        } else if wire::name_is(name, b"content-length") {
            match wire::parse_content_length(value) {
                Some(n) if content_length.is_none_or(|previous| previous == n) => {
                    content_length = Some(n);
                }
                _ => return Parse::HandOff,
            }
        } else if wire::name_is(name, b"transfer-encoding")
            || wire::name_is(name, b"expect")
            || wire::name_is(name, b"upgrade")
        {
            return Parse::HandOff;
        } else if wire::name_is(name, b"connection") {
            let tokens = wire::ConnectionTokens::of(value);
            if tokens.upgrade {
                return Parse::HandOff;
            }
            close |= tokens.close;
            connection_plain &= !tokens.names_other;
        }
    }
    let has_length = content_length.is_some();
    let content_length = content_length.unwrap_or(0);
    if content_length > REPLAY_LIMIT as u64 || content_length > max_body {
        return Parse::HandOff;
    }
    headers.connection_plain = connection_plain;
    headers.crlf_lines = block.crlf_only;
    Parse::Fast(Head {
        len: block.end,
        method,
        target,
        content_length,
        has_length,
        host,
        close,
    })
}

/// Serve one client connection: fast lane while requests are simple, hyper after.
pub async fn serve<S: ClientStream>(
    mut stream: S,
    shared: Arc<Shared>,
    info: ConnInfo,
    drain: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // The upstream request head of the current request (lent to it, see `handle`).
    let mut upstream_head: Vec<u8> = Vec::new();
    // Header positions of the current request, reused from one request to the next.
    let mut request_headers = RawHeaders::default();
    // One wait for the drain signal for the connection's life (not one per request: a
    // fresh wait registers and deregisters a waiter every time).
    let draining = drain.clone();
    let drained = async move {
        let mut drain = drain;
        // A `Ref` must not live across an await: only whether the wait ended is kept.
        let _ = drain.wait_for(|draining| *draining).await.is_ok();
    };
    tokio::pin!(drained);
    // Whether the drain wait has been polled once (and so holds this task's waker, which
    // stays the same for the task's life). After that it is polled again only when the
    // signal's version moved: polling a waiting `Notified` takes the waiter list's lock
    // every time, once per request on a busy connection.
    let mut drain_armed = false;
    let mut drain_wait = std::future::poll_fn(|cx| {
        if drain_armed && !drain_started(&draining) {
            return std::task::Poll::Pending;
        }
        drain_armed = true;
        drained.as_mut().poll(cx)
    });
    // The header timeout: one timer for the connection's life, moved only when it fires
    // early (a timer armed and cancelled per request costs more than the rest of the
    // wait). When it fires, the deadline of the current wait decides.
    let header_timer = tokio::time::sleep(HEADER_READ_TIMEOUT);
    tokio::pin!(header_timer);
    let mut served: u32 = 0;
    // When the previous request on this connection finished (its record's clock
    // reading), where the wait for the next head starts.
    let mut last_finished: Option<Instant> = None;
    loop {
        served = served.wrapping_add(1);
        if served.is_multiple_of(REQUESTS_PER_YIELD) {
            tokio::task::yield_now().await;
        }
        // One request head, within the header timeout (which also bounds how long an
        // idle keep-alive connection is kept, as hyper's does).
        let deadline = last_finished.take().unwrap_or_else(Instant::now) + HEADER_READ_TIMEOUT;
        let head = loop {
            if !buf.is_empty() {
                match parse(&buf, shared.limits.max_request_body, &mut request_headers) {
                    Parse::Fast(head) => break head,
                    Parse::Partial if buf.len() < MAX_HEAD_BYTES => {}
                    Parse::Partial | Parse::HandOff => {
                        // A task of its own: hyper's connection state (kilobytes) is
                        // not carried by every fast-lane connection's future, and
                        // hyper runs inside tokio's cooperative budget, which the
                        // fast lane's task is outside of (see `server`).
                        let hyper =
                            proxy::serve_hyper(stream, buf.freeze(), shared, info, draining);
                        let _ = tokio::spawn(hyper).await;
                        return;
                    }
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                buf.reserve(READ_CHUNK);
            }
            let idle = buf.is_empty();
            let read = tokio::select! {
                biased;
                () = &mut drain_wait, if idle => return,
                () = &mut header_timer => {
                    if Instant::now() >= deadline {
                        // Too slow (or idle too long): nothing to answer.
                        return;
                    }
                    header_timer.as_mut().reset(deadline);
                    continue;
                }
                read = stream.read_buf(&mut buf) => read,
            };
            match read {
                Ok(n) if n > 0 => {}
                // Closed or reset: nothing to answer.
                _ => return,
            }
        };
        // The body (at most `REPLAY_LIMIT`), within the client body timeout.
        let total = head.len + head.content_length as usize;
        while buf.len() < total {
            buf.reserve(total - buf.len());
            match tokio::time::timeout(crate::body::CLIENT_BODY_TIMEOUT, stream.read_buf(&mut buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        request_headers.raw = buf.split_to(head.len).freeze();
        let body = buf.split_to(head.content_length as usize).freeze();
        let closing = head.close || drain_started(&draining);
        let after = handle(
            &shared,
            &info,
            head,
            &request_headers,
            body,
            &mut stream,
            &mut out,
            &mut upstream_head,
            closing,
        )
        .await;
        match after {
            After::KeepAlive(finished_at) => last_finished = Some(finished_at),
            After::Close => return,
        }
        if drain_started(&draining) {
            return;
        }
    }
}

/// A request target's path and query (`None` without a `?`, `Some("")` after a bare
/// one), as `http::uri::PathAndQuery` has them.
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Whether the server asked its connections to finish: the drain signal only ever goes
/// from `false` to `true` (or its sender goes away at the very end), so a changed
/// version says so without the read lock `borrow` takes.
fn drain_started(draining: &watch::Receiver<bool>) -> bool {
    draining.has_changed().unwrap_or(true)
}

/// Handle one fast-lane request and write its response.
#[allow(clippy::too_many_arguments)]
async fn handle<S: ClientStream>(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    head: Head,
    request_headers: &RawHeaders,
    body: Bytes,
    stream: &mut S,
    out: &mut Vec<u8>,
    upstream_head: &mut Vec<u8>,
    closing: bool,
) -> After {
    let started = Instant::now();
    shared.stats.total_requests.fetch_add(1, Ordering::Relaxed);
    let runtime = shared.runtime.load_full();
    let id = ids::new_request_id();
    let request_id = ids::request_id_bytes(id);
    let request_id = &request_id[..];
    let mut record = proxy::new_record(id, &head.method);
    let view = HeaderView::Raw(request_headers);
    let client_ip = if conn.headers.trusted {
        shared.trusted_proxies.client_of(conn.remote.ip(), view)
    } else {
        conn.remote.ip()
    };
    let host_header = head
        .host
        .clone()
        .and_then(|range| request_headers.raw.get(range));
    let host_value = host_header.and_then(wire::header_str).unwrap_or("");
    // ASCII, checked by the parser.
    let target_text = request_headers
        .raw
        .get(head.target.clone())
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("/");
    let (path, query) = split_target(target_text);
    let gateway = |kind: ErrorKind, record| GatewayAnswer {
        kind,
        record,
        location: None,
    };
    let Some(matched) = runtime.router.find_on(
        RequestFacts {
            method: &head.method,
            host: host_value,
            path,
            headers: view,
        },
        conn.listener(),
    ) else {
        let answer = gateway(ErrorKind::NoRouteMatched, record);
        return write_gateway(shared, stream, out, answer, request_id, started, closing).await;
    };
    let info = matched.info.clone();
    proxy::record_route(&mut record, &info);
    // Only plain-HTTP requests are redirected: on the TLS listener the request already is
    // what an https-only route asks for.
    if conn.tls.is_none()
        && let Some(code) = info.https_redirect
    {
        let status = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::UPGRADE_REQUIRED);
        let answer = if status.is_redirection() {
            let host = headers::host_without_port(host_value);
            GatewayAnswer {
                kind: ErrorKind::HttpsRequired,
                record,
                location: Some((code, format!("https://{host}{target_text}"))),
            }
        } else {
            gateway(ErrorKind::HttpsRequired, record)
        };
        return write_gateway(shared, stream, out, answer, request_id, started, closing).await;
    }
    // Kong's runloop check for routes that take gRPC: every fast-lane request is
    // HTTP/1.1, so a gRPC one is told to use HTTP/2 and any other is not gRPC.
    // (A gRPC *service* behind another route is refused by `forward`, also with 426.)
    if info.grpc.is_some() {
        let grpc_content = view
            .get("content-type")
            .is_some_and(|v| v.starts_with(b"application/grpc"));
        let kind = if grpc_content {
            ErrorKind::Http2Required
        } else {
            ErrorKind::NonGrpcRequest
        };
        let answer = gateway(kind, record);
        return write_gateway(shared, stream, out, answer, request_id, started, closing).await;
    }
    let Some(service) = info
        .service
        .as_ref()
        .and_then(|s| runtime.services.get(s.index as usize))
    else {
        let answer = gateway(ErrorKind::NoService, record);
        return write_gateway(shared, stream, out, answer, request_id, started, closing).await;
    };
    let upstream_rt = match &service.target {
        ServiceTarget::Upstream(up) => {
            record.upstream = Some(up.slot.name.clone());
            Some(up.clone())
        }
        _ => None,
    };
    // Written into the upstream head piece by piece below (no `String` per request).
    let target = upstream_path_parts(
        path,
        matched.matched_len,
        info.strip_path,
        info.path_handling,
        service.path.as_deref(),
    );
    // The same check the hyper lane makes: a configured path must keep the target valid
    // (without one, the target is part of the request's own, already checked, path).
    if service.path.is_some()
        && http::uri::PathAndQuery::try_from(target.concat().as_str()).is_err()
    {
        let answer = gateway(ErrorKind::BadRequest, record);
        return write_gateway(shared, stream, out, answer, request_id, started, closing).await;
    }
    let sticky = upstream_rt
        .as_deref()
        .and_then(|up| proxy::new_sticky_cookie(up, view));
    let hash = match &sticky {
        Some((key, _)) => Some(*key),
        None => upstream_rt
            .as_deref()
            .and_then(|up| proxy::hash_key(up, client_ip, view, path, query, &matched)),
    };
    let hedge_after = info.hedge_after;
    let retry_on_status = info.retry_on_status.clone();
    let preserve_host = info.preserve_host;
    drop(matched);

    record.bytes_in = body.len() as u64;
    // One buffer for the request line and the header lines.
    // The connection's buffer, lent for this request and given back after it (no
    // allocation per request).
    let mut wire_head = std::mem::take(upstream_head);
    wire_head.clear();
    wire_head.reserve(
        head.method.as_str().len()
            + target.iter().map(|piece| piece.len()).sum::<usize>()
            + request_headers.raw.len()
            + 320,
    );
    wire_head.extend_from_slice(head.method.as_str().as_bytes());
    wire_head.push(b' ');
    for piece in target {
        wire_head.extend_from_slice(piece.as_bytes());
    }
    if let Some(query) = query {
        wire_head.push(b'?');
        wire_head.extend_from_slice(query.as_bytes());
    }
    wire_head.extend_from_slice(b" HTTP/1.1\r\n");
    let line_len = wire_head.len();
    let preserved_host = if preserve_host {
        host_header.and_then(|h| http::HeaderValue::from_bytes(h).ok())
    } else {
        None
    };
    let real_client = (client_ip != conn.remote.ip()).then(|| headers::ip_header(client_ip));
    headers::write_upstream_headers(
        &mut wire_head,
        request_headers,
        &ClientFacts {
            connection: &conn.headers,
            real_client: real_client.as_ref(),
            host: headers::host_without_port(host_value),
            host_header: None,
            path,
            request_id,
        },
    );
    let has_length = head.has_length;
    if !has_length && matches!(head.method, Method::POST | Method::PUT | Method::PATCH) {
        wire_head.extend_from_slice(b"content-length: 0\r\n");
    }
    let outgoing = Outgoing {
        method: head.method,
        head: wire_head,
        line_len,
        chunked: false,
        preserved_host,
        body: OutgoingBody::Replayable(body),
        hash_key: hash,
        hedge_after,
        retry_on_status,
    };
    let forwarded =
        proxy::forward_recorded(shared, service, &outgoing, started, &mut record, request_id).await;
    *upstream_head = outgoing.head;
    let success = match forwarded {
        Ok(success) => success,
        Err(kind) => {
            let answer = gateway(kind, record);
            return write_gateway(shared, stream, out, answer, request_id, started, closing).await;
        }
    };
    let upstream_latency = success.upstream_latency;
    let status = success.response.head.status;
    if status == 101 {
        // A switch nobody asked for (fast-lane requests never ask: upgrades go to
        // hyper): what follows is not HTTP the client expects. As in the hyper lane.
        let answer = gateway(ErrorKind::UpstreamInvalidResponse, record);
        return write_gateway(shared, stream, out, answer, request_id, started, closing).await;
    }
    record.status = status;
    record.source = ResponseSource::Upstream;
    record.upstream_latency = Some(upstream_latency);
    // The response head: the upstream's headers minus hop-by-hop ones, plus ours.
    let response_head = &success.response.head;
    let framing = response_head.framing;
    // A body whose length the client cannot learn from a Content-Length is re-framed
    // chunked (the upstream's own chunking, or its close, is hop-by-hop).
    let chunked_out = matches!(framing, Framing::Chunked | Framing::UntilClose);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    wire::push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(wire::reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    write_response_headers(
        out,
        &response_head.headers,
        chunked_out,
        success.received_at,
    );
    // Up to the upstream's response header (read when it arrived: no clock read here).
    let received_at = success.received_at;
    let proxy_latency = received_at
        .saturating_duration_since(started)
        .saturating_sub(upstream_latency);
    millis_line(out, &headers::UPSTREAM_LATENCY, upstream_latency);
    millis_line(out, &headers::PROXY_LATENCY, proxy_latency);
    headers::line(out, headers::REQUEST_ID.as_str().as_bytes(), request_id);
    if let Some((_, cookie)) = &sticky {
        headers::line(out, b"set-cookie", cookie.as_bytes());
    }
    if closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let completion = Completion::new(shared.clone(), record, started, success.in_flight);
    let mut body = success.response.body;
    body.recycle_positions(success.response.head.headers.positions);
    relay(
        stream,
        out,
        &mut body,
        BodyRelay {
            chunked: chunked_out,
            read_timeout: service.read_timeout,
            received_at,
        },
        completion,
        closing,
    )
    .await
}

/// Copy the upstream's response headers for the client: hop-by-hop ones (and those its
/// `Connection` lists) dropped, `Via` extended, the gateway's own headers left for the
/// caller, `Content-Length` dropped when the body is re-framed chunked, `Date` added
/// when the upstream sent none (as hyper's server does).
fn write_response_headers(
    out: &mut Vec<u8>,
    response: &RawHeaders,
    chunked_out: bool,
    now: Instant,
) {
    // Looked for only when a `Connection` header lists a name (rare).
    let listed = (!response.connection_plain).then(|| wire::ListedNames::of(response));
    let mut via: Option<&[u8]> = None;
    let mut date = false;
    let raw = &response.raw[..];
    // Kept lines are copied in runs, as the bytes that arrived, when every line ended in
    // CRLF: one copy per run instead of four per line. Where the run started:
    let mut run: Option<usize> = None;
    for pos in &response.positions {
        let name = raw.get(pos.name.clone()).unwrap_or_default();
        let value = raw.get(pos.value.clone()).unwrap_or_default();
        let skip = if wire::is_hop_by_hop(name) || listed.as_ref().is_some_and(|l| l.contains(name))
        {
            true
        } else if wire::name_is(name, b"via") {
            via.get_or_insert(value);
            true
        } else {
            match name.len() {
                4 => {
                    date |= wire::name_is(name, b"date");
                    false
                }
                14 => chunked_out && wire::name_is(name, b"content-length"),
                19 => wire::name_is(name, headers::REQUEST_ID.as_str().as_bytes()),
                25 => wire::name_is(name, headers::UPSTREAM_LATENCY.as_str().as_bytes()),
                22 => wire::name_is(name, headers::PROXY_LATENCY.as_str().as_bytes()),
                _ => false,
            }
        };
        if skip {
            // The run ends where this line starts.
            if let Some(start) = run.take() {
                out.extend_from_slice(raw.get(start..pos.name.start).unwrap_or_default());
            }
        } else if response.crlf_lines {
            run.get_or_insert(pos.name.start);
        } else {
            headers::line(out, name, value);
        }
    }
    // The last run ends with the last header line: before the head's closing CRLF.
    if let Some(start) = run {
        out.extend_from_slice(
            raw.get(start..raw.len().saturating_sub(2))
                .unwrap_or_default(),
        );
    }
    match via.and_then(wire::header_str) {
        Some(existing) if !existing.is_empty() => {
            out.extend_from_slice(b"via: ");
            out.extend_from_slice(existing.as_bytes());
            out.extend_from_slice(b", ");
            out.extend_from_slice(headers::VIA_VALUE.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        _ => headers::line(out, b"via", headers::VIA_VALUE.as_bytes()),
    }
    if !date {
        headers::line(out, b"date", &wire::date_value(now));
    }
    if chunked_out {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
}

/// How a response body is relayed.
struct BodyRelay {
    /// Re-framed chunked for the client.
    chunked: bool,
    /// The longest wait for the next piece from the upstream.
    read_timeout: Duration,
    /// When the upstream's head arrived.
    received_at: Instant,
}

/// Write the head and relay the body; finish the record however it ends.
async fn relay<S: ClientStream>(
    stream: &mut S,
    head: &mut Vec<u8>,
    body: &mut ResponseBody,
    how: BodyRelay,
    completion: Completion,
    closing: bool,
) -> After {
    let BodyRelay {
        chunked,
        read_timeout,
        received_at,
    } = how;
    // A small body that came whole with the upstream's head goes out in the same
    // buffer as the client's head: one segment, one copy.
    if !chunked && let Some(n) = body.take_whole_into(head, INLINE_RESPONSE_BODY, received_at) {
        if write_data(stream, head, b"", false, false).await.is_err() {
            completion.finish_now(0, false);
            return After::Close;
        }
        let finished_at = completion.finish_now(n as u64, true);
        return if closing {
            After::Close
        } else {
            After::KeepAlive(finished_at)
        };
    }
    let mut bytes_out = 0u64;
    // The first write carries the head and whatever body bytes came with the upstream's
    // head.
    let first = match body.take_buffered() {
        Some(Ok(data)) => data,
        Some(Err(_)) => {
            completion.finish_now(0, false);
            return After::Close;
        }
        None => Bytes::new(),
    };
    let ended = body.is_end();
    // (A small body that came whole was written with the head above.)
    let written = write_data(stream, head, &first, chunked, ended).await;
    if written.is_err() {
        completion.finish_now(0, false);
        return After::Close;
    }
    bytes_out += first.len() as u64;
    if ended {
        let finished_at = completion.finish_now(bytes_out, true);
        return if closing {
            After::Close
        } else {
            After::KeepAlive(finished_at)
        };
    }
    let mut relayed: u32 = 0;
    loop {
        relayed = relayed.wrapping_add(1);
        if relayed.is_multiple_of(CHUNKS_PER_YIELD) {
            tokio::task::yield_now().await;
        }
        let next =
            tokio::time::timeout(read_timeout, std::future::poll_fn(|cx| body.poll_data(cx))).await;
        match next {
            Ok(Some(Ok(data))) => {
                let ended = body.is_end();
                if write_data(stream, b"", &data, chunked, ended)
                    .await
                    .is_err()
                {
                    completion.finish_now(bytes_out, false);
                    return After::Close;
                }
                bytes_out += data.len() as u64;
                if ended {
                    break;
                }
            }
            Ok(None) => {
                if chunked && write_data(stream, b"", b"", true, true).await.is_err() {
                    completion.finish_now(bytes_out, false);
                    return After::Close;
                }
                break;
            }
            // The upstream broke or stalled midway: the status is out, so the only
            // honest signal left is to end the client connection early.
            Ok(Some(Err(BodyError::Read(_) | BodyError::Truncated | BodyError::Chunked(_))))
            | Err(_) => {
                completion.finish_now(bytes_out, false);
                return After::Close;
            }
        }
    }
    let finished_at = completion.finish_now(bytes_out, true);
    if closing {
        After::Close
    } else {
        After::KeepAlive(finished_at)
    }
}

/// Write `prefix` (a head, or nothing) then `data`, chunk-framed when `chunked`, with
/// the last chunk when `last`.
async fn write_data<S: ClientStream>(
    stream: &mut S,
    prefix: &[u8],
    data: &[u8],
    chunked: bool,
    last: bool,
) -> Result<(), ()> {
    let mut size_line = Vec::new();
    let (chunk_head, chunk_tail, end): (&[u8], &[u8], &[u8]) = if chunked {
        if !data.is_empty() {
            wire::chunk_prefix(data.len(), &mut size_line);
        }
        (
            &size_line,
            if data.is_empty() { b"" } else { b"\r\n" },
            if last { wire::LAST_CHUNK } else { b"" },
        )
    } else {
        (b"", b"", b"")
    };
    let mut slices = [
        IoSlice::new(prefix),
        IoSlice::new(chunk_head),
        IoSlice::new(data),
        IoSlice::new(chunk_tail),
        IoSlice::new(end),
    ];
    wire::write_all_vectored(stream, &mut slices)
        .await
        .map_err(|_| ())
}

/// A response the gateway makes itself.
struct GatewayAnswer {
    kind: ErrorKind,
    record: crate::record::RequestRecord,
    /// A redirect (status and `Location`) instead of the error body.
    location: Option<(u16, String)>,
}

/// [`answer_gateway`], boxed: a gateway answer is the uncommon end of a request, and its
/// future's state inline would be carried (and copied) by every request's future.
fn write_gateway<'a, S: ClientStream>(
    shared: &'a Arc<Shared>,
    stream: &'a mut S,
    out: &'a mut Vec<u8>,
    answer: GatewayAnswer,
    request_id: &'a [u8],
    started: Instant,
    closing: bool,
) -> std::pin::Pin<Box<impl Future<Output = After> + 'a>> {
    Box::pin(answer_gateway(
        shared, stream, out, answer, request_id, started, closing,
    ))
}

/// Write a response the gateway makes itself (an error or a redirect) and record it.
async fn answer_gateway<S: ClientStream>(
    shared: &Arc<Shared>,
    stream: &mut S,
    out: &mut Vec<u8>,
    answer: GatewayAnswer,
    request_id: &[u8],
    started: Instant,
    closing: bool,
) -> After {
    let GatewayAnswer {
        kind,
        mut record,
        location,
    } = answer;
    out.clear();
    let body = match &location {
        Some((code, location)) => {
            record.status = *code;
            record.source = ResponseSource::Gateway;
            out.extend_from_slice(
                format!("HTTP/1.1 {code} {}\r\n", wire::reason(*code)).as_bytes(),
            );
            headers::line(out, b"location", location.as_bytes());
            Bytes::new()
        }
        None => {
            let status = kind.status().as_u16();
            record.status = status;
            record.source = ResponseSource::Gateway;
            record.error = Some(kind);
            out.extend_from_slice(
                format!("HTTP/1.1 {status} {}\r\n", wire::reason(status)).as_bytes(),
            );
            headers::line(
                out,
                b"content-type",
                crate::error::error_content_type().as_bytes(),
            );
            millis_line(out, &headers::RESPONSE_LATENCY, started.elapsed());
            headers::line(out, b"server", b"sluice");
            if kind == ErrorKind::Http2Required {
                // Kong's 426 names the protocol to upgrade to.
                headers::line(out, b"upgrade", b"HTTP/2");
            }
            error_body(kind, std::str::from_utf8(request_id).unwrap_or(""))
        }
    };
    headers::line(out, headers::REQUEST_ID.as_str().as_bytes(), request_id);
    out.extend_from_slice(b"content-length: ");
    wire::push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    headers::line(out, b"date", &wire::date_value(started));
    if closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let completion = Completion::new(shared.clone(), record, started, None);
    out.extend_from_slice(&body);
    let written = write_data(stream, out, b"", false, false).await;
    let finished_at = completion.finish_now(body.len() as u64, written.is_ok());
    if written.is_err() || closing {
        After::Close
    } else {
        After::KeepAlive(finished_at)
    }
}

/// A latency header line, in whole milliseconds as Kong writes them.
fn millis_line(out: &mut Vec<u8>, name: &http::HeaderName, d: Duration) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    wire::push_decimal(out, u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(head: &str) -> &'static str {
        let buf = BytesMut::from(head.as_bytes());
        match parse(&buf, u64::MAX, &mut RawHeaders::default()) {
            Parse::Fast(_) => "fast",
            Parse::Partial => "partial",
            Parse::HandOff => "hyper",
        }
    }

    /// The parser marks a head whose `Connection` headers list only hop-by-hop names,
    /// so no per-header lookup is made for it; a listed name still disappears.
    #[test]
    fn connection_listed_names_are_found_only_when_there_can_be_some() {
        let cases = [
            ("Connection: keep-alive\r\n", true),
            ("", true),
            ("Connection: keep-alive, X-Secret\r\n", false),
            ("Connection: close\r\n", false),
            ("Connection: te\r\nConnection: x-secret\r\n", false),
        ];
        for (connection, plain) in cases {
            let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{connection}X-Secret: 1\r\n\r\n");
            let buf = BytesMut::from(head.as_bytes());
            let mut headers = RawHeaders::default();
            let Parse::Fast(parsed) = parse(&buf, u64::MAX, &mut headers) else {
                panic!("{head:?} should be fast");
            };
            headers.raw = buf.freeze().slice(..parsed.len);
            assert_eq!(headers.connection_plain, plain, "{head:?}");
            let listed = wire::ListedNames::of(&headers);
            let secret_listed = connection.to_ascii_lowercase().contains("x-secret");
            assert_eq!(listed.contains(b"x-secret"), secret_listed, "{head:?}");
        }
    }

    /// The target is read where it lies in the head, split into path and query as
    /// `http`'s URI parser splits it (the hyper lane's view of the same request).
    #[test]
    fn the_target_splits_into_path_and_query_as_the_uri_parser_does() {
        for target in ["/", "/a/b", "/a?b=1&c", "/a?", "/?x?y", "/a%20b?q=%2F"] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let buf = BytesMut::from(head.as_bytes());
            let Parse::Fast(parsed) = parse(&buf, u64::MAX, &mut RawHeaders::default()) else {
                panic!("{target} should be fast");
            };
            let text = std::str::from_utf8(&buf[parsed.target.clone()]).unwrap();
            let (path, query) = split_target(text);
            let uri = http::uri::PathAndQuery::try_from(target).unwrap();
            assert_eq!((path, query), (uri.path(), uri.query()), "{target}");
        }
    }

    /// Which requests the fast lane takes: the simple ones; everything else is hyper's.
    #[test]
    fn the_fast_lane_takes_only_simple_http11_requests() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "plain GET",
                "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                "fast",
            ),
            (
                "small body",
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                "fast",
            ),
            (
                "a fragment in the target",
                "GET /a#top HTTP/1.1\r\nHost: x\r\n\r\n",
                "hyper",
            ),
            (
                "a non-ASCII target",
                "GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n",
                "hyper",
            ),
            (
                "close asked",
                "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                "fast",
            ),
            (
                "incomplete head",
                "GET / HTTP/1.1\r\nHost: x\r\n",
                "partial",
            ),
            ("HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", "hyper"),
            ("h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "hyper"),
            (
                "absolute form",
                "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
                "hyper",
            ),
            (
                "chunked body",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "hyper",
            ),
            (
                "expect",
                "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                "hyper",
            ),
            (
                "websocket",
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                "hyper",
            ),
            (
                "bad length",
                "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                "hyper",
            ),
            (
                "two lengths",
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "hyper",
            ),
            (
                "large body",
                "POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
                "hyper",
            ),
            ("garbage", "\x00\x01 not http\r\n\r\n", "hyper"),
        ];
        for (what, head, expected) in cases {
            assert_eq!(decide(head), *expected, "{what}");
        }
        // A body over the gateway's limit goes to hyper, which answers 413.
        let buf = BytesMut::from(&b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n"[..]);
        assert!(matches!(
            parse(&buf, 5, &mut RawHeaders::default()),
            Parse::HandOff
        ));
    }

    /// The client's header lines for an upstream head (which ends with the head's
    /// empty line, nothing after it), written both ways: in runs of the bytes that
    /// arrived (lines ending in CRLF) and line by line; the two must agree up to the
    /// spaces around values.
    fn response_headers(head: &str, chunked_out: bool) -> String {
        let raw = Bytes::from(head.to_owned());
        let Ok(head::Status::Complete(line)) = head::status_line(&raw) else {
            panic!("valid status line: {head:?}");
        };
        let mut positions = Vec::new();
        let Ok(head::Status::Complete(block)) =
            head::header_block(&raw, line.end, 100, &mut positions)
        else {
            panic!("valid head: {head:?}");
        };
        assert_eq!(block.end, raw.len(), "the head alone");
        let write = |crlf_lines: bool| {
            let headers = RawHeaders {
                raw: raw.clone(),
                positions: positions.clone(),
                connection_plain: false,
                crlf_lines,
            };
            let mut out = Vec::new();
            write_response_headers(&mut out, &headers, chunked_out, Instant::now());
            String::from_utf8(out).expect("ascii")
        };
        let line_by_line = write(false);
        if block.crlf_only {
            let runs = write(true);
            let normalised: String = runs
                .split("\r\n")
                .map(|l| match l.split_once(':') {
                    Some((n, v)) => format!("{n}: {}", v.trim_matches([' ', '\t'])),
                    None => l.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\r\n");
            assert_eq!(normalised, line_by_line, "runs and lines agree");
            assert!(runs.ends_with("\r\n") && !runs.contains("\r\n\r\n"));
            return runs;
        }
        assert!(
            !line_by_line.replace("\r\n", "").contains('\n'),
            "a bare LF never reaches the client: {line_by_line:?}"
        );
        line_by_line
    }

    /// Runs of kept lines go out as they came, between and after dropped ones; a head
    /// with a bare LF line is written line by line, with CRLF.
    #[test]
    fn kept_lines_go_out_in_runs_and_bare_lf_heads_line_by_line() {
        let out = response_headers(
            "HTTP/1.1 200 OK\r\nA: 1\r\nB:2  \r\nConnection: close\r\nC:\t3\r\nKeep-Alive: x\r\nD: 4\r\n\r\n",
            false,
        );
        assert!(
            out.starts_with("A: 1\r\nB:2  \r\nC:\t3\r\nD: 4\r\nvia: 1.1 sluice\r\n"),
            "{out:?}"
        );
        let out = response_headers("HTTP/1.1 200 OK\nA: 1\nB: 2\r\n\r\n", false);
        assert!(out.starts_with("A: 1\r\nB: 2\r\nvia: "), "{out:?}");
        let out = response_headers("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert!(!out.contains("Content-Length"), "re-framed: {out:?}");
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out:?}");
    }

    /// The client gets the upstream's headers minus hop-by-hop ones (and those its
    /// `Connection` names), `Via` extended, a `Date` when the upstream sent none, and
    /// chunked framing instead of a length it cannot use.
    #[test]
    fn response_heads_drop_hop_by_hop_headers_and_extend_via() {
        let out = response_headers(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\nVia: 1.1 edge\r\nContent-Length: 5\r\nx-sluice-request-id: forged\r\nx-app: yes\r\n\r\n",
            false,
        );
        assert!(out.contains("x-app: yes\r\n"), "{out}");
        assert!(out.contains("Content-Length: 5\r\n"), "{out}");
        assert!(out.contains("via: 1.1 edge, 1.1 sluice\r\n"), "{out}");
        assert!(out.contains("date: "), "added when absent: {out}");
        for gone in ["Connection", "x-secret", "Keep-Alive", "forged"] {
            assert!(
                !out.contains(gone),
                "{gone} must not reach the client: {out}"
            );
        }
        let out = response_headers(
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 5\r\n\r\n",
            true,
        );
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(!out.contains("Content-Length"), "{out}");
        assert_eq!(
            out.matches("ate: ").count(),
            1,
            "the upstream's Date is kept: {out}"
        );
    }
}
