//! The client against a small in-test HTTP server that speaks the lease API, over plain HTTP
//! and over TLS with a test CA.

#![allow(clippy::unwrap_used)] // test scaffolding: a failure here is a test failure
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use berth_api::{
    AcquireRequest, ErrorBody, LeaseList, LeaseResponse, LeaseState, LeaseStatus, ReleaseRequest,
    RenewRequest,
};
use berth_client::{AcquireOutcome, ClaimState, Client, ClientError, FileToken, ListOptions};
use tokio::{net::TcpListener, time::Instant};

#[derive(Clone, Default)]
struct Fake {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    leases: HashMap<(String, String), Lease>,
    /// Authorization headers seen, in order.
    auth: Vec<Option<String>>,
    /// Raw paths seen, in order.
    paths: Vec<String>,
    /// Raw query strings of list calls.
    queries: Vec<String>,
    /// When set, every lease call answers this status with an envelope.
    fail_with: Option<StatusCode>,
    renews: usize,
}

#[derive(Clone)]
struct Lease {
    holder: String,
    token: i64,
    ttl: Duration,
    renewed: Instant,
}

fn envelope(status: StatusCode, msg: &str) -> Response {
    let request_id = status.is_server_error().then(|| "req-5xx".to_owned());
    (
        status,
        [("x-request-id", "hdr-id")],
        Json(ErrorBody {
            error: msg.to_owned(),
            request_id,
        }),
    )
        .into_response()
}

fn lease_response(acquired: bool, lease: Option<&Lease>) -> LeaseResponse {
    LeaseResponse {
        acquired,
        holder: lease.map(|l| l.holder.clone()).unwrap_or_default(),
        fencing_token: lease.map_or(0, |l| l.token),
        expires_at: None,
        acquired_at: None,
        ttl_remaining_millis: lease.map_or(0, |l| {
            i64::try_from(l.ttl.saturating_sub(l.renewed.elapsed()).as_millis()).unwrap()
        }),
        renewed_at: None,
        transitions: 0,
    }
}

impl Fake {
    fn record(&self, headers: &HeaderMap, path: String) -> Option<Response> {
        let mut s = self.inner.lock().unwrap();
        s.auth.push(
            headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        s.paths.push(path);
        s.fail_with
            .map(|status| envelope(status, "induced failure"))
    }
}

fn live(l: &Lease) -> bool {
    !l.holder.is_empty() && l.renewed.elapsed() <= l.ttl
}

async fn acquire(
    State(fake): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(req): Json<AcquireRequest>,
) -> Response {
    if let Some(r) = fake.record(&headers, uri.path().to_owned()) {
        return r;
    }
    if req.ttl_seconds <= 0 {
        return envelope(StatusCode::BAD_REQUEST, "ttlSeconds must be positive");
    }
    let mut s = fake.inner.lock().unwrap();
    let entry = s.leases.entry((ns, name));
    let ttl = Duration::from_secs(u64::try_from(req.ttl_seconds).unwrap());
    match entry {
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let l = o.get_mut();
            if live(l) && l.holder != req.holder {
                return Json(lease_response(false, Some(l))).into_response();
            }
            if !live(l) {
                l.token += 1;
            }
            l.holder = req.holder;
            l.ttl = ttl;
            l.renewed = Instant::now();
            Json(lease_response(true, Some(l))).into_response()
        }
        std::collections::hash_map::Entry::Vacant(v) => {
            let l = v.insert(Lease {
                holder: req.holder,
                token: 1,
                ttl,
                renewed: Instant::now(),
            });
            Json(lease_response(true, Some(l))).into_response()
        }
    }
}

