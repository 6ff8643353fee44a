//! The simulated world: regions, targets and their addresses, and how they answer.
//!
//! The world is the oracle the controller never sees directly. Attempts, probes and DNS
//! queries are answered from each address's *condition* at that virtual instant, which
//! the active faults decide. Outcomes and latencies are drawn from the run's `World`
//! random stream, so a seed fixes every answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use sluice_core::Instant;
use sluice_core::event::{AttemptOutcome, ProbeOutcome, ResolvedAddress};
use sluice_core::retry::FailureKind;
use sluice_core::topology::{ActiveHealthCheck, ProbeType, TargetSpec};

use crate::faults::{Fault, FaultKind};
use crate::rng::Rng;

/// Port every simulated backend listens on (Kong's default target port).
pub const TARGET_PORT: u16 = 8000;

/// Weight every target is configured with (Kong's default target weight).
pub const DEFAULT_WEIGHT: u32 = 100;

/// One region: a name, the priority tier it serves in, and its round-trip time from the
/// gateway (a remote region costs tens of milliseconds more than the home region).
#[derive(Clone, Debug)]
pub struct Region {
    pub name: Arc<str>,
    pub tier: u8,
    pub rtt_ms: u64,
}

/// One configured target and the addresses it resolves to.
#[derive(Clone, Debug)]
pub struct SimTarget {
    /// IP text or hostname, as written in the config.
    pub host: String,
    pub weight: u32,
    pub region: u32,
    /// The addresses behind the target (one for an IP target).
    pub addresses: Vec<SocketAddr>,
    /// True when `host` is a name the controller must resolve.
    pub hostname: bool,
    /// Median service time of a healthy backend, excluding network round trip.
    pub service_ms: u64,
    /// A spare is in the world but only in the configuration while a reload is active.
    pub spare: bool,
}

/// Shape of a world to build.
#[derive(Clone, Debug)]
pub struct Layout {
    pub regions: Vec<RegionLayout>,
    /// Add one spare IP target to the last region, configured only during reloads.
    pub spare_target: bool,
}

/// One region of a [`Layout`].
#[derive(Clone, Debug)]
pub struct RegionLayout {
    pub name: String,
    pub tier: u8,
    pub rtt_ms: u64,
    /// IP-literal targets.
    pub ip_targets: u32,
    /// Hostname targets, each resolving to two addresses.
    pub hostname_targets: u32,
}

impl Layout {
    /// Two regions, three IP targets each, primary in tier 0: the common
    /// "home region plus standby region" deployment.
    pub fn two_regions(targets_per_region: u32) -> Layout {
        Layout {
            regions: vec![
                RegionLayout {
                    name: "eu-west".into(),
                    tier: 0,
                    rtt_ms: 2,
                    ip_targets: targets_per_region,
                    hostname_targets: 0,
                },
                RegionLayout {
                    name: "eu-central".into(),
                    tier: 1,
                    rtt_ms: 25,
                    ip_targets: targets_per_region,
                    hostname_targets: 0,
                },
            ],
            spare_target: false,
        }
    }
}

/// What an address is suffering at one instant (the fold of all active faults).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Condition {
    /// Connections are refused.
    pub refused: bool,
    /// Packets are dropped: everything times out.
    pub blackhole: bool,
    pub extra_latency_ms: u64,
    /// Share of real traffic answered with 500, in parts per million.
    pub traffic_error_ppm: u32,
    /// Probes get 503 even though traffic is fine.
    pub probes_fail: bool,
}

/// One attempt's answer: what the controller is told, what the data plane saw (for the
/// retry decision: a connect timeout sent nothing, a read timeout may have), and when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttemptResult {
    pub outcome: AttemptOutcome,
    pub failure: FailureKind,
    pub latency_ms: u64,
}

/// The simulated world.
#[derive(Clone, Debug)]
pub struct World {
    pub regions: Vec<Region>,
    pub targets: Vec<SimTarget>,
    pub faults: Vec<Fault>,
    /// Per-try timeout of the simulated client, the latency a blackholed attempt costs.
    pub attempt_timeout_ms: u64,
}

/// Per-try timeout of the simulated gateway: long enough that healthy and slightly slow
/// backends answer, short enough that a blackhole costs a retry a second, not a minute.
pub const ATTEMPT_TIMEOUT_MS: u64 = 1_000;

