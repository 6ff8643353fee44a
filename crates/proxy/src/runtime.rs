//! One configuration generation, compiled for the hot path.
//!
//! A [`Runtime`] holds everything a request needs that only changes on reload: the
//! compiled router and, per service, its timeouts, retry policy and where it sends
//! traffic. It is built completely off the hot path and swapped in with one `ArcSwap`
//! store; a request loads it once and keeps that generation to the end, so a reload
//! never changes the rules under a request in flight.
//!
//! Per-upstream state that must outlive a generation (the snapshot the controller
//! publishes, the retry budget) lives in an [`UpstreamSlot`] that successive runtimes
//! share by upstream name.
//!
//! The TLS listener's certificates ([`CertStore`]) are compiled here too, so a reload
//! swaps routes and certificates together.
//!
//! A `grpc`/`grpcs` service is marked [`ServiceRuntime::grpc`]: its requests take the
//! HTTP/2 upstream path ([`crate::h2`]) instead of the HTTP/1.1 client.
//!
//! An `https` (or `grpcs`) service gets an [`UpstreamTls`] here (its `tls_verify`, `tls_verify_depth`,
//! `ca_certificates` and client certificate, the upstream's `client_certificate` when the
//! service names none, as Kong's `fallback_upstream_client_cert` does), and its `Host`
//! values follow the https default port (443 is not written).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use sluice_config::model::{Config, Protocol, Service};
use sluice_core::UpstreamSnapshot;
use sluice_core::retry::{RetryBudget, RetryBudgetPolicy, RetryPolicy};
use sluice_core::snapshot::Mode;
use sluice_core::topology::{Algorithm, HashOn, UpstreamSpec};

use crate::headers::host_header_for;
use crate::router::{Router, RouterError, service_label};
use crate::tls::{ClientIdentity, DEFAULT_VERIFY_DEPTH, TlsSettings, UpstreamTls};
use crate::tls_server::CertStore;

/// The per-upstream state shared by every generation that has this upstream.
#[derive(Debug)]
pub struct UpstreamSlot {
    pub name: Arc<str>,
    /// Latest snapshot published by the controller.
    pub snapshot: ArcSwap<UpstreamSnapshot>,
    /// Retry budget, replaced only when its policy changes.
    budget: ArcSwap<BudgetCell>,
    /// How this upstream's addresses are dialled, for probes and warm standby; replaced
    /// by every generation.
    pub tls: ArcSwap<SlotTls>,
}

/// The connection facts of an upstream that outlive a request: read by the warm standby
/// task and by active `https` probes.
#[derive(Debug, Default)]
pub struct SlotTls {
    /// The distinct ways services dial this upstream: `None` plain, `Some` TLS with
    /// those settings. Empty when no service uses the upstream (warming then stays plain).
    pub kinds: Vec<Option<Arc<UpstreamTls>>>,
    /// `upstreams[].host_header`: the server name of TLS connections when set.
    pub host_header: Option<Arc<str>>,
    /// `upstreams[].client_certificate`, presented by active `https` probes.
    pub client_certificate: Option<Arc<ClientIdentity>>,
    /// Only gRPC services use the upstream: warm standby opens nothing for it (its
    /// connections are HTTP/2 ones, opened by the first call; a plain TCP connection
    /// held open to an h2 or TLS port would only be noise to the backend).
    pub grpc_only: bool,
}

#[derive(Debug)]
struct BudgetCell {
    policy: RetryBudgetPolicy,
    budget: RetryBudget,
}

impl UpstreamSlot {
    fn new(name: Arc<str>, policy: &RetryBudgetPolicy) -> Self {
        UpstreamSlot {
            snapshot: ArcSwap::from_pointee(empty_snapshot(name.clone())),
            name,
            budget: ArcSwap::from_pointee(BudgetCell {
                policy: policy.clone(),
                budget: RetryBudget::new(policy),
            }),
            tls: ArcSwap::from_pointee(SlotTls::default()),
        }
    }

    /// Count one request against the budget.
    pub fn deposit(&self, now: sluice_core::Instant) {
        self.budget.load().budget.deposit(now);
    }

