//! Secret arguments: which input fields are secret, and keeping their
//! values out of history, logs and output.
//!
//! A field is secret when a schema that applies to it says `"writeOnly":
//! true` or `"format": "password"`. [`mask`] replaces such values by [`MASK`]
//! in a copy of the arguments (what history stores and front ends show);
//! [`secrets`] lists their values so that [`hide_secrets`] (and the
//! [`HideSecrets`] sink) can blank them out of log lines a task prints;
//! [`found`] gathers both, with where the secrets are, for messages about
//! the arguments (schema violations:
//! [`Validator::validate_hiding`](crate::schema::Validator::validate_hiding)).
//! No I/O here.
//!
//! # Which schemas apply to a value
//!
//! The walk starts at the root of `inputs` and the arguments, and follows:
//!
//! - in place: `allOf`, `anyOf`, `oneOf`, `if`/`then`/`else`,
//!   `dependentSchemas` (and the schema-valued `dependencies` of drafts 4
//!   to 7) for keys present, and references: `$ref`, `$dynamicRef`,
//!   `$recursiveRef` (with their siblings, which drafts 4 to 7 ignore);
//! - into an object: `properties`, `patternProperties` (with the regular
//!   expressions validation uses: a map of `"^.*_TOKEN$"` keys is a common
//!   way to declare many secrets), and `additionalProperties` for the keys
//!   neither of those names;
//! - into an array: `prefixItems` and the array form of `items` (tuples),
//!   then `items` or `additionalItems` for the items after them; `contains`
//!   for every item.
//!
//! It does not evaluate which branch of `anyOf`, `oneOf` or `if` a value
//! takes: a secret in any branch is secret, since masking a value too many
//! is better than storing one too few. A value one schema marks is secret
//! whole, an object or array too.
//!
//! References resolve inside the document, as validation resolves them:
//! `#` and JSON pointers (`#/$defs/…`, `#/definitions/…`, with `~0`/`~1`
//! and percent-encoding), anchors (`$anchor`, `$dynamicAnchor`, draft 7's
//! `"$id": "#name"`), and the `$id`s of the document and of resources
//! embedded in it (compared as written: no relative resolution). `$defs`
//! and `definitions` are reached only through references. A reference to
//! one of the drafts' meta-schemas is not followed (they declare no
//! secrets); any other reference the walk cannot resolve makes its value
//! secret. A reference is applied once per value, so a recursive schema
//! cannot loop, and a walk deeper than [`MAX_DEPTH`] schemas treats what
//! lies below as secret rather than risk the stack.
//!
//! # What is hidden in logs
//!
//! [`secrets`] lists every string (of any length: a two-character PIN is
//! still a PIN) and every number (as its JSON text, `1234`) in secret
//! values, leaf by leaf inside secret objects and arrays. It does not list
//! booleans and `null`: a secret flag has two values that anyone can guess,
//! and hiding every `true`, `false` or `null` in every log line would garble
//! the log while protecting nothing. [`mask`] masks them all the same. The
//! flip side of short secrets: a one-character secret hides that character
//! wherever the task prints it.

use std::borrow::Cow;

use serde_json::Value;

use crate::log::{LogLine, LogSink};

/// What replaces a secret value.
pub const MASK: &str = "********";

/// How many schemas deep the walk goes before treating the rest as secret.
pub const MAX_DEPTH: usize = 256;

/// `text` with every occurrence of a secret replaced by [`MASK`]. Occurrences
/// that overlap (of `ab` and `bc` in `abc`, or of `ab` inside `abc`) become one mask.
pub fn hide_secrets<'a>(text: &'a [u8], secrets: &[String]) -> Cow<'a, [u8]> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        spans.extend(memchr::memmem::find_iter(text, s.as_bytes()).map(|at| (at, at + s.len())));
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = Vec::with_capacity(text.len());
    let mut copied = 0;
    let mut spans = spans.into_iter().peekable();
    while let Some((start, mut end)) = spans.next() {
        while let Some(&(next_start, next_end)) = spans.peek() {
            if next_start >= end {
                break;
            }
            end = end.max(next_end);
            spans.next();
        }
        out.extend_from_slice(&text[copied..start]);
        out.extend_from_slice(MASK.as_bytes());
        copied = end;
    }
    out.extend_from_slice(&text[copied..]);
    Cow::Owned(out)
}

/// A sink that hides secret values before passing lines on (e.g. to the terminal).
pub struct HideSecrets<'a> {
    /// Where lines go.
    pub inner: &'a dyn LogSink,
    /// The values to hide (see [`secrets`]).
    pub secrets: Vec<String>,
}

impl LogSink for HideSecrets<'_> {
    fn line(&self, line: LogLine<'_>) {
        let text = hide_secrets(line.text, &self.secrets);
        self.inner.line(LogLine {
            text: &text,
            ..line
        });
    }
}

/// Whether any value could be secret under `schema`: it names a secret
/// marker (`writeOnly: true`, `format: password`) or a reference (which the
/// walk may not resolve, and then treats as secret). When it does not,
/// [`mask`] is a copy and [`secrets`] empty, so callers that judge many
/// values against one schema can ask this once and skip the walks.
pub fn may_hold_secrets(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.iter().any(|(k, v)| {
            matches!(k.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef")
                || (k == "writeOnly" && v == &Value::Bool(true))
                || (k == "format" && v == "password")
                || may_hold_secrets(v)
        }),
        Value::Array(items) => items.iter().any(may_hold_secrets),
        _ => false,
    }
}

