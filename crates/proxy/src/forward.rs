//! Forwarding one request: pick an address, send, classify the failure, retry on
//! another address when Kong's rules and the retry budget allow, optionally hedge.
//!
//! Per attempt:
//! - the address comes from `balance::pick` over the snapshot the request loaded once,
//!   with every address already tried excluded (a retry never repeats an address while
//!   an untried one exists; when all were tried the list starts over, as Kong's
//!   least-connections balancer does);
//! - `AddressLoad::start/finish` bracket the attempt (on success the in-flight count is
//!   held until the response body ends), and the time to the response header feeds the
//!   peak-EWMA;
//! - the outcome goes to the driver as `Event::AttemptCompleted` through a bounded
//!   channel with `try_send`: passive health never slows a request down;
//! - phases are timed as Kong does: `connect_timeout` for the connect (and the TLS
//!   handshake of an `https` service, whose failure is a connect failure), then
//!   `read_timeout` until the response header (for a streamed request body the write
//!   phase adds `write_timeout`).
//!
//! Retry decisions are `sluice_core::retry::decide` (Kong: errors and timeouts before the
//! response header; a non-idempotent request only when nothing was sent), then the
//! upstream's `RetryBudget`.
//!
//! The loop is generic over how one attempt is made ([`Attempter`]): [`forward`] makes
//! HTTP/1.1 attempts with Sluice's own client, [`forward_h2`] HTTP/2 ones for gRPC
//! services ([`crate::h2`]). Both share every decision above; monomorphised, the
//! HTTP/1.1 path compiles to what it was before the seam existed.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method};
use sluice_core::UpstreamSnapshot;
use sluice_core::balance::{self, NoPeer, PickContext};
use sluice_core::event::{AttemptOutcome, Event};
use sluice_core::load::AddressLoad;
use sluice_core::retry::{self, FailureKind, RetryDecision, RetryPolicy};
use sluice_core::snapshot::AddressKey;
use tokio::time::Instant;

use crate::body::{RequestBodyError, UpstreamBody, WriteProgress};
use crate::dns::Dns;
use crate::driver::{Clock, Core};
use crate::error::{ErrorKind, ProxyError};
use crate::ids;
use crate::pool::{ConnectError, Endpoint, Pool};
use crate::record::{Tries, TryOutcome, TryRecord};
use crate::runtime::{ServiceRuntime, ServiceTarget, UpstreamRuntime};
use crate::tls::{UpstreamTls, upstream_server_name};
use crate::upstream::{ExchangeError, Lease, RequestParts, UpstreamResponse};

/// Region label of addresses that do not come from an upstream (IP or DNS services).
static DEFAULT_REGION: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("default"));

/// Addresses remembered as "tried" per request. Beyond this many attempts (only with
/// `retries` far above Kong's default 5) the oldest exclusions are forgotten, which only
/// weakens "never the same address twice" for requests that already made 32 attempts.
const MAX_TRIED: usize = 32;

/// Shared services the forwarder uses.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub pool: &'a Arc<Pool>,
    pub dns: &'a Dns,
    pub core: &'a Arc<Core>,
    pub clock: &'a Clock,
}

/// The request body as the forwarder holds it.
#[derive(Debug)]
pub enum OutgoingBody {
    /// Fully buffered: every attempt sends a clone.
    Replayable(Bytes),
    /// Streamed: the first attempt that gets a connection takes it.
    Streaming(Mutex<Option<UpstreamBody>>),
}

impl OutgoingBody {
    pub(crate) fn take(&self) -> Option<UpstreamBody> {
        match self {
            OutgoingBody::Replayable(bytes) => Some(UpstreamBody::full(bytes.clone())),
            OutgoingBody::Streaming(slot) => slot.lock().unwrap_or_else(|p| p.into_inner()).take(),
        }
    }

    /// Whether another attempt could still send the body.
    fn available(&self) -> bool {
        match self {
            OutgoingBody::Replayable(_) => true,
            OutgoingBody::Streaming(slot) => slot.lock().map(|s| s.is_some()).unwrap_or(false),
        }
    }

    fn is_streaming(&self) -> bool {
        matches!(self, OutgoingBody::Streaming(_))
    }

    /// Give a streamed body back that an attempt took but never sent (its connection
    /// returned the request unsent), so the next attempt can send it.
    pub(crate) fn put_back(&self, mut body: UpstreamBody) {
        if let OutgoingBody::Streaming(slot) = self {
            if let UpstreamBody::Streaming { progress, .. } = &mut body {
                *progress = None;
            }
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
        }
    }
}

