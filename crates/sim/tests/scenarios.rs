//! Named, scripted scenarios on the simulation harness (TigerBeetle's `replica_test`
//! style): each scripts one story of faults against the real controller and balancer,
//! asserts concrete numbers about what clients saw and how traffic moved, and also runs
//! every safety checker and (unless noted) the liveness phase.
//!
//! Each test's doc comment states its goal and method. On failure the assertion
//! message carries the run's transition log.

use std::net::SocketAddr;

use sluice_core::decision::DecisionKind;
use sluice_core::snapshot::{Mode, Unavailable};
use sluice_core::topology::Algorithm;
use sluice_core::{Duration, Instant};
use sluice_sim::faults::{Fault, FaultKind};
use sluice_sim::sim::{RetrySnapshot, Sim, SimConfig, Stats};
use sluice_sim::world::Layout;

/// Every scenario uses the same seed: the stories are scripted, the seed only fixes
/// latencies, arrival times and balancer entropy.
const SEED: u64 = 1;

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1_000)
}

/// Two regions of three IP targets: t0..t2 in tier 0 (eu-west), t3..t5 in tier 1.
fn scripted(faults: Vec<Fault>, fault_phase_secs: u64) -> SimConfig {
    SimConfig::scripted(
        SEED,
        Layout::two_regions(3),
        faults,
        Duration::from_secs(fault_phase_secs),
    )
}

fn fault(kind: FaultKind, from: u64, to: u64) -> Fault {
    Fault::new(kind, secs(from), secs(to))
}

fn addr(sim: &Sim, target: usize) -> SocketAddr {
    sim.world().targets[target].addresses[0]
}

/// The transition log and violations, for assertion messages.
fn explain(sim: &Sim) -> String {
    let mut text = String::new();
    for violation in sim.violations() {
        text.push_str(&format!("violation {violation}\n"));
    }
    text.push_str(&sim.log().render());
    text
}

fn assert_safe(sim: &Sim) {
    assert!(
        sim.violations().is_empty(),
        "safety violations:\n{}",
        explain(sim)
    );
}

fn assert_live(sim: &mut Sim) {
    let result = sim.check_liveness();
    assert!(result.is_ok(), "no liveness: {result:?}\n{}", explain(sim));
    assert_safe(sim);
}

fn decisions_between(sim: &Sim, kind: DecisionKind, from: Instant, to: Instant) -> Vec<Instant> {
    sim.decisions()
        .iter()
        .filter(|d| d.kind == kind && d.at >= from && d.at < to)
        .map(|d| d.at)
        .collect()
}

fn tier_share(stats: &Stats, tier: u8) -> f64 {
    let total: u64 = stats.first_attempts_by_tier.values().sum();
    let tier_count = stats
        .first_attempts_by_tier
        .get(&tier)
        .copied()
        .unwrap_or(0);
    tier_count as f64 / total.max(1) as f64
}

fn blackout_config(retry_snapshot: RetrySnapshot) -> SimConfig {
    let mut config = scripted(
        vec![fault(FaultKind::RegionBlackout { region: 0 }, 60, 180)],
        180,
    );
    config.retry_snapshot = retry_snapshot;
    config
}

