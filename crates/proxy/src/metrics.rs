//! Prometheus metrics: Kong's families under Kong's names, plus Sluice's own.
//!
//! # Why it is built this way
//!
//! *Compatibility.* A Kong user's dashboards and alerts query `kong_http_requests_total`,
//! `kong_request_latency_ms` and friends. Those families are exported with Kong's names,
//! types, label names and label order, Kong's histogram buckets with `le` printed the way
//! Kong prints it (`le="25"`, not `le="25.0"`), and gated by the prometheus plugin's flags
//! and scope exactly as Kong gates them (see [`KongFlags`] and `docs/metrics.md`). Kong
//! writes the classic text format (version 0.0.4), where a counter may lack the `_total`
//! suffix (`kong_bandwidth_bytes`); OpenMetrics encoders such as `prometheus-client`'s
//! always append `_total` and print `le="25.0"`, so this module writes the text itself.
//!
//! *Hot path.* [`Metrics::on_request`] runs once per proxied request. Every label set it
//! touches is resolved when a configuration loads ([`Metrics::on_config`]) into plain
//! atomics reachable by index: the route index in the record, a fixed status-code slot
//! table, a fixed (tier, region) list per upstream. A request therefore costs one
//! `arc-swap` load plus relaxed atomic adds: no lock, no hashing, no allocation. Histograms
//! are lock-free too (per-bucket counters and an integer sum in microseconds), unlike
//! `prometheus-client`'s, which takes a lock per observation. `benches/metrics.rs`
//! measures it.
//!
//! *Bounded cardinality.* No label value comes from client input. Service, route,
//! upstream, target, region and tier come from the configuration; addresses come from DNS
//! answers for configured targets; status codes map onto a fixed table ([`STATUS_CODES`])
//! with everything else reported as `other`; every other label is a closed enum.
//!
//! *One list.* Every family is declared once in [`FAMILIES`]; the encoder writes `# HELP`
//! and `# TYPE` from it, and `docs/metrics.md` embeds [`reference_markdown`], with a test
//! that the two agree.
//!
//! Counters survive configuration reloads when their label set survives (cells are reused
//! by label key), and disappear when the route, service or upstream they describe is
//! removed, so reload churn cannot grow memory without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_config::Config;
use sluice_config::model::{PluginConfig, PluginScope, PrometheusConfig};
use sluice_core::decision::{DecisionKind, DecisionRecord};
use sluice_core::event::ProbeOutcome;
use sluice_core::snapshot::{
    AddressKey, AddressView, HealthStatus, Mode, Unavailable, UpstreamSnapshot,
};

use crate::error::ErrorKind;
use crate::record::{RequestRecord, ResponseSource, TryOutcome, TryRecord};

/// The `Content-Type` of [`Metrics::encode`]'s output: the classic Prometheus text format,
/// which is what Kong serves and what every Prometheus version scrapes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Kong's `workspace` label. Sluice has one implicit workspace, Kong's `default`.
const WORKSPACE: &str = "default";
/// Kong's `subsystem` label. Sluice proxies HTTP only (no stream subsystem).
const SUBSYSTEM: &str = "http";
/// Label value for anything that does not fit a fixed set (status codes outside
/// [`STATUS_CODES`], a (tier, region) not in the configuration).
const OTHER: &str = "other";

// ---------------------------------------------------------------------------------------
// The family list
// ---------------------------------------------------------------------------------------

/// Prometheus metric type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Where a family's name and semantics come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Kong's prometheus plugin: same name, type, labels and meaning.
    Kong,
    /// Sluice's own.
    Sluice,
}

/// When a family is exported.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Always (process-level and Sluice families).
    Always,
    /// For requests whose effective prometheus plugin has `status_code_metrics`.
    StatusCodeMetrics,
    /// For requests whose effective prometheus plugin has `latency_metrics`.
    LatencyMetrics,
    /// For requests whose effective prometheus plugin has `bandwidth_metrics`.
    BandwidthMetrics,
    /// When any enabled prometheus plugin instance has `upstream_health_metrics` (Kong
    /// treats this flag as global).
    UpstreamHealthMetrics,
}

impl Gate {
    fn describe(self) -> &'static str {
        match self {
            Gate::Always => "always",
            Gate::StatusCodeMetrics => "`status_code_metrics`",
            Gate::LatencyMetrics => "`latency_metrics`",
            Gate::BandwidthMetrics => "`bandwidth_metrics`",
            Gate::UpstreamHealthMetrics => "`upstream_health_metrics` (global)",
        }
    }
}

/// One metric family: the single source of truth for its name, type, labels and help.
#[derive(Debug)]
pub struct FamilySpec {
    pub name: &'static str,
    pub kind: MetricType,
    /// Label names in the order they are printed (Kong's order for Kong families).
    pub labels: &'static [&'static str],
    pub origin: Origin,
    pub gate: Gate,
    /// One sentence; also the `# HELP` text.
    pub help: &'static str,
}

macro_rules! family {
    ($id:ident, $name:literal, $kind:ident, [$($label:literal),*], $origin:ident, $gate:ident, $help:literal) => {
        pub const $id: FamilySpec = FamilySpec {
            name: $name,
            kind: MetricType::$kind,
            labels: &[$($label),*],
            origin: Origin::$origin,
            gate: Gate::$gate,
            help: $help,
        };
    };
}

/// The families, as constants the encoder refers to. See [`FAMILIES`] for the list.
pub mod families {
    use super::{FamilySpec, Gate, MetricType, Origin};

    family! { KONG_HTTP_REQUESTS, "kong_http_requests_total", Counter, ["service", "route", "code", "source", "workspace", "consumer"], Kong, StatusCodeMetrics,
    "HTTP status codes per service/route in Kong (source: service = the upstream answered, kong = the gateway did)." }
    family! { KONG_KONG_LATENCY, "kong_kong_latency_ms", Histogram, ["service", "route", "workspace"], Kong, LatencyMetrics,
    "Latency added by the gateway itself (request latency minus upstream time), in milliseconds." }
    family! { KONG_UPSTREAM_LATENCY, "kong_upstream_latency_ms", Histogram, ["service", "route", "workspace"], Kong, LatencyMetrics,
    "Time from sending the final attempt upstream to its response header, in milliseconds." }
    family! { KONG_REQUEST_LATENCY, "kong_request_latency_ms", Histogram, ["service", "route", "workspace"], Kong, LatencyMetrics,
    "Total request latency, first byte in to last byte out, in milliseconds." }
    family! { KONG_BANDWIDTH, "kong_bandwidth_bytes", Counter, ["service", "route", "direction", "workspace", "consumer"], Kong, BandwidthMetrics,
    "Body bytes per service/route (ingress = request bodies read, egress = response bodies written)." }
    family! { KONG_UPSTREAM_TARGET_HEALTH, "kong_upstream_target_health", Gauge, ["upstream", "target", "address", "state", "subsystem"], Kong, UpstreamHealthMetrics,
    "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated." }
    family! { KONG_NODE_INFO, "kong_node_info", Gauge, ["node_id", "version"], Kong, Always,
    "Node metadata (always 1); version is Sluice's version." }
    family! { KONG_NGINX_REQUESTS, "kong_nginx_requests_total", Gauge, ["node_id", "subsystem"], Kong, Always,
    "Number of proxied requests handled by this node since it started, routed or not." }
    family! { KONG_NGINX_CONNECTIONS, "kong_nginx_connections_total", Gauge, ["node_id", "subsystem", "state"], Kong, Always,
    "Client connections by state: accepted, handled (accepted and served), active (open now), total (requests)." }
    family! { KONG_DATASTORE_REACHABLE, "kong_datastore_reachable", Gauge, [], Kong, Always,
    "1 once a declarative configuration is loaded (Sluice is DB-less: the configuration is its datastore), else 0." }

