//! The CI seed range: swarm-tested runs (random fault subsets, BUGGIFY settings) with
//! every safety checker after every step and the liveness phase at the end.
//!
//! Sized to finish well under a minute in a debug build on a small machine (see
//! `docs/testing.md` for the measurement); the long run is
//! `cargo run -p sluice-sim --release -- --seeds 0..100000`.

use sluice_core::Duration;
use sluice_sim::log::LogLevel;
use sluice_sim::runner::{SeedProfile, run_seed};

/// Seeds run in CI. Every one is a different fault mix; the range is fixed so a CI
/// failure is reproducible with the printed command.
const CI_SEEDS: std::ops::Range<u64> = 0..CI_SEED_COUNT;
const CI_SEED_COUNT: u64 = 50;

/// Five minutes of faults at 100 requests per virtual second: long enough for every
/// fault to open and close and for hold-downs and ramps to complete, light enough for
/// a debug build.
const CI_PROFILE: SeedProfile = SeedProfile {
    fault_phase: Duration::from_secs(300),
    requests_per_sec: 100,
};

#[test]
fn ci_seed_range_passes_safety_and_liveness() {
    let mut failures = Vec::new();
    let mut requests = 0;
    for seed in CI_SEEDS {
        let report = run_seed(seed, CI_PROFILE, LogLevel::Transitions);
        requests += report.stats.requests;
        if !report.passed() {
            failures.push(report);
        }
    }
    assert!(
        requests > CI_SEED_COUNT * 30_000,
        "traffic actually flowed: {requests}"
    );
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|r| r.seed).collect();
        panic!(
            "{} of {} seeds failed: {seeds:?}\nfirst failure:\n{}",
            failures.len(),
            CI_SEED_COUNT,
            first.failure_text()
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run_seed(7, CI_PROFILE, LogLevel::Transitions);
    let b = run_seed(7, CI_PROFILE, LogLevel::Transitions);
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.log, b.log);
    assert_eq!(a.steps, b.steps);
    let c = run_seed(8, CI_PROFILE, LogLevel::Transitions);
    assert_ne!(a.stats, c.stats, "different seeds differ");
}
