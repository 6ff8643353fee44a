//! The gateway handle: start, reload, inspect, command, stop.
//!
//! This is the data plane's public API, used by the binary and (through the admin
//! crate's `Control` trait, which the binary implements on top of it) by the Admin API.
//!
//! Hot reload ([`Gateway::apply_config`]) builds the whole new [`Runtime`] off the hot
//! path (router, per-service targets, upstream slots), feeds `TopologyReplaced` to the
//! controller (which publishes the new snapshots, keeping health and load of addresses
//! that stay), then swaps the runtime with one `ArcSwap` store. Requests in flight keep
//! the generation they loaded; none is dropped. A configuration that does not compile
//! leaves everything as it was.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sluice_config::Config;
use sluice_core::UpstreamSnapshot;
use sluice_core::controller::UpstreamStatus;
use sluice_core::decision::DecisionRecord;
use sluice_core::event::{Event, OperatorCommand};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::dns::Dns;
use crate::driver::{self, Clock, Core};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::{Limits, Shared, Stats};
use crate::realip::TrustedProxies;
use crate::runtime::{BuildError, Runtime, Slots};

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Proxy listeners (Kong's `proxy_listen`; default `0.0.0.0:8000`).
    pub listen: Vec<SocketAddr>,
    /// TLS proxy listeners (Kong's `proxy_listen ... ssl`, which Kong opens on 8443):
    /// certificates by SNI from the configuration's `snis`. Empty by default (opt-in,
    /// see the `--proxy-listen-tls` flag of the binary for why).
    pub tls_listen: Vec<SocketAddr>,
    /// Longest time from accept to a finished TLS handshake (default
    /// [`TLS_HANDSHAKE_TIMEOUT`](crate::tls_server::TLS_HANDSHAKE_TIMEOUT)).
    pub tls_handshake_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Largest request body accepted; `None` = unlimited (Kong's default).
    pub max_request_body: Option<u64>,
    /// Write one JSON line per request to stdout.
    pub access_log: bool,
    /// Metrics registry to feed; a fresh one when `None`.
    pub metrics: Option<Arc<Metrics>>,
    /// Nameservers for hostname targets and services (Kong's `dns_resolver`); empty =
    /// the system configuration (`/etc/resolv.conf`).
    pub dns_resolvers: Vec<SocketAddr>,
    /// Proxies whose forwarding headers are believed (Kong's `trusted_ips`,
    /// `real_ip_header`, `real_ip_recursive`); by default nobody.
    pub trusted_proxies: TrustedProxies,
    /// Serve simple HTTP/1.1 requests on the fast lane ([`crate::fastlane`]); false
    /// sends every connection through hyper (for comparison, and as a way out should
    /// the fast lane ever misbehave). Default true.
    pub fast_lane: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 8000))],
            tls_listen: Vec::new(),
            tls_handshake_timeout: crate::tls_server::TLS_HANDSHAKE_TIMEOUT,
            // Long enough for typical API calls to finish, short enough for a rolling
            // deploy (Kubernetes' default termination grace is 30 s).
            shutdown_grace: Duration::from_secs(10),
            max_request_body: None,
            access_log: false,
            metrics: None,
            dns_resolvers: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            fast_lane: true,
        }
    }
}