/// Everything about the upstream request except the address-specific `Host`, in wire
/// form: every attempt writes the same bytes (plus its `Host`), so nothing is rebuilt
/// per attempt.
#[derive(Debug)]
pub struct Outgoing {
    pub method: Method,
    /// `METHOD target HTTP/1.1\r\n` (the target in origin form: path and query), then
    /// the prepared header lines (hop-by-hop removed, X-Forwarded-* set), without `Host`,
    /// each ending in `\r\n`, with the body's framing header when the body has one. One
    /// buffer: one allocation per request.
    pub head: Vec<u8>,
    /// Where the request line ends in `head`.
    pub line_len: usize,
    /// A streamed body of unknown length: sent with chunked framing.
    pub chunked: bool,
    /// The client's `Host`, sent as is when the route has `preserve_host`.
    pub preserved_host: Option<HeaderValue>,
    pub body: OutgoingBody,
    /// Hash of the consistent-hashing key, when the upstream hashes.
    pub hash_key: Option<u64>,
    /// Hedge after this delay (route extension), for idempotent replayable requests.
    pub hedge_after: Option<Duration>,
    /// Response statuses the route retries (route extension; empty = Kong's behaviour).
    pub retry_on_status: Arc<[u16]>,
}

/// Holds an address's in-flight count until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AddressLoad>);

impl InFlight {
    fn start(load: Arc<AddressLoad>) -> Self {
        load.start();
        InFlight(load)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// What the loop needs to know of an upstream's answer.
pub trait Answer {
    fn status(&self) -> u16;
}

impl Answer for UpstreamResponse {
    fn status(&self) -> u16 {
        self.head.status
    }
}

impl<T: Answer> Answer for Box<T> {
    fn status(&self) -> u16 {
        (**self).status()
    }
}

impl<B> Answer for http::Response<B> {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// How one attempt is made: connect (or reuse) to `addr`, send `out`, wait for the
/// response header. The seam between the balancing loop and a wire protocol.
pub(crate) trait Attempter {
    type Response: Answer;

    /// `host` is the `Host` value chosen for the address (the preserved client one is in
    /// `out`); `started` was read just before the attempt.
    fn attempt(
        &self,
        out: &Outgoing,
        addr: SocketAddr,
        host: Option<&HeaderValue>,
        tls: Option<&Arc<UpstreamTls>>,
        timeouts: Timeouts,
        started: Instant,
    ) -> impl std::future::Future<Output = Result<Self::Response, AttemptError>>;
}

/// HTTP/1.1 attempts with Sluice's own client and pool.
struct H1<'a> {
    pool: &'a Arc<Pool>,
}

impl Attempter for H1<'_> {
    // Boxed: the response goes through five layers of futures and enums (`Settled`,
    // `Next`, `Success`, the forwarders' results) on its way to the client, and each of
    // those moves copied its ~240 bytes; a pointer costs one allocation per request.
    type Response = Box<UpstreamResponse>;

    fn attempt(
        &self,
        out: &Outgoing,
        addr: SocketAddr,
        host: Option<&HeaderValue>,
        tls: Option<&Arc<UpstreamTls>>,
        timeouts: Timeouts,
        started: Instant,
    ) -> impl std::future::Future<Output = Result<Box<UpstreamResponse>, AttemptError>> {
        attempt(self.pool, out, addr, host, tls, timeouts, started)
    }
}

/// A response header from the upstream.
#[derive(Debug)]
pub struct Success<R = Box<UpstreamResponse>> {
    pub response: R,
    pub in_flight: Option<InFlight>,
    /// Time from the start of the winning attempt to its response header.
    pub upstream_latency: Duration,
    /// When that response header arrived.
    pub received_at: Instant,
}

/// What the forwarder learned, for the request record.
#[derive(Debug, Default)]
pub struct Report {
    pub tries: Tries,
    pub crossed_region: bool,
    pub crossed_tier: bool,
    pub retry_budget_exhausted: bool,
    pub try_timeouts: u32,
    pub hedged: bool,
}

/// The address chosen for one attempt.
struct Chosen {
    addr: SocketAddr,
    key: Option<AddressKey>,
    region: Arc<str>,
    tier: u8,
    load: Option<Arc<AddressLoad>>,
    host_header: Option<HeaderValue>,
    crossed_tier: bool,
}

/// How an attempt failed.
pub(crate) enum AttemptError {
    /// The upstream (or the network to it) failed.
    Upstream(FailureKind),
    /// The client's own body failed while being sent; not the upstream's fault.
    Client(ErrorKind),
}

/// Where a service's addresses come from for this request.
enum Source<'a> {
    Upstream {
        up: &'a UpstreamRuntime,
        snapshot: Arc<UpstreamSnapshot>,
        /// The service is `https` (its targets' `Host` omits port 443, not 80).
        https: bool,
    },
    Fixed {
        addrs: Arc<[SocketAddr]>,
        start: usize,
        host_header: Option<HeaderValue>,
    },
}

