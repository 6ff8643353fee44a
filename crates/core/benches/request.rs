//! The core's cost per proxied request, on the drill's upstream shape: five literal
//! targets in two tiers and regions (three primaries, two secondaries), active and
//! passive health checks and outlier detection on, the `latency` balancer.
//!
//! Per request the data plane makes one `balance::pick`, one `ewma::observe` and reports
//! one `Event::AttemptCompleted` that the driver passes to `Controller::apply`. Benched:
//! - `request/apply_ok`: the attempt event of a 200 from a healthy primary;
//! - `request/apply_mixed`: the same with one attempt in 50 a 503 (failures in the
//!   outlier window, passive counters moving, nothing flipping);
//! - `request/pick_observe`: one pick and the latency sample of its answer.
//!
//! Virtual time moves one millisecond every [`EVENTS_PER_MS`] requests, as at about
//! 8,000 requests a second: most requests see the millisecond of the one before.
//!
//! Run: `cargo bench -p sluice-core --bench request -- --warm-up-time 1 --measurement-time 3`
//!
//! Instruction counts (deterministic, unlike the timings): with `SLUICE_CORE_LOOP` set to
//! `apply_ok`, `apply_mixed` or `pick_observe` (and `SLUICE_CORE_ITERS`, default 100,000)
//! the binary runs that loop instead of criterion, so
//! `valgrind --tool=callgrind --toggle-collect='*run_loop*' <binary>` counts only the
//! loop; divide the total by the iterations.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use sluice_core::balance::{PickContext, ewma, pick};
use sluice_core::controller::Controller;
use sluice_core::event::{Action, AttemptOutcome, Event};
use sluice_core::snapshot::{AddressKey, UpstreamSnapshot};
use sluice_core::time::{Duration, Instant};
use sluice_core::topology::{
    Algorithm, FailoverPolicy, HashOn, HealthChecks, TargetSpec, UpstreamSpec,
};

/// Requests per virtual millisecond: about 8,000 requests a second, the single-core
/// throughput range the drill runs at.
const EVENTS_PER_MS: u64 = 8;

/// One attempt in this many fails (503) in `apply_mixed`: a 2% background error rate,
/// below every threshold of the upstream, so the counters move but nothing flips.
const MIXED_FAILURE_EVERY: u64 = 50;

const NAME: &str = "drill.upstream";

fn target(port: u16, tier: u8, region: &str) -> TargetSpec {
    TargetSpec {
        id: format!("id-{port}"),
        target: format!("127.0.0.1:{port}"),
        host: "127.0.0.1".to_string(),
        port,
        weight: 100,
        region: Arc::from(region),
        tier,
        tags: Vec::new(),
    }
}

/// The drill's upstream (`crates/bench/src/peers.rs`): checks every 500 ms, 2 to rise or
/// fall, passive 3 HTTP failures / 1 TCP failure / 2 timeouts, outlier detection on.
fn spec() -> UpstreamSpec {
    let mut healthchecks = HealthChecks::default();
    healthchecks.active.http_path = "/health".into();
    healthchecks.active.healthy_interval = Duration::from_millis(500);
    healthchecks.active.unhealthy_interval = Duration::from_millis(500);
    healthchecks.active.healthy_successes = 2;
    healthchecks.active.unhealthy_http_failures = 2;
    healthchecks.active.unhealthy_tcp_failures = 2;
    healthchecks.active.unhealthy_timeouts = 2;
    healthchecks.passive.healthy_successes = 2;
    healthchecks.passive.unhealthy_http_failures = 3;
    healthchecks.passive.unhealthy_tcp_failures = 1;
    healthchecks.passive.unhealthy_timeouts = 2;
    UpstreamSpec {
        id: "drill".to_string(),
        name: Arc::from(NAME),
        algorithm: Algorithm::Latency,
        hash_on: HashOn::None,
        hash_fallback: HashOn::None,
        slots: 10_000,
        host_header: None,
        healthchecks,
        failover: FailoverPolicy::default(),
        targets: vec![
            target(18081, 0, "primary"),
            target(18082, 0, "primary"),
            target(18083, 0, "primary"),
            target(18084, 1, "secondary"),
            target(18085, 1, "secondary"),
        ],
        tags: Vec::new(),
    }
}

