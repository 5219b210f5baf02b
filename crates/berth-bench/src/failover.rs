//! Failover: how long a standby takes to hold a lease after the holder lets go, when it learns
//! of it from a watch and when it polls acquire on a fixed interval. Two ways to let go:
//! a graceful release, and a holder that stops renewing (killed) so the lease expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::WatchEventType;
use berth_apiserver::auth::Authenticator;
use berth_apiserver::metrics::Metrics;
use berth_apiserver::server::{serve_https, wait_shutdown};
use berth_apiserver::tls::TlsFiles;
use berth_apiserver::{AppState, dev, router};
use berth_core::{MemStore, SystemClock, TtlBounds};
use tokio::sync::watch;

use crate::http::https_client;
use crate::stats::{Samples, fmt_ms, row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standby {
    Watch,
    Poll(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LetGo {
    Release,
    Kill,
}

async fn post(
    c: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> anyhow::Result<reqwest::Response> {
    Ok(c.post(url).json(&body).send().await?.error_for_status()?)
}

/// Reads SSE lines until an event of one of `kinds` arrives.
async fn wait_event(resp: &mut reqwest::Response, kinds: &[WatchEventType]) -> anyhow::Result<()> {
    let mut buf = String::new();
    loop {
        let chunk = resp
            .chunk()
            .await?
            .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find('\n') {
            let line: String = buf.drain(..=pos).collect();
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                let e: berth_api::WatchEvent = serde_json::from_str(data.trim())?;
                if kinds.contains(&e.event_type) {
                    return Ok(());
                }
            }
        }
    }
}

async fn one(
    (base, standby_base): (String, String),
    ca: std::path::PathBuf,
    i: usize,
    standby: Standby,
    let_go: LetGo,
    ttl_secs: u64,
) -> anyhow::Result<Duration> {
    let holder = https_client(&ca)?;
    let standby_c = https_client(&ca)?;
    let lease = format!("{base}/v1alpha1/namespaces/failover/leases/l{i}-{standby:?}-{let_go:?}")
        .replace(['(', ')', ' '], "")
        .to_lowercase();
    let held = post(
        &holder,
        format!("{lease}/acquire"),
        serde_json::json!({"holder": "primary", "ttlSeconds": ttl_secs}),
    )
    .await?
    .json::<berth_api::LeaseResponse>()
    .await?;
    // When the grant runs out, on this process's clock (at most this late: the server
    // measured the remaining time before we received it).
    let expires = Instant::now()
        + Duration::from_millis(u64::try_from(held.ttl_remaining_millis).unwrap_or(0));
    anyhow::ensure!(held.acquired, "primary must hold the lease");
    let acquire = serde_json::json!({"holder": "standby", "ttlSeconds": ttl_secs});
    // The standby may talk to another replica than the holder.
    let lease_b = lease.replacen(&base, &standby_base, 1);
    // The standby starts at a random phase of its poll interval.
    let mut watch = match standby {
        Standby::Watch => {
            let mut r = standby_c
                .get(format!("{lease_b}?watch=true"))
                .timeout(Duration::from_secs(120))
                .send()
                .await?
                .error_for_status()?;
            wait_event(&mut r, &[WatchEventType::Synced]).await?;
            Some(r)
        }
        Standby::Poll(every) => {
            // A random phase of the poll interval relative to the grant.
            let ms = u64::try_from(every.as_millis()).unwrap_or(1000).max(1);
            tokio::time::sleep(Duration::from_millis(u64::from(rand_u16()) % ms)).await;
            None
        }
    };
    // Let go after a random delay so polling phases are uniform.
    let jitter = Duration::from_millis(u64::from(rand_u16() % 1000));
    let base_c = lease.clone();
    let holder_task = tokio::spawn(async move {
        tokio::time::sleep(jitter).await;
        let t = Instant::now();
        if let_go == LetGo::Release {
            post(
                &holder,
                format!("{base_c}/release"),
                serde_json::json!({"holder": "primary", "fencingToken": held.fencing_token}),
            )
            .await?;
            anyhow::Ok(t)
        } else {
            // Killed: it never renews, so the lease ends at its expiry.
            let _ = t;
            anyhow::Ok(expires)
        }
    });
    let got = loop {
        match (&mut watch, standby) {
            (Some(r), Standby::Watch) => {
                wait_event(r, &[WatchEventType::Released, WatchEventType::Expired]).await?;
                let resp: berth_api::LeaseResponse =
                    post(&standby_c, format!("{lease_b}/acquire"), acquire.clone())
                        .await?
                        .json()
                        .await?;
                if resp.acquired {
                    break Instant::now();
                }
            }
            (_, Standby::Poll(every)) => {
                let resp: berth_api::LeaseResponse =
                    post(&standby_c, format!("{lease_b}/acquire"), acquire.clone())
                        .await?
                        .json()
                        .await?;
                if resp.acquired {
                    break Instant::now();
                }
                tokio::time::sleep(every).await;
            }
            _ => anyhow::bail!("watch not open"),
        }
    };
    let let_go_at = holder_task.await??;
    Ok(got.saturating_duration_since(let_go_at))
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(2);
    #[allow(clippy::cast_possible_truncation)]
    let v = h.finish() as u16;
    v
}

/// Serves `store` over HTTPS on a free port until `stop` flips; returns the base URL.
async fn serve(
    store: Arc<dyn berth_core::LeaseStore>,
    clock: Arc<dyn berth_core::Clock>,
    tls: &TlsFiles,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let state = AppState::new(
        store,
        clock,
        TtlBounds::default(),
        Authenticator::None,
        Arc::new(Metrics::new()),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("https://localhost:{}", l.local_addr()?.port());
    tokio::spawn(serve_https(
        l,
        router(state),
        tls.load()?,
        wait_shutdown(stop),
        Duration::from_secs(1),
    ));
    Ok(base)
}

pub(crate) async fn run(
    runs: usize,
    poll: Duration,
    ttl_secs: u64,
    postgres: Option<&str>,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let files = dev::prepare(tmp.path())?;
    let tls = TlsFiles {
        cert: files.tls_cert.clone(),
        key: files.tls_key.clone(),
    };
    let (_stop, stop_rx) = watch::channel(false);
    let base = serve(
        Arc::new(MemStore::new()),
        Arc::new(SystemClock::new()),
        &tls,
        stop_rx.clone(),
    )
    .await?;
    let setup = Setup {
        ca: files.ca_cert.clone(),
        runs,
        poll,
        ttl_secs,
    };
    table(
        &format!("mem store, ttl {ttl_secs}s"),
        (base.clone(), base),
        &setup,
    )
    .await;
    if let Some(dsn) = postgres {
        // Two replicas on one PostgreSQL database: the holder talks to A, the standby to B,
        // which learns of A's release from PostgreSQL's NOTIFY (or from its own poll).
        let mut bases = Vec::new();
        let mut stores = Vec::new();
        for _ in 0..2 {
            let mut cfg = berth_store_sql::SqlStoreConfig::new(
                berth_store_sql::SqlDriver::Postgres,
                dsn,
                berth_store_sql::Migrate::Auto,
            );
            cfg.max_connections = 8;
            let st = berth_store_sql::SqlStore::connect(cfg).await?;
            bases.push(
                serve(
                    Arc::new(st.clone()),
                    Arc::new(st.clock()),
                    &tls,
                    stop_rx.clone(),
                )
                .await?,
            );
            stores.push(st);
        }
        table(
            &format!("two replicas on PostgreSQL, holder on A, standby on B, ttl {ttl_secs}s"),
            (bases[0].clone(), bases[1].clone()),
            &setup,
        )
        .await;
        for st in stores {
            st.close().await;
        }
    }
    Ok(())
}

struct Setup {
    ca: std::path::PathBuf,
    runs: usize,
    poll: Duration,
    ttl_secs: u64,
}

async fn table(title: &str, bases: (String, String), setup: &Setup) {
    println!("## Failover: holder lets go → standby holds ({title})\n");
    println!(
        "{}",
        row(&[
            "holder".into(),
            "standby".into(),
            "runs".into(),
            "p50 ms".into(),
            "p99 ms".into(),
            "max ms".into(),
        ])
    );
    println!("|---|---|---|---|---|---|");
    for let_go in [LetGo::Release, LetGo::Kill] {
        for standby in [Standby::Watch, Standby::Poll(setup.poll)] {
            let mut s = Samples::default();
            let futs: Vec<_> = (0..setup.runs)
                .map(|i| {
                    one(
                        bases.clone(),
                        setup.ca.clone(),
                        i,
                        standby,
                        let_go,
                        setup.ttl_secs,
                    )
                })
                .collect();
            for r in futures_join(futs).await {
                match r {
                    Ok(d) => s.latencies.push(d),
                    Err(e) => {
                        eprintln!("failover run failed: {e:#}");
                        s.errors += 1;
                    }
                }
            }
            let max = s.latencies.iter().max().copied().unwrap_or_default();
            let sum = s.summary(Duration::from_secs(1), 1);
            let who = match let_go {
                LetGo::Release => "graceful release",
                LetGo::Kill => "killed (lease expires)",
            };
            let how = match standby {
                Standby::Watch => "watch".to_owned(),
                Standby::Poll(p) => format!("poll every {}", fmt_ms(p)),
            };
            eprintln!("{who:<24} {how:<20} {sum}");
            println!(
                "{}",
                row(&[
                    who.into(),
                    how,
                    sum.ops.to_string(),
                    fmt_ms(sum.p50),
                    fmt_ms(sum.p99),
                    fmt_ms(max),
                ])
            );
        }
    }
    println!();
}

async fn futures_join<F: std::future::Future + Send + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
