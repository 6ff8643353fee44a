//! Kong declarative configuration for Sluice.
//!
//! [`parse`] takes the text of a `kong.yml` (YAML, or JSON as Kong's DB-less
//! `POST /config` accepts) and returns the validated [`Config`] the gateway runs, or
//! [`Diagnostics`] listing *every* problem with its file:line:column, entity path
//! (`services[2].routes[0].paths[1]`), message and a hint of what would be valid.
//!
//! Stages, each in its own module:
//! 1. [`node`]: YAML → a tree of values with positions (only syntax errors stop here);
//! 2. [`raw`] (with [`decode`]): the tree → Kong's entities as written, reporting unknown
//!    fields, duplicate keys and wrong types;
//! 3. `validate`: Kong's defaults and checks, references, uniqueness, Sluice's tag
//!    extensions ([`extensions`]) and warnings for known traps → [`model`].
//!
//! This crate does no file or network I/O: it takes text and an origin name for messages.

pub mod decode;
pub mod diagnostic;
pub mod extensions;
pub mod model;
pub mod node;
pub mod raw;
mod validate;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use model::Config;
pub use validate::source_hash;

use diagnostic::{Path, Sink};

/// A configuration that validated, with the warnings found on the way.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// Settings that work but are known traps, or that Sluice ignores; each names the fix.
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates Kong declarative configuration text. `origin` names the source in
/// diagnostics (a file name, or e.g. `POST /config`).
pub fn parse(source: &str, origin: &str) -> Result<Loaded, Diagnostics> {
    let mut sink = Sink::new(origin);
    let tree = match node::parse_tree(source) {
        Ok(tree) => tree,
        Err(syntax) => {
            sink.error(&Path::root(), syntax.pos, syntax.message);
            return Err(Diagnostics::new(sink.items, None));
        }
    };
    let raw = raw::decode(&mut sink, &tree);
    let config = validate::validate(&mut sink, &raw, source);
    match config {
        Some(config) if !sink.has_errors() => {
            let mut warnings = sink.items;
            warnings.sort_by_key(|d| (d.line, d.column));
            Ok(Loaded { config, warnings })
        }
        _ => Err(Diagnostics::new(sink.items, Some(tree))),
    }
}
