//! The short chaos tier: runs of `berth_chaos::harness` against real `berth-apiserver`
//! processes with fixed seeds — 8 clients acquire, renew, release and act on 3 keys (TTL 2 s)
//! through a fault-injecting proxy per replica while the nemesis kills, pauses, partitions and
//! slows replicas (and cuts them off their database). Every run must be free of violations, and
//! the checker must find the forged overlap added to a copy of its history.
//!
//! One replica on SQLite; two on PostgreSQL (`BERTH_TEST_POSTGRES_DSN`) and on MariaDB
//! (`BERTH_TEST_MYSQL_DSN`), each on a fresh database created and dropped per run. The server
//! binary is looked up next to the test binary's target directory
//! (`cargo build -p berth-apiserver`). `BERTH_CHAOS_DURATION_SECS` and `BERTH_CHAOS_SEED`
//! override run length and seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Duration;

use berth_chaos::database::StoreKind;
use berth_chaos::harness::{self, Config};
use berth_chaos::nemesis::FaultKind;

fn integration_required() -> bool {
    std::env::var("BERTH_REQUIRE_INTEGRATION").as_deref() == Ok("1")
}

fn skip(test: &str, why: &str) {
    assert!(
        !integration_required(),
        "{test}: {why} and BERTH_REQUIRE_INTEGRATION=1"
    );
    println!("skipped: {test}: {why}");
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok())
}

/// The configuration of a short-tier run, or `None` after printing why it is skipped.
fn config(test: &str, store: StoreKind, secs: u64, seed: u64) -> Option<Config> {
    let Some(bin) = harness::default_apiserver_bin() else {
        skip(
            test,
            "berth-apiserver is not built next to the test binary (cargo build -p berth-apiserver)",
        );
        return None;
    };
    let mut cfg = Config::new(test, store, &bin);
    if let Some(var) = store.dsn_env() {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => cfg.admin_dsn = Some(v.trim().to_owned()),
            _ => {
                skip(
                    test,
                    &format!("{var} is not set (hack/sql-test-env.sh prints it)"),
                );
                return None;
            }
        }
    }
    cfg.duration = Duration::from_secs(env_u64("BERTH_CHAOS_DURATION_SECS").unwrap_or(secs));
    cfg.seed = env_u64("BERTH_CHAOS_SEED").unwrap_or(seed);
    Some(cfg)
}

async fn run_and_check(cfg: Config) {
    let name = cfg.name.clone();
    let report = harness::run(cfg).await.expect("chaos run");
    print!("{report}");
    assert!(report.is_safe(), "{name}: safety violations");
    let counts = report.history.result_counts();
    assert!(counts[0] > 10, "{name}: too few grants to mean anything");
    assert!(report.faults.len() >= 2, "{name}: too few faults");
    assert!(!report.acts.is_empty(), "{name}: no client ever acted");
    assert!(
        report.handles.grants > 0 && report.handles.acts > 0,
        "{name}: the LeaseHandle clients never held a lease: {:?}",
        report.handles
    );
    let forged = report
        .forged_overlap()
        .unwrap_or_else(|| panic!("{name}: the forged overlapping grant was not reported"));
    println!("{name}: forged history reported:\n{forged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_sqlite_one_replica() {
    if let Some(cfg) = config(
        "chaos_sqlite_one_replica",
        StoreKind::Sqlite,
        14,
        0x5EED_0001,
    ) {
        run_and_check(cfg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_postgres_two_replicas() {
    if let Some(cfg) = config(
        "chaos_postgres_two_replicas",
        StoreKind::Postgres,
        16,
        0x5EED_0002,
    ) {
        run_and_check(cfg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_mysql_two_replicas() {
    if let Some(cfg) = config(
        "chaos_mysql_two_replicas",
        StoreKind::Mysql,
        16,
        0x5EED_0003,
    ) {
        run_and_check(cfg).await;
    }
}

/// Two replicas on a private PostgreSQL server that the nemesis also `kill -9`s and restarts
/// (crash recovery): acknowledged grants must survive (the final-token check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_private_postgres_killed() {
    let test = "chaos_private_postgres_killed";
    let Some(pg_bin) = berth_chaos::pgserver::find_bin_dir() else {
        skip(
            test,
            "no PostgreSQL server binaries (apt-get install postgresql, or BERTH_CHAOS_PG_BIN)",
        );
        return;
    };
    // The admin DSN is the private server's: no BERTH_TEST_POSTGRES_DSN needed.
    let Some(mut cfg) = config(test, StoreKind::Sqlite, 16, 0x5EED_0004) else {
        return;
    };
    cfg.store = StoreKind::Postgres;
    cfg.replicas = 2;
    cfg.store_timeout = Some(cfg.ttl / 2);
    cfg.private_postgres = Some(pg_bin);
    cfg.faults = vec![FaultKind::DbKill, FaultKind::Kill, FaultKind::DbPartition];
    let name = cfg.name.clone();
    let report = harness::run(cfg).await.expect("chaos run");
    print!("{report}");
    assert!(report.is_safe(), "{name}: safety violations");
    assert!(
        report.faults.iter().any(|f| f.kind == FaultKind::DbKill),
        "{name}: the database was never killed"
    );
    assert!(
        report.history.result_counts()[0] > 10,
        "{name}: too few grants"
    );
}
