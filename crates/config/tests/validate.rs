//! Fixture-driven tests for `sluice_config::parse`.
//!
//! - `tests/data/ok/*.yaml` must validate (and a few get specific assertions below);
//! - `tests/data/err/*.yaml` must fail, and the rendered diagnostics must equal the
//!   sibling `*.expected` file. `UPDATE_EXPECT=1 cargo test -p sluice-config` rewrites
//!   the `.expected` files (review the diff before committing);
//! - every file in the repository's `examples/` must validate.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_config::model::{HeaderValueMatch, HostMatch, PathMatch, PluginScope, Protocol};
use sluice_config::{Config, Loaded, Severity, parse};
use sluice_core::topology::{Algorithm, HashOn};

fn data_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(kind)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Result<Loaded, sluice_config::Diagnostics> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    parse(&text, name)
}

fn ok(name: &str) -> Config {
    match load(&data_dir("ok").join(name)) {
        Ok(loaded) => loaded.config,
        Err(diagnostics) => panic!("{name} must validate:\n{diagnostics}"),
    }
}

#[test]
fn every_ok_fixture_validates() {
    let files = yaml_files(&data_dir("ok"));
    assert!(files.len() >= 5, "fixtures missing: {files:?}");
    for file in files {
        if let Err(diagnostics) = load(&file) {
            panic!("{} must validate:\n{diagnostics}", file.display());
        }
    }
}

#[test]
fn every_err_fixture_matches_its_expected_diagnostics() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let files = yaml_files(&data_dir("err"));
    assert!(files.len() >= 12, "fixtures missing: {files:?}");
    let mut mismatches = Vec::new();
    for file in files {
        let rendered = match load(&file) {
            Ok(_) => panic!("{} must be rejected", file.display()),
            Err(diagnostics) => {
                assert!(
                    diagnostics.error_count() > 0,
                    "{}: no error",
                    file.display()
                );
                for d in &diagnostics.items {
                    assert!(
                        d.line > 0 && d.column > 0,
                        "{}: diagnostic without position: {d}",
                        file.display()
                    );
                }
                format!("{diagnostics}\n")
            }
        };
        let expected_path = file.with_extension("expected");
        if update {
            fs::write(&expected_path, &rendered).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{rendered}",
                file.display()
            )),
            Err(_) => mismatches.push(format!(
                "{}: no .expected file (run with UPDATE_EXPECT=1); got:\n{rendered}",
                file.display()
            )),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let files = yaml_files(&dir);
    assert!(!files.is_empty(), "no examples found in {}", dir.display());
    for file in files {
        match load(&file) {
            Ok(loaded) => assert!(
                loaded.warnings.is_empty(),
                "{} should be warning-free: {:?}",
                file.display(),
                loaded.warnings
            ),
            Err(diagnostics) => panic!("{} must validate:\n{diagnostics}", file.display()),
        }
    }
}

#[test]
fn kong_defaults_apply_and_a_target_without_port_gets_8000() {
    let config = ok("defaults.yaml");
    let service = &config.services[0];
    assert_eq!(service.retries, 5);
    assert_eq!(service.connect_timeout, Duration::from_millis(60_000));
    assert_eq!(service.read_timeout, Duration::from_millis(60_000));
    assert_eq!(service.write_timeout, Duration::from_millis(60_000));
    assert_eq!(service.protocol, Protocol::Http);
    assert_eq!(service.port, 80);
    assert_eq!(
        service.upstream,
        Some(0),
        "host naming an upstream links it"
    );
    let route = &config.routes[0];
    assert_eq!(route.protocols, vec![Protocol::Http, Protocol::Https]);
    assert!(route.strip_path);
    assert!(!route.preserve_host);
    assert_eq!(route.regex_priority, 0);
    assert_eq!(route.path_handling, "v0");
    assert_eq!(route.https_redirect_status_code, 426);
    assert_eq!(route.service, Some(0));
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.algorithm, Algorithm::RoundRobin);
    assert_eq!(upstream.slots, 10_000);
    assert_eq!(upstream.healthchecks, Default::default());
    let target = &upstream.targets[0];
    assert_eq!(
        (target.host.as_str(), target.port),
        ("backend.internal", 8000)
    );
    assert_eq!(target.target, "backend.internal:8000");
    assert_eq!(target.weight, 100);
    assert_eq!(&*target.region, "default");
    assert_eq!(target.tier, 0);
}

