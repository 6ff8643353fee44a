//! The TLS proxy listener end to end: a real gateway with a TLS listener on
//! `127.0.0.1:0`, real rustls clients (tokio-rustls, hyper's HTTP/1.1 and HTTP/2 client
//! connections) and the scriptable loopback backends.
//!
//! Certificates are made by `rcgen` at test time: a private CA signs a leaf per name, so
//! a verifying client proves the served certificate is the one for the name, and the
//! served leaf is also compared byte for byte. The one RSA key is a fixture
//! (`data/rsa-2048.key.pem`, made with `openssl genpkey -algorithm RSA -pkeyopt
//! rsa_keygen_bits:2048`) because ring, rcgen's backend, cannot generate RSA keys; the
//! certificate for it is still made here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sluice_proxy::{Gateway, GatewayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::backend::{Backend, Behavior};
use crate::support::{config, gateway_with, send};

/// Ids of the certificate entities (Kong references certificates by id only).
const ID_EXACT: &str = "7c1e0f3a-6b1d-4c55-9a47-000000000001";
const ID_PREFIX: &str = "7c1e0f3a-6b1d-4c55-9a47-000000000002";
const ID_SUFFIX: &str = "7c1e0f3a-6b1d-4c55-9a47-000000000003";
const ID_DEFAULT: &str = "7c1e0f3a-6b1d-4c55-9a47-000000000004";
const ID_RSA: &str = "7c1e0f3a-6b1d-4c55-9a47-000000000005";

/// Longest wait for anything in these tests: every step is a loopback round trip.
const LIMIT: Duration = Duration::from_secs(10);

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    der: CertificateDer<'static>,
    pem: String,
    key_pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Sluice TLS listener test CA");
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-sign the CA"),
        }
    }

    /// A leaf for `names` with a fresh ECDSA P-256 key.
    fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, KeyPair::generate().expect("leaf key"))
    }

    /// A leaf for `names` with the fixture RSA key.
    fn rsa_leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::from_pem(include_str!("data/rsa-2048.key.pem")).expect("RSA key");
        self.leaf_with(names, key)
    }

    fn leaf_with(&self, names: &[&str], key: KeyPair) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client that verifies against this CA (and the name it connects to).
    fn verifying_client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("CA root");
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate (the test compares the served leaf itself) and offers only
/// `schemes`, so a test can play a client that verifies RSA signatures only.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// A client that takes whatever certificate it is served.
fn any_client(schemes: Option<Vec<SignatureScheme>>) -> Arc<ClientConfig> {
    let provider = provider();
    let schemes = schemes.unwrap_or_else(|| {
        provider
            .signature_verification_algorithms
            .supported_schemes()
    });
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider, schemes }))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr`; `sni: None` sends no server name (an IP name, for which
/// clients send no SNI, RFC 6066).
async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    client: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).expect("server name"),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    tokio::time::timeout(LIMIT, TlsConnector::from(client).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The leaf certificate the gateway served for `sni`.
async fn served(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let tls = connect(addr, sni, any_client(None))
        .await
        .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .clone()
        .into_owned()
}

/// One request over a finished TLS connection, HTTP/2 when ALPN chose it.
async fn request(
    tls: TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> (u16, http::HeaderMap, String, http::Version) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        let request = http::Request::get(format!("https://{host}{path}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender.send_request(request).await.expect("h2 response")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender
            .send_request(request)
            .await
            .expect("http/1.1 response")
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
        parts.version,
    )
}

/// `text` as a YAML block scalar body indented by `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

/// A `certificates` entry with nested `snis`.
fn certificate(id: &str, leaf: &Leaf, snis: &[&str]) -> String {
    let names: Vec<String> = snis.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "  - id: {id}\n    cert: |\n{}    key: |\n{}    snis: [{}]\n",
        block(&leaf.pem, 6),
        block(&leaf.key_pem, 6),
        names.join(", ")
    )
}

async fn tls_gateway(yaml: &str) -> Gateway {
    let options = GatewayOptions {
        tls_listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        ..GatewayOptions::default()
    };
    gateway_with(yaml, options).await
}

fn tls_addr(gw: &Gateway) -> SocketAddr {
    *gw.tls_local_addrs().first().expect("a TLS listener")
}

/// The four kinds of SNI, each with its own certificate.
struct Sites {
    ca: Ca,
    exact: Leaf,
    prefix: Leaf,
    suffix: Leaf,
    default: Leaf,
}