    family! { SLUICE_BUILD_INFO, "sluice_build_info", Gauge, ["version"], Sluice, Always,
    "Build metadata (always 1)." }
    family! { SLUICE_CONFIG_HASH_INFO, "sluice_config_hash_info", Gauge, ["hash"], Sluice, Always,
    "Hash of the configuration currently running (always 1; exactly one series)." }
    family! { SLUICE_CONFIG_RELOADS, "sluice_config_reloads_total", Counter, ["result"], Sluice, Always,
    "Configuration reload attempts by result (success, failure)." }
    family! { SLUICE_CONFIG_LAST_RELOAD_SUCCESSFUL, "sluice_config_last_reload_successful", Gauge, [], Sluice, Always,
    "1 when the last reload attempt succeeded (or none was attempted), 0 when it failed." }
    family! { SLUICE_HTTP_REQUESTS, "sluice_http_requests_total", Counter, ["service", "route", "class", "source"], Sluice, Always,
    "Finished requests by status class (1xx..5xx, other) and by who produced the response (upstream, gateway); unrouted requests have empty service and route." }
    family! { SLUICE_GATEWAY_ERRORS, "sluice_gateway_errors_total", Counter, ["kind"], Sluice, Always,
    "Error responses the gateway generated itself, by error kind." }
    family! { SLUICE_UPSTREAM_ATTEMPTS, "sluice_upstream_attempts_total", Counter, ["upstream", "tier", "region", "result"], Sluice, Always,
    "Attempts (first tries, retries and hedges) sent to each tier and region, by result." }
    family! { SLUICE_RETRIES, "sluice_retries_total", Counter, ["upstream", "outcome", "cross_region"], Sluice, Always,
    "Retries by outcome (success = a non-5xx response, failure, budget_exhausted = wanted but refused) and whether the retry went to another region than the first attempt." }
    family! { SLUICE_RETRY_BUDGET_EXHAUSTED, "sluice_retry_budget_exhausted_total", Counter, ["upstream"], Sluice, Always,
    "Requests that wanted a retry the upstream's retry budget refused." }
    family! { SLUICE_TRY_TIMEOUTS, "sluice_try_timeouts_total", Counter, ["upstream"], Sluice, Always,
    "Attempts that ended in a connect, write or read timeout." }
    family! { SLUICE_HEDGED_REQUESTS, "sluice_hedged_requests_total", Counter, ["upstream"], Sluice, Always,
    "Requests for which a hedged attempt was started." }
    family! { SLUICE_CROSSED_REGION, "sluice_requests_crossed_region_total", Counter, ["upstream"], Sluice, Always,
    "Requests where a retry or hedge went to another region than the first attempt." }
    family! { SLUICE_CROSSED_TIER, "sluice_requests_crossed_tier_total", Counter, ["upstream"], Sluice, Always,
    "Requests where a retry went to a less preferred tier than the first attempt." }
    family! { SLUICE_PROBES, "sluice_probes_total", Counter, ["upstream", "tier", "region", "result"], Sluice, Always,
    "Active health probes by result (success, http_failure, tcp_failure, timeout, ignored = a status in neither list)." }
    family! { SLUICE_HEALTH_TRANSITIONS, "sluice_health_transitions_total", Counter, ["upstream", "to"], Sluice, Always,
    "Address health changes (to = healthy, unhealthy)." }
    family! { SLUICE_DECISIONS, "sluice_decisions_total", Counter, ["upstream", "kind"], Sluice, Always,
    "Decision-log records by kind (failover, spill, failback_*, panic_*, ejection*, operator, config_reload)." }
    family! { SLUICE_FAILOVERS, "sluice_failovers_total", Counter, ["upstream"], Sluice, Always,
    "Failover decisions: traffic moved off the preferred tier." }
    family! { SLUICE_FAILBACKS, "sluice_failbacks_total", Counter, ["upstream"], Sluice, Always,
    "Completed failbacks: the preferred tier carries its full share again." }
    family! { SLUICE_PANICS, "sluice_panics_total", Counter, ["upstream"], Sluice, Always,
    "Entries into panic mode (too little healthy capacity; health ignored)." }
    family! { SLUICE_EJECTIONS, "sluice_ejections_total", Counter, ["upstream"], Sluice, Always,
    "Outlier ejections: addresses taken out because real traffic failed." }
    family! { SLUICE_PASSIVE_EVENTS_DROPPED, "sluice_passive_events_dropped_total", Counter, [], Sluice, Always,
    "Passive health events dropped because the driver's channel was full." }
    family! { SLUICE_PROBES_COALESCED, "sluice_probes_coalesced_total", Counter, [], Sluice, Always,
    "Active probes merged into one of the same address still waiting to start: probes fall due faster than `concurrency` lets them run." }
    family! { SLUICE_TLS_HANDSHAKES, "sluice_tls_handshakes_total", Counter, ["result", "protocol"], Sluice, Always,
    "Handshakes on the proxy's TLS listeners by result (ok, failed, timeout, plain_http = plain HTTP sent to the TLS port) and, when ok, the negotiated version (TLSv1.3, TLSv1.2)." }
    family! { SLUICE_UPSTREAM_MODE, "sluice_upstream_mode", Gauge, ["upstream", "mode"], Sluice, Always,
    "Traffic mode per upstream, one series per mode (normal, failed_over, failing_back, panic, unavailable); the current one is 1." }
    family! { SLUICE_UPSTREAM_ACTIVE_TIER, "sluice_upstream_active_tier", Gauge, ["upstream"], Sluice, Always,
    "Most preferred tier currently receiving traffic (0 = primary); -1 when no tier is." }
    family! { SLUICE_UPSTREAM_BALANCER_HEALTHY, "sluice_upstream_balancer_healthy", Gauge, ["upstream"], Sluice, Always,
    "Kong's balancer health: 1 when the available weight share is above the upstream's healthchecks.threshold." }
    family! { SLUICE_UPSTREAM_TRAFFIC_SHARE, "sluice_upstream_traffic_share_ratio", Gauge, ["upstream", "tier", "region"], Sluice, Always,
    "Planned share (0..1) of new requests per tier and region, from the current split and effective weights." }
    family! { SLUICE_UPSTREAM_EJECTED, "sluice_upstream_ejected_addresses", Gauge, ["upstream"], Sluice, Always,
    "Addresses currently ejected by outlier detection." }
    family! { SLUICE_TARGET_STATE, "sluice_target_state", Gauge, ["upstream", "target", "address", "region", "tier", "state"], Sluice, Always,
    "Routability per address, one series per state (available, unhealthy, ejected, drained, zero_weight, dns_error); the current one is 1." }
    family! { SLUICE_TARGET_EWMA, "sluice_target_ewma_latency_seconds", Gauge, ["upstream", "target", "address", "region", "tier"], Sluice, Always,
    "Peak-EWMA response latency per address in seconds, as last updated by a response (not decayed to scrape time); absent until the first response." }
    family! { SLUICE_TARGET_IN_FLIGHT, "sluice_target_in_flight_requests", Gauge, ["upstream", "target", "address", "region", "tier"], Sluice, Always,
    "Requests in flight to each address." }
}

use families::*;

/// Every family this module can export, in exposition order.
pub const FAMILIES: &[&FamilySpec] = &[
    &KONG_HTTP_REQUESTS,
    &KONG_KONG_LATENCY,
    &KONG_UPSTREAM_LATENCY,
    &KONG_REQUEST_LATENCY,
    &KONG_BANDWIDTH,
    &KONG_UPSTREAM_TARGET_HEALTH,
    &KONG_NODE_INFO,
    &KONG_NGINX_REQUESTS,
    &KONG_NGINX_CONNECTIONS,
    &KONG_DATASTORE_REACHABLE,
    &SLUICE_BUILD_INFO,
    &SLUICE_CONFIG_HASH_INFO,
    &SLUICE_CONFIG_RELOADS,
    &SLUICE_CONFIG_LAST_RELOAD_SUCCESSFUL,
    &SLUICE_HTTP_REQUESTS,
    &SLUICE_GATEWAY_ERRORS,
    &SLUICE_UPSTREAM_ATTEMPTS,
    &SLUICE_RETRIES,
    &SLUICE_RETRY_BUDGET_EXHAUSTED,
    &SLUICE_TRY_TIMEOUTS,
    &SLUICE_HEDGED_REQUESTS,
    &SLUICE_CROSSED_REGION,
    &SLUICE_CROSSED_TIER,
    &SLUICE_PROBES,
    &SLUICE_HEALTH_TRANSITIONS,
    &SLUICE_DECISIONS,
    &SLUICE_FAILOVERS,
    &SLUICE_FAILBACKS,
    &SLUICE_PANICS,
    &SLUICE_EJECTIONS,
    &SLUICE_PASSIVE_EVENTS_DROPPED,
    &SLUICE_PROBES_COALESCED,
    &SLUICE_TLS_HANDSHAKES,
    &SLUICE_UPSTREAM_MODE,
    &SLUICE_UPSTREAM_ACTIVE_TIER,
    &SLUICE_UPSTREAM_BALANCER_HEALTHY,
    &SLUICE_UPSTREAM_TRAFFIC_SHARE,
    &SLUICE_UPSTREAM_EJECTED,
    &SLUICE_TARGET_STATE,
    &SLUICE_TARGET_EWMA,
    &SLUICE_TARGET_IN_FLIGHT,
];

/// Kong's `kong_kong_latency_ms` buckets in ms (3.9; 3000 and 6000 arrived in 3.8.1/3.9.0).
pub const KONG_LATENCY_BUCKETS_MS: &[u64] = &[
    1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000,
];

/// Kong's buckets for `kong_upstream_latency_ms` and `kong_request_latency_ms`, in ms.
pub const UPSTREAM_LATENCY_BUCKETS_MS: &[u64] = &[
    25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000,
];

