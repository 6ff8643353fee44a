//! TLS to `https` services, end to end: the gateway in front of real rustls backends on
//! loopback, with certificates made by `rcgen` at test time (a private CA, leaves it
//! signs, a self-signed stranger, and client certificates for mTLS).
//!
//! The backends speak keep-alive HTTP/1.1 inside TLS (hyper) and record, per ClientHello,
//! the SNI, and per completed handshake whether a client certificate came with it, so
//! the tests see SNI, verification, mTLS and connection reuse from the backend's side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use sluice_core::event::ProbeOutcome;
use sluice_core::snapshot::HealthStatus;
use sluice_proxy::probe::probe;
use sluice_proxy::tls::ClientIdentity;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::LazyConfigAcceptor;

use crate::support::{eventually, gateway, get};

/// The name the backends' certificates are issued for.
const NAME: &str = "api.test";

/// Ids of the certificate entities in the YAML (Kong references them by id).
const CA_ID: &str = "0e6c5a7e-5b2f-4f4e-9d1a-000000000001";
const CLIENT_ID: &str = "0e6c5a7e-5b2f-4f4e-9d1a-000000000002";

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(common_name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-sign the CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, common_name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("intermediate key");
        Ca {
            issuer: CertifiedIssuer::signed_by(params, key, &self.issuer)
                .expect("sign the intermediate"),
        }
    }

    /// A leaf for `names`, signed by this CA.
    fn leaf(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            intermediates: Vec::new(),
        }
    }
}

struct Leaf {
    der: CertificateDer<'static>,
    /// Sent after the leaf by a backend serving it.
    intermediates: Vec<CertificateDer<'static>>,
    pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    fn self_signed(names: &[&str]) -> Leaf {
        let certified = rcgen::generate_simple_self_signed(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("self-signed certificate");
        Leaf {
            der: certified.cert.der().clone(),
            pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            key_der: certified.signing_key.serialize_der(),
            intermediates: Vec::new(),
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// What a backend saw.
#[derive(Default)]
struct Seen {
    snis: Mutex<Vec<Option<String>>>,
    hellos: AtomicU64,
    handshakes: AtomicU64,
    /// Completed handshakes in which the client presented a certificate.
    with_client_cert: AtomicU64,
    requests: AtomicU64,
    /// Connection tasks, aborted by `kill` (closing their sockets).
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// A keep-alive HTTPS/1.1 server answering `200 <name>` to everything.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    accept_loop: JoinHandle<()>,
}

impl Backend {
    /// Serves `leaf`; with `client_ca`, requires a client certificate signed by it.
    async fn start(name: &'static str, leaf: &Leaf, client_ca: Option<&Ca>) -> Backend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring offers safe protocol versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.der()).expect("client CA");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(
                std::iter::once(leaf.der.clone())
                    .chain(leaf.intermediates.iter().cloned())
                    .collect(),
                leaf.key(),
            )
            .expect("certificate and key match");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Seen::default());
        let accept_loop = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let task = tokio::spawn(serve(stream, config.clone(), seen.clone(), name));
                    seen.connections
                        .lock()
                        .expect("connections lock")
                        .push(task);
                }
            }
        });
        Backend {
            addr,
            seen,
            accept_loop,
        }
    }

    fn hellos(&self) -> u64 {
        self.seen.hellos.load(Ordering::SeqCst)
    }

    fn handshakes(&self) -> u64 {
        self.seen.handshakes.load(Ordering::SeqCst)
    }

    fn with_client_cert(&self) -> u64 {
        self.seen.with_client_cert.load(Ordering::SeqCst)
    }

    fn snis(&self) -> Vec<Option<String>> {
        self.seen.snis.lock().expect("snis lock").clone()
    }

    fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// Stop accepting and close every open connection.
    fn kill(&self) {
        self.accept_loop.abort();
        for task in self
            .seen
            .connections
            .lock()
            .expect("connections lock")
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    config: Arc<ServerConfig>,
    seen: Arc<Seen>,
    name: &'static str,
) {
    let Ok(start) = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await
    else {
        return;
    };
    seen.hellos.fetch_add(1, Ordering::SeqCst);
    let sni = start.client_hello().server_name().map(str::to_owned);
    seen.snis.lock().expect("snis lock").push(sni);
    let Ok(tls) = start.into_stream(config).await else {
        return;
    };
    seen.handshakes.fetch_add(1, Ordering::SeqCst);
    if tls.get_ref().1.peer_certificates().is_some() {
        seen.with_client_cert.fetch_add(1, Ordering::SeqCst);
    }
    let service = service_fn(move |_request| {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
        }
    });
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// `text` as a YAML block scalar body indented by `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

