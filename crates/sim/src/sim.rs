//! The simulation loop: one seed, one world, one controller, virtual time.
//!
//! The loop pops the earliest event from the [`EventQueue`], advances virtual time to
//! it, and handles it exactly as the proxy's driver would: feed the controller an
//! [`Event`], carry out the [`Action`]s it returns (publish a snapshot, probe an
//! address, resolve a name), and call `tick` at the controller's `next_deadline`. The
//! traffic generator plays the data plane: every request picks with `balance::pick` on
//! the snapshot it loaded when it started, retries per the core's retry policy and
//! budget, and the outcome the *client* saw is recorded. After every step the
//! [`Checker`] asserts the safety invariants.
//!
//! Two phases, as in TigerBeetle's VOPR: a fault phase (faults on, safety checked
//! throughout) and a liveness phase (all faults over; the controller must converge
//! within [`Settings::liveness_bound`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_core::balance::{self, NoPeer, PickContext, ewma};
use sluice_core::decision::{DecisionKind, DecisionRecord};
use sluice_core::event::{AttemptOutcome, OperatorCommand, ProbeOutcome, ResolvedAddress};
use sluice_core::retry::{self, FailureKind, RetryBudget, RetryDecision, RetryPolicy};
use sluice_core::snapshot::{AddressKey, Mode, Unavailable, UpstreamSnapshot};
use sluice_core::topology::UpstreamSpec;
use sluice_core::{Action, Controller, Duration, Event, Instant};

use crate::check::{CheckPolicy, Checker, PPM, Violation, render_split, snapshot_split};
use crate::faults::{Fault, FaultKind, SwarmBounds, draw_swarm};
use crate::log::{DEFAULT_LOG_CAPACITY, LogLevel, TransitionLog};
use crate::queue::EventQueue;
use crate::rng::{Rng, Stream};
use crate::settings::{Settings, UPSTREAM};
use crate::world::{Layout, World};

/// Everything that defines one run. The same `SimConfig` always gives the same run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub layout: Layout,
    pub settings: Settings,
    pub faults: Vec<Fault>,
    /// Faults all end by this instant; the liveness phase follows.
    pub fault_phase: Duration,
    /// Mean request rate of the traffic generator (Poisson arrivals).
    pub requests_per_sec: u32,
    /// Run the liveness phase and check convergence at its end.
    pub check_liveness: bool,
    pub log_level: LogLevel,
    /// Which snapshot a retry picks from.
    pub retry_snapshot: RetrySnapshot,
}

/// Which snapshot a request's retries pick from.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum RetrySnapshot {
    /// The one the request loaded when it started (how `sluice-proxy` worked before
    /// this simulator showed the cost: kept to measure it).
    Loaded,
    /// The latest published one, with the tried addresses carried over by key: what
    /// `sluice-proxy` does (its retries re-read the upstream snapshot).
    #[default]
    Latest,
}

impl SimConfig {
    /// A scripted run: the given faults, the baseline settings, no swarm.
    pub fn scripted(
        seed: u64,
        layout: Layout,
        faults: Vec<Fault>,
        fault_phase: Duration,
    ) -> SimConfig {
        SimConfig {
            seed,
            layout,
            settings: Settings::baseline(),
            faults,
            fault_phase,
            requests_per_sec: 500,
            check_liveness: true,
            log_level: LogLevel::Transitions,
            retry_snapshot: RetrySnapshot::Latest,
        }
    }

    /// A scripted run whose upstream comes from a validated configuration (for example
    /// a Kong `kong.yml` through `sluice-config`): its algorithm, health checks and
    /// failover policy drive the run. The upstream's targets must be the world's
    /// (same `host:port`, tier and order), since the world answers for those addresses.
    pub fn from_upstream(
        seed: u64,
        layout: Layout,
        upstream: &UpstreamSpec,
        faults: Vec<Fault>,
        fault_phase: Duration,
    ) -> Result<SimConfig, String> {
        let world = World::new(&layout);
        let expected = world.target_specs(false);
        if expected.len() != upstream.targets.len() {
            return Err(format!(
                "upstream {} has {} targets, the world has {}",
                upstream.name,
                upstream.targets.len(),
                expected.len()
            ));
        }
        for (index, (want, got)) in expected.iter().zip(&upstream.targets).enumerate() {
            if want.target != got.target || want.tier != got.tier {
                return Err(format!(
                    "target {index}: the world has {} in tier {}, the upstream {} in tier {}",
                    want.target, want.tier, got.target, got.tier
                ));
            }
        }
        let mut config = SimConfig::scripted(seed, layout, faults, fault_phase);
        config.settings.algorithm = upstream.algorithm;
        config.settings.healthchecks = upstream.healthchecks.clone();
        config.settings.failover = upstream.failover.clone();
        Ok(config)
    }