/// Goal: a whole primary region going dark fails over within seconds, and traffic
/// returns only after the hold-down, along the ramp.
///
/// Method: 500 req/s; eu-west blacks out from 60 s to 180 s (every attempt and probe
/// times out). Passive checks (3 timeouts) must fail over within 5 s, and no request
/// that starts after the failover may fail. After the restore, the failback must start
/// no earlier than the hold-down after tier 0's last drop and complete one ramp later,
/// tier 0's share only growing along the way.
#[test]
fn primary_blackout_fails_over_and_fails_back_after_hold_down_along_the_ramp() {
    let config = blackout_config(RetrySnapshot::Loaded);
    let policy = config.settings.failover.clone();
    let mut sim = Sim::new(config);
    sim.run_until(secs(60));
    let healthy = sim.stats().clone();
    assert_eq!(healthy.client_errors, 0, "{}", explain(&sim));
    assert_eq!(
        tier_share(&healthy, 0),
        1.0,
        "all traffic home while healthy"
    );

    sim.run_until(secs(180));
    let outage = sim.stats().since(&healthy);
    assert!(
        outage.retries_crossing_tier > 0,
        "retries crossed regions: {outage:?}"
    );
    let failovers = decisions_between(&sim, DecisionKind::Failover, secs(60), secs(180));
    assert_eq!(
        failovers.len(),
        1,
        "one failover: {failovers:?}\n{}",
        explain(&sim)
    );
    assert!(
        failovers[0] <= secs(65),
        "detected within 5 s: {failovers:?}"
    );
    let late_errors = sim
        .client_error_starts()
        .iter()
        .filter(|started| **started > failovers[0])
        .count();
    assert_eq!(
        late_errors, 0,
        "no request started after the failover fails"
    );
    let snapshot = sim.snapshot().expect("published").clone();
    assert_eq!(snapshot.mode, Mode::FailedOver);

    sim.run_until(
        secs(180) + policy.failback_hold_down + policy.failback_ramp + Duration::from_secs(20),
    );
    let starts = decisions_between(&sim, DecisionKind::FailbackStart, secs(180), sim.now());
    assert_eq!(
        starts.len(),
        1,
        "one failback: {starts:?}\n{}",
        explain(&sim)
    );
    let start = starts[0];
    assert!(
        start >= secs(180) + policy.failback_hold_down,
        "failback at {start:?}, before the hold-down"
    );
    // Tier 0 is healthy again two probe successes (1 s interval) after the restore.
    assert!(
        start <= secs(185) + policy.failback_hold_down,
        "failback at {start:?}, late"
    );
    let completes = decisions_between(&sim, DecisionKind::FailbackComplete, start, sim.now());
    assert_eq!(completes.len(), 1, "{}", explain(&sim));
    let ramp_took = completes[0].saturating_duration_since(start);
    assert!(
        ramp_took >= policy.failback_ramp.mul_f64(0.8)
            && ramp_took <= policy.failback_ramp + Duration::from_secs(2),
        "ramp took {ramp_took:?}, configured {:?}",
        policy.failback_ramp
    );
    let mut tier0_along_ramp = Vec::new();
    for record in sim
        .decisions()
        .iter()
        .filter(|d| d.at >= start && d.at <= completes[0])
    {
        let tier0 = record
            .after
            .iter()
            .find(|t| t.tier == 0)
            .map_or(0, |t| t.share_ppm);
        tier0_along_ramp.push(tier0);
    }
    assert!(
        tier0_along_ramp.len() >= 3,
        "a ramp has steps: {tier0_along_ramp:?}"
    );
    assert!(
        tier0_along_ramp.windows(2).all(|w| w[0] <= w[1]),
        "tier 0 share only grows along the ramp: {tier0_along_ramp:?}"
    );
    assert_eq!(tier0_along_ramp.last(), Some(&1_000_000));
    assert_live(&mut sim);
}

/// A primary blackout costs clients zero errors: retries pick from the latest snapshot
/// (as `sluice-proxy` does), so a request whose first attempt timed out in the dark
/// region sees the failover decided meanwhile and crosses into the secondary.
///
/// History: with retries picking from the snapshot a request *started* with, this
/// scenario (seed 1) cost 471 client 504s in the first second of the blackout (1,115
/// retries, 471 denied by the budget, 63 crossing tiers); the comparison test below keeps
/// measuring that mode so the fix stays justified.
#[test]
fn primary_blackout_costs_no_client_errors() {
    let mut sim = Sim::new(blackout_config(RetrySnapshot::Latest));
    sim.run_until(secs(180));
    let stats = sim.stats();
    assert_eq!(stats.client_errors, 0, "{stats:?}\n{}", explain(&sim));
    assert!(stats.retries_crossing_tier > 400, "{stats:?}");
    assert_live(&mut sim);
}

