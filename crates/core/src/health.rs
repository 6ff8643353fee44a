//! Kong's health checker for one address, exactly as Kong configures lua-resty-healthcheck
//! 3.1.0: four states, four shared counters, per-counter thresholds, status lists.
//!
//! Why a faithful copy: Kong users bring a `healthchecks` block whose numbers they tuned
//! against Kong's behaviour, including its traps. Sluice adds its own mechanisms
//! (outlier ejection, failover) *next to* this one instead of silently changing it.
//!
//! # Model
//! - One [`AddressHealth`] per address `(ip, port, hostname)`; addresses start healthy.
//! - Four counters — success, http failure, tcp failure, timeout — shared by active
//!   and passive checks (Kong keeps one packed counter per address); each check kind
//!   compares them against *its own* thresholds.
//! - A counted success clears the three failure counters; a counted failure clears the
//!   success counter.
//! - A threshold of 0 means "ignore this report" (Kong's default for every threshold).
//! - A report that matches the current *pure* state is not counted: a success while
//!   fully healthy, a failure while fully unhealthy.
//!
//! # Transitions
//! ```text
//!  report           from               to
//!  failure ≥ limit  healthy|mostly_*   unhealthy
//!  failure < limit  healthy            mostly_healthy      (still counts as healthy)
//!  success ≥ limit  unhealthy|mostly_* healthy
//!  success < limit  unhealthy          mostly_unhealthy    (still counts as unhealthy)
//!  operator set     any                healthy|unhealthy   (counters cleared)
//! ```
//! A failure below the limit while `mostly_unhealthy` (or a success below the limit
//! while `mostly_healthy`) changes counters but not the state, as in the library.
//!
//! # Status classification
//! A status in the `healthy.http_statuses` list is a success, one in
//! `unhealthy.http_statuses` (or 0 = unparsable) an http failure, anything else is
//! ignored (Kong/kong#15001: "orphan" statuses freeze recovery). For passive checks Kong
//! reports any proxied 504 as a timeout, before classification.
//!
//! # Known trap kept on purpose
//! With `healthy.successes = 0` (Kong's default) nothing ever marks an address healthy
//! again except an operator; passive-only configurations therefore never recover on
//! their own. `sluice-config` warns about it.

use std::fmt;

use crate::event::{AttemptOutcome, ProbeOutcome};
use crate::topology::{ActiveHealthCheck, PassiveHealthCheck};

/// lua-resty-healthcheck's internal state of one address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthState {
    Healthy,
    /// Healthy, but failures are accumulating.
    MostlyHealthy,
    /// Unhealthy, but successes are accumulating.
    MostlyUnhealthy,
    Unhealthy,
}

impl HealthState {
    /// Whether the balancer may use the address (`healthy` and `mostly_healthy`).
    pub fn is_healthy(self) -> bool {
        matches!(self, HealthState::Healthy | HealthState::MostlyHealthy)
    }

    /// Stable snake_case name, as the library logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::MostlyHealthy => "mostly_healthy",
            HealthState::MostlyUnhealthy => "mostly_unhealthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four counters Kong keeps per address (8 bits each in Kong; saturating here).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCounters {
    pub successes: u8,
    pub http_failures: u8,
    pub tcp_failures: u8,
    pub timeouts: u8,
}

impl HealthCounters {
    fn any_failure(&self) -> bool {
        self.http_failures > 0 || self.tcp_failures > 0 || self.timeouts > 0
    }
}

/// One classified report, before thresholds apply.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

impl Report {
    fn as_str(self) -> &'static str {
        match self {
            Report::Success => "success",
            Report::HttpFailure => "http failure",
            Report::TcpFailure => "tcp failure",
            Report::Timeout => "timeout",
        }
    }
}

/// Which checker a report came from; each has its own thresholds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Active,
    Passive,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Active => "active",
            CheckKind::Passive => "passive",
        }
    }
}

