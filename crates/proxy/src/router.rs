//! Kong route matching (`router_flavor = traditional_compatible`), compiled once per
//! configuration generation.
//!
//! # Semantics (kong-semantics.md §2)
//! - Values within one field are OR'ed, fields are AND'ed.
//! - `hosts`: exact, `*.x.com` or `x.*`, compared with the `Host` header without its port,
//!   case-insensitively.
//! - `paths`: prefix, or a `~` regex anchored at the start of the path.
//! - `methods`: exact (upper case). `headers`: case-insensitive equality, or a regex
//!   when the value was written `~*...`.
//! - `protocols` and the listener: on the plain listener every HTTP route is a
//!   candidate and one that takes only `https` answers with its
//!   `https_redirect_status_code`; on the TLS listener only routes whose protocols
//!   include `https` (or `grpcs`/`wss`) are (Kong 3.x adds `net.protocol == ...` to every
//!   route but an `https`-only one). A route whose TLS protocol is only `grpcs` is
//!   matched on the plain listener without a redirect: Kong's runloop answers a gRPC
//!   request there with `grpc-status: 1` (the caller does, from [`RouteInfo::grpc`]).
//! - `snis`: on the TLS listener the client's server name must match one of them
//!   (exact, or a wildcard as certificate SNIs match); on the plain listener they are not
//!   considered (Kong: `net.protocol != "https" || tls.sni == ...`).
//! - Priority, highest first: number of fields set (`snis` counts); only plain hosts over any wildcard;
//!   header count; regex path over prefix path; `regex_priority` (regex paths only);
//!   longest prefix; then configuration order. As Kong's `traditional_compatible`
//!   flavour does, a route with several paths is split into one entry per path so each
//!   path competes with its own priority.
//!
//! # Cost
//! Entries are sorted by priority once; an entry's position is its rank. A request only
//! looks at entries that can possibly match its host and path:
//! - entries are grouped by exact host (a hash map), plus one group for entries without
//!   hosts or with wildcard hosts;
//! - inside a group, prefix paths sit in a byte trie walked along the request path
//!   (O(path length) to find every prefix that matches), regex paths in one
//!   `RegexSet`, and path-less entries in a list;
//! - the surviving candidates are checked in rank order and the first full match wins.
//!
//! So matching cost grows with the path length and the number of *plausible* routes,
//! not with the size of the configuration.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use regex::{Regex, RegexSet};
use sluice_config::model::{
    Config, HeaderValueMatch, HostMatch, PathMatch, Protocol, Route, Service, SniName,
};

use crate::headers::HeaderView;
use crate::record::{RouteRef, ServiceRef};

/// A regex or configuration problem found while compiling routes.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("routes[{route}] ({name}): invalid regex path {pattern:?}: {source}")]
    PathRegex {
        route: usize,
        name: String,
        pattern: String,
        source: Box<regex::Error>,
    },
    #[error("routes[{route}] ({name}): invalid header regex {pattern:?} for {header}: {source}")]
    HeaderRegex {
        route: usize,
        name: String,
        header: String,
        pattern: String,
        source: Box<regex::Error>,
    },
    #[error("routes[{route}] ({name}): header name {header:?} is not a valid HTTP header name")]
    HeaderName {
        route: usize,
        name: String,
        header: String,
    },
    #[error("routes: too many regex paths for one host group to compile into a set: {0}")]
    RegexSet(Box<regex::Error>),
}

/// How the matched path is turned into the upstream path (Kong's `path_handling`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PathHandling {
    /// Kong's default: join service path and the rest with exactly one `/`.
    V0,
    /// Deprecated Kong behaviour: plain concatenation (double slashes collapsed).
    V1,
}

/// One route as the forwarder needs it after a match.
#[derive(Debug)]
pub struct RouteInfo {
    pub route: RouteRef,
    pub service: Option<ServiceRef>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub path_handling: PathHandling,
    /// The route does not accept plain HTTP (only `https`): answer with this status.
    pub https_redirect: Option<u16>,
    /// Hedge delay from Sluice's route extensions.
    pub hedge_after: Option<std::time::Duration>,
    /// Statuses retried for idempotent requests (`sluice:retry-on`).
    pub retry_on_status: Arc<[u16]>,
    /// The route's protocols include `grpc` or `grpcs`: Kong's gRPC checks apply (HTTP/2
    /// and an `application/grpc` content type required).
    pub grpc: Option<GrpcRoute>,
}

/// Which gRPC protocols a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcRoute {
    /// `grpc` is among the protocols: gRPC over plain connections (h2c) is served.
    pub plain: bool,
}

#[derive(Debug)]
enum PathKind {
    Any,
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
enum HeaderValueMatcher {
    /// Lower-cased expected value.
    Exact(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatcher {
    name: http::HeaderName,
    values: Vec<HeaderValueMatcher>,
}

/// One (route, path) pair with its priority.
#[derive(Debug)]
struct Entry {
    /// Index into `Router::routes`.
    route: u32,
    path: PathKind,
}

#[derive(Debug)]
struct CompiledRoute {
    info: Arc<RouteInfo>,
    /// Empty = any method.
    methods: Vec<Method>,
    /// Empty = any host.
    hosts: Vec<HostMatch>,
    headers: Vec<HeaderMatcher>,
    /// The route takes TLS connections (`https`, `grpcs` or `wss` among its protocols).
    tls: bool,
    /// Empty = any server name (TLS listener only).
    snis: Vec<SniName>,
}

/// Which listener a request arrived on: the router's view of Kong's `net.protocol`
/// and `tls.sni`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener<'a> {
    Plain,
    /// `sni`: the server name the client sent, lower case without a trailing dot.
    Tls {
        sni: Option<&'a str>,
    },
}

/// Byte trie over prefix paths; each node lists the entries (ranks) whose prefix ends
/// there.
#[derive(Debug, Default)]
struct PrefixTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Children sorted by byte, searched with a binary search: tries over URL paths are
    /// sparse, so this beats a 256-slot array in memory by a wide margin.
    children: Vec<(u8, u32)>,
    ranks: Vec<u32>,
}

impl PrefixTrie {
    fn insert(&mut self, prefix: &[u8], rank: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut node = 0usize;
        for &byte in prefix {
            let next = match self.nodes[node]
                .children
                .binary_search_by_key(&byte, |c| c.0)
            {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let new = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children.insert(i, (byte, new as u32));
                    new
                }
            };
            node = next;
        }
        self.nodes[node].ranks.push(rank);
    }

