//! Safety checkers: the invariants the decision core promises, asserted after every
//! simulation step and on every pick, from the outside.
//!
//! The checker sees only what the data plane and an operator see (published snapshots,
//! decision records, picks, the retries a client made) plus the world's ground truth
//! (which addresses the simulator drained, which addresses each target really has). It
//! never reads the controller's private state, so a checker passing means the promises
//! hold at the API, not that the code agrees with itself.
//!
//! Invariants (the list in `docs/testing.md` mirrors this one):
//! 1. `version`: snapshot versions strictly increase.
//! 2. `split_sum`: tier shares sum to 1,000,000 ppm, unless the mode is `Unavailable`.
//! 3. `snapshot_shape`: tiers ordered by preference, every address in exactly one tier
//!    whose number it carries, unavailable addresses have effective weight 0, `Unavailable`
//!    mode only when no address is available.
//! 4. `drained_never_picked`: an address the operator drained is never picked, even in
//!    panic mode.
//! 5. `unavailable_only_in_panic`: an unavailable address is picked only in panic mode, and
//!    a pick flagged `panic` only happens in panic mode.
//! 6. `retry_distinct`: a retry never goes to an address the request already tried.
//! 7. `retry_budget`: retries in any budget window (whole seconds) stay within
//!    `ratio × requests + min_per_sec × window` (+1 for rounding).
//! 8. `decision_per_change`: every change of traffic split is explained by exactly one
//!    decision record whose before/after match the published split.
//! 9. `decision_log_bounded`: the decision log never exceeds its capacity. Every
//!    operator command is recorded by exactly one decision record
//!    (`decision_per_operator`), and every address going from available to ejected by
//!    at least one record in the same step (`decision_per_ejection`).
//! 10. `preferred_tier`: whenever tier 0 has enough healthy capacity
//!     (available share × overprovisioning ≥ 1), it carries all traffic, unless it was
//!     short of capacity, any tier's available share dropped (which restarts the
//!     hold-down), or a failback was aborted, less than `failback_hold_down_max +
//!     failback_ramp` ago (the failback window). Panic is exempt.
//! 11. `failback_after_hold_down`: a failback never starts before every tier it gives
//!     more traffic to has gone `failback_hold_down` without a drop in its available
//!     share (the controller's hold-down restarts on any drop in a recovering tier; a
//!     failover is such a drop).
//! 12. `switches_per_window`: at most one failback start per `failback_hold_down`
//!     (region switches are damped).
//! 13. `ejection_cap`: when an address is ejected, its tier shows no more ejected
//!     addresses than `outlier::max_ejected(members, max_ejected_share)`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_core::balance::Picked;
use sluice_core::decision::{DecisionKind, DecisionRecord, TierShare};
use sluice_core::snapshot::{Mode, Unavailable, UpstreamSnapshot};
use sluice_core::{Action, Duration, Instant};

/// Parts per million in a whole split.
pub const PPM: u32 = 1_000_000;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub at: Instant,
    pub invariant: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at {} ms: {}: {}",
            self.at.as_millis(),
            self.invariant,
            self.detail
        )
    }
}

/// The configuration numbers the invariants are stated in.
#[derive(Clone, Debug)]
pub struct CheckPolicy {
    pub overprovisioning: f64,
    pub failback_hold_down: Duration,
    pub failback_hold_down_max: Duration,
    pub failback_ramp: Duration,
    pub retry_ratio: f64,
    pub retry_min_per_sec: u32,
    pub retry_window: Duration,
    pub decision_log_capacity: usize,
    /// Outlier ejection's cap on the share of a tier ejected at once.
    pub max_ejected_share: f64,
}

/// A split as comparable data: (tier, ppm) for every tier with a non-zero share. Zero
/// shares are dropped so a record listing idle tiers equals a snapshot omitting them.
pub fn split_of_tiers(shares: impl Iterator<Item = (u8, u32)>) -> Vec<(u8, u32)> {
    let mut split: Vec<(u8, u32)> = shares.filter(|&(_, ppm)| ppm > 0).collect();
    split.sort_unstable();
    split
}

pub fn snapshot_split(snapshot: &UpstreamSnapshot) -> Vec<(u8, u32)> {
    split_of_tiers(snapshot.tiers.iter().map(|t| (t.tier, t.share_ppm)))
}

fn record_split(shares: &[TierShare]) -> Vec<(u8, u32)> {
    split_of_tiers(shares.iter().map(|t| (t.tier, t.share_ppm)))
}