/// Goal: a flapping primary (up 20 s / down 20 s for 10 minutes) causes one failover
/// and no failback oscillation, with the shipped default policy.
///
/// Method: the default hold-down (30 s) exceeds the up phase, so no failback can start
/// while the region flaps; after it stabilises, exactly one failback brings traffic home.
#[test]
fn flapping_primary_fails_over_once_and_does_not_oscillate() {
    let mut config = scripted(
        vec![fault(
            FaultKind::FlappingRegion {
                region: 0,
                up_ms: 20_000,
                down_ms: 20_000,
            },
            30,
            630,
        )],
        630,
    );
    config.settings.failover = sluice_core::topology::FailoverPolicy::default();
    let mut sim = Sim::new(config);
    sim.run_until(secs(630));
    let failovers = decisions_between(&sim, DecisionKind::Failover, secs(0), secs(630));
    let failback_starts = decisions_between(&sim, DecisionKind::FailbackStart, secs(0), secs(630));
    assert_eq!(
        failovers.len(),
        1,
        "one failover: {failovers:?}\n{}",
        explain(&sim)
    );
    assert!(
        failback_starts.is_empty(),
        "no failback while flapping: {failback_starts:?}\n{}",
        explain(&sim)
    );
    // The first blackout costs what any blackout costs before detection (see
    // `primary_blackout_costs_no_client_errors`); once failed over, the flapping region
    // costs nothing: no request started after the failover fails.
    let late_errors = sim
        .client_error_starts()
        .iter()
        .filter(|started| **started > failovers[0])
        .count();
    assert_eq!(late_errors, 0, "{}", explain(&sim));
    sim.run_until(secs(630 + 120));
    let starts = decisions_between(&sim, DecisionKind::FailbackStart, secs(630), sim.now());
    assert_eq!(starts.len(), 1, "one failback after it settles: {starts:?}");
    assert_live(&mut sim);
}

/// Goal: losing one of three primaries moves no traffic while the remaining two can
/// carry it, and exactly the Envoy-formula share when they cannot.
///
/// Method: t0 refuses connections from 60 s to 300 s. With overprovisioning 1.5,
/// 2/3 × 1.5 = 1.0: tier 0 keeps everything and no attempt at all (not even a retry)
/// reaches eu-central. With Envoy's 1.4, 2/3 × 1.4 = 0.933: 6.7% of new requests
/// spill, which the run must show within a percentage point.
#[test]
fn one_of_three_primaries_down_leaks_nothing_while_capacity_suffices() {
    let down = || {
        vec![fault(
            FaultKind::TargetDown {
                target: 0,
                refused: true,
            },
            60,
            300,
        )]
    };
    let mut config = scripted(down(), 300);
    config.settings.failover.overprovisioning = 1.5;
    let mut sim = Sim::new(config);
    sim.run_until(secs(300));
    let stats = sim.stats().clone();
    assert_eq!(
        stats.attempts_by_tier.get(&1).copied().unwrap_or(0),
        0,
        "nothing reached the secondary: {stats:?}\n{}",
        explain(&sim)
    );
    assert_eq!(
        stats.client_errors, 0,
        "refusals are retried on the other primaries"
    );
    assert_live(&mut sim);

    let mut config = scripted(down(), 300);
    config.settings.failover.overprovisioning = 1.4;
    let mut sim = Sim::new(config);
    sim.run_until(secs(80));
    let before = sim.stats().clone();
    sim.run_until(secs(300));
    let window = sim.stats().since(&before);
    let spilled = tier_share(&window, 1);
    assert!(
        (spilled - (1.0 - 2.0 / 3.0 * 1.4)).abs() < 0.01,
        "spill {:.2}% expected 6.67%\n{}",
        spilled * 100.0,
        explain(&sim)
    );
    assert_live(&mut sim);
}