/// The addresses this request already tried: their indices in the snapshot the request
/// picks from, and their socket addresses, so the indices can be found again when a
/// retry moves to a newer snapshot.
struct Tried {
    items: [u32; MAX_TRIED],
    addrs: [Option<SocketAddr>; MAX_TRIED],
    len: usize,
}

impl Tried {
    fn new() -> Self {
        Tried {
            items: [0; MAX_TRIED],
            addrs: [None; MAX_TRIED],
            len: 0,
        }
    }

    fn as_slice(&self) -> &[u32] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    fn push(&mut self, index: u32, addr: SocketAddr) {
        if self.len == MAX_TRIED {
            self.items.rotate_left(1);
            self.addrs.rotate_left(1);
            self.len -= 1;
        }
        if let (Some(slot), Some(addr_slot)) =
            (self.items.get_mut(self.len), self.addrs.get_mut(self.len))
        {
            *slot = index;
            *addr_slot = Some(addr);
            self.len += 1;
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Re-express the tried set in `snapshot`'s indices (addresses it no longer has are
    /// dropped: they cannot be picked again anyway).
    fn remap(&mut self, snapshot: &UpstreamSnapshot) {
        let old_len = self.len;
        let old_addrs = self.addrs;
        self.len = 0;
        for addr in old_addrs.iter().take(old_len).flatten() {
            if let Some(index) = snapshot.addresses.iter().position(|a| a.key.addr == *addr) {
                self.push(index as u32, *addr);
            }
        }
    }
}

impl Source<'_> {
    /// Choose the address of attempt number `attempt` (0-based).
    ///
    /// A retry picks from the *latest* snapshot, not the one the request started with:
    /// a request that has been failing for a second sees the health verdicts and the
    /// failover that happened meanwhile (the simulator's blackout scenario measured 471
    /// client errors in one second without this, and none with it).
    fn choose(
        &mut self,
        out: &Outgoing,
        tried: &mut Tried,
        attempt: u32,
        now: sluice_core::Instant,
    ) -> Result<Chosen, ErrorKind> {
        match self {
            Source::Fixed {
                addrs,
                start,
                host_header,
            } => {
                if addrs.is_empty() {
                    return Err(ErrorKind::NameResolutionFailed);
                }
                let i = (*start + attempt as usize) % addrs.len();
                let addr = addrs
                    .get(i)
                    .copied()
                    .ok_or(ErrorKind::NameResolutionFailed)?;
                Ok(Chosen {
                    addr,
                    key: None,
                    region: DEFAULT_REGION.clone(),
                    tier: 0,
                    load: None,
                    host_header: host_header.clone(),
                    crossed_tier: false,
                })
            }
            Source::Upstream {
                up,
                snapshot,
                https,
            } => {
                if attempt > 0 {
                    let latest = up.slot.snapshot.load_full();
                    if latest.version != snapshot.version {
                        tried.remap(&latest);
                        *snapshot = latest;
                    }
                }
                let snapshot = &*snapshot;
                let pick = |tried: &Tried| {
                    balance::pick(
                        snapshot,
                        &PickContext {
                            now,
                            entropy: ids::entropy(),
                            hash_key: out.hash_key,
                            tried: tried.as_slice(),
                        },
                    )
                };
                let picked = match pick(tried) {
                    Err(NoPeer::AllTried) => {
                        // Every usable address was tried: start over, as Kong's
                        // least-connections balancer does.
                        tried.clear();
                        pick(tried)
                    }
                    other => other,
                }
                .map_err(|_| ErrorKind::NoPeer)?;
                let view = snapshot
                    .addresses
                    .get(picked.index as usize)
                    .ok_or(ErrorKind::NoPeer)?;
                tried.push(picked.index, view.key.addr);
                Ok(Chosen {
                    addr: view.key.addr,
                    key: Some(view.key.clone()),
                    region: view.region.clone(),
                    tier: view.tier,
                    load: Some(view.load.clone()),
                    host_header: up.host_header.clone().or_else(|| {
                        let hosts = if *https {
                            &up.target_hosts_tls
                        } else {
                            &up.target_hosts
                        };
                        hosts.get(view.target_index as usize).cloned().flatten()
                    }),
                    crossed_tier: picked.crossed_tier,
                })
            }
        }
    }
}

fn failure_outcome(failure: FailureKind) -> (TryOutcome, AttemptOutcome, ErrorKind) {
    match failure {
        FailureKind::ConnectRefused | FailureKind::ConnectError => (
            TryOutcome::ConnectFailed,
            AttemptOutcome::TcpFailure,
            ErrorKind::UpstreamConnectFailed,
        ),
        FailureKind::ConnectTimeout | FailureKind::WriteTimeout | FailureKind::ReadTimeout => (
            TryOutcome::Timeout,
            AttemptOutcome::Timeout,
            ErrorKind::UpstreamTimeout,
        ),
        FailureKind::WriteError | FailureKind::ReadError => (
            TryOutcome::Broken,
            AttemptOutcome::TcpFailure,
            ErrorKind::UpstreamInvalidResponse,
        ),
        FailureKind::Status(code) => (
            TryOutcome::Status(code),
            AttemptOutcome::Status(code),
            ErrorKind::UpstreamInvalidResponse,
        ),
    }
}

/// Per-attempt timeouts of a service.
#[derive(Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub write: Duration,
    pub read: Duration,
}

