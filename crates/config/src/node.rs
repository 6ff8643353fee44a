//! A YAML document as a tree of nodes, each carrying the line:column where it was written.
//!
//! Why a tree instead of deserializing straight into typed structs: serde stops at the
//! first error, and a user fixing a `kong.yml` wants *every* wrong type, unknown field and
//! duplicate key in one run. So serde-saphyr only builds this position-annotated tree
//! (YAML 1.2, which also accepts JSON text, as Kong's `POST /config` does); the decoder in
//! [`crate::raw`] then walks it and reports each problem where it is. Duplicate keys are
//! passed through by the parser on purpose, so they too are all reported, with both
//! positions.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Options, Spanned};

/// A 1-based line and column in the source text. `0:0` means "unknown" (never produced for
/// nodes of a successfully parsed document; used only for whole-file diagnostics).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub const UNKNOWN: Pos = Pos { line: 0, column: 0 };

    fn from_location(location: serde_saphyr::Location) -> Pos {
        Pos {
            line: u32::try_from(location.line()).unwrap_or(u32::MAX),
            column: u32::try_from(location.column()).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// A mapping key: YAML allows any scalar; Kong's keys are strings, so non-string scalars
/// are kept in their textual form and reported by the decoder when they matter.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; duplicates are kept so that each can be reported.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// How Kong's schema errors name a type ("expected a string" etc.): the noun for what
    /// was found, used in "expected an integer, found a string".
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "an array",
            Value::Map(_) => "a map",
        }
    }
}

impl Node {
    /// The map entry named `key` (the first one when duplicated), if this is a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string value, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The node as JSON (for Kong's `flattened_errors[].entity`). Non-finite floats, which
    /// JSON cannot hold, become null.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML syntax error: the message and where the parser stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Pos,
}

/// Upper bound of events replayed from aliases in one document (see [`parse_tree`]).
const MAX_ALIAS_REPLAYED_EVENTS: usize = 100_000;

/// Parses YAML (or JSON) text into a node tree. Only syntax errors fail here; everything
/// about the *content* is left to the decoder so that it can report all of it.
pub fn parse_tree(source: &str) -> Result<Node, SyntaxError> {
    let mut options = Options::default();
    // Duplicates reach our visitor, which keeps them; the decoder reports each one.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // We render our own one-line diagnostics; the snippet would be noise in them.
    options.with_snippet = false;
    // Alias expansion is bounded well below the crate's default of 1,000,000 replayed
    // events: a real kong.yml reuses a healthchecks block or two (tens of events each, a
    // few hundred times at most), while an alias bomb posted to `POST /config` should be
    // refused in milliseconds, not after building a million-node tree.
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAYED_EVENTS;
    // An empty or comment-only file arrives as a null document rather than an error, so
    // the decoder can say "the configuration is empty" with a hint.
    if source.trim().is_empty() || source.lines().all(is_blank_or_comment) {
        return Ok(Node {
            value: Value::Null,
            pos: Pos { line: 1, column: 1 },
        });
    }
    let spanned: Spanned<NodeValue> = serde_saphyr::from_str_with_options(source, options)
        .map_err(|err| SyntaxError {
            pos: err
                .location()
                .map(Pos::from_location)
                .unwrap_or(Pos::UNKNOWN),
            message: syntax_message(&err),
        })?;
    Ok(Node::from(spanned))
}

fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" || trimmed == "..."
}

/// serde-saphyr's rendered error without its own position suffix (we print positions in
/// the `file:line:column` prefix).
fn syntax_message(err: &serde_saphyr::Error) -> String {
    let rendered = err.without_snippet().to_string();
    let first_line = rendered.lines().next().unwrap_or("invalid YAML").trim();
    // The crate prefixes "line L column C: " or suffixes " at line L column C"; strip
    // either form so the position is not printed twice.
    let without_prefix = match first_line.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest,
        _ => first_line,
    };
    let without_suffix = match without_prefix.rfind(" at line ") {
        Some(index) => without_prefix.get(..index).unwrap_or(without_prefix),
        None => without_prefix,
    };
    if without_suffix.starts_with("multiple YAML documents") {
        // The crate's wording names its own API; say what to do with the file instead.
        return "invalid YAML: more than one document (a '---' separator); a declarative configuration is one document".to_owned();
    }
    format!("invalid YAML: {without_suffix}")
}

impl From<Spanned<NodeValue>> for Node {
    fn from(spanned: Spanned<NodeValue>) -> Node {
        Node {
            value: spanned.value.0,
            pos: Pos::from_location(spanned.referenced),
        }
    }
}

/// Deserialization target for one node's value; children are wrapped in [`Spanned`] so
/// each gets its own position.
struct NodeValue(Value);

