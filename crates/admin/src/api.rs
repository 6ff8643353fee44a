//! The Admin API's routing and what its handlers share: state, query parameters, Kong's
//! pagination, node information (`GET /`, `/status`) and `/metrics`. The endpoints live
//! in `entities` (services, routes, upstreams, targets, plugins), `certificates`
//! (certificates, SNIs, CA certificates), `tags`, `health`, `declarative` (`/config`)
//! and `sluice_api` (`/sluice/*`).
//!
//! Handlers read one `Arc<Config>` and the latest snapshots per request, so a response is
//! always consistent with a single configuration generation even while `POST /config`
//! swaps it underneath.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

use crate::control::Control;
use crate::error::{ApiError, KongCode};
use crate::kong::Stamps;
use crate::{AdminOptions, certificates, declarative, entities, health, sluice_api, tags};

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub control: Arc<dyn Control>,
    pub options: Arc<AdminOptions>,
}

/// Kong's version this API mirrors. Kong clients (decK in particular) read `version` from
/// `GET /` to choose a config format, so Sluice reports the Kong release whose Admin API
/// it implements and its own version separately.
pub const KONG_COMPAT_VERSION: &str = "3.9.0";

/// Kong's page size when `size` is absent, and its maximum.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// Kong's default target port, used when a target or address is written without one.
pub(crate) const KONG_DEFAULT_TARGET_PORT: u16 = 8000;

