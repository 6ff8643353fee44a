//! How traffic is split between an upstream's priority tiers: graded spill, panic, and
//! the failback state machine (hold-down, ramp, abort, flap damping). Pure.
//!
//! # The split
//! Tiers are ordered by preference (position 0 first). A tier's healthy share `h` is its
//! available weight over its total weight. With Envoy's overprovisioning factor `f`
//! (1.4): tier 0 takes `min(1, h0 × f)` of traffic, the next tier takes
//! `min(1, h1 × f)` of what is left, and so on. When even all tiers together cannot
//! carry the load (`Σ min(1, hᵢ × f) < 1`), the capped shares are normalised so every
//! request still goes somewhere. Shares are parts per million summing to exactly
//! [`PPM`] (largest remainder), or all zero when nothing is available.
//!
//! # Panic
//! Envoy panics a priority when its raw healthy share is below the panic threshold and
//! the whole cluster cannot carry the load. Sluice panics an *upstream* only when
//! **every** tier is below `panic_threshold` **and** all tiers together cannot carry the
//! load. A cheaper rule ("total healthy weight < 50%") would panic the most common case
//! Sluice exists for — a whole primary region dark while an equal secondary region is
//! fully healthy — and send half the traffic into the dark region. In panic every
//! non-drained address is used by configured weight and the split follows the
//! normalised healthy shares (or the total weights when nothing at all is healthy).
//!
//! # Failback ([`FailoverEngine`])
//! The engine keeps an *admitted* healthy share per tier, ≤ the real one. The split in
//! force is computed from the admitted shares.
//! - **Failover is immediate**: when a tier's real share drops below its admitted share,
//!   the admitted share follows at once.
//! - **Recovery is gated**: when the real shares would give more preferred tiers more
//!   traffic than the admitted ones, the engine waits in `HoldDown` until the recovering
//!   tiers have stayed healthy for the current hold-down (any drop in a recovering tier
//!   restarts it), then `Ramp`s: the split moves from the admitted split to the real one
//!   in [`RAMP_STEPS`] equal steps over `failback_ramp`, starting at `ramp_start_share`
//!   of the way. A health drop in a recovering tier, or its attempt error ratio above
//!   `ramp_abort_error_rate` (after [`RAMP_MIN_SAMPLES`] attempts), aborts the ramp: the
//!   failed-over split returns at once and a longer hold-down starts.
//! - **Flap damping**: a failover (or abort) within [`FLAP_DECAY_WINDOW`] of a failback
//!   start doubles the hold-down, up to `failback_hold_down_max`; each
//!   [`FLAP_DECAY_WINDOW`] without one halves it back towards `failback_hold_down`.
//! - A tier that has never had capacity (addresses still resolving at start-up) is
//!   admitted at once: there is no failure history to distrust.
//! - Recovery is gated only while the admitted tiers can carry the whole load
//!   (`Σ min(1, aᵢ × f) ≥ 1`). When they cannot — nothing admitted at all, or a
//!   normalised split that overloads what is left — recovered capacity is admitted at
//!   once: serving nothing, or overloading a remnant, is worse than risking a flap.
//!
//! ```text
//!            recovery pending                 hold-down elapsed
//!   Idle ───────────────────────▶ HoldDown ─────────────────────▶ Ramp ──┐ last step
//!    ▲  ◀── recovery vanished ────┘  ▲ │ drop in a recovering tier   │    │
//!    │                               │ └──▶ restart                    │    │
//!    │                               └──── abort (health drop / errors)┘    │
//!    └──────────────────────────────────────────────────────────────────────┘ complete
//! ```

use crate::decision::DecisionKind;
use crate::time::{Duration, Instant};
use crate::topology::{FailoverPolicy, OutlierPolicy};

/// One million: shares are in parts per million.
pub const PPM: u32 = 1_000_000;

/// Number of equal steps of a failback ramp. Ten steps of 3 s over the default 30 s ramp
/// move about 10% of traffic at a time: small enough that a primary that cannot take
/// its load shows errors before most traffic is on it, few enough that the decision log
/// stays readable (one record per step).
pub const RAMP_STEPS: u32 = 10;

/// Attempts on the recovering tiers before their error ratio can abort a ramp. At the
/// first ramp step (5% of 2,000 req/s) that is 0.2 s of traffic; fewer samples make one
/// unlucky error look like a 10% error rate.
pub const RAMP_MIN_SAMPLES: u64 = 20;

