//! The end-to-end suite of `tests/it` again, with the fast lane off: every connection is
//! served by hyper, so the lane that takes h2c, chunked and large bodies, upgrades and
//! malformed input (and every connection of a gateway started with `fast_lane: false`)
//! keeps the same coverage as the fast lane.

/// Every connection goes through hyper.
pub const FAST_LANE: bool = false;

#[path = "it/support/mod.rs"]
mod support;

#[path = "it/dns.rs"]
mod dns;
#[path = "it/errors.rs"]
mod errors;
#[path = "it/grpc.rs"]
mod grpc;
#[path = "it/health.rs"]
mod health;
#[path = "it/keepalive.rs"]
mod keepalive;
#[path = "it/probes_keepalive.rs"]
mod probes_keepalive;
#[path = "it/probes_tls.rs"]
mod probes_tls;
#[path = "it/reload.rs"]
mod reload;
#[path = "it/retries.rs"]
mod retries;
#[path = "it/robustness.rs"]
mod robustness;
#[path = "it/routing.rs"]
mod routing;
#[path = "it/shutdown.rs"]
mod shutdown;
#[path = "it/tls_listener.rs"]
mod tls_listener;
#[path = "it/upstream_tls.rs"]
mod upstream_tls;
#[path = "it/warm.rs"]
mod warm;
#[path = "it/websocket.rs"]
mod websocket;