/// Addresses available in `before` and ejected in `after` (an ejection the controller
/// must record; an address already unavailable for another reason may turn "ejected" in
/// the snapshot without a new ejection).
fn newly_ejected_count(before: &UpstreamSnapshot, after: &UpstreamSnapshot) -> usize {
    after
        .addresses
        .iter()
        .filter(|a| matches!(a.unavailable, Some(Unavailable::Ejected { .. })))
        .filter(|a| {
            before
                .addresses
                .iter()
                .any(|b| b.key == a.key && b.unavailable.is_none())
        })
        .count()
}

/// Available weight over weight of one tier's addresses in the snapshot.
fn tier_available_share(snapshot: &UpstreamSnapshot, tier: u8) -> f64 {
    let (available, total) = snapshot.addresses.iter().filter(|a| a.tier == tier).fold(
        (0u64, 0u64),
        |(available, total), a| {
            let weight = u64::from(a.weight);
            let available_weight = if a.is_available() { weight } else { 0 };
            (available + available_weight, total + weight)
        },
    );
    if total == 0 {
        return 0.0;
    }
    available as f64 / total as f64
}

/// A split as (tier, ppm) pairs.
pub type Split = Vec<(u8, u32)>;

/// One published change of split: (before, after).
type SplitChange = (Split, Split);

