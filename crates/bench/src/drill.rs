//! The failover drills: real backends, a real proxy, paced load, a real fault, and what
//! the clients saw.
//!
//! Every drill has the same shape: three primary and two secondary `sluice backend`
//! processes; the proxy under test in front of them ([`crate::peers`]); paced load
//! through it, every response recorded ([`crate::load`]); after `before`, a fault; and,
//! for the blackout, a restore after `fault`. Timeline offsets are measured on the same
//! clock as the load's intended send times, so "time until traffic moved" is exact.
//!
//! Faults are applied the way an operator would see them. Blackout and one-down SIGKILL
//! backends mid-run (and the blackout starts them again on the same ports). Brownout
//! (`slow:200`), gray failure (`error:500`) and hang start the faulty primary *with* its
//! fault, before the proxy: switching a fault mid-run means restarting the process, and
//! the connection resets of that restart would get the host ejected for reasons that
//! have nothing to do with the fault under test (measured: every proxy then sent it
//! almost nothing, which says nothing about gray-failure detection). For these three the
//! whole run is the fault phase; the brownout compares its p99 with a separate baseline
//! run of the same proxy (`baseline_p99_ms`).
//!
//! | drill | fault | goal |
//! |---|---|---|
//! | blackout | SIGKILL all 3 primaries, restore later | 0 failed client requests |
//! | brownout | one primary +200 ms | p99 ≤ 1.5 × the baseline run's p99 |
//! | gray | one primary answers 500, `/health` 200 | error ratio < 0.1 %, ≤ 10 requests to the bad host in 15 s |
//! | one-down | SIGKILL one primary | 0 % of answers from the secondary |
//! | hang | one primary accepts and never answers | 0 failed requests, p99 ≤ per-try timeout |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::process::Command;

use crate::load::{self, LoadSpec};
use crate::peers::{self, Layout, Peer, Settings};
use crate::procs::{self, BackendSpec, Proc};
use crate::record::Record;
use crate::summary::{self, Slice};

/// Load before the measured run, outside the measurement: a second of the same load lets
/// every proxy open its upstream connections and see its first health-check round.
pub const WARMUP: Duration = Duration::from_secs(1);

/// The drills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No fault at all (the reference for the others).
    Baseline,
    Blackout,
    Brownout,
    Gray,
    OneDown,
    Hang,
}

impl Scenario {
    /// Whether the faulty primary starts with its fault (see the module doc).
    pub fn fault_from_start(self) -> bool {
        matches!(self, Scenario::Brownout | Scenario::Gray | Scenario::Hang)
    }

    /// The `--fault` of the faulty primary for drills whose fault exists from the start.
    fn initial_fault(self) -> &'static str {
        match self {
            Scenario::Brownout => "slow:200",
            Scenario::Gray => "error:500",
            Scenario::Hang => "hang",
            _ => "none",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::Blackout => "blackout",
            Scenario::Brownout => "brownout",
            Scenario::Gray => "gray",
            Scenario::OneDown => "one-down",
            Scenario::Hang => "hang",
        }
    }
}

/// How one drill runs.
#[derive(Clone, Debug)]
pub struct DrillSpec {
    pub peer: Peer,
    pub scenario: Scenario,
    pub sluice_binary: PathBuf,
    /// Config files and proxy logs go here.
    pub work_dir: PathBuf,
    pub rate: f64,
    pub connections: usize,
    /// Load before the fault.
    pub before: Duration,
    /// Fault duration (the blackout restores after it; the others keep the fault).
    pub fault: Duration,
    /// Load after the restore (blackout only).
    pub after: Duration,
    pub settings: Settings,
    /// The same proxy's p99 without any fault (a `baseline` drill), for the brownout goal.
    pub baseline_p99_ms: Option<f64>,
    /// Prefix each process with `taskset -c <cpus>`: (proxy, backends). Empty = no pinning.
    pub proxy_cpus: String,
    pub backend_cpus: String,
}

