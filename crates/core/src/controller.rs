//! The controller: the single owner of all decision state. Events and `now` go in;
//! actions, snapshots and decision records come out.
//!
//! # Driving it
//! ```text
//! loop {
//!     controller.apply(now, event, &mut actions);   // for every event that arrives
//!     controller.tick(now, &mut actions);           // when now ≥ next_deadline()
//!     carry out `actions` (publish snapshots, send probes, resolve names, log)
//!     sleep until controller.next_deadline() or the next event
//! }
//! ```
//! The controller never fails and never blocks; every timer is a deadline the caller
//! honours by calling [`Controller::tick`]. The same events at the same `now` give the
//! same actions (no hashing, no clock, no randomness).
//!
//! # What it owns, per upstream
//! - Targets and their DNS answers (stale answers are kept when a refresh fails: stale
//!   is better than empty), expanded into addresses keyed by `(ip, port, hostname)`.
//! - Per address: Kong health ([`crate::health`]), outlier ejection
//!   ([`crate::outlier`]), the operator's drain flag, slow start, the probe schedule and
//!   the shared `Arc<AddressLoad>`. All of it survives a reload for addresses that stay.
//! - The tier split and failback state ([`crate::failover`]).
//! - The published [`UpstreamSnapshot`]: rebuilt after every change, published only
//!   when something selection reads changed, with a strictly increasing version.
//!
//! # Decision records
//! Every change of the traffic split (and every ejection, ejection end and operator
//! action) produces exactly one [`DecisionRecord`], kept in the [`DecisionLog`] and
//! emitted as [`Action::Decision`]. Plain health flips that leave the split alone emit
//! only [`Action::HealthChanged`]. The kind, most specific first:
//! - `panic_enter` / `panic_exit` when the mode enters or leaves panic;
//! - `failback_start|step|complete|aborted` from the failback engine;
//! - for any other split change: `operator` or `config_reload` when that caused it,
//!   else `failover` (a preferred tier lost all its share, or the upstream became
//!   unavailable), `spill` (it lost part of it), or `failback_complete` (traffic moved
//!   towards preferred tiers with nothing to hold down: a tier's first addresses, or
//!   capacity returning when what was left could not carry the load);
//! - with no split change: `ejection`, `ejection_end`, `operator`.
//!
//! # Recovery is gated, loss is not
//! Anything that removes capacity (health, ejection, drain, reload) moves traffic at
//! once. Anything that restores capacity in a tier traffic had left — including an
//! operator's undrain or `healthy` override — goes through the failback hold-down and
//! ramp, so a drill ends with the same gradual failback a real recovery gets.
//!
//! # Probes
//! Every address with weight > 0 of an upstream with active checks is probed at its
//! state's interval (`healthy_interval` or `unhealthy_interval`; 0 disables that loop;
//! the first probe one interval after the address appears, as Kong). Idle secondary
//! tiers are probed at the same rate as the primary (warm standby): their health is
//! never staler than one interval at the moment traffic fails over to them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::balance::{adaptive, ewma, hash, round_robin};
use crate::decision::{DecisionKind, DecisionLog, DecisionRecord, TierShare};
use crate::event::{Action, AttemptOutcome, Event, OperatorCommand, ProbeOutcome, ResolvedAddress};
use crate::failover::{self, FailbackPhase, FailoverEngine, PPM, TierCapacity};
use crate::health::{AddressHealth, HealthCounters, HealthState};
use crate::load::AddressLoad;
use crate::outlier::{self, OutlierDetector};
use crate::snapshot::{
    AddressKey, AddressView, DnsRecord, HealthStatus, Mode, TierView, Unavailable, UpstreamSnapshot,
};
use crate::time::{Duration, Instant};
use crate::topology::{ActiveHealthCheck, Algorithm, TargetSpec, UpstreamSpec};

/// Shortest re-resolution interval. A TTL of 0 makes Kong resolve per request; the
/// controller instead re-resolves once a second, which follows fast-moving records
/// without turning DNS into a per-request dependency.
pub const DNS_MIN_TTL: Duration = Duration::from_secs(1);
/// Longest re-resolution interval, whatever the TTL says: a record with a day-long TTL
/// still gets re-checked every 5 minutes, so a changed record is picked up in bounded time.
pub const DNS_MAX_TTL: Duration = Duration::from_secs(300);
/// Re-resolution interval when the answer carried no TTL.
pub const DNS_DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Retry interval after a failed resolution (Kong's `REQUERY_INTERVAL`), and the time
/// after which an unanswered `Resolve` is asked again.
pub const DNS_RETRY: Duration = Duration::from_secs(30);
/// How often effective weights are recomputed while they can change by themselves
/// (slow start in progress, latency/error-aware weights on): once a second follows a
/// 10 s slow start in ten steps and an EWMA with a 10 s decay closely, at the cost of one
/// snapshot rebuild per second per such upstream.
pub const WEIGHT_REFRESH: Duration = Duration::from_secs(1);

/// How long the state of an address that left is kept in case it comes back: Kong's
/// `CLEAR_HEALTH_STATUS_DELAY` (300 s). A DNS answer that briefly drops an address, or a
/// config edit that removes and re-adds a target, must not reset what was learnt.
pub const RETIRED_KEEP: Duration = Duration::from_secs(300);
/// Most retired addresses kept per upstream (about 1 KiB each): far more than any real
/// churn within 300 s, and a hard bound on memory under a DNS record that keeps changing.
pub const RETIRED_MAX: usize = 1024;

/// Per-address status for the admin API and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct AddressStatus {
    pub key: AddressKey,
    pub weight: u32,
    pub tier: u8,
    pub region: Arc<str>,
    /// Kong's vocabulary.
    pub health: HealthStatus,
    /// lua-resty-healthcheck's internal state.
    pub state: HealthState,
    pub counters: HealthCounters,
    pub ejected_until: Option<Instant>,
    pub ejections: u64,
    pub drained: bool,
    pub unavailable: Option<Unavailable>,
}

/// Per-target status (Kong's `/upstreams/{u}/health` entries).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetStatus {
    pub index: u32,
    pub id: String,
    pub target: String,
    pub weight: u32,
    pub tier: u8,
    pub region: Arc<str>,
    /// Kong's rule: no addresses → DnsError; any healthy → Healthy; any unhealthy →
    /// Unhealthy; else HealthchecksOff (also for weight 0 or checks off).
    pub health: HealthStatus,
    /// The last DNS error, while it lasts (stale addresses may still be in use).
    pub dns_error: Option<String>,
    pub drained: bool,
    pub addresses: Vec<AddressStatus>,
}

/// One tier's share and health.
#[derive(Clone, Debug, PartialEq)]
pub struct TierStatus {
    pub tier: u8,
    pub regions: Vec<Arc<str>>,
    pub share_ppm: u32,
    pub healthy_share: f64,
    pub total_weight: u64,
    pub available_weight: u64,
}

/// Per-upstream status for the admin API and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamStatus {
    pub name: Arc<str>,
    pub mode: Mode,
    /// Kong's balancer health computed exactly as Kong does (total weight > 0 and
    /// available share strictly above `threshold`), even when `threshold` is 0.
    pub kong_balancer_healthy: bool,
    /// Whether the upstream uses health checks at all (else Kong says HEALTHCHECKS_OFF).
    pub healthchecks_enabled: bool,
    pub total_weight: u64,
    pub available_weight: u64,
    pub tiers: Vec<TierStatus>,
    pub failback: FailbackPhase,
    /// The hold-down the next failback waits (grows with flaps).
    pub hold_down: Duration,
    pub targets: Vec<TargetStatus>,
    pub snapshot_version: u64,
}

