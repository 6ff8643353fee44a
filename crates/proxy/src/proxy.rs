//! The request handler: route, prepare, forward, relay, record.
//!
//! A request loads the current [`Runtime`] once (one `ArcSwap` load, no lock) and uses
//! that generation to the end. Every response, relayed or gateway-made, carries the
//! request id, and every request produces exactly one [`RequestRecord`] when its
//! response body ends (metrics hook and access log).
//!
//! gRPC ([`crate::h2`]): a request for a `grpc`/`grpcs` service goes to the upstream
//! over HTTP/2 with its body streamed (never buffered: a streaming call's client may
//! wait for replies before it sends more) and the upstream's trailers relayed. Kong's
//! runloop checks apply to routes with `grpc`/`grpcs` protocols (426 over HTTP/1.x,
//! 415 without an `application/grpc` content type, `grpc-status: 1` for a plain call
//! to a `grpcs`-only route), and every answer the gateway makes to a gRPC request
//! (HTTP/2 with an `application/grpc*` content type) carries Kong's `grpc-status` and
//! `grpc-message` headers over an empty body, as Kong's PDK sends them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header,
};
use hyper::body::Incoming;
use sluice_core::topology::HashOn;
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::body::{self, ClientBody, Finish, ReadBody, ReadBodyError, UpstreamBody};
use crate::driver::Core;
use crate::error::{ErrorKind, error_body, error_content_type, grpc_status_for};
use crate::forward::{self, Context, InFlight, Outgoing, OutgoingBody, Report};
use crate::headers::{
    self, ClientFacts, HeaderView, PROXY_LATENCY, REQUEST_ID, RESPONSE_LATENCY, UPSTREAM_LATENCY,
};
use crate::ids;
use crate::pool::Pool;
use crate::realip::TrustedProxies;
use crate::record::{RequestRecord, ResponseSource, RouteRef, ServiceRef};
use crate::router::{Listener, RequestFacts, RouteInfo, RouteMatch, upstream_path};
use crate::runtime::{Runtime, ServiceRuntime, ServiceTarget, UpstreamRuntime};
use crate::tunnel;
use crate::wire::Rewind;

/// Counters for `GET /status` (Kong's `server` object).
#[derive(Debug, Default)]
pub struct Stats {
    pub total_requests: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_handled: AtomicU64,
}

/// Limits applied to client requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted (Kong's `client_max_body_size`; `u64::MAX` = none,
    /// Kong's default of 0 = unlimited).
    pub max_request_body: u64,
}

/// Everything a request handler needs, shared by all connections.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub core: Arc<Core>,
    pub pool: Arc<Pool>,
    /// HTTP/2 connections of gRPC services.
    pub h2: Arc<crate::h2::H2Pool>,
    pub limits: Limits,
    pub access_log: Option<AccessLog>,
    pub stats: Stats,
    pub trusted_proxies: TrustedProxies,
    /// Simple HTTP/1.1 requests take the fast lane ([`crate::fastlane`]).
    pub fast_lane: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// Per-connection header values, rendered once at accept.
    pub headers: Arc<headers::ConnectionHeaders>,
    /// Set on the TLS listener: the TLS facts routes match on.
    pub tls: Option<TlsConn>,
}

/// What the router needs to know of a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsConn {
    /// The server name the client sent (lower case, no trailing dot), if any.
    pub sni: Option<Arc<str>>,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, local: SocketAddr, trusted: &TrustedProxies) -> Self {
        let is_trusted = trusted.is_trusted(remote.ip());
        ConnInfo {
            remote,
            local,
            headers: Arc::new(headers::ConnectionHeaders::new(
                remote,
                local.port(),
                is_trusted,
            )),
            tls: None,
        }
    }

    /// A connection of the TLS listener.
    pub fn new_tls(
        remote: SocketAddr,
        local: SocketAddr,
        trusted: &TrustedProxies,
        sni: Option<&str>,
    ) -> Self {
        let mut headers =
            headers::ConnectionHeaders::new(remote, local.port(), trusted.is_trusted(remote.ip()));
        headers.https = true;
        ConnInfo {
            remote,
            local,
            headers: Arc::new(headers),
            tls: Some(TlsConn {
                sni: sni.map(|name| Arc::from(crate::tls_server::normalize_server_name(name))),
            }),
        }
    }

    /// The listener as the router sees it.
    pub fn listener(&self) -> Listener<'_> {
        match &self.tls {
            None => Listener::Plain,
            Some(tls) => Listener::Tls {
                sni: tls.sni.as_deref(),
            },
        }
    }
}

