//! What `TASK_STORE`/`--store` means: a path or a URL naming a backend and
//! its place ([`StoreSpec`]), and how such a spec is shown without secrets.
//!
//! Paths choose the backend by suffix (`.yaml`/`.yml`, `.db`/`.sqlite`/
//! `.sqlite3`); URLs by scheme (`sqlite:`, `postgres:`/`postgresql:`).
//! Every message that shows a spec shows it through [`redact`], which hides
//! a password in it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Environment variable naming the store, as in the original tool.
pub const ENV_TASK_STORE: &str = "TASK_STORE";

/// Which backend and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A YAML file in the original tool's format.
    Yaml(PathBuf),
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: the URL as given (see [`super::PgStore`] for
    /// what it may hold and the `PG*` variables that fill in the rest).
    Postgres(String),
}

impl StoreSpec {
    /// Interprets a `TASK_STORE` value.
    ///
    /// - `sqlite:PATH`, `sqlite://PATH` (relative) and `sqlite:///ABS/PATH`
    ///   name an SQLite file, as sqlx and most tools read them;
    /// - a path ending `.yaml`/`.yml` is YAML, one ending
    ///   `.db`/`.sqlite`/`.sqlite3` is SQLite;
    /// - `postgres://…` and `postgresql://…` name a PostgreSQL database
    ///   (checked here, connected on first use);
    /// - an in-memory SQLite database is refused: it would forget everything
    ///   between two commands.
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::BadSpec {
            spec: redact(spec),
            why: why.to_owned(),
        };
        if let Some(scheme) = scheme_of(spec) {
            return match scheme.to_ascii_lowercase().as_str() {
                "sqlite" => {
                    let rest = &spec[scheme.len() + 1..];
                    let rest = rest.strip_prefix("//").unwrap_or(rest);
                    let path = rest.split(['?', '#']).next().unwrap_or_default();
                    if path.is_empty() {
                        return Err(bad(
                            "the sqlite: URL names no file; e.g. sqlite:///var/lib/tasks.db",
                        ));
                    }
                    if path == ":memory:" || rest.contains("mode=memory") {
                        return Err(bad(
                            "an in-memory database keeps nothing once the command ends; name a file, e.g. sqlite:///var/lib/tasks.db",
                        ));
                    }
                    if rest.len() > path.len() {
                        return Err(bad(
                            "options after `?` are not supported; give the bare path, e.g. sqlite:///var/lib/tasks.db",
                        ));
                    }
                    Ok(StoreSpec::Sqlite(PathBuf::from(path)))
                }
                "postgres" | "postgresql" => {
                    super::postgres::check_url(spec).map_err(|why| bad(&why))?;
                    Ok(StoreSpec::Postgres(spec.to_owned()))
                }
                "file" => Err(bad(
                    "give the file's path itself, or a sqlite: URL (sqlite:///path/tasks.db)",
                )),
                other => Err(bad(&format!(
                    "unknown store scheme `{other}:`; use a .yaml or .db path, or a sqlite: URL"
                ))),
            };
        }
        let path = PathBuf::from(spec);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("yaml" | "yml") => Ok(StoreSpec::Yaml(path)),
            Some("db" | "sqlite" | "sqlite3") => Ok(StoreSpec::Sqlite(path)),
            _ => Err(bad(
                "end the path in .yaml/.yml (YAML) or .db/.sqlite/.sqlite3 (SQLite), or use a sqlite: URL",
            )),
        }
    }

    /// The default store: SQLite at `$XDG_DATA_HOME/task-executor/tasks.db`
    /// (falling back to `~/.local/share/task-executor/tasks.db`).
    pub fn default_location() -> Result<Self, StoreError> {
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/share"))
            })
            .ok_or(StoreError::NoDefault)?;
        Ok(StoreSpec::Sqlite(data.join("task-executor/tasks.db")))
    }

    /// The file this spec points at (a PostgreSQL URL, passwords hidden, as a path).
    pub fn path(&self) -> std::borrow::Cow<'_, Path> {
        match self {
            StoreSpec::Yaml(p) | StoreSpec::Sqlite(p) => p.as_path().into(),
            StoreSpec::Postgres(url) => PathBuf::from(redact(url)).into(),
        }
    }

    /// Whether `self` and `other` name the same store, however each is
    /// written: the same file by a relative or an absolute path, through a
    /// symlink or a hard link, as a path or a `sqlite:` URL (whatever
    /// backend their suffixes pick, it is one file).
    pub fn same_store(&self, other: &StoreSpec) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self, other) {
            (StoreSpec::Postgres(a), StoreSpec::Postgres(b)) => {
                return super::postgres::same_database(a, b);
            }
            (StoreSpec::Postgres(_), _) | (_, StoreSpec::Postgres(_)) => return false,
            _ => {}
        }
        let (a, b) = (self.path(), other.path());
        let (a, b) = (a.as_ref(), b.as_ref());
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(ma), Ok(mb)) => ma.dev() == mb.dev() && ma.ino() == mb.ino(),
            // Not both there to ask: compared as paths (`x/../t.db` is
            // `t.db` even where `x` does not exist).
            _ => normalise(a) == normalise(b),
        }
    }

    /// Whether the store's file does not exist (yet): a source to copy from
    /// that is missing is most likely a typo, not an empty store.
    pub fn is_missing(&self) -> bool {
        // A database server is asked, not looked for: an empty one is empty.
        !matches!(self, StoreSpec::Postgres(_)) && !self.path().exists()
    }

    /// The spec as `--store` takes it, passwords hidden, quoted for a shell
    /// when it has to be: for the commands a message suggests.
    pub fn as_arg(&self) -> String {
        let text = self.path().display().to_string();
        let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
        if !text.is_empty() && text.chars().all(plain) {
            text
        } else {
            format!("'{}'", text.replace('\'', r"'\''"))
        }
    }
}