    /// A swarm run: the seed draws the world's shape, the BUGGIFY settings and the
    /// faults.
    pub fn swarm(seed: u64, fault_phase: Duration, requests_per_sec: u32) -> SimConfig {
        let mut config_rng = Rng::new(seed, Stream::Config);
        let mut layout = Layout::two_regions(config_rng.between(2, 4) as u32);
        // A third tier in a third of the runs exercises spill across more than two tiers.
        if config_rng.chance(1.0 / 3.0)
            && let Some(mut third) = layout.regions.last().cloned()
        {
            third.name = "us-east".into();
            third.tier = 2;
            third.rtt_ms = 80;
            layout.regions.push(third);
        }
        if config_rng.chance(0.5)
            && let Some(home) = layout.regions.first_mut()
        {
            home.hostname_targets = 1;
        }
        layout.spare_target = true;
        let mut settings = Settings::baseline();
        settings.buggify(&mut config_rng);
        let world = World::new(&layout);
        let bounds = SwarmBounds {
            targets: world.targets.iter().filter(|t| !t.spare).count() as u32,
            regions: world.regions.len() as u32,
            hostname_targets: world.hostname_targets(),
            fault_phase,
        };
        let faults = draw_swarm(&mut Rng::new(seed, Stream::Faults), &bounds);
        SimConfig {
            seed,
            layout,
            settings,
            faults,
            fault_phase,
            requests_per_sec,
            check_liveness: true,
            log_level: LogLevel::Transitions,
            retry_snapshot: RetrySnapshot::Latest,
        }
    }
}

/// What clients and the world saw, cumulative since the start of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub requests: u64,
    /// Requests whose final response was below 500.
    pub client_ok: u64,
    /// Requests whose final response was a 5xx (from the backend or the gateway).
    pub client_errors: u64,
    pub client_errors_by_status: BTreeMap<u16, u64>,
    pub attempts: u64,
    pub retries: u64,
    /// Retries that went to a different tier than the failed attempt.
    pub retries_crossing_tier: u64,
    /// Retries the budget refused.
    pub retries_denied: u64,
    pub attempts_by_address: BTreeMap<SocketAddr, u64>,
    pub attempts_by_tier: BTreeMap<u8, u64>,
    /// First attempts only: where the tier split sent new requests.
    pub first_attempts_by_tier: BTreeMap<u8, u64>,
    pub probes: u64,
    pub decisions_by_kind: BTreeMap<&'static str, u64>,
    /// Sum of client-observed latency, for the mean.
    pub client_latency_ms_total: u64,
}

impl Stats {
    /// The difference `self - earlier`, for statistics over a window of the run
    /// (saturating: a reversed call gives zeros, not a panic).
    pub fn since(&self, earlier: &Stats) -> Stats {
        fn diff<K: Ord + Clone>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
            a.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        }
        Stats {
            requests: self.requests.saturating_sub(earlier.requests),
            client_ok: self.client_ok.saturating_sub(earlier.client_ok),
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            client_errors_by_status: diff(
                &self.client_errors_by_status,
                &earlier.client_errors_by_status,
            ),
            attempts: self.attempts.saturating_sub(earlier.attempts),
            retries: self.retries.saturating_sub(earlier.retries),
            retries_crossing_tier: self
                .retries_crossing_tier
                .saturating_sub(earlier.retries_crossing_tier),
            retries_denied: self.retries_denied.saturating_sub(earlier.retries_denied),
            attempts_by_address: diff(&self.attempts_by_address, &earlier.attempts_by_address),
            attempts_by_tier: diff(&self.attempts_by_tier, &earlier.attempts_by_tier),
            first_attempts_by_tier: diff(
                &self.first_attempts_by_tier,
                &earlier.first_attempts_by_tier,
            ),
            probes: self.probes.saturating_sub(earlier.probes),
            decisions_by_kind: diff(&self.decisions_by_kind, &earlier.decisions_by_kind),
            client_latency_ms_total: self
                .client_latency_ms_total
                .saturating_sub(earlier.client_latency_ms_total),
        }
    }

    pub fn attempts_to(&self, addr: SocketAddr) -> u64 {
        self.attempts_by_address.get(&addr).copied().unwrap_or(0)
    }

    pub fn decisions(&self, kind: DecisionKind) -> u64 {
        self.decisions_by_kind
            .get(kind.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Client error ratio (0.0 when no requests).
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.client_errors as f64 / self.requests as f64
    }
}