#[test]
fn real_world_file_resolves_references_tiers_and_extensions() {
    let config = ok("real-world.yaml");
    let names: Vec<_> = config
        .services
        .iter()
        .map(|s| s.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["productAPI", "orderAPI", "klantAPI"]);

    // url shorthand
    let product = &config.services[0];
    assert_eq!(product.host, "products.upstream");
    assert_eq!(product.path.as_deref(), Some("/api/v2"));
    assert_eq!(product.port, 80);
    assert_eq!(product.connect_timeout, Duration::from_millis(2000));
    assert_eq!(config.services[1].protocol, Protocol::Https);

    // routes: nested first, then top-level, each linked to its service
    let route_services: Vec<_> = config.routes.iter().map(|r| r.service).collect();
    assert_eq!(route_services, [Some(0), Some(1), Some(2)]);
    let products = &config.routes[0];
    assert_eq!(
        products.paths,
        [
            PathMatch::Prefix("/products".into()),
            PathMatch::Regex("/products/\\d+/reviews$".into())
        ]
    );
    assert_eq!(
        products.hosts,
        [
            HostMatch::Exact("shop.example.com".into()),
            HostMatch::WildcardPrefix(".shop.example.com".into())
        ]
    );
    assert_eq!(
        products.extensions.hedge_after,
        Some(Duration::from_millis(50))
    );
    assert_eq!(products.extensions.retry_on_status, [502, 503, 504]);
    assert_eq!(
        config.routes[2].hosts,
        [HostMatch::WildcardSuffix("api.example.".into())]
    );
    assert_eq!(
        config.routes[1].headers,
        [(
            "x-api-version".to_owned(),
            vec![
                HeaderValueMatch::Exact("2".into()),
                HeaderValueMatch::Regex("^3\\.[0-9]+$".into())
            ]
        )]
    );

    // tiers: region order, then failover: true after every regular tier
    let products_up = &config.upstreams[0];
    let tiers: Vec<_> = products_up
        .targets
        .iter()
        .map(|t| (&*t.region, t.tier))
        .collect();
    assert_eq!(
        tiers,
        [
            ("primary", 0),
            ("primary", 0),
            ("primary", 0),
            ("secondary", 1),
            ("secondary", 1),
            ("default", 2)
        ]
    );
    assert_eq!(products_up.algorithm, Algorithm::LeastConnections);
    assert_eq!(
        products_up.failover.failback_hold_down,
        Duration::from_secs(15)
    );
    assert!((products_up.failover.panic_threshold - 0.3).abs() < 1e-9);
    assert_eq!(products_up.failover.outlier.consecutive_failures, 3);
    assert_eq!(products_up.healthchecks.active.healthy_successes, 2);
    assert_eq!(
        products_up.healthchecks.active.unhealthy_interval,
        Duration::from_secs(1)
    );
    assert_eq!(products_up.healthchecks.threshold, 25.0);

    // hash_on shorthand: round-robin + hash_on header → consistent-hashing
    let orders_up = &config.upstreams[1];
    assert_eq!(orders_up.algorithm, Algorithm::ConsistentHashing);
    assert_eq!(orders_up.hash_on, HashOn::Header("x-customer-id".into()));
    assert_eq!(orders_up.hash_fallback, HashOn::Ip);
    let ports: Vec<_> = orders_up.targets.iter().map(|t| t.port).collect();
    assert_eq!(
        ports,
        [9000, 9000, 8000],
        "top-level targets attach, default port 8000"
    );

    // explicit tier tags win over region order
    let klanten_tiers: Vec<_> = config.upstreams[2].targets.iter().map(|t| t.tier).collect();
    assert_eq!(klanten_tiers, [0, 2]);
    assert_eq!(config.upstreams[2].targets[0].host, "[::1]");

    // prometheus at three scopes
    let scopes: Vec<_> = config.plugins.iter().map(|p| p.scope.clone()).collect();
    assert!(scopes.contains(&PluginScope::Global));
    assert!(scopes.contains(&PluginScope::Service(0)));
    assert!(scopes.contains(&PluginScope::Route(2)));
}

