//! Route matching cost at 10,000 routes (criterion).
//!
//! The route mix is shaped like a large multi-tenant Kong deployment: host-bound routes,
//! path-only prefix routes, regex routes with captures and header-routed canaries.
//! Reported per case: a host-bound hit, a prefix hit, a regex hit, a header hit and a
//! miss (the 404 path, which must look at every plausible candidate).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use sluice_config::model::{
    Config, HeaderValueMatch, HostMatch, PathMatch, Protocol, Route, Service,
};
use sluice_proxy::headers::HeaderView;
use sluice_proxy::router::{RequestFacts, Router};

const ROUTES: usize = 10_000;

fn route(i: usize) -> Route {
    let mut route = Route {
        id: format!("route-{i}"),
        name: Some(format!("route-{i}")),
        service: Some(0),
        protocols: vec![Protocol::Http, Protocol::Https],
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
        extensions: Default::default(),
    };
    match i % 20 {
        // 50%: host-bound tenants with a versioned API prefix.
        0..=9 => {
            route.hosts = vec![HostMatch::Exact(format!("tenant{i}.example.com"))];
            route.paths = vec![PathMatch::Prefix(format!("/api/v{}", i % 3))];
        }
        // 30%: path-only services.
        10..=15 => route.paths = vec![PathMatch::Prefix(format!("/svc{i}/"))],
        // 10%: regex routes with a capture.
        16 | 17 => {
            route.paths = vec![PathMatch::Regex(format!(r"/users{i}/(?<id>\d+)$"))];
            route.methods = vec!["GET".into()];
        }
        // 10%: header-routed canaries on wildcard hosts.
        _ => {
            route.hosts = vec![HostMatch::WildcardPrefix(format!(".zone{i}.example.net"))];
            route.headers = vec![(
                "x-canary".into(),
                vec![HeaderValueMatch::Exact(format!("c{i}"))],
            )];
        }
    }
    route
}

fn config() -> Config {
    Config {
        format_version: "3.0".into(),
        services: vec![Service {
            id: "svc".into(),
            name: Some("svc".into()),
            protocol: Protocol::Http,
            host: "127.0.0.1".into(),
            port: 80,
            path: None,
            retries: 5,
            connect_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            enabled: true,
            tags: Vec::new(),
            upstream: None,
            tls: Default::default(),
        }],
        routes: (0..ROUTES).map(route).collect(),
        upstreams: Vec::new(),
        plugins: Vec::new(),
        certificates: Vec::new(),
        snis: Vec::new(),
        ca_certificates: Vec::new(),
        upstream_client_certificates: Vec::new(),
        hash: String::new(),
        source: Arc::from(""),
    }
}

fn bench(c: &mut Criterion) {
    let config = config();
    let started = std::time::Instant::now();
    let router = Router::build(&config).expect("bench routes compile");
    eprintln!(
        "compiled {} routes in {:?}",
        router.len(),
        started.elapsed()
    );

    let empty = HeaderMap::new();
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("c9999"));
    let cases: [(&str, &str, &str, &HeaderMap, Option<&str>); 5] = [
        (
            "host_hit",
            "tenant5000.example.com",
            "/api/v2/orders/1",
            &empty,
            Some("route-5000"),
        ),
        (
            "prefix_hit",
            "any.example.org",
            "/svc7011/items/42",
            &empty,
            Some("route-7011"),
        ),
        (
            "regex_hit",
            "any.example.org",
            "/users9017/12345",
            &empty,
            Some("route-9017"),
        ),
        (
            "header_hit",
            "a.zone9999.example.net",
            "/",
            &canary,
            Some("route-9999"),
        ),
        ("miss", "nobody.example.org", "/nothing/here", &empty, None),
    ];
    let mut group = c.benchmark_group("router_10k");
    for (name, host, path, headers, expected) in cases {
        let facts = RequestFacts {
            method: &Method::GET,
            host,
            path,
            headers: HeaderView::Map(headers),
        };
        let found = router.find(facts).map(|m| m.info.route.label.to_string());
        assert_eq!(found.as_deref(), expected, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(router.find(black_box(facts)).is_some()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
