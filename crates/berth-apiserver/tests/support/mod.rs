//! Helpers for tests that run the real `berth-apiserver` binary: a throw-away CA and serving
//! certificate, a server process on free loopback ports with its log captured, fresh
//! PostgreSQL / MariaDB databases from `BERTH_TEST_POSTGRES_DSN` / `BERTH_TEST_MYSQL_DSN`, and
//! latency statistics.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use sqlx::Connection as _;

pub mod race;

/// The server binary built by cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_berth-apiserver");
/// Admin DSN of a PostgreSQL server on which tests create their own databases.
pub const POSTGRES_ENV: &str = "BERTH_TEST_POSTGRES_DSN";
/// Admin DSN of a MariaDB/MySQL server on which tests create their own databases.
pub const MYSQL_ENV: &str = "BERTH_TEST_MYSQL_DSN";
/// Turns skips into failures.
pub const REQUIRE_ENV: &str = "BERTH_REQUIRE_INTEGRATION";
/// How long a server may take to log `listening` on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Log filter that keeps start-up and warnings but drops the per-request access lines.
pub const QUIET_LOG: &str = "info,berth_apiserver::observe=warn";

/// Whether `BERTH_REQUIRE_INTEGRATION=1`.
pub fn integration_required() -> bool {
    std::env::var(REQUIRE_ENV).as_deref() == Ok("1")
}

/// A CA and a serving certificate for `localhost` / `127.0.0.1`, written to a temporary
/// directory.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA certificate (PEM) clients trust.
    pub ca_pem: String,
    /// Serving certificate file.
    pub cert: PathBuf,
    /// Serving key file.
    pub key: PathBuf,
}

impl Pki {
    /// Generates a fresh CA and serving pair.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "berth test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        leaf.distinguished_name
            .push(DnType::CommonName, "berth-apiserver (test)");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, leaf_cert.pem()).expect("write cert");
        std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");
        Self {
            ca_pem: ca_cert.pem(),
            cert,
            key,
            dir,
        }
    }

    /// The directory holding the files, for other per-test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The TLS and auth flags of a server without authentication.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.cert.display().to_string(),
            "--tls-key-file".into(),
            self.key.display().to_string(),
            "--auth-mode".into(),
            "none".into(),
            "--allow-unauthenticated".into(),
        ]
    }
}

/// A running `berth-apiserver` child process; killed (SIGKILL) when dropped.
pub struct Apiserver {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// `https://127.0.0.1:PORT`.
    pub base: String,
    ca_pem: String,
    name: String,
}

