//! The Kong-compatible Admin API: routing, Kong's read endpoints, health overrides,
//! DB-less `POST /config`, and pagination.
//!
//! Handlers read one `Arc<Config>` and the latest snapshots per request, so a response is
//! always consistent with a single configuration generation even while `POST /config`
//! swaps it underneath.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};
use sluice_config::Config;
use sluice_config::model::PluginScope;
use sluice_core::snapshot::{AddressView, HealthStatus, UpstreamSnapshot};
use sluice_core::topology::{TargetSpec, UpstreamSpec};

use crate::control::{ApplyError, ConfigFormat, Control};
use crate::error::{ApiError, KongCode};
use crate::kong::{self, Stamps};
use crate::{AdminOptions, sluice_api};

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
const KONG_DEFAULT_TARGET_PORT: u16 = 8000;

/// Prometheus text exposition format 0.0.4, what every scraper accepts.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The JSON routes shared by the Admin API and the status page listener.
pub(crate) fn data_routes() -> Router<AppState> {
    Router::new()
        .route("/status", get(status))
        .route("/services", get(list_services).fallback(read_only))
        .route("/services/{service}", get(get_service).fallback(read_only))
        .route(
            "/services/{service}/routes",
            get(list_service_routes).fallback(read_only),
        )
        .route(
            "/services/{service}/plugins",
            get(list_service_plugins).fallback(read_only),
        )
        .route("/routes", get(list_routes).fallback(read_only))
        .route("/routes/{route}", get(get_route).fallback(read_only))
        .route(
            "/routes/{route}/service",
            get(get_route_service).fallback(read_only),
        )
        .route(
            "/routes/{route}/plugins",
            get(list_route_plugins).fallback(read_only),
        )
        .route("/upstreams", get(list_upstreams).fallback(read_only))
        .route(
            "/upstreams/{upstream}",
            get(get_upstream).fallback(read_only),
        )
        .route("/upstreams/{upstream}/health", get(upstream_health))
        .route(
            "/upstreams/{upstream}/targets",
            get(list_targets).fallback(read_only),
        )
        .route("/upstreams/{upstream}/targets/all", get(list_targets))
        .route(
            "/upstreams/{upstream}/targets/{target}",
            get(get_target).fallback(read_only),
        )
        .route(
            "/upstreams/{upstream}/targets/{target}/{action}",
            put(set_target_health),
        )
        .route(
            "/upstreams/{upstream}/targets/{target}/{address}/{action}",
            put(set_address_health),
        )
        .route("/plugins", get(list_plugins).fallback(read_only))
        .route("/plugins/{plugin}", get(get_plugin).fallback(read_only))
        .route("/config", post(post_config).get(get_config))
        .route("/metrics", get(metrics))
        .route("/sluice/decisions", get(sluice_api::decisions))
        .route("/sluice/upstreams", get(sluice_api::upstreams))
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

/// Entity collections a path segment can name (Kong's DAO names).
const ENTITY_NAMES: [&str; 5] = ["services", "routes", "upstreams", "targets", "plugins"];

/// DB-less Kong refuses every write to an entity endpoint with 405 and its
/// "operation unsupported" error (code 12); configuration changes go through
/// `POST /config`. Sluice answers the same way, naming the entity the path addresses.
pub(crate) async fn read_only(method: Method, uri: Uri) -> ApiError {
    let operation = match method {
        Method::POST => "create",
        Method::PATCH => "update",
        Method::PUT => "create or update",
        Method::DELETE => "remove",
        _ => return ApiError::MethodNotAllowed,
    };
    // Collections sit at even positions (`/upstreams/{u}/targets/{t}`); the last one
    // named is the entity being written.
    let entity = uri
        .path()
        .split('/')
        .filter(|segment| !segment.is_empty())
        .step_by(2)
        .filter(|segment| ENTITY_NAMES.contains(segment))
        .last()
        .unwrap_or("services");
    ApiError::Body(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({
            "code": KongCode::OperationUnsupported as u16,
            "name": "operation unsupported",
            "message": format!("cannot {operation} '{entity}' entities when not using a database"),
        }),
    )
}

/// Query parameters as a map; a malformed query string is Kong's plain 400.
pub(crate) type Params = Result<Query<BTreeMap<String, String>>, QueryRejection>;

pub(crate) fn params(query: Params) -> Result<BTreeMap<String, String>, ApiError> {
    query
        .map(|Query(map)| map)
        .map_err(|_| ApiError::BadRequest("invalid query string".into()))
}

/// Kong's truthy query flags (`?balancer_health=1`, `?flatten_errors=true`).
fn flag(params: &BTreeMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on" | ""))
}

fn stamps(control: &dyn Control) -> Stamps {
    Stamps::at(control.config_loaded_at())
}

// ---------------------------------------------------------------------------------------
// Pagination

/// Percent-encode everything but RFC 3986 unreserved characters, so an offset or a path
/// segment survives as one query value.
fn encode_component(text: &str) -> String {
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
    items: Vec<(String, Value)>,
    params: &BTreeMap<String, String>,
    path: &str,
) -> Result<Map<String, Value>, ApiError> {
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

// ---------------------------------------------------------------------------------------
// Services, routes, plugins

fn find_service(config: &Config, key: &str) -> Option<usize> {
    config
        .services
        .iter()
        .position(|s| s.id == key || s.name.as_deref() == Some(key))
}

async fn list_services(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .services
        .iter()
        .map(|s| (s.id.clone(), kong::service(s, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, &params, "/services")?)))
}

async fn get_service(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let index = find_service(&config, &key).ok_or(ApiError::NotFound)?;
    let service = config.services.get(index).ok_or(ApiError::NotFound)?;
    Ok(Json(kong::service(service, stamps(state.control.as_ref()))))
}

async fn list_service_routes(
    State(state): State<AppState>,
    Path(key): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let index = find_service(&config, &key).ok_or(ApiError::NotFound)?;
    let stamps = stamps(state.control.as_ref());
    let items = config
        .routes
        .iter()
        .filter(|r| r.service == Some(index))
        .map(|r| (r.id.clone(), kong::route(&config, r, stamps)))
        .collect();
    let path = format!("/services/{}/routes", encode_component(&key));
    Ok(Json(Value::Object(paginate(items, &params, &path)?)))
}

async fn list_routes(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .routes
        .iter()
        .map(|r| (r.id.clone(), kong::route(&config, r, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, &params, "/routes")?)))
}

