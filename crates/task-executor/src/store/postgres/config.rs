//! What a `postgres://` URL means: libpq's URL and the `PG*` variables
//! that fill in what it leaves out, turned into a `tokio_postgres::Config`
//! and a TLS policy.
//!
//! tokio-postgres reads the URL itself; this module adds what libpq users
//! expect and it lacks: `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
//! `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`,
//! `PGCONNECT_TIMEOUT` for fields the URL does not set, and the `sslmode`s
//! `verify-ca`/`verify-full` with `sslrootcert` (tokio-postgres knows only
//! `disable`, `prefer` and `require`). As in libpq, the roots a verifying
//! mode trusts are `sslrootcert` alone (default `~/.postgresql/root.crt`),
//! or the system's with `sslrootcert=system`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Config, Host, SslMode};

/// How the connection is encrypted, as libpq's `sslmode` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tls {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, the certificate not checked (libpq's default).
    Prefer,
    /// TLS always, the certificate not checked.
    Require,
    /// TLS always, the certificate checked against the trusted roots (not its name).
    VerifyCa,
    /// TLS always, the certificate and the host name checked.
    VerifyFull,
}

/// A parsed store URL.
#[derive(Clone)]
pub(crate) struct PgConfig {
    pub config: Config,
    pub tls: Tls,
    /// The roots `verify-ca`/`verify-full` trust (`sslrootcert`, else
    /// `~/.postgresql/root.crt` if it exists): a PEM file, or `system`.
    pub root_cert: Option<PathBuf>,
}

/// Checks `url` as [`super::PgStore`] will read it; `Err` says what is wrong.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    parse(url, &|_| None).map(|_| ())
}

/// Parses `url`, taking what it leaves out from `env` (the process
/// environment in use; a closure so tests need not change it).
pub(crate) fn parse(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PgConfig, String> {
    // Our own parameters come out before tokio-postgres reads the rest.
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut sslmode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => sslmode = Some(v.to_owned()),
            "sslrootcert" => root_cert = Some(PathBuf::from(v)),
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = Config::from_str(&rebuilt).map_err(|e| {
        format!(
            "not a valid PostgreSQL URL ({e}); e.g. postgres://user:password@host:5432/database"
        )
    })?;
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(hosts) => {
                for h in hosts.split(',') {
                    config.host(h);
                }
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty()
        && let Some(port) = env("PGPORT")
    {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("PGPORT `{port}` is not a port number"))?;
        config.port(port);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(user);
    }
    if config.get_password().is_none()
        && let Some(pw) = env("PGPASSWORD")
    {
        config.password(pw);
    }
    if config.get_dbname().is_none() {
        let db = env("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or("").to_owned());
        config.dbname(db);
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "task-executor".into()));
    }
    if config.get_connect_timeout().is_none() {
        let secs = match env("PGCONNECT_TIMEOUT") {
            Some(s) => s
                .parse::<u64>()
                .map_err(|_| format!("PGCONNECT_TIMEOUT `{s}` is not a number of seconds"))?,
            None => 10,
        };
        config.connect_timeout(Duration::from_secs(secs.max(1)));
    }
    // A connection whose peer vanished (a partition sends no reset) fails
    // within seconds instead of TCP's minutes.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(15));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    config.tcp_user_timeout(Duration::from_secs(15));
    let mode = sslmode.or_else(|| env("PGSSLMODE"));
    let tls = match mode.as_deref() {
        None | Some("prefer") | Some("allow") => Tls::Prefer,
        Some("disable") => Tls::Disable,
        Some("require") => Tls::Require,
        Some("verify-ca") => Tls::VerifyCa,
        Some("verify-full") => Tls::VerifyFull,
        Some(other) => {
            return Err(format!(
                "unknown sslmode `{other}`; use disable, prefer, require, verify-ca or verify-full"
            ));
        }
    };
    config.ssl_mode(match tls {
        Tls::Disable => SslMode::Disable,
        Tls::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    // Unix sockets carry no TLS.
    if config
        .get_hosts()
        .iter()
        .all(|h| matches!(h, Host::Unix(_)))
        && tls == Tls::Prefer
    {
        config.ssl_mode(SslMode::Disable);
    }
    let root_cert = root_cert
        .or_else(|| env("PGSSLROOTCERT").map(PathBuf::from))
        .or_else(|| {
            let default = PathBuf::from(env("HOME")?).join(".postgresql/root.crt");
            default.is_file().then_some(default)
        });
    Ok(PgConfig {
        config,
        tls,
        root_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_url_wins_and_pg_variables_fill_in_the_rest() {
        let env = |k: &str| {
            match k {
                "PGHOST" => Some("envhost"),
                "PGPORT" => Some("6543"),
                "PGUSER" => Some("envuser"),
                "PGPASSWORD" => Some("envpw"),
                "PGDATABASE" => Some("envdb"),
                "PGSSLMODE" => Some("require"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let c = parse("postgres://", &env).unwrap();
        assert_eq!(c.config.get_hosts(), &[Host::Tcp("envhost".into())]);
        assert_eq!(c.config.get_ports(), &[6543]);
        assert_eq!(c.config.get_user(), Some("envuser"));
        assert_eq!(c.config.get_password(), Some(&b"envpw"[..]));
        assert_eq!(c.config.get_dbname(), Some("envdb"));
        assert_eq!(c.tls, Tls::Require);

        let c = parse("postgresql://u:p@h:1/db?sslmode=disable", &env).unwrap();
        assert_eq!(c.config.get_hosts(), &[Host::Tcp("h".into())]);
        assert_eq!(c.config.get_ports(), &[1]);
        assert_eq!(c.config.get_user(), Some("u"));
        assert_eq!(c.config.get_dbname(), Some("db"));
        assert_eq!(c.tls, Tls::Disable);
    }

    #[test]
    fn verify_modes_and_root_certs_are_ours_to_read() {
        let c = parse(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
            &none,
        )
        .unwrap();
        assert_eq!(c.tls, Tls::VerifyFull);
        assert_eq!(c.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.config.get_application_name(), Some("x"));
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let e = parse("postgres://h/db?sslmode=sometimes", &none)
            .err()
            .expect("an error");
        assert!(e.contains("sslmode `sometimes`"), "{e}");
        let e = parse("postgres://h:notaport/db", &none)
            .err()
            .expect("an error");
        assert!(e.contains("not a valid PostgreSQL URL"), "{e}");
    }
}
