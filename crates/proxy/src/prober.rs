//! The prober: one long-lived task per upstream that runs the upstream's active probes.
//!
//! Why not a task per probe: at 10,000 probes a second, spawning a task per probe, making
//! it wait on the upstream's concurrency semaphore and sending each result over the
//! driver's channel cost more than the probes' own I/O (thread wake-ups and context
//! switches were over half the CPU; BENCHMARKS.md, "Active probe cost"). Here:
//! - the driver hands an upstream's due probes over in one batch (one lock, one wake-up);
//! - the prober runs up to the check's `concurrency` of them at once *inside its own
//!   task* ([`FuturesUnordered`]): no spawn, no semaphore, no cross-task wake-up per
//!   probe;
//! - it owns the upstream's kept connections (keep-alive mode): no shared map, no lock;
//! - it returns results to the driver in batches: one send (and one driver wake-up) per
//!   batch, sent when [`RESULT_BATCH`] results are ready or when nothing else is ready
//!   right now, so a result never waits for other probes to finish.
//!
//! Bounded: the queue holds at most one waiting probe per address. When probes are
//! slower than their schedule (interval × addresses / concurrency), a probe that falls
//! due while the same address's previous probe is still *waiting to start* is merged into
//! it (counted in [`ProberHandle::coalesced`]) instead of queueing behind it, so the queue
//! never grows beyond the upstream's address count. Probes already running are not
//! affected: an address may be probed again while a slow probe of it is in flight, as
//! with Kong's overlapping check rounds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sluice_core::event::{Event, ProbeOutcome};
use sluice_core::snapshot::AddressKey;
use sluice_core::topology::{ActiveHealthCheck, ProbeType};
use tokio::sync::{Notify, mpsc};

use crate::fasthash::FastHash;
use crate::headers::host_header_for;
use crate::metrics::Metrics;
use crate::probe;
use crate::probe_keepalive::{self, Kept};
use crate::tls::ClientIdentity;

/// Most probe results sent to the driver in one message. The driver applies events under
/// the controller lock in batches of up to 256 (`driver::EVENT_BATCH`); a batch of the
/// same size keeps one prober message within one lock hold while still turning hundreds
/// of per-probe wake-ups into one.
pub const RESULT_BATCH: usize = 256;

/// How often idle kept probe connections are swept for ones past their max age. An
/// entry outlives its usefulness only when its address stopped being probed (removed
/// from the topology, or no probes while healthy); a minute of delay in closing such a
/// connection costs one idle socket, and sweeping rarely keeps the O(n) scan off the
/// per-probe path.
const KEPT_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One due probe, as the controller asked for it.
#[derive(Debug)]
pub struct Job {
    pub address: AddressKey,
    /// The controller's index of the address (`Action::Probe::slot`), returned with the
    /// result so the controller finds the address without comparing keys.
    pub slot: u32,
    pub check: Arc<ActiveHealthCheck>,
    pub host_header: Option<String>,
    /// The upstream's `client_certificate`, presented by `https` probes.
    pub client: Option<Arc<ClientIdentity>>,
}

/// What a message from a prober to the driver carries.
pub type ResultBatch = Vec<Event>;

/// Probes waiting to start, at most one per address.
#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    queued: HashSet<AddressKey, FastHash>,
    /// Set when the upstream is gone or the driver stopped: the prober ends.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
    coalesced: AtomicU64,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The driver's handle on one upstream's prober task.
#[derive(Debug, Clone)]
pub struct ProberHandle {
    shared: Arc<Shared>,
}

impl ProberHandle {
    /// Start the prober of `upstream`; its results go to `results`.
    pub fn spawn(
        upstream: Arc<str>,
        metrics: Arc<Metrics>,
        results: mpsc::Sender<ResultBatch>,
    ) -> ProberHandle {
        let shared = Arc::new(Shared::default());
        tokio::spawn(run(upstream, shared.clone(), metrics, results));
        ProberHandle { shared }
    }

    /// Queue due probes (one lock, one wake-up for the whole batch). A probe of an
    /// address that is already waiting to start is merged into the waiting one; returns
    /// how many were merged (`sluice_probes_coalesced_total`).
    pub fn enqueue(&self, jobs: impl IntoIterator<Item = Job>) -> u64 {
        let mut merged = 0;
        {
            let mut queue = self.shared.queue();
            for job in jobs {
                if queue.queued.insert(job.address.clone()) {
                    queue.jobs.push_back(job);
                } else {
                    merged += 1;
                }
            }
        }
        if merged > 0 {
            self.shared.coalesced.fetch_add(merged, Ordering::Relaxed);
        }
        self.shared.wake.notify_one();
        merged
    }

