//! Diagnostics: what is wrong (or risky) in a configuration, and exactly where.
//!
//! Every problem carries the origin (file name), the 1-based line:column of the offending
//! value, the entity path (`services[2].routes[0].paths[1]`), a lowercase message and,
//! when we can say it, a hint of what would be valid. [`Diagnostics`] holds *all* of them:
//! validation never stops at the first problem.
//!
//! Three renderings:
//! - `Display`: one line per diagnostic, compiler style
//!   (`kong.yml:12:9: error: services[2].routes[0].paths[1]: ... (expected ...)`), for
//!   `sluice check` and logs.
//! - [`Diagnostics::to_kong_error`]: Kong's DB-less `POST /config` 400 body
//!   (`code` 14, `name`, `message`, nested `fields` mirroring the input like Kong's `err_t`).
//! - [`Diagnostics::to_kong_flattened`]: the same body with Kong's `flattened_errors`
//!   (`?flatten_errors=1`), one entry per offending entity.

use std::fmt;

use serde_json::{Map, Value as Json, json};

use crate::node::{Node, Pos, Value};

/// How bad a diagnostic is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The configuration works, but a setting is a known trap or is ignored by Sluice.
    Warning,
    /// The configuration is rejected.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One step of an entity path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where in the document a value lives: `upstreams[0].targets[2].weight`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Path(pub Vec<Seg>);

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }

    /// This path extended by a map key.
    pub fn key(&self, key: &str) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Path(segs)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Path(segs)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if n == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Whether a message is about one field's value or about the entity as a whole (Kong
/// files the latter under `@entity` in its error tree).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Field,
    Entity,
}

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file name or other origin passed to [`crate::parse`].
    pub origin: String,
    /// 1-based; 0 only for problems that have no place (never for a parsed value).
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    /// Entity path, e.g. `services[2].routes[0].paths[1]`; empty for the whole file.
    pub path: String,
    /// Lowercase, no trailing period (Kong's style).
    pub message: String,
    /// What would be valid, when we can say it.
    pub hint: Option<String>,
    /// Structured form of `path`, for Kong's nested error tree.
    pub segments: Path,
    pub subject: Subject,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: ",
            self.origin, self.line, self.column, self.severity
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Collects diagnostics during decoding and validation.
#[derive(Debug)]
pub(crate) struct Sink {
    origin: String,
    pub(crate) items: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(origin: &str) -> Sink {
        Sink {
            origin: origin.to_owned(),
            items: Vec::new(),
        }
    }

    fn push(
        &mut self,
        severity: Severity,
        subject: Subject,
        path: &Path,
        pos: Pos,
        message: String,
        hint: Option<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            origin: self.origin.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message,
            hint,
            segments: path.clone(),
            subject,
        });
    }

    /// An error about the value at `path`.
    pub(crate) fn error(&mut self, path: &Path, pos: Pos, message: impl Into<String>) {
        self.push(
            Severity::Error,
            Subject::Field,
            path,
            pos,
            message.into(),
            None,
        );
    }

    /// An error about the value at `path`, with a hint of what is valid.
    pub(crate) fn error_hint(
        &mut self,
        path: &Path,
        pos: Pos,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            Subject::Field,
            path,
            pos,
            message.into(),
            Some(hint.into()),
        );
    }

    /// An error about the entity at `path` as a whole (Kong's `@entity`).
    pub(crate) fn entity_error(
        &mut self,
        path: &Path,
        pos: Pos,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(
            Severity::Error,
            Subject::Entity,
            path,
            pos,
            message.into(),
            hint,
        );
    }

    /// A warning about the value at `path`, with the fix.
    pub(crate) fn warning(
        &mut self,
        path: &Path,
        pos: Pos,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            Subject::Field,
            path,
            pos,
            message.into(),
            Some(hint.into()),
        );
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Every diagnostic of a rejected configuration: all errors, plus the warnings found on
/// the way, in document order.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
    /// The parsed document, kept to describe offending entities in Kong's flattened form.
    /// `None` when the text was not even valid YAML.
    pub(crate) tree: Option<Node>,
}

