//! A hand-built fake gateway for the Admin API's contract and browser tests.
//!
//! One upstream `api-up` with two tier-0 targets in `eu-west`, one tier-1 target in
//! `us-east` and one weight-0 target; a second upstream `static-up` with health checks
//! off. The demo panel's `down` fault on `127.0.0.1:9001` turns `api-up` into the
//! failed-over state a real controller would publish, with its decision record, so
//! tests can watch the page react.

#![allow(dead_code)] // each test binary uses a different part of the fake

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_admin::{
    AddressHealth, ApplyError, ApplyFuture, ConfigFormat, ConfigRejection, Control, DemoBackend,
    DemoControl, Fault, NotFound, ServerStats,
};
use sluice_config::Config;
use sluice_config::model::{
    HeaderValueMatch, HostMatch, PathMatch, Plugin, PluginConfig, PluginScope, PrometheusConfig,
    Protocol, Route, RouteExtensions, Service,
};
use sluice_core::decision::{DecisionKind, DecisionRecord, TierShare};
use sluice_core::load::AddressLoad;
use sluice_core::snapshot::{
    AddressKey, AddressView, DnsRecord, HealthStatus, Mode, TierView, Unavailable, UpstreamSnapshot,
};
use sluice_core::time::Instant;
use sluice_core::topology::{
    Algorithm, FailoverPolicy, HashOn, HealthChecks, TargetSpec, UpstreamSpec,
};

pub const NODE_ID: &str = "5f1a3c52-0c8e-4d7a-9b0e-2d6f8a1b7c33";
pub const PRIMARY_A: &str = "127.0.0.1:9001";
pub const PRIMARY_B: &str = "127.0.0.1:9002";
pub const BACKUP: &str = "127.0.0.1:9101";
pub const DISABLED: &str = "127.0.0.1:9201";
pub const SOURCE: &str = "_format_version: \"3.0\"\n# the fake's original configuration\n";

/// 2023-11-14T22:13:20.123Z: every entity's created_at/updated_at.
pub fn loaded_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
}

fn target(id: &str, address: &str, weight: u32, region: &str, tier: u8) -> TargetSpec {
    let (host, port) = address.rsplit_once(':').expect("test address has a port");
    TargetSpec {
        id: id.into(),
        target: address.into(),
        host: host.into(),
        port: port.parse().expect("test port"),
        weight,
        region: region.into(),
        tier,
        tags: vec![format!("region:{region}")],
    }
}

