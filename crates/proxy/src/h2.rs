//! HTTP/2 to the upstream, for Kong's `grpc` and `grpcs` services.
//!
//! gRPC exists only over HTTP/2, so these services cannot use the HTTP/1.1 client
//! ([`crate::upstream`]). This module is their client: hyper's `client::conn::http2` on
//! a connection Sluice opens itself (h2c with prior knowledge for `grpc`; TLS with ALPN
//! `h2` and the service's TLS settings for `grpcs`), so the connect phase stays visible
//! to the retry rules exactly as in [`crate::pool`].
//!
//! Connections: **one multiplexed connection per address and TLS identity** (the pool key
//! of [`crate::pool`]), shared by every request to it. The first request to an address
//! connects while later ones wait for that connect (single flight, under the same
//! `connect_timeout`), so a burst of calls opens one connection, not one each. A
//! connection the peer closed or told to go away (GOAWAY) is noticed by
//! `SendRequest::is_closed` and replaced by the next request; a request the connection
//! gave back unsent (it was closing) goes out once more on a fresh one (not a retry:
//! nothing reached the upstream). How many streams run at once is the upstream's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`; hyper holds further requests until a stream
//! frees, inside the attempt's timeouts.
//!
//! The attempt ([`H2Attempt`]) plugs into [`crate::forward`]'s loop, so balancing,
//! passive health, outlier detection, the retry rules, the decision log and metrics are
//! the HTTP/1.1 ones. Timeouts are Kong's per try: `connect_timeout` for TCP, TLS and the
//! HTTP/2 preface; `write_timeout` between two pieces of a streamed request body;
//! `read_timeout` from the end of the body to the response header, then between two
//! pieces of the response (in [`crate::body::ClientBody`]).
//!
//! Bodies stream both ways frame by frame (gRPC streaming calls) and trailers
//! (`grpc-status`, `grpc-message`) pass through in both directions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{UpstreamBody, WriteProgress};
use crate::error::ErrorKind;
use crate::forward::{AttemptError, Attempter, Outgoing, Timeouts, connect_failure};
use crate::pool::ConnectError;
use crate::tls::{UpstreamTls, upstream_server_name};
use crate::upstream::Stream;
use sluice_core::retry::FailureKind;

/// What connections are interchangeable under: the address and, for TLS, the settings'
/// id and the server name presented (Kong's pool key `ip|port|sni|client_certificate`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    tls: Option<(u64, ServerName<'static>)>,
}

/// Distinct keys above which connecting first drops the slots whose connection is gone.
/// With `preserve_host` on a `grpcs` service the server name is the client's `Host`, so
/// clients could otherwise grow the map; 4096 is far above a real address × identity
/// count, and the sweep is a short scan that runs only then.
const SWEEP_KEYS: usize = 4096;

/// The connection of one key: `None` until the first connect, and again after a
/// connection was found closed.
#[derive(Default)]
struct Slot {
    current: tokio::sync::Mutex<Option<Live>>,
    /// The slot's connection is gone (for the sweep, read without the async lock).
    closed_hint: std::sync::atomic::AtomicBool,
}

struct Live {
    sender: SendRequest<UpstreamBody>,
    /// Tells this connection from its successors, so a request that found it closing
    /// forgets this one and not a fresh one another request just opened.
    generation: u64,
}

/// A connection lent to one attempt.
struct Lent {
    sender: SendRequest<UpstreamBody>,
    generation: u64,
}

