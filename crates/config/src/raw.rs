//! Kong's declarative configuration exactly as written: entity by entity, Kong's field
//! names and units, nothing defaulted, every value with its line:column.
//!
//! These types mirror `kong.yml` (`_format_version` "1.1", "2.1" or "3.0") so that
//! validation (`validate`) can apply Kong's defaults and checks and point at the offending
//! value. They are decoded from the position-annotated tree of [`crate::node`] rather than
//! derived with serde, because serde stops at the first error and we report all of them.
//! The decoder checks structure only: known keys, no duplicate keys, value types, and that
//! nested children do not repeat their parent key. Ranges, references, uniqueness and
//! Kong's entity checks are validation's job.
//!
//! `certificates` (with their nested `snis`), top-level `snis` and `ca_certificates` are
//! decoded (their PEM is checked by validation; certificates serve the TLS proxy listener
//! by SNI and, when services and upstreams reference them, TLS to upstreams). Entities
//! Sluice does not run (consumers, vaults, ...) are recorded by name and position only;
//! validation decides whether each is a warning or an error.

use std::collections::HashMap;

use crate::decode::{self, Fields, Sp, fields};
use crate::diagnostic::{Path, Sink};
use crate::node::{Node, Pos, Value};

/// The whole file.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    pub pos: Pos,
    pub format_version: Option<Sp<String>>,
    pub transform: Option<Sp<bool>>,
    /// decK/Enterprise `_workspace`: accepted with a warning (not in the OSS schema).
    pub workspace: Option<Sp<String>>,
    pub services: Vec<RawService>,
    /// Top-level routes (nested ones live in their service).
    pub routes: Vec<RawRoute>,
    pub upstreams: Vec<RawUpstream>,
    /// Top-level targets (nested ones live in their upstream).
    pub targets: Vec<RawTarget>,
    /// Top-level plugins (nested ones live in their service or route).
    pub plugins: Vec<RawPlugin>,
    pub certificates: Vec<RawCertificate>,
    pub ca_certificates: Vec<RawCaCertificate>,
    /// Top-level `snis` (nested ones live in their certificate).
    pub snis: Vec<RawSni>,
    /// Entity collections Sluice does not run, with the number of entries in each.
    pub other_entities: Vec<Sp<(String, usize)>>,
}

/// Kong `map` of header name → values, in document order, each with its position.
pub type HeaderMap = Vec<(Sp<String>, Vec<Sp<String>>)>;

/// A reference to a parent entity: `service: name`, `service: <uuid>`, or
/// `service: {name: x}` / `{id: x}`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRef {
    pub key: Sp<String>,
}

/// Kong `services[]`.
#[derive(Clone, Debug)]
pub struct RawService {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    pub url: Option<Sp<String>>,
    pub protocol: Option<Sp<String>>,
    pub host: Option<Sp<String>>,
    pub port: Option<Sp<i64>>,
    pub service_path: Option<Sp<String>>,
    pub retries: Option<Sp<i64>>,
    pub connect_timeout: Option<Sp<i64>>,
    pub write_timeout: Option<Sp<i64>>,
    pub read_timeout: Option<Sp<i64>>,
    pub enabled: Option<Sp<bool>>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
    /// `client_certificate`: a `certificates` entity (by id) presented for upstream mTLS.
    pub client_certificate: Option<RawRef>,
    pub tls_verify: Option<Sp<bool>>,
    pub tls_verify_depth: Option<Sp<i64>>,
    /// `ca_certificates`: ids of `ca_certificates` entities trusted for this service.
    pub ca_certificates: Option<Sp<Vec<Sp<String>>>>,
    pub routes: Vec<RawRoute>,
    pub plugins: Vec<RawPlugin>,
}