/// Prometheus text exposition format 0.0.4, what every scraper accepts.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The JSON routes shared by the Admin API and the status page listener.
pub(crate) fn data_routes() -> Router<AppState> {
    Router::new()
        .route("/status", get(status))
        .route(
            "/services",
            get(entities::list_services).fallback(entities::read_only),
        )
        .route(
            "/services/{service}",
            get(entities::get_service).fallback(entities::read_only),
        )
        .route(
            "/services/{service}/routes",
            get(entities::list_service_routes).fallback(entities::read_only),
        )
        .route(
            "/services/{service}/plugins",
            get(entities::list_service_plugins).fallback(entities::read_only),
        )
        .route(
            "/routes",
            get(entities::list_routes).fallback(entities::read_only),
        )
        .route(
            "/routes/{route}",
            get(entities::get_route).fallback(entities::read_only),
        )
        .route(
            "/routes/{route}/service",
            get(entities::get_route_service).fallback(entities::read_only),
        )
        .route(
            "/routes/{route}/plugins",
            get(entities::list_route_plugins).fallback(entities::read_only),
        )
        .route(
            "/upstreams",
            get(entities::list_upstreams).fallback(entities::read_only),
        )
        .route(
            "/upstreams/{upstream}",
            get(entities::get_upstream).fallback(entities::read_only),
        )
        .route("/upstreams/{upstream}/health", get(health::upstream_health))
        .route(
            "/upstreams/{upstream}/targets",
            get(entities::list_targets).fallback(entities::read_only),
        )
        .route(
            "/upstreams/{upstream}/targets/all",
            get(entities::list_targets),
        )
        .route(
            "/upstreams/{upstream}/targets/{target}",
            get(entities::get_target).fallback(entities::read_only),
        )
        .route(
            "/upstreams/{upstream}/targets/{target}/{action}",
            put(health::set_target_health),
        )
        .route(
            "/upstreams/{upstream}/targets/{target}/{address}/{action}",
            put(health::set_address_health),
        )
        .route(
            "/plugins",
            get(entities::list_plugins).fallback(entities::read_only),
        )
        .route(
            "/plugins/{plugin}",
            get(entities::get_plugin).fallback(entities::read_only),
        )
        .route(
            "/certificates",
            get(certificates::list_certificates).fallback(entities::read_only),
        )
        .route(
            "/certificates/{certificate}",
            get(certificates::get_certificate).fallback(entities::read_only),
        )
        .route(
            "/certificates/{certificate}/snis",
            get(certificates::list_certificate_snis).fallback(entities::read_only),
        )
        .route(
            "/certificates/{certificate}/snis/{sni}",
            get(certificates::get_certificate_sni).fallback(entities::read_only),
        )
        .route(
            "/snis",
            get(certificates::list_snis).fallback(entities::read_only),
        )
        .route(
            "/snis/{sni}",
            get(certificates::get_sni).fallback(entities::read_only),
        )
        .route(
            "/ca_certificates",
            get(certificates::list_ca_certificates).fallback(entities::read_only),
        )
        .route(
            "/ca_certificates/{ca_certificate}",
            get(certificates::get_ca_certificate).fallback(entities::read_only),
        )
        .route("/tags", get(tags::list_tags))
        .route("/tags/{tag}", get(tags::list_tag))
        .route(
            "/config",
            post(declarative::post_config).get(declarative::get_config),
        )
        .route("/metrics", get(metrics))
        .route("/sluice/decisions", get(sluice_api::decisions))
        .route("/sluice/upstreams", get(sluice_api::upstreams))
        .route(
            "/sluice/log-level",
            axum::routing::put(sluice_api::set_log_level),
        )
        .route(
            "/sluice/demo/faults",
            get(sluice_api::demo_faults).post(sluice_api::set_demo_fault),
        )
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Query parameters as a map; a malformed query string is Kong's plain 400.
pub(crate) type Params = Result<Query<BTreeMap<String, String>>, QueryRejection>;

pub(crate) fn params(query: Params) -> Result<BTreeMap<String, String>, ApiError> {
    query
        .map(|Query(map)| map)
        .map_err(|_| ApiError::BadRequest("invalid query string".into()))
}

/// Kong's truthy query flags (`?balancer_health=1`, `?flatten_errors=true`).
pub(crate) fn flag(params: &BTreeMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on" | ""))
}

pub(crate) fn stamps(control: &dyn Control) -> Stamps {
    Stamps::at(control.config_loaded_at())
}

// ---------------------------------------------------------------------------------------
// Pagination

/// Percent-encode everything but RFC 3986 unreserved characters, so an offset or a path
/// segment survives as one query value.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Kong's `{"data": [...], "next": ..., "offset": ...}` page over `items` (id, entity).
///
/// The offset is the id of the first entity of the next page: opaque to clients, stable
/// while the configuration is unchanged, and rejected with Kong's "invalid offset" when
/// it names nothing (e.g. after a reload removed that entity).
pub(crate) fn paginate(
    mut items: Vec<(String, Value)>,
    params: &BTreeMap<String, String>,
    path: &str,
) -> Result<Map<String, Value>, ApiError> {
    let tags = match params.get("tags") {
        None => None,
        Some(text) => {
            let filter = TagFilter::parse(text)?;
            // Rows without a `tags` field (the `/tags` listing itself) cannot be
            // filtered by tag, as in Kong.
            if let Some((_, first)) = items.first()
                && first.get("tags").is_none()
            {
                let entity = path.trim_start_matches('/').split('/').next().unwrap_or("");
                return Err(invalid_tags_option(&format!(
                    "cannot be used with '{entity}'"
                )));
            }
            items.retain(|(_, entity)| filter.matches(entity));
            Some(text)
        }
    };
    let size = match params.get("size") {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => {
            let size: i64 = text
                .parse()
                .map_err(|_| ApiError::kong(KongCode::InvalidSize, "size must be a number"))?;
            usize::try_from(size)
                .ok()
                .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
                .ok_or_else(|| {
                    ApiError::kong(
                        KongCode::InvalidSize,
                        format!("size must be an integer between 1 and {MAX_PAGE_SIZE}"),
                    )
                })?
        }
    };
    let start = match params.get("offset") {
        None => 0,
        Some(offset) => items
            .iter()
            .position(|(id, _)| id == offset)
            .ok_or_else(|| {
                ApiError::kong(
                    KongCode::InvalidOffset,
                    format!("'{offset}' is not a valid offset: no such entity"),
                )
            })?,
    };
    let mut rest = items.into_iter().skip(start);
    let data: Vec<Value> = rest.by_ref().take(size).map(|(_, v)| v).collect();
    let mut page = Map::new();
    page.insert("data".into(), Value::Array(data));
    match rest.next() {
        Some((next_id, _)) => {
            let mut next = format!("{path}?offset={}", encode_component(&next_id));
            if let Some(tags) = tags {
                next.push_str(&format!("&tags={}", encode_component(tags)));
            }
            if params.contains_key("size") {
                next.push_str(&format!("&size={size}"));
            }
            page.insert("next".into(), Value::String(next));
            page.insert("offset".into(), Value::String(next_id));
        }
        None => {
            page.insert("next".into(), Value::Null);
        }
    }
    Ok(page)
}

/// Kong's `?tags=` list filter: `a,b` (entities with every tag) or `a/b` (entities with
/// any), at most five tags, no mixing of `,` and `/`.
///
/// Differs on purpose: Kong's database layer accepts only `[A-Za-z0-9._~-]` in a filter
/// (so `region:eu-west` cannot be filtered on there); Sluice takes every byte a tag may
/// hold, because its own tags (`region:`, `tier:`, `sluice:`) have a colon.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TagFilter {
    tags: Vec<String>,
    /// `true`: every tag (`,`); `false`: any tag (`/`).
    all: bool,
}

/// Most tags one filter may name (Kong's limit).
const MAX_FILTER_TAGS: usize = 5;

