//! End-to-end tests of the data plane: a real gateway on loopback in front of scriptable
//! backends, configured with Kong declarative YAML. All on the real clock (the backends
//! are real sockets) with short timeouts; every load loop is bounded in time.

/// Simple HTTP/1.1 requests take the fast lane (the default); `tests/it_hyper.rs` runs
/// this suite again with it off.
pub const FAST_LANE: bool = true;

mod support;

mod dns;
mod errors;
mod grpc;
mod health;
mod keepalive;
mod probes_keepalive;
mod probes_tls;
mod reload;
mod retries;
mod robustness;
mod routing;
mod shutdown;
mod tls_listener;
mod upstream_tls;
mod warm;
mod websocket;