/// Kong `routes[]`.
#[derive(Clone, Debug)]
pub struct RawRoute {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    /// Only on top-level routes; nested routes belong to their service.
    pub service: Option<RawRef>,
    pub protocols: Option<Sp<Vec<Sp<String>>>>,
    pub methods: Option<Sp<Vec<Sp<String>>>>,
    pub hosts: Option<Sp<Vec<Sp<String>>>>,
    pub paths: Option<Sp<Vec<Sp<String>>>>,
    /// Header name → accepted values, in document order.
    pub headers: Option<Sp<HeaderMap>>,
    pub snis: Option<Sp<Vec<Sp<String>>>>,
    pub strip_path: Option<Sp<bool>>,
    pub preserve_host: Option<Sp<bool>>,
    pub regex_priority: Option<Sp<i64>>,
    pub path_handling: Option<Sp<String>>,
    pub https_redirect_status_code: Option<Sp<i64>>,
    pub request_buffering: Option<Sp<bool>>,
    pub response_buffering: Option<Sp<bool>>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
    /// Stream-only or expressions-router fields that were written (rejected by validation).
    pub unsupported: Vec<Sp<String>>,
    pub plugins: Vec<RawPlugin>,
}

/// Kong `upstreams[]`.
#[derive(Clone, Debug)]
pub struct RawUpstream {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    pub algorithm: Option<Sp<String>>,
    pub hash_on: Option<Sp<String>>,
    pub hash_fallback: Option<Sp<String>>,
    pub hash_on_header: Option<Sp<String>>,
    pub hash_fallback_header: Option<Sp<String>>,
    pub hash_on_cookie: Option<Sp<String>>,
    pub hash_on_cookie_path: Option<Sp<String>>,
    pub hash_on_query_arg: Option<Sp<String>>,
    pub hash_fallback_query_arg: Option<Sp<String>>,
    pub hash_on_uri_capture: Option<Sp<String>>,
    pub hash_fallback_uri_capture: Option<Sp<String>>,
    pub slots: Option<Sp<i64>>,
    pub healthchecks: Option<RawHealthchecks>,
    pub host_header: Option<Sp<String>>,
    pub use_srv_name: Option<Sp<bool>>,
    /// `client_certificate`: a `certificates` entity (by id) for upstream mTLS, used when
    /// the service has none, and by active `https` probes.
    pub client_certificate: Option<RawRef>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
    pub targets: Vec<RawTarget>,
}

/// Kong `healthchecks`.
#[derive(Clone, Debug, Default)]
pub struct RawHealthchecks {
    pub path: Path,
    pub pos: Pos,
    pub threshold: Option<Sp<f64>>,
    pub active: Option<RawActive>,
    pub passive: Option<RawPassive>,
}

/// Kong `healthchecks.active`.
#[derive(Clone, Debug, Default)]
pub struct RawActive {
    pub path: Path,
    pub pos: Pos,
    pub probe_type: Option<Sp<String>>,
    pub timeout: Option<Sp<f64>>,
    pub concurrency: Option<Sp<i64>>,
    pub http_path: Option<Sp<String>>,
    pub https_sni: Option<Sp<String>>,
    pub https_verify_certificate: Option<Sp<bool>>,
    pub headers: Option<Sp<HeaderMap>>,
    pub healthy: RawHealthy,
    pub unhealthy: RawUnhealthy,
}

/// Kong `healthchecks.passive`.
#[derive(Clone, Debug, Default)]
pub struct RawPassive {
    pub path: Path,
    pub pos: Pos,
    pub probe_type: Option<Sp<String>>,
    pub healthy: RawHealthy,
    pub unhealthy: RawUnhealthy,
}

/// `healthy` (interval only under `active`).
#[derive(Clone, Debug, Default)]
pub struct RawHealthy {
    pub interval: Option<Sp<f64>>,
    pub http_statuses: Option<Sp<Vec<Sp<i64>>>>,
    pub successes: Option<Sp<i64>>,
}

/// `unhealthy` (interval only under `active`).
#[derive(Clone, Debug, Default)]
pub struct RawUnhealthy {
    pub interval: Option<Sp<f64>>,
    pub http_statuses: Option<Sp<Vec<Sp<i64>>>>,
    pub tcp_failures: Option<Sp<i64>>,
    pub timeouts: Option<Sp<i64>>,
    pub http_failures: Option<Sp<i64>>,
}

