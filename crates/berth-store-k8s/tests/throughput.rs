//! Throughput check on a real kube-apiserver: 2,000 leases acquired, then renewed, through
//! `LeaseService` on `KubeStore` with 64 concurrent tasks, next to raw Lease replaces in the
//! same run. Asserts zero errors; prints rates and latencies (no timing assertions).
//!
//! Skipped unless `BERTH_TEST_KUBE_BIN_DIR` is set (fails with `BERTH_REQUIRE_INTEGRATION=1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_core::{Acquire, FencingToken, Holder, LeaseKey, LeaseService, Renew};
use berth_store_k8s::{KubeStore, KubeStoreConfig, codec};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

const LEASES: usize = 2_000;
const TASKS: usize = 64;
const TTL: Duration = Duration::from_secs(30);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
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

fn report(what: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    #[allow(clippy::cast_precision_loss)]
    let rate = lat.len() as f64 / wall.as_secs_f64();
    println!(
        "{what:<28} {n:>5} ops in {wall:>8.2?}: {rate:>7.0} ops/s, p50 {p50:>8.2?}, p99 {p99:>8.2?}, max {max:>8.2?}",
        n = lat.len(),
        p50 = percentile(&lat, 0.50),
        p99 = percentile(&lat, 0.99),
        max = lat.last().copied().unwrap_or_default(),
    );
}

/// Runs `op(i)` for every `i < LEASES` on `TASKS` tasks; returns per-op latencies and wall time.
async fn run<F, Fut>(op: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= LEASES {
                    break lat;
                }
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(LEASES);
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    (all, start.elapsed())
}

fn key(i: usize) -> LeaseKey {
    LeaseKey::new(format!("tenant-{}", i % 20), format!("lease-{i}")).expect("valid key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_leases_acquire_and_renew() {
    let Some(cluster) = berth_e2e::cluster_or_skip().await else {
        return;
    };
    let ns = "berth-bench";
    let client = cluster.client();
    let ns_obj = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj)
        .await
        .unwrap();
    let store = Arc::new(KubeStore::from_client(client.clone(), KubeStoreConfig::new(ns)).unwrap());
    let svc = LeaseService::new(store.clone(), Arc::new(store.clock()));
    let holder = Holder::new("cluster-east").unwrap();

    let (s, h) = (svc.clone(), holder.clone());
    let (lat, wall) = run(move |i| {
        let (s, h) = (s.clone(), h.clone());
        async move {
            match s.acquire(&key(i), &h, TTL).await {
                Ok(Acquire::Granted { .. }) => {}
                other => panic!("acquire {i}: {other:?}"),
            }
        }
    })
    .await;
    report("LeaseService::acquire", lat, wall);

    let (s, h) = (svc.clone(), holder.clone());
    let (lat, wall) = run(move |i| {
        let (s, h) = (s.clone(), h.clone());
        async move {
            match s.renew(&key(i), &h, FencingToken::FIRST, TTL).await {
                Ok(Renew::Renewed(_)) => {}
                other => panic!("renew {i}: {other:?}"),
            }
        }
    })
    .await;
    report("LeaseService::renew", lat, wall);

    // Baseline: one raw GET + PUT of the same Lease objects, as any client would renew.
    let api: Api<Lease> = Api::namespaced(client, ns);
    let (lat, wall) = run(move |i| {
        let api = api.clone();
        async move {
            let name = codec::object_name(&key(i));
            let mut l = api.get(&name).await.expect("raw get");
            l.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert("bench".into(), i.to_string());
            api.replace(&name, &PostParams::default(), &l)
                .await
                .expect("raw replace");
        }
    })
    .await;
    report("raw Lease get+replace", lat, wall);

    let (listed, _) = svc
        .list(&berth_core::ListParams::default(), Some(&holder))
        .await
        .unwrap();
    assert_eq!(listed.len(), LEASES, "every lease is listed");
    assert!(listed.iter().all(berth_core::LeaseView::is_live));
    cluster.stop();
}