/// Status codes that get their own `code` label value in `kong_http_requests_total`:
/// the IANA registry plus the nginx-specific codes Kong itself logs (444, 494-497, 499).
/// Any other code is counted as `code="other"`, so an upstream inventing codes cannot
/// create series. Sorted, for binary search.
pub const STATUS_CODES: &[u16] = &[
    100, 101, 102, 103, //
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, //
    300, 301, 302, 303, 304, 305, 307, 308, //
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418,
    421, 422, 423, 424, 425, 426, 428, 429, 431, 444, 451, 494, 495, 496, 497, 499, //
    500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// Slots per source in the status-code table: one per listed code plus `other`.
const CODE_SLOTS: usize = STATUS_CODES.len() + 1;

fn status_slot(code: u16) -> usize {
    STATUS_CODES
        .binary_search(&code)
        .unwrap_or(STATUS_CODES.len())
}

fn status_label(slot: usize) -> String {
    STATUS_CODES
        .get(slot)
        .map_or_else(|| OTHER.to_owned(), |code| code.to_string())
}

/// `class` label values of `sluice_http_requests_total`, indexed by [`class_slot`].
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", OTHER];

fn class_slot(code: u16) -> usize {
    match code {
        100..=599 => usize::from(code / 100 - 1),
        _ => CLASSES.len() - 1,
    }
}

/// `source` label values of `sluice_http_requests_total`, indexed by [`source_slot`].
const SLUICE_SOURCES: [&str; 2] = ["upstream", "gateway"];
/// Kong's `source` label values, indexed by [`source_slot`].
const KONG_SOURCES: [&str; 2] = ["service", "kong"];

fn source_slot(source: ResponseSource) -> usize {
    match source {
        ResponseSource::Upstream => 0,
        ResponseSource::Gateway => 1,
    }
}

/// `result` label values of `sluice_upstream_attempts_total`, indexed by [`attempt_slot`].
const ATTEMPT_RESULTS: [&str; 6] = [
    "response",
    "response_5xx",
    "connect_failed",
    "timeout",
    "broken",
    "cancelled",
];

fn attempt_slot(outcome: TryOutcome) -> usize {
    match outcome {
        TryOutcome::Status(code) if code < 500 => 0,
        TryOutcome::Status(_) => 1,
        TryOutcome::ConnectFailed => 2,
        TryOutcome::Timeout => 3,
        TryOutcome::Broken => 4,
        TryOutcome::Cancelled => 5,
    }
}

/// `result` label values of `sluice_probes_total`: lua-resty-healthcheck's counters, plus
/// `ignored` for an HTTP status in neither the healthy nor the unhealthy list.
const PROBE_RESULTS: [&str; 5] = [
    "success",
    "http_failure",
    "tcp_failure",
    "timeout",
    "ignored",
];
const PROBE_SUCCESS: usize = 0;
const PROBE_HTTP_FAILURE: usize = 1;
const PROBE_TCP_FAILURE: usize = 2;
const PROBE_TIMEOUT: usize = 3;
const PROBE_IGNORED: usize = 4;

/// `outcome` label values of `sluice_retries_total`.
const RETRY_OUTCOMES: [&str; 3] = ["success", "failure", "budget_exhausted"];
const RETRY_SUCCESS: usize = 0;
const RETRY_FAILURE: usize = 1;
const RETRY_BUDGET_EXHAUSTED: usize = 2;

const MODES: [(Mode, &str); 5] = [
    (Mode::Normal, "normal"),
    (Mode::FailedOver, "failed_over"),
    (Mode::FailingBack, "failing_back"),
    (Mode::Panic, "panic"),
    (Mode::Unavailable, "unavailable"),
];

/// Kong's four target states, in Kong's order.
const KONG_HEALTH_STATES: [&str; 4] = ["healthchecks_off", "healthy", "unhealthy", "dns_error"];

fn kong_health_state(health: HealthStatus) -> &'static str {
    match health {
        HealthStatus::HealthchecksOff => "healthchecks_off",
        HealthStatus::Healthy => "healthy",
        HealthStatus::Unhealthy => "unhealthy",
        HealthStatus::DnsError => "dns_error",
    }
}

/// `state` label values of `sluice_target_state`.
const TARGET_STATES: [&str; 6] = [
    "available",
    "unhealthy",
    "ejected",
    "drained",
    "zero_weight",
    "dns_error",
];

fn target_state(view: &AddressView) -> &'static str {
    if view.health == HealthStatus::DnsError {
        return "dns_error";
    }
    match view.unavailable {
        None => "available",
        Some(Unavailable::Unhealthy) => "unhealthy",
        Some(Unavailable::Ejected { .. }) => "ejected",
        Some(Unavailable::Drained) => "drained",
        Some(Unavailable::ZeroWeight) => "zero_weight",
    }
}

/// `None` only if a kind were missing from `DecisionKind::ALL`; such a record is then not
/// counted rather than counted as some other kind.
fn decision_slot(kind: DecisionKind) -> Option<usize> {
    DecisionKind::ALL.iter().position(|k| *k == kind)
}

/// As [`decision_slot`], for `ErrorKind::ALL`.
fn error_slot(kind: ErrorKind) -> Option<usize> {
    ErrorKind::ALL.iter().position(|k| *k == kind)
}