/// Goal: a gray failure (30% of real requests get 500 while `/health` says 200) is
/// caught by outlier ejection from real traffic, not by probes.
///
/// Method: t0 fails 30% of traffic from 60 s to 600 s. Outlier ejection with a 20%
/// failure-rate threshold (see below) or Kong's passive counters must remove it within
/// seconds; active probes (which pass) must not
/// bring it back early; during each ejection at most a handful of requests already in
/// flight reach it; clients see < 0.1% errors over the whole run (500s are not retried,
/// as in Kong, so every error is a request the bad host answered).
#[test]
fn gray_failure_is_ejected_by_real_traffic_and_costs_under_a_tenth_of_a_percent() {
    let mut config = scripted(
        vec![fault(
            FaultKind::GrayFailure {
                target: 0,
                error_ppm: 300_000,
            },
            60,
            600,
        )],
        600,
    );
    // The shipped failure-rate threshold (50%) never trips on a 30% failure; the host
    // is then caught only by 5 consecutive 500s, about 590 attempts (~175 errors) per
    // re-admission, 0.51% of all requests over this run. 20% catches it in ~20 attempts.
    config.settings.failover.outlier.failure_rate = 0.2;
    let outlier = config.settings.failover.outlier.clone();
    let mut sim = Sim::new(config);
    sim.run_until(secs(600));
    let bad = addr(&sim, 0);
    let detection = sim
        .first_unavailable_after(bad, secs(60))
        .cloned()
        .unwrap_or_else(|| panic!("never ejected\n{}", explain(&sim)));
    // Real traffic is what removes it: Kong's passive counters (5 consecutive 500s)
    // or outlier ejection, whichever trips first; never the probes, which pass.
    assert!(
        matches!(
            detection.unavailable,
            Some(Unavailable::Ejected { .. } | Unavailable::Unhealthy)
        ),
        "removed from rotation: {detection:?}"
    );
    let change = sim
        .health_changes()
        .iter()
        .find(|c| c.addr == bad && !c.healthy);
    assert!(
        change.is_none_or(|c| c.reason.contains("passive")),
        "only real traffic marks it unhealthy: {change:?}"
    );
    assert!(detection.at <= secs(70), "ejected at {:?}", detection.at);
    // Replay the attempts in the first ejection window: only requests already sent.
    let mut replay = Sim::new(sim.config.clone());
    replay.run_until(detection.at + Duration::from_millis(1));
    let at_detection = replay.stats().clone();
    replay.run_until(detection.at + outlier.base_ejection);
    let ejected_window = replay.stats().since(&at_detection);
    eprintln!(
        "gray: detected at {:?}; {} attempts to the bad host in the {:?} after; run: {} of {} \
         requests failed; attempts to bad host {}",
        detection.at,
        ejected_window.attempts_to(bad),
        outlier.base_ejection,
        sim.stats().client_errors,
        sim.stats().requests,
        sim.stats().attempts_to(bad)
    );
    assert!(
        ejected_window.attempts_to(bad) <= 10,
        "{} attempts reached the ejected host\n{}",
        ejected_window.attempts_to(bad),
        explain(&replay)
    );
    let stats = sim.stats();
    assert!(
        stats.error_ratio() < 0.001,
        "client errors {} of {} ({:.4}%)\n{}",
        stats.client_errors,
        stats.requests,
        stats.error_ratio() * 100.0,
        explain(&sim)
    );
    assert_live(&mut sim);
}

/// Goal: with every region dark the upstream panics (uses every address rather than
/// failing everything) and recovers to normal when the regions return.
///
/// Method: both regions black out from 60 s to 120 s.
#[test]
fn everything_down_panics_then_recovers() {
    let config = scripted(
        vec![
            fault(FaultKind::RegionBlackout { region: 0 }, 60, 120),
            fault(FaultKind::RegionBlackout { region: 1 }, 60, 120),
        ],
        120,
    );
    let mut sim = Sim::new(config);
    sim.run_until(secs(119));
    let panics = decisions_between(&sim, DecisionKind::PanicEnter, secs(60), secs(120));
    assert_eq!(panics.len(), 1, "{}", explain(&sim));
    assert!(panics[0] <= secs(70), "panic at {:?}", panics[0]);
    assert_eq!(sim.snapshot().map(|s| s.mode), Some(Mode::Panic));
    sim.run_until(secs(200));
    // Attempts sent during the blackout time out just after the restore and may trip
    // passive checks once more (a brief re-panic); by 130 s panic is over for good.
    let exits = decisions_between(&sim, DecisionKind::PanicExit, secs(120), secs(200));
    assert!(!exits.is_empty(), "{}", explain(&sim));
    assert!(
        exits.iter().all(|at| *at <= secs(130)),
        "panic exits at {exits:?}"
    );
    let late_panics = decisions_between(&sim, DecisionKind::PanicEnter, secs(125), secs(200));
    assert!(late_panics.is_empty(), "{late_panics:?}\n{}", explain(&sim));
    assert_eq!(sim.snapshot().map(|s| s.mode), Some(Mode::Normal));
    assert_live(&mut sim);
}