/// Kong `targets[]`.
#[derive(Clone, Debug)]
pub struct RawTarget {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    /// Only on top-level targets.
    pub upstream: Option<RawRef>,
    pub target: Option<Sp<String>>,
    pub weight: Option<Sp<i64>>,
    /// Kong 3.12's backup-target flag.
    pub failover: Option<Sp<bool>>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
}

/// Kong `plugins[]`.
#[derive(Clone, Debug)]
pub struct RawPlugin {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    pub instance_name: Option<Sp<String>>,
    pub enabled: Option<Sp<bool>>,
    /// The plugin's `config` map, decoded per plugin by validation.
    pub config: Option<(Node, Path)>,
    pub protocols: Option<Sp<Vec<Sp<String>>>>,
    /// Scope references (top-level plugins only); nested plugins get their parent.
    pub service: Option<RawRef>,
    pub route: Option<RawRef>,
    pub consumer: Option<RawRef>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
}

/// Kong `certificates[]`: a certificate chain and its private key, PEM.
#[derive(Clone, Debug)]
pub struct RawCertificate {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    pub cert: Option<Sp<String>>,
    pub key: Option<Sp<String>>,
    pub cert_alt: Option<Sp<String>>,
    pub key_alt: Option<Sp<String>>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
    /// Nested `snis`: records `{name: ...}` as Kong's declarative format writes them, or
    /// plain names (the Admin API's `snis` sugar on `POST /certificates`).
    pub snis: Vec<RawSni>,
}

/// Kong `snis[]`: a server name (exact, `*.x.com`, `x.*`, or `*` for the default
/// certificate) mapped to a certificate.
#[derive(Clone, Debug)]
pub struct RawSni {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    /// Only on top-level SNIs (`certificate: <id>` or `{id: <id>}`); nested ones belong
    /// to their certificate.
    pub certificate: Option<RawRef>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
}

/// Kong `ca_certificates[]`: one CA certificate, PEM.
#[derive(Clone, Debug)]
pub struct RawCaCertificate {
    pub path: Path,
    pub pos: Pos,
    pub id: Option<Sp<String>>,
    pub cert: Option<Sp<String>>,
    pub tags: Option<Sp<Vec<Sp<String>>>>,
}

/// Top-level keys of the OSS declarative schema (plus decK's `_workspace`).
const TOP_LEVEL: &[&str] = &[
    "_format_version",
    "_transform",
    "_workspace",
    "services",
    "routes",
    "upstreams",
    "targets",
    "plugins",
    "consumers",
    "certificates",
    "ca_certificates",
    "snis",
    "vaults",
    "keys",
    "key_sets",
    "filter_chains",
    "workspaces",
    "parameters",
    "clustering_data_planes",
    "keyauth_credentials",
    "basicauth_credentials",
    "hmacauth_credentials",
    "jwt_secrets",
    "oauth2_credentials",
    "mtls_auth_credentials",
    "acls",
];

/// Top-level entity collections Sluice recognises but does not run.
pub(crate) const OTHER_ENTITIES: &[&str] = &[
    "consumers",
    "vaults",
    "keys",
    "key_sets",
    "filter_chains",
    "workspaces",
    "parameters",
    "clustering_data_planes",
    "keyauth_credentials",
    "basicauth_credentials",
    "hmacauth_credentials",
    "jwt_secrets",
    "oauth2_credentials",
    "mtls_auth_credentials",
    "acls",
];

const SERVICE_FIELDS: &[&str] = &[
    "id",
    "name",
    "url",
    "protocol",
    "host",
    "port",
    "path",
    "retries",
    "connect_timeout",
    "write_timeout",
    "read_timeout",
    "enabled",
    "tags",
    "client_certificate",
    "tls_verify",
    "tls_verify_depth",
    "ca_certificates",
    "created_at",
    "updated_at",
    "routes",
    "plugins",
];

const CERTIFICATE_FIELDS: &[&str] = &[
    "id",
    "cert",
    "key",
    "cert_alt",
    "key_alt",
    "tags",
    "snis",
    "created_at",
    "updated_at",
];

const SNI_FIELDS: &[&str] = &[
    "id",
    "name",
    "certificate",
    "tags",
    "created_at",
    "updated_at",
];