impl DrillSpec {
    /// Defaults for a full drill (the numbers in BENCHMARKS.md).
    pub fn full(peer: Peer, scenario: Scenario, sluice_binary: PathBuf, work_dir: PathBuf) -> Self {
        DrillSpec {
            peer,
            scenario,
            sluice_binary,
            work_dir,
            rate: 2000.0,
            connections: 64,
            before: Duration::from_secs(5),
            // 15 s is the gray-failure window from the brief; the same for every fault.
            fault: Duration::from_secs(15),
            after: Duration::from_secs(15),
            settings: Settings::default(),
            baseline_p99_ms: None,
            proxy_cpus: String::new(),
            backend_cpus: String::new(),
        }
    }

    fn total(&self) -> Duration {
        match self.scenario {
            Scenario::Blackout => self.before + self.fault + self.after,
            _ if self.scenario.fault_from_start() => self.fault,
            _ => self.before + self.fault,
        }
    }

    /// The load before the fault (none when the fault exists from the start).
    fn before_phase(&self) -> Duration {
        if self.scenario.fault_from_start() {
            Duration::ZERO
        } else {
            self.before
        }
    }
}

/// One goal, its threshold and what was measured.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// What a drill measured.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    pub peer: Peer,
    pub scenario: Scenario,
    pub rate: f64,
    pub connections: usize,
    pub before_s: f64,
    pub fault_s: f64,
    pub after_s: f64,
    /// All requests of the run.
    pub total: Slice,
    /// Requests due before the fault.
    pub before: Slice,
    /// Requests due while the fault lasted.
    pub during: Slice,
    /// Requests due after the restore (blackout only).
    pub after: Option<Slice>,
    /// Blackout: from the kill to the first answer from the secondary (completion time).
    pub failover_first_secondary_ms: Option<f64>,
    /// Blackout: from the kill until a 500 ms window (by completion time) is ≥ 90 % secondary.
    pub failover_90pct_ms: Option<f64>,
    /// Blackout: p99 of requests due from 1 s after the kill until the restore.
    pub p99_on_secondary_ms: Option<f64>,
    /// Blackout: from the restore to the first answer from a primary.
    pub failback_first_primary_ms: Option<f64>,
    /// Blackout: from the restore until a 1 s window (by due time) is ≥ 90 % primary.
    pub failback_90pct_ms: Option<f64>,
    /// Gray/brownout/hang: answers that came from the faulty backend, as seen by clients.
    pub bad_host_client_answers: Option<u64>,
    /// Gray/brownout/hang: requests the faulty backend itself received during the fault
    /// (from its own counter; health probes excluded), when it could be read.
    pub bad_host_requests: Option<u64>,
    pub goals: Vec<Goal>,
    /// Load-generator lag p99 (ms): when large, the generator was the bottleneck.
    pub send_lag_p99_ms: f64,
    pub abandoned: u64,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Wraps a program in `taskset -c <cpus>` when `cpus` is not empty.
fn pinned(cpus: &str, program: &str) -> Command {
    if cpus.is_empty() {
        Command::new(program)
    } else {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpus).arg(program);
        command
    }
}

/// The five backends and their processes.
struct Backends {
    specs: Vec<BackendSpec>,
    procs: Vec<Option<Proc>>,
}

impl Backends {
    /// Starts the five backends; the first primary gets `first_fault`.
    async fn start(sluice: &Path, cpus: &str, first_fault: &str) -> anyhow::Result<Backends> {
        let mut backends = Backends {
            specs: Vec::new(),
            procs: Vec::new(),
        };
        let roles = [
            ("p1", "primary"),
            ("p2", "primary"),
            ("p3", "primary"),
            ("s1", "secondary"),
            ("s2", "secondary"),
        ];
        for (index, (instance, region)) in roles.into_iter().enumerate() {
            let spec = BackendSpec {
                instance: instance.to_owned(),
                region: region.to_owned(),
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            };
            let fault = if index == 0 { first_fault } else { "none" };
            let (proc, addr) = start_pinned_backend(sluice, &spec, fault, cpus).await?;
            backends.specs.push(BackendSpec { addr, ..spec });
            backends.procs.push(Some(proc));
        }
        Ok(backends)
    }

