//! Prometheus metrics for the data plane (owned by the metrics engineer; placeholder
//! until their implementation lands).

/// The gateway's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics;
