//! Error classification for the data plane.
//!
//! Every failure the proxy can produce is one [`ProxyError`]: a [`ErrorKind`] that maps to
//! exactly one HTTP status and one Kong-style JSON message, which side caused it, and
//! whether anything had been sent upstream yet (`retry_safe`), which is what the retry
//! policy needs to know for non-idempotent requests. Keeping the mapping in one table
//! means the status a client sees, the metric label and the access-log field can never
//! disagree.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// What went wrong. Each kind has exactly one status and one message.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No route matched (Kong: 404).
    NoRouteMatched,
    /// The matched route has no service (Kong: 503).
    NoService,
    /// The route only accepts HTTPS and the request came over plain HTTP (Kong: 426).
    HttpsRequired,
    /// The balancer had no address to give: none available, balancer unhealthy, or every
    /// address already tried (Kong: 503 ring-balancer).
    NoPeer,
    /// A service host could not be resolved (Kong: 503).
    NameResolutionFailed,
    /// TCP connect to the upstream failed (refused, unreachable).
    UpstreamConnectFailed,
    /// Connect, write or read timeout before the response header.
    UpstreamTimeout,
    /// The upstream connection broke, or what came back was not valid HTTP.
    UpstreamInvalidResponse,
    /// The service uses a protocol this data plane does not forward (e.g. grpc, tcp).
    UnsupportedUpstreamProtocol,
    /// The request could not be parsed or had a malformed header.
    BadRequest,
    /// The request body exceeded the configured limit.
    PayloadTooLarge,
    /// The request head exceeded the configured limit.
    HeadersTooLarge,
    /// The client stopped sending its request body midway.
    ClientAborted,
    /// The gateway is shutting down and no longer accepts requests on this connection.
    ShuttingDown,
    /// A gRPC request (`application/grpc*`) for a gRPC route or service arrived over
    /// HTTP/1.x (Kong: 426 "Please use HTTP2 protocol").
    Http2Required,
    /// A request without a gRPC content type matched a route that serves only gRPC
    /// (Kong: 415 "Non-gRPC request matched gRPC route").
    NonGrpcRequest,
    /// A bug or an impossible state inside the gateway.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::NoRouteMatched,
        ErrorKind::NoService,
        ErrorKind::HttpsRequired,
        ErrorKind::NoPeer,
        ErrorKind::NameResolutionFailed,
        ErrorKind::UpstreamConnectFailed,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamInvalidResponse,
        ErrorKind::UnsupportedUpstreamProtocol,
        ErrorKind::BadRequest,
        ErrorKind::PayloadTooLarge,
        ErrorKind::HeadersTooLarge,
        ErrorKind::ClientAborted,
        ErrorKind::ShuttingDown,
        ErrorKind::Http2Required,
        ErrorKind::NonGrpcRequest,
        ErrorKind::Internal,
    ];

    /// The status sent to the client.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRouteMatched => StatusCode::NOT_FOUND,
            ErrorKind::NoService
            | ErrorKind::NoPeer
            | ErrorKind::NameResolutionFailed
            | ErrorKind::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::HttpsRequired => StatusCode::UPGRADE_REQUIRED,
            ErrorKind::UpstreamConnectFailed
            | ErrorKind::UpstreamInvalidResponse
            | ErrorKind::UnsupportedUpstreamProtocol => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BadRequest | ErrorKind::ClientAborted => StatusCode::BAD_REQUEST,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Http2Required => StatusCode::UPGRADE_REQUIRED,
            ErrorKind::NonGrpcRequest => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// Kong's message text for the status (Kong's exact wording where Kong has one).
    pub fn message(self) -> &'static str {
        match self {
            ErrorKind::NoRouteMatched => "no Route matched with those values",
            ErrorKind::NoService => "no Service found with those values",
            ErrorKind::HttpsRequired => "Please use HTTPS protocol",
            ErrorKind::NoPeer => "failure to get a peer from the ring-balancer",
            ErrorKind::NameResolutionFailed => "name resolution failed",
            ErrorKind::UpstreamConnectFailed
            | ErrorKind::UpstreamInvalidResponse
            | ErrorKind::UnsupportedUpstreamProtocol => {
                "An invalid response was received from the upstream server"
            }
            ErrorKind::UpstreamTimeout => "The upstream server is timing out",
            ErrorKind::BadRequest | ErrorKind::ClientAborted => "Bad request",
            ErrorKind::PayloadTooLarge => "Request size limit exceeded",
            ErrorKind::HeadersTooLarge => "Request header or cookie too large",
            ErrorKind::ShuttingDown => "The gateway is shutting down",
            ErrorKind::Internal => "An unexpected error occurred",
            ErrorKind::Http2Required => "Please use HTTP2 protocol",
            ErrorKind::NonGrpcRequest => "Non-gRPC request matched gRPC route",
        }
    }

    /// Stable snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoRouteMatched => "no_route_matched",
            ErrorKind::NoService => "no_service",
            ErrorKind::HttpsRequired => "https_required",
            ErrorKind::NoPeer => "no_peer",
            ErrorKind::NameResolutionFailed => "name_resolution_failed",
            ErrorKind::UpstreamConnectFailed => "upstream_connect_failed",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamInvalidResponse => "upstream_invalid_response",
            ErrorKind::UnsupportedUpstreamProtocol => "unsupported_upstream_protocol",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::ClientAborted => "client_aborted",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Internal => "internal",
            ErrorKind::Http2Required => "http2_required",
            ErrorKind::NonGrpcRequest => "non_grpc_request",
        }
    }

    /// Which side is to blame, for logs and for passive health (only `Upstream` errors
    /// count against an address).
    pub fn side(self) -> Side {
        match self {
            ErrorKind::NoRouteMatched
            | ErrorKind::HttpsRequired
            | ErrorKind::BadRequest
            | ErrorKind::PayloadTooLarge
            | ErrorKind::HeadersTooLarge
            | ErrorKind::ClientAborted
            | ErrorKind::Http2Required
            | ErrorKind::NonGrpcRequest => Side::Client,
            ErrorKind::NoPeer
            | ErrorKind::NameResolutionFailed
            | ErrorKind::UpstreamConnectFailed
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamInvalidResponse => Side::Upstream,
            ErrorKind::NoService
            | ErrorKind::UnsupportedUpstreamProtocol
            | ErrorKind::ShuttingDown
            | ErrorKind::Internal => Side::Internal,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Who caused an error.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

/// A classified data-plane failure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} ({side:?} side, retry_safe={retry_safe})")]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    /// Nothing of the request reached the upstream yet, so even a non-idempotent request
    /// may be retried.
    pub retry_safe: bool,
}

impl ProxyError {
    /// An error whose request never reached an upstream.
    pub fn before_send(kind: ErrorKind) -> Self {
        ProxyError {
            kind,
            side: kind.side(),
            retry_safe: true,
        }
    }

    /// An error after (some of) the request was sent upstream.
    pub fn after_send(kind: ErrorKind) -> Self {
        ProxyError {
            kind,
            side: kind.side(),
            retry_safe: false,
        }
    }
}

/// Kong's JSON error body: `{"message":"...","request_id":"..."}`.
pub fn error_body(kind: ErrorKind, request_id: &str) -> Bytes {
    // Both strings are ASCII without quotes or backslashes (messages are constants,
    // request ids are hex), but go through serde_json anyway so that stays true if either
    // ever changes.
    let body = serde_json::json!({ "message": kind.message(), "request_id": request_id });
    Bytes::from(body.to_string())
}

/// The content type of [`error_body`].
pub fn error_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json; charset=utf-8")
}

