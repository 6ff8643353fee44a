//! Facts in ([`Event`]) and things to do out ([`Action`]).
//!
//! Events are named in the past tense: they report what happened. The data plane's
//! driver and the simulator are the only producers.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::decision::DecisionRecord;
use crate::snapshot::{AddressKey, UpstreamSnapshot};
use crate::time::Duration;
use crate::topology::{ActiveHealthCheck, UpstreamSpec};

/// Result of one active probe.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// HTTP probes: the status line's code, or 0 when the line is not HTTP (Kong counts
    /// that as an HTTP failure). TCP probes report [`ProbeOutcome::TcpSuccess`].
    Status(u16),
    TcpSuccess,
    /// Connect refused/reset, TLS handshake failure, connection ended before a status line.
    TcpFailure,
    Timeout,
}

/// Result of one proxied attempt, as passive health and outlier ejection see it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response header arrived with this status. (Kong reports any 504 as a timeout;
    /// the controller applies that rule, the proxy reports the plain status.)
    Status(u16),
    /// Connect failure, reset, or a malformed response before the header.
    TcpFailure,
    /// Connect, write or read timeout before the response header.
    Timeout,
}

/// One DNS-resolved address of a hostname target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAddress {
    pub addr: SocketAddr,
    /// SRV weight when the answer came from SRV (0 already mapped to 1); `None` = target weight.
    pub weight: Option<u32>,
}

/// Operator commands (admin API, drills, the demo's fault panel).
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorCommand {
    /// Kong's `PUT .../healthy` / `.../unhealthy`: override health, reset counters.
    /// `address = None` applies to every address of the target.
    SetHealth {
        target: String,
        address: Option<SocketAddr>,
        healthy: bool,
    },
    /// Take an address out of rotation without calling it unhealthy.
    Drain { target: String, drained: bool },
}

/// A fact reported to the controller.
#[derive(Clone, Debug)]
pub enum Event {
    /// A new validated configuration. Health, counters and loads of addresses that stay
    /// (same upstream name, address key, unchanged health settings) are kept.
    TopologyReplaced { upstreams: Vec<UpstreamSpec> },
    /// DNS answer for a hostname target (index into the upstream's `targets`).
    Resolved {
        upstream: Arc<str>,
        target_index: u32,
        result: Result<Vec<ResolvedAddress>, String>,
        /// Time to live of the answer (the smallest record TTL); `None` when the resolver
        /// gave none (e.g. `/etc/hosts`). The controller re-resolves after it, clamped to
        /// `controller::DNS_MIN_TTL..=controller::DNS_MAX_TTL`; failures retry after
        /// `controller::DNS_RETRY`.
        ttl: Option<Duration>,
    },
    ProbeCompleted {
        upstream: Arc<str>,
        address: AddressKey,
        /// The `slot` of the [`Action::Probe`] this answers: a hint that finds the address
        /// without comparing keys. Checked against `address`, so a stale one (the address
        /// set changed meanwhile) or an unknown one (`u32::MAX`) only costs a lookup.
        slot: u32,
        outcome: ProbeOutcome,
    },
    AttemptCompleted {
        upstream: Arc<str>,
        address: AddressKey,
        outcome: AttemptOutcome,
        latency: Duration,
    },
    Operator {
        upstream: Arc<str>,
        command: OperatorCommand,
        actor: String,
    },
}

/// Something the driver must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Replace the data plane's view of this upstream.
    Publish(Arc<UpstreamSnapshot>),
    /// An upstream no longer exists; drop its snapshot.
    Remove { upstream: Arc<str> },
    /// Probe this address now and report a `ProbeCompleted`.
    Probe {
        upstream: Arc<str>,
        address: AddressKey,
        /// The address's index in the controller's table of the upstream's addresses, to
        /// be returned in [`Event::ProbeCompleted::slot`]. Stable until the address set
        /// changes; only ever a hint.
        slot: u32,
        check: Arc<ActiveHealthCheck>,
        host_header: Option<String>,
    },
    /// (Re)resolve a hostname target now and report `Resolved`.
    Resolve {
        upstream: Arc<str>,
        target_index: u32,
        host: String,
        port: u16,
    },
    /// An address changed health state (for logs, metrics and the admin API).
    HealthChanged {
        upstream: Arc<str>,
        address: AddressKey,
        healthy: bool,
        reason: String,
    },
    /// A traffic-split decision was made (also kept in the controller's decision log).
    Decision(Arc<DecisionRecord>),
}
