//! The decision log: one structured record per change of traffic split, saying what
//! fired, on which inputs, and the split before and after.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::time::Instant;

/// What kind of change moved traffic.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecisionKind {
    Failover,
    Spill,
    FailbackStart,
    FailbackStep,
    FailbackComplete,
    FailbackAborted,
    PanicEnter,
    /// In panic mode, the split across tiers changed (capacity came or went without
    /// ending the panic): neither a failover nor a failback.
    PanicShift,
    PanicExit,
    Ejection,
    EjectionEnd,
    Operator,
    ConfigReload,
}

impl DecisionKind {
    pub const ALL: [DecisionKind; 13] = [
        DecisionKind::Failover,
        DecisionKind::Spill,
        DecisionKind::FailbackStart,
        DecisionKind::FailbackStep,
        DecisionKind::FailbackComplete,
        DecisionKind::FailbackAborted,
        DecisionKind::PanicEnter,
        DecisionKind::PanicShift,
        DecisionKind::PanicExit,
        DecisionKind::Ejection,
        DecisionKind::EjectionEnd,
        DecisionKind::Operator,
        DecisionKind::ConfigReload,
    ];

    /// Stable snake_case name used in JSON, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Failover => "failover",
            DecisionKind::Spill => "spill",
            DecisionKind::FailbackStart => "failback_start",
            DecisionKind::FailbackStep => "failback_step",
            DecisionKind::FailbackComplete => "failback_complete",
            DecisionKind::FailbackAborted => "failback_aborted",
            DecisionKind::PanicEnter => "panic_enter",
            DecisionKind::PanicShift => "panic_shift",
            DecisionKind::PanicExit => "panic_exit",
            DecisionKind::Ejection => "ejection",
            DecisionKind::EjectionEnd => "ejection_end",
            DecisionKind::Operator => "operator",
            DecisionKind::ConfigReload => "config_reload",
        }
    }
}

/// One tier's share of traffic, in parts per million.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierShare {
    pub tier: u8,
    pub regions: Vec<Arc<str>>,
    pub share_ppm: u32,
}

/// One decision: time, trigger, inputs, split before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRecord {
    /// Monotonic sequence number (for `?since=`).
    pub seq: u64,
    pub at: Instant,
    pub upstream: Arc<str>,
    pub kind: DecisionKind,
    /// Human-readable trigger, e.g. "tier 0 healthy share 0.33 < 1/1.4".
    pub trigger: String,
    /// The inputs that fired it, as name/value pairs (healthy shares, error rates, timers).
    pub inputs: Vec<(String, String)>,
    pub before: Vec<TierShare>,
    pub after: Vec<TierShare>,
}

/// Bounded in-memory decision history.
#[derive(Debug)]
pub struct DecisionLog {
    records: VecDeque<Arc<DecisionRecord>>,
    capacity: usize,
    next_seq: u64,
}

impl DecisionLog {
    /// Keep the last `capacity` records. 1024 covers hours of a busy, flapping cluster
    /// while costing well under a megabyte.
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn new(capacity: usize) -> Self {
        DecisionLog {
            records: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Append a record, assigning its sequence number; returns the stored record.
    pub fn push(&mut self, mut record: DecisionRecord) -> Arc<DecisionRecord> {
        record.seq = self.next_seq;
        self.next_seq += 1;
        let record = Arc::new(record);
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(record.clone());
        record
    }

    /// Records with `seq > since`, oldest first.
    pub fn since(&self, since: u64) -> impl Iterator<Item = &Arc<DecisionRecord>> {
        self.records.iter().filter(move |r| r.seq > since)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl Default for DecisionLog {
    fn default() -> Self {
        DecisionLog::new(Self::DEFAULT_CAPACITY)
    }
}