#[derive(Debug)]
struct TargetState {
    spec: TargetSpec,
    /// The literal IP, when the target is one (no DNS).
    ip: Option<IpAddr>,
    /// Current DNS answer (or the literal address). Kept on failure while non-empty.
    resolved: Vec<ResolvedAddress>,
    dns_error: Option<String>,
    /// When to (re-)resolve; `None` for IP targets.
    next_resolve: Option<Instant>,
    drained: bool,
    /// Set for targets of the first topology until their first answer: those addresses
    /// join a process that is starting anyway, so they do not slow-start.
    starting: bool,
}

impl TargetState {
    fn hostname(&self) -> Arc<str> {
        match self.ip {
            Some(ip) => Arc::from(ip.to_string()),
            None => Arc::from(self.spec.host.as_str()),
        }
    }
}

#[derive(Debug)]
struct AddressState {
    key: AddressKey,
    target_index: u32,
    weight: u32,
    tier: u8,
    region: Arc<str>,
    health: AddressHealth,
    /// Set when an operator forced the state (kept for reporting with checks off).
    overridden: bool,
    outlier: OutlierDetector,
    load: Arc<AddressLoad>,
    /// When it last became available; `None` = since before the controller started.
    available_since: Option<Instant>,
    was_available: bool,
    next_probe: Option<Instant>,
    dns: DnsRecord,
}

#[derive(Debug)]
struct UpstreamState {
    spec: UpstreamSpec,
    active: Arc<ActiveHealthCheck>,
    checks_enabled: bool,
    targets: Vec<TargetState>,
    addresses: AddressTable,
    /// Distinct tiers of targets with weight > 0, most preferred first.
    tiers: Vec<u8>,
    /// The distinct regions of each tier of `tiers` (same positions), sorted: they change
    /// only with the configuration, and every refresh (at least once a second with
    /// adaptive weights) reads them; deriving them from thousands of targets each time
    /// was a tenth of the CPU of probing 10,000 targets.
    tier_regions: Vec<Vec<Arc<str>>>,
    cursors: BTreeMap<u8, Arc<AtomicU64>>,
    engine: FailoverEngine,
    mode: Mode,
    split: Vec<u32>,
    /// `split` labelled with the tiers it was computed for (a reload may change them).
    shares: Vec<TierShare>,
    snapshot: Option<Arc<UpstreamSnapshot>>,
    weights_refresh_at: Option<Instant>,
    /// Addresses that left (reload or DNS) in the last [`RETIRED_KEEP`], with when they
    /// left, so one that comes back keeps its health, ejection and load (Kong keeps a
    /// removed address's health for 300 s, PR #8394). At most [`RETIRED_MAX`] entries.
    retired: BTreeMap<AddressKey, (Instant, AddressState)>,
    /// Timer index of the probe schedule: `(due, index)` for every address whose
    /// `next_probe` is `Some(due)`, and nothing else (`index` into `addresses`). `tick`
    /// and `next_deadline` read due probes from its front instead of scanning every
    /// address (with 10,000 probed addresses the scans were most of the controller's
    /// time). Ordered by instant; `tick` sorts a tick's due indexes, and index order is
    /// key order: deterministic. Indexes, not keys, because comparing keys was most of
    /// the cost of maintaining it. Every
    /// write of `next_probe` goes through [`set_next_probe`]; changes of the address set
    /// (reload, DNS) renumber the addresses and rebuild it
    /// ([`UpstreamState::rebuild_timers`]).
    probe_schedule: ProbeSchedule,
    /// The earliest `ejected_until` of any address. Ejections start and end rarely, so
    /// it is recomputed (a scan) only when one starts, ends or the address set changes.
    next_ejection_end: Option<Instant>,
    /// The earliest `next_resolve` of any target, recomputed whenever one changes (DNS
    /// answers, resolutions sent, reloads), which is when the targets are walked anyway.
    next_resolve_at: Option<Instant>,
}

/// What caused a re-evaluation (decides the decision record's kind and trigger).
#[derive(Clone, Debug)]
enum Cause {
    Health {
        address: SocketAddr,
        reason: String,
    },
    Ejection {
        address: SocketAddr,
        reason: String,
        until: Instant,
    },
    EjectionEnd {
        addresses: Vec<SocketAddr>,
    },
    Operator {
        actor: String,
        what: String,
    },
    Reload,
    Dns {
        target: String,
    },
    /// Attempts on a recovering tier failed often enough to abort the failback ramp.
    RampErrors,
    Timer,
}

impl Cause {
    fn describe(&self) -> String {
        match self {
            Cause::Health { address, reason } => format!("{address} health changed ({reason})"),
            Cause::Ejection {
                address, reason, ..
            } => format!("{address} ejected: {reason}"),
            Cause::EjectionEnd { addresses } => {
                let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
                format!("ejection ended for {}", list.join(", "))
            }
            Cause::Operator { actor, what } => format!("operator {actor}: {what}"),
            Cause::Reload => "configuration reloaded".to_string(),
            Cause::Dns { target } => format!("DNS answer for {target} changed the addresses"),
            Cause::RampErrors => "attempt errors on the recovering tiers".to_string(),
            Cause::Timer => "timer".to_string(),
        }
    }
}

/// Counters shared by all upstreams: snapshot versions and the decision log.
#[derive(Debug)]
struct Shared {
    next_version: u64,
    decisions: DecisionLog,
}

/// Owns health, ejection, failover and snapshot state for every upstream.
#[derive(Debug)]
pub struct Controller {
    upstreams: BTreeMap<Arc<str>, UpstreamState>,
    shared: Shared,
    /// False until the first topology: addresses of the first topology do not slow-start
    /// (a fresh process has no incumbent addresses to protect them from).
    booted: bool,
}

impl Default for Controller {
    fn default() -> Self {
        Self::new()
    }
}

impl Controller {
    pub fn new() -> Self {
        Self::with_decision_capacity(DecisionLog::DEFAULT_CAPACITY)
    }

    /// A controller whose decision log keeps the last `capacity` records.
    pub fn with_decision_capacity(capacity: usize) -> Self {
        Controller {
            upstreams: BTreeMap::new(),
            shared: Shared {
                next_version: 1,
                decisions: DecisionLog::new(capacity),
            },
            booted: false,
        }
    }

