//! Plugins: only `prometheus` runs in Sluice; its config, scope (global, service, route)
//! and Kong's one-instance-per-scope rule. Any other enabled plugin is an error.

use super::*;

/// The plugins Sluice runs; any other enabled plugin is an error.
const SUPPORTED_PLUGINS: &[&str] = &["prometheus"];

/// Protocols Kong's plugin schema allows in `plugins[].protocols`.
const PLUGIN_PROTOCOLS: &[&str] = &[
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

/// Kong 3.x prometheus `config` fields (`wasm_metrics` is on Kong's master only).
const PROMETHEUS_FIELDS: &[&str] = &[
    "per_consumer",
    "status_code_metrics",
    "latency_metrics",
    "bandwidth_metrics",
    "upstream_health_metrics",
    "ai_metrics",
    "wasm_metrics",
];

pub(super) fn plugins(
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
            sink.error_hint(
                &raw_plugin.path.key("name"),
                raw_plugin.pos,
                "required field missing",
                "name: prometheus",
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
        // Kong's exports list every protocol the plugin could run on (decK writes
        // [grpc, grpcs, http, https] for prometheus); only the names are checked here, since
        // a protocol Sluice does not proxy simply never reaches the plugin.
        if let Some(protocols) = &raw_plugin.protocols {
            for p in &protocols.value {
                if !PLUGIN_PROTOCOLS.contains(&p.value.as_str()) {
                    sink.error_hint(
                        &p.path,
                        p.pos,
                        format!("expected one of: {}", PLUGIN_PROTOCOLS.join(", ")),
                        format!("found '{}'", p.value),
                    );
                }
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

pub(super) fn prometheus_config(sink: &mut Sink, raw: &RawPlugin) -> PrometheusConfig {
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