impl Sites {
    fn new() -> Sites {
        let ca = Ca::new();
        Sites {
            exact: ca.leaf(&["api.example.test"]),
            prefix: ca.leaf(&["*.example.test"]),
            suffix: ca.leaf(&["shop.example.org", "shop.example.net"]),
            default: ca.leaf(&["default.test"]),
            ca,
        }
    }

    /// The certificates (the default one only when `with_default`) and `routes`.
    fn yaml(&self, backend: SocketAddr, with_default: bool, routes: &str) -> String {
        let mut yaml = String::from("_format_version: \"3.0\"\ncertificates:\n");
        yaml += &certificate(ID_EXACT, &self.exact, &["api.example.test"]);
        yaml += &certificate(ID_PREFIX, &self.prefix, &["*.example.test"]);
        yaml += &certificate(ID_SUFFIX, &self.suffix, &["shop.example.*"]);
        if with_default {
            yaml += &certificate(ID_DEFAULT, &self.default, &[]);
            yaml += &format!("snis:\n  - name: \"*\"\n    certificate: {{ id: {ID_DEFAULT} }}\n");
        }
        yaml +=
            &format!("services:\n  - name: svc\n    url: http://{backend}\n    routes:\n{routes}");
        yaml
    }
}

const CATCH_ALL: &str = "      - name: all\n        paths: [/]\n";

#[tokio::test]
async fn sni_selects_the_exact_then_the_wildcard_then_the_default_certificate() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let sites = Sites::new();
    let gw = tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await;
    let addr = tls_addr(&gw);

    assert_eq!(
        served(addr, Some("api.example.test")).await,
        sites.exact.der
    );
    // Kong's lookup: exact beats the wildcard that also covers the name.
    assert_eq!(
        served(addr, Some("www.example.test")).await,
        sites.prefix.der
    );
    assert_eq!(
        served(addr, Some("shop.example.org")).await,
        sites.suffix.der
    );
    // A wildcard stands for one label: a.b.example.test is not *.example.test.
    assert_eq!(
        served(addr, Some("a.b.example.test")).await,
        sites.default.der
    );
    assert_eq!(served(addr, Some("unknown.test")).await, sites.default.der);
    // Case and the trailing dot do not matter.
    assert_eq!(
        served(addr, Some("API.Example.Test")).await,
        sites.exact.der
    );
    // No SNI at all: the `*` certificate.
    assert_eq!(served(addr, None).await, sites.default.der);

    // A verifying client accepts the chain for the name it asked for.
    let client = sites.ca.verifying_client(&[b"http/1.1"]);
    let tls = connect(addr, Some("api.example.test"), client.clone())
        .await
        .expect("verified handshake");
    let (status, headers, _, _) = request(tls, "api.example.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-backend"], "b");
    let tls = connect(addr, Some("www.example.test"), client)
        .await
        .expect("verified wildcard handshake");
    assert_eq!(request(tls, "www.example.test", "/").await.0, 200);
}

#[tokio::test]
async fn without_a_star_sni_unmatched_and_nameless_clients_get_the_generated_certificate() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let sites = Sites::new();
    let gw = tls_gateway(&sites.yaml(backend.addr, false, CATCH_ALL)).await;
    let addr = tls_addr(&gw);
    let configured = [&sites.exact.der, &sites.prefix.der, &sites.suffix.der];

    let unmatched = served(addr, Some("unknown.test")).await;
    let nameless = served(addr, None).await;
    assert!(!configured.contains(&&unmatched));
    // One certificate generated at startup, the same for both.
    assert_eq!(unmatched, nameless);
    // A verifying client refuses it (it is self-signed), and says so.
    let refused = connect(
        addr,
        Some("unknown.test"),
        sites.ca.verifying_client(&[b"http/1.1"]),
    )
    .await;
    assert!(refused.is_err(), "the self-signed default must not verify");
    // Requests still work over it for clients that accept it.
    let tls = connect(addr, Some("unknown.test"), any_client(None))
        .await
        .expect("handshake");
    assert_eq!(request(tls, "unknown.test", "/").await.0, 200);
}