/// An exchange failure as the retry rules see it.
fn exchange_failure(error: ExchangeError) -> AttemptError {
    match error {
        ExchangeError::NotSent => AttemptError::Upstream(FailureKind::ConnectError),
        ExchangeError::Write(_) => AttemptError::Upstream(FailureKind::WriteError),
        ExchangeError::Body(RequestBodyError::TooLarge) => {
            AttemptError::Client(ErrorKind::PayloadTooLarge)
        }
        ExchangeError::Body(RequestBodyError::Client(_)) => {
            AttemptError::Client(ErrorKind::ClientAborted)
        }
        ExchangeError::Read(_) | ExchangeError::Closed | ExchangeError::Invalid => {
            AttemptError::Upstream(FailureKind::ReadError)
        }
    }
}

/// A connect-phase failure as the retry rules see it. A failed TLS handshake is a
/// connect error: nothing was sent, and Kong's balancer reports it as a tcp failure.
pub(crate) fn connect_failure(error: ConnectError) -> AttemptError {
    AttemptError::Upstream(match error {
        ConnectError::Refused => FailureKind::ConnectRefused,
        ConnectError::Failed | ConnectError::Handshake => FailureKind::ConnectError,
        ConnectError::TimedOut => FailureKind::ConnectTimeout,
    })
}

/// Where an attempt connects. For TLS the server name is the host part of the `Host`
/// value sent (the preserved client `Host` included), as Kong's `proxy_ssl_name
/// $upstream_host` is, so it is known only per attempt.
fn endpoint(
    out: &Outgoing,
    addr: SocketAddr,
    host: Option<&HeaderValue>,
    tls: Option<&Arc<UpstreamTls>>,
) -> Endpoint {
    match tls {
        None => Endpoint::plain(addr),
        Some(tls) => {
            let host = out.preserved_host.as_ref().or(host);
            let name = upstream_server_name(host.and_then(|h| h.to_str().ok()), addr);
            Endpoint::tls(addr, tls.clone(), name)
        }
    }
}

