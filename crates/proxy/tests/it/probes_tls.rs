//! HTTPS active probes (Kong's `healthchecks.active.type: https`) against a real TLS
//! backend on loopback, with a self-signed certificate generated at test time for
//! `probe.test`.
//!
//! The backend records what the prober sent (SNI, request head) and how far each
//! connection got (TLS hello seen, handshake completed), so the tests can tell "probed
//! over TLS and judged by status" from "handshake refused" from "never reached". Two
//! layers are tested: `probe::probe` directly (exact `ProbeOutcome`s, per Kong's
//! classification) and the whole gateway (health visible in `upstream_status`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{HandshakeKind, ServerConfig};
use sluice_core::event::ProbeOutcome;
use sluice_core::snapshot::HealthStatus;
use sluice_core::topology::{ActiveHealthCheck, HealthChecks, ProbeType};
use sluice_proxy::Gateway;
use sluice_proxy::probe::probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::LazyConfigAcceptor;

use crate::support::{eventually, gateway};

/// The name the test certificate is issued for and the probes send as SNI.
const CERT_NAME: &str = "probe.test";

/// Longest request head the backend reads; a probe's head is well under 1 KiB.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// What the backend saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// SNI of every ClientHello (`None` when the client sent none).
    snis: Mutex<Vec<Option<String>>>,
    /// Request heads received over completed handshakes.
    requests: Mutex<Vec<String>>,
    hellos: AtomicU64,
    handshakes: AtomicU64,
    /// Handshakes that resumed an earlier session instead of a full handshake.
    resumed: AtomicU64,
    /// When set, sent instead of an HTTP response (a backend that is not HTTP).
    raw_reply: Mutex<Option<&'static [u8]>>,
}

/// An HTTPS server on 127.0.0.1:0 answering every request with `status`.
struct TlsBackend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    seen: Arc<Seen>,
    accept_loop: JoinHandle<()>,
}

impl TlsBackend {
    async fn start(status: u16) -> TlsBackend {
        let certified = rcgen::generate_simple_self_signed(vec![CERT_NAME.to_owned()])
            .expect("generate a self-signed certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring offers safe protocol versions")
                .with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key)
                .expect("certificate and key match");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let status = Arc::new(AtomicU16::new(status));
        let seen = Arc::new(Seen::default());
        let accept_loop = tokio::spawn({
            let status = status.clone();
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, config.clone(), status.clone(), seen.clone()));
                }
            }
        });
        TlsBackend {
            addr,
            status,
            seen,
            accept_loop,
        }
    }

    fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn answer_raw(&self, bytes: &'static [u8]) {
        *self.seen.raw_reply.lock().expect("reply lock") = Some(bytes);
    }

    fn hellos(&self) -> u64 {
        self.seen.hellos.load(Ordering::SeqCst)
    }

    fn handshakes(&self) -> u64 {
        self.seen.handshakes.load(Ordering::SeqCst)
    }

    fn snis(&self) -> Vec<Option<String>> {
        self.seen.snis.lock().expect("snis lock").clone()
    }

    fn requests(&self) -> Vec<String> {
        self.seen.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// One connection: read the ClientHello (recording SNI), finish the handshake, read the
/// request head, answer `status` and close.
async fn serve(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    status: Arc<AtomicU16>,
    seen: Arc<Seen>,
) {
    let Ok(start) = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await
    else {
        return;
    };
    seen.hellos.fetch_add(1, Ordering::SeqCst);
    let sni = start.client_hello().server_name().map(str::to_owned);
    seen.snis.lock().expect("snis lock").push(sni);
    let Ok(mut tls) = start.into_stream(config).await else {
        return;
    };
    seen.handshakes.fetch_add(1, Ordering::SeqCst);
    if tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
        seen.resumed.fetch_add(1, Ordering::SeqCst);
    }
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
        }
    }
    seen.requests
        .lock()
        .expect("requests lock")
        .push(String::from_utf8_lossy(&head).into_owned());
    let raw = *seen.raw_reply.lock().expect("reply lock");
    let reply = match raw {
        Some(bytes) => bytes.to_vec(),
        None => format!(
            "HTTP/1.1 {} Probe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            status.load(Ordering::SeqCst)
        )
        .into_bytes(),
    };
    let _ = tls.write_all(&reply).await;
    let _ = tls.shutdown().await;
}