#[test]
fn legacy_formats_migrate_regex_looking_paths() {
    let config = ok("format-1.1.yaml");
    assert_eq!(config.format_version, "1.1");
    assert_eq!(
        config.routes[0].paths,
        [
            PathMatch::Prefix("/items".into()),
            PathMatch::Regex("/items/\\d+$".into())
        ]
    );
    let config = ok("format-2.1.yaml");
    assert_eq!(
        config.routes[0].paths,
        [
            PathMatch::Regex("/users/(?<id>[0-9]+)".into()),
            PathMatch::Prefix("/plain-path".into())
        ]
    );
    assert_eq!(config.services[0].port, 443, "https url implies 443");
}

#[test]
fn json_text_is_accepted_like_kong_post_config() {
    let config = ok("json.yaml");
    assert_eq!(config.upstreams[0].targets[1].weight, 50);
}

#[test]
fn ids_are_deterministic_and_the_hash_follows_the_text() {
    let text = fs::read_to_string(data_dir("ok").join("real-world.yaml")).unwrap_or_default();
    let a = parse(&text, "a").map(|l| l.config);
    let b = parse(&text, "b").map(|l| l.config);
    let (Ok(a), Ok(b)) = (a, b) else {
        panic!("real-world.yaml must validate");
    };
    let ids = |c: &Config| {
        c.services
            .iter()
            .map(|s| s.id.clone())
            .chain(c.routes.iter().map(|r| r.id.clone()))
            .chain(
                c.upstreams
                    .iter()
                    .flat_map(|u| u.targets.iter().map(|t| t.id.clone())),
            )
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.hash.len(), 32);
    let changed = parse(&format!("{text}\n# edited\n"), "c").map(|l| l.config.hash);
    assert!(
        matches!(changed, Ok(h) if h != a.hash),
        "hash must change with the text"
    );
    let unique: std::collections::HashSet<_> = ids(&a).into_iter().collect();
    assert_eq!(unique.len(), ids(&a).len(), "ids are unique");
}

#[test]
fn all_errors_are_reported_not_only_the_first() {
    let Err(diagnostics) = load(&data_dir("err").join("several-errors.yaml")) else {
        panic!("several-errors.yaml must be rejected");
    };
    assert!(diagnostics.error_count() >= 10, "{diagnostics}");
    let lines: std::collections::BTreeSet<u32> = diagnostics.errors().map(|d| d.line).collect();
    assert!(
        lines.len() >= 8,
        "errors on many distinct lines: {diagnostics}"
    );
}

#[test]
fn kong_error_body_nests_errors_like_kong() {
    let Err(diagnostics) = load(&data_dir("err").join("wrong-type.yaml")) else {
        panic!("wrong-type.yaml must be rejected");
    };
    let body = diagnostics.to_kong_error();
    assert_eq!(body["code"], 14);
    assert_eq!(body["name"], "invalid declarative configuration");
    assert_eq!(
        body["fields"]["upstreams"][0]["targets"][0]["weight"],
        "expected an integer"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("declarative config is invalid: {upstreams=")),
        "{body}"
    );
    let flat = diagnostics.to_kong_flattened();
    let entries = flat["flattened_errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let target = entries.iter().find(|e| e["entity_type"] == "target");
    let Some(target) = target else {
        panic!("a target entry: {flat}");
    };
    assert_eq!(target["entity"]["target"], "10.0.0.1:8080");
    let upstream = entries.iter().find(|e| e["entity_type"] == "upstream");
    let Some(upstream) = upstream else {
        panic!("an upstream entry for its slots error: {flat}");
    };
    assert_eq!(upstream["entity_name"], "api.upstream");
    assert!(
        upstream["entity"].get("targets").is_none(),
        "nested targets are flattened separately"
    );
    assert_eq!(target["errors"][0]["field"], "weight");
}

#[test]
fn warnings_name_the_setting_and_the_fix_without_rejecting() {
    let text = "_format_version: \"3.0\"\nupstreams:\n  - name: u\n    healthchecks:\n      active:\n        healthy: {interval: 5}\n        unhealthy: {interval: 5, http_failures: 3}\n    targets: [{target: 10.0.0.1:80}]\n";
    let loaded = match parse(text, "kong.yml") {
        Ok(loaded) => loaded,
        Err(d) => panic!("traps are warnings, not errors:\n{d}"),
    };
    let warning = loaded
        .warnings
        .iter()
        .find(|w| w.message.contains("successes is 0"));
    let Some(warning) = warning else {
        panic!("expected the never-recovers warning: {:?}", loaded.warnings);
    };
    assert_eq!(warning.severity, Severity::Warning);
    assert!(
        warning
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("successes"))
    );
    assert_eq!(warning.line, 6, "points at the active record");
}