/// One attempt: connect (or reuse), send, wait for the response header.
async fn attempt(
    pool: &Arc<Pool>,
    out: &Outgoing,
    chosen_addr: SocketAddr,
    host: Option<&HeaderValue>,
    tls: Option<&Arc<UpstreamTls>>,
    timeouts: Timeouts,
    started: Instant,
) -> Result<Box<UpstreamResponse>, AttemptError> {
    let endpoint = endpoint(out, chosen_addr, host, tls);
    // `started` was read just before this attempt (no await in between): idle ages in
    // the pool are measured against it.
    let mut conn = pool
        .get(&endpoint, timeouts.connect, started)
        .await
        .map_err(connect_failure)?;
    // The body is taken only now that a connection exists: a streamed body survives a
    // connect failure and can go to the next address.
    let Some(body) = out.body.take() else {
        return Err(AttemptError::Upstream(FailureKind::ConnectError));
    };
    // Phase timeouts. A buffered body (at most `REPLAY_LIMIT`) goes out with the head,
    // so `read_timeout` runs from the send. A streamed body is watched: `write_timeout`
    // between two writes, then `read_timeout` from its end to the response header.
    let mut body = body;
    let progress = match &mut body {
        UpstreamBody::Streaming { progress, .. } => {
            let p = WriteProgress::new();
            *progress = Some(p.clone());
            Some(p)
        }
        UpstreamBody::Full(_) => None,
    };
    let host = if out.preserved_host.is_some() {
        out.preserved_host.as_ref()
    } else {
        host
    };
    let parts = RequestParts {
        line: out.head.get(..out.line_len).unwrap_or_default(),
        host: host.map(HeaderValue::as_bytes),
        headers: out.head.get(out.line_len..).unwrap_or_default(),
        head_request: out.method == Method::HEAD,
        chunked: out.chunked,
    };
    // A pooled connection the peer closed in the meantime fails before anything is
    // written; the request then goes out once more on a fresh connection (this is not
    // a retry: nothing reached the upstream).
    // `read_timeout` runs from the send: for a pooled connection that is (within
    // microseconds) the attempt's start, read once already; after a connect, now.
    let mut sent_at = if conn.reused { started } else { Instant::now() };
    let deadline_now = |sent_at: Instant| match &progress {
        Some(p) => p.deadline(timeouts.write, timeouts.read),
        None => sent_at + timeouts.read,
    };
    // The connection's kept timer (see `UpstreamConn::take_timer`): it may be set for
    // an earlier exchange's deadline, which is never later than this one's unless the
    // timeouts differ, and then it is moved.
    let mut timer = conn
        .conn
        .take_timer()
        .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline_now(sent_at))));
    for _ in 0..2 {
        let reused = conn.reused;
        let sent = {
            let send = conn.conn.exchange(&parts, &mut body);
            tokio::pin!(send);
            loop {
                let deadline = deadline_now(sent_at);
                if timer.deadline() > deadline {
                    timer.as_mut().reset(deadline);
                }
                tokio::select! {
                    // The exchange first: no random branch order to draw, and a timer
                    // that fired for an earlier exchange is not looked at needlessly.
                    biased;
                    result = &mut send => break result,
                    () = timer.as_mut() => {
                        // The timer may be an earlier exchange's, or the deadline may
                        // have moved while it ran (more of the body was written).
                        let current = deadline_now(sent_at);
                        if Instant::now() < current {
                            timer.as_mut().reset(current);
                            continue;
                        }
                        if progress.as_ref().is_some_and(|p| p.is_waiting_on_client()) {
                            // The client stopped sending its body: its fault, not the
                            // upstream's (nothing is reported to passive health).
                            return Err(AttemptError::Client(ErrorKind::ClientAborted));
                        }
                        let writing = progress.as_ref().is_some_and(|p| !p.is_done());
                        return Err(AttemptError::Upstream(if writing {
                            FailureKind::WriteTimeout
                        } else {
                            FailureKind::ReadTimeout
                        }));
                    }
                }
            }
        };
        match sent {
            Ok(head) => {
                conn.conn.put_timer(timer);
                let lease = Lease::new(pool.clone(), conn.key, conn.conn);
                return Ok(Box::new(UpstreamResponse::new(head, lease)));
            }
            Err(ExchangeError::NotSent) if reused => {
                // Boxed as in `Pool::get`: connecting is the uncommon path.
                conn = Box::pin(pool.connect(&endpoint, timeouts.connect))
                    .await
                    .map_err(connect_failure)?;
                sent_at = Instant::now();
            }
            Err(e) => return Err(exchange_failure(e)),
        }
    }
    Err(AttemptError::Upstream(FailureKind::ConnectError))
}

/// The result of one attempt with what is needed to record it.
struct Settled<R> {
    chosen: Chosen,
    result: Result<R, AttemptError>,
    in_flight: Option<InFlight>,
    latency: Duration,
    /// When the attempt settled (read once, for the latency and the balancer's clock).
    ended: Instant,
    hedge: bool,
}

async fn run_one<A: Attempter>(
    attempter: &A,
    out: &Outgoing,
    chosen: Chosen,
    tls: Option<&Arc<UpstreamTls>>,
    timeouts: Timeouts,
    hedge: bool,
) -> Settled<A::Response> {
    let in_flight = chosen.load.clone().map(InFlight::start);
    let started = Instant::now();
    let result = attempter
        .attempt(
            out,
            chosen.addr,
            chosen.host_header.as_ref(),
            tls,
            timeouts,
            started,
        )
        .await;
    let ended = Instant::now();
    Settled {
        chosen,
        result,
        in_flight,
        latency: ended.saturating_duration_since(started),
        ended,
        hedge,
    }
}

