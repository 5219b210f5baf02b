//! Store configuration: driver, DSN (a secret), migration mode and limits.
//!
//! The API server maps its flags onto [`SqlStoreConfig`]: `--sql-driver` → [`SqlDriver`],
//! `--sql-dsn` / `--sql-dsn-file` → [`SqlStoreConfig::from_dsn_or_file`], `--sql-migrate` →
//! [`Migrate`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::error::SqlError;

/// The database engine behind a [`crate::SqlStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDriver {
    /// PostgreSQL: several API server replicas may share one database.
    Postgres,
    /// MariaDB or MySQL: several API server replicas may share one database.
    Mysql,
    /// SQLite: an embedded file, one API server replica.
    Sqlite,
}

impl SqlDriver {
    /// The flag value: `postgres`, `mysql` or `sqlite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for SqlDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SqlDriver {
    type Err = SqlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::Mysql),
            "sqlite" => Ok(Self::Sqlite),
            other => Err(SqlError::Config(format!(
                "--sql-driver must be one of postgres, mysql, sqlite (got {other:?})"
            ))),
        }
    }
}

/// What to do about the schema at start-up (`--sql-migrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Migrate {
    /// Apply the embedded migrations (idempotent; safe when several replicas start at once).
    #[default]
    Auto,
    /// Apply nothing; verify that the table and its columns exist with usable types.
    Off,
}

impl FromStr for Migrate {
    type Err = SqlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            other => Err(SqlError::Config(format!(
                "--sql-migrate must be auto or off (got {other:?})"
            ))),
        }
    }
}

/// Everything [`crate::SqlStore::connect`] needs.
///
/// `Debug` redacts the DSN's password.
#[derive(Clone)]
pub struct SqlStoreConfig {
    /// The engine.
    pub driver: SqlDriver,
    /// The data source name; may hold a password.
    pub dsn: SecretString,
    /// Schema handling at start-up.
    pub migrate: Migrate,
    /// Pool size for PostgreSQL and MariaDB/MySQL. SQLite always uses one connection.
    pub max_connections: u32,
    /// Bound on establishing a connection (and on waiting for a pooled one).
    pub connect_timeout: Duration,
    /// Bound on every store call; a call that exceeds it is `Unavailable`.
    pub statement_timeout: Duration,
}

impl SqlStoreConfig {
    /// Default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default per-call timeout.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A configuration with default limits.
    pub fn new(driver: SqlDriver, dsn: impl Into<String>, migrate: Migrate) -> Self {
        Self {
            driver,
            dsn: SecretString::from(dsn.into()),
            migrate,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
        }
    }

    /// Builds a configuration from `--sql-dsn` or `--sql-dsn-file`: exactly one must be set.
    /// The file is read once, trimmed, and must not be empty.
    ///
    /// # Errors
    /// [`SqlError::Config`] naming the flags; never containing the DSN.
    pub fn from_dsn_or_file(
        driver: SqlDriver,
        dsn: Option<String>,
        dsn_file: Option<PathBuf>,
        migrate: Migrate,
    ) -> Result<Self, SqlError> {
        let dsn = match (dsn, dsn_file) {
            (Some(_), Some(_)) => {
                return Err(SqlError::Config(
                    "--sql-dsn and --sql-dsn-file are mutually exclusive; set exactly one".into(),
                ));
            }
            (None, None) => {
                return Err(SqlError::Config(
                    "one of --sql-dsn or --sql-dsn-file is required with the sql store".into(),
                ));
            }
            (Some(dsn), None) => {
                let dsn = dsn.trim().to_string();
                if dsn.is_empty() {
                    return Err(SqlError::Config("--sql-dsn is empty".into()));
                }
                dsn
            }
            (None, Some(path)) => {
                let raw = std::fs::read_to_string(&path).map_err(|e| {
                    SqlError::Config(format!(
                        "failed to read --sql-dsn-file {}: {e}",
                        path.display()
                    ))
                })?;
                let dsn = raw.trim().to_string();
                if dsn.is_empty() {
                    return Err(SqlError::Config(format!(
                        "--sql-dsn-file {} is empty",
                        path.display()
                    )));
                }
                dsn
            }
        };
        Ok(Self::new(driver, dsn, migrate))
    }