/// Finishes the record when the response body ends.
pub(crate) struct Completion {
    shared: Arc<Shared>,
    record: RequestRecord,
    started: Instant,
    /// Held until the body ends so least-connections and P2C see the request as busy.
    _in_flight: Option<InFlight>,
}

impl Completion {
    pub(crate) fn new(
        shared: Arc<Shared>,
        record: RequestRecord,
        started: Instant,
        in_flight: Option<InFlight>,
    ) -> Self {
        Completion {
            shared,
            record,
            started,
            _in_flight: in_flight,
        }
    }

    /// The response ended after `bytes_out` body bytes: release the address's load and
    /// record the request (metrics, access log). Returns the clock reading it took.
    pub(crate) fn finish_now(self, bytes_out: u64, _clean: bool) -> Instant {
        let Completion {
            shared,
            mut record,
            started,
            _in_flight,
        } = self;
        drop(_in_flight);
        record.bytes_out = bytes_out;
        let now = Instant::now();
        record.request_latency = now.saturating_duration_since(started);
        record.proxy_latency = record
            .request_latency
            .saturating_sub(record.upstream_latency.unwrap_or_default());
        shared.core.metrics.on_request(&record);
        if let Some(log) = &shared.access_log {
            log.log(record);
        }
        now
    }
}

impl Finish for Completion {
    fn finish(self: Box<Self>, bytes_out: u64, clean: bool) {
        self.finish_now(bytes_out, clean);
    }
}

fn millis_header(d: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A gateway-made response (error or redirect) with the request id and latency. For a
/// gRPC request (`grpc`) the body is empty and the error goes in Kong's `grpc-status`
/// and `grpc-message` headers.
fn gateway_response(
    shared: &Arc<Shared>,
    kind: ErrorKind,
    request_id: &HeaderValue,
    started: Instant,
    mut record: RequestRecord,
    grpc: bool,
) -> Response<ClientBody> {
    let id = request_id.to_str().unwrap_or("");
    let body = if grpc {
        Bytes::new()
    } else {
        error_body(kind, id)
    };
    record.status = kind.status().as_u16();
    record.source = ResponseSource::Gateway;
    record.error = Some(kind);
    let completion = Box::new(Completion {
        shared: shared.clone(),
        record,
        started,
        _in_flight: None,
    });
    let mut response = Response::new(ClientBody::full(body, Some(completion)));
    *response.status_mut() = kind.status();
    let headers = response.headers_mut();
    if grpc {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            GRPC_STATUS.clone(),
            HeaderValue::from(u16::from(grpc_status_for(kind.status()))),
        );
        headers.insert(
            GRPC_MESSAGE.clone(),
            HeaderValue::from_static(kind.message()),
        );
    } else {
        headers.insert(header::CONTENT_TYPE, error_content_type());
    }
    if kind == ErrorKind::Http2Required {
        // Kong's 426 names the protocol to upgrade to.
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("HTTP/2"));
    }
    headers.insert(REQUEST_ID.clone(), request_id.clone());
    headers.insert(RESPONSE_LATENCY.clone(), millis_header(started.elapsed()));
    headers.insert(header::SERVER, HeaderValue::from_static("sluice"));
    response
}

pub(crate) fn new_record(request_id: u128, method: &http::Method) -> RequestRecord {
    RequestRecord {
        request_id,
        method: method.clone(),
        route: None,
        service: None,
        upstream: None,
        status: 0,
        source: ResponseSource::Gateway,
        tries: Default::default(),
        request_latency: Duration::ZERO,
        upstream_latency: None,
        proxy_latency: Duration::ZERO,
        bytes_in: 0,
        bytes_out: 0,
        crossed_region: false,
        crossed_tier: false,
        retry_budget_exhausted: false,
        try_timeouts: 0,
        hedged: false,
        error: None,
    }
}

