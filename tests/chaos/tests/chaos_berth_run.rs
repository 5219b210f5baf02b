//! `berth run` under chaos (`berth_chaos::berth_run`): three `berth run` processes compete for
//! one lease on a SQLite replica; their children write to a fenced resource; the nemesis
//! freezes whole `berth run` process groups for longer than the TTL and kills and pauses the
//! replica. Children of different holders must never write at once except in the documented
//! window after a frozen group resumes, and the resource must refuse every write made in it.
//!
//! Needs `cargo build -p berth-apiserver -p berth-cli` (looked up next to the test binary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::Duration;

use berth_chaos::berth_run::{self, Config};
use berth_chaos::tier;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_berth_run_three_clients() {
    const TEST: &str = "chaos_berth_run_three_clients";
    let Some(apiserver) = tier::workspace_bin_or_skip(TEST, "berth-apiserver", "berth-apiserver")
    else {
        return;
    };
    let Some(berth) = tier::workspace_bin_or_skip(TEST, "berth", "berth-cli") else {
        return;
    };
    let child = Path::new(env!("CARGO_BIN_EXE_berth-chaos-child"));
    let mut cfg = Config::new(TEST, &berth, child, &apiserver);
    cfg.duration = Duration::from_secs(tier::env_u64("BERTH_CHAOS_DURATION_SECS").unwrap_or(24));
    cfg.seed = tier::env_u64("BERTH_CHAOS_SEED").unwrap_or(0x5EED_00B1);
    let report = berth_run::run(cfg).await.expect("berth run chaos run");
    print!("{report}");
    assert!(report.is_safe(), "{TEST}: violations");
    let holders: std::collections::BTreeSet<_> =
        report.journal.lives.iter().map(|l| &l.holder).collect();
    assert!(holders.len() >= 2, "{TEST}: the lease never changed hands");
    assert!(
        !report.group_pauses.is_empty(),
        "{TEST}: no berth run group was frozen"
    );
    for w in &report.checked.windows {
        assert_eq!(w.accepted, 0, "a stale child's write got through: {w:?}");
    }
}
