//! Kong's TLS entity endpoints, read-only as in DB-less Kong: `certificates` (found by id
//! or by one of their SNI names, as Kong's `/certificates/{id or sni}` does), `snis`
//! (by name or id, also under their certificate) and `ca_certificates` (by id), listed
//! with Kong's pagination. Writes answer Kong's DB-less 405 through
//! `entities::read_only`, like every other entity endpoint.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sluice_config::Config;
use sluice_config::model::Sni;

use crate::api::{AppState, Params, encode_component, paginate, params, stamps};
use crate::error::ApiError;
use crate::kong;

/// Kong's `utils.is_valid_uuid`: the 8-4-4-4-12 hex form, any version.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Kong's certificate lookup: a UUID is an id (unknown: `Not found`); anything else is
/// an SNI name whose certificate is meant (unknown: Kong's own `SNI not found`).
fn find_certificate(config: &Config, key: &str) -> Result<usize, ApiError> {
    if is_uuid(key) {
        let id = key.to_ascii_lowercase();
        return config
            .certificates
            .iter()
            .position(|c| c.id == id)
            .ok_or(ApiError::NotFound);
    }
    find_sni_by_name(config, key)
        .map(|sni| sni.certificate)
        .ok_or_else(|| ApiError::Body(StatusCode::NOT_FOUND, json!({"message": "SNI not found"})))
}

/// SNI names are stored lower-case, as the TLS listener compares them.
fn find_sni_by_name<'c>(config: &'c Config, name: &str) -> Option<&'c Sni> {
    let name = name.to_ascii_lowercase();
    config.snis.iter().find(|s| s.name.as_kong() == name)
}

/// `/snis/{name or id}`: Kong's `endpoint_key` for SNIs is the name.
fn find_sni<'c>(config: &'c Config, key: &str) -> Option<&'c Sni> {
    let id = key.to_ascii_lowercase();
    config
        .snis
        .iter()
        .find(|s| s.id == id)
        .or_else(|| find_sni_by_name(config, key))
}

pub(crate) async fn list_certificates(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), kong::certificate(&config, i, c, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(
        items,
        &params,
        "/certificates",
    )?)))
}

pub(crate) async fn get_certificate(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let index = find_certificate(&config, &key)?;
    let certificate = config.certificates.get(index).ok_or(ApiError::NotFound)?;
    Ok(Json(kong::certificate(
        &config,
        index,
        certificate,
        stamps(state.control.as_ref()),
    )))
}

pub(crate) async fn list_certificate_snis(
    State(state): State<AppState>,
    Path(key): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let index = find_certificate(&config, &key)?;
    let stamps = stamps(state.control.as_ref());
    let items = config
        .snis
        .iter()
        .filter(|s| s.certificate == index)
        .map(|s| (s.id.clone(), kong::sni(&config, s, stamps)))
        .collect();
    let path = format!("/certificates/{}/snis", encode_component(&key));
    Ok(Json(Value::Object(paginate(items, &params, &path)?)))
}

/// `/certificates/{c}/snis/{name or id}`: the SNI only when it belongs to that
/// certificate, as Kong's nested endpoints check the parent.
pub(crate) async fn get_certificate_sni(
    State(state): State<AppState>,
    Path((certificate_key, sni_key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let index = find_certificate(&config, &certificate_key)?;
    let sni = find_sni(&config, &sni_key)
        .filter(|s| s.certificate == index)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(kong::sni(
        &config,
        sni,
        stamps(state.control.as_ref()),
    )))
}

pub(crate) async fn list_snis(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .snis
        .iter()
        .map(|s| (s.id.clone(), kong::sni(&config, s, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(items, &params, "/snis")?)))
}

pub(crate) async fn get_sni(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let sni = find_sni(&config, &key).ok_or(ApiError::NotFound)?;
    Ok(Json(kong::sni(
        &config,
        sni,
        stamps(state.control.as_ref()),
    )))
}

pub(crate) async fn list_ca_certificates(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let stamps = stamps(state.control.as_ref());
    let items = config
        .ca_certificates
        .iter()
        .map(|ca| (ca.id.clone(), kong::ca_certificate(ca, stamps)))
        .collect();
    Ok(Json(Value::Object(paginate(
        items,
        &params,
        "/ca_certificates",
    )?)))
}

/// CA certificates have no name in Kong: found by id only.
pub(crate) async fn get_ca_certificate(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.control.config();
    let id = key.to_ascii_lowercase();
    let ca = config
        .ca_certificates
        .iter()
        .find(|ca| ca.id == id)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(kong::ca_certificate(
        ca,
        stamps(state.control.as_ref()),
    )))
}

#[cfg(test)]
mod tests {
    use super::is_uuid;

    #[test]
    fn uuid_form_is_kongs() {
        assert!(is_uuid("7c1e0f3a-6b1d-4c55-9a47-000000000001"));
        assert!(is_uuid("7C1E0F3A-6B1D-4C55-9A47-00000000000A"));
        assert!(!is_uuid("api.example.test"));
        assert!(!is_uuid("7c1e0f3a6b1d-4c55-9a47-0000000000011"));
        assert!(!is_uuid("7c1e0f3a-6b1d-4c55-9a47-00000000000g"));
    }
}
