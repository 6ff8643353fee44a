//! The metrics exposition end to end: what a scrape shows after a fixed set of requests,
//! decisions and events; Kong's gating by plugin flags and scope; bounded labels;
//! counters across reloads; and `promtool check metrics` on the real output.

mod metrics_support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use sluice_config::model::{PluginScope, PrometheusConfig};
use sluice_core::Instant;
use sluice_core::decision::{DecisionKind, DecisionRecord};
use sluice_core::event::ProbeOutcome;
use sluice_core::snapshot::AddressKey;
use sluice_proxy::error::ErrorKind;
use sluice_proxy::metrics::{FAMILIES, MetricType, Metrics};
use sluice_proxy::record::{ResponseSource, RouteRef, ServiceRef, TryOutcome};

use metrics_support::*;

fn decision(kind: DecisionKind) -> DecisionRecord {
    DecisionRecord {
        seq: 0,
        at: Instant::from_millis(5_000),
        upstream: UPSTREAM.into(),
        kind,
        trigger: "fixture".into(),
        inputs: Vec::new(),
        before: Vec::new(),
        after: Vec::new(),
    }
}

fn key(addr: &str, hostname: &str) -> AddressKey {
    AddressKey {
        addr: addr.parse().expect("fixture address"),
        hostname: hostname.into(),
    }
}

/// A registry that has seen one of everything.
fn busy_metrics() -> Metrics {
    let metrics = Metrics::with_node_id("5c3b2a10-0000-4000-8000-000000000001");
    metrics.on_config(&config());

    for status in [200, 200, 201, 503] {
        metrics.on_request(&orders_request(status));
    }
    // Timed out in eu-west, retried successfully in us-east.
    let mut retried = orders_request(200);
    retried.tries = Default::default();
    retried.tries.push(try_record(
        "10.0.0.2:8080",
        "eu-west",
        0,
        TryOutcome::Timeout,
        1000,
    ));
    retried.tries.push(try_record(
        "10.1.0.7:8080",
        "us-east",
        1,
        TryOutcome::Status(200),
        80,
    ));
    retried.request_latency = std::time::Duration::from_millis(1085);
    retried.upstream_latency = Some(std::time::Duration::from_millis(80));
    retried.proxy_latency = std::time::Duration::from_millis(1005);
    retried.crossed_region = true;
    retried.crossed_tier = true;
    retried.try_timeouts = 1;
    metrics.on_request(&retried);
    // Connect failure, retry refused by the budget: the gateway answers 502.
    let mut refused = orders_request(502);
    refused.tries = Default::default();
    refused.tries.push(try_record(
        "10.0.0.1:8080",
        "eu-west",
        0,
        TryOutcome::ConnectFailed,
        3,
    ));
    refused.source = ResponseSource::Gateway;
    refused.error = Some(ErrorKind::UpstreamConnectFailed);
    refused.upstream_latency = None;
    refused.retry_budget_exhausted = true;
    refused.bytes_in = 128;
    metrics.on_request(&refused);
    // Route 1 (unnamed, service labelled by host; route-scoped plugin: status codes only).
    let mut legacy = orders_request(404);
    legacy.route = Some(RouteRef {
        index: 1,
        label: "7f9c2ba4-e88f-4d2b-9e2a-000000000002".into(),
    });
    legacy.service = Some(ServiceRef {
        index: 1,
        label: "legacy.internal".into(),
    });
    legacy.upstream = None;
    legacy.tries = Default::default();
    metrics.on_request(&legacy);
    // No route matched.
    let mut unrouted = orders_request(404);
    unrouted.route = None;
    unrouted.service = None;
    unrouted.upstream = None;
    unrouted.tries = Default::default();
    unrouted.source = ResponseSource::Gateway;
    unrouted.error = Some(ErrorKind::NoRouteMatched);
    metrics.on_request(&unrouted);

    metrics.on_decision(&decision(DecisionKind::Failover));
    metrics.on_decision(&decision(DecisionKind::Ejection));
    metrics.on_health_changed(UPSTREAM, &key("10.0.0.2:8080", "10.0.0.2"), false);
    metrics.on_probe(
        UPSTREAM,
        &key("10.0.0.2:8080", "10.0.0.2"),
        ProbeOutcome::Status(500),
    );
    metrics.on_probe(
        UPSTREAM,
        &key("10.0.0.1:8080", "10.0.0.1"),
        ProbeOutcome::Status(200),
    );
    metrics.on_probe(
        UPSTREAM,
        &key("10.1.0.7:8080", "orders.us-east.internal"),
        ProbeOutcome::Timeout,
    );
    metrics.on_reload(false, "ffff");
    metrics.on_passive_event_dropped();
    metrics.on_connection_opened();
    metrics.on_connection_opened();
    metrics.on_connection_closed();
    metrics
}

fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn value_of(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

#[test]
fn exposition_snapshot() {
    let text = busy_metrics().encode(&[snapshot()]);
    insta::assert_snapshot!("exposition", text);
}

#[test]
fn kong_families_use_kongs_labels_and_values() {
    let text = busy_metrics().encode(&[snapshot()]);
    assert_eq!(
        value_of(
            &text,
            r#"kong_http_requests_total{service="orders",route="orders-api",code="200",source="service",workspace="default",consumer=""}"#
        )
        .as_deref(),
        Some("3"),
        "two plain 200s plus the retried one:\n{text}"
    );
    assert_eq!(
        value_of(
            &text,
            r#"kong_http_requests_total{service="orders",route="orders-api",code="502",source="kong",workspace="default",consumer=""}"#
        )
        .as_deref(),
        Some("1")
    );
    // The unnamed route is labelled by its id, its service by its host.
    assert_eq!(
        value_of(
            &text,
            r#"kong_http_requests_total{service="legacy.internal",route="7f9c2ba4-e88f-4d2b-9e2a-000000000002",code="404",source="service",workspace="default",consumer=""}"#
        )
        .as_deref(),
        Some("1")
    );
    // Kong's `le` formatting and bucket placement: 42 ms lands in le="50" and above.
    let base = r#"kong_request_latency_ms_bucket{service="orders",route="orders-api",workspace="default",le="#;
    assert_eq!(
        value_of(&text, &format!(r#"{base}"25"}}"#)).as_deref(),
        Some("0")
    );
    assert_eq!(
        value_of(&text, &format!(r#"{base}"50"}}"#)).as_deref(),
        Some("5")
    );
    assert_eq!(
        value_of(&text, &format!(r#"{base}"2000"}}"#)).as_deref(),
        Some("6")
    );
    assert_eq!(
        value_of(&text, &format!(r#"{base}"+Inf"}}"#)).as_deref(),
        Some("6")
    );
    assert!(!text.contains(r#"le="25.0""#), "Kong prints integer bounds");
    let kong_latency = lines_of(&text, "kong_kong_latency_ms_bucket{service=\"orders\"");
    let bounds: Vec<&str> = kong_latency
        .iter()
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        bounds,
        [
            "1", "2", "5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500", "750",
            "1000", "3000", "6000", "+Inf"
        ]
    );
    // Bandwidth skips zero sizes, like Kong.
    assert_eq!(
        value_of(
            &text,
            r#"kong_bandwidth_bytes{service="orders",route="orders-api",direction="ingress",workspace="default",consumer=""}"#
        )
        .as_deref(),
        Some("128")
    );
    // Four states per address, the current one 1.
    let health = lines_of(&text, "kong_upstream_target_health{");
    assert_eq!(
        health.len(),
        12,
        "3 addresses x 4 states:\n{}",
        health.join("\n")
    );
    assert!(health.contains(
        &r#"kong_upstream_target_health{upstream="orders-upstream",target="10.0.0.2:8080",address="10.0.0.2:8080",state="unhealthy",subsystem="http"} 1"#
    ));
    assert!(health.contains(
        &r#"kong_upstream_target_health{upstream="orders-upstream",target="10.0.0.2:8080",address="10.0.0.2:8080",state="healthy",subsystem="http"} 0"#
    ));
    assert_eq!(
        value_of(&text, r#"kong_nginx_requests_total{node_id="5c3b2a10-0000-4000-8000-000000000001",subsystem="http"}"#)
            .as_deref(),
        Some("8")
    );
    assert_eq!(
        value_of(&text, "kong_datastore_reachable").as_deref(),
        Some("1")
    );
}

#[test]
fn sluice_families_count_retries_decisions_and_state() {
    let text = busy_metrics().encode(&[snapshot()]);
    let expect = [
        (
            r#"sluice_retries_total{upstream="orders-upstream",outcome="success",cross_region="true"}"#,
            "1",
        ),
        (
            r#"sluice_retries_total{upstream="orders-upstream",outcome="success",cross_region="false"}"#,
            "0",
        ),
        (
            r#"sluice_retries_total{upstream="orders-upstream",outcome="budget_exhausted",cross_region="false"}"#,
            "1",
        ),
        (
            r#"sluice_retry_budget_exhausted_total{upstream="orders-upstream"}"#,
            "1",
        ),
        (
            r#"sluice_try_timeouts_total{upstream="orders-upstream"}"#,
            "1",
        ),
        (
            r#"sluice_requests_crossed_region_total{upstream="orders-upstream"}"#,
            "1",
        ),
        (
            r#"sluice_upstream_attempts_total{upstream="orders-upstream",tier="0",region="eu-west",result="timeout"}"#,
            "1",
        ),
        (
            r#"sluice_upstream_attempts_total{upstream="orders-upstream",tier="1",region="us-east",result="response"}"#,
            "1",
        ),
        (
            r#"sluice_upstream_attempts_total{upstream="orders-upstream",tier="0",region="eu-west",result="response_5xx"}"#,
            "1",
        ),
        (
            r#"sluice_http_requests_total{service="orders",route="orders-api",class="5xx",source="upstream"}"#,
            "1",
        ),
        (
            r#"sluice_http_requests_total{service="orders",route="orders-api",class="5xx",source="gateway"}"#,
            "1",
        ),
        (
            r#"sluice_http_requests_total{service="",route="",class="4xx",source="gateway"}"#,
            "1",
        ),
        (
            r#"sluice_gateway_errors_total{kind="no_route_matched"}"#,
            "1",
        ),
        (
            r#"sluice_decisions_total{upstream="orders-upstream",kind="failover"}"#,
            "1",
        ),
        (r#"sluice_failovers_total{upstream="orders-upstream"}"#, "1"),
        (r#"sluice_ejections_total{upstream="orders-upstream"}"#, "1"),
        (r#"sluice_panics_total{upstream="orders-upstream"}"#, "0"),
        (
            r#"sluice_health_transitions_total{upstream="orders-upstream",to="unhealthy"}"#,
            "1",
        ),
        (
            r#"sluice_probes_total{upstream="orders-upstream",tier="0",region="eu-west",result="http_failure"}"#,
            "1",
        ),
        (
            r#"sluice_probes_total{upstream="orders-upstream",tier="0",region="eu-west",result="success"}"#,
            "1",
        ),
        (
            r#"sluice_probes_total{upstream="orders-upstream",tier="1",region="us-east",result="timeout"}"#,
            "1",
        ),
        (r#"sluice_config_reloads_total{result="failure"}"#, "1"),
        (r#"sluice_config_last_reload_successful"#, "0"),
        // A failed reload leaves the running configuration's hash in place.
        (r#"sluice_config_hash_info{hash="3b1f0c9a5e"}"#, "1"),
        (r#"sluice_passive_events_dropped_total"#, "1"),
        (
            r#"sluice_upstream_mode{upstream="orders-upstream",mode="failed_over"}"#,
            "1",
        ),
        (
            r#"sluice_upstream_mode{upstream="orders-upstream",mode="normal"}"#,
            "0",
        ),
        (
            r#"sluice_upstream_active_tier{upstream="orders-upstream"}"#,
            "0",
        ),
        // eu-west keeps 60% of new requests, all of it on its one available address.
        (
            r#"sluice_upstream_traffic_share_ratio{upstream="orders-upstream",tier="0",region="eu-west"}"#,
            "0.6",
        ),
        (
            r#"sluice_upstream_traffic_share_ratio{upstream="orders-upstream",tier="1",region="us-east"}"#,
            "0.4",
        ),
        (
            r#"sluice_target_state{upstream="orders-upstream",target="10.0.0.2:8080",address="10.0.0.2:8080",region="eu-west",tier="0",state="unhealthy"}"#,
            "1",
        ),
        (
            r#"sluice_target_ewma_latency_seconds{upstream="orders-upstream",target="10.0.0.1:8080",address="10.0.0.1:8080",region="eu-west",tier="0"}"#,
            "0.0125",
        ),
        (
            r#"sluice_target_in_flight_requests{upstream="orders-upstream",target="10.0.0.1:8080",address="10.0.0.1:8080",region="eu-west",tier="0"}"#,
            "2",
        ),
        (
            r#"sluice_target_state{upstream="orders-upstream",target="orders.us-east.internal:8080",address="10.1.0.7:8080",region="us-east",tier="1",state="available"}"#,
            "1",
        ),
    ];
    for (series, value) in expect {
        assert_eq!(
            value_of(&text, series).as_deref(),
            Some(value),
            "{series}\n{text}"
        );
    }
    assert_eq!(
        lines_of(&text, "sluice_config_hash_info").len(),
        1,
        "exactly one hash series"
    );
    // A budget-refused retry never went anywhere, so there is no cross-region variant.
    assert!(!text.contains(r#"outcome="budget_exhausted",cross_region="true""#));
}

#[test]
fn without_a_prometheus_plugin_kong_exports_no_per_request_families() {
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config_with_plugins(Vec::new()));
    metrics.on_request(&orders_request(200));
    let text = metrics.encode(&[snapshot()]);
    for family in [
        "kong_http_requests_total",
        "kong_request_latency_ms",
        "kong_upstream_latency_ms",
        "kong_kong_latency_ms",
        "kong_bandwidth_bytes",
        "kong_upstream_target_health",
    ] {
        assert!(
            !text.contains(family),
            "{family} exported without a plugin:\n{text}"
        );
    }
    // Node-level Kong families and Sluice's own families do not depend on the plugin.
    assert!(text.contains("kong_node_info{"));
    assert_eq!(
        value_of(
            &text,
            r#"sluice_http_requests_total{service="orders",route="orders-api",class="2xx",source="upstream"}"#
        )
        .as_deref(),
        Some("1")
    );
}

#[test]
fn each_flag_gates_its_family() {
    let only = |config: PrometheusConfig| {
        let metrics = Metrics::with_node_id("n");
        metrics.on_config(&config_with_plugins(vec![prometheus_plugin(
            "p",
            PluginScope::Global,
            config,
        )]));
        let mut rec = orders_request(200);
        rec.bytes_in = 10;
        metrics.on_request(&rec);
        metrics.encode(&[snapshot()])
    };
    let families = |text: &str| {
        [
            "kong_http_requests_total",
            "kong_request_latency_ms",
            "kong_bandwidth_bytes",
            "kong_upstream_target_health",
        ]
        .map(|f| text.contains(&format!("# TYPE {f} ")))
    };
    let off = PrometheusConfig::default();
    assert_eq!(families(&only(off.clone())), [false; 4]);
    let status = PrometheusConfig {
        status_code_metrics: true,
        ..off.clone()
    };
    assert_eq!(families(&only(status)), [true, false, false, false]);
    let latency = PrometheusConfig {
        latency_metrics: true,
        ..off.clone()
    };
    assert_eq!(families(&only(latency)), [false, true, false, false]);
    let bandwidth = PrometheusConfig {
        bandwidth_metrics: true,
        ..off.clone()
    };
    assert_eq!(families(&only(bandwidth)), [false, false, true, false]);
    let health = PrometheusConfig {
        upstream_health_metrics: true,
        ..off
    };
    assert_eq!(families(&only(health)), [false, false, false, true]);
}

#[test]
fn the_most_specific_plugin_instance_wins() {
    let status_only = PrometheusConfig {
        status_code_metrics: true,
        ..PrometheusConfig::default()
    };
    let latency_only = PrometheusConfig {
        latency_metrics: true,
        ..PrometheusConfig::default()
    };
    // Service 0 has a latency-only instance; route 0 (on service 0) a status-only one;
    // global has everything. Route 0 records status codes only; route 1 (service 1)
    // falls back to the global instance.
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config_with_plugins(vec![
        prometheus_plugin("g", PluginScope::Global, all_flags()),
        prometheus_plugin("s", PluginScope::Service(0), latency_only.clone()),
        prometheus_plugin("r", PluginScope::Route(0), status_only),
    ]));
    metrics.on_request(&orders_request(200));
    let mut legacy = orders_request(200);
    legacy.route = Some(RouteRef {
        index: 1,
        label: "7f9c2ba4-e88f-4d2b-9e2a-000000000002".into(),
    });
    legacy.service = Some(ServiceRef {
        index: 1,
        label: "legacy.internal".into(),
    });
    metrics.on_request(&legacy);
    let text = metrics.encode(&[]);
    assert!(
        text.contains(r#"kong_http_requests_total{service="orders",route="orders-api",code="200""#)
    );
    assert!(
        !text.contains(r#"kong_request_latency_ms_count{service="orders""#),
        "{text}"
    );
    assert!(text.contains(r#"kong_request_latency_ms_count{service="legacy.internal""#));

    // A service-scoped instance covers only its service's routes; a disabled instance
    // does not exist.
    let mut disabled = prometheus_plugin("g", PluginScope::Global, all_flags());
    disabled.enabled = false;
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config_with_plugins(vec![
        disabled,
        prometheus_plugin("s", PluginScope::Service(0), latency_only),
    ]));
    metrics.on_request(&orders_request(200));
    metrics.on_request(&legacy);
    let text = metrics.encode(&[]);
    assert!(text.contains(r#"kong_request_latency_ms_count{service="orders""#));
    assert!(
        !text.contains(r#"kong_request_latency_ms_count{service="legacy.internal""#),
        "no instance applies to service 1:\n{text}"
    );
    assert!(!text.contains("kong_http_requests_total"), "{text}");
}

#[test]
fn routes_without_a_service_are_not_counted_by_kong_families() {
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config());
    let mut orphan = orders_request(503);
    orphan.route = Some(RouteRef {
        index: 2,
        label: "orphan".into(),
    });
    orphan.service = None;
    orphan.upstream = None;
    orphan.source = ResponseSource::Gateway;
    orphan.error = Some(ErrorKind::NoService);
    metrics.on_request(&orphan);
    let text = metrics.encode(&[]);
    assert!(!text.contains(r#"route="orphan",code="#), "{text}");
    assert_eq!(
        value_of(
            &text,
            r#"sluice_http_requests_total{service="",route="orphan",class="5xx",source="gateway"}"#
        )
        .as_deref(),
        Some("1")
    );
}

#[test]
fn unknown_status_codes_become_other() {
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config());
    for status in [299, 299, 799, 200] {
        metrics.on_request(&orders_request(status));
    }
    let text = metrics.encode(&[]);
    let codes: Vec<&str> = lines_of(&text, "kong_http_requests_total{")
        .iter()
        .filter_map(|l| l.split("code=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(codes, ["200", "other"], "{text}");
    assert_eq!(
        value_of(&text, r#"kong_http_requests_total{service="orders",route="orders-api",code="other",source="service",workspace="default",consumer=""}"#)
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        value_of(&text, r#"sluice_http_requests_total{service="orders",route="orders-api",class="other",source="upstream"}"#)
            .as_deref(),
        Some("1"),
        "799 is outside 1xx..5xx"
    );
}

#[test]
fn label_values_are_escaped() {
    let mut config = config();
    if let Some(route) = config.routes.first_mut() {
        route.name = Some("we\"ird\\name\nx".into());
    }
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config);
    let mut rec = orders_request(200);
    rec.route = Some(RouteRef {
        index: 0,
        label: "we\"ird\\name\nx".into(),
    });
    metrics.on_request(&rec);
    let text = metrics.encode(&[]);
    assert!(text.contains(r#"route="we\"ird\\name\nx""#), "{text}");
    assert!(
        text.lines().all(|l| !l.ends_with("name")),
        "no raw newline inside a label"
    );
}

#[test]
fn counters_survive_a_reload_that_keeps_their_labels_and_go_with_removed_ones() {
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config());
    metrics.on_request(&orders_request(200));
    let mut next = config();
    next.hash = "new".into();
    metrics.on_config(&next);
    metrics.on_reload(true, "new");
    metrics.on_request(&orders_request(200));
    let text = metrics.encode(&[]);
    assert_eq!(
        value_of(&text, r#"sluice_http_requests_total{service="orders",route="orders-api",class="2xx",source="upstream"}"#)
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        value_of(&text, r#"sluice_config_hash_info{hash="new"}"#).as_deref(),
        Some("1")
    );
    assert_eq!(
        value_of(&text, "sluice_config_last_reload_successful").as_deref(),
        Some("1")
    );

    let mut renamed = config();
    if let Some(route) = renamed.routes.first_mut() {
        route.name = Some("orders-v2".into());
    }
    metrics.on_config(&renamed);
    let text = metrics.encode(&[]);
    assert!(
        !text.contains(r#"route="orders-api""#),
        "removed route's series remain:\n{text}"
    );
}

#[test]
fn a_record_from_a_previous_generation_is_not_credited_to_another_route() {
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config());
    // The proxy's route 0 was "gone-route" in its (older) generation.
    let mut stale = orders_request(200);
    stale.route = Some(RouteRef {
        index: 0,
        label: "gone-route".into(),
    });
    metrics.on_request(&stale);
    let text = metrics.encode(&[]);
    assert!(!text.contains(r#"route="orders-api",code="200""#), "{text}");
    assert_eq!(
        value_of(&text, r#"sluice_http_requests_total{service="orders",route="orders-api",class="2xx",source="upstream"}"#)
            .as_deref(),
        Some("0")
    );
}

#[test]
fn a_target_without_addresses_is_reported_as_dns_error() {
    let metrics = Metrics::with_node_id("n");
    metrics.on_config(&config());
    let mut snap = (*snapshot()).clone();
    snap.addresses.truncate(2);
    let text = metrics.encode(&[std::sync::Arc::new(snap)]);
    assert!(text.contains(
        r#"kong_upstream_target_health{upstream="orders-upstream",target="orders.us-east.internal:8080",address="",state="dns_error",subsystem="http"} 1"#
    ), "{text}");
}

#[test]
fn every_exported_family_is_declared_with_its_type() {
    let text = busy_metrics().encode(&[snapshot()]);
    let mut exported = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.trim_start_matches("# TYPE ").split(' ');
        let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let spec = FAMILIES
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} is exported but not in FAMILIES"));
        assert_eq!(spec.kind.as_str(), kind, "{name}");
        exported.push(name);
    }
    // The busy fixture exercises every family.
    let missing: Vec<&str> = FAMILIES
        .iter()
        .map(|f| f.name)
        .filter(|n| !exported.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "declared but never exported: {missing:?}"
    );
    let histograms = FAMILIES
        .iter()
        .filter(|f| f.kind == MetricType::Histogram)
        .count();
    assert_eq!(histograms, 3);
}

/// Lint findings promtool reports for Kong's own names. Kong chose them before the
/// Prometheus naming rules it breaks; renaming them would break every Kong dashboard, which
/// is the point of exporting them. Sluice's own families must lint clean.
const KONG_NAMING_EXCEPTIONS: &[&str] = &[
    r#"kong_bandwidth_bytes counter metrics should have "_total" suffix"#,
    "kong_kong_latency_ms metric names should not contain abbreviated units",
    "kong_upstream_latency_ms metric names should not contain abbreviated units",
    "kong_request_latency_ms metric names should not contain abbreviated units",
    r#"kong_nginx_requests_total non-counter metrics should not have "_total" suffix"#,
    r#"kong_nginx_connections_total non-counter metrics should not have "_total" suffix"#,
];

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("SLUICE_REQUIRE_TOOLS").is_none(),
        "promtool is required (SLUICE_REQUIRE_TOOLS is set): apt-get install prometheus"
    );
    eprintln!(
        "SKIPPED: promtool not found; install Debian's `prometheus` package to run this test"
    );
    None
}

#[test]
fn promtool_check_metrics_accepts_the_exposition() {
    let Some(promtool) = promtool() else { return };
    let mut config = config();
    if let Some(route) = config.routes.first_mut() {
        // Exercise escaping through a real parser too.
        route.name = Some("orders \"v1\" \\ api".into());
    }
    let metrics = busy_metrics();
    metrics.on_config(&config);
    let mut rec = orders_request(200);
    rec.route = Some(RouteRef {
        index: 0,
        label: "orders \"v1\" \\ api".into(),
    });
    metrics.on_request(&rec);
    let text = metrics.encode(&[snapshot()]);

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write exposition");
    let output = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Exit 0 = clean, 3 = lint findings only; anything else is a parse error.
    let code = output.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "promtool failed ({code:?}):\n{report}\n{text}"
    );
    let unexpected: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !KONG_NAMING_EXCEPTIONS.contains(l))
        .collect();
    assert!(unexpected.is_empty(), "promtool findings: {unexpected:#?}");
}

#[test]
fn concurrent_requests_and_reloads_lose_no_counts() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 20_000;
    let metrics = std::sync::Arc::new(Metrics::with_node_id("n"));
    metrics.on_config(&config());
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let metrics = metrics.clone();
            std::thread::spawn(move || {
                let rec = orders_request(200);
                for _ in 0..PER_THREAD {
                    metrics.on_request(&rec);
                }
            })
        })
        .collect();
    // Reload (same labels, new hash) while the workers run.
    let reloader = {
        let metrics = metrics.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                let mut next = config();
                next.hash = format!("h{i}");
                metrics.on_config(&next);
                // Scrapes race with everything else too.
                let _ = metrics.encode(&[snapshot()]);
            }
        })
    };
    for worker in workers {
        worker.join().expect("worker");
    }
    reloader.join().expect("reloader");
    let text = metrics.encode(&[]);
    let total = (THREADS * PER_THREAD).to_string();
    assert_eq!(
        value_of(
            &text,
            r#"kong_http_requests_total{service="orders",route="orders-api",code="200",source="service",workspace="default",consumer=""}"#
        ),
        Some(total.clone())
    );
    assert_eq!(
        value_of(
            &text,
            r#"sluice_http_requests_total{service="orders",route="orders-api",class="2xx",source="upstream"}"#
        ),
        Some(total.clone())
    );
    assert_eq!(
        value_of(
            &text,
            r#"kong_request_latency_ms_count{service="orders",route="orders-api",workspace="default"}"#
        ),
        Some(total.clone())
    );
    assert_eq!(
        value_of(
            &text,
            r#"sluice_upstream_attempts_total{upstream="orders-upstream",tier="0",region="eu-west",result="response"}"#
        ),
        Some(total)
    );
}
