//! Nothing a client or a backend sends makes the data plane panic or stop serving.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::{Backend, Behavior};
use crate::support::{gateway, get};

fn yaml(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://{addr}
    retries: 0
    routes: [{{ name: r, paths: ["/"] }}]
"#
    )
}

/// Send raw bytes, return what came back (bounded read).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_client_input_gets_an_error_not_a_crash() {
    let ok = Backend::start("ok", Behavior::Ok).await;
    let gw = gateway(&yaml(ok.addr)).await;
    let addr = gw.local_addr();
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n".to_vec()),
        (
            "bad header byte",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x01\x02\r\n\r\n".to_vec(),
        ),
        ("no colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec()),
        ("huge header", huge_header.into_bytes()),
        (
            "bad content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
        ),
        (
            "truncated body",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort".to_vec(),
        ),
        (
            "bad chunk",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
        (
            "bad method",
            b"G\x7fT / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in inputs {
        let reply = raw(addr, &bytes).await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 4") || reply.starts_with("HTTP/1.1 5"),
            "{what}: {reply:?}"
        );
        assert_eq!(
            get(&gw, "/").await.status,
            200,
            "still serving after {what}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn misbehaving_backends_give_502_and_the_gateway_keeps_going() {
    let backend = Backend::start("b", Behavior::Garbage).await;
    let gw = gateway(&yaml(backend.addr)).await;
    for behavior in [Behavior::Garbage, Behavior::Reset, Behavior::Drop] {
        backend.set(behavior.clone());
        assert_eq!(get(&gw, "/").await.status, 502, "{behavior:?}");
    }
    // A body cut short after the header: the status already went out, so the client
    // sees the connection end early, and the next request is served normally.
    backend.set(Behavior::Truncated);
    let request = http::Request::get(format!("http://{}/", gw.local_addr()))
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = crate::support::client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.into_body().collect().await.is_err(),
        "truncation is visible"
    );
    backend.set(Behavior::Ok);
    assert_eq!(get(&gw, "/").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let ok = Backend::start("ok", Behavior::Ok).await;
    let gw = gateway(&yaml(ok.addr)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = http::Request::get(format!("http://{}/h2", gw.local_addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    gw.shutdown().await;
}

/// A client pipelining requests the gateway answers itself (no upstream to wait for)
/// does not hold the thread: other tasks run between its answers. The test runtime has
/// one thread, like a one-core gateway; a task that samples the request counter each
/// time it runs must see the batch part-way through.
///
/// Fast lane only: hyper answers a pipelined batch it has read in one turn (its reads
/// and writes are batched, so tokio's budget does not cut in), bounded by its 64 KiB
/// read buffer; that is hyper's behaviour and is documented, not tested, here.
#[tokio::test]
async fn a_pipelining_client_does_not_hold_the_thread() {
    if !crate::FAST_LANE {
        return;
    }
    const BATCH: u64 = 200;
    let gw = std::sync::Arc::new(
        gateway(
            r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:9
    routes: [{ name: r, paths: ["/only"] }]
"#,
        )
        .await,
    );
    let mut client = TcpStream::connect(gw.local_addr()).await.unwrap();
    let baseline = gw.server_counters().total_requests;
    let sampler = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            // Bounded: the batch takes a few thousand turns at most.
            for _ in 0..1_000_000 {
                let served = gw.server_counters().total_requests - baseline;
                if seen.last() != Some(&served) {
                    seen.push(served);
                }
                if served >= BATCH {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let batch = "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n".repeat(BATCH as usize);
    client.write_all(batch.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while received
        .windows(12)
        .filter(|w| w == b"HTTP/1.1 404")
        .count()
        < BATCH as usize
    {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed early");
        received.extend_from_slice(&chunk[..n]);
    }
    let seen = sampler.await.unwrap();
    assert!(
        seen.iter().any(|&served| served > 0 && served < BATCH),
        "other tasks ran while the batch was answered: {seen:?}"
    );
}
