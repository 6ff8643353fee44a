//! Header rewriting between client and upstream, as Kong does it.
//!
//! Upstream request: hop-by-hop headers removed (RFC 9110 §7.6.1: `Connection`,
//! `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and every
//! header named in `Connection`), `X-Forwarded-For` appended with the client address,
//! `X-Forwarded-Proto/-Host/-Port/-Path` and `X-Real-IP` set by the gateway (Kong trusts
//! none of the client's values by default: `trusted_ips` is empty), `Via` appended, the
//! request id added, and `Host` chosen per `preserve_host` / `host_header` / target.
//! Downstream response: hop-by-hop headers removed and `Via` appended.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::wire::{self, RawHeaders};

/// `X-Sluice-Request-Id`: sent upstream and back to the client (Kong: `X-Kong-Request-Id`).
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-sluice-request-id");
/// Time to the upstream's response header, ms (Kong: `X-Kong-Upstream-Latency`).
pub static UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-sluice-upstream-latency");
/// Time spent in the gateway, ms (Kong: `X-Kong-Proxy-Latency`).
pub static PROXY_LATENCY: HeaderName = HeaderName::from_static("x-sluice-proxy-latency");
/// Latency of a response the gateway produced itself, ms (Kong: `X-Kong-Response-Latency`).
pub static RESPONSE_LATENCY: HeaderName = HeaderName::from_static("x-sluice-response-latency");

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The `Via` token the gateway adds (`1.1 sluice`, like Kong's `1.1 kong/3.x`).
pub const VIA_VALUE: &str = "1.1 sluice";

/// The hop-by-hop headers RFC 9110 §7.6.1 names (plus the legacy `Keep-Alive` and
/// `Proxy-Connection`), removed in both directions.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == PROXY_CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
///
/// Hot path: one pass over the names present (a request usually carries a handful)
/// finds what to remove, so the common case of no hop-by-hop header costs no hash
/// lookups at all instead of nine.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names listed in Connection go first, while the Connection header still exists.
    let mut named: [Option<HeaderName>; 8] = Default::default();
    let mut extra: Vec<HeaderName> = Vec::new();
    let mut count = 0usize;
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',') {
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                match named.get_mut(count) {
                    Some(slot) => *slot = Some(name),
                    None => extra.push(name),
                }
                count += 1;
            }
        }
    }
    for name in named.iter().flatten().chain(extra.iter()) {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Append `value` to a comma-separated header, or set it (`value` as is, without a
/// copy, when the header is absent: the common case).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let combined = match headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => {
            let value = value.to_str().unwrap_or_default();
            let mut s = String::with_capacity(existing.len() + 2 + value.len());
            s.push_str(existing);
            s.push_str(", ");
            s.push_str(value);
            HeaderValue::from_str(&s).ok()
        }
        _ => Some(value.clone()),
    };
    if let Some(v) = combined {
        headers.insert(name.clone(), v);
    }
}

/// A request's headers as the gateway reads them: hyper's map (requests hyper parsed),
/// or the raw lines the fast lane parsed. Routing, real-IP and hashing read through this,
/// so both lanes decide alike.
#[derive(Debug, Clone, Copy)]
pub enum HeaderView<'a> {
    Map(&'a HeaderMap),
    Raw(&'a RawHeaders),
}

impl<'a> HeaderView<'a> {
    /// Every value of `lower` (a lower-case header name), in order.
    pub fn values(self, lower: &'a str) -> Values<'a> {
        match self {
            HeaderView::Map(map) => Values::Map(map.get_all(lower).iter()),
            HeaderView::Raw(raw) => Values::Raw {
                raw,
                next: 0,
                end: raw.positions.len(),
                lower: lower.as_bytes(),
            },
        }
    }

    /// The first value of `lower`.
    pub fn get(self, lower: &'a str) -> Option<&'a [u8]> {
        self.values(lower).next()
    }
}

/// The values of one header in a [`HeaderView`].
#[derive(Debug)]
pub enum Values<'a> {
    Map(http::header::ValueIter<'a, HeaderValue>),
    Raw {
        raw: &'a RawHeaders,
        next: usize,
        end: usize,
        lower: &'a [u8],
    },
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(iter) => iter.next().map(HeaderValue::as_bytes),
            Values::Raw {
                raw,
                next,
                end,
                lower,
            } => {
                while *next < *end {
                    let index = *next;
                    *next += 1;
                    if let Some(value) = raw.value_if_named(index, lower) {
                        return Some(value);
                    }
                }
                None
            }
        }
    }
}

impl<'a> DoubleEndedIterator for Values<'a> {
    fn next_back(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(iter) => iter.next_back().map(HeaderValue::as_bytes),
            Values::Raw {
                raw,
                next,
                end,
                lower,
            } => {
                while *end > *next {
                    *end -= 1;
                    if let Some(value) = raw.value_if_named(*end, lower) {
                        return Some(value);
                    }
                }
                None
            }
        }
    }
}

