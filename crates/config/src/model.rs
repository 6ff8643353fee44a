//! The validated configuration the gateway runs: services, routes, plugins, and the
//! core's upstream topology. Every default is applied and every reference resolved.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sluice_core::topology::UpstreamSpec;

/// A whole validated configuration generation.
#[derive(Clone, Debug)]
pub struct Config {
    /// `_format_version` as written ("3.0", "2.1" or "1.1").
    pub format_version: String,
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<UpstreamSpec>,
    pub plugins: Vec<Plugin>,
    /// Kong `certificates[]` (client certificates for upstream mTLS), parsed and checked.
    pub certificates: Vec<Certificate>,
    /// Kong `ca_certificates[]`, parsed and checked.
    pub ca_certificates: Vec<CaCertificate>,
    /// Per upstream (indexed like `upstreams`): index into `certificates` of its
    /// `client_certificate`, presented by its active `https` probes and by services that
    /// name no certificate of their own.
    pub upstream_client_certificates: Vec<Option<usize>>,
    /// Stable hash of the source text (hex), reported by metrics and `GET /config`.
    pub hash: String,
    /// The source text the config was built from (served by `GET /config`).
    pub source: Arc<str>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Grpc,
    Grpcs,
    Tcp,
    Tls,
    TlsPassthrough,
    Udp,
    Ws,
    Wss,
}

/// Kong `services[]`.
#[derive(Clone, Debug)]
pub struct Service {
    pub id: String,
    pub name: Option<String>,
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    /// Kong default 5 (so up to 6 attempts).
    pub retries: u32,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    pub enabled: bool,
    pub tags: Vec<String>,
    /// Index into `Config::upstreams` when `host` names an upstream (then `port` is ignored).
    pub upstream: Option<usize>,
    /// TLS settings for `https` services (all empty for http).
    pub tls: ServiceTls,
}

/// Kong's per-service TLS-to-upstream fields, references resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTls {
    /// `tls_verify`; `None` (null) means Kong's `proxy_ssl_verify`, off by default.
    pub verify: Option<bool>,
    /// `tls_verify_depth` (0..=64); `None` means nginx's default, 1.
    pub verify_depth: Option<u8>,
    /// `ca_certificates`: indices into `Config::ca_certificates`. Empty means the
    /// system trust store.
    pub ca_certificates: Vec<usize>,
    /// `client_certificate`: index into `Config::certificates`.
    pub client_certificate: Option<usize>,
}

/// Kong `certificates[]`: a certificate chain (leaf first) and its private key.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub id: String,
    pub chain: Vec<CertificateDer<'static>>,
    /// Shared: a private key is deliberately not `Clone` in `rustls-pki-types`.
    pub key: Arc<PrivateKeyDer<'static>>,
    pub tags: Vec<String>,
}

/// Kong `ca_certificates[]`: one CA certificate (basic constraint `CA:TRUE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCertificate {
    pub id: String,
    pub cert: CertificateDer<'static>,
    pub tags: Vec<String>,
}

/// One `paths` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    /// Regex source without the leading `~`; matched anchored at the start of the path.
    Regex(String),
}

/// One `hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: the stored value is `.example.com`.
    WildcardPrefix(String),
    /// `example.*`: the stored value is `example.`.
    WildcardSuffix(String),
}

/// One value of a `headers` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValueMatch {
    /// Case-insensitive equality.
    Exact(String),
    /// `~*` prefixed: a regex.
    Regex(String),
}

/// Sluice's per-route extensions (from `sluice:` tags or the Sluice section).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteExtensions {
    /// Hedge idempotent requests after this delay (opt-in).
    pub hedge_after: Option<Duration>,
    /// Also retry these response statuses (`sluice:retry-on=502|503`); Kong retries only
    /// transport errors and timeouts, so this is opt-in and empty by default.
    pub retry_on_status: Vec<u16>,
}

/// Kong `routes[]`.
#[derive(Clone, Debug)]
pub struct Route {
    pub id: String,
    pub name: Option<String>,
    /// Index into `Config::services`.
    pub service: Option<usize>,
    pub protocols: Vec<Protocol>,
    /// Upper-cased.
    pub methods: Vec<String>,
    pub hosts: Vec<HostMatch>,
    pub paths: Vec<PathMatch>,
    /// Lower-cased header name → accepted values.
    pub headers: Vec<(String, Vec<HeaderValueMatch>)>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub regex_priority: i64,
    pub path_handling: String,
    pub https_redirect_status_code: u16,
    pub tags: Vec<String>,
    pub extensions: RouteExtensions,
}

/// Where a plugin applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginScope {
    Global,
    Service(usize),
    Route(usize),
}

/// The prometheus plugin's config (Kong defaults: all flags false except as noted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrometheusConfig {
    pub per_consumer: bool,
    pub status_code_metrics: bool,
    pub latency_metrics: bool,
    pub bandwidth_metrics: bool,
    pub upstream_health_metrics: bool,
    pub ai_metrics: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PluginConfig {
    Prometheus(PrometheusConfig),
}

/// Kong `plugins[]` (only plugins Sluice implements validate).
#[derive(Clone, Debug)]
pub struct Plugin {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub scope: PluginScope,
    pub config: PluginConfig,
    pub tags: Vec<String>,
}
