//! Warm standby connections: every address of a tier that currently receives no traffic
//! (a secondary region on standby, a backup tier) keeps one fresh idle connection in the
//! pool, so the first requests after a failover do not pay a TCP handshake on top of
//! everything else going wrong. Active probes keep the standby's *health* fresh; this
//! keeps its *connections* warm.
//!
//! Bounded: one connection per standby address, at most [`MAX_WARM_PER_ROUND`] connects
//! per round, a round every [`WARM_PERIOD`]. Addresses that take traffic already have
//! pooled connections and are skipped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::driver::Core;
use crate::pool::{IDLE_TIMEOUT, Pool};

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
    for snapshot in core.slots.snapshots() {
        for tier in snapshot.tiers.iter().filter(|t| t.share_ppm == 0) {
            for &index in &tier.members {
                let Some(address) = snapshot.addresses.get(index as usize) else {
                    continue;
                };
                if !address.is_available() {
                    continue;
                }
                if opened >= MAX_WARM_PER_ROUND {
                    return;
                }
                if pool
                    .keep_warm(address.key.addr, WARM_PERIOD, WARM_CONNECT_TIMEOUT)
                    .await
                {
                    opened += 1;
                }
            }
        }
    }
}