const CA_CERTIFICATE_FIELDS: &[&str] = &[
    "id",
    "cert",
    "cert_digest",
    "tags",
    "created_at",
    "updated_at",
];

const ROUTE_FIELDS: &[&str] = &[
    "id",
    "name",
    "service",
    "protocols",
    "methods",
    "hosts",
    "paths",
    "headers",
    "snis",
    "sources",
    "destinations",
    "strip_path",
    "preserve_host",
    "regex_priority",
    "path_handling",
    "https_redirect_status_code",
    "request_buffering",
    "response_buffering",
    "expression",
    "priority",
    "tags",
    "created_at",
    "updated_at",
    "plugins",
];

/// Route fields that only mean something to stream routes or the expressions router.
const ROUTE_UNSUPPORTED: &[&str] = &["sources", "destinations", "expression", "priority"];

const UPSTREAM_FIELDS: &[&str] = &[
    "id",
    "name",
    "algorithm",
    "hash_on",
    "hash_fallback",
    "hash_on_header",
    "hash_fallback_header",
    "hash_on_cookie",
    "hash_on_cookie_path",
    "hash_on_query_arg",
    "hash_fallback_query_arg",
    "hash_on_uri_capture",
    "hash_fallback_uri_capture",
    "slots",
    "healthchecks",
    "tags",
    "host_header",
    "client_certificate",
    "use_srv_name",
    "created_at",
    "updated_at",
    "targets",
];

const TARGET_FIELDS: &[&str] = &[
    "id",
    "upstream",
    "target",
    "weight",
    "failover",
    "tags",
    "created_at",
    "updated_at",
];

const PLUGIN_FIELDS: &[&str] = &[
    "id",
    "name",
    "instance_name",
    "enabled",
    "config",
    "protocols",
    "service",
    "route",
    "consumer",
    "ordering",
    "tags",
    "created_at",
    "updated_at",
];

/// Which parent a nested entity sits under: its foreign key must not be repeated.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Parent {
    TopLevel,
    Service,
    Route,
    Upstream,
    Certificate,
}

/// Decodes the document tree. Structural problems go to `sink`; what could be read is
/// returned so validation can go on and find more.
pub(crate) fn decode(sink: &mut Sink, tree: &Node) -> RawConfig {
    let root = Path::root();
    if tree.value == Value::Null {
        sink.error_hint(
            &root,
            tree.pos,
            "the configuration is empty",
            "expected a map with at least _format_version: \"3.0\"",
        );
        return RawConfig::default();
    }
    let Some(top) = fields(sink, tree, &root, TOP_LEVEL) else {
        return RawConfig::default();
    };
    let mut config = RawConfig {
        pos: tree.pos,
        format_version: top.str(sink, "_format_version"),
        transform: top.bool(sink, "_transform"),
        workspace: top.str(sink, "_workspace"),
        ..RawConfig::default()
    };
    if !top.has("_format_version") {
        sink.error_hint(
            &root.key("_format_version"),
            tree.pos,
            "required field missing",
            "add _format_version: \"3.0\" at the top of the file",
        );
    }
    for (node, path) in top.entities(sink, "services") {
        if let Some(service) = service(sink, node, &path) {
            config.services.push(service);
        }
    }
    for (node, path) in top.entities(sink, "routes") {
        if let Some(route) = route(sink, node, &path, Parent::TopLevel) {
            config.routes.push(route);
        }
    }
    for (node, path) in top.entities(sink, "upstreams") {
        if let Some(upstream) = upstream(sink, node, &path) {
            config.upstreams.push(upstream);
        }
    }
    for (node, path) in top.entities(sink, "targets") {
        if let Some(target) = target(sink, node, &path, Parent::TopLevel) {
            config.targets.push(target);
        }
    }
    for (node, path) in top.entities(sink, "plugins") {
        if let Some(plugin) = plugin(sink, node, &path, Parent::TopLevel) {
            config.plugins.push(plugin);
        }
    }
    for (node, path) in top.entities(sink, "certificates") {
        if let Some(certificate) = certificate(sink, node, &path) {
            config.certificates.push(certificate);
        }
    }
    for (node, path) in top.entities(sink, "ca_certificates") {
        if let Some(ca) = ca_certificate(sink, node, &path) {
            config.ca_certificates.push(ca);
        }
    }
    for (node, path) in top.entities(sink, "snis") {
        if let Some(sni) = sni(sink, node, &path, Parent::TopLevel) {
            config.snis.push(sni);
        }
    }
    for name in OTHER_ENTITIES {
        if let Some((node, path)) = top.node(name) {
            let count = decode::seq(sink, node, &path).map_or(0, <[Node]>::len);
            config.other_entities.push(Sp::new(
                (name.to_string(), count),
                top.key_pos(name).unwrap_or(node.pos),
                path,
            ));
        }
    }
    config
}

