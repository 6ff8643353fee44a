//! Hot reload under load: no request fails while configurations are swapped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::{config, gateway, get};

fn yaml(target: std::net::SocketAddr, generation: u32) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes:
      - name: r{generation}
        paths: ["/"]
upstreams:
  - name: pool
    targets:
      - target: {target}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing() {
    let blue = Backend::start("blue", Behavior::Ok).await;
    let green = Backend::start("green", Behavior::Ok).await;
    let gw = Arc::new(gateway(&yaml(blue.addr, 0)).await);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(2);

    let mut workers = Vec::new();
    for _ in 0..4 {
        let gw = gw.clone();
        let ok = ok.clone();
        let failed = failed.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let reply = get(&gw, "/").await;
                if reply.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut reloads = 0u32;
    while Instant::now() < deadline {
        let target = if reloads.is_multiple_of(2) {
            green.addr
        } else {
            blue.addr
        };
        gw.apply_config(config(&yaml(target, reloads + 1)))
            .await
            .unwrap();
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during {reloads} reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "load actually ran");
    assert!(
        blue.hits() > 0 && green.hits() > 0,
        "both generations served traffic"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_config_leaves_the_running_one_in_place() {
    let blue = Backend::start("blue", Behavior::Ok).await;
    let gw = gateway(&yaml(blue.addr, 0)).await;
    let hash_before = gw.config().hash.clone();
    let mut bad = config(&yaml(blue.addr, 1));
    if let Some(route) = bad.routes.first_mut() {
        route.paths = vec![sluice_config::model::PathMatch::Regex("(unclosed".into())];
    }
    let err = gw.apply_config(bad).await.unwrap_err().to_string();
    assert!(
        err.contains("routes[0]"),
        "error points at the route: {err}"
    );
    assert_eq!(gw.config().hash, hash_before);
    assert_eq!(get(&gw, "/").await.status, 200);
    gw.shutdown().await;
}