/// A mapping key of any scalar type, kept as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue(Value::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        // Beyond i64 no Kong field is in range anyway; keep it as a float so the range
        // check reports it instead of a type error.
        Ok(NodeValue(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        }))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeValue, E> {
        Ok(NodeValue(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        }))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeValue, E> {
        Ok(NodeValue(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue(Value::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue(Value::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<NodeValue>>()? {
            items.push(Node::from(item));
        }
        Ok(NodeValue(Value::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<NodeValue>>()?;
            entries.push((
                Key {
                    name: key.value.0,
                    pos: Pos::from_location(key.referenced),
                },
                Node::from(value),
            ));
        }
        Ok(NodeValue(Value::Map(entries)))
    }
}

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let node = NodeValue::deserialize(deserializer)?;
        Ok(KeyText(match node.0 {
            Value::Str(s) => s,
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Seq(_) | Value::Map(_) => "<complex key>".to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        match parse_tree(text) {
            Ok(node) => node,
            Err(err) => panic!("unexpected syntax error: {err:?}"),
        }
    }

    #[test]
    fn scalars_keep_their_yaml_types_and_positions() {
        let tree = parse("a: \"3.0\"\nb: 3.0\nc: 8000\nd: true\ne: ~\nf: heavy\n");
        let get = |k: &str| tree.get(k).map(|n| (n.value.clone(), n.pos));
        assert_eq!(
            get("a"),
            Some((Value::Str("3.0".into()), Pos { line: 1, column: 4 }))
        );
        assert_eq!(get("b").map(|v| v.0), Some(Value::Float(3.0)));
        assert_eq!(get("c").map(|v| v.0), Some(Value::Int(8000)));
        assert_eq!(get("d").map(|v| v.0), Some(Value::Bool(true)));
        assert_eq!(get("e").map(|v| v.0), Some(Value::Null));
        assert_eq!(
            get("f"),
            Some((Value::Str("heavy".into()), Pos { line: 6, column: 4 }))
        );
    }

    #[test]
    fn duplicate_keys_are_kept_with_their_own_positions() {
        let tree = parse("host: a\nport: 1\nhost: b\n");
        let Value::Map(entries) = &tree.value else {
            panic!("expected a map, got {tree:?}");
        };
        let hosts: Vec<_> = entries
            .iter()
            .filter(|(k, _)| k.name == "host")
            .map(|(k, _)| k.pos.line)
            .collect();
        assert_eq!(hosts, vec![1, 3]);
    }

    #[test]
    fn nested_sequence_items_have_positions() {
        let tree = parse("targets:\n  - target: a\n  - target: b\n    weight: heavy\n");
        let Some(Value::Seq(items)) = tree.get("targets").map(|n| n.value.clone()) else {
            panic!("expected a sequence");
        };
        let weight = items.get(1).and_then(|t| t.get("weight")).map(|n| n.pos);
        assert_eq!(
            weight,
            Some(Pos {
                line: 4,
                column: 13
            })
        );
    }

    #[test]
    fn json_text_parses_as_yaml() {
        let tree = parse(
            "{\"_format_version\": \"3.0\",\n \"services\": [{\"name\": \"a\", \"port\": 8080}]}",
        );
        assert_eq!(
            tree.get("_format_version").and_then(Node::as_str),
            Some("3.0")
        );
        let port = tree
            .get("services")
            .and_then(|s| match &s.value {
                Value::Seq(items) => items.first().and_then(|i| i.get("port")).cloned(),
                _ => None,
            })
            .map(|n| (n.value, n.pos.line));
        assert_eq!(port, Some((Value::Int(8080), 2)));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_tree("services:\n  - name: a\n    host: [unclosed\n").err();
        let Some(err) = err else {
            panic!("unclosed flow sequence must not parse");
        };
        assert!(
            err.pos.line >= 3,
            "position should point at or after the flow: {err:?}"
        );
        assert!(err.message.starts_with("invalid YAML"), "{err:?}");
    }

    #[test]
    fn an_explicit_document_start_is_one_document() {
        let tree = parse("---\n_format_version: \"3.0\"\n...\n");
        assert_eq!(
            tree.get("_format_version").and_then(Node::as_str),
            Some("3.0")
        );
    }

    #[test]
    fn a_second_document_is_explained_in_user_terms() {
        let err = parse_tree("a: 1\n---\nb: 2\n").err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.message.contains("more than one document") && e.pos.line == 3),
            "{err:?}"
        );
    }

    #[test]
    fn empty_and_comment_only_text_is_a_null_document() {
        assert_eq!(parse("").value, Value::Null);
        assert_eq!(parse("# nothing here\n\n").value, Value::Null);
    }
}