/// `path` made absolute (against the working directory) with `.` and `..`
/// resolved lexically and its deepest existing ancestor canonicalised.
fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_owned(),
    };
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    let mut rest = Vec::new();
    let mut base = out.as_path();
    loop {
        if let Ok(real) = base.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => return out,
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Yaml(p) => write!(f, "{} (yaml)", p.display()),
            StoreSpec::Sqlite(p) => write!(f, "{} (sqlite)", p.display()),
            StoreSpec::Postgres(url) => write!(f, "{} (postgres)", redact(url)),
        }
    }
}

/// The scheme of a URL-like spec (`sqlite` of `sqlite:x`), if it has one.
/// A Windows-style drive letter or a path with a colon later on is no scheme.
fn scheme_of(spec: &str) -> Option<&str> {
    let (scheme, _) = spec.split_once(':')?;
    let valid = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// `spec` with any password in it replaced by `****`: the one in a URL's
/// user info (`postgres://user:secret@host/db`) and `password=` parameters.
pub fn redact(spec: &str) -> String {
    let mut out = spec.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "****");
        }
    }
    for key in ["password=", "sslpassword="] {
        let mut from = 0;
        while let Some(i) = out[from..].find(key).map(|i| from + i) {
            let value = i + key.len();
            let end = out[value..]
                .find(['&', ' ', '#'])
                .map_or(out.len(), |j| value + j);
            out.replace_range(value..end, "****");
            from = value + 4;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_picks_backend_by_suffix_or_scheme() {
        let cases = [
            ("/tmp/tasks.yaml", StoreSpec::Yaml("/tmp/tasks.yaml".into())),
            ("t.YML", StoreSpec::Yaml("t.YML".into())),
            ("/x/t.db", StoreSpec::Sqlite("/x/t.db".into())),
            ("t.sqlite", StoreSpec::Sqlite("t.sqlite".into())),
            ("t.sqlite3", StoreSpec::Sqlite("t.sqlite3".into())),
            ("sqlite:///abs/t", StoreSpec::Sqlite("/abs/t".into())),
            ("sqlite://rel/t.db", StoreSpec::Sqlite("rel/t.db".into())),
            ("SQLITE:rel/t.bin", StoreSpec::Sqlite("rel/t.bin".into())),
            ("./odd:name.db", StoreSpec::Sqlite("./odd:name.db".into())),
        ];
        for (s, want) in cases {
            assert_eq!(StoreSpec::parse(s).unwrap(), want, "{s}");
        }
        for bad in [
            "/tmp/tasks.json",
            "tasks",
            "sqlite:",
            "sqlite://",
            "",
            "sqlite::memory:",
            "sqlite://file.db?mode=memory",
            "sqlite:///t.db?cache=shared",
            "redis://localhost",
            "file:///tmp/t.db",
        ] {
            assert!(
                matches!(StoreSpec::parse(bad), Err(StoreError::BadSpec { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_same_file_is_the_same_store_however_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tasks.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(&db, dir.path().join("link.db")).unwrap();
        std::fs::hard_link(&db, dir.path().join("hard.sqlite")).unwrap();
        let spec = |s: &str| StoreSpec::parse(s).unwrap();
        let base = spec(db.to_str().unwrap());
        let d = dir.path().display();
        for same in [
            format!("{d}/sub/../tasks.db"),
            format!("{d}/missing/../tasks.db"),
            format!("{d}/./tasks.db"),
            format!("sqlite://{d}/tasks.db"),
            format!("{d}/link.db"),
            format!("{d}/hard.sqlite"),
        ] {
            assert!(base.same_store(&spec(&same)), "{same}");
        }
        // Neither exists yet: compared as paths.
        let new = spec(&format!("{d}/new.db"));
        assert!(new.same_store(&spec(&format!("{d}/sub/../new.db"))));
        assert!(!new.same_store(&spec(&format!("{d}/other.db"))));
        assert!(!base.same_store(&new));
        assert!(!base.same_store(&spec(&format!("{d}/tasks.yaml"))));
    }

    #[test]
    fn as_arg_quotes_what_a_shell_would_split() {
        let arg = |s: &str| StoreSpec::parse(s).unwrap().as_arg();
        assert_eq!(arg("/var/lib/tasks.db"), "/var/lib/tasks.db");
        assert_eq!(arg("sqlite:///var/lib/t.db"), "/var/lib/t.db");
        assert_eq!(arg("/tmp/my tasks.db"), "'/tmp/my tasks.db'");
        assert_eq!(arg("/tmp/it's.yaml"), r"'/tmp/it'\''s.yaml'");
    }

    #[test]
    fn postgres_urls_are_checked_and_errors_hide_the_password() {
        for good in [
            "postgres://ada:hunter2@db.example:5432/tasks",
            "postgresql://db.example/tasks?sslmode=require",
            "postgres:///tasks?host=/var/run/postgresql",
            "postgres://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        ] {
            assert_eq!(
                StoreSpec::parse(good).unwrap(),
                StoreSpec::Postgres(good.into()),
                "{good}"
            );
        }
        let err =
            StoreSpec::parse("postgres://ada:hunter2@db.example:5432/tasks?sslmode=sometimes")
                .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("postgres://ada:****@db.example:5432/tasks"),
            "{text}"
        );
        assert!(text.contains("sslmode"), "{text}");
        let shown = StoreSpec::parse("postgres://ada:hunter2@h/db")
            .unwrap()
            .to_string();
        assert_eq!(shown, "postgres://ada:****@h/db (postgres)");
    }

    #[test]
    fn redact_hides_passwords_only() {
        let cases = [
            ("postgres://u:p@h/db", "postgres://u:****@h/db"),
            (
                "postgresql://u:p%40ss@h:1/db?x=1",
                "postgresql://u:****@h:1/db?x=1",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?password=s3&user=u",
                "postgres://h/db?password=****&user=u",
            ),
            ("postgres://u:a@b@h/db", "postgres://u:****@h/db"),
            ("/tmp/x@y:z.db", "/tmp/x@y:z.db"),
            ("sqlite:///a/b.db", "sqlite:///a/b.db"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }
}
