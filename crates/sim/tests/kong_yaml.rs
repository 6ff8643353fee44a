//! A scenario written the way a Kong user writes it: a `kong.yml` (format 3.0) with
//! Sluice's region/tier target tags and `sluice:` upstream tags, loaded by
//! `sluice-config`, then driven through a primary blackout on the simulator.
//!
//! Goal: the path from the file a Kong user brings to the decisions the core makes is
//! the one the simulator tests: health check numbers and failover tags in the YAML are
//! the ones in force.

use sluice_core::decision::DecisionKind;
use sluice_core::{Duration, Instant};
use sluice_sim::faults::{Fault, FaultKind};
use sluice_sim::sim::{Sim, SimConfig};
use sluice_sim::world::Layout;

const KONG_YML: &str = r#"
_format_version: "3.0"
services:
  - name: api
    host: api
    routes:
      - name: api
        paths: ["/"]
upstreams:
  - name: api
    tags:
      - "sluice:hold-down=20s"
      - "sluice:ramp=10s"
    healthchecks:
      active:
        healthy:
          interval: 2
          successes: 2
        unhealthy:
          interval: 1
          timeouts: 3
          tcp_failures: 2
          http_failures: 3
      passive:
        healthy:
          successes: 5
        unhealthy:
          timeouts: 3
          tcp_failures: 2
          http_failures: 5
    targets:
      - { target: "10.1.0.1:8000", tags: ["region:eu-west", "tier:0"] }
      - { target: "10.1.0.2:8000", tags: ["region:eu-west", "tier:0"] }
      - { target: "10.1.0.3:8000", tags: ["region:eu-west", "tier:0"] }
      - { target: "10.2.0.1:8000", tags: ["region:eu-central", "tier:1"] }
      - { target: "10.2.0.2:8000", tags: ["region:eu-central", "tier:1"] }
      - { target: "10.2.0.3:8000", tags: ["region:eu-central", "tier:1"] }
"#;

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1_000)
}

#[test]
fn kong_yml_upstream_fails_over_and_back_with_its_own_timers() {
    let loaded = sluice_config::parse(KONG_YML, "kong.yml")
        .unwrap_or_else(|diagnostics| panic!("kong.yml is valid: {diagnostics:?}"));
    let upstream = loaded
        .config
        .upstreams
        .iter()
        .find(|u| &*u.name == "api")
        .expect("upstream api");
    assert_eq!(
        upstream.failover.failback_hold_down,
        Duration::from_secs(20)
    );
    assert_eq!(upstream.failover.failback_ramp, Duration::from_secs(10));
    let config = SimConfig::from_upstream(
        1,
        Layout::two_regions(3),
        upstream,
        vec![Fault::new(
            FaultKind::RegionBlackout { region: 0 },
            secs(60),
            secs(120),
        )],
        Duration::from_secs(120),
    )
    .unwrap_or_else(|mismatch| panic!("{mismatch}"));
    let mut sim = Sim::new(config);
    sim.run_until(secs(200));
    let at = |kind: DecisionKind| -> Vec<Instant> {
        sim.decisions()
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.at)
            .collect()
    };
    let failovers = at(DecisionKind::Failover);
    assert_eq!(failovers.len(), 1, "{}", sim.log().render());
    assert!(failovers[0] >= secs(60) && failovers[0] <= secs(65));
    let starts = at(DecisionKind::FailbackStart);
    assert_eq!(starts.len(), 1, "{}", sim.log().render());
    // The YAML's 20 s hold-down, counted from the recovery (two 1 s probes).
    assert!(
        starts[0] >= secs(140) && starts[0] <= secs(145),
        "failback started at {:?}",
        starts[0]
    );
    let completes = at(DecisionKind::FailbackComplete);
    assert_eq!(completes.len(), 1);
    let ramp = completes[0].saturating_duration_since(starts[0]);
    assert!(
        ramp >= Duration::from_secs(8) && ramp <= Duration::from_secs(11),
        "the YAML's 10 s ramp took {ramp:?}"
    );
    assert!(sim.violations().is_empty(), "{}", sim.log().render());
    let liveness = sim.check_liveness();
    assert!(liveness.is_ok(), "{liveness:?}");
}

#[test]
fn a_yaml_whose_targets_are_not_the_worlds_is_refused_with_the_reason() {
    let other = KONG_YML.replace("10.2.0.3:8000", "10.9.0.9:8000");
    let loaded = sluice_config::parse(&other, "kong.yml").expect("still valid Kong");
    let upstream = &loaded.config.upstreams[0];
    let error = SimConfig::from_upstream(
        1,
        Layout::two_regions(3),
        upstream,
        Vec::new(),
        Duration::from_secs(10),
    )
    .expect_err("mismatch");
    assert!(error.contains("10.9.0.9:8000"), "{error}");
}