    /// Every rank whose prefix is a prefix of `path`.
    fn collect(&self, path: &[u8], out: &mut Candidates) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        out.extend_from_slice(&node.ranks);
        for byte in path {
            let Ok(i) = node.children.binary_search_by_key(byte, |c| c.0) else {
                return;
            };
            let Some(next) = node
                .children
                .get(i)
                .and_then(|c| self.nodes.get(c.1 as usize))
            else {
                return;
            };
            node = next;
            out.extend_from_slice(&node.ranks);
        }
    }
}

/// The entries sharing one host key.
#[derive(Debug, Default)]
struct Group {
    trie: PrefixTrie,
    regex_set: Option<RegexSet>,
    /// Rank of each pattern of `regex_set`.
    regex_ranks: Vec<u32>,
    pathless: Vec<u32>,
    /// Regex sources collected before the set is compiled.
    pending_regex: Vec<String>,
}

impl Group {
    fn add(&mut self, rank: u32, path: &PathKind) {
        match path {
            PathKind::Any => self.pathless.push(rank),
            PathKind::Prefix(p) => self.trie.insert(p.as_bytes(), rank),
            PathKind::Regex(re) => {
                // An anchored regex that starts with a literal can only match paths that
                // start with that literal: index it in the trie like a prefix and check
                // the regex itself only for such paths. The rest go into one RegexSet.
                match regex_literal_prefix(strip_anchor(re.as_str())) {
                    Some(literal) => self.trie.insert(literal.as_bytes(), rank),
                    None => {
                        self.pending_regex.push(re.as_str().to_owned());
                        self.regex_ranks.push(rank);
                    }
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), RouterError> {
        if !self.pending_regex.is_empty() {
            let set = RegexSet::new(&self.pending_regex)
                .map_err(|e| RouterError::RegexSet(Box::new(e)))?;
            self.regex_set = Some(set);
            self.pending_regex = Vec::new();
        }
        Ok(())
    }

    fn candidates(&self, path: &str, out: &mut Candidates) {
        self.trie.collect(path.as_bytes(), out);
        out.extend_from_slice(&self.pathless);
        if let Some(set) = &self.regex_set {
            for i in set.matches(path).iter() {
                if let Some(rank) = self.regex_ranks.get(i) {
                    out.push(*rank);
                }
            }
        }
    }
}

/// Candidates held inline before a lookup spills to the heap. A request usually has one
/// to a few candidates (one per matching prefix along its path, plus path-less and
/// matching regex routes of its host groups); 16 covers deep paths under nested
/// prefixes, and the array is 64 bytes of stack.
const INLINE_CANDIDATES: usize = 16;

/// The candidate ranks of one lookup: inline up to [`INLINE_CANDIDATES`], so the common
/// request makes no allocation (an allocation and its free were a third of a one-route
/// lookup), on the heap beyond.
struct Candidates {
    inline: [u32; INLINE_CANDIDATES],
    len: usize,
    /// Every candidate once the inline array overflowed (non-empty only then).
    heap: Vec<u32>,
}

impl Candidates {
    fn new() -> Candidates {
        Candidates {
            inline: [0; INLINE_CANDIDATES],
            len: 0,
            heap: Vec::new(),
        }
    }

    /// One rank at a time: the lists added are mostly empty or of one rank, where a
    /// slice copy (a `memcpy` call) costs more than the loop.
    #[inline]
    fn extend_from_slice(&mut self, ranks: &[u32]) {
        for &rank in ranks {
            self.push(rank);
        }
    }

    #[inline]
    fn push(&mut self, rank: u32) {
        if self.heap.is_empty() {
            if let Some(slot) = self.inline.get_mut(self.len) {
                *slot = rank;
                self.len += 1;
                return;
            }
            // Spill: from now on every candidate lives on the heap.
            self.heap.reserve(2 * INLINE_CANDIDATES);
            self.heap.extend_from_slice(&self.inline);
        }
        self.heap.push(rank);
    }

    fn as_mut_slice(&mut self) -> &mut [u32] {
        if self.heap.is_empty() {
            self.inline.get_mut(..self.len).unwrap_or_default()
        } else {
            &mut self.heap
        }
    }
}

/// The source of a compiled path regex without the `^(?:` ... `)` anchoring wrapper.
fn strip_anchor(compiled: &str) -> &str {
    compiled
        .strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or("")
}

/// The literal text every match of `src` (anchored at the start) begins with, when it
/// is easy to prove: no alternation anywhere, and the literal run stops at the first
/// metacharacter (dropping the last literal if a quantifier makes it optional).
fn regex_literal_prefix(src: &str) -> Option<String> {
    if src.contains('|') {
        return None;
    }
    let mut literal = String::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || "/-_~%:@!,;=&'<>\"".contains(c) {
            literal.push(c);
            chars.next();
        } else if c == '\\' {
            let mut ahead = chars.clone();
            ahead.next();
            match ahead.peek() {
                // `\.`, `\/`...: an escaped punctuation character is that character.
                Some(&escaped) if escaped.is_ascii_punctuation() => {
                    literal.push(escaped);
                    chars.next();
                    chars.next();
                }
                // `\d`, `\w`, `\b`...: a class or an assertion, not a literal.
                _ => break,
            }
        } else {
            break;
        }
    }
    if matches!(chars.peek(), Some('?' | '*' | '{')) {
        literal.pop();
    }
    (!literal.is_empty()).then_some(literal)
}

/// A successful match.
#[derive(Debug)]
pub struct RouteMatch<'r> {
    pub info: &'r Arc<RouteInfo>,
    /// The part of the path the route's path matched (prefix, or the regex match);
    /// empty for path-less routes.
    pub matched_len: usize,
    /// Regex captures (`uri_captures`): numbered groups, then named ones, when the matched
    /// path was a regex with groups. Empty otherwise, without allocation.
    pub captures: Vec<(Option<Box<str>>, Box<str>)>,
}

/// The request facts the router matches on.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// `Host` header (or `:authority`) as sent, possibly with a port.
    pub host: &'a str,
    pub path: &'a str,
    pub headers: HeaderView<'a>,
}