/// The HTTP/2 connections of every gRPC service, one per [`Key`].
#[derive(Default)]
pub struct H2Pool {
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    generations: AtomicU64,
    /// Connections opened so far (tests and logs: multiplexing means this stays small).
    connects: AtomicU64,
    /// Connections whose task still runs (shared with those tasks).
    open: Arc<AtomicU64>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool")
            .field("connects", &self.connects.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl H2Pool {
    pub fn new() -> Arc<H2Pool> {
        Arc::new(H2Pool::default())
    }

    /// How many HTTP/2 connections this pool has opened.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// How many of them are still open (their connection task still runs).
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= SWEEP_KEYS {
            slots.retain(|_, slot| {
                !slot.closed_hint.load(Ordering::Relaxed) || Arc::strong_count(slot) > 1
            });
        }
        let slot = Arc::new(Slot::default());
        slots.insert(key.clone(), slot.clone());
        slot
    }

    /// The live connection of `key`, else a new one. Waits while another request is
    /// connecting the same key (the caller bounds the wait with `connect_timeout`).
    async fn get(&self, key: &Key, tls: Option<&Arc<UpstreamTls>>) -> Result<Lent, ConnectError> {
        let slot = self.slot(key);
        let mut current = slot.current.lock().await;
        if let Some(live) = current.as_ref()
            && !live.sender.is_closed()
        {
            return Ok(Lent {
                sender: live.sender.clone(),
                generation: live.generation,
            });
        }
        *current = None;
        let sender = match connect(key, tls, &self.open).await {
            Ok(sender) => sender,
            Err(e) => {
                slot.closed_hint.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.connects.fetch_add(1, Ordering::Relaxed);
        slot.closed_hint.store(false, Ordering::Relaxed);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *current = Some(Live {
            sender: sender.clone(),
            generation,
        });
        Ok(Lent { sender, generation })
    }

    /// Forget `key`'s connection if it still is `generation` (it gave a request back).
    async fn forget(&self, key: &Key, generation: u64) {
        let slot = self.slot(key);
        let mut current = slot.current.lock().await;
        if current.as_ref().is_some_and(|l| l.generation == generation) {
            *current = None;
            slot.closed_hint.store(true, Ordering::Relaxed);
        }
    }
}

/// TCP, then TLS with ALPN `h2` for a TLS key, then the HTTP/2 preface; the connection
/// runs in a task of its own until the peer or the last sender ends it.
async fn connect(
    key: &Key,
    tls: Option<&Arc<UpstreamTls>>,
    open: &Arc<AtomicU64>,
) -> Result<SendRequest<UpstreamBody>, ConnectError> {
    let addr = key.addr;
    let tcp = TcpStream::connect(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ConnectError::Refused
        } else {
            ConnectError::Failed
        }
    })?;
    // gRPC messages are small and latency-bound: never wait for Nagle's algorithm.
    let _ = tcp.set_nodelay(true);
    let stream = match (tls, &key.tls) {
        (Some(tls), Some((_, server_name))) => {
            let connector = tls
                .connector_h2(server_name.clone())
                .await
                .map_err(|error| {
                    tracing::warn!(%error, %addr, "TLS client configuration");
                    ConnectError::Handshake
                })?;
            let stream = connector.connect(tcp).await.map_err(|error| {
                tracing::warn!(%error, %addr, "TLS handshake with gRPC upstream failed");
                ConnectError::Handshake
            })?;
            Stream::Tls(Box::new(stream))
        }
        _ => Stream::Plain(tcp),
    };
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, UpstreamBody>(TokioIo::new(stream))
        .await
        .map_err(|error| {
            tracing::debug!(%error, %addr, "HTTP/2 handshake with upstream failed");
            ConnectError::Failed
        })?;
    open.fetch_add(1, Ordering::Relaxed);
    let open = open.clone();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, %addr, "HTTP/2 upstream connection ended with an error");
        }
        // The task's end drops the request channel: senders now report closed.
        open.fetch_sub(1, Ordering::Relaxed);
    });
    Ok(sender)
}

/// The parts of a gRPC request that every attempt sends the same, already prepared
/// (hop-by-hop headers removed, `X-Forwarded-*` set, `te: trailers` kept, no `Host`).
#[derive(Debug)]
pub struct H2Request {
    /// `http` for `grpc` services, `https` for `grpcs`.
    pub scheme: Scheme,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
}

/// One HTTP/2 attempt: the seam [`crate::forward`] calls for gRPC services.
pub(crate) struct H2Attempt<'a> {
    pub pool: &'a H2Pool,
    pub request: &'a H2Request,
}

