//! `POST /config` end to end with the real `sluice_config::parse`: a Kong file is
//! accepted and rendered back in Kong's entity shapes, and invalid or malformed files
//! get Kong's code-14 error while the running configuration stays exactly as it was.
//!
//! The gateway side is a minimal `Control` that does what the binary's glue does for
//! configuration (parse, swap on success, `ConfigRejection::from(&Diagnostics)` on
//! failure) and nothing else.
//!
//! The TLS entity endpoints (`/certificates`, `/snis`, `/ca_certificates`, `/tags`) are
//! tested over real HTTP on a loopback listener, with certificates made by `rcgen` at
//! test time and posted to `/config` like any Kong file.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use insta::assert_json_snapshot;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use sluice_admin::{
    AddressHealth, AdminOptions, ApplyError, ApplyFuture, ConfigFormat, ConfigRejection, Control,
    NotFound, ServerStats, router, serve,
};
use sluice_config::Config;
use sluice_core::decision::DecisionRecord;
use sluice_core::snapshot::UpstreamSnapshot;
use sluice_core::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

const INITIAL: &str = r#"_format_version: "3.0"
services:
  - name: api
    host: api.upstream
    routes:
      - name: api
        paths: [/api]
upstreams:
  - name: api.upstream
    targets:
      - {target: "127.0.0.1:9001", tags: ["region:eu-west"]}
      - {target: "127.0.0.1:9101", tags: ["region:us-east"]}
"#;

const REPLACEMENT: &str = r#"_format_version: "3.0"
services:
  - name: shop
    url: http://shop.upstream/v2
    routes:
      - name: shop
        paths: ["~/shop/\\d+$"]
        hosts: ["*.example.com"]
upstreams:
  - name: shop.upstream
    algorithm: least-connections
    targets:
      - {target: "10.0.0.1:8080", weight: 50}
      - {target: "10.0.0.2"}
plugins:
  - name: prometheus
    config: {status_code_metrics: true}
"#;

const INVALID_WEIGHT: &str = r#"_format_version: "3.0"
upstreams:
  - name: bad.upstream
    targets:
      - {target: "10.0.0.1:80"}
      - {target: "10.0.0.2:80", weight: 70000}
"#;

const MALFORMED_YAML: &str = "_format_version: \"3.0\"\nservices:\n  - name: [unclosed\n";

/// What the binary's glue does for configuration, and nothing more.
struct ParsingControl {
    config: Mutex<Arc<Config>>,
}

impl ParsingControl {
    fn new() -> Self {
        let loaded = sluice_config::parse(INITIAL, "test").expect("the initial config is valid");
        ParsingControl {
            config: Mutex::new(Arc::new(loaded.config)),
        }
    }
}

impl Control for ParsingControl {
    fn node_id(&self) -> &str {
        "00000000-0000-4000-8000-000000000000"
    }

    fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn config_loaded_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn apply_config(&self, text: String, _format: ConfigFormat) -> ApplyFuture<'_> {
        let result = match sluice_config::parse(&text, "POST /config") {
            Ok(loaded) => {
                let config = Arc::new(loaded.config);
                *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config.clone();
                Ok(config)
            }
            Err(diagnostics) => Err(ApplyError::Invalid(ConfigRejection::from(&diagnostics))),
        };
        Box::pin(std::future::ready(result))
    }

    fn upstream_snapshots(&self) -> Vec<Arc<UpstreamSnapshot>> {
        Vec::new()
    }

    fn address_health(&self, _upstream: &str) -> Option<Vec<AddressHealth>> {
        None
    }

    fn set_health(
        &self,
        _upstream: &str,
        _target: &str,
        _address: Option<SocketAddr>,
        _healthy: bool,
    ) -> Result<(), NotFound> {
        Err(NotFound)
    }

    fn decisions(&self, _since: u64) -> Vec<Arc<DecisionRecord>> {
        Vec::new()
    }

    fn now(&self) -> Instant {
        Instant::ZERO
    }

    fn metrics_text(&self) -> String {
        String::new()
    }

    fn server_stats(&self) -> ServerStats {
        ServerStats::default()
    }
}

async fn request(app: &axum::Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-yaml")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (status, value)
}

fn app(control: &Arc<ParsingControl>) -> axum::Router {
    router(control.clone(), AdminOptions::default())
}