async fn renew(
    State(fake): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(req): Json<RenewRequest>,
) -> Response {
    if let Some(r) = fake.record(&headers, uri.path().to_owned()) {
        return r;
    }
    let mut s = fake.inner.lock().unwrap();
    s.renews += 1;
    let Some(l) = s.leases.get_mut(&(ns, name)) else {
        return Json(lease_response(false, None)).into_response();
    };
    if !live(l) || l.holder != req.holder || l.token != req.fencing_token {
        return Json(lease_response(false, Some(l))).into_response();
    }
    l.ttl = Duration::from_secs(u64::try_from(req.ttl_seconds).unwrap());
    l.renewed = Instant::now();
    Json(lease_response(true, Some(l))).into_response()
}

async fn release(
    State(fake): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(req): Json<ReleaseRequest>,
) -> Response {
    if let Some(r) = fake.record(&headers, uri.path().to_owned()) {
        return r;
    }
    let mut s = fake.inner.lock().unwrap();
    if let Some(l) = s.leases.get_mut(&(ns, name))
        && live(l)
    {
        if l.holder != req.holder || l.token != req.fencing_token {
            return envelope(
                StatusCode::CONFLICT,
                "lease held by another identity or token",
            );
        }
        l.holder.clear();
    }
    StatusCode::NO_CONTENT.into_response()
}

fn status_of(ns: &str, name: &str, l: &Lease) -> LeaseStatus {
    LeaseStatus {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        state: if l.holder.is_empty() {
            LeaseState::Released
        } else if live(l) {
            LeaseState::Held
        } else {
            LeaseState::Expired
        },
        holder: l.holder.clone(),
        fencing_token: l.token,
        ttl_seconds: i64::try_from(l.ttl.as_secs()).unwrap(),
        acquired_at: None,
        renewed_at: None,
        expires_at: None,
        ttl_remaining_millis: 0,
        transitions: 0,
    }
}

async fn get_lease(
    State(fake): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = fake.record(&headers, uri.path().to_owned()) {
        return r;
    }
    let s = fake.inner.lock().unwrap();
    match s.leases.get(&(ns.clone(), name.clone())) {
        Some(l) => Json(status_of(&ns, &name, l)).into_response(),
        None => envelope(StatusCode::NOT_FOUND, "lease not found"),
    }
}

async fn list(
    State(fake): State<Fake>,
    ns: Option<Path<String>>,
    Query(q): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = fake.record(&headers, uri.path().to_owned()) {
        return r;
    }
    let mut s = fake.inner.lock().unwrap();
    s.queries.push(uri.query().unwrap_or_default().to_owned());
    let mut items: Vec<LeaseStatus> = s
        .leases
        .iter()
        .filter(|((n, _), _)| ns.as_ref().is_none_or(|p| &p.0 == n))
        .filter(|(_, l)| q.get("holder").is_none_or(|h| h == &l.holder))
        .map(|((n, m), l)| status_of(n, m, l))
        .collect();
    items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    // Continue token = number of items to skip.
    let skip: usize = q.get("continue").map_or(0, |c| c.parse().unwrap());
    let limit: usize = q.get("limit").map_or(usize::MAX, |l| l.parse().unwrap());
    let total = items.len();
    let page: Vec<LeaseStatus> = items.into_iter().skip(skip).take(limit).collect();
    let next = skip + page.len();
    Json(LeaseList {
        items: page,
        continue_token: (next < total).then(|| next.to_string()),
    })
    .into_response()
}

fn router(fake: Fake) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }),
        )
        .route("/v1alpha1/leases", get(list))
        .route("/v1alpha1/namespaces/{ns}/leases", get(list))
        .route("/v1alpha1/namespaces/{ns}/leases/{name}", get(get_lease))
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/acquire",
            post(acquire),
        )
        .route("/v1alpha1/namespaces/{ns}/leases/{name}/renew", post(renew))
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/release",
            post(release),
        )
        .with_state(fake)
}

/// Serves the fake on a free port; aborting the returned task stops the server.
async fn serve(fake: Fake) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router(fake)).await.unwrap();
    });
    (addr, task)
}

