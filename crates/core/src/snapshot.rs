//! The immutable view of one upstream that the data plane reads on every request.
//!
//! The controller builds a new [`UpstreamSnapshot`] whenever anything that affects
//! selection changes (health, ejection, tier split, effective weights, topology) and
//! hands it out as an `Arc`; the proxy stores it behind `arc-swap`. A request loads the
//! snapshot once and makes all its picks, including retries, from that one value.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::load::AddressLoad;
use crate::topology::Algorithm;

/// Identity of a balanced address: Kong tracks health per (ip, port, hostname).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressKey {
    pub addr: SocketAddr,
    /// The target's hostname (the IP's text for IP targets).
    pub hostname: Arc<str>,
}

/// Kong's health vocabulary for one address, as the Admin API and metrics report it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    /// Health checks are off for the upstream, or the weight is 0.
    HealthchecksOff,
    DnsError,
}

/// Why an address is not available, most fundamental first. `None` = available.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Weight 0: defined but disabled.
    ZeroWeight,
    /// An operator drained it (admin API `unhealthy` or a Sluice drain).
    Drained,
    /// Health checks (active or passive, Kong counters) say unhealthy.
    Unhealthy,
    /// Outlier ejection: real traffic failed, ejected until `until_ms`.
    Ejected { until_ms: u64 },
}

/// One address as the hot path sees it.
#[derive(Clone, Debug)]
pub struct AddressView {
    pub key: AddressKey,
    /// Index of the configured target this address came from (DNS may expand one target).
    pub target_index: u32,
    /// Configured weight (or the SRV weight).
    pub weight: u32,
    /// Weight after slow start and adaptive adjustment; what balancing uses. 0 when unavailable.
    pub effective_weight: u32,
    pub tier: u8,
    pub region: Arc<str>,
    pub health: HealthStatus,
    pub unavailable: Option<Unavailable>,
    /// Live in-flight count and latency EWMA, shared with the data plane across snapshots.
    pub load: Arc<AddressLoad>,
    /// The DNS record type the address came from (Kong's `dns` in the health endpoint).
    pub dns: DnsRecord,
}

/// The DNS record type an address came from. Kong's DNS client answers an IP literal
/// with a synthetic record of its family, so an IPv4 target reads `A` and an IPv6 target
/// `AAAA`, as a name resolved through those records does; SRV answers read `SRV`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DnsRecord {
    A,
    Aaaa,
    Srv,
}

impl DnsRecord {
    /// The record type of `addr` when it came from an A/AAAA answer or an IP literal
    /// (`from_srv` false), else `Srv`.
    pub fn of(addr: std::net::SocketAddr, from_srv: bool) -> DnsRecord {
        if from_srv {
            DnsRecord::Srv
        } else if addr.is_ipv6() {
            DnsRecord::Aaaa
        } else {
            DnsRecord::A
        }
    }

    /// The name Kong reports (`dns_client` type names without `TYPE_`).
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecord::A => "A",
            DnsRecord::Aaaa => "AAAA",
            DnsRecord::Srv => "SRV",
        }
    }
}

impl AddressView {
    pub fn is_available(&self) -> bool {
        self.unavailable.is_none()
    }
}

/// One priority tier of an upstream (tier 0 = most preferred).
#[derive(Clone, Debug)]
pub struct TierView {
    pub tier: u8,
    /// Regions present in the tier, sorted.
    pub regions: Vec<Arc<str>>,
    /// Indices into `UpstreamSnapshot::addresses`.
    pub members: Vec<u32>,
    /// Share of new requests this tier receives, in parts per million (tiers sum to 1_000_000
    /// unless no address is available anywhere).
    pub share_ppm: u32,
    /// Healthy share of this tier's weight (0.0..=1.0), as the split was computed from.
    pub healthy_share: f64,
    /// Smooth weighted round-robin order over `members` (indices into `addresses`),
    /// built from effective weights; weights are exact over one pass.
    /// Build it with `balance::round_robin::smooth_order`. In `Mode::Panic` build it from
    /// the configured weights of every non-drained member, since panic uses them all.
    pub rr_order: Arc<[u32]>,
    /// Position in `rr_order`, advanced by one on every round-robin pick. Shared by all
    /// requests and carried by the controller from one snapshot version to the next (same
    /// `Arc`), so a rebuild does not restart every tier at its first entry.
    pub rr_cursor: Arc<AtomicU64>,
}

/// Per-upstream traffic mode, reported in metrics and the admin API.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// All traffic in the most preferred tier that has enough capacity.
    Normal,
    /// Some or all traffic spilled to a less preferred tier.
    FailedOver,
    /// The preferred tier is recovering and receiving a growing share.
    FailingBack,
    /// Too little healthy capacity anywhere: every address is used, health ignored.
    Panic,
    /// No address can take traffic: requests get 503.
    Unavailable,
}

/// Everything the data plane needs to pick addresses for one upstream.
#[derive(Clone, Debug)]
pub struct UpstreamSnapshot {
    /// Strictly increasing per controller; never decreases.
    pub version: u64,
    pub name: Arc<str>,
    pub algorithm: Algorithm,
    pub addresses: Vec<AddressView>,
    /// Ordered by preference: `tiers[0]` is the most preferred tier present.
    pub tiers: Vec<TierView>,
    pub mode: Mode,
    /// Kong's balancer health: available weight share strictly above `threshold`.
    pub balancer_healthy: bool,
    /// Consistent-hash lookup table (Maglev) per tier, empty for other algorithms.
    pub hash_tables: Vec<Arc<[u32]>>,
}
