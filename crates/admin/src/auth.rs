//! Who may talk to the Admin API.
//!
//! The Admin API can replace the whole configuration and mark any backend unhealthy, so
//! it is either reachable only from this host (loopback listener) or it demands a token.
//! [`check_bind`] is the startup rule; [`require_token`] is the per-request check.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Refuse an Admin API (or status page) listener that anyone on the network could reach
/// without a token. Loopback addresses are allowed without one, as Kong's default
/// `admin_listen = 127.0.0.1:8001` is.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    let has_token = token.is_some_and(|t| !t.trim().is_empty());
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(format!(
        "refusing to serve the admin API on {addr}: it is not a loopback address and no admin \
         token is set; bind it to 127.0.0.1 or set an admin token"
    ))
}

/// The token a request presented: `Authorization: Bearer <t>` or Kong's
/// `Kong-Admin-Token: <t>` (what Kong Manager and decK's `--headers` send).
fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get("kong-admin-token") {
        return Some(value.as_bytes());
    }
    let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    let scheme = b"bearer ";
    let (given_scheme, token) = value.split_at_checked(scheme.len())?;
    (given_scheme.eq_ignore_ascii_case(scheme) && !token.is_empty()).then_some(token)
}

/// Compare without an early exit, so the time taken does not reveal how many leading
/// bytes of a guess were right. The length is not secret-worthy (it leaks only how long
/// the token is, which a brute-force attacker must cover anyway).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the token middleware checks.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    pub token: Option<Arc<str>>,
    /// `GET /` is the status page itself (static, no data): serve it without the token so
    /// a browser can load it and then send the token from the URL fragment.
    pub public_page: bool,
}

/// Middleware: with a token configured, every request must present it (on every path,
/// known or not, and before method matching, so a 401 reveals nothing).
pub(crate) async fn require_token(
    State(check): State<TokenCheck>,
    request: Request,
    next: Next,
) -> Response {
    let is_public_page = check.public_page
        && request.uri().path() == "/"
        && matches!(*request.method(), Method::GET | Method::HEAD);
    if let Some(expected) = check.token.as_deref()
        && !is_public_page
    {
        let ok = presented_token(request.headers())
            .is_some_and(|given| constant_time_eq(given, expected.as_bytes()));
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:8001".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let local6: SocketAddr = "[::1]:8001".parse().unwrap();
        assert!(check_bind(public, None).is_err());
        assert!(
            check_bind(public, Some("  ")).is_err(),
            "a blank token is no token"
        );
        assert!(check_bind(public, Some("s3cret")).is_ok());
        assert!(check_bind(local, None).is_ok());
        assert!(check_bind(local6, None).is_ok());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn bearer_and_kong_header() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer tok".parse().unwrap());
        assert_eq!(presented_token(&headers), Some(&b"tok"[..]));
        headers.insert("kong-admin-token", "other".parse().unwrap());
        assert_eq!(presented_token(&headers), Some(&b"other"[..]));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic dG9r".parse().unwrap());
        assert_eq!(presented_token(&basic), None);
    }
}