impl World {
    pub fn new(layout: &Layout) -> World {
        let mut regions = Vec::new();
        let mut targets = Vec::new();
        for (region_index, region) in layout.regions.iter().enumerate() {
            let octet = u8::try_from(region_index + 1).unwrap_or(u8::MAX);
            regions.push(Region {
                name: region.name.as_str().into(),
                tier: region.tier,
                rtt_ms: region.rtt_ms,
            });
            for n in 0..region.ip_targets {
                let host_octet = u8::try_from(n + 1).unwrap_or(u8::MAX);
                let ip = IpAddr::V4(Ipv4Addr::new(10, octet, 0, host_octet));
                targets.push(SimTarget {
                    host: ip.to_string(),
                    weight: DEFAULT_WEIGHT,
                    region: region_index as u32,
                    addresses: vec![SocketAddr::new(ip, TARGET_PORT)],
                    hostname: false,
                    service_ms: 8,
                    spare: false,
                });
            }
            for n in 0..region.hostname_targets {
                let first = u8::try_from(n * 2 + 1).unwrap_or(u8::MAX);
                let second = first.saturating_add(1);
                targets.push(SimTarget {
                    host: format!("api-{n}.{}.svc.sim", region.name),
                    weight: DEFAULT_WEIGHT,
                    region: region_index as u32,
                    addresses: vec![
                        SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(10, octet, 1, first)),
                            TARGET_PORT,
                        ),
                        SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(10, octet, 1, second)),
                            TARGET_PORT,
                        ),
                    ],
                    hostname: true,
                    service_ms: 8,
                    spare: false,
                });
            }
        }
        if layout.spare_target && !regions.is_empty() {
            let region_index = regions.len() - 1;
            let octet = u8::try_from(region_index + 1).unwrap_or(u8::MAX);
            let ip = IpAddr::V4(Ipv4Addr::new(10, octet, 2, 1));
            targets.push(SimTarget {
                host: ip.to_string(),
                weight: DEFAULT_WEIGHT,
                region: region_index as u32,
                addresses: vec![SocketAddr::new(ip, TARGET_PORT)],
                hostname: false,
                service_ms: 8,
                spare: true,
            });
        }
        World {
            regions,
            targets,
            faults: Vec::new(),
            attempt_timeout_ms: ATTEMPT_TIMEOUT_MS,
        }
    }

    /// Indices of hostname targets (DNS faults apply only to them).
    pub fn hostname_targets(&self) -> Vec<u32> {
        (0..self.targets.len() as u32)
            .filter(|&i| self.targets.get(i as usize).is_some_and(|t| t.hostname))
            .collect()
    }

    /// Whether a config reload fault is active (the reloaded topology is in force).
    pub fn reload_active(&self, now: Instant) -> bool {
        self.faults
            .iter()
            .any(|f| f.kind == FaultKind::ConfigReload && f.active_at(now))
    }

    /// The configured targets: the base topology, or the reloaded variant (every
    /// region's first target at half weight, the spare added). Spares are last, so the
    /// target indices of the other targets are the same in both variants.
    pub fn target_specs(&self, reloaded: bool) -> Vec<TargetSpec> {
        let mut specs = Vec::new();
        let mut first_of_region_seen = vec![false; self.regions.len()];
        for (index, target) in self.targets.iter().enumerate() {
            if target.spare && !reloaded {
                continue;
            }
            let region = self.regions.get(target.region as usize);
            let first = first_of_region_seen
                .get_mut(target.region as usize)
                .map(|seen| !std::mem::replace(seen, true))
                .unwrap_or(false);
            let weight = if reloaded && first {
                (target.weight / 2).max(1)
            } else {
                target.weight
            };
            let region_name: Arc<str> = region.map_or_else(|| "default".into(), |r| r.name.clone());
            let tier = region.map_or(0, |r| r.tier);
            specs.push(TargetSpec {
                id: format!("00000000-0000-4000-8000-{index:012}"),
                target: format!("{}:{TARGET_PORT}", target.host),
                host: target.host.clone(),
                port: TARGET_PORT,
                weight,
                tags: vec![format!("region:{region_name}"), format!("tier:{tier}")],
                region: region_name,
                tier,
            });
        }
        specs
    }

    /// World index of the target that owns `addr`.
    pub fn target_of(&self, addr: SocketAddr) -> Option<u32> {
        self.targets
            .iter()
            .position(|t| t.addresses.contains(&addr))
            .map(|i| i as u32)
    }

    /// The fold of every fault active at `now` on the target's addresses.
    pub fn condition(&self, target: u32, now: Instant) -> Condition {
        let mut condition = Condition::default();
        let Some(sim_target) = self.targets.get(target as usize) else {
            return condition;
        };
        for fault in self.faults.iter().filter(|f| f.down_at(now)) {
            match fault.kind {
                FaultKind::TargetDown { target: t, refused } if t == target => {
                    if refused {
                        condition.refused = true;
                    } else {
                        condition.blackhole = true;
                    }
                }
                FaultKind::TargetSlow {
                    target: t,
                    extra_ms,
                } if t == target => {
                    condition.extra_latency_ms = condition.extra_latency_ms.max(extra_ms);
                }
                FaultKind::GrayFailure {
                    target: t,
                    error_ppm,
                } if t == target => {
                    condition.traffic_error_ppm = condition.traffic_error_ppm.max(error_ppm);
                }
                FaultKind::RegionBlackout { region } | FaultKind::FlappingRegion { region, .. }
                    if region == sim_target.region =>
                {
                    condition.blackhole = true;
                }
                FaultKind::ProbesFail { region } if region == sim_target.region => {
                    condition.probes_fail = true;
                }
                _ => {}
            }
        }
        condition
    }

    /// Network round trip plus service time, with an exponential tail (a quarter of the
    /// median on average) so that latency-aware balancing has noise to see through.
    fn draw_latency_ms(&self, rng: &mut Rng, target: u32, extra_ms: u64) -> u64 {
        let Some(sim_target) = self.targets.get(target as usize) else {
            return 1;
        };
        let rtt = self
            .regions
            .get(sim_target.region as usize)
            .map_or(0, |r| r.rtt_ms);
        let median = rtt + sim_target.service_ms;
        let tail = rng.exponential(median as f64 / 4.0) as u64;
        (median + tail + extra_ms).max(1)
    }

    /// What one proxied attempt to `addr` gets, and how long it takes.
    pub fn attempt(&self, rng: &mut Rng, addr: SocketAddr, now: Instant) -> AttemptResult {
        let result = |outcome, failure, latency_ms| AttemptResult {
            outcome,
            failure,
            latency_ms,
        };
        let Some(target) = self.target_of(addr) else {
            return result(AttemptOutcome::TcpFailure, FailureKind::ConnectError, 1);
        };
        let condition = self.condition(target, now);
        if condition.blackhole {
            // Dropped SYNs: the connect itself times out, nothing was sent.
            return result(
                AttemptOutcome::Timeout,
                FailureKind::ConnectTimeout,
                self.attempt_timeout_ms,
            );
        }
        if condition.refused {
            // A refusal costs one round trip.
            let rtt = self
                .draw_latency_ms(rng, target, 0)
                .min(self.attempt_timeout_ms);
            return result(AttemptOutcome::TcpFailure, FailureKind::ConnectRefused, rtt);
        }
        let latency = self.draw_latency_ms(rng, target, condition.extra_latency_ms);
        if latency >= self.attempt_timeout_ms {
            // Connected and sent, but no response header in time.
            return result(
                AttemptOutcome::Timeout,
                FailureKind::ReadTimeout,
                self.attempt_timeout_ms,
            );
        }
        if condition.traffic_error_ppm > 0
            && rng.below(1_000_000) < u64::from(condition.traffic_error_ppm)
        {
            return result(
                AttemptOutcome::Status(500),
                FailureKind::Status(500),
                latency,
            );
        }
        result(
            AttemptOutcome::Status(200),
            FailureKind::Status(200),
            latency,
        )
    }

    /// What one active probe of `addr` gets, and how long it takes. Probes see
    /// blackholes, refusals and slowness like traffic does, ignore gray failure (the
    /// health endpoint is fine), and fail on their own under `ProbesFail`.
    pub fn probe(
        &self,
        rng: &mut Rng,
        addr: SocketAddr,
        check: &ActiveHealthCheck,
        now: Instant,
    ) -> (ProbeOutcome, u64) {
        let timeout_ms = (check.timeout.as_millis().min(u128::from(u64::MAX)) as u64).max(1);
        let Some(target) = self.target_of(addr) else {
            return (ProbeOutcome::TcpFailure, 1);
        };
        let condition = self.condition(target, now);
        if condition.blackhole {
            return (ProbeOutcome::Timeout, timeout_ms);
        }
        if condition.refused {
            return (ProbeOutcome::TcpFailure, 1);
        }
        let latency = self.draw_latency_ms(rng, target, condition.extra_latency_ms);
        if latency >= timeout_ms {
            return (ProbeOutcome::Timeout, timeout_ms);
        }
        let outcome = match check.probe_type {
            ProbeType::Tcp => ProbeOutcome::TcpSuccess,
            _ if condition.probes_fail => ProbeOutcome::Status(503),
            _ => ProbeOutcome::Status(200),
        };
        (outcome, latency)
    }

    /// The DNS answer for a configured target at `now`.
    pub fn resolve(&self, target: u32, now: Instant) -> Result<Vec<ResolvedAddress>, String> {
        let Some(sim_target) = self.targets.get(target as usize) else {
            return Err("name resolution failed: unknown target".into());
        };
        let failing = self
            .faults
            .iter()
            .any(|f| f.active_at(now) && f.kind == FaultKind::DnsFailure { target });
        if failing {
            return Err(format!(
                "dns server error: 2 server failure ({})",
                sim_target.host
            ));
        }
        Ok(sim_target
            .addresses
            .iter()
            .map(|&addr| ResolvedAddress { addr, weight: None })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::topology::HealthChecks;

    fn world_with(faults: Vec<Fault>) -> World {
        let mut layout = Layout::two_regions(2);
        layout.regions[0].hostname_targets = 1;
        layout.spare_target = true;
        let mut world = World::new(&layout);
        world.faults = faults;
        world
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn layout_builds_addresses_and_spec_variants() {
        let world = world_with(Vec::new());
        // 2 IP + 1 hostname in region 0, 2 IP in region 1, 1 spare.
        assert_eq!(world.targets.len(), 6);
        assert_eq!(world.hostname_targets(), vec![2]);
        let base = world.target_specs(false);
        let reloaded = world.target_specs(true);
        assert_eq!(base.len(), 5, "spare only in the reloaded variant");
        assert_eq!(reloaded.len(), 6);
        assert_eq!(base[0].weight, 100);
        assert_eq!(
            reloaded[0].weight, 50,
            "first target of a region at half weight"
        );
        assert_eq!(reloaded[3].weight, 50);
        assert_eq!(base[1].weight, reloaded[1].weight);
        assert_eq!(base[3].tier, 1);
        assert_eq!(&*base[3].region, "eu-central");
        assert_eq!(base[0].ip(), Some("10.1.0.1".parse().unwrap()));
        for (a, b) in base.iter().zip(&reloaded) {
            assert_eq!(a.target, b.target, "indices of kept targets do not move");
        }
    }

    #[test]
    fn outcomes_follow_conditions() {
        let world = world_with(vec![
            Fault::new(FaultKind::RegionBlackout { region: 1 }, at(0), at(10_000)),
            Fault::new(
                FaultKind::GrayFailure {
                    target: 0,
                    error_ppm: 1_000_000,
                },
                at(0),
                at(10_000),
            ),
            Fault::new(FaultKind::ProbesFail { region: 0 }, at(0), at(10_000)),
        ]);
        let mut rng = Rng::from_u64(1);
        let check = HealthChecks::default().active;
        let gray = world.targets[0].addresses[0];
        let healthy = world.targets[1].addresses[0];
        let dark = world.targets[3].addresses[0];
        assert_eq!(
            world.attempt(&mut rng, gray, at(5)).outcome,
            AttemptOutcome::Status(500)
        );
        assert_eq!(
            world.attempt(&mut rng, healthy, at(5)).outcome,
            AttemptOutcome::Status(200)
        );
        let dark_attempt = world.attempt(&mut rng, dark, at(5));
        assert_eq!(dark_attempt.outcome, AttemptOutcome::Timeout);
        assert_eq!(dark_attempt.failure, FailureKind::ConnectTimeout);
        assert_eq!(dark_attempt.latency_ms, ATTEMPT_TIMEOUT_MS);
        assert_eq!(
            world.probe(&mut rng, healthy, &check, at(5)).0,
            ProbeOutcome::Status(503),
            "probes fail while traffic succeeds"
        );
        assert_eq!(
            world.probe(&mut rng, dark, &check, at(5)).0,
            ProbeOutcome::Timeout
        );
        // After the window everything is healthy again.
        assert_eq!(
            world.attempt(&mut rng, gray, at(10_000)).outcome,
            AttemptOutcome::Status(200)
        );
        assert_eq!(
            world.probe(&mut rng, dark, &check, at(10_000)).0,
            ProbeOutcome::Status(200)
        );
    }

    #[test]
    fn slow_target_times_out_past_the_attempt_timeout_and_dns_fails_in_window() {
        let world = world_with(vec![
            Fault::new(
                FaultKind::TargetSlow {
                    target: 1,
                    extra_ms: 5_000,
                },
                at(0),
                at(1_000),
            ),
            Fault::new(FaultKind::DnsFailure { target: 2 }, at(0), at(1_000)),
        ]);
        let mut rng = Rng::from_u64(2);
        let slow = world.targets[1].addresses[0];
        let slow_attempt = world.attempt(&mut rng, slow, at(1));
        assert_eq!(slow_attempt.outcome, AttemptOutcome::Timeout);
        assert_eq!(
            slow_attempt.failure,
            FailureKind::ReadTimeout,
            "the request was sent"
        );
        assert!(world.resolve(2, at(1)).is_err());
        let answer = world.resolve(2, at(1_000)).unwrap();
        assert_eq!(answer.len(), 2);
        assert_eq!(world.target_of(answer[1].addr), Some(2));
    }
}
