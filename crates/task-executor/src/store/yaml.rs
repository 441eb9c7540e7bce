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
//! store and fsync the directory. A file that does not parse is reported and
//! never rewritten. A store this backend creates is 0600 (its lock file too),
//! in directories it creates 0700; a rewrite keeps the file's mode.
//!
//! An entry this build cannot use — a name [`TaskName`] refuses (the Go tool
//! takes any name: `with space`, `ünï`), `schema: null` (what Go writes for a
//! task without `inputs`), a field it cannot read — does not make the file
//! unreadable: it is kept as an [`Unusable`] entry with the reason, listed,
//! refused by `get`, removable by its raw name, and written back unchanged
//! (the same fields and values) whenever the file is rewritten.
//!
//! Comments cannot be kept: serde-saphyr's `Commented<T>` carries a comment
//! on a typed scalar only, not on the JSON values and mappings a store holds.
//! A rewrite of a file with comments leaves a warning (see
//! [`YamlStore::take_warnings`]) naming the first comment's line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::{ImportReport, InsertMode, Listed, Registry, StoreError, Unusable, task_difference};
use crate::task::{Formats, Policy, Task, TaskName};

/// A YAML file in the original tool's format.
#[derive(Debug, Clone)]
pub struct YamlStore {
    path: PathBuf,
    /// What the last writes want the user to know (comments dropped); shared
    /// by clones, drained by [`YamlStore::take_warnings`].
    warnings: Arc<Mutex<Vec<String>>>,
}

/// One stored record: the task, plus any fields this build does not know.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    task: Task,
    extra: Map<String, Value>,
}

/// One entry of the file.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// A task this build can use (boxed: much larger than the other variant).
    Task(Box<Record>),
    /// An entry it cannot use, kept exactly as read.
    Unusable {
        /// The entry's value as the file holds it.
        raw: Value,
        /// Why it cannot be used, and how to fix that.
        reason: String,
    },
}

impl Entry {
    /// The [`Unusable`] view of an unusable entry called `key`.
    fn unusable(&self, key: &str) -> Option<Unusable> {
        match self {
            Entry::Unusable { raw, reason } => Some(unusable(key, raw, reason.clone())),
            Entry::Task(_) => None,
        }
    }
}

/// The [`Unusable`] entry `key` whose value is `raw`.
fn unusable(key: &str, raw: &Value, reason: String) -> Unusable {
    Unusable {
        name: key.to_owned(),
        location: raw
            .get("location")
            .and_then(Value::as_str)
            .map(PathBuf::from),
        reason,
    }
}

/// The whole file, keyed (and so sorted) by the entry's name as written.
type Doc = BTreeMap<String, Entry>;

/// Fields of a record this build understands; everything else goes to `extra`.
const KNOWN_FIELDS: [&str; 13] = [
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
    "tags",
];