fn https_check(verify: bool, sni: Option<&str>) -> ActiveHealthCheck {
    let mut check = HealthChecks::default().active;
    check.probe_type = ProbeType::Https;
    check.http_path = "/health".into();
    check.https_verify_certificate = verify;
    check.https_sni = sni.map(str::to_owned);
    check.timeout = Duration::from_millis(500);
    check
}

// ---- probe::probe directly: exact outcomes -------------------------------------------

#[tokio::test]
async fn unverified_probe_reads_the_status_over_tls_and_sends_https_sni() {
    let backend = TlsBackend::start(200).await;
    let check = https_check(false, Some(CERT_NAME));
    assert_eq!(
        probe(backend.addr, &check, "backend.internal:8443", None).await,
        ProbeOutcome::Status(200)
    );
    backend.set_status(503);
    assert_eq!(
        probe(backend.addr, &check, "backend.internal:8443", None).await,
        ProbeOutcome::Status(503)
    );
    assert_eq!(backend.handshakes(), 2);
    assert_eq!(
        backend.snis(),
        vec![Some(CERT_NAME.to_owned()), Some(CERT_NAME.to_owned())],
        "SNI is https_sni, not the Host value"
    );
    let requests = backend.requests();
    let first = requests.first().map(String::as_str).unwrap_or("");
    assert!(
        first.starts_with("GET /health HTTP/1.0\r\nHost: backend.internal:8443\r\n"),
        "request head: {first:?}"
    );
}

#[tokio::test]
async fn a_non_http_answer_over_tls_is_status_zero_and_a_cut_line_a_tcp_failure() {
    let backend = TlsBackend::start(200).await;
    let check = https_check(false, Some(CERT_NAME));
    backend.answer_raw(b"220 smtp.example ESMTP ready\r\n");
    // Kong reports an unparsable status line as status 0: an HTTP failure.
    assert_eq!(
        probe(backend.addr, &check, CERT_NAME, None).await,
        ProbeOutcome::Status(0)
    );
    backend.answer_raw(b"HTTP/1.1 200 OK");
    assert_eq!(
        probe(backend.addr, &check, CERT_NAME, None).await,
        ProbeOutcome::TcpFailure,
        "the connection closed before the status line ended"
    );
}

#[tokio::test]
async fn repeated_probes_resume_the_tls_session_through_the_shared_config() {
    let backend = TlsBackend::start(200).await;
    // A name no other test uses: the client's session cache is keyed by server name and
    // shared process-wide, so a parallel test's backend must not replace our ticket.
    let check = https_check(false, Some("resume.probe.test"));
    for _ in 0..3 {
        assert_eq!(
            probe(backend.addr, &check, CERT_NAME, None).await,
            ProbeOutcome::Status(200)
        );
    }
    assert_eq!(backend.handshakes(), 3);
    assert_eq!(
        backend.seen.resumed.load(Ordering::SeqCst),
        2,
        "after the first full handshake, probes resume (configs are built once, not per probe)"
    );
}

#[tokio::test]
async fn without_https_sni_the_host_value_without_port_is_the_sni() {
    let backend = TlsBackend::start(200).await;
    let check = https_check(false, None);
    assert_eq!(
        probe(backend.addr, &check, "backend.internal:8443", None).await,
        ProbeOutcome::Status(200)
    );
    // An IP-literal Host gives no SNI at all: RFC 6066 forbids IP addresses there.
    assert_eq!(
        probe(backend.addr, &check, &backend.addr.to_string(), None).await,
        ProbeOutcome::Status(200)
    );
    assert_eq!(
        backend.snis(),
        vec![Some("backend.internal".to_owned()), None]
    );
}