/// Window of flap damping: a failover within this long after a failback started doubles
/// the hold-down, and each such window without one halves it. Ten minutes is the horizon
/// over which a flapping region must cause at most one failover.
pub const FLAP_DECAY_WINDOW: Duration = Duration::from_secs(600);

/// Shares closer than this are equal (healthy shares are ratios of integer weights, so
/// real differences are far larger).
const EPSILON: f64 = 1e-9;

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy {
            // N+1 for a three-instance region: a tier keeps all its traffic while ≥ 2/3 of
            // its weight is healthy, so losing one of three primaries leaks nothing to the
            // secondary region (Envoy's 1.4 keeps all only down to ~72% and leaks ~7% of
            // traffic there). Below 2/3 the shortfall spills in proportion.
            overprovisioning: 1.5,
            // Envoy's default threshold, applied with the stricter every-tier rule above.
            panic_threshold: 0.5,
            // Must exceed the up-phase of a flapping region: a region flapping up 20 s /
            // down 20 s then never starts a failback, so it causes one failover and no
            // oscillation. 30 s gives 50% margin and still fails back within a minute.
            failback_hold_down: Duration::from_secs(30),
            // Repeated flaps double the hold-down up to 5 minutes: long enough to stop an
            // unstable region from taking traffic, short enough that a fixed one comes
            // back without an operator.
            failback_hold_down_max: Duration::from_secs(300),
            // Ten 3 s steps: a cold primary warms caches and pools on a small share and
            // the abort check sees thousands of attempts before the share is large.
            failback_ramp: Duration::from_secs(30),
            // The first step sends 5%: enough (100 req/s at 2,000 req/s) to judge the
            // error ratio within a second, small enough to be harmless if it is bad.
            ramp_start_share: 0.05,
            // 5% errors on the recovering tier is well above background noise and well
            // below "the region is still broken".
            ramp_abort_error_rate: 0.05,
            // Envoy/NGINX Plus-style slow start: 10 s takes a new address from 10% to
            // full weight, about the time a JIT or cache needs to warm.
            slow_start: Duration::from_secs(10),
            // Latency/error-aware round-robin weights are bounded (never below 10%) and
            // continuous, so they are safe on by default.
            adaptive_weights: true,
            outlier: OutlierPolicy::default(),
            retry_budget: crate::retry::RetryBudgetPolicy::default(),
        }
    }
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            enabled: true,
            // Envoy's `consecutive_5xx` default: five in a row is not bad luck.
            consecutive_failures: 5,
            // A fifth of the attempts failing over at least 20 attempts in 10 s catches a
            // gray failure that never makes 5 in a row (the simulator's 30%-5xx target
            // cost 0.51% client errors at 50%, under 0.1% at 20%), while 20 attempts keep
            // a quiet address from being ejected on one unlucky error: a healthy address
            // at a 1% error rate reaches 4 of 20 with probability ~5e-5.
            failure_rate: 0.2,
            min_requests: 20,
            window: Duration::from_secs(10),
            // Envoy's base is 30 s; 10 s (NGINX's `fail_timeout`) returns an address that
            // had a transient problem quickly, and repeats double it anyway.
            base_ejection: Duration::from_secs(10),
            // Envoy's `max_ejection_time` default.
            max_ejection: Duration::from_secs(300),
            // Up to half a tier: Envoy's 10% would never eject anything in tiers of
            // fewer than 10 addresses, typical per region; panic bounds the worst case.
            max_ejected_share: 0.5,
        }
    }
}

/// Healthy capacity of one tier.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TierCapacity {
    pub total_weight: u64,
    pub available_weight: u64,
}

impl TierCapacity {
    /// Healthy share `available / total` (0 for an empty tier).
    pub fn healthy_share(&self) -> f64 {
        if self.total_weight == 0 {
            0.0
        } else {
            (self.available_weight as f64 / self.total_weight as f64).clamp(0.0, 1.0)
        }
    }
}

fn factor(overprovisioning: f64) -> f64 {
    if overprovisioning.is_finite() && overprovisioning > 0.0 {
        overprovisioning
    } else {
        1.0
    }
}

fn capped(health: &[f64], overprovisioning: f64) -> Vec<f64> {
    let f = factor(overprovisioning);
    health
        .iter()
        .map(|h| {
            if h.is_finite() {
                let carried = h * f;
                // 2/3 × 1.5 must be exactly "enough", not 0.9999999999999999.
                if carried >= 1.0 - EPSILON {
                    1.0
                } else {
                    carried.clamp(0.0, 1.0)
                }
            } else {
                0.0
            }
        })
        .collect()
}