/// Compiled routes of one configuration generation.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<CompiledRoute>,
    /// Sorted by priority: the index is the rank.
    entries: Vec<Entry>,
    /// Routes by exact host.
    by_host: HashMap<Box<str>, Group>,
    /// Routes by `*.x.com` wildcard, keyed `.x.com`: a request host is looked up by each
    /// of its suffixes that starts at a dot.
    by_wildcard_prefix: HashMap<Box<str>, Group>,
    /// Routes by `x.*` wildcard, keyed `x.`: looked up by each host prefix ending at a dot.
    by_wildcard_suffix: HashMap<Box<str>, Group>,
    /// Routes without hosts.
    any_host: Group,
    /// Some route names hosts (any of the three host maps is non-empty). When none does,
    /// the request's host cannot change the outcome and is not even normalised.
    host_bound: bool,
}

/// Priority key, compared highest first (Kong's `get_priority`), then config order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Priority {
    fields: u8,
    plain_hosts_only: bool,
    header_count: usize,
    regex: bool,
    regex_priority: i64,
    prefix_len: usize,
}

fn route_label(route: &Route) -> Arc<str> {
    Arc::from(route.name.as_deref().unwrap_or(&route.id))
}

/// Kong's `service` label: the name, else the host.
pub fn service_label(service: &Service) -> Arc<str> {
    Arc::from(service.name.as_deref().unwrap_or(&service.host))
}

/// Whether a plain-HTTP listener serves this route, and if not, whether to redirect.
fn http_disposition(route: &Route) -> Option<Option<u16>> {
    let plain = route
        .protocols
        .iter()
        .any(|p| matches!(p, Protocol::Http | Protocol::Ws | Protocol::Grpc));
    let tls = route
        .protocols
        .iter()
        .any(|p| matches!(p, Protocol::Https | Protocol::Wss | Protocol::Grpcs));
    // `grpcs` without `https`/`wss`: Kong's https redirect does not apply; its gRPC
    // check answers plain gRPC requests instead.
    let grpcs_only_tls = !route
        .protocols
        .iter()
        .any(|p| matches!(p, Protocol::Https | Protocol::Wss))
        && route.protocols.contains(&Protocol::Grpcs);
    if plain || route.protocols.is_empty() || grpcs_only_tls {
        Some(None)
    } else if tls {
        Some(Some(route.https_redirect_status_code))
    } else {
        // Stream routes (tcp/tls/udp) are not HTTP routes at all.
        None
    }
}

impl Router {
    /// Compile every HTTP route of `config`. Routes whose service is disabled are left
    /// out, as Kong does.
    pub fn build(config: &Config) -> Result<Router, RouterError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut keyed: Vec<(Priority, usize, Entry, Vec<HostMatch>)> = Vec::new();

