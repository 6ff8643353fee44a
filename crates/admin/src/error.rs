//! Kong's error bodies for the Admin API.
//!
//! Kong clients (decK, Terraform providers, scripts) branch on the status code and read
//! `message`; some read Kong's numeric `code`/`name` pairs from `kong/db/errors.lua`.
//! Every error here is one of those shapes, and none of them ever quotes configuration
//! contents: an unauthenticated caller learns only that the request failed.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Kong's error codes (`kong/db/errors.lua`) that this API can return.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KongCode {
    InvalidOffset = 7,
    InvalidSize = 9,
    OperationUnsupported = 12,
    DeclarativeConfig = 14,
}

impl KongCode {
    fn name(self) -> &'static str {
        match self {
            KongCode::InvalidOffset => "invalid offset",
            KongCode::InvalidSize => "invalid size",
            KongCode::OperationUnsupported => "operation unsupported",
            KongCode::DeclarativeConfig => "invalid declarative configuration",
        }
    }
}

/// An Admin API failure, rendered as Kong renders it.
#[derive(Debug)]
pub enum ApiError {
    /// 404 `{"message":"Not found"}`: unknown path, entity, target or address.
    NotFound,
    /// 405 `{"message":"Method not allowed"}`.
    MethodNotAllowed,
    /// 401 `{"message":"Unauthorized"}`.
    Unauthorized,
    /// 413: the body exceeds the Admin API's limit.
    PayloadTooLarge { limit: usize },
    /// 400 `{"message": ...}` without a Kong code (Kong's plain argument errors).
    BadRequest(String),
    /// 400 `{"code", "name", "message"}` with one of Kong's error codes.
    Kong { code: KongCode, message: String },
    /// A fully formed body (the declarative-config rejection) with its status.
    Body(StatusCode, Value),
    /// 503: the gateway could not take the request now.
    Unavailable(String),
}

impl ApiError {
    pub fn kong(code: KongCode, message: impl Into<String>) -> Self {
        ApiError::Kong {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, json!({"message": "Not found"})),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"message": "Method not allowed"}),
            ),
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}))
            }
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"message": format!("request body is larger than the {limit} byte limit")}),
            ),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, json!({"message": message})),
            ApiError::Kong { code, message } => (
                StatusCode::BAD_REQUEST,
                json!({"code": code as u16, "name": code.name(), "message": message}),
            ),
            ApiError::Body(status, body) => (status, body),
            ApiError::Unavailable(message) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({"message": message}))
            }
        };
        (status, Json(body)).into_response()
    }
}
