//! Fixed inputs for the metrics tests and bench: a small validated configuration with
//! prometheus plugins at two scopes, an upstream split over two regions and tiers, a
//! snapshot of it, and request records.
//!
//! The configuration is built by hand (not parsed) so these tests depend only on the
//! model types, not on the YAML front end.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sluice_config::Config;
use sluice_config::model::{
    Plugin, PluginConfig, PluginScope, PrometheusConfig, Protocol, Route, RouteExtensions, Service,
};
use sluice_core::Instant;
use sluice_core::load::AddressLoad;
use sluice_core::retry::RetryBudgetPolicy;
use sluice_core::snapshot::{
    AddressKey, AddressView, HealthStatus, Mode, TierView, Unavailable, UpstreamSnapshot,
};
use sluice_core::topology::{
    Algorithm, FailoverPolicy, HashOn, HealthChecks, OutlierPolicy, TargetSpec, UpstreamSpec,
};
use sluice_proxy::record::{
    RequestRecord, ResponseSource, RouteRef, ServiceRef, Tries, TryOutcome, TryRecord,
};

pub const UPSTREAM: &str = "orders-upstream";

fn target(host: &str, port: u16, region: &str, tier: u8) -> TargetSpec {
    TargetSpec {
        id: format!("target-{host}-{port}"),
        target: format!("{host}:{port}"),
        host: host.to_owned(),
        port,
        weight: 100,
        region: region.into(),
        tier,
        tags: Vec::new(),
    }
}

fn failover_policy() -> FailoverPolicy {
    FailoverPolicy {
        overprovisioning: 1.4,
        panic_threshold: 0.5,
        failback_hold_down: Duration::from_secs(30),
        failback_hold_down_max: Duration::from_secs(300),
        failback_ramp: Duration::from_secs(60),
        ramp_start_share: 0.1,
        ramp_abort_error_rate: 0.05,
        slow_start: Duration::ZERO,
        adaptive_weights: false,
        outlier: OutlierPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        },
        retry_budget: RetryBudgetPolicy::default(),
    }
}

pub fn upstream_spec() -> UpstreamSpec {
    UpstreamSpec {
        id: "u-1".into(),
        name: UPSTREAM.into(),
        algorithm: Algorithm::RoundRobin,
        hash_on: HashOn::None,
        hash_fallback: HashOn::None,
        slots: 10_000,
        host_header: None,
        healthchecks: HealthChecks::default(),
        failover: failover_policy(),
        targets: vec![
            target("10.0.0.1", 8080, "eu-west", 0),
            target("10.0.0.2", 8080, "eu-west", 0),
            target("orders.us-east.internal", 8080, "us-east", 1),
        ],
        tags: Vec::new(),
    }
}

fn service(id: &str, name: Option<&str>, host: &str, upstream: Option<usize>) -> Service {
    Service {
        id: id.into(),
        name: name.map(Into::into),
        protocol: Protocol::Http,
        host: host.into(),
        port: 80,
        path: None,
        retries: 5,
        connect_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(60),
        read_timeout: Duration::from_secs(60),
        enabled: true,
        tags: Vec::new(),
        upstream,
        tls: Default::default(),
    }
}

fn route(id: &str, name: Option<&str>, service: Option<usize>) -> Route {
    Route {
        id: id.into(),
        name: name.map(Into::into),
        service,
        protocols: vec![Protocol::Http],
        methods: Vec::new(),
        hosts: Vec::new(),
        paths: Vec::new(),
        headers: Vec::new(),
        strip_path: true,
        preserve_host: false,
        regex_priority: 0,
        path_handling: "v0".into(),
        https_redirect_status_code: 426,
        snis: Vec::new(),
        tags: Vec::new(),
        extensions: RouteExtensions::default(),
    }
}

pub fn prometheus_plugin(id: &str, scope: PluginScope, config: PrometheusConfig) -> Plugin {
    Plugin {
        id: id.into(),
        name: "prometheus".into(),
        enabled: true,
        scope,
        config: PluginConfig::Prometheus(config),
        tags: Vec::new(),
    }
}

pub fn all_flags() -> PrometheusConfig {
    PrometheusConfig {
        per_consumer: false,
        status_code_metrics: true,
        latency_metrics: true,
        bandwidth_metrics: true,
        upstream_health_metrics: true,
        ai_metrics: false,
    }
}

