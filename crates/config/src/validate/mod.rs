//! From Kong's entities as written ([`crate::raw`]) to the model the gateway runs
//! ([`crate::model`]): Kong's defaults, Kong's field and entity checks, reference
//! resolution, uniqueness, Sluice's tag extensions, and warnings for settings that are
//! known traps. Every problem is reported with the position of the offending value; the
//! model is only returned when there is no error.
//!
//! Decisions (mirrored in docs/kong-compatibility.md):
//! - `certificates` and `ca_certificates` are checked (PEM, X.509, key match, CA
//!   constraint); certificates are served by the TLS listener when `snis` name them and
//!   used for TLS to upstreams when referenced; unreferenced ones warn. `snis` and route
//!   `snis` are Kong's `wildcard_host` names.
//! - Entities Sluice does not run (consumers, vaults, credentials, ...) are
//!   accepted with a warning; `filter_chains` are rejected because they change traffic.
//! - Any plugin other than `prometheus` is an error, because silently skipping e.g.
//!   `rate-limiting` or `key-auth` would open what the user closed. A *disabled*
//!   (`enabled: false`) unknown plugin is only a warning: it has no effect in Kong either.
//! - Protocols other than http, https, grpc and grpcs (tcp, tls, udp, ws) are rejected:
//!   Sluice's data plane is HTTP/1.1 and HTTP/2 only. gRPC services may not have a
//!   `path`, and routes that serve only gRPC do not strip theirs (Kong's entity checks).
//!
//! Submodules hold the checks of each entity; this module holds the orchestration, Kong's
//! defaults, id derivation, reference resolution and the small typed checks they share.

mod address;
mod certificate;
mod plugin;
mod route;
mod service;
mod upstream;

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
    PrometheusConfig, Protocol, Route, Service, ServiceTls, SniName,
};
use address::*;
use certificate::*;
use plugin::*;
use route::*;
use service::*;
use upstream::*;

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
    let (certificates, ca_certificates, mut tls_refs) = tls_entities(sink, raw, &mut ids);
    let snis = snis(sink, raw, &mut ids, &mut tls_refs);
    let upstreams = upstreams(sink, raw, &mut ids);
    // Aligned with `upstreams` (one spec per raw upstream).
    let upstream_client_certificates: Vec<Option<usize>> = raw
        .upstreams
        .iter()
        .map(|u| {
            u.client_certificate
                .as_ref()
                .and_then(|reference| tls_refs.certificate(sink, reference))
        })
        .collect();
    let upstream_names: HashMap<&str, usize> = upstreams
        .iter()
        .enumerate()
        .map(|(index, upstream)| (&*upstream.name, index))
        .collect();

    // Services, then routes (nested ones first, in service order, then top-level ones).
    let mut services = Vec::new();
    let mut service_keys = KeyIndex::new("services");
    for raw_service in &raw.services {
        if let Some(service) = service(
            sink,
            raw_service,
            (&upstream_names, &upstreams),
            &mut tls_refs,
            &mut ids,
        ) {
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

    tls_refs.warn_unused(sink);

    if sink.has_errors() {
        return None;
    }
    Some(Config {
        format_version,
        services,
        routes,
        upstreams,
        plugins,
        certificates,
        snis,
        ca_certificates,
        upstream_client_certificates,
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
                format!(
                    "{count} {} not applied by Sluice",
                    if *count == 1 { "entry is" } else { "entries are" }
                ),
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

/// Suggestions are skipped beyond this many candidates: each costs an edit distance, and a
/// hostile file with thousands of dangling references must not make validation quadratic.
const MAX_SUGGESTION_CANDIDATES: usize = 1_000;

fn closest<'a>(name: &str, candidates: &[&'a String]) -> Option<&'a String> {
    if candidates.len() > MAX_SUGGESTION_CANDIDATES {
        return None;
    }
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
