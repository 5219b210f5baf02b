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
    base: String,
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
    // The standby starts at a random phase of its poll interval.
    let mut watch = match standby {
        Standby::Watch => {
            let mut r = standby_c
                .get(format!("{lease}?watch=true"))
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
                    post(&standby_c, format!("{lease}/acquire"), acquire.clone())
                        .await?
                        .json()
                        .await?;
                if resp.acquired {
                    break Instant::now();
                }
            }
            (_, Standby::Poll(every)) => {
                let resp: berth_api::LeaseResponse =
                    post(&standby_c, format!("{lease}/acquire"), acquire.clone())
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

pub(crate) async fn run(runs: usize, poll: Duration, ttl_secs: u64) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let files = dev::prepare(tmp.path())?;
    let tls = TlsFiles {
        cert: files.tls_cert.clone(),
        key: files.tls_key.clone(),
    };
    let (_stop, stop_rx) = watch::channel(false);
    let state = AppState::new(
        Arc::new(MemStore::new()),
        Arc::new(SystemClock::new()),
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
        wait_shutdown(stop_rx),
        Duration::from_secs(1),
    ));
    println!("## Failover: holder lets go → standby holds (mem store, ttl {ttl_secs}s)\n");
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
        for standby in [Standby::Watch, Standby::Poll(poll)] {
            let mut s = Samples::default();
            let futs: Vec<_> = (0..runs)
                .map(|i| {
                    one(
                        base.clone(),
                        files.ca_cert.clone(),
                        i,
                        standby,
                        let_go,
                        ttl_secs,
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
    Ok(())
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