/// The Markdown table of every family, embedded in `docs/metrics.md` between the
/// `<!-- BEGIN FAMILIES -->` and `<!-- END FAMILIES -->` markers.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    for (title, origin) in [
        ("Kong-compatible families", Origin::Kong),
        ("Sluice's own families", Origin::Sluice),
    ] {
        let _ = writeln!(out, "### {title}\n");
        out.push_str("| name | type | labels | exported | meaning |\n");
        out.push_str("|---|---|---|---|---|\n");
        for spec in FAMILIES.iter().filter(|f| f.origin == origin) {
            let labels = if spec.labels.is_empty() {
                "—".to_owned()
            } else {
                spec.labels.join(", ")
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                spec.name,
                spec.kind.as_str(),
                labels,
                spec.gate.describe(),
                spec.help.replace('|', "\\|")
            );
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Lock-free cells
// ---------------------------------------------------------------------------------------

/// A monotonically increasing count.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    #[inline]
    fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn counters<const N: usize>() -> [Counter; N] {
    std::array::from_fn(|_| Counter::default())
}

/// Cap on one observation's contribution to a histogram's sum: a day. No real request
/// lasts that long, and the cap keeps one absurd duration from wrapping the `u64` sum.
const MAX_OBSERVATION_US: u64 = 24 * 3600 * 1_000_000;

/// A histogram over fixed millisecond bounds, without a lock: one counter per bucket
/// (not cumulative; the encoder accumulates) plus the sum in microseconds. The count is
/// the sum of the buckets, so `_count` always equals the `+Inf` bucket.
#[derive(Debug)]
struct Histogram {
    bounds_ms: &'static [u64],
    /// `bounds_ms.len() + 1` entries; the last is the `+Inf` overflow.
    buckets: Box<[Counter]>,
    sum_us: Counter,
}

impl Histogram {
    fn new(bounds_ms: &'static [u64]) -> Self {
        Histogram {
            bounds_ms,
            buckets: (0..=bounds_ms.len()).map(|_| Counter::default()).collect(),
            sum_us: Counter::default(),
        }
    }

    #[inline]
    fn observe(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        // Prometheus buckets are inclusive upper bounds: `value <= le`.
        let slot = self
            .bounds_ms
            .partition_point(|&bound_ms| bound_ms.saturating_mul(1000) < us);
        if let Some(bucket) = self.buckets.get(slot) {
            bucket.inc();
        }
        self.sum_us.add(us.min(MAX_OBSERVATION_US));
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum()
    }
}

// ---------------------------------------------------------------------------------------
// Cells per label set, resolved when a configuration loads
// ---------------------------------------------------------------------------------------

/// Kong's per-request families for one (service, route) label pair.
#[derive(Debug)]
struct KongRouteCells {
    /// `[source][status slot]`.
    requests: [[Counter; CODE_SLOTS]; 2],
    kong_latency: Histogram,
    upstream_latency: Histogram,
    request_latency: Histogram,
    /// `[ingress, egress]`.
    bandwidth: [Counter; 2],
}

impl KongRouteCells {
    fn new() -> Self {
        KongRouteCells {
            requests: [counters(), counters()],
            kong_latency: Histogram::new(KONG_LATENCY_BUCKETS_MS),
            upstream_latency: Histogram::new(UPSTREAM_LATENCY_BUCKETS_MS),
            request_latency: Histogram::new(UPSTREAM_LATENCY_BUCKETS_MS),
            bandwidth: counters(),
        }
    }
}

/// `sluice_http_requests_total` for one (service, route) label pair: `[source][class]`.
#[derive(Debug, Default)]
struct RequestCells {
    by_source_class: [[Counter; CLASSES.len()]; 2],
}

impl RequestCells {
    #[inline]
    fn record(&self, status: u16, source: ResponseSource) {
        if let Some(cell) = self
            .by_source_class
            .get(source_slot(source))
            .and_then(|row| row.get(class_slot(status)))
        {
            cell.inc();
        }
    }
}

/// Counters of one upstream that are not split by tier or region.
#[derive(Debug, Default)]
struct UpstreamCounters {
    /// `[outcome][cross_region as usize]`.
    retries: [[Counter; 2]; RETRY_OUTCOMES.len()],
    budget_exhausted: Counter,
    try_timeouts: Counter,
    hedged: Counter,
    crossed_region: Counter,
    crossed_tier: Counter,
    decisions: [Counter; DecisionKind::ALL.len()],
    /// `[to healthy, to unhealthy]`.
    health_transitions: [Counter; 2],
}

/// Counters of one (upstream, tier, region).
#[derive(Debug, Default)]
struct GroupCells {
    attempts: [Counter; ATTEMPT_RESULTS.len()],
    probes: [Counter; PROBE_RESULTS.len()],
}

/// Which of Kong's per-request families a route records, from its effective plugin.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KongFlags {
    pub status_code_metrics: bool,
    pub latency_metrics: bool,
    pub bandwidth_metrics: bool,
}

impl KongFlags {
    fn from_plugin(config: &PrometheusConfig) -> Self {
        KongFlags {
            status_code_metrics: config.status_code_metrics,
            latency_metrics: config.latency_metrics,
            bandwidth_metrics: config.bandwidth_metrics,
        }
    }

    fn any(self) -> bool {
        self.status_code_metrics || self.latency_metrics || self.bandwidth_metrics
    }
}

/// One configured route as the hot path sees it.
#[derive(Debug)]
struct RouteEntry {
    label: Arc<str>,
    /// Kong records nothing for a route without a service.
    has_service: bool,
    sluice: Arc<RequestCells>,
    /// Present when the route's effective prometheus plugin turns on any per-request
    /// family (and the route has a service).
    kong: Option<(KongFlags, Arc<KongRouteCells>)>,
    /// Index into `Generation::upstreams`.
    upstream: Option<usize>,
}

/// One configured target, for attributing probes and labelling snapshot gauges.
#[derive(Debug)]
struct TargetEntry {
    /// As configured (`host:port`): Kong's `target` label.
    target: Arc<str>,
    host: String,
    port: u16,
    /// Index into `UpstreamEntry::groups`.
    group: usize,
}

/// One (tier, region) of an upstream.
#[derive(Debug)]
struct GroupEntry {
    tier: u8,
    tier_label: Arc<str>,
    region: Arc<str>,
    cells: Arc<GroupCells>,
}

/// One configured upstream.
#[derive(Debug)]
struct UpstreamEntry {
    name: Arc<str>,
    counters: Arc<UpstreamCounters>,
    /// Sorted by (tier, region); small (a handful), so the hot path scans it.
    groups: Vec<GroupEntry>,
    /// Attempts and probes whose (tier, region) is not configured (a reload race).
    unknown_group: Arc<GroupCells>,
    targets: Vec<TargetEntry>,
    /// `(port, index into targets)`, sorted: [`UpstreamEntry::target_of`] runs for every
    /// probe result, and scanning every target comparing host strings was O(targets) per
    /// probe (most of the metrics' cost at 10,000 probes a second; BENCHMARKS.md, "Active
    /// probe cost"). Targets of one upstream usually share a host and differ by port.
    targets_by_port: Vec<(u16, u32)>,
    healthy_probe_statuses: Vec<u16>,
    unhealthy_probe_statuses: Vec<u16>,
}

impl UpstreamEntry {
    #[inline]
    fn group(&self, tier: u8, region: &str) -> &GroupCells {
        self.groups
            .iter()
            .find(|g| g.tier == tier && &*g.region == region)
            .map_or(&*self.unknown_group, |g| &*g.cells)
    }

    /// The configured target an address came from: hostname and port first (what the
    /// core keys addresses by), then hostname alone (SRV answers carry their own port).
    fn target_of(&self, address: &AddressKey) -> Option<&TargetEntry> {
        let host = &*address.hostname;
        let port = address.addr.port();
        // Entries of one port are in configuration order: the first match is the one a
        // scan of `targets` finds.
        let first = self.targets_by_port.partition_point(|(p, _)| *p < port);
        self.targets_by_port[first..]
            .iter()
            .take_while(|(p, _)| *p == port)
            .filter_map(|(_, i)| self.targets.get(*i as usize))
            .find(|t| t.host == host)
            .or_else(|| self.targets.iter().find(|t| t.host == host))
    }
}

/// Everything resolved from one configuration generation. Immutable once built; the hot
/// path reaches it through one `arc-swap` load.
#[derive(Debug, Default)]
struct Generation {
    loaded: bool,
    /// Indexed like `Config::routes`.
    routes: Vec<RouteEntry>,
    /// Indexed like `Config::upstreams`.
    upstreams: Vec<UpstreamEntry>,
    upstream_by_name: BTreeMap<Arc<str>, usize>,
    /// For encoding and for reuse by the next generation, keyed by (service, route).
    kong_cells: BTreeMap<(Arc<str>, Arc<str>), Arc<KongRouteCells>>,
    sluice_cells: BTreeMap<(Arc<str>, Arc<str>), Arc<RequestCells>>,
    upstream_health_metrics: bool,
}

impl Generation {
    #[inline]
    fn route(&self, index: u32, label: &Arc<str>) -> Option<&RouteEntry> {
        let same = |entry: &&RouteEntry| Arc::ptr_eq(&entry.label, label) || entry.label == *label;
        // The record's index refers to the proxy's configuration generation; confirm it
        // against the label so a request finishing across a reload is never credited to
        // whichever route now has that index.
        usize::try_from(index)
            .ok()
            .and_then(|i| self.routes.get(i))
            .filter(same)
            .or_else(|| self.routes.iter().find(same))
    }

    #[inline]
    fn upstream(&self, hint: Option<usize>, name: &str) -> Option<&UpstreamEntry> {
        hint.and_then(|i| self.upstreams.get(i))
            .filter(|u| &*u.name == name)
            .or_else(|| {
                self.upstream_by_name
                    .get(name)
                    .and_then(|&i| self.upstreams.get(i))
            })
    }

    fn build(config: &Config, previous: &Generation, unrouted: Arc<RequestCells>) -> Generation {
        let mut next = Generation {
            loaded: true,
            ..Generation::default()
        };

        // Upstreams first: routes point at them.
        for (index, spec) in config.upstreams.iter().enumerate() {
            let old = previous
                .upstream_by_name
                .get(&spec.name)
                .and_then(|&i| previous.upstreams.get(i));
            let counters = old.map_or_else(Default::default, |u| u.counters.clone());
            let unknown_group = old.map_or_else(Default::default, |u| u.unknown_group.clone());
            // The (tier, region) pairs the targets declare, sorted for stable output.
            let mut keys: Vec<(u8, Arc<str>)> = spec
                .targets
                .iter()
                .map(|t| (t.tier, t.region.clone()))
                .collect();
            keys.sort();
            keys.dedup();
            let groups: Vec<GroupEntry> = keys
                .iter()
                .map(|(tier, region)| GroupEntry {
                    tier: *tier,
                    tier_label: tier.to_string().into(),
                    region: region.clone(),
                    cells: old
                        .and_then(|u| {
                            u.groups
                                .iter()
                                .find(|g| g.tier == *tier && g.region == *region)
                        })
                        .map_or_else(Default::default, |g| g.cells.clone()),
                })
                .collect();
            let targets = spec
                .targets
                .iter()
                .map(|t| TargetEntry {
                    target: t.target.as_str().into(),
                    host: t.host.clone(),
                    port: t.port,
                    group: keys
                        .binary_search(&(t.tier, t.region.clone()))
                        .unwrap_or_default(),
                })
                .collect::<Vec<_>>();
            let mut targets_by_port: Vec<(u16, u32)> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| (t.port, i as u32))
                .collect();
            targets_by_port.sort_unstable();

            next.upstream_by_name.insert(spec.name.clone(), index);
            next.upstreams.push(UpstreamEntry {
                name: spec.name.clone(),
                counters,
                groups,
                unknown_group,
                targets,
                targets_by_port,
                healthy_probe_statuses: spec.healthchecks.active.healthy_http_statuses.clone(),
                unhealthy_probe_statuses: spec.healthchecks.active.unhealthy_http_statuses.clone(),
            });
        }

        // The prometheus plugin instances, by scope. Kong runs the most specific enabled
        // instance for a request (route, then service, then global); a disabled instance
        // does not exist as far as the request is concerned.
        let mut global: Option<&PrometheusConfig> = None;
        let mut by_service: BTreeMap<usize, &PrometheusConfig> = BTreeMap::new();
        let mut by_route: BTreeMap<usize, &PrometheusConfig> = BTreeMap::new();
        for plugin in config.plugins.iter().filter(|p| p.enabled) {
            let PluginConfig::Prometheus(prometheus) = &plugin.config;
            // Kong: upstream_health_metrics is on for the node if any instance enables it.
            next.upstream_health_metrics |= prometheus.upstream_health_metrics;
            match plugin.scope {
                PluginScope::Global => global = Some(prometheus),
                PluginScope::Service(s) => {
                    by_service.insert(s, prometheus);
                }
                PluginScope::Route(r) => {
                    by_route.insert(r, prometheus);
                }
            }
        }

        let empty: Arc<str> = Arc::from("");
        for (index, route) in config.routes.iter().enumerate() {
            let label: Arc<str> = route.name.as_deref().unwrap_or(&route.id).into();
            let service = route.service.and_then(|s| config.services.get(s));
            let service_label: Arc<str> = service.map_or_else(
                || empty.clone(),
                |s| s.name.as_deref().unwrap_or(&s.host).into(),
            );
            let key = (service_label.clone(), label.clone());

            let sluice = next
                .sluice_cells
                .get(&key)
                .or_else(|| previous.sluice_cells.get(&key))
                .cloned()
                .unwrap_or_default();
            next.sluice_cells.insert(key.clone(), sluice.clone());

            let effective = by_route
                .get(&index)
                .or_else(|| route.service.and_then(|s| by_service.get(&s)))
                .copied()
                .or(global);
            let flags = effective.map(KongFlags::from_plugin).unwrap_or_default();
            let kong = if service.is_some() && flags.any() {
                let cells = next
                    .kong_cells
                    .get(&key)
                    .or_else(|| previous.kong_cells.get(&key))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(KongRouteCells::new()));
                next.kong_cells.insert(key, cells.clone());
                Some((flags, cells))
            } else {
                None
            };

            next.routes.push(RouteEntry {
                label,
                has_service: service.is_some(),
                sluice,
                kong,
                upstream: service.and_then(|s| s.upstream),
            });
        }
        // Requests no route matched: one set of cells for the life of the process.
        next.sluice_cells.insert((empty.clone(), empty), unrouted);
        next
    }
}