/// Convert fractions (summing to 1, or all 0) to ppm summing to exactly [`PPM`], by
/// largest remainder (ties to the more preferred tier).
pub fn to_ppm(loads: &[f64]) -> Vec<u32> {
    let total: f64 = loads.iter().filter(|l| l.is_finite() && **l > 0.0).sum();
    if total <= EPSILON {
        return vec![0; loads.len()];
    }
    let scaled: Vec<f64> = loads
        .iter()
        .map(|l| {
            if l.is_finite() && *l > 0.0 {
                l / total * f64::from(PPM)
            } else {
                0.0
            }
        })
        .collect();
    let mut ppm: Vec<u32> = scaled.iter().map(|s| s.floor() as u32).collect();
    let assigned: u32 = ppm.iter().sum();
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = scaled.get(a).map_or(0.0, |s| s - s.floor());
        let fb = scaled.get(b).map_or(0.0, |s| s - s.floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order
        .iter()
        .cycle()
        .take(PPM.saturating_sub(assigned) as usize)
    {
        if let Some(p) = ppm.get_mut(i) {
            *p += 1;
        }
    }
    ppm
}

/// Envoy's priority split over healthy shares (see the module docs).
pub fn split(health: &[f64], overprovisioning: f64) -> Vec<u32> {
    let caps = capped(health, overprovisioning);
    let sum: f64 = caps.iter().sum();
    if sum >= 1.0 - EPSILON {
        let mut remaining = 1.0f64;
        let loads: Vec<f64> = caps
            .iter()
            .map(|c| {
                let load = c.min(remaining);
                remaining -= load;
                load
            })
            .collect();
        to_ppm(&loads)
    } else {
        to_ppm(&caps)
    }
}

/// Panic rule: every tier below `panic_threshold` and all together short of capacity.
pub fn is_panic(health: &[f64], overprovisioning: f64, panic_threshold: f64) -> bool {
    if health.is_empty() {
        return false;
    }
    let sum: f64 = capped(health, overprovisioning).iter().sum();
    sum < 1.0 - EPSILON && health.iter().all(|h| *h < panic_threshold)
}

/// The split in panic: normalised healthy shares, or total weights when nothing at all
/// is healthy (every address is used anyway).
pub fn panic_split(tiers: &[TierCapacity], overprovisioning: f64) -> Vec<u32> {
    let health: Vec<f64> = tiers.iter().map(TierCapacity::healthy_share).collect();
    let by_health = split(&health, overprovisioning);
    if by_health.iter().any(|s| *s > 0) {
        return by_health;
    }
    let weights: Vec<f64> = tiers.iter().map(|t| t.total_weight as f64).collect();
    to_ppm(&weights)
}

/// `from + (to − from) × fraction`, renormalised to [`PPM`].
pub fn blend(from: &[u32], to: &[u32], fraction: f64) -> Vec<u32> {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let loads: Vec<f64> = from
        .iter()
        .zip(to)
        .map(|(a, b)| f64::from(*a) + (f64::from(*b) - f64::from(*a)) * fraction)
        .collect();
    to_ppm(&loads)
}

/// True when `after` sends less traffic than `before` to some prefix of most preferred
/// tiers: traffic moved *away* from preferred tiers (a failover or spill).
pub fn moved_away(before: &[u32], after: &[u32]) -> bool {
    let (mut b, mut a) = (0u64, 0u64);
    for (x, y) in before.iter().zip(after) {
        b += u64::from(*x);
        a += u64::from(*y);
        if a < b {
            return true;
        }
    }
    false
}

/// Where the failback state machine is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailbackPhase {
    /// The split in force is the split the health calls for.
    Idle,
    /// A more preferred tier recovered; waiting for it to stay healthy until `until`.
    HoldDown { since: Instant, until: Instant },
    /// Moving traffic back; `step` of [`RAMP_STEPS`] done.
    Ramp { started: Instant, step: u32 },
}

/// A split change the engine decided on (other than plain failover, which the
/// controller classifies from the before/after split).
#[derive(Clone, Debug, PartialEq)]
pub struct FailbackEvent {
    pub kind: DecisionKind,
    pub trigger: String,
    pub inputs: Vec<(String, String)>,
}

