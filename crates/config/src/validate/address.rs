//! Hostnames, IP literals and `host[:port]` splitting, with Kong's rules (used by
//! upstream names, targets, service hosts and route hosts).

/// Kong's hostname rule (RFC 1123 labels; `_` tolerated as Kong's resolver does).
pub(super) fn is_hostname(host: &str) -> bool {
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

pub(super) fn is_ip(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

/// Splits `host[:port]` (IPv6 in brackets); `Err` explains what is wrong.
pub(super) fn split_host_port(text: &str) -> Result<(String, Option<u16>), String> {
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
