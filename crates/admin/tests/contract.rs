//! Contract tests of the Admin API against a hand-built fake gateway: status codes and
//! JSON bodies pinned with `insta` snapshots (Kong's shapes, pagination, errors, auth,
//! body limits), and the rule that no failed request changes the running configuration.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use insta::assert_json_snapshot;
use serde_json::{Value, json};
use sluice_admin::{AdminOptions, Control, gui_router, router};
use sluice_core::snapshot::DnsRecord;
use tower::ServiceExt;

use common::{FakeControl, HealthCall, SOURCE};

fn options() -> AdminOptions {
    AdminOptions {
        hostname: "test-host".into(),
        ..AdminOptions::default()
    }
}

fn app(fake: &FakeControl) -> Router {
    router(Arc::new(fake.clone()), options())
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("request");
    send(app, request).await
}

async fn put(app: &Router, uri: &str) -> Reply {
    call(app, Method::PUT, uri, "application/json", Body::empty()).await
}

// ---------------------------------------------------------------------------------------
// Node and entities

#[tokio::test]
async fn node_info_has_kongs_shape() {
    let fake = FakeControl::new(false);
    let reply = get(&app(&fake), "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply
            .headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "admin answers are never cached"
    );
    assert_eq!(
        reply
            .headers
            .get(header::X_CONTENT_TYPE_OPTIONS)
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    assert_json_snapshot!("node_info", reply.json());
}

#[tokio::test]
async fn status_reports_server_counters_and_config_hash() {
    let fake = FakeControl::new(false);
    let reply = get(&app(&fake), "/status").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_json_snapshot!("status", reply.json());
}

#[tokio::test]
async fn services_and_routes() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let services = get(&app, "/services").await;
    assert_eq!(services.status, StatusCode::OK);
    assert_json_snapshot!("services", services.json());

    let by_name = get(&app, "/services/api").await.json();
    let by_id = get(&app, "/services/dddddddd-0000-4000-8000-000000000001")
        .await
        .json();
    assert_eq!(by_name, by_id, "a service is found by name or id");
    assert_eq!(by_name["host"], "api-up");

    let routes = get(&app, "/routes").await;
    assert_json_snapshot!("routes", routes.json());

    let web = get(&app, "/routes/web").await.json();
    assert_eq!(web["hosts"], json!(["www.example.com", "*.example.org"]));
    assert_eq!(
        web["paths"],
        json!([r"~/static/\d+"]),
        "regex paths print with Kong's ~"
    );
    assert_eq!(web["headers"], json!({"x-canary": ["yes", "~*^t"]}));

    let nested = get(&app, "/services/web/routes").await.json();
    let names: Vec<&Value> = nested["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| &r["name"])
        .collect();
    assert_eq!(names, vec!["web"], "only the service's own routes");

    assert_eq!(
        get(&app, "/services/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/services/nope/routes").await.status,
        StatusCode::NOT_FOUND
    );
    let missing = get(&app, "/routes/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json(), json!({"message": "Not found"}));
}

#[tokio::test]
async fn upstreams_targets_and_plugins() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let upstreams = get(&app, "/upstreams").await;
    assert_eq!(upstreams.status, StatusCode::OK);
    assert_json_snapshot!("upstreams", upstreams.json());
    assert_eq!(
        get(&app, "/upstreams/8c3e6f0a-1111-4a4a-8888-000000000002")
            .await
            .json()["name"],
        "static-up"
    );

    let targets = get(&app, "/upstreams/api-up/targets").await;
    assert_json_snapshot!("targets", targets.json());
    let all = get(&app, "/upstreams/api-up/targets/all").await.json();
    assert_eq!(
        all["data"],
        targets.json()["data"],
        "targets are unique per upstream in 3.x"
    );

    let one = get(&app, "/upstreams/api-up/targets/127.0.0.1:9101")
        .await
        .json();
    assert_eq!(one["id"], "aaaaaaaa-0000-4000-8000-000000000003");
    assert_eq!(
        one["created_at"],
        json!(1_700_000_000.123),
        "targets keep ms precision"
    );

    let plugins = get(&app, "/plugins").await;
    assert_json_snapshot!("plugins", plugins.json());
    assert_eq!(
        get(&app, "/upstreams/nope/targets").await.status,
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------------
// Health

#[tokio::test]
async fn upstream_health_in_normal_and_failed_over_states() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let normal = get(&app, "/upstreams/api-up/health").await;
    assert_eq!(normal.status, StatusCode::OK);
    assert_json_snapshot!("health_normal", normal.json());

    fake.fail_over();
    let failed = get(&app, "/upstreams/api-up/health").await.json();
    assert_eq!(failed["data"][0]["health"], "UNHEALTHY");
    assert_eq!(
        failed["data"][0]["data"]["weight"],
        json!({"total": 100, "available": 0, "unavailable": 100})
    );
    assert_eq!(failed["data"][1]["health"], "HEALTHY");
    assert_eq!(
        failed["data"][3]["health"], "HEALTHCHECKS_OFF",
        "weight 0 reads as checks off"
    );

    let balancer = get(&app, "/upstreams/api-up/health?balancer_health=1").await;
    assert_json_snapshot!("health_balancer_failed_over", balancer.json());

    let off = get(&app, "/upstreams/static-up/health").await.json();
    assert_eq!(off["data"][0]["health"], "HEALTHCHECKS_OFF");
    let off_balancer = get(&app, "/upstreams/static-up/health?balancer_health=1")
        .await
        .json();
    assert_eq!(off_balancer["data"]["health"], "HEALTHCHECKS_OFF");
    assert_eq!(
        off_balancer["data"]["balancer_health"], "HEALTHY",
        "real state even with checks off"
    );
}

#[tokio::test]
async fn health_overrides_reach_the_gateway() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let reply = put(&app, "/upstreams/api-up/targets/127.0.0.1:9001/unhealthy").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.text.is_empty());
    let reply = put(
        &app,
        "/upstreams/api-up/targets/aaaaaaaa-0000-4000-8000-000000000002/healthy",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = put(
        &app,
        "/upstreams/api-up/targets/127.0.0.1:9001/127.0.0.1/unhealthy",
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "address without port defaults to 8000"
    );

    assert_eq!(
        fake.state().health_calls,
        vec![
            HealthCall {
                upstream: "api-up".into(),
                target: "127.0.0.1:9001".into(),
                address: None,
                healthy: false
            },
            HealthCall {
                upstream: "api-up".into(),
                target: "127.0.0.1:9002".into(),
                address: None,
                healthy: true
            },
            HealthCall {
                upstream: "api-up".into(),
                target: "127.0.0.1:9001".into(),
                address: "127.0.0.1:8000".parse().ok(),
                healthy: false,
            },
        ]
    );

    for uri in [
        "/upstreams/nope/targets/127.0.0.1:9001/healthy",
        "/upstreams/api-up/targets/10.1.1.1:80/healthy",
        "/upstreams/api-up/targets/127.0.0.1:9001/sideways",
        "/upstreams/api-up/targets/127.0.0.1:9001/10.9.9.9:80/healthy",
    ] {
        let reply = put(&app, uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.json(), json!({"message": "Not found"}), "{uri}");
    }
    let bad = put(
        &app,
        "/upstreams/api-up/targets/127.0.0.1:9001/not-an-ip/healthy",
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_json_snapshot!("health_bad_address", bad.json());
    assert_eq!(
        fake.state().health_calls.len(),
        3,
        "failed overrides send nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Pagination

#[tokio::test]
async fn pagination_follows_next_to_the_end() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let first = get(&app, "/upstreams/api-up/targets?size=3").await.json();
    assert_json_snapshot!("targets_page_1", first);
    let next = first["next"].as_str().expect("a next link");
    let second = get(&app, next).await.json();
    assert_eq!(second["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["next"], Value::Null);
    assert_eq!(second.get("offset"), None, "no offset on the last page");

    let mut seen = Vec::new();
    let mut uri = "/upstreams/api-up/health?size=1".to_owned();
    for _ in 0..10 {
        let page = get(&app, &uri).await.json();
        assert_eq!(page["node_id"], common::NODE_ID);
        seen.extend(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|t| t["target"].clone()),
        );
        match page["next"].as_str() {
            Some(next) => uri = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "every target exactly once: {seen:?}");
}

#[tokio::test]
async fn pagination_errors_are_kongs() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    for size in ["0", "1001", "-1"] {
        let reply = get(&app, &format!("/services?size={size}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json()["code"], 9, "size={size}");
    }
    let nan = get(&app, "/services?size=ten").await;
    assert_json_snapshot!("invalid_size", nan.json());
    let offset = get(&app, "/services?offset=nonsense").await;
    assert_eq!(offset.status, StatusCode::BAD_REQUEST);
    assert_json_snapshot!("invalid_offset", offset.json());
}

// ---------------------------------------------------------------------------------------
// Declarative configuration

const NEW_CONFIG: &str = "_format_version: \"3.0\"\n# a new generation\n";

#[tokio::test]
async fn post_config_applies_and_get_config_returns_it() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    assert_eq!(get(&app, "/config").await.json(), json!({"config": SOURCE}));

    let reply = call(
        &app,
        Method::POST,
        "/config",
        "application/x-yaml",
        NEW_CONFIG,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_json_snapshot!("post_config_created", reply.json());
    assert_eq!(
        get(&app, "/config").await.json(),
        json!({"config": NEW_CONFIG})
    );
}

#[tokio::test]
async fn post_config_accepts_kongs_body_forms() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let cases: Vec<(&str, String, &str)> = vec![
        ("application/json", json!({"config": "_format_version: '3.0'\n# wrapped\n"}).to_string(), "_format_version: '3.0'\n# wrapped\n"),
        ("application/x-www-form-urlencoded", "config=_format_version%3A+%223.0%22%0A%23+form".into(), "_format_version: \"3.0\"\n# form"),
        (
            "multipart/form-data; boundary=sluice-boundary",
            "--sluice-boundary\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\n\r\n_format_version: \"3.0\"\n# multipart\n\r\n--sluice-boundary--\r\n".into(),
            "_format_version: \"3.0\"\n# multipart\n",
        ),
    ];
    for (content_type, body, expected) in cases {
        let reply = call(&app, Method::POST, "/config", content_type, body).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{content_type}: {}",
            reply.text
        );
        assert_eq!(fake.config().source.as_ref(), expected, "{content_type}");
    }
    let direct = json!({"_format_version": "3.0", "services": []}).to_string();
    let reply = call(
        &app,
        Method::POST,
        "/config",
        "application/json",
        direct.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        fake.config().source.as_ref(),
        direct,
        "a JSON config object is the config itself"
    );
}

#[tokio::test]
async fn invalid_config_is_rejected_and_the_running_config_is_untouched() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let body = "_format_version: \"3.0\"\n# invalid weight\n";
    let reply = call(&app, Method::POST, "/config", "text/yaml", body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_json_snapshot!("post_config_invalid", reply.json());
    let flat = call(
        &app,
        Method::POST,
        "/config?flatten_errors=1",
        "text/yaml",
        body,
    )
    .await;
    assert_eq!(flat.status, StatusCode::BAD_REQUEST);
    assert_json_snapshot!("post_config_invalid_flattened", flat.json());
    assert_eq!(fake.config().source.as_ref(), SOURCE);
}

#[tokio::test]
async fn malformed_bodies_never_reach_the_gateway() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{\"config\": ".to_vec()),
        ("application/json", b"[1, 2]".to_vec()),
        ("application/json", b"{\"config\": 42}".to_vec()),
        ("text/yaml", b"   \n".to_vec()),
        ("text/yaml", vec![0xff, 0xfe, 0x00]),
        ("application/x-www-form-urlencoded", b"other=1".to_vec()),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--".to_vec(),
        ),
    ];
    for (content_type, body) in cases {
        let reply = call(&app, Method::POST, "/config", content_type, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{content_type} {body:?}"
        );
        assert!(reply.json()["message"].is_string(), "{}", reply.text);
    }
    let malformed = call(
        &app,
        Method::POST,
        "/config",
        "application/json",
        "{\"config\": ",
    )
    .await;
    assert_json_snapshot!("post_config_malformed_json", malformed.json());
    assert_eq!(fake.state().apply_calls, 0);
    assert_eq!(fake.config().source.as_ref(), SOURCE);
}

#[tokio::test]
async fn check_hash_answers_304_for_the_running_config() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let same = call(
        &app,
        Method::POST,
        "/config?check_hash=1",
        "text/yaml",
        SOURCE,
    )
    .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        fake.state().apply_calls,
        0,
        "unchanged config is not re-applied"
    );
    let changed = call(
        &app,
        Method::POST,
        "/config?check_hash=1",
        "text/yaml",
        NEW_CONFIG,
    )
    .await;
    assert_eq!(changed.status, StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_change_nothing() {
    let fake = FakeControl::new(false);
    let app = router(
        Arc::new(fake.clone()),
        AdminOptions {
            body_limit: 1024,
            ..options()
        },
    );
    let big = format!("_format_version: \"3.0\"\n#{}\n", "x".repeat(2048));
    // Declared length: refused before reading.
    let request = Request::post("/config")
        .header(header::CONTENT_TYPE, "text/yaml")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .expect("request");
    let declared = send(&app, request).await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_json_snapshot!("payload_too_large", declared.json());
    // No declared length (chunked): refused once the limit is crossed.
    let chunked = call(&app, Method::POST, "/config", "text/yaml", big).await;
    assert_eq!(chunked.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(fake.state().apply_calls, 0);
    assert_eq!(fake.config().source.as_ref(), SOURCE);
}

// ---------------------------------------------------------------------------------------
// Errors, auth, metrics

#[tokio::test]
async fn unknown_paths_and_methods() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let missing = get(&app, "/consumers").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json(), json!({"message": "Not found"}));
    let wrong_method = call(
        &app,
        Method::GET,
        "/config/x",
        "application/json",
        Body::empty(),
    )
    .await;
    assert_eq!(wrong_method.status, StatusCode::NOT_FOUND);
    let wrong_method = call(
        &app,
        Method::DELETE,
        "/metrics",
        "application/json",
        Body::empty(),
    )
    .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        wrong_method.json(),
        json!({"message": "Method not allowed"})
    );
    let bad_query = get(&app, "/sluice/decisions?since=yesterday").await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    // Tags are written through their entities; Kong defines only GET on /tags.
    for uri in ["/tags", "/tags/web"] {
        let reply = call(&app, Method::POST, uri, "application/json", "{}").await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert_eq!(reply.json(), json!({"message": "Method not allowed"}));
    }
    // Not yet: Sluice publishes no schemas (docs/kong-compatibility.md §10).
    for uri in ["/schemas/services", "/schemas/plugins/prometheus"] {
        let reply = get(&app, uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.json(), json!({"message": "Not found"}));
    }
}