/// An address health change the controller announced.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthChange {
    pub at: Instant,
    pub addr: SocketAddr,
    pub healthy: bool,
    pub reason: String,
}

/// An address whose availability changed between two published snapshots.
#[derive(Clone, Debug, PartialEq)]
pub struct AvailabilityChange {
    pub at: Instant,
    pub addr: SocketAddr,
    /// `None` = available again.
    pub unavailable: Option<Unavailable>,
}

/// Why a run failed its liveness phase.
#[derive(Clone, Debug, PartialEq)]
pub struct LivenessFailure {
    pub deadline: Instant,
    pub detail: String,
}

/// Scheduled things.
#[derive(Debug)]
enum SimEvent {
    Arrival,
    AttemptDone {
        request: u64,
        outcome: AttemptOutcome,
        failure: FailureKind,
        latency_ms: u64,
    },
    ProbeDone {
        address: AddressKey,
        /// Returned as the controller asked for it (a hint; stale after a DNS change,
        /// which the simulation exercises).
        slot: u32,
        outcome: ProbeOutcome,
    },
    ResolveDone {
        target_index: u32,
        result: Result<Vec<ResolvedAddress>, String>,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Tick,
}

/// One client request in flight.
#[derive(Debug)]
struct Request {
    started: Instant,
    /// The snapshot the request loaded when it started; all its picks use it (with
    /// [`RetrySnapshot::Latest`], the newest one as of its latest retry).
    snapshot: Arc<UpstreamSnapshot>,
    /// When `snapshot` was loaded: a drain after it is not visible to this request,
    /// exactly as in the proxy.
    loaded_at: Instant,
    tried: Vec<u32>,
    /// Attempts made (not `tried.len()`: a retry on a newer snapshot drops tried
    /// addresses that no longer exist).
    attempts: u32,
    current: u32,
    current_tier: u8,
    hash_key: Option<u64>,
}

/// TTL of the simulated DNS answers: short, so re-resolution (and a DNS failure during
/// it) happens many times per run.
const DNS_TTL: Duration = Duration::from_secs(5);

/// Records kept for scenarios: bounded so a day-long run cannot grow without limit.
const HISTORY_CAP: usize = 20_000;

/// The number of distinct consistent-hashing keys the traffic draws from (users).
const HASH_KEYS: u64 = 1_000;

/// A simulation in progress.
pub struct Sim {
    pub config: SimConfig,
    world: World,
    controller: Controller,
    queue: EventQueue<SimEvent>,
    now: Instant,
    traffic: Rng,
    world_rng: Rng,
    /// The data plane's current snapshot (what the last `Publish` carried).
    published: Option<Arc<UpstreamSnapshot>>,
    checker: Checker,
    log: TransitionLog,
    stats: Stats,
    requests: BTreeMap<u64, Request>,
    next_request: u64,
    /// Fractional arrival clock, so rates above 1000/s keep their mean.
    next_arrival_ms: f64,
    scheduled_tick: Option<Instant>,
    /// The upstream's retry budget, shared by every request as the proxy shares it.
    budget: RetryBudget,
    /// Addresses the operator drained (the oracle for `drained_never_picked`).
    drained: Vec<(SocketAddr, Instant)>,
    /// Start of the current second and whether a client error was logged in it.
    error_log_second: Option<u64>,
    decisions: Vec<Arc<DecisionRecord>>,
    /// Start times of requests whose client got a 5xx (the first [`HISTORY_CAP`]).
    client_error_starts: Vec<Instant>,
    health_changes: Vec<HealthChange>,
    availability_changes: Vec<AvailabilityChange>,
    steps: u64,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let mut world = World::new(&config.layout);
        world.faults = config.faults.clone();
        let settings = &config.settings;
        let checker = Checker::new(
            check_policy(settings),
            tier0_expected(&world, settings, false),
        );
        // Full mode streams every line to stdout as it is written; the kept tail is the
        // same bounded one in both modes, so memory stays flat however long the run.
        let log = TransitionLog::new(config.log_level, DEFAULT_LOG_CAPACITY);
        let mut sim = Sim {
            traffic: Rng::new(config.seed, Stream::Traffic),
            world_rng: Rng::new(config.seed, Stream::World),
            world,
            controller: Controller::new(),
            queue: EventQueue::default(),
            now: Instant::ZERO,
            published: None,
            checker,
            log,
            stats: Stats::default(),
            requests: BTreeMap::new(),
            next_request: 0,
            next_arrival_ms: 0.0,
            scheduled_tick: None,
            budget: RetryBudget::new(&config.settings.failover.retry_budget),
            drained: Vec::new(),
            error_log_second: None,
            decisions: Vec::new(),
            client_error_starts: Vec::new(),
            health_changes: Vec::new(),
            availability_changes: Vec::new(),
            steps: 0,
            config,
        };
        for (index, fault) in sim.config.faults.iter().enumerate() {
            sim.queue.push(fault.start, SimEvent::FaultStart(index));
            sim.queue.push(fault.end, SimEvent::FaultEnd(index));
        }
        let spec = sim.config.settings.upstream_spec(&sim.world, false);
        sim.apply(Event::TopologyReplaced {
            upstreams: vec![spec],
        });
        if sim.config.requests_per_sec > 0 {
            sim.queue.push(Instant::ZERO, SimEvent::Arrival);
        }
        sim
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn log(&self) -> &TransitionLog {
        &self.log
    }

