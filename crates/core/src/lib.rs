//! Sluice's pure decision core.
//!
//! Every decision that moves traffic lives here: which address a request goes to
//! (`balance`), whether an address is healthy (`health`), whether it is ejected for
//! failing real traffic (`outlier`), how traffic is split between priority tiers and
//! regions, including failover, graded spill, panic and gradual failback (`failover`),
//! and whether a failed attempt may be retried (`retry`).
//!
//! # Invariants
//! - No I/O, no async, no clock reads, no global RNG. Time arrives as [`Instant`]
//!   arguments; randomness arrives as `u64` entropy arguments. The crate's
//!   `clippy.toml` bans the escape hatches.
//! - Deterministic: the same events with the same `now` and entropy give the same
//!   decisions. Iteration order never depends on hashing (`BTreeMap`, dense `Vec`s).
//! - Events cannot fail. `Controller::apply` returns no `Result`; an impossible state is a
//!   bug and is caught by `debug_assert!` and by the simulator (`sluice-sim`).
//! - Bounded memory: every history (decision log, outcome windows) has a fixed cap.
//! - Shared per-address load figures (`load::AddressLoad`) are atomics written by the
//!   data plane; the core only reads them, always with a caller-supplied `now`.

pub mod balance;
pub mod controller;
pub mod decision;
pub mod event;
pub mod failover;
pub mod health;
pub mod load;
pub mod outlier;
pub mod retry;
pub mod snapshot;
pub mod time;
pub mod topology;

pub use controller::Controller;
pub use event::{Action, Event};
pub use snapshot::UpstreamSnapshot;
pub use time::{Duration, Instant};