pub fn config(source: &str) -> Config {
    let mut checks = HealthChecks::default();
    checks.active.http_path = "/health".into();
    checks.active.healthy_interval = Duration::from_secs(5);
    checks.active.healthy_successes = 2;
    checks.active.unhealthy_interval = Duration::from_millis(2500);
    checks.active.unhealthy_http_failures = 3;
    let api_up = UpstreamSpec {
        id: "8c3e6f0a-1111-4a4a-8888-000000000001".into(),
        name: "api-up".into(),
        algorithm: Algorithm::RoundRobin,
        hash_on: HashOn::None,
        hash_fallback: HashOn::None,
        slots: 10000,
        host_header: None,
        healthchecks: checks,
        failover: FailoverPolicy::default(),
        targets: vec![
            target(
                "aaaaaaaa-0000-4000-8000-000000000001",
                PRIMARY_A,
                100,
                "eu-west",
                0,
            ),
            target(
                "aaaaaaaa-0000-4000-8000-000000000002",
                PRIMARY_B,
                100,
                "eu-west",
                0,
            ),
            target(
                "aaaaaaaa-0000-4000-8000-000000000003",
                BACKUP,
                100,
                "us-east",
                1,
            ),
            target(
                "aaaaaaaa-0000-4000-8000-000000000004",
                DISABLED,
                0,
                "us-east",
                1,
            ),
        ],
        tags: vec![],
    };
    let static_up = UpstreamSpec {
        id: "8c3e6f0a-1111-4a4a-8888-000000000002".into(),
        name: "static-up".into(),
        algorithm: Algorithm::ConsistentHashing,
        hash_on: HashOn::Header("x-user".into()),
        hash_fallback: HashOn::Cookie {
            name: "session".into(),
            path: "/".into(),
        },
        slots: 100,
        host_header: Some("static.internal".into()),
        healthchecks: HealthChecks::default(),
        failover: FailoverPolicy::default(),
        targets: vec![target(
            "bbbbbbbb-0000-4000-8000-000000000001",
            "127.0.0.1:9301",
            50,
            "default",
            0,
        )],
        tags: vec!["team:web".into()],
    };
    let service = |id: &str, name: &str, host: &str, upstream: Option<usize>| Service {
        id: id.into(),
        name: Some(name.into()),
        protocol: Protocol::Http,
        host: host.into(),
        port: 80,
        path: None,
        retries: 5,
        connect_timeout: Duration::from_millis(60_000),
        write_timeout: Duration::from_millis(60_000),
        read_timeout: Duration::from_millis(60_000),
        enabled: true,
        tags: vec![],
        upstream,
        tls: Default::default(),
    };
    let route = |id: &str, name: &str, service: usize| Route {
        id: id.into(),
        name: Some(name.into()),
        service: Some(service),
        protocols: vec![Protocol::Http, Protocol::Https],
        methods: vec![],
        hosts: vec![],
        paths: vec![],
        headers: vec![],
        strip_path: true,
        preserve_host: false,
        regex_priority: 0,
        path_handling: "v0".into(),
        https_redirect_status_code: 426,
        snis: Vec::new(),
        tags: vec![],
        extensions: RouteExtensions::default(),
    };
    let mut api_route = route("cccccccc-0000-4000-8000-000000000001", "api", 0);
    api_route.paths = vec![PathMatch::Prefix("/api".into())];
    let mut web_route = route("cccccccc-0000-4000-8000-000000000002", "web", 1);
    web_route.methods = vec!["GET".into()];
    web_route.hosts = vec![
        HostMatch::Exact("www.example.com".into()),
        HostMatch::WildcardPrefix(".example.org".into()),
    ];
    web_route.paths = vec![PathMatch::Regex(r"/static/\d+".into())];
    web_route.headers = vec![(
        "x-canary".into(),
        vec![
            HeaderValueMatch::Exact("yes".into()),
            HeaderValueMatch::Regex("^t".into()),
        ],
    )];
    web_route.tags = vec!["web".into()];
    Config {
        format_version: "3.0".into(),
        services: vec![
            service(
                "dddddddd-0000-4000-8000-000000000001",
                "api",
                "api-up",
                Some(0),
            ),
            service(
                "dddddddd-0000-4000-8000-000000000002",
                "web",
                "static-up",
                Some(1),
            ),
        ],
        routes: vec![api_route, web_route],
        upstreams: vec![api_up, static_up],
        plugins: vec![Plugin {
            id: "eeeeeeee-0000-4000-8000-000000000001".into(),
            name: "prometheus".into(),
            enabled: true,
            scope: PluginScope::Global,
            config: PluginConfig::Prometheus(PrometheusConfig {
                status_code_metrics: true,
                upstream_health_metrics: true,
                ..PrometheusConfig::default()
            }),
            tags: vec![],
        }],
        certificates: Vec::new(),
        snis: Vec::new(),
        ca_certificates: Vec::new(),
        upstream_client_certificates: Vec::new(),
        hash: format!("{:032x}", source.len()),
        source: source.into(),
    }
}

/// Which state the fake's `api-up` is in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    Normal,
    /// `127.0.0.1:9001` is down and ejected: tier 0 has half its weight, 70% of traffic
    /// stays there (overprovisioning 1.4), 30% spills to us-east.
    FailedOver,
}