/// Routes: 0 `orders-api` (service `orders`, upstream), 1 unnamed (service `legacy`,
/// labelled by host), 2 `orphan` (no service). Plugins: global with every flag; a
/// route-scoped instance on route 1 with only `status_code_metrics`.
pub fn config_with_plugins(plugins: Vec<Plugin>) -> Config {
    Config {
        format_version: "3.0".into(),
        services: vec![
            service("s-1", Some("orders"), UPSTREAM, Some(0)),
            service("s-2", None, "legacy.internal", None),
        ],
        routes: vec![
            route("r-1", Some("orders-api"), Some(0)),
            route("7f9c2ba4-e88f-4d2b-9e2a-000000000002", None, Some(1)),
            route("r-3", Some("orphan"), None),
        ],
        upstreams: vec![upstream_spec()],
        plugins,
        certificates: Vec::new(),
        snis: Vec::new(),
        ca_certificates: Vec::new(),
        upstream_client_certificates: Vec::new(),
        hash: "3b1f0c9a5e".into(),
        source: Arc::from(""),
    }
}

pub fn config() -> Config {
    config_with_plugins(vec![
        prometheus_plugin("p-global", PluginScope::Global, all_flags()),
        prometheus_plugin(
            "p-route",
            PluginScope::Route(1),
            PrometheusConfig {
                status_code_metrics: true,
                ..PrometheusConfig::default()
            },
        ),
    ])
}

fn address(
    addr: &str,
    hostname: &str,
    target_index: u32,
    region: &str,
    tier: u8,
    health: HealthStatus,
    unavailable: Option<Unavailable>,
) -> AddressView {
    let addr: SocketAddr = addr.parse().expect("fixture address");
    AddressView {
        key: AddressKey {
            addr,
            hostname: hostname.into(),
        },
        target_index,
        weight: 100,
        effective_weight: if unavailable.is_none() { 100 } else { 0 },
        tier,
        region: region.into(),
        health,
        unavailable,
        load: Arc::new(AddressLoad::new(Instant::ZERO)),
        dns: sluice_core::snapshot::DnsRecord::A,
    }
}

/// The upstream failed over: one eu-west address is unhealthy, so 40% of new requests
/// spill to us-east.
pub fn snapshot() -> Arc<UpstreamSnapshot> {
    let addresses = vec![
        address(
            "10.0.0.1:8080",
            "10.0.0.1",
            0,
            "eu-west",
            0,
            HealthStatus::Healthy,
            None,
        ),
        address(
            "10.0.0.2:8080",
            "10.0.0.2",
            1,
            "eu-west",
            0,
            HealthStatus::Unhealthy,
            Some(Unavailable::Unhealthy),
        ),
        address(
            "10.1.0.7:8080",
            "orders.us-east.internal",
            2,
            "us-east",
            1,
            HealthStatus::Healthy,
            None,
        ),
    ];
    if let Some(first) = addresses.first() {
        first.load.store_ewma(12_500.0, Instant::from_millis(1_000));
        first.load.start();
        first.load.start();
    }
    let tier = |tier: u8, region: &str, members: Vec<u32>, share_ppm: u32| TierView {
        tier,
        regions: vec![region.into()],
        rr_order: members.clone().into(),
        members,
        share_ppm,
        healthy_share: 0.5,
        rr_cursor: Arc::new(AtomicU64::new(0)),
    };
    Arc::new(UpstreamSnapshot {
        version: 7,
        name: UPSTREAM.into(),
        algorithm: Algorithm::RoundRobin,
        addresses,
        tiers: vec![
            tier(0, "eu-west", vec![0, 1], 600_000),
            tier(1, "us-east", vec![2], 400_000),
        ],
        mode: Mode::FailedOver,
        balancer_healthy: true,
        hash_tables: Vec::new(),
    })
}

pub fn try_record(addr: &str, region: &str, tier: u8, outcome: TryOutcome, ms: u64) -> TryRecord {
    TryRecord {
        address: addr.parse().expect("fixture address"),
        region: region.into(),
        tier,
        outcome,
        latency: Duration::from_millis(ms),
        hedge: false,
    }
}

/// A request on route 0 (`orders-api`) answered by the upstream with `status` on the
/// first try.
pub fn orders_request(status: u16) -> RequestRecord {
    let mut tries = Tries::default();
    tries.push(try_record(
        "10.0.0.1:8080",
        "eu-west",
        0,
        TryOutcome::Status(status),
        40,
    ));
    RequestRecord {
        request_id: 1,
        method: http::Method::GET,
        route: Some(RouteRef {
            index: 0,
            label: "orders-api".into(),
        }),
        service: Some(ServiceRef {
            index: 0,
            label: "orders".into(),
        }),
        upstream: Some(UPSTREAM.into()),
        status,
        source: ResponseSource::Upstream,
        tries,
        request_latency: Duration::from_millis(42),
        upstream_latency: Some(Duration::from_millis(40)),
        proxy_latency: Duration::from_millis(2),
        bytes_in: 0,
        bytes_out: 512,
        crossed_region: false,
        crossed_tier: false,
        retry_budget_exhausted: false,
        try_timeouts: 0,
        hedged: false,
        error: None,
    }
}