/// Failback state of one upstream, indexed by tier position.
#[derive(Clone, Debug)]
pub struct FailoverEngine {
    admitted: Vec<f64>,
    /// Whether the tier ever had admitted capacity (fresh tiers are admitted at once).
    seasoned: Vec<bool>,
    health: Vec<f64>,
    phase: FailbackPhase,
    hold_down: Duration,
    hold_down_changed_at: Instant,
    last_failback_start: Option<Instant>,
    ramp_attempts: u64,
    ramp_failures: u64,
}

fn fmt_share(x: f64) -> String {
    format!("{x:.3}")
}

impl FailoverEngine {
    /// A fresh engine that admits `health` as it is.
    pub fn new(policy: &FailoverPolicy, health: &[f64], now: Instant) -> Self {
        FailoverEngine {
            admitted: health.to_vec(),
            seasoned: health.iter().map(|h| *h > 0.0).collect(),
            health: health.to_vec(),
            phase: FailbackPhase::Idle,
            hold_down: policy.failback_hold_down,
            hold_down_changed_at: now,
            last_failback_start: None,
            ramp_attempts: 0,
            ramp_failures: 0,
        }
    }

    pub fn tiers(&self) -> usize {
        self.admitted.len()
    }

    pub fn phase(&self) -> &FailbackPhase {
        &self.phase
    }

    /// The hold-down the next failback must wait (grows with flaps).
    pub fn hold_down(&self) -> Duration {
        self.hold_down
    }

    /// Admitted healthy shares, per tier.
    pub fn admitted(&self) -> &[f64] {
        &self.admitted
    }

    /// (failed, total) attempts on recovering tiers during the current ramp.
    pub fn ramp_errors(&self) -> (u64, u64) {
        (self.ramp_failures, self.ramp_attempts)
    }

    /// The split the current health calls for, ignoring hold-down and ramp.
    pub fn target_split(&self, policy: &FailoverPolicy) -> Vec<u32> {
        split(&self.health, policy.overprovisioning)
    }

    /// The split in force.
    pub fn applied_split(&self, policy: &FailoverPolicy) -> Vec<u32> {
        let base = split(&self.admitted, policy.overprovisioning);
        match self.phase {
            FailbackPhase::Ramp { step, .. } => {
                let target = self.target_split(policy);
                blend(&base, &target, ramp_fraction(policy, step))
            }
            _ => base,
        }
    }

    fn recovering(&self, tier: usize) -> bool {
        match (self.health.get(tier), self.admitted.get(tier)) {
            (Some(h), Some(a)) => *h > *a + EPSILON,
            _ => false,
        }
    }

    /// Whether [`Self::record_attempt`] counts anything now (only during a ramp): lets the
    /// caller skip finding the attempt's tier for the common attempt outside one.
    pub fn counts_attempts(&self) -> bool {
        matches!(self.phase, FailbackPhase::Ramp { .. })
    }

    /// Count one attempt on a tier for the ramp's abort check. Returns true when the
    /// error ratio now calls for an abort (the caller then runs [`Self::update`]).
    pub fn record_attempt(&mut self, policy: &FailoverPolicy, tier: usize, failed: bool) -> bool {
        if !matches!(self.phase, FailbackPhase::Ramp { .. }) || !self.recovering(tier) {
            return false;
        }
        self.ramp_attempts += 1;
        if failed {
            self.ramp_failures += 1;
        }
        self.errors_exceeded(policy)
    }

    fn errors_exceeded(&self, policy: &FailoverPolicy) -> bool {
        self.ramp_attempts >= RAMP_MIN_SAMPLES
            && self.ramp_failures as f64 > policy.ramp_abort_error_rate * self.ramp_attempts as f64
    }

    /// When [`Self::update`] must run again (end of hold-down, next ramp step).
    pub fn next_deadline(&self, policy: &FailoverPolicy) -> Option<Instant> {
        match self.phase {
            FailbackPhase::Idle => None,
            FailbackPhase::HoldDown { until, .. } => Some(until),
            FailbackPhase::Ramp { started, step } => Some(ramp_step_at(policy, started, step + 1)),
        }
    }

    fn decay_hold_down(&mut self, policy: &FailoverPolicy, now: Instant) {
        let base = policy.failback_hold_down;
        // A reload may have changed the bounds: stay within them.
        let max = policy.failback_hold_down_max.max(base);
        self.hold_down = self.hold_down.clamp(base, max);
        while self.hold_down > base && now >= self.hold_down_changed_at + FLAP_DECAY_WINDOW {
            self.hold_down = (self.hold_down / 2).max(base);
            self.hold_down_changed_at = self.hold_down_changed_at + FLAP_DECAY_WINDOW;
        }
    }

