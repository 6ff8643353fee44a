//! The fault catalogue and the swarm draw.
//!
//! A [`Fault`] is a window of virtual time during which part of the world misbehaves in
//! one specific way. Most faults are *conditions* the world consults when it draws an
//! attempt or probe outcome (a target refuses connections, a region drops packets);
//! operator commands, DNS failures and config reloads also produce events for the
//! controller at the window's edges.
//!
//! Swarm testing (Groce et al., "Swarm Testing", ISSTA 2012): rather than every seed
//! enabling every fault at a low rate, each seed enables a random *subset* of fault kinds
//! with random intensities. Runs then reach deep into the interaction of a few faults
//! (a drain during a blackout during a reload) instead of averaging them all out.

use sluice_core::{Duration, Instant};

use crate::rng::Rng;

/// One kind of misbehaviour. Indices refer to `World::targets` / `World::regions`.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The target's addresses fail every attempt and probe: refused at once
    /// (`refused = true`) or silently dropped until the timeout.
    TargetDown { target: u32, refused: bool },
    /// Every response from the target takes `extra_ms` longer.
    TargetSlow { target: u32, extra_ms: u64 },
    /// Gray failure: real traffic gets a 500 with this probability (parts per million)
    /// while active probes keep answering 200.
    GrayFailure { target: u32, error_ppm: u32 },
    /// Every address in the region drops packets: attempts and probes time out.
    RegionBlackout { region: u32 },
    /// Probes to the region fail (503) while real traffic succeeds: a health-check path
    /// partition or a broken `/health` endpoint.
    ProbesFail { region: u32 },
    /// The region alternates `down_ms` of blackout and `up_ms` of service, starting down.
    FlappingRegion {
        region: u32,
        up_ms: u64,
        down_ms: u64,
    },
    /// DNS answers for the (hostname) target fail.
    DnsFailure { target: u32 },
    /// An operator drains the target at the start and undrains it at the end.
    OperatorDrain { target: u32 },
    /// An operator marks the target unhealthy at the start and healthy at the end
    /// (Kong's `PUT .../unhealthy` then `.../healthy`).
    OperatorSetUnhealthy { target: u32 },
    /// A new, compatible configuration is applied at the start (weights changed, the
    /// spare target added) and the original one restored at the end.
    ConfigReload,
}

impl FaultKind {
    /// Short stable name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::TargetDown { .. } => "target_down",
            FaultKind::TargetSlow { .. } => "target_slow",
            FaultKind::GrayFailure { .. } => "gray_failure",
            FaultKind::RegionBlackout { .. } => "region_blackout",
            FaultKind::ProbesFail { .. } => "probes_fail",
            FaultKind::FlappingRegion { .. } => "flapping_region",
            FaultKind::DnsFailure { .. } => "dns_failure",
            FaultKind::OperatorDrain { .. } => "operator_drain",
            FaultKind::OperatorSetUnhealthy { .. } => "operator_unhealthy",
            FaultKind::ConfigReload => "config_reload",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::TargetDown { target, refused } => {
                let how = if *refused { "refused" } else { "blackhole" };
                write!(f, "target_down t{target} {how}")
            }
            FaultKind::TargetSlow { target, extra_ms } => {
                write!(f, "target_slow t{target} +{extra_ms}ms")
            }
            FaultKind::GrayFailure { target, error_ppm } => {
                write!(
                    f,
                    "gray_failure t{target} {:.1}%",
                    *error_ppm as f64 / 10_000.0
                )
            }
            FaultKind::RegionBlackout { region } => write!(f, "region_blackout r{region}"),
            FaultKind::ProbesFail { region } => write!(f, "probes_fail r{region}"),
            FaultKind::FlappingRegion {
                region,
                up_ms,
                down_ms,
            } => write!(f, "flapping_region r{region} up {up_ms}ms down {down_ms}ms"),
            FaultKind::DnsFailure { target } => write!(f, "dns_failure t{target}"),
            FaultKind::OperatorDrain { target } => write!(f, "operator_drain t{target}"),
            FaultKind::OperatorSetUnhealthy { target } => {
                write!(f, "operator_unhealthy t{target}")
            }
            FaultKind::ConfigReload => f.write_str("config_reload"),
        }
    }
}

/// A fault active during `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub start: Instant,
    pub end: Instant,
}

impl Fault {
    pub fn new(kind: FaultKind, start: Instant, end: Instant) -> Fault {
        Fault { kind, start, end }
    }

    pub fn active_at(&self, now: Instant) -> bool {
        self.start <= now && now < self.end
    }

    /// For flapping faults, whether `now` falls in a down period; other faults are
    /// "down" for their whole window.
    pub fn down_at(&self, now: Instant) -> bool {
        if !self.active_at(now) {
            return false;
        }
        match self.kind {
            FaultKind::FlappingRegion { up_ms, down_ms, .. } => {
                let period = up_ms.saturating_add(down_ms).max(1);
                let phase = now.as_millis().saturating_sub(self.start.as_millis()) % period;
                phase < down_ms
            }
            _ => true,
        }
    }
}

/// What the swarm draw may choose from: the shape of the world and the fault phase.
#[derive(Clone, Debug)]
pub struct SwarmBounds {
    pub targets: u32,
    pub regions: u32,
    /// Targets with a hostname (DNS failures only make sense for these).
    pub hostname_targets: Vec<u32>,
    /// Faults start and end inside `[0, fault_phase)`.
    pub fault_phase: Duration,
}

