//! From Kong's entities as written ([`crate::raw`]) to the model the gateway runs
//! ([`crate::model`]): Kong's defaults, Kong's field and entity checks, reference
//! resolution, uniqueness, Sluice's tag extensions, and warnings for settings that are
//! known traps. Every problem is reported with the position of the offending value; the
//! model is only returned when there is no error.
//!
//! Decisions (mirrored in docs/kong-compatibility.md):
//! - Entities Sluice does not run (consumers, certificates, vaults, credentials, ...) are
//!   accepted with a warning; `filter_chains` are rejected because they change traffic.
//! - Any plugin other than `prometheus` is an error, because silently skipping e.g.
//!   `rate-limiting` or `key-auth` would open what the user closed. A *disabled*
//!   (`enabled: false`) unknown plugin is only a warning: it has no effect in Kong either.
//! - Protocols other than http/https (tcp, tls, udp, grpc, ws) are rejected: Sluice's
//!   data plane is HTTP/1.1 and HTTP/2 only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::topology::{
    ActiveHealthCheck, Algorithm, FailoverPolicy, HashOn, HealthChecks, PassiveHealthCheck,
    ProbeType, TargetSpec, UpstreamSpec,
};
use uuid::Uuid;

use crate::decode::{self, Sp, fields};
use crate::diagnostic::{Path, Sink};
use crate::extensions;
use crate::model::{
    Config, HeaderValueMatch, HostMatch, PathMatch, Plugin, PluginConfig, PluginScope,
    PrometheusConfig, Protocol, Route, Service,
};
use crate::raw::{
    RawConfig, RawHealthchecks, RawHealthy, RawPlugin, RawRef, RawRoute, RawService, RawTarget,
    RawUnhealthy, RawUpstream,
};

/// Kong's service/route defaults (`services.lua`, `routes.lua`).
const DEFAULT_RETRIES: i64 = 5;
const DEFAULT_TIMEOUT_MS: i64 = 60_000;
/// Kong's `typedefs.timeout` upper bound, 2^31 - 2 ms.
const MAX_TIMEOUT_MS: i64 = 2_147_483_646;
const DEFAULT_HTTPS_REDIRECT: i64 = 426;
/// Kong's DAO appends this port to a target written without one.
const DEFAULT_TARGET_PORT: u16 = 8000;
const DEFAULT_TARGET_WEIGHT: i64 = 100;
const MAX_TARGET_WEIGHT: i64 = 65_535;
/// Kong's upstream `slots` default and bounds.
const DEFAULT_SLOTS: i64 = 10_000;
const MIN_SLOTS: i64 = 10;
const MAX_SLOTS: i64 = 65_536;
/// Kong's health-check bounds: seconds for interval/timeout, counters fit in a byte.
const MAX_HEALTH_SECONDS: f64 = 65_535.0;
const MAX_HEALTH_COUNTER: i64 = 255;
const MAX_CONCURRENCY: i64 = 2_147_483_648;

/// Namespace of the deterministic ids Sluice derives for entities written without `id`
/// (UUIDv5 of this namespace and the entity's key, like Kong's declarative loader, so an
/// unchanged entity keeps its id across reloads).
fn id_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://sluice.dev/kong-declarative")
}

/// Validates the decoded file; `None` when any error was reported.
pub(crate) fn validate(sink: &mut Sink, raw: &RawConfig, source: &str) -> Option<Config> {
    let format_version = format_version(sink, raw);
    let legacy_paths = format_version != "3.0";
    top_level_notes(sink, raw);

    let mut ids = IdRegistry::default();
    let upstreams = upstreams(sink, raw, &mut ids);
    let upstream_names: HashMap<&str, usize> = upstreams
        .iter()
        .enumerate()
        .map(|(index, upstream)| (&*upstream.name, index))
        .collect();

    // Services, then routes (nested ones first, in service order, then top-level ones).
    let mut services = Vec::new();
    let mut service_keys = KeyIndex::new("services");
    for raw_service in &raw.services {
        if let Some(service) = service(sink, raw_service, &upstream_names, &upstreams, &mut ids) {
            service_keys.add(
                sink,
                &service.id,
                raw_service.name.as_ref(),
                &raw_service.path,
                services.len(),
            );
            services.push(service);
        }
    }
    let mut routes = Vec::new();
    let mut route_keys = KeyIndex::new("routes");
    for raw_service in &raw.services {
        let parent = service_keys.by_path(&raw_service.path);
        for raw_route in &raw_service.routes {
            if let Some(route) = route(sink, raw_route, parent, legacy_paths, &mut ids) {
                route_keys.insert_route(sink, &route, raw_route, routes.len());
                routes.push(route);
            }
        }
    }
    for raw_route in &raw.routes {
        let parent = raw_route
            .service
            .as_ref()
            .and_then(|reference| service_keys.resolve(sink, reference, "service"));
        if let Some(route) = route(sink, raw_route, parent, legacy_paths, &mut ids) {
            route_keys.insert_route(sink, &route, raw_route, routes.len());
            routes.push(route);
        }
    }

    let plugins = plugins(
        sink,
        raw,
        (&service_keys, &services),
        (&route_keys, &routes),
        &mut ids,
    );

    if sink.has_errors() {
        return None;
    }
    Some(Config {
        format_version,
        services,
        routes,
        upstreams,
        plugins,
        hash: source_hash(source),
        source: Arc::from(source),
    })
}

/// A stable 32-hex-digit hash of the source text (the same length as Kong's md5 config
/// hash, so dashboards that show it keep their layout).
pub fn source_hash(source: &str) -> String {
    Uuid::new_v5(&id_namespace(), source.as_bytes())
        .simple()
        .to_string()
}

fn format_version(sink: &mut Sink, raw: &RawConfig) -> String {
    const VALID: [&str; 3] = ["1.1", "2.1", "3.0"];
    match &raw.format_version {
        Some(version) if VALID.contains(&version.value.as_str()) => version.value.clone(),
        Some(version) => {
            sink.error_hint(
                &version.path,
                version.pos,
                format!("unsupported _format_version '{}'", version.value),
                "expected one of: 1.1, 2.1, 3.0",
            );
            "3.0".into()
        }
        None => "3.0".into(),
    }
}

fn top_level_notes(sink: &mut Sink, raw: &RawConfig) {
    if let Some(workspace) = &raw.workspace {
        sink.warning(
            &workspace.path,
            workspace.pos,
            format!("_workspace '{}' is ignored", workspace.value),
            "Sluice has one workspace; decK writes this key, Kong OSS does not know it",
        );
    }
    for entity in &raw.other_entities {
        let (name, count) = &entity.value;
        if *count == 0 {
            continue;
        }
        if name == "filter_chains" {
            sink.error_hint(
                &entity.path,
                entity.pos,
                "filter_chains (Wasm filters) are not supported by Sluice",
                "remove them; they would change traffic, so Sluice refuses rather than skips them",
            );
        } else {
            sink.warning(
                &entity.path,
                entity.pos,
                format!("{count} {name} entr{} not applied by Sluice", if *count == 1 { "y is" } else { "ies are" }),
                "Sluice runs services, routes, upstreams, targets and the prometheus plugin; see docs/kong-compatibility.md",
            );
        }
    }
}

// ----------------------------------------------------------------------------------------
// ids and uniqueness