    /// Stop the prober: probes not started are dropped, running ones are abandoned.
    pub fn close(&self) {
        self.shared.queue().closed = true;
        self.shared.wake.notify_one();
    }

    /// Due probes merged into an already waiting probe of the same address because the
    /// prober was behind its schedule.
    pub fn coalesced(&self) -> u64 {
        self.shared.coalesced.load(Ordering::Relaxed)
    }

    /// Probes waiting to start.
    pub fn waiting(&self) -> usize {
        self.shared.queue().jobs.len()
    }
}

/// A finished probe: the event for the controller and the connection to keep, if any.
struct Done {
    address: AddressKey,
    slot: u32,
    outcome: ProbeOutcome,
    /// The connection to put back (`None`: none, or it never left the map).
    kept: Option<(Kept, Duration)>,
}

type Running = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A started probe: answered at once (see [`probe_keepalive::answers_now`]) or running.
enum Started {
    Done(Done),
    Running(Running),
}

/// Kept connections between probes of this upstream, one per socket address (a probe
/// takes its address's connection out and puts it back when it stays usable, so two
/// probes of one address never share a connection; the later put-back replaces the
/// earlier). A `tcp` probe answered at once uses it where it lies: it never awaits, so
/// nothing can share it meanwhile.
struct KeptConnections {
    idle: HashMap<SocketAddr, (Kept, tokio::time::Instant), FastHash>,
    next_sweep: tokio::time::Instant,
}

impl KeptConnections {
    fn put(&mut self, addr: SocketAddr, kept: Kept, max_age: Duration, now: tokio::time::Instant) {
        let expires = kept.opened() + max_age;
        self.idle.insert(addr, (kept, expires));
        if now >= self.next_sweep {
            self.idle.retain(|_, (_, expires)| *expires > now);
            self.next_sweep = now + KEPT_SWEEP_EVERY;
        }
    }
}

async fn run(
    upstream: Arc<str>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    results: mpsc::Sender<ResultBatch>,
) {
    let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
    let mut kept = KeptConnections {
        idle: HashMap::default(),
        next_sweep: tokio::time::Instant::now() + KEPT_SWEEP_EVERY,
    };
    let mut batch: ResultBatch = Vec::new();
    // The concurrency of the newest check seen (a reload may change it).
    let mut limit = 1usize;
    loop {
        // Start waiting probes up to the limit (one lock for all of them). Probes answered
        // at once never occupy a place of the limit; at most a batch of them is taken per
        // lock hold, so the driver's enqueue does not wait long for the lock.
        let now = tokio::time::Instant::now();
        {
            let mut queue = shared.queue();
            if queue.closed {
                return;
            }
            while running.len() < limit && batch.len() < RESULT_BATCH {
                let Some(job) = queue.jobs.pop_front() else {
                    break;
                };
                queue.queued.remove(&job.address);
                limit = usize::try_from(job.check.concurrency.max(1)).unwrap_or(usize::MAX);
                match start(job, &mut kept, now) {
                    Started::Done(done) => {
                        finish(&upstream, &metrics, &mut kept, &mut batch, done, now)
                    }
                    Started::Running(probe) => running.push(probe),
                }
            }
        }
        if batch.len() >= RESULT_BATCH {
            if !send(&results, &mut batch).await {
                return;
            }
            continue;
        }
        // Take what has finished without waiting; send when full or about to wait.
        if let Some(Some(done)) = running.next().now_or_never() {
            let now = tokio::time::Instant::now();
            finish(&upstream, &metrics, &mut kept, &mut batch, done, now);
            if batch.len() >= RESULT_BATCH && !send(&results, &mut batch).await {
                return;
            }
            continue;
        }
        if !batch.is_empty() && !send(&results, &mut batch).await {
            return;
        }
        tokio::select! {
            biased;
            Some(done) = running.next(), if !running.is_empty() => {
                let now = tokio::time::Instant::now();
                finish(&upstream, &metrics, &mut kept, &mut batch, done, now);
            }
            _ = shared.wake.notified() => {}
        }
    }
}

/// Hand the batch to the driver (awaited: results are never dropped). False when the
/// driver is gone.
async fn send(results: &mpsc::Sender<ResultBatch>, batch: &mut ResultBatch) -> bool {
    let full = std::mem::replace(batch, Vec::with_capacity(RESULT_BATCH.min(batch.len() * 2)));
    results.send(full).await.is_ok()
}

fn finish(
    upstream: &Arc<str>,
    metrics: &Metrics,
    kept: &mut KeptConnections,
    batch: &mut ResultBatch,
    done: Done,
    now: tokio::time::Instant,
) {
    if let Some((conn, max_age)) = done.kept {
        kept.put(done.address.addr, conn, max_age, now);
    }
    metrics.on_probe(upstream, &done.address, done.outcome);
    batch.push(Event::ProbeCompleted {
        upstream: upstream.clone(),
        address: done.address,
        slot: done.slot,
        outcome: done.outcome,
    });
}