#[tokio::test]
async fn rsa_and_ecdsa_certificates_are_both_served_and_cert_alt_reaches_rsa_only_clients() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let ca = Ca::new();
    let rsa = ca.rsa_leaf(&["rsa.example.test"]);
    let ecdsa = ca.leaf(&["dual.example.test"]);
    let ecdsa_alt_rsa = ca.rsa_leaf(&["dual.example.test"]);
    let yaml = format!(
        "_format_version: \"3.0\"\ncertificates:\n{}  - id: {ID_PREFIX}\n    cert: |\n{}    key: |\n{}    cert_alt: |\n{}    key_alt: |\n{}    snis: [dual.example.test]\nservices:\n  - name: svc\n    url: http://{}\n    routes:\n{CATCH_ALL}",
        certificate(ID_RSA, &rsa, &["rsa.example.test"]),
        block(&ecdsa.pem, 6),
        block(&ecdsa.key_pem, 6),
        block(&ecdsa_alt_rsa.pem, 6),
        block(&ecdsa_alt_rsa.key_pem, 6),
        backend.addr
    );
    let gw = tls_gateway(&yaml).await;
    let addr = tls_addr(&gw);

    let client = ca.verifying_client(&[b"http/1.1"]);
    let tls = connect(addr, Some("rsa.example.test"), client.clone())
        .await
        .expect("RSA handshake");
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], rsa.der);
    assert_eq!(request(tls, "rsa.example.test", "/").await.0, 200);

    // Every client that verifies ECDSA gets the first (ECDSA) pair ...
    assert_eq!(served(addr, Some("dual.example.test")).await, ecdsa.der);
    // ... one that verifies only RSA signatures gets the alternate pair.
    let rsa_only = any_client(Some(vec![
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ]));
    let tls = connect(addr, Some("dual.example.test"), rsa_only)
        .await
        .expect("RSA-only handshake");
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0],
        ecdsa_alt_rsa.der
    );
}

#[tokio::test]
async fn h2_and_http1_over_tls_reach_the_backend_with_forwarded_proto_https_and_the_tls_port() {
    let backend = Backend::start("echo", Behavior::Echo).await;
    let sites = Sites::new();
    let gw = tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await;
    let addr = tls_addr(&gw);
    let port = addr.port().to_string();

    for (alpn, version) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let client = sites.ca.verifying_client(&[alpn]);
        let tls = connect(addr, Some("api.example.test"), client)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let (status, _, head, got_version) = request(tls, "api.example.test", "/echo").await;
        assert_eq!(status, 200, "{head}");
        assert_eq!(got_version, version);
        let head = head.to_ascii_lowercase();
        assert!(head.contains("x-forwarded-proto: https\r\n"), "{head}");
        assert!(
            head.contains(&format!("x-forwarded-port: {port}\r\n")),
            "{head}"
        );
        assert!(
            head.contains("x-forwarded-host: api.example.test\r\n"),
            "{head}"
        );
    }
    // The plain listener still says http and its own port.
    let reply = send(&gw, "GET", "api.example.test", "/echo", &[], "").await;
    let head = reply.body.to_ascii_lowercase();
    assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
    assert!(
        head.contains(&format!("x-forwarded-port: {}\r\n", gw.local_addr().port())),
        "{head}"
    );
}

/// A WebSocket upgrade over TLS: the fast lane hands the TLS stream to hyper, the `101`
/// comes back, and bytes flow both ways through the tunnel, encrypted on the client side.
#[tokio::test]
async fn a_websocket_upgrade_over_tls_is_tunnelled() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let upstream = crate::websocket::EchoUpgrade::start().await;
    let sites = Sites::new();
    let gw = tls_gateway(&sites.yaml(upstream.addr, true, CATCH_ALL)).await;
    let client = sites.ca.verifying_client(&[b"http/1.1"]);
    let mut tls = connect(tls_addr(&gw), Some("api.example.test"), client)
        .await
        .expect("handshake");
    tls.write_all(crate::websocket::HANDSHAKE.as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, tls.read(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        assert!(n > 0 && head.len() < 16 * 1024, "head cut short: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"hello over tls").await.unwrap();
    let mut echoed = [0u8; 14];
    tokio::time::timeout(LIMIT, tls.read_exact(&mut echoed))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&echoed, b"HELLO OVER TLS");
    let seen = upstream.heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let upstream_head = seen[0].to_ascii_lowercase();
    assert!(
        upstream_head.contains("upgrade: websocket"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("x-forwarded-proto: https"),
        "{upstream_head}"
    );
}

#[tokio::test]
async fn protocols_decide_which_listener_a_route_serves() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let sites = Sites::new();
    let routes = "      - name: secure\n        protocols: [https]\n        paths: [/secure]\n      - name: moved\n        protocols: [https]\n        https_redirect_status_code: 308\n        paths: [/moved]\n      - name: plain\n        protocols: [http]\n        paths: [/plain]\n";
    let gw = tls_gateway(&sites.yaml(backend.addr, true, routes)).await;
    let addr = tls_addr(&gw);
    let client = sites.ca.verifying_client(&[b"http/1.1"]);

    // Plain listener: https-only routes answer with their redirect status.
    let reply = send(&gw, "GET", "api.example.test", "/secure", &[], "").await;
    assert_eq!(reply.status, 426, "{}", reply.body);
    let reply = send(&gw, "GET", "api.example.test:8000", "/moved?a=1", &[], "").await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        "https://api.example.test/moved?a=1"
    );
    assert_eq!(
        send(&gw, "GET", "api.example.test", "/plain", &[], "")
            .await
            .status,
        200
    );

    // TLS listener: the https-only routes serve, the http-only one does not match.
    for (path, status) in [("/secure", 200), ("/moved", 200), ("/plain", 404)] {
        let tls = connect(addr, Some("api.example.test"), client.clone())
            .await
            .expect("handshake");
        let (got, _, body, _) = request(tls, "api.example.test", path).await;
        assert_eq!(got, status, "{path}: {body}");
    }
}

