//! Chaos on the Kubernetes store: two `berth-apiserver` replicas with `--store-backend k8s` on
//! one real test kube-apiserver (`berth_e2e::TestCluster`), the usual clients and replica
//! nemesis (`berth_chaos::harness`), and next to it a nemesis on the kube-apiserver itself:
//! `kill -9` + restart on the same port (etcd and its data kept) and `SIGSTOP` for longer than
//! the TTL + `SIGCONT`, alternating. Zero violations expected.
//!
//! Needs the kube test env (`eval "$(bash hack/kube-test-env.sh)"`) and the built
//! `berth-apiserver`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_chaos::database::StoreKind;
use berth_chaos::harness::{self, Config};
use berth_chaos::tier;
use berth_e2e::TestCluster;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// One fault on the kube-apiserver: kind, start and end (offsets from the nemesis start).
type ApiserverFault = (&'static str, Duration, Duration);

/// Resumes the kube-apiserver if the nemesis stops while it is paused.
struct Resume<'a>(&'a TestCluster, bool);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = self.0.resume_apiserver();
        }
    }
}

/// Alternates a pause of TTL + 0.3–1 s and `kill -9` + restart on the kube-apiserver, 1.5–3 s
/// apart, from 2 s in until `duration` minus the longest fault.
async fn apiserver_nemesis(
    cluster: &TestCluster,
    ttl: Duration,
    duration: Duration,
    seed: u64,
) -> Vec<ApiserverFault> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0CA7_5EED);
    let origin = Instant::now();
    let until = origin + duration;
    let mut faults = Vec::new();
    // A pause first: it takes a known time, a restart up to ~10 s on a busy machine.
    let mut kill = false;
    tokio::time::sleep(Duration::from_secs(2)).await;
    while Instant::now() + ttl + Duration::from_secs(8) < until {
        let start = origin.elapsed();
        if kill {
            let took = cluster
                .restart_apiserver()
                .await
                .expect("restart kube-apiserver");
            println!("kube-apiserver restarted in {} ms", took.as_millis());
            faults.push(("apiserver-kill", start, origin.elapsed()));
        } else {
            cluster.pause_apiserver().expect("pause kube-apiserver");
            let mut guard = Resume(cluster, true);
            tokio::time::sleep(ttl + Duration::from_millis(rng.random_range(300..1000))).await;
            cluster.resume_apiserver().expect("resume kube-apiserver");
            guard.1 = false;
            faults.push(("apiserver-pause", start, origin.elapsed()));
        }
        kill = !kill;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..3000))).await;
    }
    faults
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_k8s_two_replicas() {
    const TEST: &str = "chaos_k8s_two_replicas";
    let Some(bin) = tier::workspace_bin_or_skip(TEST, "berth-apiserver", "berth-apiserver") else {
        return;
    };
    let Some(cluster) = berth_e2e::cluster_or_skip_with(berth_e2e::ClusterOptions::default()).await
    else {
        return;
    };
    let ns = cluster.create_namespace("chaos").await.expect("namespace");
    let mut cfg = Config::new(TEST, StoreKind::Sqlite, &bin);
    cfg.replicas = 2;
    cfg.custom_store = Some(tier::k8s_store(cluster.kubeconfig_path(), &ns));
    cfg.store_timeout = None;
    cfg.duration = Duration::from_secs(tier::env_u64("BERTH_CHAOS_DURATION_SECS").unwrap_or(24));
    cfg.seed = tier::env_u64("BERTH_CHAOS_SEED").unwrap_or(0x5EED_0008);
    let (ttl, duration, seed) = (cfg.ttl, cfg.duration, cfg.seed);
    let (report, apiserver_faults) = tokio::join!(
        harness::run(cfg),
        apiserver_nemesis(&cluster, ttl, duration, seed)
    );
    let report = report.expect("chaos run");
    print!("{report}");
    let mut per_kind: BTreeMap<&str, u32> = BTreeMap::new();
    for (kind, start, end) in &apiserver_faults {
        *per_kind.entry(kind).or_default() += 1;
        println!(
            "{TEST}: {kind} {:.3}s..{:.3}s",
            start.as_secs_f64(),
            end.as_secs_f64()
        );
    }
    println!("{TEST}: kube-apiserver faults {per_kind:?}");
    assert!(report.is_safe(), "{TEST}: safety violations");
    assert!(
        report.history.result_counts()[0] > 10,
        "{TEST}: too few grants to mean anything"
    );
    assert!(report.faults.len() >= 2, "{TEST}: too few replica faults");
    assert!(
        per_kind.len() == 2,
        "{TEST}: the kube-apiserver was not both killed and paused: {per_kind:?}"
    );
    let forged = report.forged_overlap();
    assert!(
        forged.is_some(),
        "{TEST}: the forged overlap was not reported"
    );
}
