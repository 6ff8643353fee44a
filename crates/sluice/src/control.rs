//! The admin API's view of the running gateway (wiring in progress).