impl Apiserver {
    /// Starts the binary with `pki`'s TLS flags, free ports and `args`, and waits until it logs
    /// `listening` and answers `/healthz`. Panics with the server's log if it exits first.
    pub async fn start(name: &str, pki: &Pki, args: &[String]) -> Self {
        let mut all = pki.server_args();
        all.extend(
            [
                "--listen-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "",
                "--log-format",
                "json",
            ]
            .map(String::from),
        );
        if !args.iter().any(|a| a == "--log-level") {
            all.extend(["--log-level".to_owned(), QUIET_LOG.to_owned()]);
        }
        all.extend_from_slice(args);
        let mut child = Command::new(BIN)
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth-apiserver");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut server = Self {
            child,
            log,
            base: String::new(),
            ca_pem: pki.ca_pem.clone(),
            name: name.to_owned(),
        };
        let addr = server.wait_for_addr("listening").await;
        let port = addr.rsplit(':').next().expect("port").to_owned();
        server.base = format!("https://127.0.0.1:{port}");
        server.wait_healthy().await;
        server
    }

    async fn wait_for_addr(&mut self, message: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self.log.lock().expect("log lock").iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == message)
                    .then(|| v["addr"].as_str().map(str::to_owned))
                    .flatten()
            });
            if let Some(addr) = found {
                return addr;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{}: berth-apiserver exited ({status}) before listening; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {message:?} log line within {START_TIMEOUT:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_healthy(&mut self) {
        let client = self.client();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match client.healthz().await {
                Ok(()) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "{}: /healthz never answered: {e}; log:\n{}",
                    self.name,
                    self.log_text()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client of this server that trusts the test CA, with a 30 s request timeout.
    pub fn client(&self) -> berth_client::Client {
        self.client_with_timeout(Duration::from_secs(30))
    }

    /// A client of this server with the given request timeout.
    pub fn client_with_timeout(&self, timeout: Duration) -> berth_client::Client {
        berth_client::Client::builder(self.base.clone())
            .ca_pem(self.ca_pem.clone().into_bytes())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// The captured stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// The captured JSON log records with this `message`.
    pub fn log_records(&self, message: &str) -> Vec<Value> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap; returns the exit status (which is never success).
    pub fn kill9(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL berth-apiserver");
        self.child.wait().expect("reap berth-apiserver")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` (plus free ports) to completion within 60 s; returns the exit
/// code and stderr.
pub fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--listen-addr", "127.0.0.1:0", "--metrics-addr", ""])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth-apiserver");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth-apiserver {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), reader.join().expect("stderr reader"))
}

/// The lines of `stderr` that are not JSON log records.
pub fn plain_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && serde_json::from_str::<Value>(l).is_err())
        .collect()
}

/// Which SQL server a [`TestDb`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// MariaDB or MySQL.
    Mysql,
}

impl Engine {
    /// The `--sql-driver` value.
    pub fn driver(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Self::Postgres => POSTGRES_ENV,
            Self::Mysql => MYSQL_ENV,
        }
    }
}

/// A database created for one test on the server named by the engine's environment variable,
/// dropped again with the guard.
pub struct TestDb {
    /// The engine.
    pub engine: Engine,
    /// DSN of the fresh database (URL form).
    pub dsn: String,
    admin: String,
    name: String,
}

/// `dsn` (URL form) with its path replaced by `/db`, query kept.
fn with_database(dsn: &str, db: &str) -> String {
    let scheme_end = dsn.find("://").map_or(0, |i| i + 3);
    let (head, rest) = dsn.split_at(scheme_end);
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{head}{authority}/{db}{query}")
}

/// The URL form of a Go-style MySQL DSN (`user:pass@tcp(host:port)/db?…`); URLs unchanged.
fn mysql_url(dsn: &str) -> String {
    if dsn.contains("://") {
        return dsn.to_owned();
    }
    let (head, tail) = dsn.split_at(dsn.rfind('/').expect("mysql dsn has /db"));
    let (creds, addr) = head.rsplit_once('@').unwrap_or(("", head));
    let addr = addr.trim_start_matches("tcp(").trim_end_matches(')');
    let creds = if creds.is_empty() {
        String::new()
    } else {
        format!("{creds}@")
    };
    format!("mysql://{creds}{addr}{tail}")
}

impl TestDb {
    /// A fresh database on `engine`'s server, or `None` after printing why the test is skipped
    /// (a panic instead with `BERTH_REQUIRE_INTEGRATION=1`).
    pub async fn create(engine: Engine, test: &str) -> Option<Self> {
        let var = engine.env();
        let admin = match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
            _ => {
                assert!(
                    !integration_required(),
                    "{test}: {var} is not set and {REQUIRE_ENV}=1"
                );
                eprintln!("skipped: set {var} to run {test} (hack/sql-test-env.sh prints it)");
                return None;
            }
        };
        let admin = match engine {
            Engine::Postgres => admin,
            Engine::Mysql => mysql_url(&admin),
        };
        let n: u64 = rand::rng().random();
        let name = format!("berth_e2e_{n:016x}");
        let create = match engine {
            Engine::Postgres => format!("CREATE DATABASE {name}"),
            Engine::Mysql => format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
        };
        exec_on(engine, &admin, &create)
            .await
            .unwrap_or_else(|e| panic!("{test}: create a database through {var}: {e}"));
        Some(Self {
            engine,
            dsn: with_database(&admin, &name),
            admin,
            name,
        })
    }

    /// Runs `sql` on this test database.
    pub async fn exec(&self, sql: &str) {
        exec_on(self.engine, &self.dsn, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The `--store-backend sql` flags for this database.
    pub fn store_args(&self, migrate: &str) -> Vec<String> {
        [
            "--store-backend",
            "sql",
            "--sql-driver",
            self.engine.driver(),
            "--sql-dsn",
            &self.dsn,
            "--sql-migrate",
            migrate,
        ]
        .map(String::from)
        .to_vec()
    }
}

async fn exec_on(engine: Engine, dsn: &str, sql: &str) -> Result<(), sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match engine {
        Engine::Postgres => {
            let mut c = sqlx::PgConnection::connect(dsn).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
        Engine::Mysql => {
            let mut c = sqlx::MySqlConnection::connect(dsn).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (engine, admin, name) = (self.engine, self.admin.clone(), self.name.clone());
        let drop_sql = match engine {
            Engine::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            Engine::Mysql => format!("DROP DATABASE IF EXISTS {name}"),
        };
        // Drop runs inside the test's runtime; a thread with its own runtime may block.
        let result = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(exec_on(engine, &admin, &drop_sql))
        })
        .join();
        if let Ok(Err(e)) = result {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// The `p`-quantile (0..=1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Prints one line of figures for `lat` (sorted in place) measured over `wall`.
pub fn report(what: &str, lat: &mut [Duration], wall: Duration) {
    lat.sort();
    #[allow(clippy::cast_precision_loss)]
    let rate = lat.len() as f64 / wall.as_secs_f64();
    println!(
        "{what:<34} {n:>6} ops in {wall:>8.2?}: {rate:>7.0} ops/s, p50 {p50:>8.2?}, p99 {p99:>8.2?}, max {max:>8.2?}",
        n = lat.len(),
        p50 = percentile(lat, 0.50),
        p99 = percentile(lat, 0.99),
        max = lat.last().copied().unwrap_or_default(),
    );
}

/// `ttlRemainingMillis` as a duration (negative values as zero).
pub fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Parses a `Debug`-formatted [`Duration`] (`850ns`, `25.3µs`, `12.5ms`, `1.2s`).
pub fn parse_debug_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "µs" | "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}