impl YamlStore {
    /// Opens the store at `path`. Nothing is read or created until first use.
    pub fn open(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            warnings: Arc::default(),
        }
    }

    /// Takes what writes since the last call want the user to know, such as
    /// "comments are not kept when the file is rewritten (line 3)".
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
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

    /// Every usable task, sorted by name.
    fn list_now(&self) -> Result<Vec<Task>, StoreError> {
        Ok(self
            .load()?
            .into_values()
            .filter_map(|e| match e {
                Entry::Task(r) => Some(r.task),
                Entry::Unusable { .. } => None,
            })
            .collect())
    }

    /// Every entry, usable or not, sorted by name.
    fn entries_now(&self) -> Result<Vec<Listed>, StoreError> {
        Ok(self
            .load()?
            .into_iter()
            .map(|(key, e)| match e {
                Entry::Task(r) => Listed::Task(r.task),
                Entry::Unusable { raw, reason } => Listed::Unusable(unusable(&key, &raw, reason)),
            })
            .collect())
    }

    /// The task called `name`; [`StoreError::Unusable`] if the entry of that
    /// name cannot be used.
    fn get_now(&self, name: &TaskName) -> Result<Option<Task>, StoreError> {
        match self.load()?.remove(name.as_str()) {
            Some(Entry::Task(r)) => Ok(Some(r.task)),
            Some(e) => Err(unusable_err(&self.path, &e, name.as_str())),
            None => Ok(None),
        }
    }

    /// The unusable entry called `raw` (any name the file holds), if there is one.
    pub(super) fn unusable_now(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        Ok(self.load()?.get(raw).and_then(|e| e.unusable(raw)))
    }

    /// Removes the unusable entry called `raw`, if there is one; anything
    /// else, the file included, is left alone.
    pub(super) fn remove_unusable_now(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        if self.unusable_now(raw)?.is_none() {
            return Ok(None);
        }
        self.modify(|doc| match doc.get(raw).and_then(|e| e.unusable(raw)) {
            Some(u) => {
                doc.remove(raw);
                Ok((Some(u), true))
            }
            None => Ok((None, false)),
        })
    }

    /// Stores `task`; with [`InsertMode::CreateNew`] a taken name is [`StoreError::Duplicate`].
    fn insert_now(&self, task: &Task, mode: InsertMode) -> Result<(), StoreError> {
        self.modify(|doc| {
            if mode == InsertMode::CreateNew && doc.contains_key(task.name.as_str()) {
                return Err(StoreError::Duplicate {
                    name: task.name.clone(),
                });
            }
            doc.insert(
                task.name.to_string(),
                Entry::Task(Box::new(Record {
                    task: task.clone(),
                    extra: Map::new(),
                })),
            );
            Ok(((), true))
        })
    }

    /// Imports `tasks` under one lock, in one rewrite (none when every task
    /// is stored already): see [`Registry::import_tasks`]. A name the file
    /// holds as an unusable entry refuses the batch too.
    fn import_tasks_now(&self, tasks: &[Task]) -> Result<ImportReport, StoreError> {
        if tasks.is_empty() {
            return Ok(ImportReport::default());
        }
        self.modify(|doc| {
            let mut report = ImportReport::default();
            for task in tasks {
                match doc.get(task.name.as_str()) {
                    None => {
                        doc.insert(
                            task.name.to_string(),
                            Entry::Task(Box::new(Record {
                                task: task.clone(),
                                extra: Map::new(),
                            })),
                        );
                        report.inserted += 1;
                    }
                    Some(Entry::Task(stored)) => match task_difference(task, &stored.task) {
                        None => report.unchanged += 1,
                        Some(field) => {
                            return Err(StoreError::Conflict {
                                what: "task",
                                key: task.name.to_string(),
                                field,
                            });
                        }
                    },
                    Some(e) => return Err(unusable_err(&self.path, e, task.name.as_str())),
                }
            }
            Ok((report, report.inserted > 0))
        })
    }

    /// Removes and returns the task called `name`; [`StoreError::NotFound`] if absent.
    fn remove_now(&self, name: &TaskName) -> Result<Task, StoreError> {
        if !exists(&self.path)? {
            return Err(StoreError::NotFound { name: name.clone() });
        }
        self.modify(|doc| match doc.remove(name.as_str()) {
            Some(Entry::Task(record)) => Ok((record.task, true)),
            // Removed by its raw name (`remove_unusable_now`), not as a task;
            // an error writes nothing.
            Some(e) => Err(unusable_err(&self.path, &e, name.as_str())),
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
        if let Some(line) = bytes.as_deref().and_then(first_comment_line) {
            let name = self.path.file_name().unwrap_or(self.path.as_os_str());
            self.warnings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "{}: comments are not kept when the file is rewritten (line {line})",
                    Path::new(name).display()
                ));
        }
        Ok(out)
    }
}

impl YamlStore {
    /// Every entry, usable or not, sorted by name.
    pub async fn entries(&self) -> Result<Vec<Listed>, StoreError> {
        self.blocking(|s| s.entries_now()).await
    }

    /// The unusable entry called `raw` (any name the file holds), if there is one.
    pub async fn unusable(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        let raw = raw.to_owned();
        self.blocking(move |s| s.unusable_now(&raw)).await
    }

