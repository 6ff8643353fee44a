//! Kong's retry rules with Sluice's "never the same address twice" and cross-tier retry.

use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior, closed_port};
use crate::support::{gateway, get, send};

fn upstream_yaml(service_extra: &str, targets: &[(String, u32, &str)]) -> String {
    let mut yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    {service_extra}
    routes:
      - name: r
        paths: ["/"]
upstreams:
  - name: pool
    targets:
"#
    );
    for (target, weight, tags) in targets {
        yaml.push_str(&format!(
            "      - target: {target}\n        weight: {weight}\n        tags: [{tags}]\n"
        ));
    }
    yaml
}

#[tokio::test]
async fn a_failed_attempt_is_retried_on_another_target() {
    let bad = Backend::start("bad", Behavior::Reset).await;
    let good = Backend::start("good", Behavior::Ok).await;
    let yaml = upstream_yaml(
        "retries: 5",
        &[
            (bad.addr.to_string(), 100, ""),
            (good.addr.to_string(), 100, ""),
        ],
    );
    let gw = gateway(&yaml).await;
    for i in 0..20 {
        let reply = get(&gw, "/x").await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        assert_eq!(reply.body, "good");
    }
    assert_eq!(
        good.hits(),
        20,
        "each request reached the good target exactly once"
    );
    assert!(
        bad.hits() <= 20,
        "never the bad target twice in one request"
    );
    gw.shutdown().await;
}