/// `args` with the value of every secret field replaced by [`MASK`].
pub fn mask(schema: &Value, args: &Value) -> Value {
    let mut out = args.clone();
    for path in secret_paths(schema, args) {
        if let Some(v) = get_mut(&mut out, &path) {
            *v = Value::String(MASK.into());
        }
    }
    out
}

/// The values to hide in logs: the strings and numbers in secret fields of
/// `args`, without duplicates, longest first.
pub fn secrets(schema: &Value, args: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for path in secret_paths(schema, args) {
        if let Some(v) = get(args, &path) {
            leaves(v, &mut found);
        }
    }
    found.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    found.dedup();
    found
}

/// What messages about `args` must not show: see [`found`].
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// JSON pointers (RFC 6901, as validation errors write them) to each secret value.
    pub pointers: Vec<String>,
    /// `args` masked, as [`mask`] gives them.
    pub masked: Value,
    /// The values to hide, as [`secrets`] lists them, and each string as it
    /// reads inside JSON text when that differs (`a\"b` for `a"b`), longest first.
    pub values: Vec<String>,
}

/// Where the secrets of `args` are, `args` masked and the values to hide:
/// what a message about `args` (a schema violation) needs to leave them out.
pub fn found(schema: &Value, args: &Value) -> Found {
    let paths = secret_paths(schema, args);
    let pointers = paths.iter().map(|p| to_pointer(p)).collect();
    let mut values = secrets(schema, args);
    let escaped: Vec<String> = values
        .iter()
        .filter_map(|s| {
            let json = serde_json::to_string(s).ok()?;
            let inner = &json[1..json.len() - 1];
            (inner != s).then(|| inner.to_owned())
        })
        .collect();
    values.extend(escaped);
    values.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    values.dedup();
    Found {
        pointers,
        masked: mask(schema, args),
        values,
    }
}

/// `path` as a JSON pointer (`~` as `~0`, `/` as `~1`).
fn to_pointer(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        Value::String(_) | Value::Bool(_) | Value::Null => {}
    }
}

/// One step from a value to a member of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'v> {
    Key(&'v str),
    Index(usize),
}

fn get<'a>(mut value: &'a Value, path: &[Step<'_>]) -> Option<&'a Value> {
    for step in path {
        value = match step {
            Step::Key(k) => value.get(k)?,
            Step::Index(i) => value.get(i)?,
        };
    }
    Some(value)
}

fn get_mut<'a>(mut value: &'a mut Value, path: &[Step<'_>]) -> Option<&'a mut Value> {
    for step in path {
        value = match step {
            Step::Key(k) => value.get_mut(k)?,
            Step::Index(i) => value.get_mut(i)?,
        };
    }
    Some(value)
}

/// Where in `args` the secret values are (a path may lie inside another).
fn secret_paths<'v>(schema: &Value, args: &'v Value) -> Vec<Vec<Step<'v>>> {
    let mut walk = Walk {
        root: schema,
        draft4: schema
            .get("$schema")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("draft-04")),
        index: None,
        patterns: Vec::new(),
        path: Vec::new(),
        found: Vec::new(),
    };
    walk.value(schema, schema, args, &mut Vec::new(), 0);
    walk.found
}

/// Whether one schema marks the value it applies to secret.
fn is_secret(schema: &Value) -> bool {
    schema.get("writeOnly").and_then(Value::as_bool) == Some(true)
        || schema.get("format").and_then(Value::as_str) == Some("password")
}