/// Every id in the file, per entity type (Kong: a primary key is unique per type).
#[derive(Default)]
struct IdRegistry {
    seen: HashMap<(&'static str, String), Path>,
}

impl IdRegistry {
    /// The entity's id: the given one (which must be a UUID and unique), or a UUIDv5 of
    /// the entity type and `key`.
    fn id(
        &mut self,
        sink: &mut Sink,
        entity: &'static str,
        given: &Option<Sp<String>>,
        key: &str,
    ) -> String {
        let id = match given {
            Some(given) => match Uuid::parse_str(&given.value) {
                Ok(uuid) => {
                    let id = uuid.hyphenated().to_string();
                    if let Some(first) = self.seen.get(&(entity, id.clone())) {
                        sink.error_hint(
                            &given.path,
                            given.pos,
                            format!("uniqueness violation: '{entity}' entity with primary key set to '{id}' already declared"),
                            format!("first declared at {first}"),
                        );
                    }
                    self.seen.insert((entity, id.clone()), given.path.clone());
                    return id;
                }
                Err(_) => {
                    sink.error_hint(
                        &given.path,
                        given.pos,
                        "expected a valid UUID",
                        "e.g. 4b1e7c4e-2f4a-4f62-9a3b-0c1d2e3f4a5b, or leave id out",
                    );
                    key.to_owned()
                }
            },
            None => key.to_owned(),
        };
        Uuid::new_v5(&id_namespace(), format!("{entity}:{id}").as_bytes())
            .hyphenated()
            .to_string()
    }
}

/// Name/id → index of the entities of one type, with Kong's uniqueness check on names.
struct KeyIndex {
    entity: &'static str,
    keys: HashMap<String, usize>,
    by_path: HashMap<Path, usize>,
    names: HashMap<String, Path>,
}

impl KeyIndex {
    fn new(entity: &'static str) -> KeyIndex {
        KeyIndex {
            entity,
            keys: HashMap::new(),
            by_path: HashMap::new(),
            names: HashMap::new(),
        }
    }

    fn add(
        &mut self,
        sink: &mut Sink,
        id: &str,
        name: Option<&Sp<String>>,
        path: &Path,
        index: usize,
    ) {
        self.keys.insert(id.to_owned(), index);
        self.by_path.insert(path.clone(), index);
        if let Some(name) = name {
            if let Some(first) = self.names.get(&name.value) {
                sink.error_hint(
                    &name.path,
                    name.pos,
                    format!(
                        "uniqueness violation: '{}' entity with name set to '{}' already declared",
                        self.entity, name.value
                    ),
                    format!("first declared at {first}"),
                );
                return;
            }
            self.names.insert(name.value.clone(), path.clone());
            self.keys.entry(name.value.clone()).or_insert(index);
        }
    }

    fn insert_route(&mut self, sink: &mut Sink, route: &Route, raw: &RawRoute, index: usize) {
        self.add(sink, &route.id, raw.name.as_ref(), &raw.path, index);
    }

    fn by_path(&self, path: &Path) -> Option<usize> {
        self.by_path.get(path).copied()
    }

    /// Resolves `service: x` by name or id, reporting a dangling reference like Kong.
    fn resolve(&self, sink: &mut Sink, reference: &RawRef, field: &str) -> Option<usize> {
        let key = &reference.key;
        let normalised = Uuid::parse_str(&key.value)
            .map(|u| u.hyphenated().to_string())
            .unwrap_or_else(|_| key.value.clone());
        let found = self.keys.get(&normalised).copied();
        if found.is_none() {
            let known: Vec<&String> = self.names.keys().collect();
            let hint = closest(&key.value, &known)
                .map(|name| format!("did you mean '{name}'?"))
                .unwrap_or_else(|| format!("declare it under '{}' or fix the name", self.entity));
            sink.error_hint(
                &key.path,
                key.pos,
                format!(
                    "invalid reference '{field}: {}' (no such entry in '{}')",
                    key.value, self.entity
                ),
                hint,
            );
        }
        found
    }
}

fn closest<'a>(name: &str, candidates: &[&'a String]) -> Option<&'a String> {
    candidates
        .iter()
        .map(|c| (decode::edit_distance(name, c), *c))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, c)| c)
}

fn tags(sink: &mut Sink, raw: &Option<Sp<Vec<Sp<String>>>>) -> Vec<String> {
    let Some(list) = raw else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for tag in &list.value {
        if extensions::check_kong_tag(sink, tag) && !out.contains(&tag.value) {
            out.push(tag.value.clone());
        }
    }
    out
}

fn int_in(sink: &mut Sink, value: &Option<Sp<i64>>, min: i64, max: i64, default: i64) -> i64 {
    match value {
        Some(v) if (min..=max).contains(&v.value) => v.value,
        Some(v) => {
            sink.error(
                &v.path,
                v.pos,
                format!("value should be between {min} and {max}"),
            );
            default
        }
        None => default,
    }
}

fn num_in(sink: &mut Sink, value: &Option<Sp<f64>>, min: f64, max: f64, default: f64) -> f64 {
    match value {
        Some(v) if v.value.is_finite() && (min..=max).contains(&v.value) => v.value,
        Some(v) => {
            sink.error(
                &v.path,
                v.pos,
                format!("value should be between {min} and {max}"),
            );
            default
        }
        None => default,
    }
}

fn one_of<'a>(
    sink: &mut Sink,
    value: &'a Option<Sp<String>>,
    valid: &[&str],
    default: &'a str,
) -> &'a str {
    match value {
        Some(v) if valid.contains(&v.value.as_str()) => &v.value,
        Some(v) => {
            sink.error_hint(
                &v.path,
                v.pos,
                format!("expected one of: {}", valid.join(", ")),
                format!("found '{}'", v.value),
            );
            default
        }
        None => default,
    }
}

// ----------------------------------------------------------------------------------------
// hostnames and addresses

/// Kong's hostname rule (RFC 1123 labels; `_` tolerated as Kong's resolver does).
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_ip(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

/// Splits `host[:port]` (IPv6 in brackets); `Err` explains what is wrong.
fn split_host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in IPv6 address".to_owned())?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not a valid IPv6 address".into());
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| "expected ':' after ']'".to_owned())?,
            ),
        };
        (format!("[{inside}]"), port)
    } else if text.matches(':').count() > 1 {
        // A bare IPv6 address: Kong accepts it without a port.
        if text.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not a valid hostname or ip address".into());
        }
        (format!("[{text}]"), None)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (text.to_owned(), None),
        }
    };
    if !host.starts_with('[') && !is_hostname(&host) && !is_ip(&host) {
        return Err("not a valid hostname or ip address".into());
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("invalid port '{p}'"))?,
        ),
    };
    Ok((host, port))
}

// ----------------------------------------------------------------------------------------
// upstreams and targets

fn upstreams(sink: &mut Sink, raw: &RawConfig, ids: &mut IdRegistry) -> Vec<UpstreamSpec> {
    let mut out: Vec<UpstreamSpec> = Vec::new();
    let mut keys = KeyIndex::new("upstreams");
    let mut raw_targets: Vec<Vec<&RawTarget>> = Vec::new();
    for raw_upstream in &raw.upstreams {
        let spec = upstream(sink, raw_upstream, ids);
        keys.add(
            sink,
            &spec.id,
            raw_upstream.name.as_ref(),
            &raw_upstream.path,
            out.len(),
        );
        raw_targets.push(raw_upstream.targets.iter().collect());
        out.push(spec);
    }
    for raw_target in &raw.targets {
        if let Some(reference) = &raw_target.upstream
            && let Some(index) = keys.resolve(sink, reference, "upstream")
            && let Some(list) = raw_targets.get_mut(index)
        {
            list.push(raw_target);
        }
    }
    for (spec, (list, raw_upstream)) in out.iter_mut().zip(raw_targets.iter().zip(&raw.upstreams)) {
        spec.targets = targets(sink, spec, list, ids);
        upstream_warnings(sink, spec, raw_upstream);
    }
    out
}

