//! The real HTTPS server on 127.0.0.1:0 with an rcgen certificate: a lease round trip over
//! TLS, certificate reload, the request-header timeout and bounded graceful shutdown.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_apiserver::auth::static_keys::hash_token;
use berth_apiserver::auth::{Authenticator, StaticKeys};
use berth_apiserver::metrics::Metrics;
use berth_apiserver::server::{serve_https, wait_shutdown};
use berth_apiserver::tls::TlsFiles;
use berth_apiserver::{AppState, dev, router};
use berth_core::{MemStore, SystemClock, TtlBounds};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::sync::watch;

fn client_trusting(ca: &Path) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
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
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_round_trip_and_certificate_reload() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let first = dev::prepare(&tmp.path().join("a")).unwrap();
    let second = dev::prepare(&tmp.path().join("b")).unwrap();
    // The live files start as CA A's serving pair.
    let live_cert = tmp.path().join("tls.crt");
    let live_key = tmp.path().join("tls.key");
    std::fs::copy(&first.tls_cert, &live_cert).unwrap();
    std::fs::copy(&first.tls_key, &live_key).unwrap();

    let keys = tmp.path().join("keys");
    std::fs::write(&keys, format!("east:{}\n", hash_token("tok"))).unwrap();
    let state = AppState::new(
        Arc::new(MemStore::new()),
        Arc::new(SystemClock::new()),
        TtlBounds::default(),
        Authenticator::StaticKeys(Arc::new(StaticKeys::load(&keys).unwrap())),
        Arc::new(Metrics::new()),
    );
    let files = TlsFiles {
        cert: live_cert.clone(),
        key: live_key.clone(),
    };
    let tls = files.load().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reloader = files.spawn_reloader(tls.clone(), Duration::from_millis(100), stop_rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_https(
        listener,
        router(state),
        tls,
        wait_shutdown(stop_rx),
        Duration::from_secs(2),
    ));
    let base = format!("https://localhost:{}", addr.port());
    let via_ip = format!("https://127.0.0.1:{}", addr.port());

    let a = client_trusting(&first.ca_cert);
    let post = |client: &reqwest::Client, path: &str, body: Value| {
        client
            .post(format!(
                "{base}/v1alpha1/namespaces/demo/leases/hello/{path}"
            ))
            .bearer_auth("tok")
            .json(&body)
            .send()
    };
    let r = post(&a, "acquire", json!({"holder": "east", "ttlSeconds": 30}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["acquired"], true);
    assert_eq!(v["fencingToken"], 1);
    let r = post(
        &a,
        "renew",
        json!({"holder": "east", "fencingToken": 1, "ttlSeconds": 30}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["acquired"], true);
    let r = post(&a, "release", json!({"holder": "east", "fencingToken": 1}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = a.get(format!("{via_ip}/healthz")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let r = a
        .get(format!("{base}/v1alpha1/namespaces/demo/leases/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A broken certificate file is logged and the old pair kept.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh_a = client_trusting(&first.ca_cert);
    assert_eq!(
        fresh_a
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Rotate to CA B's pair: new connections get the new certificate.
    std::fs::copy(&second.tls_key, &live_key).unwrap();
    std::fs::copy(&second.tls_cert, &live_cert).unwrap();
    let mut switched = false;
    for _ in 0..50 {
        let b = client_trusting(&second.ca_cert);
        if b.get(format!("{base}/healthz")).send().await.is_ok() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "server never served the reloaded certificate");
    let stale = client_trusting(&first.ca_cert);
    assert!(
        stale.get(format!("{base}/healthz")).send().await.is_err(),
        "old CA must no longer verify"
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops within the shutdown bound")
        .unwrap()
        .unwrap();
    reloader.await.unwrap();
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let d = dev::prepare(tmp.path()).unwrap();
    let state = AppState::new(
        Arc::new(MemStore::new()),
        Arc::new(SystemClock::new()),
        TtlBounds::default(),
        Authenticator::None,
        Arc::new(Metrics::new()),
    );
    let tls = TlsFiles {
        cert: d.tls_cert.clone(),
        key: d.tls_key.clone(),
    }
    .load()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve_https(
        listener,
        router(state),
        tls,
        wait_shutdown(stop_rx),
        Duration::from_secs(1),
    ));

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&d.ca_cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = connector.connect(name, tcp).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    conn.flush().await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "server kept a half-sent request open");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(12),
        "closed after {waited:?}"
    );
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}

/// A MemStore whose reads take `delay`.
#[derive(Debug)]
struct SlowStore {
    inner: MemStore,
    delay: Duration,
}

#[async_trait::async_trait]
impl berth_core::LeaseStore for SlowStore {
    fn backend(&self) -> &'static str {
        "mem"
    }
    async fn get(
        &self,
        key: &berth_core::LeaseKey,
    ) -> Result<Option<berth_core::Versioned<berth_core::LeaseRecord>>, berth_core::StoreError>
    {
        tokio::time::sleep(self.delay).await;
        self.inner.get(key).await
    }
    async fn list(
        &self,
        p: &berth_core::ListParams,
    ) -> Result<Vec<berth_core::Versioned<berth_core::LeaseRecord>>, berth_core::StoreError> {
        self.inner.list(p).await
    }
    async fn put(
        &self,
        r: &berth_core::LeaseRecord,
        e: berth_core::Expect,
    ) -> Result<berth_core::Version, berth_core::StoreError> {
        self.inner.put(r, e).await
    }
    async fn ping(&self) -> Result<(), berth_core::StoreError> {
        Ok(())
    }
}

async fn slow_server(
    delay: Duration,
    drain: Duration,
) -> (
    String,
    reqwest::Client,
    watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tempfile::TempDir,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let d = dev::prepare(tmp.path()).unwrap();
    let state = AppState::new(
        Arc::new(SlowStore {
            inner: MemStore::new(),
            delay,
        }),
        Arc::new(SystemClock::new()),
        TtlBounds::default(),
        Authenticator::None,
        Arc::new(Metrics::new()),
    );
    let tls = TlsFiles {
        cert: d.tls_cert.clone(),
        key: d.tls_key.clone(),
    }
    .load()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve_https(
        listener,
        router(state),
        tls,
        wait_shutdown(stop_rx),
        drain,
    ));
    let client = client_trusting(&d.ca_cert);
    (
        format!("https://localhost:{}", addr.port()),
        client,
        stop_tx,
        server,
        tmp,
    )
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let (base, client, stop, server, _tmp) =
        slow_server(Duration::from_millis(600), Duration::from_secs(5)).await;
    let inflight = tokio::spawn(async move {
        client
            .post(format!(
                "{base}/v1alpha1/namespaces/demo/leases/slow/acquire"
            ))
            .json(&json!({"holder": "me", "ttlSeconds": 30}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    let r = inflight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["acquired"], true);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops after draining")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_timeout() {
    let (base, client, stop, server, _tmp) =
        slow_server(Duration::from_secs(30), Duration::from_millis(300)).await;
    let stuck = tokio::spawn(async move {
        client
            .post(format!(
                "{base}/v1alpha1/namespaces/demo/leases/stuck/acquire"
            ))
            .json(&json!({"holder": "me", "ttlSeconds": 30}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server gives up on a stuck request")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request is cut off"
    );
}