/// What the loop does after an attempt settled.
// One value per attempt, moved once into the loop: a boxed `Done` would cost an
// allocation per request to save copying a few hundred bytes once.
#[allow(clippy::large_enum_variant)]
enum Next<R> {
    /// The request is over (a response, or an error that ends it). Not boxed: moving a
    /// few hundred bytes costs less than an allocation per request.
    Done(Result<Success<R>, ProxyError>),
    /// The attempt failed with this upstream failure.
    Failed(FailureKind),
}

struct Loop<'a, 'b> {
    cx: &'a Context<'b>,
    upstream: Option<&'a UpstreamRuntime>,
    report: &'a mut Report,
    first_region: Option<Arc<str>>,
    first_tier: Option<u8>,
}

impl Loop<'_, '_> {
    /// Record a settled attempt and report it to the driver.
    fn settle<R: Answer>(&mut self, settled: Settled<R>) -> Next<R> {
        let Settled {
            chosen,
            result,
            in_flight,
            latency,
            ended,
            hedge,
        } = settled;
        let now = self.cx.clock.at(ended);
        let first_region = self
            .first_region
            .get_or_insert_with(|| chosen.region.clone());
        if *first_region != chosen.region {
            self.report.crossed_region = true;
        }
        let first_tier = *self.first_tier.get_or_insert(chosen.tier);
        if chosen.tier != first_tier || chosen.crossed_tier {
            self.report.crossed_tier = true;
        }
        let (outcome, next) = match result {
            Ok(response) => {
                let status = response.status();
                if let Some(load) = &chosen.load {
                    // A fast 5xx is a failure, not a fast answer (gray failures must not
                    // attract traffic under the latency balancer).
                    if status >= 500 {
                        balance::ewma::observe_failure(load, latency, now);
                    } else {
                        balance::ewma::observe(load, latency, now);
                    }
                }
                (
                    TryOutcome::Status(status),
                    Next::Done(Ok(Success {
                        response,
                        in_flight,
                        upstream_latency: latency,
                        received_at: ended,
                    })),
                )
            }
            Err(AttemptError::Client(kind)) => {
                // Not the upstream's fault: nothing to report to passive health.
                drop(in_flight);
                return Next::Done(Err(ProxyError::after_send(kind)));
            }
            Err(AttemptError::Upstream(failure)) => {
                drop(in_flight);
                // A target that fails fast must not look fast to the latency balancer.
                if let Some(load) = &chosen.load {
                    balance::ewma::observe_failure(load, latency, now);
                }
                let (outcome, _, _) = failure_outcome(failure);
                if outcome == TryOutcome::Timeout {
                    self.report.try_timeouts += 1;
                }
                (outcome, Next::Failed(failure))
            }
        };
        self.report.tries.push(TryRecord {
            address: chosen.addr,
            region: chosen.region,
            tier: chosen.tier,
            outcome,
            latency,
            hedge,
        });
        if let (Some(up), Some(key)) = (self.upstream, chosen.key) {
            let attempt_outcome = match outcome {
                TryOutcome::Status(code) => AttemptOutcome::Status(code),
                TryOutcome::Timeout => AttemptOutcome::Timeout,
                _ => AttemptOutcome::TcpFailure,
            };
            self.cx.core.report_attempt(
                now,
                Event::AttemptCompleted {
                    upstream: up.slot.name.clone(),
                    address: key,
                    outcome: attempt_outcome,
                    latency,
                },
            );
        }
        next
    }
}

/// Forward `out` to `service` over HTTP/1.1, retrying as allowed. Fills `report` as it
/// goes. A gRPC service is HTTP/2 only: a request that reaches it here (over HTTP/1.1)
/// is answered with Kong's 426 "Please use HTTP2 protocol".
pub async fn forward(
    cx: &Context<'_>,
    service: &ServiceRuntime,
    out: &Outgoing,
    report: &mut Report,
    started: Instant,
) -> Result<Success, ProxyError> {
    if service.grpc {
        return Err(ProxyError::before_send(ErrorKind::Http2Required));
    }
    forward_with(cx, service, out, report, started, &H1 { pool: cx.pool }).await
}

