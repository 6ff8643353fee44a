//! Route matching, path handling and Kong's upstream request headers, end to end.

use crate::support::backend::{Backend, Behavior};
use crate::support::{gateway, send};

#[tokio::test]
async fn routes_by_host_and_path_with_kong_priority() {
    let a = Backend::start("a", Behavior::Ok).await;
    let b = Backend::start("b", Behavior::Ok).await;
    let c = Backend::start("c", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc-a
    url: http://{a}
    routes:
      - name: short
        paths: ["/api"]
  - name: svc-b
    url: http://{b}
    routes:
      - name: long
        paths: ["/api/v2"]
  - name: svc-c
    url: http://{c}
    routes:
      - name: host-bound
        hosts: ["*.tenant.test"]
        paths: ["/api"]
"#,
        a = a.addr,
        b = b.addr,
        c = c.addr
    );
    let gw = gateway(&yaml).await;
    let cases = [
        ("example.test", "/api/x", "a", "prefix match"),
        ("example.test", "/api/v2/x", "b", "longest prefix wins"),
        (
            "one.tenant.test:8000",
            "/api/v2/x",
            "c",
            "host + path beats a longer path alone",
        ),
    ];
    for (host, path, expected, why) in cases {
        let reply = send(&gw, "GET", host, path, &[], "").await;
        assert_eq!(reply.status, 200, "{why}");
        assert_eq!(reply.body, expected, "{why}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn strip_path_service_path_and_forwarded_headers() {
    let echo = Backend::start("echo", Behavior::Echo).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}/base
    routes:
      - name: stripped
        paths: ["/public"]
        strip_path: true
      - name: kept
        paths: ["/keep"]
        strip_path: false
        preserve_host: true
"#,
        addr = echo.addr
    );
    let gw = gateway(&yaml).await;
    let reply = send(
        &gw,
        "GET",
        "api.example.test",
        "/public/users?id=7",
        &[
            ("x-forwarded-for", "10.1.1.1"),
            ("connection", "x-drop"),
            ("x-drop", "1"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    let head = reply.body.to_ascii_lowercase();
    assert!(
        head.starts_with("get /base/users?id=7 http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("host: {}\r\n", echo.addr)),
        "Host is the target: {head}"
    );
    assert!(
        head.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("x-real-ip: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
    assert!(
        head.contains("x-forwarded-host: api.example.test\r\n"),
        "{head}"
    );
    assert!(
        head.contains("x-forwarded-path: /public/users\r\n"),
        "{head}"
    );
    assert!(head.contains("via: 1.1 sluice\r\n"), "{head}");
    assert!(head.contains("x-sluice-request-id: "), "{head}");
    assert!(
        !head.contains("x-drop"),
        "headers named in Connection are removed: {head}"
    );
    assert_eq!(reply.header("via"), "1.1 sluice");
    assert_eq!(reply.header("x-sluice-request-id").len(), 32);
    assert!(
        reply
            .header("x-sluice-upstream-latency")
            .parse::<u64>()
            .is_ok()
    );
    assert!(
        reply
            .header("x-sluice-proxy-latency")
            .parse::<u64>()
            .is_ok()
    );

    let reply = send(&gw, "GET", "client.example:8000", "/keep/me", &[], "").await;
    let head = reply.body.to_ascii_lowercase();
    assert!(head.starts_with("get /base/keep/me http/1.1\r\n"), "{head}");
    assert!(
        head.contains("host: client.example:8000\r\n"),
        "preserve_host: {head}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn header_and_method_rules() {
    let v1 = Backend::start("v1", Behavior::Ok).await;
    let v2 = Backend::start("v2", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: one
    url: http://{v1}
    routes:
      - name: default
        paths: ["/"]
  - name: two
    url: http://{v2}
    routes:
      - name: beta
        paths: ["/"]
        methods: ["GET"]
        headers:
          x-channel: ["~*^beta-[0-9]+$", "canary"]
"#,
        v1 = v1.addr,
        v2 = v2.addr
    );
    let gw = gateway(&yaml).await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 4] = [
        ("GET", &[("x-channel", "BETA-12")], "v2"),
        ("GET", &[("x-channel", "Canary")], "v2"),
        ("POST", &[("x-channel", "canary")], "v1"),
        ("GET", &[("x-channel", "stable")], "v1"),
    ];
    for (method, headers, expected) in cases {
        let reply = send(&gw, method, "x", "/thing", headers, "").await;
        assert_eq!(reply.body, expected, "{method} {headers:?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn hostname_targets_are_resolved_by_the_driver() {
    let backend = Backend::start("resolved", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    targets:
      - target: localhost:{port}
"#,
        port = backend.addr.port()
    );
    let gw = gateway(&yaml).await;
    // The first snapshot has no address until the driver's DNS answer arrives.
    assert!(
        crate::support::eventually(std::time::Duration::from_secs(3), || {
            gw.snapshots()
                .iter()
                .any(|s| s.addresses.iter().any(|a| a.key.addr.ip().is_loopback()))
        })
        .await,
        "{:?}",
        gw.snapshots()
    );
    let mut served = false;
    for _ in 0..3 {
        // localhost may resolve to ::1 first, where nothing listens; a retry crosses
        // to 127.0.0.1.
        let reply = send(&gw, "GET", "x", "/", &[], "").await;
        served |= reply.status == 200 && reply.body == "resolved";
    }
    assert!(served);
    let echo_hits = backend.hits();
    assert!(echo_hits >= 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    let echo = Backend::start("echo", Behavior::Echo).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    routes: [{{ name: r, paths: ["/"] }}]
"#,
        addr = echo.addr
    );
    let gw = gateway(&yaml).await;
    // Four times the replay buffer: this body is streamed, not buffered.
    let body = "z".repeat(256 * 1024);
    let reply = send(&gw, "POST", "x", "/upload", &[], &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.headers);
    assert!(
        reply
            .body
            .to_ascii_lowercase()
            .contains("content-length: 262144"),
        "{}",
        reply.body
    );
    assert_eq!(
        echo.hits(),
        1,
        "the backend read the whole body and answered once"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let backend = Backend::start("pooled", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    routes: [{{ name: r, paths: ["/"] }}]
"#,
        addr = backend.addr
    );
    let gw = gateway(&yaml).await;
    for _ in 0..30 {
        assert_eq!(send(&gw, "GET", "x", "/", &[], "").await.status, 200);
    }
    assert_eq!(backend.hits(), 30);
    assert!(
        backend.connections() <= 2,
        "sequential requests share pooled connections, got {}",
        backend.connections()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn consistent_hashing_sticks_with_kongs_generated_cookie() {
    let a = Backend::start("a", Behavior::Ok).await;
    let b = Backend::start("b", Behavior::Ok).await;
    let c = Backend::start("c", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    algorithm: consistent-hashing
    hash_on: cookie
    hash_on_cookie: sticky
    hash_on_cookie_path: /
    targets:
      - target: {a}
      - target: {b}
      - target: {c}
"#,
        a = a.addr,
        b = b.addr,
        c = c.addr
    );
    let gw = gateway(&yaml).await;
    let first = send(&gw, "GET", "x", "/", &[], "").await;
    assert_eq!(first.status, 200);
    let set_cookie = first.header("set-cookie").to_owned();
    assert!(
        set_cookie.starts_with("sticky=") && set_cookie.ends_with("; Path=/"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap_or("").to_owned();
    for _ in 0..12 {
        let reply = send(&gw, "GET", "x", "/", &[("cookie", &cookie)], "").await;
        assert_eq!(reply.body, first.body, "the cookie pins the address");
        assert_eq!(
            reply.header("set-cookie"),
            "",
            "no new cookie once the client has one"
        );
    }
    gw.shutdown().await;
}

/// Kong's `trusted_ips` / `real_ip_header`: behind a trusted load balancer the client's
/// address comes from its header and its `X-Forwarded-*` values pass; from an untrusted
/// peer the same headers are replaced.
#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_its_forwarded_headers_pass() {
    use sluice_proxy::GatewayOptions;
    use sluice_proxy::realip::{IpBlock, TrustedProxies};

    let echo = Backend::start("echo", Behavior::Echo).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    routes:
      - name: all
        paths: ["/"]
"#,
        addr = echo.addr
    );
    let lb_headers = [
        ("x-forwarded-for", "203.0.113.9, 10.0.0.5"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/shop"),
    ];

    // The test client connects from 127.0.0.1: trusted here, with recursive realip
    // over X-Forwarded-For and 10.0.0.0/8 as the balancers' own block.
    let options = GatewayOptions {
        trusted_proxies: TrustedProxies::new(
            vec![
                IpBlock::parse("127.0.0.0/8").unwrap(),
                IpBlock::parse("10.0.0.0/8").unwrap(),
            ],
            http::HeaderName::from_static("x-forwarded-for"),
            true,
        ),
        ..GatewayOptions::default()
    };
    let trusted = crate::support::gateway_with(&yaml, options).await;
    let reply = send(&trusted, "GET", "gw.internal", "/cart", &lb_headers, "").await;
    assert_eq!(reply.status, 200);
    let head = reply.body.to_ascii_lowercase();
    assert!(head.contains("x-real-ip: 203.0.113.9\r\n"), "{head}");
    assert!(
        head.contains("x-forwarded-for: 203.0.113.9, 10.0.0.5, 127.0.0.1\r\n"),
        "the list plus the peer, as Kong builds it: {head}"
    );
    assert!(head.contains("x-forwarded-proto: https\r\n"), "{head}");
    assert!(
        head.contains("x-forwarded-host: shop.example\r\n"),
        "{head}"
    );
    assert!(head.contains("x-forwarded-port: 443\r\n"), "{head}");
    assert!(head.contains("x-forwarded-prefix: /shop\r\n"), "{head}");
    trusted.shutdown().await;

    // The default trusts nobody: the same request gets the gateway's own values.
    let untrusted = gateway(&yaml).await;
    let reply = send(&untrusted, "GET", "gw.internal", "/cart", &lb_headers, "").await;
    let head = reply.body.to_ascii_lowercase();
    assert!(head.contains("x-real-ip: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
    assert!(head.contains("x-forwarded-host: gw.internal\r\n"), "{head}");
    assert!(!head.contains("x-forwarded-prefix"), "{head}");
    assert!(!head.contains("x-forwarded-port: 443"), "{head}");
    untrusted.shutdown().await;
}