/// Reports a foreign key written on a nested child, like Kong's "value must be null".
fn forbid_parent_key(sink: &mut Sink, f: &Fields<'_>, key: &str, parent: &str) {
    if let Some((node, path)) = f.node(key) {
        sink.error_hint(
            &path,
            node.pos,
            "value must be null",
            format!("this entity is nested under its {parent}, which sets '{key}'; remove it"),
        );
    }
}

fn reference(sink: &mut Sink, f: &Fields<'_>, key: &str) -> Option<RawRef> {
    let (node, path) = f.node(key)?;
    match &node.value {
        Value::Str(s) => Some(RawRef {
            key: Sp::new(s.clone(), node.pos, path),
        }),
        Value::Map(_) => {
            let inner = fields(sink, node, &path, &["id", "name"])?;
            let key = inner.str(sink, "id").or_else(|| inner.str(sink, "name"));
            if key.is_none() {
                sink.error_hint(
                    &path,
                    node.pos,
                    "expected a reference",
                    "{id: <uuid>} or {name: <name>}",
                );
            }
            key.map(|key| RawRef { key })
        }
        _ => {
            decode::type_error(sink, node, &path, "expected a reference");
            None
        }
    }
}

/// Kong `map` of header name → array of strings.
fn header_map(sink: &mut Sink, f: &Fields<'_>, key: &str) -> Option<Sp<HeaderMap>> {
    let (node, path) = f.node(key)?;
    let Value::Map(entries) = &node.value else {
        decode::type_error(sink, node, &path, "expected a map");
        return None;
    };
    let mut headers: HeaderMap = Vec::new();
    // Header names are case-insensitive: an exact repeat is a YAML duplicate key (an
    // error, like every duplicate key); `X-A` next to `x-a` is legal YAML that Kong takes,
    // so the values are merged under the first spelling, with a warning.
    let mut first_seen: HashMap<String, (String, Pos, usize)> = HashMap::new();
    for (name, values) in entries {
        let value_path = path.key(&name.name);
        let folded = name.name.to_ascii_lowercase();
        let merge_into = match first_seen.get(&folded) {
            Some((spelling, first, _)) if *spelling == name.name => {
                sink.error_hint(
                    &value_path,
                    name.pos,
                    format!("duplicate key '{}'", name.name),
                    format!(
                        "first written at line {}:{}; keep one",
                        first.line, first.column
                    ),
                );
                continue;
            }
            Some((spelling, first, index)) => {
                sink.warning(
                    &value_path,
                    name.pos,
                    format!(
                        "header '{}' repeats '{spelling}' (header names are case-insensitive)",
                        name.name
                    ),
                    format!(
                        "its values are merged with line {}:{}; list them under one name",
                        first.line, first.column
                    ),
                );
                Some(*index)
            }
            None => None,
        };
        let list = match &values.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(n, item)| decode::string(sink, item, &value_path.index(n)))
                .collect(),
            _ => {
                decode::type_error(sink, values, &value_path, "expected an array");
                continue;
            }
        };
        match merge_into.and_then(|index| headers.get_mut(index)) {
            Some((_, existing)) => existing.extend(list),
            None => {
                first_seen.insert(folded, (name.name.clone(), name.pos, headers.len()));
                headers.push((Sp::new(name.name.clone(), name.pos, value_path), list));
            }
        }
    }
    Some(Sp::new(headers, node.pos, path))
}