    /// Traffic moved away from a preferred tier: grow the hold-down if a failback
    /// started recently (that is a flap).
    fn note_failover(&mut self, policy: &FailoverPolicy, now: Instant) {
        let recent = self
            .last_failback_start
            .is_some_and(|start| now.saturating_duration_since(start) <= FLAP_DECAY_WINDOW);
        if recent {
            let max = policy.failback_hold_down_max.max(policy.failback_hold_down);
            self.hold_down = self.hold_down.saturating_mul(2).min(max);
            self.hold_down_changed_at = now;
        }
    }

    fn health_inputs(&self) -> Vec<(String, String)> {
        let mut inputs = Vec::new();
        for (i, (h, a)) in self.health.iter().zip(&self.admitted).enumerate() {
            inputs.push((format!("tier[{i}].healthy_share"), fmt_share(*h)));
            inputs.push((format!("tier[{i}].admitted_share"), fmt_share(*a)));
        }
        inputs
    }

    /// Feed the current healthy share of every tier (same length as at creation; a
    /// different length re-creates the engine). Returns the failback event, if any.
    pub fn update(
        &mut self,
        policy: &FailoverPolicy,
        now: Instant,
        health: &[f64],
    ) -> Option<FailbackEvent> {
        if health.len() != self.admitted.len() {
            *self = FailoverEngine::new(policy, health, now);
            return None;
        }
        self.decay_hold_down(policy, now);
        let previous = std::mem::replace(&mut self.health, health.to_vec());
        let base_before = split(&self.admitted, policy.overprovisioning);
        let applied_before = self.applied_split(policy);

        // A drop in a tier that was recovering (real share above admitted).
        let mut recovering_dropped = false;
        for (i, ((h, prev), admitted)) in health
            .iter()
            .zip(&previous)
            .zip(self.admitted.iter_mut())
            .enumerate()
        {
            if *h + EPSILON < *prev && *prev > *admitted + EPSILON {
                recovering_dropped = true;
            }
            // Failover is immediate.
            if *h + EPSILON < *admitted {
                *admitted = *h;
            }
            let seasoned = self.seasoned.get_mut(i);
            if let Some(seasoned) = seasoned {
                if !*seasoned && *h > *admitted {
                    *admitted = *h;
                }
                if *admitted > 0.0 {
                    *seasoned = true;
                }
            }
        }
        // Recovery is gated only while the admitted tiers can carry the whole load. When
        // they cannot (an empty or normalised split), recovered capacity is admitted at
        // once: serving nothing, or overloading what is left, is worse than a flap.
        let admitted_capacity: f64 = capped(&self.admitted, policy.overprovisioning).iter().sum();
        if admitted_capacity < 1.0 - EPSILON {
            for (a, h) in self.admitted.iter_mut().zip(health) {
                *a = a.max(*h);
            }
            if !matches!(self.phase, FailbackPhase::Idle) {
                self.phase = FailbackPhase::Idle;
            }
        }
        let base = split(&self.admitted, policy.overprovisioning);
        let target = split(health, policy.overprovisioning);
        let mut noted = false;
        if moved_away(&base_before, &base) {
            self.note_failover(policy, now);
            noted = true;
        }
        if base == target {
            // Health gains that change nothing are admitted silently.
            for (a, h) in self.admitted.iter_mut().zip(health) {
                *a = a.max(*h);
            }
        }

        match self.phase.clone() {
            FailbackPhase::Idle => {
                if base != target {
                    self.phase = FailbackPhase::HoldDown {
                        since: now,
                        until: now + self.hold_down,
                    };
                }
                None
            }
            FailbackPhase::HoldDown { until, .. } => {
                if base == target {
                    self.phase = FailbackPhase::Idle;
                    None
                } else if recovering_dropped {
                    self.phase = FailbackPhase::HoldDown {
                        since: now,
                        until: now + self.hold_down,
                    };
                    None
                } else if now >= until {
                    self.phase = FailbackPhase::Ramp {
                        started: now,
                        step: 0,
                    };
                    self.last_failback_start = Some(now);
                    self.ramp_attempts = 0;
                    self.ramp_failures = 0;
                    if policy.failback_ramp.is_zero() {
                        return Some(self.complete("hold-down elapsed, no ramp"));
                    }
                    let mut inputs = self.health_inputs();
                    inputs.push((
                        "hold_down_s".into(),
                        format!("{}", self.hold_down.as_secs_f64()),
                    ));
                    inputs.push((
                        "ramp_start_share".into(),
                        fmt_share(ramp_fraction(policy, 0)),
                    ));
                    Some(FailbackEvent {
                        kind: DecisionKind::FailbackStart,
                        trigger: format!(
                            "recovered tiers stayed healthy for the {} s hold-down",
                            self.hold_down.as_secs_f64()
                        ),
                        inputs,
                    })
                } else {
                    None
                }
            }
            FailbackPhase::Ramp { started, step } => {
                let errors = self.errors_exceeded(policy);
                if base == target || recovering_dropped || errors {
                    let reason = if errors {
                        format!(
                            "recovering tiers failed {} of {} attempts (> {})",
                            self.ramp_failures, self.ramp_attempts, policy.ramp_abort_error_rate
                        )
                    } else {
                        "a recovering tier lost healthy capacity during the ramp".to_string()
                    };
                    if !noted && moved_away(&applied_before, &base) {
                        self.note_failover(policy, now);
                    }
                    self.phase = FailbackPhase::HoldDown {
                        since: now,
                        until: now + self.hold_down,
                    };
                    let mut inputs = self.health_inputs();
                    inputs.push(("ramp_attempts".into(), self.ramp_attempts.to_string()));
                    inputs.push(("ramp_failures".into(), self.ramp_failures.to_string()));
                    inputs.push((
                        "next_hold_down_s".into(),
                        format!("{}", self.hold_down.as_secs_f64()),
                    ));
                    return Some(FailbackEvent {
                        kind: DecisionKind::FailbackAborted,
                        trigger: reason,
                        inputs,
                    });
                }
                if now >= started + policy.failback_ramp {
                    return Some(self.complete("ramp finished"));
                }
                let elapsed = now.saturating_duration_since(started).as_millis();
                let ramp_ms = policy.failback_ramp.as_millis().max(1);
                let reached = u32::try_from(elapsed * u128::from(RAMP_STEPS) / ramp_ms)
                    .unwrap_or(RAMP_STEPS)
                    .min(RAMP_STEPS - 1);
                if reached > step {
                    self.phase = FailbackPhase::Ramp {
                        started,
                        step: reached,
                    };
                    let mut inputs = self.health_inputs();
                    inputs.push(("step".into(), format!("{reached}/{RAMP_STEPS}")));
                    inputs.push((
                        "ramp_fraction".into(),
                        fmt_share(ramp_fraction(policy, reached)),
                    ));
                    inputs.push(("ramp_attempts".into(), self.ramp_attempts.to_string()));
                    inputs.push(("ramp_failures".into(), self.ramp_failures.to_string()));
                    return Some(FailbackEvent {
                        kind: DecisionKind::FailbackStep,
                        trigger: format!("ramp step {reached} of {RAMP_STEPS}"),
                        inputs,
                    });
                }
                None
            }
        }
    }