    pub fn violations(&self) -> &[Violation] {
        self.checker.violations()
    }

    /// Every decision record the controller emitted (the first [`HISTORY_CAP`]).
    pub fn decisions(&self) -> &[Arc<DecisionRecord>] {
        &self.decisions
    }

    /// When each request that ended in a client-visible 5xx had started.
    pub fn client_error_starts(&self) -> &[Instant] {
        &self.client_error_starts
    }

    pub fn health_changes(&self) -> &[HealthChange] {
        &self.health_changes
    }

    /// Availability changes seen in published snapshots (the first [`HISTORY_CAP`]).
    pub fn availability_changes(&self) -> &[AvailabilityChange] {
        &self.availability_changes
    }

    /// When `addr` first became unavailable for `reason`-like causes at or after `from`.
    pub fn first_unavailable_after(
        &self,
        addr: SocketAddr,
        from: Instant,
    ) -> Option<&AvailabilityChange> {
        self.availability_changes
            .iter()
            .find(|c| c.addr == addr && c.at >= from && c.unavailable.is_some())
    }

    /// The data plane's current snapshot.
    pub fn snapshot(&self) -> Option<&Arc<UpstreamSnapshot>> {
        self.published.as_ref()
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Steps executed so far (controller calls plus traffic events).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Runs every event due before `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(at) = self.queue.peek_time() {
            if at >= until {
                break;
            }
            let Some((at, event)) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.steps += 1;
            self.handle(event);
        }
        self.now = self.now.max(until);
    }

    /// Applies an operator command now, as the admin API would.
    pub fn operator(&mut self, command: OperatorCommand, actor: &str) {
        self.log.line(
            self.now,
            "operator",
            UPSTREAM,
            &format!("{command:?} by {actor}"),
        );
        let mut out = Vec::new();
        self.controller.apply(
            self.now,
            Event::Operator {
                upstream: UPSTREAM.into(),
                command,
                actor: actor.into(),
            },
            &mut out,
        );
        self.checker.on_operator_step(self.now, &out);
        self.after_controller(out);
    }

    /// Replaces the configuration now (base or reloaded variant of the world).
    pub fn reload(&mut self, settings: Settings, reloaded: bool) {
        self.config.settings = settings;
        let spec = self.config.settings.upstream_spec(&self.world, reloaded);
        self.checker.set_topology(
            check_policy(&self.config.settings),
            tier0_expected(&self.world, &self.config.settings, reloaded),
        );
        self.log.line(
            self.now,
            "config",
            UPSTREAM,
            &format!("reload ({} targets)", spec.targets.len()),
        );
        self.apply(Event::TopologyReplaced {
            upstreams: vec![spec],
        });
    }

    fn handle(&mut self, event: SimEvent) {
        match event {
            SimEvent::Arrival => self.on_arrival(),
            SimEvent::AttemptDone {
                request,
                outcome,
                failure,
                latency_ms,
            } => self.on_attempt_done(request, outcome, failure, latency_ms),
            SimEvent::ProbeDone {
                address,
                slot,
                outcome,
            } => {
                self.stats.probes += 1;
                if self.log.full() {
                    let detail = format!("{outcome:?}");
                    self.log
                        .line(self.now, "probe", &address.addr.to_string(), &detail);
                }
                self.apply(Event::ProbeCompleted {
                    upstream: UPSTREAM.into(),
                    address,
                    slot,
                    outcome,
                });
            }
            SimEvent::ResolveDone {
                target_index,
                result,
            } => {
                let detail = match &result {
                    Ok(addresses) => {
                        format!("target {target_index}: {} addresses", addresses.len())
                    }
                    Err(error) => format!("target {target_index}: {error}"),
                };
                // Successful answers repeat every TTL; only failures are transitions.
                if result.is_err() || self.log.full() {
                    self.log.line(self.now, "dns", UPSTREAM, &detail);
                }
                self.apply(Event::Resolved {
                    upstream: UPSTREAM.into(),
                    target_index,
                    result,
                    ttl: Some(DNS_TTL),
                });
            }
            SimEvent::FaultStart(index) => self.on_fault_edge(index, true),
            SimEvent::FaultEnd(index) => self.on_fault_edge(index, false),
            SimEvent::Tick => {
                if self.scheduled_tick == Some(self.now) {
                    self.scheduled_tick = None;
                }
                let mut out = Vec::new();
                self.controller.tick(self.now, &mut out);
                self.after_controller(out);
            }
        }
    }

    /// Feeds one event to the controller and handles what comes out.
    fn apply(&mut self, event: Event) {
        let mut out = Vec::new();
        self.controller.apply(self.now, event, &mut out);
        self.after_controller(out);
    }

    fn after_controller(&mut self, out: Vec<Action>) {
        let log_len = self.controller.decisions().len();
        for violation in self.checker.after_step(self.now, &out, log_len) {
            self.log.line(
                violation.at,
                "check",
                violation.invariant,
                &violation.detail,
            );
        }
        for action in out {
            self.carry_out(action);
        }
        self.schedule_tick();
    }

    fn schedule_tick(&mut self) {
        let Some(deadline) = self.controller.next_deadline() else {
            return;
        };
        // A deadline in the past is due now; one millisecond later guarantees progress
        // even if the controller keeps reporting the same overdue deadline.
        let at = deadline.max(self.now + Duration::from_millis(1));
        if self.scheduled_tick.is_none_or(|scheduled| at < scheduled) {
            self.scheduled_tick = Some(at);
            self.queue.push(at, SimEvent::Tick);
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Publish(snapshot) => {
                let previous = self.published.replace(snapshot.clone());
                self.record_availability(previous.as_deref(), &snapshot);
                let changed = previous.as_ref().is_none_or(|p| {
                    p.mode != snapshot.mode || snapshot_split(p) != snapshot_split(&snapshot)
                });
                if changed {
                    let detail = format!(
                        "v{} mode={:?} {}",
                        snapshot.version,
                        snapshot.mode,
                        render_split(&snapshot_split(&snapshot))
                    );
                    self.log.line(self.now, "snapshot", UPSTREAM, &detail);
                }
            }
            Action::Remove { upstream } => {
                self.log.line(self.now, "snapshot", &upstream, "removed");
                self.published = None;
            }
            Action::Probe {
                address,
                slot,
                check,
                ..
            } => {
                let (outcome, latency_ms) =
                    self.world
                        .probe(&mut self.world_rng, address.addr, &check, self.now);
                let at = self.now + Duration::from_millis(latency_ms);
                self.queue.push(
                    at,
                    SimEvent::ProbeDone {
                        address,
                        slot,
                        outcome,
                    },
                );
            }
            Action::Resolve { target_index, .. } => {
                let result = self
                    .world
                    .resolve(self.world_target_of_spec(target_index), self.now);
                // A resolver answers in a couple of milliseconds.
                let at = self.now + Duration::from_millis(2);
                self.queue.push(
                    at,
                    SimEvent::ResolveDone {
                        target_index,
                        result,
                    },
                );
            }
            Action::HealthChanged {
                address,
                healthy,
                reason,
                ..
            } => {
                let word = if healthy { "healthy" } else { "unhealthy" };
                self.log.line(
                    self.now,
                    "health",
                    &address.addr.to_string(),
                    &format!("{word} ({reason})"),
                );
                if self.health_changes.len() < HISTORY_CAP {
                    self.health_changes.push(HealthChange {
                        at: self.now,
                        addr: address.addr,
                        healthy,
                        reason,
                    });
                }
            }
            Action::Decision(record) => {
                *self
                    .stats
                    .decisions_by_kind
                    .entry(record.kind.as_str())
                    .or_insert(0) += 1;
                let detail = format!(
                    "{} {} -> {} | {}",
                    record.kind.as_str(),
                    render_split(&crate::check::split_of_tiers(
                        record.before.iter().map(|t| (t.tier, t.share_ppm))
                    )),
                    render_split(&crate::check::split_of_tiers(
                        record.after.iter().map(|t| (t.tier, t.share_ppm))
                    )),
                    record.trigger
                );
                self.log.line(self.now, "decision", UPSTREAM, &detail);
                if self.decisions.len() < HISTORY_CAP {
                    self.decisions.push(record);
                }
            }
        }
    }

    fn record_availability(
        &mut self,
        previous: Option<&UpstreamSnapshot>,
        snapshot: &UpstreamSnapshot,
    ) {
        for address in &snapshot.addresses {
            let before = previous
                .and_then(|p| p.addresses.iter().find(|a| a.key == address.key))
                .map(|a| a.unavailable);
            // A new address that starts available is not a change worth a line.
            let changed = match before {
                Some(before) => before != address.unavailable,
                None => address.unavailable.is_some(),
            };
            if !changed {
                continue;
            }
            let detail = match address.unavailable {
                None => "available".to_string(),
                Some(reason) => format!("unavailable: {reason:?}"),
            };
            self.log
                .line(self.now, "address", &address.key.addr.to_string(), &detail);
            if self.availability_changes.len() < HISTORY_CAP {
                self.availability_changes.push(AvailabilityChange {
                    at: self.now,
                    addr: address.key.addr,
                    unavailable: address.unavailable,
                });
            }
        }
    }

    /// Spec target indices equal world indices for every non-spare target, and the
    /// spare (last in both) is present only in the reloaded variant.
    fn world_target_of_spec(&self, spec_index: u32) -> u32 {
        spec_index
    }

    fn on_fault_edge(&mut self, index: usize, start: bool) {
        let Some(fault) = self.config.faults.get(index).cloned() else {
            return;
        };
        let edge = if start { "start" } else { "end" };
        // Overlapping windows of the same operator fault act like one operator who
        // undoes the action only when the last window closes.
        let still_active = self
            .config
            .faults
            .iter()
            .enumerate()
            .any(|(i, f)| i != index && f.kind == fault.kind && f.active_at(self.now));
        self.log.line(
            self.now,
            "fault",
            fault.kind.name(),
            &format!("{edge}: {}", fault.kind),
        );
        match fault.kind {
            FaultKind::OperatorDrain { target } => {
                let Some(target_text) = self.target_text(target) else {
                    return;
                };
                if start {
                    let now = self.now;
                    self.drained
                        .extend(self.addresses_of(target).into_iter().map(|a| (a, now)));
                } else if still_active {
                    // The operator's other drain of this target still holds.
                    return;
                } else {
                    let addresses = self.addresses_of(target);
                    self.drained.retain(|(a, _)| !addresses.contains(a));
                }
                self.operator(
                    OperatorCommand::Drain {
                        target: target_text,
                        drained: start,
                    },
                    "sim",
                );
            }
            FaultKind::OperatorSetUnhealthy { target } => {
                let Some(target_text) = self.target_text(target) else {
                    return;
                };
                if !start && still_active {
                    return;
                }
                self.operator(
                    OperatorCommand::SetHealth {
                        target: target_text,
                        address: None,
                        healthy: !start,
                    },
                    "sim",
                );
            }
            FaultKind::ConfigReload => {
                let reloaded = self.world.reload_active(self.now);
                let settings = self.config.settings.clone();
                self.reload(settings, reloaded);
            }
            _ => {}
        }
    }

    fn target_text(&self, target: u32) -> Option<String> {
        self.world
            .targets
            .get(target as usize)
            .map(|t| format!("{}:{}", t.host, crate::world::TARGET_PORT))
    }

    fn addresses_of(&self, target: u32) -> Vec<SocketAddr> {
        self.world
            .targets
            .get(target as usize)
            .map(|t| t.addresses.clone())
            .unwrap_or_default()
    }

    fn on_arrival(&mut self) {
        let mean_gap_ms = 1_000.0 / f64::from(self.config.requests_per_sec.max(1));
        self.next_arrival_ms += self.traffic.exponential(mean_gap_ms);
        let next = Instant::from_millis(self.next_arrival_ms as u64);
        self.queue.push(next.max(self.now), SimEvent::Arrival);

        let id = self.next_request;
        self.next_request += 1;
        self.stats.requests += 1;
        self.checker.on_request(self.now);
        self.budget.deposit(self.now);
        let hash_key = Some(self.traffic.below(HASH_KEYS));
        let Some(snapshot) = self.published.clone() else {
            self.finish(self.now, 503, 0, "no snapshot");
            return;
        };
        let request = Request {
            started: self.now,
            snapshot,
            loaded_at: self.now,
            tried: Vec::new(),
            attempts: 0,
            current: 0,
            current_tier: 0,
            hash_key,
        };
        self.requests.insert(id, request);
        if let Err(no_peer) = self.dispatch(id) {
            self.requests.remove(&id);
            self.finish(self.now, 503, 0, &format!("no peer: {no_peer:?}"));
        }
    }

    /// Picks an address for the request's next attempt and starts it.
    fn dispatch(&mut self, id: u64) -> Result<(), NoPeer> {
        let entropy = self.traffic.next_u64();
        let latest = self.published.clone();
        let Some(request) = self.requests.get_mut(&id) else {
            return Err(NoPeer::Unavailable);
        };
        if self.config.retry_snapshot == RetrySnapshot::Latest
            && !request.tried.is_empty()
            && let Some(latest) = latest
            && latest.version != request.snapshot.version
        {
            let tried_keys: Vec<&AddressKey> = request
                .tried
                .iter()
                .filter_map(|&i| request.snapshot.addresses.get(i as usize))
                .map(|a| &a.key)
                .collect();
            let tried: Vec<u32> = (0..latest.addresses.len() as u32)
                .filter(|&i| {
                    latest
                        .addresses
                        .get(i as usize)
                        .is_some_and(|a| tried_keys.contains(&&a.key))
                })
                .collect();
            request.tried = tried;
            request.snapshot = latest;
            request.loaded_at = self.now;
        }
        let cx = PickContext {
            now: self.now,
            entropy,
            hash_key: request.hash_key,
            tried: &request.tried,
        };
        let picked = balance::pick(&request.snapshot, &cx)?;
        // Drains the request's snapshot could know about: those strictly before it was
        // loaded (a drain at the same millisecond may be ordered after the load).
        let drained: Vec<SocketAddr> = self
            .drained
            .iter()
            .filter(|(_, at)| *at < request.loaded_at)
            .map(|(addr, _)| *addr)
            .collect();
        self.checker.on_pick(
            self.now,
            &request.snapshot,
            &picked,
            &request.tried,
            &drained,
        );
        let Some(address) = request.snapshot.addresses.get(picked.index as usize) else {
            return Err(NoPeer::Unavailable);
        };
        let first = request.tried.is_empty();
        if !first && picked.tier != request.current_tier {
            self.stats.retries_crossing_tier += 1;
        }
        request.tried.push(picked.index);
        request.attempts += 1;
        request.current = picked.index;
        request.current_tier = picked.tier;
        address.load.start();
        let addr = address.key.addr;
        self.stats.attempts += 1;
        *self.stats.attempts_by_address.entry(addr).or_insert(0) += 1;
        *self.stats.attempts_by_tier.entry(picked.tier).or_insert(0) += 1;
        if first {
            *self
                .stats
                .first_attempts_by_tier
                .entry(picked.tier)
                .or_insert(0) += 1;
        }
        let result = self.world.attempt(&mut self.world_rng, addr, self.now);
        let at = self.now + Duration::from_millis(result.latency_ms);
        self.queue.push(
            at,
            SimEvent::AttemptDone {
                request: id,
                outcome: result.outcome,
                failure: result.failure,
                latency_ms: result.latency_ms,
            },
        );
        Ok(())
    }

    fn on_attempt_done(
        &mut self,
        id: u64,
        outcome: AttemptOutcome,
        failure: FailureKind,
        latency_ms: u64,
    ) {
        let Some(request) = self.requests.get(&id) else {
            return;
        };
        let Some(address) = request.snapshot.addresses.get(request.current as usize) else {
            return;
        };
        let key = address.key.clone();
        let latency = Duration::from_millis(latency_ms);
        address.load.finish();
        ewma::observe(&address.load, latency, self.now);
        if self.log.full() {
            self.log.line(
                self.now,
                "attempt",
                &key.addr.to_string(),
                &format!("request {id}: {outcome:?} in {latency_ms} ms"),
            );
        }
        let attempts = request.attempts;
        let started = request.started;
        self.apply(Event::AttemptCompleted {
            upstream: UPSTREAM.into(),
            address: key,
            outcome,
            latency,
        });
        if self.retry_allowed(&failure, attempts) {
            self.stats.retries += 1;
            self.checker.on_retry(self.now);
            match self.dispatch(id) {
                Ok(()) => return,
                Err(_) => {
                    // Nothing untried is left: the client gets this attempt's failure.
                }
            }
        }
        self.requests.remove(&id);
        let status = match outcome {
            AttemptOutcome::Status(status) => status,
            AttemptOutcome::TcpFailure => 502,
            AttemptOutcome::Timeout => 504,
        };
        let latency_total = self.now.saturating_duration_since(started).as_millis() as u64;
        self.finish(
            started,
            status,
            latency_total,
            &format!("after {attempts} attempts"),
        );
    }

    /// The core's retry decision (Kong's rule: connection failures and timeouts, never
    /// a received status, at most `retries` retries; every simulated request is an
    /// idempotent GET without a body), then the upstream's retry budget.
    fn retry_allowed(&mut self, failure: &FailureKind, attempts: u32) -> bool {
        if matches!(failure, FailureKind::Status(status) if *status < 500) {
            return false;
        }
        let policy = RetryPolicy {
            retries: self.config.settings.retries,
            retry_on_status: std::sync::Arc::from([]),
        };
        if retry::decide(&policy, attempts, failure, true, true) != RetryDecision::Retry {
            return false;
        }
        if !self.budget.try_withdraw(self.now) {
            self.stats.retries_denied += 1;
            return false;
        }
        true
    }

    fn finish(&mut self, started: Instant, status: u16, latency_ms: u64, detail: &str) {
        self.stats.client_latency_ms_total += latency_ms;
        if status < 500 {
            self.stats.client_ok += 1;
            return;
        }
        self.stats.client_errors += 1;
        if self.client_error_starts.len() < HISTORY_CAP {
            self.client_error_starts.push(started);
        }
        *self
            .stats
            .client_errors_by_status
            .entry(status)
            .or_insert(0) += 1;
        // One line per virtual second with errors keeps the log readable during an
        // outage of thousands of requests.
        let second = self.now.as_millis() / 1_000;
        if self.error_log_second != Some(second) {
            self.error_log_second = Some(second);
            let detail = format!(
                "{status} {detail} (started {} ms; first client error this second)",
                started.as_millis()
            );
            self.log.line(self.now, "client", UPSTREAM, &detail);
        }
    }

    /// Runs the liveness phase from the end of the fault phase and checks convergence.
    pub fn check_liveness(&mut self) -> Result<(), LivenessFailure> {
        let faults_end = self
            .config
            .faults
            .iter()
            .map(|f| f.end)
            .max()
            .unwrap_or(Instant::ZERO)
            .max(Instant::ZERO + self.config.fault_phase);
        let deadline = faults_end + self.config.settings.liveness_bound();
        self.run_until(deadline);
        let Some(snapshot) = self.published.clone() else {
            return Err(LivenessFailure {
                deadline,
                detail: "no snapshot published".into(),
            });
        };
        let mut problems = Vec::new();
        for address in &snapshot.addresses {
            if !address.is_available() && address.weight > 0 {
                problems.push(format!(
                    "{} still {:?}",
                    address.key.addr, address.unavailable
                ));
            }
        }
        let expected = tier0_expected(
            &self.world,
            &self.config.settings,
            self.world.reload_active(self.now),
        );
        for (addr, _) in &expected {
            if !snapshot.addresses.iter().any(|a| a.key.addr == *addr) {
                problems.push(format!("{addr} missing from the snapshot"));
            }
        }
        let tier0 = snapshot
            .tiers
            .iter()
            .find(|t| t.tier == 0)
            .map_or(0, |t| t.share_ppm);
        if tier0 != PPM {
            problems.push(format!(
                "split {} (mode {:?}), expected all traffic in tier 0",
                render_split(&snapshot_split(&snapshot)),
                snapshot.mode
            ));
        }
        if snapshot.mode != Mode::Normal {
            problems.push(format!("mode {:?}, expected Normal", snapshot.mode));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(LivenessFailure {
            deadline,
            detail: problems.join("; "),
        })
    }
}

fn check_policy(settings: &Settings) -> CheckPolicy {
    let failover = &settings.failover;
    let budget = settings.retry_budget();
    CheckPolicy {
        overprovisioning: failover.overprovisioning,
        failback_hold_down: failover.failback_hold_down,
        failback_hold_down_max: failover
            .failback_hold_down_max
            .max(failover.failback_hold_down),
        failback_ramp: failover.failback_ramp,
        retry_ratio: budget.ratio,
        retry_min_per_sec: budget.min_per_sec,
        retry_window: budget.window,
        decision_log_capacity: sluice_core::decision::DecisionLog::DEFAULT_CAPACITY,
        max_ejected_share: failover.outlier.max_ejected_share,
    }
}

/// Every address of the configured tier-0 targets with weight > 0, per the world.
fn tier0_expected(world: &World, settings: &Settings, reloaded: bool) -> Vec<(SocketAddr, u32)> {
    let spec = settings.upstream_spec(world, reloaded);
    let mut expected = Vec::new();
    for (index, target) in spec.targets.iter().enumerate() {
        if target.tier != 0 || target.weight == 0 {
            continue;
        }
        if let Some(sim_target) = world.targets.get(index) {
            expected.extend(sim_target.addresses.iter().map(|&a| (a, target.weight)));
        }
    }
    expected
}
