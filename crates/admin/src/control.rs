//! The one seam between the Admin API and the running gateway.
//!
//! `sluice-admin` must not depend on `sluice-proxy`: an operator API that can only *ask*
//! the gateway for snapshots and *send* it commands cannot corrupt the data path. The
//! binary implements [`Control`] on top of the proxy's gateway handle; tests implement it
//! with hand-built snapshots. Every method but `apply_config` is synchronous and cheap (an
//! `Arc` clone, a channel send, a short read of an in-memory log), so handlers never hold
//! the gateway.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sluice_config::Config;
use sluice_core::decision::DecisionRecord;
use sluice_core::snapshot::UpstreamSnapshot;
use sluice_core::time::Instant;

/// What [`Control::apply_config`] returns: the applied configuration, or why not.
pub type ApplyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<Config>, ApplyError>> + Send + 'a>>;

/// How a `POST /config` body was written. YAML is a superset of JSON, so a parser may
/// treat both alike; the format only lets it word its errors ("line 3" vs "offset 40").
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConfigFormat {
    Yaml,
    Json,
}

/// Kong's rendering of a rejected declarative configuration, produced by the binary from
/// `sluice_config::Diagnostics` (which owns the wording and the nesting).
///
/// The Admin API turns it into Kong's `400 {"code":14,"name":"invalid declarative
/// configuration",...}` body; with `?flatten_errors=1` it adds `flattened_errors`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigRejection {
    /// `declarative config is invalid: {...}`: Kong's one-line summary.
    pub message: String,
    /// Kong's nested `err_t`, mirroring the input's structure
    /// (`{"upstreams":[{"targets":[null,{"weight":"value should be between 0 and 65535"}]}]}`).
    pub fields: Value,
    /// Kong's `flattened_errors` list (one entry per offending entity).
    pub flattened_errors: Vec<Value>,
}

impl From<&sluice_config::Diagnostics> for ConfigRejection {
    /// The config crate owns Kong's error wording and nesting; this only picks the parts
    /// the Admin API serves in each mode.
    fn from(diagnostics: &sluice_config::Diagnostics) -> Self {
        let nested = diagnostics.to_kong_error();
        let flattened = diagnostics.to_kong_flattened();
        ConfigRejection {
            message: nested
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("declarative config is invalid")
                .to_owned(),
            fields: diagnostics.kong_fields(),
            flattened_errors: flattened
                .get("flattened_errors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// Why the gateway did not take a new configuration. In every case the running
/// configuration is untouched.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyError {
    /// The text is not a valid declarative configuration.
    Invalid(ConfigRejection),
    /// The gateway could not take it right now (e.g. it is shutting down). The message is
    /// for the operator and must not echo configuration contents.
    Unavailable(String),
}

/// An upstream, target or address that the gateway does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFound;

/// Kong's health-checker counters for one address, as `lua-resty-healthcheck` keeps them:
/// consecutive successes and the three failure kinds since the last state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressHealth {
    pub addr: SocketAddr,
    pub hostname: Arc<str>,
    /// The checker's verdict (`true` = healthy); meaningless when checks are off.
    pub healthy: bool,
    pub successes: u32,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

/// Connection and request counters for `GET /status` (Kong's `server` object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub total_requests: u64,
    pub connections_active: u64,
    pub connections_accepted: u64,
    pub connections_handled: u64,
}

/// A fault the demo can inject into one of its own backends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Healthy: answer normally.
    None,
    /// Refuse connections (the backend is "down").
    Down,
    /// Answer normally after this extra delay.
    Slow(Duration),
    /// Answer every request with this status (e.g. 500).
    Error(u16),
}

/// One backend the demo runs, with the fault currently applied to it.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoBackend {
    /// The target string the gateway balances to (`127.0.0.1:9001`).
    pub target: String,
    pub region: String,
    pub upstream: String,
    pub fault: Fault,
}

/// The demo's fault panel: only present when the binary runs its built-in demo backends.
pub trait DemoControl: Send + Sync {
    fn backends(&self) -> Vec<DemoBackend>;
    /// Apply `fault` to the backend serving `target` (replacing any previous fault).
    fn set_fault(&self, target: &str, fault: Fault) -> Result<(), NotFound>;
}

/// Everything the Admin API may ask of, or tell, the running gateway.
pub trait Control: Send + Sync + 'static {
    /// This node's id (a UUID, stable for the process lifetime), as Kong reports it.
    fn node_id(&self) -> &str;

    /// The configuration generation the gateway is running now.
    fn config(&self) -> Arc<Config>;

    /// When the current configuration was loaded: DB-less Kong stamps every entity's
    /// `created_at`/`updated_at` with it.
    fn config_loaded_at(&self) -> SystemTime;

    /// Parse, validate and apply a new declarative configuration, atomically: on `Err`
    /// the running configuration is exactly what it was.
    ///
    /// The one asynchronous method: applying waits for the controller, and parsing a
    /// large file takes long enough (0.4 s at 10,000 routes) that the implementation must
    /// be free to move it off the thread that serves traffic.
    fn apply_config(&self, text: String, format: ConfigFormat) -> ApplyFuture<'_>;

    /// The latest published snapshot of every upstream.
    fn upstream_snapshots(&self) -> Vec<Arc<UpstreamSnapshot>>;

    /// Health-checker counters of every address of `upstream`, `None` if it is unknown.
    fn address_health(&self, upstream: &str) -> Option<Vec<AddressHealth>>;

    /// Kong's `PUT .../healthy|unhealthy`: override the health of every address of
    /// `target` (or just `address`) and reset its counters.
    fn set_health(
        &self,
        upstream: &str,
        target: &str,
        address: Option<SocketAddr>,
        healthy: bool,
    ) -> Result<(), NotFound>;

    /// Decision records with `seq > since`, oldest first.
    fn decisions(&self, since: u64) -> Vec<Arc<DecisionRecord>>;

    /// The gateway's virtual clock now: decision `at`, ejection deadlines and EWMA stamps
    /// are in this time base, so the status page can say "12 s ago".
    fn now(&self) -> Instant;

    /// Prometheus exposition text (format 0.0.4).
    fn metrics_text(&self) -> String;

    /// Counters for `GET /status`.
    fn server_stats(&self) -> ServerStats;

    /// Replace the process's log filter (`info`, `debug`, `info,sluice_proxy=debug`) at
    /// runtime. The default refuses: only a binary that owns the logger can do it.
    fn set_log_filter(&self, _directives: &str) -> Result<(), String> {
        Err("changing the log level is not supported by this gateway".into())
    }

    /// The demo's fault panel, when the demo backends run in this process.
    fn demo(&self) -> Option<&dyn DemoControl> {
        None
    }
}