    /// Apply one event at `now`, appending the resulting actions to `out`.
    pub fn apply(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::TopologyReplaced { upstreams } => self.replace_topology(now, upstreams, out),
            Event::Resolved {
                upstream,
                target_index,
                result,
                ttl,
            } => {
                if let Some(up) = self.upstreams.get_mut(&upstream) {
                    up.on_resolved(now, target_index, result, ttl, &mut self.shared, out);
                }
            }
            Event::ProbeCompleted {
                upstream,
                address,
                slot,
                outcome,
            } => {
                if let Some(up) = self.upstreams.get_mut(&upstream) {
                    up.on_probe(now, &address, slot, outcome, &mut self.shared, out);
                }
            }
            Event::AttemptCompleted {
                upstream,
                address,
                outcome,
                latency: _,
            } => {
                if let Some(up) = self.upstreams.get_mut(&upstream) {
                    up.on_attempt(now, &address, outcome, &mut self.shared, out);
                }
            }
            Event::Operator {
                upstream,
                command,
                actor,
            } => {
                if let Some(up) = self.upstreams.get_mut(&upstream) {
                    up.on_operator(now, command, actor, &mut self.shared, out);
                }
            }
        }
    }

    /// Fire every timer due at `now`: probes, DNS refreshes, ejection ends, hold-down
    /// expiry, ramp steps and effective-weight refreshes.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        for up in self.upstreams.values_mut() {
            up.tick(now, &mut self.shared, out);
        }
    }

    /// The earliest time [`Controller::tick`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.upstreams
            .values()
            .filter_map(UpstreamState::next_deadline)
            .min()
    }

    /// The latest published snapshot of `upstream`.
    pub fn snapshot(&self, upstream: &str) -> Option<Arc<UpstreamSnapshot>> {
        self.upstreams.get(upstream)?.snapshot.clone()
    }

    /// Every upstream's latest snapshot, by name.
    pub fn snapshots(&self) -> impl Iterator<Item = &Arc<UpstreamSnapshot>> {
        self.upstreams.values().filter_map(|u| u.snapshot.as_ref())
    }

    /// The decision log (last `capacity` records).
    pub fn decisions(&self) -> &DecisionLog {
        &self.shared.decisions
    }

    /// Names of all upstreams, sorted.
    pub fn upstream_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.upstreams.keys()
    }

    /// Health, shares and failback state of `upstream` for the admin API.
    pub fn upstream_status(&self, upstream: &str, now: Instant) -> Option<UpstreamStatus> {
        self.upstreams.get(upstream).map(|u| u.status(now))
    }

    fn replace_topology(&mut self, now: Instant, specs: Vec<UpstreamSpec>, out: &mut Vec<Action>) {
        let boot = !self.booted;
        self.booted = true;
        let mut old = std::mem::take(&mut self.upstreams);
        for spec in specs {
            let name = spec.name.clone();
            if self.upstreams.contains_key(&name) {
                // Duplicate names are rejected by sluice-config; keep the first.
                continue;
            }
            let state = match old.remove(&name) {
                Some(previous) => {
                    let mut up = previous.reconfigure(now, spec, out);
                    up.refresh(now, Cause::Reload, &mut self.shared, out);
                    up
                }
                None => {
                    let mut up = UpstreamState::create(now, spec, boot, out);
                    up.refresh(now, Cause::Reload, &mut self.shared, out);
                    up
                }
            };
            self.upstreams.insert(name, state);
        }
        for name in old.into_keys() {
            out.push(Action::Remove { upstream: name });
        }
    }
}

fn clamp_ttl(ttl: Option<Duration>) -> Duration {
    ttl.unwrap_or(DNS_DEFAULT_TTL)
        .clamp(DNS_MIN_TTL, DNS_MAX_TTL)
}

fn tiers_of(spec: &UpstreamSpec) -> Vec<u8> {
    let mut tiers: Vec<u8> = spec
        .targets
        .iter()
        .filter(|t| t.weight > 0)
        .map(|t| t.tier)
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    tiers
}

/// The distinct regions of each of `tiers` (targets with weight > 0), sorted.
fn regions_by_tier(spec: &UpstreamSpec, tiers: &[u8]) -> Vec<Vec<Arc<str>>> {
    tiers
        .iter()
        .map(|tier| {
            let mut regions: Vec<Arc<str>> = spec
                .targets
                .iter()
                .filter(|t| t.tier == *tier && t.weight > 0)
                .map(|t| t.region.clone())
                .collect();
            regions.sort();
            regions.dedup();
            regions
        })
        .collect()
}

fn share_text(x: f64) -> String {
    format!("{x:.3}")
}

impl UpstreamState {
    fn create(now: Instant, spec: UpstreamSpec, boot: bool, out: &mut Vec<Action>) -> Self {
        let tiers = tiers_of(&spec);
        let engine = FailoverEngine::new(&spec.failover, &vec![1.0; tiers.len()], now);
        let mut up = UpstreamState {
            active: Arc::new(spec.healthchecks.active.clone()),
            checks_enabled: spec.healthchecks.enabled(),
            targets: Vec::new(),
            addresses: AddressTable::default(),
            tier_regions: Vec::new(),
            tiers,
            cursors: BTreeMap::new(),
            engine,
            mode: Mode::Normal,
            split: Vec::new(),
            shares: Vec::new(),
            snapshot: None,
            weights_refresh_at: None,
            retired: BTreeMap::new(),
            probe_schedule: ProbeSchedule::default(),
            next_ejection_end: None,
            next_resolve_at: None,
            spec,
        };
        up.targets = up
            .spec
            .targets
            .iter()
            .map(|t| TargetState {
                ip: t.ip(),
                spec: t.clone(),
                resolved: Vec::new(),
                dns_error: None,
                next_resolve: None,
                drained: false,
                starting: boot,
            })
            .collect();
        up.tier_regions = regions_by_tier(&up.spec, &up.tiers);
        up.start_targets(now, out);
        up.sync_addresses(now, boot);
        // The engine starts from the health the first evaluation sees.
        let health: Vec<f64> = up
            .capacities(now)
            .iter()
            .map(TierCapacity::healthy_share)
            .collect();
        up.engine = FailoverEngine::new(&up.spec.failover, &health, now);
        up
    }

    /// Literal targets get their address now; hostname targets without an answer are
    /// sent to DNS.
    fn start_targets(&mut self, now: Instant, out: &mut Vec<Action>) {
        let name = self.spec.name.clone();
        for (index, target) in self.targets.iter_mut().enumerate() {
            if let Some(ip) = target.ip {
                target.resolved = vec![ResolvedAddress {
                    addr: SocketAddr::new(ip, target.spec.port),
                    weight: None,
                }];
                target.next_resolve = None;
            } else if target.resolved.is_empty() && target.dns_error.is_none() {
                out.push(Action::Resolve {
                    upstream: name.clone(),
                    target_index: index as u32,
                    host: target.spec.host.clone(),
                    port: target.spec.port,
                });
                target.next_resolve = Some(now + DNS_RETRY);
            }
        }
        self.next_resolve_at = earliest_resolve(&self.targets);
    }

