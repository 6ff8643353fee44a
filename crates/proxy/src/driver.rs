//! The driver: the glue between the pure decision core and the real world.
//!
//! The `sluice_core::Controller` sits behind a `std::sync::Mutex` because the Admin API
//! reads it synchronously (health counters, decision log); the lock is only ever held
//! for one pure `apply`/`tick`/read call and never across an await. One tokio task
//! ([`run`]) receives the data plane's events on a bounded channel, sleeps until the
//! controller's `next_deadline()` (or until woken), calls `tick`, and carries out the
//! resulting actions:
//! - `Publish`/`Remove`: store into the per-upstream `ArcSwap` the hot path reads;
//! - `Probe`: hand the due probes of one upstream, in one batch, to that upstream's
//!   long-lived prober task ([`crate::prober`]), which runs them (at most the check's
//!   `concurrency` at once, keep-alive connections owned by the prober) and returns
//!   `ProbeCompleted` events in batches;
//! - `Resolve`: spawn a DNS lookup, report `Resolved`;
//! - `HealthChanged`/`Decision`: a log line and the metrics hook.
//!
//! Virtual time: the core's [`sluice_core::Instant`] is milliseconds since the
//! gateway's start ([`Clock`]), derived from tokio's clock so paused-clock tests work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_core::Controller;
use sluice_core::event::{Action, Event};
use tokio::sync::{Notify, mpsc};

use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::probe;
use crate::prober::{Job, ProberHandle, ResultBatch};
use crate::runtime::Slots;

/// Capacity of the event channel from the data plane. Attempt reports are dropped (and
/// counted) when it is full: at 8192 queued events the driver is far behind, and
/// blocking requests on health bookkeeping would turn a slow controller into an outage.
pub const EVENT_CHANNEL_CAPACITY: usize = 8192;

/// Events applied under one lock acquisition before the driver looks at timers again;
/// bounds how long the admin read path can wait for the lock.
const EVENT_BATCH: usize = 256;

/// Capacity of the channel of probe-result batches from the probers. Sends are awaited
/// (results are never dropped), so this only bounds how far probers run ahead of a busy
/// driver: 64 batches of up to `prober::RESULT_BATCH` results is over a second of
/// 10,000 probes a second.
const PROBE_RESULTS_CAPACITY: usize = 64;

/// The mapping between tokio's clock and the core's virtual time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// Now, in the core's time base.
    pub fn now(&self) -> sluice_core::Instant {
        self.at(tokio::time::Instant::now())
    }

    /// A tokio instant in the core's time base.
    pub fn at(&self, t: tokio::time::Instant) -> sluice_core::Instant {
        let ms = t.saturating_duration_since(self.origin).as_millis();
        sluice_core::Instant::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// A core instant as a tokio instant.
    pub fn to_tokio(&self, t: sluice_core::Instant) -> tokio::time::Instant {
        self.origin + Duration::from_millis(t.as_millis())
    }
}

/// The data plane's non-blocking way to report events.
#[derive(Debug)]
pub struct EventSink {
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
    metrics: Arc<Metrics>,
}

impl EventSink {
    /// Queue an event without waiting; counts it as dropped if the queue is full.
    pub fn report(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.on_passive_event_dropped();
        }
    }

    /// Events dropped because the driver was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// State shared by the driver task and the gateway handle.
pub struct Core {
    controller: Mutex<Controller>,
    pub clock: Clock,
    pub slots: Arc<Slots>,
    pub metrics: Arc<Metrics>,
    pub dns: Arc<Dns>,
    pub events: Arc<EventSink>,
    /// Probe results and DNS answers come back here (awaited sends: never dropped).
    results: mpsc::Sender<Event>,
    wake: Notify,
    /// One prober task per upstream that has been asked to probe (by upstream name).
    probers: Mutex<HashMap<Arc<str>, ProberHandle>>,
    /// Given to each new prober for its result batches.
    probe_results: mpsc::Sender<ResultBatch>,
    /// Upstreams whose gRPC probe type was downgraded to a TCP connect (logged once each).
    downgraded: Mutex<Vec<Arc<str>>>,
    /// Set when the data plane applied an event itself ([`Core::report_attempt`]) since
    /// the driver last looked at the timers: the driver is woken once per quantum for
    /// that, not once per event.
    applied_inline: AtomicBool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

/// What the driver task consumes: single events (passive reports, DNS answers) and the
/// probers' result batches.
#[derive(Debug)]
pub struct Inbox {
    events: mpsc::Receiver<Event>,
    probes: mpsc::Receiver<ResultBatch>,
}

impl Core {
    /// Build the core state and the receiving ends the driver task consumes.
    pub fn new(
        clock: Clock,
        slots: Arc<Slots>,
        metrics: Arc<Metrics>,
        dns: Arc<Dns>,
    ) -> (Arc<Core>, Inbox) {
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let (probe_tx, probe_rx) = mpsc::channel(PROBE_RESULTS_CAPACITY);
        let core = Arc::new(Core {
            controller: Mutex::new(Controller::new()),
            clock,
            slots,
            events: Arc::new(EventSink {
                tx: tx.clone(),
                dropped: AtomicU64::new(0),
                metrics: metrics.clone(),
            }),
            metrics,
            dns,
            results: tx,
            wake: Notify::new(),
            probers: Mutex::new(HashMap::new()),
            probe_results: probe_tx,
            downgraded: Mutex::new(Vec::new()),
            applied_inline: AtomicBool::new(false),
        });
        (
            core,
            Inbox {
                events: rx,
                probes: probe_rx,
            },
        )
    }

