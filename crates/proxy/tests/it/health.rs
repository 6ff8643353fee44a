//! Passive and active health checks flowing through the driver into the controller.

use std::time::Duration;

use sluice_core::snapshot::HealthStatus;
use sluice_proxy::Gateway;

use crate::support::backend::{Backend, Behavior, closed_port};
use crate::support::{eventually, gateway, get};

fn health_of(gw: &Gateway, upstream: &str, target: &str) -> Option<HealthStatus> {
    let status = gw.upstream_status(upstream)?;
    status
        .targets
        .iter()
        .find(|t| t.target == target)
        .map(|t| t.health)
}

#[tokio::test]
async fn passive_failures_mark_a_target_unhealthy() {
    let dead = closed_port().await;
    let good = Backend::start("good", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    healthchecks:
      passive:
        unhealthy:
          tcp_failures: 1
    targets:
      - target: {dead}
      - target: {good}
"#,
        good = good.addr
    );
    let gw = gateway(&yaml).await;
    for _ in 0..4 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    let dead_target = dead.to_string();
    assert!(
        eventually(Duration::from_secs(2), || {
            health_of(&gw, "pool", &dead_target) == Some(HealthStatus::Unhealthy)
        })
        .await,
        "{:?}",
        gw.upstream_status("pool")
    );
    assert_eq!(
        health_of(&gw, "pool", &good.addr.to_string()),
        Some(HealthStatus::Healthy)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn active_probes_track_a_killed_and_revived_backend() {
    let flaky = Backend::start("flaky", Behavior::Ok).await;
    let steady = Backend::start("steady", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    retries: 2
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    healthchecks:
      active:
        http_path: /health
        timeout: 0.5
        healthy:
          interval: 0.1
          successes: 1
        unhealthy:
          interval: 0.1
          tcp_failures: 1
          http_failures: 1
          timeouts: 1
    targets:
      - target: {flaky}
      - target: {steady}
"#,
        flaky = flaky.addr,
        steady = steady.addr
    );
    let gw = gateway(&yaml).await;
    let flaky_target = flaky.addr.to_string();
    assert!(
        eventually(Duration::from_secs(2), || flaky.hits() > 0).await,
        "probes reach the backend"
    );
    flaky.kill();
    assert!(
        eventually(Duration::from_secs(3), || {
            health_of(&gw, "pool", &flaky_target) == Some(HealthStatus::Unhealthy)
        })
        .await,
        "killed backend marked unhealthy: {:?}",
        gw.upstream_status("pool")
    );
    for _ in 0..10 {
        let reply = get(&gw, "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "steady");
    }
    flaky.revive().await;
    assert!(
        eventually(Duration::from_secs(3), || {
            health_of(&gw, "pool", &flaky_target) == Some(HealthStatus::Healthy)
        })
        .await,
        "revived backend marked healthy: {:?}",
        gw.upstream_status("pool")
    );
    gw.shutdown().await;
}