        for (index, route) in config.routes.iter().enumerate() {
            let Some(https_redirect) = http_disposition(route) else {
                continue;
            };
            let service = route
                .service
                .and_then(|i| config.services.get(i).map(|s| (i, s)));
            if service.is_some_and(|(_, s)| !s.enabled) {
                continue;
            }
            let name = route.name.clone().unwrap_or_else(|| route.id.clone());
            let mut headers = Vec::with_capacity(route.headers.len());
            for (header, values) in &route.headers {
                let header_name =
                    http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                        RouterError::HeaderName {
                            route: index,
                            name: name.clone(),
                            header: header.clone(),
                        }
                    })?;
                let mut matchers = Vec::with_capacity(values.len());
                for value in values {
                    matchers.push(match value {
                        HeaderValueMatch::Exact(v) => {
                            HeaderValueMatcher::Exact(v.to_ascii_lowercase().into())
                        }
                        HeaderValueMatch::Regex(src) => {
                            HeaderValueMatcher::Regex(Regex::new(&format!("(?i){src}")).map_err(
                                |e| RouterError::HeaderRegex {
                                    route: index,
                                    name: name.clone(),
                                    header: header.clone(),
                                    pattern: src.clone(),
                                    source: Box::new(e),
                                },
                            )?)
                        }
                    });
                }
                headers.push(HeaderMatcher {
                    name: header_name,
                    values: matchers,
                });
            }
            let methods = route
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect();
            let hosts: Vec<HostMatch> = route
                .hosts
                .iter()
                .map(|h| match h {
                    HostMatch::Exact(v) => HostMatch::Exact(v.to_ascii_lowercase()),
                    HostMatch::WildcardPrefix(v) => {
                        HostMatch::WildcardPrefix(v.to_ascii_lowercase())
                    }
                    HostMatch::WildcardSuffix(v) => {
                        HostMatch::WildcardSuffix(v.to_ascii_lowercase())
                    }
                })
                .collect();
            let plain_hosts_only =
                !hosts.is_empty() && hosts.iter().all(|h| matches!(h, HostMatch::Exact(_)));
            let fields = u8::from(!route.methods.is_empty())
                + u8::from(!route.hosts.is_empty())
                + u8::from(!route.paths.is_empty())
                + u8::from(!route.headers.is_empty())
                + u8::from(!route.snis.is_empty());
            let tls = route
                .protocols
                .iter()
                .any(|p| matches!(p, Protocol::Https | Protocol::Grpcs | Protocol::Wss));
            // Every host pattern indexes the route; no hosts = the any-host group.
            let host_keys: Vec<HostMatch> = hosts.clone();

            let route_index = routes.len() as u32;
            let path_kinds: Vec<PathKind> = if route.paths.is_empty() {
                vec![PathKind::Any]
            } else {
                let mut kinds = Vec::with_capacity(route.paths.len());
                for path in &route.paths {
                    kinds.push(match path {
                        PathMatch::Prefix(p) => PathKind::Prefix(p.as_str().into()),
                        PathMatch::Regex(src) => {
                            PathKind::Regex(Regex::new(&format!("^(?:{src})")).map_err(|e| {
                                RouterError::PathRegex {
                                    route: index,
                                    name: name.clone(),
                                    pattern: src.clone(),
                                    source: Box::new(e),
                                }
                            })?)
                        }
                    });
                }
                kinds
            };
            for path in path_kinds {
                let priority = Priority {
                    fields,
                    plain_hosts_only,
                    header_count: route.headers.len(),
                    regex: matches!(path, PathKind::Regex(_)),
                    regex_priority: if matches!(path, PathKind::Regex(_)) {
                        route.regex_priority
                    } else {
                        0
                    },
                    prefix_len: match &path {
                        PathKind::Prefix(p) => p.len(),
                        _ => 0,
                    },
                };
                keyed.push((
                    priority,
                    index,
                    Entry {
                        route: route_index,
                        path,
                    },
                    host_keys.clone(),
                ));
            }

            routes.push(CompiledRoute {
                info: Arc::new(RouteInfo {
                    route: RouteRef {
                        index: index as u32,
                        label: route_label(route),
                    },
                    service: service.map(|(i, s)| ServiceRef {
                        index: i as u32,
                        label: service_label(s),
                    }),
                    strip_path: route.strip_path,
                    preserve_host: route.preserve_host,
                    path_handling: if route.path_handling == "v1" {
                        PathHandling::V1
                    } else {
                        PathHandling::V0
                    },
                    https_redirect,
                    hedge_after: route.extensions.hedge_after,
                    retry_on_status: Arc::from(route.extensions.retry_on_status.as_slice()),
                    grpc: route
                        .protocols
                        .iter()
                        .any(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs))
                        .then(|| GrpcRoute {
                            plain: route.protocols.contains(&Protocol::Grpc),
                        }),
                }),
                methods,
                hosts,
                headers,
                tls,
                snis: route.snis.clone(),
            });
        }

        // Highest priority first; equal priorities keep configuration order (stable sort
        // on the route index, then the path order inside the route).
        keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

        let mut router = Router {
            routes,
            entries: Vec::with_capacity(keyed.len()),
            by_host: HashMap::new(),
            by_wildcard_prefix: HashMap::new(),
            by_wildcard_suffix: HashMap::new(),
            any_host: Group::default(),
            host_bound: false,
        };
        for (rank, (_, _, entry, host_keys)) in keyed.into_iter().enumerate() {
            let rank = rank as u32;
            if host_keys.is_empty() {
                router.any_host.add(rank, &entry.path);
            } else {
                for key in host_keys {
                    let (map, key) = match key {
                        HostMatch::Exact(v) => (&mut router.by_host, v),
                        HostMatch::WildcardPrefix(v) => (&mut router.by_wildcard_prefix, v),
                        HostMatch::WildcardSuffix(v) => (&mut router.by_wildcard_suffix, v),
                    };
                    map.entry(key.into_boxed_str())
                        .or_default()
                        .add(rank, &entry.path);
                }
            }
            router.entries.push(entry);
        }
        router.any_host.finish()?;
        for group in router
            .by_host
            .values_mut()
            .chain(router.by_wildcard_prefix.values_mut())
            .chain(router.by_wildcard_suffix.values_mut())
        {
            group.finish()?;
        }
        router.host_bound = !(router.by_host.is_empty()
            && router.by_wildcard_prefix.is_empty()
            && router.by_wildcard_suffix.is_empty());
        Ok(router)
    }

    /// Number of compiled HTTP routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Find the highest-priority route matching a request of the plain listener.
    pub fn find(&self, request: RequestFacts<'_>) -> Option<RouteMatch<'_>> {
        self.find_on(request, Listener::Plain)
    }

    /// Find the highest-priority route matching a request of `listener`.
    pub fn find_on(
        &self,
        request: RequestFacts<'_>,
        listener: Listener<'_>,
    ) -> Option<RouteMatch<'_>> {
        // Only host-bound routes read the host (`route.hosts` is empty for every route
        // when `host_bound` is false), so without any there is nothing to normalise.
        let host = if self.host_bound {
            normalize_host(request.host)
        } else {
            std::borrow::Cow::Borrowed("")
        };
        let host = host.as_ref();
        let mut candidates = Candidates::new();
        if let Some(group) = self.host_bound.then(|| self.by_host.get(host)).flatten() {
            group.candidates(request.path, &mut candidates);
        }
        if !self.by_wildcard_prefix.is_empty() {
            // ".b.example.com", ".example.com", ".com" for "a.b.example.com"; the key must
            // leave at least one character in front (a wildcard stands for a label).
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(group) = host.get(i..).and_then(|k| self.by_wildcard_prefix.get(k)) {
                    group.candidates(request.path, &mut candidates);
                }
            }
        }
        if !self.by_wildcard_suffix.is_empty() {
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i + 1 < host.len()) {
                if let Some(group) = host.get(..=i).and_then(|k| self.by_wildcard_suffix.get(k)) {
                    group.candidates(request.path, &mut candidates);
                }
            }
        }
        self.any_host.candidates(request.path, &mut candidates);
        let candidates = candidates.as_mut_slice();
        candidates.sort_unstable();

        let mut previous = None;
        for &rank in candidates.iter() {
            // A rank indexed under several of the request's groups (two matching host
            // patterns) is checked once.
            if previous.replace(rank) == Some(rank) {
                continue;
            }
            let Some(entry) = self.entries.get(rank as usize) else {
                continue;
            };
            let Some(route) = self.routes.get(entry.route as usize) else {
                continue;
            };
            if let Listener::Tls { sni } = listener {
                if !route.tls {
                    continue;
                }
                if !route.snis.is_empty()
                    && !sni.is_some_and(|sni| route.snis.iter().any(|n| n.matches(sni)))
                {
                    continue;
                }
            }
            if !route.methods.is_empty() && !route.methods.iter().any(|m| m == request.method) {
                continue;
            }
            if !route.hosts.is_empty() && !route.hosts.iter().any(|h| host_matches(h, host)) {
                continue;
            }
            if !route
                .headers
                .iter()
                .all(|matcher| header_matches(matcher, request.headers))
            {
                continue;
            }
            let (matched_len, captures) = match &entry.path {
                PathKind::Any => (0, Vec::new()),
                PathKind::Prefix(p) => {
                    if !request.path.starts_with(p.as_ref()) {
                        continue;
                    }
                    (p.len(), Vec::new())
                }
                PathKind::Regex(re) => {
                    let Some(caps) = re.captures(request.path) else {
                        continue;
                    };
                    let matched_len = caps.get(0).map_or(0, |m| m.end());
                    (matched_len, collect_captures(re, &caps))
                }
            };
            return Some(RouteMatch {
                info: &route.info,
                matched_len,
                captures,
            });
        }
        None
    }
}

