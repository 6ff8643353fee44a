//! Per-request records handed to metrics and the access log.
//!
//! One [`RequestRecord`] is built per proxied request and finished when the response
//! body has been fully sent (or the client went away), so byte counts and the total
//! request latency are final. The record is filled on the hot path, so it holds only
//! cheap clones (`Arc<str>` names prepared once per configuration generation) and keeps
//! its per-try list inline ([`Tries`]) instead of allocating a `Vec` per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;

/// A matched route, as metrics label it: Kong's `route` label is the route's name, else
/// its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRef {
    /// Index into `Config::routes`.
    pub index: u32,
    /// Name, else id (Kong's label rule).
    pub label: Arc<str>,
}

/// The matched route's service, as metrics label it: Kong's `service` label is the
/// service's name, else its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    /// Index into `Config::services`.
    pub index: u32,
    /// Name, else host (Kong's label rule).
    pub label: Arc<str>,
}

/// Who produced the response the client got (Kong's `source` label: `service` or `kong`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ResponseSource {
    /// The upstream's response was relayed.
    Upstream,
    /// The gateway generated the response (no route, no peer, timeout, bad request...).
    Gateway,
}

impl ResponseSource {
    /// Kong's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseSource::Upstream => "service",
            ResponseSource::Gateway => "kong",
        }
    }
}

/// How one attempt to an upstream address ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TryOutcome {
    /// A response header arrived with this status.
    Status(u16),
    /// The TCP connect failed (refused, unreachable, reset during connect).
    ConnectFailed,
    /// Connect, write or read timeout before the response header.
    Timeout,
    /// The connection broke or the upstream sent something that is not HTTP, before the
    /// response header.
    Broken,
    /// A hedged attempt that lost the race and was cancelled.
    Cancelled,
}

impl TryOutcome {
    /// Stable snake_case name for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TryOutcome::Status(_) => "status",
            TryOutcome::ConnectFailed => "connect_failed",
            TryOutcome::Timeout => "timeout",
            TryOutcome::Broken => "broken",
            TryOutcome::Cancelled => "cancelled",
        }
    }
}

/// One attempt of a request (Kong's `balancer_data.tries[i]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TryRecord {
    pub address: SocketAddr,
    pub region: Arc<str>,
    pub tier: u8,
    pub outcome: TryOutcome,
    /// From the start of the attempt until its response header or failure.
    pub latency: Duration,
    /// True when this attempt was a hedge started while another was still running.
    pub hedge: bool,
}

/// The attempts of one request: the first inline, any retries on the heap.
///
/// Nearly every request makes exactly one attempt, and the record is moved a few times
/// on its way to the metrics (request task, completion, access log), so it is kept
/// small: one inline attempt (no allocation for the common case) instead of a fixed
/// array of eight (which made every move copy most of a kilobyte). Requests configured
/// for many retries keep their first [`Tries::CAPACITY`] attempts and count the rest in
/// [`Tries::total`].
#[derive(Clone, Debug, Default)]
pub struct Tries {
    first: Option<TryRecord>,
    more: Vec<TryRecord>,
    total: u32,
}

impl Tries {
    /// Six attempts at Kong's default plus two hedges.
    pub const CAPACITY: usize = 8;

    /// Record one attempt (kept when there is room, always counted).
    pub fn push(&mut self, record: TryRecord) {
        self.total = self.total.saturating_add(1);
        if self.first.is_none() {
            self.first = Some(record);
        } else if self.more.len() + 1 < Self::CAPACITY {
            self.more.push(record);
        }
    }

    /// The kept attempts, in the order they ended.
    pub fn iter(&self) -> impl Iterator<Item = &TryRecord> {
        self.first.iter().chain(self.more.iter())
    }

    /// The last kept attempt.
    pub fn last(&self) -> Option<&TryRecord> {
        self.more.last().or(self.first.as_ref())
    }

    /// Attempts made, including any beyond the kept capacity.
    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Everything the gateway knows about one finished request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// The request id sent back as `X-Sluice-Request-Id` (and upstream), printed as 32
    /// hex digits.
    pub request_id: u128,
    pub method: http::Method,
    /// `None` when no route matched (Kong does not count those in its metrics).
    pub route: Option<RouteRef>,
    pub service: Option<ServiceRef>,
    /// The upstream name when the service points at an upstream.
    pub upstream: Option<Arc<str>>,
    /// Status sent to the client.
    pub status: u16,
    pub source: ResponseSource,
    pub tries: Tries,
    /// First byte in to last byte out (Kong's `latencies.request`).
    pub request_latency: Duration,
    /// Upstream time to response header of the final attempt (Kong's `latencies.proxy`).
    pub upstream_latency: Option<Duration>,
    /// Time spent in the gateway itself: request latency minus upstream time
    /// (Kong's `latencies.kong`).
    pub proxy_latency: Duration,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes written to the client.
    pub bytes_out: u64,
    /// A retry (or hedge) went to a different region than the first attempt.
    pub crossed_region: bool,
    /// A retry went to a less preferred tier than the first attempt.
    pub crossed_tier: bool,
    /// A retry was wanted but the upstream's retry budget refused it.
    pub retry_budget_exhausted: bool,
    /// Attempts that ended in a timeout.
    pub try_timeouts: u32,
    /// A hedged attempt was started.
    pub hedged: bool,
    /// Why the gateway produced an error response, if it did.
    pub error: Option<ErrorKind>,
}