    fn complete(&mut self, why: &str) -> FailbackEvent {
        self.admitted = self.health.clone();
        self.phase = FailbackPhase::Idle;
        let mut inputs = self.health_inputs();
        inputs.push(("ramp_attempts".into(), self.ramp_attempts.to_string()));
        inputs.push(("ramp_failures".into(), self.ramp_failures.to_string()));
        FailbackEvent {
            kind: DecisionKind::FailbackComplete,
            trigger: why.to_string(),
            inputs,
        }
    }
}

/// Fraction of the way from the failed-over split to the target at ramp `step`.
pub fn ramp_fraction(policy: &FailoverPolicy, step: u32) -> f64 {
    let start = if policy.ramp_start_share.is_finite() {
        policy.ramp_start_share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    start + (1.0 - start) * f64::from(step.min(RAMP_STEPS)) / f64::from(RAMP_STEPS)
}

/// When ramp step `step` is due.
fn ramp_step_at(policy: &FailoverPolicy, started: Instant, step: u32) -> Instant {
    let ms = policy.failback_ramp.as_millis() as u64;
    started + Duration::from_millis(ms.saturating_mul(u64::from(step)) / u64::from(RAMP_STEPS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_follows_envoy_overprovisioning() {
        assert_eq!(split(&[1.0, 1.0], 1.4), vec![PPM, 0]);
        // 0.8 × 1.4 ≥ 1: tier 0 keeps everything.
        assert_eq!(split(&[0.8, 1.0], 1.4), vec![PPM, 0]);
        // 0.5 × 1.4 = 0.7: 30% spills.
        assert_eq!(split(&[0.5, 1.0], 1.4), vec![700_000, 300_000]);
        assert_eq!(split(&[0.0, 1.0], 1.4), vec![0, PPM]);
        // Spill goes in order: tier 1 takes what it can, tier 2 the rest.
        assert_eq!(
            split(&[0.5, 0.1, 1.0], 1.4),
            vec![700_000, 140_000, 160_000]
        );
        // Everything short: normalise 0.28 : 0.14.
        assert_eq!(split(&[0.2, 0.1], 1.4), vec![666_667, 333_333]);
        assert_eq!(split(&[0.0, 0.0], 1.4), vec![0, 0]);
    }

    #[test]
    fn panic_needs_every_tier_below_threshold_and_short_capacity() {
        assert!(
            !is_panic(&[0.0, 1.0], 1.4, 0.5),
            "dark primary, healthy secondary"
        );
        assert!(!is_panic(&[0.4, 0.4], 1.4, 0.5), "together they carry it");
        assert!(is_panic(&[0.3, 0.3], 1.4, 0.5));
        assert!(is_panic(&[0.3], 1.4, 0.5));
        assert!(!is_panic(&[0.6], 1.4, 0.5));
        let tiers = [
            TierCapacity {
                total_weight: 300,
                available_weight: 0,
            },
            TierCapacity {
                total_weight: 100,
                available_weight: 0,
            },
        ];
        assert_eq!(panic_split(&tiers, 1.4), vec![750_000, 250_000]);
    }

    #[test]
    fn moved_away_compares_preferred_prefixes() {
        assert!(moved_away(&[PPM, 0], &[500_000, 500_000]));
        assert!(!moved_away(&[500_000, 500_000], &[PPM, 0]));
        assert!(moved_away(&[0, PPM, 0], &[0, 500_000, 500_000]));
        assert!(!moved_away(&[PPM, 0], &[PPM, 0]));
    }

    fn policy() -> FailoverPolicy {
        FailoverPolicy::default()
    }

    fn secs(s: u64) -> Instant {
        Instant::from_millis(s * 1_000)
    }

    #[test]
    fn blackout_hold_down_ramp_complete() {
        let p = policy();
        let mut e = FailoverEngine::new(&p, &[1.0, 1.0], secs(0));
        assert_eq!(e.update(&p, secs(1), &[0.0, 1.0]), None);
        assert_eq!(e.applied_split(&p), vec![0, PPM], "failover is immediate");
        assert_eq!(e.update(&p, secs(10), &[1.0, 1.0]), None);
        assert_eq!(
            e.phase(),
            &FailbackPhase::HoldDown {
                since: secs(10),
                until: secs(40)
            }
        );
        assert_eq!(e.applied_split(&p), vec![0, PPM], "held down");
        assert_eq!(e.next_deadline(&p), Some(secs(40)));
        let start = e.update(&p, secs(40), &[1.0, 1.0]);
        assert_eq!(start.map(|s| s.kind), Some(DecisionKind::FailbackStart));
        assert_eq!(e.applied_split(&p), vec![50_000, 950_000]);
        let step = e.update(&p, secs(43), &[1.0, 1.0]);
        assert_eq!(step.map(|s| s.kind), Some(DecisionKind::FailbackStep));
        assert_eq!(e.applied_split(&p), vec![145_000, 855_000]);
        let done = e.update(&p, secs(70), &[1.0, 1.0]);
        assert_eq!(done.map(|s| s.kind), Some(DecisionKind::FailbackComplete));
        assert_eq!(e.applied_split(&p), vec![PPM, 0]);
        assert_eq!(e.phase(), &FailbackPhase::Idle);
    }

    #[test]
    fn failure_during_hold_down_restarts_it() {
        let p = policy();
        let mut e = FailoverEngine::new(&p, &[1.0, 1.0], secs(0));
        e.update(&p, secs(0), &[0.0, 1.0]);
        e.update(&p, secs(10), &[1.0, 1.0]);
        e.update(&p, secs(20), &[0.5, 1.0]);
        assert_eq!(
            e.phase(),
            &FailbackPhase::HoldDown {
                since: secs(20),
                until: secs(50)
            }
        );
        assert_eq!(e.update(&p, secs(40), &[0.5, 1.0]), None);
        assert!(e.update(&p, secs(50), &[0.5, 1.0]).is_some());
    }

    #[test]
    fn error_ratio_aborts_the_ramp_and_grows_the_hold_down() {
        let p = policy();
        let mut e = FailoverEngine::new(&p, &[1.0, 1.0], secs(0));
        e.update(&p, secs(0), &[0.0, 1.0]);
        e.update(&p, secs(10), &[1.0, 1.0]);
        e.update(&p, secs(40), &[1.0, 1.0]);
        let mut abort = false;
        for i in 0..20 {
            abort = e.record_attempt(&p, 0, i % 5 == 0);
            assert!(!e.record_attempt(&p, 1, true), "tier 1 is not recovering");
        }
        assert!(abort, "4 of 20 failed > 5%");
        let ev = e.update(&p, secs(41), &[1.0, 1.0]);
        assert_eq!(ev.map(|e| e.kind), Some(DecisionKind::FailbackAborted));
        assert_eq!(e.applied_split(&p), vec![0, PPM]);
        assert_eq!(e.hold_down(), Duration::from_secs(60));
        assert_eq!(e.next_deadline(&p), Some(secs(101)));
    }

    #[test]
    fn flapping_region_fails_over_once_and_never_oscillates() {
        // Up 20 s / down 20 s for 10 minutes.
        let p = policy();
        let mut e = FailoverEngine::new(&p, &[1.0, 1.0], secs(0));
        let mut events = Vec::new();
        let mut splits = vec![e.applied_split(&p)];
        for t in 0..600u64 {
            let up = (t / 20) % 2 == 1;
            let h = if up { 1.0 } else { 0.0 };
            if let Some(ev) = e.update(&p, secs(t), &[h, 1.0]) {
                events.push(ev.kind);
            }
            let s = e.applied_split(&p);
            if splits.last() != Some(&s) {
                splits.push(s);
            }
        }
        assert!(events.is_empty(), "no failback ever started: {events:?}");
        assert_eq!(splits, vec![vec![PPM, 0], vec![0, PPM]]);
    }

    #[test]
    fn repeated_failover_after_failback_doubles_and_decays() {
        let p = policy();
        let mut e = FailoverEngine::new(&p, &[1.0, 1.0], secs(0));
        e.update(&p, secs(0), &[0.0, 1.0]);
        e.update(&p, secs(1), &[1.0, 1.0]);
        e.update(&p, secs(31), &[1.0, 1.0]);
        e.update(&p, secs(61), &[1.0, 1.0]);
        assert_eq!(e.applied_split(&p), vec![PPM, 0]);
        // Fails again within 10 minutes of the failback start: hold-down doubles.
        e.update(&p, secs(100), &[0.0, 1.0]);
        assert_eq!(e.hold_down(), Duration::from_secs(60));
        // A blackout that flips addresses one by one is one episode, not three flaps.
        e.update(&p, secs(101), &[0.0, 1.0]);
        assert_eq!(e.hold_down(), Duration::from_secs(60));
        // Ten quiet minutes halve it back.
        e.update(&p, secs(100 + 600), &[0.0, 1.0]);
        assert_eq!(e.hold_down(), Duration::from_secs(30));
    }

    #[test]
    fn fresh_tiers_are_admitted_at_once() {
        let p = policy();
        let mut e = FailoverEngine::new(&p, &[0.0, 1.0], secs(0));
        assert_eq!(e.update(&p, secs(1), &[1.0, 1.0]), None);
        assert_eq!(e.applied_split(&p), vec![PPM, 0]);
        assert_eq!(e.phase(), &FailbackPhase::Idle);
    }

    proptest! {
        #[test]
        fn split_sums_to_a_million_or_zero(h in proptest::collection::vec(0.0f64..=1.0, 1..6), f in 1.0f64..3.0) {
            let s = split(&h, f);
            let total: u64 = s.iter().map(|x| u64::from(*x)).sum();
            prop_assert!(total == u64::from(PPM) || total == 0);
            prop_assert_eq!(total == 0, h.iter().all(|x| *x == 0.0));
        }

        #[test]
        fn blend_sums_to_a_million(a in 0u32..=PPM, b in 0u32..=PPM, frac in 0.0f64..=1.0) {
            let s = blend(&[a, PPM - a], &[b, PPM - b], frac);
            prop_assert_eq!(s.iter().sum::<u32>(), PPM);
        }
    }
}