#[test]
fn diagnostics_are_rendered_one_per_line_with_file_line_column() {
    let Err(diagnostics) = parse(
        "_format_version: \"3.0\"\nservices:\n  - name: a\n    hots: x\n",
        "kong.yml",
    ) else {
        panic!("must be rejected");
    };
    let text = diagnostics.to_string();
    assert!(
        text.lines().any(|l| l.starts_with(
            "kong.yml:4:5: error: services[0].hots: unknown field (did you mean 'host'?"
        )),
        "{text}"
    );
}

#[test]
fn unquoted_format_version_is_a_number_and_rejected_like_kong() {
    let Err(diagnostics) = parse("_format_version: 3.0\n", "kong.yml") else {
        panic!("a numeric _format_version must be rejected");
    };
    assert_eq!(
        diagnostics.to_string(),
        "kong.yml:1:18: error: _format_version: expected a string (found a number: 3.0)"
    );
}

#[test]
fn yaml_merge_keys_and_aliases_resolve() {
    let text = "_format_version: \"3.0\"\nx-defaults: &defaults\n  retries: 2\n";
    assert!(
        parse(text, "k").is_err(),
        "unknown top-level keys stay errors"
    );
    let text = "_format_version: \"3.0\"\nservices:\n  - &base {name: a, host: a.example.com, retries: 2}\n  - <<: *base\n    name: b\n";
    let config = match parse(text, "k") {
        Ok(loaded) => loaded.config,
        Err(d) => panic!("merge keys must work:\n{d}"),
    };
    let retries: Vec<u32> = config.services.iter().map(|s| s.retries).collect();
    assert_eq!(retries, [2, 2]);
}

#[test]
fn documented_tier_example_gets_the_documented_tiers() {
    let config = ok("docs-configuration.yaml");
    let tiers: Vec<u8> = config.upstreams[0].targets.iter().map(|t| t.tier).collect();
    assert_eq!(
        tiers,
        [0, 0, 1, 5, 6],
        "docs/configuration.md promises these tiers"
    );
    let orders = &config.upstreams[1].failover;
    assert_eq!(orders.failback_hold_down, Duration::from_secs(10));
    assert_eq!(orders.failback_ramp, Duration::from_secs(20));
}

#[test]
fn probe_keepalive_tags_set_the_active_check_connection_mode() {
    let upstream = |tags: &str| {
        let text = format!(
            "_format_version: \"3.0\"\nupstreams:\n  - name: u\n    tags: [{tags}]\n    targets: [{{target: \"10.0.0.1:80\"}}]\n"
        );
        parse(&text, "k").map(|loaded| loaded.config.upstreams[0].healthchecks.active.keepalive)
    };
    assert_eq!(
        upstream("region:x").ok(),
        Some(None),
        "Kong's mode by default"
    );
    assert_eq!(
        upstream("\"sluice:probe-keepalive=on\"").ok(),
        Some(Some(Duration::from_secs(30))),
        "the default max age"
    );
    assert_eq!(
        upstream("\"sluice:probe-keepalive-max-age=5m\", \"sluice:probe-keepalive=on\"").ok(),
        Some(Some(Duration::from_secs(300))),
        "keys in any order"
    );
    assert_eq!(
        upstream("\"sluice:probe-keepalive=off\", \"sluice:probe-keepalive-max-age=5m\"").ok(),
        Some(None)
    );
    assert!(upstream("\"sluice:probe-keepalive=yes please\"").is_err());
    assert!(upstream("\"sluice:probe-keepalive-max-age=0s\"").is_err());
}

/// A file the size of a large Kong installation: 1,000 services with a route each, 1,000
/// upstreams with 5 targets each (about 16,000 lines, 570 kB).
fn large_config() -> String {
    let mut text = String::from("_format_version: \"3.0\"\nservices:\n");
    for n in 0..1000 {
        text.push_str(&format!(
            "  - name: svc-{n}\n    host: up-{n}.internal\n    routes:\n      - name: route-{n}\n        paths: [/svc-{n}]\n"
        ));
    }
    text.push_str("upstreams:\n");
    for n in 0..1000 {
        text.push_str(&format!(
            "  - name: up-{n}.internal\n    healthchecks:\n      active:\n        healthy: {{interval: 1, successes: 2}}\n        unhealthy: {{interval: 1, http_failures: 2}}\n    targets:\n"
        ));
        for t in 0..5 {
            let region = if t < 3 { "primary" } else { "secondary" };
            text.push_str(&format!(
                "      - {{target: \"10.{}.{}.{t}:8080\", tags: [region:{region}]}}\n",
                n / 250,
                n % 250
            ));
        }
    }
    text
}