pub(crate) fn apply_report(record: &mut RequestRecord, report: Report) {
    record.tries = report.tries;
    record.crossed_region = report.crossed_region;
    record.crossed_tier = report.crossed_tier;
    record.retry_budget_exhausted = report.retry_budget_exhausted;
    record.try_timeouts = report.try_timeouts;
    record.hedged = report.hedged;
}

/// Compute the consistent-hashing key of a request (Kong's `hash_on`, then
/// `hash_fallback` when the first source is absent).
pub(crate) fn hash_key(
    up: &UpstreamRuntime,
    client: std::net::IpAddr,
    headers: HeaderView<'_>,
    path: &str,
    query: Option<&str>,
    matched: &RouteMatch<'_>,
) -> Option<u64> {
    if !up.consistent_hashing {
        return None;
    }
    let from = |on: &HashOn| -> Option<u64> {
        use sluice_core::balance::hash::hash_key as h;
        match on {
            HashOn::None | HashOn::Consumer => None,
            HashOn::Ip => Some(match client {
                std::net::IpAddr::V4(v4) => h(&v4.octets()),
                std::net::IpAddr::V6(v6) => h(&v6.octets()),
            }),
            HashOn::Header(name) => headers.get(name.as_str()).map(h),
            HashOn::Cookie { name, .. } => cookie(headers, name).map(|v| h(v.as_bytes())),
            HashOn::Path => Some(h(path.as_bytes())),
            HashOn::QueryArg(name) => query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(k, _)| k == name)
                .map(|(_, v)| h(v.as_bytes())),
            HashOn::UriCapture(name) => matched
                .captures
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .map(|(_, v)| h(v.as_bytes())),
        }
    };
    from(&up.hash_on).or_else(|| from(&up.hash_fallback))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: HeaderView<'a>, name: &str) -> Option<&'a str> {
    headers
        .values("cookie")
        .filter_map(crate::wire::header_str)
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Kong's sticky cookie: with `hash_on: cookie` and no cookie on the request, Kong makes
/// up a value, hashes on it and sets the cookie on the response so the client sticks to
/// the address from its next request on. Returns the key hash and the `Set-Cookie`.
pub(crate) fn new_sticky_cookie(
    up: &UpstreamRuntime,
    headers: HeaderView<'_>,
) -> Option<(u64, HeaderValue)> {
    let HashOn::Cookie { name, path } = &up.hash_on else {
        return None;
    };
    if !up.consistent_hashing || cookie(headers, name).is_some() {
        return None;
    }
    let value = ids::request_id_header(ids::new_request_id());
    let cookie = format!("{name}={}; Path={path}", value.to_str().unwrap_or_default());
    let header = HeaderValue::from_str(&cookie).ok()?;
    Some((
        sluice_core::balance::hash::hash_key(value.as_bytes()),
        header,
    ))
}

/// Serve a client connection with hyper (HTTP/1.1 with upgrades, or HTTP/2: h2c on a
/// plain stream, h2 over TLS), `already_read` replayed first: every connection when the
/// fast lane is off, those the fast lane handed over, and h2 over TLS. Ends
/// early, gracefully (HTTP/1.1: after the current response; h2: GOAWAY), when `drain`
/// turns true.
pub(crate) async fn serve_hyper<S>(
    stream: S,
    already_read: Bytes,
    shared: Arc<Shared>,
    info: ConnInfo,
    mut drain: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let remote = info.remote;
    let handler_shared = shared.clone();
    let service = hyper::service::service_fn(move |request| {
        handle(handler_shared.clone(), info.clone(), request)
    });
    let io = hyper_util::rt::TokioIo::new(Rewind::new(already_read, stream));
    let connection = crate::server::hyper_builder().serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let drained = async move {
        // A `Ref` must not live across an await: only whether the wait ended is kept.
        let _ = drain.wait_for(|draining| *draining).await.is_ok();
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drained => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Client-side protocol errors (garbage, resets) end the connection; hyper has
    // already answered what it could (400/431). Nothing to do but note it.
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "client connection ended with an error");
    }
}

