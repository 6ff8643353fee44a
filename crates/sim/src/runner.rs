//! Running whole seeds: the two phases, the verdict, and the failure report with the
//! command that reproduces it.

use sluice_core::{Duration, Instant};

use crate::check::Violation;
use crate::log::LogLevel;
use crate::sim::{LivenessFailure, Sim, SimConfig, Stats};

/// How swarm seeds are run: the fault phase length and the traffic rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedProfile {
    pub fault_phase: Duration,
    pub requests_per_sec: u32,
}

impl SeedProfile {
    /// The long-run profile of the command line: ten minutes of faults at 500 requests
    /// per second of virtual time, then the liveness phase.
    pub const LONG: SeedProfile = SeedProfile {
        fault_phase: Duration::from_secs(600),
        requests_per_sec: 500,
    };
}

/// The outcome of one run.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub liveness: Result<(), LivenessFailure>,
    pub stats: Stats,
    pub steps: u64,
    pub virtual_end: Instant,
    /// One line per fault, for the report.
    pub faults: Vec<String>,
    pub buggified: Vec<&'static str>,
    /// The rendered transition log (kept lines only).
    pub log: String,
    /// The profile the seed ran with, for the reproduction command.
    pub profile: Option<SeedProfile>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.liveness.is_ok()
    }

    /// The exact command that reruns this seed with the full log.
    pub fn reproduce_command(&self) -> String {
        let mut command = format!("cargo run -p sluice-sim --release -- --seed {}", self.seed);
        if let Some(profile) = self.profile
            && profile != SeedProfile::LONG
        {
            command.push_str(&format!(
                " --fault-phase-secs {} --rps {}",
                profile.fault_phase.as_secs(),
                profile.requests_per_sec
            ));
        }
        command.push_str(" --log full");
        command
    }

    /// One summary line.
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} | {} requests, {} client errors ({:.4}%), {} retries, {} probes, {} steps, \
             {} s virtual | buggify [{}] | faults [{}]",
            self.seed,
            if self.passed() { "ok" } else { "FAILED" },
            self.stats.requests,
            self.stats.client_errors,
            self.stats.error_ratio() * 100.0,
            self.stats.retries,
            self.stats.probes,
            self.steps,
            self.virtual_end.as_millis() / 1_000,
            self.buggified.join(", "),
            self.faults.join("; "),
        )
    }

    /// The failure report: seed, reproduction command, what broke, the transition log.
    pub fn failure_text(&self) -> String {
        let mut text = format!("SIMULATION FAILED: seed {}\n", self.seed);
        text.push_str(&format!("reproduce: {}\n", self.reproduce_command()));
        text.push_str(&format!("{}\n", self.summary()));
        for violation in &self.violations {
            text.push_str(&format!("safety violation {violation}\n"));
        }
        if let Err(failure) = &self.liveness {
            text.push_str(&format!(
                "no liveness: not converged by {} ms: {}\n",
                failure.deadline.as_millis(),
                failure.detail
            ));
        }
        text.push_str("transition log:\n");
        text.push_str(&self.log);
        text
    }
}

/// Runs a configured simulation through both phases.
pub fn run(config: SimConfig) -> RunReport {
    let seed = config.seed;
    let faults = config
        .faults
        .iter()
        .map(|f| {
            format!(
                "{} @{}..{}s",
                f.kind,
                f.start.as_millis() / 1_000,
                f.end.as_millis() / 1_000
            )
        })
        .collect();
    let buggified = config.settings.buggified.clone();
    let check_liveness = config.check_liveness;
    let fault_phase_end = Instant::ZERO + config.fault_phase;
    let mut sim = Sim::new(config);
    sim.run_until(fault_phase_end);
    let liveness = if check_liveness {
        sim.check_liveness()
    } else {
        Ok(())
    };
    RunReport {
        seed,
        violations: sim.violations().to_vec(),
        liveness,
        stats: sim.stats().clone(),
        steps: sim.steps(),
        virtual_end: sim.now(),
        faults,
        buggified,
        log: sim.log().render(),
        profile: None,
    }
}

/// Runs one swarm seed with the given profile.
pub fn run_seed(seed: u64, profile: SeedProfile, log_level: LogLevel) -> RunReport {
    let mut config = SimConfig::swarm(seed, profile.fault_phase, profile.requests_per_sec);
    config.log_level = log_level;
    let mut report = run(config);
    report.profile = Some(profile);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Fault, FaultKind};
    use crate::world::Layout;

    /// Goal: a run that cannot converge fails its liveness phase and the report says
    /// how to reproduce it. Method: Kong's trap, `healthy.successes = 0` for active and
    /// passive checks, so an address once unhealthy never recovers on its own.
    #[test]
    fn a_config_that_cannot_recover_fails_liveness_with_a_reproducible_report() {
        let down = Fault::new(
            FaultKind::TargetDown {
                target: 0,
                refused: true,
            },
            Instant::from_millis(10_000),
            Instant::from_millis(20_000),
        );
        let mut config = SimConfig::scripted(
            17,
            Layout::two_regions(3),
            vec![down],
            Duration::from_secs(20),
        );
        config.requests_per_sec = 50;
        config.settings.healthchecks.active.healthy_successes = 0;
        config.settings.healthchecks.passive.healthy_successes = 0;
        let report = run(config);
        assert!(!report.passed());
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        let failure = report.liveness.as_ref().expect_err("no liveness");
        assert!(
            failure.detail.contains("10.1.0.1:8000"),
            "{}",
            failure.detail
        );
        let text = report.failure_text();
        assert!(text.contains("SIMULATION FAILED: seed 17"), "{text}");
        assert!(
            text.contains("reproduce: cargo run -p sluice-sim --release -- --seed 17 --log full"),
            "{text}"
        );
        assert!(text.contains("no liveness"), "{text}");
        assert!(text.contains("TIME_MS  SOURCE"), "{text}");
    }

    #[test]
    fn seed_reports_carry_their_profile_in_the_command() {
        let profile = SeedProfile {
            fault_phase: Duration::from_secs(30),
            requests_per_sec: 20,
        };
        let report = run_seed(5, profile, LogLevel::Transitions);
        assert_eq!(
            report.reproduce_command(),
            "cargo run -p sluice-sim --release -- --seed 5 --fault-phase-secs 30 --rps 20 --log full"
        );
        assert!(report.stats.requests > 0);
    }
}
