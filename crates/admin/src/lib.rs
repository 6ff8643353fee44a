//! Sluice's Admin API and live status page.
//!
//! Two routers over one [`Control`] handle to the gateway:
//! - [`router`]: the Kong 3.x-compatible Admin API (default `127.0.0.1:8001`), so tools
//!   written for Kong (decK, scripts, dashboards) keep working: read endpoints for
//!   services, routes, upstreams, targets, plugins, certificates, SNIs, CA
//!   certificates and tags in Kong's JSON shapes, Kong's
//!   per-target health and its overrides, DB-less `POST /config`, `/metrics`, plus
//!   Sluice's own `/sluice/*` views of failover state and the decision log.
//! - [`gui_router`]: the status page (default `127.0.0.1:8002`), one self-contained HTML
//!   page that polls the same JSON endpoints, mounted on the same listener so the page
//!   is same-origin.
//!
//! This crate does not depend on `sluice-proxy`: it can only read snapshots and send
//! commands through [`Control`], never touch the data path. See `docs/admin-api.md`.

mod api;
mod auth;
mod certificates;
mod control;
mod declarative;
mod entities;
mod error;
mod health;
mod kong;
mod sluice_api;
mod tags;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value};

pub use api::{KONG_COMPAT_VERSION, METRICS_CONTENT_TYPE};
pub use auth::check_bind;
pub use control::{
    AddressHealth, ApplyError, ApplyFuture, ConfigFormat, ConfigRejection, Control, DemoBackend,
    DemoControl, Fault, NotFound, ServerStats,
};

/// Largest request body the Admin API reads: a declarative configuration for thousands
/// of services and targets is a few MiB of YAML; 16 MiB leaves room for that while
/// capping what one request can make the process buffer.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// How the Admin API behaves, independent of the gateway behind it.
#[derive(Clone)]
pub struct AdminOptions {
    /// When set, every request must carry it (`Authorization: Bearer <t>` or
    /// `Kong-Admin-Token: <t>`); see [`check_bind`] for when it is mandatory.
    pub token: Option<String>,
    /// Request body limit in bytes (413 above it).
    pub body_limit: usize,
    /// Reported by `GET /` as Kong's `hostname`.
    pub hostname: String,
    /// Extra entries for `GET /`'s `configuration` object (listen addresses, etc.),
    /// supplied by the binary. Never put secrets here: it is served verbatim.
    pub configuration: Map<String, Value>,
}

/// Never print the token: options end up in startup logs and panic messages.
impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("body_limit", &self.body_limit)
            .field("hostname", &self.hostname)
            .field("configuration", &self.configuration)
            .finish()
    }
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            hostname: system_hostname(),
            configuration: Map::new(),
        }
    }
}

/// The kernel's hostname (Linux), or `localhost` where it cannot be read.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn state(control: Arc<dyn Control>, options: AdminOptions) -> (api::AppState, Option<Arc<str>>) {
    let token = options
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Arc::from);
    let state = api::AppState {
        control,
        options: Arc::new(options),
    };
    (state, token)
}

/// The Kong-compatible Admin API. Every request, including unknown paths, passes the
/// token check first, so an unauthenticated caller learns nothing about the config.
pub fn router(control: Arc<dyn Control>, options: AdminOptions) -> Router {
    let (state, token) = state(control, options);
    let check = auth::TokenCheck {
        token,
        public_page: false,
    };
    api::data_routes()
        .route("/", get(api::node_info))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(from_fn_with_state(check, auth::require_token))
        .layer(map_response(no_store))
        .with_state(state)
}

/// Admin answers carry configuration and live state: no cache along the way may keep
/// them, and browsers must not guess their type.
async fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The status page, self-contained: inline CSS and JS, no external assets.
const STATUS_PAGE: &str = include_str!("status.html");

async fn status_page() -> impl IntoResponse {
    (
        [
            // The page loads nothing from elsewhere; say so, so an injected script could
            // not either.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(STATUS_PAGE),
    )
}

/// The status page listener: `GET /` serves the page, and the Admin API's JSON routes
/// are mounted under the same paths so the page's polling is same-origin. The page
/// itself holds no data and is served without the token; with a token configured, the
/// page reads it from the URL fragment (`/#token=...`, never sent to the server or
/// logged) and sends it on every JSON request, which are all token-checked.
pub fn gui_router(control: Arc<dyn Control>, options: AdminOptions) -> Router {
    let (state, token) = state(control, options);
    let check = auth::TokenCheck {
        token,
        public_page: true,
    };
    Router::new()
        .route("/", get(status_page))
        .merge(api::data_routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(from_fn_with_state(check, auth::require_token))
        .layer(map_response(no_store))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` completes, then finish in-flight
/// requests and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