async fn get_route(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let route = find_route(&config, &key)
        .and_then(|index| config.routes.get(index))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(kong::route(
        &config,
        route,
        stamps(state.control.as_ref()),
    )))
}

async fn list_plugins(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .plugins
        .iter()
        .map(|p| (p.id.clone(), kong::plugin(&config, p, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, &params, "/plugins")?)))
}

fn plugins_in_scope(
    config: &Config,
    scope: &PluginScope,
    params: &BTreeMap<String, String>,
    path: &str,
    stamps: Stamps,
) -> Result<Json<Value>, ApiError> {
    let items = config
        .plugins
        .iter()
        .filter(|p| &p.scope == scope)
        .map(|p| (p.id.clone(), kong::plugin(config, p, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, params, path)?)))
}

async fn list_service_plugins(
    State(state): State<AppState>,
    Path(key): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let index = find_service(&config, &key).ok_or(ApiError::NotFound)?;
    let path = format!("/services/{}/plugins", encode_component(&key));
    let stamps = stamps(state.control.as_ref());
    plugins_in_scope(
        &config,
        &PluginScope::Service(index),
        &params,
        &path,
        stamps,
    )
}

fn find_route(config: &Config, key: &str) -> Option<usize> {
    config
        .routes
        .iter()
        .position(|r| r.id == key || r.name.as_deref() == Some(key))
}

async fn list_route_plugins(
    State(state): State<AppState>,
    Path(key): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let index = find_route(&config, &key).ok_or(ApiError::NotFound)?;
    let path = format!("/routes/{}/plugins", encode_component(&key));
    let stamps = stamps(state.control.as_ref());
    plugins_in_scope(&config, &PluginScope::Route(index), &params, &path, stamps)
}

async fn get_route_service(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let route = find_route(&config, &key)
        .and_then(|index| config.routes.get(index))
        .ok_or(ApiError::NotFound)?;
    let service = route
        .service
        .and_then(|index| config.services.get(index))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(kong::service(service, stamps(state.control.as_ref()))))
}