/// Handle one client request.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    mut request: Request<Incoming>,
) -> Result<Response<ClientBody>, Infallible> {
    let started = Instant::now();
    shared.stats.total_requests.fetch_add(1, Ordering::Relaxed);
    let runtime = shared.runtime.load_full();
    let id = ids::new_request_id();
    let request_id = ids::request_id_header(id);
    let mut record = new_record(id, request.method());

    // An HTTP/1.1 upgrade (WebSocket): the client's connection is claimed now, handed
    // over only if the upstream answers 101.
    let upgrade = tunnel::requested_protocol(&request)
        .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
    let (parts, incoming) = request.into_parts();
    let grpc_content = has_grpc_content_type(&parts.headers);
    // Kong's `is_grpc_request`: what gets its errors as gRPC statuses.
    let grpc_request = grpc_content && parts.version == Version::HTTP_2;
    // The client address: the peer, or from a trusted proxy the address it names
    // (Kong's realip settings).
    let client_ip = if conn.headers.trusted {
        shared
            .trusted_proxies
            .client_of(conn.remote.ip(), HeaderView::Map(&parts.headers))
    } else {
        conn.remote.ip()
    };
    let host_value = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let path = parts.uri.path();
    let Some(matched) = runtime.router.find_on(
        RequestFacts {
            method: &parts.method,
            host: host_value,
            path,
            headers: HeaderView::Map(&parts.headers),
        },
        conn.listener(),
    ) else {
        return Ok(gateway_response(
            &shared,
            ErrorKind::NoRouteMatched,
            &request_id,
            started,
            record,
            grpc_request,
        ));
    };
    let info = matched.info.clone();
    record_route(&mut record, &info);

    // Only plain-HTTP requests are redirected: on the TLS listener the request already is
    // what an https-only route asks for.
    if let Some(code) = info.https_redirect.filter(|_| conn.tls.is_none()) {
        return Ok(https_redirect(
            &shared,
            code,
            host_value,
            &parts.uri,
            &request_id,
            started,
            record,
        ));
    }
    // Kong's runloop checks for routes that take gRPC, in its order.
    if let Some(grpc) = info.grpc {
        let refused = if !grpc_content {
            Some(ErrorKind::NonGrpcRequest)
        } else if parts.version != Version::HTTP_2 {
            Some(ErrorKind::Http2Required)
        } else {
            None
        };
        if let Some(kind) = refused {
            return Ok(gateway_response(
                &shared,
                kind,
                &request_id,
                started,
                record,
                grpc_request,
            ));
        }
        if !grpc.plain && conn.tls.is_none() {
            return Ok(grpcs_only_answer(&shared, &request_id, started, record));
        }
    }
    let Some(service) = info
        .service
        .as_ref()
        .and_then(|s| runtime.services.get(s.index as usize))
    else {
        return Ok(gateway_response(
            &shared,
            ErrorKind::NoService,
            &request_id,
            started,
            record,
            grpc_request,
        ));
    };
    // A gRPC service speaks HTTP/2 only, and Sluice does not bridge HTTP/1.x to it.
    if service.grpc && parts.version != Version::HTTP_2 {
        return Ok(gateway_response(
            &shared,
            ErrorKind::Http2Required,
            &request_id,
            started,
            record,
            grpc_request,
        ));
    }
    let upstream_rt = match &service.target {
        ServiceTarget::Upstream(up) => {
            record.upstream = Some(up.slot.name.clone());
            Some(up.clone())
        }
        _ => None,
    };

    // Upstream path per strip_path / path_handling, query kept as is.
    let mut target = upstream_path(
        path,
        matched.matched_len,
        info.strip_path,
        info.path_handling,
        service.path.as_deref(),
    );
    if let Some(query) = parts.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    // The target is checked as a URI (a configured `path` could make it invalid) and
    // written into the request line.
    let Ok(uri) = Uri::try_from(target) else {
        return Ok(gateway_response(
            &shared,
            ErrorKind::BadRequest,
            &request_id,
            started,
            record,
            grpc_request,
        ));
    };
    let sticky = upstream_rt
        .as_deref()
        .and_then(|up| new_sticky_cookie(up, HeaderView::Map(&parts.headers)));
    let hash = match &sticky {
        Some((key, _)) => Some(*key),
        None => upstream_rt.as_deref().and_then(|up| {
            hash_key(
                up,
                client_ip,
                HeaderView::Map(&parts.headers),
                parts.uri.path(),
                parts.uri.query(),
                &matched,
            )
        }),
    };
    let hedge_after = info.hedge_after;
    let retry_on_status = info.retry_on_status.clone();
    let preserve_host = info.preserve_host;
    drop(matched);

    if service.grpc {
        let call = GrpcCall {
            conn: &conn,
            service,
            uri,
            client_ip,
            hash_key: hash,
            preserve_host,
            retry_on_status,
            request_id,
            grpc_request,
        };
        return Ok(Box::pin(forward_grpc(
            &shared, call, parts, incoming, started, record,
        ))
        .await);
    }

    // Body: reject by Content-Length early, then buffer up to the replay limit.
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > shared.limits.max_request_body) {
        return Ok(gateway_response(
            &shared,
            ErrorKind::PayloadTooLarge,
            &request_id,
            started,
            record,
            grpc_request,
        ));
    }
    let body = match body::read_request_body(incoming, shared.limits.max_request_body).await {
        Ok(ReadBody::Complete(bytes)) => {
            record.bytes_in = bytes.len() as u64;
            OutgoingBody::Replayable(bytes)
        }
        Ok(ReadBody::Partial { head, rest }) => {
            record.bytes_in = declared_len.unwrap_or(head.len() as u64);
            let remaining_limit = shared
                .limits
                .max_request_body
                .saturating_sub(head.len() as u64);
            OutgoingBody::Streaming(std::sync::Mutex::new(Some(UpstreamBody::Streaming {
                head: Some(head),
                rest,
                remaining_limit,
                progress: None,
            })))
        }
        Err(ReadBodyError::TooLarge) => {
            return Ok(gateway_response(
                &shared,
                ErrorKind::PayloadTooLarge,
                &request_id,
                started,
                record,
                grpc_request,
            ));
        }
        Err(ReadBodyError::TimedOut | ReadBodyError::Aborted) => {
            return Ok(gateway_response(
                &shared,
                ErrorKind::ClientAborted,
                &request_id,
                started,
                record,
                grpc_request,
            ));
        }
    };

    let preserved_host = if preserve_host {
        parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        })
    } else {
        None
    };
    let client_framed_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts.headers.contains_key(header::CONTENT_LENGTH);
    let mut headers = parts.headers;
    rewrite_for_upstream(&mut headers, &parts.uri, &conn, client_ip, &request_id);
    if let Some((protocol, _)) = &upgrade {
        tunnel::restore_upgrade_headers(&mut headers, protocol);
    }
    let (head, line_len, chunked) =
        wire_request(&parts.method, &uri, &headers, &body, client_framed_body);
    let outgoing = Outgoing {
        method: parts.method,
        head,
        line_len,
        chunked,
        preserved_host,
        body,
        hash_key: hash,
        hedge_after,
        retry_on_status,
    };

    let forwarded = forward_recorded(
        &shared,
        service,
        &outgoing,
        started,
        &mut record,
        request_id.as_bytes(),
    )
    .await;
    match forwarded {
        Err(kind) => Ok(gateway_response(
            &shared,
            kind,
            &request_id,
            started,
            record,
            grpc_request,
        )),
        Ok(mut success) => {
            let status = success.response.head.status;
            let switching = status == StatusCode::SWITCHING_PROTOCOLS.as_u16();
            let Ok(status_code) = StatusCode::from_u16(status) else {
                return Ok(gateway_response(
                    &shared,
                    ErrorKind::UpstreamInvalidResponse,
                    &request_id,
                    started,
                    record,
                    grpc_request,
                ));
            };
            if switching {
                let Some((_, client_side)) = upgrade else {
                    // A 101 nobody asked for cannot be relayed: the client would not
                    // know what protocol follows.
                    return Ok(gateway_response(
                        &shared,
                        ErrorKind::UpstreamInvalidResponse,
                        &request_id,
                        started,
                        record,
                        grpc_request,
                    ));
                };
                if let Some(lease) = success.response.body.take_lease() {
                    let (stream, already_read) = lease.into_parts();
                    tokio::spawn(tunnel::run(
                        client_side,
                        Rewind::new(already_read, stream),
                        service.read_timeout,
                        success.in_flight.take(),
                    ));
                }
            }
            let head = &success.response.head;
            let mut response_headers = HeaderMap::with_capacity(head.headers.positions.len() + 6);
            for (name, value) in head.iter() {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    response_headers.append(name, value);
                }
            }
            let upgrade_protocol = response_headers.get(header::UPGRADE).cloned();
            headers::prepare_client_response(&mut response_headers);
            if let (true, Some(protocol)) = (switching, &upgrade_protocol) {
                tunnel::restore_upgrade_headers(&mut response_headers, protocol);
            }
            let upstream_latency = success.upstream_latency;
            let proxy_latency = started.elapsed().saturating_sub(upstream_latency);
            response_headers.insert(UPSTREAM_LATENCY.clone(), millis_header(upstream_latency));
            response_headers.insert(PROXY_LATENCY.clone(), millis_header(proxy_latency));
            response_headers.insert(REQUEST_ID.clone(), request_id);
            if let Some((_, cookie)) = sticky {
                response_headers.append(header::SET_COOKIE, cookie);
            }
            record.status = status;
            record.source = ResponseSource::Upstream;
            record.upstream_latency = Some(upstream_latency);
            let completion = Box::new(Completion {
                shared: shared.clone(),
                record,
                started,
                _in_flight: success.in_flight,
            });
            let body = if switching {
                // The connection now belongs to the tunnel (which holds the address's
                // load until it closes): it must not go back to the pool, and the record
                // ends with the 101.
                ClientBody::full(Bytes::new(), Some(completion))
            } else {
                ClientBody::upstream(
                    success.response.body,
                    service.read_timeout,
                    Some(completion),
                )
            };
            let mut response = Response::new(body);
            *response.status_mut() = status_code;
            *response.version_mut() = Version::HTTP_11;
            *response.headers_mut() = response_headers;
            Ok(response)
        }
    }
}