struct Walk<'s, 'v> {
    root: &'s Value,
    /// Draft 4 spells `$id` as `id`.
    draft4: bool,
    /// `$id`s and anchors of the document, gathered at the first reference that needs them.
    index: Option<Index<'s>>,
    /// `patternProperties` compiled so far (`None`: did not compile).
    patterns: Vec<(&'s str, Option<jsonschema::Validator>)>,
    /// Where the value being walked is in `args`.
    path: Vec<Step<'v>>,
    found: Vec<Vec<Step<'v>>>,
}

impl<'s, 'v> Walk<'s, 'v> {
    /// Applies `schema` (inside the resource `base`) to `value`. `applied`
    /// holds the reference targets already applied to this same value.
    fn value(
        &mut self,
        schema: &'s Value,
        base: &'s Value,
        value: &'v Value,
        applied: &mut Vec<*const Value>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH || is_secret(schema) {
            self.found.push(self.path.clone());
            return;
        }
        let Value::Object(keywords) = schema else {
            return; // `true` and `false` mark nothing.
        };
        let base = if own_id(schema, self.draft4).is_some() {
            schema
        } else {
            base
        };
        let depth = depth + 1;
        // References: each target at most once for this value.
        for keyword in ["$ref", "$dynamicRef", "$recursiveRef"] {
            let Some(reference) = keywords.get(keyword).and_then(Value::as_str) else {
                continue;
            };
            let targets = match keyword {
                "$ref" => self.resolve(reference, base),
                "$dynamicRef" => self.resolve_dynamic(reference, base),
                // 2019-09's `"$recursiveRef": "#"`: its resource, or the outermost one.
                _ => Resolved::Found(vec![(base, base), (self.root, self.root)]),
            };
            match targets {
                Resolved::Found(targets) => {
                    for (target, target_base) in targets {
                        let key: *const Value = target;
                        if applied.contains(&key) {
                            continue;
                        }
                        applied.push(key);
                        if self.found_here() {
                            return;
                        }
                        self.value(target, target_base, value, applied, depth);
                    }
                }
                Resolved::MetaSchema => {}
                Resolved::Unresolved => {
                    self.found.push(self.path.clone());
                    return;
                }
            }
        }
        // Other schemas that apply to this same value.
        for keyword in ["allOf", "anyOf", "oneOf"] {
            for sub in keywords
                .get(keyword)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if self.found_here() {
                    return;
                }
                self.value(sub, base, value, applied, depth);
            }
        }
        for keyword in ["if", "then", "else"] {
            if let Some(sub) = keywords.get(keyword) {
                if self.found_here() {
                    return;
                }
                self.value(sub, base, value, applied, depth);
            }
        }
        if let Value::Object(map) = value {
            for keyword in ["dependentSchemas", "dependencies"] {
                let Some(deps) = keywords.get(keyword).and_then(Value::as_object) else {
                    continue;
                };
                for (key, sub) in deps {
                    // `dependencies` also takes arrays of required names: not schemas.
                    if map.contains_key(key) && !sub.is_array() {
                        if self.found_here() {
                            return;
                        }
                        self.value(sub, base, value, applied, depth);
                    }
                }
            }
        }
        if self.found_here() {
            return;
        }
        let has = |names: &[&str]| names.iter().any(|k| keywords.contains_key(*k));
        match value {
            Value::Object(map)
                if has(&["properties", "patternProperties", "additionalProperties"]) =>
            {
                for (key, member) in map {
                    self.path.push(Step::Key(key));
                    for sub in self.member_schemas(keywords, key) {
                        self.value(sub, base, member, &mut Vec::new(), depth);
                    }
                    self.path.pop();
                }
            }
            Value::Array(items)
                if has(&["prefixItems", "items", "additionalItems", "contains"]) =>
            {
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Step::Index(i));
                    for sub in item_schemas(keywords, i) {
                        self.value(sub, base, item, &mut Vec::new(), depth);
                    }
                    self.path.pop();
                }
            }
            _ => {}
        }
    }

    /// Whether the value at the current path is already known to be secret.
    fn found_here(&self) -> bool {
        self.found.last().is_some_and(|p| *p == self.path)
    }

    fn index(&mut self) -> &Index<'s> {
        let (root, draft4) = (self.root, self.draft4);
        self.index.get_or_insert_with(|| Index::new(root, draft4))
    }

    /// The schemas that apply to the member `key` of an object.
    fn member_schemas(
        &mut self,
        keywords: &'s serde_json::Map<String, Value>,
        key: &str,
    ) -> Vec<&'s Value> {
        let mut out: Vec<&Value> = keywords
            .get("properties")
            .and_then(|p| p.get(key))
            .into_iter()
            .collect();
        for (pattern, sub) in keywords
            .get("patternProperties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if self.matches(pattern, key) {
                out.push(sub);
            }
        }
        if out.is_empty() {
            out.extend(keywords.get("additionalProperties"));
        }
        out
    }

    /// Whether `key` matches `pattern` as validation matches it (ECMA 262,
    /// unanchored). A pattern that does not compile matches: it cannot have
    /// passed registration, and matching is the safe side.
    fn matches(&mut self, pattern: &'s str, key: &str) -> bool {
        let i = match self.patterns.iter().position(|(p, _)| *p == pattern) {
            Some(i) => i,
            None => {
                let compiled = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .build(&serde_json::json!({"pattern": pattern}))
                    .ok();
                self.patterns.push((pattern, compiled));
                self.patterns.len() - 1
            }
        };
        match &self.patterns[i].1 {
            Some(v) => v.is_valid(&Value::String(key.to_owned())),
            None => true,
        }
    }

    /// The schemas `reference` names, seen from inside the resource `base`.
    fn resolve(&mut self, reference: &str, base: &'s Value) -> Resolved<'s> {
        let (uri, fragment) = match reference.split_once('#') {
            Some((uri, fragment)) => (uri, fragment),
            None => (reference, ""),
        };
        let resource = if uri.is_empty() {
            base
        } else if let Some(resource) = self.index().resource(uri) {
            resource
        } else if is_meta_schema(uri) {
            return Resolved::MetaSchema;
        } else {
            return Resolved::Unresolved;
        };
        let Some(fragment) = percent_decode(fragment) else {
            return Resolved::Unresolved;
        };
        if fragment.is_empty() {
            return Resolved::Found(vec![(resource, resource)]);
        }
        if fragment.starts_with('/') {
            return match pointer(resource, &fragment, self.draft4) {
                Some(found) => Resolved::Found(vec![found]),
                None => Resolved::Unresolved,
            };
        }
        let found = self.index().anchors(&fragment);
        if found.is_empty() {
            Resolved::Unresolved
        } else {
            Resolved::Found(found)
        }
    }

    /// `$dynamicRef`: every `$dynamicAnchor` of that name (the dynamic scope
    /// is not tracked, so any of them may be the one), else as `$ref`.
    fn resolve_dynamic(&mut self, reference: &str, base: &'s Value) -> Resolved<'s> {
        if let Some(name) = reference.strip_prefix('#') {
            let found = self.index().dynamic_anchors(name);
            if !found.is_empty() {
                return Resolved::Found(found);
            }
        }
        self.resolve(reference, base)
    }
}

enum Resolved<'s> {
    /// Each target schema with the resource it lies in.
    Found(Vec<(&'s Value, &'s Value)>),
    /// One of the drafts' meta-schemas, which declare no secrets.
    MetaSchema,
    Unresolved,
}

