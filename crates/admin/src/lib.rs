//! sluice-admin (to be written).
