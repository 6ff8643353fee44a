//! Sluice's data plane.
//!
//! Listeners accept HTTP/1.1 and h2c, the router matches Kong routes, and the forwarder
//! sends each request to an address chosen by the decision core (`sluice-core`),
//! retrying on another address when Kong's rules allow. A driver task owns the core's
//! `Controller`, runs active probes and DNS, and publishes snapshots the hot path reads
//! without locks.

pub mod error;
pub mod metrics;
pub mod record;
pub mod router;