impl Diagnostics {
    pub(crate) fn new(mut items: Vec<Diagnostic>, tree: Option<Node>) -> Diagnostics {
        // Document order reads naturally; the sort is stable so diagnostics at the same
        // spot keep the order in which they were found.
        items.sort_by_key(|d| (d.line, d.column));
        Diagnostics { items, tree }
    }

    /// Only the errors (what made the configuration invalid).
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    /// Kong's nested error tree (`err_t` `fields`): mirrors the input nesting, with array
    /// positions as arrays (`null` for entries without errors), entity-level messages
    /// under `@entity`, and several messages for one field joined with "; ".
    pub fn kong_fields(&self) -> Json {
        let mut root = Json::Object(Map::new());
        for diagnostic in self.errors() {
            insert_error(&mut root, diagnostic);
        }
        root
    }

    /// Kong's one-line summary: `declarative config is invalid: {...}`, the error tree in
    /// Lua table syntax as Kong prints it.
    pub fn kong_message(&self) -> String {
        format!(
            "declarative config is invalid: {}",
            lua_table(&self.kong_fields())
        )
    }

    /// Kong's DB-less `POST /config` 400 body: `{"code":14, "name":"invalid declarative
    /// configuration", "message":"declarative config is invalid: {...}", "fields":{...}}`.
    pub fn to_kong_error(&self) -> Json {
        json!({
            "code": 14,
            "name": "invalid declarative configuration",
            "message": self.kong_message(),
            "fields": self.kong_fields(),
        })
    }

    /// Kong's `flattened_errors` list: each offending entity with its type (singular),
    /// name, id, tags, the entity as written, and its errors (`field` with a dotted field
    /// name and Kong's 1-based array positions, or `entity`). Problems outside any entity
    /// (e.g. `_format_version`) are listed with an empty entity type.
    pub fn kong_flattened_errors(&self) -> Vec<Json> {
        let mut groups: Vec<(Path, Vec<Json>)> = Vec::new();
        for diagnostic in self.errors() {
            let (entity_path, field) = split_entity(&diagnostic.segments);
            let error = match (diagnostic.subject, field.is_empty()) {
                (Subject::Entity, _) | (Subject::Field, true) => {
                    json!({"type": "entity", "message": diagnostic.message})
                }
                (Subject::Field, false) => {
                    json!({"type": "field", "field": field, "message": diagnostic.message})
                }
            };
            match groups.iter_mut().find(|(path, _)| *path == entity_path) {
                Some((_, errors)) => errors.push(error),
                None => groups.push((entity_path, vec![error])),
            }
        }
        groups
            .into_iter()
            .map(|(entity_path, errors)| {
                let entity = self
                    .tree
                    .as_ref()
                    .and_then(|tree| lookup(tree, &entity_path))
                    .filter(|_| !entity_path.is_root());
                let field = |name: &str| {
                    entity
                        .and_then(|e| e.get(name))
                        .map(Node::to_json)
                        .unwrap_or(Json::Null)
                };
                json!({
                    "entity_type": entity_type(&entity_path),
                    "entity_name": field("name"),
                    "entity_id": field("id"),
                    "entity_tags": field("tags"),
                    "entity": entity.map(entity_json).unwrap_or(Json::Null),
                    "errors": errors,
                })
            })
            .collect()
    }

