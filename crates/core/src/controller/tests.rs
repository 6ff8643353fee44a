//! Timeline tests: scripted events on the virtual clock, checked against the expected
//! transition log (health flips and decision records), rust-analyzer style.
//!
//! Script lines (times are virtual seconds, fractions allowed):
//! - `at T down|up|gray ADDR` — the world: probes to ADDR fail (`down`), succeed (`up`,
//!   the default), or succeed while real traffic fails (`gray`; traffic is scripted).
//! - `at T attempts ADDR STATUS|tcp|timeout xN` — N proxied attempts with that outcome.
//! - `at T probe ADDR STATUS|tcp|timeout|tcp-ok` — one probe result, outside the schedule.
//! - `at T set-health TARGET [ADDR] healthy|unhealthy`, `at T drain|undrain TARGET`.
//! - `at T resolve TARGET_INDEX ADDR,ADDR… [ttl S]` / `at T resolve-error TARGET_INDEX`.
//! - `at T reload NAME` — replace the topology with the named variant of the test.
//! - `run T` — fire every deadline up to T, answering each probe from the world at once.
//!
//! The log has one line per health flip (`T health ADDR healthy|unhealthy`), per
//! decision (`T KIND before -> after [mode]`, shares in percent per tier), and per
//! resolve request (`T resolve HOST`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::event::{AttemptOutcome, ProbeOutcome, ResolvedAddress};
use crate::topology::{FailoverPolicy, HashOn, HealthChecks, TargetSpec, UpstreamSpec};

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum World {
    Up,
    Down,
    Gray,
}

fn secs(text: &str) -> Instant {
    let value: f64 = text
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("bad time {text:?}"));
    Instant::from_millis((value * 1000.0).round() as u64)
}

