//! Kong 3.x entity rendering: services, routes, upstreams, targets, plugins,
//! certificates, SNIs and CA certificates as Kong's Admin API prints them.
//!
//! Tools written against Kong (decK, Terraform, dashboards, scripts) read these objects,
//! so every field Kong prints is present, with Kong's defaults and Kong's `null`s, in
//! Kong's units: durations of health checks in seconds, service timeouts in
//! milliseconds, entity timestamps in whole seconds except targets, whose timestamps
//! are seconds with a millisecond fraction (Kong stores them in ms precision).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use sluice_config::Config;
use sluice_config::model::{
    CaCertificate, Certificate, HeaderValueMatch, HostMatch, PathMatch, Plugin, PluginConfig,
    PluginScope, Protocol, Route, Service, Sni,
};
use sluice_core::time::Duration;
use sluice_core::topology::{Algorithm, HashOn, HealthChecks, ProbeType, TargetSpec, UpstreamSpec};

/// Entity timestamps, derived once per response from the config's load time.
#[derive(Copy, Clone, Debug)]
pub struct Stamps {
    /// Whole seconds since the epoch (services, routes, upstreams, plugins).
    pub seconds: u64,
    /// Seconds with a millisecond fraction (targets).
    pub seconds_ms: f64,
}

impl Stamps {
    pub fn at(time: SystemTime) -> Self {
        // A clock before 1970 is a broken host; render 0 rather than fail a read-only API.
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Stamps {
            seconds: since_epoch.as_secs(),
            seconds_ms: since_epoch.as_millis() as f64 / 1000.0,
        }
    }
}

/// Kong prints an unset set-of-strings as `null`, not `[]`.
fn tags(tags: &[String]) -> Value {
    if tags.is_empty() {
        Value::Null
    } else {
        json!(tags)
    }
}

fn opt_list<T: serde::Serialize>(items: &[T]) -> Value {
    if items.is_empty() {
        Value::Null
    } else {
        json!(items)
    }
}

pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http => "http",
        Protocol::Https => "https",
        Protocol::Grpc => "grpc",
        Protocol::Grpcs => "grpcs",
        Protocol::Tcp => "tcp",
        Protocol::Tls => "tls",
        Protocol::TlsPassthrough => "tls_passthrough",
        Protocol::Udp => "udp",
        Protocol::Ws => "ws",
        Protocol::Wss => "wss",
    }
}

pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RoundRobin => "round-robin",
        Algorithm::LeastConnections => "least-connections",
        Algorithm::ConsistentHashing => "consistent-hashing",
        Algorithm::Latency => "latency",
    }
}

fn probe_type_name(probe: ProbeType) -> &'static str {
    match probe {
        ProbeType::Http => "http",
        ProbeType::Https => "https",
        ProbeType::Tcp => "tcp",
        ProbeType::Grpc => "grpc",
        ProbeType::Grpcs => "grpcs",
    }
}

/// Kong's health-check intervals and timeouts are numbers of seconds (fractions allowed);
/// print whole values as integers, as Kong does (`interval: 5`, not `5.0`).
fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

