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
    /// Kong `certificates[]`, parsed and checked: served by the TLS proxy listener when
    /// an SNI names them, presented to upstreams when a service or upstream names them.
    pub certificates: Vec<Certificate>,
    /// Kong `certificates[].snis` (in certificate order), then top-level `snis[]`:
    /// which certificate the TLS listener serves for a server name. Names are unique.
    pub snis: Vec<Sni>,
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
    /// `cert_alt`/`key_alt`: a second chain and key (e.g. ECDSA next to RSA); the TLS
    /// listener serves it to clients that cannot verify the first key's signatures.
    pub alt: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    pub tags: Vec<String>,
    /// `cert`, `key`, `cert_alt` and `key_alt` as written: the Admin API serves them back
    /// the way Kong stores them, so a dump compares equal to the file it came from.
    pub pem: CertificatePem,
}

/// The PEM texts of a certificate entity, exactly as the file gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePem {
    pub cert: Arc<str>,
    pub key: SecretText,
    /// `cert_alt` and `key_alt`, present together or not at all.
    pub alt: Option<(Arc<str>, SecretText)>,
}

/// Text that must not reach logs: a private key. `Debug` prints a placeholder (a
/// `Config` is `Debug` and may end up in a log line or a panic message); the text is
/// read only on purpose, through [`SecretText::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(Arc<str>);

impl SecretText {
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        SecretText(text.into())
    }

    /// The secret itself, for the one reader that must serve it (the Admin API).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Kong `snis[]`: a server name and the certificate served for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sni {
    pub id: String,
    pub name: SniName,
    /// Index into `Config::certificates`.
    pub certificate: usize,
    pub tags: Vec<String>,
}

/// A server name as Kong's `wildcard_host` type allows it, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SniName {
    Exact(String),
    /// `*.example.com` (stored `.example.com`): stands for exactly one leftmost label,
    /// as Kong's lookup replaces the first label of the client's name with `*`.
    WildcardPrefix(String),
    /// `example.*` (stored `example.`): stands for exactly one rightmost label.
    WildcardSuffix(String),
    /// `*`: Kong's default certificate, served when nothing else matches.
    Default,
}

impl SniName {
    /// The name as written in Kong's form (`*.example.com`, `example.*`, `*`).
    pub fn as_kong(&self) -> String {
        match self {
            SniName::Exact(name) => name.clone(),
            SniName::WildcardPrefix(rest) => format!("*{rest}"),
            SniName::WildcardSuffix(rest) => format!("{rest}*"),
            SniName::Default => "*".to_owned(),
        }
    }

    /// Whether a client's server name (lower case, no trailing dot) matches, the way
    /// Kong's certificate lookup (`produce_wild_snis`) does: exact; `*.x.y` for any
    /// `label.x.y` (one label, so `a.b.x.y` does not match, and the rest must itself
    /// have two labels: `*.com` matches nothing); `x.*` for any `x.label`. `*` matches
    /// every name.
    pub fn matches(&self, server_name: &str) -> bool {
        match self {
            SniName::Exact(name) => name == server_name,
            SniName::WildcardPrefix(rest) => {
                server_name.split_once('.').is_some_and(|(label, tail)| {
                    !label.is_empty() && tail.contains('.') && rest.get(1..) == Some(tail)
                })
            }
            SniName::WildcardSuffix(rest) => {
                server_name.rsplit_once('.').is_some_and(|(head, label)| {
                    !label.is_empty() && rest.strip_suffix('.') == Some(head)
                })
            }
            SniName::Default => true,
        }
    }
}

/// Kong `ca_certificates[]`: one CA certificate (basic constraint `CA:TRUE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCertificate {
    pub id: String,
    pub cert: CertificateDer<'static>,
    pub tags: Vec<String>,
    /// `cert` as written, served back by the Admin API.
    pub pem: Arc<str>,
    /// Kong's `cert_digest`: the SHA-256 of the certificate's DER, lower-case hex.
    pub digest: String,
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
    /// `snis`: on the TLS listener the route matches only when the client's server name
    /// matches one of these; on the plain listener they are not considered (Kong:
    /// `net.protocol != "https" || tls.sni == ...`).
    pub snis: Vec<SniName>,
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