    /// A reload of an existing upstream: keep what stays.
    fn reconfigure(mut self, now: Instant, spec: UpstreamSpec, out: &mut Vec<Action>) -> Self {
        let health_changed = spec.healthchecks != self.spec.healthchecks;
        let mut old_targets: BTreeMap<String, TargetState> = std::mem::take(&mut self.targets)
            .into_iter()
            .map(|t| (t.spec.target.clone(), t))
            .collect();
        self.targets = spec
            .targets
            .iter()
            .map(|t| match old_targets.remove(&t.target) {
                Some(old) if old.spec.host == t.host && old.spec.port == t.port => TargetState {
                    spec: t.clone(),
                    ip: t.ip(),
                    resolved: old.resolved,
                    dns_error: old.dns_error,
                    next_resolve: old.next_resolve,
                    drained: old.drained,
                    starting: old.starting,
                },
                _ => TargetState {
                    spec: t.clone(),
                    ip: t.ip(),
                    resolved: Vec::new(),
                    dns_error: None,
                    next_resolve: None,
                    drained: false,
                    starting: false,
                },
            })
            .collect();
        let tiers = tiers_of(&spec);
        self.active = Arc::new(spec.healthchecks.active.clone());
        self.checks_enabled = spec.healthchecks.enabled();
        self.spec = spec;
        if health_changed {
            for address in self.addresses.values_mut() {
                address.health.reset_counters();
                address.next_probe = None;
            }
        }
        self.start_targets(now, out);
        self.sync_addresses(now, false);
        if health_changed {
            for address in self.addresses.values_mut() {
                address.next_probe = probe_after(&self.active, address, now);
            }
            self.rebuild_timers();
        }
        // Regions may change without the tiers changing.
        self.tier_regions = regions_by_tier(&self.spec, &tiers);
        if tiers != self.tiers {
            self.tiers = tiers;
            self.cursors.clear();
            let health: Vec<f64> = self
                .capacities(now)
                .iter()
                .map(TierCapacity::healthy_share)
                .collect();
            self.engine = FailoverEngine::new(&self.spec.failover, &health, now);
        }
        self
    }