/// gRPC's response headers for errors (Kong's PDK names).
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The request says it is gRPC: `Content-Type` starts with `application/grpc` (Kong's
/// prefix test, so `application/grpc+proto` and `application/grpc-web` count).
fn has_grpc_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Kong's answer to a gRPC call over a plain connection on a route that takes only
/// `grpcs`: HTTP 200 with `grpc-status: 1` and a message saying so.
fn grpcs_only_answer(
    shared: &Arc<Shared>,
    request_id: &HeaderValue,
    started: Instant,
    mut record: RequestRecord,
) -> Response<ClientBody> {
    record.status = 200;
    record.source = ResponseSource::Gateway;
    let completion = Box::new(Completion::new(shared.clone(), record, started, None));
    let mut response = Response::new(ClientBody::full(Bytes::new(), Some(completion)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS.clone(), HeaderValue::from_static("1"));
    headers.insert(
        GRPC_MESSAGE.clone(),
        HeaderValue::from_static("gRPC request matched gRPCs route"),
    );
    headers.insert(REQUEST_ID.clone(), request_id.clone());
    response
}

/// What [`forward_grpc`] needs of the routed request.
struct GrpcCall<'a> {
    conn: &'a ConnInfo,
    service: &'a ServiceRuntime,
    /// The upstream path and query (after `strip_path`/`path_handling`).
    uri: Uri,
    client_ip: std::net::IpAddr,
    hash_key: Option<u64>,
    preserve_host: bool,
    retry_on_status: Arc<[u16]>,
    request_id: HeaderValue,
    grpc_request: bool,
}

/// The client's headers rewritten for the upstream on hyper's lane (both HTTP/1.1 and
/// gRPC): Kong's `X-Forwarded-*` and `X-Real-IP`, `Via`, the request id, hop-by-hop
/// headers dropped, and `Host` removed (each attempt writes its own).
fn rewrite_for_upstream(
    headers: &mut HeaderMap,
    uri: &http::Uri,
    conn: &ConnInfo,
    client_ip: std::net::IpAddr,
    request_id: &HeaderValue,
) {
    // A clone of the `Host` value (a reference count, not a copy) so the forwarded host
    // can borrow from it while the headers are rewritten.
    let host_header = headers.get(header::HOST).cloned();
    let forwarded_host = headers::host_without_port(
        host_header
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.host())
            .unwrap_or(""),
    );
    let real_client = (client_ip != conn.remote.ip()).then(|| headers::ip_header(client_ip));
    headers::prepare_upstream_request(
        headers,
        &ClientFacts {
            connection: &conn.headers,
            real_client: real_client.as_ref(),
            host: forwarded_host,
            host_header: host_header.as_ref(),
            path: uri.path(),
            request_id: request_id.as_bytes(),
        },
    );
    headers.remove(header::HOST);
}