/// Where an address sits: (address, target index, weight, tier, region).
type Placement<'a> = (&'a str, u32, u32, u8, &'a str);

fn address(
    (addr, target_index, weight, tier, region): Placement<'_>,
    health: HealthStatus,
    unavailable: Option<Unavailable>,
    (ewma_ms, in_flight): (f64, u32),
) -> AddressView {
    let load = AddressLoad::default();
    load.store_ewma(ewma_ms * 1000.0, Instant::from_millis(60_000));
    for _ in 0..in_flight {
        load.start();
    }
    let addr: SocketAddr = addr.parse().expect("test address");
    AddressView {
        key: AddressKey {
            addr,
            hostname: addr.ip().to_string().into(),
        },
        target_index,
        weight,
        effective_weight: if unavailable.is_some() { 0 } else { weight },
        tier,
        region: region.into(),
        health,
        unavailable,
        load: Arc::new(load),
        dns: DnsRecord::of(addr, false),
    }
}

fn tier(tier: u8, region: &str, members: Vec<u32>, share_ppm: u32, healthy_share: f64) -> TierView {
    TierView {
        tier,
        regions: vec![region.into()],
        rr_order: members.clone().into(),
        members,
        share_ppm,
        healthy_share,
        rr_cursor: Arc::default(),
    }
}

pub fn snapshots(scenario: Scenario) -> Vec<Arc<UpstreamSnapshot>> {
    let failed = scenario == Scenario::FailedOver;
    let api_up = UpstreamSnapshot {
        version: if failed { 8 } else { 7 },
        name: "api-up".into(),
        algorithm: Algorithm::RoundRobin,
        addresses: vec![
            if failed {
                address(
                    (PRIMARY_A, 0, 100, 0, "eu-west"),
                    HealthStatus::Unhealthy,
                    Some(Unavailable::Ejected { until_ms: 90_000 }),
                    (812.0, 0),
                )
            } else {
                address(
                    (PRIMARY_A, 0, 100, 0, "eu-west"),
                    HealthStatus::Healthy,
                    None,
                    (4.25, 3),
                )
            },
            address(
                (PRIMARY_B, 1, 100, 0, "eu-west"),
                HealthStatus::Healthy,
                None,
                (3.5, 2),
            ),
            address(
                (BACKUP, 2, 100, 1, "us-east"),
                HealthStatus::Healthy,
                None,
                (71.0, if failed { 4 } else { 0 }),
            ),
            address(
                (DISABLED, 3, 0, 1, "us-east"),
                HealthStatus::HealthchecksOff,
                Some(Unavailable::ZeroWeight),
                (0.0, 0),
            ),
        ],
        tiers: if failed {
            vec![
                tier(0, "eu-west", vec![0, 1], 700_000, 0.5),
                tier(1, "us-east", vec![2, 3], 300_000, 1.0),
            ]
        } else {
            vec![
                tier(0, "eu-west", vec![0, 1], 1_000_000, 1.0),
                tier(1, "us-east", vec![2, 3], 0, 1.0),
            ]
        },
        mode: if failed {
            Mode::FailedOver
        } else {
            Mode::Normal
        },
        balancer_healthy: true,
        hash_tables: vec![],
    };
    let static_up = UpstreamSnapshot {
        version: 3,
        name: "static-up".into(),
        algorithm: Algorithm::ConsistentHashing,
        addresses: vec![address(
            ("127.0.0.1:9301", 0, 50, 0, "default"),
            HealthStatus::HealthchecksOff,
            None,
            (1.0, 0),
        )],
        tiers: vec![tier(0, "default", vec![0], 1_000_000, 1.0)],
        mode: Mode::Normal,
        balancer_healthy: true,
        hash_tables: vec![],
    };
    vec![Arc::new(api_up), Arc::new(static_up)]
}