fn client(addr: SocketAddr) -> Client {
    Client::builder(format!("http://{addr}"))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn acquire_renew_get_list_release_round_trip() {
    let fake = Fake::default();
    let (addr, _server) = serve(fake.clone()).await;
    let c = client(addr);

    let r = c.acquire("team-a", "db", "east", TTL).await.unwrap();
    assert!(r.acquired);
    assert_eq!((r.holder.as_str(), r.fencing_token), ("east", 1));
    assert!(r.ttl_remaining_millis > 29_000);

    let denied = c.acquire("team-a", "db", "west", TTL).await.unwrap();
    assert!(!denied.acquired);
    assert_eq!(denied.holder, "east");

    let renewed = c.renew("team-a", "db", "east", 1, TTL).await.unwrap();
    assert!(renewed.acquired);
    let wrong = c.renew("team-a", "db", "east", 2, TTL).await.unwrap();
    assert!(!wrong.acquired);

    let status = c.get("team-a", "db").await.unwrap().expect("lease exists");
    assert_eq!(status.state, LeaseState::Held);
    assert_eq!(status.holder, "east");
    assert!(c.get("team-a", "nope").await.unwrap().is_none());

    c.acquire("team-b", "cron", "west", TTL).await.unwrap();
    let all = c.list(None, &ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    let team_a = c
        .list(Some("team-a"), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(team_a.items.len(), 1);
    let by_holder = c
        .list(
            None,
            &ListOptions {
                holder: Some("west".into()),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_holder.items[0].name, "cron");

    let err = c.release("team-a", "db", "west", 1).await.unwrap_err();
    assert!(matches!(err, ClientError::Conflict { .. }), "{err:?}");
    assert_eq!(err.to_string(), "lease held by another identity or token");
    c.release("team-a", "db", "east", 1).await.unwrap();
    // Idempotent.
    c.release("team-a", "db", "east", 1).await.unwrap();
    assert_eq!(
        c.get("team-a", "db").await.unwrap().unwrap().state,
        LeaseState::Released
    );

    c.healthz().await.unwrap();
    let err = c.readyz().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 503, message, .. } if message == "not ready"),
        "{err:?}"
    );
}

#[tokio::test]
async fn pagination_and_query_encoding() {
    let fake = Fake::default();
    let (addr, _server) = serve(fake.clone()).await;
    let c = client(addr);
    for name in ["a", "b", "c"] {
        c.acquire("ns", name, "h & co", TTL).await.unwrap();
    }
    let mut opts = ListOptions {
        limit: Some(2),
        holder: Some("h & co".into()),
        continue_token: None,
    };
    let first = c.list(Some("ns"), &opts).await.unwrap();
    assert_eq!(first.items.len(), 2);
    opts.continue_token = first.continue_token.clone();
    let second = c.list(Some("ns"), &opts).await.unwrap();
    assert_eq!(second.items.len(), 1);
    assert!(second.continue_token.is_none());
    let queries = fake.inner.lock().unwrap().queries.clone();
    assert_eq!(queries[0], "limit=2&holder=h+%26+co");
    assert_eq!(queries[1], "limit=2&continue=2&holder=h+%26+co");
}

#[tokio::test]
async fn path_segments_are_percent_encoded() {
    let fake = Fake::default();
    let (addr, _server) = serve(fake.clone()).await;
    let c = client(addr);
    c.acquire("ns", "we ird", "h", TTL).await.unwrap();
    assert_eq!(
        fake.inner.lock().unwrap().paths[0],
        "/v1alpha1/namespaces/ns/leases/we%20ird/acquire"
    );
    // The server decoded the segment back.
    assert!(c.get("ns", "we ird").await.unwrap().is_some());
}

#[tokio::test]
async fn errors_are_typed_and_bearer_tokens_come_from_the_source() {
    let fake = Fake::default();
    let (addr, _server) = serve(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "first\n").unwrap();
    let c = Client::builder(format!("http://{addr}"))
        .token_source(
            FileToken::new(&token_path)
                .unwrap()
                .cache_for(Duration::ZERO),
        )
        .build()
        .unwrap();

    c.acquire("ns", "n", "h", TTL).await.unwrap();
    std::fs::write(&token_path, "second").unwrap();
    c.acquire("ns", "n", "h", TTL).await.unwrap();
    let seen = fake.inner.lock().unwrap().auth.clone();
    assert_eq!(
        seen,
        vec![Some("Bearer first".into()), Some("Bearer second".into())]
    );

    let err = c.acquire("ns", "n", "h", Duration::ZERO).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "server returned 400: ttlSeconds must be positive (request id hdr-id)"
    );

    for (status, check) in [
        (
            StatusCode::UNAUTHORIZED,
            (|e: &ClientError| matches!(e, ClientError::Unauthorized { .. }))
                as fn(&ClientError) -> bool,
        ),
        (StatusCode::FORBIDDEN, |e| {
            matches!(e, ClientError::Forbidden { .. })
        }),
        (StatusCode::INTERNAL_SERVER_ERROR, |e| {
            matches!(e, ClientError::Api { status: 500, request_id: Some(id), .. } if id == "req-5xx")
                && e.is_retryable()
        }),
    ] {
        fake.inner.lock().unwrap().fail_with = Some(status);
        let err = c.acquire("ns", "n", "h", TTL).await.unwrap_err();
        assert!(check(&err), "{status}: {err:?}");
    }
}