    /// Ask for one retry or hedge.
    pub fn try_withdraw(&self, now: sluice_core::Instant) -> bool {
        self.budget.load().budget.try_withdraw(now)
    }

    fn set_policy(&self, policy: &RetryBudgetPolicy) {
        if self.budget.load().policy != *policy {
            self.budget.store(Arc::new(BudgetCell {
                policy: policy.clone(),
                budget: RetryBudget::new(policy),
            }));
        }
    }
}

/// The snapshot an upstream has before the controller published one: no address, so
/// requests get Kong's 503 instead of going anywhere unvetted.
pub fn empty_snapshot(name: Arc<str>) -> UpstreamSnapshot {
    UpstreamSnapshot {
        version: 0,
        name,
        algorithm: Algorithm::RoundRobin,
        addresses: Vec::new(),
        tiers: Vec::new(),
        mode: Mode::Unavailable,
        balancer_healthy: false,
        hash_tables: Vec::new(),
    }
}

/// Every upstream slot by name; consulted on reload and by the driver, never per request.
#[derive(Debug, Default)]
pub struct Slots {
    map: Mutex<HashMap<Arc<str>, Arc<UpstreamSlot>>>,
}

impl Slots {
    /// The slot for `spec`, created if new; its budget policy follows the spec.
    pub fn ensure(&self, spec: &UpstreamSpec) -> Arc<UpstreamSlot> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map
            .entry(spec.name.clone())
            .or_insert_with(|| {
                Arc::new(UpstreamSlot::new(
                    spec.name.clone(),
                    &spec.failover.retry_budget,
                ))
            })
            .clone();
        slot.set_policy(&spec.failover.retry_budget);
        slot
    }

    /// Store a published snapshot unless the slot already holds a newer one. Unknown
    /// upstreams are ignored: the slot is created before the controller hears of the
    /// upstream.
    ///
    /// Why the version check: the controller makes snapshots under its lock, but their
    /// `Publish` actions are carried out after it is released, by whichever thread applied
    /// the event (a request's task in `Core::report_attempt`, the driver's batch or tick).
    /// Two threads can therefore arrive here in the opposite order of their snapshots
    /// when one is preempted between the two steps (a loaded machine; seen in a loaded
    /// demo run as version 5 arriving after version 10). As the controller publishes only
    /// on change, the older snapshot would then stay in force until the next change: a
    /// pre-failover one keeps requests trying the dead region first and sends them to it
    /// again the moment it comes back, during the failback hold-down, with no
    /// decision saying so. Versions strictly increase (one counter for the whole
    /// controller), and every store happens here under `map`'s lock, so keeping the
    /// highest version is exact.
    pub fn publish(&self, snapshot: Arc<UpstreamSnapshot>) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.get(&snapshot.name) {
            let held = slot.snapshot.load().version;
            if snapshot.version >= held {
                slot.snapshot.store(snapshot);
            } else {
                tracing::debug!(
                    upstream = %snapshot.name,
                    late = snapshot.version,
                    held,
                    "an older snapshot arrived after a newer one; kept the newer"
                );
            }
        }
    }

    /// Forget an upstream (requests still holding the slot keep their `Arc`).
    pub fn remove(&self, name: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(name);
    }

    /// Latest snapshot of every upstream with how its addresses are dialled.
    pub fn snapshots_with_tls(&self) -> Vec<(Arc<UpstreamSnapshot>, Arc<SlotTls>)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map
            .values()
            .map(|s| (s.snapshot.load_full(), s.tls.load_full()))
            .collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        all
    }

    /// The `client_certificate` of upstream `name`, for its active `https` probes.
    pub fn client_certificate(&self, name: &str) -> Option<Arc<ClientIdentity>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .and_then(|slot| slot.tls.load().client_certificate.clone())
    }

    /// Latest snapshot of every upstream.
    pub fn snapshots(&self) -> Vec<Arc<UpstreamSnapshot>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.values().map(|s| s.snapshot.load_full()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// An upstream as one generation uses it.
#[derive(Debug)]
pub struct UpstreamRuntime {
    pub slot: Arc<UpstreamSlot>,
    /// The upstream hashes requests (`consistent-hashing`): the request key is computed.
    pub consistent_hashing: bool,
    pub hash_on: HashOn,
    pub hash_fallback: HashOn,
    /// `upstreams[].host_header`, ready to send.
    pub host_header: Option<HeaderValue>,
    /// `Host` for each target (by target index): hostname or IP, `:port` unless 80.
    pub target_hosts: Vec<Option<HeaderValue>>,
    /// The same for `https` services: `:port` unless 443.
    pub target_hosts_tls: Vec<Option<HeaderValue>>,
}

/// Where a service sends its traffic.
#[derive(Debug)]
pub enum ServiceTarget {
    /// `host` names an upstream: balanced by the controller's snapshots.
    Upstream(Arc<UpstreamRuntime>),
    /// `host` is an IP literal: used as is (a one-element list, shared so a request
    /// does not allocate one).
    Address {
        addrs: Arc<[SocketAddr]>,
        host_header: Option<HeaderValue>,
    },
    /// `host` is a hostname: resolved (cached by TTL) per request.
    Dns {
        host: Arc<str>,
        port: u16,
        host_header: Option<HeaderValue>,
    },
    /// A protocol this data plane does not forward (tcp, tls, udp...).
    Unsupported(Protocol),
}

/// A service as one generation uses it.
#[derive(Debug)]
pub struct ServiceRuntime {
    pub label: Arc<str>,
    pub path: Option<Box<str>>,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    pub target: ServiceTarget,
    /// TLS settings of an `https` or `grpcs` service (`None`: plain HTTP).
    pub tls: Option<Arc<UpstreamTls>>,
    /// A `grpc`/`grpcs` service: forwarded over HTTP/2 (h2c with prior knowledge, or
    /// TLS with ALPN `h2`), never with the HTTP/1.1 client.
    pub grpc: bool,
}

/// One compiled configuration generation.
#[derive(Debug)]
pub struct Runtime {
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Router,
    /// Indexed like `config.services`.
    pub services: Vec<ServiceRuntime>,
    /// The TLS listener's certificates by server name (`snis`).
    pub certs: CertStore,
}

/// The TLS settings of an `https` service, shared with every other service (of this or
/// an earlier generation) that has the same ones.
fn service_tls(
    config: &Config,
    service: &Service,
    identities: &[Arc<ClientIdentity>],
) -> Arc<UpstreamTls> {
    let client = service
        .tls
        .client_certificate
        .or_else(|| {
            service.upstream.and_then(|u| {
                config
                    .upstream_client_certificates
                    .get(u)
                    .copied()
                    .flatten()
            })
        })
        .and_then(|i| identities.get(i).cloned());
    UpstreamTls::shared(TlsSettings {
        // Kong: null leaves nginx's `proxy_ssl_verify`, which is off.
        verify: service.tls.verify.unwrap_or(false),
        verify_depth: service.tls.verify_depth.unwrap_or(DEFAULT_VERIFY_DEPTH),
        ca_certificates: service
            .tls
            .ca_certificates
            .iter()
            .filter_map(|&i| config.ca_certificates.get(i))
            .map(|ca| ca.cert.clone())
            .collect(),
        client,
    })
}

/// `Host` for an `https` upstream: Kong leaves out the scheme's default port, 443.
fn https_host_header(host: &str, port: u16) -> Option<HeaderValue> {
    let bracketed = host.contains(':') && !host.starts_with('[');
    let text = match (port, bracketed) {
        (443, false) => return HeaderValue::from_str(host).ok(),
        (443, true) => format!("[{host}]"),
        (_, false) => format!("{host}:{port}"),
        (_, true) => format!("[{host}]:{port}"),
    };
    HeaderValue::from_str(&text).ok()
}

/// Why a configuration could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("services[{index}] ({name}): upstream index {upstream} does not exist")]
    DanglingUpstream {
        index: usize,
        name: String,
        upstream: usize,
    },
}