fn fmt_time(t: Instant) -> String {
    let ms = t.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

fn fmt_shares(shares: &[crate::decision::TierShare]) -> String {
    shares
        .iter()
        .map(|s| {
            let pct = f64::from(s.share_ppm) / 10_000.0;
            if pct.fract() == 0.0 {
                format!("{pct:.0}")
            } else {
                format!("{pct:.1}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn key(addr: &str, hostname: Option<&str>) -> AddressKey {
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| panic!("bad address {addr}"));
    AddressKey {
        addr,
        hostname: Arc::from(hostname.map_or_else(|| addr.ip().to_string(), str::to_string)),
    }
}

fn attempt_outcome(text: &str) -> AttemptOutcome {
    match text {
        "tcp" => AttemptOutcome::TcpFailure,
        "timeout" => AttemptOutcome::Timeout,
        code => AttemptOutcome::Status(
            code.parse()
                .unwrap_or_else(|_| panic!("bad outcome {code}")),
        ),
    }
}

fn probe_outcome(text: &str) -> ProbeOutcome {
    match text {
        "tcp" => ProbeOutcome::TcpFailure,
        "timeout" => ProbeOutcome::Timeout,
        "tcp-ok" => ProbeOutcome::TcpSuccess,
        code => ProbeOutcome::Status(
            code.parse()
                .unwrap_or_else(|_| panic!("bad outcome {code}")),
        ),
    }
}

/// Target spec: `"host:port"`, tier, region, weight.
fn target(spec: &str, tier: u8, region: &str, weight: u32) -> TargetSpec {
    let (host, port) = spec.rsplit_once(':').unwrap_or((spec, "80"));
    TargetSpec {
        id: format!("id-{spec}"),
        target: spec.to_string(),
        host: host.to_string(),
        port: port.parse().unwrap_or(80),
        weight,
        region: Arc::from(region),
        tier,
        tags: Vec::new(),
    }
}

/// Active checks every second, 2 failures or 2 successes flip; passive off.
fn checks() -> HealthChecks {
    let mut hc = HealthChecks::default();
    hc.active.healthy_interval = Duration::from_secs(1);
    hc.active.unhealthy_interval = Duration::from_secs(1);
    hc.active.healthy_successes = 2;
    hc.active.unhealthy_http_failures = 2;
    hc.active.unhealthy_tcp_failures = 2;
    hc.active.unhealthy_timeouts = 2;
    hc
}

/// Default policy without the per-second weight refresh noise, and with Envoy's
/// overprovisioning factor 1.4, which the split numbers in these timelines were written
/// for (the shipped default, 1.5, has its own test below).
fn policy() -> FailoverPolicy {
    FailoverPolicy {
        adaptive_weights: false,
        slow_start: Duration::ZERO,
        overprovisioning: 1.4,
        ..FailoverPolicy::default()
    }
}

fn upstream(targets: Vec<TargetSpec>) -> UpstreamSpec {
    UpstreamSpec {
        id: "up-id".into(),
        name: Arc::from("api"),
        algorithm: Algorithm::RoundRobin,
        hash_on: HashOn::None,
        hash_fallback: HashOn::None,
        slots: 10_000,
        host_header: None,
        healthchecks: checks(),
        failover: policy(),
        targets,
        tags: Vec::new(),
    }
}

/// Two regions, two addresses each: tier 0 = "east", tier 1 = "west".
fn two_regions() -> UpstreamSpec {
    upstream(vec![
        target("10.0.0.1:80", 0, "east", 100),
        target("10.0.0.2:80", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
        target("10.0.1.2:80", 1, "west", 100),
    ])
}

struct Harness {
    controller: Controller,
    world: BTreeMap<SocketAddr, World>,
    now: Instant,
    log: String,
    versions: Vec<u64>,
    variants: BTreeMap<String, UpstreamSpec>,
}

impl Harness {
    fn new(initial: UpstreamSpec, variants: &[(&str, UpstreamSpec)]) -> Self {
        let mut h = Harness {
            controller: Controller::new(),
            world: BTreeMap::new(),
            now: Instant::ZERO,
            log: String::new(),
            versions: Vec::new(),
            variants: variants
                .iter()
                .map(|(n, s)| ((*n).to_string(), s.clone()))
                .collect(),
        };
        let mut out = Vec::new();
        h.controller.apply(
            Instant::ZERO,
            Event::TopologyReplaced {
                upstreams: vec![initial],
            },
            &mut out,
        );
        h.absorb(out);
        h
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    Action::Probe {
                        upstream,
                        address,
                        slot,
                        ..
                    } => {
                        let outcome = match self.world.get(&address.addr) {
                            Some(World::Down) => ProbeOutcome::TcpFailure,
                            _ => ProbeOutcome::Status(200),
                        };
                        self.controller.apply(
                            self.now,
                            Event::ProbeCompleted {
                                upstream,
                                address,
                                slot,
                                outcome,
                            },
                            &mut next,
                        );
                    }
                    Action::HealthChanged {
                        address, healthy, ..
                    } => {
                        let _ = writeln!(
                            self.log,
                            "{} health {} {}",
                            fmt_time(self.now),
                            address.addr,
                            if healthy { "healthy" } else { "unhealthy" }
                        );
                    }
                    Action::Decision(record) => {
                        let mode = record
                            .inputs
                            .iter()
                            .find(|(k, _)| k == "mode")
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        let _ = writeln!(
                            self.log,
                            "{} {} {} -> {} {}",
                            fmt_time(record.at),
                            record.kind.as_str(),
                            fmt_shares(&record.before),
                            fmt_shares(&record.after),
                            mode
                        );
                    }
                    Action::Publish(snapshot) => {
                        assert!(
                            self.versions.last().is_none_or(|v| *v < snapshot.version),
                            "versions strictly increase"
                        );
                        self.versions.push(snapshot.version);
                    }
                    Action::Resolve { host, .. } => {
                        let _ = writeln!(self.log, "{} resolve {host}", fmt_time(self.now));
                    }
                    Action::Remove { upstream } => {
                        let _ = writeln!(self.log, "{} remove {upstream}", fmt_time(self.now));
                    }
                }
            }
            queue = next;
        }
    }

    fn apply(&mut self, event: Event) {
        let mut out = Vec::new();
        self.controller.apply(self.now, event, &mut out);
        self.absorb(out);
    }

    fn run_until(&mut self, until: Instant) {
        // Bounded: every iteration moves time forward or drains a deadline.
        for _ in 0..1_000_000 {
            match self.controller.next_deadline() {
                Some(deadline) if deadline <= until => {
                    self.now = self.now.max(deadline);
                    let mut out = Vec::new();
                    self.controller.tick(self.now, &mut out);
                    self.absorb(out);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn step(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["run", t] => self.run_until(secs(t)),
            ["at", t, rest @ ..] => {
                self.run_until(secs(t));
                self.event(rest);
            }
            _ => panic!("bad script line {line:?}"),
        }
    }

    fn event(&mut self, words: &[&str]) {
        let api: Arc<str> = Arc::from("api");
        match words {
            [state @ ("down" | "up" | "gray"), addr] => {
                let world = match *state {
                    "down" => World::Down,
                    "gray" => World::Gray,
                    _ => World::Up,
                };
                self.world.insert(key(addr, None).addr, world);
            }
            ["attempts", addr, outcome, count] => {
                let n: u32 = count.trim_start_matches('x').parse().unwrap_or(1);
                for _ in 0..n {
                    self.apply(Event::AttemptCompleted {
                        upstream: api.clone(),
                        address: key(addr, None),
                        outcome: attempt_outcome(outcome),
                        latency: Duration::from_millis(5),
                    });
                }
            }
            ["hattempts", addr, host, outcome, count] => {
                let n: u32 = count.trim_start_matches('x').parse().unwrap_or(1);
                for _ in 0..n {
                    self.apply(Event::AttemptCompleted {
                        upstream: api.clone(),
                        address: key(addr, Some(host)),
                        outcome: attempt_outcome(outcome),
                        latency: Duration::from_millis(5),
                    });
                }
            }
            ["probe", addr, outcome] => self.apply(Event::ProbeCompleted {
                upstream: api,
                address: key(addr, None),
                slot: u32::MAX,
                outcome: probe_outcome(outcome),
            }),
            ["set-health", target, state] | ["set-health", target, _, state]
                if matches!(*state, "healthy" | "unhealthy") =>
            {
                let address = match words {
                    [_, _, addr, _] => Some(key(addr, None).addr),
                    _ => None,
                };
                self.apply(Event::Operator {
                    upstream: api,
                    command: OperatorCommand::SetHealth {
                        target: (*target).to_string(),
                        address,
                        healthy: *state == "healthy",
                    },
                    actor: "test".into(),
                });
            }
            [verb @ ("drain" | "undrain"), target] => self.apply(Event::Operator {
                upstream: api,
                command: OperatorCommand::Drain {
                    target: (*target).to_string(),
                    drained: *verb == "drain",
                },
                actor: "test".into(),
            }),
            ["resolve", index, addrs, rest @ ..] => {
                let ttl = match rest {
                    ["ttl", s] => Some(Duration::from_secs(s.parse().unwrap_or(0))),
                    _ => None,
                };
                let answers = addrs
                    .split(',')
                    .map(|a| ResolvedAddress {
                        addr: a.parse().unwrap_or_else(|_| panic!("bad address {a}")),
                        weight: None,
                    })
                    .collect();
                self.apply(Event::Resolved {
                    upstream: api,
                    target_index: index.parse().unwrap_or(0),
                    result: Ok(answers),
                    ttl,
                });
            }
            ["resolve-error", index] => self.apply(Event::Resolved {
                upstream: api,
                target_index: index.parse().unwrap_or(0),
                result: Err("dns server error: 3 name error".into()),
                ttl: None,
            }),
            ["reload", name] => {
                let spec = self
                    .variants
                    .get(*name)
                    .cloned()
                    .unwrap_or_else(|| panic!("no variant {name}"));
                self.apply(Event::TopologyReplaced {
                    upstreams: vec![spec],
                });
            }
            _ => panic!("bad event {words:?}"),
        }
    }
}

fn run_script(h: &mut Harness, script: &str) {
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        h.step(line);
    }
}

/// Run `script` against `spec` and compare the transition log with `expected`.
fn check(spec: UpstreamSpec, script: &str, expected: &str) -> Harness {
    check_with(spec, &[], script, expected)
}

fn check_with(
    spec: UpstreamSpec,
    variants: &[(&str, UpstreamSpec)],
    script: &str,
    expected: &str,
) -> Harness {
    let mut h = Harness::new(spec, variants);
    run_script(&mut h, script);
    let want: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let got: Vec<&str> = h.log.lines().collect();
    assert_eq!(got, want, "\nactual log:\n{}", h.log);
    h
}

fn snapshot(h: &Harness) -> Arc<UpstreamSnapshot> {
    h.controller
        .snapshot("api")
        .unwrap_or_else(|| panic!("no snapshot"))
}

#[test]
fn kong_active_rules_flip_health_and_spill() {
    // One of two primary addresses down: 50% × 1.4 = 70% stays, 30% spills.
    let h = check(
        two_regions(),
        "
        at 0.5s down 10.0.0.1:80
        run 5s
        at 5.5s up 10.0.0.1:80
        run 10s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        7s health 10.0.0.1:80 healthy
        ",
    );
    // Recovery (2 successes at 6 s and 7 s) waits for the 30 s hold-down.
    let s = snapshot(&h);
    assert_eq!(s.mode, Mode::FailedOver);
    assert!(s.addresses.iter().all(|a| a.unavailable.is_none()));
    assert_eq!(s.tiers.first().map(|t| t.share_ppm), Some(700_000));
}

#[test]
fn primary_blackout_failover_holddown_ramp_complete() {
    let h = check(
        two_regions(),
        "
        at 0.5s down 10.0.0.1:80
        at 0.5s down 10.0.0.2:80
        run 20s
        at 20.5s up 10.0.0.1:80
        at 20.5s up 10.0.0.2:80
        run 100s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        2s health 10.0.0.2:80 unhealthy
        2s failover 70/30 -> 0/100 FailedOver
        22s health 10.0.0.1:80 healthy
        22s health 10.0.0.2:80 healthy
        52s failback_start 0/100 -> 5/95 FailingBack
        55s failback_step 5/95 -> 14.5/85.5 FailingBack
        58s failback_step 14.5/85.5 -> 24/76 FailingBack
        61s failback_step 24/76 -> 33.5/66.5 FailingBack
        64s failback_step 33.5/66.5 -> 43/57 FailingBack
        67s failback_step 43/57 -> 52.5/47.5 FailingBack
        70s failback_step 52.5/47.5 -> 62/38 FailingBack
        73s failback_step 62/38 -> 71.5/28.5 FailingBack
        76s failback_step 71.5/28.5 -> 81/19 FailingBack
        79s failback_step 81/19 -> 90.5/9.5 FailingBack
        82s failback_complete 90.5/9.5 -> 100/0 Normal
        ",
    );
    // Each flip moved traffic, so each has its record; only the second emptied tier 0.
    let failovers = h
        .controller
        .decisions()
        .since(0)
        .filter(|r| r.kind == DecisionKind::Failover)
        .count();
    assert_eq!(failovers, 1);
    let record = h
        .controller
        .decisions()
        .since(0)
        .find(|r| r.kind == DecisionKind::Failover)
        .cloned();
    assert!(
        record.is_some_and(|r| r
            .inputs
            .iter()
            .any(|(k, v)| k == "tier[0].healthy_share" && v == "0.000")),
        "the record carries the inputs that fired it"
    );
}

#[test]
fn flapping_primary_fails_over_once_and_never_fails_back() {
    // Down 20 s / up 20 s for ten minutes.
    let mut script = String::new();
    for cycle in 0..15u32 {
        let down = cycle * 40;
        let _ = writeln!(script, "at {}.5s down 10.0.0.1:80", down);
        let _ = writeln!(script, "at {}.5s down 10.0.0.2:80", down);
        let _ = writeln!(script, "at {}.5s up 10.0.0.1:80", down + 20);
        let _ = writeln!(script, "at {}.5s up 10.0.0.2:80", down + 20);
    }
    script.push_str("run 600s\n");
    let mut h = Harness::new(two_regions(), &[]);
    run_script(&mut h, &script);
    let kinds: Vec<&str> = h
        .controller
        .decisions()
        .since(0)
        .map(|r| r.kind.as_str())
        .collect();
    // Tier 0's two addresses flip one after the other: a spill, then the failover.
    assert_eq!(kinds, vec!["spill", "failover"], "log:\n{}", h.log);
    assert!(
        h.log.contains("582s health 10.0.0.2:80 healthy"),
        "still flapping at the end"
    );
    assert_eq!(snapshot(&h).tiers.first().map(|t| t.share_ppm), Some(0));
}

#[test]
fn failback_abort_on_errors_grows_hold_down() {
    let h = check(
        two_regions(),
        "
        at 0.5s down 10.0.0.1:80
        at 0.5s down 10.0.0.2:80
        run 10s
        at 10.5s up 10.0.0.1:80
        at 10.5s up 10.0.0.2:80
        run 42.5s
        at 42.5s attempts 10.0.0.1:80 200 x15
        at 42.5s attempts 10.0.0.2:80 503 x4
        at 42.5s attempts 10.0.0.2:80 200 x1
        run 150s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        2s health 10.0.0.2:80 unhealthy
        2s failover 70/30 -> 0/100 FailedOver
        12s health 10.0.0.1:80 healthy
        12s health 10.0.0.2:80 healthy
        42s failback_start 0/100 -> 5/95 FailingBack
        42.500s failback_aborted 5/95 -> 0/100 FailedOver
        102.500s failback_start 0/100 -> 5/95 FailingBack
        105.500s failback_step 5/95 -> 14.5/85.5 FailingBack
        108.500s failback_step 14.5/85.5 -> 24/76 FailingBack
        111.500s failback_step 24/76 -> 33.5/66.5 FailingBack
        114.500s failback_step 33.5/66.5 -> 43/57 FailingBack
        117.500s failback_step 43/57 -> 52.5/47.5 FailingBack
        120.500s failback_step 52.5/47.5 -> 62/38 FailingBack
        123.500s failback_step 62/38 -> 71.5/28.5 FailingBack
        126.500s failback_step 71.5/28.5 -> 81/19 FailingBack
        129.500s failback_step 81/19 -> 90.5/9.5 FailingBack
        132.500s failback_complete 90.5/9.5 -> 100/0 Normal
        ",
    );
    let status = h.controller.upstream_status("api", h.now);
    assert_eq!(status.map(|s| s.hold_down), Some(Duration::from_secs(60)));
}

#[test]
fn gray_failure_is_ejected_and_probes_do_not_bring_it_back() {
    let h = check(
        two_regions(),
        "
        at 1s gray 10.0.0.1:80
        at 1s attempts 10.0.0.1:80 500 x5
        run 11s
        at 11.5s attempts 10.0.0.1:80 500 x5
        run 40s
        ",
        "
        1s spill 100/0 -> 70/30 FailedOver
        11s ejection_end 70/30 -> 70/30 FailedOver
        11.500s ejection 70/30 -> 70/30 FailedOver
        31.500s ejection_end 70/30 -> 70/30 FailedOver
        ",
    );
    // Probes kept answering 200 all along: the health checker still says healthy, yet
    // the address was out of rotation for 10 s and then 20 s.
    let status = h
        .controller
        .upstream_status("api", Instant::from_millis(20_000));
    let first = status
        .as_ref()
        .and_then(|s| s.targets.first())
        .and_then(|t| t.addresses.first())
        .cloned();
    assert!(
        first
            .as_ref()
            .is_some_and(|a| a.state == HealthState::Healthy)
    );
    assert_eq!(first.map(|a| a.ejections), Some(2));
}

#[test]
fn ejection_mid_window_is_visible_in_the_snapshot() {
    let h = check(
        two_regions(),
        "
        at 1s attempts 10.0.0.1:80 timeout x5
        run 5s
        ",
        "
        1s spill 100/0 -> 70/30 FailedOver
        ",
    );
    let s = snapshot(&h);
    let first = s.addresses.first();
    assert_eq!(
        first.and_then(|a| a.unavailable),
        Some(Unavailable::Ejected { until_ms: 11_000 })
    );
    assert_eq!(first.map(|a| a.effective_weight), Some(0));
    assert_eq!(first.map(|a| a.health), Some(HealthStatus::Healthy));
}

#[test]
fn max_ejection_share_caps_a_tier() {
    // Four primaries with max share 50%: the third failing address stays in.
    let spec = upstream(vec![
        target("10.0.0.1:80", 0, "east", 100),
        target("10.0.0.2:80", 0, "east", 100),
        target("10.0.0.3:80", 0, "east", 100),
        target("10.0.0.4:80", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    let h = check(
        spec,
        "
        at 1s attempts 10.0.0.1:80 500 x5
        at 1s attempts 10.0.0.2:80 500 x5
        at 1s attempts 10.0.0.3:80 500 x5
        run 2s
        ",
        "
        1s ejection 100/0 -> 100/0 Normal
        1s spill 100/0 -> 70/30 FailedOver
        ",
    );
    let s = snapshot(&h);
    let ejected = s
        .addresses
        .iter()
        .filter(|a| matches!(a.unavailable, Some(Unavailable::Ejected { .. })))
        .count();
    assert_eq!(ejected, 2);
}

#[test]
fn single_address_tier_ejection_fails_over() {
    let spec = upstream(vec![
        target("10.0.0.1:80", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    check(
        spec,
        "
        at 1s attempts 10.0.0.1:80 502 x5
        run 12s
        ",
        "
        1s failover 100/0 -> 0/100 FailedOver
        11s ejection_end 0/100 -> 0/100 FailedOver
        ",
    );
}

#[test]
fn panic_enter_and_exit() {
    // Everything down: every tier below 50% → panic, all addresses used.
    let h = check(
        two_regions(),
        "
        at 0.5s down 10.0.0.1:80
        at 0.5s down 10.0.0.2:80
        at 0.5s down 10.0.1.1:80
        at 0.5s down 10.0.1.2:80
        run 3s
        at 3.5s up 10.0.1.1:80
        at 3.5s up 10.0.1.2:80
        run 6s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        2s health 10.0.0.2:80 unhealthy
        2s failover 70/30 -> 0/100 FailedOver
        2s health 10.0.1.1:80 unhealthy
        2s health 10.0.1.2:80 unhealthy
        2s panic_enter 0/100 -> 50/50 Panic
        5s health 10.0.1.1:80 healthy
        5s panic_exit 50/50 -> 0/100 FailedOver
        5s health 10.0.1.2:80 healthy
        ",
    );
    assert_eq!(snapshot(&h).mode, Mode::FailedOver);
}

#[test]
fn a_split_change_inside_panic_is_a_panic_shift_not_a_failback() {
    // Four addresses a tier; all down → panic by weight (50/50). One east address back is
    // 25 % of its tier: still panic, but the split follows health (all to east). That is
    // neither a failover nor a failback.
    let spec = upstream(vec![
        target("10.0.0.1:80", 0, "east", 100),
        target("10.0.0.2:80", 0, "east", 100),
        target("10.0.0.3:80", 0, "east", 100),
        target("10.0.0.4:80", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
        target("10.0.1.2:80", 1, "west", 100),
        target("10.0.1.3:80", 1, "west", 100),
        target("10.0.1.4:80", 1, "west", 100),
    ]);
    let h = check(
        spec,
        "
        at 0.5s down 10.0.0.1:80
        at 0.5s down 10.0.0.2:80
        at 0.5s down 10.0.0.3:80
        at 0.5s down 10.0.0.4:80
        at 0.5s down 10.0.1.1:80
        at 0.5s down 10.0.1.2:80
        at 0.5s down 10.0.1.3:80
        at 0.5s down 10.0.1.4:80
        run 3s
        at 3.5s up 10.0.0.1:80
        run 6s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s health 10.0.0.2:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        2s health 10.0.0.3:80 unhealthy
        2s spill 70/30 -> 35/65 FailedOver
        2s health 10.0.0.4:80 unhealthy
        2s failover 35/65 -> 0/100 FailedOver
        2s health 10.0.1.1:80 unhealthy
        2s health 10.0.1.2:80 unhealthy
        2s health 10.0.1.3:80 unhealthy
        2s panic_enter 0/100 -> 0/100 Panic
        2s health 10.0.1.4:80 unhealthy
        2s panic_shift 0/100 -> 50/50 Panic
        5s health 10.0.0.1:80 healthy
        5s panic_shift 50/50 -> 100/0 Panic
        ",
    );
    assert_eq!(snapshot(&h).mode, Mode::Panic);
}

#[test]
fn kong_threshold_makes_the_upstream_unavailable() {
    let mut spec = two_regions();
    spec.healthchecks.threshold = 60.0;
    let h = check(
        spec,
        "
        at 0.5s down 10.0.0.1:80
        at 0.5s down 10.0.0.2:80
        run 3s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        2s health 10.0.0.2:80 unhealthy
        2s failover 70/30 -> 0/0 Unavailable
        ",
    );
    let s = snapshot(&h);
    assert!(!s.balancer_healthy);
    assert_eq!(s.mode, Mode::Unavailable);
}

#[test]
fn reload_keeps_health_ejection_and_load() {
    let mut reloaded = two_regions();
    reloaded.targets.push(target("10.0.1.3:80", 1, "west", 100));
    let h = check_with(
        two_regions(),
        &[("more", reloaded)],
        "
        at 0.5s down 10.0.0.1:80
        run 3s
        at 3s attempts 10.0.1.1:80 500 x5
        at 4s reload more
        run 5s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        3s ejection 70/30 -> 70/30 FailedOver
        ",
    );
    let s = snapshot(&h);
    let view = |addr: &str| {
        s.addresses
            .iter()
            .find(|a| a.key.addr.to_string() == addr)
            .cloned()
    };
    assert_eq!(
        view("10.0.0.1:80").and_then(|a| a.unavailable),
        Some(Unavailable::Unhealthy)
    );
    assert!(matches!(
        view("10.0.1.1:80").and_then(|a| a.unavailable),
        Some(Unavailable::Ejected { .. })
    ));
    assert!(view("10.0.1.3:80").is_some_and(|a| a.unavailable.is_none()));
}

#[test]
fn reload_that_changes_the_split_is_recorded() {
    // The unhealthy address gets three times the weight: tier 0's healthy share falls
    // from 1/2 to 1/4 because of the reload alone.
    let mut reloaded = two_regions();
    if let Some(first) = reloaded.targets.first_mut() {
        first.weight = 300;
    }
    let h = check_with(
        two_regions(),
        &[("heavy", reloaded)],
        "
        at 0.5s down 10.0.0.1:80
        run 3s
        at 3s reload heavy
        run 4s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        3s config_reload 70/30 -> 35/65 FailedOver
        ",
    );
    // The address kept its health across the reload (no probe round had to re-learn it).
    let s = snapshot(&h);
    assert_eq!(
        s.addresses.first().map(|a| (a.weight, a.unavailable)),
        Some((300, Some(Unavailable::Unhealthy)))
    );
}

#[test]
fn health_drop_during_ramp_aborts_and_lengthens_hold_down() {
    let h = check(
        two_regions(),
        "
        at 0.5s down 10.0.0.1:80
        at 0.5s down 10.0.0.2:80
        run 10s
        at 10.5s up 10.0.0.1:80
        at 10.5s up 10.0.0.2:80
        run 45s
        at 45.5s down 10.0.0.2:80
        run 48s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        2s health 10.0.0.2:80 unhealthy
        2s failover 70/30 -> 0/100 FailedOver
        12s health 10.0.0.1:80 healthy
        12s health 10.0.0.2:80 healthy
        42s failback_start 0/100 -> 5/95 FailingBack
        45s failback_step 5/95 -> 14.5/85.5 FailingBack
        47s health 10.0.0.2:80 unhealthy
        47s failback_aborted 14.5/85.5 -> 0/100 FailedOver
        ",
    );
    let status = h.controller.upstream_status("api", h.now);
    assert_eq!(
        status.as_ref().map(|s| s.hold_down),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        status.map(|s| s.failback),
        Some(FailbackPhase::HoldDown {
            since: Instant::from_millis(47_000),
            until: Instant::from_millis(107_000)
        })
    );
}

#[test]
fn reload_with_changed_checks_resets_counters() {
    let mut stricter = two_regions();
    stricter.healthchecks.active.unhealthy_tcp_failures = 3;
    let h = check_with(
        two_regions(),
        &[("strict", stricter)],
        "
        at 1s probe 10.0.0.1:80 tcp
        at 1s reload strict
        ",
        "",
    );
    let status = h.controller.upstream_status("api", h.now);
    let counters = status
        .and_then(|s| s.targets.into_iter().next())
        .and_then(|t| t.addresses.into_iter().next())
        .map(|a| (a.counters, a.state));
    assert_eq!(
        counters,
        Some((HealthCounters::default(), HealthState::MostlyHealthy))
    );
}

#[test]
fn weight_zero_target_is_defined_but_never_used() {
    let spec = upstream(vec![
        target("10.0.0.1:80", 0, "east", 100),
        target("10.0.0.2:80", 0, "east", 0),
    ]);
    let h = check(
        spec,
        "
        at 0.5s down 10.0.0.2:80
        run 5s
        ",
        "",
    );
    let s = snapshot(&h);
    let zero = s.addresses.iter().find(|a| a.weight == 0).cloned();
    assert_eq!(
        zero.as_ref().map(|a| a.health),
        Some(HealthStatus::HealthchecksOff)
    );
    assert_eq!(
        zero.as_ref().and_then(|a| a.unavailable),
        Some(Unavailable::ZeroWeight)
    );
    assert_eq!(
        s.tiers.first().map(|t| t.members.len()),
        Some(1),
        "not a member"
    );
    assert_eq!(s.tiers.first().map(|t| t.rr_order.len()), Some(1));
}

#[test]
fn all_weights_zero_is_unavailable() {
    let spec = upstream(vec![target("10.0.0.1:80", 0, "east", 0)]);
    let h = check(spec, "run 2s", "");
    let s = snapshot(&h);
    assert_eq!(s.mode, Mode::Unavailable);
    assert!(!s.balancer_healthy);
}

#[test]
fn dns_failure_keeps_previous_addresses() {
    let spec = upstream(vec![
        target("api.internal:8080", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    let h = check(
        spec,
        "
        at 0.1s resolve 0 10.0.0.5:8080,10.0.0.6:8080 ttl 20
        run 20s
        at 20.1s resolve-error 0
        run 25s
        ",
        "
        0s resolve api.internal
        0.100s failback_complete 0/100 -> 100/0 Normal
        20.100s resolve api.internal
        ",
    );
    let s = snapshot(&h);
    assert_eq!(s.addresses.len(), 3, "stale addresses stay");
    assert_eq!(s.tiers.first().map(|t| t.share_ppm), Some(PPM));
    let status = h.controller.upstream_status("api", h.now);
    let target = status.and_then(|s| s.targets.into_iter().next());
    assert_eq!(
        target.as_ref().map(|t| t.health),
        Some(HealthStatus::Healthy)
    );
    assert!(target.is_some_and(|t| t.dns_error.is_some()));
}

#[test]
fn dns_failure_with_no_addresses_reports_dns_error_and_retries() {
    let spec = upstream(vec![
        target("api.internal:8080", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    let h = check(
        spec,
        "
        at 0.1s resolve-error 0
        run 31s
        ",
        "
        0s resolve api.internal
        30.100s resolve api.internal
        ",
    );
    let s = snapshot(&h);
    assert_eq!(s.tiers.first().map(|t| t.share_ppm), Some(0));
    assert_eq!(s.mode, Mode::FailedOver);
    let status = h.controller.upstream_status("api", h.now);
    let target = status.and_then(|s| s.targets.into_iter().next());
    assert_eq!(target.map(|t| t.health), Some(HealthStatus::DnsError));
}

#[test]
fn late_dns_answer_takes_traffic_without_hold_down() {
    let spec = upstream(vec![
        target("api.internal:8080", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    check(
        spec,
        "
        at 2s resolve 0 10.0.0.5:8080
        ",
        "
        0s resolve api.internal
        2s failback_complete 0/100 -> 100/0 Normal
        ",
    );
}

#[test]
fn operator_set_health_and_drain() {
    let h = check(
        two_regions(),
        "
        at 1s set-health 10.0.0.1:80 unhealthy
        at 2s drain 10.0.0.2:80
        at 3s undrain 10.0.0.2:80
        ",
        "
        1s health 10.0.0.1:80 unhealthy
        1s operator 100/0 -> 70/30 FailedOver
        2s operator 70/30 -> 0/100 FailedOver
        3s health 10.0.0.1:80 healthy
        3s operator 0/100 -> 0/100 FailedOver
        ",
    );
    // Probes (world up) brought 10.0.0.1 back after two successes, and the undrain
    // restored 10.0.0.2: restoring capacity goes through the hold-down like any recovery.
    assert!(matches!(
        h.controller
            .upstream_status("api", h.now)
            .map(|s| s.failback),
        Some(FailbackPhase::HoldDown { .. })
    ));
}

#[test]
fn operator_override_clears_counters() {
    let mut h = Harness::new(two_regions(), &[]);
    let counters = |h: &Harness| {
        h.controller
            .upstream_status("api", h.now)
            .and_then(|s| s.targets.into_iter().next())
            .and_then(|t| t.addresses.into_iter().next())
            .map(|a| (a.state, a.counters))
    };
    run_script(&mut h, "at 0.5s probe 10.0.0.1:80 500");
    assert_eq!(
        counters(&h),
        Some((
            HealthState::MostlyHealthy,
            HealthCounters {
                http_failures: 1,
                ..HealthCounters::default()
            }
        ))
    );
    run_script(&mut h, "at 0.6s set-health 10.0.0.1:80 10.0.0.1:80 healthy");
    assert_eq!(
        counters(&h),
        Some((HealthState::Healthy, HealthCounters::default()))
    );
    // An unknown target is ignored (the admin API answers 404 before sending it).
    run_script(&mut h, "at 0.7s set-health 10.9.9.9:80 unhealthy");
    assert_eq!(
        h.controller.decisions().len(),
        1,
        "only the real override was recorded"
    );
}

#[test]
fn operator_override_recovers_then_probes_continue() {
    // Probes keep failing after the operator forces healthy: Kong lets the checker flip
    // it back.
    check(
        two_regions(),
        "
        at 0.5s down 10.0.0.1:80
        run 3s
        at 3.5s set-health 10.0.0.1:80 healthy
        run 6s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        3.500s health 10.0.0.1:80 healthy
        3.500s operator 70/30 -> 70/30 FailedOver
        5.500s health 10.0.0.1:80 unhealthy
        ",
    );
}

#[test]
fn passive_checks_count_504_as_timeout() {
    let mut spec = two_regions();
    spec.healthchecks.passive.unhealthy_timeouts = 2;
    spec.failover.outlier.enabled = false;
    check(
        spec,
        "
        at 1s attempts 10.0.0.1:80 504 x2
        ",
        "
        1s health 10.0.0.1:80 unhealthy
        1s spill 100/0 -> 70/30 FailedOver
        ",
    );
}

#[test]
fn probes_are_scheduled_per_state_and_idle_tiers_are_probed() {
    let mut spec = two_regions();
    spec.healthchecks.active.healthy_interval = Duration::from_secs(5);
    spec.healthchecks.active.unhealthy_interval = Duration::from_secs(1);
    let mut c = Controller::new();
    let mut out = Vec::new();
    c.apply(
        Instant::ZERO,
        Event::TopologyReplaced {
            upstreams: vec![spec],
        },
        &mut out,
    );
    assert_eq!(
        c.next_deadline(),
        Some(Instant::from_millis(5_000)),
        "first probe one interval after start"
    );
    out.clear();
    c.tick(Instant::from_millis(5_000), &mut out);
    let probed: Vec<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::Probe { address, .. } => Some(address.addr.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        probed,
        vec!["10.0.0.1:80", "10.0.0.2:80", "10.0.1.1:80", "10.0.1.2:80"]
    );
}

#[test]
fn consistent_hashing_gets_tables_and_cursors_survive_versions() {
    let mut spec = two_regions();
    spec.algorithm = Algorithm::ConsistentHashing;
    let h = check(
        spec,
        "
        at 0.5s down 10.0.0.1:80
        run 3s
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        ",
    );
    let s = snapshot(&h);
    assert_eq!(s.hash_tables.len(), 2);
    let table = s
        .hash_tables
        .first()
        .cloned()
        .unwrap_or_else(|| Arc::from(Vec::new()));
    assert!(!table.is_empty());
    assert!(table.iter().all(|&i| {
        s.addresses
            .get(i as usize)
            .is_some_and(|a| a.key.addr.to_string() == "10.0.0.2:80")
    }));
    assert!(h.versions.len() >= 2);
}

#[test]
fn rr_cursor_is_carried_across_snapshots() {
    let mut h = Harness::new(two_regions(), &[]);
    let first = snapshot(&h);
    run_script(&mut h, "at 1s attempts 10.0.0.1:80 500 x5");
    let second = snapshot(&h);
    assert!(second.version > first.version);
    let (a, b) = (first.tiers.first(), second.tiers.first());
    assert!(
        a.zip(b)
            .is_some_and(|(a, b)| Arc::ptr_eq(&a.rr_cursor, &b.rr_cursor))
    );
    let (a, b) = (first.addresses.first(), second.addresses.first());
    assert!(a.zip(b).is_some_and(|(a, b)| Arc::ptr_eq(&a.load, &b.load)));
}

#[test]
fn no_publish_without_a_selection_change() {
    let mut h = Harness::new(two_regions(), &[]);
    let before = h.versions.len();
    run_script(&mut h, "run 30s");
    assert_eq!(h.versions.len(), before, "healthy probes change nothing");
}

#[test]
fn slow_start_ramps_new_addresses_after_a_reload() {
    let mut spec = two_regions();
    spec.failover.slow_start = Duration::from_secs(10);
    let mut more = spec.clone();
    more.targets.push(target("10.0.0.3:80", 0, "east", 100));
    let mut h = Harness::new(spec, &[("more", more)]);
    // Boot: no slow start.
    assert!(
        snapshot(&h)
            .addresses
            .iter()
            .all(|a| a.effective_weight == 100)
    );
    run_script(&mut h, "at 10s reload more");
    let weight = |h: &Harness| {
        snapshot(h)
            .addresses
            .iter()
            .find(|a| a.key.addr.to_string() == "10.0.0.3:80")
            .map(|a| a.effective_weight)
    };
    assert_eq!(weight(&h), Some(10));
    run_script(&mut h, "run 15s");
    assert_eq!(weight(&h), Some(50));
    run_script(&mut h, "run 30s");
    assert_eq!(weight(&h), Some(100));
}

#[test]
fn hostname_addresses_are_keyed_by_hostname() {
    let spec = upstream(vec![
        target("api.internal:8080", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    let h = check(
        spec,
        "
        at 0.1s resolve 0 10.0.0.5:8080
        at 1s hattempts 10.0.0.5:8080 api.internal 500 x5
        ",
        "
        0s resolve api.internal
        0.100s failback_complete 0/100 -> 100/0 Normal
        1s failover 100/0 -> 0/100 FailedOver
        ",
    );
    let s = snapshot(&h);
    assert!(
        s.addresses
            .iter()
            .any(|a| &*a.key.hostname == "api.internal")
    );
}

#[test]
fn removed_upstream_is_announced() {
    let mut other = two_regions();
    other.name = Arc::from("other");
    let mut h = Harness::new(two_regions(), &[("other", other)]);
    run_script(&mut h, "at 1s reload other");
    assert!(h.log.contains("1s remove api"), "log:\n{}", h.log);
    assert!(h.controller.snapshot("other").is_some());
    assert!(h.controller.snapshot("api").is_none());
}

mod invariants {
    //! Random timelines over the two-region upstream; after every step the published
    //! snapshot must satisfy the selection invariants the data plane relies on.

    use super::*;
    use proptest::prelude::*;

    const ADDRS: [&str; 4] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.1.1:80", "10.0.1.2:80"];

    fn line(kind: u8, addr: usize, at_ms: u64) -> String {
        let addr = ADDRS
            .get(addr % ADDRS.len())
            .copied()
            .unwrap_or("10.0.0.1:80");
        let at = format!("{}.{:03}s", at_ms / 1000, at_ms % 1000);
        match kind % 8 {
            0 => format!("at {at} down {addr}"),
            1 => format!("at {at} up {addr}"),
            2 => format!("at {at} attempts {addr} 500 x5"),
            3 => format!("at {at} attempts {addr} 200 x20"),
            4 => format!("at {at} drain {addr}"),
            5 => format!("at {at} undrain {addr}"),
            6 => format!("at {at} set-health {addr} unhealthy"),
            _ => format!("run {at}"),
        }
    }

    fn check_snapshot(s: &UpstreamSnapshot) -> Result<(), TestCaseError> {
        let total: u64 = s.tiers.iter().map(|t| u64::from(t.share_ppm)).sum();
        prop_assert!(
            total == 0 || total == u64::from(PPM),
            "shares sum to {}",
            total
        );
        prop_assert_eq!(s.mode == Mode::Unavailable, total == 0);
        prop_assert_eq!(!s.balancer_healthy, s.mode == Mode::Unavailable);
        for tier in &s.tiers {
            for &i in tier.rr_order.iter() {
                let a = s.addresses.get(i as usize);
                prop_assert!(a.is_some(), "rr_order index in range");
                let Some(a) = a else { continue };
                prop_assert!(
                    a.unavailable != Some(Unavailable::Drained),
                    "drained never ordered"
                );
                prop_assert!(a.weight > 0, "weight 0 never ordered");
                if s.mode != Mode::Panic {
                    prop_assert!(a.unavailable.is_none(), "unavailable only in panic");
                    prop_assert!(a.effective_weight > 0);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn snapshots_stay_consistent(steps in proptest::collection::vec((0u8..8, 0usize..4, 1u64..20_000), 1..40)) {
            let mut h = Harness::new(two_regions(), &[]);
            let mut at = 0u64;
            for (kind, addr, dt) in steps {
                at += dt;
                h.step(&line(kind, addr, at));
                check_snapshot(&snapshot(&h))?;
            }
            // Every failback start comes after at least the base hold-down of calm:
            // no record of another kind may sit within 30 s before it, except spills
            // and failovers that are part of the same recovery being ramped.
            let records: Vec<_> = h.controller.decisions().since(0).cloned().collect();
            for (i, r) in records.iter().enumerate() {
                if r.kind == DecisionKind::FailbackStart {
                    let before = records.get(..i).unwrap_or(&[]);
                    let last_move_away = before
                        .iter()
                        .filter(|p| matches!(p.kind, DecisionKind::Failover | DecisionKind::Spill | DecisionKind::FailbackAborted))
                        .map(|p| p.at)
                        .max();
                    if let Some(t) = last_move_away {
                        prop_assert!(r.at.saturating_duration_since(t) >= Duration::from_secs(30),
                            "failback at {:?} only {:?} after a failover", r.at, r.at.saturating_duration_since(t));
                    }
                }
            }
        }
    }
}

#[test]
fn first_dns_answer_at_boot_does_not_slow_start_but_later_ones_do() {
    let mut spec = upstream(vec![
        target("api.internal:8080", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    spec.failover.slow_start = Duration::from_secs(10);
    let mut h = Harness::new(spec, &[]);
    run_script(&mut h, "at 1s resolve 0 10.0.0.5:8080 ttl 60");
    let weight_of = |h: &Harness, addr: &str| {
        snapshot(h)
            .addresses
            .iter()
            .find(|a| a.key.addr.to_string() == addr)
            .map(|a| a.effective_weight)
    };
    assert_eq!(weight_of(&h, "10.0.0.5:8080"), Some(100));
    // A new address in a later answer joins a running process: it slow-starts.
    run_script(&mut h, "at 5s resolve 0 10.0.0.5:8080,10.0.0.6:8080 ttl 60");
    assert_eq!(weight_of(&h, "10.0.0.6:8080"), Some(10));
    assert_eq!(weight_of(&h, "10.0.0.5:8080"), Some(100));
}

#[test]
fn dns_ttl_is_clamped() {
    let spec = upstream(vec![
        target("api.internal:8080", 0, "east", 100),
        target("10.0.1.1:80", 1, "west", 100),
    ]);
    // TTL 0 → re-resolve after the 1 s floor; a day-long TTL → after the 300 s ceiling.
    check(
        spec,
        "
        at 1s resolve 0 10.0.0.5:8080 ttl 0
        run 2.5s
        at 2.5s resolve 0 10.0.0.5:8080 ttl 86400
        run 340s
        ",
        "
        0s resolve api.internal
        1s failback_complete 0/100 -> 100/0 Normal
        2s resolve api.internal
        302.500s resolve api.internal
        332.500s resolve api.internal
        ",
    );
    // (Unanswered requests are asked again every 30 s.)
}

#[test]
fn an_address_that_leaves_and_returns_within_300s_keeps_its_health() {
    let mut without = two_regions();
    without.targets.remove(0);
    let h = check_with(
        two_regions(),
        &[("without", without), ("with", two_regions())],
        "
        at 0.5s down 10.0.0.1:80
        run 3s
        at 3s reload without
        at 20s reload with
        ",
        "
        2s health 10.0.0.1:80 unhealthy
        2s spill 100/0 -> 70/30 FailedOver
        ",
    );
    let s = snapshot(&h);
    assert_eq!(
        s.addresses
            .first()
            .map(|a| (a.key.addr.to_string(), a.unavailable)),
        Some(("10.0.0.1:80".to_string(), Some(Unavailable::Unhealthy)))
    );
    // Gone for longer than 300 s: it comes back as a new, healthy address.
    let mut h = h;
    run_script(&mut h, "at 30s reload without\nat 400s reload with");
    let s = snapshot(&h);
    assert_eq!(s.addresses.first().and_then(|a| a.unavailable), None);
}

#[test]
fn default_policy_keeps_all_traffic_home_when_one_of_three_primaries_is_down() {
    // The user's drill: 3 primaries, 2 secondaries, one primary dies. With the shipped
    // overprovisioning (1.5) two thirds of the tier is exactly enough: nothing leaks.
    let mut spec = upstream(vec![
        target("10.0.0.1:80", 0, "primary", 100),
        target("10.0.0.2:80", 0, "primary", 100),
        target("10.0.0.3:80", 0, "primary", 100),
        target("10.0.1.1:80", 1, "secondary", 100),
        target("10.0.1.2:80", 1, "secondary", 100),
    ]);
    spec.failover.overprovisioning = FailoverPolicy::default().overprovisioning;
    let h = check(
        spec,
        "at 1s down 10.0.0.1:80
         run 5s",
        // The address flips on its second failed probe, and no spill record follows.
        "3s health 10.0.0.1:80 unhealthy",
    );
    let snap = snapshot(&h);
    assert_eq!(
        snap.tiers[0].share_ppm, 1_000_000,
        "one of three down must not leak: {:?}",
        snap.tiers
    );
    assert_eq!(snap.mode, Mode::Normal);
}

/// Kong's health endpoint reports the record type the addresses came from: SRV answers
/// (which carry a weight) read SRV, A/AAAA answers and IP literals their family's type.
#[test]
fn addresses_remember_the_dns_record_type_they_came_from() {
    use crate::snapshot::DnsRecord;
    let spec = upstream(vec![
        target("10.0.0.1:80", 0, "east", 100),
        target("srv.internal:80", 0, "east", 100),
        target("v6.internal:80", 0, "east", 100),
    ]);
    let mut h = Harness::new(spec, &[]);
    let answer = |addr: &str, weight: Option<u32>| ResolvedAddress {
        addr: addr
            .parse()
            .unwrap_or_else(|_| panic!("bad address {addr}")),
        weight,
    };
    h.apply(Event::Resolved {
        upstream: Arc::from("api"),
        target_index: 1,
        result: Ok(vec![answer("10.0.1.1:8080", Some(5))]),
        ttl: None,
    });
    h.apply(Event::Resolved {
        upstream: Arc::from("api"),
        target_index: 2,
        result: Ok(vec![answer("[2001:db8::1]:80", None)]),
        ttl: None,
    });
    let snap = snapshot(&h);
    let dns_of = |target_index: u32| {
        snap.addresses
            .iter()
            .find(|a| a.target_index == target_index)
            .map(|a| a.dns)
    };
    assert_eq!(dns_of(0), Some(DnsRecord::A), "an IPv4 literal reads A");
    assert_eq!(dns_of(1), Some(DnsRecord::Srv));
    assert_eq!(dns_of(2), Some(DnsRecord::Aaaa));
    assert_eq!(DnsRecord::Aaaa.as_str(), "AAAA");
}

/// Every address's `next_probe`, read directly (the reference the timer index must
/// agree with).
fn due_by_scan(c: &Controller, upstream: &str, now: Instant) -> Vec<AddressKey> {
    c.upstreams[upstream]
        .addresses
        .values()
        .filter(|a| a.next_probe.is_some_and(|t| t <= now))
        .map(|a| a.key.clone())
        .collect()
}

fn probes_in(out: &[Action]) -> Vec<AddressKey> {
    out.iter()
        .filter_map(|a| match a {
            Action::Probe { address, .. } => Some(address.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn diverged_probe_schedules_fire_exactly_when_due_in_address_order() {
    let mut spec = two_regions();
    spec.healthchecks.active.healthy_interval = Duration::from_secs(3);
    spec.healthchecks.active.unhealthy_interval = Duration::from_secs(1);
    let mut c = Controller::new();
    let mut out = Vec::new();
    c.apply(
        Instant::ZERO,
        Event::TopologyReplaced {
            upstreams: vec![spec],
        },
        &mut out,
    );
    // 10.0.1.2 turns unhealthy at 1.5 s (two failures): its loop restarts at 1 s.
    for _ in 0..2 {
        c.apply(
            Instant::from_millis(1_500),
            Event::ProbeCompleted {
                upstream: Arc::from("api"),
                address: key("10.0.1.2:80", None),
                slot: u32::MAX,
                outcome: ProbeOutcome::Status(500),
            },
            &mut out,
        );
    }
    assert_eq!(c.next_deadline(), Some(Instant::from_millis(2_500)));
    out.clear();
    c.tick(Instant::from_millis(2_500), &mut out);
    assert_eq!(probes_in(&out), vec![key("10.0.1.2:80", None)]);
    // At 3.5 s the three healthy ones (due at 3 s) and the unhealthy one (due at 3.5 s)
    // come out together, in address order rather than due order.
    assert_eq!(c.next_deadline(), Some(Instant::from_millis(3_000)));
    out.clear();
    c.tick(Instant::from_millis(3_500), &mut out);
    assert_eq!(
        probes_in(&out),
        vec![
            key("10.0.0.1:80", None),
            key("10.0.0.2:80", None),
            key("10.0.1.1:80", None),
            key("10.0.1.2:80", None),
        ]
    );
    // Nothing is due before the unhealthy loop's next round.
    out.clear();
    c.tick(Instant::from_millis(4_400), &mut out);
    assert!(probes_in(&out).is_empty());
    assert_eq!(c.next_deadline(), Some(Instant::from_millis(4_500)));
}

#[test]
fn timer_index_matches_a_scan_over_a_long_random_run() {
    // 60 addresses whose schedules diverge through probe failures, passive failures,
    // operator overrides and a reload; every tick must probe exactly the addresses a
    // scan finds due, and the deadline must be the scan's minimum (the debug assertion
    // in `next_deadline` compares the whole index with a scan at every call).
    let targets: Vec<TargetSpec> = (0..60)
        .map(|i| {
            target(
                &format!("10.1.{}.{}:80", i / 10, i % 10 + 1),
                (i % 2) as u8,
                "r",
                100,
            )
        })
        .collect();
    let mut spec = upstream(targets);
    spec.healthchecks.active.healthy_interval = Duration::from_millis(700);
    spec.healthchecks.active.unhealthy_interval = Duration::from_millis(300);
    spec.healthchecks.passive.unhealthy_http_failures = 3;
    let mut c = Controller::new();
    let mut out = Vec::new();
    c.apply(
        Instant::ZERO,
        Event::TopologyReplaced {
            upstreams: vec![spec.clone()],
        },
        &mut out,
    );
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut probed = 0usize;
    for step in 1..=600u64 {
        let now = Instant::from_millis(step * 50);
        let expected = due_by_scan(&c, "api", now);
        let deadline = c.next_deadline();
        let scan_min = c.upstreams["api"]
            .addresses
            .values()
            .filter_map(|a| a.next_probe)
            .min();
        assert!(
            deadline <= scan_min,
            "deadline {deadline:?} after a due probe"
        );
        out.clear();
        c.tick(now, &mut out);
        let actual = probes_in(&out);
        assert_eq!(actual, expected, "probes at {now:?}");
        probed += actual.len();
        for address in actual {
            let outcome = if next() % 4 == 0 {
                ProbeOutcome::Status(500)
            } else {
                ProbeOutcome::Status(200)
            };
            c.apply(
                now,
                Event::ProbeCompleted {
                    upstream: Arc::from("api"),
                    address,
                    // Every index is a wrong hint for some address: the key decides.
                    slot: 0,
                    outcome,
                },
                &mut out,
            );
        }
        let pick = (next() % 60) as usize;
        let addr = format!("10.1.{}.{}:80", pick / 10, pick % 10 + 1);
        match next() % 20 {
            0 => c.apply(
                now,
                Event::AttemptCompleted {
                    upstream: Arc::from("api"),
                    address: key(&addr, None),
                    outcome: AttemptOutcome::Status(502),
                    latency: Duration::from_millis(1),
                },
                &mut out,
            ),
            1 => c.apply(
                now,
                Event::Operator {
                    upstream: Arc::from("api"),
                    command: OperatorCommand::SetHealth {
                        target: addr,
                        address: None,
                        healthy: next() % 2 == 0,
                    },
                    actor: "test".into(),
                },
                &mut out,
            ),
            _ => {}
        }
        if step == 300 {
            // A reload with changed checks reschedules every address at once.
            let mut changed = spec.clone();
            changed.healthchecks.active.healthy_interval = Duration::from_millis(400);
            changed.targets.truncate(50);
            c.apply(
                now,
                Event::TopologyReplaced {
                    upstreams: vec![changed],
                },
                &mut out,
            );
        }
    }
    assert!(probed > 3_000, "the run probed ({probed})");
}

#[test]
fn a_reload_that_moves_a_tier_to_another_region_reports_the_new_region() {
    let mut c = Controller::new();
    let mut out = Vec::new();
    c.apply(
        Instant::ZERO,
        Event::TopologyReplaced {
            upstreams: vec![two_regions()],
        },
        &mut out,
    );
    // Same tiers, one region renamed: the tiers' regions are cached per configuration.
    let moved = upstream(vec![
        target("10.0.0.1:80", 0, "east", 100),
        target("10.0.0.2:80", 0, "north", 100),
        target("10.0.1.1:80", 1, "west", 100),
        target("10.0.1.2:80", 1, "west", 100),
    ]);
    c.apply(
        Instant::from_millis(1_000),
        Event::TopologyReplaced {
            upstreams: vec![moved],
        },
        &mut out,
    );
    let snapshot = c.snapshot("api").unwrap();
    let regions: Vec<Vec<&str>> = snapshot
        .tiers
        .iter()
        .map(|t| t.regions.iter().map(|r| &**r).collect())
        .collect();
    assert_eq!(regions, vec![vec!["east", "north"], vec!["west"]]);
    let status = c
        .upstream_status("api", Instant::from_millis(1_000))
        .unwrap();
    assert_eq!(&*status.tiers[0].regions[1], "north");
}