fn upstream(sink: &mut Sink, raw: &RawUpstream, ids: &mut IdRegistry) -> UpstreamSpec {
    let name = match &raw.name {
        Some(name) => {
            if is_ip(&name.value) {
                sink.error(
                    &name.path,
                    name.pos,
                    format!("Invalid name ('{}'); no ip addresses allowed", name.value),
                );
            } else if name.value.contains(':') {
                sink.error(
                    &name.path,
                    name.pos,
                    format!("Invalid name ('{}'); no port allowed", name.value),
                );
            } else if !is_hostname(&name.value) {
                sink.error_hint(
                    &name.path,
                    name.pos,
                    format!("Invalid name ('{}'); must be a valid hostname", name.value),
                    "letters, digits, '-', '.'; a service reaches it with host: <this name>",
                );
            }
            name.value.clone()
        }
        None => {
            sink.entity_error(
                &raw.path.key("name"),
                raw.pos,
                "required field missing",
                Some("every upstream needs a name (a hostname)".into()),
            );
            String::new()
        }
    };
    let id = ids.id(sink, "upstreams", &raw.id, &name);
    let (algorithm, hash_on, hash_fallback) = balancing(sink, raw);
    let slots = int_in(sink, &raw.slots, MIN_SLOTS, MAX_SLOTS, DEFAULT_SLOTS);
    let host_header = raw
        .host_header
        .as_ref()
        .and_then(|h| match split_host_port(&h.value) {
            Ok(_) => Some(h.value.clone()),
            Err(problem) => {
                sink.error(
                    &h.path,
                    h.pos,
                    format!("invalid host_header '{}': {problem}", h.value),
                );
                None
            }
        });
    if let Some(pos) = raw.client_certificate {
        sink.warning(
            &raw.path.key("client_certificate"),
            pos,
            "client_certificate (upstream mTLS) is not applied by Sluice",
            "Sluice connects to targets without a client certificate; remove it or terminate mTLS elsewhere",
        );
    }
    if let Some(srv) = raw.use_srv_name.as_ref().filter(|v| v.value) {
        sink.warning(
            &srv.path,
            srv.pos,
            "use_srv_name is not applied by Sluice",
            "Sluice resolves A/AAAA records only",
        );
    }
    let healthchecks = raw
        .healthchecks
        .as_ref()
        .map(|hc| healthchecks(sink, hc))
        .unwrap_or_default();
    let tag_list = tags(sink, &raw.tags);
    let mut failover = FailoverPolicy::default();
    if let Some(raw_tags) = &raw.tags {
        extensions::apply_upstream_tags(sink, &raw_tags.value, &mut failover);
    }
    UpstreamSpec {
        id,
        name: Arc::from(name.as_str()),
        algorithm,
        hash_on,
        hash_fallback,
        slots: u32::try_from(slots).unwrap_or(10_000),
        host_header,
        healthchecks,
        failover,
        targets: Vec::new(),
        tags: tag_list,
    }
}

/// Kong's algorithm/hash rules, including the shorthand rewriting of `upstreams.lua`.
fn balancing(sink: &mut Sink, raw: &RawUpstream) -> (Algorithm, HashOn, HashOn) {
    const ALGORITHMS: &[&str] = &[
        "round-robin",
        "consistent-hashing",
        "least-connections",
        "latency",
    ];
    const HASH_ON: &[&str] = &[
        "none",
        "consumer",
        "ip",
        "header",
        "cookie",
        "path",
        "query_arg",
        "uri_capture",
    ];
    let mut algorithm = match one_of(sink, &raw.algorithm, ALGORITHMS, "round-robin") {
        "consistent-hashing" => Algorithm::ConsistentHashing,
        "least-connections" => Algorithm::LeastConnections,
        "latency" => Algorithm::Latency,
        _ => Algorithm::RoundRobin,
    };
    let hash_on_name = one_of(sink, &raw.hash_on, HASH_ON, "none");
    let hash_fallback_name = one_of(sink, &raw.hash_fallback, HASH_ON, "none");
    // Shorthand: least-connections/latency null hash_on; a written hash_on rewrites the
    // algorithm (none → round-robin, anything else → consistent-hashing).
    let hash_on_name = if matches!(algorithm, Algorithm::LeastConnections | Algorithm::Latency)
        && raw.hash_on.is_none()
    {
        "none"
    } else {
        hash_on_name
    };
    if raw.hash_on.is_some()
        && !matches!(algorithm, Algorithm::LeastConnections | Algorithm::Latency)
    {
        algorithm = if hash_on_name == "none" {
            Algorithm::RoundRobin
        } else {
            Algorithm::ConsistentHashing
        };
    }
    if algorithm == Algorithm::ConsistentHashing && raw.hash_on.is_none() {
        // consistent-hashing with hash_on left at none: Kong keeps the algorithm but every
        // request hashes the same key; say so rather than guess.
        if let Some(a) = &raw.algorithm {
            sink.warning(
                &a.path,
                a.pos,
                "consistent-hashing without hash_on hashes every request to the same target",
                "set hash_on (e.g. ip, header, cookie)",
            );
        }
    }

    let primary = hash_key(sink, raw, hash_on_name, &raw.hash_on, true);
    let fallback = hash_key(sink, raw, hash_fallback_name, &raw.hash_fallback, false);
    if let Some(fb) = &raw.hash_fallback
        && fb.value != "none"
    {
        if hash_on_name == "none" || hash_on_name == "cookie" {
            sink.error_hint(
                &fb.path,
                fb.pos,
                "failed conditional validation given value of field 'hash_on'",
                format!("hash_fallback must be none when hash_on is {hash_on_name}"),
            );
        } else if hash_on_name == fb.value && matches!(hash_on_name, "consumer" | "ip" | "path") {
            sink.error_hint(
                &fb.path,
                fb.pos,
                "values of these fields must be distinct: 'hash_on', 'hash_fallback'",
                "pick a different fallback",
            );
        }
    }
    for (a, b, names) in [
        (
            &raw.hash_on_header,
            &raw.hash_fallback_header,
            "'hash_on_header', 'hash_fallback_header'",
        ),
        (
            &raw.hash_on_query_arg,
            &raw.hash_fallback_query_arg,
            "'hash_on_query_arg', 'hash_fallback_query_arg'",
        ),
        (
            &raw.hash_on_uri_capture,
            &raw.hash_fallback_uri_capture,
            "'hash_on_uri_capture', 'hash_fallback_uri_capture'",
        ),
    ] {
        if let (Some(a), Some(b)) = (a, b)
            && a.value.eq_ignore_ascii_case(&b.value)
            && hash_on_name != "none"
            && hash_fallback_name != "none"
        {
            sink.error(
                &b.path,
                b.pos,
                format!("values of these fields must be distinct: {names}"),
            );
        }
    }
    if algorithm != Algorithm::ConsistentHashing {
        return (algorithm, HashOn::None, HashOn::None);
    }
    (algorithm, primary, fallback)
}

/// The hash key for `kind`, requiring its companion field as Kong does.
fn hash_key(
    sink: &mut Sink,
    raw: &RawUpstream,
    kind: &str,
    written: &Option<Sp<String>>,
    primary: bool,
) -> HashOn {
    let (field_name, companion) = match (kind, primary) {
        ("header", true) => ("hash_on_header", &raw.hash_on_header),
        ("header", false) => ("hash_fallback_header", &raw.hash_fallback_header),
        ("cookie", _) => ("hash_on_cookie", &raw.hash_on_cookie),
        ("query_arg", true) => ("hash_on_query_arg", &raw.hash_on_query_arg),
        ("query_arg", false) => ("hash_fallback_query_arg", &raw.hash_fallback_query_arg),
        ("uri_capture", true) => ("hash_on_uri_capture", &raw.hash_on_uri_capture),
        ("uri_capture", false) => ("hash_fallback_uri_capture", &raw.hash_fallback_uri_capture),
        ("consumer", _) => return HashOn::Consumer,
        ("ip", _) => return HashOn::Ip,
        ("path", _) => return HashOn::Path,
        _ => return HashOn::None,
    };
    let Some(value) = companion.as_ref().filter(|v| !v.value.is_empty()) else {
        let (path, pos) = written
            .as_ref()
            .map(|w| (w.path.clone(), w.pos))
            .unwrap_or_else(|| (raw.path.clone(), raw.pos));
        sink.error_hint(
            &path,
            pos,
            format!(
                "failed conditional validation given value of field '{}'",
                if primary { "hash_on" } else { "hash_fallback" }
            ),
            format!(
                "{} {kind} requires {field_name}",
                if primary { "hash_on" } else { "hash_fallback" }
            ),
        );
        return HashOn::None;
    };
    match kind {
        "header" => HashOn::Header(value.value.to_ascii_lowercase()),
        "cookie" => HashOn::Cookie {
            name: value.value.clone(),
            path: raw
                .hash_on_cookie_path
                .as_ref()
                .map_or_else(|| "/".to_owned(), |p| p.value.clone()),
        },
        "query_arg" => HashOn::QueryArg(value.value.clone()),
        _ => HashOn::UriCapture(value.value.clone()),
    }
}