fn failover_record(seq: u64) -> DecisionRecord {
    DecisionRecord {
        seq,
        at: Instant::from_millis(61_500),
        upstream: "api-up".into(),
        kind: DecisionKind::Spill,
        trigger: "tier 0 healthy share 0.50 < 1/1.4: spill 30% to tier 1".into(),
        inputs: vec![
            ("tier0_healthy_share".into(), "0.50".into()),
            ("overprovisioning".into(), "1.4".into()),
        ],
        before: vec![
            TierShare {
                tier: 0,
                regions: vec!["eu-west".into()],
                share_ppm: 1_000_000,
            },
            TierShare {
                tier: 1,
                regions: vec!["us-east".into()],
                share_ppm: 0,
            },
        ],
        after: vec![
            TierShare {
                tier: 0,
                regions: vec!["eu-west".into()],
                share_ppm: 700_000,
            },
            TierShare {
                tier: 1,
                regions: vec!["us-east".into()],
                share_ppm: 300_000,
            },
        ],
    }
}

/// One call of `set_health`, as the fake recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCall {
    pub upstream: String,
    pub target: String,
    pub address: Option<SocketAddr>,
    pub healthy: bool,
}

pub struct State {
    pub config: Arc<Config>,
    pub scenario: Scenario,
    pub decisions: Vec<Arc<DecisionRecord>>,
    pub health_calls: Vec<HealthCall>,
    pub faults: Vec<(String, String, Fault)>,
    pub apply_calls: usize,
    /// Addresses of `api-up` (by position) reported as having come from another DNS
    /// record type than their IP family's.
    pub dns_overrides: Vec<(usize, DnsRecord)>,
}

/// The fake gateway. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FakeControl {
    state: Arc<Mutex<State>>,
    demo: Option<FakeDemo>,
}

#[derive(Clone)]
pub struct FakeDemo {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeControl {
    pub fn new(with_demo: bool) -> Self {
        let state = Arc::new(Mutex::new(State {
            config: Arc::new(config(SOURCE)),
            scenario: Scenario::Normal,
            decisions: Vec::new(),
            health_calls: Vec::new(),
            faults: vec![
                (PRIMARY_A.into(), "eu-west".into(), Fault::None),
                (PRIMARY_B.into(), "eu-west".into(), Fault::None),
                (BACKUP.into(), "us-east".into(), Fault::None),
            ],
            apply_calls: 0,
            dns_overrides: Vec::new(),
        }));
        let demo = with_demo.then(|| FakeDemo {
            state: state.clone(),
        });
        FakeControl { state, demo }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Move to the failed-over state, as if the controller had decided it.
    pub fn fail_over(&self) {
        fail_over(&mut lock(&self.state));
    }
}

fn fail_over(state: &mut State) {
    if state.scenario != Scenario::FailedOver {
        state.scenario = Scenario::FailedOver;
        let seq = state.decisions.len() as u64 + 1;
        state.decisions.push(Arc::new(failover_record(seq)));
    }
}

impl Control for FakeControl {
    fn node_id(&self) -> &str {
        NODE_ID
    }

    fn config(&self) -> Arc<Config> {
        lock(&self.state).config.clone()
    }

    fn config_loaded_at(&self) -> SystemTime {
        loaded_at()
    }

    /// Accepts any text except text containing `invalid`, which it rejects the way the
    /// config crate would reject a target weight out of range.
    fn apply_config(&self, text: String, _format: ConfigFormat) -> ApplyFuture<'_> {
        let text = text.as_str();
        let result = (|| -> Result<Arc<Config>, ApplyError> {
            let mut state = lock(&self.state);
            state.apply_calls += 1;
            if text.contains("invalid") {
                return Err(ApplyError::Invalid(ConfigRejection {
                    message: "declarative config is invalid: {upstreams={{targets={[2]={weight=\"value should be between 0 and 65535\"}}}}}".into(),
                    fields: serde_json::json!({"upstreams": [{"targets": [null, {"weight": "value should be between 0 and 65535"}]}]}),
                    flattened_errors: vec![serde_json::json!({
                        "entity_type": "target",
                        "entity_name": null,
                        "entity_id": null,
                        "entity_tags": null,
                        "entity": {"target": "10.0.0.2:80", "weight": 70000},
                        "errors": [{"type": "field", "field": "weight", "message": "value should be between 0 and 65535"}],
                    })],
                }));
            }
            let config = Arc::new(config(text));
            state.config = config.clone();
            Ok(config)
        })();
        Box::pin(std::future::ready(result))
    }