    /// Make the address set match the targets' current answers; keep state by key.
    fn sync_addresses(&mut self, now: Instant, boot: bool) {
        let mut old = std::mem::take(&mut self.addresses).into_map();
        let mut next: BTreeMap<AddressKey, AddressState> = BTreeMap::new();
        // One `Arc` per distinct hostname (the ones already in use first): thousands of
        // IP targets of one host then share one hostname allocation instead of one each,
        // so key comparisons of equal hostnames stop at the pointer and the per-probe
        // reference counting touches one hot cache line rather than a cold one per
        // address (that was most of the controller's remaining per-probe time).
        let mut hostnames: BTreeSet<Arc<str>> = old.keys().map(|k| k.hostname.clone()).collect();
        for (index, target) in self.targets.iter_mut().enumerate() {
            let no_slow_start = boot || target.starting;
            if !target.resolved.is_empty() {
                target.starting = false;
            }
            let hostname = target.hostname();
            let hostname = match hostnames.get(&hostname) {
                Some(shared) => shared.clone(),
                None => {
                    hostnames.insert(hostname.clone());
                    hostname
                }
            };
            for answer in &target.resolved {
                let key = AddressKey {
                    addr: answer.addr,
                    hostname: hostname.clone(),
                };
                if next.contains_key(&key) {
                    continue;
                }
                // Kong: a weight-0 target disables all its addresses, SRV weights or not.
                let weight = if target.spec.weight == 0 {
                    0
                } else {
                    answer.weight.unwrap_or(target.spec.weight)
                };
                let returning = self
                    .retired
                    .remove(&key)
                    .filter(|(left, _)| now.saturating_duration_since(*left) < RETIRED_KEEP)
                    .map(|(_, state)| state);
                let mut state = old
                    .remove(&key)
                    .or(returning)
                    .unwrap_or_else(|| AddressState {
                        key: key.clone(),
                        target_index: index as u32,
                        weight,
                        tier: target.spec.tier,
                        region: target.spec.region.clone(),
                        health: AddressHealth::new(),
                        overridden: false,
                        outlier: OutlierDetector::new(),
                        load: Arc::new(AddressLoad::new(now)),
                        available_since: if no_slow_start { None } else { Some(now) },
                        was_available: true,
                        next_probe: None,
                        dns: DnsRecord::of(key.addr, answer.weight.is_some()),
                    });
                let fresh = state.next_probe.is_none();
                state.target_index = index as u32;
                state.weight = weight;
                state.tier = target.spec.tier;
                state.region = target.spec.region.clone();
                // SRV answers carry a weight (0 mapped to 1), A/AAAA answers none.
                state.dns = DnsRecord::of(state.key.addr, answer.weight.is_some());
                if weight == 0 {
                    state.next_probe = None;
                } else if fresh {
                    state.next_probe = probe_after(&self.active, &state, now);
                }
                next.insert(key, state);
            }
        }
        self.addresses = AddressTable::from_map(next);
        for (key, state) in old {
            self.retired.insert(key, (now, state));
        }
        self.retired
            .retain(|_, (left, _)| now.saturating_duration_since(*left) < RETIRED_KEEP);
        while self.retired.len() > RETIRED_MAX {
            let oldest = self
                .retired
                .iter()
                .min_by_key(|(_, (left, _))| *left)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => {
                    self.retired.remove(&key);
                }
                None => break,
            }
        }
        self.rebuild_timers();
    }

    /// Rebuild the probe index and the cached ejection deadline from the addresses
    /// (after changes to the address set or to many schedules at once).
    fn rebuild_timers(&mut self) {
        self.probe_schedule = self
            .addresses
            .indexed()
            .filter_map(|(i, a)| a.next_probe.map(|t| (t, i)))
            .collect();
        self.next_ejection_end = earliest_ejection_end(&self.addresses);
    }

    fn tier_position(&self, tier: u8) -> Option<usize> {
        self.tiers.binary_search(&tier).ok()
    }

    fn drained(&self, address: &AddressState) -> bool {
        self.targets
            .get(address.target_index as usize)
            .is_some_and(|t| t.drained)
    }

    fn unavailable(&self, address: &AddressState, now: Instant) -> Option<Unavailable> {
        if address.weight == 0 {
            Some(Unavailable::ZeroWeight)
        } else if self.drained(address) {
            Some(Unavailable::Drained)
        } else if !address.health.is_healthy() {
            Some(Unavailable::Unhealthy)
        } else {
            match address.outlier.ejected_until() {
                Some(until) if now < until => Some(Unavailable::Ejected {
                    until_ms: until.as_millis(),
                }),
                _ => None,
            }
        }
    }

    fn capacities(&self, now: Instant) -> Vec<TierCapacity> {
        let mut caps = vec![
            TierCapacity {
                total_weight: 0,
                available_weight: 0,
            };
            self.tiers.len()
        ];
        for address in self.addresses.values() {
            if address.weight == 0 {
                continue;
            }
            let Some(cap) = self
                .tier_position(address.tier)
                .and_then(|pos| caps.get_mut(pos))
            else {
                continue;
            };
            cap.total_weight += u64::from(address.weight);
            if self.unavailable(address, now).is_none() {
                cap.available_weight += u64::from(address.weight);
            }
        }
        caps
    }

    fn kong_balancer_healthy(&self, caps: &[TierCapacity]) -> bool {
        let total: u64 = caps.iter().map(|c| c.total_weight).sum();
        let available: u64 = caps.iter().map(|c| c.available_weight).sum();
        total > 0 && (available as f64 / total as f64) * 100.0 > self.spec.healthchecks.threshold
    }

    fn tier_shares(&self, split: &[u32]) -> Vec<TierShare> {
        self.tiers
            .iter()
            .enumerate()
            .map(|(pos, tier)| TierShare {
                tier: *tier,
                regions: self.regions_of(*tier),
                share_ppm: split.get(pos).copied().unwrap_or(0),
            })
            .collect()
    }

    fn regions_of(&self, tier: u8) -> Vec<Arc<str>> {
        self.tier_position(tier)
            .and_then(|pos| self.tier_regions.get(pos))
            .cloned()
            .unwrap_or_default()
    }

    /// Re-evaluate health shares, mode and split; record a decision when traffic moved;
    /// publish a snapshot when selection changed.
    fn refresh(&mut self, now: Instant, cause: Cause, shared: &mut Shared, out: &mut Vec<Action>) {
        // Track availability edges for slow start.
        let available: Vec<bool> = self
            .addresses
            .values()
            .map(|a| self.unavailable(a, now).is_none())
            .collect();
        for (a, available) in self.addresses.values_mut().zip(available) {
            if available && !a.was_available {
                a.available_since = Some(now);
            }
            a.was_available = available;
        }

        let caps = self.capacities(now);
        let health: Vec<f64> = caps.iter().map(TierCapacity::healthy_share).collect();
        let policy = self.spec.failover.clone();
        let failback = self.engine.update(&policy, now, &health);
        let total: u64 = caps.iter().map(|c| c.total_weight).sum();
        let kong_healthy = self.kong_balancer_healthy(&caps);
        let any_usable_in_panic = self
            .addresses
            .values()
            .any(|a| a.weight > 0 && !self.drained(a));

        let (mode, split) =
            if total == 0 || (self.spec.healthchecks.threshold > 0.0 && !kong_healthy) {
                (Mode::Unavailable, vec![0; self.tiers.len()])
            } else if failover::is_panic(&health, policy.overprovisioning, policy.panic_threshold) {
                if any_usable_in_panic {
                    (
                        Mode::Panic,
                        failover::panic_split(&caps, policy.overprovisioning),
                    )
                } else {
                    (Mode::Unavailable, vec![0; self.tiers.len()])
                }
            } else {
                let split = self.engine.applied_split(&policy);
                let mode = if split.iter().all(|s| *s == 0) {
                    Mode::Unavailable
                } else if matches!(self.engine.phase(), FailbackPhase::Ramp { .. }) {
                    Mode::FailingBack
                } else if split.first().copied().unwrap_or(0) < PPM {
                    Mode::FailedOver
                } else {
                    Mode::Normal
                };
                (mode, split)
            };

        let before_split = std::mem::replace(&mut self.split, split.clone());
        let after_shares = self.tier_shares(&split);
        let before_shares = std::mem::replace(&mut self.shares, after_shares);
        let before_mode = std::mem::replace(&mut self.mode, mode);
        let existed = self.snapshot.is_some();
        let split_changed = before_split != split;

        let kind = if !existed {
            None
        } else if mode != before_mode && mode == Mode::Panic {
            Some(DecisionKind::PanicEnter)
        } else if before_mode == Mode::Panic && mode != Mode::Panic {
            Some(DecisionKind::PanicExit)
        } else if let Some(event) = &failback {
            Some(event.kind)
        } else if mode == Mode::Panic
            && before_mode == Mode::Panic
            && split_changed
            && !matches!(cause, Cause::Operator { .. } | Cause::Reload)
        {
            Some(DecisionKind::PanicShift)
        } else if split_changed || mode != before_mode {
            Some(match &cause {
                Cause::Operator { .. } => DecisionKind::Operator,
                Cause::Reload => DecisionKind::ConfigReload,
                _ if failover::moved_away(&before_split, &split) || mode == Mode::Unavailable => {
                    let first = before_split.iter().position(|s| *s > 0);
                    let emptied = first.is_some_and(|i| split.get(i).copied().unwrap_or(0) == 0);
                    if emptied || mode == Mode::Unavailable {
                        DecisionKind::Failover
                    } else {
                        DecisionKind::Spill
                    }
                }
                // Traffic moved towards preferred tiers without a failback: a tier with
                // no failure history gained capacity, or the upstream became usable again.
                _ => DecisionKind::FailbackComplete,
            })
        } else {
            match &cause {
                Cause::Ejection { .. } => Some(DecisionKind::Ejection),
                Cause::EjectionEnd { .. } => Some(DecisionKind::EjectionEnd),
                Cause::Operator { .. } => Some(DecisionKind::Operator),
                _ => None,
            }
        };

        if let Some(kind) = kind {
            let mut inputs: Vec<(String, String)> = Vec::new();
            for (pos, (tier, cap)) in self.tiers.iter().zip(&caps).enumerate() {
                inputs.push((format!("tier[{pos}]"), tier.to_string()));
                inputs.push((
                    format!("tier[{pos}].healthy_share"),
                    share_text(cap.healthy_share()),
                ));
            }
            inputs.push((
                "overprovisioning".into(),
                policy.overprovisioning.to_string(),
            ));
            inputs.push(("mode".into(), format!("{mode:?}")));
            if let Cause::Ejection { until, .. } = &cause {
                inputs.push(("ejected_until_ms".into(), until.as_millis().to_string()));
            }
            let trigger = match &failback {
                Some(event) => {
                    inputs.extend(event.inputs.iter().cloned());
                    format!("{}; after {}", event.trigger, cause.describe())
                }
                None => match kind {
                    DecisionKind::PanicEnter => format!(
                        "every tier below panic threshold {} and short of capacity; after {}",
                        policy.panic_threshold,
                        cause.describe()
                    ),
                    DecisionKind::PanicShift => format!(
                        "still in panic; split follows the capacity that changed; after {}",
                        cause.describe()
                    ),
                    DecisionKind::PanicExit => {
                        format!("healthy capacity is back; after {}", cause.describe())
                    }
                    _ if mode == Mode::Unavailable => {
                        let why = if total == 0 {
                            "no address with weight > 0".to_string()
                        } else if self.spec.healthchecks.threshold > 0.0 && !kong_healthy {
                            format!(
                                "available weight not above Kong threshold {}%",
                                self.spec.healthchecks.threshold
                            )
                        } else {
                            "no usable address".to_string()
                        };
                        format!("upstream unavailable: {why}; after {}", cause.describe())
                    }
                    _ => cause.describe(),
                },
            };
            let record = shared.decisions.push(DecisionRecord {
                seq: 0,
                at: now,
                upstream: self.spec.name.clone(),
                kind,
                trigger,
                inputs,
                before: before_shares,
                after: self.shares.clone(),
            });
            out.push(Action::Decision(record));
        }

        self.publish_if_changed(now, &caps, kong_healthy, shared, out);
    }

    fn adaptive_signal(
        &self,
        address: &AddressState,
        now: Instant,
        medians: &BTreeMap<u8, f64>,
    ) -> Option<adaptive::AdaptiveSignal> {
        if self.spec.algorithm != Algorithm::RoundRobin || !self.spec.failover.adaptive_weights {
            return None;
        }
        let (failed, total) = address
            .outlier
            .window_counts(&self.spec.failover.outlier, now);
        Some(adaptive::AdaptiveSignal {
            latency_us: ewma::latency_us(&address.load, now),
            tier_median_us: medians.get(&address.tier).copied().unwrap_or(0.0),
            error_ratio: if total == 0 {
                0.0
            } else {
                f64::from(failed) / f64::from(total)
            },
            requests: total,
        })
    }

    fn build_snapshot(
        &mut self,
        now: Instant,
        caps: &[TierCapacity],
        kong_healthy: bool,
    ) -> UpstreamSnapshot {
        let adaptive_on =
            self.spec.algorithm == Algorithm::RoundRobin && self.spec.failover.adaptive_weights;
        // Tier medians of latency over available members (for adaptive weights).
        let mut medians: BTreeMap<u8, f64> = BTreeMap::new();
        if adaptive_on {
            let mut per_tier: BTreeMap<u8, Vec<f64>> = BTreeMap::new();
            for a in self.addresses.values() {
                if self.unavailable(a, now).is_none() {
                    per_tier
                        .entry(a.tier)
                        .or_default()
                        .push(ewma::latency_us(&a.load, now));
                }
            }
            for (tier, mut values) in per_tier {
                if let Some(m) = adaptive::median(&mut values) {
                    medians.insert(tier, m);
                }
            }
        }

        let mut ordered: Vec<&AddressState> = self.addresses.values().collect();
        ordered.sort_by(|a, b| {
            (a.target_index, a.key.addr, &a.key.hostname).cmp(&(
                b.target_index,
                b.key.addr,
                &b.key.hostname,
            ))
        });
        let mut refresh_at: Option<Instant> = None;
        let mut views = Vec::with_capacity(ordered.len());
        for a in &ordered {
            let unavailable = self.unavailable(a, now);
            let inputs = adaptive::WeightInputs {
                weight: a.weight,
                available: unavailable.is_none(),
                available_since: a.available_since,
                slow_start: self.spec.failover.slow_start,
                now,
                signal: self.adaptive_signal(a, now, &medians),
            };
            if adaptive::next_change(&inputs).is_some() || (adaptive_on && a.weight > 0) {
                refresh_at = Some(now + WEIGHT_REFRESH);
            }
            // Kong: weight 0 and checks off both read HEALTHCHECKS_OFF (an operator
            // override still shows, so a forced-down address is never reported fine).
            let health = if a.weight == 0 || (!self.checks_enabled && !a.overridden) {
                HealthStatus::HealthchecksOff
            } else if a.health.is_healthy() {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            };
            views.push(AddressView {
                key: a.key.clone(),
                target_index: a.target_index,
                weight: a.weight,
                effective_weight: adaptive::effective_weight(&inputs),
                tier: a.tier,
                region: a.region.clone(),
                health,
                unavailable,
                load: a.load.clone(),
                dns: a.dns,
            });
        }
        self.weights_refresh_at = refresh_at;

        let panic = self.mode == Mode::Panic;
        let mut tiers = Vec::with_capacity(self.tiers.len());
        let mut hash_tables = Vec::new();
        for (pos, tier) in self.tiers.iter().enumerate() {
            let members: Vec<u32> = views
                .iter()
                .enumerate()
                .filter(|(_, v)| v.tier == *tier && v.weight > 0)
                .map(|(i, _)| i as u32)
                .collect();
            // Balancing weights: effective weights of available members, or in panic
            // the configured weights of every non-drained member.
            let weighted: Vec<(u32, u32)> = members
                .iter()
                .filter_map(|&i| {
                    let v = views.get(i as usize)?;
                    let w = if panic {
                        if v.unavailable == Some(Unavailable::Drained) {
                            0
                        } else {
                            v.weight
                        }
                    } else {
                        v.effective_weight
                    };
                    Some((i, w))
                })
                .collect();
            if self.spec.algorithm == Algorithm::ConsistentHashing {
                // Hash tables use configured weights: slow start would otherwise rebuild
                // the table every second and move keys between addresses while it runs,
                // which is exactly what consistent hashing promises not to do.
                let keys: Vec<(u32, u32, String)> = weighted
                    .iter()
                    .filter_map(|&(i, w)| {
                        let v = views.get(i as usize)?;
                        let w = if w > 0 { v.weight } else { 0 };
                        Some((i, w, v.key.addr.to_string()))
                    })
                    .collect();
                let refs: Vec<(u32, u32, &str)> =
                    keys.iter().map(|(i, w, k)| (*i, *w, k.as_str())).collect();
                hash_tables.push(Arc::from(hash::maglev_table(
                    &refs,
                    hash::table_size(self.spec.slots),
                )));
            }
            let cursor = self
                .cursors
                .entry(*tier)
                .or_insert_with(|| Arc::new(AtomicU64::new(0)))
                .clone();
            tiers.push(TierView {
                tier: *tier,
                regions: self.regions_of(*tier),
                members,
                share_ppm: self.split.get(pos).copied().unwrap_or(0),
                healthy_share: caps.get(pos).map_or(0.0, TierCapacity::healthy_share),
                rr_order: Arc::from(round_robin::smooth_order(&weighted)),
                rr_cursor: cursor,
            });
        }

        UpstreamSnapshot {
            version: 0,
            name: self.spec.name.clone(),
            algorithm: self.spec.algorithm,
            addresses: views,
            tiers,
            mode: self.mode,
            balancer_healthy: self.mode != Mode::Unavailable
                && (self.spec.healthchecks.threshold <= 0.0 || kong_healthy),
            hash_tables,
        }
    }

    fn publish_if_changed(
        &mut self,
        now: Instant,
        caps: &[TierCapacity],
        kong_healthy: bool,
        shared: &mut Shared,
        out: &mut Vec<Action>,
    ) {
        let mut next = self.build_snapshot(now, caps, kong_healthy);
        if let Some(current) = &self.snapshot
            && same_selection(current, &next)
        {
            return;
        }
        next.version = shared.next_version;
        shared.next_version += 1;
        let next = Arc::new(next);
        self.snapshot = Some(next.clone());
        out.push(Action::Publish(next));
    }

    fn on_resolved(
        &mut self,
        now: Instant,
        target_index: u32,
        result: Result<Vec<ResolvedAddress>, String>,
        ttl: Option<Duration>,
        shared: &mut Shared,
        out: &mut Vec<Action>,
    ) {
        let Some(target) = self.targets.get_mut(target_index as usize) else {
            return;
        };
        if target.ip.is_some() {
            return;
        }
        let description = target.spec.target.clone();
        match result {
            Ok(mut answers) if !answers.is_empty() => {
                answers.sort_by_key(|a| a.addr);
                answers.dedup_by(|a, b| a.addr == b.addr);
                target.resolved = answers;
                target.dns_error = None;
                target.next_resolve = Some(now + clamp_ttl(ttl));
            }
            Ok(_) => {
                target.dns_error = Some("empty DNS answer".to_string());
                target.next_resolve = Some(now + DNS_RETRY);
            }
            Err(error) => {
                // Stale is better than empty: keep the previous addresses.
                target.dns_error = Some(error);
                target.next_resolve = Some(now + DNS_RETRY);
            }
        }
        self.next_resolve_at = earliest_resolve(&self.targets);
        self.sync_addresses(now, false);
        self.refresh(
            now,
            Cause::Dns {
                target: description,
            },
            shared,
            out,
        );
    }

    fn on_probe(
        &mut self,
        now: Instant,
        key: &AddressKey,
        slot: u32,
        outcome: ProbeOutcome,
        shared: &mut Shared,
        out: &mut Vec<Action>,
    ) {
        let Some(index) = self.addresses.position(key, Some(slot)) else {
            return;
        };
        let Some(address) = self.addresses.at_mut(index) else {
            return;
        };
        if address.weight == 0 {
            return;
        }
        let Some(transition) = address.health.on_probe(&self.active, outcome) else {
            return;
        };
        if !transition.flipped() {
            return;
        }
        let name = self.spec.name.clone();
        address.overridden = false;
        let next = probe_after(&self.active, address, now);
        set_next_probe(&mut self.probe_schedule, address, index, next);
        out.push(Action::HealthChanged {
            upstream: name,
            address: key.clone(),
            healthy: transition.to.is_healthy(),
            reason: transition.reason.clone(),
        });
        let cause = Cause::Health {
            address: key.addr,
            reason: transition.reason,
        };
        self.refresh(now, cause, shared, out);
    }

    fn on_attempt(
        &mut self,
        now: Instant,
        key: &AddressKey,
        outcome: AttemptOutcome,
        shared: &mut Shared,
        out: &mut Vec<Action>,
    ) {
        // The common attempt (a success on a healthy address) changes nothing the
        // snapshot reads: nothing is cloned up front (the name, the check settings and
        // the failover policy were cloned per attempt before, ~5% of its cost).
        let Some(index) = self.addresses.position(key, None) else {
            return;
        };
        let Some(address) = self.addresses.at_mut(index) else {
            return;
        };
        if address.weight == 0 {
            return;
        }
        let tier = address.tier;
        let mut cause = None;
        if let Some(transition) = address
            .health
            .on_attempt(&self.spec.healthchecks.passive, outcome)
            && transition.flipped()
        {
            address.overridden = false;
            let next = probe_after(&self.active, address, now);
            set_next_probe(&mut self.probe_schedule, address, index, next);
            out.push(Action::HealthChanged {
                upstream: self.spec.name.clone(),
                address: key.clone(),
                healthy: transition.to.is_healthy(),
                reason: transition.reason.clone(),
            });
            cause = Some(Cause::Health {
                address: key.addr,
                reason: transition.reason,
            });
        }
        let outlier_policy = &self.spec.failover.outlier;
        let wants = address.outlier.on_attempt(outlier_policy, now, outcome);
        if let Some(reason) = wants
            && self.may_eject(tier, now)
            && let Some(address) = self.addresses.at_mut(index)
        {
            let until = address.outlier.eject(&self.spec.failover.outlier, now);
            cause = Some(Cause::Ejection {
                address: key.addr,
                reason: reason.describe(),
                until,
            });
            // A rare event: a scan keeps the cached deadline exact (a re-ejection moves
            // an address's end later).
            self.next_ejection_end = earliest_ejection_end(&self.addresses);
        }
        // Only a failback ramp counts attempts: outside one, no tier lookup.
        let abort_due = self.engine.counts_attempts()
            && self.tier_position(tier).is_some_and(|pos| {
                let failed = outlier::is_failure(outcome);
                self.engine.record_attempt(&self.spec.failover, pos, failed)
            });
        if cause.is_none() && abort_due {
            cause = Some(Cause::RampErrors);
        }
        if let Some(cause) = cause {
            self.refresh(now, cause, shared, out);
        }
    }

    /// The share cap: fewer than `max_ejected(members)` of the tier's addresses ejected.
    fn may_eject(&self, tier: u8, now: Instant) -> bool {
        let members = self
            .addresses
            .values()
            .filter(|a| a.tier == tier && a.weight > 0);
        let (count, ejected) = members.fold((0usize, 0usize), |(c, e), a| {
            (c + 1, e + usize::from(a.outlier.is_ejected(now)))
        });
        ejected < outlier::max_ejected(count, self.spec.failover.outlier.max_ejected_share)
    }

    fn on_operator(
        &mut self,
        now: Instant,
        command: OperatorCommand,
        actor: String,
        shared: &mut Shared,
        out: &mut Vec<Action>,
    ) {
        let name = self.spec.name.clone();
        let matches =
            |t: &TargetState, target: &str| t.spec.target == target || t.spec.id == target;
        let what = match command {
            OperatorCommand::SetHealth {
                target,
                address,
                healthy,
            } => {
                let indices: Vec<u32> = self
                    .targets
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| matches(t, &target))
                    .map(|(i, _)| i as u32)
                    .collect();
                if indices.is_empty() {
                    return;
                }
                let active = self.active.clone();
                for (index, state) in self.addresses.values_mut().enumerate() {
                    if !indices.contains(&state.target_index)
                        || address.is_some_and(|a| a != state.key.addr)
                    {
                        continue;
                    }
                    state.overridden = true;
                    if let Some(transition) = state.health.set_override(healthy) {
                        let next = probe_after(&active, state, now);
                        set_next_probe(&mut self.probe_schedule, state, index as u32, next);
                        out.push(Action::HealthChanged {
                            upstream: name.clone(),
                            address: state.key.clone(),
                            healthy,
                            reason: format!("{} by {actor}", transition.reason),
                        });
                    }
                }
                let scope = address.map_or(target.clone(), |a| format!("{target} address {a}"));
                format!(
                    "set {scope} {}",
                    if healthy { "healthy" } else { "unhealthy" }
                )
            }
            OperatorCommand::Drain { target, drained } => {
                let mut found = false;
                for t in self.targets.iter_mut().filter(|t| matches(t, &target)) {
                    t.drained = drained;
                    found = true;
                }
                if !found {
                    return;
                }
                format!("{} {target}", if drained { "drain" } else { "undrain" })
            }
        };
        self.refresh(now, Cause::Operator { actor, what }, shared, out);
    }

    fn tick(&mut self, now: Instant, shared: &mut Shared, out: &mut Vec<Action>) {
        let name = self.spec.name.clone();
        // Probes due: taken from the front of the index, then emitted in address order
        // (the order a scan of the addresses gives, so the actions do not depend on how
        // the due times of one tick happen to differ).
        let mut due = Vec::new();
        self.probe_schedule.take_due(now, &mut due);
        // Index order is key order.
        due.sort_unstable();
        for index in due {
            let Some(address) = self.addresses.at_mut(index) else {
                debug_assert!(false, "probe index names an unknown address");
                continue;
            };
            out.push(Action::Probe {
                upstream: name.clone(),
                address: address.key.clone(),
                slot: index,
                check: self.active.clone(),
                host_header: self.spec.host_header.clone(),
            });
            // Already out of the index: insert the new due time only.
            address.next_probe = probe_after(&self.active, address, now);
            if let Some(t) = address.next_probe {
                self.probe_schedule.insert(t, index);
            }
        }
        // DNS refreshes due.
        if self.next_resolve_at.is_some_and(|t| t <= now) {
            for (index, target) in self.targets.iter_mut().enumerate() {
                if target.next_resolve.is_some_and(|t| t <= now) {
                    out.push(Action::Resolve {
                        upstream: name.clone(),
                        target_index: index as u32,
                        host: target.spec.host.clone(),
                        port: target.spec.port,
                    });
                    target.next_resolve = Some(now + DNS_RETRY);
                }
            }
            self.next_resolve_at = earliest_resolve(&self.targets);
        }
        // Ejections ending.
        let mut ended = Vec::new();
        if self.next_ejection_end.is_some_and(|t| t <= now) {
            for address in self.addresses.values_mut() {
                if address.outlier.expire(now) {
                    ended.push(address.key.addr);
                }
            }
            self.next_ejection_end = earliest_ejection_end(&self.addresses);
        }
        let engine_due = self
            .engine
            .next_deadline(&self.spec.failover)
            .is_some_and(|t| t <= now);
        let weights_due = self.weights_refresh_at.is_some_and(|t| t <= now);
        if !ended.is_empty() {
            self.refresh(now, Cause::EjectionEnd { addresses: ended }, shared, out);
        } else if engine_due || weights_due {
            self.refresh(now, Cause::Timer, shared, out);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        debug_assert!(self.timers_consistent(), "timer index out of step");
        self.probe_schedule
            .first()
            .into_iter()
            .chain(self.next_ejection_end)
            .chain(self.next_resolve_at)
            .chain(self.engine.next_deadline(&self.spec.failover))
            .chain(self.weights_refresh_at)
            .min()
    }

    /// The indexes agree with the per-address and per-target state they summarise
    /// (checked in debug builds: the unit tests and the simulator run every step
    /// through it).
    fn timers_consistent(&self) -> bool {
        let scanned: BTreeSet<(Instant, u32)> = self
            .addresses
            .indexed()
            .filter_map(|(i, a)| a.next_probe.map(|t| (t, i)))
            .collect();
        scanned == self.probe_schedule.pairs()
            && earliest_ejection_end(&self.addresses) == self.next_ejection_end
            && earliest_resolve(&self.targets) == self.next_resolve_at
    }

    fn status(&self, now: Instant) -> UpstreamStatus {
        let caps = self.capacities(now);
        let views: BTreeMap<&AddressKey, &AddressView> = self
            .snapshot
            .iter()
            .flat_map(|s| s.addresses.iter())
            .map(|v| (&v.key, v))
            .collect();
        let targets = self
            .targets
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let addresses: Vec<AddressStatus> = self
                    .addresses
                    .values()
                    .filter(|a| a.target_index == index as u32)
                    .map(|a| AddressStatus {
                        key: a.key.clone(),
                        weight: a.weight,
                        tier: a.tier,
                        region: a.region.clone(),
                        health: views
                            .get(&a.key)
                            .map_or(HealthStatus::HealthchecksOff, |v| v.health),
                        state: a.health.state(),
                        counters: a.health.counters(),
                        ejected_until: a.outlier.ejected_until().filter(|u| now < *u),
                        ejections: a.outlier.total_ejections(),
                        drained: t.drained,
                        unavailable: self.unavailable(a, now),
                    })
                    .collect();
                let health = if addresses.is_empty() {
                    HealthStatus::DnsError
                } else if addresses.iter().any(|a| a.health == HealthStatus::Healthy) {
                    HealthStatus::Healthy
                } else if addresses
                    .iter()
                    .any(|a| a.health == HealthStatus::Unhealthy)
                {
                    HealthStatus::Unhealthy
                } else {
                    HealthStatus::HealthchecksOff
                };
                TargetStatus {
                    index: index as u32,
                    id: t.spec.id.clone(),
                    target: t.spec.target.clone(),
                    weight: t.spec.weight,
                    tier: t.spec.tier,
                    region: t.spec.region.clone(),
                    health,
                    dns_error: t.dns_error.clone(),
                    drained: t.drained,
                    addresses,
                }
            })
            .collect();
        UpstreamStatus {
            name: self.spec.name.clone(),
            mode: self.mode,
            kong_balancer_healthy: {
                let total: u64 = caps.iter().map(|c| c.total_weight).sum();
                let available: u64 = caps.iter().map(|c| c.available_weight).sum();
                total > 0
                    && (available as f64 / total as f64) * 100.0 > self.spec.healthchecks.threshold
            },
            healthchecks_enabled: self.checks_enabled,
            total_weight: caps.iter().map(|c| c.total_weight).sum(),
            available_weight: caps.iter().map(|c| c.available_weight).sum(),
            tiers: self
                .tiers
                .iter()
                .enumerate()
                .map(|(pos, tier)| {
                    let cap = caps.get(pos).copied().unwrap_or(TierCapacity {
                        total_weight: 0,
                        available_weight: 0,
                    });
                    TierStatus {
                        tier: *tier,
                        regions: self.regions_of(*tier),
                        share_ppm: self.split.get(pos).copied().unwrap_or(0),
                        healthy_share: cap.healthy_share(),
                        total_weight: cap.total_weight,
                        available_weight: cap.available_weight,
                    }
                })
                .collect(),
            failback: self.engine.phase().clone(),
            hold_down: self.engine.hold_down(),
            targets,
            snapshot_version: self.snapshot.as_ref().map_or(0, |s| s.version),
        }
    }
}