fn ca_entity(ca: &Ca) -> String {
    format!(
        "ca_certificates:\n  - id: {CA_ID}\n    cert: |\n{}",
        block(&ca.pem(), 6)
    )
}

fn client_cert_entity(leaf: &Leaf) -> String {
    format!(
        "certificates:\n  - id: {CLIENT_ID}\n    cert: |\n{}    key: |\n{}",
        block(&leaf.pem, 6),
        block(&leaf.key_pem, 6)
    )
}

#[tokio::test]
async fn https_service_answers_over_tls_with_sni_and_reuses_its_connection() {
    let backend = Backend::start("tls-backend", &Leaf::self_signed(&[NAME]), None).await;
    // Two services on one backend address: one through an upstream whose host_header is
    // the certificate's name (SNI api.test), one by IP literal (no SNI). tls_verify is
    // null: Kong leaves nginx's proxy_ssl_verify, off, so the self-signed cert is fine.
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: by-name
    protocol: https
    host: pool
    routes: [{{ name: a, paths: ["/a"] }}]
  - name: by-ip
    url: https://{addr}
    routes: [{{ name: b, paths: ["/b"] }}]
upstreams:
  - name: pool
    host_header: {NAME}
    targets: [{{ target: "{addr}" }}]
"#,
        addr = backend.addr
    );
    let gw = gateway(&yaml).await;
    for _ in 0..3 {
        let reply = get(&gw, "/a").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "tls-backend"));
    }
    assert_eq!(
        backend.handshakes(),
        1,
        "the pooled TLS connection is reused"
    );
    for _ in 0..3 {
        let reply = get(&gw, "/b").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "tls-backend"));
    }
    assert_eq!(
        backend.handshakes(),
        2,
        "a connection with another server name is not reused for it, and is itself reused"
    );
    assert_eq!(backend.snis(), vec![Some(NAME.to_owned()), None]);
    gw.shutdown().await;
}

