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
