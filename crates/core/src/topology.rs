//! The validated input model the core decides over: upstreams, their targets, health
//! check settings (Kong's `healthchecks` tree, defaults already applied), and Sluice's
//! failover policy.
//!
//! `sluice-config` builds these from a Kong declarative file; the simulator builds them
//! directly. Nothing here is parsed or defaulted: every value is final.

use std::net::IpAddr;
use std::sync::Arc;

use crate::time::Duration;

/// Balancing algorithm (Kong's `upstreams[].algorithm`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Smooth weighted round-robin (Kong's default).
    #[default]
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConnections,
    /// Consistent hashing on a request key (see [`HashOn`]).
    ConsistentHashing,
    /// Power of two choices over peak-EWMA latency.
    Latency,
}

/// Where a consistent-hashing key comes from (Kong's `hash_on` / `hash_fallback`).
/// The data plane extracts the key; the core only sees its 64-bit hash.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashOn {
    #[default]
    None,
    Consumer,
    Ip,
    Header(String),
    Cookie {
        name: String,
        path: String,
    },
    Path,
    QueryArg(String),
    UriCapture(String),
}

/// Protocol of active probes (Kong's `healthchecks.active.type`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ProbeType {
    #[default]
    Http,
    Https,
    Tcp,
    Grpc,
    Grpcs,
}

/// Kong's `healthchecks.active`, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveHealthCheck {
    pub probe_type: ProbeType,
    /// Connect/send/receive timeout of one probe (Kong: `timeout`, seconds, default 1).
    pub timeout: Duration,
    /// Parallel probes per upstream (Kong default 10).
    pub concurrency: u32,
    pub http_path: String,
    pub https_sni: Option<String>,
    pub https_verify_certificate: bool,
    /// Extra probe headers, name → values.
    pub headers: Vec<(String, Vec<String>)>,
    /// Probe interval while the address is healthy; zero disables (Kong default 0).
    pub healthy_interval: Duration,
    pub healthy_http_statuses: Vec<u16>,
    /// Consecutive successes that make an unhealthy address healthy; 0 = never (Kong).
    pub healthy_successes: u8,
    /// Probe interval while the address is unhealthy; zero disables.
    pub unhealthy_interval: Duration,
    pub unhealthy_http_statuses: Vec<u16>,
    pub unhealthy_tcp_failures: u8,
    pub unhealthy_timeouts: u8,
    pub unhealthy_http_failures: u8,
    /// Sluice extension (`sluice:probe-keepalive`): `None` is Kong's behaviour, a new
    /// connection per probe; `Some(max_age)` reuses one connection per address for at
    /// most `max_age`, after which the next probe opens a fresh one (so a stopped
    /// listener or a full accept queue is still noticed; see docs/configuration.md,
    /// "Keep-alive probes").
    pub keepalive: Option<Duration>,
}

/// Kong's `healthchecks.passive`, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct PassiveHealthCheck {
    pub healthy_http_statuses: Vec<u16>,
    pub healthy_successes: u8,
    pub unhealthy_http_statuses: Vec<u16>,
    pub unhealthy_tcp_failures: u8,
    pub unhealthy_timeouts: u8,
    pub unhealthy_http_failures: u8,
}

/// Kong's `healthchecks` tree.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthChecks {
    pub active: ActiveHealthCheck,
    pub passive: PassiveHealthCheck,
    /// Percentage (0..=100) of weight that must be available, compared strictly (`>`).
    pub threshold: f64,
}

impl HealthChecks {
    /// Kong's "is this upstream using health checks" rule: any active interval or any
    /// passive failure threshold non-zero.
    pub fn enabled(&self) -> bool {
        !self.active.healthy_interval.is_zero()
            || !self.active.unhealthy_interval.is_zero()
            || self.passive.unhealthy_tcp_failures > 0
            || self.passive.unhealthy_timeouts > 0
            || self.passive.unhealthy_http_failures > 0
    }
}

