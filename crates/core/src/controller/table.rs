//! An upstream's addresses as a dense table: one `Vec` sorted by [`AddressKey`], so every
//! address has a small index (its position) as well as its key.
//!
//! Why not a `BTreeMap<AddressKey, _>`: with 10,000 probed addresses, every due probe and
//! every probe result looked its address up by key, and an `AddressKey` comparison
//! compares socket addresses and then hostnames (targets of one upstream usually share the
//! IP, so every comparison reaches the octets and often the hostname's bytes). Those
//! comparisons were about a third of the CPU of keep-alive `tcp` probing (BENCHMARKS.md,
//! "Active probe cost"). The probe schedule now names addresses by index, and a probe
//! result carries the index it was asked for as a hint, checked against its key.
//!
//! Indexes are stable until the address set changes (reload, DNS answer), which rebuilds
//! the table and the index-keyed probe schedule together. Iteration is in key order, as
//! the map's was: nothing that depends on order changes.

use std::collections::{BTreeMap, BTreeSet};

use super::AddressState;
use crate::snapshot::AddressKey;
use crate::time::Instant;

/// Largest table [`AddressTable::position`] scans instead of binary-searching. Every
/// proxied attempt looks its address up without a hint; an ordering comparison of two
/// keys (socket addresses octet by octet, then the hostnames' bytes when they are equal)
/// costs about five times an equality test (addresses as integers, hostnames by pointer
/// first), so a scan of up to 16 keys (8 tests on average) is cheaper than the 4-5
/// comparisons of a binary search over them. Measured on the 5-address drill upstream:
/// ~240 instructions per lookup by binary search, ~40 by scan (`benches/request.rs`).
const SCAN_MAX: usize = 16;

#[derive(Debug, Default)]
pub(super) struct AddressTable {
    /// Sorted by `key`, keys distinct.
    entries: Vec<AddressState>,
}

impl AddressTable {
    /// The table of `map`'s addresses (a `BTreeMap` iterates in key order: no sort).
    pub(super) fn from_map(map: BTreeMap<AddressKey, AddressState>) -> Self {
        AddressTable {
            entries: map.into_values().collect(),
        }
    }

    /// The addresses as a map, for rebuilding the set (rare: reload, DNS).
    pub(super) fn into_map(self) -> BTreeMap<AddressKey, AddressState> {
        self.entries
            .into_iter()
            .map(|a| (a.key.clone(), a))
            .collect()
    }

    pub(super) fn values(&self) -> std::slice::Iter<'_, AddressState> {
        self.entries.iter()
    }

    pub(super) fn values_mut(&mut self) -> std::slice::IterMut<'_, AddressState> {
        self.entries.iter_mut()
    }

    /// `(index, address)` in key order.
    pub(super) fn indexed(&self) -> impl Iterator<Item = (u32, &AddressState)> {
        self.entries.iter().enumerate().map(|(i, a)| (i as u32, a))
    }

    /// The index of `key`, if present: `hint` first (checked by key equality, which is
    /// cheap: the hostname `Arc` is usually the same pointer), then, in a small table, a
    /// scan by equality, else a binary search.
    pub(super) fn position(&self, key: &AddressKey, hint: Option<u32>) -> Option<u32> {
        if let Some(i) = hint
            && self
                .entries
                .get(i as usize)
                .is_some_and(|a| same_key(&a.key, key))
        {
            return Some(i);
        }
        if self.entries.len() <= SCAN_MAX {
            return self
                .entries
                .iter()
                .position(|a| same_key(&a.key, key))
                .map(|i| i as u32);
        }
        self.entries
            .binary_search_by(|a| a.key.cmp(key))
            .ok()
            .map(|i| i as u32)
    }

    pub(super) fn at_mut(&mut self, index: u32) -> Option<&mut AddressState> {
        self.entries.get_mut(index as usize)
    }
}

/// Key equality, pointer-equal hostnames first.
fn same_key(a: &AddressKey, b: &AddressKey) -> bool {
    a.addr == b.addr
        && (std::sync::Arc::ptr_eq(&a.hostname, &b.hostname) || a.hostname == b.hostname)
}

/// The probe timer index: for every address whose `next_probe` is `Some(due)`, its index
/// under `due`. Bucketed by instant: the probes of one tick are re-armed together (to
/// `now` plus the same interval), so a bucket holds the tens of addresses of one tick
/// and the tree holds about one bucket per tick of the interval instead of one node
/// entry per address; taking a tick's due probes is one bucket, and re-arming one is a
/// push. With a set of `(instant, index)` pairs, its node rebalancing was still a tenth
/// of the controller's per-probe time at 10,000 probes a second.
#[derive(Debug, Default)]
pub(super) struct ProbeSchedule {
    buckets: BTreeMap<Instant, Vec<u32>>,
}

impl ProbeSchedule {
    pub(super) fn insert(&mut self, due: Instant, index: u32) {
        self.buckets.entry(due).or_default().push(index);
    }

    /// Remove `index` from `due`'s bucket (a schedule change outside a tick: a health
    /// flip or an operator override; rare).
    pub(super) fn remove(&mut self, due: Instant, index: u32) {
        if let Some(bucket) = self.buckets.get_mut(&due) {
            if let Some(at) = bucket.iter().position(|i| *i == index) {
                bucket.swap_remove(at);
            }
            if bucket.is_empty() {
                self.buckets.remove(&due);
            }
        }
    }

    /// The earliest due instant.
    pub(super) fn first(&self) -> Option<Instant> {
        self.buckets.first_key_value().map(|(t, _)| *t)
    }

    /// Move every index due at or before `now` into `out` (in no particular order).
    pub(super) fn take_due(&mut self, now: Instant, out: &mut Vec<u32>) {
        while let Some(entry) = self.buckets.first_entry()
            && *entry.key() <= now
        {
            out.extend(entry.remove());
        }
    }

    /// Every `(due, index)` pair, for consistency checks.
    pub(super) fn pairs(&self) -> BTreeSet<(Instant, u32)> {
        self.buckets
            .iter()
            .flat_map(|(t, bucket)| bucket.iter().map(move |i| (*t, *i)))
            .collect()
    }
}

impl FromIterator<(Instant, u32)> for ProbeSchedule {
    fn from_iter<I: IntoIterator<Item = (Instant, u32)>>(pairs: I) -> Self {
        let mut schedule = ProbeSchedule::default();
        for (due, index) in pairs {
            schedule.insert(due, index);
        }
        schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_hands_out_what_is_due_and_forgets_what_was_removed() {
        let at = Instant::from_millis;
        let mut s: ProbeSchedule = [(at(20), 3), (at(10), 7), (at(10), 1), (at(30), 2)]
            .into_iter()
            .collect();
        assert_eq!(s.first(), Some(at(10)));
        s.remove(at(20), 3);
        s.remove(at(20), 9); // not there: nothing happens
        assert_eq!(
            s.pairs().into_iter().collect::<Vec<_>>(),
            vec![(at(10), 1), (at(10), 7), (at(30), 2)]
        );
        let mut due = Vec::new();
        s.take_due(at(25), &mut due);
        due.sort_unstable();
        assert_eq!(due, vec![1, 7]);
        assert_eq!(s.first(), Some(at(30)));
        s.take_due(at(30), &mut due);
        assert_eq!(s.first(), None);
    }
}