/// Forward a gRPC request (`out` carries its body and balancing facts, `request` its
/// HTTP/2 head) to `service` over HTTP/2 through `pool`, with the same retry rules.
pub async fn forward_h2(
    cx: &Context<'_>,
    service: &ServiceRuntime,
    out: &Outgoing,
    request: &crate::h2::H2Request,
    pool: &crate::h2::H2Pool,
    report: &mut Report,
    started: Instant,
) -> Result<Success<http::Response<hyper::body::Incoming>>, ProxyError> {
    let attempter = crate::h2::H2Attempt { pool, request };
    forward_with(cx, service, out, report, started, &attempter).await
}

async fn forward_with<A: Attempter>(
    cx: &Context<'_>,
    service: &ServiceRuntime,
    out: &Outgoing,
    report: &mut Report,
    started: Instant,
    attempter: &A,
) -> Result<Success<A::Response>, ProxyError> {
    let timeouts = Timeouts {
        connect: service.connect_timeout,
        write: service.write_timeout,
        read: service.read_timeout,
    };
    // The request's start (already read) stands for now in the retry budget's deposit
    // and the first pick: both work in milliseconds.
    let request_now = cx.clock.at(started);
    let mut first_now = Some(request_now);
    let mut source = match &service.target {
        ServiceTarget::Upstream(up) => {
            up.slot.deposit(request_now);
            Source::Upstream {
                up,
                snapshot: up.slot.snapshot.load_full(),
                https: service.tls.is_some(),
            }
        }
        ServiceTarget::Address { addrs, host_header } => Source::Fixed {
            addrs: addrs.clone(),
            start: 0,
            host_header: host_header.clone(),
        },
        ServiceTarget::Dns {
            host,
            port,
            host_header,
        } => {
            // Boxed: the resolver's future is large and most services have none, and
            // whatever a future holds inline every request's future carries and copies.
            let addrs = Box::pin(cx.dns.resolve_service(host, *port))
                .await
                .map_err(|_| ProxyError::before_send(ErrorKind::NameResolutionFailed))?;
            Source::Fixed {
                start: (ids::entropy() % addrs.len().max(1) as u64) as usize,
                addrs,
                host_header: host_header.clone(),
            }
        }
        ServiceTarget::Unsupported(_) => {
            return Err(ProxyError::before_send(
                ErrorKind::UnsupportedUpstreamProtocol,
            ));
        }
    };
    let upstream = match &source {
        Source::Upstream { up, .. } => Some(*up),
        Source::Fixed { .. } => None,
    };
    let tls = service.tls.as_ref();
    let idempotent = retry::is_idempotent(out.method.as_str());
    let hedge_after = out
        .hedge_after
        .filter(|_| upstream.is_some() && idempotent && !out.body.is_streaming());

    let mut lp = Loop {
        cx,
        upstream,
        report,
        first_region: None,
        first_tier: None,
    };
    let mut tried = Tried::new();
    let mut attempts: u32 = 0;
    let mut last_error = ProxyError::before_send(ErrorKind::NoPeer);

    loop {
        let now = first_now.take().unwrap_or_else(|| cx.clock.now());
        let chosen = match source.choose(out, &mut tried, attempts, now) {
            Ok(chosen) => chosen,
            Err(kind) if attempts == 0 => return Err(ProxyError::before_send(kind)),
            Err(_) => return Err(last_error),
        };
        attempts += 1;

        let next = match hedge_after {
            None => lp.settle(run_one(attempter, out, chosen, tls, timeouts, false).await),
            // Boxed: two racing attempts are twice the state of one, and only routes
            // that ask for hedging pay for it (see `hedged`).
            Some(delay) => {
                let race = hedged(
                    attempter,
                    &mut lp,
                    &mut source,
                    out,
                    chosen,
                    &mut tried,
                    &mut attempts,
                    tls,
                    timeouts,
                    delay,
                );
                Box::pin(race).await
            }
        };

        let replayable = out.body.available();
        let mut may_retry = |failure: FailureKind, policy: &RetryPolicy| -> bool {
            match retry::decide(policy, attempts, &failure, idempotent, replayable) {
                // A refused connect reached no backend process and cost the upstream
                // nothing, so it does not spend the budget: the budget exists to stop
                // retries from amplifying load on a struggling backend, and a dead
                // address (or a whole dead tier) must not starve the retries that carry
                // traffic to the next tier.
                RetryDecision::Retry if failure == FailureKind::ConnectRefused => true,
                RetryDecision::Retry => match upstream {
                    Some(up) if !up.slot.try_withdraw(cx.clock.now()) => {
                        lp.report.retry_budget_exhausted = true;
                        false
                    }
                    _ => true,
                },
                RetryDecision::GiveUp(_) => false,
            }
        };
        match next {
            Next::Done(result) => {
                // A response is final unless the route opted into retrying its status
                // (`sluice:retry-on`); if that retry is refused, the response stands.
                let code = match &result {
                    Ok(success) if out.retry_on_status.contains(&success.response.status()) => {
                        success.response.status()
                    }
                    _ => return result,
                };
                // The service's retry count with the route's status list (an Arc clone).
                let policy = RetryPolicy {
                    retries: service.retry.retries,
                    retry_on_status: out.retry_on_status.clone(),
                };
                if !may_retry(FailureKind::Status(code), &policy) {
                    return result;
                }
                // Dropping the response closes its connection (the body was not read).
                last_error = ProxyError::after_send(ErrorKind::UpstreamInvalidResponse);
            }
            Next::Failed(failure) => {
                let kind = failure_outcome(failure).2;
                last_error = if failure.nothing_sent() {
                    ProxyError::before_send(kind)
                } else {
                    ProxyError::after_send(kind)
                };
                if !may_retry(failure, &service.retry) {
                    return Err(last_error);
                }
            }
        }
    }
}