fn controller() -> Controller {
    let mut controller = Controller::new();
    let mut actions = Vec::new();
    controller.apply(
        Instant::ZERO,
        Event::TopologyReplaced {
            upstreams: vec![spec()],
        },
        &mut actions,
    );
    controller
}

/// The three primaries' keys, as the data plane reports them (cloned from the snapshot).
fn primary_keys(snapshot: &UpstreamSnapshot) -> Vec<AddressKey> {
    snapshot
        .addresses
        .iter()
        .filter(|a| a.tier == 0)
        .map(|a| a.key.clone())
        .collect()
}

/// Attempt events over the primaries, in turn, starting at 1 s of virtual time.
struct Attempts {
    controller: Controller,
    name: Arc<str>,
    keys: Vec<AddressKey>,
    actions: Vec<Action>,
    n: u64,
    fail_every: u64,
}

impl Attempts {
    fn new(fail_every: u64) -> Self {
        let controller = controller();
        let snapshot = controller.snapshot(NAME).expect("snapshot");
        Attempts {
            name: snapshot.name.clone(),
            keys: primary_keys(&snapshot),
            controller,
            actions: Vec::new(),
            n: 0,
            fail_every,
        }
    }

    fn step(&mut self) {
        self.n += 1;
        let now = Instant::from_millis(1_000 + self.n / EVENTS_PER_MS);
        let key = &self.keys[(self.n % self.keys.len() as u64) as usize];
        let status = if self.fail_every > 0 && self.n.is_multiple_of(self.fail_every) {
            503
        } else {
            200
        };
        self.controller.apply(
            now,
            Event::AttemptCompleted {
                upstream: self.name.clone(),
                address: key.clone(),
                outcome: AttemptOutcome::Status(status),
                latency: Duration::from_micros(300),
            },
            &mut self.actions,
        );
        // The driver carries the actions out and reuses the buffer.
        self.actions.clear();
    }
}

/// Picks over the upstream's snapshot, each followed by the latency sample of its answer.
struct Picks {
    snapshot: Arc<UpstreamSnapshot>,
    n: u64,
}

impl Picks {
    fn new() -> Self {
        let snapshot = controller().snapshot(NAME).expect("snapshot");
        // A warm proxy: every address has answered once. (Without this, an address whose
        // seed lost its first comparisons is not picked again until the seed has decayed
        // to the others' estimates, ~35 s, and each pick in that time decays it afresh.)
        for view in &snapshot.addresses {
            ewma::observe(
                &view.load,
                Duration::from_micros(500),
                Instant::from_millis(999),
            );
        }
        Picks { snapshot, n: 0 }
    }

    fn step(&mut self) {
        self.n += 1;
        let now = Instant::from_millis(1_000 + self.n / EVENTS_PER_MS);
        let cx = PickContext {
            now,
            // The proxy's entropy is random; a mixed counter is as good and reproducible.
            entropy: self.n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            hash_key: None,
            tried: &[],
        };
        if let Ok(picked) = pick(black_box(&self.snapshot), &cx)
            && let Some(view) = self.snapshot.addresses.get(picked.index as usize)
        {
            // 200 µs to 1 ms: a fast local backend with some spread.
            let rtt = Duration::from_micros(200 + (self.n * 37) % 800);
            ewma::observe(&view.load, rtt, now);
        }
    }
}

#[inline(never)]
fn run_loop(which: &str, iters: u64) {
    match which {
        "apply_ok" | "apply_mixed" => {
            let mut attempts = Attempts::new(if which == "apply_ok" {
                0
            } else {
                MIXED_FAILURE_EVERY
            });
            for _ in 0..iters {
                attempts.step();
            }
            black_box(&attempts.controller);
        }
        "pick_observe" => {
            let mut picks = Picks::new();
            for _ in 0..iters {
                picks.step();
            }
        }
        other => panic!("unknown SLUICE_CORE_LOOP {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");
    let mut ok = Attempts::new(0);
    group.bench_function("apply_ok", |b| b.iter(|| ok.step()));
    let mut mixed = Attempts::new(MIXED_FAILURE_EVERY);
    group.bench_function("apply_mixed", |b| b.iter(|| mixed.step()));
    let mut picks = Picks::new();
    group.bench_function("pick_observe", |b| b.iter(|| picks.step()));
    group.finish();
}

fn main() {
    if let Ok(which) = std::env::var("SLUICE_CORE_LOOP") {
        let iters = std::env::var("SLUICE_CORE_ITERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        run_loop(&which, iters);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
