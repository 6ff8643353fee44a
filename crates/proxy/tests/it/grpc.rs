//! gRPC services (`protocol: grpc` / `grpcs`), end to end: a real HTTP/2 client (hyper,
//! prior knowledge over h2c, or h2 over TLS) talks to the gateway, which talks HTTP/2 to
//! a gRPC-shaped backend built on hyper's h2 server inside the test: length-prefixed
//! messages, `content-type: application/grpc`, `grpc-status` in the trailers. No tonic:
//! the wire shape is all the gateway sees.
//!
//! Every wait is bounded (`LIMIT`); streaming is proved by ordering (the backend holds
//! the rest of a stream until the test has read the first message), never by sleeping.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sluice_core::snapshot::HealthStatus;
use sluice_proxy::{Gateway, GatewayOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

use crate::support::backend::closed_port;
use crate::support::{eventually, gateway, gateway_with, send};

/// The longest any single step may take.
const LIMIT: Duration = Duration::from_secs(5);

/// The gRPC service path prefix every test route matches.
const PREFIX: &str = "/test.Echo/";

/// A length-prefixed gRPC message (uncompressed).
fn message(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.extend_from_slice(payload);
    b.freeze()
}

/// Complete messages taken off the front of `buf` (a partial one stays).
fn take_messages(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).freeze());
    }
    out
}

/// A body fed frame by frame through a channel (both sides of a streaming call).
struct ChannelBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn channel() -> (mpsc::Sender<Frame<Bytes>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody { rx })
}

fn ok_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t.insert("grpc-message", HeaderValue::from_static("fine"));
    t.insert("x-backend-trailer", HeaderValue::from_static("yes"));
    t
}

/// What the backend saw.
#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    calls: AtomicU64,
    headers: Mutex<Vec<HeaderMap>>,
    alpn_h2: AtomicU64,
    snis: Mutex<Vec<Option<String>>>,
    /// Lets the server-streaming call send the rest of its messages.
    release: Notify,
    /// Every open connection shuts down gracefully (GOAWAY, in-flight calls finish).
    goaway: Notify,
}

/// A gRPC-shaped HTTP/2 server on loopback (h2c, or TLS with ALPN `h2`).
///
/// Methods (the last path segment): `Unary` echoes each message with an `echo:` prefix;
/// `Stream` sends `one`, waits for [`Seen::release`], then `two`, `three`; `Bidi` echoes
/// each message as it arrives; `Reset` resets the stream before any header; `Hang`
/// never answers.
struct GrpcBackend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    async fn start(tls: Option<Arc<ServerConfig>>) -> GrpcBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    seen.connections.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        match tls {
                            None => serve(TokioIo::new(tcp), seen).await,
                            Some(config) => {
                                let Ok(stream) =
                                    tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                                else {
                                    return;
                                };
                                let (_, session) = stream.get_ref();
                                if session.alpn_protocol() == Some(b"h2") {
                                    seen.alpn_h2.fetch_add(1, Ordering::SeqCst);
                                }
                                seen.snis
                                    .lock()
                                    .unwrap()
                                    .push(session.server_name().map(str::to_owned));
                                serve(TokioIo::new(stream), seen).await
                            }
                        }
                    });
                }
            }
        });
        GrpcBackend { addr, seen, task }
    }

    fn connections(&self) -> u64 {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn calls(&self) -> u64 {
        self.seen.calls.load(Ordering::SeqCst)
    }
}