#[tokio::test]
async fn unreachable_server_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client(addr).healthz().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn slow_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/healthz",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "ok"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = Client::builder(format!("http://{addr}"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = c.healthz().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
}

#[tokio::test]
async fn lease_handle_renews_and_releases() {
    let fake = Fake::default();
    let (addr, _server) = serve(fake.clone()).await;
    let c = client(addr);

    let lease = c
        .lease("ns", "job", "east", Duration::from_secs(5))
        .renew_interval(Duration::from_millis(100));
    let AcquireOutcome::Held(mut handle) = lease.acquire().await.unwrap() else {
        panic!("free lease must be granted")
    };
    assert_eq!(handle.claim().token, 1);

    // A second holder is denied while we hold it.
    let other = c.lease("ns", "job", "west", Duration::from_secs(5));
    let AcquireOutcome::Denied(current) = other.acquire().await.unwrap() else {
        panic!("held lease must be denied")
    };
    assert_eq!(current.holder, "east");

    let mut rx = handle.keep_alive();
    let first = rx.borrow().safe_until;
    for _ in 0..3 {
        rx.changed().await.unwrap();
    }
    let claim = rx.borrow().clone();
    assert_eq!(claim.state, ClaimState::Held);
    assert!(claim.safe_until > first);
    assert!(claim.safe_until <= Instant::now() + Duration::from_secs(5));
    assert!(fake.inner.lock().unwrap().renews >= 3);

    handle.release().await.unwrap();
    assert!(
        fake.inner.lock().unwrap().leases[&("ns".to_owned(), "job".to_owned())]
            .holder
            .is_empty()
    );
    // The waiting contender gets it at once.
    let granted = other
        .acquire_blocking(Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(granted.claim().token, 2);
}

#[tokio::test]
async fn lease_handle_sees_a_takeover_as_lost() {
    let fake = Fake::default();
    let (addr, _server) = serve(fake.clone()).await;
    let c = client(addr);
    let AcquireOutcome::Held(mut handle) = c
        .lease("ns", "job", "east", Duration::from_secs(5))
        .renew_interval(Duration::from_millis(100))
        .acquire()
        .await
        .unwrap()
    else {
        panic!("granted")
    };
    let mut rx = handle.keep_alive();
    // Someone else takes the key over behind our back.
    fake.inner
        .lock()
        .unwrap()
        .leases
        .get_mut(&("ns".to_owned(), "job".to_owned()))
        .unwrap()
        .holder = "west".into();
    rx.wait_for(|c| c.state != ClaimState::Held).await.unwrap();
    assert_eq!(rx.borrow().state, ClaimState::Lost);
    // Releasing a lost claim sends nothing and succeeds.
    handle.release().await.unwrap();
}

#[tokio::test]
async fn lease_handle_expires_before_the_ttl_when_the_server_dies() {
    let fake = Fake::default();
    let (addr, server) = serve(fake.clone()).await;
    let c = client(addr);
    let ttl = Duration::from_secs(2);
    let AcquireOutcome::Held(mut handle) = c
        .lease("ns", "job", "east", ttl)
        .renew_interval(Duration::from_millis(200))
        .acquire()
        .await
        .unwrap()
    else {
        panic!("granted")
    };
    let mut rx = handle.keep_alive();
    rx.changed().await.unwrap(); // one successful renew
    server.abort();
    let _ = server.await;
    let killed = Instant::now();
    let last_safe = rx.borrow().safe_until;
    rx.wait_for(|c| c.state != ClaimState::Held).await.unwrap();
    let ended = Instant::now();
    assert_eq!(rx.borrow().state, ClaimState::Expired);
    assert!(
        ended <= killed + ttl + Duration::from_millis(100),
        "{:?}",
        ended - killed
    );
    assert!(ended >= last_safe);
    drop(handle);
}

mod tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    struct Pki {
        ca_pem: String,
        server_config: Arc<rustls::ServerConfig>,
    }

    fn pki(server_names: &[&str]) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(
            server_names
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            server_config: Arc::new(server_config),
        }
    }

    async fn serve_tls(config: Arc<rustls::ServerConfig>) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
        let server = axum_server::from_tcp_rustls(listener, config).unwrap();
        tokio::spawn(async move {
            server
                .serve(router(Fake::default()).into_make_service())
                .await
                .unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn ca_bundle_trusts_the_server() {
        let pki = pki(&["127.0.0.1", "localhost"]);
        let addr = serve_tls(pki.server_config).await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let c = Client::builder(format!("https://{addr}"))
            .ca_file(&ca)
            .build()
            .unwrap();
        c.healthz().await.unwrap();
        let r = c.acquire("ns", "n", "h", TTL).await.unwrap();
        assert!(r.acquired);

        // Without the CA the handshake fails, as a transport error.
        let untrusting = Client::builder(format!("https://{addr}")).build().unwrap();
        let err = untrusting.healthz().await.unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    }

    #[tokio::test]
    async fn server_name_override_verifies_against_that_name() {
        let pki = pki(&["berth.internal"]);
        let addr = serve_tls(pki.server_config).await;

        // By IP the certificate does not match.
        let by_ip = Client::builder(format!("https://{addr}"))
            .ca_pem(pki.ca_pem.clone())
            .build()
            .unwrap();
        assert!(matches!(
            by_ip.healthz().await.unwrap_err(),
            ClientError::Transport(_)
        ));

        let named = Client::builder(format!("https://{addr}"))
            .ca_pem(pki.ca_pem.clone())
            .server_name("berth.internal")
            .build()
            .unwrap();
        named.healthz().await.unwrap();

        let wrong = Client::builder(format!("https://{addr}"))
            .ca_pem(pki.ca_pem)
            .server_name("other.internal")
            .build()
            .unwrap();
        let err = wrong.healthz().await.unwrap_err();
        let chain = format!("{:?}", anyhow_chain(&err));
        assert!(chain.contains("NotValidForName"), "{chain}");
    }

    fn anyhow_chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![err.to_string()];
        let mut cur = err.source();
        while let Some(e) = cur {
            out.push(format!("{e:?}"));
            cur = e.source();
        }
        out
    }
}

#[tokio::test]
async fn user_agent_names_the_client() {
    let seen = Arc::new(Mutex::new(None::<String>));
    let recorder = seen.clone();
    let app = Router::new().route(
        "/healthz",
        get(move |headers: HeaderMap| {
            let recorder = recorder.clone();
            async move {
                *recorder.lock().unwrap() = headers
                    .get("user-agent")
                    .map(|v| v.to_str().unwrap().to_owned());
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    client(addr).ping().await.unwrap();
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some(concat!("berth-client/", env!("CARGO_PKG_VERSION")))
    );
}
