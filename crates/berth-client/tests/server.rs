//! The client against the real `berth-apiserver` router served over TLS on 127.0.0.1:0:
//! batched heartbeats, watch streams (initial state, changes, expiry without any call, resume)
//! and lease history, on the mem store, on SQLite, and on PostgreSQL with two replicas sharing
//! the database (`BERTH_TEST_POSTGRES_DSN`).
#![allow(clippy::unwrap_used)] // test scaffolding: a failure here is a test failure

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_api::{HeartbeatLease, WatchEvent, WatchEventType};
use berth_apiserver::auth::static_keys::hash_token;
use berth_apiserver::auth::{Authenticator, StaticKeys};
use berth_apiserver::metrics::Metrics;
use berth_apiserver::server::{serve_https, wait_shutdown};
use berth_apiserver::tls::TlsFiles;
use berth_apiserver::{AppState, dev, router};
use berth_client::{Client, ClientError, StaticToken, WatchOptions, WatchStream, WatchTarget};
use berth_core::{DynClock, DynLeaseStore, MemStore, SystemClock, TtlBounds, WatchConfig};
use berth_store_sql::{Migrate, SqlDriver, SqlStore, SqlStoreConfig};
use futures::StreamExt;
use tokio::sync::watch;

struct Server {
    base: String,
    ca: std::path::PathBuf,
    _stop: watch::Sender<bool>,
    _tmp: tempfile::TempDir,
}

async fn serve(store: DynLeaseStore, clock: DynClock) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let files = dev::prepare(tmp.path()).unwrap();
    let keys = tmp.path().join("keys");
    std::fs::write(
        &keys,
        format!(
            "east:{}\nwest:{}\n",
            hash_token("tok-east"),
            hash_token("tok-west")
        ),
    )
    .unwrap();
    let state = AppState::new(
        store,
        clock,
        TtlBounds::default(),
        Authenticator::StaticKeys(Arc::new(StaticKeys::load(&keys).unwrap())),
        Arc::new(Metrics::new()),
    )
    .with_watch_config(WatchConfig {
        poll_interval: Duration::from_millis(200),
        // Exact resume points, so the test can tell what a resume must not send again.
        resume_slack: Duration::ZERO,
        ..WatchConfig::default()
    });
    let tls = TlsFiles {
        cert: files.tls_cert.clone(),
        key: files.tls_key.clone(),
    }
    .load()
    .unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_https(
        listener,
        router(state),
        tls,
        wait_shutdown(stop_rx),
        Duration::from_secs(1),
    ));
    Server {
        base: format!("https://localhost:{port}"),
        ca: files.ca_cert.clone(),
        _stop: stop_tx,
        _tmp: tmp,
    }
}

fn client(server: &Server, token: &str) -> Client {
    client_at(&server.base, &server.ca, token)
}

fn client_at(base: &str, ca: &Path, token: &str) -> Client {
    Client::builder(base)
        .ca_file(ca)
        .token_source(StaticToken::new(token))
        .build()
        .unwrap()
}

