//! HTTP/1.1 upgrades (WebSocket) through the gateway: the upgrade headers reach the
//! upstream, a `101` joins the two connections, a dead first address is retried like any
//! other request, the tunnel closes when the upstream is silent for `read_timeout`, and
//! an upstream that declines the upgrade is relayed as an ordinary response.
//!
//! The WebSocket backend here speaks just enough: it answers the handshake with `101` and
//! then echoes every byte upper-cased, so the test can tell the bytes went through it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::backend::{Backend, Behavior, closed_port};
use crate::support::gateway;

/// A loopback backend that accepts upgrades and echoes upper-cased bytes.
pub(crate) struct EchoUpgrade {
    pub(crate) addr: SocketAddr,
    /// The request heads it received, as text.
    pub(crate) heads: Arc<Mutex<Vec<String>>>,
}

impl EchoUpgrade {
    pub(crate) async fn start() -> EchoUpgrade {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    seen.lock().unwrap().push(head);
                    let _ = stream
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .await;
                    let mut buf = [0u8; 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let upper = buf[..n].to_ascii_uppercase();
                                if stream.write_all(&upper).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        EchoUpgrade { addr, heads }
    }
}

/// Read an HTTP head (up to the blank line), bounded in size.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

pub(crate) const HANDSHAKE: &str = "GET /ws/chat HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Open a connection to the gateway and send the WebSocket handshake; returns the
/// stream and the response head.
async fn handshake(gw: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(gw).await.unwrap();
    stream.write_all(HANDSHAKE.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .expect("response head within 5 s")
        .expect("a response head");
    (stream, head)
}

async fn echo(stream: &mut TcpStream, text: &str) -> String {
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .expect("echo within 5 s")
        .unwrap();
    String::from_utf8(buf).unwrap()
}

fn ws_config(targets: &[SocketAddr], read_timeout_ms: u64) -> String {
    let targets = crate::support::target_entries(targets);
    format!(
        r#"
_format_version: "3.0"
services:
  - name: chat
    host: chat.upstream
    read_timeout: {read_timeout_ms}
    routes:
      - name: ws
        paths: ["/ws"]
upstreams:
  - name: chat.upstream
    algorithm: round-robin
    targets:
{targets}"#
    )
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_to_the_upstream() {
    let backend = EchoUpgrade::start().await;
    let gw = gateway(&ws_config(&[backend.addr], 60_000)).await;
    let (mut stream, head) = handshake(gw.local_addr()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    assert!(lower.contains("x-sluice-request-id:"), "{head}");

    // Bytes flow both ways, several times, on the same tunnel.
    assert_eq!(echo(&mut stream, "hello").await, "HELLO");
    assert_eq!(
        echo(&mut stream, "again, longer text").await,
        "AGAIN, LONGER TEXT"
    );

    // The upstream saw the upgrade headers (not stripped as hop-by-hop), Kong's
    // forwarding headers, and the path as routed.
    let seen = backend.heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let upstream_head = seen[0].to_ascii_lowercase();
    // strip_path (Kong's default) removed the matched `/ws`.
    assert!(
        upstream_head.starts_with("get /chat http/1.1"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("upgrade: websocket"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("connection: upgrade"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("x-forwarded-for: 127.0.0.1"),
        "{upstream_head}"
    );

    // Closing the client side ends the tunnel; the upstream sees EOF.
    drop(stream);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_to_a_dead_address_is_retried_on_another() {
    let dead = closed_port().await;
    let backend = EchoUpgrade::start().await;
    let gw = gateway(&ws_config(&[dead, backend.addr], 60_000)).await;
    // Round-robin starts on either target; every handshake must succeed, so a connect
    // refused on the dead one is retried on the live one (nothing was sent).
    for _ in 0..4 {
        let (mut stream, head) = handshake(gw.local_addr()).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(echo(&mut stream, "ping").await, "PING");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_tunnel_closes_when_the_upstream_is_silent_for_read_timeout() {
    let backend = EchoUpgrade::start().await;
    let gw = gateway(&ws_config(&[backend.addr], 400)).await;
    let (mut stream, head) = handshake(gw.local_addr()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Traffic more often than read_timeout keeps the tunnel open past it (8 × 100 ms of
    // exchanges: twice the 400 ms limit in total).
    for i in 0..8 {
        assert_eq!(echo(&mut stream, &format!("m{i}")).await, format!("M{i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Silence: the gateway closes the tunnel, and the client sees the end of the stream.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the gateway must close a silent tunnel within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected the end of the stream");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_declines_the_upgrade_is_relayed_as_is() {
    let plain = Backend::start("plain", Behavior::Ok).await;
    let gw = gateway(&ws_config(&[plain.addr], 60_000)).await;
    let (mut stream, head) = handshake(gw.local_addr()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("upgrade:"), "{head}");
    // The body arrives as an ordinary response body.
    let mut body = vec![0u8; "plain".len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body))
        .await
        .expect("body within 5 s")
        .unwrap();
    assert_eq!(body, b"plain");
    gw.shutdown().await;
}
