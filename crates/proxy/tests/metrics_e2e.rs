//! Metrics through the real data plane: a gateway on loopback configured from Kong YAML,
//! real backends, real requests, then the scrape. This is where a label the proxy puts in
//! a `RequestRecord` and the label metrics resolved from the configuration must agree.

/// The default: simple requests take the fast lane.
pub const FAST_LANE: bool = true;

#[allow(dead_code, unused_imports)]
#[path = "it/support/mod.rs"]
mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::backend::{Backend, Behavior, closed_port};
use support::{gateway, get};

fn value_of(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn yaml(primary: &[String], secondary: &str, plugin: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
  - name: orders
    host: orders-upstream
    retries: 3
    routes:
      - name: orders-api
        paths: ["/api"]
upstreams:
  - name: orders-upstream
    targets:
      - target: {p0}
        tags: ["region:eu-west", "tier:0"]
      - target: {p1}
        tags: ["region:eu-west", "tier:0"]
      - target: {secondary}
        tags: ["region:us-east", "tier:1"]
{plugin}
"#,
        p0 = primary[0],
        p1 = primary[1],
    )
}

const ALL_FLAGS: &str = r#"
plugins:
  - name: prometheus
    config:
      status_code_metrics: true
      latency_metrics: true
      bandwidth_metrics: true
      upstream_health_metrics: true
"#;

#[tokio::test]
async fn a_failover_shows_up_in_kong_and_sluice_families() {
    // The preferred region refuses connections; the secondary answers.
    let primary = vec![
        closed_port().await.to_string(),
        closed_port().await.to_string(),
    ];
    let secondary = Backend::start("us-east", Behavior::Ok).await;
    let gw = gateway(&yaml(&primary, &secondary.addr.to_string(), ALL_FLAGS)).await;

    // The bound only keeps a hung gateway from hanging the suite: the test asserts what
    // the 20 requests did, not how fast a (possibly loaded) machine ran them. 2 s was
    // a speed claim about a debug build on a shared 2-core machine, where each request
    // also pays for the refused primaries before its retry crosses regions.
    tokio::time::timeout(Duration::from_secs(60), async {
        for sent in 0..20 {
            let reply = get(&gw, "/api/orders").await;
            assert_eq!(reply.status, 200, "request {sent}: {reply:?}");
        }
    })
    .await
    .expect("20 requests within 60 s");
    let unrouted = get(&gw, "/nothing-here").await;
    assert_eq!(unrouted.status, 404);

    let text = gw.metrics_text();
    assert_eq!(
        value_of(
            &text,
            r#"kong_http_requests_total{service="orders",route="orders-api",code="200",source="service",workspace="default",consumer=""}"#
        ),
        Some(20),
        "the proxy's route/service labels match the ones resolved from the config:\n{text}"
    );
    assert!(
        !text.contains(r#"code="404""#),
        "Kong does not count unrouted requests"
    );
    assert_eq!(
        value_of(
            &text,
            r#"sluice_http_requests_total{service="",route="",class="4xx",source="gateway"}"#
        ),
        Some(1)
    );
    assert_eq!(
        value_of(
            &text,
            r#"kong_request_latency_ms_count{service="orders",route="orders-api",workspace="default"}"#
        ),
        Some(20)
    );
    assert_eq!(
        value_of(
            &text,
            r#"sluice_upstream_attempts_total{upstream="orders-upstream",tier="1",region="us-east",result="response"}"#
        ),
        Some(20),
        "every request was answered by the secondary region:\n{text}"
    );
    let refused = value_of(
        &text,
        r#"sluice_upstream_attempts_total{upstream="orders-upstream",tier="0",region="eu-west",result="connect_failed"}"#,
    )
    .unwrap_or(0);
    let cross_region_successes = value_of(
        &text,
        r#"sluice_retries_total{upstream="orders-upstream",outcome="success",cross_region="true"}"#,
    )
    .unwrap_or(0);
    assert!(refused >= 1, "the primary was tried at least once:\n{text}");
    assert!(
        cross_region_successes >= 1,
        "at least one retry crossed into us-east and succeeded:\n{text}"
    );
    assert!(text.contains("# TYPE kong_upstream_target_health gauge"));
    assert!(text.contains(r#"sluice_upstream_mode{upstream="orders-upstream","#));
    assert_eq!(value_of(&text, "kong_datastore_reachable"), Some(1));

    check_with_promtool(&text);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_the_plugin_only_node_and_sluice_families_are_exported() {
    let eu1 = Backend::start("eu1", Behavior::Ok).await;
    let eu2 = Backend::start("eu2", Behavior::Ok).await;
    let us = Backend::start("us", Behavior::Ok).await;
    let primary = [eu1.addr.to_string(), eu2.addr.to_string()];
    let gw = gateway(&yaml(&primary, &us.addr.to_string(), "")).await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/api/x").await.status, 200);
    }
    let text = gw.metrics_text();
    assert!(!text.contains("kong_http_requests_total"), "{text}");
    assert!(!text.contains("kong_request_latency_ms"), "{text}");
    assert!(text.contains("kong_node_info{"));
    assert_eq!(
        value_of(
            &text,
            r#"sluice_http_requests_total{service="orders",route="orders-api",class="2xx",source="upstream"}"#
        ),
        Some(3)
    );
    gw.shutdown().await;
}

fn check_with_promtool(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_TOOLS").is_none(),
            "promtool is required (SLUICE_REQUIRE_TOOLS is set)"
        );
        eprintln!("SKIPPED promtool check: promtool not found");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write exposition");
    }
    let output = child.wait_with_output().expect("promtool output");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    // 0 = clean, 3 = lint findings only (Kong's own names; see metrics_exposition.rs).
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "promtool could not parse the exposition:\n{report}"
    );
    assert!(
        !report.contains("sluice_"),
        "Sluice's families must lint clean:\n{report}"
    );
}
