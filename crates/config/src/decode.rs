//! Typed reads from the position-annotated YAML tree, reporting every type problem.
//!
//! This is the "schema layer" below [`crate::raw`]: it checks that a map has only known
//! keys (and names the valid ones), that no key is repeated, and that each value has the
//! type Kong's schema declares, in Kong's own words ("expected an integer"). A bad value
//! is reported and then treated as absent, so decoding continues and every problem in the
//! file surfaces in one run.

use std::collections::HashMap;

use crate::diagnostic::{Path, Sink};
use crate::node::{Key, Node, Pos, Value};

/// A value together with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    pub value: T,
    pub pos: Pos,
    pub path: Path,
}

impl<T> Sp<T> {
    pub fn new(value: T, pos: Pos, path: Path) -> Sp<T> {
        Sp { value, pos, path }
    }
}

/// Keys Kong allows inside every entity (documentation fields, ignored).
const ALWAYS_ALLOWED: &[&str] = &["_comment", "_ignore"];

/// An entity's map after its keys were checked.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    pub path: Path,
    entries: &'a [(Key, Node)],
}

/// The map at `node`, with unknown and duplicate keys reported. `None` (after reporting)
/// when the node is not a map at all.
pub(crate) fn fields<'a>(
    sink: &mut Sink,
    node: &'a Node,
    path: &Path,
    allowed: &[&str],
) -> Option<Fields<'a>> {
    let Value::Map(entries) = &node.value else {
        type_error(sink, node, path, "expected a record");
        return None;
    };
    // A map, not a scan, so that a hostile map with many keys stays linear.
    let mut first_seen: HashMap<&str, Pos> = HashMap::with_capacity(entries.len());
    for (key, _) in entries {
        let key_path = path.key(&key.name);
        if let Some(first) = first_seen.get(key.name.as_str()) {
            sink.error_hint(
                &key_path,
                key.pos,
                format!("duplicate key '{}'", key.name),
                format!(
                    "first written at line {}:{}; keep one",
                    first.line, first.column
                ),
            );
            continue;
        }
        first_seen.insert(&key.name, key.pos);
        if !allowed.contains(&key.name.as_str()) && !ALWAYS_ALLOWED.contains(&key.name.as_str()) {
            sink.error_hint(
                &key_path,
                key.pos,
                "unknown field",
                unknown_field_hint(&key.name, allowed),
            );
        }
    }
    Some(Fields {
        path: path.clone(),
        entries,
    })
}

/// "did you mean 'hosts'? valid fields: ..." for a misspelt key.
fn unknown_field_hint(name: &str, allowed: &[&str]) -> String {
    let suggestion = allowed
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min();
    let list = allowed.join(", ");
    match suggestion {
        Some((_, candidate)) => format!("did you mean '{candidate}'? valid fields: {list}"),
        None => format!("valid fields: {list}"),
    }
}

