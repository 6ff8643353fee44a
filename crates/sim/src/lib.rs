//! sluice-sim: a deterministic simulator that drives Sluice's decision core through
//! hours of faults in seconds, checking safety after every step and liveness after the
//! faults stop.
//!
//! Shaped after TigerBeetle's VOPR and FoundationDB's simulation: one seed decides
//! everything (which faults, when, how bad, every latency and outcome); virtual time
//! jumps from event to event; the core is driven through exactly the API the proxy's
//! driver uses. See `docs/testing.md` for how to run it and read its output.

pub mod check;
pub mod faults;
pub mod log;
pub mod queue;
pub mod rng;
pub mod runner;
pub mod settings;
pub mod sim;
pub mod world;
