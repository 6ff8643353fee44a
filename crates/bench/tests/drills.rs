//! Failover drills as tests: real `sluice backend` processes (3 primary, 2 secondary),
//! a real `sluice run` in front of them, paced load of 2,000 req/s over 64 keep-alive
//! connections, every response recorded, and a real fault (SIGKILL, or a primary
//! started with `--fault`).
//!
//! The assertions are the goals that stay robust on a loaded 2-core CI machine with a
//! debug build: no failed client request in the blackout, one-down and hang drills;
//! 0 % leaked to the secondary when one primary of three is down; under 0.1 % errors in
//! the gray failure. Timing numbers (failover time, p99s, failback) are printed and
//! written to `target/drill-reports/*.json`, not asserted: on a shared machine they
//! measure the machine as much as Sluice. `bench/drills.sh` takes the real numbers
//! with a release build.
//!
//! Needs `target/debug/sluice` (or SLUICE_BIN): built by `cargo test --workspace`, and
//! built here with `cargo build -p sluice` when missing. The drills run one at a time
//! (they would otherwise compete for the two cores); the whole file takes about a
//! minute.

use std::path::PathBuf;
use std::time::Duration;

use sluice_bench::drill::{self, DrillReport, DrillSpec, Scenario};
use sluice_bench::peers::{Peer, Settings};
use sluice_bench::procs;

/// One drill at a time: each one already uses both cores (gateway, five backends, load).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The brief's rate; `SLUICE_DRILL_RATE` lowers it on a machine too slow for a debug
/// build at 2,000 req/s.
fn rate() -> f64 {
    std::env::var("SLUICE_DRILL_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000.0)
}

fn reports_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/drill-reports")
}

/// Short phases: 2 s before the fault, 3 s of fault, 8 s after a restore (the drill
/// config's 3 s hold-down plus 3 s ramp, and 2 s to see it settle). Brownout, gray and
/// hang are faulty from the start, so they run 3 s in all.
fn short_spec(scenario: Scenario, release: bool) -> DrillSpec {
    let sluice = match procs::sluice_binary(release) {
        Ok(path) => path,
        Err(_) => build_sluice(release),
    };
    let work_dir = std::env::temp_dir().join(format!(
        "sluice-drill-test-{}-{}",
        scenario.name(),
        std::process::id()
    ));
    DrillSpec {
        rate: rate(),
        connections: 64,
        before: Duration::from_secs(2),
        fault: Duration::from_secs(3),
        after: Duration::from_secs(8),
        ..DrillSpec::full(Peer::Sluice, scenario, sluice, work_dir)
    }
}

/// Builds the `sluice` binary when it is missing (a `cargo test -p sluice-bench` on a
/// fresh checkout; `cargo test --workspace` builds it anyway), with the cargo that built
/// this test.
fn build_sluice(release: bool) -> PathBuf {
    let mut command = std::process::Command::new(env!("CARGO"));
    command.args(["build", "-p", "sluice"]);
    if release {
        command.arg("--release");
    }
    let status = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build sluice: {e}"));
    assert!(status.success(), "`cargo build -p sluice` failed: {status}");
    match procs::sluice_binary(release) {
        Ok(path) => path,
        Err(e) => panic!("{e:#}"),
    }
}

