//! Test-only builder of [`UpstreamSnapshot`]s, so balancer tests state the shape they
//! need (weights, tiers, health, mode) in a line each instead of hand-assembling views.
//! It builds round-robin orders and Maglev tables the way the controller is asked to.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::hash::{maglev_table, table_size};
use super::round_robin::smooth_order;
use crate::load::AddressLoad;
use crate::snapshot::{
    AddressKey, AddressView, HealthStatus, Mode, TierView, Unavailable, UpstreamSnapshot,
};
use crate::time::Instant;
use crate::topology::Algorithm;

/// One address of a test snapshot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    weight: u32,
    effective: Option<u32>,
    tier: u8,
    unavailable: Option<Unavailable>,
}

impl Shape {
    pub(crate) fn weight(weight: u32) -> Self {
        Shape {
            weight,
            effective: None,
            tier: 0,
            unavailable: (weight == 0).then_some(Unavailable::ZeroWeight),
        }
    }

    pub(crate) fn tier(self, tier: u8) -> Self {
        Shape { tier, ..self }
    }

    pub(crate) fn unavailable(self, why: Unavailable) -> Self {
        Shape {
            unavailable: Some(why),
            ..self
        }
    }

    /// Override the effective weight (default: the weight when available, else 0).
    pub(crate) fn effective(self, effective: u32) -> Self {
        Shape {
            effective: Some(effective),
            ..self
        }
    }
}

pub(crate) struct SnapshotBuilder {
    algorithm: Algorithm,
    shapes: Vec<Shape>,
    shares: Vec<(u8, u32)>,
    mode: Mode,
    balancer_healthy: bool,
    slots: u32,
}

impl SnapshotBuilder {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        SnapshotBuilder {
            algorithm,
            shapes: Vec::new(),
            shares: Vec::new(),
            mode: Mode::Normal,
            balancer_healthy: true,
            slots: 10_000,
        }
    }

    pub(crate) fn address(mut self, shape: Shape) -> Self {
        self.shapes.push(shape);
        self
    }

    /// Give `tier` this share; tiers without one get 0, and with no shares at all the
    /// most preferred tier gets everything.
    pub(crate) fn share(mut self, tier: u8, ppm: u32) -> Self {
        self.shares.push((tier, ppm));
        self
    }

    pub(crate) fn mode(self, mode: Mode) -> Self {
        SnapshotBuilder { mode, ..self }
    }

    pub(crate) fn balancer_healthy(self, balancer_healthy: bool) -> Self {
        SnapshotBuilder {
            balancer_healthy,
            ..self
        }
    }

    pub(crate) fn build(self) -> UpstreamSnapshot {
        let addresses: Vec<AddressView> = self
            .shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16));
                AddressView {
                    key: AddressKey {
                        addr,
                        hostname: Arc::from("127.0.0.1"),
                    },
                    target_index: i as u32,
                    weight: shape.weight,
                    effective_weight: shape.effective.unwrap_or(if shape.unavailable.is_none() {
                        shape.weight
                    } else {
                        0
                    }),
                    tier: shape.tier,
                    region: Arc::from(format!("region-{}", shape.tier)),
                    health: match shape.unavailable {
                        Some(Unavailable::Unhealthy) => HealthStatus::Unhealthy,
                        _ => HealthStatus::Healthy,
                    },
                    unavailable: shape.unavailable,
                    load: Arc::new(AddressLoad::new(Instant::ZERO)),
                    dns: crate::snapshot::DnsRecord::A,
                }
            })
            .collect();
        let mut tier_numbers: Vec<u8> = self.shapes.iter().map(|s| s.tier).collect();
        tier_numbers.sort_unstable();
        tier_numbers.dedup();
        let panic = self.mode == Mode::Panic;
        // The weight the controller is asked to build orders and tables from.
        let build_weight = |a: &AddressView| {
            if panic {
                if a.unavailable == Some(Unavailable::Drained) {
                    0
                } else {
                    a.weight
                }
            } else {
                a.effective_weight
            }
        };
        let mut tiers = Vec::new();
        let mut hash_tables = Vec::new();
        for (position, &tier) in tier_numbers.iter().enumerate() {
            let members: Vec<u32> = (0..addresses.len() as u32)
                .filter(|&i| addresses[i as usize].tier == tier)
                .collect();
            let weighted: Vec<(u32, u32)> = members
                .iter()
                .map(|&i| (i, build_weight(&addresses[i as usize])))
                .collect();
            let keys: Vec<String> = members
                .iter()
                .map(|&i| addresses[i as usize].key.addr.to_string())
                .collect();
            let keyed: Vec<(u32, u32, &str)> = weighted
                .iter()
                .zip(&keys)
                .map(|(&(i, w), k)| (i, w, k.as_str()))
                .collect();
            let share_ppm = if self.shares.is_empty() {
                if position == 0 { 1_000_000 } else { 0 }
            } else {
                self.shares
                    .iter()
                    .filter(|(t, _)| *t == tier)
                    .map(|(_, ppm)| *ppm)
                    .sum()
            };
            tiers.push(TierView {
                tier,
                regions: vec![Arc::from(format!("region-{tier}"))],
                members,
                share_ppm,
                healthy_share: 1.0,
                rr_order: smooth_order(&weighted).into(),
                rr_cursor: Arc::new(AtomicU64::new(0)),
            });
            if self.algorithm == Algorithm::ConsistentHashing {
                hash_tables.push(maglev_table(&keyed, table_size(self.slots)).into());
            }
        }
        UpstreamSnapshot {
            version: 1,
            name: Arc::from("test-upstream"),
            algorithm: self.algorithm,
            addresses,
            tiers,
            mode: self.mode,
            balancer_healthy: self.balancer_healthy,
            hash_tables,
        }
    }
}