fn service(sink: &mut Sink, node: &Node, path: &Path) -> Option<RawService> {
    let f = fields(sink, node, path, SERVICE_FIELDS)?;
    let mut routes = Vec::new();
    for (child, child_path) in f.entities(sink, "routes") {
        routes.extend(route(sink, child, &child_path, Parent::Service));
    }
    let mut plugins = Vec::new();
    for (child, child_path) in f.entities(sink, "plugins") {
        plugins.extend(plugin(sink, child, &child_path, Parent::Service));
    }
    Some(RawService {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        name: f.str(sink, "name"),
        url: f.str(sink, "url"),
        protocol: f.str(sink, "protocol"),
        host: f.str(sink, "host"),
        port: f.int(sink, "port"),
        service_path: f.str(sink, "path"),
        retries: f.int(sink, "retries"),
        connect_timeout: f.int(sink, "connect_timeout"),
        write_timeout: f.int(sink, "write_timeout"),
        read_timeout: f.int(sink, "read_timeout"),
        enabled: f.bool(sink, "enabled"),
        tags: f.str_list(sink, "tags"),
        client_certificate: reference(sink, &f, "client_certificate"),
        tls_verify: f.bool(sink, "tls_verify"),
        tls_verify_depth: f.int(sink, "tls_verify_depth"),
        ca_certificates: f.str_list(sink, "ca_certificates"),
        routes,
        plugins,
    })
}

fn route(sink: &mut Sink, node: &Node, path: &Path, parent: Parent) -> Option<RawRoute> {
    let f = fields(sink, node, path, ROUTE_FIELDS)?;
    let service = if parent == Parent::Service {
        forbid_parent_key(sink, &f, "service", "service");
        None
    } else {
        reference(sink, &f, "service")
    };
    let mut plugins = Vec::new();
    for (child, child_path) in f.entities(sink, "plugins") {
        plugins.extend(plugin(sink, child, &child_path, Parent::Route));
    }
    let unsupported = ROUTE_UNSUPPORTED
        .iter()
        .filter_map(|key| {
            let (value, value_path) = f.node(key)?;
            Some(Sp::new(key.to_string(), value.pos, value_path))
        })
        .collect();
    Some(RawRoute {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        name: f.str(sink, "name"),
        service,
        protocols: f.str_list(sink, "protocols"),
        methods: f.str_list(sink, "methods"),
        hosts: f.str_list(sink, "hosts"),
        paths: f.str_list(sink, "paths"),
        headers: header_map(sink, &f, "headers"),
        snis: f.str_list(sink, "snis"),
        strip_path: f.bool(sink, "strip_path"),
        preserve_host: f.bool(sink, "preserve_host"),
        regex_priority: f.int(sink, "regex_priority"),
        path_handling: f.str(sink, "path_handling"),
        https_redirect_status_code: f.int(sink, "https_redirect_status_code"),
        request_buffering: f.bool(sink, "request_buffering"),
        response_buffering: f.bool(sink, "response_buffering"),
        tags: f.str_list(sink, "tags"),
        unsupported,
        plugins,
    })
}

fn upstream(sink: &mut Sink, node: &Node, path: &Path) -> Option<RawUpstream> {
    let f = fields(sink, node, path, UPSTREAM_FIELDS)?;
    let mut targets = Vec::new();
    for (child, child_path) in f.entities(sink, "targets") {
        targets.extend(target(sink, child, &child_path, Parent::Upstream));
    }
    let healthchecks = f
        .node("healthchecks")
        .and_then(|(hc, hc_path)| healthchecks(sink, hc, &hc_path));
    Some(RawUpstream {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        name: f.str(sink, "name"),
        algorithm: f.str(sink, "algorithm"),
        hash_on: f.str(sink, "hash_on"),
        hash_fallback: f.str(sink, "hash_fallback"),
        hash_on_header: f.str(sink, "hash_on_header"),
        hash_fallback_header: f.str(sink, "hash_fallback_header"),
        hash_on_cookie: f.str(sink, "hash_on_cookie"),
        hash_on_cookie_path: f.str(sink, "hash_on_cookie_path"),
        hash_on_query_arg: f.str(sink, "hash_on_query_arg"),
        hash_fallback_query_arg: f.str(sink, "hash_fallback_query_arg"),
        hash_on_uri_capture: f.str(sink, "hash_on_uri_capture"),
        hash_fallback_uri_capture: f.str(sink, "hash_fallback_uri_capture"),
        slots: f.int(sink, "slots"),
        healthchecks,
        host_header: f.str(sink, "host_header"),
        use_srv_name: f.bool(sink, "use_srv_name"),
        client_certificate: reference(sink, &f, "client_certificate"),
        tags: f.str_list(sink, "tags"),
        targets,
    })
}