fn is_meta_schema(uri: &str) -> bool {
    uri.starts_with("http://json-schema.org/") || uri.starts_with("https://json-schema.org/")
}

/// The schemas that apply to item `i` of an array.
fn item_schemas(keywords: &serde_json::Map<String, Value>, i: usize) -> Vec<&Value> {
    let mut out = Vec::new();
    let prefix = keywords.get("prefixItems").and_then(Value::as_array);
    match keywords.get("items") {
        // Drafts up to 2019-09: a tuple, then `additionalItems`.
        Some(Value::Array(tuple)) => match tuple.get(i) {
            Some(sub) => out.push(sub),
            None => out.extend(keywords.get("additionalItems")),
        },
        items => {
            let prefix_len = prefix.map_or(0, Vec::len);
            if let Some(sub) = prefix.and_then(|p| p.get(i)) {
                out.push(sub);
            }
            if i >= prefix_len {
                out.extend(items);
            }
        }
    }
    out.extend(keywords.get("contains"));
    out
}

/// A schema's own `$id` (draft 4: `id`) when it starts a resource: not a bare `#anchor`.
fn own_id(schema: &Value, draft4: bool) -> Option<&str> {
    let key = if draft4 { "id" } else { "$id" };
    let id = schema.get(key)?.as_str()?;
    let id = id.strip_suffix('#').unwrap_or(id);
    (!id.is_empty() && !id.starts_with('#')).then_some(id)
}

/// `%XX` decoded; `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The schema at JSON pointer `pointer` (`~1` is `/`, `~0` is `~`) inside
/// `resource`, with the resource it lies in (an `$id` on the way starts a new one).
fn pointer<'s>(resource: &'s Value, pointer: &str, draft4: bool) -> Option<(&'s Value, &'s Value)> {
    let (mut at, mut base) = (resource, resource);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Object(map) => map.get(&segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
        if own_id(at, draft4).is_some() {
            base = at;
        }
    }
    Some((at, base))
}

/// The `$id`s and anchors of one schema document.
struct Index<'s> {
    /// Each resource by its `$id` (without a trailing `#`).
    resources: Vec<(&'s str, &'s Value)>,
    /// `$anchor`s and draft 7's `"$id": "#name"`: name, schema, its resource.
    anchors: Vec<(&'s str, &'s Value, &'s Value)>,
    /// `$dynamicAnchor`s, which `$ref` finds too.
    dynamic: Vec<(&'s str, &'s Value, &'s Value)>,
}

/// Keywords whose value is a schema.
const SCHEMA_KEYWORDS: &[&str] = &[
    "additionalItems",
    "additionalProperties",
    "contains",
    "contentSchema",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
];
/// Keywords whose value is an array of schemas.
const SCHEMA_ARRAY_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];
/// Keywords whose value is an object of schemas.
const SCHEMA_MAP_KEYWORDS: &[&str] = &[
    "$defs",
    "definitions",
    "dependencies",
    "dependentSchemas",
    "patternProperties",
    "properties",
];

impl<'s> Index<'s> {
    fn new(root: &'s Value, draft4: bool) -> Self {
        let mut index = Index {
            resources: Vec::new(),
            anchors: Vec::new(),
            dynamic: Vec::new(),
        };
        // Depth-first over schemas only (not `enum`, `const`, `default`, …), without recursion.
        let mut stack = vec![(root, root, 0usize)];
        while let Some((schema, base, depth)) = stack.pop() {
            let Value::Object(keywords) = schema else {
                continue;
            };
            let mut base = base;
            if let Some(id) = own_id(schema, draft4) {
                index.resources.push((id, schema));
                base = schema;
            }
            let id_key = if draft4 { "id" } else { "$id" };
            if let Some(name) = keywords
                .get(id_key)
                .and_then(Value::as_str)
                .and_then(|id| id.strip_prefix('#'))
                .filter(|name| !name.is_empty())
            {
                index.anchors.push((name, schema, base));
            }
            if let Some(name) = keywords.get("$anchor").and_then(Value::as_str) {
                index.anchors.push((name, schema, base));
            }
            if let Some(name) = keywords.get("$dynamicAnchor").and_then(Value::as_str) {
                index.dynamic.push((name, schema, base));
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            for (keyword, sub) in keywords {
                let k = keyword.as_str();
                let subs: Vec<&Value> = match sub {
                    Value::Array(items) if SCHEMA_ARRAY_KEYWORDS.contains(&k) => {
                        items.iter().collect()
                    }
                    Value::Object(map) if SCHEMA_MAP_KEYWORDS.contains(&k) => {
                        map.values().collect()
                    }
                    _ if SCHEMA_KEYWORDS.contains(&k) => vec![sub],
                    _ => continue,
                };
                stack.extend(subs.into_iter().map(|s| (s, base, depth + 1)));
            }
        }
        index
    }

    fn resource(&self, uri: &str) -> Option<&'s Value> {
        self.resources
            .iter()
            .find(|(id, _)| *id == uri)
            .map(|&(_, schema)| schema)
    }