impl Default for HealthChecks {
    /// Exactly Kong's schema defaults (every threshold 0 = disabled).
    fn default() -> Self {
        HealthChecks {
            active: ActiveHealthCheck {
                probe_type: ProbeType::Http,
                timeout: Duration::from_secs(1),
                concurrency: 10,
                http_path: "/".into(),
                https_sni: None,
                https_verify_certificate: true,
                headers: Vec::new(),
                healthy_interval: Duration::ZERO,
                healthy_http_statuses: vec![200, 302],
                healthy_successes: 0,
                unhealthy_interval: Duration::ZERO,
                unhealthy_http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
                unhealthy_tcp_failures: 0,
                unhealthy_timeouts: 0,
                unhealthy_http_failures: 0,
                keepalive: None,
            },
            passive: PassiveHealthCheck {
                healthy_http_statuses: vec![
                    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305,
                    306, 307, 308,
                ],
                healthy_successes: 0,
                unhealthy_http_statuses: vec![429, 500, 503],
                unhealthy_tcp_failures: 0,
                unhealthy_timeouts: 0,
                unhealthy_http_failures: 0,
            },
            threshold: 0.0,
        }
    }
}

/// Outlier ejection driven by real traffic (Sluice extension; Envoy-like).
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierPolicy {
    pub enabled: bool,
    /// Consecutive 5xx/transport failures that eject an address.
    pub consecutive_failures: u32,
    /// Failure ratio over the window that ejects (0.0..=1.0); ignored below `min_requests`.
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    /// First ejection lasts this long; each repeat multiplies it, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// Never eject more than this share of a tier's addresses at once (0.0..=1.0).
    pub max_ejected_share: f64,
}

/// How traffic moves between priority tiers (Sluice extension; see docs/failover.md).
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverPolicy {
    /// Envoy's overprovisioning factor: a tier keeps all its traffic while
    /// `healthy_share × factor ≥ 1`.
    pub overprovisioning: f64,
    /// Below this share of healthy weight across all tiers, panic: use every address.
    pub panic_threshold: f64,
    /// The primary must stay healthy this long before failback starts.
    pub failback_hold_down: Duration,
    /// Upper bound of the hold-down as it grows with repeated flaps.
    pub failback_hold_down_max: Duration,
    /// Duration of the failback ramp from `ramp_start_share` to 100%.
    pub failback_ramp: Duration,
    /// Share of traffic the recovering tier gets at the first ramp step (0.0..=1.0).
    pub ramp_start_share: f64,
    /// Abort the ramp when the recovering tier's error ratio exceeds this.
    pub ramp_abort_error_rate: f64,
    /// Slow start for new or recovered addresses (zero disables).
    pub slow_start: Duration,
    /// Latency- and error-aware weight adjustment for round-robin.
    pub adaptive_weights: bool,
    pub outlier: OutlierPolicy,
    /// Hedging and retry budget live on the route/service; see `retry`.
    pub retry_budget: crate::retry::RetryBudgetPolicy,
}

/// One configured target (Kong's `targets[]`), before DNS expansion.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    /// Kong id (UUID, given or derived deterministically).
    pub id: String,
    /// As written in the config, normalised to `host:port`.
    pub target: String,
    pub host: String,
    pub port: u16,
    /// 0..=65535; 0 = defined but disabled.
    pub weight: u32,
    /// Region label (`region:NAME` tag); `"default"` when absent.
    pub region: Arc<str>,
    /// Priority tier, 0 = most preferred (from `tier:N` tag, region order, or `failover: true`).
    pub tier: u8,
    pub tags: Vec<String>,
}

impl TargetSpec {
    /// The target's literal IP, if its host is one (no DNS needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

/// One upstream (Kong's `upstreams[]`), validated.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSpec {
    pub id: String,
    pub name: Arc<str>,
    pub algorithm: Algorithm,
    pub hash_on: HashOn,
    pub hash_fallback: HashOn,
    /// Kong's `slots` (10..=65536); sizes the consistent-hash table.
    pub slots: u32,
    pub host_header: Option<String>,
    pub healthchecks: HealthChecks,
    pub failover: FailoverPolicy,
    pub targets: Vec<TargetSpec>,
    pub tags: Vec<String>,
}
