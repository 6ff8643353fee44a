//! sluice-proxy (to be written).
