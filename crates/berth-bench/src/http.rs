//! HTTP path: the Berth API server (mem store) against a minimal axum+rustls handler doing the
//! same JSON parse and a map update, both over TLS keep-alive connections on 127.0.0.1, in the
//! same process and run, driven by the same load generator.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_api::LeaseResponse;
use berth_apiserver::auth::static_keys::hash_token;
use berth_apiserver::auth::{Authenticator, StaticKeys};
use berth_apiserver::metrics::Metrics;
use berth_apiserver::server::{serve_https, wait_shutdown};
use berth_apiserver::tls::TlsFiles;
use berth_apiserver::{AppState, dev, router};
use berth_core::{MemStore, SystemClock, TtlBounds};
use serde::Deserialize;
use tokio::sync::watch;

use crate::stats::{Samples, Summary, fmt_ms, row};

const TOKEN: &str = "bench-token";

/// Which server a run targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Baseline,
    BerthNoAuth,
    BerthStaticKeys,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::Baseline => "baseline axum+rustls",
            Self::BerthNoAuth => "berth (auth none)",
            Self::BerthStaticKeys => "berth (static keys)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Acquire,
    Renew,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Self::Acquire => "acquire",
            Self::Renew => "renew",
        }
    }
}

// The baseline: the same body shapes, a mutex-guarded map, a LeaseResponse back.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Body {
    #[serde(default)]
    holder: String,
    #[serde(default)]
    fencing_token: i64,
    #[serde(default)]
    ttl_seconds: i64,
}

/// Holder, fencing token, last renewal, TTL in seconds.
type BaselineLease = (String, i64, Instant, i64);

#[derive(Default)]
struct BaselineState {
    leases: Mutex<HashMap<(String, String), BaselineLease>>,
}

async fn baseline_handler(
    State(state): State<Arc<BaselineState>>,
    UrlPath((ns, name, verb)): UrlPath<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(b) = serde_json::from_slice::<Body>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let now = Instant::now();
    let mut map = state
        .leases
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = map
        .entry((ns, name))
        .or_insert_with(|| (b.holder.clone(), 1, now, b.ttl_seconds));
    let acquired = entry.0 == b.holder && (verb == "acquire" || entry.1 == b.fencing_token);
    if acquired {
        entry.2 = now;
        entry.3 = b.ttl_seconds;
    }
    let response = LeaseResponse {
        acquired,
        holder: entry.0.clone(),
        fencing_token: entry.1,
        expires_at: None,
        acquired_at: None,
        ttl_remaining_millis: entry.3.saturating_mul(1000),
        renewed_at: None,
        transitions: 0,
    };
    drop(map);
    Json(response).into_response()
}

struct Servers {
    baseline: String,
    berth_none: String,
    berth_keys: String,
    ca: std::path::PathBuf,
    _stop: watch::Sender<bool>,
    _tmp: tempfile::TempDir,
}

async fn start_servers() -> anyhow::Result<Servers> {
    let tmp = tempfile::tempdir()?;
    let files = dev::prepare(tmp.path())?;
    let tls = TlsFiles {
        cert: files.tls_cert.clone(),
        key: files.tls_key.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);

    let listen = || async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        anyhow::Ok((l, format!("https://localhost:{port}")))
    };

    // Baseline.
    let (l, baseline) = listen().await?;
    let app = axum::Router::new()
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/{verb}",
            axum::routing::post(baseline_handler),
        )
        .with_state(Arc::new(BaselineState::default()));
    tokio::spawn(serve_https(
        l,
        app,
        tls.load()?,
        wait_shutdown(stop_rx.clone()),
        Duration::from_secs(1),
    ));

    // Berth, without and with authentication.
    let keys = tmp.path().join("keys");
    std::fs::write(&keys, format!("bench:{}\n", hash_token(TOKEN)))?;
    let mut urls = Vec::new();
    for auth in [
        Authenticator::None,
        Authenticator::StaticKeys(Arc::new(StaticKeys::load(&keys)?)),
    ] {
        let state = AppState::new(
            Arc::new(MemStore::new()),
            Arc::new(SystemClock::new()),
            TtlBounds::default(),
            auth,
            Arc::new(Metrics::new()),
        );
        let (l, url) = listen().await?;
        tokio::spawn(serve_https(
            l,
            router(state),
            tls.load()?,
            wait_shutdown(stop_rx.clone()),
            Duration::from_secs(1),
        ));
        urls.push(url);
    }
    let berth_keys = urls.pop().context("two servers")?;
    let berth_none = urls.pop().context("two servers")?;
    Ok(Servers {
        baseline,
        berth_none,
        berth_keys,
        ca: files.ca_cert.clone(),
        _stop: stop_tx,
        _tmp: tmp,
    })
}