    /// Kong's `?flatten_errors=1` body: `fields` stays empty and the message carries an
    /// empty tree (as in Kong's own unit test); the detail is in `flattened_errors`.
    pub fn to_kong_flattened(&self) -> Json {
        json!({
            "code": 14,
            "name": "invalid declarative configuration",
            "message": "declarative config is invalid: {}",
            "fields": {},
            "flattened_errors": self.kong_flattened_errors(),
        })
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, diagnostic) in self.items.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Kong's entity collections, plural → the singular name Kong uses for `entity_type`.
const ENTITY_TYPES: &[(&str, &str)] = &[
    ("services", "service"),
    ("routes", "route"),
    ("upstreams", "upstream"),
    ("targets", "target"),
    ("plugins", "plugin"),
    ("consumers", "consumer"),
    ("certificates", "certificate"),
    ("ca_certificates", "ca_certificate"),
    ("snis", "sni"),
    ("vaults", "vault"),
];

/// Splits a path into the innermost entity (`services[0].routes[1]`) and the dotted field
/// inside it (`paths.2`, Kong's flattened field naming, with Kong's 1-based array
/// positions).
fn split_entity(path: &Path) -> (Path, String) {
    let mut split_at = 0;
    for (n, pair) in path.0.windows(2).enumerate() {
        if let [Seg::Key(key), Seg::Index(_)] = pair
            && ENTITY_TYPES.iter().any(|(plural, _)| plural == key)
        {
            split_at = n + 2;
        }
    }
    let (entity, field) = path.0.split_at(split_at.min(path.0.len()));
    let field = field
        .iter()
        .map(|seg| match seg {
            Seg::Key(key) => key.clone(),
            Seg::Index(index) => (index + 1).to_string(),
        })
        .collect::<Vec<_>>()
        .join(".");
    (Path(entity.to_vec()), field)
}

fn entity_type(entity_path: &Path) -> &'static str {
    let plural = entity_path.0.iter().rev().find_map(|seg| match seg {
        Seg::Key(key) => Some(key.as_str()),
        Seg::Index(_) => None,
    });
    ENTITY_TYPES
        .iter()
        .find(|(p, _)| Some(*p) == plural)
        .map(|(_, singular)| *singular)
        .unwrap_or("")
}

/// An entity as Kong lists it in `flattened_errors`: its own fields, without the nested
/// child entities (Kong flattens those into entries of their own).
fn entity_json(node: &Node) -> Json {
    let mut json = node.to_json();
    if let Json::Object(map) = &mut json {
        map.retain(|key, _| !ENTITY_TYPES.iter().any(|(plural, _)| plural == key));
    }
    json
}