#[tokio::test]
async fn route_snis_match_the_clients_server_name_on_tls_only() {
    let by_sni = Backend::start("by-sni", Behavior::Ok).await;
    let other = Backend::start("other", Behavior::Ok).await;
    let sites = Sites::new();
    // Two services: the route with snis and a catch-all with the same path (the snis
    // field outranks it, as in Kong's priority).
    let mut yaml = sites.yaml(other.addr, true, CATCH_ALL);
    yaml += &format!(
        "  - name: sni-svc\n    url: http://{}\n    routes:\n      - name: by-sni\n        protocols: [https]\n        snis: [api.example.test, \"*.example.test\"]\n        paths: [/]\n",
        by_sni.addr
    );
    let gw = tls_gateway(&yaml).await;
    let addr = tls_addr(&gw);

    for (sni, expected) in [
        (Some("api.example.test"), "by-sni"),
        (Some("x.example.test"), "by-sni"),
        (Some("shop.example.org"), "other"),
        (None, "other"),
    ] {
        let tls = connect(addr, sni, any_client(None))
            .await
            .expect("handshake");
        let (status, headers, _, _) = request(tls, "api.example.test", "/anything").await;
        assert_eq!(status, 200, "{sni:?}");
        assert_eq!(headers["x-backend"], expected, "{sni:?}");
    }
    // The plain listener does not consider snis: the https route still matches by
    // priority (snis count as a field) and asks for https.
    let reply = send(&gw, "GET", "api.example.test", "/anything", &[], "").await;
    assert_eq!(reply.status, 426);
}

#[tokio::test]
async fn a_reload_changes_the_certificate_of_new_handshakes_and_a_rejected_one_changes_nothing() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let ca = Ca::new();
    let first = ca.leaf(&["api.example.test"]);
    let second = ca.leaf(&["api.example.test"]);
    let yaml = |leaf: &Leaf| {
        format!(
            "_format_version: \"3.0\"\ncertificates:\n{}services:\n  - name: svc\n    url: http://{}\n    routes:\n{CATCH_ALL}",
            certificate(ID_EXACT, leaf, &["api.example.test"]),
            backend.addr
        )
    };
    let gw = tls_gateway(&yaml(&first)).await;
    let addr = tls_addr(&gw);
    assert_eq!(served(addr, Some("api.example.test")).await, first.der);

    // A connection opened before the reload keeps working.
    let client = ca.verifying_client(&[b"http/1.1"]);
    let before = connect(addr, Some("api.example.test"), client)
        .await
        .expect("handshake");

    gw.apply_config(config(&yaml(&second)))
        .await
        .expect("reload");
    assert_eq!(served(addr, Some("api.example.test")).await, second.der);
    assert_eq!(request(before, "api.example.test", "/").await.0, 200);

    // A configuration with a broken certificate never reaches the gateway (it does not
    // validate), so the running certificates stay.
    let broken = yaml(&second).replace("-----BEGIN PRIVATE KEY-----", "-----BEGIN NOTHING-----");
    assert!(sluice_config::parse(&broken, "broken.yml").is_err());
    assert_eq!(served(addr, Some("api.example.test")).await, second.der);
}