/// Forward a request for a gRPC service over HTTP/2 and relay the answer, trailers
/// included. Boxed by the caller: only gRPC requests carry its state.
async fn forward_grpc(
    shared: &Arc<Shared>,
    call: GrpcCall<'_>,
    parts: http::request::Parts,
    incoming: Incoming,
    started: Instant,
    mut record: RequestRecord,
) -> Response<ClientBody> {
    let GrpcCall {
        conn,
        service,
        uri,
        client_ip,
        hash_key,
        preserve_host,
        retry_on_status,
        request_id,
        grpc_request,
    } = call;
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > shared.limits.max_request_body) {
        return gateway_response(
            shared,
            ErrorKind::PayloadTooLarge,
            &request_id,
            started,
            record,
            grpc_request,
        );
    }
    // Streamed from the first byte: the client of a streaming call may wait for replies
    // before it sends more, so nothing is buffered ahead of the upstream. The body stays
    // with the request until an attempt has a connection, so a connect failure can
    // still go to the next address.
    record.bytes_in = declared_len.unwrap_or(0);
    let body = if http_body::Body::is_end_stream(&incoming) {
        OutgoingBody::Replayable(Bytes::new())
    } else {
        OutgoingBody::Streaming(std::sync::Mutex::new(Some(UpstreamBody::Streaming {
            head: None,
            rest: incoming,
            remaining_limit: shared.limits.max_request_body,
            progress: None,
        })))
    };
    let preserved_host = if preserve_host {
        parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        })
    } else {
        None
    };
    // gRPC requires `te: trailers` end to end (it says the client accepts trailers); it
    // is hop-by-hop, so it is put back after the rewriting strips it.
    let te_trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let mut headers = parts.headers;
    rewrite_for_upstream(&mut headers, &parts.uri, conn, client_ip, &request_id);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let request = crate::h2::H2Request {
        scheme: if service.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        },
        path_and_query: uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        headers,
    };
    let outgoing = Outgoing {
        method: parts.method,
        head: Vec::new(),
        line_len: 0,
        chunked: false,
        preserved_host,
        body,
        hash_key,
        // Hedging needs a replayable body; gRPC bodies stream.
        hedge_after: None,
        retry_on_status,
    };
    let cx = Context {
        pool: &shared.pool,
        dns: &shared.core.dns,
        core: &shared.core,
        clock: &shared.core.clock,
    };
    let mut report = Report::default();
    let result = forward::forward_h2(
        &cx,
        service,
        &outgoing,
        &request,
        &shared.h2,
        &mut report,
        started,
    )
    .await;
    apply_report(&mut record, report);
    let success = match result {
        Ok(success) => success,
        Err(err) => {
            tracing::debug!(
                request_id = request_id.to_str().unwrap_or(""),
                kind = err.kind.as_str(),
                side = ?err.side,
                retry_safe = err.retry_safe,
                "gRPC request failed"
            );
            return gateway_response(shared, err.kind, &request_id, started, record, grpc_request);
        }
    };
    let (head, body) = success.response.into_parts();
    let mut response_headers = head.headers;
    headers::prepare_client_response(&mut response_headers);
    let upstream_latency = success.upstream_latency;
    let proxy_latency = started.elapsed().saturating_sub(upstream_latency);
    response_headers.insert(UPSTREAM_LATENCY.clone(), millis_header(upstream_latency));
    response_headers.insert(PROXY_LATENCY.clone(), millis_header(proxy_latency));
    response_headers.insert(REQUEST_ID.clone(), request_id);
    record.status = head.status.as_u16();
    record.source = ResponseSource::Upstream;
    record.upstream_latency = Some(upstream_latency);
    let completion = Box::new(Completion::new(
        shared.clone(),
        record,
        started,
        success.in_flight,
    ));
    let mut response = Response::new(ClientBody::h2(body, service.read_timeout, Some(completion)));
    *response.status_mut() = head.status;
    *response.headers_mut() = response_headers;
    response
}