    /// Removes the unusable entry called `raw`, if there is one.
    pub async fn remove_unusable(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        let raw = raw.to_owned();
        self.blocking(move |s| s.remove_unusable_now(&raw)).await
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

    async fn import_tasks(&self, tasks: &[Task]) -> Result<ImportReport, StoreError> {
        let tasks = tasks.to_vec();
        self.blocking(move |s| s.import_tasks_now(&tasks)).await
    }
}

/// [`StoreError::Unusable`] for the entry `e` called `key`.
fn unusable_err(path: &Path, e: &Entry, key: &str) -> StoreError {
    let reason = match e {
        Entry::Unusable { reason, .. } => reason.clone(),
        Entry::Task(_) => String::new(),
    };
    StoreError::Unusable {
        path: path.to_owned(),
        name: key.to_owned(),
        reason,
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
    let mut doc = Doc::new();
    for (key, value) in parse_raw(path, bytes)? {
        let entry = match TaskName::new(key.as_str()) {
            Err(e) => Entry::Unusable {
                raw: value,
                reason: format!(
                    "name `{key}` is not a valid task name: {e}; register the task again under a valid name, then remove this entry with `manage_tasks unregister '{key}'`"
                ),
            },
            Ok(name) => match record_from_value(name, value.clone()) {
                Ok(record) => Entry::Task(Box::new(record)),
                // A reason that already says how to fix it.
                Err(reason) if reason.ends_with("--force") => {
                    Entry::Unusable { raw: value, reason }
                }
                Err(reason) => Entry::Unusable {
                    raw: value,
                    reason: format!(
                        "{reason}; fix the entry in the file, or register the task again with --force"
                    ),
                },
            },
        };
        doc.insert(key, entry);
    }
    Ok(doc)
}

/// Parses a whole store file into its entries, unchecked.
fn parse_raw(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Value>, StoreError> {
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
    parse_text(text).map_err(|e| parse_error(path, &e))
}

/// Parses store text (a byte-order mark allowed); blank text is empty.
fn parse_text(text: &str) -> Result<BTreeMap<String, Value>, serde_saphyr::Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let raw: Option<BTreeMap<String, Value>> = serde_saphyr::from_str(text)?;
    Ok(raw.unwrap_or_default())
}

/// The line (from 1) of the first comment in a store file, if it has one.
///
/// YAML parsers drop comments, so this tries each `#` that could start one
/// (at a line's start or after a space) and checks that cutting the line
/// there leaves the same data: a `#` inside a quoted or block string changes
/// the data when cut. Only the first few dozen candidates are tried.
fn first_comment_line(bytes: &[u8]) -> Option<usize> {
    const MAX_TRIES: usize = 64;
    let text = std::str::from_utf8(bytes).ok()?;
    // Parsed at the first candidate: most files have none.
    let mut data = None;
    let mut tries = 0;
    let mut start = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        for (at, _) in body.match_indices('#') {
            if at > 0 && !body[..at].ends_with([' ', '\t']) {
                continue;
            }
            tries += 1;
            if tries > MAX_TRIES {
                return None;
            }
            if data.is_none() {
                data = Some(parse_text(text).ok()?);
            }
            let cut = format!("{}{}", &text[..start + at], &text[start + body.len()..]);
            if parse_text(&cut).is_ok_and(|d| Some(d) == data) {
                return Some(index + 1);
            }
        }
        start += line.len();
    }
    None
}

/// Turns a serde-saphyr error into [`StoreError::Parse`] with 1-based line/column.
fn parse_error(path: &Path, e: &serde_saphyr::Error) -> StoreError {
    let location = e.location().filter(|l| l.line() > 0);
    if let serde_saphyr::Error::DuplicateMappingKey { key, .. } = e.without_snippet() {
        let key = key
            .as_deref()
            .map_or_else(String::new, |k| format!(" `{k}`"));
        return StoreError::Parse {
            path: path.to_owned(),
            line: location.and_then(|l| usize::try_from(l.line()).ok()),
            column: None,
            message: format!(
                "the key{key} appears twice in the same mapping (a second time here); remove one of the two"
            ),
        };
    }
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
        // What the Go tool writes for a task whose schema had no `inputs`.
        Some(Value::Null) => {
            return Err("no schema (schema: null); register it again with --force".into());
        }
        None => return Err("schema (the inputs JSON Schema) is missing".into()),
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
        tags: take_tags(&mut fields)?,
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

/// `tags`: a list of tags, checked, sorted and deduplicated.
fn take_tags(fields: &mut Map<String, Value>) -> Result<Vec<String>, String> {
    let items = match fields.remove("tags") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!(
                "tags must be a list of tags, found {}",
                kind(&other)
            ));
        }
    };
    let tags = items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            other => Err(format!(
                "tags must be a list of strings, found {} in it",
                kind(&other)
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    crate::task::normalize_tags(&tags).map_err(|e| e.to_string())
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
        .map(|(name, e)| match e {
            Entry::Task(r) => Row::new(path, name, r).map(Out::Task),
            Entry::Unusable { raw, .. } => Ok(Out::Kept(name, raw)),
        })
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
    fn new(path: &Path, name: &'a str, r: &'a Record) -> Result<Self, StoreError> {
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
            name,
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

/// One entry as written: a task's row, or an unusable entry kept as read.
enum Out<'a> {
    Task(Row<'a>),
    Kept(&'a str, &'a Value),
}

struct DocSer<'a>(&'a [Out<'a>]);

impl Serialize for DocSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for out in self.0 {
            match out {
                Out::Task(row) => map.serialize_entry(row.name, row)?,
                Out::Kept(name, raw) => map.serialize_entry(name, &Kept(raw))?,
            }
        }
        map.end()
    }
}

/// An unusable entry's value, written back as it was read: its fields in the
/// order a task's row has them (Go's `name`, `location`, `schema` first),
/// then the others sorted, so that an entry the Go tool wrote stays as it wrote it.
struct Kept<'a>(&'a Value);

impl Serialize for Kept<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Object(fields) = self.0 else {
            return Sorted(self.0).serialize(s);
        };
        let mut entries: Vec<_> = fields.iter().collect();
        let rank = |k: &str| {
            KNOWN_FIELDS
                .iter()
                .position(|f| *f == k)
                .unwrap_or(usize::MAX)
        };
        entries.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, &Sorted(v))?;
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
        if !p.tags.is_empty() {
            map.serialize_entry("tags", &p.tags)?;
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
    fn tags_are_written_only_when_set_quoted_for_go_and_read_back_normalized() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let mut tagged = task("tagged");
        tagged.policy.tags = ["0755", "1", "gpu", "on", "y"].map(String::from).to_vec();
        store.insert_now(&tagged, InsertMode::CreateNew).unwrap();
        store
            .insert_now(&task("plain"), InsertMode::CreateNew)
            .unwrap();
        assert_eq!(store.get_now(&tagged.name).unwrap(), Some(tagged));
        let text = fs::read_to_string(&path).unwrap();
        // Words yaml.v2 would read as numbers or booleans are quoted.
        for line in [
            "  tags:\n",
            r#"  - "0755""#,
            r#"  - "1""#,
            "  - gpu\n",
            r#"  - "on""#,
            r#"  - "y""#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(text.matches("tags:").count(), 1, "{text}");
        // Written by hand (or another build) unsorted, with a duplicate: read sorted, once each.
        fs::write(
            &path,
            "a:\n  name: a\n  location: /x\n  schema: {}\n  tags: [linux, gpu, linux]\n",
        )
        .unwrap();
        let a = store.get_now(&name("a")).unwrap().unwrap();
        assert_eq!(a.policy.tags, ["gpu", "linux"]);
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
    fn invalid_records_are_unusable_with_the_reason_and_kept_on_rewrite() {
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
            (
                "scalar tags",
                "a:\n  location: /x\n  schema: {}\n  tags: gpu\n",
                "tags must be a list",
            ),
            (
                "bad tag",
                "a:\n  location: /x\n  schema: {}\n  tags: [gpu, GPU]\n",
                "tag `GPU` is not valid",
            ),
        ];
        for (what, text, needle) in cases {
            fs::write(&path, text).unwrap();
            // The file still loads: the entry is listed as unusable, with why.
            assert_eq!(store.list_now().unwrap(), vec![], "{what}");
            let want_key = if what == "bad key" { "bad key" } else { "a" };
            let [Listed::Unusable(u)] = &store.entries_now().unwrap()[..] else {
                panic!("{what}: expected one unusable entry");
            };
            assert_eq!(u.name, want_key, "{what}");
            assert!(u.reason.contains(needle), "{what}: {}", u.reason);
            assert_eq!(store.unusable_now(want_key).unwrap().as_ref(), Some(u));
            if let Ok(n) = TaskName::new(want_key) {
                let err = store.get_now(&n).unwrap_err();
                assert!(
                    matches!(&err, StoreError::Unusable { name, .. } if name == want_key),
                    "{what}: {err}"
                );
                assert!(err.to_string().contains(needle), "{what}: {err}");
                // Not removed as a task: only by its raw name.
                assert!(matches!(
                    store.remove_now(&n),
                    Err(StoreError::Unusable { .. })
                ));
                assert_eq!(fs::read_to_string(&path).unwrap(), text, "{what}");
            }

            // A rewrite keeps it as it was.
            let before = parse_raw(&path, text.as_bytes()).unwrap();
            store.insert_now(&task("z"), InsertMode::CreateNew).unwrap();
            let mut after = parse_raw(&path, &fs::read(&path).unwrap()).unwrap();
            assert!(after.remove("z").is_some(), "{what}");
            assert_eq!(after, before, "{what}");
            assert_eq!(store.list_now().unwrap(), vec![task("z")], "{what}");

            // Its raw name removes it, and only it.
            assert_eq!(
                store.remove_unusable_now(want_key).unwrap().as_ref(),
                Some(u)
            );
            assert_eq!(store.remove_unusable_now(want_key).unwrap(), None);
            assert_eq!(
                store.entries_now().unwrap(),
                vec![Listed::Task(task("z"))],
                "{what}"
            );
        }
    }

    #[test]
    fn a_task_name_is_not_removed_as_an_unusable_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        assert_eq!(store.remove_unusable_now("a").unwrap(), None);
        assert!(!path.exists());
        store.insert_now(&task("a"), InsertMode::CreateNew).unwrap();
        let before = fs::read(&path).unwrap();
        assert_eq!(store.remove_unusable_now("a").unwrap(), None);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(store.list_now().unwrap(), vec![task("a")]);
    }

    #[test]
    fn entries_the_go_tool_wrote_are_written_back_as_it_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let go = "nothing:\n  name: nothing\n  location: /bin/nothing\n  schema: null\nwith space:\n  name: with space\n  location: /bin/with space\n  schema:\n    type: object\n";
        fs::write(&path, go).unwrap();
        store.insert_now(&task("a"), InsertMode::CreateNew).unwrap();
        store.remove_now(&name("a")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), go);
    }

    #[test]
    fn a_duplicate_key_names_the_key_and_line_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let text = "a:\n  name: a\n  location: /bin/a\n  schema: {}\nb:\n  name: b\n  location: /bin/b\n  location: /bin/c\n  schema: {}\n";
        fs::write(&path, text).unwrap();
        let err = store.list_now().unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::Parse { line: Some(8), .. }),
            "{msg}"
        );
        assert!(msg.contains("`location` appears twice"), "{msg}");
        assert!(msg.contains("remove one"), "{msg}");
        assert!(!msg.contains("DuplicateKeyPolicy"), "{msg}");
        let err = store
            .insert_now(&task("c"), InsertMode::CreateNew)
            .unwrap_err();
        assert!(matches!(err, StoreError::Parse { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn comments_are_found_where_they_are_and_only_there() {
        for (text, want) in [
            ("a: 1\n", None),
            ("# top\na: 1\n", Some(1)),
            ("a: 1\nb:\n  c: 2 # why\n", Some(3)),
            ("a: \"x # not\"\nb: 'y # nor'\n", None),
            ("a: |\n  line\n  # inside a block\nb: 2\n", None),
            ("a: |\n  # inside\n\n# after\nb: 2\n", Some(4)),
            ("a: http://x/schema#\nb: x#y\n", None),
            ("a: \"multi\n  # still the string\"\n", None),
        ] {
            assert_eq!(first_comment_line(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn rewriting_a_file_with_comments_warns_once_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        fs::write(
            &path,
            "a:\n  name: a\n  # where it lives\n  location: /bin/a\n  schema: {}\n",
        )
        .unwrap();
        assert_eq!(store.list_now().unwrap().len(), 1);
        assert_eq!(store.take_warnings(), Vec::<String>::new());
        store.insert_now(&task("b"), InsertMode::CreateNew).unwrap();
        assert_eq!(
            store.take_warnings(),
            ["tasks.yaml: comments are not kept when the file is rewritten (line 3)"]
        );
        store.insert_now(&task("c"), InsertMode::CreateNew).unwrap();
        assert_eq!(store.take_warnings(), Vec::<String>::new());
        assert_eq!(store.list_now().unwrap().len(), 3);
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
