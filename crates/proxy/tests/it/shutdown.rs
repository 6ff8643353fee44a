//! Graceful shutdown: stop accepting, let in-flight requests finish.

use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::{gateway, get};

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let slow = Backend::start("slow", Behavior::Delay(Duration::from_millis(400))).await;
    let gw = std::sync::Arc::new(
        gateway(&format!(
            r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    routes: [{{ name: r, paths: ["/"] }}]
"#,
            addr = slow.addr
        ))
        .await,
    );
    let addr = gw.local_addr();
    let in_flight = {
        let gw = gw.clone();
        tokio::spawn(async move { get(&gw, "/").await })
    };
    // Shut down once the request is with the backend.
    assert!(crate::support::eventually(Duration::from_secs(2), || slow.hits() == 1).await);
    gw.shutdown().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completed");
    assert_eq!(reply.body, "slow");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

/// A keep-alive connection that sits idle between requests is closed as soon as the
/// drain starts: shutdown does not wait the grace period out for it.
#[tokio::test]
async fn idle_keep_alive_connections_close_when_the_drain_starts() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let backend = Backend::start("b", Behavior::Ok).await;
    let options = sluice_proxy::GatewayOptions {
        shutdown_grace: Duration::from_secs(60),
        ..Default::default()
    };
    let gw = crate::support::gateway_with(
        &format!(
            r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    routes: [{{ name: r, paths: ["/"] }}]
"#,
            addr = backend.addr
        ),
        options,
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&response).ends_with("b") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "response cut short: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&chunk[..n]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    // The connection is idle now; the shutdown must close it and be done.
    tokio::time::timeout(Duration::from_secs(20), gw.shutdown())
        .await
        .expect("shutdown finished without waiting out the 60 s grace period");
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
        .await
        .expect("the gateway closed the idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without another response");
}