#[tokio::test]
async fn verified_probe_refuses_a_self_signed_certificate_as_a_tcp_failure() {
    let backend = TlsBackend::start(200).await;
    let check = https_check(true, Some(CERT_NAME));
    assert_eq!(
        probe(backend.addr, &check, CERT_NAME, None).await,
        ProbeOutcome::TcpFailure
    );
    assert_eq!(backend.hellos(), 1, "the prober reached the backend");
    assert!(
        backend.requests().is_empty(),
        "no request is sent over an unverified session"
    );
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_a_tcp_failure_per_kong() {
    // Accepts TCP and then says nothing: the TLS handshake stalls until the timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut check = https_check(false, Some(CERT_NAME));
    check.timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    assert_eq!(
        probe(addr, &check, CERT_NAME, None).await,
        ProbeOutcome::TcpFailure
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the probe is bounded by its timeout"
    );
    // A plaintext HTTP server answering a ClientHello is a handshake failure too.
    let plain =
        crate::support::backend::Backend::start("plain", crate::support::backend::Behavior::Ok)
            .await;
    assert_eq!(
        probe(plain.addr, &check, CERT_NAME, None).await,
        ProbeOutcome::TcpFailure
    );
    silent.abort();
}

// ---- through the gateway: health in upstream_status ----------------------------------

fn health_of(gw: &Gateway, upstream: &str, target: &str) -> Option<HealthStatus> {
    let status = gw.upstream_status(upstream)?;
    status
        .targets
        .iter()
        .find(|t| t.target == target)
        .map(|t| t.health)
}

/// An upstream probed over HTTPS every 100 ms; `unhealthy_counters` picks which failure
/// category may mark a target unhealthy (Kong: a zero counter disables its category),
/// so each test proves *which* outcome the probe produced.
fn https_upstream_yaml(verify: bool, unhealthy_counters: &str, targets: &[SocketAddr]) -> String {
    let targets = crate::support::target_entries(targets);
    format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    healthchecks:
      active:
        type: https
        https_sni: {CERT_NAME}
        https_verify_certificate: {verify}
        http_path: /health
        timeout: 0.5
        healthy:
          interval: 0.1
          successes: 1
        unhealthy:
          interval: 0.1
          {unhealthy_counters}
    targets:
{targets}"#
    )
}

#[tokio::test]
async fn unverified_https_probes_keep_a_healthy_backend_and_eject_one_answering_500() {
    let good = TlsBackend::start(200).await;
    let sick = TlsBackend::start(500).await;
    let yaml = https_upstream_yaml(
        false,
        "http_failures: 1\n          tcp_failures: 0\n          timeouts: 0",
        &[good.addr, sick.addr],
    );
    let gw = gateway(&yaml).await;
    let (good_target, sick_target) = (good.addr.to_string(), sick.addr.to_string());
    assert!(
        eventually(Duration::from_secs(3), || {
            health_of(&gw, "pool", &sick_target) == Some(HealthStatus::Unhealthy)
        })
        .await,
        "a 500 from /health over TLS marks the target unhealthy: {:?}",
        gw.upstream_status("pool")
    );
    // The good backend has been judged several times by now and must still be healthy.
    assert!(
        eventually(Duration::from_secs(3), || good.requests().len() >= 3).await,
        "the healthy backend keeps being probed"
    );
    assert_eq!(
        health_of(&gw, "pool", &good_target),
        Some(HealthStatus::Healthy)
    );
    assert!(
        good.snis()
            .iter()
            .chain(sick.snis().iter())
            .all(|sni| sni.as_deref() == Some(CERT_NAME)),
        "every probe sent https_sni: {:?} {:?}",
        good.snis(),
        sick.snis()
    );
    assert!(
        good.requests()
            .iter()
            .all(|head| head.starts_with("GET /health HTTP/1.0\r\n")),
        "{:?}",
        good.requests()
    );
    // Recovery goes through the same TLS path.
    sick.set_status(200);
    assert!(
        eventually(Duration::from_secs(3), || {
            health_of(&gw, "pool", &sick_target) == Some(HealthStatus::Healthy)
        })
        .await,
        "a backend answering 200 again is healthy again: {:?}",
        gw.upstream_status("pool")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn verified_https_probes_mark_a_self_signed_backend_unhealthy_as_tcp_failures() {
    let backend = TlsBackend::start(200).await;
    let yaml = https_upstream_yaml(
        true,
        "tcp_failures: 1\n          http_failures: 0\n          timeouts: 0",
        &[backend.addr],
    );
    let gw = gateway(&yaml).await;
    let target = backend.addr.to_string();
    assert!(
        eventually(Duration::from_secs(3), || {
            health_of(&gw, "pool", &target) == Some(HealthStatus::Unhealthy)
        })
        .await,
        "a refused certificate counts as a tcp failure: {:?}",
        gw.upstream_status("pool")
    );
    assert!(backend.hellos() > 0, "the probes reached the backend");
    assert!(
        backend.requests().is_empty(),
        "no probe request crossed an unverified handshake"
    );
    assert_eq!(
        backend.snis().first().cloned().flatten().as_deref(),
        Some(CERT_NAME),
        "SNI sent equals https_sni"
    );
    gw.shutdown().await;
}