/// The thresholds of one check kind (Kong's `healthy.successes` and the three
/// `unhealthy.*` counts).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub successes: u8,
    pub http_failures: u8,
    pub tcp_failures: u8,
    pub timeouts: u8,
}

impl Thresholds {
    pub fn active(cfg: &ActiveHealthCheck) -> Self {
        Thresholds {
            successes: cfg.healthy_successes,
            http_failures: cfg.unhealthy_http_failures,
            tcp_failures: cfg.unhealthy_tcp_failures,
            timeouts: cfg.unhealthy_timeouts,
        }
    }

    pub fn passive(cfg: &PassiveHealthCheck) -> Self {
        Thresholds {
            successes: cfg.healthy_successes,
            http_failures: cfg.unhealthy_http_failures,
            tcp_failures: cfg.unhealthy_tcp_failures,
            timeouts: cfg.unhealthy_timeouts,
        }
    }

    fn limit(&self, report: Report) -> u8 {
        match report {
            Report::Success => self.successes,
            Report::HttpFailure => self.http_failures,
            Report::TcpFailure => self.tcp_failures,
            Report::Timeout => self.timeouts,
        }
    }
}

/// A change of [`HealthState`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    /// Why, e.g. "active: 3 http failure(s) reached threshold 3".
    pub reason: String,
}

impl Transition {
    /// True when the address changed between usable and unusable.
    pub fn flipped(&self) -> bool {
        self.from.is_healthy() != self.to.is_healthy()
    }
}

/// Classify an HTTP status against a healthy and an unhealthy list (Kong's rule:
/// healthy list wins, then unhealthy list or 0, else ignored).
fn classify_status(status: u16, healthy: &[u16], unhealthy: &[u16]) -> Option<Report> {
    if healthy.contains(&status) {
        Some(Report::Success)
    } else if status == 0 || unhealthy.contains(&status) {
        Some(Report::HttpFailure)
    } else {
        None
    }
}

/// How an active probe result counts, or `None` when it is ignored.
pub fn classify_probe(cfg: &ActiveHealthCheck, outcome: ProbeOutcome) -> Option<Report> {
    match outcome {
        ProbeOutcome::Status(status) => classify_status(
            status,
            &cfg.healthy_http_statuses,
            &cfg.unhealthy_http_statuses,
        ),
        // A TCP probe's successful connect is a success (the only success a TCP
        // probe can report; HTTP probes report their status instead).
        ProbeOutcome::TcpSuccess => Some(Report::Success),
        ProbeOutcome::TcpFailure => Some(Report::TcpFailure),
        ProbeOutcome::Timeout => Some(Report::Timeout),
    }
}

/// How a proxied attempt counts for passive checks, or `None` when it is ignored.
/// Kong reports every proxied 504 as a timeout, even one the upstream sent itself.
pub fn classify_attempt(cfg: &PassiveHealthCheck, outcome: AttemptOutcome) -> Option<Report> {
    match outcome {
        AttemptOutcome::Status(504) => Some(Report::Timeout),
        AttemptOutcome::Status(status) => classify_status(
            status,
            &cfg.healthy_http_statuses,
            &cfg.unhealthy_http_statuses,
        ),
        AttemptOutcome::TcpFailure => Some(Report::TcpFailure),
        AttemptOutcome::Timeout => Some(Report::Timeout),
    }
}

/// Health state and counters of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressHealth {
    state: HealthState,
    counters: HealthCounters,
}

impl Default for AddressHealth {
    /// Kong adds addresses as healthy with zeroed counters.
    fn default() -> Self {
        AddressHealth {
            state: HealthState::Healthy,
            counters: HealthCounters::default(),
        }
    }
}

impl AddressHealth {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn counters(&self) -> HealthCounters {
        self.counters
    }

    pub fn is_healthy(&self) -> bool {
        self.state.is_healthy()
    }

