//! Warm standby: the secondary tier keeps a pooled connection while it takes no traffic,
//! so the first failed-over request does not open a new connection.

use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::{eventually, gateway, get};

#[tokio::test]
async fn standby_tier_keeps_a_warm_connection_that_failover_reuses() {
    let primary = Backend::start("primary", Behavior::Ok).await;
    let standby = Backend::start("standby", Behavior::Ok).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    retries: 3
    routes:
      - name: r
        paths: ["/"]
upstreams:
  - name: pool
    targets:
      - {{target: "{}", tags: [region:primary]}}
      - {{target: "{}", tags: [region:secondary]}}
"#,
        primary.addr, standby.addr
    );
    let gw = gateway(&yaml).await;
    assert_eq!(get(&gw, "/x").await.body, "primary");

    // No request goes to the standby, yet it gets a connection (one warming round).
    assert!(
        eventually(Duration::from_secs(5), || standby.connections() >= 1).await,
        "the standby region was never warmed"
    );
    assert_eq!(standby.hits(), 0, "warming sends no requests");
    let warmed = standby.connections();

    // The primary dies: the retry crosses to the standby on the warm connection.
    primary.kill();
    let reply = get(&gw, "/x").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "standby");
    assert_eq!(
        standby.connections(),
        warmed,
        "the failed-over request reused the warm connection"
    );
    gw.shutdown().await;
}