impl Attempter for H2Attempt<'_> {
    type Response = Response<Incoming>;

    async fn attempt(
        &self,
        out: &Outgoing,
        addr: SocketAddr,
        host: Option<&HeaderValue>,
        tls: Option<&Arc<UpstreamTls>>,
        timeouts: Timeouts,
        _started: Instant,
    ) -> Result<Response<Incoming>, AttemptError> {
        let host = out.preserved_host.as_ref().or(host);
        let host_text = host.and_then(|h| h.to_str().ok());
        let key = Key {
            addr,
            tls: tls.map(|t| (t.id(), upstream_server_name(host_text, addr))),
        };
        // `:authority` is what `Host` is for HTTP/1.1: the chosen host value, or the
        // address when there is none (or it is not a valid authority).
        let uri = host_text
            .and_then(|h| self.uri(h))
            .or_else(|| self.uri(&addr.to_string()))
            .ok_or(AttemptError::Client(ErrorKind::BadRequest))?;
        let mut lent = Box::pin(connect_within(self.pool, &key, tls, timeouts.connect)).await?;
        // Taken only now that a connection exists: a connect failure leaves the body
        // for the next address.
        let Some(mut body) = out.body.take() else {
            return Err(AttemptError::Upstream(FailureKind::ConnectError));
        };
        let progress = match &mut body {
            UpstreamBody::Streaming { progress, .. } => {
                let p = WriteProgress::new();
                *progress = Some(p.clone());
                Some(p)
            }
            UpstreamBody::Full(_) => None,
        };
        let mut request = Request::new(body);
        *request.method_mut() = out.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.request.headers.clone();
        let mut sent_at = Instant::now();
        for round in 0..2 {
            let deadline_now = |sent_at: Instant| match &progress {
                Some(p) => p.deadline(timeouts.write, timeouts.read),
                None => sent_at + timeouts.read,
            };
            let send = lent.sender.try_send_request(request);
            tokio::pin!(send);
            // The body is written by the connection's task, so nothing here sees a
            // write happen: the timer wakes at least every `step` to look at the
            // progress, so a deadline that moved earlier (the body ended, and
            // `read_timeout` is shorter than `write_timeout`) is kept to within `step`.
            let step = timeouts.write.min(timeouts.read);
            let timer = tokio::time::sleep_until(deadline_now(sent_at).min(sent_at + step));
            tokio::pin!(timer);
            let result = loop {
                tokio::select! {
                    biased;
                    result = &mut send => break result,
                    () = timer.as_mut() => {
                        // The deadline moves while a streamed body is written.
                        let current = deadline_now(sent_at);
                        let now = Instant::now();
                        if now < current {
                            timer.as_mut().reset(current.min(now + step));
                            continue;
                        }
                        if progress.as_ref().is_some_and(|p| p.is_waiting_on_client()) {
                            return Err(AttemptError::Client(ErrorKind::ClientAborted));
                        }
                        let writing = progress.as_ref().is_some_and(|p| !p.is_done());
                        // Dropping the send resets the stream (RST_STREAM CANCEL); the
                        // connection stays for the other calls.
                        return Err(AttemptError::Upstream(if writing {
                            FailureKind::WriteTimeout
                        } else {
                            FailureKind::ReadTimeout
                        }));
                    }
                }
            };
            match result {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    // The connection gave the request back unsent (it was closing):
                    // once more on a fresh connection.
                    Some(unsent) if round == 0 => {
                        self.pool.forget(&key, lent.generation).await;
                        lent =
                            match Box::pin(connect_within(self.pool, &key, tls, timeouts.connect))
                                .await
                            {
                                Ok(lent) => lent,
                                Err(e) => {
                                    out.body.put_back(unsent.into_body());
                                    return Err(e);
                                }
                            };
                        request = unsent;
                        sent_at = Instant::now();
                    }
                    Some(unsent) => {
                        out.body.put_back(unsent.into_body());
                        return Err(AttemptError::Upstream(FailureKind::ConnectError));
                    }
                    None => return Err(classify(&error.into_error())),
                },
            }
        }
        Err(AttemptError::Upstream(FailureKind::ConnectError))
    }
}

impl H2Attempt<'_> {
    fn uri(&self, authority: &str) -> Option<Uri> {
        Uri::builder()
            .scheme(self.request.scheme.clone())
            .authority(authority)
            .path_and_query(self.request.path_and_query.clone())
            .build()
            .ok()
    }
}

/// A connection for `key` within `connect_timeout` (which also bounds the wait for
/// another request's connect to the same key).
async fn connect_within(
    pool: &H2Pool,
    key: &Key,
    tls: Option<&Arc<UpstreamTls>>,
    connect_timeout: Duration,
) -> Result<Lent, AttemptError> {
    match tokio::time::timeout(connect_timeout, pool.get(key, tls)).await {
        Ok(Ok(lent)) => Ok(lent),
        Ok(Err(e)) => Err(connect_failure(e)),
        Err(_) => Err(connect_failure(ConnectError::TimedOut)),
    }
}

/// A failed exchange after the request was handed to the connection.
///
/// A stream *we* reset (our copy of the client's body failed: the client went away or
/// sent too much) is the client's doing and is not held against the upstream. Anything
/// else (a reset from the upstream, a broken or closed connection, an invalid response)
/// is a read error after sending: Kong does not retry it for a POST, and passive health
/// counts it as a tcp failure.
fn classify(error: &hyper::Error) -> AttemptError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.is_reset() && !h2.is_remote() {
                return AttemptError::Client(ErrorKind::ClientAborted);
            }
            break;
        }
        if e.downcast_ref::<crate::body::RequestBodyError>().is_some() {
            return AttemptError::Client(ErrorKind::ClientAborted);
        }
        source = e.source();
    }
    AttemptError::Upstream(FailureKind::ReadError)
}