/// Levenshtein distance, for "did you mean" suggestions on short field names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b_chars.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b_chars.len() + 1);
        current.push(i + 1);
        for (j, cb) in b_chars.iter().enumerate() {
            let substitution = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let deletion = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insertion = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

/// Reports a value of the wrong type, Kong's message plus what was found.
pub(crate) fn type_error(sink: &mut Sink, node: &Node, path: &Path, expected: &str) {
    let found = match &node.value {
        Value::Str(s) => format!("found a string: {s:?}"),
        Value::Int(i) => format!("found an integer: {i}"),
        Value::Float(f) => format!("found a number: {f:?}"),
        Value::Bool(b) => format!("found a boolean: {b}"),
        other => format!("found {}", other.kind_name()),
    };
    sink.error_hint(path, node.pos, expected, found);
}

impl<'a> Fields<'a> {
    /// The first entry for `key`; explicit `null` counts as absent (Kong treats a null
    /// field as "use the default").
    pub fn node(&self, key: &str) -> Option<(&'a Node, Path)> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
            .filter(|v| v.value != Value::Null)
            .map(|v| (v, self.path.key(key)))
    }

    /// Whether `key` is written at all (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.name == key)
    }

    /// The position of `key` itself, for "must be null" style errors.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k.pos)
    }

    pub fn str(&self, sink: &mut Sink, key: &str) -> Option<Sp<String>> {
        let (node, path) = self.node(key)?;
        string(sink, node, &path)
    }

    pub fn int(&self, sink: &mut Sink, key: &str) -> Option<Sp<i64>> {
        let (node, path) = self.node(key)?;
        integer(sink, node, &path)
    }

    /// A Kong `number`: integer or fraction.
    pub fn num(&self, sink: &mut Sink, key: &str) -> Option<Sp<f64>> {
        let (node, path) = self.node(key)?;
        match node.value {
            Value::Int(i) => Some(Sp::new(i as f64, node.pos, path)),
            Value::Float(f) => Some(Sp::new(f, node.pos, path)),
            _ => {
                type_error(sink, node, &path, "expected a number");
                None
            }
        }
    }

    pub fn bool(&self, sink: &mut Sink, key: &str) -> Option<Sp<bool>> {
        let (node, path) = self.node(key)?;
        match node.value {
            Value::Bool(b) => Some(Sp::new(b, node.pos, path)),
            _ => {
                type_error(sink, node, &path, "expected a boolean");
                None
            }
        }
    }

    /// An array of strings (Kong `array`/`set` of `string`); bad elements are reported
    /// and skipped.
    pub fn str_list(&self, sink: &mut Sink, key: &str) -> Option<Sp<Vec<Sp<String>>>> {
        let (node, path) = self.node(key)?;
        let items = seq(sink, node, &path)?;
        let values = items
            .iter()
            .enumerate()
            .filter_map(|(n, item)| string(sink, item, &path.index(n)))
            .collect();
        Some(Sp::new(values, node.pos, path))
    }

    /// An array of integers; bad elements are reported and skipped.
    pub fn int_list(&self, sink: &mut Sink, key: &str) -> Option<Sp<Vec<Sp<i64>>>> {
        let (node, path) = self.node(key)?;
        let items = seq(sink, node, &path)?;
        let values = items
            .iter()
            .enumerate()
            .filter_map(|(n, item)| integer(sink, item, &path.index(n)))
            .collect();
        Some(Sp::new(values, node.pos, path))
    }

    /// A nested array of entities: each element with its path.
    pub fn entities(&self, sink: &mut Sink, key: &str) -> Vec<(&'a Node, Path)> {
        let Some((node, path)) = self.node(key) else {
            return Vec::new();
        };
        let Some(items) = seq(sink, node, &path) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(n, item)| (item, path.index(n)))
            .collect()
    }
}

pub(crate) fn string(sink: &mut Sink, node: &Node, path: &Path) -> Option<Sp<String>> {
    match &node.value {
        Value::Str(s) => Some(Sp::new(s.clone(), node.pos, path.clone())),
        _ => {
            type_error(sink, node, path, "expected a string");
            None
        }
    }
}

pub(crate) fn integer(sink: &mut Sink, node: &Node, path: &Path) -> Option<Sp<i64>> {
    match node.value {
        Value::Int(i) => Some(Sp::new(i, node.pos, path.clone())),
        _ => {
            type_error(sink, node, path, "expected an integer");
            None
        }
    }
}

pub(crate) fn seq<'a>(sink: &mut Sink, node: &'a Node, path: &Path) -> Option<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            type_error(sink, node, path, "expected an array");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_finds_the_typo() {
        assert_eq!(edit_distance("hots", "hosts"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn unknown_field_suggests_the_closest_valid_one() {
        let hint = unknown_field_hint("hots", &["hosts", "paths", "methods"]);
        assert!(hint.starts_with("did you mean 'hosts'?"), "{hint}");
        let hint = unknown_field_hint("zzzzzzzz", &["hosts", "paths"]);
        assert_eq!(hint, "valid fields: hosts, paths");
    }
}
