//! Kong's entity endpoints, read-only as in DB-less Kong: services, routes, plugins,
//! upstreams and targets, found by name or id, listed with Kong's pagination; every
//! write answers Kong's DB-less 405 (`read_only`, shared with `certificates`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use serde_json::{Value, json};
use sluice_config::Config;
use sluice_config::model::PluginScope;
use sluice_core::snapshot::UpstreamSnapshot;
use sluice_core::topology::{TargetSpec, UpstreamSpec};

use crate::api::{
    AppState, KONG_DEFAULT_TARGET_PORT, Params, encode_component, paginate, params, stamps,
};
use crate::control::Control;
use crate::error::{ApiError, KongCode};
use crate::kong::{self, Stamps};

/// Entity collections a path segment can name (Kong's DAO names).
const ENTITY_NAMES: [&str; 8] = [
    "services",
    "routes",
    "upstreams",
    "targets",
    "plugins",
    "certificates",
    "snis",
    "ca_certificates",
];

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

// ---------------------------------------------------------------------------------------
// Services, routes, plugins

pub(crate) fn find_service(config: &Config, key: &str) -> Option<usize> {
    config
        .services
        .iter()
        .position(|s| s.id == key || s.name.as_deref() == Some(key))
}

pub(crate) async fn list_services(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .services
        .iter()
        .map(|s| (s.id.clone(), kong::service(&config, s, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, &params, "/services")?)))
}

pub(crate) async fn get_service(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let index = find_service(&config, &key).ok_or(ApiError::NotFound)?;
    let service = config.services.get(index).ok_or(ApiError::NotFound)?;
    Ok(Json(kong::service(
        &config,
        service,
        stamps(state.control.as_ref()),
    )))
}

pub(crate) async fn list_service_routes(
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

pub(crate) async fn list_routes(
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

pub(crate) async fn get_route(
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

pub(crate) async fn list_plugins(
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

pub(crate) async fn list_service_plugins(
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

pub(crate) fn find_route(config: &Config, key: &str) -> Option<usize> {
    config
        .routes
        .iter()
        .position(|r| r.id == key || r.name.as_deref() == Some(key))
}

pub(crate) async fn list_route_plugins(
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

pub(crate) async fn get_route_service(
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
    Ok(Json(kong::service(
        &config,
        service,
        stamps(state.control.as_ref()),
    )))
}

pub(crate) async fn get_plugin(
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
pub(crate) fn find_target<'u>(upstream: &'u UpstreamSpec, key: &str) -> Option<&'u TargetSpec> {
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

pub(crate) async fn list_upstreams(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .upstreams
        .iter()
        .map(|u| (u.id.clone(), kong::upstream(&config, u, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, &params, "/upstreams")?)))
}

pub(crate) async fn get_upstream(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let upstream = find_upstream(&config, &key).ok_or(ApiError::NotFound)?;
    Ok(Json(kong::upstream(
        &config,
        upstream,
        stamps(state.control.as_ref()),
    )))
}

pub(crate) async fn list_targets(
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

pub(crate) async fn get_target(
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
