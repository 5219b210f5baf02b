//! Renews per second through `LeaseService` on one SQL backend.
//!
//! ```text
//! cargo run --release -p berth-store-sql --example renew_bench -- DRIVER DSN [SECONDS] [TASKS] [KEYS]
//! cargo run --release -p berth-store-sql --example renew_bench -- sqlite sqlite:///tmp/bench.db 5 8 256
//! cargo run --release -p berth-store-sql --example renew_bench -- postgres postgres://postgres@127.0.0.1/test
//! ```
//!
//! Each of TASKS tasks owns KEYS/TASKS keys (acquired first, ttl 60 s) and renews them round
//! robin for SECONDS seconds. Every renew is a clock read, a get and a conditional update, with
//! the store's own clock (the database clock on PostgreSQL and MariaDB/MySQL). Keys live in a
//! fresh random namespace; the records stay behind as ordinary leases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::{Acquire, FencingToken, Holder, LeaseKey, LeaseService, Renew};
use berth_store_sql::{Migrate, SqlDriver, SqlStore, SqlStoreConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [driver, dsn, rest @ ..] = args.as_slice() else {
        return Err("usage: renew_bench DRIVER DSN [SECONDS] [TASKS] [KEYS]".into());
    };
    let driver: SqlDriver = driver.parse()?;
    let secs: u64 = rest.first().map_or(Ok(5), |s| s.parse())?;
    let tasks: usize = rest.get(1).map_or(Ok(8), |s| s.parse())?;
    let keys: usize = rest.get(2).map_or(Ok(256), |s| s.parse())?;
    let keys_per_task = (keys / tasks.max(1)).max(1);

    let mut cfg = SqlStoreConfig::new(driver, dsn.clone(), Migrate::Auto);
    cfg.max_connections = u32::try_from(tasks.max(1)).unwrap_or(u32::MAX);
    let store = SqlStore::connect(cfg).await?;
    let svc = LeaseService::new(Arc::new(store.clone()), Arc::new(store.clock()));
    let ns = format!("bench-{:08x}", std::process::id());
    let ttl = Duration::from_secs(60);

    let mut handles = Vec::new();
    let window = Duration::from_secs(secs);
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    for t in 0..tasks {
        let svc = svc.clone();
        let ns = ns.clone();
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            let holder = Holder::new(format!("bench-{t}")).map_err(|e| e.to_string())?;
            let acquired = async {
                let mut held: Vec<(LeaseKey, FencingToken)> = Vec::new();
                for k in 0..keys_per_task {
                    let key = LeaseKey::new(ns.as_str(), format!("t{t}-k{k}"))
                        .map_err(|e| e.to_string())?;
                    match svc.acquire(&key, &holder, ttl).await {
                        Ok(Acquire::Granted { lease, .. }) => {
                            held.push((key, lease.record.fencing_token));
                        }
                        other => return Err(format!("acquire {key}: {other:?}")),
                    }
                }
                Ok(held)
            }
            .await;
            // Everyone starts renewing together, after every key is held.
            barrier.wait().await;
            let held = acquired?;
            let deadline = Instant::now() + window;
            let mut renews = 0u64;
            let mut latencies = Vec::new();
            'outer: loop {
                for (key, token) in &held {
                    if Instant::now() >= deadline {
                        break 'outer;
                    }
                    let start = Instant::now();
                    match svc.renew(key, &holder, *token, ttl).await {
                        Ok(Renew::Renewed(_)) => renews += 1,
                        other => return Err(format!("renew {key}: {other:?}")),
                    }
                    latencies.push(start.elapsed());
                }
            }
            Ok::<_, String>((renews, latencies))
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut total = 0u64;
    let mut all = Vec::new();
    for h in handles {
        let (n, lat) = h.await??;
        total += n;
        all.extend(lat);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(i).copied().unwrap_or_default()
    };
    println!(
        "{driver}: {total} renews in {elapsed:.1} s = {:.0} renews/s ({tasks} tasks, {} keys); \
         latency p50 {:?} p99 {:?}",
        total as f64 / elapsed,
        keys_per_task * tasks,
        pct(0.5),
        pct(0.99)
    );
    store.close().await;
    Ok(())
}
