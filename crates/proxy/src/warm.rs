//! Warm standby connections: every address of a tier that currently receives no traffic
//! (a secondary region on standby, a backup tier) keeps one fresh idle connection in the
//! pool, so the first requests after a failover do not pay a TCP handshake on top of
//! everything else going wrong. Active probes keep the standby's *health* fresh; this
//! keeps its *connections* warm.
//!
//! Bounded: one connection per standby address and way of dialling it, at most
//! [`MAX_WARM_PER_ROUND`] connects per round, a round every [`WARM_PERIOD`]. Addresses
//! that take traffic already have pooled connections and are skipped.
//!
//! For an upstream that `https` services use, the warm connection is a TLS one, made
//! with those services' settings and the server name a request would present (the
//! upstream's `host_header`, else the target's hostname), so the first request after a
//! failover skips the handshake as well. (A route with `preserve_host` presents the
//! client's `Host`, which no warming can guess; its first request pays the handshake.)
//!
//! An upstream that only gRPC services use is not warmed: its calls need HTTP/2
//! connections, which the first call opens.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::driver::Core;
use crate::pool::{Endpoint, IDLE_TIMEOUT, Pool};
use crate::tls::upstream_server_name;

/// Half the pool's idle timeout: a connection opened in one round is still fresh at the
/// next, so a standby address always has one usable connection.
pub const WARM_PERIOD: Duration = Duration::from_millis(IDLE_TIMEOUT.as_millis() as u64 / 2);

/// Upper bound on connects per round (at most 128 connects/s at the 2 s period), so a
/// configuration with thousands of standby targets cannot turn warming into a SYN flood.
pub const MAX_WARM_PER_ROUND: usize = 256;

/// Connect deadline for a warming connection: a standby that cannot accept a connection
/// within a second is not warm, whatever its service's `connect_timeout` says.
const WARM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs warming rounds until `stop` turns true.
pub async fn run(core: Arc<Core>, pool: Arc<Pool>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(WARM_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => round(&core, &pool).await,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn round(core: &Core, pool: &Pool) {
    let mut opened = 0;
    for (snapshot, tls) in core.slots.snapshots_with_tls() {
        if tls.grpc_only {
            continue;
        }
        // No service uses the upstream: keep today's plain warm connection.
        let kinds: &[_] = if tls.kinds.is_empty() {
            &[None]
        } else {
            &tls.kinds
        };
        for tier in snapshot.tiers.iter().filter(|t| t.share_ppm == 0) {
            for &index in &tier.members {
                let Some(address) = snapshot.addresses.get(index as usize) else {
                    continue;
                };
                if !address.is_available() {
                    continue;
                }
                for kind in kinds {
                    if opened >= MAX_WARM_PER_ROUND {
                        return;
                    }
                    let addr = address.key.addr;
                    let endpoint = match kind {
                        None => Endpoint::plain(addr),
                        Some(settings) => {
                            let host = tls.host_header.as_deref().unwrap_or(&address.key.hostname);
                            let name = upstream_server_name(Some(host), addr);
                            Endpoint::tls(addr, settings.clone(), name)
                        }
                    };
                    if pool
                        .keep_warm(&endpoint, WARM_PERIOD, WARM_CONNECT_TIMEOUT)
                        .await
                    {
                        opened += 1;
                    }
                }
            }
        }
    }
}