    fn anchors(&self, name: &str) -> Vec<(&'s Value, &'s Value)> {
        self.anchors
            .iter()
            .chain(&self.dynamic)
            .filter(|(n, _, _)| *n == name)
            .map(|&(_, schema, base)| (schema, base))
            .collect()
    }

    fn dynamic_anchors(&self, name: &str) -> Vec<(&'s Value, &'s Value)> {
        self.dynamic
            .iter()
            .filter(|(n, _, _)| *n == name)
            .map(|&(_, schema, base)| (schema, base))
            .collect()
    }
}

#[cfg(test)]
mod may_hold {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_schemas_without_markers_or_references_hold_no_secrets() {
        for (schema, may) in [
            (json!({"type": "object"}), false),
            (json!(true), false),
            (
                json!({"properties": {"a": {"type": "string", "format": "date"}}}),
                false,
            ),
            (json!({"properties": {"a": {"writeOnly": false}}}), false),
            (json!({"properties": {"a": {"writeOnly": true}}}), true),
            (json!({"items": [{"format": "password"}]}), true),
            (
                json!({"$defs": {"x": {}}, "properties": {"a": {"$ref": "#/$defs/x"}}}),
                true,
            ),
        ] {
            assert_eq!(may_hold_secrets(&schema), may, "{schema}");
            // A schema said to hold none masks nothing, whatever the arguments.
            if !may {
                let args = json!({"a": "x", "b": [1, {"c": true}]});
                assert_eq!(mask(&schema, &args), args);
                assert!(secrets(&schema, &args).is_empty());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `secrets` in a stable order, for comparing.
    fn sorted_secrets(schema: &Value, args: &Value) -> Vec<String> {
        let mut s = secrets(schema, args);
        s.sort();
        s
    }

    /// One schema, arguments, what `mask` gives and what `secrets` lists (sorted).
    struct Case {
        name: &'static str,
        schema: Value,
        args: Value,
        masked: Value,
        secrets: &'static [&'static str],
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            assert_eq!(mask(&c.schema, &c.args), c.masked, "{}: mask", c.name);
            assert_eq!(
                sorted_secrets(&c.schema, &c.args),
                c.secrets,
                "{}: secrets",
                c.name
            );
        }
    }

    #[test]
    fn masks_write_only_and_password_fields_recursively() {
        let schema = json!({
            "type": "object",
            "properties": {
                "user": {"type": "string"},
                "token": {"type": "string", "writeOnly": true},
                "db": {"type": "object", "properties": {
                    "password": {"type": "string", "format": "password"},
                    "host": {"type": "string"}
                }},
                "keys": {"type": "array", "items": {"type": "string", "writeOnly": true}},
                "pairs": {"type": "array", "items": {"properties": {"pin": {"writeOnly": true}}}}
            },
            "allOf": [{"properties": {"extra": {"format": "password"}}}]
        });
        let args = json!({
            "user": "ada", "token": "s3cret", "db": {"password": "hunter2", "host": "h"},
            "keys": ["k1", "k2"], "pairs": [{"pin": 1234, "x": 1}], "extra": "e", "other": "o"
        });
        assert_eq!(
            mask(&schema, &args),
            json!({
                "user": "ada", "token": MASK, "db": {"password": MASK, "host": "h"},
                "keys": [MASK, MASK], "pairs": [{"pin": MASK, "x": 1}], "extra": MASK, "other": "o"
            })
        );
        assert_eq!(
            sorted_secrets(&schema, &args),
            ["1234", "e", "hunter2", "k1", "k2", "s3cret"]
        );
    }