fn collect_captures(re: &Regex, caps: &regex::Captures<'_>) -> Vec<(Option<Box<str>>, Box<str>)> {
    if re.captures_len() <= 1 {
        return Vec::new();
    }
    re.capture_names()
        .enumerate()
        .skip(1)
        .filter_map(|(i, name)| {
            caps.get(i)
                .map(|m| (name.map(Box::from), Box::from(m.as_str())))
        })
        .collect()
}

/// The `Host` header without its port, lower-cased (borrowed when already lower case).
fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop the port after them.
        match rest.find(']') {
            Some(end) => host.get(..end + 2).unwrap_or(host),
            None => host,
        }
    } else {
        // A byte search: ':' is ASCII, and a `char` search from the end costs more.
        match host.as_bytes().iter().rposition(|&b| b == b':') {
            Some(colon) => host.get(..colon).unwrap_or(host),
            None => host,
        }
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(without_port)
    }
}

fn host_matches(pattern: &HostMatch, host: &str) -> bool {
    match pattern {
        HostMatch::Exact(v) => v == host,
        HostMatch::WildcardPrefix(suffix) => {
            host.len() > suffix.len() && host.ends_with(suffix.as_str())
        }
        HostMatch::WildcardSuffix(prefix) => {
            host.len() > prefix.len() && host.starts_with(prefix.as_str())
        }
    }
}

fn header_matches(matcher: &HeaderMatcher, headers: HeaderView<'_>) -> bool {
    headers.values(matcher.name.as_str()).any(|value| {
        let Some(value) = crate::wire::header_str(value) else {
            return false;
        };
        matcher.values.iter().any(|expected| match expected {
            HeaderValueMatcher::Exact(v) => value.eq_ignore_ascii_case(v),
            HeaderValueMatcher::Regex(re) => re.is_match(value),
        })
    })
}

/// Build the upstream path (without query) from the request path, the match and the
/// service path, following Kong's `strip_path` and `path_handling`. Both versions
/// collapse the double slash that joining can produce.
pub fn upstream_path(
    request_path: &str,
    matched_len: usize,
    strip_path: bool,
    handling: PathHandling,
    service_path: Option<&str>,
) -> String {
    upstream_path_parts(
        request_path,
        matched_len,
        strip_path,
        handling,
        service_path,
    )
    .concat()
}

