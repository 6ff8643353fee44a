//! sluice-sim (to be written).
