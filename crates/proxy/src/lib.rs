//! Sluice's data plane.
//!
//! Listeners ([`server`]) accept HTTP/1.1 and h2c, and HTTP/1.1 and HTTP/2 over TLS with
//! certificates chosen by SNI ([`tls_server`]); the [`router`] matches Kong routes;
//! [`proxy`] prepares each request and [`forward`] sends it to an address chosen by the
//! decision core (`sluice-core`), retrying on another address when Kong's rules and the
//! retry budget allow. The [`driver`] owns the core's `Controller`, runs active
//! [`probe`]s and [`dns`] lookups, and publishes snapshots the hot path reads without
//! locks; upgraded connections (WebSocket) become a [`tunnel`]. Kong's `grpc`/`grpcs`
//! services go to their upstreams over HTTP/2 ([`h2`]).
//! [`gateway::Gateway`] is the handle the binary and the Admin API use.

pub mod access_log;
pub mod body;
pub mod dns;
pub mod driver;
pub mod error;
pub mod fasthash;
pub mod fastlane;
pub mod forward;
pub mod gateway;
pub mod h2;
pub mod head;
pub mod headers;
pub mod ids;
pub mod metrics;
pub mod pool;
pub mod probe;
pub mod probe_keepalive;
pub mod prober;
pub mod proxy;
pub mod realip;
pub mod record;
pub mod router;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod tls_server;
pub mod tunnel;
pub mod upstream;
pub mod warm;
pub mod wire;

pub use error::{ErrorKind, ProxyError};
pub use gateway::{Gateway, GatewayError, GatewayOptions, ServerCounters};
pub use record::RequestRecord;