// ---------------------------------------------------------------------------------------
// Process-wide cells
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct ProcessCells {
    requests: Counter,
    connections_accepted: Counter,
    connections_closed: Counter,
    gateway_errors: [Counter; ErrorKind::ALL.len()],
    unrouted: Arc<RequestCells>,
    reloads_ok: Counter,
    reloads_failed: Counter,
    last_reload_ok: AtomicBool,
    events_dropped: Counter,
    probes_coalesced: Counter,
    /// Indexed like [`TlsHandshake::ALL`].
    tls_handshakes: [Counter; TlsHandshake::ALL.len()],
}

/// How a handshake on a TLS listener ended (`sluice_tls_handshakes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsHandshake {
    Tls13,
    Tls12,
    /// A bad ClientHello, an alert, a reset, a certificate the resolver could not give.
    Failed,
    /// Not finished within the listener's handshake timeout.
    TimedOut,
    /// Plain HTTP sent to the TLS port (answered with nginx's 400).
    PlainHttp,
}

impl TlsHandshake {
    pub const ALL: [TlsHandshake; 5] = [
        TlsHandshake::Tls13,
        TlsHandshake::Tls12,
        TlsHandshake::Failed,
        TlsHandshake::TimedOut,
        TlsHandshake::PlainHttp,
    ];