#[tokio::test]
async fn tags_list_every_tagged_entity() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let all = get(&app, "/tags").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_json_snapshot!("tags", all.json());

    // One tag, followed page by page.
    let mut seen = Vec::new();
    let mut uri = "/tags/region%3Aeu-west?size=1".to_owned();
    loop {
        let page = get(&app, &uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.text);
        let body = page.json();
        for row in body["data"].as_array().expect("data") {
            assert_eq!(row["tag"], "region:eu-west");
            assert_eq!(row["entity_name"], "targets");
            seen.push(row["entity_id"].clone());
        }
        match body["next"].as_str() {
            Some(next) => uri = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            json!("aaaaaaaa-0000-4000-8000-000000000001"),
            json!("aaaaaaaa-0000-4000-8000-000000000002"),
        ]
    );

    let none = get(&app, "/tags/nobody-uses-this").await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.json(), json!({"data": [], "next": null}));
    let bad_size = get(&app, "/tags?size=0").await;
    assert_eq!(bad_size.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_size.json()["code"], 9);
    let bad_offset = get(&app, "/tags?offset=nope").await;
    assert_eq!(bad_offset.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_offset.json()["code"], 7);
}

#[tokio::test]
async fn tls_entity_lists_are_empty_without_certificates() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    for uri in ["/certificates", "/snis", "/ca_certificates"] {
        let reply = get(&app, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert_eq!(reply.json(), json!({"data": [], "next": null}), "{uri}");
    }
    let by_id = get(&app, "/certificates/7c1e0f3a-6b1d-4c55-9a47-000000000001").await;
    assert_eq!(by_id.status, StatusCode::NOT_FOUND);
    assert_eq!(by_id.json(), json!({"message": "Not found"}));
    let by_name = get(&app, "/certificates/api.example.test").await;
    assert_eq!(by_name.status, StatusCode::NOT_FOUND);
    assert_eq!(by_name.json(), json!({"message": "SNI not found"}));
}