fn certificate(sink: &mut Sink, node: &Node, path: &Path) -> Option<RawCertificate> {
    let f = fields(sink, node, path, CERTIFICATE_FIELDS)?;
    Some(RawCertificate {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        cert: f.str(sink, "cert"),
        key: f.str(sink, "key"),
        cert_alt: f.str(sink, "cert_alt"),
        key_alt: f.str(sink, "key_alt"),
        tags: f.str_list(sink, "tags"),
        snis: f
            .entities(sink, "snis")
            .into_iter()
            .filter_map(|(child, child_path)| sni(sink, child, &child_path, Parent::Certificate))
            .collect(),
    })
}

fn sni(sink: &mut Sink, node: &Node, path: &Path, parent: Parent) -> Option<RawSni> {
    if let (Value::Str(name), Parent::Certificate) = (&node.value, parent) {
        return Some(RawSni {
            path: path.clone(),
            pos: node.pos,
            id: None,
            name: Some(Sp::new(name.clone(), node.pos, path.clone())),
            certificate: None,
            tags: None,
        });
    }
    let f = fields(sink, node, path, SNI_FIELDS)?;
    let certificate = if parent == Parent::Certificate {
        forbid_parent_key(sink, &f, "certificate", "certificate");
        None
    } else {
        reference(sink, &f, "certificate")
    };
    Some(RawSni {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        name: f.str(sink, "name"),
        certificate,
        tags: f.str_list(sink, "tags"),
    })
}

fn ca_certificate(sink: &mut Sink, node: &Node, path: &Path) -> Option<RawCaCertificate> {
    let f = fields(sink, node, path, CA_CERTIFICATE_FIELDS)?;
    // `cert_digest` is Kong's own hash of `cert` (written by `kong config db_export`);
    // it is accepted and recomputed by nobody: Sluice references CAs by id.
    let _ = f.str(sink, "cert_digest");
    Some(RawCaCertificate {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        cert: f.str(sink, "cert"),
        tags: f.str_list(sink, "tags"),
    })
}

fn healthchecks(sink: &mut Sink, node: &Node, path: &Path) -> Option<RawHealthchecks> {
    let f = fields(sink, node, path, &["active", "passive", "threshold"])?;
    let active = f.node("active").and_then(|(n, p)| {
        let a = fields(
            sink,
            n,
            &p,
            &[
                "type",
                "timeout",
                "concurrency",
                "http_path",
                "https_sni",
                "https_verify_certificate",
                "headers",
                "healthy",
                "unhealthy",
            ],
        )?;
        Some(RawActive {
            path: p.clone(),
            pos: n.pos,
            probe_type: a.str(sink, "type"),
            timeout: a.num(sink, "timeout"),
            concurrency: a.int(sink, "concurrency"),
            http_path: a.str(sink, "http_path"),
            https_sni: a.str(sink, "https_sni"),
            https_verify_certificate: a.bool(sink, "https_verify_certificate"),
            headers: header_map(sink, &a, "headers"),
            healthy: healthy(sink, &a, true),
            unhealthy: unhealthy(sink, &a, true),
        })
    });
    let passive = f.node("passive").and_then(|(n, p)| {
        let a = fields(sink, n, &p, &["type", "healthy", "unhealthy"])?;
        Some(RawPassive {
            path: p.clone(),
            pos: n.pos,
            probe_type: a.str(sink, "type"),
            healthy: healthy(sink, &a, false),
            unhealthy: unhealthy(sink, &a, false),
        })
    });
    Some(RawHealthchecks {
        path: path.clone(),
        pos: node.pos,
        threshold: f.num(sink, "threshold"),
        active,
        passive,
    })
}