#[tokio::test]
async fn verify_on_refuses_an_untrusted_certificate_retries_elsewhere_and_trusts_the_given_ca() {
    let ca = Ca::new("Sluice test CA");
    let trusted = Backend::start("trusted", &ca.leaf(&[NAME]), None).await;
    let stranger = Backend::start("stranger", &Leaf::self_signed(&[NAME]), None).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
{ca}
services:
  - name: mixed
    protocol: https
    host: mixed-pool
    tls_verify: true
    ca_certificates: [{CA_ID}]
    routes: [{{ name: m, paths: ["/mixed"] }}]
  - name: untrusted-only
    protocol: https
    host: stranger-pool
    tls_verify: true
    ca_certificates: [{CA_ID}]
    retries: 1
    routes: [{{ name: u, paths: ["/untrusted"] }}]
upstreams:
  - name: mixed-pool
    host_header: {NAME}
    healthchecks:
      passive:
        unhealthy: {{ tcp_failures: 1 }}
    targets:
      - target: "{trusted}"
      - target: "{stranger}"
  - name: stranger-pool
    host_header: {NAME}
    targets: [{{ target: "{stranger}" }}]
"#,
        ca = ca_entity(&ca),
        trusted = trusted.addr,
        stranger = stranger.addr,
    );
    let gw = gateway(&yaml).await;
    let reply = get(&gw, "/untrusted").await;
    assert_eq!(
        reply.status, 502,
        "an untrusted certificate is refused: {reply:?}"
    );
    assert!(
        stranger.hellos() >= 1,
        "the gateway reached the untrusted backend"
    );
    // Round-robin over both targets: every request still ends at the trusted one, the
    // refused handshake being retried on it (nothing was sent).
    let hellos_before = stranger.hellos();
    for _ in 0..4 {
        let reply = get(&gw, "/mixed").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "trusted"));
    }
    assert!(trusted.handshakes() >= 1);
    assert!(
        stranger.hellos() > hellos_before,
        "some first attempts went to the untrusted target and were retried"
    );
    // The refused handshake counted as a tcp failure for passive health.
    let stranger_target = stranger.addr.to_string();
    assert!(
        eventually(Duration::from_secs(3), || {
            gw.upstream_status("mixed-pool").is_some_and(|status| {
                status
                    .targets
                    .iter()
                    .any(|t| t.target == stranger_target && t.health == HealthStatus::Unhealthy)
            })
        })
        .await,
        "a failed handshake is a tcp failure: {:?}",
        gw.upstream_status("mixed-pool")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn mtls_backend_accepts_the_client_certificate_and_refuses_a_client_without_one() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let client = client_ca.leaf(&["gateway.test"]);
    let backend = Backend::start("mtls", &server_ca.leaf(&[NAME]), Some(&client_ca)).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
{certs}
{ca}
services:
  - name: with-cert
    protocol: https
    host: pool
    tls_verify: true
    ca_certificates: [{CA_ID}]
    client_certificate: {{ id: {CLIENT_ID} }}
    routes: [{{ name: with-cert, paths: ["/with"] }}]
  - name: upstream-cert
    protocol: https
    host: pool-with-cert
    routes: [{{ name: u, paths: ["/upstream"] }}]
  - name: without-cert
    protocol: https
    host: pool
    retries: 0
    routes: [{{ name: no-cert, paths: ["/without"] }}]
upstreams:
  - name: pool
    host_header: {NAME}
    targets: [{{ target: "{addr}" }}]
  - name: pool-with-cert
    host_header: {NAME}
    client_certificate: {CLIENT_ID}
    targets: [{{ target: "{addr}" }}]
"#,
        certs = client_cert_entity(&client),
        ca = ca_entity(&server_ca),
        addr = backend.addr,
    );
    let gw = gateway(&yaml).await;
    let reply = get(&gw, "/with").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "mtls"));
    let reply = get(&gw, "/upstream").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "mtls"),
        "the upstream's client_certificate is used when the service has none"
    );
    assert_eq!(backend.with_client_cert(), 2);
    let reply = get(&gw, "/without").await;
    assert_eq!(
        reply.status, 502,
        "no client certificate, no answer: {reply:?}"
    );
    assert_eq!(backend.with_client_cert(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn https_probes_present_the_upstream_client_certificate() {
    let server_ca = Ca::new("probe server CA");
    let client_ca = Ca::new("probe client CA");
    let client = client_ca.leaf(&["gateway.test"]);
    let backend = Backend::start("mtls-probe", &server_ca.leaf(&[NAME]), Some(&client_ca)).await;
    let mut check = sluice_core::topology::HealthChecks::default().active;
    check.probe_type = sluice_core::topology::ProbeType::Https;
    check.https_verify_certificate = false;
    check.timeout = Duration::from_millis(500);
    let identity = ClientIdentity::new(vec![client.der.clone()], Arc::new(client.key()));
    assert_eq!(
        probe(backend.addr, &check, NAME, Some(&identity)).await,
        ProbeOutcome::Status(200)
    );
    assert_eq!(backend.with_client_cert(), 1);
    // Without the certificate the backend ends the session before any status line.
    assert_eq!(
        probe(backend.addr, &check, NAME, None).await,
        ProbeOutcome::TcpFailure
    );
    // Through the gateway, in both probe connection modes (Kong's connection per probe,
    // and Sluice's opt-in kept connection): the upstream's client_certificate keeps the
    // target healthy.
    for tags in ["[]", r#"["sluice:probe-keepalive=on"]"#] {
        probe_through_gateway(&backend, &client, tags).await;
    }
}

async fn probe_through_gateway(backend: &Backend, client: &Leaf, tags: &str) {
    let yaml = format!(
        r#"
_format_version: "3.0"
{certs}
services:
  - name: svc
    protocol: https
    host: pool
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    client_certificate: {CLIENT_ID}
    tags: {tags}
    healthchecks:
      active:
        type: https
        https_verify_certificate: false
        https_sni: {NAME}
        timeout: 0.5
        healthy: {{ interval: 0.1, successes: 1 }}
        unhealthy: {{ interval: 0.1, tcp_failures: 1, http_failures: 1 }}
    targets: [{{ target: "{addr}" }}]
"#,
        certs = client_cert_entity(client),
        addr = backend.addr,
    );
    let gw = gateway(&yaml).await;
    let before = backend.with_client_cert();
    assert!(
        eventually(Duration::from_secs(3), || backend.with_client_cert()
            > before)
        .await,
        "probes present the client certificate ({tags})"
    );
    let requests_before = backend.requests();
    assert!(
        eventually(Duration::from_secs(3), || backend.requests()
            >= requests_before + 2)
        .await,
        "probes keep succeeding over mTLS ({tags})"
    );
    let target = backend.addr.to_string();
    assert!(
        gw.upstream_status("pool").is_some_and(|s| s
            .targets
            .iter()
            .any(|t| t.target == target && t.health == HealthStatus::Healthy)),
        "{tags}: {:?}",
        gw.upstream_status("pool")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handshake_is_a_connect_timeout() {
    // Accepts TCP and says nothing: the handshake runs into connect_timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    url: https://{addr}
    connect_timeout: 200
    retries: 0
    routes: [{{ name: r, paths: ["/"] }}]
"#
    );
    let gw = gateway(&yaml).await;
    let started = tokio::time::Instant::now();
    let reply = get(&gw, "/").await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the handshake is bounded by connect_timeout"
    );
    gw.shutdown().await;
    silent.abort();
}

#[tokio::test]
async fn tls_verify_depth_counts_the_intermediates_below_the_trusted_ca() {
    let root = Ca::new("depth root");
    let intermediate = root.intermediate("depth intermediate");
    let mut leaf = intermediate.leaf(&[NAME]);
    leaf.intermediates.push(intermediate.der());
    let backend = Backend::start("deep", &leaf, None).await;
    // One intermediate between the leaf and the trusted root: nginx's default depth (1)
    // accepts it, depth 0 does not.
    let yaml = format!(
        r#"
_format_version: "3.0"
{ca}
services:
  - name: default-depth
    protocol: https
    host: pool
    tls_verify: true
    ca_certificates: [{CA_ID}]
    routes: [{{ name: default-depth, paths: ["/default"] }}]
  - name: depth-zero
    protocol: https
    host: pool
    tls_verify: true
    tls_verify_depth: 0
    ca_certificates: [{CA_ID}]
    retries: 0
    routes: [{{ name: depth-zero, paths: ["/zero"] }}]
upstreams:
  - name: pool
    host_header: {NAME}
    targets: [{{ target: "{addr}" }}]
"#,
        ca = ca_entity(&root),
        addr = backend.addr,
    );
    let gw = gateway(&yaml).await;
    let reply = get(&gw, "/default").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "deep"));
    let reply = get(&gw, "/zero").await;
    assert_eq!(
        reply.status, 502,
        "a chain longer than the depth is refused: {reply:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_tls_standby_is_kept_warm_with_its_handshake_done_and_failover_reuses_it() {
    let primary = Backend::start("primary", &Leaf::self_signed(&[NAME]), None).await;
    let standby = Backend::start("standby", &Leaf::self_signed(&[NAME]), None).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    protocol: https
    host: pool
    retries: 3
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    host_header: {NAME}
    targets:
      - {{ target: "{primary}", tags: [region:primary] }}
      - {{ target: "{standby}", tags: [region:secondary] }}
"#,
        primary = primary.addr,
        standby = standby.addr,
    );
    let gw = gateway(&yaml).await;
    assert_eq!(get(&gw, "/").await.body, "primary");
    // No request goes to the standby, yet it gets a TLS connection with the right name.
    assert!(
        eventually(Duration::from_secs(5), || standby.handshakes() >= 1).await,
        "the standby was never warmed"
    );
    assert_eq!(standby.requests(), 0, "warming sends no requests");
    assert!(
        standby
            .snis()
            .iter()
            .all(|sni| sni.as_deref() == Some(NAME)),
        "{:?}",
        standby.snis()
    );
    let warmed = standby.handshakes();
    primary.kill();
    let reply = get(&gw, "/").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "standby"),
        "{reply:?}"
    );
    assert_eq!(
        standby.handshakes(),
        warmed,
        "the failed-over request used the warm TLS connection"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_service_host_and_a_preserved_client_host_are_the_server_name() {
    let ca = Ca::new("names CA");
    let backend = Backend::start("named", &ca.leaf(&["localhost", "client.test"]), None).await;
    let port = backend.addr.port();
    // `localhost` resolves through /etc/hosts; the certificate names it, so a verified
    // handshake proves the name presented and checked is the service's host.
    let yaml = format!(
        r#"
_format_version: "3.0"
{ca}
services:
  - name: by-host
    url: https://localhost:{port}
    tls_verify: true
    ca_certificates: [{CA_ID}]
    routes:
      - {{ name: plain, paths: ["/plain"] }}
      - {{ name: preserved, paths: ["/preserved"], preserve_host: true }}
"#,
        ca = ca_entity(&ca),
    );
    let gw = gateway(&yaml).await;
    let reply = get(&gw, "/plain").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "named"),
        "{reply:?}"
    );
    let reply = crate::support::send(&gw, "GET", "client.test", "/preserved", &[], "").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "named"),
        "{reply:?}"
    );
    let snis = backend.snis();
    assert!(snis.contains(&Some("localhost".to_owned())), "{snis:?}");
    assert_eq!(
        snis.last().cloned().flatten().as_deref(),
        Some("client.test"),
        "with preserve_host the client's Host is the server name (Kong's $upstream_host)"
    );
    gw.shutdown().await;
}