/// Kong#5907: with weights 1000 vs 1, Kong's retry usually lands on the same (dead)
/// heavy target again. Sluice excludes tried addresses, so every request succeeds.
#[tokio::test]
async fn kong_5907_heavy_dead_target_does_not_eat_the_retries() {
    let dead = closed_port().await;
    let light = Backend::start("light", Behavior::Ok).await;
    let yaml = upstream_yaml(
        "retries: 1",
        &[
            (dead.to_string(), 1000, ""),
            (light.addr.to_string(), 1, ""),
        ],
    );
    let gw = gateway(&yaml).await;
    for i in 0..30 {
        let reply = get(&gw, "/x").await;
        assert_eq!(
            reply.status, 200,
            "request {i} with a single retry: {reply:?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn post_is_retried_after_connect_refused_but_not_after_sending() {
    let refused = closed_port().await;
    let good = Backend::start("good", Behavior::Ok).await;
    let gw = gateway(&upstream_yaml(
        "retries: 3",
        &[
            (refused.to_string(), 100, ""),
            (good.addr.to_string(), 100, ""),
        ],
    ))
    .await;
    for i in 0..10 {
        let reply = send(&gw, "POST", "x", "/orders", &[], "{\"n\":1}").await;
        assert_eq!(
            reply.status, 200,
            "POST {i} after connect refused: {reply:?}"
        );
    }
    gw.shutdown().await;

    let dropper = Backend::start("dropper", Behavior::Drop).await;
    let good = Backend::start("good", Behavior::Ok).await;
    let gw = gateway(&upstream_yaml(
        "retries: 3",
        &[
            (dropper.addr.to_string(), 100, ""),
            (good.addr.to_string(), 100, ""),
        ],
    ))
    .await;
    let mut failed = 0;
    for _ in 0..20 {
        let reply = send(&gw, "POST", "x", "/orders", &[], "{\"n\":1}").await;
        match reply.status {
            200 => {}
            502 => failed += 1,
            other => panic!("unexpected status {other}: {reply:?}"),
        }
    }
    assert!(failed > 0, "some POSTs went to the dropping backend first");
    assert_eq!(
        dropper.hits() + good.hits(),
        20,
        "a POST that reached a backend is never sent to a second one"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn per_try_read_timeout_then_retry() {
    let hang = Backend::start("hang", Behavior::Hang).await;
    let good = Backend::start("good", Behavior::Ok).await;
    let gw = gateway(&upstream_yaml(
        "retries: 2\n    read_timeout: 300",
        &[
            (hang.addr.to_string(), 100, ""),
            (good.addr.to_string(), 100, ""),
        ],
    ))
    .await;
    for i in 0..4 {
        let started = Instant::now();
        let reply = get(&gw, "/slow").await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "one per-try timeout at most"
        );
    }
    assert!(hang.hits() >= 1, "the hanging backend was tried");
    assert_eq!(good.hits(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_crosses_to_the_secondary_tier_when_primaries_are_down() {
    let p1 = closed_port().await;
    let p2 = closed_port().await;
    let secondary = Backend::start("secondary", Behavior::Ok).await;
    let gw = gateway(&upstream_yaml(
        "retries: 3",
        &[
            (p1.to_string(), 100, "region:eu, tier:0"),
            (p2.to_string(), 100, "region:eu, tier:0"),
            (secondary.addr.to_string(), 100, "region:us, tier:1"),
        ],
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sent = 0;
    while Instant::now() < deadline {
        let reply = get(&gw, "/x").await;
        assert_eq!(reply.status, 200, "request {sent}: {reply:?}");
        assert_eq!(reply.body, "secondary");
        sent += 1;
    }
    assert!(sent > 10);
    gw.shutdown().await;
}

#[tokio::test]
async fn hedged_request_answers_from_the_fast_target() {
    let slow = Backend::start("slow", Behavior::Delay(Duration::from_secs(2))).await;
    let fast = Backend::start("fast", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes:
      - name: r
        paths: ["/"]
        tags: ["sluice:hedge-after=50ms"]
upstreams:
  - name: pool
    targets:
      - target: {slow}
      - target: {fast}
"#,
        slow = slow.addr,
        fast = fast.addr
    );
    let gw = gateway(&yaml).await;
    for i in 0..6 {
        let started = Instant::now();
        let reply = get(&gw, "/x").await;
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.body, "fast", "request {i}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "request {i} took {:?}: the hedge did not win",
            started.elapsed()
        );
    }
    assert!(
        slow.hits() >= 1,
        "the slow target was tried first at least once"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_on_status_is_opt_in_and_idempotent_only() {
    let busy = Backend::start("busy", Behavior::Status(503)).await;
    let good = Backend::start("good", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes:
      - name: retrying
        paths: ["/retry"]
        tags: ["sluice:retry-on=503"]
      - name: plain
        paths: ["/plain"]
upstreams:
  - name: pool
    tags: ["sluice:outlier=off"]
    targets:
      - target: {busy}
      - target: {good}
"#,
        busy = busy.addr,
        good = good.addr
    );
    let gw = gateway(&yaml).await;
    let mut plain_503 = 0;
    let mut post_503 = 0;
    for i in 0..10 {
        assert_eq!(
            get(&gw, "/retry").await.status,
            200,
            "GET {i} retried past the 503"
        );
    }
    for _ in 0..10 {
        if get(&gw, "/plain").await.status == 503 {
            plain_503 += 1;
        }
    }
    for _ in 0..10 {
        if send(&gw, "POST", "x", "/retry", &[], "body").await.status == 503 {
            post_503 += 1;
        }
    }
    assert!(plain_503 > 0, "Kong never retries a response by default");
    assert!(post_503 > 0, "a POST that got a response is never retried");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_empty_retry_budget_stops_retries_that_load_backends() {
    let a = Backend::start("a", Behavior::Reset).await;
    let b = Backend::start("b", Behavior::Reset).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    retries: 5
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    tags: ["sluice:retry-budget=0", "sluice:retry-budget-min=0", "sluice:outlier=off"]
    targets:
      - target: {a}
      - target: {b}
"#,
        a = a.addr,
        b = b.addr
    );
    let gw = gateway(&yaml).await;
    for _ in 0..10 {
        assert_eq!(get(&gw, "/").await.status, 502);
    }
    assert_eq!(
        a.hits() + b.hits(),
        10,
        "one attempt per request: the budget refused every retry"
    );
    gw.shutdown().await;
}