fn statuses(sink: &mut Sink, raw: &Option<Sp<Vec<Sp<i64>>>>, default: Vec<u16>) -> Vec<u16> {
    let Some(list) = raw else {
        return default;
    };
    list.value
        .iter()
        .filter_map(|status| match u16::try_from(status.value) {
            Ok(code) if (100..=999).contains(&code) => Some(code),
            _ => {
                sink.error(
                    &status.path,
                    status.pos,
                    "value should be between 100 and 999",
                );
                None
            }
        })
        .collect()
}

fn counter(sink: &mut Sink, raw: &Option<Sp<i64>>) -> u8 {
    u8::try_from(int_in(sink, raw, 0, MAX_HEALTH_COUNTER, 0)).unwrap_or(0)
}

fn seconds(sink: &mut Sink, raw: &Option<Sp<f64>>, default: f64) -> Duration {
    Duration::from_secs_f64(num_in(sink, raw, 0.0, MAX_HEALTH_SECONDS, default))
}

fn healthchecks(sink: &mut Sink, raw: &RawHealthchecks) -> HealthChecks {
    let defaults = HealthChecks::default();
    let empty_healthy = RawHealthy::default();
    let empty_unhealthy = RawUnhealthy::default();
    let active = raw.active.as_ref();
    let a_healthy = active.map_or(&empty_healthy, |a| &a.healthy);
    let a_unhealthy = active.map_or(&empty_unhealthy, |a| &a.unhealthy);
    let passive = raw.passive.as_ref();
    let p_healthy = passive.map_or(&empty_healthy, |p| &p.healthy);
    let p_unhealthy = passive.map_or(&empty_unhealthy, |p| &p.unhealthy);
    const TYPES: &[&str] = &["http", "https", "tcp", "grpc", "grpcs"];
    let probe_type = match active
        .map(|a| one_of(sink, &a.probe_type, TYPES, "http"))
        .unwrap_or("http")
    {
        "https" => ProbeType::Https,
        "tcp" => ProbeType::Tcp,
        "grpc" => ProbeType::Grpc,
        "grpcs" => ProbeType::Grpcs,
        _ => ProbeType::Http,
    };
    if let Some(t) = active.and_then(|a| a.probe_type.as_ref())
        && matches!(probe_type, ProbeType::Grpc | ProbeType::Grpcs)
    {
        sink.warning(
            &t.path,
            t.pos,
            format!("active probes of type {} are not implemented", t.value),
            "Kong's health checker does not implement gRPC probes either; use type: http against an HTTP health endpoint, or tcp",
        );
    }
    if let Some(p) = passive {
        one_of(sink, &p.probe_type, TYPES, "http");
    }
    let http_path = match active.and_then(|a| a.http_path.as_ref()) {
        Some(p) if p.value.starts_with('/') => p.value.clone(),
        Some(p) => {
            sink.error_hint(
                &p.path,
                p.pos,
                "should start with: /",
                format!("e.g. /{}", p.value),
            );
            defaults.active.http_path.clone()
        }
        None => defaults.active.http_path.clone(),
    };
    let https_sni = active.and_then(|a| a.https_sni.as_ref()).and_then(|s| {
        if is_hostname(&s.value) && !is_ip(&s.value) {
            Some(s.value.clone())
        } else {
            sink.error(
                &s.path,
                s.pos,
                format!("invalid value: {} (an SNI must be a hostname)", s.value),
            );
            None
        }
    });
    let headers = active
        .and_then(|a| a.headers.as_ref())
        .map(|h| {
            h.value
                .iter()
                .map(|(name, values)| {
                    (
                        name.value.clone(),
                        values.iter().map(|v| v.value.clone()).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    HealthChecks {
        active: ActiveHealthCheck {
            probe_type,
            timeout: seconds(sink, &active.and_then(|a| a.timeout.clone()), 1.0),
            concurrency: u32::try_from(int_in(
                sink,
                &active.and_then(|a| a.concurrency.clone()),
                1,
                MAX_CONCURRENCY,
                10,
            ))
            .unwrap_or(u32::MAX),
            http_path,
            https_sni,
            https_verify_certificate: active
                .and_then(|a| a.https_verify_certificate.as_ref())
                .is_none_or(|v| v.value),
            headers,
            healthy_interval: seconds(sink, &a_healthy.interval, 0.0),
            healthy_http_statuses: statuses(
                sink,
                &a_healthy.http_statuses,
                defaults.active.healthy_http_statuses.clone(),
            ),
            healthy_successes: counter(sink, &a_healthy.successes),
            unhealthy_interval: seconds(sink, &a_unhealthy.interval, 0.0),
            unhealthy_http_statuses: statuses(
                sink,
                &a_unhealthy.http_statuses,
                defaults.active.unhealthy_http_statuses.clone(),
            ),
            unhealthy_tcp_failures: counter(sink, &a_unhealthy.tcp_failures),
            unhealthy_timeouts: counter(sink, &a_unhealthy.timeouts),
            unhealthy_http_failures: counter(sink, &a_unhealthy.http_failures),
        },
        passive: PassiveHealthCheck {
            healthy_http_statuses: statuses(
                sink,
                &p_healthy.http_statuses,
                defaults.passive.healthy_http_statuses.clone(),
            ),
            healthy_successes: counter(sink, &p_healthy.successes),
            unhealthy_http_statuses: statuses(
                sink,
                &p_unhealthy.http_statuses,
                defaults.passive.unhealthy_http_statuses.clone(),
            ),
            unhealthy_tcp_failures: counter(sink, &p_unhealthy.tcp_failures),
            unhealthy_timeouts: counter(sink, &p_unhealthy.timeouts),
            unhealthy_http_failures: counter(sink, &p_unhealthy.http_failures),
        },
        threshold: num_in(sink, &raw.threshold, 0.0, 100.0, 0.0),
    }
}

fn targets(
    sink: &mut Sink,
    upstream: &UpstreamSpec,
    raw: &[&RawTarget],
    ids: &mut IdRegistry,
) -> Vec<TargetSpec> {
    struct Pending {
        spec: TargetSpec,
        explicit_tier: Option<u8>,
        failover: bool,
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut seen: HashMap<String, Path> = HashMap::new();
    for raw_target in raw {
        let Some(written) = &raw_target.target else {
            sink.entity_error(
                &raw_target.path.key("target"),
                raw_target.pos,
                "required field missing",
                Some("target: <host>:<port>".into()),
            );
            continue;
        };
        let (host, port) = match split_host_port(&written.value) {
            Ok((host, port)) => (host, port.unwrap_or(DEFAULT_TARGET_PORT)),
            Err(problem) => {
                sink.error_hint(
                    &written.path,
                    written.pos,
                    format!("Invalid target ('{}'); {problem}", written.value),
                    "expected <hostname or ip>[:port], e.g. 10.0.0.1:8080 or [::1]:8080",
                );
                continue;
            }
        };
        let normalised = format!("{host}:{port}");
        if let Some(first) = seen.get(&normalised) {
            sink.error_hint(
                &written.path,
                written.pos,
                format!(
                    "uniqueness violation: 'targets' entity with primary key set to '{}:{normalised}' already declared",
                    upstream.name
                ),
                format!("the same target is already declared at {first}; merge them (weights do not add up)"),
            );
            continue;
        }
        seen.insert(normalised.clone(), written.path.clone());
        let weight = int_in(
            sink,
            &raw_target.weight,
            0,
            MAX_TARGET_WEIGHT,
            DEFAULT_TARGET_WEIGHT,
        );
        let mut region: Option<String> = None;
        let mut explicit_tier = None;
        if let Some(list) = &raw_target.tags {
            for tag in &list.value {
                if let Some(name) = tag.value.strip_prefix("region:") {
                    if name.is_empty() {
                        sink.error_hint(
                            &tag.path,
                            tag.pos,
                            "empty region name",
                            "write region:<name>, e.g. region:eu-west",
                        );
                    } else if let Some(previous) = &region {
                        sink.error_hint(
                            &tag.path,
                            tag.pos,
                            format!("second region tag (already region:{previous})"),
                            "a target is in one region",
                        );
                    } else {
                        region = Some(name.to_owned());
                    }
                } else if let Some(tier) = tag.value.strip_prefix("tier:") {
                    match tier.parse::<u8>() {
                        Ok(tier) => explicit_tier = Some(tier),
                        Err(_) => sink.error_hint(
                            &tag.path,
                            tag.pos,
                            format!("invalid tier '{tier}'"),
                            "expected tier:<0..255>, 0 = most preferred",
                        ),
                    }
                } else if tag.value.starts_with("sluice:") {
                    sink.error_hint(
                        &tag.path,
                        tag.pos,
                        "sluice: settings belong on the upstream, not on a target",
                        "targets take region:<name> and tier:<n> tags",
                    );
                }
            }
        }
        let tag_list = tags(sink, &raw_target.tags);
        let id = ids.id(
            sink,
            "targets",
            &raw_target.id,
            &format!("{}:{normalised}", upstream.id),
        );
        pending.push(Pending {
            spec: TargetSpec {
                id,
                target: normalised,
                host,
                port,
                weight: u32::try_from(weight).unwrap_or(0),
                region: Arc::from(region.as_deref().unwrap_or("default")),
                tier: 0,
                tags: tag_list,
            },
            explicit_tier,
            failover: raw_target.failover.as_ref().is_some_and(|f| f.value),
        });
    }
    // Tiers: an explicit tier tag wins; otherwise regular targets get the order in which
    // their region first appears (first region = tier 0), and `failover: true` targets go
    // after every regular tier.
    let mut region_order: Vec<Arc<str>> = Vec::new();
    for p in pending.iter().filter(|p| !p.failover) {
        if !region_order.contains(&p.spec.region) {
            region_order.push(p.spec.region.clone());
        }
    }
    for p in pending.iter_mut().filter(|p| !p.failover) {
        let by_region = region_order
            .iter()
            .position(|r| *r == p.spec.region)
            .unwrap_or(0);
        p.spec.tier = p
            .explicit_tier
            .unwrap_or(u8::try_from(by_region).unwrap_or(u8::MAX));
    }
    let last_regular = pending
        .iter()
        .filter(|p| !p.failover)
        .map(|p| p.spec.tier)
        .max();
    let backup_tier = last_regular.map_or(0, |t| t.saturating_add(1));
    for p in pending.iter_mut().filter(|p| p.failover) {
        p.spec.tier = p.explicit_tier.unwrap_or(backup_tier);
    }
    pending.into_iter().map(|p| p.spec).collect()
}

/// Known traps in an upstream's settings, each named with its fix.
fn upstream_warnings(sink: &mut Sink, spec: &UpstreamSpec, raw: &RawUpstream) {
    let hc = &spec.healthchecks;
    let active = hc.active.clone();
    let passive = hc.passive.clone();
    let hc_path = raw
        .healthchecks
        .as_ref()
        .map_or_else(|| raw.path.key("healthchecks"), |h| h.path.clone());
    let hc_pos = raw.healthchecks.as_ref().map_or(raw.pos, |h| h.pos);
    let raw_active = raw.healthchecks.as_ref().and_then(|h| h.active.as_ref());
    let any_unhealthy = active.unhealthy_tcp_failures > 0
        || active.unhealthy_timeouts > 0
        || active.unhealthy_http_failures > 0
        || passive.unhealthy_tcp_failures > 0
        || passive.unhealthy_timeouts > 0
        || passive.unhealthy_http_failures > 0;
    let probing = !active.healthy_interval.is_zero() || !active.unhealthy_interval.is_zero();
    if probing && any_unhealthy && active.healthy_successes == 0 {
        let (path, pos) = raw_active
            .and_then(|a| a.healthy.successes.as_ref())
            .map(|s| (s.path.clone(), s.pos))
            .or_else(|| raw_active.map(|a| (a.path.clone(), a.pos)))
            .unwrap_or((hc_path.clone(), hc_pos));
        sink.warning(
            &path,
            pos,
            "healthchecks.active.healthy.successes is 0: a target marked unhealthy never recovers",
            "set active.healthy.successes (e.g. 2) and active.unhealthy.interval so probes can bring it back",
        );
    }
    let passive_marks_down = passive.unhealthy_tcp_failures > 0
        || passive.unhealthy_timeouts > 0
        || passive.unhealthy_http_failures > 0;
    if passive_marks_down && active.unhealthy_interval.is_zero() {
        let passive_path = raw
            .healthchecks
            .as_ref()
            .and_then(|h| h.passive.as_ref())
            .map_or((hc_path.clone(), hc_pos), |p| (p.path.clone(), p.pos));
        sink.warning(
            &passive_path.0,
            passive_path.1,
            "passive health checks without active probing of unhealthy targets: a target marked unhealthy gets no traffic, so it never recovers",
            "add active.unhealthy.interval (e.g. 1) and active.healthy.successes (e.g. 2), or an operator must re-enable it through the Admin API",
        );
    }
    if probing
        && !active.unhealthy_interval.is_zero()
        && active.unhealthy_tcp_failures == 0
        && active.unhealthy_timeouts == 0
        && active.unhealthy_http_failures == 0
        && let Some(a) = raw_active
    {
        sink.warning(
            &a.path,
            a.pos,
            "active probes run but every active.unhealthy threshold is 0: probes never mark a target unhealthy",
            "set active.unhealthy.http_failures, tcp_failures and timeouts (e.g. 2, 1, 2)",
        );
    }
    if let Some(threshold) = raw.healthchecks.as_ref().and_then(|h| h.threshold.as_ref())
        && threshold.value == 100.0
    {
        sink.warning(
            &threshold.path,
            threshold.pos,
            "healthchecks.threshold 100 marks the upstream unhealthy even when every target is up (Kong compares with a strict >)",
            "use a value below 100, e.g. 50",
        );
    }
    if !spec.targets.is_empty() && spec.targets.iter().all(|t| t.weight == 0) {
        sink.warning(
            &raw.path.key("targets"),
            raw.pos,
            "every target has weight 0: the upstream has no capacity and every request gets 503",
            "give at least one target a weight above 0 (default 100)",
        );
    }
    if spec.algorithm == Algorithm::ConsistentHashing
        && let Some(backup) = spec
            .targets
            .iter()
            .zip(raw.targets.iter())
            .find(|(_, r)| r.failover.as_ref().is_some_and(|f| f.value))
        && let Some(flag) = &backup.1.failover
    {
        sink.warning(
            &flag.path,
            flag.pos,
            "Kong ignores failover targets under consistent-hashing; Sluice uses them as its last tier",
            "expect different behaviour from Kong here, or use round-robin/least-connections/latency",
        );
    }
}

// ----------------------------------------------------------------------------------------
// services

fn protocol(sink: &mut Sink, value: &Sp<String>, allowed_by_kong: &[&str]) -> Option<Protocol> {
    let protocol = match value.value.as_str() {
        "http" => Protocol::Http,
        "https" => Protocol::Https,
        "grpc" => Protocol::Grpc,
        "grpcs" => Protocol::Grpcs,
        "tcp" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        "tls_passthrough" => Protocol::TlsPassthrough,
        "udp" => Protocol::Udp,
        "ws" => Protocol::Ws,
        "wss" => Protocol::Wss,
        _ => {
            sink.error_hint(
                &value.path,
                value.pos,
                format!("expected one of: {}", allowed_by_kong.join(", ")),
                format!("found '{}'", value.value),
            );
            return None;
        }
    };
    if !matches!(protocol, Protocol::Http | Protocol::Https) {
        sink.error_hint(
            &value.path,
            value.pos,
            format!("protocol '{}' is not supported by Sluice", value.value),
            "Sluice proxies HTTP/1.1 and HTTP/2: use http or https",
        );
        return None;
    }
    Some(protocol)
}

struct ParsedUrl {
    protocol: Sp<String>,
    host: String,
    port: Option<u16>,
    path: Option<String>,
}

fn parse_url(sink: &mut Sink, url: &Sp<String>) -> Option<ParsedUrl> {
    let Some((scheme, rest)) = url.value.split_once("://") else {
        sink.error_hint(
            &url.path,
            url.pos,
            "missing scheme in url",
            "e.g. http://products.internal:8080/v1",
        );
        return None;
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => (
            rest.get(..index).unwrap_or(rest),
            rest.get(index..).map(str::to_owned),
        ),
        None => (rest, None),
    };
    if authority.is_empty() {
        sink.error(&url.path, url.pos, "missing host in url");
        return None;
    }
    match split_host_port(authority) {
        Ok((host, port)) => Some(ParsedUrl {
            protocol: Sp::new(scheme.to_owned(), url.pos, url.path.clone()),
            host,
            port,
            path: path.filter(|p| p != "/" || rest.ends_with('/')),
        }),
        Err(problem) => {
            sink.error(
                &url.path,
                url.pos,
                format!("invalid url host '{authority}': {problem}"),
            );
            None
        }
    }
}

fn service(
    sink: &mut Sink,
    raw: &RawService,
    upstream_names: &HashMap<&str, usize>,
    upstreams: &[UpstreamSpec],
    ids: &mut IdRegistry,
) -> Option<Service> {
    const PROTOCOLS: &[&str] = &[
        "grpc",
        "grpcs",
        "http",
        "https",
        "tcp",
        "tls",
        "tls_passthrough",
        "udp",
        "ws",
        "wss",
    ];
    let parsed = raw.url.as_ref().and_then(|url| parse_url(sink, url));
    let protocol_value = parsed
        .as_ref()
        .map(|p| p.protocol.clone())
        .or_else(|| raw.protocol.clone());
    let protocol = match &protocol_value {
        Some(p) => protocol(sink, p, PROTOCOLS).unwrap_or(Protocol::Http),
        None => Protocol::Http,
    };
    // A bad host is reported but the service is still built, so that its name and id
    // take part in uniqueness and reference checks (the config is rejected anyway).
    let host = match (&parsed, &raw.host) {
        (Some(p), _) => p.host.clone(),
        (None, Some(host)) => match split_host_port(&host.value) {
            Ok((h, None)) => h,
            Ok((_, Some(_))) => {
                sink.error_hint(
                    &host.path,
                    host.pos,
                    "must not have a port",
                    "put the port in 'port'",
                );
                host.value.clone()
            }
            Err(problem) => {
                sink.error(
                    &host.path,
                    host.pos,
                    format!("invalid value: {} ({problem})", host.value),
                );
                host.value.clone()
            }
        },
        (None, None) => {
            if raw.url.is_none() {
                sink.entity_error(
                    &raw.path.key("host"),
                    raw.pos,
                    "required field missing",
                    Some("set host (a hostname, an ip, or an upstream's name) or url".into()),
                );
            }
            String::new()
        }
    };
    let default_port: u16 = if protocol == Protocol::Https { 443 } else { 80 };
    let port = match parsed.as_ref().and_then(|p| p.port) {
        Some(port) => port,
        None => u16::try_from(int_in(sink, &raw.port, 0, 65_535, i64::from(default_port)))
            .unwrap_or(default_port),
    };
    let path = match parsed.as_ref().map(|p| p.path.clone()) {
        Some(path) => path,
        None => raw.service_path.as_ref().and_then(|p| {
            if !p.value.starts_with('/') {
                sink.error_hint(
                    &p.path,
                    p.pos,
                    "should start with: /",
                    format!("e.g. /{}", p.value),
                );
                None
            } else if p.value.contains("//") {
                sink.error(&p.path, p.pos, "must not have empty segments");
                None
            } else {
                Some(p.value.clone())
            }
        }),
    };
    for setting in &raw.tls_settings {
        sink.warning(
            &setting.path,
            setting.pos,
            format!("{} is not applied by Sluice", setting.value),
            "Sluice connects to https upstreams with the system trust store and no client certificate",
        );
    }
    let name = raw.name.as_ref().map(|n| n.value.clone());
    if let Some(n) = &raw.name {
        check_name(sink, n);
    }
    let key = name.clone().unwrap_or_else(|| raw.path.to_string());
    let upstream = upstream_names.get(host.as_str()).copied();
    if let Some(index) = upstream
        && upstreams.get(index).is_some_and(|u| u.targets.is_empty())
    {
        sink.warning(
            &raw.path,
            raw.pos,
            format!(
                "service host '{host}' names an upstream with no targets: every request gets 503"
            ),
            "add targets to the upstream",
        );
    }
    Some(Service {
        id: ids.id(sink, "services", &raw.id, &key),
        name,
        protocol,
        host,
        port,
        path,
        retries: u32::try_from(int_in(sink, &raw.retries, 0, 32_767, DEFAULT_RETRIES)).unwrap_or(5),
        connect_timeout: timeout(sink, &raw.connect_timeout),
        write_timeout: timeout(sink, &raw.write_timeout),
        read_timeout: timeout(sink, &raw.read_timeout),
        enabled: raw.enabled.as_ref().is_none_or(|e| e.value),
        tags: tags(sink, &raw.tags),
        upstream,
    })
}

fn timeout(sink: &mut Sink, raw: &Option<Sp<i64>>) -> Duration {
    let ms = int_in(sink, raw, 1, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);
    Duration::from_millis(u64::try_from(ms).unwrap_or(60_000))
}

/// Kong's `typedefs.utf8_name`: letters, digits, `.`, `-`, `_`, `~` (and non-ASCII).
fn check_name(sink: &mut Sink, name: &Sp<String>) {
    let valid = !name.value.is_empty()
        && name.value.chars().all(|c| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~')
        });
    if !valid {
        sink.error(
            &name.path,
            name.pos,
            format!(
                "invalid value '{}': it must only contain alphanumeric and '., -, _, ~' characters",
                name.value
            ),
        );
    }
}

// ----------------------------------------------------------------------------------------
// routes

fn route(
    sink: &mut Sink,
    raw: &RawRoute,
    service: Option<usize>,
    legacy_paths: bool,
    ids: &mut IdRegistry,
) -> Option<Route> {
    const PROTOCOLS: &[&str] = &[
        "grpc",
        "grpcs",
        "http",
        "https",
        "tcp",
        "tls",
        "tls_passthrough",
        "udp",
        "ws",
        "wss",
    ];
    if let Some(n) = &raw.name {
        check_name(sink, n);
    }
    for field in &raw.unsupported {
        sink.error_hint(
            &field.path,
            field.pos,
            format!("'{}' is not supported by Sluice", field.value),
            "sources/destinations belong to stream routes and expression/priority to the expressions router; Sluice implements the traditional_compatible HTTP router",
        );
    }
    let protocols: Vec<Protocol> = match &raw.protocols {
        Some(list) => list
            .value
            .iter()
            .filter_map(|p| protocol(sink, p, PROTOCOLS))
            .collect(),
        None => vec![Protocol::Http, Protocol::Https],
    };
    let methods: Vec<String> = raw
        .methods
        .as_ref()
        .map(|list| {
            list.value
                .iter()
                .filter_map(|m| {
                    if !m.value.is_empty() && m.value.chars().all(|c| c.is_ascii_uppercase()) {
                        Some(m.value.clone())
                    } else {
                        sink.error_hint(
                            &m.path,
                            m.pos,
                            format!("invalid value: {}", m.value),
                            format!(
                                "methods are upper-case, e.g. {}",
                                m.value.to_ascii_uppercase()
                            ),
                        );
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let hosts: Vec<HostMatch> = raw
        .hosts
        .as_ref()
        .map(|list| {
            list.value
                .iter()
                .filter_map(|h| host_match(sink, h))
                .collect()
        })
        .unwrap_or_default();
    let paths: Vec<PathMatch> = raw
        .paths
        .as_ref()
        .map(|list| {
            list.value
                .iter()
                .filter_map(|p| path_match(sink, p, legacy_paths))
                .collect()
        })
        .unwrap_or_default();
    let headers = raw
        .headers
        .as_ref()
        .map(|h| {
            h.value
                .iter()
                .filter_map(|(name, values)| header_match(sink, name, values))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(snis) = raw.snis.as_ref().filter(|s| !s.value.is_empty()) {
        sink.warning(
            &snis.path,
            snis.pos,
            "snis is not applied by Sluice",
            "Sluice does not terminate TLS; route by hosts instead",
        );
    }
    let set = |o: &Option<Sp<Vec<Sp<String>>>>| o.as_ref().is_some_and(|l| !l.value.is_empty());
    let has_headers = raw.headers.as_ref().is_some_and(|h| !h.value.is_empty());
    let any_matcher = set(&raw.methods) || set(&raw.hosts) || set(&raw.paths) || has_headers;
    let https_only = !protocols.is_empty() && protocols.iter().all(|p| *p == Protocol::Https);
    if !(any_matcher || (https_only && set(&raw.snis))) {
        sink.entity_error(
            &raw.path,
            raw.pos,
            "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'",
            Some("e.g. paths: [/products]".into()),
        );
    }
    let path_handling = one_of(sink, &raw.path_handling, &["v0", "v1"], "v0").to_owned();
    let redirect = match &raw.https_redirect_status_code {
        Some(code) if [426, 301, 302, 307, 308].contains(&code.value) => code.value,
        Some(code) => {
            sink.error(
                &code.path,
                code.pos,
                "expected one of: 426, 301, 302, 307, 308",
            );
            DEFAULT_HTTPS_REDIRECT
        }
        None => DEFAULT_HTTPS_REDIRECT,
    };
    let extensions = raw
        .tags
        .as_ref()
        .map(|t| extensions::route_extensions(sink, &t.value))
        .unwrap_or_default();
    let key = raw
        .name
        .as_ref()
        .map_or_else(|| raw.path.to_string(), |n| n.value.clone());
    let route = Route {
        id: ids.id(sink, "routes", &raw.id, &key),
        name: raw.name.as_ref().map(|n| n.value.clone()),
        service,
        protocols,
        methods,
        hosts,
        paths,
        headers,
        strip_path: raw.strip_path.as_ref().is_none_or(|v| v.value),
        preserve_host: raw.preserve_host.as_ref().is_some_and(|v| v.value),
        regex_priority: raw.regex_priority.as_ref().map_or(0, |v| v.value),
        path_handling,
        https_redirect_status_code: u16::try_from(redirect).unwrap_or(426),
        tags: tags(sink, &raw.tags),
        extensions,
    };
    // A route with errors is still returned so references to it resolve (and do not
    // cause follow-on "no such route" noise); the config is rejected anyway.
    Some(route)
}

fn host_match(sink: &mut Sink, host: &Sp<String>) -> Option<HostMatch> {
    let value = host.value.to_ascii_lowercase();
    let stars = value.matches('*').count();
    let bad = |sink: &mut Sink, why: &str| {
        sink.error_hint(
            &host.path,
            host.pos,
            format!("invalid hostname: {} ({why})", host.value),
            "exact, or one wildcard as the leftmost or rightmost label: *.example.com, example.*",
        );
        None
    };
    let plain_ok = |h: &str| split_host_port(h).is_ok();
    match stars {
        0 if plain_ok(&value) => Some(HostMatch::Exact(value)),
        0 => bad(sink, "not a valid hostname or ip address"),
        1 if value.starts_with("*.") => {
            let rest = value.get(1..).unwrap_or_default().to_owned();
            if plain_ok(rest.trim_start_matches('.')) {
                Some(HostMatch::WildcardPrefix(rest))
            } else {
                bad(sink, "not a valid hostname after the wildcard")
            }
        }
        1 if value.ends_with(".*") => {
            let rest = value.get(..value.len() - 1).unwrap_or_default().to_owned();
            if is_hostname(rest.trim_end_matches('.')) {
                Some(HostMatch::WildcardSuffix(rest))
            } else {
                bad(sink, "not a valid hostname before the wildcard")
            }
        }
        1 => bad(
            sink,
            "the wildcard must be a whole leftmost or rightmost label",
        ),
        _ => bad(sink, "only one wildcard is allowed"),
    }
}

/// Kong 1.x/2.x files wrote regex paths without `~`; on load Kong's migration treats a path
/// with any character outside the unreserved set, `/` and `%` as a regex.
fn looks_like_regex(path: &str) -> bool {
    path.chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '/' | '%' | '-')))
}

fn path_match(sink: &mut Sink, path: &Sp<String>, legacy: bool) -> Option<PathMatch> {
    let regex_source = if let Some(regex) = path.value.strip_prefix('~') {
        Some(regex.to_owned())
    } else if legacy && looks_like_regex(&path.value) {
        Some(path.value.clone())
    } else {
        None
    };
    if let Some(source) = regex_source {
        return match regex::Regex::new(&source) {
            Ok(_) => Some(PathMatch::Regex(source)),
            Err(err) => {
                let detail = err.to_string();
                let reason = detail
                    .lines()
                    .last()
                    .unwrap_or("does not compile")
                    .trim()
                    .trim_start_matches("error: ");
                sink.error_hint(
                    &path.path,
                    path.pos,
                    format!("invalid regex '{source}': {reason}"),
                    "Sluice uses Rust's regex syntax, a subset of PCRE without look-around and backreferences",
                );
                None
            }
        };
    }
    if !path.value.starts_with('/') {
        sink.error_hint(
            &path.path,
            path.pos,
            "should start with: / (fixed path) or ~/ (regex path)",
            format!("e.g. /{}", path.value),
        );
        return None;
    }
    // RFC 3986 path characters: unreserved, sub-delims, ':', '@', '/', and %XX escapes.
    let bytes = path.value.as_bytes();
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if b == b'%' {
            let escape = bytes.get(index + 1..index + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                sink.error(
                    &path.path,
                    path.pos,
                    format!("invalid url-encoded value in '{}'", path.value),
                );
                return None;
            }
            index += 3;
            continue;
        }
        if !ok {
            sink.error_hint(
                &path.path,
                path.pos,
                format!("invalid path: '{}' (characters outside of the reserved list of RFC 3986 found)", path.value),
                "prefix a regex path with ~, e.g. ~/items/\\d+$",
            );
            return None;
        }
        index += 1;
    }
    Some(PathMatch::Prefix(path.value.clone()))
}

fn header_match(
    sink: &mut Sink,
    name: &Sp<String>,
    values: &[Sp<String>],
) -> Option<(String, Vec<HeaderValueMatch>)> {
    let lower = name.value.to_ascii_lowercase();
    if lower == "host" {
        sink.error_hint(
            &name.path,
            name.pos,
            "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
            "move it to hosts: [...]",
        );
        return None;
    }
    let valid_name = !lower.is_empty()
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name {
        sink.error(
            &name.path,
            name.pos,
            format!("invalid header name '{}'", name.value),
        );
        return None;
    }
    if values.is_empty() {
        sink.error_hint(
            &name.path,
            name.pos,
            "length must be at least 1",
            "list at least one accepted value",
        );
        return None;
    }
    let mut matches = Vec::new();
    for value in values {
        if let Some(regex) = value.value.strip_prefix("~*") {
            match regex::Regex::new(regex) {
                Ok(_) => matches.push(HeaderValueMatch::Regex(regex.to_owned())),
                Err(err) => {
                    let detail = err.to_string();
                    let reason = detail
                        .lines()
                        .last()
                        .unwrap_or("does not compile")
                        .trim()
                        .trim_start_matches("error: ");
                    sink.error_hint(&value.path, value.pos, format!("invalid regex '{regex}': {reason}"), "Sluice uses Rust's regex syntax, a subset of PCRE without look-around and backreferences");
                }
            }
        } else {
            matches.push(HeaderValueMatch::Exact(value.value.clone()));
        }
    }
    Some((lower, matches))
}

// ----------------------------------------------------------------------------------------
// plugins

const SUPPORTED_PLUGINS: &[&str] = &["prometheus"];

const PROMETHEUS_FIELDS: &[&str] = &[
    "per_consumer",
    "status_code_metrics",
    "latency_metrics",
    "bandwidth_metrics",
    "upstream_health_metrics",
    "ai_metrics",
    "wasm_metrics",
];

fn plugins(
    sink: &mut Sink,
    raw: &RawConfig,
    (services, service_list): (&KeyIndex, &[Service]),
    (routes, route_list): (&KeyIndex, &[Route]),
    ids: &mut IdRegistry,
) -> Vec<Plugin> {
    // (plugin, scope implied by nesting)
    let mut all: Vec<(&RawPlugin, Option<usize>, Option<usize>)> = Vec::new();
    for plugin in &raw.plugins {
        all.push((plugin, None, None));
    }
    for raw_service in &raw.services {
        let service = services.by_path(&raw_service.path);
        for plugin in &raw_service.plugins {
            all.push((plugin, service, None));
        }
        for raw_route in &raw_service.routes {
            let route = routes.by_path(&raw_route.path);
            for plugin in &raw_route.plugins {
                all.push((plugin, None, route));
            }
        }
    }
    for raw_route in &raw.routes {
        let route = routes.by_path(&raw_route.path);
        for plugin in &raw_route.plugins {
            all.push((plugin, None, route));
        }
    }
    all.sort_by_key(|(p, _, _)| p.pos);

    let mut out: Vec<Plugin> = Vec::new();
    let mut scopes: BTreeMap<(String, String), Path> = BTreeMap::new();
    for (raw_plugin, nested_service, nested_route) in all {
        let Some(name) = &raw_plugin.name else {
            sink.entity_error(
                &raw_plugin.path.key("name"),
                raw_plugin.pos,
                "required field missing",
                Some("name: prometheus".into()),
            );
            continue;
        };
        let enabled = raw_plugin.enabled.as_ref().is_none_or(|e| e.value);
        if !SUPPORTED_PLUGINS.contains(&name.value.as_str()) {
            let message = format!(
                "plugin '{}' is not supported by Sluice; supported: {}",
                name.value,
                SUPPORTED_PLUGINS.join(", ")
            );
            if enabled {
                sink.error_hint(
                    &name.path,
                    name.pos,
                    message,
                    "remove it, or set enabled: false to keep it in the file for Kong",
                );
            } else {
                sink.warning(
                    &name.path,
                    name.pos,
                    message,
                    "it is disabled, so ignoring it changes nothing",
                );
            }
            continue;
        }
        let service = match (&raw_plugin.service, nested_service) {
            (Some(reference), _) => services.resolve(sink, reference, "service"),
            (None, nested) => nested,
        };
        let route = match (&raw_plugin.route, nested_route) {
            (Some(reference), _) => routes.resolve(sink, reference, "route"),
            (None, nested) => nested,
        };
        if let Some(consumer) = &raw_plugin.consumer {
            sink.error_hint(
                &consumer.key.path,
                consumer.key.pos,
                format!("plugin '{}' cannot be scoped to a consumer", name.value),
                "Kong's prometheus plugin is not consumer-scoped either; remove 'consumer'",
            );
            continue;
        }
        let scope = match (service, route) {
            (_, Some(route)) => PluginScope::Route(route),
            (Some(service), None) => PluginScope::Service(service),
            (None, None) => PluginScope::Global,
        };
        // Kong's plugin cache key is name + route + service + consumer; keyed by the
        // parent's id (not its position) so a derived plugin id survives reordering.
        let scope_key = match &scope {
            PluginScope::Global => "global".to_owned(),
            PluginScope::Service(s) => format!(
                "service:{}",
                service_list.get(*s).map_or("", |svc| svc.id.as_str())
            ),
            PluginScope::Route(r) => format!(
                "route:{}",
                route_list.get(*r).map_or("", |route| route.id.as_str())
            ),
        };
        if let Some(first) = scopes.get(&(name.value.clone(), scope_key.clone())) {
            sink.error_hint(
                &name.path,
                name.pos,
                format!("uniqueness violation: 'plugins' entity with name set to '{}' already declared for this scope", name.value),
                format!("first declared at {first}"),
            );
            continue;
        }
        scopes.insert(
            (name.value.clone(), scope_key.clone()),
            raw_plugin.path.clone(),
        );
        let config = prometheus_config(sink, raw_plugin);
        if let Some(protocols) = &raw_plugin.protocols {
            for p in &protocols.value {
                protocol(sink, p, &["grpc", "grpcs", "http", "https"]);
            }
        }
        out.push(Plugin {
            id: ids.id(
                sink,
                "plugins",
                &raw_plugin.id,
                &format!("{}:{scope_key}", name.value),
            ),
            name: name.value.clone(),
            enabled,
            scope,
            config: PluginConfig::Prometheus(config),
            tags: tags(sink, &raw_plugin.tags),
        });
    }
    out
}

fn prometheus_config(sink: &mut Sink, raw: &RawPlugin) -> PrometheusConfig {
    let Some((node, path)) = &raw.config else {
        return PrometheusConfig::default();
    };
    let Some(f) = fields(sink, node, path, PROMETHEUS_FIELDS) else {
        return PrometheusConfig::default();
    };
    let flag = |sink: &mut Sink, key: &str| f.bool(sink, key).is_some_and(|v| v.value);
    if let Some(wasm) = f.bool(sink, "wasm_metrics").filter(|v| v.value) {
        sink.warning(
            &wasm.path,
            wasm.pos,
            "wasm_metrics is not applied by Sluice",
            "Sluice runs no Wasm filters",
        );
    }
    PrometheusConfig {
        per_consumer: flag(sink, "per_consumer"),
        status_code_metrics: flag(sink, "status_code_metrics"),
        latency_metrics: flag(sink, "latency_metrics"),
        bandwidth_metrics: flag(sink, "bandwidth_metrics"),
        upstream_health_metrics: flag(sink, "upstream_health_metrics"),
        ai_metrics: flag(sink, "ai_metrics"),
    }
}