/// Renders a split as `t0=66.7% t1=33.3%` for logs.
pub fn render_split(split: &[(u8, u32)]) -> String {
    if split.is_empty() {
        return "none".into();
    }
    split
        .iter()
        .map(|(tier, ppm)| format!("t{tier}={:.1}%", f64::from(*ppm) / 10_000.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stateful checker for one upstream.
#[derive(Debug)]
pub struct Checker {
    policy: CheckPolicy,
    /// Every address the configured tier-0 targets really have, with its weight: the
    /// denominator of the tier's true capacity even when DNS has not delivered them.
    tier0_expected: Vec<(SocketAddr, u32)>,
    last: Option<Arc<UpstreamSnapshot>>,
    /// Last instant tier 0 was seen short of capacity, or a failback was aborted.
    tier0_short_at: Option<Instant>,
    /// Since when tier 0 has had enough capacity without interruption.
    tier0_enough_since: Option<Instant>,
    last_failback_start: Option<Instant>,
    /// Per tier: the last instant its available share (available weight over weight
    /// in the snapshot) decreased.
    tier_last_drop: Vec<(u8, Instant)>,
    /// A reload changes weights, which moves shares without any address failing; the
    /// next publish after one does not count as a drop.
    reload_pending: bool,
    request_times: VecDeque<Instant>,
    retry_times: VecDeque<Instant>,
    violations: Vec<Violation>,
    /// Violations beyond this many are counted, not kept: the first few explain a run.
    violations_dropped: u64,
}

/// Violations kept per run: the first one is the interesting one; a few more show
/// whether it cascaded.
const VIOLATIONS_KEPT: usize = 20;

/// Wiggle room for "the controller acts at its deadline": the simulator calls `tick` at
/// `next_deadline()` exactly, but a decision may wait for the next probe round.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

impl Checker {
    pub fn new(policy: CheckPolicy, tier0_expected: Vec<(SocketAddr, u32)>) -> Checker {
        Checker {
            policy,
            tier0_expected,
            last: None,
            tier0_short_at: None,
            tier0_enough_since: None,
            last_failback_start: None,
            tier_last_drop: Vec::new(),
            reload_pending: false,
            request_times: VecDeque::new(),
            retry_times: VecDeque::new(),
            violations: Vec::new(),
            violations_dropped: 0,
        }
    }

    /// A reload changed the policy or the configured addresses.
    pub fn set_topology(&mut self, policy: CheckPolicy, tier0_expected: Vec<(SocketAddr, u32)>) {
        self.policy = policy;
        self.tier0_expected = tier0_expected;
        self.reload_pending = true;
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn violation_count(&self) -> u64 {
        self.violations.len() as u64 + self.violations_dropped
    }

    /// The last published snapshot.
    pub fn last_snapshot(&self) -> Option<&Arc<UpstreamSnapshot>> {
        self.last.as_ref()
    }

    fn fail(&mut self, at: Instant, invariant: &'static str, detail: String) {
        if self.violations.len() < VIOLATIONS_KEPT {
            self.violations.push(Violation {
                at,
                invariant,
                detail,
            });
        } else {
            self.violations_dropped += 1;
        }
    }

    /// Checks everything one controller call produced. Returns the violations it added.
    pub fn after_step(
        &mut self,
        now: Instant,
        actions: &[Action],
        decision_log_len: usize,
    ) -> Vec<Violation> {
        let before = self.violations.len();
        let mut changes: Vec<SplitChange> = Vec::new();
        let mut records: Vec<Arc<DecisionRecord>> = Vec::new();
        let mut newly_ejected = 0usize;
        for action in actions {
            match action {
                Action::Publish(snapshot) => {
                    if let Some(last) = self.last.clone() {
                        newly_ejected += newly_ejected_count(&last, snapshot);
                        self.check_ejection_cap(now, &last, snapshot);
                    }
                    let previous = self.last.as_ref().map(|s| snapshot_split(s));
                    self.check_snapshot(now, snapshot);
                    self.observe_drops(now, snapshot);
                    let split = snapshot_split(snapshot);
                    if let Some(previous) = previous
                        && previous != split
                    {
                        changes.push((previous, split));
                    }
                    self.last = Some(snapshot.clone());
                    self.observe_tier0(now);
                }
                Action::Decision(record) => records.push(record.clone()),
                _ => {}
            }
        }
        self.check_decisions(now, &changes, &records);
        if records.len() < newly_ejected {
            let detail = format!(
                "{newly_ejected} addresses went from available to ejected with {} decision records",
                records.len()
            );
            self.fail(now, "decision_per_ejection", detail);
        }
        // The reload (if any) was this step's event; later publishes are ordinary.
        self.reload_pending = false;
        if decision_log_len > self.policy.decision_log_capacity {
            self.fail(
                now,
                "decision_log_bounded",
                format!(
                    "decision log holds {decision_log_len} records, capacity {}",
                    self.policy.decision_log_capacity
                ),
            );
        }
        self.check_preferred_tier(now);
        self.violations.get(before..).unwrap_or_default().to_vec()
    }

    fn check_snapshot(&mut self, now: Instant, snapshot: &UpstreamSnapshot) {
        if let Some(last) = &self.last
            && snapshot.version <= last.version
        {
            let detail = format!("version {} after {}", snapshot.version, last.version);
            self.fail(now, "version", detail);
        }
        let sum: u64 = snapshot.tiers.iter().map(|t| u64::from(t.share_ppm)).sum();
        if snapshot.mode != Mode::Unavailable && sum != u64::from(PPM) {
            let detail = format!("shares sum to {sum} ppm in mode {:?}", snapshot.mode);
            self.fail(now, "split_sum", detail);
        }
        let mut problems = Vec::new();
        if snapshot.tiers.windows(2).any(|w| w[0].tier >= w[1].tier) {
            problems.push("tiers not in strictly increasing order".to_string());
        }
        let mut membership = vec![0u32; snapshot.addresses.len()];
        for tier in &snapshot.tiers {
            for &member in &tier.members {
                match snapshot.addresses.get(member as usize) {
                    None => {
                        problems.push(format!("tier {} member {member} out of range", tier.tier))
                    }
                    Some(address) => {
                        if address.tier != tier.tier {
                            problems.push(format!(
                                "{} carries tier {} but is listed in tier {}",
                                address.key.addr, address.tier, tier.tier
                            ));
                        }
                        if let Some(count) = membership.get_mut(member as usize) {
                            *count += 1;
                        }
                    }
                }
            }
        }
        for (address, count) in snapshot.addresses.iter().zip(&membership) {
            if *count != 1 {
                problems.push(format!("{} is in {count} tiers", address.key.addr));
            }
            if !address.is_available() && address.effective_weight != 0 {
                problems.push(format!(
                    "{} unavailable ({:?}) with effective weight {}",
                    address.key.addr, address.unavailable, address.effective_weight
                ));
            }
        }
        let any_available = snapshot
            .addresses
            .iter()
            .any(|a| a.is_available() && a.weight > 0);
        if any_available && snapshot.mode == Mode::Unavailable {
            problems.push("mode Unavailable while an address is available".into());
        }
        for problem in problems {
            self.fail(now, "snapshot_shape", problem);
        }
    }

    /// When an address goes from available to ejected, its tier may show at most
    /// `max_ejected(members)` ejected addresses. Checked at the ejection, because a
    /// reload that removes a target can legitimately leave more ejected than a smaller
    /// tier would allow (ejections are not undone by a reload). The snapshot shows only
    /// the most fundamental reason, so the visible count is a lower bound of the real one.
    fn check_ejection_cap(
        &mut self,
        now: Instant,
        before: &UpstreamSnapshot,
        after: &UpstreamSnapshot,
    ) {
        for tier in &after.tiers {
            let members: Vec<&sluice_core::snapshot::AddressView> = tier
                .members
                .iter()
                .filter_map(|&m| after.addresses.get(m as usize))
                .collect();
            let is_ejected = |a: &sluice_core::snapshot::AddressView| {
                matches!(a.unavailable, Some(Unavailable::Ejected { .. }))
            };
            let new_ejection = members.iter().any(|a| {
                is_ejected(a)
                    && before
                        .addresses
                        .iter()
                        .any(|b| b.key == a.key && b.unavailable.is_none())
            });
            if !new_ejection {
                continue;
            }
            let ejected = members.iter().filter(|a| is_ejected(a)).count();
            let cap =
                sluice_core::outlier::max_ejected(members.len(), self.policy.max_ejected_share);
            if ejected > cap {
                let detail = format!(
                    "tier {} has {ejected} of {} addresses ejected, cap {cap} (share {})",
                    tier.tier,
                    members.len(),
                    self.policy.max_ejected_share
                );
                self.fail(now, "ejection_cap", detail);
            }
        }
    }

    fn check_decisions(
        &mut self,
        now: Instant,
        changes: &[SplitChange],
        records: &[Arc<DecisionRecord>],
    ) {
        let mut unexplained: Vec<SplitChange> = changes.to_vec();
        let mut mismatched = Vec::new();
        for record in records {
            self.on_decision(now, record);
            let before = record_split(&record.before);
            let after = record_split(&record.after);
            if before == after {
                continue;
            }
            match unexplained
                .iter()
                .position(|c| c.0 == before && c.1 == after)
            {
                Some(index) => {
                    unexplained.remove(index);
                }
                None => mismatched.push(format!(
                    "{} record #{} says {} -> {} but no published split made that move",
                    record.kind.as_str(),
                    record.seq,
                    render_split(&before),
                    render_split(&after)
                )),
            }
        }
        for (before, after) in unexplained {
            let detail = format!(
                "split {} -> {} published without a decision record",
                render_split(&before),
                render_split(&after)
            );
            self.fail(now, "decision_per_change", detail);
        }
        for detail in mismatched {
            self.fail(now, "decision_per_change", detail);
        }
    }

    fn on_decision(&mut self, now: Instant, record: &DecisionRecord) {
        match record.kind {
            DecisionKind::FailbackStart => {
                let hold_down = self.policy.failback_hold_down;
                let before = record_split(&record.before);
                let share_of = |split: &[(u8, u32)], tier: u8| {
                    split
                        .iter()
                        .find(|(t, _)| *t == tier)
                        .map_or(0, |(_, p)| *p)
                };
                let gaining: Vec<u8> = record_split(&record.after)
                    .iter()
                    .filter(|(tier, ppm)| *ppm > share_of(&before, *tier))
                    .map(|(tier, _)| *tier)
                    .collect();
                let early: Vec<(u8, Instant)> = self
                    .tier_last_drop
                    .iter()
                    .filter(|(tier, drop)| {
                        gaining.contains(tier) && now.saturating_duration_since(*drop) < hold_down
                    })
                    .copied()
                    .collect();
                for (tier, drop) in early {
                    let detail = format!(
                        "failback to tier {tier} started {} ms after its available share last \
                         dropped, hold-down is {} ms",
                        now.saturating_duration_since(drop).as_millis(),
                        hold_down.as_millis()
                    );
                    self.fail(now, "failback_after_hold_down", detail);
                }
                if let Some(previous) = self.last_failback_start
                    && !hold_down.is_zero()
                    && now.saturating_duration_since(previous) < hold_down
                {
                    let detail = format!(
                        "two failback starts {} ms apart, hold-down is {} ms",
                        now.saturating_duration_since(previous).as_millis(),
                        hold_down.as_millis()
                    );
                    self.fail(now, "switches_per_window", detail);
                }
                self.last_failback_start = Some(now);
            }
            DecisionKind::FailbackAborted => {
                // An aborted failback starts a new hold-down: the preferred-tier oracle
                // restarts its clock here.
                self.tier0_short_at = Some(now);
                self.tier0_enough_since = None;
            }
            _ => {}
        }
    }

    fn observe_drops(&mut self, now: Instant, snapshot: &UpstreamSnapshot) {
        let reload = self.reload_pending;
        let Some(previous) = self.last.clone() else {
            return;
        };
        for tier in &snapshot.tiers {
            let share = tier_available_share(snapshot, tier.tier);
            let before = tier_available_share(&previous, tier.tier);
            if share + 1e-9 >= before {
                continue;
            }
            // A drop in a recovering tier restarts the controller's hold-down even when
            // tier 0 keeps enough capacity (a flapping address), and so may a reload that
            // re-weights a tier: once traffic has left tier 0, the failback window
            // restarts here too.
            if self.tier0_short_at.is_some() {
                self.tier0_short_at = Some(now);
            }
            // Whether a reload's re-weighting restarts the hold-down is the controller's
            // call; the hold-down check only holds it to drops in availability.
            if reload {
                continue;
            }
            match self
                .tier_last_drop
                .iter_mut()
                .find(|(t, _)| *t == tier.tier)
            {
                Some(entry) => entry.1 = now,
                None => self.tier_last_drop.push((tier.tier, now)),
            }
        }
    }

    /// Tier 0's true available share: available weight over the weight of every address
    /// its targets really have (missing addresses count as unavailable).
    pub fn tier0_available_share(&self, snapshot: &UpstreamSnapshot) -> f64 {
        let total: u64 = self.tier0_expected.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return 0.0;
        }
        let available: u64 = snapshot
            .addresses
            .iter()
            .filter(|a| a.tier == 0 && a.is_available())
            .filter(|a| {
                self.tier0_expected
                    .iter()
                    .any(|(addr, _)| *addr == a.key.addr)
            })
            .map(|a| u64::from(a.weight))
            .sum();
        available as f64 / total as f64
    }

    fn tier0_has_enough(&self, snapshot: &UpstreamSnapshot) -> bool {
        // A small epsilon so 1/1.4 × 1.4 computed in floating point still counts.
        self.tier0_available_share(snapshot) * self.policy.overprovisioning >= 1.0 - 1e-9
    }

    fn observe_tier0(&mut self, now: Instant) {
        let Some(snapshot) = self.last.clone() else {
            return;
        };
        if self.tier0_has_enough(&snapshot) {
            if self.tier0_enough_since.is_none() {
                self.tier0_enough_since = Some(now);
                // Tier 0 was short until this snapshot: the failback window starts now,
                // not at the publish that first showed it short.
                if self.tier0_short_at.is_some() {
                    self.tier0_short_at = Some(now);
                }
            }
        } else {
            self.tier0_short_at = Some(now);
            self.tier0_enough_since = None;
        }
    }

    fn check_preferred_tier(&mut self, now: Instant) {
        let Some(snapshot) = self.last.clone() else {
            return;
        };
        if snapshot.mode == Mode::Panic || !self.tier0_has_enough(&snapshot) {
            return;
        }
        let window =
            self.policy.failback_hold_down_max + self.policy.failback_ramp + DEADLINE_GRACE;
        if let Some(short) = self.tier0_short_at
            && now.saturating_duration_since(short) < window
        {
            return;
        }
        let tier0_share = snapshot
            .tiers
            .iter()
            .find(|t| t.tier == 0)
            .map_or(0, |t| t.share_ppm);
        if tier0_share != PPM {
            let detail = format!(
                "tier 0 available share {:.3} x overprovisioning {} >= 1 but split is {} (mode {:?}, \
                 last short {} ms ago)",
                self.tier0_available_share(&snapshot),
                self.policy.overprovisioning,
                render_split(&snapshot_split(&snapshot)),
                snapshot.mode,
                self.tier0_short_at
                    .map_or(u64::MAX, |s| now.saturating_duration_since(s).as_millis()
                        as u64)
            );
            self.fail(now, "preferred_tier", detail);
            // Report a stuck split once per failback window, not on every step.
            self.tier0_short_at = Some(now);
        }
    }

    /// An operator command's step must carry exactly one decision record (the
    /// controller documents one record per operator action, split change or not; when
    /// the command moves traffic the record has the kind of the move, e.g.
    /// `failback_aborted`, and names the operator in its trigger).
    pub fn on_operator_step(&mut self, now: Instant, actions: &[Action]) {
        let records = actions
            .iter()
            .filter(|a| matches!(a, Action::Decision(_)))
            .count();
        if records != 1 {
            let detail = format!("operator command produced {records} decision records");
            self.fail(now, "decision_per_operator", detail);
        }
    }

    /// Checks one pick made by a request. `drained` is the simulator's own record of the
    /// addresses an operator drained.
    pub fn on_pick(
        &mut self,
        now: Instant,
        snapshot: &UpstreamSnapshot,
        picked: &Picked,
        tried: &[u32],
        drained: &[SocketAddr],
    ) {
        let Some(address) = snapshot.addresses.get(picked.index as usize) else {
            let detail = format!(
                "picked index {} of {} addresses",
                picked.index,
                snapshot.addresses.len()
            );
            self.fail(now, "snapshot_shape", detail);
            return;
        };
        if drained.contains(&address.key.addr) || address.unavailable == Some(Unavailable::Drained)
        {
            let detail = format!(
                "picked drained {} (mode {:?})",
                address.key.addr, snapshot.mode
            );
            self.fail(now, "drained_never_picked", detail);
        }
        let panic_pick = picked.panic && snapshot.mode == Mode::Panic;
        if !address.is_available() && !panic_pick {
            let detail = format!(
                "picked {} which is {:?} in mode {:?} (panic flag {})",
                address.key.addr, address.unavailable, snapshot.mode, picked.panic
            );
            self.fail(now, "unavailable_only_in_panic", detail);
        }
        if picked.panic && snapshot.mode != Mode::Panic {
            let detail = format!("pick flagged panic in mode {:?}", snapshot.mode);
            self.fail(now, "unavailable_only_in_panic", detail);
        }
        if tried.contains(&picked.index) {
            let detail = format!("retry picked {} again", address.key.addr);
            self.fail(now, "retry_distinct", detail);
        }
    }

    /// Drops entries older than the budget's window. The window is whole seconds (the
    /// current second and the `window − 1` before it), as the budget documents its
    /// granularity; a millisecond-sliding window would count retries from a second the
    /// budget has already forgotten.
    fn expire_window(&mut self, now: Instant) {
        let window_secs = self.policy.retry_window.as_millis().div_ceil(1_000).max(1) as u64;
        let oldest_second = (now.as_millis() / 1_000).saturating_sub(window_secs - 1);
        for times in [&mut self.request_times, &mut self.retry_times] {
            while times
                .front()
                .is_some_and(|t| t.as_millis() / 1_000 < oldest_second)
            {
                times.pop_front();
            }
        }
    }

    /// A new client request started (its first attempt).
    pub fn on_request(&mut self, now: Instant) {
        self.expire_window(now);
        self.request_times.push_back(now);
    }

    /// A request is about to retry.
    pub fn on_retry(&mut self, now: Instant) {
        self.expire_window(now);
        self.retry_times.push_back(now);
        let window_secs = self.policy.retry_window.as_secs_f64();
        let bound = self.policy.retry_ratio * self.request_times.len() as f64
            + f64::from(self.policy.retry_min_per_sec) * window_secs
            + 1.0;
        if self.retry_times.len() as f64 > bound {
            let detail = format!(
                "{} retries for {} requests in the last {} ms, bound {:.0}",
                self.retry_times.len(),
                self.request_times.len(),
                self.policy.retry_window.as_millis(),
                bound
            );
            self.fail(now, "retry_budget", detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::decision::DecisionRecord;
    use sluice_core::load::AddressLoad;
    use sluice_core::snapshot::{AddressKey, AddressView, HealthStatus, TierView};
    use sluice_core::topology::Algorithm;

    fn addr(tier: u8, n: u8) -> SocketAddr {
        SocketAddr::from(([10, tier + 1, 0, n + 1], 8000))
    }

    /// Two tiers of three addresses; `down` lists unavailable (tier, n) pairs.
    fn snapshot(
        version: u64,
        shares: [u32; 2],
        down: &[(u8, u8)],
        mode: Mode,
    ) -> Arc<UpstreamSnapshot> {
        let mut addresses = Vec::new();
        let mut tiers = Vec::new();
        for tier in 0..2u8 {
            let mut members = Vec::new();
            for n in 0..3u8 {
                let unavailable = down.contains(&(tier, n)).then_some(Unavailable::Unhealthy);
                members.push(addresses.len() as u32);
                addresses.push(AddressView {
                    key: AddressKey {
                        addr: addr(tier, n),
                        hostname: addr(tier, n).ip().to_string().into(),
                    },
                    target_index: u32::from(tier * 3 + n),
                    weight: 100,
                    effective_weight: if unavailable.is_some() { 0 } else { 100 },
                    tier,
                    region: if tier == 0 { "a".into() } else { "b".into() },
                    health: HealthStatus::Healthy,
                    unavailable,
                    load: Arc::new(AddressLoad::default()),
                    dns: sluice_core::snapshot::DnsRecord::A,
                });
            }
            tiers.push(TierView {
                tier,
                regions: vec![if tier == 0 { "a".into() } else { "b".into() }],
                rr_order: members.clone().into(),
                members,
                share_ppm: shares[tier as usize],
                healthy_share: 1.0,
                rr_cursor: Arc::default(),
            });
        }
        Arc::new(UpstreamSnapshot {
            version,
            name: "api".into(),
            algorithm: Algorithm::RoundRobin,
            addresses,
            tiers,
            mode,
            balancer_healthy: true,
            hash_tables: Vec::new(),
        })
    }

    fn record(kind: DecisionKind, before: [u32; 2], after: [u32; 2]) -> Arc<DecisionRecord> {
        let shares = |s: [u32; 2]| {
            (0..2u8)
                .map(|tier| TierShare {
                    tier,
                    regions: Vec::new(),
                    share_ppm: s[tier as usize],
                })
                .collect()
        };
        Arc::new(DecisionRecord {
            seq: 1,
            at: Instant::ZERO,
            upstream: "api".into(),
            kind,
            trigger: "test".into(),
            inputs: Vec::new(),
            before: shares(before),
            after: shares(after),
        })
    }

    fn checker() -> Checker {
        let policy = CheckPolicy {
            overprovisioning: 1.4,
            failback_hold_down: Duration::from_secs(10),
            failback_hold_down_max: Duration::from_secs(60),
            failback_ramp: Duration::from_secs(20),
            retry_ratio: 0.2,
            retry_min_per_sec: 10,
            retry_window: Duration::from_secs(10),
            decision_log_capacity: 4,
            max_ejected_share: 0.5,
        };
        Checker::new(policy, (0..3).map(|n| (addr(0, n), 100)).collect())
    }

    fn at(secs: u64) -> Instant {
        Instant::from_millis(secs * 1_000)
    }

    fn names(violations: &[Violation]) -> Vec<&'static str> {
        violations.iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_clean_failover_and_failback_passes() {
        let mut c = checker();
        let all_down = [(0, 0), (0, 1), (0, 2)];
        let steps: Vec<(u64, Vec<Action>)> = vec![
            (
                0,
                vec![Action::Publish(snapshot(1, [PPM, 0], &[], Mode::Normal))],
            ),
            (
                5,
                vec![
                    Action::Publish(snapshot(2, [0, PPM], &all_down, Mode::FailedOver)),
                    Action::Decision(record(DecisionKind::Failover, [PPM, 0], [0, PPM])),
                ],
            ),
            (
                30,
                vec![Action::Publish(snapshot(
                    3,
                    [0, PPM],
                    &[],
                    Mode::FailedOver,
                ))],
            ),
            (
                40,
                vec![
                    Action::Publish(snapshot(4, [50_000, 950_000], &[], Mode::FailingBack)),
                    Action::Decision(record(
                        DecisionKind::FailbackStart,
                        [0, PPM],
                        [50_000, 950_000],
                    )),
                ],
            ),
            (
                60,
                vec![
                    Action::Publish(snapshot(5, [PPM, 0], &[], Mode::Normal)),
                    Action::Decision(record(
                        DecisionKind::FailbackComplete,
                        [50_000, 950_000],
                        [PPM, 0],
                    )),
                ],
            ),
        ];
        for (secs, actions) in steps {
            let found = c.after_step(at(secs), &actions, 2);
            assert!(found.is_empty(), "at {secs}s: {found:?}");
        }
    }

    #[test]
    fn catches_version_regression_bad_sums_and_missing_records() {
        let mut c = checker();
        c.after_step(
            at(0),
            &[Action::Publish(snapshot(5, [PPM, 0], &[], Mode::Normal))],
            0,
        );
        let found = c.after_step(
            at(1),
            &[Action::Publish(snapshot(
                5,
                [600_000, 300_000],
                &[],
                Mode::Normal,
            ))],
            0,
        );
        // Tier 0 is fully available, so the bad split also breaks the preferred-tier rule.
        assert_eq!(
            names(&found),
            [
                "version",
                "split_sum",
                "decision_per_change",
                "preferred_tier"
            ]
        );
        let found = c.after_step(
            at(2),
            &[Action::Decision(record(
                DecisionKind::Spill,
                [PPM, 0],
                [0, PPM],
            ))],
            9,
        );
        assert_eq!(
            names(&found),
            ["decision_per_change", "decision_log_bounded"]
        );
    }

    #[test]
    fn catches_early_failback_and_traffic_kept_away_from_a_healthy_tier_0() {
        let mut c = checker();
        let down = [(0, 0), (0, 1), (0, 2)];
        c.after_step(
            at(0),
            &[Action::Publish(snapshot(1, [PPM, 0], &[], Mode::Normal))],
            0,
        );
        c.after_step(
            at(2),
            &[
                Action::Publish(snapshot(2, [0, PPM], &down, Mode::FailedOver)),
                Action::Decision(record(DecisionKind::Failover, [PPM, 0], [0, PPM])),
            ],
            1,
        );
        c.after_step(
            at(5),
            &[Action::Publish(snapshot(
                3,
                [0, PPM],
                &[],
                Mode::FailedOver,
            ))],
            1,
        );
        // Failback 6 s after tier 0's share dropped, hold-down 10 s.
        let found = c.after_step(
            at(8),
            &[
                Action::Publish(snapshot(4, [PPM, 0], &[], Mode::Normal)),
                Action::Decision(record(DecisionKind::FailbackStart, [0, PPM], [PPM, 0])),
            ],
            1,
        );
        assert_eq!(names(&found), ["failback_after_hold_down"]);
        // A controller that keeps traffic away from a healthy tier 0 past
        // hold-down max + ramp + grace (81 s) is caught.
        let mut c = checker();
        c.after_step(
            at(0),
            &[Action::Publish(snapshot(
                1,
                [0, PPM],
                &down,
                Mode::FailedOver,
            ))],
            0,
        );
        c.after_step(
            at(5),
            &[Action::Publish(snapshot(
                2,
                [0, PPM],
                &[],
                Mode::FailedOver,
            ))],
            0,
        );
        assert!(
            c.after_step(at(80), &[], 0).is_empty(),
            "inside the failback window"
        );
        assert_eq!(names(&c.after_step(at(87), &[], 0)), ["preferred_tier"]);
        // One unavailable address of three: 0.67 × 1.4 < 1, so spilling is right...
        let mut c = checker();
        let found = c.after_step(
            at(0),
            &[Action::Publish(snapshot(
                1,
                [933_333, 66_667],
                &[(0, 0)],
                Mode::FailedOver,
            ))],
            0,
        );
        assert!(found.is_empty(), "{found:?}");
        // ...but with every tier-0 address available a fresh spill is a violation.
        let mut c = checker();
        let found = c.after_step(
            at(0),
            &[Action::Publish(snapshot(
                1,
                [700_000, 300_000],
                &[],
                Mode::FailedOver,
            ))],
            0,
        );
        assert_eq!(names(&found), ["preferred_tier"]);
    }

    #[test]
    fn catches_bad_picks() {
        let mut c = checker();
        let snap = snapshot(1, [PPM, 0], &[(0, 1)], Mode::Normal);
        let pick = |index, panic| Picked {
            index,
            tier: 0,
            crossed_tier: false,
            panic,
        };
        c.on_pick(at(0), &snap, &pick(0, false), &[], &[]);
        assert!(c.violations().is_empty());
        c.on_pick(at(0), &snap, &pick(1, false), &[], &[]);
        c.on_pick(at(0), &snap, &pick(0, true), &[], &[]);
        c.on_pick(at(0), &snap, &pick(2, false), &[2], &[]);
        c.on_pick(at(0), &snap, &pick(0, false), &[], &[addr(0, 0)]);
        assert_eq!(
            names(c.violations()),
            [
                "unavailable_only_in_panic",
                "unavailable_only_in_panic",
                "retry_distinct",
                "drained_never_picked"
            ]
        );
        // In panic mode an unhealthy address may be picked.
        let mut c = checker();
        let panic = snapshot(2, [PPM, 0], &[(0, 1)], Mode::Panic);
        c.on_pick(at(0), &panic, &pick(1, true), &[], &[]);
        assert!(c.violations().is_empty());
    }

    #[test]
    fn catches_ejections_beyond_the_cap_and_missing_records() {
        let eject = |version, ejected: &[usize]| {
            let mut snap = (*snapshot(version, [PPM, 0], &[], Mode::Normal)).clone();
            for &index in ejected {
                snap.addresses[index].unavailable = Some(Unavailable::Ejected { until_ms: 99 });
                snap.addresses[index].effective_weight = 0;
            }
            Arc::new(snap)
        };
        let mut c = checker();
        c.after_step(at(0), &[Action::Publish(eject(1, &[]))], 0);
        let one = record(DecisionKind::Ejection, [PPM, 0], [PPM, 0]);
        let found = c.after_step(
            at(1),
            &[Action::Publish(eject(2, &[0])), Action::Decision(one)],
            1,
        );
        assert!(
            found.is_empty(),
            "one of three is within the 50% cap: {found:?}"
        );
        // A second ejection in the same tier breaks the cap (floor(3 × 0.5) = 1), and
        // comes without its decision record.
        let found = c.after_step(at(2), &[Action::Publish(eject(3, &[0, 1]))], 1);
        assert_eq!(names(&found), ["ejection_cap", "decision_per_ejection"]);
    }

    #[test]
    fn retry_budget_bound_is_ratio_plus_floor() {
        let mut c = checker();
        for _ in 0..100 {
            c.on_request(at(1));
        }
        // 0.2 × 100 + 10/s × 10 s + 1 = 121 retries allowed in the window.
        for _ in 0..121 {
            c.on_retry(at(2));
        }
        assert!(c.violations().is_empty());
        c.on_retry(at(2));
        assert_eq!(names(c.violations()), ["retry_budget"]);
        // The window slides: 10 s later the old retries no longer count.
        let mut c2 = checker();
        for _ in 0..100 {
            c2.on_retry(at(1));
        }
        for _ in 0..100 {
            c2.on_retry(at(12));
        }
        assert!(c2.violations().is_empty());
    }
}