/// Kong's `threshold` is a Lua number: whole values print without a fraction.
fn number(value: f64) -> Value {
    // Whole values below 2^53 convert to i64 exactly; larger ones stay floats.
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn millis(d: std::time::Duration) -> Value {
    json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn service(config: &Config, service: &Service, stamps: Stamps) -> Value {
    let client_certificate = service
        .tls
        .client_certificate
        .and_then(|i| config.certificates.get(i))
        .map(|c| json!({ "id": c.id }));
    // Kong stores null for an empty list.
    let ca_certificates: Option<Vec<&str>> = (!service.tls.ca_certificates.is_empty()).then(|| {
        service
            .tls
            .ca_certificates
            .iter()
            .filter_map(|&i| config.ca_certificates.get(i))
            .map(|ca| ca.id.as_str())
            .collect()
    });
    json!({
        "id": service.id,
        "created_at": stamps.seconds,
        "updated_at": stamps.seconds,
        "name": service.name,
        "protocol": protocol_name(service.protocol),
        "host": service.host,
        "port": service.port,
        "path": service.path,
        "retries": service.retries,
        "connect_timeout": millis(service.connect_timeout),
        "write_timeout": millis(service.write_timeout),
        "read_timeout": millis(service.read_timeout),
        "tags": tags(&service.tags),
        "client_certificate": client_certificate,
        "tls_verify": service.tls.verify,
        "tls_verify_depth": service.tls.verify_depth,
        "ca_certificates": ca_certificates,
        "enabled": service.enabled,
    })
}

fn host_text(host: &HostMatch) -> String {
    match host {
        HostMatch::Exact(h) => h.clone(),
        HostMatch::WildcardPrefix(rest) => format!("*{rest}"),
        HostMatch::WildcardSuffix(rest) => format!("{rest}*"),
    }
}

fn path_text(path: &PathMatch) -> String {
    match path {
        PathMatch::Prefix(p) => p.clone(),
        PathMatch::Regex(r) => format!("~{r}"),
    }
}

fn header_value_text(value: &HeaderValueMatch) -> String {
    match value {
        HeaderValueMatch::Exact(v) => v.clone(),
        HeaderValueMatch::Regex(r) => format!("~*{r}"),
    }
}

pub fn route(config: &Config, route: &Route, stamps: Stamps) -> Value {
    let service = route
        .service
        .and_then(|index| config.services.get(index))
        .map_or(Value::Null, |s| json!({"id": s.id}));
    let headers = if route.headers.is_empty() {
        Value::Null
    } else {
        let map: Map<String, Value> = route
            .headers
            .iter()
            .map(|(name, values)| {
                let values: Vec<String> = values.iter().map(header_value_text).collect();
                (name.clone(), json!(values))
            })
            .collect();
        Value::Object(map)
    };
    let protocols: Vec<&str> = route.protocols.iter().copied().map(protocol_name).collect();
    let hosts: Vec<String> = route.hosts.iter().map(host_text).collect();
    let paths: Vec<String> = route.paths.iter().map(path_text).collect();
    let snis: Vec<String> = route.snis.iter().map(|n| n.as_kong()).collect();
    json!({
        "id": route.id,
        "created_at": stamps.seconds,
        "updated_at": stamps.seconds,
        "name": route.name,
        "protocols": protocols,
        "methods": opt_list(&route.methods),
        "hosts": opt_list(&hosts),
        "paths": opt_list(&paths),
        "headers": headers,
        "https_redirect_status_code": route.https_redirect_status_code,
        "regex_priority": route.regex_priority,
        "strip_path": route.strip_path,
        "path_handling": route.path_handling,
        "preserve_host": route.preserve_host,
        "request_buffering": true,
        "response_buffering": true,
        "snis": opt_list(&snis),
        "sources": null,
        "destinations": null,
        "tags": tags(&route.tags),
        "service": service,
    })
}

/// Kong's `hash_on` family: the enum name plus the one side field its variant needs.
struct HashFields {
    kind: &'static str,
    header: Option<String>,
    cookie: Option<String>,
    cookie_path: Option<String>,
    query_arg: Option<String>,
    uri_capture: Option<String>,
}

fn hash_fields(hash: &HashOn) -> HashFields {
    let mut fields = HashFields {
        kind: "none",
        header: None,
        cookie: None,
        cookie_path: None,
        query_arg: None,
        uri_capture: None,
    };
    fields.kind = match hash {
        HashOn::None => "none",
        HashOn::Consumer => "consumer",
        HashOn::Ip => "ip",
        HashOn::Path => "path",
        HashOn::Header(h) => {
            fields.header = Some(h.clone());
            "header"
        }
        HashOn::Cookie { name, path } => {
            fields.cookie = Some(name.clone());
            fields.cookie_path = Some(path.clone());
            "cookie"
        }
        HashOn::QueryArg(q) => {
            fields.query_arg = Some(q.clone());
            "query_arg"
        }
        HashOn::UriCapture(u) => {
            fields.uri_capture = Some(u.clone());
            "uri_capture"
        }
    };
    fields
}

pub fn healthchecks(checks: &HealthChecks) -> Value {
    let active = &checks.active;
    let passive = &checks.passive;
    let headers = if active.headers.is_empty() {
        Value::Null
    } else {
        let map: Map<String, Value> = active
            .headers
            .iter()
            .map(|(name, values)| (name.clone(), json!(values)))
            .collect();
        Value::Object(map)
    };
    json!({
        "threshold": number(checks.threshold),
        "active": {
            "type": probe_type_name(active.probe_type),
            "timeout": seconds(active.timeout),
            "concurrency": active.concurrency,
            "http_path": active.http_path,
            "https_sni": active.https_sni,
            "https_verify_certificate": active.https_verify_certificate,
            "headers": headers,
            "healthy": {
                "interval": seconds(active.healthy_interval),
                "http_statuses": active.healthy_http_statuses,
                "successes": active.healthy_successes,
            },
            "unhealthy": {
                "interval": seconds(active.unhealthy_interval),
                "http_statuses": active.unhealthy_http_statuses,
                "tcp_failures": active.unhealthy_tcp_failures,
                "timeouts": active.unhealthy_timeouts,
                "http_failures": active.unhealthy_http_failures,
            },
        },
        "passive": {
            "type": "http",
            "healthy": {
                "http_statuses": passive.healthy_http_statuses,
                "successes": passive.healthy_successes,
            },
            "unhealthy": {
                "http_statuses": passive.unhealthy_http_statuses,
                "tcp_failures": passive.unhealthy_tcp_failures,
                "timeouts": passive.unhealthy_timeouts,
                "http_failures": passive.unhealthy_http_failures,
            },
        },
    })
}

pub fn upstream(config: &Config, upstream: &UpstreamSpec, stamps: Stamps) -> Value {
    let client_certificate = config
        .upstreams
        .iter()
        .position(|u| u.id == upstream.id)
        .and_then(|index| {
            config
                .upstream_client_certificates
                .get(index)
                .copied()
                .flatten()
        })
        .and_then(|i| config.certificates.get(i))
        .map(|c| json!({ "id": c.id }));
    let on = hash_fields(&upstream.hash_on);
    let fallback = hash_fields(&upstream.hash_fallback);
    json!({
        "id": upstream.id,
        "created_at": stamps.seconds,
        "updated_at": stamps.seconds,
        "name": upstream.name.as_ref(),
        "algorithm": algorithm_name(upstream.algorithm),
        "hash_on": on.kind,
        "hash_fallback": fallback.kind,
        "hash_on_header": on.header,
        "hash_fallback_header": fallback.header,
        // Kong has one cookie pair for both roles; whichever role uses a cookie sets it.
        "hash_on_cookie": on.cookie.or(fallback.cookie),
        "hash_on_cookie_path": on.cookie_path.or(fallback.cookie_path).unwrap_or_else(|| "/".into()),
        "hash_on_query_arg": on.query_arg,
        "hash_fallback_query_arg": fallback.query_arg,
        "hash_on_uri_capture": on.uri_capture,
        "hash_fallback_uri_capture": fallback.uri_capture,
        "slots": upstream.slots,
        "healthchecks": healthchecks(&upstream.healthchecks),
        "tags": tags(&upstream.tags),
        "host_header": upstream.host_header,
        "client_certificate": client_certificate,
        "use_srv_name": false,
    })
}

pub fn target(upstream: &UpstreamSpec, target: &TargetSpec, stamps: Stamps) -> Value {
    json!({
        "id": target.id,
        "created_at": stamps.seconds_ms,
        "updated_at": stamps.seconds_ms,
        "upstream": {"id": upstream.id},
        "target": target.target,
        "weight": target.weight,
        "tags": tags(&target.tags),
    })
}

/// Protocols a plugin runs on when the config does not narrow them (Kong's default for
/// the prometheus plugin's schema).
const PLUGIN_DEFAULT_PROTOCOLS: [&str; 4] = ["grpc", "grpcs", "http", "https"];

pub fn plugin(config: &Config, plugin: &Plugin, stamps: Stamps) -> Value {
    let (service, route) = match plugin.scope {
        PluginScope::Global => (Value::Null, Value::Null),
        PluginScope::Service(index) => (
            config
                .services
                .get(index)
                .map_or(Value::Null, |s| json!({"id": s.id})),
            Value::Null,
        ),
        PluginScope::Route(index) => (
            Value::Null,
            config
                .routes
                .get(index)
                .map_or(Value::Null, |r| json!({"id": r.id})),
        ),
    };
    let plugin_config = match &plugin.config {
        PluginConfig::Prometheus(p) => json!({
            "per_consumer": p.per_consumer,
            "status_code_metrics": p.status_code_metrics,
            "latency_metrics": p.latency_metrics,
            "bandwidth_metrics": p.bandwidth_metrics,
            "upstream_health_metrics": p.upstream_health_metrics,
            "ai_metrics": p.ai_metrics,
        }),
    };
    json!({
        "id": plugin.id,
        "created_at": stamps.seconds,
        "updated_at": stamps.seconds,
        "name": plugin.name,
        "instance_name": null,
        "route": route,
        "service": service,
        "consumer": null,
        "config": plugin_config,
        "protocols": PLUGIN_DEFAULT_PROTOCOLS,
        "enabled": plugin.enabled,
        "tags": tags(&plugin.tags),
        "ordering": null,
    })
}

/// A certificate as Kong's `select_with_name_list` prints it: the entity plus `snis`,
/// the names of the SNIs that point at it, sorted (Kong sorts them), `[]` when none.
///
/// `key` and `key_alt` are served, as Kong serves them: `GET /config` already returns
/// the same text to the same caller, and decK's dump needs them to round-trip. The
/// Admin API is loopback-only unless a token is set (docs/kong-compatibility.md §10).
pub fn certificate(config: &Config, index: usize, cert: &Certificate, stamps: Stamps) -> Value {
    let mut snis: Vec<String> = config
        .snis
        .iter()
        .filter(|s| s.certificate == index)
        .map(|s| s.name.as_kong())
        .collect();
    snis.sort_unstable();
    let (cert_alt, key_alt) = match &cert.pem.alt {
        Some((cert_alt, key_alt)) => (json!(cert_alt.as_ref()), json!(key_alt.expose())),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": cert.id,
        "created_at": stamps.seconds,
        "updated_at": stamps.seconds,
        "cert": cert.pem.cert.as_ref(),
        "key": cert.pem.key.expose(),
        "cert_alt": cert_alt,
        "key_alt": key_alt,
        "tags": tags(&cert.tags),
        "snis": snis,
    })
}

/// An SNI: its name in Kong's form (`*.example.com`, `*`) and `certificate: {id}`.
pub fn sni(config: &Config, sni: &Sni, stamps: Stamps) -> Value {
    let certificate = config
        .certificates
        .get(sni.certificate)
        .map_or(Value::Null, |c| json!({"id": c.id}));
    json!({
        "id": sni.id,
        "created_at": stamps.seconds,
        "updated_at": stamps.seconds,
        "name": sni.name.as_kong(),
        "tags": tags(&sni.tags),
        "certificate": certificate,
    })
}

/// A CA certificate with Kong's `cert_digest` (SHA-256 of the DER, hex).
pub fn ca_certificate(ca: &CaCertificate, stamps: Stamps) -> Value {
    json!({
        "id": ca.id,
        "created_at": stamps.seconds,
        "updated_at": stamps.seconds,
        "cert": ca.pem.as_ref(),
        "cert_digest": ca.digest,
        "tags": tags(&ca.tags),
    })
}

/// Kong's `POST /config` success body: every entity, grouped by type and keyed by id.
pub fn flattened_entities(config: &Config, stamps: Stamps) -> Value {
    let by_id = |items: Vec<(String, Value)>| Value::Object(items.into_iter().collect());
    let services = config
        .services
        .iter()
        .map(|s| (s.id.clone(), service(config, s, stamps)))
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|r| (r.id.clone(), route(config, r, stamps)))
        .collect();
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| (u.id.clone(), upstream(config, u, stamps)))
        .collect();
    let targets = config
        .upstreams
        .iter()
        .flat_map(|u| {
            u.targets
                .iter()
                .map(move |t| (t.id.clone(), target(u, t, stamps)))
        })
        .collect();
    let plugins = config
        .plugins
        .iter()
        .map(|p| (p.id.clone(), plugin(config, p, stamps)))
        .collect();
    let certificates = config
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), certificate(config, i, c, stamps)))
        .collect();
    let snis = config
        .snis
        .iter()
        .map(|s| (s.id.clone(), sni(config, s, stamps)))
        .collect();
    let ca_certificates = config
        .ca_certificates
        .iter()
        .map(|ca| (ca.id.clone(), ca_certificate(ca, stamps)))
        .collect();
    json!({
        "services": by_id(services),
        "routes": by_id(routes),
        "upstreams": by_id(upstreams),
        "targets": by_id(targets),
        "plugins": by_id(plugins),
        "certificates": by_id(certificates),
        "snis": by_id(snis),
        "ca_certificates": by_id(ca_certificates),
    })
}