#[tokio::test]
async fn a_kong_file_is_applied_and_rendered_as_kong_entities() {
    let control = Arc::new(ParsingControl::new());
    let app = app(&control);
    let (status, created) = request(&app, "POST", "/config", REPLACEMENT).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for kind in ["services", "routes", "upstreams", "targets", "plugins"] {
        let group = created[kind].as_object().expect("entities grouped by type");
        for (id, entity) in group {
            assert_eq!(entity["id"], json!(id), "{kind} keyed by id");
        }
    }
    assert_eq!(created["targets"].as_object().map(|t| t.len()), Some(2));

    let (_, service) = request(&app, "GET", "/services/shop", "").await;
    assert_eq!(service["protocol"], "http");
    assert_eq!(service["host"], "shop.upstream");
    assert_eq!(service["path"], "/v2", "url shorthand expanded");
    let (_, route) = request(&app, "GET", "/routes/shop", "").await;
    assert_eq!(route["paths"], json!(["~/shop/\\d+$"]));
    assert_eq!(route["hosts"], json!(["*.example.com"]));
    assert_eq!(route["service"]["id"], service["id"]);
    let (_, targets) = request(&app, "GET", "/upstreams/shop.upstream/targets", "").await;
    let names: Vec<&Value> = targets["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| &t["target"])
        .collect();
    assert_eq!(
        names,
        vec!["10.0.0.1:8080", "10.0.0.2:8000"],
        "Kong's default port 8000"
    );
    let (_, upstream) = request(&app, "GET", "/upstreams/shop.upstream", "").await;
    assert_eq!(upstream["algorithm"], "least-connections");
    let (_, config) = request(&app, "GET", "/config", "").await;
    assert_eq!(config["config"], REPLACEMENT);
    assert_eq!(
        request(&app, "GET", "/services/api", "").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_and_malformed_files_leave_the_running_config_untouched() {
    let control = Arc::new(ParsingControl::new());
    let app = app(&control);
    let before = control.config();

    let (status, error) = request(&app, "POST", "/config", INVALID_WEIGHT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["code"], 14);
    assert_eq!(error["name"], "invalid declarative configuration");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.starts_with("declarative config is invalid: "),
        "{message}"
    );
    assert!(
        error["fields"]["upstreams"][0]["targets"][1]["weight"].is_string(),
        "Kong's nested err_t points at the second target's weight: {error}"
    );

    let (status, flat) = request(&app, "POST", "/config?flatten_errors=1", INVALID_WEIGHT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(flat["fields"], json!({}));
    let entry = &flat["flattened_errors"][0];
    assert_eq!(entry["entity_type"], "target", "{flat}");
    assert_eq!(entry["errors"][0]["field"], "weight", "{flat}");

    let (status, syntax) = request(&app, "POST", "/config", MALFORMED_YAML).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(syntax["code"], 14, "{syntax}");

    assert!(
        Arc::ptr_eq(&before, &control.config()),
        "the same generation still runs"
    );
    let (_, config) = request(&app, "GET", "/config", "").await;
    assert_eq!(config["config"], INITIAL);
    assert_eq!(
        request(&app, "GET", "/services/api", "").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tls_fields_of_services_and_upstreams_are_rendered_with_their_references() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/data/ok/tls-upstream.yaml"
    );
    let text = std::fs::read_to_string(fixture).expect("the config crate's TLS fixture");
    let control = Arc::new(ParsingControl::new());
    let app = app(&control);
    let (status, created) = request(&app, "POST", "/config", &text).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, billing) = request(&app, "GET", "/services/billing", "").await;
    assert_eq!(billing["protocol"], "https");
    assert_eq!(billing["tls_verify"], true);
    assert_eq!(billing["tls_verify_depth"], 2);
    assert_eq!(
        billing["ca_certificates"],
        json!(["5f0e7c4a-1c2d-4e3f-8a9b-000000000001"])
    );
    assert_eq!(
        billing["client_certificate"],
        json!({"id": "5f0e7c4a-1c2d-4e3f-8a9b-000000000002"})
    );
    let (_, ledger) = request(&app, "GET", "/services/ledger", "").await;
    for field in [
        "tls_verify",
        "tls_verify_depth",
        "ca_certificates",
        "client_certificate",
    ] {
        assert_eq!(ledger[field], Value::Null, "{field} stays null as written");
    }
    let (_, upstream) = request(&app, "GET", "/upstreams/ledger-up", "").await;
    assert_eq!(
        upstream["client_certificate"],
        json!({"id": "5f0e7c4a-1c2d-4e3f-8a9b-000000000002"})
    );
}

// ---------------------------------------------------------------------------------------
// TLS entities over real HTTP

const CERT_A: &str = "7c1e0f3a-6b1d-4c55-9a47-00000000000a";
const CERT_B: &str = "7c1e0f3a-6b1d-4c55-9a47-00000000000b";
const CERT_C: &str = "7c1e0f3a-6b1d-4c55-9a47-00000000000c";
const CA: &str = "7c1e0f3a-6b1d-4c55-9a47-0000000000ca";

/// A certificate and its key, PEM, as a Kong file carries them.
struct Pair {
    cert: String,
    key: String,
}

/// A private CA, the PEM texts it signed, and the Kong file that declares them all.
struct TlsFile {
    ca_pem: String,
    a: Pair,
    b: Pair,
    b_alt: Pair,
    c: Pair,
    yaml: String,
}

fn tls_file() -> TlsFile {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Sluice admin test CA");
    let issuer =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
    let leaf = |names: &[&str], key: KeyPair| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &issuer)
            .expect("sign the leaf");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    };
    let p256 = || KeyPair::generate().expect("P-256 key");
    let a = leaf(&["api.example.test", "*.example.test"], p256());
    let b = leaf(&["www.example.org"], p256());
    let b_alt = leaf(
        &["www.example.org"],
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key"),
    );
    let c = leaf(&["unused.example.test"], p256());
    // JSON strings are YAML double-quoted scalars: the PEM texts go in byte for byte.
    let q = |text: &str| serde_json::to_string(text).expect("string");
    let yaml = format!(
        r#"_format_version: "3.0"
certificates:
  - id: {CERT_A}
    cert: {a_cert}
    key: {a_key}
    tags: [edge, team:web]
    snis:
      - name: api.example.test
        tags: [edge]
      - name: "*.example.test"
  - id: {CERT_B}
    cert: {b_cert}
    key: {b_key}
    cert_alt: {b_alt_cert}
    key_alt: {b_alt_key}
    snis: [www.example.org]
  - id: {CERT_C}
    cert: {c_cert}
    key: {c_key}
snis:
  - name: "*"
    certificate: {{id: {CERT_B}}}
    tags: [edge]
ca_certificates:
  - id: {CA}
    cert: {ca}
    tags: [edge]
"#,
        a_cert = q(&a.cert),
        a_key = q(&a.key),
        b_cert = q(&b.cert),
        b_key = q(&b.key),
        b_alt_cert = q(&b_alt.cert),
        b_alt_key = q(&b_alt.key),
        c_cert = q(&c.cert),
        c_key = q(&c.key),
        ca = q(&issuer.pem()),
    );
    TlsFile {
        ca_pem: issuer.pem(),
        a,
        b,
        b_alt,
        c,
        yaml,
    }
}