/// The gRPC status Kong's PDK sends for an HTTP status it answers a gRPC request with
/// (`HTTP_TO_GRPC_STATUS` in `kong/pdk/response.lua`; unlisted codes fall back by class:
/// 5xx INTERNAL, 4xx INVALID_ARGUMENT, 2xx OK, else UNKNOWN). 502 is unlisted there, so
/// a refused upstream is INTERNAL (13), not UNAVAILABLE: Kong's table, kept as is.
pub fn grpc_status_for(status: StatusCode) -> u8 {
    let code = status.as_u16();
    let listed = match code {
        200 => Some(0),
        400 => Some(3),
        401 => Some(16),
        403 => Some(7),
        404 => Some(5),
        409 => Some(6),
        429 => Some(8),
        499 => Some(1),
        500 => Some(13),
        501 => Some(12),
        503 => Some(14),
        504 => Some(4),
        _ => None,
    };
    listed.unwrap_or(match code / 100 {
        5 => 13,
        4 => 3,
        2 => 0,
        _ => 2,
    })
}

/// Header name constant re-exported so response builders share one spelling.
pub const CONTENT_TYPE: header::HeaderName = header::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_kongs_status_and_message() {
        let expected = [
            (
                ErrorKind::NoRouteMatched,
                404,
                "no Route matched with those values",
            ),
            (
                ErrorKind::NoPeer,
                503,
                "failure to get a peer from the ring-balancer",
            ),
            (
                ErrorKind::UpstreamInvalidResponse,
                502,
                "An invalid response was received from the upstream server",
            ),
            (
                ErrorKind::UpstreamTimeout,
                504,
                "The upstream server is timing out",
            ),
            (
                ErrorKind::NameResolutionFailed,
                503,
                "name resolution failed",
            ),
            (
                ErrorKind::PayloadTooLarge,
                413,
                "Request size limit exceeded",
            ),
            (
                ErrorKind::HeadersTooLarge,
                431,
                "Request header or cookie too large",
            ),
            (ErrorKind::BadRequest, 400, "Bad request"),
        ];
        for (kind, status, message) in expected {
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
            assert_eq!(kind.message(), message, "{kind:?}");
        }
    }

    #[test]
    fn grpc_statuses_follow_kongs_table() {
        let code = |kind: ErrorKind| grpc_status_for(kind.status());
        assert_eq!(code(ErrorKind::NoRouteMatched), 5);
        assert_eq!(code(ErrorKind::NoPeer), 14);
        assert_eq!(code(ErrorKind::UpstreamConnectFailed), 13);
        assert_eq!(code(ErrorKind::UpstreamTimeout), 4);
        assert_eq!(code(ErrorKind::PayloadTooLarge), 3);
        assert_eq!(code(ErrorKind::Http2Required), 3);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn body_is_kong_shaped_json() {
        let body = error_body(ErrorKind::NoRouteMatched, "00ab");
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["message"], "no Route matched with those values");
        assert_eq!(parsed["request_id"], "00ab");
    }
}