/// The node at `path`, if the document has one there.
fn lookup<'a>(tree: &'a Node, path: &Path) -> Option<&'a Node> {
    let mut node = tree;
    for seg in &path.0 {
        node = match (seg, &node.value) {
            (Seg::Key(key), Value::Map(_)) => node.get(key)?,
            (Seg::Index(index), Value::Seq(items)) => items.get(*index)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Inserts one error message into Kong's nested tree.
fn insert_error(root: &mut Json, diagnostic: &Diagnostic) {
    let mut node = root;
    let segs = &diagnostic.segments.0;
    for seg in segs {
        node = match seg {
            Seg::Key(key) => {
                if !node.is_object() {
                    // A field that already holds a message gets nested errors too (e.g.
                    // a map with a type error and an inner problem): keep the message under
                    // `@entity` so neither is lost.
                    let previous = std::mem::replace(node, Json::Object(Map::new()));
                    if !previous.is_null()
                        && let Json::Object(map) = node
                    {
                        map.insert("@entity".into(), Json::Array(vec![previous]));
                    }
                }
                match node {
                    Json::Object(map) => map.entry(key.clone()).or_insert(Json::Null),
                    _ => return,
                }
            }
            Seg::Index(index) => {
                if !node.is_array() {
                    *node = Json::Array(Vec::new());
                }
                match node {
                    Json::Array(items) => {
                        if items.len() <= *index {
                            items.resize(index + 1, Json::Null);
                        }
                        match items.get_mut(*index) {
                            Some(slot) => slot,
                            None => return,
                        }
                    }
                    _ => return,
                }
            }
        };
    }
    let message = Json::String(diagnostic.message.clone());
    if diagnostic.subject == Subject::Entity || segs.is_empty() {
        if !node.is_object() {
            *node = Json::Object(Map::new());
        }
        if let Json::Object(map) = node {
            match map
                .entry("@entity")
                .or_insert_with(|| Json::Array(Vec::new()))
            {
                Json::Array(list) => list.push(message),
                other => *other = Json::Array(vec![message]),
            }
        }
        return;
    }
    match node {
        Json::Null => *node = message,
        Json::String(existing) => {
            existing.push_str("; ");
            existing.push_str(&diagnostic.message);
        }
        Json::Object(map) => match map
            .entry("@entity")
            .or_insert_with(|| Json::Array(Vec::new()))
        {
            Json::Array(list) => list.push(message),
            other => *other = Json::Array(vec![message]),
        },
        _ => *node = message,
    }
}

/// The tree in Lua table syntax, as Kong embeds it in `message` (penlight's compact
/// form: arrays without keys, `[n]=` after a gap, string keys bare when they are Lua
/// identifiers and `["..."]` otherwise; keys sorted for a stable output).
fn lua_table(value: &Json) -> String {
    match value {
        Json::Null => "nil".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => format!("{s:?}"),
        Json::Array(items) => {
            let mut parts = Vec::new();
            let mut contiguous = true;
            for (index, item) in items.iter().enumerate() {
                if item.is_null() {
                    contiguous = false;
                    continue;
                }
                if contiguous {
                    parts.push(lua_table(item));
                } else {
                    parts.push(format!("[{}]={}", index + 1, lua_table(item)));
                }
            }
            format!("{{{}}}", parts.join(","))
        }
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .filter_map(|key| {
                    let item = map.get(key)?;
                    let is_identifier = key
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    Some(if is_identifier {
                        format!("{key}={}", lua_table(item))
                    } else {
                        format!("[{key:?}]={}", lua_table(item))
                    })
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnostic(path: Path, subject: Subject, message: &str) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            origin: "kong.yml".into(),
            line: 3,
            column: 7,
            path: path.to_string(),
            message: message.into(),
            hint: None,
            segments: path,
            subject,
        }
    }

    #[test]
    fn paths_render_like_kong_users_write_them() {
        let path = Path::root()
            .key("services")
            .index(2)
            .key("routes")
            .index(0)
            .key("paths")
            .index(1);
        assert_eq!(path.to_string(), "services[2].routes[0].paths[1]");
    }

    #[test]
    fn display_is_one_compiler_style_line() {
        let mut d = diagnostic(
            Path::root().key("services").index(0),
            Subject::Field,
            "boom",
        );
        d.hint = Some("expected x".into());
        assert_eq!(
            d.to_string(),
            "kong.yml:3:7: error: services[0]: boom (expected x)"
        );
    }

    #[test]
    fn kong_tree_nests_arrays_and_entity_messages() {
        let weight = Path::root()
            .key("upstreams")
            .index(0)
            .key("targets")
            .index(1)
            .key("weight");
        let route = Path::root().key("routes").index(0);
        let diagnostics = Diagnostics::new(
            vec![
                diagnostic(
                    weight,
                    Subject::Field,
                    "value should be between 0 and 65535",
                ),
                diagnostic(
                    route,
                    Subject::Entity,
                    "must set one of methods, hosts, headers, paths",
                ),
            ],
            None,
        );
        let body = diagnostics.to_kong_error();
        assert_eq!(body["code"], 14);
        assert_eq!(
            body["fields"]["upstreams"][0]["targets"][1]["weight"],
            "value should be between 0 and 65535"
        );
        assert_eq!(body["fields"]["upstreams"][0]["targets"][0], Json::Null);
        assert_eq!(
            body["fields"]["routes"][0]["@entity"][0],
            "must set one of methods, hosts, headers, paths"
        );
        assert_eq!(
            body["message"],
            "declarative config is invalid: {routes={{[\"@entity\"]={\"must set one of methods, hosts, headers, paths\"}}},upstreams={{targets={[2]={weight=\"value should be between 0 and 65535\"}}}}}"
        );
    }

    #[test]
    fn flattened_errors_name_the_entity_and_dotted_field() {
        let tree = crate::node::parse_tree(
            "upstreams:\n  - name: up\n    tags: [a]\n    healthchecks: {active: {concurrency: 0}}\n",
        )
        .ok();
        let path = Path::root()
            .key("upstreams")
            .index(0)
            .key("healthchecks")
            .key("active")
            .key("concurrency");
        let diagnostics = Diagnostics::new(
            vec![diagnostic(
                path,
                Subject::Field,
                "value should be between 1 and 2147483648",
            )],
            tree,
        );
        let body = diagnostics.to_kong_flattened();
        let entry = &body["flattened_errors"][0];
        assert_eq!(entry["entity_type"], "upstream");
        assert_eq!(entry["entity_name"], "up");
        assert_eq!(entry["entity_tags"], json!(["a"]));
        assert_eq!(entry["errors"][0]["type"], "field");
        assert_eq!(
            entry["errors"][0]["field"],
            "healthchecks.active.concurrency"
        );
        assert_eq!(body["fields"], json!({}));
    }
}
