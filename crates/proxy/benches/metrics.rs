//! Cost of `Metrics::on_request`, the per-request metrics call on the data plane's hot
//! path, and of one scrape (`Metrics::encode`).
//!
//! Cases: one relaxed atomic add (the floor every cell update pays), a plain request with every Kong flag on (status code, three histograms,
//! bandwidth, Sluice's families), the same with Kong's families off (no prometheus
//! plugin), a request that retried across regions, and an unrouted request.
//!
//! Run: `cargo bench -p sluice-proxy --bench metrics`. On a shared 2-core VM wall-clock
//! numbers wander by several percent between runs; compare within one run.

#[path = "../tests/metrics_support/mod.rs"]
mod metrics_support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_proxy::metrics::Metrics;
use sluice_proxy::record::{RequestRecord, TryOutcome};

use metrics_support::{config, config_with_plugins, orders_request, snapshot, try_record};

fn retried_request() -> RequestRecord {
    let mut rec = orders_request(200);
    rec.tries = Default::default();
    rec.tries.push(try_record(
        "10.0.0.2:8080",
        "eu-west",
        0,
        TryOutcome::Timeout,
        1000,
    ));
    rec.tries.push(try_record(
        "10.1.0.7:8080",
        "us-east",
        1,
        TryOutcome::Status(200),
        80,
    ));
    rec.crossed_region = true;
    rec.crossed_tier = true;
    rec.try_timeouts = 1;
    rec
}

fn on_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("on_request");

    // The floor: one relaxed atomic add, the unit every cell update costs. Measured in
    // the same run so noisy neighbours can be factored out of the ratios.
    let one_counter = std::sync::atomic::AtomicU64::new(0);
    group.bench_function("baseline_one_atomic_add", |b| {
        b.iter(|| one_counter.fetch_add(black_box(1), std::sync::atomic::Ordering::Relaxed))
    });

    let metrics = Metrics::with_node_id("bench");
    metrics.on_config(&config());
    let plain = orders_request(200);
    group.bench_function("kong_all_flags", |b| {
        b.iter(|| metrics.on_request(black_box(&plain)))
    });

    let retried = retried_request();
    group.bench_function("kong_all_flags_retried_cross_region", |b| {
        b.iter(|| metrics.on_request(black_box(&retried)))
    });

    let mut unrouted = orders_request(404);
    unrouted.route = None;
    unrouted.service = None;
    unrouted.upstream = None;
    group.bench_function("unrouted", |b| {
        b.iter(|| metrics.on_request(black_box(&unrouted)))
    });

    let sluice_only = Metrics::with_node_id("bench");
    sluice_only.on_config(&config_with_plugins(Vec::new()));
    group.bench_function("no_prometheus_plugin", |b| {
        b.iter(|| sluice_only.on_request(black_box(&plain)))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let metrics = Metrics::with_node_id("bench");
    metrics.on_config(&config());
    for status in [200, 201, 404, 503] {
        metrics.on_request(&orders_request(status));
    }
    let snapshots = vec![snapshot()];
    c.bench_function("encode", |b| {
        b.iter(|| black_box(metrics.encode(black_box(&snapshots))))
    });
}

criterion_group!(benches, on_request, encode);
criterion_main!(benches);