    fn addrs(&self, region: &str) -> Vec<SocketAddr> {
        self.specs
            .iter()
            .filter(|s| s.region == region)
            .map(|s| s.addr)
            .collect()
    }

    async fn kill(&mut self, index: usize) {
        if let Some(Some(proc)) = self.procs.get_mut(index) {
            proc.kill().await;
        }
        if let Some(slot) = self.procs.get_mut(index) {
            *slot = None;
        }
    }

    async fn restart(
        &mut self,
        sluice: &Path,
        index: usize,
        fault: &str,
        cpus: &str,
    ) -> anyhow::Result<()> {
        self.kill(index).await;
        let spec = self.specs.get(index).cloned().context("no such backend")?;
        // The port was just freed by SIGKILL; the backend binds with SO_REUSEADDR, but a
        // start can still race the kernel, so try a few times (bounded).
        let mut last_error = None;
        for _ in 0..20 {
            match start_pinned_backend(sluice, &spec, fault, cpus).await {
                Ok((proc, _)) => {
                    if let Some(slot) = self.procs.get_mut(index) {
                        *slot = Some(proc);
                    }
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }
}

async fn start_pinned_backend(
    sluice: &Path,
    spec: &BackendSpec,
    fault: &str,
    cpus: &str,
) -> anyhow::Result<(Proc, SocketAddr)> {
    procs::start_backend(sluice, spec, fault, Some(cpus)).await
}

/// Runs one drill and reports what the clients saw.
pub async fn run(spec: DrillSpec) -> anyhow::Result<DrillReport> {
    std::fs::create_dir_all(&spec.work_dir)
        .with_context(|| format!("creating {}", spec.work_dir.display()))?;
    let sluice = spec.sluice_binary.clone();
    let mut backends =
        Backends::start(&sluice, &spec.backend_cpus, spec.scenario.initial_fault()).await?;
    let layout = Layout {
        primaries: backends.addrs("primary"),
        secondaries: backends.addrs("secondary"),
        listen: SocketAddr::from(([127, 0, 0, 1], procs::free_port()?)),
        admin: SocketAddr::from(([127, 0, 0, 1], procs::free_port()?)),
        gui: SocketAddr::from(([127, 0, 0, 1], procs::free_port()?)),
    };
    let mut proxy = start_proxy(
        spec.peer,
        &sluice,
        &layout,
        &spec.settings,
        &spec.work_dir,
        &spec.proxy_cpus,
    )
    .await?;

    // Warm-up outside the measurement: a second of the same load lets every proxy open
    // its upstream connections and see its first health-check round.
    let warmup = LoadSpec {
        url: format!("http://{}/drill", layout.listen).parse()?,
        host: None,
        rate: spec.rate,
        duration: WARMUP,
        connections: spec.connections,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
    };
    let _ = load::run(warmup.clone()).await?;

    let measured = LoadSpec {
        duration: spec.total(),
        ..warmup
    };
    // The load runs in its own task; the fault timeline runs here on the same clock.
    let load_task = tokio::spawn(load::run(measured));
    // `load::run` takes its origin as its first act; give it the scheduler once so the
    // origin is read before the timeline's.
    tokio::task::yield_now().await;
    let origin = tokio::time::Instant::now();
    let fault_at = origin + spec.before_phase();
    tokio::time::sleep_until(fault_at).await;
    let fault_started = tokio::time::Instant::now();

    // Primaries are indices 0..3; the faulty one in single-host drills is p1.
    const BAD: usize = 0;
    let bad_addr = backends.specs.get(BAD).map(|s| s.addr);
    match spec.scenario {
        // Already faulty since before the proxy started.
        Scenario::Baseline | Scenario::Brownout | Scenario::Gray | Scenario::Hang => {}
        Scenario::Blackout => {
            for index in 0..3 {
                backends.kill(index).await;
            }
        }
        Scenario::OneDown => backends.kill(BAD).await,
    }
    let kill_offset = fault_started.saturating_duration_since(origin);
    let mut restore_offset = None;
    if spec.scenario == Scenario::Blackout {
        tokio::time::sleep_until(fault_at + spec.fault).await;
        let restored = tokio::time::Instant::now();
        for index in 0..3 {
            backends
                .restart(&sluice, index, "none", &spec.backend_cpus)
                .await?;
        }
        restore_offset = Some(restored.saturating_duration_since(origin));
    }
    let run = load_task.await.context("load task")??;
    // Every request, for looking into a number after the fact (work dirs are not
    // committed: about 2 MB per minute of load).
    if let Ok(file) = std::fs::File::create(spec.work_dir.join("requests.csv")) {
        let mut out = std::io::BufWriter::new(file);
        let _ = crate::record::write_csv(&mut out, &run.records);
    }
    // Read the faulty backend's own counter before anything is stopped.
    let bad_host_requests = match (spec.scenario, bad_addr) {
        (Scenario::Brownout | Scenario::Gray | Scenario::Hang, Some(addr)) => {
            procs::backend_stats(addr).await
        }
        _ => None,
    };
    // Graceful first: NGINX's workers outlive a SIGKILLed master. Five seconds is far
    // more than any of the four needs to close idle connections and exit.
    proxy.stop(Duration::from_secs(5)).await;
    drop(backends);

    // Re-base the timeline onto the load's own origin (they differ by microseconds).
    let shift = origin.saturating_duration_since(run.started);
    let kill_us = if spec.scenario.fault_from_start() {
        0
    } else {
        ms(kill_offset + shift)
    };
    let restore_us = restore_offset.map(|r| ms(r + shift));
    Ok(analyse(
        &spec,
        &run.records,
        kill_us,
        restore_us,
        bad_host_requests,
        &run,
    ))
}

fn analyse(
    spec: &DrillSpec,
    records: &[Record],
    kill_us: u64,
    restore_us: Option<u64>,
    bad_host_requests: Option<u64>,
    run: &load::LoadRun,
) -> DrillReport {
    let end_us = ms(spec.total());
    let fault_end_us = restore_us.unwrap_or(end_us);
    let before = Slice::of(summary::between(records, 0, kill_us));
    let during = Slice::of(summary::between(records, kill_us, fault_end_us));
    let after = restore_us.map(|r| Slice::of(summary::between(records, r, end_us)));
    let total = Slice::of(records);
    let region_is = |name: &'static str| move |r: &Record| r.region.as_deref() == Some(name);
    let completion = |r: &Record| r.intended_us + r.latency_us;
    let per_try_ms = spec.settings.per_try_timeout_ms as f64;

    let mut report = DrillReport {
        peer: spec.peer,
        scenario: spec.scenario,
        rate: spec.rate,
        connections: spec.connections,
        before_s: spec.before_phase().as_secs_f64(),
        fault_s: spec.fault.as_secs_f64(),
        after_s: if spec.scenario == Scenario::Blackout {
            spec.after.as_secs_f64()
        } else {
            0.0
        },
        total: total.clone(),
        before: before.clone(),
        during: during.clone(),
        after: after.clone(),
        failover_first_secondary_ms: None,
        failover_90pct_ms: None,
        p99_on_secondary_ms: None,
        failback_first_primary_ms: None,
        failback_90pct_ms: None,
        bad_host_client_answers: None,
        bad_host_requests,
        goals: Vec::new(),
        send_lag_p99_ms: {
            let mut lag = crate::histogram::Histogram::new();
            for record in records {
                lag.record(record.send_lag_us);
            }
            lag.quantile(0.99).map_or(0.0, |us| us as f64 / 1000.0)
        },
        abandoned: run.abandoned,
    };
    let to_ms = |us: u64| us as f64 / 1000.0;
    let failed_goal = |name: &str, slice: &Slice| Goal {
        name: name.to_owned(),
        target: "0".to_owned(),
        measured: slice.failed.to_string(),
        met: slice.failed == 0,
    };
    match spec.scenario {
        Scenario::Baseline => {
            report
                .goals
                .push(failed_goal("failed client requests", &total));
        }
        Scenario::Blackout => {
            let restore = restore_us.unwrap_or(end_us);
            // Completion-time order: who answered first after the kill.
            let mut by_completion: Vec<&Record> = records
                .iter()
                .filter(|r| completion(r) >= kill_us)
                .collect();
            by_completion.sort_by_key(|r| completion(r));
            report.failover_first_secondary_ms = by_completion
                .iter()
                .find(|r| region_is("secondary")(r))
                .map(|r| to_ms(completion(r).saturating_sub(kill_us)));
            report.failover_90pct_ms = sustained_by_completion(
                &by_completion,
                kill_us,
                restore,
                500_000,
                0.9,
                "secondary",
            )
            .map(|t| to_ms(t.saturating_sub(kill_us)));
            // A second after the kill every proxy has settled; what remains is the
            // steady cost of serving from the secondary.
            let settled = Slice::of(summary::between(records, kill_us + 1_000_000, restore));
            report.p99_on_secondary_ms = Some(settled.latency.p99_ms);
            if let Some(restore) = restore_us {
                let mut after_restore: Vec<&Record> = records
                    .iter()
                    .filter(|r| completion(r) >= restore)
                    .collect();
                after_restore.sort_by_key(|r| completion(r));
                report.failback_first_primary_ms = after_restore
                    .iter()
                    .find(|r| region_is("primary")(r))
                    .map(|r| to_ms(completion(r).saturating_sub(restore)));
                report.failback_90pct_ms = summary::sustained_from(
                    records,
                    restore,
                    end_us,
                    1_000_000,
                    0.9,
                    region_is("primary"),
                )
                .map(|t| to_ms(t.saturating_sub(restore)));
            }
            report
                .goals
                .push(failed_goal("failed client requests", &total));
        }
        Scenario::Brownout => {
            report.bad_host_client_answers = during.instance_counts.get("p1").copied().or(Some(0));
            match spec.baseline_p99_ms {
                Some(baseline) if baseline > 0.0 => {
                    let ratio = during.latency.p99_ms / baseline;
                    report.goals.push(Goal {
                        name: "p99 during brownout / baseline p99".to_owned(),
                        target: "≤ 1.5".to_owned(),
                        measured: format!(
                            "{ratio:.2} ({:.2} ms / {baseline:.2} ms)",
                            during.latency.p99_ms
                        ),
                        met: ratio <= 1.5,
                    });
                }
                _ => report.goals.push(Goal {
                    name: "p99 during brownout / baseline p99".to_owned(),
                    target: "≤ 1.5".to_owned(),
                    measured: format!(
                        "p99 {:.2} ms; no baseline given (--baseline-p99)",
                        during.latency.p99_ms
                    ),
                    met: false,
                }),
            }
            report
                .goals
                .push(failed_goal("failed client requests", &total));
        }
        Scenario::Gray => {
            report.bad_host_client_answers = during.instance_counts.get("p1").copied().or(Some(0));
            let ratio = during.error_ratio();
            report.goals.push(Goal {
                name: "client-visible error ratio".to_owned(),
                target: "< 0.1 %".to_owned(),
                measured: format!(
                    "{:.4} % ({} of {})",
                    ratio * 100.0,
                    during.failed,
                    during.requests
                ),
                met: ratio < 0.001,
            });
            if let Some(hits) = bad_host_requests {
                report.goals.push(Goal {
                    name: format!(
                        "requests reaching the bad host in {:.0} s (its whole life: proxy start-up, {:.0} s warm-up, {:.0} s measured)",
                        WARMUP.as_secs_f64() + spec.fault.as_secs_f64(),
                        WARMUP.as_secs_f64(),
                        spec.fault.as_secs_f64()
                    ),
                    target: "≤ 10".to_owned(),
                    measured: hits.to_string(),
                    met: hits <= 10,
                });
            }
        }
        Scenario::OneDown => {
            let leaked = during.regions.get("secondary").copied().unwrap_or(0.0);
            report.goals.push(Goal {
                name: "share served by the secondary".to_owned(),
                target: "0 %".to_owned(),
                measured: format!("{:.3} %", leaked * 100.0),
                met: leaked == 0.0,
            });
            report
                .goals
                .push(failed_goal("failed client requests", &total));
        }
        Scenario::Hang => {
            report.bad_host_client_answers = during.instance_counts.get("p1").copied().or(Some(0));
            report
                .goals
                .push(failed_goal("failed client requests", &total));
            // Bounded by the per-try timeout: one timed-out try plus a fast retry.
            let bound = per_try_ms + 50.0;
            report.goals.push(Goal {
                name: "p99 during hang".to_owned(),
                target: format!("≤ per-try timeout + 50 ms = {bound:.0} ms"),
                measured: format!("{:.1} ms", during.latency.p99_ms),
                met: during.latency.p99_ms <= bound,
            });
        }
    }
    report
}

/// Like [`summary::sustained_from`], over completion times: the first moment from which
/// a window of `window_us` holds at least `share` answers from `region`.
fn sustained_by_completion(
    sorted_by_completion: &[&Record],
    from_us: u64,
    until_us: u64,
    window_us: u64,
    share: f64,
    region: &str,
) -> Option<u64> {
    let step = (window_us / 10).max(1);
    let mut start = from_us;
    while start + window_us <= until_us {
        let mut answered = 0u64;
        let mut matching = 0u64;
        for record in sorted_by_completion.iter().filter(|r| {
            let done = r.intended_us + r.latency_us;
            done >= start && done < start + window_us
        }) {
            if let Some(found) = record.region.as_deref() {
                answered += 1;
                if found == region {
                    matching += 1;
                }
            }
        }
        if answered > 0 && matching as f64 >= share * answered as f64 {
            return Some(start);
        }
        start += step;
    }
    None
}

/// Writes the config and starts `peer`, waiting until it answers 200 through to a backend.
pub async fn start_proxy(
    peer: Peer,
    sluice: &Path,
    layout: &Layout,
    settings: &Settings,
    dir: &Path,
    cpus: &str,
) -> anyhow::Result<Proc> {
    let config_path = dir.join(peer.config_file());
    std::fs::write(&config_path, peers::config(peer, layout, settings, dir))
        .with_context(|| format!("writing {}", config_path.display()))?;
    if peer == Peer::Nginx {
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
    }
    let argv = peers::command_line(peer, sluice, layout, &config_path, dir);
    let (program, args) = argv.split_first().context("empty command line")?;
    let mut command = pinned(cpus, program);
    command.args(args);
    let log = std::fs::File::create(dir.join(format!("{}.log", peer.name())))?;
    command.stdout(log.try_clone()?).stderr(log);
    let mut proc = Proc::spawn(peer.name(), command)?;
    // Envoy and a debug Sluice take the longest; 20 s covers a cold start on a busy box.
    procs::wait_for_200(&mut proc, layout.listen, "/drill", Duration::from_secs(20))
        .await
        .with_context(|| format!("see {}", dir.join(format!("{}.log", peer.name())).display()))?;
    Ok(proc)
}
