//! YAML file backend: the original Go tool's `tasks.yaml`, kept compatible both ways.
//!
//! The file is a top-level map of task name → `{name, location, schema}`, where
//! `schema` is the task's inputs JSON Schema; this is exactly what the Go tool
//! (yaml.v2) writes, and such files load unchanged. We add `description`,
//! `outputs` and `timeout` only when a task has them, and keep any other field
//! we do not know about, so a newer tool's file survives a rewrite by this one.
//! Everything we write is read back identically by Go's yaml.v2, which is a
//! YAML 1.1 parser: strings such as `on`, `y`, `no`, `~` or `0755` are quoted
//! (serde-saphyr does this while its `yaml_12` option is off, the default,
//! which we pin), and map keys are written sorted, as Go does.
//!
//! Reads take no lock: writers replace the file by an atomic rename, so a
//! reader sees the old or the new file, never a mix. Writers serialize on an
//! exclusive lock of the sidecar `<path>.lock`, re-read the file under it,
//! write a temporary file in the same directory, fsync it, rename it over the
//! store and fsync the directory. A file that does not parse, or that holds
//! an invalid record, is reported and never rewritten. A store this backend
//! creates is 0600 (its lock file too), in directories it creates 0700; a
//! rewrite keeps the file's mode.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::{InsertMode, Registry, StoreError};
use crate::task::{Formats, Policy, Task, TaskName};

/// A YAML file in the original tool's format.
#[derive(Debug, Clone)]
pub struct YamlStore {
    path: PathBuf,
}

/// One stored record: the task, plus any fields this build does not know.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    task: Task,
    extra: Map<String, Value>,
}

/// The whole file, keyed (and so sorted) by task name.
type Doc = BTreeMap<TaskName, Record>;

/// Fields of a record this build understands; everything else goes to `extra`.
const KNOWN_FIELDS: [&str; 12] = [
    "name",
    "location",
    "schema",
    "description",
    "outputs",
    "timeout",
    "formats",
    "retries",
    "backoff",
    "retry_on_status",
    "concurrency",
    "priority",
];

impl YamlStore {
    /// Opens the store at `path`. Nothing is read or created until first use.
    pub fn open(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a copy of this handle on the blocking pool: file locks and
    /// fsyncs must not hold up an async runtime's thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(YamlStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || f(store)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Internal {
                path,
                message: format!("the store's thread was cancelled: {e}"),
            }),
        }
    }

    /// Every task, sorted by name.
    fn list_now(&self) -> Result<Vec<Task>, StoreError> {
        Ok(self.load()?.into_values().map(|r| r.task).collect())
    }

    /// The task called `name`.
    fn get_now(&self, name: &TaskName) -> Result<Option<Task>, StoreError> {
        Ok(self.load()?.remove(name).map(|r| r.task))
    }

    /// Stores `task`; with [`InsertMode::CreateNew`] a taken name is [`StoreError::Duplicate`].
    fn insert_now(&self, task: &Task, mode: InsertMode) -> Result<(), StoreError> {
        self.modify(|doc| {
            if mode == InsertMode::CreateNew && doc.contains_key(&task.name) {
                return Err(StoreError::Duplicate {
                    name: task.name.clone(),
                });
            }
            doc.insert(
                task.name.clone(),
                Record {
                    task: task.clone(),
                    extra: Map::new(),
                },
            );
            Ok(((), true))
        })
    }

    /// Removes and returns the task called `name`; [`StoreError::NotFound`] if absent.
    fn remove_now(&self, name: &TaskName) -> Result<Task, StoreError> {
        if !exists(&self.path)? {
            return Err(StoreError::NotFound { name: name.clone() });
        }
        self.modify(|doc| match doc.remove(name) {
            Some(record) => Ok((record.task, true)),
            None => Err(StoreError::NotFound { name: name.clone() }),
        })
    }

    /// Reads and checks the whole file; a missing file is an empty store.
    fn load(&self) -> Result<Doc, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => parse_doc(&self.path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Doc::new()),
            Err(source) => Err(io_err("read", &self.path, source)),
        }
    }

    /// Runs `change` on the current contents under the write lock and, if it
    /// reports a change, replaces the file atomically. `change` returning an
    /// error leaves the file untouched.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Doc) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let dir = parent_dir(&self.path);
        super::create_private_dir(&dir).map_err(|e| io_err("create directory", &dir, e))?;

        let lock_path = lock_path(&self.path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::FILE_MODE)
            .open(&lock_path)
            .map_err(|e| io_err("open lock file", &lock_path, e))?;
        fs4::FileExt::lock(&lock).map_err(|e| io_err("lock", &lock_path, e))?;

        // Write through a symlinked store instead of replacing the link.
        let target = match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => {
                fs::canonicalize(&self.path).map_err(|e| io_err("resolve", &self.path, e))?
            }
            _ => self.path.clone(),
        };

        let (old_perms, bytes) = match fs::read(&target) {
            Ok(bytes) => {
                let meta = fs::metadata(&target).map_err(|e| io_err("stat", &target, e))?;
                (Some(meta.permissions()), Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
            Err(e) => return Err(io_err("read", &target, e)),
        };
        let mut doc = match &bytes {
            Some(bytes) => parse_doc(&self.path, bytes)?,
            None => Doc::new(),
        };

        let (out, changed) = change(&mut doc)?;
        if !changed {
            return Ok(out);
        }

        let text = render_doc(&self.path, &doc)?;
        // Never replace a readable store with one we could not read back.
        let reread = parse_doc(&self.path, text.as_bytes())?;
        if reread != doc {
            return Err(io_err(
                "write",
                &self.path,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "internal error: the serialized store does not read back identically; nothing was written",
                ),
            ));
        }
        write_atomically(&target, text.as_bytes(), old_perms)?;
        drop(lock);
        Ok(out)
    }
}