/// Header values that are the same for every request of one client connection,
/// rendered once when the connection is accepted (not once per request).
#[derive(Debug, Clone)]
pub struct ConnectionHeaders {
    /// The client's IP as nginx's `$remote_addr` prints it (`X-Real-IP`, and the value
    /// appended to `X-Forwarded-For`).
    pub client_ip: HeaderValue,
    /// The listener's port (`X-Forwarded-Port`).
    pub listener_port: HeaderValue,
    /// Whether the peer is a trusted proxy (Kong's `trusted_ips`): its `X-Forwarded-*`
    /// and real-IP headers are believed.
    pub trusted: bool,
    /// The connection arrived on the TLS listener (`X-Forwarded-Proto: https`).
    pub https: bool,
    /// The `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Port`
    /// lines as wire bytes, rendered at the connection's first fast-lane request (after
    /// `https` is settled) and copied whole by every request: two copies instead of the
    /// eight a line-by-line write makes.
    lines: OnceLock<ConnectionLines>,
}

/// `x-forwarded-for: IP\r\nx-real-ip: IP\r\nx-forwarded-proto: SCHEME\r\n` and
/// `x-forwarded-port: PORT\r\n`, for a client no trusted proxy speaks for.
#[derive(Debug, Clone)]
struct ConnectionLines {
    /// The three lines, in the order [`write_upstream_headers`] writes them.
    forwarded: Box<[u8]>,
    /// Where `x-real-ip` starts in `forwarded` (the client's own `X-Forwarded-For` list
    /// replaces the first line).
    real_ip_at: usize,
    /// Where `x-forwarded-proto` starts in `forwarded`.
    proto_at: usize,
    port: Box<[u8]>,
}

impl ConnectionHeaders {
    pub fn new(client: SocketAddr, listener_port: u16, trusted: bool) -> Self {
        ConnectionHeaders {
            client_ip: ip_header(client.ip()),
            listener_port: HeaderValue::from(listener_port),
            trusted,
            https: false,
            lines: OnceLock::new(),
        }
    }

    fn lines(&self) -> &ConnectionLines {
        self.lines.get_or_init(|| {
            let ip = self.client_ip.as_bytes();
            let mut forwarded = Vec::with_capacity(64 + 2 * ip.len());
            line(&mut forwarded, b"x-forwarded-for", ip);
            let real_ip_at = forwarded.len();
            line(&mut forwarded, b"x-real-ip", ip);
            let proto_at = forwarded.len();
            line(
                &mut forwarded,
                b"x-forwarded-proto",
                self.scheme().as_bytes(),
            );
            let mut port = Vec::new();
            line(
                &mut port,
                b"x-forwarded-port",
                self.listener_port.as_bytes(),
            );
            ConnectionLines {
                forwarded: forwarded.into(),
                real_ip_at,
                proto_at,
                port: port.into(),
            }
        })
    }

    /// Kong's `$scheme`: what `X-Forwarded-Proto` says when the client's is not kept.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }
}

/// An address as a header value, printed as nginx's `$remote_addr` prints it.
pub fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip_string(ip)).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// What the gateway knows about the client connection and request.
#[derive(Debug, Clone, Copy)]
pub struct ClientFacts<'a> {
    pub connection: &'a ConnectionHeaders,
    /// The client address a trusted proxy named (realip), when it differs from the peer.
    pub real_client: Option<&'a HeaderValue>,
    /// The client's `Host` without the port.
    pub host: &'a str,
    /// The client's whole `Host` header, reused as `X-Forwarded-Host` when it carries no
    /// port (no copy).
    pub host_header: Option<&'a HeaderValue>,
    pub path: &'a str,
    /// The request id (hex digits).
    pub request_id: &'a [u8],
}