/// The matched route and its service, as the record (metrics labels) names them.
pub(crate) fn record_route(record: &mut RequestRecord, info: &RouteInfo) {
    record.route = Some(RouteRef {
        index: info.route.index,
        label: info.route.label.clone(),
    });
    record.service = info.service.as_ref().map(|s| ServiceRef {
        index: s.index,
        label: s.label.clone(),
    });
}

/// Forward a prepared request (both lanes): the forwarder's report goes into the record,
/// and a failure is logged with its side and retry safety and comes back as the kind
/// that decides the client's answer.
pub(crate) async fn forward_recorded(
    shared: &Arc<Shared>,
    service: &ServiceRuntime,
    outgoing: &Outgoing,
    started: Instant,
    record: &mut RequestRecord,
    request_id: &[u8],
) -> Result<forward::Success, ErrorKind> {
    let cx = Context {
        pool: &shared.pool,
        dns: &shared.core.dns,
        core: &shared.core,
        clock: &shared.core.clock,
    };
    let mut report = Report::default();
    let result = forward::forward(&cx, service, outgoing, &mut report, started).await;
    apply_report(record, report);
    result.map_err(|err| {
        tracing::debug!(
            request_id = std::str::from_utf8(request_id).unwrap_or(""),
            kind = err.kind.as_str(),
            side = ?err.side,
            retry_safe = err.retry_safe,
            "request failed"
        );
        err.kind
    })
}