/// Goal: a config reload in the middle of a failover keeps health state and the split.
///
/// Method: eu-west blacks out from 60 s to 400 s; at 120 s a reload changes weights and
/// adds a spare target to eu-central; at 240 s the original config returns. Between the
/// reloads no new request may be sent to eu-west (its addresses must stay unhealthy,
/// not come back "healthy by default") and the spare must take traffic.
#[test]
fn reload_mid_failover_keeps_health_and_split() {
    let mut layout = Layout::two_regions(3);
    layout.spare_target = true;
    let config = SimConfig::scripted(
        SEED,
        layout,
        vec![
            fault(FaultKind::RegionBlackout { region: 0 }, 60, 400),
            fault(FaultKind::ConfigReload, 120, 240),
        ],
        Duration::from_secs(400),
    );
    let mut sim = Sim::new(config);
    sim.run_until(secs(120));
    let before = sim.stats().clone();
    sim.run_until(secs(240));
    let reloaded = sim.stats().since(&before);
    assert_eq!(
        reloaded
            .first_attempts_by_tier
            .get(&0)
            .copied()
            .unwrap_or(0),
        0,
        "no request sent to the dark region after the reload: {reloaded:?}\n{}",
        explain(&sim)
    );
    assert_eq!(reloaded.client_errors, 0, "{}", explain(&sim));
    let spare = addr(&sim, 6);
    assert!(
        reloaded.attempts_to(spare) > 1_000,
        "spare took traffic: {reloaded:?}"
    );
    assert_eq!(sim.snapshot().map(|s| s.mode), Some(Mode::FailedOver));
    let after_restore = sim.stats().clone();
    sim.run_until(secs(300));
    assert_eq!(sim.stats().since(&after_restore).attempts_to(spare), 0);
    assert_live(&mut sim);
}

/// Goal: a target that gets 200 ms slower loses its share of traffic.
///
/// Method: t0 is 200 ms slower from the start. Under the latency algorithm
/// (P2C over peak EWMA) it must get under 5% of tier 0's attempts (fair share 33%);
/// under round-robin with adaptive weights, under 25%.
#[test]
fn slow_target_loses_share_under_latency_and_adaptive_weights() {
    let slow = || {
        vec![fault(
            FaultKind::TargetSlow {
                target: 0,
                extra_ms: 200,
            },
            0,
            300,
        )]
    };
    for (algorithm, adaptive, bound) in [
        (Algorithm::Latency, false, 0.05),
        (Algorithm::RoundRobin, true, 0.25),
    ] {
        let mut config = scripted(slow(), 300);
        config.settings.algorithm = algorithm;
        config.settings.failover.adaptive_weights = adaptive;
        let mut sim = Sim::new(config);
        sim.run_until(secs(30));
        let warm = sim.stats().clone();
        sim.run_until(secs(300));
        let window = sim.stats().since(&warm);
        let tier0 = window.attempts_by_tier.get(&0).copied().unwrap_or(0);
        let share = window.attempts_to(addr(&sim, 0)) as f64 / tier0.max(1) as f64;
        assert!(
            share < bound,
            "{algorithm:?} (adaptive {adaptive}): slow target got {:.1}% of tier 0, bound {:.0}%",
            share * 100.0,
            bound * 100.0
        );
        assert_eq!(window.client_errors, 0);
        assert_live(&mut sim);
    }
}