/// One keep-alive HTTP/1.1 connection's client, trusting the dev CA.
pub(crate) fn https_client(ca: &Path) -> anyhow::Result<reqwest::Client> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<LeaseResponse> {
    let r = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await?
        .error_for_status()?;
    Ok(r.json().await?)
}

async fn load(
    base: &str,
    ca: &Path,
    op: Op,
    conns: usize,
    warmup: Duration,
    duration: Duration,
    run: usize,
) -> anyhow::Result<Summary> {
    let mut tasks = Vec::new();
    let start_at = Instant::now() + Duration::from_millis(200);
    for i in 0..conns {
        let client = https_client(ca)?;
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            let lease = format!("{base}/v1alpha1/namespaces/bench/leases/r{run}-c{i}");
            let acquire = serde_json::json!({"holder": "bench", "ttlSeconds": 60});
            let first = post(&client, &format!("{lease}/acquire"), &acquire).await?;
            let (url, body) = match op {
                Op::Acquire => (format!("{lease}/acquire"), acquire),
                Op::Renew => (
                    format!("{lease}/renew"),
                    serde_json::json!({"holder": "bench", "fencingToken": first.fencing_token, "ttlSeconds": 60}),
                ),
            };
            tokio::time::sleep_until(start_at.into()).await;
            let measure_from = start_at + warmup;
            let end = measure_from + duration;
            let mut samples = Samples::default();
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let r = post(&client, &url, &body).await;
                let done = Instant::now();
                if t >= measure_from {
                    match r {
                        Ok(resp) if resp.acquired => samples.latencies.push(done - t),
                        _ => samples.errors += 1,
                    }
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await??);
    }
    Ok(all.summary(duration, 1))
}

/// Runs the HTTP comparison and prints a markdown table. Each (op, conns) cell runs every
/// target `rounds` times, alternating targets, and reports the median round's throughput and
/// the latency percentiles over all rounds, so a burst of load from elsewhere on the machine
/// hits every target alike.
pub(crate) async fn run(
    conns: &[usize],
    warmup: Duration,
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<()> {
    let servers = start_servers().await?;
    println!("## HTTP path: mem store over TLS keep-alive vs a minimal axum+rustls handler\n");
    println!(
        "{}",
        row(&[
            "op".into(),
            "conns".into(),
            "server".into(),
            "ops/s (median of rounds)".into(),
            "p50 ms (median round)".into(),
            "p99 ms (median round)".into(),
            "ratio to baseline".into(),
        ])
    );
    println!("|---|---|---|---|---|---|---|");
    let targets = [
        Target::Baseline,
        Target::BerthNoAuth,
        Target::BerthStaticKeys,
    ];
    let mut run_id = 0;
    for &c in conns {
        for op in [Op::Acquire, Op::Renew] {
            let mut results: Vec<Vec<Summary>> = vec![Vec::new(); targets.len()];
            for _ in 0..rounds.max(1) {
                for (i, target) in targets.iter().enumerate() {
                    let url = match target {
                        Target::Baseline => &servers.baseline,
                        Target::BerthNoAuth => &servers.berth_none,
                        Target::BerthStaticKeys => &servers.berth_keys,
                    };
                    run_id += 1;
                    let s = load(url, &servers.ca, op, c, warmup, duration, run_id).await?;
                    eprintln!(
                        "{:<8} {:>3} conns  {:<22} {s}",
                        op.label(),
                        c,
                        target.label()
                    );
                    results[i].push(s);
                }
            }
            let median = |v: &[Summary]| {
                let mut t: Vec<f64> = v.iter().map(|s| s.throughput).collect();
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            };
            let base = median(&results[0]);
            for (i, target) in targets.iter().enumerate() {
                let tp = median(&results[i]);
                let mid = |f: fn(&Summary) -> Duration| {
                    let mut d: Vec<Duration> = results[i].iter().map(f).collect();
                    d.sort();
                    d[d.len() / 2]
                };
                println!(
                    "{}",
                    row(&[
                        op.label().into(),
                        c.to_string(),
                        target.label().into(),
                        format!("{tp:.0}"),
                        fmt_ms(mid(|s| s.p50)),
                        fmt_ms(mid(|s| s.p99)),
                        format!("{:.2}", tp / base),
                    ])
                );
            }
        }
    }
    println!();
    Ok(())
}