    fn upstream_snapshots(&self) -> Vec<Arc<UpstreamSnapshot>> {
        let state = lock(&self.state);
        let mut all = snapshots(state.scenario);
        if let Some(api) = all.iter_mut().find(|s| &*s.name == "api-up") {
            let api = Arc::make_mut(api);
            for &(index, dns) in &state.dns_overrides {
                if let Some(address) = api.addresses.get_mut(index) {
                    address.dns = dns;
                }
            }
        }
        all
    }

    fn address_health(&self, upstream: &str) -> Option<Vec<AddressHealth>> {
        (upstream == "api-up").then(|| {
            vec![AddressHealth {
                addr: PRIMARY_B.parse().expect("test address"),
                hostname: "127.0.0.1".into(),
                healthy: true,
                successes: 2,
                http_failures: 0,
                tcp_failures: 0,
                timeouts: 0,
            }]
        })
    }

    fn set_health(
        &self,
        upstream: &str,
        target: &str,
        address: Option<SocketAddr>,
        healthy: bool,
    ) -> Result<(), NotFound> {
        let mut state = lock(&self.state);
        // The gateway knows only addresses it resolved: 10.9.9.9 is never one of them.
        if address.is_some_and(|a| a.ip().to_string() == "10.9.9.9") {
            return Err(NotFound);
        }
        state.health_calls.push(HealthCall {
            upstream: upstream.into(),
            target: target.into(),
            address,
            healthy,
        });
        Ok(())
    }

    fn decisions(&self, since: u64) -> Vec<Arc<DecisionRecord>> {
        lock(&self.state)
            .decisions
            .iter()
            .filter(|r| r.seq > since)
            .cloned()
            .collect()
    }

    fn now(&self) -> Instant {
        Instant::from_millis(64_000)
    }

    fn metrics_text(&self) -> String {
        "# HELP kong_upstream_target_health Health status of targets of upstream.\n\
         # TYPE kong_upstream_target_health gauge\n\
         kong_upstream_target_health{upstream=\"api-up\",target=\"127.0.0.1:9001\",address=\"127.0.0.1:9001\",state=\"healthy\",subsystem=\"http\"} 1\n"
            .into()
    }

    fn server_stats(&self) -> ServerStats {
        ServerStats {
            total_requests: 1234,
            connections_active: 3,
            connections_accepted: 57,
            connections_handled: 57,
        }
    }

    fn demo(&self) -> Option<&dyn DemoControl> {
        self.demo.as_ref().map(|d| d as &dyn DemoControl)
    }
}

impl DemoControl for FakeDemo {
    fn backends(&self) -> Vec<DemoBackend> {
        lock(&self.state)
            .faults
            .iter()
            .map(|(target, region, fault)| DemoBackend {
                target: target.clone(),
                region: region.clone(),
                upstream: "api-up".into(),
                fault: *fault,
            })
            .collect()
    }

    /// Taking down (or breaking) the first eu-west backend fails `api-up` over.
    fn set_fault(&self, target: &str, fault: Fault) -> Result<(), NotFound> {
        let mut state = lock(&self.state);
        let entry = state
            .faults
            .iter_mut()
            .find(|(t, _, _)| t == target)
            .ok_or(NotFound)?;
        entry.2 = fault;
        if target == PRIMARY_A && matches!(fault, Fault::Down | Fault::Error(_)) {
            fail_over(&mut state);
        }
        Ok(())
    }
}
