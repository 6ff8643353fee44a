//! Routes: Kong's matcher fields (methods, hosts with wildcards, prefix and regex paths,
//! headers) validated but not compiled (the proxy builds its router), the legacy-format
//! regex path migration, Kong's entity check, and Sluice's route tags.

use super::*;

pub(super) fn route(
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
    let mut snis: Vec<SniName> = Vec::new();
    if let Some(list) = raw.snis.as_ref().filter(|s| !s.value.is_empty()) {
        // Kong's entity check: SNIs exist only on TLS connections.
        let tls_capable = protocols.iter().any(|p| {
            matches!(
                p,
                Protocol::Https | Protocol::Grpcs | Protocol::Tls | Protocol::TlsPassthrough
            )
        });
        if !tls_capable {
            sink.error_hint(
                &list.path,
                list.pos,
                "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
                "add https to protocols, or remove snis",
            );
        }
        for name in &list.value {
            if let Some(mut parsed) = sni_name(sink, name) {
                if parsed == SniName::Default {
                    sink.warning(
                        &name.path,
                        name.pos,
                        "a route sni '*' matches no client",
                        "Kong compares route snis with the client's name and no client sends '*'; leave snis out to match every name",
                    );
                    // Kept as the literal name, so the route still never matches on TLS.
                    parsed = SniName::Exact("*".to_owned());
                }
                if !snis.contains(&parsed) {
                    snis.push(parsed);
                }
            }
        }
    }
    let set = |o: &Option<Sp<Vec<Sp<String>>>>| o.as_ref().is_some_and(|l| !l.value.is_empty());
    let has_headers = raw.headers.as_ref().is_some_and(|h| !h.value.is_empty());
    let any_matcher = set(&raw.methods) || set(&raw.hosts) || set(&raw.paths) || has_headers;
    let https_only = !protocols.is_empty()
        && protocols
            .iter()
            .all(|p| matches!(p, Protocol::Https | Protocol::Grpcs));
    if !(any_matcher || (https_only && set(&raw.snis))) {
        sink.entity_error(
            &raw.path,
            raw.pos,
            "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'",
            Some("e.g. paths: [/products]".into()),
        );
    }
    // Kong: a gRPC method is the whole path, so a route that serves only gRPC does not
    // strip it (the default turns false) and may not be told to.
    let grpc_only = !protocols.is_empty()
        && protocols
            .iter()
            .all(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs));
    let strip_path = match &raw.strip_path {
        Some(v) if grpc_only && v.value => {
            sink.error_hint(
                &v.path,
                v.pos,
                "'strip_path' cannot be set when 'protocols' is 'grpc' or 'grpcs'",
                "remove strip_path, or set it to false",
            );
            false
        }
        Some(v) => v.value,
        None => !grpc_only,
    };
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
        snis,
        strip_path,
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

pub(super) fn host_match(sink: &mut Sink, host: &Sp<String>) -> Option<HostMatch> {
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
pub(super) fn looks_like_regex(path: &str) -> bool {
    path.chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '/' | '%' | '-')))
}

pub(super) fn path_match(sink: &mut Sink, path: &Sp<String>, legacy: bool) -> Option<PathMatch> {
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

pub(super) fn header_match(
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
