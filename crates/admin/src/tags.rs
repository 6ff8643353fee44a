//! Kong's `GET /tags` and `GET /tags/{tag}`: one `{entity_name, entity_id, tag}` row per
//! tag of every tagged entity Sluice holds, paginated like the entity lists.
//!
//! Kong keeps a `tags` table beside its entities; Sluice derives the rows from the
//! running configuration on each request, so they always match the entity endpoints.
//! Only `GET` exists, as in Kong (tags are written through their entities), so other
//! methods get Kong's plain 405.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use sluice_config::Config;

use crate::api::{AppState, Params, encode_component, paginate, params};
use crate::error::ApiError;

/// Every (entity_name, entity_id, tags) Sluice holds, in a fixed order: entity types as
/// Kong's declarative format lists them, then file order.
fn tagged(config: &Config) -> Vec<(&'static str, &str, &[String])> {
    let mut all: Vec<(&'static str, &str, &[String])> = Vec::new();
    all.extend(
        config
            .services
            .iter()
            .map(|e| ("services", e.id.as_str(), e.tags.as_slice())),
    );
    all.extend(
        config
            .routes
            .iter()
            .map(|e| ("routes", e.id.as_str(), e.tags.as_slice())),
    );
    all.extend(
        config
            .upstreams
            .iter()
            .map(|e| ("upstreams", e.id.as_str(), e.tags.as_slice())),
    );
    all.extend(config.upstreams.iter().flat_map(|u| {
        u.targets
            .iter()
            .map(|e| ("targets", e.id.as_str(), e.tags.as_slice()))
    }));
    all.extend(
        config
            .plugins
            .iter()
            .map(|e| ("plugins", e.id.as_str(), e.tags.as_slice())),
    );
    all.extend(
        config
            .certificates
            .iter()
            .map(|e| ("certificates", e.id.as_str(), e.tags.as_slice())),
    );
    all.extend(
        config
            .snis
            .iter()
            .map(|e| ("snis", e.id.as_str(), e.tags.as_slice())),
    );
    all.extend(
        config
            .ca_certificates
            .iter()
            .map(|e| ("ca_certificates", e.id.as_str(), e.tags.as_slice())),
    );
    all
}

/// The rows, each keyed for pagination by something unique to it: one entity carries a
/// tag at most once (the config crate drops duplicates), so entity and tag together are.
fn rows(config: &Config, only: Option<&str>) -> Vec<(String, Value)> {
    tagged(config)
        .into_iter()
        .flat_map(|(entity_name, entity_id, tags)| {
            tags.iter()
                .filter(move |tag| only.is_none_or(|only| only == tag.as_str()))
                .map(move |tag| {
                    (
                        format!("{entity_name}:{entity_id}:{tag}"),
                        json!({"entity_name": entity_name, "entity_id": entity_id, "tag": tag}),
                    )
                })
        })
        .collect()
}

pub(crate) async fn list_tags(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    Ok(Json(Value::Object(paginate(
        rows(&config, None),
        &params,
        "/tags",
    )?)))
}

/// An unknown tag is an empty page, not a 404: Kong pages over its tags table.
pub(crate) async fn list_tag(
    State(state): State<AppState>,
    Path(tag): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let path = format!("/tags/{}", encode_component(&tag));
    Ok(Json(Value::Object(paginate(
        rows(&config, Some(&tag)),
        &params,
        &path,
    )?)))
}