/// Start `job`: its result at once when no waiting is needed (a `tcp` keep-alive probe on
/// a usable kept connection), else its probe future: boxed, so a waiting probe is a small
/// queue entry and the probe's state (socket, buffers, TLS) exists only while it runs.
fn start(job: Job, kept: &mut KeptConnections, now: tokio::time::Instant) -> Started {
    let Job {
        address,
        slot,
        check,
        host_header,
        client,
    } = job;
    // Only `http` and `https` probes send a Host (and SNI): a `tcp` probe builds none.
    let host = if matches!(check.probe_type, ProbeType::Http | ProbeType::Https) {
        host_header.unwrap_or_else(|| {
            host_header_for(&address.hostname, address.addr.port())
                .and_then(|v| v.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| address.hostname.to_string())
        })
    } else {
        String::new()
    };
    match check.keepalive {
        None => {
            // The upstream may have switched keep-alive off in a reload: close what it
            // kept rather than hold the sockets until the upstream goes away.
            if !kept.idle.is_empty() {
                kept.idle.remove(&address.addr);
            }
            Started::Running(Box::pin(async move {
                let outcome = probe::probe(address.addr, &check, &host, client.as_deref()).await;
                Done {
                    address,
                    slot,
                    outcome,
                    kept: None,
                }
            }))
        }
        Some(max_age) => {
            // A usable kept connection answers a `tcp` probe where it lies in the map:
            // no remove and re-insert per probe.
            let verdict = kept
                .idle
                .get(&address.addr)
                .and_then(|(conn, _)| probe_keepalive::answers_now(&check, max_age, conn, now));
            if verdict == Some(true) {
                return Started::Done(Done {
                    address,
                    slot,
                    outcome: ProbeOutcome::TcpSuccess,
                    kept: None,
                });
            }
            // Otherwise the probe takes the connection (dropped if found unusable).
            let conn = kept.idle.remove(&address.addr).map(|(conn, _)| conn);
            let conn = if verdict == Some(false) { None } else { conn };
            Started::Running(Box::pin(async move {
                let (outcome, conn) = probe_keepalive::probe(
                    address.addr,
                    &check,
                    &host,
                    max_age,
                    conn,
                    client.as_deref(),
                )
                .await;
                Done {
                    address,
                    slot,
                    outcome,
                    kept: conn.map(|c| (c, max_age)),
                }
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    fn check(probe_type: ProbeType, concurrency: u32, timeout: Duration) -> Arc<ActiveHealthCheck> {
        let mut check = sluice_core::topology::HealthChecks::default().active;
        check.probe_type = probe_type;
        check.concurrency = concurrency;
        check.timeout = timeout;
        check.http_path = "/health".into();
        Arc::new(check)
    }

    fn job(addr: SocketAddr, check: &Arc<ActiveHealthCheck>) -> Job {
        Job {
            address: AddressKey {
                addr,
                hostname: Arc::from(addr.ip().to_string()),
            },
            slot: 0,
            check: check.clone(),
            host_header: None,
            client: None,
        }
    }

    /// Collect `n` results (bounded wait), returning how many messages carried them.
    async fn collect(rx: &mut mpsc::Receiver<ResultBatch>, n: usize) -> (Vec<Event>, usize) {
        let mut events = Vec::new();
        let mut messages = 0;
        while events.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("results within 10 s")
                .expect("prober alive");
            messages += 1;
            events.extend(batch);
        }
        (events, messages)
    }

    /// Listeners on loopback, one per target: distinct addresses, as real targets are.
    async fn listeners(n: usize) -> Vec<TcpListener> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn never_runs_more_than_the_concurrency_at_once() {
        // Backends that accept and never answer: every http probe runs to its timeout,
        // so until the first timeout the connections accepted are exactly the probes the
        // prober started.
        let targets = listeners(9).await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut addrs = Vec::new();
        for listener in targets {
            addrs.push(listener.local_addr().unwrap());
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((conn, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    held.push(conn);
                }
            });
        }
        let (tx, mut rx) = mpsc::channel(64);
        let prober = ProberHandle::spawn(Arc::from("pool"), Arc::new(Metrics::new()), tx);
        let timeout = Duration::from_millis(1500);
        let check = check(ProbeType::Http, 3, timeout);
        let started = tokio::time::Instant::now();
        prober.enqueue(addrs.iter().map(|a| job(*a, &check)));
        // Bounded wait for the first three connections.
        while accepted.load(Ordering::SeqCst) < 3 && started.elapsed() < timeout / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Give a fourth probe every chance to start (it must not) before any times out.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            started.elapsed() < timeout,
            "observed before the first timeout"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "`concurrency` probes at once"
        );
        assert_eq!(prober.waiting(), 6, "the rest wait in the queue");
        let (events, _) = collect(&mut rx, addrs.len()).await;
        assert_eq!(events.len(), 9);
        assert!(events.iter().all(|e| matches!(
            e,
            Event::ProbeCompleted {
                outcome: ProbeOutcome::Timeout,
                ..
            }
        )));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            9,
            "every address probed once"
        );
        prober.close();
    }

    #[tokio::test]
    async fn results_come_back_in_batches() {
        // Connect-only probes to listening sockets finish within one reactor turn of each
        // other: the driver gets far fewer messages than results.
        let targets = listeners(200).await;
        let addrs: Vec<SocketAddr> = targets.iter().map(|l| l.local_addr().unwrap()).collect();
        let (tx, mut rx) = mpsc::channel(64);
        let prober = ProberHandle::spawn(Arc::from("pool"), Arc::new(Metrics::new()), tx);
        let check = check(ProbeType::Tcp, 200, Duration::from_secs(2));
        prober.enqueue(addrs.iter().map(|a| job(*a, &check)));
        let (events, messages) = collect(&mut rx, addrs.len()).await;
        assert_eq!(events.len(), 200);
        assert!(events.iter().all(|e| matches!(
            e,
            Event::ProbeCompleted {
                outcome: ProbeOutcome::TcpSuccess,
                ..
            }
        )));
        assert!(
            messages < 50,
            "200 results should arrive in a few batches, took {messages} messages"
        );
        prober.close();
        drop(targets);
    }

    #[tokio::test]
    async fn a_due_probe_of_a_waiting_address_is_merged_not_queued() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = target.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        // Built without its task: the queue is observed before anything runs.
        let prober = ProberHandle {
            shared: Arc::new(Shared::default()),
        };
        let check = check(ProbeType::Tcp, 1, Duration::from_secs(2));
        let merged: u64 = (0..5).map(|_| prober.enqueue([job(addr, &check)])).sum();
        assert_eq!(
            merged, 4,
            "enqueue reports what it merged (the metric's source)"
        );
        assert_eq!(prober.waiting(), 1, "one waiting probe per address");
        assert_eq!(prober.coalesced(), 4);
        tokio::spawn(run(
            Arc::from("pool"),
            prober.shared.clone(),
            Arc::new(Metrics::new()),
            tx,
        ));
        let (events, _) = collect(&mut rx, 1).await;
        assert_eq!(events.len(), 1);
        // Once started, the address may be queued again.
        prober.enqueue([job(addr, &check)]);
        let (events, _) = collect(&mut rx, 1).await;
        assert_eq!(events.len(), 1);
        prober.close();
    }

    #[tokio::test]
    async fn tcp_keepalive_probes_reuse_the_kept_connection_and_replace_a_closed_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if conn_tx.send(conn).is_err() {
                    break;
                }
            }
        });
        let (tx, mut rx) = mpsc::channel(64);
        let prober = ProberHandle::spawn(Arc::from("pool"), Arc::new(Metrics::new()), tx);
        let mut tcp = (*check(ProbeType::Tcp, 1, Duration::from_secs(2))).clone();
        tcp.keepalive = Some(Duration::from_secs(3600));
        let tcp = Arc::new(tcp);
        let success = |events: &[Event]| {
            matches!(
                events,
                [Event::ProbeCompleted {
                    outcome: ProbeOutcome::TcpSuccess,
                    ..
                }]
            )
        };
        for _ in 0..3 {
            prober.enqueue([job(addr, &tcp)]);
            let (events, _) = collect(&mut rx, 1).await;
            assert!(success(&events), "{events:?}");
        }
        let first = conn_rx.recv().await.unwrap();
        assert!(conn_rx.try_recv().is_err(), "three probes, one connection");
        // The backend closes it: a later probe notices (bounded wait for the FIN to reach
        // the reactor) and reconnects at once, which is not a failure.
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                prober.enqueue([job(addr, &tcp)]);
                let (events, _) = collect(&mut rx, 1).await;
                assert!(success(&events), "{events:?}");
                if let Ok(conn) = conn_rx.try_recv() {
                    break conn;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("reconnected within 5 s");
        drop(second);
        prober.close();
    }

    #[tokio::test]
    async fn closing_ends_the_task() {
        let (tx, mut rx) = mpsc::channel(1);
        let prober = ProberHandle::spawn(Arc::from("pool"), Arc::new(Metrics::new()), tx);
        prober.close();
        // The task dropped its sender: the channel ends.
        let end = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(end, Ok(None)));
    }
}
