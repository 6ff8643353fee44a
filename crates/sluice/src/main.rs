//! The `sluice` binary (to be written).
fn main() {}