/// One hedged attempt: `chosen` first and, if it has not settled after `delay` and the
/// retry budget allows, a second address raced against it; the first usable answer wins
/// and the other is cancelled.
///
/// A function of its own so that `forward` can box it: its state (two attempts in
/// flight) would otherwise be part of every request's future, hedged or not, and be
/// copied with it.
#[allow(clippy::too_many_arguments)]
async fn hedged<A: Attempter>(
    attempter: &A,
    lp: &mut Loop<'_, '_>,
    source: &mut Source<'_>,
    out: &Outgoing,
    chosen: Chosen,
    tried: &mut Tried,
    attempts: &mut u32,
    tls: Option<&Arc<UpstreamTls>>,
    timeouts: Timeouts,
    delay: Duration,
) -> Next<A::Response> {
    let cx = lp.cx;
    let first_id = Identity::of(&chosen);
    let first_started = Instant::now();
    let first = run_one(attempter, out, chosen, tls, timeouts, false);
    tokio::pin!(first);
    let early = tokio::select! {
        settled = &mut first => Some(settled),
        _ = tokio::time::sleep(delay) => None,
    };
    let hedge = match (&early, lp.upstream) {
        (None, Some(up)) if up.slot.try_withdraw(cx.clock.now()) => {
            source.choose(out, tried, *attempts, cx.clock.now()).ok()
        }
        _ => None,
    };
    match (early, hedge) {
        (Some(settled), _) => lp.settle(settled),
        (None, None) => lp.settle(first.await),
        (None, Some(hedge_chosen)) => {
            *attempts += 1;
            lp.report.hedged = true;
            let hedge_id = Identity::of(&hedge_chosen);
            let hedge_started = Instant::now();
            let second = run_one(attempter, out, hedge_chosen, tls, timeouts, true);
            tokio::pin!(second);
            tokio::select! {
                settled = &mut first => {
                    finish_race(lp, settled, second, hedge_id, hedge_started, true).await
                }
                settled = &mut second => {
                    finish_race(lp, settled, first, first_id, first_started, false).await
                }
            }
        }
    }
}

/// Enough of an attempt's address to record it as cancelled.
struct Identity {
    addr: SocketAddr,
    region: Arc<str>,
    tier: u8,
}

impl Identity {
    fn of(chosen: &Chosen) -> Self {
        Identity {
            addr: chosen.addr,
            region: chosen.region.clone(),
            tier: chosen.tier,
        }
    }
}

/// One racer of a hedged pair settled: if it produced the answer, the other is dropped
/// (cancelled); if it failed, wait for the other.
async fn finish_race<F, R: Answer>(
    lp: &mut Loop<'_, '_>,
    settled: Settled<R>,
    other: std::pin::Pin<&mut F>,
    other_id: Identity,
    other_started: Instant,
    other_is_hedge: bool,
) -> Next<R>
where
    F: std::future::Future<Output = Settled<R>>,
{
    match lp.settle(settled) {
        Next::Done(result) => {
            lp.report.tries.push(TryRecord {
                address: other_id.addr,
                region: other_id.region,
                tier: other_id.tier,
                outcome: TryOutcome::Cancelled,
                latency: other_started.elapsed(),
                hedge: other_is_hedge,
            });
            Next::Done(result)
        }
        Next::Failed(_) => lp.settle(other.await),
    }
}
