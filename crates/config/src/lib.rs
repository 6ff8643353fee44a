//! Kong declarative configuration for Sluice.
//!
//! Two stages: [`raw`] mirrors Kong's YAML exactly (serde types, Kong's field names and
//! units), then validation turns it into the [`model`] the gateway runs, collecting every
//! problem as a [`Diagnostic`] with its file:line:column and entity path instead of
//! stopping at the first. This crate does no file or network I/O: it takes text.

pub mod model;

pub use model::Config;