/// Rewrite a client request's headers for the upstream (everything but `Host`).
pub fn prepare_upstream_request(headers: &mut HeaderMap, facts: &ClientFacts<'_>) {
    strip_hop_by_hop(headers);
    let connection = facts.connection;
    // Kong: the client's list plus the peer that connected (`$realip_remote_addr`);
    // without a list, the client address (`$remote_addr`, after realip).
    let client_ip = facts.real_client.unwrap_or(&connection.client_ip);
    if headers.contains_key(&X_FORWARDED_FOR) {
        append_list(headers, &X_FORWARDED_FOR, &connection.client_ip);
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
    }
    headers.insert(X_REAL_IP.clone(), client_ip.clone());
    // From a trusted proxy the client's own X-Forwarded-* values are passed on as they
    // came; from anyone else they are replaced (or, for the prefix, dropped).
    let keep =
        |headers: &HeaderMap, name: &HeaderName| connection.trusted && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(connection.scheme()),
        );
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        let forwarded_host = match facts.host_header {
            Some(value) if value.as_bytes() == facts.host.as_bytes() => Ok(value.clone()),
            _ => HeaderValue::from_str(facts.host),
        };
        match forwarded_host {
            Ok(v) => {
                headers.insert(X_FORWARDED_HOST.clone(), v);
            }
            Err(_) => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !keep(headers, &X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT.clone(), connection.listener_port.clone());
    }
    if !keep(headers, &X_FORWARDED_PATH) {
        match HeaderValue::from_str(facts.path) {
            Ok(v) => {
                headers.insert(X_FORWARDED_PATH.clone(), v);
            }
            Err(_) => {
                headers.remove(&X_FORWARDED_PATH);
            }
        }
    }
    if !connection.trusted {
        headers.remove(&X_FORWARDED_PREFIX);
    }
    append_list(headers, &header::VIA, &HeaderValue::from_static(VIA_VALUE));
    if let Ok(id) = HeaderValue::from_bytes(facts.request_id) {
        headers.insert(REQUEST_ID.clone(), id);
    }
    // The gateway answered any `Expect: 100-continue` itself while reading the body;
    // passing it on would make the upstream wait for a go-ahead nobody sends.
    headers.remove(header::EXPECT);
}