    /// Checks, without touching the network, that the DSN suits the driver (scheme, Go-form
    /// syntax, a UTC `loc`). [`crate::SqlStore::connect`] does the same first; this lets a binary
    /// reject bad flags before it starts anything.
    ///
    /// # Errors
    /// [`SqlError::Config`], never containing the password.
    pub fn validate(&self) -> Result<(), SqlError> {
        let dsn = self.dsn.expose_secret();
        match self.driver {
            SqlDriver::Postgres => postgres_options(dsn).map(drop),
            SqlDriver::Mysql => mysql_options(dsn).map(drop),
            SqlDriver::Sqlite => sqlite_options(dsn, self.connect_timeout).map(drop),
        }
        .map_err(|e| match e {
            SqlError::Config(m) => SqlError::Config(scrub(m, self.password().as_deref())),
            other => other,
        })
    }

    /// The DSN with its password replaced by `***`, safe for logs.
    pub fn redacted_dsn(&self) -> String {
        redact_dsn(self.dsn.expose_secret())
    }

    /// The password in the DSN, if any, for scrubbing error texts.
    pub(crate) fn password(&self) -> Option<String> {
        dsn_password(self.dsn.expose_secret())
    }
}

impl fmt::Debug for SqlStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStoreConfig")
            .field("driver", &self.driver)
            .field("dsn", &self.redacted_dsn())
            .field("migrate", &self.migrate)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// Splits a Go driver DSN `user:pass@proto(addr)/db?params` at its credential `@`.
///
/// Go's parser uses the last `@` before the last `/`, so passwords may hold `@`.
fn go_dsn_parts(dsn: &str) -> Option<(&str, &str)> {
    let slash = dsn.rfind('/')?;
    let at = dsn[..slash].rfind('@')?;
    Some((&dsn[..at], &dsn[at + 1..]))
}

/// Whether `dsn` is in URL form: one of the schemes Berth accepts, then `://`. Anything else
/// with credentials is read as the Go MySQL form (`user:pass@tcp(host)/db`), whose password may
/// itself hold `://` or start with `//`; its user may even be `sqlite` or `postgres`.
fn is_url(dsn: &str) -> bool {
    [
        "postgres://",
        "postgresql://",
        "mysql://",
        "mariadb://",
        "sqlite://",
    ]
    .iter()
    .any(|scheme| dsn.starts_with(scheme))
}

/// The password of a URL or Go-form DSN, percent-decoded where it came from a URL.
pub(crate) fn dsn_password(dsn: &str) -> Option<String> {
    if is_url(dsn) {
        let url = url::Url::parse(dsn).ok()?;
        let mut out = Vec::new();
        if let Some(p) = url.password() {
            out.push(p.to_string());
        }
        for (k, v) in url.query_pairs() {
            if k == "password" {
                out.push(v.into_owned());
            }
        }
        // Prefer the decoded form; scrubbing also covers the raw one (see `scrub`).
        let raw = out.first()?.clone();
        let decoded = percent_decode(&raw);
        return Some(decoded);
    }
    let (creds, _) = go_dsn_parts(dsn)?;
    let (_, pass) = creds.split_once(':')?;
    (!pass.is_empty()).then(|| pass.to_string())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A DSN with its password replaced by `***`. A DSN that cannot be understood is shown as
/// `<redacted>` rather than risk printing a secret.
pub fn redact_dsn(dsn: &str) -> String {
    // A Go-form MySQL DSN whose user is `sqlite` also starts so: only a DSN without
    // credentials is shown as it is.
    if dsn.starts_with("sqlite:") && !dsn.contains('@') {
        return dsn.to_string();
    }
    if is_url(dsn) {
        let Ok(mut url) = url::Url::parse(dsn) else {
            return "<redacted>".into();
        };
        if url.password().is_some() && url.set_password(Some("***")).is_err() {
            return "<redacted>".into();
        }
        if url.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return url.to_string();
    }
    match go_dsn_parts(dsn) {
        Some((creds, rest)) => match creds.split_once(':') {
            Some((user, _)) => format!("{user}:***@{rest}"),
            None => dsn.to_string(),
        },
        None if dsn.contains('@') || dsn.contains(':') => "<redacted>".into(),
        None => dsn.to_string(),
    }
}

/// Replaces every occurrence of `secret` (raw and percent-encoded forms) in `text` by `***`.
pub(crate) fn scrub(text: String, secret: Option<&str>) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return text;
    };
    let mut out = text.replace(secret, "***");
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    if encoded != secret {
        out = out.replace(&encoded, "***");
    }
    out
}