fn healthy(sink: &mut Sink, parent: &Fields<'_>, active: bool) -> RawHealthy {
    let allowed: &[&str] = if active {
        &["interval", "http_statuses", "successes"]
    } else {
        &["http_statuses", "successes"]
    };
    let Some((node, path)) = parent.node("healthy") else {
        return RawHealthy::default();
    };
    let Some(f) = fields(sink, node, &path, allowed) else {
        return RawHealthy::default();
    };
    RawHealthy {
        interval: if active {
            f.num(sink, "interval")
        } else {
            None
        },
        http_statuses: f.int_list(sink, "http_statuses"),
        successes: f.int(sink, "successes"),
    }
}

fn unhealthy(sink: &mut Sink, parent: &Fields<'_>, active: bool) -> RawUnhealthy {
    let allowed: &[&str] = if active {
        &[
            "interval",
            "http_statuses",
            "tcp_failures",
            "timeouts",
            "http_failures",
        ]
    } else {
        &["http_statuses", "tcp_failures", "timeouts", "http_failures"]
    };
    let Some((node, path)) = parent.node("unhealthy") else {
        return RawUnhealthy::default();
    };
    let Some(f) = fields(sink, node, &path, allowed) else {
        return RawUnhealthy::default();
    };
    RawUnhealthy {
        interval: if active {
            f.num(sink, "interval")
        } else {
            None
        },
        http_statuses: f.int_list(sink, "http_statuses"),
        tcp_failures: f.int(sink, "tcp_failures"),
        timeouts: f.int(sink, "timeouts"),
        http_failures: f.int(sink, "http_failures"),
    }
}

fn target(sink: &mut Sink, node: &Node, path: &Path, parent: Parent) -> Option<RawTarget> {
    let f = fields(sink, node, path, TARGET_FIELDS)?;
    let upstream = if parent == Parent::Upstream {
        forbid_parent_key(sink, &f, "upstream", "upstream");
        None
    } else {
        let upstream = reference(sink, &f, "upstream");
        if upstream.is_none() && !f.has("upstream") {
            sink.error_hint(
                &path.key("upstream"),
                node.pos,
                "required field missing",
                "a top-level target names its upstream: upstream: <name or id>",
            );
        }
        upstream
    };
    Some(RawTarget {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        upstream,
        target: f.str(sink, "target"),
        weight: f.int(sink, "weight"),
        failover: f.bool(sink, "failover"),
        tags: f.str_list(sink, "tags"),
    })
}

fn plugin(sink: &mut Sink, node: &Node, path: &Path, parent: Parent) -> Option<RawPlugin> {
    let f = fields(sink, node, path, PLUGIN_FIELDS)?;
    let (service, route) = match parent {
        Parent::Service => {
            forbid_parent_key(sink, &f, "service", "service");
            (None, reference(sink, &f, "route"))
        }
        Parent::Route => {
            forbid_parent_key(sink, &f, "route", "route");
            (reference(sink, &f, "service"), None)
        }
        Parent::TopLevel | Parent::Upstream | Parent::Certificate => {
            (reference(sink, &f, "service"), reference(sink, &f, "route"))
        }
    };
    let config = f.node("config").and_then(|(n, p)| match n.value {
        Value::Map(_) => Some((n.clone(), p)),
        _ => {
            decode::type_error(sink, n, &p, "expected a record");
            None
        }
    });
    Some(RawPlugin {
        path: path.clone(),
        pos: node.pos,
        id: f.str(sink, "id"),
        name: f.str(sink, "name"),
        instance_name: f.str(sink, "instance_name"),
        enabled: f.bool(sink, "enabled"),
        config,
        protocols: f.str_list(sink, "protocols"),
        service,
        route,
        consumer: reference(sink, &f, "consumer"),
        tags: f.str_list(sink, "tags"),
    })
}