    /// Clear the counters but keep the state (a reload changed the upstream's health
    /// settings: old counts were made against other thresholds).
    pub fn reset_counters(&mut self) {
        self.counters = HealthCounters::default();
    }

    /// Feed one active probe result.
    pub fn on_probe(
        &mut self,
        cfg: &ActiveHealthCheck,
        outcome: ProbeOutcome,
    ) -> Option<Transition> {
        let report = classify_probe(cfg, outcome)?;
        self.report(CheckKind::Active, report, &Thresholds::active(cfg))
    }

    /// Feed one proxied attempt's outcome (passive check).
    pub fn on_attempt(
        &mut self,
        cfg: &PassiveHealthCheck,
        outcome: AttemptOutcome,
    ) -> Option<Transition> {
        let report = classify_attempt(cfg, outcome)?;
        self.report(CheckKind::Passive, report, &Thresholds::passive(cfg))
    }

    /// Operator override (Kong's `PUT .../healthy|unhealthy`): set the state at once
    /// and clear every counter. Returns a transition when the state changed.
    pub fn set_override(&mut self, healthy: bool) -> Option<Transition> {
        let to = if healthy {
            HealthState::Healthy
        } else {
            HealthState::Unhealthy
        };
        self.counters = HealthCounters::default();
        self.change_to(to, format!("operator set {to}"))
    }

    /// Count one classified report against `limits`: the library's `incr_counter`.
    pub fn report(
        &mut self,
        kind: CheckKind,
        report: Report,
        limits: &Thresholds,
    ) -> Option<Transition> {
        let limit = limits.limit(report);
        if limit == 0 {
            return None;
        }
        // Reports that agree with the pure state are not counted.
        let pure_match = match report {
            Report::Success => self.state == HealthState::Healthy,
            _ => self.state == HealthState::Unhealthy,
        };
        if pure_match {
            return None;
        }
        let c = &mut self.counters;
        let count = match report {
            Report::Success => {
                c.successes = c.successes.saturating_add(1);
                c.http_failures = 0;
                c.tcp_failures = 0;
                c.timeouts = 0;
                c.successes
            }
            Report::HttpFailure => {
                c.successes = 0;
                c.http_failures = c.http_failures.saturating_add(1);
                c.http_failures
            }
            Report::TcpFailure => {
                c.successes = 0;
                c.tcp_failures = c.tcp_failures.saturating_add(1);
                c.tcp_failures
            }
            Report::Timeout => {
                c.successes = 0;
                c.timeouts = c.timeouts.saturating_add(1);
                c.timeouts
            }
        };
        let to = if count >= limit {
            if report == Report::Success {
                HealthState::Healthy
            } else {
                HealthState::Unhealthy
            }
        } else if self.state == HealthState::Healthy && self.counters.any_failure() {
            HealthState::MostlyHealthy
        } else if self.state == HealthState::Unhealthy && self.counters.successes > 0 {
            HealthState::MostlyUnhealthy
        } else {
            return None;
        };
        let reason = format!(
            "{}: {} {}(s) of threshold {}",
            kind.as_str(),
            count,
            report.as_str(),
            limit
        );
        self.change_to(to, reason)
    }

