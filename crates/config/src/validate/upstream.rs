//! Upstreams and targets: Kong's balancing fields with their shorthand rewriting, the
//! `healthchecks` tree with Kong's defaults and bounds, target addresses with the default
//! port, Sluice's region/tier placement, and warnings for health-check settings that are
//! known traps.

use super::*;

pub(super) fn upstreams(
    sink: &mut Sink,
    raw: &RawConfig,
    ids: &mut IdRegistry,
) -> Vec<UpstreamSpec> {
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

pub(super) fn upstream(sink: &mut Sink, raw: &RawUpstream, ids: &mut IdRegistry) -> UpstreamSpec {
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
            sink.error_hint(
                &raw.path.key("name"),
                raw.pos,
                "required field missing",
                "every upstream needs a name (a hostname)",
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
    if let Some(srv) = raw.use_srv_name.as_ref().filter(|v| v.value) {
        sink.warning(
            &srv.path,
            srv.pos,
            "use_srv_name is not applied by Sluice",
            "Sluice resolves A/AAAA records only",
        );
    }
    let mut healthchecks = raw
        .healthchecks
        .as_ref()
        .map(|hc| healthchecks(sink, hc))
        .unwrap_or_default();
    let tag_list = tags(sink, &raw.tags);
    let mut failover = FailoverPolicy::default();
    if let Some(raw_tags) = &raw.tags {
        extensions::apply_upstream_tags(
            sink,
            &raw_tags.value,
            &mut failover,
            &mut healthchecks.active,
        );
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
pub(super) fn balancing(sink: &mut Sink, raw: &RawUpstream) -> (Algorithm, HashOn, HashOn) {
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
    // Kong's shorthands run in order: `algorithm` least-connections/latency sets hash_on to
    // null (whatever was written), then a non-null hash_on rewrites the algorithm
    // (none → round-robin, anything else → consistent-hashing). So a written hash_on is
    // dropped under least-connections/latency and decides the algorithm otherwise.
    let hash_on_name = if matches!(algorithm, Algorithm::LeastConnections | Algorithm::Latency) {
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
pub(super) fn hash_key(
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

pub(super) fn statuses(
    sink: &mut Sink,
    raw: &Option<Sp<Vec<Sp<i64>>>>,
    default: Vec<u16>,
) -> Vec<u16> {
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

pub(super) fn counter(sink: &mut Sink, raw: &Option<Sp<i64>>) -> u8 {
    u8::try_from(int_in(sink, raw, 0, MAX_HEALTH_COUNTER, 0)).unwrap_or(0)
}

pub(super) fn seconds(sink: &mut Sink, raw: &Option<Sp<f64>>, default: f64) -> Duration {
    Duration::from_secs_f64(num_in(sink, raw, 0.0, MAX_HEALTH_SECONDS, default))
}

pub(super) fn healthchecks(sink: &mut Sink, raw: &RawHealthchecks) -> HealthChecks {
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
            format!(
                "active probes of type {} are not implemented; Sluice probes these targets with a TCP connect, so a reachable port counts as healthy",
                t.value
            ),
            "Kong's health checker does not implement gRPC probes either; use type: http or https against an HTTP health endpoint, or tcp to say what is checked",
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
            // Kong's behaviour unless the upstream's `sluice:probe-keepalive` tag says
            // otherwise (applied after this tree, see `extensions`).
            keepalive: None,
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

pub(super) fn targets(
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
            sink.error_hint(
                &raw_target.path.key("target"),
                raw_target.pos,
                "required field missing",
                "target: <host>:<port>",
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
pub(super) fn upstream_warnings(sink: &mut Sink, spec: &UpstreamSpec, raw: &RawUpstream) {
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
            raw.targets.first().map_or(raw.pos, |t| t.pos),
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