    /// Read access to the controller (admin views). Keep the guard short.
    pub fn controller(&self) -> MutexGuard<'_, Controller> {
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply one event now and carry out its actions (used by the gateway handle for
    /// topology changes and operator commands, which must take effect before it returns).
    pub fn apply(self: &Arc<Self>, event: Event) {
        let mut actions = Vec::new();
        {
            let now = self.clock.now();
            self.controller().apply(now, event, &mut actions);
        }
        self.execute(actions);
        // The deadline may have moved earlier.
        self.wake.notify_one();
    }

    /// Apply one attempt's report: at once, in the caller, when the controller is free
    /// (always, on one worker thread: nobody holds the lock across an await), else
    /// queued for the driver without waiting.
    ///
    /// Why not always queue: the queue costs a channel send, a wake-up of the driver
    /// task and its poll per request, about as much as applying the event. Applying it
    /// here keeps the driver's one job for events: look at the timers within a quantum
    /// (`applied_inline` wakes it once per quantum, not once per event).
    pub fn report_attempt(self: &Arc<Self>, now: sluice_core::Instant, event: Event) {
        let mut actions = Vec::new();
        match self.controller.try_lock() {
            Ok(mut controller) => controller.apply(now, event, &mut actions),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                poisoned.into_inner().apply(now, event, &mut actions)
            }
            Err(std::sync::TryLockError::WouldBlock) => return self.events.report(event),
        }
        if !actions.is_empty() {
            self.execute(actions);
        }
        if !self.applied_inline.swap(true, Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Apply and empty `events` (the caller reuses the buffer: no allocation per batch).
    fn apply_batch(self: &Arc<Self>, events: &mut Vec<Event>) {
        let mut actions = Vec::new();
        {
            let now = self.clock.now();
            let mut controller = self.controller();
            for event in events.drain(..) {
                controller.apply(now, event, &mut actions);
            }
        }
        self.execute(actions);
    }

    fn tick(self: &Arc<Self>) {
        let mut actions = Vec::new();
        {
            let now = self.clock.now();
            self.controller().tick(now, &mut actions);
        }
        self.execute(actions);
    }

    fn execute(self: &Arc<Self>, actions: Vec<Action>) {
        // Consecutive probes of one upstream (a tick emits them together) go to its
        // prober as one batch: one map lookup, one queue lock, one wake-up.
        let mut probes: Option<(Arc<str>, Vec<Job>)> = None;
        for action in actions {
            if let Action::Probe {
                upstream,
                address,
                slot,
                check,
                host_header,
            } = action
            {
                self.note_downgrade(&upstream, &check);
                let job = Job {
                    address,
                    slot,
                    check,
                    host_header,
                    client: None,
                };
                match &mut probes {
                    Some((current, jobs))
                        if Arc::ptr_eq(current, &upstream) || *current == upstream =>
                    {
                        jobs.push(job)
                    }
                    _ => {
                        if let Some((previous, jobs)) = probes.replace((upstream, vec![job])) {
                            self.dispatch_probes(previous, jobs);
                        }
                    }
                }
                continue;
            }
            // Other actions keep their order relative to the probes before them.
            if let Some((upstream, jobs)) = probes.take() {
                self.dispatch_probes(upstream, jobs);
            }
            match action {
                Action::Probe { .. } => {}
                Action::Publish(snapshot) => self.slots.publish(snapshot),
                Action::Remove { upstream } => {
                    self.slots.remove(&upstream);
                    if let Some(prober) = self.probers().remove(&upstream) {
                        prober.close();
                    }
                }
                Action::Resolve {
                    upstream,
                    target_index,
                    host,
                    port,
                } => {
                    let core = self.clone();
                    tokio::spawn(async move {
                        let (result, ttl) = match core.dns.resolve_target(&host, port).await {
                            Ok(answer) => (Ok(answer.addresses), answer.ttl),
                            Err(e) => {
                                tracing::warn!(%upstream, %host, error = %e, "target resolution failed");
                                (Err(e), None)
                            }
                        };
                        let _ = core
                            .results
                            .send(Event::Resolved {
                                upstream,
                                target_index,
                                result,
                                ttl,
                            })
                            .await;
                    });
                }
                Action::HealthChanged {
                    upstream,
                    address,
                    healthy,
                    reason,
                } => {
                    tracing::info!(
                        %upstream,
                        address = %address.addr,
                        hostname = %address.hostname,
                        healthy,
                        %reason,
                        "address health changed"
                    );
                    self.metrics.on_health_changed(&upstream, &address, healthy);
                }
                Action::Decision(record) => {
                    tracing::info!(
                        upstream = %record.upstream,
                        kind = record.kind.as_str(),
                        seq = record.seq,
                        trigger = %record.trigger,
                        "traffic decision"
                    );
                    self.metrics.on_decision(&record);
                }
            }
        }
        if let Some((upstream, jobs)) = probes {
            self.dispatch_probes(upstream, jobs);
        }
    }

    fn probers(&self) -> MutexGuard<'_, HashMap<Arc<str>, ProberHandle>> {
        self.probers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `jobs` on the prober of `upstream`, starting it on the first probe. The
    /// upstream's client certificate (presented by `https` probes) is looked up once per
    /// batch, not per probe.
    fn dispatch_probes(&self, upstream: Arc<str>, mut jobs: Vec<Job>) {
        let client = self.slots.client_certificate(&upstream);
        if client.is_some() {
            for job in &mut jobs {
                job.client.clone_from(&client);
            }
        }
        let prober = {
            let mut probers = self.probers();
            match probers.get(&upstream) {
                Some(prober) => prober.clone(),
                None => {
                    let prober = ProberHandle::spawn(
                        upstream.clone(),
                        self.metrics.clone(),
                        self.probe_results.clone(),
                    );
                    probers.insert(upstream, prober.clone());
                    prober
                }
            }
        };
        let merged = prober.enqueue(jobs);
        if merged > 0 {
            self.metrics.on_probes_coalesced(merged);
        }
    }

    /// Stop every prober (the driver is ending).
    fn close_probers(&self) {
        for (_, prober) in self.probers().drain() {
            prober.close();
        }
    }

    /// gRPC probe types are probed with a TCP connect: say so once per upstream.
    fn note_downgrade(
        &self,
        upstream: &Arc<str>,
        check: &sluice_core::topology::ActiveHealthCheck,
    ) {
        if !probe::falls_back_to_tcp(check.probe_type) {
            return;
        }
        let mut downgraded = self.downgraded.lock().unwrap_or_else(|p| p.into_inner());
        if !downgraded.contains(upstream) {
            tracing::warn!(
                %upstream,
                probe_type = ?check.probe_type,
                "gRPC active probes are implemented by neither Kong nor Sluice; probing with a TCP connect instead (a reachable port counts as healthy)"
            );
            downgraded.push(upstream.clone());
        }
    }
}

/// Granularity of the driver's timers: due times are rounded up to a multiple of it, the
/// controller's timers are read (and `tick` run) at most once per quantum, and an event
/// that may bring a timer forward is looked at within one quantum. Reading the timers is
/// a scan over every address; with 10,000 actively checked targets (10,000 probe
/// results a second) scanning after every event was most of the driver's CPU. Ten
/// milliseconds is far below any probe interval, ejection or hold-down a user sets
/// (Kong's intervals are whole or tenths of seconds), so nothing observable moves.
const TIMER_QUANTUM: Duration = Duration::from_millis(10);

/// The driver task. Ends when `shutdown` is notified.
pub async fn run(core: Arc<Core>, inbox: Inbox, shutdown: Arc<Notify>) {
    let Inbox {
        mut events,
        mut probes,
    } = inbox;
    let mut last_tick = tokio::time::Instant::now();
    let mut wake_at = next_wake(&core, last_tick);
    // One event buffer for the driver's life: attempt reports arrive at request rate.
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    // The waits live across iterations: the driver wakes for every batch of attempt
    // reports (thousands of times a second under load), and making two fresh `Notify`
    // waiters and a fresh timer each time cost more than handling the batch.
    let stop = shutdown.notified();
    tokio::pin!(stop);
    let woken = core.wake.notified();
    tokio::pin!(woken);
    let timer = tokio::time::sleep_until(wake_at);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            received = events.recv() => {
                let Some(first) = received else { break };
                batch.push(first);
                while batch.len() < EVENT_BATCH {
                    match events.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                core.apply_batch(&mut batch);
                wake_at = wake_at.min(recheck_after_events(&core, last_tick));
            }
            received = probes.recv() => {
                // Never `None`: the core holds a sender for new probers.
                let Some(results) = received else { continue };
                batch.extend(results);
                while batch.len() < EVENT_BATCH {
                    match probes.try_recv() {
                        Ok(results) => batch.extend(results),
                        Err(_) => break,
                    }
                }
                core.apply_batch(&mut batch);
                wake_at = wake_at.min(recheck_after_events(&core, last_tick));
            }
            () = &mut woken => {
                // `notify_one` keeps a permit for a wake-up that comes before the next
                // wait is polled, so none is lost between the two.
                woken.set(core.wake.notified());
                wake_at = next_wake(&core, last_tick);
                if core.applied_inline.load(Ordering::Relaxed) {
                    wake_at = wake_at.min(recheck_after_events(&core, last_tick));
                }
            }
            () = &mut timer => {
                last_tick = tokio::time::Instant::now();
                // Cleared before the tick reads the timers: an event applied after this
                // wakes the driver again.
                core.applied_inline.store(false, Ordering::Relaxed);
                core.tick();
                wake_at = next_wake(&core, last_tick);
            }
        }
        // Moved only when the next wake-up changed (and always after it fired: the next
        // one is at least a quantum later).
        if timer.deadline() != wake_at {
            timer.as_mut().reset(wake_at);
        }
    }
    // The probers hold no reference to the core; stop them with the driver.
    core.close_probers();
}

/// When to look at the timers again after a batch of events: the events may have brought
/// a timer forward, so look again at the next quantum rather than scanning every timer
/// after every event.
fn recheck_after_events(core: &Core, last_tick: tokio::time::Instant) -> tokio::time::Instant {
    quantize_up(
        &core.clock,
        tokio::time::Instant::now().max(last_tick + TIMER_QUANTUM),
    )
}

/// When the driver should next run `tick`: the controller's earliest timer rounded up
/// to the quantum, but not sooner than one quantum after the previous tick (so a timer
/// that stays due cannot spin the loop). An hour when nothing is scheduled; any event or
/// wake-up interrupts that sleep.
fn next_wake(core: &Core, last_tick: tokio::time::Instant) -> tokio::time::Instant {
    let earliest = last_tick + TIMER_QUANTUM;
    match core.controller().next_deadline() {
        Some(t) => quantize_up(&core.clock, core.clock.to_tokio(t).max(earliest)),
        None => tokio::time::Instant::now() + Duration::from_secs(3600),
    }
}

/// `t` rounded up to the next multiple of [`TIMER_QUANTUM`] since the clock's origin,
/// so timers due within one quantum share one tick.
fn quantize_up(clock: &Clock, t: tokio::time::Instant) -> tokio::time::Instant {
    let quantum = TIMER_QUANTUM.as_millis().max(1);
    let since = t.saturating_duration_since(clock.origin).as_millis();
    let rounded = since.div_ceil(quantum).saturating_mul(quantum);
    clock.origin + Duration::from_millis(u64::try_from(rounded).unwrap_or(u64::MAX / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use sluice_core::event::AttemptOutcome;
    use sluice_core::snapshot::{AddressKey, HealthStatus};
    use sluice_core::topology::{TargetSpec, UpstreamSpec};

    #[tokio::test(start_paused = true)]
    async fn clock_maps_tokio_time_to_core_milliseconds() {
        let clock = Clock::start();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), sluice_core::Instant::from_millis(1500));
        let later = clock.to_tokio(sluice_core::Instant::from_millis(2000));
        assert_eq!(clock.at(later), sluice_core::Instant::from_millis(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn timers_round_up_to_the_quantum() {
        let clock = Clock::start();
        let at = |ms: u64| clock.origin + Duration::from_millis(ms);
        assert_eq!(quantize_up(&clock, at(0)), at(0));
        assert_eq!(quantize_up(&clock, at(1)), at(10));
        assert_eq!(quantize_up(&clock, at(10)), at(10));
        assert_eq!(quantize_up(&clock, at(1234)), at(1240));
    }

    fn spec(name: &str, ports: &[u16]) -> UpstreamSpec {
        UpstreamSpec {
            id: format!("id-{name}"),
            name: Arc::from(name),
            algorithm: Default::default(),
            hash_on: Default::default(),
            hash_fallback: Default::default(),
            slots: 10_000,
            host_header: None,
            healthchecks: Default::default(),
            failover: Default::default(),
            targets: ports
                .iter()
                .enumerate()
                .map(|(i, port)| TargetSpec {
                    id: format!("t{i}"),
                    target: format!("127.0.0.1:{port}"),
                    host: "127.0.0.1".into(),
                    port: *port,
                    weight: 100,
                    region: Arc::from("default"),
                    tier: 0,
                    tags: Vec::new(),
                })
                .collect(),
            tags: Vec::new(),
        }
    }

    /// Topology in, snapshots out: no sockets, so the paused clock is safe here.
    #[tokio::test(start_paused = true)]
    async fn topology_changes_publish_and_remove_snapshots() {
        let slots = Arc::new(Slots::default());
        let (core, _events) = Core::new(
            Clock::start(),
            slots.clone(),
            Arc::new(Metrics::new()),
            Arc::new(Dns::from_system()),
        );
        let first = spec("pool", &[9001, 9002]);
        let other = spec("other", &[9003]);
        slots.ensure(&first);
        slots.ensure(&other);
        core.apply(Event::TopologyReplaced {
            upstreams: vec![first.clone(), other],
        });
        let snapshots = slots.snapshots();
        assert_eq!(snapshots.len(), 2);
        let pool = snapshots.iter().find(|s| &*s.name == "pool").unwrap();
        assert_eq!(pool.addresses.len(), 2, "both IP targets published");
        assert!(pool.version > 0);

        core.apply(Event::TopologyReplaced {
            upstreams: vec![spec("pool", &[9001])],
        });
        let snapshots = slots.snapshots();
        assert_eq!(snapshots.len(), 1, "the removed upstream's slot is gone");
        assert_eq!(snapshots[0].addresses.len(), 1);
        assert!(snapshots[0].version > pool.version, "versions only grow");
    }

    /// A failed attempt reported by the data plane takes effect at once when the
    /// controller is free (the snapshot the next request reads already has the address
    /// out), and is queued for the driver, not waited for, when it is not.
    #[tokio::test(start_paused = true)]
    async fn attempt_reports_apply_at_once_or_queue_when_the_controller_is_busy() {
        let slots = Arc::new(Slots::default());
        let (core, mut inbox) = Core::new(
            Clock::start(),
            slots.clone(),
            Arc::new(Metrics::new()),
            Arc::new(Dns::from_system()),
        );
        let mut pool = spec("pool", &[9001, 9002]);
        pool.healthchecks.passive.unhealthy_tcp_failures = 1;
        slots.ensure(&pool);
        core.apply(Event::TopologyReplaced {
            upstreams: vec![pool],
        });
        let failure = |port: u16| Event::AttemptCompleted {
            upstream: Arc::from("pool"),
            address: AddressKey {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                hostname: Arc::from("127.0.0.1"),
            },
            outcome: AttemptOutcome::TcpFailure,
            latency: Duration::from_millis(1),
        };
        let unhealthy = |port: u16| {
            let snapshot = slots
                .snapshots()
                .into_iter()
                .find(|s| &*s.name == "pool")
                .unwrap();
            let address = snapshot
                .addresses
                .iter()
                .find(|a| a.key.addr.port() == port)
                .unwrap();
            address.health == HealthStatus::Unhealthy
        };

        core.report_attempt(core.clock.now(), failure(9001));
        assert!(
            unhealthy(9001),
            "applied and published before report_attempt returned"
        );
        assert!(inbox.events.try_recv().is_err(), "nothing queued");

        let busy = core.controller();
        core.report_attempt(core.clock.now(), failure(9002));
        drop(busy);
        assert!(
            !unhealthy(9002),
            "not applied while the controller was held"
        );
        assert!(
            matches!(inbox.events.try_recv(), Ok(Event::AttemptCompleted { .. })),
            "queued for the driver instead"
        );
    }
}