impl Registry for YamlStore {
    async fn list(&self) -> Result<Vec<Task>, StoreError> {
        self.blocking(|s| s.list_now()).await
    }

    async fn get(&self, name: &TaskName) -> Result<Option<Task>, StoreError> {
        let name = name.clone();
        self.blocking(move |s| s.get_now(&name)).await
    }

    async fn insert(&self, task: &Task, mode: InsertMode) -> Result<(), StoreError> {
        let task = task.clone();
        self.blocking(move |s| s.insert_now(&task, mode)).await
    }

    async fn remove(&self, name: &TaskName) -> Result<Task, StoreError> {
        let name = name.clone();
        self.blocking(move |s| s.remove_now(&name)).await
    }
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path, e)),
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `<path>.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".lock");
    PathBuf::from(s)
}

/// Writes `bytes` to a fresh file beside `target`, syncs it and renames it over
/// `target`, then syncs the directory: a crash leaves the old or new file.
fn write_atomically(
    target: &Path,
    bytes: &[u8],
    old_perms: Option<fs::Permissions>,
) -> Result<(), StoreError> {
    let dir = parent_dir(target);
    let prefix = match target.file_name() {
        Some(n) => {
            let mut p = OsString::from(".");
            p.push(n);
            p.push(".");
            p
        }
        None => OsString::from(".tasks."),
    };
    let mut builder = tempfile::Builder::new();
    // A new store gets FILE_MODE; a rewritten one keeps its mode (set below,
    // once the content is written).
    builder
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(super::FILE_MODE));
    let mut tmp = builder
        .tempfile_in(&dir)
        .map_err(|e| io_err("create temporary file in", &dir, e))?;
    if let Some(perms) = old_perms {
        fs::set_permissions(tmp.path(), perms)
            .map_err(|e| io_err("set permissions of", tmp.path(), e))?;
    }
    tmp.write_all(bytes)
        .map_err(|e| io_err("write", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| io_err("sync", tmp.path(), e))?;
    tmp.persist(target)
        .map_err(|e| io_err("replace", target, e.error))?;
    #[cfg(unix)]
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync directory", &dir, e))?;
    Ok(())
}

/// Parses and checks a whole store file.
fn parse_doc(path: &Path, bytes: &[u8]) -> Result<Doc, StoreError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        StoreError::Parse {
            path: path.to_owned(),
            line: Some(line),
            column: None,
            message: "the file is not valid UTF-8".into(),
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(Doc::new());
    }
    let raw: Option<BTreeMap<String, Value>> =
        serde_saphyr::from_str(text).map_err(|e| parse_error(path, &e))?;
    let mut doc = Doc::new();
    for (key, value) in raw.unwrap_or_default() {
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.to_owned(),
            what: "task",
            key: key.clone(),
            message,
        };
        let name = TaskName::new(key.as_str()).map_err(|e| corrupt(e.to_string()))?;
        let record = record_from_value(name.clone(), value).map_err(corrupt)?;
        doc.insert(name, record);
    }
    Ok(doc)
}

/// Turns a serde-saphyr error into [`StoreError::Parse`] with 1-based line/column.
fn parse_error(path: &Path, e: &serde_saphyr::Error) -> StoreError {
    let location = e.location().filter(|l| l.line() > 0);
    let line = location.and_then(|l| usize::try_from(l.line()).ok());
    let column = location
        .filter(|l| l.column() > 0)
        .and_then(|l| usize::try_from(l.column()).ok());
    let options = serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    };
    let mut message = e.render_with_options(options);
    // The plain rendering ends with its own location; ours goes in StoreError.
    if let Some(l) = location {
        for suffix in [
            format!(" at line {}, column {}", l.line(), l.column()),
            format!(" at line {} column {}", l.line(), l.column()),
        ] {
            if let Some(s) = message.strip_suffix(&suffix) {
                message = s.to_owned();
                break;
            }
        }
    }
    StoreError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// Checks one record; the error is a message for [`StoreError::Corrupt`].
fn record_from_value(name: TaskName, value: Value) -> Result<Record, String> {
    let Value::Object(mut fields) = value else {
        return Err(format!(
            "expected a mapping with name, location and schema, found {}",
            kind(&value)
        ));
    };
    match fields.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == name.as_str() => {}
        Some(Value::String(s)) => {
            return Err(format!(
                "its name field is `{s}`, which differs from its key; make them equal"
            ));
        }
        Some(other) => return Err(format!("name must be a string, found {}", kind(other))),
    }
    let location = match fields.remove("location") {
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        Some(Value::String(_)) => return Err("location is empty".into()),
        None | Some(Value::Null) => return Err("location is missing".into()),
        Some(other) => {
            return Err(format!("location must be a string, found {}", kind(&other)));
        }
    };
    let inputs = match fields.remove("schema") {
        Some(v @ (Value::Object(_) | Value::Bool(_))) => v,
        None | Some(Value::Null) => return Err("schema (the inputs JSON Schema) is missing".into()),
        Some(other) => {
            return Err(format!(
                "schema must be a mapping (a JSON Schema), found {}",
                kind(&other)
            ));
        }
    };
    let description = match fields.remove("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(format!(
                "description must be a string, found {}",
                kind(&other)
            ));
        }
    };
    let outputs = match fields.remove("outputs") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::Object(_) | Value::Bool(_))) => Some(v),
        Some(other) => {
            return Err(format!(
                "outputs must be a mapping (a JSON Schema), found {}",
                kind(&other)
            ));
        }
    };
    let timeout = match fields.remove("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            humantime::parse_duration(&s)
                .map_err(|e| format!("timeout `{s}` is not a duration like \"30s\": {e}"))?,
        ),
        Some(other) => {
            return Err(format!(
                "timeout must be a duration string like \"30s\", found {}",
                kind(&other)
            ));
        }
    };
    let formats = match fields.remove("formats") {
        None | Some(Value::Null) => Formats::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            format!(
                "formats must be \"assert\" or \"annotate\", found {}",
                show(&v)
            )
        })?,
    };
    let policy = Policy {
        retries: take_uint(&mut fields, "retries")?,
        backoff: take_duration(&mut fields, "backoff")?,
        retry_on_status: match fields.remove("retry_on_status") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(format!(
                    "retry_on_status must be true or false, found {}",
                    kind(&other)
                ));
            }
        },
        concurrency: take_uint(&mut fields, "concurrency")?,
        priority: match fields.remove("priority") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(other) => {
                return Err(format!(
                    "priority must be an integer, found {}",
                    show(&other)
                ));
            }
        },
    };
    fields.remove("name");
    Ok(Record {
        task: Task {
            name,
            location,
            description,
            inputs,
            outputs,
            timeout,
            policy,
            formats,
        },
        extra: fields,
    })
}

/// A value as it appears in a message: `"x"` for strings, the JSON otherwise.
fn show(v: &Value) -> String {
    v.to_string()
}

fn take_uint(fields: &mut Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{key} must be a whole number ≥ 0, found {n}")),
        Some(other) => Err(format!(
            "{key} must be a whole number, found {}",
            kind(&other)
        )),
    }
}

fn take_duration(fields: &mut Map<String, Value>, key: &str) -> Result<Option<Duration>, String> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => humantime::parse_duration(&s)
            .map(Some)
            .map_err(|e| format!("{key} `{s}` is not a duration like \"30s\": {e}")),
        Some(other) => Err(format!(
            "{key} must be a duration string like \"30s\", found {}",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Serializes the whole store.
fn render_doc(path: &Path, doc: &Doc) -> Result<String, StoreError> {
    let rows = doc
        .iter()
        .map(|(name, r)| Row::new(path, name, r))
        .collect::<Result<Vec<_>, _>>()?;
    // `yaml_12: false` (the default, pinned here) quotes YAML 1.1 words such as
    // `on`/`y`/`no`, which Go's yaml.v2 would otherwise read as booleans.
    let options = serde_saphyr::ser_options! { yaml_12: false };
    serde_saphyr::to_string_with_options(&DocSer(&rows), options).map_err(|e| {
        io_err(
            "serialize",
            path,
            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        )
    })
}

/// The YAML row of one task: Go's `name`, `location`, `schema` first, in its
/// field order, then our optional fields, then unknown ones, sorted.
struct Row<'a> {
    name: &'a str,
    location: &'a str,
    schema: &'a Value,
    description: Option<&'a str>,
    outputs: Option<&'a Value>,
    timeout: Option<String>,
    formats: Formats,
    policy: &'a Policy,
    extra: &'a Map<String, Value>,
}

impl<'a> Row<'a> {
    fn new(path: &Path, name: &'a TaskName, r: &'a Record) -> Result<Self, StoreError> {
        let location = r.task.location.to_str().ok_or_else(|| {
            io_err(
                "write",
                path,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the location of task `{name}` ({}) is not valid UTF-8, which YAML cannot hold",
                        r.task.location.display()
                    ),
                ),
            )
        })?;
        Ok(Self {
            name: name.as_str(),
            location,
            schema: &r.task.inputs,
            description: r.task.description.as_deref(),
            outputs: r.task.outputs.as_ref(),
            timeout: r.task.timeout.map(format_duration),
            formats: r.task.formats,
            policy: &r.task.policy,
            extra: &r.extra,
        })
    }
}

fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

struct DocSer<'a>(&'a [Row<'a>]);

impl Serialize for DocSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for row in self.0 {
            map.serialize_entry(row.name, row)?;
        }
        map.end()
    }
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("name", self.name)?;
        map.serialize_entry("location", self.location)?;
        map.serialize_entry("schema", &Sorted(self.schema))?;
        if let Some(d) = self.description {
            map.serialize_entry("description", d)?;
        }
        if let Some(o) = self.outputs {
            map.serialize_entry("outputs", &Sorted(o))?;
        }
        if let Some(t) = &self.timeout {
            map.serialize_entry("timeout", t)?;
        }
        if !self.formats.is_default() {
            map.serialize_entry("formats", &self.formats)?;
        }
        let p = self.policy;
        if let Some(n) = p.retries {
            map.serialize_entry("retries", &n)?;
        }
        if let Some(d) = p.backoff {
            map.serialize_entry("backoff", &format_duration(d))?;
        }
        if p.retry_on_status {
            map.serialize_entry("retry_on_status", &true)?;
        }
        if let Some(n) = p.concurrency {
            map.serialize_entry("concurrency", &n)?;
        }
        if let Some(n) = p.priority {
            map.serialize_entry("priority", &n)?;
        }
        let mut extra: Vec<_> = self
            .extra
            .iter()
            .filter(|(k, _)| !KNOWN_FIELDS.contains(&k.as_str()))
            .collect();
        extra.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in extra {
            map.serialize_entry(k, &Sorted(v))?;
        }
        map.end()
    }
}

/// A JSON value serialized with object keys sorted, whatever `serde_json`'s
/// map order is (it preserves insertion order if `preserve_order` is enabled
/// anywhere in the build).
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, &Sorted(v))?;
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/original_tasks.yaml");

    use crate::store::test_support::{name, task};

    /// Sub-second precision where the backend keeps it.
    fn full_task(n: &str) -> Task {
        crate::store::test_support::full_task(n, Duration::from_secs(90))
    }

    fn store_in(dir: &tempfile::TempDir) -> (YamlStore, PathBuf) {
        let path = dir.path().join("tasks.yaml");
        (YamlStore::open(&path), path)
    }

    #[test]
    fn round_trip_insert_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let full = full_task("greet");
        let plain = task("alpha");
        store.insert_now(&full, InsertMode::CreateNew).unwrap();
        store.insert_now(&plain, InsertMode::CreateNew).unwrap();

        // A second handle sees what the first wrote.
        let other = YamlStore::open(&path);
        assert_eq!(other.get_now(&name("greet")).unwrap(), Some(full.clone()));
        assert_eq!(other.get_now(&name("nope")).unwrap(), None);
        assert_eq!(other.list_now().unwrap(), vec![plain.clone(), full.clone()]);

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("timeout: 1m 30s"), "{text}");
        assert!(text.contains("description: Greets someone"), "{text}");

        assert_eq!(store.remove_now(&name("greet")).unwrap(), full);
        assert_eq!(store.list_now().unwrap(), vec![plain]);
    }

    #[test]
    fn create_new_refuses_a_taken_name_and_replace_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        store.insert_now(&task("t"), InsertMode::CreateNew).unwrap();
        let before = fs::read(&path).unwrap();

        let changed = full_task("t");
        let err = store
            .insert_now(&changed, InsertMode::CreateNew)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Duplicate { name: n } if n.as_str() == "t"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(store.get_now(&name("t")).unwrap(), Some(task("t")));

        store.insert_now(&changed, InsertMode::Replace).unwrap();
        assert_eq!(store.list_now().unwrap(), vec![changed]);
    }

    #[test]
    fn removing_a_missing_task_is_not_found_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);

        let err = store.remove_now(&name("ghost")).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert!(!path.exists(), "remove on a missing store created it");

        store.insert_now(&task("a"), InsertMode::CreateNew).unwrap();
        let before = fs::read(&path).unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let err = store.remove_now(&name("ghost")).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { name: n } if n.as_str() == "ghost"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    }

    #[test]
    fn missing_empty_and_null_files_are_empty_stores() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        assert_eq!(store.list_now().unwrap(), vec![]);
        assert_eq!(store.get_now(&name("a")).unwrap(), None);
        assert!(!path.exists(), "reading created the store");
        assert!(!lock_path(&path).exists(), "reading created the lock file");

        for text in [
            "",
            "   \n\n",
            "~\n",
            "null\n",
            "# only a comment\n",
            "---\n",
            "{}\n",
        ] {
            fs::write(&path, text).unwrap();
            assert_eq!(store.list_now().unwrap(), vec![], "{text:?}");
            store.insert_now(&task("a"), InsertMode::CreateNew).unwrap();
            assert_eq!(store.list_now().unwrap(), vec![task("a")], "{text:?}");
        }
    }

    #[test]
    fn loads_a_file_written_by_the_original_tool() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        fs::write(&path, FIXTURE).unwrap();
        let tasks = store.list_now().unwrap();
        assert_eq!(tasks.len(), 2);

        let bash = &tasks[0];
        assert_eq!(bash.name.as_str(), "bashTestTask");
        assert_eq!(
            bash.location,
            Path::new("/home/tester/task_executor_sample.go/examples/bash.sh")
        );
        assert_eq!(
            bash.inputs,
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "additionalProperties": false,
                "properties": {
                    "count": {"minimum": 1, "type": "integer"},
                    "message": {"type": "string"}
                },
                "required": ["message"],
                "type": "object"
            })
        );
        assert_eq!(bash.description, None);
        assert_eq!(bash.outputs, None);
        assert_eq!(bash.timeout, None);

        let python = &tasks[1];
        assert_eq!(python.name.as_str(), "pythonTestTask");
        assert_eq!(
            python.location,
            Path::new("/home/tester/task_executor_sample.go/examples/python.py")
        );
        assert_eq!(
            python.inputs,
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "properties": {
                    "cmd": {"type": "string"},
                    "requestId": {"type": "string"},
                    "user": {"type": "string"}
                },
                "required": ["user", "cmd", "requestId"],
                "type": "object"
            })
        );
        assert_eq!(
            (&python.description, &python.outputs, python.timeout),
            (&None, &None, None)
        );
    }

    #[test]
    fn rewriting_an_original_file_keeps_its_tasks_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        fs::write(&path, FIXTURE).unwrap();
        let original = store.list_now().unwrap();

        store
            .insert_now(&full_task("newTask"), InsertMode::CreateNew)
            .unwrap();
        let after = store.list_now().unwrap();
        assert_eq!(after.len(), 3);
        assert_eq!(after[0], original[0]);
        assert_eq!(after[1], full_task("newTask"));
        assert_eq!(after[2], original[1]);

        // Our writer produces the very bytes yaml.v2 wrote for the Go records.
        store.remove_now(&name("newTask")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), FIXTURE);
    }

    #[test]
    fn go_boolean_and_number_words_are_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let mut tricky = Vec::new();
        for (i, word) in [
            "on", "y", "no", "off", "yes", "true", "null", "~", "0755", "1e3", "12:30",
        ]
        .into_iter()
        .enumerate()
        {
            let t = Task {
                description: Some(word.to_owned()),
                inputs: json!({
                    "type": "object",
                    "properties": {
                        "on": {"type": "string", "enum": ["y", "n", "off"]},
                        word: {"type": "string", "default": word}
                    }
                }),
                ..task(&format!("t{i}"))
            };
            store.insert_now(&t, InsertMode::CreateNew).unwrap();
            tricky.push(t);
        }
        tricky.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(store.list_now().unwrap(), tricky);

        let text = fs::read_to_string(&path).unwrap();
        for line in [
            r#"description: "on""#,
            r#"description: "y""#,
            r#"description: "no""#,
            r#"description: "off""#,
            r#"description: "yes""#,
            r#"description: "true""#,
            r#"description: "null""#,
            r#"description: "~""#,
            r#"description: "0755""#,
            r#"description: "1e3""#,
            r#"description: "12:30""#,
            r#"      "on":"#,
            r#"        - "y""#,
            r#"        - "n""#,
            r#"        - "off""#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        for bare in [
            "description: on\n",
            "\n      on:",
            "- y\n",
            "- off\n",
            "description: 0755\n",
        ] {
            assert!(!text.contains(bare), "unquoted {bare:?} in\n{text}");
        }
    }

    #[test]
    fn awkward_strings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _path) = store_in(&dir);
        let descriptions = [
            "a long description that is well over eighty characters so that the writer may fold it,  with  double  spaces ",
            "two\nlines\n",
            "  leading spaces\n\n\ttab and trailing newlines\n\n",
            "colon: inside # and hash",
            "- looks like a list",
            "'quoted' \"both\" \\ back",
            "ünïcödé ✓",
        ];
        for (i, d) in descriptions.iter().enumerate() {
            let t = Task {
                description: Some((*d).to_owned()),
                location: PathBuf::from(format!("/tmp/with space/#{i}: x.sh")),
                ..task(&format!("s{i}"))
            };
            store.insert_now(&t, InsertMode::CreateNew).unwrap();
            assert_eq!(store.get_now(&t.name).unwrap(), Some(t));
        }
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        fs::write(
            &path,
            "a:\n  name: a\n  location: /bin/a\n  schema: {type: object}\n  labels: {team: core}\n",
        )
        .unwrap();
        store.insert_now(&task("b"), InsertMode::CreateNew).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("  labels:\n    team: core\n"), "{text}");
        assert_eq!(
            store.get_now(&name("a")).unwrap().unwrap().location,
            Path::new("/bin/a")
        );
    }

    #[test]
    fn malformed_file_is_a_parse_error_with_a_line_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let bad = "a:\n  name: a\n  location: /bin/a\n  schema: {type: [object\nb: 1\n";
        fs::write(&path, bad).unwrap();

        let err = store.list_now().unwrap_err();
        let StoreError::Parse { line, path: p, .. } = &err else {
            panic!("expected Parse, got {err}");
        };
        assert!(line.is_some_and(|l| l >= 4), "{err}");
        assert_eq!(p, &path);
        assert!(err.to_string().contains("tasks.yaml"), "{err}");

        let err = store
            .insert_now(&task("c"), InsertMode::Replace)
            .unwrap_err();
        assert!(matches!(err, StoreError::Parse { .. }), "{err}");
        let err = store.remove_now(&name("a")).unwrap_err();
        assert!(matches!(err, StoreError::Parse { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), bad);

        for (text, want_line) in [
            ("- a\n- b\n", 1),
            ("a:\n  name: a\na:\n  name: a\n", 3),
            ("a: 1\n---\nb: 2\n", 3),
        ] {
            fs::write(&path, text).unwrap();
            match store.list_now() {
                Err(StoreError::Parse { line, .. }) => {
                    assert_eq!(line, Some(want_line), "{text:?}")
                }
                other => panic!("{text:?}: expected Parse, got {other:?}"),
            }
        }

        fs::write(&path, b"a: \xff\n").unwrap();
        assert!(matches!(
            store.list_now(),
            Err(StoreError::Parse { line: Some(1), .. })
        ));
    }

    #[test]
    fn invalid_records_are_corrupt_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let cases = [
            (
                "bad key",
                "bad key:\n  location: /x\n  schema: {}\n",
                "bad key",
            ),
            (
                "mismatch",
                "a:\n  name: b\n  location: /x\n  schema: {}\n",
                "differs",
            ),
            ("no location", "a:\n  name: a\n  schema: {}\n", "location"),
            ("no schema", "a:\n  name: a\n  location: /x\n", "schema"),
            (
                "list schema",
                "a:\n  location: /x\n  schema: [1]\n",
                "schema",
            ),
            ("scalar record", "a: hello\n", "mapping"),
            (
                "bad timeout",
                "a:\n  location: /x\n  schema: {}\n  timeout: soon\n",
                "timeout",
            ),
            (
                "number location",
                "a:\n  location: 5\n  schema: {}\n",
                "location",
            ),
        ];
        for (what, text, needle) in cases {
            fs::write(&path, text).unwrap();
            let err = store.list_now().unwrap_err();
            let StoreError::Corrupt { key, message, .. } = &err else {
                panic!("{what}: expected Corrupt, got {err}");
            };
            let want_key = if what == "bad key" { "bad key" } else { "a" };
            assert_eq!(key, want_key, "{what}");
            assert!(err.to_string().contains(needle), "{what}: {message}");
            let err = store
                .insert_now(&task("z"), InsertMode::CreateNew)
                .unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{what}: {err}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "{what}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn rewrite_keeps_permissions_and_creates_parent_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/tasks.yml");
        let store = YamlStore::open(&path);
        store.insert_now(&task("a"), InsertMode::CreateNew).unwrap();
        assert!(path.is_file());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        store.insert_now(&task("b"), InsertMode::CreateNew).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["tasks.yml", "tasks.yml.lock"]);
    }
}
