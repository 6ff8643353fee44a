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

use std::collections::BTreeMap;

use super::AddressState;
use crate::snapshot::AddressKey;

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
    /// cheap: the hostname `Arc` is usually the same pointer), then a binary search.
    pub(super) fn position(&self, key: &AddressKey, hint: Option<u32>) -> Option<u32> {
        if let Some(i) = hint
            && self
                .entries
                .get(i as usize)
                .is_some_and(|a| same_key(&a.key, key))
        {
            return Some(i);
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