/// A MariaDB/MySQL DSN in URL form, converted from the Go driver form when needed.
///
/// Accepts `mysql://user:pass@host:port/db?…` and `user:pass@tcp(host:port)/db?parseTime=true&loc=UTC`
/// (also `unix(/path/to/socket)`). `loc` must be UTC; the session time zone is forced to UTC
/// regardless.
pub(crate) fn mysql_options(dsn: &str) -> Result<sqlx::mysql::MySqlConnectOptions, SqlError> {
    use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

    let bad = |what: String| SqlError::Config(format!("invalid mysql --sql-dsn: {what}"));
    if is_url(dsn) {
        let url = url::Url::parse(dsn).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "mysql" | "mariadb") {
            return Err(bad(format!(
                "scheme {:?} is not mysql:// (driver mysql)",
                url.scheme()
            )));
        }
        for (k, v) in url.query_pairs() {
            check_loc(&k, &v)?;
        }
        let mut normalized = url.clone();
        let _ = normalized.set_scheme("mysql");
        let opts =
            MySqlConnectOptions::from_str(normalized.as_str()).map_err(|e| bad(e.to_string()))?;
        return Ok(opts.timezone(Some("+00:00".to_string())));
    }

    // Go form: [user[:password]@][net[(addr)]]/dbname[?param1=value1&paramN=valueN]
    let (creds, rest) = match go_dsn_parts(dsn) {
        Some((c, r)) => (Some(c), r),
        None => (None, dsn),
    };
    let slash = rest
        .rfind('/')
        .ok_or_else(|| bad("expected user:pass@tcp(host:port)/db or a mysql:// URL".into()))?;
    let (net_addr, db_params) = rest.split_at(slash);
    let db_params = &db_params[1..];
    let (db, params) = db_params.split_once('?').unwrap_or((db_params, ""));

    let mut opts = MySqlConnectOptions::new();
    if let Some(creds) = creds {
        let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
        if !user.is_empty() {
            opts = opts.username(user);
        }
        if !pass.is_empty() {
            opts = opts.password(pass);
        }
    }
    let (net, addr) = match net_addr.split_once('(') {
        Some((net, addr)) => {
            let addr = addr
                .strip_suffix(')')
                .ok_or_else(|| bad("unterminated address in tcp(…)".into()))?;
            (net, addr)
        }
        None => (net_addr, ""),
    };
    match net {
        "" | "tcp" => {
            let addr = if addr.is_empty() {
                "127.0.0.1:3306"
            } else {
                addr
            };
            let (host, port) = match addr.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || addr.starts_with('[') => {
                    let port = p
                        .parse::<u16>()
                        .map_err(|_| bad(format!("bad port {p:?}")))?;
                    (h.trim_start_matches('[').trim_end_matches(']'), port)
                }
                _ => (addr, 3306),
            };
            opts = opts.host(host).port(port);
        }
        "unix" => opts = opts.socket(addr),
        other => {
            return Err(bad(format!(
                "unsupported network {other:?}; use tcp or unix"
            )));
        }
    }
    if !db.is_empty() {
        opts = opts.database(db);
    }
    for (k, v) in url::form_urlencoded::parse(params.as_bytes()) {
        check_loc(&k, &v)?;
        match &*k {
            "tls" => {
                let mode = match &*v {
                    "true" => MySqlSslMode::VerifyIdentity,
                    "skip-verify" => MySqlSslMode::Required,
                    "preferred" => MySqlSslMode::Preferred,
                    "false" => MySqlSslMode::Disabled,
                    other => return Err(bad(format!("unsupported tls={other:?}"))),
                };
                opts = opts.ssl_mode(mode);
            }
            "charset" => {
                let first = v.split(',').next().unwrap_or("utf8mb4");
                opts = opts.charset(first);
            }
            "collation" => opts = opts.collation(&v),
            // Go driver knobs with no meaning here (times are always parsed, in UTC).
            "loc"
            | "parseTime"
            | "timeout"
            | "readTimeout"
            | "writeTimeout"
            | "allowNativePasswords"
            | "interpolateParams"
            | "multiStatements"
            | "clientFoundRows"
            | "columnsWithAlias"
            | "rejectReadOnly"
            | "maxAllowedPacket"
            | "checkConnLiveness"
            | "autocommit" => {}
            other => {
                return Err(bad(format!(
                    "unsupported parameter {other:?} (supported: parseTime, loc=UTC, tls, charset, collation)"
                )));
            }
        }
    }
    Ok(opts.timezone(Some("+00:00".to_string())))
}