#[tokio::test]
async fn entity_writes_get_kongs_db_less_answer() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let create = call(&app, Method::POST, "/services", "application/json", "{}").await;
    assert_eq!(create.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_json_snapshot!("db_less_create", create.json());
    for (method, uri, message) in [
        (
            Method::PATCH,
            "/routes/api",
            "cannot update 'routes' entities when not using a database",
        ),
        (
            Method::PUT,
            "/plugins/x",
            "cannot create or update 'plugins' entities when not using a database",
        ),
        (
            Method::DELETE,
            "/upstreams/api-up/targets/127.0.0.1:9001",
            "cannot remove 'targets' entities when not using a database",
        ),
        (
            Method::POST,
            "/upstreams/api-up/targets",
            "cannot create 'targets' entities when not using a database",
        ),
        (
            Method::POST,
            "/services/api/routes",
            "cannot create 'routes' entities when not using a database",
        ),
        (
            Method::POST,
            "/certificates",
            "cannot create 'certificates' entities when not using a database",
        ),
        (
            Method::PATCH,
            "/certificates/7c1e0f3a-6b1d-4c55-9a47-000000000001",
            "cannot update 'certificates' entities when not using a database",
        ),
        (
            Method::POST,
            "/certificates/7c1e0f3a-6b1d-4c55-9a47-000000000001/snis",
            "cannot create 'snis' entities when not using a database",
        ),
        (
            Method::DELETE,
            "/certificates/x/snis/api.example.test",
            "cannot remove 'snis' entities when not using a database",
        ),
        (
            Method::PUT,
            "/snis/api.example.test",
            "cannot create or update 'snis' entities when not using a database",
        ),
        (
            Method::POST,
            "/ca_certificates",
            "cannot create 'ca_certificates' entities when not using a database",
        ),
        (
            Method::DELETE,
            "/ca_certificates/7c1e0f3a-6b1d-4c55-9a47-000000000009",
            "cannot remove 'ca_certificates' entities when not using a database",
        ),
    ] {
        let reply = call(&app, method.clone(), uri, "application/json", "{}").await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert_eq!(reply.json()["code"], 12);
        assert_eq!(reply.json()["message"], message, "{method} {uri}");
    }
}