    #[test]
    fn references_are_followed_within_the_document() {
        let secret = json!({"type": "string", "writeOnly": true});
        check(vec![
            Case {
                name: "$ref into $defs",
                schema: json!({
                    "$defs": {"secret": secret},
                    "properties": {"token": {"$ref": "#/$defs/secret"}, "user": {"type": "string"}}
                }),
                args: json!({"token": "tok", "user": "ada"}),
                masked: json!({"token": MASK, "user": "ada"}),
                secrets: &["tok"],
            },
            Case {
                name: "$ref into definitions (draft 7)",
                schema: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "definitions": {"creds": {"properties": {"password": {"format": "password"}}}},
                    "properties": {"db": {"$ref": "#/definitions/creds"}}
                }),
                args: json!({"db": {"password": "pw", "host": "h"}}),
                masked: json!({"db": {"password": MASK, "host": "h"}}),
                secrets: &["pw"],
            },
            Case {
                name: "$ref through allOf, and a $ref to a $ref",
                schema: json!({
                    "$defs": {"a": {"$ref": "#/$defs/b"}, "b": secret},
                    "properties": {"x": {"allOf": [{"$ref": "#/$defs/a"}]}}
                }),
                args: json!({"x": "xx"}),
                masked: json!({"x": MASK}),
                secrets: &["xx"],
            },
            Case {
                name: "~0, ~1 and percent-encoding in the pointer",
                schema: json!({
                    "$defs": {"a/b": secret, "c~d": secret, "e f%": secret},
                    "properties": {
                        "slash": {"$ref": "#/$defs/a~1b"},
                        "tilde": {"$ref": "#/$defs/c~0d"},
                        "space": {"$ref": "#/$defs/e%20f%25"}
                    }
                }),
                args: json!({"slash": "s1", "tilde": "s2", "space": "s3"}),
                masked: json!({"slash": MASK, "tilde": MASK, "space": MASK}),
                secrets: &["s1", "s2", "s3"],
            },
            Case {
                name: "a pointer into an array of schemas",
                schema: json!({
                    "anyOf": [{"type": "object"}, {"properties": {"k": secret}}],
                    "properties": {"nested": {"$ref": "#/anyOf/1"}}
                }),
                args: json!({"nested": {"k": "kk"}, "k": "top"}),
                masked: json!({"nested": {"k": MASK}, "k": MASK}),
                secrets: &["kk", "top"],
            },
            Case {
                name: "$anchor, $dynamicAnchor and draft 7's #name $id",
                schema: json!({
                    "$defs": {
                        "a": {"$anchor": "tok", "writeOnly": true},
                        "b": {"$dynamicAnchor": "dyn", "writeOnly": true},
                        "c": {"$id": "#legacy", "writeOnly": true}
                    },
                    "properties": {
                        "a": {"$ref": "#tok"},
                        "b": {"$dynamicRef": "#dyn"},
                        "c": {"$ref": "#legacy"}
                    }
                }),
                args: json!({"a": "aa", "b": "bb", "c": "cc"}),
                masked: json!({"a": MASK, "b": MASK, "c": MASK}),
                secrets: &["aa", "bb", "cc"],
            },
            Case {
                name: "the document's $id, and # inside an embedded resource",
                schema: json!({
                    "$id": "https://example.com/root.json",
                    "$defs": {
                        "secret": secret,
                        "inner": {
                            "$id": "https://example.com/inner.json",
                            "$defs": {"secret": {"type": "string"}},
                            "properties": {"k": {"$ref": "#/$defs/secret"}}
                        }
                    },
                    "properties": {
                        "a": {"$ref": "https://example.com/root.json#/$defs/secret"},
                        "inner": {"$ref": "https://example.com/inner.json"}
                    }
                }),
                // `inner`'s `#/$defs/secret` is its own, which is not secret.
                args: json!({"a": "aa", "inner": {"k": "not secret"}}),
                masked: json!({"a": MASK, "inner": {"k": "not secret"}}),
                secrets: &["aa"],
            },
            Case {
                name: "definitions unreferenced are not applied",
                schema: json!({"$defs": {"token": secret}, "properties": {"token": {"type": "string"}}}),
                args: json!({"token": "visible"}),
                masked: json!({"token": "visible"}),
                secrets: &[],
            },
            Case {
                name: "a reference that cannot be resolved here makes its value secret",
                schema: json!({"properties": {"a": {"$ref": "other.json#/x"}, "b": {"type": "string"}}}),
                args: json!({"a": {"x": "ax"}, "b": "bb"}),
                masked: json!({"a": MASK, "b": "bb"}),
                secrets: &["ax"],
            },
            Case {
                name: "a reference to a meta-schema is not followed",
                schema: json!({"properties": {"s": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}}),
                args: json!({"s": {"type": "string"}}),
                masked: json!({"s": {"type": "string"}}),
                secrets: &[],
            },
        ]);
    }

    #[test]
    fn recursive_schemas_terminate() {
        let tree = json!({
            "$defs": {"node": {
                "properties": {
                    "token": {"writeOnly": true},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                }
            }},
            "$ref": "#/$defs/node"
        });
        check(vec![
            Case {
                name: "a tree",
                schema: tree.clone(),
                args: json!({"token": "t0", "children": [
                    {"token": "t1", "children": []},
                    {"children": [{"token": "t2"}]}
                ]}),
                masked: json!({"token": MASK, "children": [
                    {"token": MASK, "children": []},
                    {"children": [{"token": MASK}]}
                ]}),
                secrets: &["t0", "t1", "t2"],
            },
            Case {
                name: "a schema that refers to itself in place",
                schema: json!({"$ref": "#", "allOf": [{"$ref": "#"}], "properties": {"p": {"format": "password"}}}),
                args: json!({"p": "pp"}),
                masked: json!({"p": MASK}),
                secrets: &["pp"],
            },
            Case {
                name: "two definitions that refer to each other in place",
                schema: json!({
                    "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                    "properties": {"x": {"$ref": "#/$defs/a"}}
                }),
                args: json!({"x": "free"}),
                masked: json!({"x": "free"}),
                secrets: &[],
            },
            Case {
                name: "2019-09's $recursiveRef",
                schema: json!({
                    "$recursiveAnchor": true,
                    "properties": {"pin": {"writeOnly": true}, "next": {"$recursiveRef": "#"}}
                }),
                args: json!({"pin": 1, "next": {"pin": 2, "next": {}}}),
                masked: json!({"pin": MASK, "next": {"pin": MASK, "next": {}}}),
                secrets: &["1", "2"],
            },
        ]);
    }

    #[test]
    fn a_walk_too_deep_masks_what_lies_below() {
        let schema = json!({"properties": {"next": {"$ref": "#"}, "pin": {"writeOnly": true}}});
        // Built, not parsed: deeper than serde_json's parser would allow.
        let mut args = json!({"pin": "deepest"});
        for _ in 0..2 * MAX_DEPTH {
            args = json!({"next": args, "note": "n"});
        }
        let masked = mask(&schema, &args);
        let mut at = &masked;
        let mut depth = 0;
        while let Some(next) = at.get("next") {
            assert_eq!(at["note"], "n", "at depth {depth}");
            at = next;
            depth += 1;
        }
        assert_eq!(*at, json!(MASK), "the rest is masked whole");
        assert!(depth > MAX_DEPTH / 2 && depth <= MAX_DEPTH, "{depth}");
        let secrets = secrets(&schema, &args);
        assert!(secrets.contains(&"deepest".to_owned()), "{secrets:?}");
    }

    #[test]
    fn objects_follow_additional_and_pattern_properties() {
        check(vec![
            Case {
                name: "additionalProperties applies to keys `properties` does not name",
                schema: json!({
                    "properties": {"name": {"type": "string"}},
                    "additionalProperties": {"type": "string", "writeOnly": true}
                }),
                args: json!({"name": "ada", "API_KEY": "k1", "DB_PASS": "k2"}),
                masked: json!({"name": "ada", "API_KEY": MASK, "DB_PASS": MASK}),
                secrets: &["k1", "k2"],
            },
            Case {
                name: "patternProperties by regular expression, additionalProperties for the rest",
                schema: json!({
                    "patternProperties": {"_TOKEN$": {"writeOnly": true}, "^x-": {"type": "string"}},
                    "additionalProperties": {"format": "password"}
                }),
                args: json!({"GH_TOKEN": "gh", "x-note": "visible", "TOKEN_NAME": "tn", "other": "o"}),
                masked: json!({"GH_TOKEN": MASK, "x-note": "visible", "TOKEN_NAME": MASK, "other": MASK}),
                secrets: &["gh", "o", "tn"],
            },
            Case {
                name: "a boolean additionalProperties marks nothing",
                schema: json!({"properties": {"a": {"writeOnly": true}}, "additionalProperties": true}),
                args: json!({"a": "aa", "b": "bb"}),
                masked: json!({"a": MASK, "b": "bb"}),
                secrets: &["aa"],
            },
        ]);
    }

    #[test]
    fn arrays_follow_tuples_and_the_items_after_them() {
        let secret = json!({"writeOnly": true});
        check(vec![
            Case {
                name: "prefixItems, then items for the rest (2020-12)",
                schema: json!({"properties": {"t": {
                    "prefixItems": [{"type": "string"}, secret],
                    "items": {"format": "password"}
                }}}),
                args: json!({"t": ["user", "pw", "r1", "r2"]}),
                masked: json!({"t": ["user", MASK, MASK, MASK]}),
                secrets: &["pw", "r1", "r2"],
            },
            Case {
                name: "prefixItems without items leaves the rest alone",
                schema: json!({"properties": {"t": {"prefixItems": [secret]}}}),
                args: json!({"t": ["s", "rest"]}),
                masked: json!({"t": [MASK, "rest"]}),
                secrets: &["s"],
            },
            Case {
                name: "items as an array (draft 7), then additionalItems",
                schema: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "properties": {"t": {"items": [{"type": "string"}, secret], "additionalItems": secret}}
                }),
                args: json!({"t": ["user", "pw", "more"]}),
                masked: json!({"t": ["user", MASK, MASK]}),
                secrets: &["more", "pw"],
            },
            Case {
                name: "items as an array without additionalItems",
                schema: json!({"properties": {"t": {"items": [secret]}}}),
                args: json!({"t": ["s", "rest"]}),
                masked: json!({"t": [MASK, "rest"]}),
                secrets: &["s"],
            },
            Case {
                name: "contains applies to every item",
                schema: json!({"properties": {"t": {"contains": secret}}}),
                args: json!({"t": ["a", "b"]}),
                masked: json!({"t": [MASK, MASK]}),
                secrets: &["a", "b"],
            },
        ]);
    }

    #[test]
    fn conditionals_and_dependent_schemas_apply_in_place() {
        let secret = json!({"writeOnly": true});
        check(vec![
            Case {
                name: "if/then/else: every branch",
                schema: json!({
                    "if": {"properties": {"kind": {"const": "a"}}},
                    "then": {"properties": {"key": secret}},
                    "else": {"properties": {"pin": secret}}
                }),
                args: json!({"kind": "a", "key": "kk", "pin": "pp"}),
                masked: json!({"kind": "a", "key": MASK, "pin": MASK}),
                secrets: &["kk", "pp"],
            },
            Case {
                name: "dependentSchemas for the keys present",
                schema: json!({"dependentSchemas": {
                    "user": {"properties": {"password": secret}},
                    "absent": {"properties": {"note": secret}}
                }}),
                args: json!({"user": "ada", "password": "pw", "note": "visible"}),
                masked: json!({"user": "ada", "password": MASK, "note": "visible"}),
                secrets: &["pw"],
            },
            Case {
                name: "draft 7's dependencies, schema and array forms",
                schema: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "dependencies": {"user": {"properties": {"password": secret}}, "a": ["b"]}
                }),
                args: json!({"user": "ada", "password": "pw", "a": 1, "b": 2}),
                masked: json!({"user": "ada", "password": MASK, "a": 1, "b": 2}),
                secrets: &["pw"],
            },
        ]);
    }

    #[test]
    fn secret_values_of_every_type() {
        let secret = json!({"writeOnly": true});
        let names = [
            "pin", "ratio", "creds", "keys", "a", "b", "flag", "none", "empty",
        ];
        let schema = json!({"properties": Value::Object(
            names.iter().map(|n| (n.to_string(), secret.clone())).collect()
        )});
        check(vec![
            Case {
                name: "a number, as its JSON text",
                schema: schema.clone(),
                args: json!({"pin": 1234, "ratio": 0.5}),
                masked: json!({"pin": MASK, "ratio": MASK}),
                secrets: &["0.5", "1234"],
            },
            Case {
                name: "an object, masked whole; its scalar leaves hidden",
                schema: schema.clone(),
                args: json!({"creds": {"user": "ada", "key": "k", "port": 5432, "tls": true, "x": null}}),
                masked: json!({"creds": MASK}),
                secrets: &["5432", "ada", "k"],
            },
            Case {
                name: "an array, masked whole; its leaves hidden, nested too",
                schema: schema.clone(),
                args: json!({"keys": ["k1", ["k2", 3]]}),
                masked: json!({"keys": MASK}),
                secrets: &["3", "k1", "k2"],
            },
            Case {
                name: "short strings: one and two characters",
                schema: schema.clone(),
                args: json!({"a": "x", "b": "42"}),
                masked: json!({"a": MASK, "b": MASK}),
                secrets: &["42", "x"],
            },
            Case {
                name: "booleans, null and the empty string: masked, never listed",
                schema: schema.clone(),
                args: json!({"flag": true, "none": null, "empty": ""}),
                masked: json!({"flag": MASK, "none": MASK, "empty": MASK}),
                secrets: &[],
            },
            Case {
                name: "the whole arguments",
                schema: json!({"writeOnly": true}),
                args: json!({"a": "aa"}),
                masked: json!(MASK),
                secrets: &["aa"],
            },
        ]);
    }

    #[test]
    fn found_names_each_secret_by_its_json_pointer() {
        let schema = json!({
            "properties": {"a/b": {"writeOnly": true}, "list": {"items": {"properties": {"t~k": {"format": "password"}}}}}
        });
        let args = json!({"a/b": "q\"uote", "list": [{"t~k": 7}, {"x": 1}]});
        let found = found(&schema, &args);
        let mut pointers = found.pointers.clone();
        pointers.sort();
        assert_eq!(pointers, ["/a~1b", "/list/0/t~0k"]);
        assert_eq!(found.masked, mask(&schema, &args));
        // As written and as it reads in JSON text.
        assert_eq!(found.values, [r#"q\"uote"#, "q\"uote", "7"]);
    }

    #[test]
    fn secrets_are_listed_once_longest_first() {
        let secret = json!({"writeOnly": true});
        let schema = json!({"properties": {"a": secret, "b": secret, "c": secret, "d": secret}});
        let args = json!({"a": "ab", "b": "abc", "c": "ab", "d": "zz"});
        assert_eq!(secrets(&schema, &args), ["abc", "ab", "zz"]);
    }

    #[test]
    fn hides_secrets_in_a_log_line() {
        let hide = |text: &str, secrets: &[&str]| {
            let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
            String::from_utf8(hide_secrets(text.as_bytes(), &secrets).into_owned()).unwrap()
        };
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "login ada pw=hunter2",
                &["hunter2"],
                "login ada pw=********",
            ),
            ("pin 42, again 42", &["42"], "pin ********, again ********"),
            ("x=7", &["7"], "x=********"),
            // One inside another, in either order: no tail of the longer leaks.
            ("key abc!", &["ab", "abc"], "key ********!"),
            ("key abc!", &["abc", "ab"], "key ********!"),
            // Overlapping occurrences become one mask.
            ("abcd", &["abc", "bcd"], "********"),
            ("nothing here", &["secret", ""], "nothing here"),
            ("tok tok", &["tok"], "******** ********"),
        ];
        for (text, secrets, expected) in cases {
            assert_eq!(
                hide(text, secrets),
                *expected,
                "{text:?} hiding {secrets:?}"
            );
        }
        assert!(matches!(
            hide_secrets(b"clean", &["x".into()]),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_sink_hides_what_secrets_lists() {
        use std::sync::Mutex;

        use crate::log::Stream;
        use crate::task::TaskName;

        #[derive(Default)]
        struct Keep(Mutex<Vec<String>>);
        impl LogSink for Keep {
            fn line(&self, line: LogLine<'_>) {
                let text = String::from_utf8_lossy(line.text).into_owned();
                self.0.lock().unwrap().push(text);
            }
        }
        let schema =
            json!({"properties": {"pin": {"writeOnly": true}, "user": {"type": "string"}}});
        let args = json!({"pin": 4711, "user": "ada"});
        let keep = Keep::default();
        let sink = HideSecrets {
            inner: &keep,
            secrets: secrets(&schema, &args),
        };
        let task = TaskName::new("t").unwrap();
        sink.line(LogLine {
            task: &task,
            run_id: "r",
            stream: Stream::Stdout,
            text: b"ada entered 4711",
            truncated: false,
        });
        assert_eq!(*keep.0.lock().unwrap(), ["ada entered ********"]);
    }
}