async fn get_plugin(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.id == key)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(kong::plugin(
        &config,
        plugin,
        stamps(state.control.as_ref()),
    )))
}

// ---------------------------------------------------------------------------------------
// Upstreams and targets

pub(crate) fn find_upstream<'c>(config: &'c Config, key: &str) -> Option<&'c UpstreamSpec> {
    config
        .upstreams
        .iter()
        .find(|u| u.id == key || u.name.as_ref() == key)
}

/// Kong finds a target by id or by its `host:port` text; a target written without a port
/// is stored with Kong's default port 8000, so `10.0.0.1` finds `10.0.0.1:8000`.
fn find_target<'u>(upstream: &'u UpstreamSpec, key: &str) -> Option<&'u TargetSpec> {
    let with_default_port = format!("{key}:{KONG_DEFAULT_TARGET_PORT}");
    upstream
        .targets
        .iter()
        .find(|t| t.id == key || t.target == key || t.target == with_default_port)
}

pub(crate) fn snapshot_of(
    control: &dyn Control,
    upstream: &UpstreamSpec,
) -> Option<Arc<UpstreamSnapshot>> {
    control
        .upstream_snapshots()
        .into_iter()
        .find(|s| s.name == upstream.name)
}

async fn list_upstreams(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .upstreams
        .iter()
        .map(|u| (u.id.clone(), kong::upstream(u, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, &params, "/upstreams")?)))
}

async fn get_upstream(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let upstream = find_upstream(&config, &key).ok_or(ApiError::NotFound)?;
    Ok(Json(kong::upstream(
        upstream,
        stamps(state.control.as_ref()),
    )))
}

async fn list_targets(
    State(state): State<AppState>,
    Path(key): Path<String>,
    request_path: axum::http::Uri,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let upstream = find_upstream(&config, &key).ok_or(ApiError::NotFound)?;
    let stamps = stamps(state.control.as_ref());
    let items = upstream
        .targets
        .iter()
        .map(|t| (t.id.clone(), kong::target(upstream, t, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(
        items,
        &params,
        request_path.path(),
    )?)))
}

async fn get_target(
    State(state): State<AppState>,
    Path((upstream_key, target_key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let upstream = find_upstream(&config, &upstream_key).ok_or(ApiError::NotFound)?;
    let target = find_target(upstream, &target_key).ok_or(ApiError::NotFound)?;
    Ok(Json(kong::target(
        upstream,
        target,
        stamps(state.control.as_ref()),
    )))
}

pub(crate) fn health_name(health: HealthStatus) -> &'static str {
    match health {
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        HealthStatus::HealthchecksOff => "HEALTHCHECKS_OFF",
        HealthStatus::DnsError => "DNS_ERROR",
    }
}

/// Kong's weight summary: total, and how much of it is available right now.
fn weight_summary(addresses: &[&AddressView]) -> Value {
    let total: u64 = addresses.iter().map(|a| u64::from(a.weight)).sum();
    let available: u64 = addresses
        .iter()
        .filter(|a| a.is_available())
        .map(|a| u64::from(a.weight))
        .sum();
    json!({"total": total, "available": available, "unavailable": total - available})
}

/// How Kong derives a target's health from its addresses (§4.5 of our Kong notes): no
/// address is a DNS error, any healthy address makes it healthy, then any unhealthy one
/// makes it unhealthy; weight 0 or checks off read `HEALTHCHECKS_OFF`.
fn target_health(target: &TargetSpec, addresses: &[&AddressView], checks_on: bool) -> &'static str {
    if target.weight == 0 || (!checks_on && !addresses.is_empty()) {
        return "HEALTHCHECKS_OFF";
    }
    if addresses.is_empty() {
        return "DNS_ERROR";
    }
    if addresses.iter().any(|a| a.health == HealthStatus::Healthy) {
        "HEALTHY"
    } else if addresses
        .iter()
        .any(|a| a.health == HealthStatus::Unhealthy)
    {
        "UNHEALTHY"
    } else {
        "HEALTHCHECKS_OFF"
    }
}