/// Set `address.next_probe` to `next`, keeping the probe index in step (`index`: the
/// address's position in the upstream's table).
fn set_next_probe(
    schedule: &mut ProbeSchedule,
    address: &mut AddressState,
    index: u32,
    next: Option<Instant>,
) {
    if address.next_probe == next {
        return;
    }
    if let Some(t) = address.next_probe {
        schedule.remove(t, index);
    }
    if let Some(t) = next {
        schedule.insert(t, index);
    }
    address.next_probe = next;
}

fn earliest_ejection_end(addresses: &AddressTable) -> Option<Instant> {
    addresses
        .values()
        .filter_map(|a| a.outlier.ejected_until())
        .min()
}

fn earliest_resolve(targets: &[TargetState]) -> Option<Instant> {
    targets.iter().filter_map(|t| t.next_resolve).min()
}

/// When the address's next probe is due given its state (Kong: the healthy loop runs
/// at `healthy_interval`, the unhealthy loop at `unhealthy_interval`; 0 disables).
fn probe_after(
    active: &ActiveHealthCheck,
    address: &AddressState,
    now: Instant,
) -> Option<Instant> {
    if address.weight == 0 {
        return None;
    }
    let interval = if address.health.is_healthy() {
        active.healthy_interval
    } else {
        active.unhealthy_interval
    };
    (!interval.is_zero()).then(|| now + interval)
}

