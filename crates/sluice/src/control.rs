//! The Admin API's view of the running gateway: `sluice_admin::Control` implemented on
//! top of `sluice_proxy::Gateway`.
//!
//! This glue lives in the binary so that `sluice-admin` never depends on the data plane:
//! the Admin API can only ask for snapshots and send commands through this seam.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use sluice_admin::{
    AddressHealth, ApplyError, ApplyFuture, ConfigFormat, ConfigRejection, Control, DemoControl,
    NotFound, ServerStats,
};
use sluice_config::Config;
use sluice_core::decision::DecisionRecord;
use sluice_core::event::OperatorCommand;
use sluice_core::health::HealthState;
use sluice_core::snapshot::UpstreamSnapshot;
use sluice_proxy::Gateway;

use crate::demo::Demo;
use crate::logging::LogHandle;

/// `Control` for a running gateway (and, under `sluice demo`, its demo backends).
pub struct GatewayControl {
    gateway: Arc<Gateway>,
    node_id: String,
    demo: Option<Arc<Demo>>,
    log: LogHandle,
}

impl GatewayControl {
    pub fn new(gateway: Arc<Gateway>, demo: Option<Arc<Demo>>, log: LogHandle) -> Self {
        let node_id = gateway.metrics().node_id().to_owned();
        GatewayControl {
            gateway,
            node_id,
            demo,
            log,
        }
    }
}

/// Origin named in diagnostics for configurations posted to the Admin API.
const POSTED_ORIGIN: &str = "POST /config";

impl Control for GatewayControl {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn config(&self) -> Arc<Config> {
        self.gateway.config()
    }

    fn config_loaded_at(&self) -> SystemTime {
        self.gateway.config_loaded_at()
    }

    fn apply_config(&self, text: String, _format: ConfigFormat) -> ApplyFuture<'_> {
        Box::pin(async move {
            // Parsing a large file is CPU work (0.4 s at 10,000 routes): on the blocking
            // pool it cannot stall the runtime thread that serves traffic.
            let parsed =
                tokio::task::spawn_blocking(move || sluice_config::parse(&text, POSTED_ORIGIN))
                    .await
                    .map_err(|e| {
                        ApplyError::Unavailable(format!("configuration parser failed: {e}"))
                    })?;
            let loaded = match parsed {
                Ok(loaded) => loaded,
                Err(diagnostics) => {
                    self.gateway.metrics().on_reload(false, "");
                    tracing::warn!(
                        errors = diagnostics.error_count(),
                        "POST /config rejected; keeping the running configuration"
                    );
                    return Err(ApplyError::Invalid(ConfigRejection::from(&diagnostics)));
                }
            };
            for warning in &loaded.warnings {
                tracing::warn!(%warning, "configuration warning");
            }
            match self.gateway.apply_config(loaded.config).await {
                Ok(()) => Ok(self.gateway.config()),
                // The message names no configuration content: it is a state, not an echo.
                Err(e) => Err(ApplyError::Unavailable(e.to_string())),
            }
        })
    }

    fn upstream_snapshots(&self) -> Vec<Arc<UpstreamSnapshot>> {
        self.gateway.snapshots()
    }

    fn address_health(&self, upstream: &str) -> Option<Vec<AddressHealth>> {
        let status = self.gateway.upstream_status(upstream)?;
        Some(
            status
                .targets
                .iter()
                .flat_map(|t| t.addresses.iter())
                .map(|a| AddressHealth {
                    addr: a.key.addr,
                    hostname: a.key.hostname.clone(),
                    healthy: matches!(a.state, HealthState::Healthy | HealthState::MostlyHealthy),
                    successes: u32::from(a.counters.successes),
                    http_failures: u32::from(a.counters.http_failures),
                    tcp_failures: u32::from(a.counters.tcp_failures),
                    timeouts: u32::from(a.counters.timeouts),
                })
                .collect(),
        )
    }

    fn set_health(
        &self,
        upstream: &str,
        target: &str,
        address: Option<SocketAddr>,
        healthy: bool,
    ) -> Result<(), NotFound> {
        let status = self.gateway.upstream_status(upstream).ok_or(NotFound)?;
        // Kong accepts the target by its `host:port` string or its id.
        let found = status
            .targets
            .iter()
            .find(|t| t.target == target || t.id == target)
            .ok_or(NotFound)?;
        if let Some(addr) = address
            && !found.addresses.iter().any(|a| a.key.addr == addr)
        {
            return Err(NotFound);
        }
        let command = OperatorCommand::SetHealth {
            target: found.target.clone(),
            address,
            healthy,
        };
        self.gateway
            .operator(upstream, command, "admin-api")
            .map_err(|_| NotFound)
    }

    fn decisions(&self, since: u64) -> Vec<Arc<DecisionRecord>> {
        self.gateway.decisions(since)
    }

    fn now(&self) -> sluice_core::Instant {
        self.gateway.now()
    }

    fn metrics_text(&self) -> String {
        self.gateway.metrics_text()
    }

    fn server_stats(&self) -> ServerStats {
        let c = self.gateway.server_counters();
        ServerStats {
            total_requests: c.total_requests,
            connections_active: c.connections_active,
            connections_accepted: c.connections_accepted,
            connections_handled: c.connections_handled,
        }
    }

    fn set_log_filter(&self, directives: &str) -> Result<(), String> {
        self.log.set_filter(directives)
    }

    fn demo(&self) -> Option<&dyn DemoControl> {
        self.demo.as_deref().map(|d| d as &dyn DemoControl)
    }
}
