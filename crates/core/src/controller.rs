//! The controller: the single owner of all decision state. Events and `now` go in,
//! actions and snapshots come out.

/// Owns health, ejection, failover and snapshot state for every upstream.
#[derive(Debug, Default)]
pub struct Controller {}
