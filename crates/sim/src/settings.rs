//! The configuration a run feeds the controller: the upstream's health checks and
//! failover policy, a baseline shaped like a sensible production config, and BUGGIFY,
//! which per seed pushes some settings to extreme but legal values.
//!
//! Also computes the liveness bound: how long after the faults stop the controller may
//! take to have every address available and all traffic back in tier 0.

use std::sync::Arc;

use sluice_core::Duration;
use sluice_core::retry::RetryBudgetPolicy;
use sluice_core::topology::{
    Algorithm, FailoverPolicy, HashOn, HealthChecks, OutlierPolicy, UpstreamSpec,
};

use crate::rng::Rng;
use crate::world::World;

/// Name of the simulated upstream.
pub const UPSTREAM: &str = "api";

/// Everything configurable about one run's upstream and client.
#[derive(Clone, Debug)]
pub struct Settings {
    pub algorithm: Algorithm,
    pub healthchecks: HealthChecks,
    pub failover: FailoverPolicy,
    /// Kong's `services[].retries` (default 5, so up to 6 attempts).
    pub retries: u32,
    /// BUGGIFY choices applied to this run, for the report.
    pub buggified: Vec<&'static str>,
}

impl Settings {
    /// The baseline: Kong-style health checks switched on (Kong's defaults leave them
    /// off, which would make recovery impossible without an operator) and Sluice's
    /// failover policy with timers scaled down (hold-down 10 s instead of minutes) so a
    /// ten-minute run sees several complete failover/failback cycles.
    pub fn baseline() -> Settings {
        let mut healthchecks = HealthChecks::default();
        // Probe healthy addresses every 2 s and unhealthy ones every 1 s: detection in
        // a few seconds, recovery in two successes.
        healthchecks.active.healthy_interval = Duration::from_secs(2);
        healthchecks.active.unhealthy_interval = Duration::from_secs(1);
        healthchecks.active.healthy_successes = 2;
        healthchecks.active.unhealthy_timeouts = 3;
        healthchecks.active.unhealthy_tcp_failures = 2;
        healthchecks.active.unhealthy_http_failures = 3;
        // Passive: trip on real traffic quickly; recover through active probes.
        healthchecks.passive.healthy_successes = 5;
        healthchecks.passive.unhealthy_timeouts = 3;
        healthchecks.passive.unhealthy_tcp_failures = 2;
        healthchecks.passive.unhealthy_http_failures = 5;
        Settings {
            algorithm: Algorithm::RoundRobin,
            healthchecks,
            failover: baseline_failover(),
            retries: 5,
            buggified: Vec::new(),
        }
    }

    /// BUGGIFY: each knob independently, with probability 1/4, takes an extreme but
    /// legal value. A quarter keeps most runs close to the baseline so that a bug in
    /// an extreme corner is attributable, while 200 seeds still hit every corner often.
    pub fn buggify(&mut self, rng: &mut Rng) {
        const P: f64 = 0.25;
        if rng.chance(P) {
            // The policy exactly as shipped (longer timers, slow start, adaptive
            // weights on): the other knobs below then push it to its corners.
            self.failover = FailoverPolicy::default();
            self.buggified.push("shipped_defaults");
        }
        let active = &mut self.healthchecks.active;
        if rng.chance(P) {
            active.healthy_interval = Duration::from_millis(100);
            active.unhealthy_interval = Duration::from_millis(100);
            self.buggified.push("probe_intervals_100ms");
        }
        if rng.chance(P) {
            active.healthy_successes = 1;
            active.unhealthy_timeouts = 1;
            active.unhealthy_tcp_failures = 1;
            active.unhealthy_http_failures = 1;
            self.buggified.push("active_thresholds_1");
        }
        if rng.chance(P) {
            let passive = &mut self.healthchecks.passive;
            passive.healthy_successes = 1;
            passive.unhealthy_timeouts = 1;
            passive.unhealthy_tcp_failures = 1;
            passive.unhealthy_http_failures = 1;
            self.buggified.push("passive_thresholds_1");
        }
        if rng.chance(P) {
            // The maximum stays: flap damping doubling a zero hold-down is a corner too.
            self.failover.failback_hold_down = Duration::ZERO;
            self.buggified.push("hold_down_0");
        }
        if rng.chance(P) {
            self.failover.failback_ramp = Duration::ZERO;
            self.buggified.push("ramp_0");
        }
        if rng.chance(P) {
            self.failover.overprovisioning = 1.0;
            self.buggified.push("overprovisioning_1");
        }
        if rng.chance(P) {
            self.failover.outlier.max_ejected_share = 1.0;
            self.failover.outlier.consecutive_failures = 1;
            self.buggified.push("eject_everything");
        }
        if rng.chance(P) {
            self.failover.panic_threshold = 0.0;
            self.buggified.push("panic_never");
        }
        if rng.chance(P) {
            self.failover.ramp_start_share = 1.0;
            self.buggified.push("ramp_start_100pct");
        }
        if rng.chance(P) {
            self.failover.slow_start = Duration::from_secs(30);
            self.failover.adaptive_weights = true;
            self.buggified.push("slow_start_adaptive");
        }
        if rng.chance(P) {
            self.algorithm = *rng
                .choose(&[
                    Algorithm::LeastConnections,
                    Algorithm::ConsistentHashing,
                    Algorithm::Latency,
                ])
                .unwrap_or(&Algorithm::RoundRobin);
            self.buggified.push("algorithm");
        }
    }