async fn serve<IO>(io: TokioIo<IO>, seen: Arc<Seen>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let goaway = seen.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let seen = seen.clone();
        async move { handle(request, seen).await }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = goaway.goaway.notified() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    seen: Arc<Seen>,
) -> Result<Response<ChannelBody>, std::io::Error> {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    seen.headers.lock().unwrap().push(request.headers().clone());
    let method = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let (tx, body) = channel();
    let response = Response::builder()
        .header("content-type", "application/grpc")
        .header("x-backend", "grpc")
        .body(body)
        .expect("response");
    match method.as_str() {
        "Reset" => Err(std::io::Error::other("reset this stream")),
        "Hang" => std::future::pending().await,
        "Unary" => {
            let whole = request
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?;
            let mut buf = BytesMut::from(&whole.to_bytes()[..]);
            for m in take_messages(&mut buf) {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&m);
                let _ = tx.send(Frame::data(message(&reply))).await;
            }
            let _ = tx.send(Frame::trailers(ok_trailers())).await;
            Ok(response)
        }
        "Stream" => {
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(message(b"one"))).await;
                seen.release.notified().await;
                let _ = tx.send(Frame::data(message(b"two"))).await;
                let _ = tx.send(Frame::data(message(b"three"))).await;
                let _ = tx.send(Frame::trailers(ok_trailers())).await;
            });
            Ok(response)
        }
        "Bidi" => {
            let mut incoming = request.into_body();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Some(Ok(frame)) = incoming.frame().await {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                        for m in take_messages(&mut buf) {
                            let mut reply = b"echo:".to_vec();
                            reply.extend_from_slice(&m);
                            let _ = tx.send(Frame::data(message(&reply))).await;
                        }
                    }
                }
                let _ = tx.send(Frame::trailers(ok_trailers())).await;
            });
            Ok(response)
        }
        _ => {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("12"));
            let _ = tx.send(Frame::trailers(t)).await;
            Ok(response)
        }
    }
}

