//! DB-less configuration: `POST /config` in every body form Kong accepts, Kong's answers
//! (201 entities, 304 unchanged, 400 code 14 with nested or flattened errors), and
//! `GET /config`. The running configuration changes only when the gateway accepted the
//! whole new one.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::api::{AppState, Params, flag, params, stamps};
use crate::control::{ApplyError, ConfigFormat};
use crate::error::{ApiError, KongCode};
use crate::kong;

// ---------------------------------------------------------------------------------------
// Declarative configuration

pub(crate) async fn get_config(State(state): State<AppState>) -> Json<Value> {
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

pub(crate) async fn post_config(
    State(state): State<AppState>,
    query: Params,
    request: Request,
) -> Response {
    match apply(state, query, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

pub(crate) async fn apply(
    state: AppState,
    query: Params,
    request: Request,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, body, state.options.body_limit).await?;
    let (text, format) = extract_config(&media_type(&parts.headers), &bytes)?;

    if flag(&params, "check_hash") && state.control.config().source.as_ref() == text {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }

    match state.control.apply_config(text.clone(), format).await {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    proptest::proptest! {
        /// Whatever a client sends, body extraction answers Ok or a 400, never panics.
        #[test]
        fn extraction_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            kind in 0usize..5,
            boundary in "[a-zA-Z0-9'()+_,./:=?-]{0,12}",
        ) {
            let content_type = match kind {
                0 => "application/json".to_owned(),
                1 => "application/x-www-form-urlencoded".to_owned(),
                2 => format!("multipart/form-data; boundary={boundary}"),
                3 => "text/yaml".to_owned(),
                _ => String::new(),
            };
            let _ = extract_config(&content_type, &body);
            let _ = multipart_config(&content_type, &body);
        }

        /// A multipart body built around any config text gives that text back.
        #[test]
        fn multipart_round_trips(text in "[ -~\n]{1,200}") {
            let body = format!(
                "--B0undary\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{text}\r\n--B0undary--\r\n"
            );
            let found = multipart_config("multipart/form-data; boundary=B0undary", body.as_bytes());
            proptest::prop_assert_eq!(found, Some(text.into_bytes()));
        }
    }
}
