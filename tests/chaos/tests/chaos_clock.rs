//! Clock faults (libfaketime, `berth_chaos::faketime`): chaos runs whose replicas' clocks are
//! shifted and run fast or slow. Each run first checks with `faketime::probe` that libfaketime
//! really changes a Rust binary's `SystemTime` and `Instant`.
//!
//! - PostgreSQL, 2 replicas at `+30s x1.5` and `-20s x0.7`: the database's clock judges expiry,
//!   so replica clocks must not matter.
//! - k8s, 2 replicas at `+30s x1.0005` and `-20s`: `KubeClock` follows the kube-apiserver and
//!   allows 1 ms/s of local drift both ways, so an offset does not matter and a rate within the
//!   allowance must not either.
//! - k8s, one replica at x1.5: outside the allowance. The run records what happens (an early
//!   expiry is the documented limit, `docs/safety.md`); it may only cost overlapping windows,
//!   never a token repeated, decreased or lost.
//! - SQLite, 1 replica at `-45s`: the process monotonic clock judges expiry.
//!
//! Needs `BERTH_TEST_LIBFAKETIME` (`eval "$(bash hack/chaos-test-env.sh)"`), the built
//! `berth-apiserver`, and for the other stores `BERTH_TEST_POSTGRES_DSN` or the kube test env.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_chaos::database::StoreKind;
use berth_chaos::faketime::{self, FakeTime};
use berth_chaos::harness::{self, Config, Report};
use berth_chaos::history::ViolationKind;
use berth_chaos::tier;

const PROBE: &str = env!("CARGO_BIN_EXE_berth-chaos-child");

/// libfaketime and the server binary, or `None` after a skip.
fn setup(test: &str, store: StoreKind, secs: u64, seed: u64) -> Option<(PathBuf, Config)> {
    let Some(lib) = tier::env_var(faketime::LIB_ENV) else {
        tier::skip(
            test,
            "BERTH_TEST_LIBFAKETIME is not set (eval \"$(bash hack/chaos-test-env.sh)\")",
        );
        return None;
    };
    let bin = tier::workspace_bin_or_skip(test, "berth-apiserver", "berth-apiserver")?;
    let mut cfg = Config::new(test, store, &bin);
    cfg.duration = Duration::from_secs(tier::env_u64("BERTH_CHAOS_DURATION_SECS").unwrap_or(secs));
    cfg.seed = tier::env_u64("BERTH_CHAOS_SEED").unwrap_or(seed);
    Some((PathBuf::from(lib), cfg))
}

/// Probes every fake clock, runs `cfg` with replica `i` under `fakes[i]`, prints the report.
async fn run_with_clocks(mut cfg: Config, lib: &Path, fakes: &[FakeTime]) -> Report {
    for f in fakes {
        let probed = faketime::probe(lib, *f, Path::new(PROBE)).expect("libfaketime probe");
        println!(
            "{}: FAKETIME={:?} measured on a Rust binary: offset {:+.3} s, wall x{:.4}, \
             Instant x{:.4}",
            cfg.name,
            f.spec(),
            probed.offset_secs,
            probed.wall_rate,
            probed.mono_rate
        );
    }
    cfg.replicas = fakes.len();
    cfg.replica_env = fakes.iter().map(|f| f.env(lib)).collect();
    let clocks: Vec<String> = fakes.iter().map(FakeTime::spec).collect();
    println!("{}: replica clocks {clocks:?}", cfg.name);
    let report = harness::run(cfg).await.expect("chaos run");
    print!("{report}");
    report
}

fn assert_safe(report: &Report) {
    let name = &report.config.name;
    assert!(report.is_safe(), "{name}: safety violations");
    assert!(
        report.history.result_counts()[0] > 10,
        "{name}: too few grants to mean anything"
    );
    assert!(report.faults.len() >= 2, "{name}: too few faults");
}

/// A k8s run's configuration on a fresh test cluster (kept alive by the returned value).
async fn k8s(test: &str, seed: u64) -> Option<(PathBuf, Config, berth_e2e::TestCluster)> {
    let (lib, mut cfg) = setup(test, StoreKind::Sqlite, 20, seed)?;
    let cluster = berth_e2e::cluster_or_skip_with(berth_e2e::ClusterOptions::default()).await?;
    let ns = cluster.create_namespace("chaos").await.expect("namespace");
    cfg.custom_store = Some(tier::k8s_store(cluster.kubeconfig_path(), &ns));
    cfg.store_timeout = None;
    Some((lib, cfg, cluster))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_postgres_two_replicas_skewed_and_fast_and_slow() {
    const TEST: &str = "clock_postgres_two_replicas_skewed_and_fast_and_slow";
    let Some((lib, mut cfg)) = setup(TEST, StoreKind::Postgres, 16, 0x5EED_C001) else {
        return;
    };
    let Some(dsn) = tier::env_var("BERTH_TEST_POSTGRES_DSN") else {
        tier::skip(
            TEST,
            "BERTH_TEST_POSTGRES_DSN is not set (hack/sql-test-env.sh)",
        );
        return;
    };
    cfg.admin_dsn = Some(dsn);
    let report = run_with_clocks(
        cfg,
        &lib,
        &[FakeTime::new(30, 1.5), FakeTime::new(-20, 0.7)],
    )
    .await;
    assert_safe(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_k8s_two_replicas_skewed_within_the_drift_allowance() {
    const TEST: &str = "clock_k8s_two_replicas_skewed_within_the_drift_allowance";
    let Some((lib, cfg, _cluster)) = k8s(TEST, 0x5EED_C002).await else {
        return;
    };
    let report =
        run_with_clocks(cfg, &lib, &[FakeTime::new(30, 1.0005), FakeTime::skew(-20)]).await;
    assert_safe(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_k8s_fast_replica_outside_the_drift_allowance() {
    const TEST: &str = "clock_k8s_fast_replica_outside_the_drift_allowance";
    let Some((lib, cfg, _cluster)) = k8s(TEST, 0x5EED_C003).await else {
        return;
    };
    let report = run_with_clocks(cfg, &lib, &[FakeTime::new(0, 1.5), FakeTime::skew(0)]).await;
    let kinds: Vec<ViolationKind> = report.violations.iter().map(|v| v.kind).collect();
    println!(
        "{TEST}: outside the assumption: {} overlapping grant windows, {} clients acting at once",
        kinds
            .iter()
            .filter(|k| **k == ViolationKind::Overlap)
            .count(),
        report.act_violations.len()
    );
    assert!(
        kinds.iter().all(|k| *k == ViolationKind::Overlap),
        "{TEST}: a fast clock may free a lease early, but never repeat, lower or lose a token: \
         {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_sqlite_one_replica_skewed() {
    const TEST: &str = "clock_sqlite_one_replica_skewed";
    let Some((lib, cfg)) = setup(TEST, StoreKind::Sqlite, 12, 0x5EED_C004) else {
        return;
    };
    let report = run_with_clocks(cfg, &lib, &[FakeTime::skew(-45)]).await;
    assert_safe(&report);
}