    /// The `result` and `protocol` label values.
    fn labels(self) -> [&'static str; 2] {
        match self {
            TlsHandshake::Tls13 => ["ok", "TLSv1.3"],
            TlsHandshake::Tls12 => ["ok", "TLSv1.2"],
            TlsHandshake::Failed => ["failed", ""],
            TlsHandshake::TimedOut => ["timeout", ""],
            TlsHandshake::PlainHttp => ["plain_http", ""],
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

// ---------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------

/// The gateway's metrics. `Send + Sync`; share it as `Arc<Metrics>`.
///
/// Call [`on_config`](Metrics::on_config) when a configuration generation goes live,
/// [`on_request`](Metrics::on_request) when a request finishes, the other `on_*` methods
/// as the driver reports events, and [`encode`](Metrics::encode) to serve `GET /metrics`.
#[derive(Debug)]
pub struct Metrics {
    generation: ArcSwap<Generation>,
    /// Serialises `on_config` so two concurrent reloads cannot both derive from the same
    /// previous generation and drop each other's cells. Never taken on the request path.
    reload_lock: Mutex<()>,
    process: ProcessCells,
    config_hash: ArcSwap<String>,
    node_id: String,
    version: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with a random node id (Kong generates one per node the same way when
    /// its prefix holds none). Use [`with_node_id`](Metrics::with_node_id) for a stable one.
    pub fn new() -> Self {
        Metrics::with_node_id(&random_node_id())
    }

    /// A registry reporting `node_id` in Kong's node-level families.
    pub fn with_node_id(node_id: &str) -> Self {
        let unrouted: Arc<RequestCells> = Arc::default();
        Metrics {
            generation: ArcSwap::from_pointee(Generation::default()),
            reload_lock: Mutex::new(()),
            process: ProcessCells {
                requests: Counter::default(),
                connections_accepted: Counter::default(),
                connections_closed: Counter::default(),
                gateway_errors: counters(),
                unrouted,
                reloads_ok: Counter::default(),
                reloads_failed: Counter::default(),
                last_reload_ok: AtomicBool::new(true),
                events_dropped: Counter::default(),
                probes_coalesced: Counter::default(),
                tls_handshakes: counters(),
            },
            config_hash: ArcSwap::from_pointee(String::new()),
            node_id: node_id.to_owned(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// The node id reported in `kong_node_info` and the nginx families.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A configuration generation went live: resolve every label set it implies, decide
    /// which Kong families each route records, and swap the result in. Cells whose label
    /// set survives keep their counts.
    pub fn on_config(&self, config: &Config) {
        let _serialised = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = self.generation.load_full();
        let next = Generation::build(config, &previous, self.process.unrouted.clone());
        self.generation.store(Arc::new(next));
        self.config_hash.store(Arc::new(config.hash.clone()));
    }

    /// A request finished. The hot path: relaxed atomic adds on pre-resolved cells.
    pub fn on_request(&self, rec: &RequestRecord) {
        self.process.requests.inc();
        if let Some(kind) = rec.error
            && let Some(cell) = error_slot(kind).and_then(|i| self.process.gateway_errors.get(i))
        {
            cell.inc();
        }

        let generation = self.generation.load();
        let route = rec
            .route
            .as_ref()
            .and_then(|r| generation.route(r.index, &r.label));
        let Some(route) = route else {
            self.process.unrouted.record(rec.status, rec.source);
            return;
        };
        route.sluice.record(rec.status, rec.source);
        if let Some((flags, cells)) = &route.kong
            && route.has_service
        {
            record_kong(*flags, cells, rec);
        }

        let Some(upstream) = rec
            .upstream
            .as_deref()
            .and_then(|name| generation.upstream(route.upstream, name))
        else {
            return;
        };
        record_upstream(upstream, rec);
    }

    /// The decision core logged a traffic-split decision.
    pub fn on_decision(&self, decision: &DecisionRecord) {
        let generation = self.generation.load();
        let Some(upstream) = generation.upstream(None, &decision.upstream) else {
            // The upstream left the configuration; its series went with it.
            return;
        };
        let counters = &upstream.counters;
        if let Some(cell) = decision_slot(decision.kind).and_then(|i| counters.decisions.get(i)) {
            cell.inc();
        }
    }

    /// An address changed health state.
    pub fn on_health_changed(&self, upstream: &str, _address: &AddressKey, healthy: bool) {
        let generation = self.generation.load();
        if let Some(entry) = generation.upstream(None, upstream) {
            entry.counters.health_transitions[usize::from(!healthy)].inc();
        }
    }

    /// An active probe completed.
    pub fn on_probe(&self, upstream: &str, address: &AddressKey, outcome: ProbeOutcome) {
        let generation = self.generation.load();
        let Some(entry) = generation.upstream(None, upstream) else {
            return;
        };
        let cells = entry
            .target_of(address)
            .and_then(|t| entry.groups.get(t.group))
            .map_or(&*entry.unknown_group, |g| &*g.cells);
        let slot = match outcome {
            ProbeOutcome::TcpSuccess => PROBE_SUCCESS,
            ProbeOutcome::Status(code) if entry.healthy_probe_statuses.contains(&code) => {
                PROBE_SUCCESS
            }
            // Status 0 is an unparsable status line, an HTTP failure for Kong.
            ProbeOutcome::Status(code)
                if code == 0 || entry.unhealthy_probe_statuses.contains(&code) =>
            {
                PROBE_HTTP_FAILURE
            }
            ProbeOutcome::Status(_) => PROBE_IGNORED,
            ProbeOutcome::TcpFailure => PROBE_TCP_FAILURE,
            ProbeOutcome::Timeout => PROBE_TIMEOUT,
        };
        if let Some(cell) = cells.probes.get(slot) {
            cell.inc();
        }
    }

    /// A configuration reload was attempted. `hash` is the hash of the configuration now
    /// running when `ok` (a failed reload leaves the running configuration, and its hash,
    /// in place).
    pub fn on_reload(&self, ok: bool, hash: &str) {
        if ok {
            self.process.reloads_ok.inc();
            self.config_hash.store(Arc::new(hash.to_owned()));
        } else {
            self.process.reloads_failed.inc();
        }
        self.process.last_reload_ok.store(ok, Ordering::Relaxed);
    }

    /// A passive health event was dropped because the driver's channel was full.
    pub fn on_passive_event_dropped(&self) {
        self.process.events_dropped.inc();
    }

    /// `merged` due probes were merged into waiting ones (the prober is behind).
    pub fn on_probes_coalesced(&self, merged: u64) {
        self.process.probes_coalesced.add(merged);
    }

    /// A handshake on a TLS listener ended.
    pub fn on_tls_handshake(&self, outcome: TlsHandshake) {
        if let Some(counter) = self.process.tls_handshakes.get(outcome.slot()) {
            counter.inc();
        }
    }

    /// A client connection was accepted.
    pub fn on_connection_opened(&self) {
        self.process.connections_accepted.inc();
    }

    /// A client connection closed (in any way).
    pub fn on_connection_closed(&self) {
        self.process.connections_closed.inc();
    }

    /// The exposition in Prometheus text format 0.0.4 (serve with [`CONTENT_TYPE`]).
    /// `snapshots` are the current upstream snapshots; the gauges describing health,
    /// split, mode, EWMA and in-flight are derived from them at scrape time.
    pub fn encode(&self, snapshots: &[Arc<UpstreamSnapshot>]) -> String {
        let generation = self.generation.load();
        let mut out = Exposition::default();
        self.encode_kong(&generation, snapshots, &mut out);
        self.encode_sluice_process(&generation, &mut out);
        encode_sluice_upstreams(&generation, &mut out);
        encode_snapshots(&generation, snapshots, &mut out);
        out.text
    }

    fn encode_kong(
        &self,
        generation: &Generation,
        snapshots: &[Arc<UpstreamSnapshot>],
        out: &mut Exposition,
    ) {
        out.family(&KONG_HTTP_REQUESTS, |f| {
            for ((service, route), cells) in &generation.kong_cells {
                for (source, row) in KONG_SOURCES.iter().zip(&cells.requests) {
                    for (slot, cell) in row.iter().enumerate() {
                        let n = cell.get();
                        if n > 0 {
                            let code = status_label(slot);
                            // Sluice has no consumers, so `consumer` is always "".
                            f.sample(&[service, route, &code, source, WORKSPACE, ""], n);
                        }
                    }
                }
            }
        });
        let histograms: [(&FamilySpec, HistogramOf); 3] = [
            (&KONG_KONG_LATENCY, |c| &c.kong_latency),
            (&KONG_UPSTREAM_LATENCY, |c| &c.upstream_latency),
            (&KONG_REQUEST_LATENCY, |c| &c.request_latency),
        ];
        for (spec, pick) in histograms {
            out.family(spec, |f| {
                for ((service, route), cells) in &generation.kong_cells {
                    f.histogram(&[service, route, WORKSPACE], pick(cells));
                }
            });
        }
        out.family(&KONG_BANDWIDTH, |f| {
            for ((service, route), cells) in &generation.kong_cells {
                for (direction, cell) in ["ingress", "egress"].iter().zip(&cells.bandwidth) {
                    let n = cell.get();
                    if n > 0 {
                        f.sample(&[service, route, direction, WORKSPACE, ""], n);
                    }
                }
            }
        });
        if generation.upstream_health_metrics {
            out.family(&KONG_UPSTREAM_TARGET_HEALTH, |f| {
                for snapshot in snapshots {
                    encode_kong_target_health(generation, snapshot, f);
                }
            });
        }
        let node = self.node_id.as_str();
        out.family(&KONG_NODE_INFO, |f| f.sample(&[node, self.version], 1u64));
        let requests = self.process.requests.get();
        out.family(&KONG_NGINX_REQUESTS, |f| {
            f.sample(&[node, SUBSYSTEM], requests)
        });
        out.family(&KONG_NGINX_CONNECTIONS, |f| {
            let accepted = self.process.connections_accepted.get();
            let closed = self.process.connections_closed.get();
            f.sample(&[node, SUBSYSTEM, "accepted"], accepted);
            // nginx stops handling accepted connections only when it runs out of
            // worker_connections; Sluice serves every connection it accepts.
            f.sample(&[node, SUBSYSTEM, "handled"], accepted);
            f.sample(
                &[node, SUBSYSTEM, "active"],
                accepted.saturating_sub(closed),
            );
            f.sample(&[node, SUBSYSTEM, "total"], requests);
        });
        out.family(&KONG_DATASTORE_REACHABLE, |f| {
            f.sample(&[], u64::from(generation.loaded));
        });
    }

    fn encode_sluice_process(&self, generation: &Generation, out: &mut Exposition) {
        out.family(&SLUICE_BUILD_INFO, |f| f.sample(&[self.version], 1u64));
        let hash = self.config_hash.load();
        if !hash.is_empty() {
            out.family(&SLUICE_CONFIG_HASH_INFO, |f| {
                f.sample(&[hash.as_str()], 1u64)
            });
        }
        out.family(&SLUICE_CONFIG_RELOADS, |f| {
            f.sample(&["success"], self.process.reloads_ok.get());
            f.sample(&["failure"], self.process.reloads_failed.get());
        });
        out.family(&SLUICE_CONFIG_LAST_RELOAD_SUCCESSFUL, |f| {
            f.sample(
                &[],
                u64::from(self.process.last_reload_ok.load(Ordering::Relaxed)),
            );
        });
        out.family(&SLUICE_HTTP_REQUESTS, |f| {
            let mut cells: Vec<(&str, &str, &RequestCells)> = generation
                .sluice_cells
                .iter()
                .map(|((s, r), c)| (&**s, &**r, &**c))
                .collect();
            if !generation.loaded {
                // Before the first configuration only unrouted requests exist.
                cells.push(("", "", &self.process.unrouted));
            }
            for (service, route, cells) in cells {
                for (source, row) in SLUICE_SOURCES.iter().zip(&cells.by_source_class) {
                    for (class, cell) in CLASSES.iter().zip(row) {
                        // 2xx..5xx are always exported (the SLO ratio needs them from the
                        // first scrape); 1xx and `other` are rare, so only once seen.
                        let n = cell.get();
                        if n > 0 || matches!(*class, "2xx" | "3xx" | "4xx" | "5xx") {
                            f.sample(&[service, route, class, source], n);
                        }
                    }
                }
            }
        });
        out.family(&SLUICE_GATEWAY_ERRORS, |f| {
            for (kind, cell) in ErrorKind::ALL.iter().zip(&self.process.gateway_errors) {
                f.sample(&[kind.as_str()], cell.get());
            }
        });
        out.family(&SLUICE_PASSIVE_EVENTS_DROPPED, |f| {
            f.sample(&[], self.process.events_dropped.get());
        });
        out.family(&SLUICE_PROBES_COALESCED, |f| {
            f.sample(&[], self.process.probes_coalesced.get());
        });
        out.family(&SLUICE_TLS_HANDSHAKES, |f| {
            for (outcome, counter) in TlsHandshake::ALL.iter().zip(&self.process.tls_handshakes) {
                f.sample(&outcome.labels(), counter.get());
            }
        });
    }
}

/// Picks one of a route's three Kong histograms.
type HistogramOf = fn(&KongRouteCells) -> &Histogram;
/// Picks one of an upstream's plain counters.
type UpstreamCounterOf = fn(&UpstreamCounters) -> &Counter;

/// Kong's per-request families for one request on a route whose plugin enables them.
#[inline]
fn record_kong(flags: KongFlags, cells: &KongRouteCells, rec: &RequestRecord) {
    if flags.status_code_metrics
        && let Some(cell) = cells
            .requests
            .get(source_slot(rec.source))
            .and_then(|row| row.get(status_slot(rec.status)))
    {
        cell.inc();
    }
    if flags.latency_metrics {
        cells.request_latency.observe(rec.request_latency);
        cells.kong_latency.observe(rec.proxy_latency);
        if let Some(upstream) = rec.upstream_latency {
            cells.upstream_latency.observe(upstream);
        }
    }
    if flags.bandwidth_metrics {
        // Kong skips zero sizes, so a GET adds no ingress sample.
        if rec.bytes_in > 0 {
            cells.bandwidth[0].add(rec.bytes_in);
        }
        if rec.bytes_out > 0 {
            cells.bandwidth[1].add(rec.bytes_out);
        }
    }
}

/// Sluice's per-upstream families for one request.
#[inline]
fn record_upstream(upstream: &UpstreamEntry, rec: &RequestRecord) {
    let counters = &*upstream.counters;
    let mut first: Option<&TryRecord> = None;
    for attempt in rec.tries.iter() {
        let group = upstream.group(attempt.tier, &attempt.region);
        if let Some(cell) = group.attempts.get(attempt_slot(attempt.outcome)) {
            cell.inc();
        }
        // Hedges race the first attempt; they are not retries of it.
        if attempt.hedge {
            continue;
        }
        match first {
            None => first = Some(attempt),
            Some(original) => {
                let outcome = match attempt.outcome {
                    TryOutcome::Status(code) if code < 500 => RETRY_SUCCESS,
                    _ => RETRY_FAILURE,
                };
                let cross = usize::from(attempt.region != original.region);
                counters.retries[outcome][cross].inc();
            }
        }
    }
    if rec.retry_budget_exhausted {
        counters.retries[RETRY_BUDGET_EXHAUSTED][0].inc();
        counters.budget_exhausted.inc();
    }
    if rec.try_timeouts > 0 {
        counters.try_timeouts.add(u64::from(rec.try_timeouts));
    }
    if rec.hedged {
        counters.hedged.inc();
    }
    if rec.crossed_region {
        counters.crossed_region.inc();
    }
    if rec.crossed_tier {
        counters.crossed_tier.inc();
    }
}

fn encode_sluice_upstreams(generation: &Generation, out: &mut Exposition) {
    let groups =
        |f: &mut FamilyWriter<'_>, results: &[&str], pick: fn(&GroupCells) -> &[Counter]| {
            for upstream in &generation.upstreams {
                for group in &upstream.groups {
                    for (result, cell) in results.iter().zip(pick(&group.cells)) {
                        f.sample(
                            &[&upstream.name, &group.tier_label, &group.region, result],
                            cell.get(),
                        );
                    }
                }
                // Only when something could not be attributed, so the series is rare.
                for (result, cell) in results.iter().zip(pick(&upstream.unknown_group)) {
                    let n = cell.get();
                    if n > 0 {
                        f.sample(&[&upstream.name, OTHER, OTHER, result], n);
                    }
                }
            }
        };
    out.family(&SLUICE_UPSTREAM_ATTEMPTS, |f| {
        groups(f, &ATTEMPT_RESULTS, |g| &g.attempts);
    });
    out.family(&SLUICE_RETRIES, |f| {
        for upstream in &generation.upstreams {
            for (outcome_index, (outcome, row)) in RETRY_OUTCOMES
                .iter()
                .zip(&upstream.counters.retries)
                .enumerate()
            {
                for (cross, cell) in ["false", "true"].iter().zip(row) {
                    // A refused retry never went anywhere, so it never crossed a region.
                    if outcome_index == RETRY_BUDGET_EXHAUSTED && *cross == "true" {
                        continue;
                    }
                    f.sample(&[&upstream.name, outcome, cross], cell.get());
                }
            }
        }
    });
    let per_upstream: [(&FamilySpec, UpstreamCounterOf); 5] = [
        (&SLUICE_RETRY_BUDGET_EXHAUSTED, |c| &c.budget_exhausted),
        (&SLUICE_TRY_TIMEOUTS, |c| &c.try_timeouts),
        (&SLUICE_HEDGED_REQUESTS, |c| &c.hedged),
        (&SLUICE_CROSSED_REGION, |c| &c.crossed_region),
        (&SLUICE_CROSSED_TIER, |c| &c.crossed_tier),
    ];
    for (spec, pick) in per_upstream {
        out.family(spec, |f| {
            for upstream in &generation.upstreams {
                f.sample(&[&upstream.name], pick(&upstream.counters).get());
            }
        });
    }
    out.family(&SLUICE_PROBES, |f| {
        groups(f, &PROBE_RESULTS, |g| &g.probes);
    });
    out.family(&SLUICE_HEALTH_TRANSITIONS, |f| {
        for upstream in &generation.upstreams {
            for (to, cell) in ["healthy", "unhealthy"]
                .iter()
                .zip(&upstream.counters.health_transitions)
            {
                f.sample(&[&upstream.name, to], cell.get());
            }
        }
    });
    out.family(&SLUICE_DECISIONS, |f| {
        for upstream in &generation.upstreams {
            for (kind, cell) in DecisionKind::ALL.iter().zip(&upstream.counters.decisions) {
                f.sample(&[&upstream.name, kind.as_str()], cell.get());
            }
        }
    });
    let derived: [(&FamilySpec, DecisionKind); 4] = [
        (&SLUICE_FAILOVERS, DecisionKind::Failover),
        (&SLUICE_FAILBACKS, DecisionKind::FailbackComplete),
        (&SLUICE_PANICS, DecisionKind::PanicEnter),
        (&SLUICE_EJECTIONS, DecisionKind::Ejection),
    ];
    for (spec, kind) in derived {
        out.family(spec, |f| {
            for upstream in &generation.upstreams {
                let n = decision_slot(kind)
                    .and_then(|i| upstream.counters.decisions.get(i))
                    .map_or(0, Counter::get);
                f.sample(&[&upstream.name], n);
            }
        });
    }
}

/// Labels of one address in Sluice's per-address gauges.
struct AddressLabels {
    target: String,
    address: String,
    tier: String,
}

fn address_labels(upstream: Option<&UpstreamEntry>, view: &AddressView) -> AddressLabels {
    let target = upstream
        .and_then(|u| {
            u.targets
                .get(usize::try_from(view.target_index).unwrap_or(usize::MAX))
        })
        .map_or_else(
            || format!("{}:{}", view.key.hostname, view.key.addr.port()),
            |t| t.target.to_string(),
        );
    AddressLabels {
        target,
        address: view.key.addr.to_string(),
        tier: view.tier.to_string(),
    }
}

fn encode_kong_target_health(
    generation: &Generation,
    snapshot: &UpstreamSnapshot,
    f: &mut FamilyWriter<'_>,
) {
    let upstream = generation.upstream(None, &snapshot.name);
    let emit = |f: &mut FamilyWriter<'_>, target: &str, address: &str, current: &str| {
        for state in KONG_HEALTH_STATES {
            f.sample(
                &[&snapshot.name, target, address, state, SUBSYSTEM],
                u64::from(state == current),
            );
        }
    };
    let mut seen_targets: Vec<u32> = Vec::new();
    for view in &snapshot.addresses {
        let labels = address_labels(upstream, view);
        let state = kong_health_state(view.health);
        // Kong reports a target whose name does not resolve with an empty address.
        let address = if view.health == HealthStatus::DnsError {
            ""
        } else {
            labels.address.as_str()
        };
        emit(f, &labels.target, address, state);
        seen_targets.push(view.target_index);
    }
    // A configured target with no address at all (not resolved yet, or resolved to
    // nothing): Kong reports it as dns_error with an empty address.
    if let Some(upstream) = upstream {
        for (index, target) in upstream.targets.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if !seen_targets.contains(&index) {
                emit(f, &target.target, "", "dns_error");
            }
        }
    }
}

fn encode_snapshots(
    generation: &Generation,
    snapshots: &[Arc<UpstreamSnapshot>],
    out: &mut Exposition,
) {
    out.family(&SLUICE_UPSTREAM_MODE, |f| {
        for s in snapshots {
            for (mode, label) in MODES {
                f.sample(&[&s.name, label], u64::from(s.mode == mode));
            }
        }
    });
    out.family(&SLUICE_UPSTREAM_ACTIVE_TIER, |f| {
        for s in snapshots {
            let active = s
                .tiers
                .iter()
                .filter(|t| t.share_ppm > 0)
                .map(|t| f64::from(t.tier))
                .reduce(f64::min)
                .unwrap_or(-1.0);
            f.sample(&[&s.name], active);
        }
    });
    out.family(&SLUICE_UPSTREAM_BALANCER_HEALTHY, |f| {
        for s in snapshots {
            f.sample(&[&s.name], u64::from(s.balancer_healthy));
        }
    });
    out.family(&SLUICE_UPSTREAM_TRAFFIC_SHARE, |f| {
        for s in snapshots {
            for (tier_label, region, share) in region_shares(s) {
                f.sample(&[&s.name, &tier_label, &region], share);
            }
        }
    });
    out.family(&SLUICE_UPSTREAM_EJECTED, |f| {
        for s in snapshots {
            let ejected = s
                .addresses
                .iter()
                .filter(|a| matches!(a.unavailable, Some(Unavailable::Ejected { .. })))
                .count();
            f.sample(&[&s.name], u64::try_from(ejected).unwrap_or(u64::MAX));
        }
    });
    out.family(&SLUICE_TARGET_STATE, |f| {
        for s in snapshots {
            let upstream = generation.upstream(None, &s.name);
            for view in &s.addresses {
                let l = address_labels(upstream, view);
                let current = target_state(view);
                for state in TARGET_STATES {
                    f.sample(
                        &[&s.name, &l.target, &l.address, &view.region, &l.tier, state],
                        u64::from(state == current),
                    );
                }
            }
        }
    });
    out.family(&SLUICE_TARGET_EWMA, |f| {
        for s in snapshots {
            let upstream = generation.upstream(None, &s.name);
            for view in &s.addresses {
                let (ewma_us, _) = view.load.ewma_raw();
                if ewma_us > 0.0 && ewma_us.is_finite() {
                    let l = address_labels(upstream, view);
                    f.sample(
                        &[&s.name, &l.target, &l.address, &view.region, &l.tier],
                        ewma_us / 1_000_000.0,
                    );
                }
            }
        }
    });
    out.family(&SLUICE_TARGET_IN_FLIGHT, |f| {
        for s in snapshots {
            let upstream = generation.upstream(None, &s.name);
            for view in &s.addresses {
                let l = address_labels(upstream, view);
                f.sample(
                    &[&s.name, &l.target, &l.address, &view.region, &l.tier],
                    u64::from(view.load.in_flight()),
                );
            }
        }
    });
}

/// Planned share of new requests per (tier, region): the tier's share split over its
/// regions by effective weight (by configured weight when every effective weight is 0,
/// as in panic mode; evenly when those are 0 too).
fn region_shares(snapshot: &UpstreamSnapshot) -> Vec<(String, Arc<str>, f64)> {
    let mut shares = Vec::new();
    for tier in &snapshot.tiers {
        let members: Vec<&AddressView> = tier
            .members
            .iter()
            .filter_map(|&i| {
                snapshot
                    .addresses
                    .get(usize::try_from(i).unwrap_or(usize::MAX))
            })
            .collect();
        let total = |w: fn(&AddressView) -> u32, region: Option<&str>| -> f64 {
            members
                .iter()
                .filter(|a| region.is_none_or(|r| &*a.region == r))
                .map(|a| f64::from(w(a)))
                .sum()
        };
        let weight: fn(&AddressView) -> u32 = if total(|a| a.effective_weight, None) > 0.0 {
            |a| a.effective_weight
        } else {
            |a| a.weight
        };
        let tier_total = total(weight, None);
        let tier_share = f64::from(tier.share_ppm) / 1_000_000.0;
        let region_count = tier.regions.len().max(1) as f64;
        for region in &tier.regions {
            let part = if tier_total > 0.0 {
                total(weight, Some(region)) / tier_total
            } else {
                1.0 / region_count
            };
            shares.push((tier.tier.to_string(), region.clone(), tier_share * part));
        }
    }
    shares
}

// ---------------------------------------------------------------------------------------
// Text exposition
// ---------------------------------------------------------------------------------------

/// A sample value: integers print exactly, floats in Rust's shortest round-trip form.
enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Write one family: its samples through `fill`, preceded by `# HELP` and `# TYPE`
    /// only when there is at least one sample (as Kong does).
    fn family(&mut self, spec: &FamilySpec, fill: impl FnOnce(&mut FamilyWriter<'_>)) {
        let mut writer = FamilyWriter {
            spec,
            body: String::new(),
            samples: 0,
        };
        fill(&mut writer);
        if writer.samples == 0 {
            return;
        }
        let _ = writeln!(self.text, "# HELP {} {}", spec.name, escape_help(spec.help));
        let _ = writeln!(self.text, "# TYPE {} {}", spec.name, spec.kind.as_str());
        self.text.push_str(&writer.body);
    }
}

struct FamilyWriter<'a> {
    spec: &'a FamilySpec,
    body: String,
    samples: usize,
}

impl FamilyWriter<'_> {
    /// One sample of a counter or gauge; `values` pair with the spec's label names.
    fn sample(&mut self, values: &[&str], value: impl Into<Value>) {
        let name = self.spec.name;
        self.line(name, "", values, None, value.into());
    }

    /// The `_bucket`, `_sum` and `_count` series of one histogram, when it has data.
    fn histogram(&mut self, values: &[&str], histogram: &Histogram) {
        let count = histogram.count();
        if count == 0 {
            return;
        }
        let name = self.spec.name;
        let mut cumulative = 0u64;
        for (bound, bucket) in histogram.bounds_ms.iter().zip(histogram.buckets.iter()) {
            cumulative += bucket.get();
            // Integer bounds print as integers: Kong's `le="25"`.
            let le = bound.to_string();
            self.line(name, "_bucket", values, Some(&le), Value::Int(cumulative));
        }
        self.line(name, "_bucket", values, Some("+Inf"), Value::Int(count));
        // Milliseconds with microsecond precision.
        let sum_ms = histogram.sum_us.get() as f64 / 1000.0;
        self.line(name, "_sum", values, None, Value::Float(sum_ms));
        self.line(name, "_count", values, None, Value::Int(count));
    }

    fn line(&mut self, name: &str, suffix: &str, values: &[&str], le: Option<&str>, value: Value) {
        debug_assert_eq!(
            values.len(),
            self.spec.labels.len(),
            "label values of {} do not match its declaration",
            self.spec.name
        );
        let body = &mut self.body;
        body.push_str(name);
        body.push_str(suffix);
        let mut labels = self
            .spec
            .labels
            .iter()
            .zip(values)
            .map(|(n, v)| (*n, *v))
            .chain(le.map(|le| ("le", le)))
            .peekable();
        if labels.peek().is_some() {
            body.push('{');
            for (i, (label, value)) in labels.enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(label);
                body.push_str("=\"");
                escape_label_value_into(body, value);
                body.push('"');
            }
            body.push('}');
        }
        body.push(' ');
        match value {
            Value::Int(v) => {
                let _ = write!(body, "{v}");
            }
            Value::Float(v) => write_float(body, v),
        }
        body.push('\n');
        self.samples += 1;
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Escape a label value as the text format requires: backslash, double quote, newline.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_label_value_into(&mut out, value);
    out
}

fn escape_label_value_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escape `# HELP` text: backslash and newline.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A random UUID-shaped node id. The standard library seeds `RandomState` from the
/// operating system's RNG, which is all a per-process identifier needs.
fn random_node_id() -> String {
    let draw = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.finish()
    };
    let (high, low) = (draw(1), draw(2));
    // Version 4 and RFC 4122 variant bits, so it reads as the UUID Kong users expect.
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_is_sorted_unique_and_maps_unknown_codes_to_other() {
        assert!(STATUS_CODES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(status_label(status_slot(200)), "200");
        assert_eq!(status_label(status_slot(499)), "499");
        for code in [0, 99, 299, 600, 999, u16::MAX] {
            assert_eq!(status_label(status_slot(code)), "other", "{code}");
        }
        assert_eq!(CLASSES[class_slot(503)], "5xx");
        assert_eq!(CLASSES[class_slot(100)], "1xx");
        assert_eq!(CLASSES[class_slot(600)], "other");
        assert_eq!(CLASSES[class_slot(99)], "other");
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = Histogram::new(UPSTREAM_LATENCY_BUCKETS_MS);
        h.observe(Duration::from_millis(25)); // le="25"
        h.observe(Duration::from_micros(25_001)); // le="50"
        h.observe(Duration::ZERO); // le="25"
        h.observe(Duration::from_secs(61)); // +Inf
        h.observe(Duration::MAX); // +Inf; its sum contribution is capped, not wrapped
        let counts: Vec<u64> = h.buckets.iter().map(Counter::get).collect();
        assert_eq!(counts.first(), Some(&2));
        assert_eq!(counts.get(1), Some(&1));
        assert_eq!(counts.last(), Some(&2));
        assert_eq!(h.count(), 5);
        assert_eq!(
            h.sum_us.get(),
            25_000 + 25_001 + 61_000_000 + MAX_OBSERVATION_US
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
    }

    #[test]
    fn floats_print_in_prometheus_syntax() {
        let render = |v: f64| {
            let mut s = String::new();
            write_float(&mut s, v);
            s
        };
        assert_eq!(render(0.0125), "0.0125");
        assert_eq!(render(1.0), "1");
        assert_eq!(render(f64::INFINITY), "+Inf");
        assert_eq!(render(f64::NEG_INFINITY), "-Inf");
        assert_eq!(render(f64::NAN), "NaN");
    }

    #[test]
    fn random_node_ids_are_uuid_v4_shaped_and_differ() {
        let (a, b) = (random_node_id(), random_node_id());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert_eq!(a.chars().nth(14), Some('4'), "version nibble: {a}");
        assert!(
            matches!(a.chars().nth(19), Some('8' | '9' | 'a' | 'b')),
            "variant: {a}"
        );
    }

    #[test]
    fn family_names_are_unique_and_prefixed_by_origin() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for f in FAMILIES {
            let prefix = match f.origin {
                Origin::Kong => "kong_",
                Origin::Sluice => "sluice_",
            };
            assert!(f.name.starts_with(prefix), "{}", f.name);
            if f.origin == Origin::Sluice && f.kind == MetricType::Counter {
                assert!(f.name.ends_with("_total"), "{}", f.name);
            }
        }
    }

    #[test]
    fn the_markdown_reference_has_one_row_per_family() {
        let doc = reference_markdown();
        for f in FAMILIES {
            assert_eq!(
                doc.matches(&format!("| `{}` |", f.name)).count(),
                1,
                "{}",
                f.name
            );
        }
    }
}
