//! Keep-alive connections between requests: the header timeout (30 s to send the next
//! request head) runs from the end of the previous response, however long that request
//! took, and an idle connection is closed when it expires. Paused clock: the backend and
//! the gateway run inside the test's runtime, so time moves only when every task waits.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::backend::{Backend, Behavior};
use crate::support::gateway;

/// One response read to its end (the backend's body is its name).
async fn exchange(client: &mut TcpStream, body: &str) -> String {
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&response).ends_with(body) {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "response cut short: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(start_paused = true)]
async fn the_header_timeout_runs_from_the_end_of_the_previous_response() {
    // 40 s to answer: longer than the header timeout, shorter than Kong's 60 s
    // read_timeout.
    let slow = Backend::start("slow", Behavior::Delay(Duration::from_secs(40))).await;
    let gw = gateway(&format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    routes: [{{ name: r, paths: ["/"] }}]
"#,
        addr = slow.addr
    ))
    .await;
    let mut client = TcpStream::connect(gw.local_addr()).await.unwrap();
    let first = exchange(&mut client, "slow").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // 25 s idle: 65 s after the first request started, 25 s after its response ended.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let second = exchange(&mut client, "slow").await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the connection is still open: {second}"
    );
    // Now idle past the header timeout: closed without a response.
    tokio::time::sleep(sluice_proxy::server::HEADER_READ_TIMEOUT + Duration::from_secs(1)).await;
    let mut chunk = [0u8; 64];
    let n = client.read(&mut chunk).await.unwrap_or(0);
    assert_eq!(n, 0, "closed: {:?}", String::from_utf8_lossy(&chunk[..n]));
    assert_eq!(slow.hits(), 2);
}