    fn change_to(&mut self, to: HealthState, reason: String) -> Option<Transition> {
        if to == self.state {
            return None;
        }
        let from = self.state;
        self.state = to;
        Some(Transition { from, to, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;
    use crate::topology::{HealthChecks, ProbeType};

    fn active(successes: u8, http: u8, tcp: u8, timeouts: u8) -> ActiveHealthCheck {
        let mut cfg = HealthChecks::default().active;
        cfg.healthy_interval = Duration::from_secs(5);
        cfg.unhealthy_interval = Duration::from_secs(5);
        cfg.healthy_successes = successes;
        cfg.unhealthy_http_failures = http;
        cfg.unhealthy_tcp_failures = tcp;
        cfg.unhealthy_timeouts = timeouts;
        cfg
    }

    fn passive(successes: u8, http: u8, tcp: u8, timeouts: u8) -> PassiveHealthCheck {
        let mut cfg = HealthChecks::default().passive;
        cfg.healthy_successes = successes;
        cfg.unhealthy_http_failures = http;
        cfg.unhealthy_tcp_failures = tcp;
        cfg.unhealthy_timeouts = timeouts;
        cfg
    }

    /// Feed a sequence of probe outcomes; return the state after each one.
    fn probes(h: &mut AddressHealth, cfg: &ActiveHealthCheck, seq: &[ProbeOutcome]) -> String {
        seq.iter()
            .map(|o| {
                h.on_probe(cfg, *o);
                h.state().as_str()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    use ProbeOutcome::{Status, TcpFailure, Timeout};

    #[test]
    fn starts_healthy_with_zero_counters() {
        let h = AddressHealth::new();
        assert_eq!(h.state(), HealthState::Healthy);
        assert_eq!(h.counters(), HealthCounters::default());
    }

    #[test]
    fn failures_pass_through_mostly_healthy_to_unhealthy_at_threshold() {
        let cfg = active(2, 3, 3, 3);
        let mut h = AddressHealth::new();
        assert_eq!(
            probes(&mut h, &cfg, &[Status(500), Status(500), Status(500)]),
            "mostly_healthy mostly_healthy unhealthy"
        );
        assert!(!h.is_healthy());
    }

    #[test]
    fn successes_pass_through_mostly_unhealthy_to_healthy_at_threshold() {
        let cfg = active(2, 1, 1, 1);
        let mut h = AddressHealth::new();
        probes(&mut h, &cfg, &[Status(503)]);
        assert_eq!(
            probes(&mut h, &cfg, &[Status(200), Status(200)]),
            "mostly_unhealthy healthy"
        );
    }

    #[test]
    fn each_counter_has_its_own_threshold() {
        // 2 http + 2 tcp failures with thresholds of 3 each: no flip, the counters are
        // separate and failures do not reset each other.
        let cfg = active(1, 3, 3, 3);
        let mut h = AddressHealth::new();
        probes(
            &mut h,
            &cfg,
            &[Status(500), TcpFailure, Status(500), TcpFailure],
        );
        assert_eq!(h.state(), HealthState::MostlyHealthy);
        assert_eq!(
            h.counters(),
            HealthCounters {
                successes: 0,
                http_failures: 2,
                tcp_failures: 2,
                timeouts: 0
            }
        );
        h.on_probe(&cfg, Timeout);
        assert_eq!(h.state(), HealthState::MostlyHealthy);
        h.on_probe(&cfg, TcpFailure);
        assert_eq!(h.state(), HealthState::Unhealthy, "third tcp failure");
    }

    #[test]
    fn a_success_resets_failures_and_a_failure_resets_successes() {
        let cfg = active(3, 3, 3, 3);
        let mut h = AddressHealth::new();
        probes(&mut h, &cfg, &[Status(500), Status(500), Status(200)]);
        assert_eq!(h.counters().http_failures, 0);
        assert_eq!(h.counters().successes, 1);
        assert_eq!(h.state(), HealthState::MostlyHealthy, "success below limit");
        probes(&mut h, &cfg, &[Status(500)]);
        assert_eq!(h.counters().successes, 0);
        assert_eq!(h.counters().http_failures, 1);
    }

    #[test]
    fn threshold_zero_ignores_the_report() {
        let cfg = active(0, 0, 2, 0);
        let mut h = AddressHealth::new();
        probes(&mut h, &cfg, &[Status(500), Status(500), Timeout, Timeout]);
        assert_eq!(h.state(), HealthState::Healthy);
        assert_eq!(h.counters(), HealthCounters::default());
    }

    #[test]
    fn reports_matching_the_pure_state_are_not_counted() {
        let cfg = active(2, 1, 1, 1);
        let mut h = AddressHealth::new();
        probes(&mut h, &cfg, &[Status(200), Status(200)]);
        assert_eq!(h.counters().successes, 0, "success while fully healthy");
        probes(&mut h, &cfg, &[Status(500), Status(500), Status(500)]);
        assert_eq!(h.state(), HealthState::Unhealthy);
        assert_eq!(h.counters().http_failures, 1, "failures while unhealthy");
    }

    #[test]
    fn unlisted_status_is_ignored_and_zero_is_a_failure() {
        let cfg = active(1, 1, 1, 1);
        let mut h = AddressHealth::new();
        assert_eq!(h.on_probe(&cfg, Status(418)), None);
        assert_eq!(h.state(), HealthState::Healthy);
        let t = h.on_probe(&cfg, Status(0));
        assert!(t.is_some_and(|t| t.flipped()));
        // 204 is not in the active healthy list [200, 302]: recovery freezes.
        h.on_probe(&cfg, Status(204));
        assert_eq!(h.state(), HealthState::Unhealthy);
    }

    #[test]
    fn passive_504_counts_as_timeout() {
        let cfg = passive(0, 5, 0, 1);
        let mut h = AddressHealth::new();
        let t = h.on_attempt(&cfg, AttemptOutcome::Status(504));
        assert_eq!(h.state(), HealthState::Unhealthy);
        assert!(t.is_some_and(|t| t.reason.contains("timeout")));
    }

    #[test]
    fn active_and_passive_use_their_own_thresholds_on_shared_counters() {
        let a = active(1, 5, 5, 5);
        let p = passive(0, 2, 0, 0);
        let mut h = AddressHealth::new();
        h.on_probe(&a, Status(500));
        assert_eq!(h.state(), HealthState::MostlyHealthy);
        // The passive failure sees the shared http counter at 1 and makes it 2 = its limit.
        h.on_attempt(&p, AttemptOutcome::Status(500));
        assert_eq!(h.state(), HealthState::Unhealthy);
        // Passive successes threshold 0: ignored; active success threshold 1 recovers.
        h.on_attempt(&p, AttemptOutcome::Status(200));
        assert_eq!(h.state(), HealthState::Unhealthy);
        h.on_probe(&a, Status(200));
        assert_eq!(h.state(), HealthState::Healthy);
    }

    #[test]
    fn passive_only_with_zero_successes_never_recovers() {
        // Kong's trap, kept: ejected by passive checks, nothing brings it back.
        let p = passive(0, 1, 1, 1);
        let mut h = AddressHealth::new();
        h.on_attempt(&p, AttemptOutcome::Status(500));
        for _ in 0..100 {
            h.on_attempt(&p, AttemptOutcome::Status(200));
        }
        assert_eq!(h.state(), HealthState::Unhealthy);
    }

    #[test]
    fn operator_override_sets_state_and_clears_counters() {
        let cfg = active(3, 3, 3, 3);
        let mut h = AddressHealth::new();
        probes(&mut h, &cfg, &[Status(500), Status(500)]);
        let t = h.set_override(false);
        assert!(t.is_some_and(|t| t.flipped()));
        assert_eq!(h.counters(), HealthCounters::default());
        assert_eq!(h.set_override(false), None, "already unhealthy");
        assert!(h.set_override(true).is_some());
        assert_eq!(h.state(), HealthState::Healthy);
    }

    #[test]
    fn tcp_probe_success_counts_as_success() {
        let mut cfg = active(1, 1, 1, 1);
        cfg.probe_type = ProbeType::Tcp;
        let mut h = AddressHealth::new();
        h.on_probe(&cfg, TcpFailure);
        assert_eq!(h.state(), HealthState::Unhealthy);
        h.on_probe(&cfg, ProbeOutcome::TcpSuccess);
        assert_eq!(h.state(), HealthState::Healthy);
    }
}