/// One HTTP/1.1 exchange on a fresh loopback connection: (status, JSON body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-yaml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
    };
    (status, value)
}

/// The Admin API on a loopback port, running `file`.
async fn serve_tls_file(file: &TlsFile) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let control = Arc::new(ParsingControl::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        router(control, AdminOptions::default()),
        async {
            let _ = stopped.await;
        },
    ));
    let (status, created) = http(addr, "POST", "/config", &file.yaml).await;
    assert_eq!(status, 201, "{created}");
    (addr, stop)
}

/// Replace what changes per run (generated PEM texts, the CA's digest) after checking it.
fn stable(mut value: Value, file: &TlsFile) -> Value {
    let texts = [
        (&file.a.cert, "<cert A>"),
        (&file.a.key, "<key A>"),
        (&file.b.cert, "<cert B>"),
        (&file.b.key, "<key B>"),
        (&file.b_alt.cert, "<cert_alt B>"),
        (&file.b_alt.key, "<key_alt B>"),
        (&file.c.cert, "<cert C>"),
        (&file.c.key, "<key C>"),
        (&file.ca_pem, "<CA cert>"),
    ];
    fn walk(value: &mut Value, texts: &[(&String, &str)]) {
        match value {
            Value::String(s) => {
                if let Some((_, name)) = texts.iter().find(|(text, _)| *text == s) {
                    *s = (*name).to_owned();
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, texts)),
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if key == "cert_digest" {
                        let digest = v.as_str().expect("digest");
                        assert!(
                            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                            "{digest}"
                        );
                        *v = json!("<sha256 of the DER>");
                    } else {
                        walk(v, texts);
                    }
                }
            }
            _ => {}
        }
    }
    walk(&mut value, &texts);
    value
}