/// Reads until the peer closes (or `LIMIT`); what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn garbage_plain_http_and_resets_on_the_tls_port_are_closed_and_harmless() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let sites = Sites::new();
    let gw = tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await;
    let addr = tls_addr(&gw);

    // Plain HTTP: nginx's 400, then the connection closes.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut plain).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("The plain HTTP request was sent to HTTPS port"),
        "{answer}"
    );

    // A TLS record header followed by junk: the handshake fails, the connection closes
    // (perhaps after a TLS alert), well before the handshake timeout.
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x20])
        .await
        .unwrap();
    junk.write_all(&[0xAB; 32]).await.unwrap();
    let started = tokio::time::Instant::now();
    let reply = read_to_close(&mut junk).await;
    assert!(started.elapsed() < LIMIT, "junk connection left open");
    assert!(
        !reply.starts_with(b"HTTP"),
        "no HTTP answer to a broken handshake"
    );

    // Bytes that are neither TLS nor HTTP.
    let mut binary = TcpStream::connect(addr).await.unwrap();
    binary.write_all(&[0x00, 0xFF, 0x13, 0x37]).await.unwrap();
    binary.write_all(&[0x00; 64]).await.unwrap();
    read_to_close(&mut binary).await;

    // A ClientHello cut short, then a reset (SO_LINGER 0 makes close send RST).
    let mut cut = TcpStream::connect(addr).await.unwrap();
    socket2::SockRef::from(&cut)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    cut.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC])
        .await
        .unwrap();
    drop(cut);

    // Seeded random openings, many at once: TLS record headers with random versions and
    // lengths followed by random bytes, some cut short. A fixed xorshift seed keeps the
    // run reproducible.
    let mut state: u64 = 0x5eed_7a11_c0ff_ee01;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut fuzzers = Vec::new();
    for _ in 0..48 {
        let len = (next() % 300) as usize;
        let mut bytes: Vec<u8> = vec![0x16, 0x03, (next() % 5) as u8];
        bytes.extend((0..len).map(|_| next() as u8));
        fuzzers.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
            read_to_close(&mut stream).await;
        }));
    }
    for fuzzer in fuzzers {
        fuzzer.await.expect("fuzz client task");
    }

    // Through all of it the listener and the gateway kept serving.
    let tls = connect(
        addr,
        Some("api.example.test"),
        sites.ca.verifying_client(&[b"h2"]),
    )
    .await
    .expect("handshake after the garbage");
    assert_eq!(request(tls, "api.example.test", "/").await.0, 200);
    assert_eq!(
        send(&gw, "GET", "api.example.test", "/", &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn curl_verifies_the_served_certificate_when_curl_is_installed() {
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        eprintln!("curl not installed: skipped");
        return;
    };
    if !version.status.success() {
        return;
    }
    let backend = Backend::start("b", Behavior::Echo).await;
    let sites = Sites::new();
    let gw = tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await;
    let port = tls_addr(&gw).port();
    let dir = std::env::temp_dir().join(format!("sluice-tls-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, sites.ca.issuer.pem()).unwrap();
    let run = |http2: bool| {
        let ca_file = ca_file.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "--cacert"])
                .arg(&ca_file)
                .arg("--resolve")
                .arg(format!("api.example.test:{port}:127.0.0.1"))
                .arg(if http2 { "--http2" } else { "--http1.1" })
                .args(["-o", "-", "-w", "\n%{http_code} %{http_version}"])
                .arg(format!("https://api.example.test:{port}/curl"))
                .output()
        })
    };
    for (http2, version) in [(true, "2"), (false, "1.1")] {
        let output = run(http2).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
        assert!(
            output.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.ends_with(&format!("\n200 {version}")), "{stdout}");
        assert!(stdout.contains("x-forwarded-proto: https"), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway whose TLS listener gives a handshake 200 ms (not 10 s): the tests of
/// clients that never finish wait that long.
async fn impatient_tls_gateway(yaml: &str) -> Gateway {
    let options = GatewayOptions {
        tls_listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        tls_handshake_timeout: Duration::from_millis(200),
        ..GatewayOptions::default()
    };
    gateway_with(yaml, options).await
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed_at_the_timeout() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let sites = Sites::new();
    let gw = impatient_tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await;
    let addr = tls_addr(&gw);

    // Silent after connecting, and silent after half a ClientHello.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(read_to_close(&mut silent).await.is_empty());
    read_to_close(&mut half).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

/// A client resumes its session from a ticket after the gateway has made more sessions
/// since than its session cache holds (two per handshake: rustls sends two tickets): the
/// session travels in the ticket, so no server-side cache can have evicted it.
#[tokio::test]
async fn a_session_resumes_from_its_ticket_after_more_sessions_than_the_cache_holds() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let sites = Sites::new();
    let gw = tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await;
    let addr = tls_addr(&gw);

    let returning = any_client(None);
    let tls = connect(addr, Some("api.example.test"), returning.clone())
        .await
        .expect("first handshake");
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // Reading the response also reads the tickets sent after the handshake.
    assert_eq!(request(tls, "api.example.test", "/").await.0, 200);

    for _ in 0..sluice_proxy::tls_server::SESSION_CACHE / 2 + 10 {
        let tls = connect(addr, Some("api.example.test"), any_client(None))
            .await
            .expect("another client's handshake");
        assert_eq!(request(tls, "api.example.test", "/").await.0, 200);
    }

    let tls = connect(addr, Some("api.example.test"), returning)
        .await
        .expect("second handshake");
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(request(tls, "api.example.test", "/").await.0, 200);
}

/// The value of `sluice_tls_handshakes_total` for one label pair in the exposition.
fn handshakes(text: &str, result: &str, protocol: &str) -> u64 {
    let series =
        format!("sluice_tls_handshakes_total{{result=\"{result}\",protocol=\"{protocol}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn every_handshake_outcome_is_counted_by_result_and_version() {
    let backend = Backend::start("b", Behavior::Ok).await;
    let sites = Sites::new();
    let gw = impatient_tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await;
    let addr = tls_addr(&gw);
    let before = gw.metrics_text();
    for (result, protocol) in [
        ("ok", "TLSv1.3"),
        ("ok", "TLSv1.2"),
        ("failed", ""),
        ("timeout", ""),
        ("plain_http", ""),
    ] {
        assert_eq!(
            handshakes(&before, result, protocol),
            0,
            "{result} {protocol}"
        );
    }

    // Two TLS 1.3 handshakes and one TLS 1.2 handshake.
    for _ in 0..2 {
        let tls = connect(addr, Some("api.example.test"), any_client(None))
            .await
            .expect("TLS 1.3 handshake");
        assert_eq!(request(tls, "api.example.test", "/").await.0, 200);
    }
    let tls12 = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2 only")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate {
            provider: provider(),
            schemes: provider()
                .signature_verification_algorithms
                .supported_schemes(),
        }))
        .with_no_client_auth();
    let tls = connect(addr, Some("api.example.test"), Arc::new(tls12))
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(request(tls, "api.example.test", "/").await.0, 200);

    // Plain HTTP to the TLS port, a broken ClientHello, and a silent client.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_to_close(&mut plain).await;
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x20])
        .await
        .unwrap();
    junk.write_all(&[0xAB; 32]).await.unwrap();
    read_to_close(&mut junk).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    read_to_close(&mut silent).await;

    // The gateway counts after it closes; give the last one its turn to be counted.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let text = loop {
        let text = gw.metrics_text();
        if handshakes(&text, "timeout", "") == 1 || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(handshakes(&text, "ok", "TLSv1.3"), 2);
    assert_eq!(handshakes(&text, "ok", "TLSv1.2"), 1);
    assert_eq!(handshakes(&text, "plain_http", ""), 1);
    assert_eq!(handshakes(&text, "failed", ""), 1);
    assert_eq!(handshakes(&text, "timeout", ""), 1);
}

#[tokio::test]
async fn shutdown_lets_a_tls_request_in_flight_finish_and_stops_accepting() {
    let backend = Backend::start("slow", Behavior::Delay(Duration::from_millis(300))).await;
    let sites = Sites::new();
    let gw = Arc::new(tls_gateway(&sites.yaml(backend.addr, true, CATCH_ALL)).await);
    let addr = tls_addr(&gw);
    let tls = connect(
        addr,
        Some("api.example.test"),
        sites.ca.verifying_client(&[b"h2"]),
    )
    .await
    .expect("handshake");
    let in_flight = tokio::spawn(request(tls, "api.example.test", "/slow"));
    // Shut down once the request reached the backend.
    let reached = crate::support::eventually(LIMIT, || backend.hits() == 1).await;
    assert!(reached, "the request never reached the backend");
    gw.shutdown().await;
    let (status, _, _, version) = in_flight.await.unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the TLS listener still accepts after shutdown"
    );
}