async fn run(spec: DrillSpec) -> DrillReport {
    let _serial = SERIAL.lock().await;
    let scenario = spec.scenario;
    let report = match drill::run(spec).await {
        Ok(report) => report,
        Err(e) => panic!("drill {} could not run: {e:#}", scenario.name()),
    };
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    let dir = reports_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(format!("sluice-{}.json", scenario.name())), &json);
    }
    println!(
        "drill {}: {} requests, {} failed, errors {:?}, statuses {:?}, p99 {:.2} ms, max {:.1} ms",
        scenario.name(),
        report.total.requests,
        report.total.failed,
        report.total.errors,
        report.total.statuses,
        report.total.latency.p99_ms,
        report.total.latency.max_ms
    );
    for goal in &report.goals {
        println!(
            "  goal {}: {} (want {}) {}",
            goal.name,
            goal.measured,
            goal.target,
            if goal.met { "met" } else { "MISSED" }
        );
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackout_of_every_primary_fails_no_client_request_and_fails_back() {
    let report = run(short_spec(Scenario::Blackout, false)).await;
    println!(
        "  failover: first secondary answer {:?} ms, p99 on secondary {:?} ms; failback: first primary {:?} ms, ≥90 % primary {:?} ms",
        report.failover_first_secondary_ms,
        report.p99_on_secondary_ms,
        report.failback_first_primary_ms,
        report.failback_90pct_ms
    );
    assert!(report.total.requests > 0, "no load was recorded");
    assert_eq!(
        report.total.failed, 0,
        "failed client requests: errors {:?}, statuses {:?}",
        report.total.errors, report.total.statuses
    );
    // While every primary is dead, everything is served by the secondary.
    let during_secondary = report
        .during
        .regions
        .get("secondary")
        .copied()
        .unwrap_or(0.0);
    assert!(
        during_secondary > 0.99,
        "secondary served only {during_secondary} during the blackout"
    );
    // After the restore, the primary takes traffic again within the run.
    assert!(
        report.failback_first_primary_ms.is_some(),
        "no answer from a restored primary within {} s",
        report.after_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_primary_down_leaks_nothing_to_the_secondary() {
    let report = run(short_spec(Scenario::OneDown, false)).await;
    let leaked = report
        .during
        .regions
        .get("secondary")
        .copied()
        .unwrap_or(0.0);
    assert_eq!(leaked, 0.0, "share served by the secondary: {leaked}");
    assert_eq!(
        report.total.failed, 0,
        "failed client requests: errors {:?}, statuses {:?}",
        report.total.errors, report.total.statuses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_failure_stays_below_a_thousandth_of_errors() {
    let report = run(short_spec(Scenario::Gray, false)).await;
    println!(
        "  bad host: {:?} requests reached it, {:?} answers reached clients",
        report.bad_host_requests, report.bad_host_client_answers
    );
    let ratio = report.during.error_ratio();
    assert!(
        ratio < 0.001,
        "client-visible error ratio {ratio} ({} of {}; statuses {:?})",
        report.during.failed,
        report.during.requests,
        report.during.statuses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_primary_fails_no_client_request() {
    let report = run(short_spec(Scenario::Hang, false)).await;
    println!(
        "  p99 during the hang {:.1} ms (per-try timeout {} ms), max {:.1} ms",
        report.during.latency.p99_ms,
        Settings::default().per_try_timeout_ms,
        report.during.latency.max_ms
    );
    assert_eq!(
        report.total.failed, 0,
        "failed client requests: errors {:?}, statuses {:?}",
        report.total.errors, report.total.statuses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brownout_fails_no_client_request() {
    let baseline = run(short_spec(Scenario::Baseline, false)).await;
    let report = run(DrillSpec {
        baseline_p99_ms: Some(baseline.total.latency.p99_ms),
        ..short_spec(Scenario::Brownout, false)
    })
    .await;
    // The p99 ratio goal (≤ 1.5×) is printed, not asserted: with a debug build on a
    // shared 2-core machine the no-fault p99 itself moves by more than that.
    assert_eq!(
        report.total.failed, 0,
        "failed client requests: errors {:?}, statuses {:?}",
        report.total.errors, report.total.statuses
    );
}

/// The full-length drills with the release build, goals asserted including timing.
/// Ignored: needs `cargo build --release -p sluice` and a quiet machine, and takes
/// about three minutes. Run with
/// `cargo test -p sluice-bench --test drills -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs target/release/sluice and a quiet machine; ~3 minutes"]
async fn full_length_release_drills_meet_every_goal() {
    let mut missed = Vec::new();
    let mut baseline_p99_ms = None;
    for scenario in [
        Scenario::Baseline,
        Scenario::Blackout,
        Scenario::Brownout,
        Scenario::Gray,
        Scenario::OneDown,
        Scenario::Hang,
    ] {
        let spec = short_spec(scenario, true);
        let spec = DrillSpec {
            before: Duration::from_secs(5),
            fault: Duration::from_secs(15),
            after: Duration::from_secs(15),
            baseline_p99_ms,
            ..spec
        };
        let report = run(spec).await;
        if scenario == Scenario::Baseline {
            baseline_p99_ms = Some(report.total.latency.p99_ms);
        }
        for goal in report.goals.iter().filter(|g| !g.met) {
            missed.push(format!(
                "{}: {} = {} (want {})",
                scenario.name(),
                goal.name,
                goal.measured,
                goal.target
            ));
        }
    }
    assert!(missed.is_empty(), "goals missed:\n{}", missed.join("\n"));
}