/// Each kind is enabled for a seed with this probability: about half the catalogue per
/// seed, so both lone faults and pile-ups are common across a seed range.
const SWARM_ENABLE_PROBABILITY: f64 = 0.45;

/// Upper bound of instances of one enabled kind per seed: enough to overlap two
/// instances of the same fault (two targets down at once), few enough that the world is
/// not simply "everything broken all the time", which panic mode makes uninteresting.
const SWARM_MAX_INSTANCES_PER_KIND: u64 = 3;

/// Draws the faults of one seed.
pub fn draw_swarm(rng: &mut Rng, bounds: &SwarmBounds) -> Vec<Fault> {
    let mut faults = Vec::new();
    let phase_ms = bounds.fault_phase.as_millis().min(u128::from(u64::MAX)) as u64;
    if phase_ms < 1_000 || bounds.targets == 0 || bounds.regions == 0 {
        return faults;
    }
    for kind_index in 0..10u32 {
        if !rng.chance(SWARM_ENABLE_PROBABILITY) {
            continue;
        }
        let instances = rng.between(1, SWARM_MAX_INSTANCES_PER_KIND);
        for _ in 0..instances {
            let Some(kind) = draw_kind(rng, kind_index, bounds) else {
                continue;
            };
            // Windows from a second to the whole phase; short ones test detection, long
            // ones test failover steady state and failback.
            let start = rng.below(phase_ms - 1_000);
            let length = rng.between(1_000, phase_ms - start);
            faults.push(Fault::new(
                kind,
                Instant::from_millis(start),
                Instant::from_millis(start + length),
            ));
        }
    }
    faults
}

fn draw_kind(rng: &mut Rng, kind_index: u32, bounds: &SwarmBounds) -> Option<FaultKind> {
    let target = rng.below(u64::from(bounds.targets)) as u32;
    let region = rng.below(u64::from(bounds.regions)) as u32;
    Some(match kind_index {
        0 => FaultKind::TargetDown {
            target,
            refused: rng.chance(0.5),
        },
        // 20 ms to 3 s: from "a bit slower" to "slower than the attempt timeout".
        1 => FaultKind::TargetSlow {
            target,
            extra_ms: rng.between(20, 3_000),
        },
        // 1% to 100%: the intensity decides whether passive checks, outlier ejection
        // or neither notices.
        2 => FaultKind::GrayFailure {
            target,
            error_ppm: rng.between(10_000, 1_000_000) as u32,
        },
        3 => FaultKind::RegionBlackout { region },
        4 => FaultKind::ProbesFail { region },
        5 => FaultKind::FlappingRegion {
            region,
            up_ms: rng.between(2_000, 60_000),
            down_ms: rng.between(2_000, 60_000),
        },
        6 => FaultKind::DnsFailure {
            target: *rng.choose(&bounds.hostname_targets)?,
        },
        7 => FaultKind::OperatorDrain { target },
        8 => FaultKind::OperatorSetUnhealthy { target },
        _ => FaultKind::ConfigReload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    fn bounds() -> SwarmBounds {
        SwarmBounds {
            targets: 6,
            regions: 2,
            hostname_targets: vec![5],
            fault_phase: Duration::from_secs(300),
        }
    }

    #[test]
    fn swarm_draws_stay_inside_the_phase_and_the_world() {
        let mut kinds_seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut rng = Rng::new(seed, Stream::Faults);
            for fault in draw_swarm(&mut rng, &bounds()) {
                assert!(fault.start < fault.end, "{fault:?}");
                assert!(fault.end <= Instant::from_millis(300_000), "{fault:?}");
                kinds_seen.insert(fault.kind.name());
                match fault.kind {
                    FaultKind::DnsFailure { target } => assert_eq!(target, 5),
                    FaultKind::TargetDown { target, .. } => assert!(target < 6),
                    FaultKind::RegionBlackout { region } => assert!(region < 2),
                    _ => {}
                }
            }
        }
        assert_eq!(
            kinds_seen.len(),
            10,
            "every kind appears in 200 seeds: {kinds_seen:?}"
        );
    }

    #[test]
    fn swarm_varies_the_enabled_subset_between_seeds() {
        let subsets: std::collections::BTreeSet<Vec<&str>> = (0..50)
            .map(|seed| {
                let mut rng = Rng::new(seed, Stream::Faults);
                let mut names: Vec<&str> = draw_swarm(&mut rng, &bounds())
                    .iter()
                    .map(|f| f.kind.name())
                    .collect();
                names.sort_unstable();
                names.dedup();
                names
            })
            .collect();
        assert!(
            subsets.len() > 20,
            "only {} distinct subsets",
            subsets.len()
        );
    }

    #[test]
    fn flapping_alternates_starting_down() {
        let fault = Fault::new(
            FaultKind::FlappingRegion {
                region: 0,
                up_ms: 20_000,
                down_ms: 10_000,
            },
            Instant::from_millis(1_000),
            Instant::from_millis(100_000),
        );
        assert!(!fault.down_at(Instant::from_millis(999)));
        assert!(fault.down_at(Instant::from_millis(1_000)));
        assert!(fault.down_at(Instant::from_millis(10_999)));
        assert!(!fault.down_at(Instant::from_millis(11_000)));
        assert!(fault.down_at(Instant::from_millis(31_000)));
        assert!(
            !fault.down_at(Instant::from_millis(100_000)),
            "over after the window"
        );
    }
}