    /// The upstream as the controller sees it, base or reloaded variant.
    pub fn upstream_spec(&self, world: &World, reloaded: bool) -> UpstreamSpec {
        let hash_on = if self.algorithm == Algorithm::ConsistentHashing {
            HashOn::Header("x-user".into())
        } else {
            HashOn::None
        };
        UpstreamSpec {
            id: "00000000-0000-4000-8000-0000000000aa".into(),
            name: Arc::from(UPSTREAM),
            algorithm: self.algorithm,
            hash_on,
            hash_fallback: HashOn::None,
            // Kong's default `slots`.
            slots: 10_000,
            host_header: None,
            healthchecks: self.healthchecks.clone(),
            failover: self.failover.clone(),
            targets: world.target_specs(reloaded),
            tags: Vec::new(),
        }
    }

    /// How long after the last fault ends the controller may take to converge:
    /// every address available again and all traffic back in tier 0.
    ///
    /// Sum of the worst cases of each stage, since they can happen in sequence:
    /// an ejection that started just before the end runs `max_ejection`; an address that
    /// is unhealthy needs `healthy_successes` probes, each at most an unhealthy interval
    /// plus the probe timeout apart; DNS is re-resolved within the same probe-sized
    /// cadence; then tier 0 waits out the longest hold-down and the ramp. The slack
    /// absorbs a decision waiting for the next tick and one extra probe round.
    pub fn liveness_bound(&self) -> Duration {
        let active = &self.healthchecks.active;
        let per_probe = active.unhealthy_interval + active.timeout;
        let recover = per_probe * u32::from(active.healthy_successes.max(1));
        let failover = &self.failover;
        recover
            + failover.outlier.max_ejection
            + failover
                .failback_hold_down_max
                .max(failover.failback_hold_down)
            + failover.failback_ramp
            + LIVENESS_SLACK
    }

    /// The retry budget in force (lives on the failover policy).
    pub fn retry_budget(&self) -> &RetryBudgetPolicy {
        &self.failover.retry_budget
    }
}

/// Slack on top of the computed liveness bound: one more probe round at the slowest
/// interval and time for deferred DNS re-resolution.
const LIVENESS_SLACK: Duration = Duration::from_secs(30);

/// Sluice's failover policy with the simulator's scaled-down timers.
fn baseline_failover() -> FailoverPolicy {
    FailoverPolicy {
        // Envoy's default: a tier keeps all traffic while ≥ ~72% of it is healthy.
        overprovisioning: 1.4,
        // Envoy's default panic threshold.
        panic_threshold: 0.5,
        failback_hold_down: Duration::from_secs(10),
        failback_hold_down_max: Duration::from_secs(60),
        failback_ramp: Duration::from_secs(20),
        ramp_start_share: 0.05,
        ramp_abort_error_rate: 0.1,
        slow_start: Duration::ZERO,
        adaptive_weights: false,
        outlier: OutlierPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
            // With three addresses per tier, half lets one be ejected, never two.
            max_ejected_share: 0.5,
        },
        retry_budget: RetryBudgetPolicy::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;
    use crate::world::Layout;

    #[test]
    fn baseline_enables_recovery_and_bound_adds_up() {
        let settings = Settings::baseline();
        assert!(settings.healthchecks.enabled());
        assert!(
            settings.healthchecks.active.healthy_successes > 0,
            "recovery possible"
        );
        // (1 s interval + 1 s timeout) × 2 + 60 + 60 + 20 + 30 = 174 s.
        assert_eq!(settings.liveness_bound(), Duration::from_secs(174));
        let world = World::new(&Layout::two_regions(3));
        let spec = settings.upstream_spec(&world, false);
        assert_eq!(spec.targets.len(), 6);
        assert_eq!(&*spec.name, UPSTREAM);
    }

    #[test]
    fn buggify_varies_by_seed_and_keeps_values_legal() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let mut settings = Settings::baseline();
            settings.buggify(&mut Rng::new(seed, Stream::Config));
            seen.extend(settings.buggified.iter().copied());
            let f = &settings.failover;
            assert!(f.overprovisioning >= 1.0);
            assert!((0.0..=1.0).contains(&f.outlier.max_ejected_share));
            assert!(f.failback_hold_down <= f.failback_hold_down_max);
            assert!(settings.healthchecks.active.unhealthy_interval > Duration::ZERO);
        }
        assert_eq!(
            seen.len(),
            12,
            "every knob is buggified by some seed: {seen:?}"
        );
    }
}