/// A `loc` other than UTC would skew every stored time (reference §3.2, issue #107).
fn check_loc(key: &str, value: &str) -> Result<(), SqlError> {
    let utc = matches!(value, "UTC" | "utc" | "+00:00" | "Z" | "Etc/UTC");
    if matches!(key, "loc" | "timezone" | "time-zone" | "time_zone") && !utc {
        return Err(SqlError::Config(format!(
            "invalid mysql --sql-dsn: {key}={value:?} is not supported; Berth keeps times in UTC (use loc=UTC or drop it)"
        )));
    }
    Ok(())
}

/// PostgreSQL options from a `postgres://` or `postgresql://` URL.
pub(crate) fn postgres_options(dsn: &str) -> Result<sqlx::postgres::PgConnectOptions, SqlError> {
    let bad = |what: String| SqlError::Config(format!("invalid postgres --sql-dsn: {what}"));
    if !(dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")) {
        return Err(bad(
            "expected postgres://user:pass@host:port/db (or postgresql://)".into(),
        ));
    }
    let opts = sqlx::postgres::PgConnectOptions::from_str(dsn).map_err(|e| bad(e.to_string()))?;
    Ok(opts.application_name("berth"))
}

/// SQLite options from `sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`.
pub(crate) fn sqlite_options(
    dsn: &str,
    busy_timeout: Duration,
) -> Result<sqlx::sqlite::SqliteConnectOptions, SqlError> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let bad = |what: String| SqlError::Config(format!("invalid sqlite --sql-dsn: {what}"));
    if !dsn.starts_with("sqlite:") {
        return Err(bad(
            "expected sqlite://PATH, sqlite:PATH or sqlite::memory:".into(),
        ));
    }
    let opts = SqliteConnectOptions::from_str(dsn).map_err(|e| bad(e.to_string()))?;
    Ok(opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .foreign_keys(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_form_password_that_looks_like_a_url_is_redacted() {
        // Found by the sql_dsn fuzz target: user `m`, password `//*.`.
        let dsn = "m://*.@tcp(db)/berth?parseTime=true";
        assert_eq!(redact_dsn(dsn), "m:***@tcp(db)/berth?parseTime=true");
        // Found by the sql_dsn fuzz target: user `sqlite`, password `rs:///?`; the text starts
        // like a SQLite DSN and holds `://`.
        let dsn = "sqlite:rs:///?@tcp(db)/berth?parseTime=true&";
        assert_eq!(redact_dsn(dsn), "sqlite:***@tcp(db)/berth?parseTime=true&");
        assert_eq!(dsn_password(dsn).as_deref(), Some("rs:///?"));
        assert_eq!(
            redact_dsn("postgres://berth@db/berth"),
            "postgres://berth@db/berth"
        );
    }

    #[test]
    fn driver_and_migrate_parse() {
        assert_eq!(
            "postgres".parse::<SqlDriver>().unwrap(),
            SqlDriver::Postgres
        );
        assert_eq!("mysql".parse::<SqlDriver>().unwrap(), SqlDriver::Mysql);
        assert_eq!("sqlite".parse::<SqlDriver>().unwrap(), SqlDriver::Sqlite);
        let e = "oracle".parse::<SqlDriver>().unwrap_err().to_string();
        assert!(e.contains("--sql-driver"), "{e}");
        assert_eq!("off".parse::<Migrate>().unwrap(), Migrate::Off);
        assert!(
            "maybe"
                .parse::<Migrate>()
                .unwrap_err()
                .to_string()
                .contains("--sql-migrate")
        );
    }

    #[test]
    fn redacts_url_and_go_form_passwords() {
        assert_eq!(
            redact_dsn("postgres://berth:s3cret@db:5432/berth?sslmode=require"),
            "postgres://berth:***@db:5432/berth?sslmode=require"
        );
        assert_eq!(
            redact_dsn("berth:p@ss:w0rd@tcp(127.0.0.1:3306)/berth?parseTime=true"),
            "berth:***@tcp(127.0.0.1:3306)/berth?parseTime=true"
        );
        assert_eq!(
            redact_dsn("postgres://db/berth?user=x&password=hunter2"),
            "postgres://db/berth?user=x&password=***"
        );
        assert_eq!(
            redact_dsn("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(
            redact_dsn("sqlite:///var/lib/berth.db"),
            "sqlite:///var/lib/berth.db"
        );
        // Found by the sql_dsn fuzz target: a MySQL Go-form DSN for the user `sqlite`.
        let dsn = "sqlite:pw-42@tcp(db:3306)/berth?parseTime=true";
        SqlStoreConfig::new(SqlDriver::Mysql, dsn, Migrate::Auto)
            .validate()
            .unwrap();
        assert_eq!(
            redact_dsn(dsn),
            "sqlite:***@tcp(db:3306)/berth?parseTime=true"
        );
        assert_eq!(redact_dsn("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = SqlStoreConfig::new(
            SqlDriver::Postgres,
            "postgres://berth:hunter2-pw@db/berth",
            Migrate::Auto,
        );
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2-pw"), "{dbg}");
        assert!(dbg.contains("berth:***@db"), "{dbg}");
        assert_eq!(cfg.password().as_deref(), Some("hunter2-pw"));
    }

    #[test]
    fn password_is_found_percent_decoded() {
        assert_eq!(
            dsn_password("postgres://u:p%40ss@db/x").as_deref(),
            Some("p@ss")
        );
        assert_eq!(
            scrub("auth failed for p%40ss and p@ss".into(), Some("p@ss")),
            "auth failed for *** and ***"
        );
    }

    #[test]
    fn go_form_mysql_dsn_converts() {
        let o = mysql_options("berth:secret@tcp(db.example:3307)/berth?parseTime=true&loc=UTC")
            .unwrap();
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 3307);
        assert_eq!(o.get_username(), "berth");
        assert_eq!(o.get_database(), Some("berth"));
        let o = mysql_options("root@tcp(127.0.0.1)/test").unwrap();
        assert_eq!(o.get_port(), 3306);
        assert_eq!(o.get_username(), "root");
        let o = mysql_options("u:p@unix(/run/mysqld/mysqld.sock)/db").unwrap();
        assert_eq!(
            o.get_socket().map(|p| p.display().to_string()).as_deref(),
            Some("/run/mysqld/mysqld.sock")
        );
        let o = mysql_options("mysql://root:pw@127.0.0.1:3306/test?loc=UTC").unwrap();
        assert_eq!(o.get_database(), Some("test"));
    }

    #[test]
    fn non_utc_loc_is_rejected() {
        for dsn in [
            "berth:secret@tcp(db:3306)/berth?parseTime=true&loc=Local",
            "berth:secret@tcp(db:3306)/berth?loc=Europe%2FBerlin",
            "mysql://berth:secret@db/berth?loc=Local",
            "mysql://berth:secret@db/berth?timezone=%2B02:00",
        ] {
            let e = mysql_options(dsn).unwrap_err().to_string();
            assert!(e.contains("UTC"), "{dsn}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn bad_dsns_are_config_errors_without_the_password() {
        let e = mysql_options("berth:secret@tcp(db:3306)/berth?frobnicate=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("frobnicate") && !e.contains("secret"), "{e}");
        let e = mysql_options("berth:secret@udp(db:3306)/berth")
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp") && !e.contains("secret"), "{e}");
        let e = postgres_options("mysql://berth:secret@db/berth")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres://") && !e.contains("secret"), "{e}");
        let e = sqlite_options("/tmp/x.db", Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sqlite:"), "{e}");
    }

    #[test]
    fn validate_checks_the_dsn_against_the_driver() {
        let ok = [
            (
                SqlDriver::Postgres,
                "postgres://berth:pw@db:5432/berth?sslmode=require",
            ),
            (SqlDriver::Postgres, "postgresql://db/berth"),
            (SqlDriver::Mysql, "mysql://berth:pw@db:3306/berth"),
            (
                SqlDriver::Mysql,
                "berth:pw@tcp(db:3306)/berth?parseTime=true&loc=UTC",
            ),
            (SqlDriver::Sqlite, "sqlite:///var/lib/berth/berth.db"),
            (SqlDriver::Sqlite, "sqlite::memory:"),
        ];
        for (d, dsn) in ok {
            SqlStoreConfig::new(d, dsn, Migrate::Auto)
                .validate()
                .unwrap_or_else(|e| panic!("{d} {dsn}: {e}"));
        }
        let bad = [
            (SqlDriver::Postgres, "mysql://berth:pw-1@db/berth"),
            (SqlDriver::Mysql, "postgres://berth:pw-1@db/berth"),
            (SqlDriver::Mysql, "berth:pw-1@tcp(db:3306)/berth?loc=Local"),
            (SqlDriver::Sqlite, "postgres://berth:pw-1@db/berth"),
        ];
        for (d, dsn) in bad {
            let e = SqlStoreConfig::new(d, dsn, Migrate::Auto)
                .validate()
                .expect_err(dsn)
                .to_string();
            assert!(e.contains("--sql-dsn") && !e.contains("pw-1"), "{e}");
        }
    }

    #[test]
    fn dsn_or_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let both = SqlStoreConfig::from_dsn_or_file(
            SqlDriver::Sqlite,
            Some("sqlite::memory:".into()),
            Some(dir.path().join("x")),
            Migrate::Auto,
        )
        .unwrap_err()
        .to_string();
        assert!(
            both.contains("--sql-dsn") && both.contains("--sql-dsn-file"),
            "{both}"
        );
        let neither =
            SqlStoreConfig::from_dsn_or_file(SqlDriver::Sqlite, None, None, Migrate::Auto)
                .unwrap_err()
                .to_string();
        assert!(neither.contains("--sql-dsn or --sql-dsn-file"), "{neither}");

        let missing = dir.path().join("missing");
        let e =
            SqlStoreConfig::from_dsn_or_file(SqlDriver::Sqlite, None, Some(missing), Migrate::Auto)
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("failed to read --sql-dsn-file"), "{e}");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n\t\n").unwrap();
        let e =
            SqlStoreConfig::from_dsn_or_file(SqlDriver::Sqlite, None, Some(empty), Migrate::Auto)
                .unwrap_err()
                .to_string();
        assert!(e.contains("is empty"), "{e}");

        let file = dir.path().join("dsn");
        std::fs::write(&file, "  postgres://berth:pw-in-file@db/berth\n").unwrap();
        let cfg =
            SqlStoreConfig::from_dsn_or_file(SqlDriver::Postgres, None, Some(file), Migrate::Off)
                .unwrap();
        assert_eq!(
            cfg.dsn.expose_secret(),
            "postgres://berth:pw-in-file@db/berth"
        );
        assert_eq!(cfg.migrate, Migrate::Off);
        assert!(!format!("{cfg:?}").contains("pw-in-file"));
    }
}