impl Runtime {
    /// Compile `config`. Slots for its upstreams are created in `slots` (they stay empty
    /// until the controller publishes).
    pub fn build(
        config: Arc<Config>,
        generation: u64,
        slots: &Slots,
    ) -> Result<Runtime, BuildError> {
        let router = Router::build(&config)?;
        let identities: Vec<Arc<ClientIdentity>> = config
            .certificates
            .iter()
            .map(|c| Arc::new(ClientIdentity::new(c.chain.clone(), c.key.clone())))
            .collect();
        let mut upstreams: Vec<Arc<UpstreamRuntime>> = Vec::with_capacity(config.upstreams.len());
        for spec in &config.upstreams {
            upstreams.push(Arc::new(UpstreamRuntime {
                slot: slots.ensure(spec),
                consistent_hashing: spec.algorithm == Algorithm::ConsistentHashing,
                hash_on: spec.hash_on.clone(),
                hash_fallback: spec.hash_fallback.clone(),
                host_header: spec
                    .host_header
                    .as_deref()
                    .and_then(|h| HeaderValue::from_str(h).ok()),
                target_hosts: spec
                    .targets
                    .iter()
                    .map(|t| host_header_for(&t.host, t.port))
                    .collect(),
                target_hosts_tls: spec
                    .targets
                    .iter()
                    .map(|t| https_host_header(&t.host, t.port))
                    .collect(),
            }));
        }
        let mut kinds: Vec<Vec<Option<Arc<UpstreamTls>>>> =
            vec![Vec::new(); config.upstreams.len()];
        // Per upstream: (used by a gRPC service, used by another service).
        let mut users: Vec<(bool, bool)> = vec![(false, false); config.upstreams.len()];
        let mut services = Vec::with_capacity(config.services.len());
        for (index, service) in config.services.iter().enumerate() {
            let tls = matches!(service.protocol, Protocol::Https | Protocol::Grpcs)
                .then(|| service_tls(&config, service, &identities));
            let grpc = matches!(service.protocol, Protocol::Grpc | Protocol::Grpcs);
            if let Some(used) = service.upstream.and_then(|u| users.get_mut(u)) {
                if grpc {
                    used.0 = true;
                } else {
                    used.1 = true;
                }
            }
            // gRPC services keep their own HTTP/2 connections; warm standby and probes
            // dial the HTTP/1.1 way, so they are not told about them.
            if let Some(list) = service
                .upstream
                .filter(|_| !grpc)
                .and_then(|u| kinds.get_mut(u))
            {
                let same = |k: &Option<Arc<UpstreamTls>>| match (k, &tls) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !list.iter().any(same) {
                    list.push(tls.clone());
                }
            }
            let https = tls.is_some();
            let target = match (service.protocol, service.upstream) {
                (
                    Protocol::Http
                    | Protocol::Https
                    | Protocol::Ws
                    | Protocol::Grpc
                    | Protocol::Grpcs,
                    Some(upstream),
                ) => {
                    let Some(up) = upstreams.get(upstream) else {
                        return Err(BuildError::DanglingUpstream {
                            index,
                            name: service.name.clone().unwrap_or_else(|| service.id.clone()),
                            upstream,
                        });
                    };
                    ServiceTarget::Upstream(up.clone())
                }
                (
                    Protocol::Http
                    | Protocol::Https
                    | Protocol::Ws
                    | Protocol::Grpc
                    | Protocol::Grpcs,
                    None,
                ) => {
                    let host_header = if https {
                        https_host_header(&service.host, service.port)
                    } else {
                        host_header_for(&service.host, service.port)
                    };
                    match service
                        .host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                    {
                        Ok(ip) => ServiceTarget::Address {
                            addrs: Arc::from([SocketAddr::new(ip, service.port)]),
                            host_header,
                        },
                        Err(_) => ServiceTarget::Dns {
                            host: Arc::from(service.host.as_str()),
                            port: service.port,
                            host_header,
                        },
                    }
                }
                (other, _) => ServiceTarget::Unsupported(other),
            };
            services.push(ServiceRuntime {
                label: service_label(service),
                path: service.path.as_deref().map(Box::from),
                retry: RetryPolicy {
                    retries: service.retries,
                    retry_on_status: Arc::from([]),
                },
                connect_timeout: service.connect_timeout,
                write_timeout: service.write_timeout,
                read_timeout: service.read_timeout,
                target,
                tls,
                grpc,
            });
        }
        for (index, (((up, spec), kinds), (grpc_users, other_users))) in upstreams
            .iter()
            .zip(&config.upstreams)
            .zip(kinds)
            .zip(users)
            .enumerate()
        {
            let client = config
                .upstream_client_certificates
                .get(index)
                .copied()
                .flatten();
            up.slot.tls.store(Arc::new(SlotTls {
                kinds,
                host_header: spec.host_header.as_deref().map(Arc::from),
                client_certificate: client.and_then(|i| identities.get(i).cloned()),
                grpc_only: grpc_users && !other_users,
            }));
        }
        let certs = CertStore::build(&config);
        Ok(Runtime {
            generation,
            config,
            router,
            services,
            certs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_of(name: &Arc<str>, version: u64) -> Arc<UpstreamSnapshot> {
        Arc::new(UpstreamSnapshot {
            version,
            ..empty_snapshot(name.clone())
        })
    }

    /// Publish actions can reach the slots out of order (see [`Slots::publish`]): the
    /// newest snapshot stays in force whatever order they arrive in.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let slots = Slots::default();
        let spec = sluice_core::topology::UpstreamSpec {
            id: "id-pool".into(),
            name: Arc::from("pool"),
            algorithm: Default::default(),
            hash_on: Default::default(),
            hash_fallback: Default::default(),
            slots: 10_000,
            host_header: None,
            healthchecks: Default::default(),
            failover: Default::default(),
            targets: Vec::new(),
            tags: Vec::new(),
        };
        let slot = slots.ensure(&spec);
        slots.publish(snapshot_of(&spec.name, 7));
        slots.publish(snapshot_of(&spec.name, 5));
        assert_eq!(
            slot.snapshot.load().version,
            7,
            "the late, older snapshot is dropped"
        );
        slots.publish(snapshot_of(&spec.name, 8));
        assert_eq!(slot.snapshot.load().version, 8);
    }

    #[test]
    fn grpc_services_take_the_h2_path_and_grpc_only_upstreams_are_not_warmed() {
        let yaml = r#"
_format_version: "3.0"
services:
  - { name: g, protocol: grpc, host: only-grpc, routes: [{ name: g, protocols: [grpc], paths: [/g.S/] }] }
  - { name: s, protocol: grpcs, host: mixed, routes: [{ name: s, protocols: [grpcs], paths: [/s.S/] }] }
  - { name: h, protocol: http, host: mixed, routes: [{ name: h, paths: [/h] }] }
upstreams:
  - { name: only-grpc, targets: [{ target: "127.0.0.1:50051" }] }
  - { name: mixed, targets: [{ target: "127.0.0.1:8080" }] }
"#;
        let config = match sluice_config::parse(yaml, "t.yml") {
            Ok(loaded) => Arc::new(loaded.config),
            Err(d) => panic!("{d}"),
        };
        let slots = Slots::default();
        let runtime = Runtime::build(config, 1, &slots).expect("builds");
        let flags: Vec<(bool, bool)> = runtime
            .services
            .iter()
            .map(|s| (s.grpc, s.tls.is_some()))
            .collect();
        assert_eq!(flags, vec![(true, false), (true, true), (false, false)]);
        let grpc_only: Vec<(String, bool)> = slots
            .snapshots_with_tls()
            .iter()
            .map(|(snap, tls)| (snap.name.to_string(), tls.grpc_only))
            .collect();
        assert_eq!(
            grpc_only,
            vec![("mixed".to_owned(), false), ("only-grpc".to_owned(), true)]
        );
    }

    #[test]
    fn https_host_values_leave_out_port_443() {
        let text = |host: &str, port: u16| {
            https_host_header(host, port)
                .and_then(|v| v.to_str().ok().map(str::to_owned))
                .unwrap_or_default()
        };
        assert_eq!(text("api.test", 443), "api.test");
        assert_eq!(text("api.test", 80), "api.test:80");
        assert_eq!(text("api.test", 8443), "api.test:8443");
        assert_eq!(text("::1", 443), "[::1]");
        assert_eq!(text("::1", 8443), "[::1]:8443");
    }
}