/// The upstream request in wire form: request line and header lines (with the body's
/// framing) in one buffer, where the line ends, and whether a streamed body goes out
/// chunked.
///
/// Framing: a client `Content-Length` is kept as is (the body read, or streamed, is
/// exactly that long). A buffered body without one (the client sent it chunked, or
/// over HTTP/2) gets its length; an empty body gets `Content-Length: 0` when the client
/// framed one or the method carries a body by convention. A streamed body of unknown
/// length goes out chunked.
fn wire_request(
    method: &http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &OutgoingBody,
    client_framed_body: bool,
) -> (Vec<u8>, usize, bool) {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut block =
        Vec::with_capacity(method.as_str().len() + target.len() + headers.len() * 48 + 48);
    block.extend_from_slice(method.as_str().as_bytes());
    block.push(b' ');
    block.extend_from_slice(target.as_bytes());
    block.extend_from_slice(b" HTTP/1.1\r\n");
    let line_len = block.len();
    for (name, value) in headers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    let chunked = match body {
        OutgoingBody::Replayable(bytes) => {
            let body_method = matches!(
                *method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            );
            if !has_length && (!bytes.is_empty() || client_framed_body || body_method) {
                block.extend_from_slice(format!("content-length: {}\r\n", bytes.len()).as_bytes());
            }
            false
        }
        OutgoingBody::Streaming(_) => !has_length,
    };
    (block, line_len, chunked)
}

/// A route that only accepts HTTPS: Kong answers 426, or redirects when the route's
/// `https_redirect_status_code` is a 3xx.
fn https_redirect(
    shared: &Arc<Shared>,
    code: u16,
    host: &str,
    uri: &Uri,
    request_id: &HeaderValue,
    started: Instant,
    record: RequestRecord,
) -> Response<ClientBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::UPGRADE_REQUIRED);
    if !status.is_redirection() {
        // JSON even for a gRPC request: a gRPC client on an https-only route is a
        // configuration mistake this answer names plainly (Kong would put the same
        // message in `grpc-message`).
        return gateway_response(
            shared,
            ErrorKind::HttpsRequired,
            request_id,
            started,
            record,
            false,
        );
    }
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let location = format!(
        "https://{host}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut record = record;
    record.status = code;
    record.source = ResponseSource::Gateway;
    let completion = Box::new(Completion {
        shared: shared.clone(),
        record,
        started,
        _in_flight: None,
    });
    let mut response = Response::new(ClientBody::full(Bytes::new(), Some(completion)));
    *response.status_mut() = status;
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), request_id.clone());
    response
}
