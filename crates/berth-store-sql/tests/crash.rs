//! Crash safety: a child process acquires leases and reports each acknowledged grant, is killed
//! with SIGKILL mid-stream, and every acknowledged lease is still there, with its token, when
//! the store is reopened on the same SQLite file or database.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_core::{Acquire, Holder, LeaseKey, Release};
use berth_store_sql::{Migrate, SqlDriver, SqlStore, SqlStoreConfig};
use common::{TestDb, service};

const CHILD_ENV: &str = "BERTH_SQL_CRASH_CHILD";
const NAMESPACE: &str = "crash";

/// The child: acquires `k0`, `k1`, … forever (each twice, so tokens reach 2) and prints
/// `ACK <name> <token>` after each acknowledged grant. Run only by the tests below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the crash tests"]
async fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        // `cargo test -- --ignored` runs it too; it has work only as the crash tests' child.
        eprintln!("crash_child: {CHILD_ENV} is not set; this is the crash tests' child process");
        return;
    };
    let (driver, dsn) = spec.split_once(' ').expect("driver and dsn");
    let store = SqlStore::connect(SqlStoreConfig::new(
        driver.parse::<SqlDriver>().expect("driver"),
        dsn,
        Migrate::Auto,
    ))
    .await
    .expect("child connects");
    let svc = service(&store);
    let me = Holder::new("child").expect("holder");
    let ttl = Duration::from_secs(3600);
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let key = LeaseKey::new(NAMESPACE, format!("k{i}")).expect("key");
        let Ok(Acquire::Granted { lease, .. }) = svc.acquire(&key, &me, ttl).await else {
            panic!("first grant")
        };
        let Ok(Release::Released(_)) = svc
            .release(&key, &me, lease.record.fencing_token.get())
            .await
        else {
            panic!("release")
        };
        let Ok(Acquire::Granted { lease, .. }) = svc.acquire(&key, &me, ttl).await else {
            panic!("second grant")
        };
        writeln!(out, "ACK k{i} {}", lease.record.fencing_token.get()).expect("stdout");
        out.flush().expect("flush");
    }
}

/// Runs the child on `driver`/`dsn`, kills it after `acks` acknowledgements, and checks them.
async fn kill_and_reopen(driver: SqlDriver, dsn: &str, acks: usize) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{driver} {dsn}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked: Vec<(String, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < acks {
        assert!(
            Instant::now() < deadline,
            "child too slow: {} acks",
            acked.len()
        );
        let line = lines
            .next()
            .expect("child exited early")
            .expect("read child output");
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (name, token) = rest.split_once(' ').expect("ACK name token");
            acked.push((name.to_string(), token.parse().expect("token")));
        }
    }
    child.kill().expect("SIGKILL the child");
    // Lines already written before the kill were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some((name, token)) = line.strip_prefix("ACK ").and_then(|r| r.split_once(' ')) {
            acked.push((name.to_string(), token.parse().expect("token")));
        }
    }
    let status = child.wait().expect("reap");
    assert!(!status.success(), "the child was killed");

    let store = SqlStore::connect(SqlStoreConfig::new(driver, dsn, Migrate::Off))
        .await
        .expect("reopen after the crash");
    let svc = service(&store);
    for (name, token) in &acked {
        let key = LeaseKey::new(NAMESPACE, name.as_str()).expect("key");
        let v = svc
            .get(&key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged lease {name} is missing after the crash"));
        assert_eq!(
            v.live_holder().map(Holder::as_str),
            Some("child"),
            "{name} is still held"
        );
        assert_eq!(
            v.record.fencing_token.get(),
            *token,
            "{name} kept its token"
        );
    }
    assert!(acked.len() >= acks);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_keeps_acknowledged_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dsn = format!("sqlite://{}", dir.path().join("berth.db").display());
    kill_and_reopen(SqlDriver::Sqlite, &dsn, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_keeps_acknowledged_leases() {
    if let Some(db) = TestDb::postgres("postgres_kill_9_keeps_acknowledged_leases").await {
        kill_and_reopen(SqlDriver::Postgres, &db.dsn, 40).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_kill_9_keeps_acknowledged_leases() {
    if let Some(db) = TestDb::mysql("mysql_kill_9_keeps_acknowledged_leases").await {
        kill_and_reopen(SqlDriver::Mysql, &db.dsn, 40).await;
    }
}