#[tokio::test]
async fn nested_plugin_and_service_lookups() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let service = get(&app, "/routes/web/service").await.json();
    assert_eq!(service["name"], "web");
    let none = get(&app, "/services/api/plugins").await.json();
    assert_eq!(
        none,
        json!({"data": [], "next": null}),
        "the only plugin is global"
    );
    let none = get(&app, "/routes/api/plugins").await.json();
    assert_eq!(none["data"], json!([]));
    assert_eq!(
        get(&app, "/routes/nope/service").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/services/nope/plugins").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_token_guards_every_request() {
    let fake = FakeControl::new(false);
    let with_token = AdminOptions {
        token: Some("s3cret-token".into()),
        ..options()
    };
    assert!(
        !format!("{with_token:?}").contains("s3cret"),
        "Debug output never shows the token"
    );
    let app = router(
        Arc::new(fake.clone()),
        AdminOptions {
            token: Some("s3cret-token".into()),
            ..options()
        },
    );
    let request = |uri: &str, auth: Option<(&str, &str)>| {
        let mut builder = Request::get(uri);
        if let Some((name, value)) = auth {
            builder = builder.header(name, value);
        }
        builder.body(Body::empty()).expect("request")
    };
    for (uri, auth) in [
        ("/", None),
        ("/services", Some(("authorization", "Bearer wrong"))),
        (
            "/config",
            Some(("authorization", "Bearer s3cret-token-and-more")),
        ),
        ("/config", Some(("kong-admin-token", "s3cret-toke"))),
        ("/no/such/path", None),
        (
            "/metrics",
            Some(("authorization", "Basic czNjcmV0LXRva2Vu")),
        ),
    ] {
        let reply = send(&app, request(uri, auth)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri} {auth:?}");
        assert_eq!(reply.json(), json!({"message": "Unauthorized"}));
        assert!(!reply.text.contains("format_version"), "no config leaks");
    }
    let ok = send(
        &app,
        request("/services", Some(("authorization", "Bearer s3cret-token"))),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let ok = send(
        &app,
        request("/services", Some(("Kong-Admin-Token", "s3cret-token"))),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);

    let unauthenticated_post = call(&app, Method::POST, "/config", "text/yaml", NEW_CONFIG).await;
    assert_eq!(unauthenticated_post.status, StatusCode::UNAUTHORIZED);
    assert_eq!(fake.state().apply_calls, 0);
    assert_eq!(fake.config().source.as_ref(), SOURCE);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let fake = FakeControl::new(false);
    let reply = get(&app(&fake), "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(reply.text, fake.metrics_text());
}

// ---------------------------------------------------------------------------------------
// Sluice's own endpoints

#[tokio::test]
async fn sluice_upstreams_and_decisions() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    assert_json_snapshot!(
        "sluice_upstreams_normal",
        get(&app, "/sluice/upstreams").await.json()
    );
    let none = get(&app, "/sluice/decisions").await.json();
    assert_eq!(none["data"], json!([]));
    assert_eq!(none["last_seq"], 0);

    fake.fail_over();
    assert_json_snapshot!(
        "sluice_upstreams_failed_over",
        get(&app, "/sluice/upstreams").await.json()
    );
    let decisions = get(&app, "/sluice/decisions?since=0").await.json();
    assert_json_snapshot!("sluice_decisions", decisions);
    let after = get(&app, "/sluice/decisions?since=1").await.json();
    assert_eq!(after["data"], json!([]), "since is exclusive");
    assert_eq!(after["last_seq"], 1);
}

#[tokio::test]
async fn demo_fault_panel() {
    let without = FakeControl::new(false);
    assert_eq!(
        get(&app(&without), "/sluice/demo/faults").await.status,
        StatusCode::NOT_FOUND
    );

    let fake = FakeControl::new(true);
    let app = app(&fake);
    assert_json_snapshot!("demo_faults", get(&app, "/sluice/demo/faults").await.json());

    let post = |body: Value| {
        call(
            &app,
            Method::POST,
            "/sluice/demo/faults",
            "application/json",
            body.to_string(),
        )
    };
    let down = post(json!({"target": common::PRIMARY_A, "fault": "down"})).await;
    assert_eq!(down.status, StatusCode::OK, "{}", down.text);
    assert_eq!(down.json()["data"][0]["fault"], "down");
    assert_eq!(
        get(&app, "/sluice/upstreams").await.json()["data"][0]["mode"],
        "failed_over"
    );

    let slow = post(json!({"region": "us-east", "fault": "slow"})).await;
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(
        slow.json()["data"][2]["delay_ms"],
        200,
        "default slow fault is +200 ms"
    );
    let error = post(json!({"target": common::PRIMARY_B, "fault": "error"})).await;
    assert_eq!(error.json()["data"][1]["status"], 500);

    for (body, status) in [
        (
            json!({"target": "127.0.0.1:1", "fault": "down"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"region": "mars", "fault": "down"}),
            StatusCode::NOT_FOUND,
        ),
        (json!({"fault": "down"}), StatusCode::BAD_REQUEST),
        (
            json!({"target": common::PRIMARY_A, "region": "eu-west", "fault": "down"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"target": common::PRIMARY_A, "fault": "melt"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"target": common::PRIMARY_A, "fault": "slow", "delay_ms": 3_600_000}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"target": common::PRIMARY_A, "fault": "error", "status": 42}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"target": common::PRIMARY_A, "fault": "down", "extra": 1}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let reply = post(body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
    }
}

// ---------------------------------------------------------------------------------------
// Status page listener

#[tokio::test]
async fn gui_serves_a_self_contained_page_and_guards_the_data() {
    let fake = FakeControl::new(true);
    let app = gui_router(
        Arc::new(fake.clone()),
        AdminOptions {
            token: Some("gui-token".into()),
            ..options()
        },
    );
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("<title>Sluice status</title>"));
    for external in [
        "src=\"http",
        "href=\"http",
        "<script src",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(
            !page.text.contains(external),
            "the page loads nothing external: {external}"
        );
    }
    assert_eq!(
        get(&app, "/sluice/upstreams").await.status,
        StatusCode::UNAUTHORIZED
    );
    let authed = Request::get("/sluice/upstreams")
        .header("authorization", "Bearer gui-token")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, authed).await.status, StatusCode::OK);
    // Only `GET /` is public; everything else, known or not, needs the token first.
    for (method, uri) in [
        (Method::GET, "/nope"),
        (Method::POST, "/"),
        (Method::DELETE, "/metrics"),
    ] {
        let reply = call(&app, method.clone(), uri, "text/plain", "x").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    let authed = |method: Method, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", "Bearer gui-token")
            .body(Body::empty())
            .expect("request")
    };
    let missing = send(&app, authed(Method::GET, "/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let post_page = send(&app, authed(Method::POST, "/")).await;
    assert_eq!(post_page.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post_page.json(), json!({"message": "Method not allowed"}));
}

/// Kong's `data.dns` is the type of the record a target's addresses came from (`A` and
/// `AAAA` also for IP literals, `SRV` for SRV answers), not always "A".
#[tokio::test]
async fn upstream_health_reports_the_dns_record_type_of_each_target() {
    let fake = FakeControl::new(false);
    fake.state().dns_overrides = vec![(1, DnsRecord::Srv), (2, DnsRecord::Aaaa)];
    let app = app(&fake);
    let health = get(&app, "/upstreams/api-up/health").await.json();
    let dns: Vec<&str> = health["data"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["data"]["dns"].as_str().expect("dns is a string"))
        .collect();
    assert_eq!(dns, ["A", "SRV", "AAAA", "A"]);
    let balancer = get(&app, "/upstreams/api-up/health?balancer_health=1")
        .await
        .json();
    let hosts = balancer["data"]["details"]["hosts"]
        .as_array()
        .expect("hosts");
    assert_eq!(hosts[1]["dns"], "SRV");
    assert_eq!(hosts[2]["dns"], "AAAA");
}

/// Kong's `?tags=` filter on entity lists: `a,b` needs every tag, `a/b` any of them; the
/// next page keeps the filter; bad filters are Kong's `invalid options` 400.
#[tokio::test]
async fn lists_filter_by_tags_as_kong_does() {
    let fake = FakeControl::new(false);
    let app = app(&fake);
    let ids = |uri: &str| {
        let app = app.clone();
        let uri = uri.to_owned();
        async move {
            let reply = get(&app, &uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text);
            let body = reply.json();
            body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|e| e["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let targets = "/upstreams/api-up/targets";
    let all = ids(targets).await;
    assert_eq!(all.len(), 4, "{all:?}");
    let eu = ids(&format!("{targets}?tags=region%3Aeu-west")).await;
    assert_eq!(
        eu,
        vec![
            "aaaaaaaa-0000-4000-8000-000000000001",
            "aaaaaaaa-0000-4000-8000-000000000002"
        ]
    );
    // Every tag (`,`): no target is in two regions.
    assert!(
        ids(&format!("{targets}?tags=region%3Aeu-west,region%3Aus-east"))
            .await
            .is_empty()
    );
    // Any tag (`/`).
    assert_eq!(
        ids(&format!("{targets}?tags=region%3Aeu-west/region%3Aus-east")).await,
        all
    );
    assert_eq!(ids("/routes?tags=web").await.len(), 1);
    assert!(ids("/services?tags=web").await.is_empty());

    // The next page carries the filter.
    let first = get(&app, &format!("{targets}?tags=region%3Aus-east&size=1")).await;
    let body = first.json();
    let next = body["next"].as_str().expect("a second page");
    assert!(next.contains("&tags=region%3Aus-east"), "{next}");
    let second = get(&app, next).await.json();
    assert_eq!(
        second["data"][0]["id"],
        "aaaaaaaa-0000-4000-8000-000000000004"
    );
    assert_eq!(second["next"], Value::Null);

    for (query, reason) in [
        ("a,b/c", "invalid filter syntax"),
        (",a", "invalid filter syntax"),
        ("a,b,c,d,e,f", "cannot query more than 5 tags"),
    ] {
        let reply = get(
            &app,
            &format!("/services?tags={}", query.replace('/', "%2F")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            reply.json(),
            json!({
                "code": 11,
                "name": "invalid options",
                "message": format!("invalid option (tags: {reason})"),
                "options": {"tags": reason},
            }),
            "{query}"
        );
    }
    let reply = get(&app, "/tags?tags=web").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["message"],
        "invalid option (tags: cannot be used with 'tags')"
    );
}
