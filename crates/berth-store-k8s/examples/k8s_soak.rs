//! Sustained load on a real kube-apiserver: N leases acquired through `LeaseService` on
//! `KubeStore`, then each renewed every heartbeat for a while, next to raw Lease get+replace
//! latency sampled in the same run. Prints p50/p99 and error counts; exits non-zero on any
//! error or lost lease.
//!
//! ```text
//! eval "$(hack/kube-test-env.sh)"
//! cargo run --release -p berth-store-k8s --example k8s_soak -- [LEASES] [TTL_S] [HEARTBEAT_S] [DURATION_S]
//! ```
//! Defaults: 2000 leases, ttl 30 s, heartbeat 10 s, 120 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_core::{Acquire, Holder, LeaseKey, LeaseService, Renew};
use berth_store_k8s::{KubeStore, KubeStoreConfig};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
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

fn line(what: &str, mut lat: Vec<Duration>) -> String {
    lat.sort();
    format!(
        "{what:<24} n={:>6}  p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let leases = usize::try_from(arg(1, 2000))?;
    let ttl = Duration::from_secs(arg(2, 30));
    let heartbeat = Duration::from_secs(arg(3, 10));
    let duration = Duration::from_secs(arg(4, 120));
    let Some(cluster) = berth_e2e::cluster_or_skip().await else {
        return Ok(());
    };
    let client = cluster.client();
    let ns = "berth-soak";
    let ns_obj = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj)
        .await?;
    let store = Arc::new(KubeStore::from_client(
        client.clone(),
        KubeStoreConfig::new(ns),
    )?);
    let clock = store.clock();
    let uncertainty = clock.calibrate().await?;
    let svc = LeaseService::new(store.clone(), Arc::new(clock));
    let holder = Holder::new("cluster-east")?;
    let errors = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    println!(
        "{leases} leases, ttl {ttl:?}, heartbeat {heartbeat:?}, {duration:?}; clock uncertainty {uncertainty:?}"
    );

    // Acquire everything, 64 at a time.
    let acquire_lat = Arc::new(Mutex::new(Vec::new()));
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for i in 0..leases {
        let (svc, h, sem, lat, errors) = (
            svc.clone(),
            holder.clone(),
            sem.clone(),
            acquire_lat.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let key = LeaseKey::new(format!("tenant-{}", i % 20), format!("lease-{i}"))
                .expect("valid key");
            let t = Instant::now();
            let r = svc.acquire(&key, &h, ttl).await;
            lat.lock().await.push(t.elapsed());
            match r {
                Ok(Acquire::Granted { lease, .. }) => Some((key, lease.record.fencing_token)),
                other => {
                    eprintln!("acquire {key}: {other:?}");
                    errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await?);
    }
    println!("acquired {} leases in {:.2?}", held.len(), t0.elapsed());

    // Renew each lease every heartbeat, spread evenly over the interval.
    let renew_lat = Arc::new(Mutex::new(Vec::new()));
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let n = u32::try_from(held.len().max(1))?;
    let mut tasks = Vec::new();
    for (i, (key, token)) in held.into_iter().enumerate() {
        let (svc, h, lat, errors, lost) = (
            svc.clone(),
            holder.clone(),
            renew_lat.clone(),
            errors.clone(),
            lost.clone(),
        );
        let offset = heartbeat / n * u32::try_from(i)?;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + offset, heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let at = tick.tick().await;
                if at >= end {
                    break;
                }
                let t = Instant::now();
                let r = svc.renew(&key, &h, token, ttl).await;
                lat.lock().await.push(t.elapsed());
                match r {
                    Ok(Renew::Renewed(_)) => {}
                    Ok(Renew::Lost(v)) => {
                        eprintln!("renew {key}: lost ({v:?})");
                        lost.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => {
                        eprintln!("renew {key}: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Raw baseline in the same run: 20 plain Lease objects, get+replace 20 times a second.
    let raw: Api<Lease> = Api::namespaced(client, ns);
    for i in 0..20 {
        let l: Lease = serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("raw-{i}")}, "spec": {}}),
        )?;
        raw.create(&PostParams::default(), &l).await?;
    }
    let mut raw_lat = Vec::new();
    let mut raw_tick = tokio::time::interval(Duration::from_millis(50));
    let mut i = 0u64;
    while tokio::time::Instant::now() < end {
        raw_tick.tick().await;
        let name = format!("raw-{}", i % 20);
        let t = Instant::now();
        let mut l = raw.get(&name).await?;
        l.spec
            .get_or_insert_with(Default::default)
            .lease_transitions = Some(i32::try_from(i % 1000)?);
        raw.replace(&name, &PostParams::default(), &l).await?;
        raw_lat.push(t.elapsed());
        i += 1;
    }
    for t in tasks {
        t.await?;
    }

    println!(
        "{}",
        line("acquire (LeaseService)", acquire_lat.lock().await.clone())
    );
    println!(
        "{}",
        line("renew (LeaseService)", renew_lat.lock().await.clone())
    );
    println!("{}", line("raw Lease get+replace", raw_lat));
    let (errors, lost) = (errors.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    println!("errors {errors}, lost leases {lost}");
    cluster.stop();
    if errors + lost > 0 {
        return Err(format!("{errors} errors, {lost} lost leases").into());
    }
    Ok(())
}