/// Whether two snapshots would make the same picks (everything but version and the
/// shared load/cursor handles).
fn same_selection(a: &UpstreamSnapshot, b: &UpstreamSnapshot) -> bool {
    a.name == b.name
        && a.algorithm == b.algorithm
        && a.mode == b.mode
        && a.balancer_healthy == b.balancer_healthy
        && a.hash_tables == b.hash_tables
        && a.addresses.len() == b.addresses.len()
        && a.addresses.iter().zip(&b.addresses).all(|(x, y)| {
            x.key == y.key
                && x.target_index == y.target_index
                && x.weight == y.weight
                && x.effective_weight == y.effective_weight
                && x.tier == y.tier
                && x.region == y.region
                && x.health == y.health
                && x.unavailable == y.unavailable
                && Arc::ptr_eq(&x.load, &y.load)
        })
        && a.tiers.len() == b.tiers.len()
        && a.tiers.iter().zip(&b.tiers).all(|(x, y)| {
            x.tier == y.tier
                && x.regions == y.regions
                && x.members == y.members
                && x.share_ppm == y.share_ppm
                && x.healthy_share.to_bits() == y.healthy_share.to_bits()
                && x.rr_order == y.rr_order
                && Arc::ptr_eq(&x.rr_cursor, &y.rr_cursor)
        })
}

mod table;
use table::{AddressTable, ProbeSchedule};

#[cfg(test)]
mod tests;