/// Kong's `dns` field: the record type the addresses came from. Literal IPs and
/// hostnames resolved through A/AAAA both read "A" in Kong; the snapshot does not say
/// whether an address came from SRV, so Sluice always reports "A".
const DNS_RECORD_KIND: &str = "A";

fn addresses_of(snapshot: Option<&UpstreamSnapshot>, target_index: usize) -> Vec<&AddressView> {
    snapshot
        .map(|s| {
            s.addresses
                .iter()
                .filter(|a| usize::try_from(a.target_index).ok() == Some(target_index))
                .collect()
        })
        .unwrap_or_default()
}

async fn upstream_health(
    State(state): State<AppState>,
    Path(key): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let upstream = find_upstream(&config, &key).ok_or(ApiError::NotFound)?;
    let snapshot = snapshot_of(state.control.as_ref(), upstream);
    let checks_on = upstream.healthchecks.enabled();
    let node_id = state.control.node_id();

    if flag(&params, "balancer_health") {
        let all: Vec<&AddressView> = snapshot.iter().flat_map(|s| s.addresses.iter()).collect();
        let balancer_healthy = snapshot.as_ref().is_some_and(|s| s.balancer_healthy);
        let hosts: Vec<Value> = upstream
            .targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                let addresses = addresses_of(snapshot.as_deref(), index);
                json!({
                    "host": target.host,
                    "port": target.port,
                    "dns": DNS_RECORD_KIND,
                    "nodeWeight": target.weight,
                    "weight": weight_summary(&addresses),
                    "addresses": addresses.iter().map(|a| json!({
                        "ip": a.key.addr.ip().to_string(),
                        "port": a.key.addr.port(),
                        "weight": a.weight,
                        "healthy": a.is_available(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let balancer = if balancer_healthy {
            "HEALTHY"
        } else {
            "UNHEALTHY"
        };
        let health = if checks_on {
            balancer
        } else {
            "HEALTHCHECKS_OFF"
        };
        return Ok(Json(json!({
            "data": {
                "health": health,
                "balancer_health": balancer,
                "id": upstream.id,
                "details": {
                    "healthy": balancer_healthy,
                    "weight": weight_summary(&all),
                    "hosts": hosts,
                },
            },
            "next": null,
            "node_id": node_id,
        })));
    }

    let stamps = stamps(state.control.as_ref());
    let items = upstream
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let addresses = addresses_of(snapshot.as_deref(), index);
            let mut entity = kong::target(upstream, target, stamps);
            if let Value::Object(map) = &mut entity {
                map.insert(
                    "health".into(),
                    json!(target_health(target, &addresses, checks_on)),
                );
                map.insert(
                    "data".into(),
                    json!({
                        "host": target.host,
                        "port": target.port,
                        "dns": DNS_RECORD_KIND,
                        "nodeWeight": target.weight,
                        "weight": weight_summary(&addresses),
                        "addresses": addresses.iter().map(|a| json!({
                            "ip": a.key.addr.ip().to_string(),
                            "port": a.key.addr.port(),
                            "weight": a.weight,
                            "health": if checks_on || a.health == HealthStatus::DnsError {
                                health_name(a.health)
                            } else {
                                "HEALTHCHECKS_OFF"
                            },
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
            (target.id.clone(), entity)
        })
        .collect();
    let path = format!("/upstreams/{}/health", encode_component(&key));
    let mut page = paginate(items, &params, &path)?;
    page.insert("node_id".into(), json!(node_id));
    Ok(Json(Value::Object(page)))
}

fn health_action(action: &str) -> Result<bool, ApiError> {
    match action {
        "healthy" => Ok(true),
        "unhealthy" => Ok(false),
        _ => Err(ApiError::NotFound),
    }
}

/// Kong's address syntax for the per-address override: `ip[:port]`, IPv6 in brackets
/// when a port is given, port 8000 when omitted.
fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, KONG_DEFAULT_TARGET_PORT))
}

async fn set_target_health(
    State(state): State<AppState>,
    Path((upstream_key, target_key, action)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let healthy = health_action(&action)?;
    let config = state.control.config();
    let upstream = find_upstream(&config, &upstream_key).ok_or(ApiError::NotFound)?;
    let target = find_target(upstream, &target_key).ok_or(ApiError::NotFound)?;
    state
        .control
        .set_health(&upstream.name, &target.target, None, healthy)
        .map_err(|_| ApiError::NotFound)?;
    // Operator overrides move traffic: leave an audit line for each.
    tracing::info!(upstream = %upstream.name, target = %target.target, healthy, "admin: target health override");
    Ok(StatusCode::NO_CONTENT)
}

async fn set_address_health(
    State(state): State<AppState>,
    Path((upstream_key, target_key, address, action)): Path<(String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let healthy = health_action(&action)?;
    let config = state.control.config();
    let upstream = find_upstream(&config, &upstream_key).ok_or(ApiError::NotFound)?;
    let target = find_target(upstream, &target_key).ok_or(ApiError::NotFound)?;
    let addr = parse_address(&address).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid address '{address}': expected ip[:port], e.g. 10.0.0.1:8080"
        ))
    })?;
    state
        .control
        .set_health(&upstream.name, &target.target, Some(addr), healthy)
        .map_err(|_| ApiError::NotFound)?;
    tracing::info!(upstream = %upstream.name, target = %target.target, address = %addr, healthy, "admin: address health override");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Declarative configuration

async fn get_config(State(state): State<AppState>) -> Json<Value> {
    let config = state.control.config();
    Json(json!({"config": config.source.as_ref()}))
}

/// Read the whole body, refusing more than `limit` bytes with a 413 before buffering it
/// when the client declared its length, and as soon as the limit is crossed otherwise.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Pull the `config` part out of a `multipart/form-data` body (`curl -F config=@kong.yml`,
/// the form Kong's documentation uses). Only what that needs: find the part whose
/// Content-Disposition names `config`, return its bytes up to the next boundary.
fn multipart_config(content_type: &str, body: &[u8]) -> Option<Vec<u8>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    if boundary.is_empty() {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter) {
        rest = rest.get(start + delimiter.len()..)?;
        if rest.starts_with(b"--") {
            return None;
        }
        let headers_end = find(rest, b"\r\n\r\n")?;
        let part_headers = String::from_utf8_lossy(rest.get(..headers_end)?).to_ascii_lowercase();
        let content = rest.get(headers_end + 4..)?;
        let end = find(content, delimiter)?;
        let value = content.get(..end)?;
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let names_config = part_headers
            .lines()
            .filter(|l| l.starts_with("content-disposition:"))
            .any(|l| l.contains("name=\"config\"") || l.contains("name=config"));
        if names_config {
            return Some(value.to_vec());
        }
        rest = content;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The declarative configuration text a `POST /config` carries, in any of Kong's forms:
/// a YAML or JSON body, a JSON object whose `config` field holds the text, or a form
/// field `config` (urlencoded or multipart).
fn extract_config(content_type: &str, body: &[u8]) -> Result<(String, ConfigFormat), ApiError> {
    let missing = || ApiError::BadRequest("expected a declarative configuration".into());
    let not_utf8 = || ApiError::BadRequest("declarative configuration must be UTF-8 text".into());
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let text = form_urlencoded::parse(body)
            .find(|(k, _)| k == "config")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(missing)?;
        return Ok((text, ConfigFormat::Yaml));
    }
    if content_type.starts_with("multipart/form-data") {
        let bytes = multipart_config(content_type, body).ok_or_else(missing)?;
        let text = String::from_utf8(bytes).map_err(|_| not_utf8())?;
        return Ok((text, ConfigFormat::Yaml));
    }
    let text = std::str::from_utf8(body).map_err(|_| not_utf8())?;
    if text.trim().is_empty() {
        return Err(missing());
    }
    if content_type.starts_with("application/json") {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            ApiError::BadRequest(format!(
                "malformed JSON body at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        return match value {
            // `{"config": "<yaml or json text>"}`, what decK and Kong's docs send.
            Value::Object(map) if map.contains_key("config") => match map.get("config") {
                Some(Value::String(inner)) => Ok((inner.clone(), ConfigFormat::Yaml)),
                // `{"config": {...}}`: the configuration itself as a JSON object.
                Some(inner @ Value::Object(_)) => Ok((inner.to_string(), ConfigFormat::Json)),
                _ => Err(ApiError::BadRequest(
                    "'config' must be a string or an object".into(),
                )),
            },
            Value::Object(_) => Ok((text.to_owned(), ConfigFormat::Json)),
            _ => Err(ApiError::BadRequest(
                "expected a declarative configuration object".into(),
            )),
        };
    }
    Ok((text.to_owned(), ConfigFormat::Yaml))
}

async fn post_config(State(state): State<AppState>, query: Params, request: Request) -> Response {
    match apply(state, query, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn apply(state: AppState, query: Params, request: Request) -> Result<Response, ApiError> {
    let params = params(query)?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, body, state.options.body_limit).await?;
    let (text, format) = extract_config(&media_type(&parts.headers), &bytes)?;

    if flag(&params, "check_hash") && state.control.config().source.as_ref() == text {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }

    match state.control.apply_config(&text, format) {
        Ok(config) => {
            tracing::info!(hash = %config.hash, bytes = text.len(), "admin: configuration applied");
            let stamps = stamps(state.control.as_ref());
            Ok((
                StatusCode::CREATED,
                Json(kong::flattened_entities(&config, stamps)),
            )
                .into_response())
        }
        Err(ApplyError::Invalid(rejection)) => {
            // The errors go back to the (authenticated) caller; the log says only that a
            // configuration was refused, never what it contained.
            tracing::warn!(
                bytes = text.len(),
                "admin: configuration rejected, running configuration unchanged"
            );
            let flatten = flag(&params, "flatten_errors");
            let mut body = Map::new();
            body.insert("code".into(), json!(KongCode::DeclarativeConfig as u16));
            body.insert("name".into(), json!("invalid declarative configuration"));
            if flatten {
                // Kong's flattened mode empties the nested form and lists errors per entity.
                body.insert("message".into(), json!("declarative config is invalid: {}"));
                body.insert("fields".into(), json!({}));
                body.insert("flattened_errors".into(), json!(rejection.flattened_errors));
            } else {
                body.insert("message".into(), json!(rejection.message));
                body.insert("fields".into(), rejection.fields);
            }
            Err(ApiError::Body(StatusCode::BAD_REQUEST, Value::Object(body)))
        }
        Err(ApplyError::Unavailable(message)) => Err(ApiError::Unavailable(message)),
    }
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

    #[test]
    fn addresses_default_to_kong_port() {
        assert_eq!(parse_address("10.0.0.1"), "10.0.0.1:8000".parse().ok());
        assert_eq!(parse_address("10.0.0.1:81"), "10.0.0.1:81".parse().ok());
        assert_eq!(parse_address("[::1]:81"), "[::1]:81".parse().ok());
        assert_eq!(parse_address("::1"), "[::1]:8000".parse().ok());
        assert_eq!(parse_address("example.com"), None);
    }

    #[test]
    fn multipart_finds_the_config_part() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nnope\r\n--XyZ\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\nContent-Type: application/octet-stream\r\n\r\n_format_version: \"3.0\"\n\r\n--XyZ--\r\n";
        let found = multipart_config("multipart/form-data; boundary=XyZ", body);
        assert_eq!(found.as_deref(), Some(&b"_format_version: \"3.0\"\n"[..]));
        assert_eq!(
            multipart_config("multipart/form-data; boundary=XyZ", b"--XyZ--"),
            None
        );
        assert_eq!(multipart_config("multipart/form-data", body), None);
    }

    #[test]
    fn config_body_forms() {
        let yaml = extract_config("text/yaml", b"_format_version: '3.0'");
        assert!(matches!(yaml, Ok((ref t, ConfigFormat::Yaml)) if t == "_format_version: '3.0'"));
        let wrapped = extract_config("application/json", br#"{"config":"a: 1"}"#);
        assert!(matches!(wrapped, Ok((ref t, _)) if t == "a: 1"));
        let direct = extract_config("application/json", br#"{"_format_version":"3.0"}"#);
        assert!(matches!(direct, Ok((_, ConfigFormat::Json))));
        let form = extract_config("application/x-www-form-urlencoded", b"config=a%3A+1");
        assert!(matches!(form, Ok((ref t, _)) if t == "a: 1"));
        assert!(extract_config("application/json", b"{nope").is_err());
        assert!(extract_config("text/yaml", b"  ").is_err());
    }
}
