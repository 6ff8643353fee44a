//! `POST /config` end to end with the real `sluice_config::parse`: a Kong file is
//! accepted and rendered back in Kong's entity shapes, and invalid or malformed files
//! get Kong's code-14 error while the running configuration stays exactly as it was.
//!
//! The gateway side is a minimal `Control` that does what the binary's glue does for
//! configuration (parse, swap on success, `ConfigRejection::from(&Diagnostics)` on
//! failure) and nothing else.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice_admin::{
    AddressHealth, AdminOptions, ApplyError, ApplyFuture, ConfigFormat, ConfigRejection, Control,
    NotFound, ServerStats, router,
};
use sluice_config::Config;
use sluice_core::decision::DecisionRecord;
use sluice_core::snapshot::UpstreamSnapshot;
use sluice_core::time::Instant;
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
