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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use sluice_config::model::{Config, Protocol};
use sluice_core::UpstreamSnapshot;
use sluice_core::retry::{RetryBudget, RetryBudgetPolicy, RetryPolicy};
use sluice_core::snapshot::Mode;
use sluice_core::topology::{Algorithm, HashOn, UpstreamSpec};

use crate::headers::host_header_for;
use crate::router::{Router, RouterError, service_label};

/// The per-upstream state shared by every generation that has this upstream.
#[derive(Debug)]
pub struct UpstreamSlot {
    pub name: Arc<str>,
    /// Latest snapshot published by the controller.
    pub snapshot: ArcSwap<UpstreamSnapshot>,
    /// Retry budget, replaced only when its policy changes.
    budget: ArcSwap<BudgetCell>,
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

    /// Store a published snapshot. Unknown upstreams are ignored: the slot is created
    /// before the controller hears of the upstream.
    pub fn publish(&self, snapshot: Arc<UpstreamSnapshot>) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.get(&snapshot.name) {
            slot.snapshot.store(snapshot);
        }
    }

    /// Forget an upstream (requests still holding the slot keep their `Arc`).
    pub fn remove(&self, name: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(name);
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
    /// A protocol this data plane does not forward (https, grpc, tcp...).
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
}

/// One compiled configuration generation.
#[derive(Debug)]
pub struct Runtime {
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Router,
    /// Indexed like `config.services`.
    pub services: Vec<ServiceRuntime>,
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
            }));
        }
        let mut services = Vec::with_capacity(config.services.len());
        for (index, service) in config.services.iter().enumerate() {
            let target = match (service.protocol, service.upstream) {
                (Protocol::Http | Protocol::Ws, Some(upstream)) => {
                    let Some(up) = upstreams.get(upstream) else {
                        return Err(BuildError::DanglingUpstream {
                            index,
                            name: service.name.clone().unwrap_or_else(|| service.id.clone()),
                            upstream,
                        });
                    };
                    ServiceTarget::Upstream(up.clone())
                }
                (Protocol::Http | Protocol::Ws, None) => {
                    let host_header = host_header_for(&service.host, service.port);
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
            });
        }
        Ok(Runtime {
            generation,
            config,
            router,
            services,
        })
    }
}
