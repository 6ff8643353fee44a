//! Services: the `url` shorthand, protocol (Sluice runs http, https, grpc and grpcs),
//! host, port, path, retries and timeouts with Kong's defaults, the link to an upstream
//! when the host names one, and the TLS fields of https and grpcs services.

use super::*;

pub(super) fn protocol(
    sink: &mut Sink,
    value: &Sp<String>,
    allowed_by_kong: &[&str],
) -> Option<Protocol> {
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
    if !matches!(
        protocol,
        Protocol::Http | Protocol::Https | Protocol::Grpc | Protocol::Grpcs
    ) {
        sink.error_hint(
            &value.path,
            value.pos,
            format!("protocol '{}' is not supported by Sluice", value.value),
            "Sluice proxies HTTP/1.1 and HTTP/2: use http, https, grpc or grpcs",
        );
        return None;
    }
    Some(protocol)
}

pub(super) struct ParsedUrl {
    protocol: Sp<String>,
    host: String,
    port: Option<u16>,
    path: Option<String>,
}

pub(super) fn parse_url(sink: &mut Sink, url: &Sp<String>) -> Option<ParsedUrl> {
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

pub(super) fn service(
    sink: &mut Sink,
    raw: &RawService,
    (upstream_names, upstreams): (&HashMap<&str, usize>, &[UpstreamSpec]),
    tls_refs: &mut TlsRefs,
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
                sink.error_hint(
                    &raw.path.key("host"),
                    raw.pos,
                    "required field missing",
                    "set host (a hostname, an ip, or an upstream's name) or url",
                );
            }
            String::new()
        }
    };
    // Kong's default is 80 for every protocol; the `url` shorthand is where a TLS
    // scheme implies 443 (handled with the parsed port below).
    let default_port: u16 = if matches!(protocol, Protocol::Https | Protocol::Grpcs) {
        443
    } else {
        80
    };
    let port = match parsed.as_ref().and_then(|p| p.port) {
        Some(port) => port,
        None => u16::try_from(int_in(sink, &raw.port, 0, 65_535, i64::from(default_port)))
            .unwrap_or(default_port),
    };
    let path = match parsed.as_ref().map(|p| p.path.clone()) {
        Some(Some(_)) if matches!(protocol, Protocol::Grpc | Protocol::Grpcs) => {
            if let Some(url) = &raw.url {
                sink.error_hint(
                    &url.path,
                    url.pos,
                    "a grpc or grpcs url has no path",
                    "'path' cannot be set when 'protocol' is 'grpc' or 'grpcs'",
                );
            }
            None
        }
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
            } else if matches!(protocol, Protocol::Grpc | Protocol::Grpcs) {
                // Kong's entity check: a gRPC method is the whole path (`/pkg.Svc/Method`),
                // so a service path would make every call name another method.
                sink.error_hint(
                    &p.path,
                    p.pos,
                    "value must be null",
                    "'path' cannot be set when 'protocol' is 'grpc' or 'grpcs'",
                );
                None
            } else {
                Some(p.value.clone())
            }
        }),
    };
    let tls = service_tls(sink, raw, protocol, tls_refs);
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
        tls,
    })
}

/// Kong's TLS fields of a service: only an `https` (or `grpcs`, TLS to the upstream as
/// well) service may set them (Kong's conditional entity checks), references must
/// resolve, the depth is 0..=64.
fn service_tls(
    sink: &mut Sink,
    raw: &RawService,
    protocol: Protocol,
    tls_refs: &mut TlsRefs,
) -> ServiceTls {
    if !matches!(protocol, Protocol::Https | Protocol::Grpcs) {
        let written = [
            raw.client_certificate
                .as_ref()
                .map(|r| (&r.key.path, r.key.pos)),
            raw.tls_verify.as_ref().map(|v| (&v.path, v.pos)),
            raw.ca_certificates.as_ref().map(|v| (&v.path, v.pos)),
        ];
        for (path, pos) in written.into_iter().flatten() {
            sink.error_hint(
                path,
                pos,
                "value must be null",
                "TLS settings apply to https and grpcs services only; set protocol: https or remove this",
            );
        }
        if let Some(depth) = &raw.tls_verify_depth {
            sink.warning(
                &depth.path,
                depth.pos,
                "tls_verify_depth has no effect on a service that is not https",
                "remove it, or set protocol: https",
            );
        }
        return ServiceTls::default();
    }
    let verify_depth = raw
        .tls_verify_depth
        .as_ref()
        .map(|_| u8::try_from(int_in(sink, &raw.tls_verify_depth, 0, 64, 1)).unwrap_or(1));
    let ca_certificates = raw
        .ca_certificates
        .as_ref()
        .map(|list| {
            list.value
                .iter()
                .filter_map(|id| tls_refs.ca_certificate(sink, id))
                .collect()
        })
        .unwrap_or_default();
    ServiceTls {
        verify: raw.tls_verify.as_ref().map(|v| v.value),
        verify_depth,
        ca_certificates,
        client_certificate: raw
            .client_certificate
            .as_ref()
            .and_then(|reference| tls_refs.certificate(sink, reference)),
    }
}

pub(super) fn timeout(sink: &mut Sink, raw: &Option<Sp<i64>>) -> Duration {
    let ms = int_in(sink, raw, 1, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);
    Duration::from_millis(u64::try_from(ms).unwrap_or(60_000))
}

/// Kong's `typedefs.utf8_name`: letters, digits, `.`, `-`, `_`, `~` (and non-ASCII).
pub(super) fn check_name(sink: &mut Sink, name: &Sp<String>) {
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
