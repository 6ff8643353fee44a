//! Gateway-made responses: each failure has Kong's status and JSON body.

use std::time::{Duration, Instant};

use sluice_proxy::GatewayOptions;

use crate::support::backend::{Backend, Behavior, closed_port};
use crate::support::{gateway, gateway_with, get, send};

fn assert_kong_error(reply: &crate::support::Reply, status: u16, message: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["message"], message, "{reply:?}");
    let id = body["request_id"].as_str().unwrap_or("");
    assert_eq!(id.len(), 32, "{reply:?}");
    assert_eq!(reply.header("x-sluice-request-id"), id);
    assert!(reply.header("content-type").starts_with("application/json"));
}

#[tokio::test]
async fn no_route_is_404() {
    let gw = gateway(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/only"]
"#,
    )
    .await;
    assert_kong_error(
        &get(&gw, "/other").await,
        404,
        "no Route matched with those values",
    );
    gw.shutdown().await;
}

/// A pooled connection keeps its read timer between exchanges, set for the earlier
/// exchange's deadline: when that fires during a later exchange, the later exchange's
/// own `read_timeout` (from its own send) decides, not the earlier one's.
#[tokio::test]
async fn read_timeout_runs_from_each_exchange_on_a_kept_connection() {
    let backend = Backend::start("slow-later", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    retries: 0
    read_timeout: 600
    routes: [{{ name: r, paths: ["/"] }}]
"#,
        addr = backend.addr,
    );
    let gw = gateway(&yaml).await;
    assert_eq!(get(&gw, "/first").await.status, 200);
    // The kept timer now fires 600 ms after the first send, about 350 ms into the
    // second exchange.
    tokio::time::sleep(Duration::from_millis(250)).await;
    backend.set(Behavior::Hang);
    let started = Instant::now();
    assert_kong_error(
        &get(&gw, "/second").await,
        504,
        "The upstream server is timing out",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the second exchange had its own 600 ms, not what was left of the first's: {:?}",
        started.elapsed()
    );
    assert_eq!(
        backend.connections(),
        1,
        "both went over one kept connection"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_map_to_kong_statuses() {
    let refused = closed_port().await;
    let hang = Backend::start("hang", Behavior::Hang).await;
    let garbage = Backend::start("garbage", Behavior::Garbage).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: refused
    url: http://{refused}
    retries: 0
    routes: [{{ name: refused, paths: ["/refused"] }}]
  - name: hang
    url: http://{hang}
    retries: 0
    read_timeout: 200
    routes: [{{ name: hang, paths: ["/hang"] }}]
  - name: garbage
    url: http://{garbage}
    retries: 0
    routes: [{{ name: garbage, paths: ["/garbage"] }}]
  - name: nopeer
    host: empty-pool
    routes: [{{ name: nopeer, paths: ["/nopeer"] }}]
  - name: nodns
    host: does-not-exist.invalid
    routes: [{{ name: nodns, paths: ["/nodns"] }}]
upstreams:
  - name: empty-pool
    targets:
      - target: 127.0.0.1:9
        weight: 0
"#,
        hang = hang.addr,
        garbage = garbage.addr,
    );
    let gw = gateway(&yaml).await;
    let invalid = "An invalid response was received from the upstream server";
    assert_kong_error(&get(&gw, "/refused").await, 502, invalid);
    let started = Instant::now();
    assert_kong_error(
        &get(&gw, "/hang").await,
        504,
        "The upstream server is timing out",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "read_timeout respected"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "and not much longer"
    );
    assert_kong_error(&get(&gw, "/garbage").await, 502, invalid);
    assert_kong_error(
        &get(&gw, "/nopeer").await,
        503,
        "failure to get a peer from the ring-balancer",
    );
    assert_kong_error(&get(&gw, "/nodns").await, 503, "name resolution failed");
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let ok = Backend::start("ok", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    routes: [{{ name: r, paths: ["/"] }}]
"#,
        addr = ok.addr
    );
    let options = GatewayOptions {
        max_request_body: Some(1024),
        ..GatewayOptions::default()
    };
    let gw = gateway_with(&yaml, options).await;
    let big = "x".repeat(2048);
    assert_kong_error(
        &send(&gw, "POST", "x", "/upload", &[], &big).await,
        413,
        "Request size limit exceeded",
    );
    assert_eq!(ok.hits(), 0, "the upstream never saw it");
    assert_eq!(
        send(&gw, "POST", "x", "/upload", &[], "small").await.status,
        200
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_stops_reading_an_upload_hits_write_timeout() {
    let stall = Backend::start("stall", Behavior::StallBody).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    retries: 0
    write_timeout: 300
    read_timeout: 60000
    routes: [{{ name: r, paths: ["/"] }}]
"#,
        addr = stall.addr
    );
    let gw = gateway(&yaml).await;
    // Far more than loopback socket buffers hold, so the upload must block.
    let body = "u".repeat(32 * 1024 * 1024);
    let started = Instant::now();
    let reply = send(&gw, "PUT", "x", "/upload", &[], &body).await;
    assert_kong_error(&reply, 504, "The upstream server is timing out");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "write_timeout, not read_timeout, ended it: {:?}",
        started.elapsed()
    );
    gw.shutdown().await;
}