/// An HTTP/2 prior-knowledge (h2c) client connection to `addr`.
async fn h2c(addr: SocketAddr) -> SendRequest<ChannelBody> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// A gRPC call's request (the body comes from the returned sender).
fn call(method: &str) -> (mpsc::Sender<Frame<Bytes>>, Request<ChannelBody>) {
    let (tx, body) = channel();
    let request = Request::post(format!("http://grpc.test{PREFIX}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request");
    (tx, request)
}

/// A unary call: one message, then the response read to its end.
async fn unary(sender: &mut SendRequest<ChannelBody>, payload: &[u8]) -> Reply {
    let (tx, request) = call("Unary");
    tx.send(Frame::data(message(payload))).await.expect("send");
    drop(tx);
    let response = tokio::time::timeout(LIMIT, sender.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    Reply::read(response).await
}

/// A finished call.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    messages: Vec<Bytes>,
    trailers: HeaderMap,
}

impl Reply {
    async fn read(response: Response<Incoming>) -> Reply {
        let (parts, body) = response.into_parts();
        let collected = tokio::time::timeout(LIMIT, body.collect())
            .await
            .expect("body in time")
            .expect("body");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let mut buf = BytesMut::from(&collected.to_bytes()[..]);
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            messages: take_messages(&mut buf),
            trailers,
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn trailer(&self, name: &str) -> &str {
        self.trailers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A grpc service on an upstream with `targets`, routed by [`PREFIX`].
fn yaml(targets: &[SocketAddr], extra_upstream: &str) -> String {
    let targets: String = targets
        .iter()
        .map(|t| format!("      - target: \"{t}\"\n"))
        .collect();
    format!(
        r#"
_format_version: "3.0"
services:
  - name: grpc-svc
    protocol: grpc
    host: pool
    routes:
      - name: grpc-route
        protocols: [grpc]
        paths: ["{PREFIX}"]
upstreams:
  - name: pool
{extra_upstream}    targets:
{targets}"#
    )
}

#[tokio::test]
async fn a_unary_call_reaches_the_backend_over_h2_and_its_trailers_come_back() {
    let backend = GrpcBackend::start(None).await;
    let gw = gateway(&yaml(&[backend.addr], "")).await;
    let mut client = h2c(gw.local_addr()).await;
    let reply = unary(&mut client, b"hello").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), "application/grpc");
    assert_eq!(reply.header("x-backend"), "grpc");
    assert!(!reply.header("x-sluice-request-id").is_empty());
    assert_eq!(reply.messages, vec![Bytes::from_static(b"echo:hello")]);
    assert_eq!(reply.trailer("grpc-status"), "0", "{reply:?}");
    assert_eq!(reply.trailer("grpc-message"), "fine");
    assert_eq!(reply.trailer("x-backend-trailer"), "yes");
    // The backend got gRPC's request headers and the gateway's own.
    let seen = backend.seen.headers.lock().unwrap()[0].clone();
    let get = |name: &str| seen.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(get("te"), "trailers");
    assert_eq!(get("content-type"), "application/grpc");
    assert_eq!(get("x-forwarded-for"), "127.0.0.1");
    assert_eq!(get("x-forwarded-proto"), "http");
    gw.shutdown().await;
}

#[tokio::test]
async fn server_streaming_messages_are_relayed_as_they_come_not_at_the_end() {
    let backend = GrpcBackend::start(None).await;
    let gw = gateway(&yaml(&[backend.addr], "")).await;
    let mut client = h2c(gw.local_addr()).await;
    let (tx, request) = call("Stream");
    tx.send(Frame::data(message(b"go"))).await.expect("send");
    drop(tx);
    let response = tokio::time::timeout(LIMIT, client.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The backend holds "two" and "three" until released: "one" arriving now means
    // the gateway relays the stream as it flows.
    let first = tokio::time::timeout(LIMIT, body.frame())
        .await
        .expect("first message before the stream ends")
        .expect("a frame")
        .expect("no error");
    let mut buf = BytesMut::from(&first.into_data().expect("data")[..]);
    assert_eq!(take_messages(&mut buf), vec![Bytes::from_static(b"one")]);
    backend.seen.release.notify_one();
    let rest = tokio::time::timeout(LIMIT, body.collect())
        .await
        .expect("rest in time")
        .expect("rest");
    assert_eq!(
        rest.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let mut buf = BytesMut::from(&rest.to_bytes()[..]);
    assert_eq!(
        take_messages(&mut buf),
        vec![Bytes::from_static(b"two"), Bytes::from_static(b"three")]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bidirectional_call_streams_the_request_body_too() {
    let backend = GrpcBackend::start(None).await;
    let gw = gateway(&yaml(&[backend.addr], "")).await;
    let mut client = h2c(gw.local_addr()).await;
    let (tx, request) = call("Bidi");
    tx.send(Frame::data(message(b"ping-1")))
        .await
        .expect("send");
    let response = tokio::time::timeout(LIMIT, client.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    let mut body = response.into_body();
    // Each reply arrives while the request is still open: neither direction buffers.
    for (sent, next) in [("ping-1", Some("ping-2")), ("ping-2", None)] {
        let frame = tokio::time::timeout(LIMIT, body.frame())
            .await
            .expect("echo before the request ends")
            .expect("a frame")
            .expect("no error");
        let mut buf = BytesMut::from(&frame.into_data().expect("data")[..]);
        assert_eq!(
            take_messages(&mut buf),
            vec![Bytes::from(format!("echo:{sent}"))]
        );
        if let Some(next) = next {
            tx.send(Frame::data(message(next.as_bytes())))
                .await
                .expect("send");
        }
    }
    drop(tx);
    let rest = tokio::time::timeout(LIMIT, body.collect())
        .await
        .expect("end in time")
        .expect("end");
    assert_eq!(
        rest.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_calls_from_many_clients_share_one_upstream_connection() {
    let backend = GrpcBackend::start(None).await;
    let gw = gateway(&yaml(&[backend.addr], "")).await;
    let mut calls = tokio::task::JoinSet::new();
    for c in 0..4 {
        let client = h2c(gw.local_addr()).await;
        for i in 0..25 {
            let mut client = client.clone();
            calls.spawn(async move {
                let payload = format!("c{c}-{i}");
                let reply = unary(&mut client, payload.as_bytes()).await;
                (payload, reply)
            });
        }
    }
    let mut done = 0;
    while let Some(result) = calls.join_next().await {
        let (payload, reply) = result.expect("call task");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.trailer("grpc-status"), "0");
        assert_eq!(reply.messages, vec![Bytes::from(format!("echo:{payload}"))]);
        done += 1;
    }
    assert_eq!(done, 100);
    assert_eq!(backend.calls(), 100);
    assert_eq!(
        backend.connections(),
        1,
        "calls are multiplexed on one connection"
    );
    assert_eq!(gw.h2_connects(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_backend_closes_with_goaway_is_replaced() {
    let backend = GrpcBackend::start(None).await;
    let gw = gateway(&yaml(&[backend.addr], "")).await;
    let mut client = h2c(gw.local_addr()).await;
    assert_eq!(unary(&mut client, b"first").await.status, 200);
    assert_eq!(gw.h2_open(), 1);
    backend.seen.goaway.notify_waiters();
    assert!(
        eventually(LIMIT, || gw.h2_open() == 0).await,
        "the gateway saw the GOAWAY and the close"
    );
    let reply = unary(&mut client, b"second").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.trailer("grpc-status"), "0");
    assert_eq!(backend.connections(), 2);
    assert_eq!(gw.h2_connects(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_in_flight_finishes_on_a_draining_connection_while_new_calls_go_on() {
    let backend = GrpcBackend::start(None).await;
    let gw = gateway(&yaml(&[backend.addr], "")).await;
    let mut client = h2c(gw.local_addr()).await;
    let (tx, request) = call("Stream");
    drop(tx);
    let response = tokio::time::timeout(LIMIT, client.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    let mut body = response.into_body();
    let first = tokio::time::timeout(LIMIT, body.frame())
        .await
        .expect("first message")
        .expect("a frame")
        .expect("no error");
    assert!(first.is_data());
    // The backend starts draining its connection: the open stream may finish, new
    // calls must not fail (they go to a new connection, or to the old one before its
    // last GOAWAY).
    backend.seen.goaway.notify_waiters();
    for i in 0..3 {
        let reply = unary(&mut client, format!("during-{i}").as_bytes()).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.trailer("grpc-status"), "0");
    }
    backend.seen.release.notify_one();
    let rest = tokio::time::timeout(LIMIT, body.collect())
        .await
        .expect("rest in time")
        .expect("rest");
    assert_eq!(
        rest.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert!(backend.connections() <= 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refused_target_is_retried_on_the_other_and_marked_unhealthy() {
    let dead = closed_port().await;
    let backend = GrpcBackend::start(None).await;
    let extra =
        "    healthchecks:\n      passive:\n        unhealthy:\n          tcp_failures: 1\n";
    let gw = gateway(&yaml(&[dead, backend.addr], extra)).await;
    let mut client = h2c(gw.local_addr()).await;
    for i in 0..6 {
        let reply = unary(&mut client, format!("n{i}").as_bytes()).await;
        assert_eq!(reply.status, 200, "call {i}: {reply:?}");
        assert_eq!(reply.trailer("grpc-status"), "0");
    }
    assert_eq!(backend.calls(), 6);
    let dead_target = dead.to_string();
    assert!(
        eventually(LIMIT, || health_of(&gw, &dead_target)
            == Some(HealthStatus::Unhealthy))
        .await,
        "{:?}",
        gw.upstream_status("pool")
    );
    gw.shutdown().await;
}

fn health_of(gw: &Gateway, target: &str) -> Option<HealthStatus> {
    gw.upstream_status("pool")?
        .targets
        .iter()
        .find(|t| t.target == target)
        .map(|t| t.health)
}

#[tokio::test]
async fn a_stream_the_backend_resets_is_a_grpc_error_not_retried_and_counted_against_it() {
    let backend = GrpcBackend::start(None).await;
    let extra =
        "    healthchecks:\n      passive:\n        unhealthy:\n          tcp_failures: 2\n";
    let gw = gateway(&yaml(&[backend.addr], extra)).await;
    let mut client = h2c(gw.local_addr()).await;
    for expected_calls in 1..=2 {
        let (tx, request) = call("Reset");
        tx.send(Frame::data(message(b"x"))).await.expect("send");
        drop(tx);
        let response = tokio::time::timeout(LIMIT, client.send_request(request))
            .await
            .expect("answer in time")
            .expect("answer");
        let reply = Reply::read(response).await;
        // Kong's answer to a gRPC request it fails: the HTTP status, and the gRPC
        // status of Kong's table in the headers (502 is INTERNAL there).
        assert_eq!(reply.status, 502, "{reply:?}");
        assert_eq!(reply.header("content-type"), "application/grpc");
        assert_eq!(reply.header("grpc-status"), "13");
        assert!(!reply.header("grpc-message").is_empty());
        assert!(reply.messages.is_empty());
        // Sent, so not retried (a POST): the backend saw each call once.
        assert_eq!(backend.calls(), expected_calls);
    }
    let target = backend.addr.to_string();
    assert!(
        eventually(LIMIT, || health_of(&gw, &target)
            == Some(HealthStatus::Unhealthy))
        .await,
        "{:?}",
        gw.upstream_status("pool")
    );
    // The connection survived the resets: still the one connection.
    assert_eq!(backend.connections(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn read_timeout_before_the_response_header_is_a_504_deadline_exceeded() {
    let backend = GrpcBackend::start(None).await;
    let config = yaml(&[backend.addr], "").replacen(
        "protocol: grpc\n",
        "protocol: grpc\n    read_timeout: 200\n",
        1,
    );
    let gw = gateway(&config).await;
    let mut client = h2c(gw.local_addr()).await;
    let (tx, request) = call("Hang");
    tx.send(Frame::data(message(b"wait"))).await.expect("send");
    drop(tx);
    let response = tokio::time::timeout(LIMIT, client.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.header("grpc-status"), "4");
    // Sent, so not retried; the cancelled stream left the connection usable.
    assert_eq!(backend.calls(), 1);
    let reply = unary(&mut client, b"after").await;
    assert_eq!(reply.trailer("grpc-status"), "0");
    assert_eq!(backend.connections(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn gateway_answers_to_grpc_calls_carry_kongs_grpc_status() {
    let backend = GrpcBackend::start(None).await;
    let mut config = yaml(&[backend.addr], "");
    // A second gRPC service on an upstream without targets: Kong's 503.
    config = config.replacen(
        "upstreams:\n",
        "  - name: empty-svc\n    protocol: grpc\n    host: empty\n    routes:\n      - name: empty-route\n        protocols: [grpc]\n        paths: [\"/empty.Service/\"]\nupstreams:\n  - name: empty\n",
        1,
    );
    let gw = gateway(&config).await;
    let mut client = h2c(gw.local_addr()).await;
    let (tx, mut request) = call("Unary");
    drop(tx);
    *request.uri_mut() = "http://grpc.test/other.Service/Method".parse().unwrap();
    let response = client.send_request(request).await.expect("answer");
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), "application/grpc");
    assert_eq!(reply.header("grpc-status"), "5");
    assert_eq!(
        reply.header("grpc-message"),
        "no Route matched with those values"
    );
    assert!(reply.messages.is_empty());
    let (tx, mut request) = call("Unary");
    drop(tx);
    *request.uri_mut() = "http://grpc.test/empty.Service/Method".parse().unwrap();
    let response = client.send_request(request).await.expect("answer");
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("grpc-status"), "14");
    assert_eq!(
        reply.header("grpc-message"),
        "failure to get a peer from the ring-balancer"
    );
    assert_eq!(backend.calls(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn http1_requests_on_a_grpc_route_get_kongs_426_and_415() {
    let backend = GrpcBackend::start(None).await;
    let gw = gateway(&yaml(&[backend.addr], "")).await;
    let path = format!("{PREFIX}Unary");
    let grpc = send(
        &gw,
        "POST",
        "grpc.test",
        &path,
        &[("content-type", "application/grpc")],
        "",
    )
    .await;
    assert_eq!(grpc.status, 426, "{grpc:?}");
    assert_eq!(grpc.json()["message"], "Please use HTTP2 protocol");
    assert_eq!(grpc.header("upgrade"), "HTTP/2");
    let plain = send(
        &gw,
        "POST",
        "grpc.test",
        &path,
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(plain.status, 415, "{plain:?}");
    assert_eq!(
        plain.json()["message"],
        "Non-gRPC request matched gRPC route"
    );
    assert_eq!(backend.calls(), 0);
    gw.shutdown().await;
}

/// A private CA and a leaf for `api.test` it signs, as PEM for the YAML and as a
/// rustls server configuration offering only `h2`.
struct Pki {
    ca_pem: String,
    server: Arc<ServerConfig>,
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "grpc test CA");
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["api.test".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("certificate and key");
    server.alpn_protocols = vec![b"h2".to_vec()];
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

#[tokio::test]
async fn grpcs_verifies_the_backend_and_speaks_h2_over_tls() {
    let pki = pki();
    let backend = GrpcBackend::start(Some(pki.server.clone())).await;
    let ca_id = "0e6c5a7e-5b2f-4f4e-9d1a-0000000000c1";
    let ca_block: String = pki
        .ca_pem
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    let yaml = format!(
        r#"
_format_version: "3.0"
ca_certificates:
  - id: {ca_id}
    cert: |
{ca_block}services:
  - name: grpcs-svc
    protocol: grpcs
    host: pool
    tls_verify: true
    ca_certificates: [{ca_id}]
    routes:
      - name: grpcs-route
        protocols: [grpc, grpcs]
        paths: ["{PREFIX}"]
upstreams:
  - name: pool
    host_header: api.test
    targets:
      - target: "{}"
"#,
        backend.addr
    );
    let gw = gateway(&yaml).await;
    let mut client = h2c(gw.local_addr()).await;
    for i in 0..3 {
        let reply = unary(&mut client, format!("tls{i}").as_bytes()).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.trailer("grpc-status"), "0");
        assert_eq!(reply.messages, vec![Bytes::from(format!("echo:tls{i}"))]);
    }
    assert_eq!(backend.seen.alpn_h2.load(Ordering::SeqCst), 1);
    assert_eq!(
        backend.seen.snis.lock().unwrap().as_slice(),
        &[Some("api.test".to_owned())]
    );
    assert_eq!(backend.connections(), 1);
    let seen = backend.seen.headers.lock().unwrap()[0].clone();
    assert_eq!(seen.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_grpc_call_on_the_tls_listener_reaches_a_grpcs_route() {
    let backend = GrpcBackend::start(None).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: grpc-svc
    protocol: grpc
    host: pool
    routes:
      - name: grpcs-only
        protocols: [grpcs]
        paths: ["{PREFIX}"]
upstreams:
  - name: pool
    targets:
      - target: "{}"
"#,
        backend.addr
    );
    let options = GatewayOptions {
        tls_listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        ..GatewayOptions::default()
    };
    let gw = gateway_with(&yaml, options).await;
    // Over TLS (ALPN h2, the gateway's generated certificate): served.
    let tls_addr = *gw.tls_local_addrs().first().expect("TLS listener");
    let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth();
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(tls_addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config))
        .connect(
            rustls::pki_types::ServerName::try_from("grpc.test").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 over TLS");
    tokio::spawn(connection);
    let reply = unary(&mut sender, b"secure").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.trailer("grpc-status"), "0");
    let seen = backend.seen.headers.lock().unwrap()[0].clone();
    assert_eq!(
        seen.get("x-forwarded-proto").map(|v| v.as_bytes()),
        Some(&b"https"[..])
    );
    // Over plain h2c the grpcs-only route gives Kong's grpc-status 1 answer.
    let mut plain = h2c(gw.local_addr()).await;
    let reply = unary(&mut plain, b"plain").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("grpc-status"), "1");
    assert_eq!(
        reply.header("grpc-message"),
        "gRPC request matched gRPCs route"
    );
    assert_eq!(backend.calls(), 1);
    gw.shutdown().await;
}

/// Accepts any server certificate (the gateway's generated one, in a test).
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
