//! Test helpers: fresh databases on the servers named by `BERTH_TEST_POSTGRES_DSN` /
//! `BERTH_TEST_MYSQL_DSN`, dropped again when the guard goes out of scope.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use berth_core::{LeaseService, LeaseStore};
use berth_store_sql::{Migrate, SqlDriver, SqlStore, SqlStoreConfig};
use rand::Rng;
use sqlx::Connection;

pub const POSTGRES_ENV: &str = "BERTH_TEST_POSTGRES_DSN";
pub const MYSQL_ENV: &str = "BERTH_TEST_MYSQL_DSN";

/// The admin DSN from `var`, or `None` after printing why the test is skipped. Panics instead
/// when `BERTH_REQUIRE_INTEGRATION=1`.
pub fn admin_dsn(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            if std::env::var("BERTH_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
                panic!("{test}: {var} is not set and BERTH_REQUIRE_INTEGRATION=1");
            }
            eprintln!("skipped: set {var} to run {test} (hack/sql-test-env.sh prints it)");
            None
        }
    }
}

/// A `mysql://` URL for a Go-form or URL DSN, for the admin connection.
pub fn mysql_url(dsn: &str) -> String {
    if dsn.contains("://") {
        return dsn.to_string();
    }
    let slash = dsn.rfind('/').expect("go dsn has /db");
    let (head, tail) = dsn.split_at(slash);
    let (creds, addr) = match head.rfind('@') {
        Some(at) => (&head[..at], &head[at + 1..]),
        None => ("", head),
    };
    let addr = addr
        .trim_start_matches("tcp(")
        .trim_end_matches(')')
        .to_string();
    let db = tail[1..].split('?').next().unwrap_or("");
    let creds = if creds.is_empty() {
        String::new()
    } else {
        format!("{creds}@")
    };
    format!("mysql://{creds}{addr}/{db}")
}

/// `dsn` pointing at database `db` instead (URL or Go form).
pub fn with_database(dsn: &str, db: &str) -> String {
    if dsn.contains("://") {
        let mut url = url::Url::parse(dsn).expect("admin dsn is a url");
        url.set_path(&format!("/{db}"));
        return url.to_string();
    }
    let slash = dsn.rfind('/').expect("go dsn has /db");
    let (head, tail) = dsn.split_at(slash);
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{head}/{db}{query}")
}

/// A database created for one test and dropped with the guard.
pub struct TestDb {
    pub driver: SqlDriver,
    pub dsn: String,
    admin: String,
    name: String,
}

impl TestDb {
    pub async fn postgres(test: &str) -> Option<Self> {
        let admin = admin_dsn(POSTGRES_ENV, test)?;
        let name = random_name();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to BERTH_TEST_POSTGRES_DSN");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        Some(Self {
            driver: SqlDriver::Postgres,
            dsn: with_database(&admin, &name),
            admin,
            name,
        })
    }

    pub async fn mysql(test: &str) -> Option<Self> {
        let admin = admin_dsn(MYSQL_ENV, test)?;
        let name = random_name();
        let mut conn = sqlx::MySqlConnection::connect(&mysql_url(&admin))
            .await
            .expect("connect to BERTH_TEST_MYSQL_DSN");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} CHARACTER SET utf8mb4"
        )))
        .execute(&mut conn)
        .await
        .expect("create test database");
        Some(Self {
            driver: SqlDriver::Mysql,
            dsn: with_database(&admin, &name),
            admin,
            name,
        })
    }

    pub fn config(&self, migrate: Migrate) -> SqlStoreConfig {
        let mut cfg = SqlStoreConfig::new(self.driver, self.dsn.clone(), migrate);
        cfg.max_connections = 8;
        cfg
    }

    pub async fn store(&self) -> SqlStore {
        SqlStore::connect(self.config(Migrate::Auto))
            .await
            .expect("connect to the test database")
    }

    /// Runs `sql` on the test database directly.
    pub async fn exec(&self, sql: &str) {
        match self.driver {
            SqlDriver::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.dsn)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .expect("exec");
            }
            SqlDriver::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&mysql_url(&self.dsn))
                    .await
                    .expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .expect("exec");
            }
            SqlDriver::Sqlite => unreachable!("sqlite tests use files"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (driver, admin, name) = (self.driver, self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a fresh thread with its own runtime can block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                match driver {
                    SqlDriver::Postgres => {
                        let mut c = sqlx::PgConnection::connect(&admin).await?;
                        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await
                        .map(drop)
                    }
                    SqlDriver::Mysql => {
                        let mut c = sqlx::MySqlConnection::connect(&mysql_url(&admin)).await?;
                        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name}"
                        )))
                        .execute(&mut c)
                        .await
                        .map(drop)
                    }
                    SqlDriver::Sqlite => Ok(()),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

pub fn random_name() -> String {
    let n: u64 = rand::rng().random();
    format!("berth_test_{n:016x}")
}

/// A `LeaseService` on `store` judged by the store's own clock.
pub fn service(store: &SqlStore) -> LeaseService {
    LeaseService::new(Arc::new(store.clone()), Arc::new(store.clock()))
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers.
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A TCP proxy to `target`; aborting the returned handle's tasks cuts every connection.
pub struct Proxy {
    pub port: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        Self::start_on(0, target).await
    }

    /// A proxy on a given port (0 for any).
    pub async fn start_on(port: u16, target: String) -> Self {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let mut rx_accept = rx.clone();
                tokio::select! {
                    _ = rx_accept.changed() => return,
                    accepted = l.accept() => {
                        let Ok((mut inbound, _)) = accepted else { return };
                        let target = target.clone();
                        let mut rx_conn = rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                            tokio::select! {
                                _ = rx_conn.changed() => {}
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            }
                        });
                    }
                }
            }
        });
        Self { port, stop }
    }

    /// Closes the listener and every proxied connection.
    pub fn cut(&self) {
        let _ = self.stop.send(true);
    }
}

/// Host and port of a URL or Go-form DSN.
pub fn host_port(dsn: &str, default_port: u16) -> String {
    let url = if dsn.contains("://") {
        dsn.to_string()
    } else {
        mysql_url(dsn)
    };
    let u = url::Url::parse(&url).expect("url");
    format!(
        "{}:{}",
        u.host_str().expect("host"),
        u.port().unwrap_or(default_port)
    )
}

/// `dsn` with its host and port replaced by 127.0.0.1:`port`.
pub fn via_port(dsn: &str, port: u16) -> String {
    let url = if dsn.contains("://") {
        dsn.to_string()
    } else {
        mysql_url(dsn)
    };
    let mut u = url::Url::parse(&url).expect("url");
    u.set_host(Some("127.0.0.1")).expect("host");
    u.set_port(Some(port)).expect("port");
    u.to_string()
}

pub const SHORT: Duration = Duration::from_secs(2);

pub fn dyn_store(s: &SqlStore) -> Arc<dyn LeaseStore> {
    Arc::new(s.clone())
}