/// Why the gateway could not start or take a configuration.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the TLS listener: {0}")]
    Tls(#[from] crate::tls_server::TlsServerError),
    #[error("configuration rejected: {0}")]
    Config(#[from] BuildError),
    #[error("upstream {0:?} does not exist")]
    UnknownUpstream(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Connection and request counters (Kong's `GET /status` `server` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    pub total_requests: u64,
    pub connections_active: u64,
    pub connections_accepted: u64,
    pub connections_handled: u64,
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    local_addrs: Vec<SocketAddr>,
    tls_local_addrs: Vec<SocketAddr>,
    servers: Mutex<Vec<JoinHandle<()>>>,
    driver: Mutex<Option<JoinHandle<()>>>,
    stop_servers: watch::Sender<bool>,
    stop_driver: Arc<Notify>,
    generation: AtomicU64,
    loaded_at: Mutex<SystemTime>,
    /// Serialises reloads so two concurrent `apply_config` calls cannot interleave
    /// their topology and runtime swaps.
    reload_lock: tokio::sync::Mutex<()>,
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] still stops: listeners close
    /// (in-flight requests get the grace period) and the driver ends. Nothing is awaited.
    fn drop(&mut self) {
        let _ = self.stop_servers.send(true);
        self.stop_driver.notify_one();
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addrs", &self.local_addrs)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Compile `config`, start the driver, bind the listeners and start serving.
    pub async fn start(config: Config, options: GatewayOptions) -> Result<Gateway, GatewayError> {
        let metrics = options
            .metrics
            .clone()
            .unwrap_or_else(|| Arc::new(Metrics::new()));
        let slots = Arc::new(Slots::default());
        let config = Arc::new(config);
        let runtime = Runtime::build(config.clone(), 1, &slots)?;
        let (core, events) = Core::new(
            Clock::start(),
            slots,
            metrics.clone(),
            Arc::new(Dns::new(&options.dns_resolvers)),
        );
        core.apply(Event::TopologyReplaced {
            upstreams: config.upstreams.clone(),
        });
        metrics.on_config(&config);
        metrics.on_reload(true, &config.hash);

        let mut listeners = Vec::with_capacity(options.listen.len());
        for addr in &options.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(listener);
        }
        let local_addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let mut tls_listeners = Vec::with_capacity(options.tls_listen.len());
        for addr in &options.tls_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: *addr,
                    source,
                })?;
            tls_listeners.push(listener);
        }
        let tls_local_addrs: Vec<SocketAddr> = tls_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();

        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            core: core.clone(),
            pool: Pool::new(),
            h2: crate::h2::H2Pool::new(),
            limits: Limits {
                max_request_body: options.max_request_body.unwrap_or(u64::MAX),
            },
            access_log: options
                .access_log
                .then(|| AccessLog::spawn(tokio::io::stdout())),
            stats: Stats::default(),
            trusted_proxies: options.trusted_proxies.clone(),
            fast_lane: options.fast_lane,
        });
        let stop_driver = Arc::new(Notify::new());
        let (stop_servers, stop_rx) = watch::channel(false);
        tokio::spawn(crate::warm::run(
            core.clone(),
            shared.pool.clone(),
            stop_rx.clone(),
        ));
        let driver = tokio::spawn(driver::run(core, events, stop_driver.clone()));
        let mut servers: Vec<JoinHandle<()>> = listeners
            .into_iter()
            .map(|listener| {
                tokio::spawn(crate::server::serve(
                    listener,
                    shared.clone(),
                    stop_rx.clone(),
                    options.shutdown_grace,
                ))
            })
            .collect();
        if !tls_listeners.is_empty() {
            let acceptor = crate::tls_server::acceptor(shared.clone())?;
            for listener in tls_listeners {
                servers.push(tokio::spawn(crate::server::serve_tls(
                    listener,
                    shared.clone(),
                    (acceptor.clone(), options.tls_handshake_timeout),
                    stop_rx.clone(),
                    options.shutdown_grace,
                )));
            }
            tracing::info!(listen = ?tls_local_addrs, "TLS proxy listening");
        }
        tracing::info!(listen = ?local_addrs, hash = %config.hash, "proxy listening");
        Ok(Gateway {
            shared,
            local_addrs,
            tls_local_addrs,
            servers: Mutex::new(servers),
            driver: Mutex::new(Some(driver)),
            stop_servers,
            stop_driver,
            generation: AtomicU64::new(1),
            loaded_at: Mutex::new(SystemTime::now()),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The first listener's bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Every listener's bound address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// HTTP/2 upstream connections opened so far for gRPC services (one per address
    /// while it stays up: calls are multiplexed on it).
    pub fn h2_connects(&self) -> u64 {
        self.shared.h2.connects()
    }

    /// HTTP/2 upstream connections of gRPC services currently open.
    pub fn h2_open(&self) -> u64 {
        self.shared.h2.open()
    }

    /// Every TLS listener's bound address.
    pub fn tls_local_addrs(&self) -> &[SocketAddr] {
        &self.tls_local_addrs
    }

    /// Hot reload: compile, update the controller, swap. On error nothing changes.
    pub async fn apply_config(&self, config: Config) -> Result<(), GatewayError> {
        if *self.stop_servers.borrow() {
            return Err(GatewayError::ShuttingDown);
        }
        let _serial = self.reload_lock.lock().await;
        let config = Arc::new(config);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let runtime = match Runtime::build(config.clone(), generation, &self.shared.core.slots) {
            Ok(runtime) => runtime,
            Err(e) => {
                self.shared.core.metrics.on_reload(false, &config.hash);
                tracing::warn!(error = %e, "configuration rejected; keeping the running one");
                return Err(e.into());
            }
        };
        self.shared.core.apply(Event::TopologyReplaced {
            upstreams: config.upstreams.clone(),
        });
        self.shared.core.metrics.on_config(&config);
        self.shared.runtime.store(Arc::new(runtime));
        self.generation.store(generation, Ordering::Relaxed);
        *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner()) = SystemTime::now();
        self.shared.core.metrics.on_reload(true, &config.hash);
        tracing::info!(generation, hash = %config.hash, "configuration applied");
        Ok(())
    }

    /// The configuration running now.
    pub fn config(&self) -> Arc<Config> {
        self.shared.runtime.load().config.clone()
    }

    /// When the running configuration was applied.
    pub fn config_loaded_at(&self) -> SystemTime {
        *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Latest snapshot of every upstream, sorted by name.
    pub fn snapshots(&self) -> Vec<Arc<UpstreamSnapshot>> {
        self.shared.core.slots.snapshots()
    }

    /// Health, counters, shares and failback state of one upstream.
    pub fn upstream_status(&self, upstream: &str) -> Option<UpstreamStatus> {
        let now = self.shared.core.clock.now();
        self.shared.core.controller().upstream_status(upstream, now)
    }

    /// Decision records with `seq > since`, oldest first.
    pub fn decisions(&self, since: u64) -> Vec<Arc<DecisionRecord>> {
        self.shared
            .core
            .controller()
            .decisions()
            .since(since)
            .cloned()
            .collect()
    }

    /// The gateway's virtual clock (decision times and deadlines use it).
    pub fn now(&self) -> sluice_core::Instant {
        self.shared.core.clock.now()
    }

    /// Apply an operator command (admin API `healthy`/`unhealthy`, drain) at once.
    pub fn operator(
        &self,
        upstream: &str,
        command: OperatorCommand,
        actor: &str,
    ) -> Result<(), GatewayError> {
        let name = {
            let controller = self.shared.core.controller();
            controller
                .upstream_names()
                .find(|n| &***n == upstream)
                .cloned()
        };
        let Some(name) = name else {
            return Err(GatewayError::UnknownUpstream(upstream.to_owned()));
        };
        self.shared.core.apply(Event::Operator {
            upstream: name,
            command,
            actor: actor.to_owned(),
        });
        Ok(())
    }

    /// The metrics registry the data plane feeds.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.core.metrics
    }

    /// Prometheus exposition text.
    pub fn metrics_text(&self) -> String {
        self.shared.core.metrics.encode(&self.snapshots())
    }

    /// Connection and request counters.
    pub fn server_counters(&self) -> ServerCounters {
        let s = &self.shared.stats;
        ServerCounters {
            total_requests: s.total_requests.load(Ordering::Relaxed),
            connections_active: s.connections_active.load(Ordering::Relaxed),
            connections_accepted: s.connections_accepted.load(Ordering::Relaxed),
            connections_handled: s.connections_handled.load(Ordering::Relaxed),
        }
    }

    /// Passive-health events dropped because the driver was behind.
    pub fn dropped_events(&self) -> u64 {
        self.shared.core.events.dropped()
    }

    /// Stop accepting, let in-flight requests finish (bounded by the grace period),
    /// then stop the driver.
    pub async fn shutdown(&self) {
        let _ = self.stop_servers.send(true);
        let servers: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.servers.lock().unwrap_or_else(|p| p.into_inner()));
        for server in servers {
            let _ = server.await;
        }
        self.stop_driver.notify_one();
        let driver = self.driver.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(driver) = driver {
            let _ = driver.await;
        }
    }
}