#[tokio::test]
async fn certificates_are_listed_and_found_by_id_or_sni_name() {
    let file = tls_file();
    let (addr, _stop) = serve_tls_file(&file).await;

    let (status, list) = http(addr, "GET", "/certificates", "").await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    // The texts come back exactly as written, private keys included (Kong's shape).
    assert_eq!(data[0]["cert"], json!(file.a.cert));
    assert_eq!(data[0]["key"], json!(file.a.key));
    assert_eq!(data[1]["cert_alt"], json!(file.b_alt.cert));
    assert_eq!(data[1]["key_alt"], json!(file.b_alt.key));
    assert_json_snapshot!("tls_certificates", stable(list.clone(), &file));

    // Pagination: size=2, then the offset Kong hands out.
    let (status, first) = http(addr, "GET", "/certificates?size=2", "").await;
    assert_eq!(status, 200);
    assert_eq!(first["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["offset"], CERT_C);
    let next = first["next"].as_str().expect("next");
    assert_eq!(next, format!("/certificates?offset={CERT_C}&size=2"));
    let (_, second) = http(addr, "GET", next, "").await;
    assert_eq!(second["data"][0]["id"], CERT_C);
    assert_eq!(second["next"], Value::Null);

    // By id, and by any SNI name of the certificate (Kong's /certificates/{sni}).
    let (status, a) = http(addr, "GET", &format!("/certificates/{CERT_A}"), "").await;
    assert_eq!(status, 200);
    assert_eq!(a, data[0]);
    assert_eq!(a["snis"], json!(["*.example.test", "api.example.test"]));
    let (_, by_name) = http(addr, "GET", "/certificates/api.example.test", "").await;
    assert_eq!(by_name["id"], CERT_A);
    let (_, by_wildcard) = http(addr, "GET", "/certificates/*.example.test", "").await;
    assert_eq!(by_wildcard["id"], CERT_A);
    let (_, by_default) = http(addr, "GET", "/certificates/*", "").await;
    assert_eq!(by_default["id"], CERT_B);
    assert_eq!(by_default["snis"], json!(["*", "www.example.org"]));
    let (_, c) = http(addr, "GET", &format!("/certificates/{CERT_C}"), "").await;
    assert_eq!(
        c["snis"],
        json!([]),
        "no SNI: an empty list, as Kong prints it"
    );
    assert_eq!(c["cert_alt"], Value::Null);
    assert_eq!(c["tags"], Value::Null);

    // The certificate's SNIs, as entities.
    let (status, snis) = http(addr, "GET", &format!("/certificates/{CERT_A}/snis"), "").await;
    assert_eq!(status, 200);
    let names: Vec<&Value> = snis["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|s| &s["name"])
        .collect();
    assert_eq!(names, vec!["api.example.test", "*.example.test"]);
    assert_eq!(snis["data"][0]["certificate"], json!({"id": CERT_A}));
    let (_, by_sni) = http(addr, "GET", "/certificates/www.example.org/snis", "").await;
    assert_eq!(by_sni["data"].as_array().map(Vec::len), Some(2));
    let (status, nested) = http(
        addr,
        "GET",
        &format!("/certificates/{CERT_A}/snis/api.example.test"),
        "",
    )
    .await;
    assert_eq!((status, &nested["name"]), (200, &json!("api.example.test")));
    let (status, elsewhere) = http(
        addr,
        "GET",
        &format!("/certificates/{CERT_A}/snis/www.example.org"),
        "",
    )
    .await;
    assert_eq!(
        (status, elsewhere),
        (404, json!({"message": "Not found"})),
        "an SNI of another certificate"
    );

    // Unknown ids and names: Kong's 404 bodies.
    let unknown = "7c1e0f3a-6b1d-4c55-9a47-0000000000ff";
    assert_eq!(
        http(addr, "GET", &format!("/certificates/{unknown}"), "").await,
        (404, json!({"message": "Not found"}))
    );
    assert_eq!(
        http(addr, "GET", "/certificates/nowhere.example.test", "").await,
        (404, json!({"message": "SNI not found"}))
    );
    assert_eq!(
        http(addr, "GET", &format!("/certificates/{unknown}/snis"), "").await,
        (404, json!({"message": "Not found"}))
    );
    let (status, bad_size) = http(addr, "GET", "/certificates?size=zero", "").await;
    assert_eq!(status, 400);
    assert_eq!(bad_size["code"], 9);
    assert_eq!(bad_size["name"], "invalid size");
}

#[tokio::test]
async fn snis_and_ca_certificates_are_listed_and_found() {
    let file = tls_file();
    let (addr, _stop) = serve_tls_file(&file).await;

    let (status, snis) = http(addr, "GET", "/snis", "").await;
    assert_eq!(status, 200);
    assert_json_snapshot!("tls_snis", snis.clone());
    let data = snis["data"].as_array().expect("data");
    // Nested SNIs in certificate order, then the top-level ones.
    let names: Vec<&Value> = data.iter().map(|s| &s["name"]).collect();
    assert_eq!(
        names,
        vec!["api.example.test", "*.example.test", "www.example.org", "*"]
    );

    // By name (Kong's endpoint key for SNIs) and by id.
    let (status, api) = http(addr, "GET", "/snis/api.example.test", "").await;
    assert_eq!(status, 200);
    assert_eq!(api, data[0]);
    let (_, upper) = http(addr, "GET", "/snis/API.Example.Test", "").await;
    assert_eq!(upper, data[0], "names are compared lower-case");
    let id = data[3]["id"].as_str().expect("id");
    let (_, default) = http(addr, "GET", &format!("/snis/{id}"), "").await;
    assert_eq!(default["name"], "*");
    assert_eq!(default["certificate"], json!({"id": CERT_B}));
    assert_eq!(
        http(addr, "GET", "/snis/nowhere.example.test", "").await,
        (404, json!({"message": "Not found"}))
    );

    // Paged one at a time, following `next`, every SNI once.
    let mut seen = Vec::new();
    let mut uri = "/snis?size=1".to_owned();
    loop {
        let (status, page) = http(addr, "GET", &uri, "").await;
        assert_eq!(status, 200, "{uri}: {page}");
        seen.extend(page["data"].as_array().expect("data").iter().cloned());
        match page["next"].as_str() {
            Some(next) => uri = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(&seen, data);
    let (status, bad_offset) = http(addr, "GET", "/snis?offset=nope", "").await;
    assert_eq!((status, &bad_offset["code"]), (400, &json!(7)));

    let (status, cas) = http(addr, "GET", "/ca_certificates", "").await;
    assert_eq!(status, 200);
    assert_eq!(cas["data"][0]["cert"], json!(file.ca_pem));
    assert_json_snapshot!("tls_ca_certificates", stable(cas.clone(), &file));
    let (status, ca) = http(addr, "GET", &format!("/ca_certificates/{CA}"), "").await;
    assert_eq!(status, 200);
    assert_eq!(ca, cas["data"][0]);
    assert_eq!(
        http(addr, "GET", "/ca_certificates/api.example.test", "").await,
        (404, json!({"message": "Not found"})),
        "CA certificates have no name"
    );
    let (status, bad_size) = http(addr, "GET", "/ca_certificates?size=1001", "").await;
    assert_eq!((status, &bad_size["code"]), (400, &json!(9)));
}

#[tokio::test]
async fn tls_entities_are_tagged_and_read_only() {
    let file = tls_file();
    let (addr, _stop) = serve_tls_file(&file).await;

    let (status, edge) = http(addr, "GET", "/tags/edge", "").await;
    assert_eq!(status, 200);
    assert_json_snapshot!("tls_tags_edge", edge);
    let (_, all) = http(addr, "GET", "/tags", "").await;
    let rows = all["data"].as_array().expect("data");
    assert!(
        rows.contains(
            &json!({"entity_name": "certificates", "entity_id": CERT_A, "tag": "team:web"})
        )
    );
    assert_eq!(rows.len(), 5, "four edge tags and one team:web");

    for (method, path, entity, verb) in [
        ("POST", "/certificates".to_owned(), "certificates", "create"),
        (
            "DELETE",
            format!("/certificates/{CERT_A}"),
            "certificates",
            "remove",
        ),
        (
            "POST",
            format!("/certificates/{CERT_A}/snis"),
            "snis",
            "create",
        ),
        (
            "PATCH",
            "/snis/api.example.test".to_owned(),
            "snis",
            "update",
        ),
        (
            "PUT",
            format!("/ca_certificates/{CA}"),
            "ca_certificates",
            "create or update",
        ),
    ] {
        let (status, body) = http(addr, method, &path, "{}").await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(
            body,
            json!({
                "code": 12,
                "name": "operation unsupported",
                "message": format!("cannot {verb} '{entity}' entities when not using a database"),
            }),
            "{method} {path}"
        );
    }
    // Nothing changed: the same three certificates are served.
    let (_, list) = http(addr, "GET", "/certificates", "").await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(3));
}