#[test]
fn a_large_installation_validates_quickly() {
    let text = large_config();
    let started = std::time::Instant::now();
    let loaded = match parse(&text, "large.yml") {
        Ok(loaded) => loaded,
        Err(d) => panic!("large config must validate:\n{d}"),
    };
    let elapsed = started.elapsed();
    assert_eq!(loaded.config.routes.len(), 1000);
    assert_eq!(
        loaded
            .config
            .upstreams
            .iter()
            .map(|u| u.targets.len())
            .sum::<usize>(),
        5000
    );
    assert!(loaded.config.services.iter().all(|s| s.upstream.is_some()));
    println!(
        "large config: {} bytes, {} lines, parsed and validated in {elapsed:?}",
        text.len(),
        text.lines().count()
    );
    // Generous even for an unoptimised build on a loaded 2-core machine; a reload path
    // that took this long would be a bug.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[test]
fn a_kong_export_is_taken_unchanged_with_its_ids() {
    let loaded = match load(&data_dir("ok").join("kong-db-export.yaml")) {
        Ok(loaded) => loaded,
        Err(d) => panic!("a Kong export must validate:\n{d}"),
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(
        config.services[0].id,
        "0b7e3c5a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    );
    assert_eq!(
        config.routes[0].service,
        Some(0),
        "reference by {{id: ...}}"
    );
    assert_eq!(
        config.upstreams[0].id,
        "2d9a5e7c-3e4f-4071-8cbd-2e3f4a5b6c7d"
    );
    assert_eq!(
        config.upstreams[0].targets[0].id,
        "3eab6f8d-4f50-4182-9dce-3f4a5b6c7d8e"
    );
    assert_eq!(
        config.upstreams[0].healthchecks,
        Default::default(),
        "explicit defaults equal implicit ones"
    );
    assert_eq!(config.plugins[0].scope, PluginScope::Global);
}

#[test]
fn kong_shorthands_decide_the_algorithm_in_kongs_order() {
    let algorithm = |upstream: &str| {
        let text = format!("_format_version: \"3.0\"\nupstreams:\n  - name: u\n{upstream}");
        match parse(&text, "k") {
            Ok(loaded) => Ok((
                loaded.config.upstreams[0].algorithm,
                loaded.config.upstreams[0].hash_on.clone(),
            )),
            Err(d) => Err(d.to_string()),
        }
    };
    assert_eq!(
        algorithm("    algorithm: consistent-hashing\n    hash_on: none\n"),
        Ok((Algorithm::RoundRobin, HashOn::None))
    );
    assert_eq!(
        algorithm("    hash_on: ip\n"),
        Ok((Algorithm::ConsistentHashing, HashOn::Ip))
    );
    // least-connections nulls hash_on first, so a decK dump's `hash_on: none` (or even a
    // header without its companion field) does not matter.
    assert_eq!(
        algorithm("    algorithm: least-connections\n    hash_on: none\n    hash_fallback: none\n"),
        Ok((Algorithm::LeastConnections, HashOn::None))
    );
    assert_eq!(
        algorithm("    algorithm: latency\n    hash_on: header\n"),
        Ok((Algorithm::Latency, HashOn::None))
    );
    // ...but hash_fallback must then be none, as Kong's entity check demands.
    assert!(algorithm("    algorithm: least-connections\n    hash_fallback: ip\n").is_err());
}

#[test]
fn tls_settings_resolve_to_the_declared_certificates() {
    let config = ok("tls-upstream.yaml");
    assert_eq!(config.certificates.len(), 1);
    assert_eq!(config.ca_certificates.len(), 1);
    let certificate = &config.certificates[0];
    assert_eq!(certificate.id, "5f0e7c4a-1c2d-4e3f-8a9b-000000000002");
    assert_eq!(certificate.chain.len(), 1);
    // The texts are kept as written, for the Admin API to serve back; the key does not
    // show in the certificate's `Debug` output.
    assert!(
        certificate
            .pem
            .cert
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    assert!(certificate.pem.key.expose().contains("PRIVATE KEY-----"));
    assert!(!format!("{certificate:?}").contains("PRIVATE KEY-----"));
    let ca = &config.ca_certificates[0];
    assert!(ca.pem.ends_with("-----END CERTIFICATE-----\n"));
    // Kong's cert_digest; the expected value is `openssl x509 -outform der | sha256sum`.
    assert_eq!(
        ca.digest,
        "76ddd21e83656285b2813e2a41417d4ea62b1d5d1c418fd532d0a8cc43becbe2"
    );
    let billing = &config.services[0];
    assert_eq!(billing.protocol, Protocol::Https);
    assert_eq!(billing.port, 8443);
    assert_eq!(billing.tls.verify, Some(true));
    assert_eq!(billing.tls.verify_depth, Some(2));
    assert_eq!(billing.tls.ca_certificates, vec![0]);
    assert_eq!(billing.tls.client_certificate, Some(0));
    let ledger = &config.services[1];
    assert_eq!(ledger.tls, Default::default(), "null settings stay null");
    assert_eq!(config.upstream_client_certificates, vec![Some(0)]);
}

#[test]
fn snis_resolve_to_their_certificate_in_kongs_forms() {
    use sluice_config::model::SniName;
    let config = ok("tls-listener.yaml");
    let names: Vec<(SniName, usize)> = config
        .snis
        .iter()
        .map(|s| (s.name.clone(), s.certificate))
        .collect();
    assert_eq!(
        names,
        vec![
            (SniName::Exact("api.example.test".into()), 0),
            (SniName::WildcardPrefix(".example.test".into()), 0),
            (SniName::WildcardSuffix("example.".into()), 0),
            (SniName::Default, 0),
            // Lower-cased, the trailing dot of a fully qualified name dropped.
            (SniName::Exact("legacy.example.org".into()), 0),
        ]
    );
    assert_eq!(config.snis[0].tags, vec!["edge".to_owned()]);
    let route = &config.routes[0];
    assert_eq!(route.protocols, vec![Protocol::Https]);
    assert_eq!(
        route.snis,
        vec![
            SniName::Exact("api.example.test".into()),
            SniName::WildcardPrefix(".example.test".into())
        ]
    );
    // Used by SNIs, so no "certificate is not used" warning.
    let loaded = load(&data_dir("ok").join("tls-listener.yaml")).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| !w.message.contains("not used")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn sni_names_match_like_kongs_certificate_lookup() {
    use sluice_config::model::SniName;
    let prefix = SniName::WildcardPrefix(".example.com".into());
    assert!(prefix.matches("a.example.com"));
    // One label only, as Kong replaces the first label with `*`.
    assert!(!prefix.matches("a.b.example.com"));
    assert!(!prefix.matches("example.com"));
    assert!(!prefix.matches(".example.com"));
    // `*.com` would need a two-label rest in Kong's lookup: it matches nothing.
    assert!(!SniName::WildcardPrefix(".com".into()).matches("example.com"));
    let suffix = SniName::WildcardSuffix("example.".into());
    assert!(suffix.matches("example.org"));
    assert!(!suffix.matches("example.co.uk"));
    assert!(!suffix.matches("www.example.org"));
    assert!(!suffix.matches("example."));
    assert!(SniName::Exact("a.test".into()).matches("a.test"));
    assert!(!SniName::Exact("a.test".into()).matches("b.test"));
    assert!(SniName::Default.matches("anything.test"));
}

#[test]
fn grpc_services_and_routes_validate_with_kongs_defaults() {
    let config = ok("grpc.yaml");
    let greeter = &config.services[0];
    assert_eq!(greeter.protocol, Protocol::Grpc);
    assert_eq!(greeter.port, 50051);
    assert_eq!(greeter.path, None);
    let secure = &config.services[1];
    assert_eq!(secure.protocol, Protocol::Grpcs);
    assert_eq!(secure.port, 443);
    assert_eq!(secure.tls.verify, Some(true));
    // A route that serves only gRPC does not strip its path (the path is the method).
    assert!(!config.routes[0].strip_path);
    assert_eq!(
        config.routes[1].protocols,
        vec![Protocol::Grpc, Protocol::Grpcs]
    );
    assert!(!config.routes[1].strip_path);
}
