//! The store under test: a SQLite file, or a fresh PostgreSQL / MariaDB database created
//! through an admin DSN for the run and dropped with the guard.

use std::net::SocketAddr;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use rand::Rng as _;

/// The store backend of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// One SQLite file (a single-replica store).
    Sqlite,
    /// PostgreSQL (several replicas on one database).
    Postgres,
    /// MariaDB or MySQL (several replicas on one database).
    Mysql,
}

impl StoreKind {
    /// `--sql-driver` value and report name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    /// The environment variable the test tier reads the admin DSN from.
    pub fn dsn_env(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some("BERTH_TEST_POSTGRES_DSN"),
            Self::Mysql => Some("BERTH_TEST_MYSQL_DSN"),
        }
    }
}

/// A DSN split as `scheme://[userinfo@]host[:port][/database][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// `postgres`, `postgresql`, `mysql`, `mariadb`.
    pub scheme: String,
    /// User (and `:password`), without the `@`.
    pub userinfo: Option<String>,
    /// Host name or address.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// Database name (may be empty).
    pub database: String,
    /// Query string including the `?`, or empty.
    pub query: String,
}

impl Dsn {
    /// Parses a URL-style DSN.
    ///
    /// # Errors
    ///
    /// No `://`, or a port that is not a number.
    pub fn parse(dsn: &str) -> Result<Self> {
        let Some((scheme, rest)) = dsn.split_once("://") else {
            bail!("DSN without scheme://");
        };
        let (rest, query) = match rest.find('?') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (
                h.to_owned(),
                Some(p.parse::<u16>().context("DSN port is not a number")?),
            ),
            _ => (hostport.to_owned(), None),
        };
        Ok(Self {
            scheme: scheme.to_owned(),
            userinfo,
            host,
            port,
            database: database.to_owned(),
            query: query.to_owned(),
        })
    }

    /// The default port of the scheme.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.scheme.as_str() {
            "mysql" | "mariadb" => 3306,
            _ => 5432,
        })
    }

    /// The user name (before any `:password`).
    pub fn user(&self) -> Option<&str> {
        self.userinfo
            .as_deref()
            .map(|u| u.split_once(':').map_or(u, |(user, _)| user))
    }

    /// The password, if the userinfo has one.
    pub fn password(&self) -> Option<&str> {
        self.userinfo
            .as_deref()
            .and_then(|u| u.split_once(':').map(|(_, p)| p))
    }

    /// The same DSN with another host and port.
    pub fn with_addr(&self, addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: Some(addr.port()),
            ..self.clone()
        }
    }

    /// The same DSN naming another database.
    pub fn with_database(&self, database: &str) -> Self {
        Self {
            database: database.to_owned(),
            ..self.clone()
        }
    }

    /// Resolves host and port to one socket address.
    ///
    /// # Errors
    ///
    /// The host does not resolve.
    pub async fn resolve(&self) -> Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port_or_default()))
            .await
            .with_context(|| format!("resolve {}", self.host))?
            .next()
            .with_context(|| format!("{} has no address", self.host))
    }
}

impl std::fmt::Display for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(u) = &self.userinfo {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "/{}{}", self.database, self.query)
    }
}

/// The database of one run; dropping it removes it (file or `DROP DATABASE`).
pub struct Database {
    /// The backend.
    pub kind: StoreKind,
    admin: Option<Dsn>,
    name: String,
    /// The DSN of the run's database (for SQLite a `sqlite://` file URL).
    pub dsn: String,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    /// Creates the run's database: a SQLite file in a temporary directory, or a fresh
    /// `berth_chaos_<random>` database through `admin_dsn` (with `psql` or `mysql`).
    ///
    /// # Errors
    ///
    /// No admin DSN for PostgreSQL/MariaDB, or creating the database failed.
    pub fn create(kind: StoreKind, admin_dsn: Option<&str>) -> Result<Self> {
        if kind == StoreKind::Sqlite {
            let dir = tempfile::tempdir().context("tempdir for SQLite")?;
            let dsn = format!("sqlite://{}", dir.path().join("berth.db").display());
            return Ok(Self {
                kind,
                admin: None,
                name: String::new(),
                dsn,
                _dir: Some(dir),
            });
        }
        let admin = Dsn::parse(admin_dsn.context("an admin DSN is required (--dsn)")?)?;
        let n: u64 = rand::rng().random();
        let name = format!("berth_chaos_{n:016x}");
        admin_sql(kind, &admin, &format!("CREATE DATABASE {name}"))?;
        let dsn = admin.with_database(&name).to_string();
        Ok(Self {
            kind,
            admin: Some(admin),
            name,
            dsn,
            _dir: None,
        })
    }

    /// `berth-apiserver` store arguments for a replica that reaches the database at `dsn`.
    pub fn server_args(&self, dsn: &str) -> Vec<String> {
        [
            "--store-backend",
            "sql",
            "--sql-driver",
            self.kind.as_str(),
            "--sql-dsn",
            dsn,
            "--sql-migrate",
            "auto",
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(admin) = &self.admin {
            let sql = match self.kind {
                StoreKind::Postgres => {
                    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
                }
                _ => format!("DROP DATABASE IF EXISTS {}", self.name),
            };
            let _ = admin_sql(self.kind, admin, &sql);
        }
    }
}

/// Runs one statement with the engine's command-line client.
fn admin_sql(kind: StoreKind, admin: &Dsn, sql: &str) -> Result<()> {
    let mut cmd = match kind {
        StoreKind::Postgres => {
            let mut c = Command::new("psql");
            c.args([
                admin.to_string().as_str(),
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                sql,
            ]);
            c
        }
        StoreKind::Mysql => {
            let mut c = Command::new("mysql");
            c.args([
                "-h",
                &admin.host,
                "-P",
                &admin.port_or_default().to_string(),
                "--protocol=TCP",
            ]);
            if let Some(u) = admin.user() {
                c.arg(format!("-u{u}"));
            }
            if let Some(p) = admin.password() {
                c.env("MYSQL_PWD", p);
            }
            c.args(["-e", sql]);
            c
        }
        StoreKind::Sqlite => return Ok(()),
    };
    let out = cmd
        .output()
        .with_context(|| format!("run the {} client", kind.as_str()))?;
    if !out.status.success() {
        bail!(
            "{} {sql}: {}",
            kind.as_str(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dsn_round_trips_and_rewrites() {
        let d = Dsn::parse("postgres://postgres@127.0.0.1:5432/test?sslmode=disable").unwrap();
        assert_eq!(d.host, "127.0.0.1");
        assert_eq!(d.port, Some(5432));
        assert_eq!(d.user(), Some("postgres"));
        assert_eq!(d.password(), None);
        assert_eq!(
            d.with_database("x").to_string(),
            "postgres://postgres@127.0.0.1:5432/x?sslmode=disable"
        );
        let m = Dsn::parse("mysql://root:pw@db/test").unwrap();
        assert_eq!(m.port_or_default(), 3306);
        assert_eq!(m.password(), Some("pw"));
        assert_eq!(
            m.with_addr(SocketAddr::from(([127, 0, 0, 1], 4000)))
                .to_string(),
            "mysql://root:pw@127.0.0.1:4000/test"
        );
        assert!(Dsn::parse("no-scheme").is_err());
    }
}
