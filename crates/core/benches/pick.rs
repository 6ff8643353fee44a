//! `balance::pick` cost per algorithm over 10, 100 and 1000 addresses, plus the cost of
//! building the round-robin order and the Maglev table that the controller pays on each
//! snapshot rebuild. Snapshots are built here from the public API, as the controller
//! builds them, with mixed weights so the SWRR pass and the table are not trivial.
//!
//! Run: `cargo bench -p sluice-core --bench pick -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_core::balance::hash::{hash_key, maglev_table, table_size};
use sluice_core::balance::round_robin::smooth_order;
use sluice_core::balance::{PickContext, ewma, pick};
use sluice_core::load::AddressLoad;
use sluice_core::snapshot::{
    AddressKey, AddressView, HealthStatus, Mode, TierView, UpstreamSnapshot,
};
use sluice_core::time::{Duration, Instant};
use sluice_core::topology::Algorithm;

const SIZES: [u32; 3] = [10, 100, 1_000];

/// Weights 100..=160 in steps of 10, so the gcd is 10 and the pass is ~13 entries per
/// address: a realistic mix, not the degenerate all-equal case.
fn weight(i: u32) -> u32 {
    100 + (i % 7) * 10
}

fn snapshot(algorithm: Algorithm, n: u32) -> UpstreamSnapshot {
    let now = Instant::from_millis(1_000);
    let addresses: Vec<AddressView> = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 8080));
            let load = Arc::new(AddressLoad::new(Instant::ZERO));
            ewma::observe(
                &load,
                Duration::from_micros(2_000 + u64::from(i % 13) * 300),
                now,
            );
            AddressView {
                key: AddressKey {
                    addr,
                    hostname: Arc::from(addr.ip().to_string()),
                },
                target_index: i,
                weight: weight(i),
                effective_weight: weight(i),
                tier: 0,
                region: Arc::from("eu"),
                health: HealthStatus::Healthy,
                unavailable: None,
                load,
                dns: sluice_core::snapshot::DnsRecord::A,
            }
        })
        .collect();
    let members: Vec<u32> = (0..n).collect();
    let weighted: Vec<(u32, u32)> = members.iter().map(|&i| (i, weight(i))).collect();
    let keys: Vec<String> = addresses.iter().map(|a| a.key.addr.to_string()).collect();
    let keyed: Vec<(u32, u32, &str)> = weighted
        .iter()
        .zip(&keys)
        .map(|(&(i, w), k)| (i, w, k.as_str()))
        .collect();
    let hash_tables = if algorithm == Algorithm::ConsistentHashing {
        vec![maglev_table(&keyed, table_size(10_000)).into()]
    } else {
        Vec::new()
    };
    UpstreamSnapshot {
        version: 1,
        name: Arc::from("bench"),
        algorithm,
        addresses,
        tiers: vec![TierView {
            tier: 0,
            regions: vec![Arc::from("eu")],
            members,
            share_ppm: 1_000_000,
            healthy_share: 1.0,
            rr_order: smooth_order(&weighted).into(),
            rr_cursor: Arc::new(AtomicU64::new(0)),
        }],
        mode: Mode::Normal,
        balancer_healthy: true,
        hash_tables,
    }
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::Latency,
        Algorithm::ConsistentHashing,
    ] {
        for n in SIZES {
            let snapshot = snapshot(algorithm, n);
            let name = format!("{algorithm:?}");
            group.bench_with_input(BenchmarkId::new(name, n), &snapshot, |b, snapshot| {
                let mut counter = 0u64;
                b.iter(|| {
                    counter = counter.wrapping_add(1);
                    let cx = PickContext {
                        now: Instant::from_millis(2_000),
                        entropy: counter,
                        hash_key: Some(hash_key(&counter.to_le_bytes())),
                        tried: &[],
                    };
                    black_box(pick(black_box(snapshot), &cx))
                });
            });
        }
    }
    // A retry: the first two addresses were tried (the common retry shape).
    for n in SIZES {
        let snapshot = snapshot(Algorithm::RoundRobin, n);
        group.bench_with_input(
            BenchmarkId::new("RoundRobinRetry", n),
            &snapshot,
            |b, snapshot| {
                let mut counter = 0u64;
                b.iter(|| {
                    counter = counter.wrapping_add(1);
                    let cx = PickContext {
                        now: Instant::from_millis(2_000),
                        entropy: counter,
                        hash_key: None,
                        tried: &[0, 1],
                    };
                    black_box(pick(black_box(snapshot), &cx))
                });
            },
        );
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    for n in SIZES {
        let weighted: Vec<(u32, u32)> = (0..n).map(|i| (i, weight(i))).collect();
        group.bench_with_input(BenchmarkId::new("smooth_order", n), &weighted, |b, w| {
            b.iter(|| black_box(smooth_order(black_box(w))));
        });
        let keys: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 256, i % 256))
            .collect();
        let keyed: Vec<(u32, u32, &str)> = weighted
            .iter()
            .zip(&keys)
            .map(|(&(i, w), k)| (i, w, k.as_str()))
            .collect();
        group.bench_with_input(BenchmarkId::new("maglev_table_10007", n), &keyed, |b, k| {
            b.iter(|| black_box(maglev_table(black_box(k), 10_007)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pick, bench_build);
criterion_main!(benches);