/// Goal: the documented behaviour when probes fail while real traffic succeeds.
///
/// Kong's checker keeps one set of counters per address shared by active and passive
/// checks, and a counted success clears the failure counters. With passive successes
/// counted (`passive.healthy.successes > 0`), every successful request wipes the probe
/// failures, so the address never reaches the active failure threshold: traffic that
/// works keeps flowing (no failover, no errors). With passive successes ignored
/// (Kong's default of 0), the probes alone decide: eu-west is marked unhealthy and
/// traffic fails over cleanly, still without a client error, and comes back after the
/// probes recover.
#[test]
fn probes_failing_while_traffic_succeeds_follows_kong_counters() {
    let probes_fail = || vec![fault(FaultKind::ProbesFail { region: 0 }, 60, 200)];
    let mut sim = Sim::new(scripted(probes_fail(), 200));
    sim.run_until(secs(200));
    assert!(
        sim.decisions().is_empty(),
        "nothing moved\n{}",
        explain(&sim)
    );
    assert_eq!(tier_share(sim.stats(), 0), 1.0);
    assert_eq!(sim.stats().client_errors, 0);
    assert_live(&mut sim);

    let mut config = scripted(probes_fail(), 200);
    config.settings.healthchecks.passive.healthy_successes = 0;
    let mut sim = Sim::new(config);
    sim.run_until(secs(200));
    let failovers = decisions_between(&sim, DecisionKind::Failover, secs(60), secs(200));
    assert_eq!(failovers.len(), 1, "{}", explain(&sim));
    assert!(failovers[0] <= secs(70), "failover at {:?}", failovers[0]);
    assert_eq!(sim.stats().client_errors, 0, "{}", explain(&sim));
    assert_live(&mut sim);
}

/// Goal: an operator drain during a failover is obeyed at once, even while the drained
/// target's region carries all traffic.
///
/// Method: eu-west dark from 60 s to 300 s; t3 (eu-central) drained from 90 s to 150 s.
/// No attempt reaches t3 while drained; the checker also asserts it per pick.
#[test]
fn operator_drain_during_failover_is_obeyed() {
    let config = scripted(
        vec![
            fault(FaultKind::RegionBlackout { region: 0 }, 60, 300),
            fault(FaultKind::OperatorDrain { target: 3 }, 90, 150),
        ],
        300,
    );
    let mut sim = Sim::new(config);
    sim.run_until(secs(90) + Duration::from_millis(1));
    let drained_from = sim.stats().clone();
    sim.run_until(secs(150));
    let drained = sim.stats().since(&drained_from);
    let t3 = addr(&sim, 3);
    // Attempts dispatched before the drain may still complete; none may start after it.
    assert_eq!(drained.attempts_to(t3), 0, "{}", explain(&sim));
    assert!(drained.attempts_to(addr(&sim, 4)) > 1_000);
    assert_eq!(drained.client_errors, 0, "{}", explain(&sim));
    let back = sim.stats().clone();
    sim.run_until(secs(200));
    assert!(
        sim.stats().since(&back).attempts_to(t3) > 1_000,
        "undrained target serves again"
    );
    assert_live(&mut sim);
}

/// Goal: a DNS outage for a hostname target keeps its last good addresses in rotation
/// (stale beats empty) and moves no traffic.
///
/// Method: eu-west has three IP targets and one hostname target resolving to two
/// addresses (TTL 5 s); its DNS answers fail from 60 s to 200 s. The addresses must stay
/// in the snapshot and keep serving, with no decision and no client error.
#[test]
fn dns_failure_keeps_stale_addresses_serving() {
    let mut layout = Layout::two_regions(3);
    layout.regions[0].hostname_targets = 1;
    let config = SimConfig::scripted(
        SEED,
        layout,
        vec![fault(FaultKind::DnsFailure { target: 3 }, 60, 200)],
        Duration::from_secs(200),
    );
    let mut sim = Sim::new(config);
    sim.run_until(secs(61));
    let before = sim.stats().clone();
    sim.run_until(secs(200));
    let outage = sim.stats().since(&before);
    let hostname_addresses = sim.world().targets[3].addresses.clone();
    for address in &hostname_addresses {
        assert!(
            outage.attempts_to(*address) > 1_000,
            "{address} kept serving: {outage:?}\n{}",
            explain(&sim)
        );
    }
    assert!(sim.decisions().is_empty(), "{}", explain(&sim));
    assert_eq!(outage.client_errors, 0);
    assert_live(&mut sim);
}

/// The comparison: retries pinned to the request's first snapshot lose requests in a
/// blackout, which is why the data plane re-reads the snapshot on every retry.
#[test]
fn pinning_retries_to_the_first_snapshot_loses_requests_in_a_blackout() {
    let mut sim = Sim::new(blackout_config(RetrySnapshot::Loaded));
    sim.run_until(secs(180));
    let stats = sim.stats();
    assert!(stats.client_errors > 0, "{stats:?}");
}