/// [`upstream_path`] as the three pieces that make it, in order, for a caller that
/// writes the path straight into a request head (no `String` per request).
pub fn upstream_path_parts<'a>(
    request_path: &'a str,
    matched_len: usize,
    strip_path: bool,
    handling: PathHandling,
    service_path: Option<&'a str>,
) -> [&'a str; 3] {
    let rest = if strip_path {
        request_path.get(matched_len..).unwrap_or("")
    } else {
        request_path
    };
    let base = service_path.unwrap_or("/");
    if rest.is_empty() {
        return [base, "", ""];
    }
    match handling {
        PathHandling::V0 => match (base.ends_with('/'), rest.strip_prefix('/')) {
            (true, Some(tail)) => [base, "", tail],
            (false, None) => [base, "/", rest],
            _ => [base, "", rest],
        },
        // v1 concatenates without a separator, dropping the rest's leading slash
        // ("/s" + "/fv1req" = "/sfv1req").
        PathHandling::V1 => [base, "", rest.strip_prefix('/').unwrap_or(rest)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use std::time::Duration;

    fn route(name: &str) -> Route {
        Route {
            id: format!("id-{name}"),
            name: Some(name.to_owned()),
            service: Some(0),
            protocols: vec![Protocol::Http, Protocol::Https],
            methods: Vec::new(),
            hosts: Vec::new(),
            paths: Vec::new(),
            headers: Vec::new(),
            strip_path: true,
            preserve_host: false,
            regex_priority: 0,
            path_handling: "v0".into(),
            https_redirect_status_code: 426,
            snis: Vec::new(),
            tags: Vec::new(),
            extensions: Default::default(),
        }
    }

    fn config(routes: Vec<Route>) -> Config {
        Config {
            format_version: "3.0".into(),
            services: vec![Service {
                id: "svc".into(),
                name: Some("svc".into()),
                protocol: Protocol::Http,
                host: "127.0.0.1".into(),
                port: 80,
                path: None,
                retries: 5,
                connect_timeout: Duration::from_secs(60),
                write_timeout: Duration::from_secs(60),
                read_timeout: Duration::from_secs(60),
                enabled: true,
                tags: Vec::new(),
                upstream: None,
                tls: Default::default(),
            }],
            routes,
            upstreams: Vec::new(),
            plugins: Vec::new(),
            certificates: Vec::new(),
            snis: Vec::new(),
            ca_certificates: Vec::new(),
            upstream_client_certificates: Vec::new(),
            hash: String::new(),
            source: Arc::from(""),
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn regex(p: &str) -> PathMatch {
        PathMatch::Regex(p.into())
    }

    fn find(
        router: &Router,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        router
            .find(RequestFacts {
                method: &method,
                host,
                path,
                headers: HeaderView::Map(&map),
            })
            .map(|m| m.info.route.label.to_string())
    }

    /// Each case: routes (built by the closure), then (method, host, path, headers) →
    /// expected route name. Mirrors the order Kong documents.
    #[test]
    fn kong_priority_order() {
        struct Case {
            why: &'static str,
            routes: Vec<Route>,
            request: (
                &'static str,
                &'static str,
                &'static str,
                Vec<(&'static str, &'static str)>,
            ),
            expect: Option<&'static str>,
        }
        let r = |name: &str, f: &dyn Fn(&mut Route)| {
            let mut route = route(name);
            f(&mut route);
            route
        };
        let cases = vec![
            Case {
                why: "longest prefix wins",
                routes: vec![
                    r("short", &|r| r.paths = vec![prefix("/a")]),
                    r("long", &|r| r.paths = vec![prefix("/a/b")]),
                ],
                request: ("GET", "x", "/a/b/c", vec![]),
                expect: Some("long"),
            },
            Case {
                why: "more fields beat a longer prefix",
                routes: vec![
                    r("path", &|r| r.paths = vec![prefix("/a/b/c")]),
                    r("path+method", &|r| {
                        r.paths = vec![prefix("/a")];
                        r.methods = vec!["GET".into()];
                    }),
                ],
                request: ("GET", "x", "/a/b/c", vec![]),
                expect: Some("path+method"),
            },
            Case {
                why: "plain host beats wildcard host",
                routes: vec![
                    r("wild", &|r| {
                        r.hosts = vec![HostMatch::WildcardPrefix(".x.com".into())]
                    }),
                    r("plain", &|r| {
                        r.hosts = vec![HostMatch::Exact("a.x.com".into())]
                    }),
                ],
                request: ("GET", "a.x.com:8000", "/", vec![]),
                expect: Some("plain"),
            },
            Case {
                why: "more headers win",
                routes: vec![
                    r("one", &|r| {
                        r.headers = vec![("x-a".into(), vec![HeaderValueMatch::Exact("1".into())])]
                    }),
                    r("two", &|r| {
                        r.headers = vec![
                            ("x-a".into(), vec![HeaderValueMatch::Exact("1".into())]),
                            ("x-b".into(), vec![HeaderValueMatch::Exact("2".into())]),
                        ]
                    }),
                ],
                request: ("GET", "x", "/", vec![("x-a", "1"), ("x-b", "2")]),
                expect: Some("two"),
            },
            Case {
                why: "regex beats a longer prefix",
                routes: vec![
                    r("prefix", &|r| r.paths = vec![prefix("/users/123/orders")]),
                    r("regex", &|r| r.paths = vec![regex(r"/users/\d+")]),
                ],
                request: ("GET", "x", "/users/123/orders", vec![]),
                expect: Some("regex"),
            },
            Case {
                why: "regex_priority orders regexes",
                routes: vec![
                    r("low", &|r| r.paths = vec![regex(r"/users/\d+")]),
                    r("high", &|r| {
                        r.paths = vec![regex(r"/users/.*")];
                        r.regex_priority = 10;
                    }),
                ],
                request: ("GET", "x", "/users/1", vec![]),
                expect: Some("high"),
            },
            Case {
                why: "equal priority keeps config order",
                routes: vec![
                    r("first", &|r| r.paths = vec![prefix("/same")]),
                    r("second", &|r| r.paths = vec![prefix("/same")]),
                ],
                request: ("GET", "x", "/same", vec![]),
                expect: Some("first"),
            },
            Case {
                why: "regex is anchored at the start",
                routes: vec![r("regex", &|r| r.paths = vec![regex("/b")])],
                request: ("GET", "x", "/a/b", vec![]),
                expect: None,
            },
            Case {
                why: "fields are AND'ed: method mismatch rejects",
                routes: vec![r("post", &|r| {
                    r.paths = vec![prefix("/")];
                    r.methods = vec!["POST".into()];
                })],
                request: ("GET", "x", "/", vec![]),
                expect: None,
            },
            Case {
                why: "values are OR'ed and headers case-insensitive",
                routes: vec![r("h", &|r| {
                    r.headers = vec![(
                        "x-version".into(),
                        vec![
                            HeaderValueMatch::Exact("v1".into()),
                            HeaderValueMatch::Exact("V2".into()),
                        ],
                    )]
                })],
                request: ("GET", "x", "/", vec![("X-Version", "v2")]),
                expect: Some("h"),
            },
            Case {
                why: "header regex (~*) is case-insensitive",
                routes: vec![r("h", &|r| {
                    r.headers = vec![(
                        "x-v".into(),
                        vec![HeaderValueMatch::Regex("^beta-\\d+$".into())],
                    )]
                })],
                request: ("GET", "x", "/", vec![("x-v", "BETA-7")]),
                expect: Some("h"),
            },
            Case {
                why: "suffix wildcard host",
                routes: vec![r("w", &|r| {
                    r.hosts = vec![HostMatch::WildcardSuffix("api.".into())]
                })],
                request: ("GET", "API.example.org", "/", vec![]),
                expect: Some("w"),
            },
            Case {
                why: "wildcard needs at least one label",
                routes: vec![r("w", &|r| {
                    r.hosts = vec![HostMatch::WildcardPrefix(".x.com".into())]
                })],
                request: ("GET", ".x.com", "/", vec![]),
                expect: None,
            },
            Case {
                why: "each path of a route competes with its own priority",
                routes: vec![
                    r("multi", &|r| {
                        r.paths = vec![prefix("/a"), prefix("/zzzzzzzz")]
                    }),
                    r("mid", &|r| r.paths = vec![prefix("/a/b")]),
                ],
                request: ("GET", "x", "/a/b", vec![]),
                expect: Some("mid"),
            },
            Case {
                why: "disabled protocol family: stream routes are ignored",
                routes: vec![r("tcp", &|r| {
                    r.protocols = vec![Protocol::Tcp];
                    r.paths = vec![prefix("/")];
                })],
                request: ("GET", "x", "/", vec![]),
                expect: None,
            },
        ];
        for case in cases {
            let router = Router::build(&config(case.routes)).unwrap();
            let (method, host, path, headers) = case.request;
            assert_eq!(
                find(&router, method, host, path, &headers).as_deref(),
                case.expect,
                "{}",
                case.why
            );
        }
    }

    proptest::proptest! {
        /// Whatever a client sends as host, path and header values, matching neither
        /// panics nor returns a route whose path does not fit.
        #[test]
        fn arbitrary_requests_never_panic(
            host in "\\PC{0,40}",
            path in "\\PC{0,60}",
            value in "[ -~]{0,20}",
        ) {
            let mut a = route("a");
            a.paths = vec![prefix("/a")];
            a.hosts = vec![HostMatch::WildcardPrefix(".x.com".into()), HostMatch::Exact("h".into())];
            let mut b = route("b");
            b.paths = vec![regex(r"/u/(?<id>\d+)")];
            let mut c = route("c");
            c.headers = vec![("x-v".into(), vec![HeaderValueMatch::Regex("^v[0-9]$".into())])];
            c.hosts = vec![HostMatch::WildcardSuffix("api.".into())];
            let router = Router::build(&config(vec![a, b, c])).unwrap();
            let mut headers = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                headers.insert("x-v", v);
            }
            if let Some(m) = router.find(RequestFacts { method: &Method::GET, host: &host, path: &path, headers: HeaderView::Map(&headers) }) {
                proptest::prop_assert!(m.matched_len <= path.len());
            }
        }
    }

    #[test]
    fn regex_literal_prefixes_are_conservative() {
        let cases = [
            (r"/users/\d+", Some("/users/")),
            (r"/api/v1\.0/(?<x>.*)", Some("/api/v1.0/")),
            (r"/colou?r", Some("/colo")),
            (r"/a|/b", None),
            (r"(?i)/case", None),
            (r"\d+", None),
            (r"/files{2}", Some("/file")),
        ];
        for (src, expected) in cases {
            assert_eq!(regex_literal_prefix(src).as_deref(), expected, "{src}");
        }
    }

    #[test]
    fn wildcard_hosts_match_through_the_index() {
        let mut a = route("deep");
        a.hosts = vec![HostMatch::WildcardPrefix(".example.com".into())];
        let mut b = route("suffix");
        b.hosts = vec![HostMatch::WildcardSuffix("api.".into())];
        let router = Router::build(&config(vec![a, b])).unwrap();
        assert_eq!(
            find(&router, "GET", "a.b.example.com", "/", &[]).as_deref(),
            Some("deep")
        );
        assert_eq!(
            find(&router, "GET", "api.example.co.uk", "/", &[]).as_deref(),
            Some("suffix")
        );
        assert_eq!(find(&router, "GET", "example.com", "/", &[]), None);
        assert_eq!(find(&router, "GET", "api.", "/", &[]), None);
    }

    #[test]
    fn candidates_beyond_the_inline_array_keep_rank_order() {
        // More nested prefixes along one path than `Candidates` holds inline, each in
        // two host groups (a plain host and a wildcard both matching), so the lookup
        // spills to the heap and sees every rank twice.
        let depth = INLINE_CANDIDATES + 4;
        let routes: Vec<Route> = (1..=depth)
            .map(|i| {
                let mut r = route(&format!("d{i}"));
                r.paths = vec![prefix(&"/a".repeat(i))];
                r.hosts = vec![
                    HostMatch::Exact("h.example.com".into()),
                    HostMatch::WildcardPrefix(".example.com".into()),
                ];
                r
            })
            .collect();
        let router = Router::build(&config(routes)).unwrap();
        let deepest = format!("d{depth}");
        let path = "/a".repeat(depth + 2);
        assert_eq!(
            find(&router, "GET", "h.example.com", &path, &[]).as_deref(),
            Some(deepest.as_str())
        );
        assert_eq!(
            find(&router, "GET", "h.example.com", "/a/a/a", &[]).as_deref(),
            Some("d3")
        );
    }

    #[test]
    fn regex_captures_are_kept() {
        let mut r = route("cap");
        r.paths = vec![regex(r"/users/(?<id>\d+)/(\w+)")];
        let router = Router::build(&config(vec![r])).unwrap();
        let method = Method::GET;
        let headers = HeaderMap::new();
        let m = router
            .find(RequestFacts {
                method: &method,
                host: "x",
                path: "/users/42/orders/9",
                headers: HeaderView::Map(&headers),
            })
            .unwrap();
        assert_eq!(m.matched_len, "/users/42/orders".len());
        assert_eq!(
            m.captures,
            vec![(Some("id".into()), "42".into()), (None, "orders".into())]
        );
    }

    #[test]
    fn bad_regex_points_at_the_route() {
        let mut r = route("broken");
        r.paths = vec![regex("/a(")];
        let err = Router::build(&config(vec![r])).unwrap_err().to_string();
        assert!(err.contains("routes[0] (broken)"), "{err}");
    }

    #[test]
    fn https_only_route_is_flagged() {
        let mut r = route("secure");
        r.protocols = vec![Protocol::Https];
        r.paths = vec![prefix("/")];
        let router = Router::build(&config(vec![r])).unwrap();
        let headers = HeaderMap::new();
        let m = router
            .find(RequestFacts {
                method: &Method::GET,
                host: "x",
                path: "/",
                headers: HeaderView::Map(&headers),
            })
            .unwrap();
        assert_eq!(m.info.https_redirect, Some(426));
    }

    fn find_tls(router: &Router, path: &str, sni: Option<&str>) -> Option<String> {
        let headers = HeaderMap::new();
        router
            .find_on(
                RequestFacts {
                    method: &Method::GET,
                    host: "x",
                    path,
                    headers: HeaderView::Map(&headers),
                },
                Listener::Tls { sni },
            )
            .map(|m| m.info.route.label.to_string())
    }

    #[test]
    fn the_tls_listener_takes_only_routes_with_https() {
        let mut plain = route("plain");
        plain.protocols = vec![Protocol::Http];
        plain.paths = vec![prefix("/p")];
        let mut both = route("both");
        both.paths = vec![prefix("/b")];
        let mut secure = route("secure");
        secure.protocols = vec![Protocol::Https];
        secure.paths = vec![prefix("/s")];
        let router = Router::build(&config(vec![plain, both, secure])).unwrap();
        assert_eq!(find_tls(&router, "/p", Some("a.test")), None);
        assert_eq!(find_tls(&router, "/b", None).as_deref(), Some("both"));
        assert_eq!(find_tls(&router, "/s", None).as_deref(), Some("secure"));
        // The plain listener still sees the http-only route.
        assert_eq!(
            find(&router, "GET", "x", "/p", &[]).as_deref(),
            Some("plain")
        );
    }

    #[test]
    fn route_snis_filter_on_tls_only_and_count_as_a_field() {
        let mut by_sni = route("by-sni");
        by_sni.protocols = vec![Protocol::Https];
        by_sni.snis = vec![
            SniName::Exact("a.test".into()),
            SniName::WildcardPrefix(".w.test".into()),
        ];
        by_sni.paths = vec![prefix("/")];
        let mut fallback = route("fallback");
        fallback.paths = vec![prefix("/")];
        // Config order puts the fallback first; the sni field outranks it.
        let router = Router::build(&config(vec![fallback, by_sni])).unwrap();
        assert_eq!(
            find_tls(&router, "/x", Some("a.test")).as_deref(),
            Some("by-sni")
        );
        assert_eq!(
            find_tls(&router, "/x", Some("z.w.test")).as_deref(),
            Some("by-sni")
        );
        assert_eq!(
            find_tls(&router, "/x", Some("b.test")).as_deref(),
            Some("fallback")
        );
        assert_eq!(find_tls(&router, "/x", None).as_deref(), Some("fallback"));
        // Plain listener: snis are not considered, the https-only route wins and
        // redirects.
        let headers = HeaderMap::new();
        let m = router
            .find(RequestFacts {
                method: &Method::GET,
                host: "x",
                path: "/x",
                headers: HeaderView::Map(&headers),
            })
            .unwrap();
        assert_eq!(&*m.info.route.label, "by-sni");
        assert_eq!(m.info.https_redirect, Some(426));
    }

    #[test]
    fn kong_v0_and_v1_path_table() {
        // Kong's documented table (admin-api docs, path_handling).
        let cases = [
            (
                "/s",
                "/fv0",
                false,
                PathHandling::V0,
                "/fv0req",
                "/s/fv0req",
            ),
            ("/s", "/fv1", false, PathHandling::V1, "/fv1req", "/sfv1req"),
            ("/s", "/tv0", true, PathHandling::V0, "/tv0req", "/s/req"),
            ("/s", "/tv1", true, PathHandling::V1, "/tv1req", "/sreq"),
            (
                "/s",
                "/fv0/",
                false,
                PathHandling::V0,
                "/fv0/req",
                "/s/fv0/req",
            ),
            (
                "/s",
                "/fv1/",
                false,
                PathHandling::V1,
                "/fv1/req",
                "/sfv1/req",
            ),
            ("/s", "/tv0/", true, PathHandling::V0, "/tv0/req", "/s/req"),
            ("/s", "/tv1/", true, PathHandling::V1, "/tv1/req", "/sreq"),
        ];
        for (service, route_path, strip, handling, request, expected) in cases {
            assert_eq!(
                upstream_path(request, route_path.len(), strip, handling, Some(service)),
                expected,
                "service {service} route {route_path} request {request}"
            );
        }
        assert_eq!(upstream_path("/api", 4, true, PathHandling::V0, None), "/");
        assert_eq!(
            upstream_path("/api/x", 4, true, PathHandling::V0, None),
            "/x"
        );
        assert_eq!(
            upstream_path("/api/x", 4, false, PathHandling::V0, None),
            "/api/x"
        );
    }

    #[test]
    fn many_routes_stay_correct() {
        let routes: Vec<Route> = (0..2000)
            .map(|i| {
                let mut r = route(&format!("r{i}"));
                if i % 2 == 0 {
                    r.hosts = vec![HostMatch::Exact(format!("h{i}.example.com"))];
                }
                r.paths = vec![prefix(&format!("/svc{i}/"))];
                r
            })
            .collect();
        let router = Router::build(&config(routes)).unwrap();
        assert_eq!(
            find(&router, "GET", "h10.example.com", "/svc10/x", &[]).as_deref(),
            Some("r10")
        );
        assert_eq!(
            find(&router, "GET", "other", "/svc11/x", &[]).as_deref(),
            Some("r11")
        );
        assert_eq!(
            find(&router, "GET", "other", "/svc10/x", &[]),
            None,
            "host-bound route"
        );
        assert_eq!(find(&router, "GET", "other", "/nothing", &[]), None);
    }
}