fn unique_ns(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per process and per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// The next event that is not a bookmark, within `limit`.
async fn next_change(w: &mut WatchStream, limit: Duration) -> WatchEvent {
    tokio::time::timeout(limit, async {
        loop {
            let e = w.next().await.unwrap().expect("stream open");
            if e.event_type != WatchEventType::Bookmark {
                return e;
            }
        }
    })
    .await
    .expect("an event in time")
}

async fn until_synced(w: &mut WatchStream) -> Vec<WatchEvent> {
    let mut initial = Vec::new();
    loop {
        let e = next_change(w, Duration::from_secs(10)).await;
        if e.event_type == WatchEventType::Synced {
            return initial;
        }
        initial.push(e);
    }
}

fn name_of(e: &WatchEvent) -> &str {
    e.lease.as_ref().map_or("", |l| l.name.as_str())
}

async fn heartbeats(server: &Server) {
    let east = client(server, "tok-east");
    let ns = unique_ns("hb");
    let ttl = Duration::from_secs(30);
    let mut items = Vec::new();
    for n in ["a", "b"] {
        let r = east.acquire(&ns, n, "east", ttl).await.unwrap();
        assert!(r.acquired);
        items.push(HeartbeatLease {
            namespace: ns.clone(),
            name: n.into(),
            fencing_token: r.fencing_token,
            ttl_seconds: 20,
        });
    }
    let west = client(server, "tok-west");
    assert!(west.acquire(&ns, "w", "west", ttl).await.unwrap().acquired);
    let good = items.clone();
    items.push(HeartbeatLease {
        namespace: ns.clone(),
        name: "w".into(),
        fencing_token: 1,
        ttl_seconds: 20,
    });
    items.push(HeartbeatLease {
        namespace: "Bad_NS".into(),
        name: "x".into(),
        fencing_token: 1,
        ttl_seconds: 20,
    });
    items.push(HeartbeatLease {
        namespace: ns.clone(),
        name: "a".into(),
        fencing_token: 0,
        ttl_seconds: 20,
    });
    items.push(HeartbeatLease {
        namespace: ns.clone(),
        name: "a".into(),
        fencing_token: 1,
        ttl_seconds: 999_999,
    });
    let out = east.heartbeat("east", &items).await.unwrap().results;
    assert_eq!(out.len(), 6);
    for r in &out[..2] {
        assert!(r.lease.acquired, "{r:?}");
        assert!(r.error.is_none());
        assert!(r.lease.ttl_remaining_millis > 19_000 && r.lease.ttl_remaining_millis <= 20_000);
    }
    assert!(!out[2].lease.acquired, "west's lease is not east's");
    assert_eq!(out[2].lease.holder, "west", "the loser learns the holder");
    assert!(out[2].error.is_none());
    assert!(
        out[3].error.as_deref().unwrap().contains("namespace"),
        "{:?}",
        out[3]
    );
    assert_eq!(
        out[4].error.as_deref(),
        Some("fencingToken must be non-zero")
    );
    assert_eq!(
        out[5].error.as_deref(),
        Some("ttlSeconds must be between 1 and 3600")
    );
    assert_eq!(
        (out[3].namespace.as_str(), out[3].name.as_str()),
        ("Bad_NS", "x")
    );

    // The holder must be the caller's (403), whatever the items.
    match west.heartbeat("east", &good).await {
        Err(ClientError::Forbidden { .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    // Too many items is one 400; an empty batch is an empty answer.
    let many = vec![good[0].clone(); berth_api::MAX_HEARTBEAT_ITEMS + 1];
    let raw = reqwest_client(&server.ca);
    let r = raw
        .post(format!("{}/v1alpha1/heartbeats", server.base))
        .bearer_auth("tok-east")
        .json(&berth_api::HeartbeatRequest {
            holder: "east".into(),
            leases: many,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "leases must hold at most 2500 items");
    assert!(
        east.heartbeat("east", &[])
            .await
            .unwrap()
            .results
            .is_empty()
    );
    // Its own body limit, larger than the lease endpoints' 4096 bytes.
    let big: Vec<_> = (0..2000)
        .map(|i| HeartbeatLease {
            namespace: ns.clone(),
            name: format!("absent-{i}"),
            fencing_token: 1,
            ttl_seconds: 20,
        })
        .collect();
    let out = east.heartbeat("east", &big).await.unwrap();
    assert_eq!(out.results.len(), 2000);
    assert!(
        out.results
            .iter()
            .all(|r| !r.lease.acquired && r.error.is_none() && r.lease.holder.is_empty())
    );
    assert_eq!(out.results[1999].name, "absent-1999");
    let r = raw
        .post(format!("{}/v1alpha1/heartbeats", server.base))
        .bearer_auth("tok-east")
        .header("content-type", "application/json")
        .body(vec![b' '; berth_api::MAX_HEARTBEAT_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

fn reqwest_client(ca: &Path) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

async fn watch_and_history(server: &Server) {
    let east = client(server, "tok-east");
    let west = client(server, "tok-west");
    let ns = unique_ns("watch");
    let ttl = Duration::from_secs(30);
    let pre = east.acquire(&ns, "pre", "east", ttl).await.unwrap();
    assert!(pre.acquired);

    let opts = WatchOptions {
        bookmark: Duration::from_secs(1),
        ..WatchOptions::default()
    };
    let mut w = east
        .watch(WatchTarget::Namespace(&ns), &opts)
        .await
        .unwrap();
    let initial = until_synced(&mut w).await;
    assert_eq!(initial.len(), 1);
    assert_eq!(initial[0].event_type, WatchEventType::Initial);
    assert_eq!(name_of(&initial[0]), "pre");
    let mut one = west
        .watch(WatchTarget::Lease(&ns, "job"), &opts)
        .await
        .unwrap();
    assert!(
        until_synced(&mut one).await.is_empty(),
        "job does not exist yet"
    );

    // acquired, renewed (not sent: renewals off), released, then taken by west.
    let job = east.acquire(&ns, "job", "east", ttl).await.unwrap();
    let e = next_change(&mut w, Duration::from_secs(10)).await;
    assert_eq!(
        (e.event_type, name_of(&e)),
        (WatchEventType::Acquired, "job")
    );
    assert_eq!(e.lease.as_ref().unwrap().holder, "east");
    assert_eq!(e.lease.as_ref().unwrap().fencing_token, 1);
    assert_eq!(
        next_change(&mut one, Duration::from_secs(10))
            .await
            .event_type,
        WatchEventType::Acquired
    );
    east.renew(&ns, "job", "east", job.fencing_token, ttl)
        .await
        .unwrap();
    east.release(&ns, "job", "east", job.fencing_token)
        .await
        .unwrap();
    let e = next_change(&mut w, Duration::from_secs(10)).await;
    assert_eq!(
        (e.event_type, name_of(&e)),
        (WatchEventType::Released, "job")
    );
    let released_rev = e.revision;
    assert_eq!(
        next_change(&mut one, Duration::from_secs(10))
            .await
            .event_type,
        WatchEventType::Released,
        "the single-lease watch sees the release at once"
    );
    let started = std::time::Instant::now();
    assert!(
        west.acquire(&ns, "job", "west", ttl)
            .await
            .unwrap()
            .acquired
    );
    let e = next_change(&mut one, Duration::from_secs(10)).await;
    assert_eq!(e.event_type, WatchEventType::Acquired);
    assert_eq!(e.lease.as_ref().unwrap().holder, "west");
    assert_eq!(e.lease.as_ref().unwrap().fencing_token, 2);
    assert!(started.elapsed() < Duration::from_secs(10));
    let e = next_change(&mut w, Duration::from_secs(10)).await;
    assert_eq!(
        (e.event_type, name_of(&e)),
        (WatchEventType::Acquired, "job")
    );

    // Expiry with nobody calling the server.
    east.acquire(&ns, "short", "east", Duration::from_secs(1))
        .await
        .unwrap();
    let e = next_change(&mut w, Duration::from_secs(10)).await;
    assert_eq!(
        (e.event_type, name_of(&e)),
        (WatchEventType::Acquired, "short")
    );
    let e = next_change(&mut w, Duration::from_secs(10)).await;
    assert_eq!(
        (e.event_type, name_of(&e)),
        (WatchEventType::Expired, "short")
    );
    assert_eq!(
        e.lease.as_ref().unwrap().state,
        berth_api::LeaseState::Expired
    );

    // Bookmarks arrive on their own.
    let b = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = w.next().await.unwrap().unwrap();
            if e.event_type == WatchEventType::Bookmark {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(b.revision >= released_rev);

    // Resume from the release: the later changes come again, the earlier ones do not.
    let mut resumed = east
        .watch(
            WatchTarget::Namespace(&ns),
            &WatchOptions {
                resume_from: Some(released_rev),
                ..opts.clone()
            },
        )
        .await
        .unwrap();
    let since = until_synced(&mut resumed).await;
    let names: Vec<_> = since
        .iter()
        .map(|e| (e.event_type, name_of(e).to_owned()))
        .collect();
    assert!(
        names.contains(&(WatchEventType::Acquired, "job".to_owned())),
        "{names:?}"
    );
    assert!(
        names.contains(&(WatchEventType::Expired, "short".to_owned())),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|(_, n)| n == "pre"),
        "pre did not change after the resume point: {names:?}"
    );

    // The resuming stream drops nothing and repeats nothing across a reconnect.
    let mut stream = Box::pin(east.watch_resuming(
        WatchTarget::Lease(&ns, "job"),
        opts.clone(),
        Duration::from_millis(100),
    ));
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.event_type, WatchEventType::Initial);

    // History: east released (token 1); west holds token 2 now.
    let h = east.history(&ns, "job", None).await.unwrap().unwrap();
    assert_eq!(h.current.as_ref().unwrap().holder, "west");
    assert_eq!(h.items.len(), 1);
    assert_eq!(h.items[0].holder, "east");
    assert_eq!(h.items[0].fencing_token, 1);
    assert_eq!(h.items[0].reason, "released");
    assert!(east.history(&ns, "never", None).await.unwrap().is_none());

    // Bad watch parameters are 400s, not streams.
    let raw = reqwest_client(&server.ca);
    let r = raw
        .get(format!(
            "{}/v1alpha1/namespaces/{ns}/leases?watch=true&resourceVersion=abc",
            server.base
        ))
        .bearer_auth("tok-east")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Without credentials: 401 before anything else.
    let r = raw
        .get(format!("{}/v1alpha1/leases?watch=true", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn mem_heartbeat_watch_history_over_tls() {
    let server = serve(Arc::new(MemStore::new()), Arc::new(SystemClock::new())).await;
    heartbeats(&server).await;
    watch_and_history(&server).await;
}

#[tokio::test]
async fn sqlite_heartbeat_watch_history_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dsn = format!("sqlite://{}", tmp.path().join("berth.db").display());
    let store = SqlStore::connect(SqlStoreConfig::new(SqlDriver::Sqlite, dsn, Migrate::Auto))
        .await
        .unwrap();
    let server = serve(Arc::new(store.clone()), Arc::new(store.clock())).await;
    heartbeats(&server).await;
    watch_and_history(&server).await;
}

fn postgres_dsn() -> Option<String> {
    match std::env::var("BERTH_TEST_POSTGRES_DSN") {
        Ok(dsn) if !dsn.is_empty() => Some(dsn),
        _ => {
            assert!(
                std::env::var("BERTH_REQUIRE_INTEGRATION").as_deref() != Ok("1"),
                "BERTH_REQUIRE_INTEGRATION=1 but BERTH_TEST_POSTGRES_DSN is not set"
            );
            eprintln!("skipped: set BERTH_TEST_POSTGRES_DSN to run the PostgreSQL watch tests");
            None
        }
    }
}

#[tokio::test]
async fn postgres_two_replicas_watch_each_other() {
    let Some(dsn) = postgres_dsn() else { return };
    let connect = || async {
        SqlStore::connect(SqlStoreConfig::new(
            SqlDriver::Postgres,
            dsn.clone(),
            Migrate::Auto,
        ))
        .await
        .unwrap()
    };
    let (a, b) = (connect().await, connect().await);
    let ra = serve(Arc::new(a.clone()), Arc::new(a.clock())).await;
    let rb = serve(Arc::new(b.clone()), Arc::new(b.clock())).await;
    heartbeats(&ra).await;
    watch_and_history(&ra).await;

    // A watcher on replica A learns of writes made through replica B (by polling).
    let ns = unique_ns("replicas");
    let on_a = client(&ra, "tok-west");
    let on_b = client(&rb, "tok-east");
    let opts = WatchOptions {
        bookmark: Duration::from_secs(1),
        ..WatchOptions::default()
    };
    let mut w = on_a
        .watch(WatchTarget::Lease(&ns, "db"), &opts)
        .await
        .unwrap();
    until_synced(&mut w).await;
    let r = on_b
        .acquire(&ns, "db", "east", Duration::from_secs(30))
        .await
        .unwrap();
    let e = next_change(&mut w, Duration::from_secs(5)).await;
    assert_eq!(e.event_type, WatchEventType::Acquired);
    on_b.release(&ns, "db", "east", r.fencing_token)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = next_change(&mut w, Duration::from_secs(5)).await;
    assert_eq!(e.event_type, WatchEventType::Released);
    // The standby reacts to the event at once.
    assert!(
        on_a.acquire(&ns, "db", "west", Duration::from_secs(30))
            .await
            .unwrap()
            .acquired
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn k8s_heartbeat_watch_history_over_tls() {
    let Some(cluster) = berth_e2e::shared_cluster_or_skip().await else {
        return;
    };
    let ns = cluster
        .create_namespace("client-watch")
        .await
        .expect("coordination namespace");
    let store = berth_store_k8s::KubeStore::from_client(
        cluster.client(),
        berth_store_k8s::KubeStoreConfig::new(&ns),
    )
    .expect("store");
    let clock = store.clock();
    let server = serve(Arc::new(store), Arc::new(clock)).await;
    heartbeats(&server).await;
    watch_and_history(&server).await;
}