/// The upstream request's header lines (everything but `Host`, each ending in `\r\n`)
/// for a request the fast lane parsed: the rewriting of [`prepare_upstream_request`],
/// done on the raw lines instead of a `HeaderMap` (a differential test keeps the two
/// in step).
pub fn write_upstream_headers(out: &mut Vec<u8>, raw: &RawHeaders, facts: &ClientFacts<'_>) {
    let connection = facts.connection;
    // Names the client's `Connection` header lists are hop-by-hop for this message.
    let listed = wire::ListedNames::of(raw);
    let mut forwarded_for: Option<&[u8]> = None;
    let mut forwarded_for_present = false;
    let mut via: Option<&[u8]> = None;
    let (mut has_proto, mut has_host, mut has_port, mut has_path) = (false, false, false, false);
    for (name, value) in raw.iter() {
        if wire::is_hop_by_hop(name) || listed.contains(name) {
            continue;
        }
        let keep = match name.len() {
            4 if wire::name_is(name, b"host") => false,
            3 if wire::name_is(name, b"via") => {
                via.get_or_insert(value);
                false
            }
            6 if wire::name_is(name, b"expect") => false,
            9 if wire::name_is(name, b"x-real-ip") => false,
            15 if wire::name_is(name, b"x-forwarded-for") => {
                forwarded_for_present = true;
                forwarded_for.get_or_insert(value);
                false
            }
            17 if wire::name_is(name, b"x-forwarded-proto") => {
                has_proto = true;
                connection.trusted
            }
            16 if wire::name_is(name, b"x-forwarded-host") => {
                has_host = true;
                connection.trusted
            }
            16 if wire::name_is(name, b"x-forwarded-port") => {
                has_port = true;
                connection.trusted
            }
            16 if wire::name_is(name, b"x-forwarded-path") => {
                has_path = true;
                connection.trusted
            }
            18 if wire::name_is(name, b"x-forwarded-prefix") => connection.trusted,
            19 if wire::name_is(name, REQUEST_ID.as_str().as_bytes()) => false,
            _ => true,
        };
        if keep {
            line(out, name, value);
        }
    }
    let trusted = connection.trusted;
    let proto_kept = trusted && has_proto;
    let lines = connection.lines();
    let forwarded = &lines.forwarded[..];
    // Kong: the client's list plus the peer; without a list, the client address.
    let own_list = forwarded_for
        .and_then(wire::header_str)
        .filter(|l| !l.is_empty());
    match (facts.real_client, own_list) {
        // The common case: the connection's rendered lines, whole or up to the proto.
        (None, None) if !proto_kept => out.extend_from_slice(forwarded),
        (None, None) => out.extend_from_slice(forwarded.get(..lines.proto_at).unwrap_or(b"")),
        (real_client, own_list) => {
            let client_ip = real_client.unwrap_or(&connection.client_ip);
            match own_list {
                Some(existing) => {
                    out.extend_from_slice(b"x-forwarded-for: ");
                    out.extend_from_slice(existing.as_bytes());
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(connection.client_ip.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                None if forwarded_for_present => {
                    line(out, b"x-forwarded-for", connection.client_ip.as_bytes())
                }
                None => line(out, b"x-forwarded-for", client_ip.as_bytes()),
            }
            if real_client.is_none() {
                out.extend_from_slice(
                    forwarded
                        .get(lines.real_ip_at..lines.proto_at)
                        .unwrap_or(b""),
                );
            } else {
                line(out, b"x-real-ip", client_ip.as_bytes());
            }
            if !proto_kept {
                out.extend_from_slice(forwarded.get(lines.proto_at..).unwrap_or(b""));
            }
        }
    }
    if !(trusted && has_host) && is_valid_value(facts.host.as_bytes()) {
        line(out, b"x-forwarded-host", facts.host.as_bytes());
    }
    if !(trusted && has_port) {
        out.extend_from_slice(&lines.port);
    }
    if !(trusted && has_path) && is_valid_value(facts.path.as_bytes()) {
        line(out, b"x-forwarded-path", facts.path.as_bytes());
    }
    match via.and_then(wire::header_str) {
        Some(existing) if !existing.is_empty() => {
            out.extend_from_slice(b"via: ");
            out.extend_from_slice(existing.as_bytes());
            out.extend_from_slice(b", ");
            out.extend_from_slice(VIA_VALUE.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        _ => line(out, b"via", VIA_VALUE.as_bytes()),
    }
    line(out, REQUEST_ID.as_str().as_bytes(), facts.request_id);
}

/// Whether `value` would make a header value: `HeaderValue::from_bytes`'s rule (no
/// control bytes but tab), checked without building one (that copies the bytes into a
/// fresh allocation, twice per request on the raw lane).
pub fn is_valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

/// Append one `name: value\r\n` header line.
#[inline]
pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Rewrite an upstream response's headers for the client.
pub fn prepare_client_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    append_list(headers, &header::VIA, &HeaderValue::from_static(VIA_VALUE));
}

fn ip_string(ip: IpAddr) -> String {
    // An IPv4-mapped IPv6 client (dual-stack listener) is reported as plain IPv4, the
    // way nginx's $remote_addr shows it.
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The host part of a `Host` value: `host`, `host:port`, `[v6]` or `[v6]:port` → `host`
/// or `[v6]` (brackets kept; callers that need the bare address strip them). A value that
/// does not look like `host:port` (a bare IPv6 address, `odd:`) is returned whole.
/// One definition for `X-Forwarded-Host`, probe SNI and upstream SNI.
///
/// Byte searches, not `char` ones: every delimiter is ASCII, and this runs on every
/// proxied request (a `CharSearcher` from the end, then a search of the name for a
/// second colon, were most of its cost).
pub fn host_without_port(host: &str) -> &str {
    let bytes = host.as_bytes();
    if bytes.first() == Some(&b'[') {
        return match bytes.iter().position(|&b| b == b']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    // `host:port` has exactly one colon with digits after it. Everything after the
    // *first* colon being digits says both at once (a second colon is not a digit), in
    // one pass over the value.
    let Some(colon) = bytes.iter().position(|&b| b == b':') else {
        return host;
    };
    let port = bytes.get(colon + 1..).unwrap_or_default();
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return host;
    }
    host.get(..colon).unwrap_or(host)
}

/// The `Host` header for a target: host, plus `:port` unless it is the scheme's default.
pub fn host_header_for(host: &str, port: u16) -> Option<HeaderValue> {
    let bracketed = host.contains(':') && !host.starts_with('[');
    let text = match (port, bracketed) {
        (80, false) => return HeaderValue::from_str(host).ok(),
        (80, true) => format!("[{host}]"),
        (_, false) => format!("{host}:{port}"),
        (_, true) => format!("[{host}]:{port}"),
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {

    /// The validity check agrees with `HeaderValue` on every byte.
    #[test]
    fn value_validity_matches_header_value() {
        for b in 0..=255u8 {
            let value = [b'a', b, b'z'];
            assert_eq!(
                is_valid_value(&value),
                HeaderValue::from_bytes(&value).is_ok(),
                "byte {b:#04x}"
            );
        }
    }
    use proptest::prelude::*;

    /// Header lines grouped by lower-case name, values in order.
    fn grouped(pairs: impl Iterator<Item = (String, Vec<u8>)>) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut groups: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => groups.push((name, vec![value])),
            }
        }
        groups.sort();
        groups
    }

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Connection".to_string()),
            Just("keep-alive".to_string()),
            Just("TE".to_string()),
            Just("Upgrade".to_string()),
            Just("Host".to_string()),
            Just("Via".to_string()),
            Just("X-Forwarded-For".to_string()),
            Just("x-forwarded-proto".to_string()),
            Just("X-Forwarded-Host".to_string()),
            Just("x-forwarded-port".to_string()),
            Just("X-Forwarded-Path".to_string()),
            Just("x-forwarded-prefix".to_string()),
            Just("X-Real-IP".to_string()),
            Just("Expect".to_string()),
            Just("x-sluice-request-id".to_string()),
            Just("Content-Length".to_string()),
            Just("Cookie".to_string()),
            "x-[a-z]{1,6}",
        ]
    }

    fn header_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("keep-alive, x-a".to_string()),
            Just("close".to_string()),
            Just("203.0.113.9, 10.0.0.2".to_string()),
            Just("1.0 edge".to_string()),
            "[a-zA-Z0-9 ,=;.-]{0,12}",
        ]
    }

    proptest! {
        /// The fast lane's byte-level rewriting sends the same headers upstream as the
        /// hyper lane's `HeaderMap` rewriting, for any mix of hop-by-hop, forwarding and
        /// ordinary headers, trusted peer or not.
        #[test]
        fn both_lanes_send_the_same_upstream_headers(
            pairs in proptest::collection::vec((header_name(), header_value()), 0..12),
            trusted in any::<bool>(),
            real in any::<bool>(),
        ) {
            let connection = ConnectionHeaders::new("192.0.2.7:5555".parse().unwrap(), 8000, trusted);
            let real_value = HeaderValue::from_static("203.0.113.50");
            let id = HeaderValue::from_static("0123abcd");
            let facts = ClientFacts {
                connection: &connection,
                real_client: real.then_some(&real_value),
                host: "api.example.com",
                host_header: None,
                path: "/v1/items",
                request_id: id.as_bytes(),
            };
            // Hyper's lane.
            let mut map = HeaderMap::new();
            for (name, value) in &pairs {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value.trim()).unwrap(),
                );
            }
            prepare_upstream_request(&mut map, &facts);
            map.remove(header::HOST);
            let hyper_lane = grouped(
                map.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())),
            );
            // The fast lane.
            let mut head = b"GET / HTTP/1.1\r\n".to_vec();
            for (name, value) in &pairs {
                head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            let mut storage = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut storage);
            let parsed = request.parse(&head).unwrap();
            prop_assert!(parsed.is_complete());
            let mut positions = Vec::new();
            wire::header_positions(&head, request.headers, &mut positions);
            let raw = RawHeaders {
                raw: bytes::Bytes::from(head.clone()),
                positions,
                connection_plain: false,
                crlf_lines: false,
            };
            let mut out = Vec::new();
            write_upstream_headers(&mut out, &raw, &facts);
            let text = String::from_utf8(out).unwrap();
            let fast_lane = grouped(text.split("\r\n").filter(|l| !l.is_empty()).map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.as_bytes().to_vec())
            }));
            prop_assert_eq!(fast_lane, hyper_lane);
        }
    }

    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-connection", HeaderValue::from_static("close"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn forwarded_headers_follow_kong() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let id = HeaderValue::from_static("abc");
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        let connection = ConnectionHeaders::new("192.0.2.7:5555".parse().unwrap(), 8000, false);
        prepare_upstream_request(
            &mut h,
            &ClientFacts {
                connection: &connection,
                real_client: None,
                host: "api.example.com",
                host_header: None,
                path: "/v1/x",
                request_id: id.as_bytes(),
            },
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(
            h["x-forwarded-proto"], "http",
            "client values are not trusted"
        );
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-port"], "8000");
        assert_eq!(h["x-forwarded-path"], "/v1/x");
        assert_eq!(h["via"], "1.1 sluice");
        assert_eq!(h["x-sluice-request-id"], "abc");
        assert!(
            h.get("x-forwarded-prefix").is_none(),
            "an untrusted client's prefix is dropped, as Kong does"
        );
    }

    #[test]
    fn a_tls_connection_says_https_in_both_rewritings() {
        let mut connection = ConnectionHeaders::new("192.0.2.7:5555".parse().unwrap(), 8443, false);
        connection.https = true;
        let facts = ClientFacts {
            connection: &connection,
            real_client: None,
            host: "api.example.com",
            host_header: None,
            path: "/",
            request_id: b"abc",
        };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        prepare_upstream_request(&mut h, &facts);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-port"], "8443");
        // The raw-lines rewriting says the same (it serves plain connections today, but
        // the two must not drift apart).
        let head = b"GET / HTTP/1.1\r\nx-forwarded-proto: http\r\n\r\n";
        let mut parsed = [httparse::EMPTY_HEADER; 4];
        let mut request = httparse::Request::new(&mut parsed);
        let _ = request.parse(head).unwrap();
        let mut positions = Vec::new();
        wire::header_positions(head, request.headers, &mut positions);
        let raw = RawHeaders {
            raw: bytes::Bytes::from_static(head),
            positions,
            connection_plain: false,
            crlf_lines: false,
        };
        let mut out = Vec::new();
        write_upstream_headers(&mut out, &raw, &facts);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("x-forwarded-proto: https\r\n"), "{text}");
        assert!(!text.contains("x-forwarded-proto: http\r\n"), "{text}");
    }

    #[test]
    fn a_trusted_proxy_speaks_for_its_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("shop.example"));
        h.insert("x-forwarded-port", HeaderValue::from_static("443"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/shop"));
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.9"));
        let id = HeaderValue::from_static("abc");
        let balancer = ConnectionHeaders::new("10.0.0.1:40000".parse().unwrap(), 8000, true);
        let real = HeaderValue::from_static("203.0.113.9");
        prepare_upstream_request(
            &mut h,
            &ClientFacts {
                connection: &balancer,
                real_client: Some(&real),
                host: "gw.internal",
                host_header: None,
                path: "/v1/x",
                request_id: id.as_bytes(),
            },
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-forwarded-prefix"], "/shop");
        assert_eq!(h["x-forwarded-path"], "/v1/x", "absent: the gateway's own");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(
            h["x-forwarded-for"], "203.0.113.9",
            "no list: the real client"
        );
    }

    #[test]
    fn ports_are_stripped_from_host_values() {
        assert_eq!(host_without_port("api.internal:8080"), "api.internal");
        assert_eq!(host_without_port("api.internal"), "api.internal");
        assert_eq!(host_without_port("10.0.0.1:443"), "10.0.0.1");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(
            host_without_port("::1"),
            "::1",
            "bare IPv6 is not host:port"
        );
        assert_eq!(host_without_port("odd:"), "odd:");
        assert_eq!(host_without_port("a:1:2"), "a:1:2", "two colons");
        assert_eq!(host_without_port("[::1"), "[::1", "unclosed bracket");
    }

    /// The `str` version the byte search replaced: split at the last colon, keep the
    /// name when it has no colon and the port is digits.
    fn host_without_port_reference(host: &str) -> &str {
        if host.starts_with('[') {
            return match host.find(']') {
                Some(end) => host.get(..=end).unwrap_or(host),
                None => host,
            };
        }
        match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':')
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        }
    }

    proptest! {
        #[test]
        fn host_without_port_agrees_with_the_str_version(host in "[a-z0-9:\\[\\].é]{0,12}") {
            prop_assert_eq!(host_without_port(&host), host_without_port_reference(&host));
        }
    }

    #[test]
    fn host_header_appends_non_default_port() {
        assert_eq!(host_header_for("a.example", 80).unwrap(), "a.example");
        assert_eq!(
            host_header_for("a.example", 8080).unwrap(),
            "a.example:8080"
        );
        assert_eq!(host_header_for("::1", 8080).unwrap(), "[::1]:8080");
    }
}
