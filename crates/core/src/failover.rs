//! failover (to be written).