impl TagFilter {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        // The bytes a tag may hold in a filter: printable ASCII but `,` and `/`, and
        // UTF-8 (Kong's filter syntax).
        let tag_byte = |b: u8| matches!(b, 0x20..=0x2b | 0x2d | 0x2e | 0x30..=0x7e | 0x80..=0xf4);
        let well_formed = |separator: u8| {
            !text.is_empty()
                && text
                    .as_bytes()
                    .split(|&b| b == separator)
                    .enumerate()
                    .all(|(i, piece)| {
                        // A trailing separator leaves one empty piece, which Kong's
                        // pattern allows; any other empty piece is malformed.
                        (piece.is_empty() && i > 0 && text.as_bytes().last() == Some(&separator))
                            || (!piece.is_empty() && piece.iter().all(|&b| tag_byte(b)))
                    })
        };
        let all = if well_formed(b',') {
            true
        } else if well_formed(b'/') {
            false
        } else {
            return Err(invalid_tags_option("invalid filter syntax"));
        };
        let separator = if all { ',' } else { '/' };
        let tags: Vec<String> = text
            .split(separator)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if tags.len() > MAX_FILTER_TAGS {
            return Err(invalid_tags_option("cannot query more than 5 tags"));
        }
        Ok(TagFilter { tags, all })
    }

    /// Whether an entity's `tags` array passes.
    pub(crate) fn matches(&self, entity: &Value) -> bool {
        let has = |tag: &String| {
            entity
                .get("tags")
                .and_then(Value::as_array)
                .is_some_and(|list| list.iter().any(|t| t.as_str() == Some(tag.as_str())))
        };
        if self.all {
            self.tags.iter().all(has)
        } else {
            self.tags.iter().any(has)
        }
    }
}

/// Kong's 400 for a bad `tags` option (code 11, `invalid options`).
fn invalid_tags_option(reason: &str) -> ApiError {
    ApiError::Body(
        StatusCode::BAD_REQUEST,
        json!({
            "code": 11,
            "name": "invalid options",
            "message": format!("invalid option (tags: {reason})"),
            "options": {"tags": reason},
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Node information

pub(crate) async fn node_info(State(state): State<AppState>) -> Json<Value> {
    let config = state.control.config();
    let mut enabled: Vec<&str> = config
        .plugins
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.name.as_str())
        .collect();
    enabled.sort_unstable();
    enabled.dedup();
    let mut configuration = Map::new();
    configuration.insert("database".into(), json!("off"));
    configuration.insert("role".into(), json!("traditional"));
    configuration.insert("router_flavor".into(), json!("traditional_compatible"));
    configuration.insert("declarative_config_hash".into(), json!(config.hash));
    configuration.insert(
        "admin_token_required".into(),
        json!(state.options.token.is_some()),
    );
    for (key, value) in &state.options.configuration {
        configuration.insert(key.clone(), value.clone());
    }
    Json(json!({
        "version": KONG_COMPAT_VERSION,
        "edition": "community",
        "tagline": "Welcome to Sluice (Kong-compatible Admin API)",
        "hostname": state.options.hostname,
        "node_id": state.control.node_id(),
        "sluice": {"version": env!("CARGO_PKG_VERSION")},
        "plugins": {
            // Priority 13 is the prometheus plugin's place in Kong's plugin order.
            "available_on_server": {"prometheus": {"version": KONG_COMPAT_VERSION, "priority": 13}},
            "enabled_in_cluster": enabled,
        },
        "configuration": configuration,
    }))
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let stats = state.control.server_stats();
    let config = state.control.config();
    Json(json!({
        // DB-less: there is no database, and Kong reports it reachable in that mode.
        "database": {"reachable": true},
        "server": {
            "total_requests": stats.total_requests,
            "connections_active": stats.connections_active,
            "connections_accepted": stats.connections_accepted,
            "connections_handled": stats.connections_handled,
        },
        "configuration_hash": config.hash,
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.control.metrics_text(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<(String, Value)> {
        (0..n).map(|i| (format!("id-{i}"), json!(i))).collect()
    }

    proptest::proptest! {
        /// Any `size`/`offset` a client sends gives a page or a Kong 400, and following
        /// `offset` from the first page visits every item exactly once.
        #[test]
        fn pagination_is_total_and_never_panics(
            n in 0usize..40,
            size in proptest::option::of("[-0-9a-z]{0,6}"),
            offset in proptest::option::of("[-0-9a-z]{0,6}"),
            step in 1usize..10,
        ) {
            let mut params = BTreeMap::new();
            if let Some(size) = size { params.insert("size".to_owned(), size); }
            if let Some(offset) = offset { params.insert("offset".to_owned(), offset); }
            let _ = paginate(ids(n), &params, "/x");

            let mut seen = Vec::new();
            let mut params = BTreeMap::from([("size".to_owned(), step.to_string())]);
            for _ in 0..=n {
                let page = paginate(ids(n), &params, "/x").map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
                seen.extend(page.get("data").and_then(Value::as_array).cloned().unwrap_or_default());
                match page.get("offset").and_then(Value::as_str) {
                    Some(next) => { params.insert("offset".to_owned(), next.to_owned()); }
                    None => break,
                }
            }
            let expected: Vec<Value> = (0..n).map(|i| json!(i)).collect();
            proptest::prop_assert_eq!(seen, expected);
        }
    }
}
