//! In-process compatibility tests of the router (reference §2.2–2.5): every status code and
//! body shape, check order, request ids, reads, pagination, OpenAPI and metrics.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use berth_apiserver::auth::static_keys::hash_token;
use berth_apiserver::auth::{Authenticator, StaticKeys};
use berth_apiserver::metrics::Metrics;
use berth_apiserver::{AppState, router};
use berth_core::{
    DynLeaseStore, Expect, LeaseKey, LeaseRecord, LeaseStore, ListParams, ManualClock, MemStore,
    StoreError, TtlBounds, Version, Versioned,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const EAST: &str = "east-token";
const WEST: &str = "west-token";

struct Fixture {
    app: Router,
    clock: ManualClock,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

fn mk_fixture_with(store: DynLeaseStore, static_keys: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(
        &path,
        format!(
            "# test keys\neast:{}\nwest:{}\n",
            hash_token(EAST),
            hash_token(WEST)
        ),
    )
    .unwrap();
    let auth = if static_keys {
        Authenticator::StaticKeys(Arc::new(StaticKeys::load(&path).unwrap()))
    } else {
        Authenticator::None
    };
    let clock = ManualClock::at_epoch();
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(
        store,
        Arc::new(clock.clone()),
        TtlBounds::default(),
        auth,
        metrics.clone(),
    );
    Fixture {
        app: router(state),
        clock,
        metrics,
        _dir: dir,
    }
}

fn mk_fixture() -> Fixture {
    mk_fixture_with(Arc::new(MemStore::new()), true)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn error(&self) -> String {
        let v = self.json();
        let rid = self.headers["x-request-id"].to_str().unwrap();
        assert_eq!(v["requestId"], rid, "envelope requestId matches header");
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "envelope has error and requestId only: {v}"
        );
        v["error"].as_str().unwrap().to_owned()
    }
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    assert!(
        headers.contains_key("x-request-id"),
        "every response has X-Request-Id"
    );
    Resp {
        status,
        headers,
        body,
    }
}

fn req(method: Method, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

async fn post(app: &Router, path: &str, token: Option<&str>, body: &str) -> Resp {
    send(app, req(Method::POST, path, token, body.to_owned())).await
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> Resp {
    send(app, req(Method::GET, path, token, Body::empty())).await
}

const ACQ: &str = "/v1alpha1/namespaces/team/leases/db/acquire";
const REN: &str = "/v1alpha1/namespaces/team/leases/db/renew";
const REL: &str = "/v1alpha1/namespaces/team/leases/db/release";

#[tokio::test]
async fn lease_lifecycle_status_codes_and_shapes() {
    let f = mk_fixture();
    let app = &f.app;

    // Valid acquire: 200 with the grant.
    let r = post(app, ACQ, Some(EAST), r#"{"holder":"east","ttlSeconds":30}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({
            "acquired": true, "holder": "east", "fencingToken": 1,
            "expiresAt": "2030-01-01T00:00:30Z", "acquiredAt": "2030-01-01T00:00:00Z",
            "ttlRemainingMillis": 30000, "renewedAt": "2030-01-01T00:00:00Z"
        })
    );

    // Denied acquire: 200, acquired false, the current holder's data.
    f.clock.advance(Duration::from_secs(10));
    let r = post(
        app,
        ACQ,
        Some(WEST),
        r#"{"holder":"west/a","ttlSeconds":30}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({
            "acquired": false, "holder": "east", "fencingToken": 1,
            "expiresAt": "2030-01-01T00:00:30Z", "acquiredAt": "2030-01-01T00:00:00Z",
            "ttlRemainingMillis": 20000, "renewedAt": "2030-01-01T00:00:00Z"
        })
    );

    // Renew ok.
    let r = post(
        app,
        REN,
        Some(EAST),
        r#"{"holder":"east","fencingToken":1,"ttlSeconds":60}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["acquired"], true);
    assert_eq!(v["expiresAt"], "2030-01-01T00:01:10Z");
    assert_eq!(v["renewedAt"], "2030-01-01T00:00:10Z");
    assert_eq!(v["ttlRemainingMillis"], 60000);

    // Renew with a wrong token: lost, current state.
    let r = post(
        app,
        REN,
        Some(EAST),
        r#"{"holder":"east","fencingToken":2,"ttlSeconds":60}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["acquired"], false);
    assert_eq!(v["holder"], "east");
    assert_eq!(v["fencingToken"], 1);

    // Renew on an absent key: Go zero times, holder and token omitted.
    let r = post(
        app,
        "/v1alpha1/namespaces/team/leases/nope/renew",
        Some(EAST),
        r#"{"holder":"east","fencingToken":1,"ttlSeconds":30}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"acquired": false, "expiresAt": "0001-01-01T00:00:00Z",
               "acquiredAt": "0001-01-01T00:00:00Z", "ttlRemainingMillis": 0})
    );

    // Release by someone else: 409.
    let r = post(
        app,
        REL,
        Some(WEST),
        r#"{"holder":"west","fencingToken":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "lease held by another identity or token");
    // Right holder, wrong token: 409.
    let r = post(
        app,
        REL,
        Some(EAST),
        r#"{"holder":"east","fencingToken":9}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Release: 204 empty, then idempotent, and on an absent key.
    let r = post(
        app,
        REL,
        Some(EAST),
        r#"{"holder":"east","fencingToken":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    let r = post(
        app,
        REL,
        Some(EAST),
        r#"{"holder":"east","fencingToken":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = post(
        app,
        "/v1alpha1/namespaces/team/leases/never/release",
        Some(EAST),
        r#"{"holder":"east","fencingToken":0}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // GET shows the tombstone as released, token kept.
    let r = get(app, "/v1alpha1/namespaces/team/leases/db", Some(WEST)).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["state"], "released");
    assert_eq!(v["fencingToken"], 1);
    assert!(v.get("holder").is_none());
    assert!(v.get("expiresAt").is_none());

    // Reclaim moves the token; expiry is never resurrected by renew.
    let r = post(app, ACQ, Some(WEST), r#"{"holder":"west","ttlSeconds":5}"#).await;
    assert_eq!(r.json()["fencingToken"], 2);
    assert_eq!(r.json()["transitions"], 1);
    f.clock.advance(Duration::from_secs(6));
    let r = post(
        app,
        REN,
        Some(WEST),
        r#"{"holder":"west","fencingToken":2,"ttlSeconds":5}"#,
    )
    .await;
    assert_eq!(r.json()["acquired"], false);
    let r = get(app, "/v1alpha1/namespaces/team/leases/db", Some(EAST)).await;
    assert_eq!(r.json()["state"], "expired");
    assert_eq!(r.json()["holder"], "west");

    // Never existed: 404.
    let r = get(app, "/v1alpha1/namespaces/team/leases/ghost", Some(EAST)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "lease not found");
}

struct Case {
    name: &'static str,
    path: &'static str,
    token: Option<&'static str>,
    body: String,
    status: u16,
    error: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    token: Option<&'static str>,
    body: impl Into<String>,
    status: u16,
    error: &'static str,
) -> Case {
    Case {
        name,
        path,
        token,
        body: body.into(),
        status,
        error,
    }
}

#[tokio::test]
async fn validation_auth_and_check_order_table() {
    let f = mk_fixture();
    let big = format!(
        r#"{{"holder":"east","ttlSeconds":30,"x":"{}"}}"#,
        "a".repeat(4100)
    );
    let e124 = "é".repeat(124);
    let e125 = "é".repeat(125);
    let esc125 = "\\u00e9".repeat(125);
    let ns_msg = "namespace must be a DNS-1123 label: lowercase alphanumerics or '-', starting and ending with an alphanumeric, at most 63 characters, no dots";
    let name_msg = "name must be a DNS-1123 subdomain: lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric, at most 253 characters";
    let long_name: &'static str = Box::leak(
        format!(
            "/v1alpha1/namespaces/{}/leases/{}/acquire",
            "n".repeat(63),
            vec!["m".repeat(60); 4].join(".")
        )
        .into_boxed_str(),
    );
    let cases = vec![
        // 401s.
        case(
            "no header",
            ACQ,
            None,
            r#"{"holder":"east","ttlSeconds":30}"#,
            401,
            "missing or malformed Authorization header",
        ),
        case(
            "bad token",
            ACQ,
            Some("wrong"),
            r#"{"holder":"east","ttlSeconds":30}"#,
            401,
            "unauthorized",
        ),
        case(
            "401 before 413",
            ACQ,
            None,
            big.clone(),
            401,
            "missing or malformed Authorization header",
        ),
        case(
            "401 before bad key",
            "/v1alpha1/namespaces/BAD/leases/db/acquire",
            None,
            "{}",
            401,
            "missing or malformed Authorization header",
        ),
        // Body.
        case(
            "413",
            ACQ,
            Some(EAST),
            big.clone(),
            413,
            "request body must be at most 4096 bytes",
        ),
        case(
            "trailing value",
            ACQ,
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":30}{"a":1}"#,
            400,
            "request body must contain one JSON object",
        ),
        case(
            "trailing garbage",
            ACQ,
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":30} xyz"#,
            400,
            "request body must contain one JSON object",
        ),
        // Fields.
        case(
            "holder missing",
            ACQ,
            Some(EAST),
            r#"{"ttlSeconds":30}"#,
            400,
            "holder is required",
        ),
        case(
            "holder empty",
            REN,
            Some(EAST),
            r#"{"holder":"","fencingToken":1,"ttlSeconds":30}"#,
            400,
            "holder is required",
        ),
        case(
            "holder 255 bytes",
            ACQ,
            Some(EAST),
            format!(r#"{{"holder":"east/{e125}","ttlSeconds":30}}"#),
            400,
            "holder must be at most 253 bytes",
        ),
        case(
            "holder escaped",
            ACQ,
            Some(EAST),
            format!(r#"{{"holder":"east/{esc125}","ttlSeconds":30}}"#),
            400,
            "holder must be at most 253 bytes",
        ),
        case(
            "release holder empty",
            REL,
            Some(EAST),
            r#"{"fencingToken":1}"#,
            400,
            "holder is required",
        ),
        case(
            "ttl zero",
            ACQ,
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":0}"#,
            400,
            "ttlSeconds must be positive",
        ),
        case(
            "ttl missing",
            ACQ,
            Some(EAST),
            r#"{"holder":"east"}"#,
            400,
            "ttlSeconds must be positive",
        ),
        case(
            "ttl negative",
            REN,
            Some(EAST),
            r#"{"holder":"east","fencingToken":1,"ttlSeconds":-3}"#,
            400,
            "ttlSeconds must be positive",
        ),
        case(
            "ttl too large",
            ACQ,
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":7200}"#,
            400,
            "ttlSeconds must be between 1 and 3600",
        ),
        case(
            "token zero",
            REN,
            Some(EAST),
            r#"{"holder":"east","fencingToken":0,"ttlSeconds":30}"#,
            400,
            "fencingToken must be non-zero",
        ),
        case(
            "token negative",
            REN,
            Some(EAST),
            r#"{"holder":"east","fencingToken":-1,"ttlSeconds":30}"#,
            400,
            "fencingToken must be positive",
        ),
        // 403.
        case(
            "foreign holder",
            ACQ,
            Some(EAST),
            r#"{"holder":"west","ttlSeconds":30}"#,
            403,
            "holder not authorized for this identity",
        ),
        case(
            "prefix is not a tenant",
            ACQ,
            Some(EAST),
            r#"{"holder":"eastern","ttlSeconds":30}"#,
            403,
            "holder not authorized for this identity",
        ),
        case(
            "foreign release",
            REL,
            Some(WEST),
            r#"{"holder":"east","fencingToken":1}"#,
            403,
            "holder not authorized for this identity",
        ),
        case(
            "400 field before 403",
            ACQ,
            Some(EAST),
            r#"{"holder":"west","ttlSeconds":0}"#,
            400,
            "ttlSeconds must be positive",
        ),
        case(
            "403 before bad key",
            "/v1alpha1/namespaces/Bad/leases/db/acquire",
            Some(EAST),
            r#"{"holder":"west","ttlSeconds":30}"#,
            403,
            "holder not authorized for this identity",
        ),
        // Keys.
        case(
            "bad namespace",
            "/v1alpha1/namespaces/Bad_NS/leases/db/acquire",
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":30}"#,
            400,
            ns_msg,
        ),
        case(
            "dotted namespace",
            "/v1alpha1/namespaces/a.b/leases/db/acquire",
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":30}"#,
            400,
            ns_msg,
        ),
        case(
            "bad name",
            "/v1alpha1/namespaces/team/leases/UPPER/renew",
            Some(EAST),
            r#"{"holder":"east","fencingToken":1,"ttlSeconds":30}"#,
            400,
            name_msg,
        ),
        case(
            "key too long",
            long_name,
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":30}"#,
            400,
            "namespace and name together must be at most 253 characters",
        ),
        case(
            "bad key on release",
            "/v1alpha1/namespaces/team/leases/-x/release",
            Some(EAST),
            r#"{"holder":"east","fencingToken":1}"#,
            400,
            name_msg,
        ),
    ];
    for c in cases {
        let r = post(&f.app, c.path, c.token, &c.body).await;
        assert_eq!(
            r.status.as_u16(),
            c.status,
            "{}: {:?}",
            c.name,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.error(), c.error, "{}", c.name);
    }

    // Unknown field: serde's message after the contract prefix.
    let r = post(
        &f.app,
        ACQ,
        Some(EAST),
        r#"{"holder":"east","ttlSeconds":30,"extra":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error()
            .starts_with("invalid json body: unknown field `extra`")
    );
    let r = post(&f.app, ACQ, Some(EAST), "not json").await;
    assert!(r.error().starts_with("invalid json body: "));

    // Holder of exactly 253 decoded bytes is fine; release accepts longer legacy holders.
    let r = post(
        &f.app,
        ACQ,
        Some(EAST),
        &format!(r#"{{"holder":"east/{e124}","ttlSeconds":30}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let r = post(
        &f.app,
        REL,
        Some(EAST),
        &format!(
            r#"{{"holder":"east/{}","fencingToken":7}}"#,
            "é".repeat(300)
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "live lease held by east/é…: a legacy holder gets 409, not 400"
    );
}

#[tokio::test]
async fn body_limit_counts_every_byte_and_chunked_bodies() {
    let f = mk_fixture();
    let core = r#"{"holder":"east","ttlSeconds":30}"#;
    // Exactly 4096 bytes including trailing whitespace: accepted.
    let exact = format!("{core}{}", " ".repeat(4096 - core.len()));
    let r = post(&f.app, ACQ, Some(EAST), &exact).await;
    assert_eq!(r.status, StatusCode::OK);
    // 4097 bytes of whitespace padding: rejected even though the JSON is small.
    let over = format!("{core}{}", " ".repeat(4097 - core.len()));
    let r = post(&f.app, ACQ, Some(EAST), &over).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error(), "request body must be at most 4096 bytes");
    // Chunked: no Content-Length, streamed in pieces.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 500])).collect();
    let mut first = core.as_bytes().to_vec();
    first.extend_from_slice(b" ");
    let mut all = vec![Ok(first)];
    all.extend(chunks);
    let body = Body::from_stream(futures::stream::iter(all));
    let request = Request::builder()
        .method(Method::POST)
        .uri(ACQ)
        .header("authorization", format!("Bearer {EAST}"))
        .header("transfer-encoding", "chunked")
        .body(body)
        .unwrap();
    let r = send(&f.app, request).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error(), "request body must be at most 4096 bytes");
    // A lying Content-Length above the limit is refused up front.
    let request = Request::builder()
        .method(Method::POST)
        .uri(ACQ)
        .header("authorization", format!("Bearer {EAST}"))
        .header("content-length", "5000")
        .body(Body::from(core))
        .unwrap();
    let r = send(&f.app, request).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn request_id_rules() {
    let f = mk_fixture();
    let with = |name: &'static str, value: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(ACQ)
            .header(name, value)
            .body(Body::from("{}"))
            .unwrap()
    };
    let r = send(&f.app, with("x-request-id", "my-id_1")).await;
    assert_eq!(r.headers["x-request-id"], "my-id_1");
    assert_eq!(r.json()["requestId"], "my-id_1");
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut req2 = with("traceparent", tp);
    req2.headers_mut()
        .insert("x-request-id", "has space".parse().unwrap());
    let r = send(&f.app, req2).await;
    assert_eq!(
        r.headers["x-request-id"],
        "0af7651916cd43dd8448eb211c80319c"
    );
    let r1 = get(&f.app, "/healthz", None).await;
    let r2 = get(&f.app, "/healthz", None).await;
    let id1 = r1.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id1.len(), 32);
    assert!(id1.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(id1, r2.headers["x-request-id"].to_str().unwrap());
    // 204 and 200 carry it too.
    let r = post(
        &f.app,
        REL,
        Some(EAST),
        r#"{"holder":"east","fencingToken":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn health_unknown_paths_and_methods() {
    let f = mk_fixture();
    let r = get(&f.app, "/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"ok\n");
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let r = get(&f.app, "/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"ok\n");
    let r = get(&f.app, "/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "not found");
    let r = get(&f.app, ACQ, Some(EAST)).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // Reads need authentication.
    let r = get(&f.app, "/v1alpha1/leases", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = get(&f.app, "/v1alpha1/namespaces/team/leases/db", Some("bad")).await;
    assert_eq!(r.error(), "unauthorized");
}

#[tokio::test]
async fn auth_none_skips_authentication_and_authorization() {
    let f = mk_fixture_with(Arc::new(MemStore::new()), false);
    let r = post(&f.app, ACQ, None, r#"{"holder":"anyone","ttlSeconds":30}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["holder"], "anyone");
    let r = get(&f.app, "/v1alpha1/leases", None).await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_pagination_and_holder_filter_across_namespaces() {
    let f = mk_fixture();
    for (ns, name, tok, holder) in [
        ("alpha", "a1", EAST, "east"),
        ("alpha", "a2", WEST, "west"),
        ("alpha", "a3", EAST, "east/x"),
        ("beta", "b1", WEST, "west/y"),
        ("beta", "b2", EAST, "east"),
        ("gamma", "c1", WEST, "west"),
    ] {
        let r = post(
            &f.app,
            &format!("/v1alpha1/namespaces/{ns}/leases/{name}/acquire"),
            Some(tok),
            &format!(r#"{{"holder":"{holder}","ttlSeconds":30}}"#),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // c1 released: listed, but not held by anyone.
    let r = post(
        &f.app,
        "/v1alpha1/namespaces/gamma/leases/c1/release",
        Some(WEST),
        r#"{"holder":"west","fencingToken":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // All namespaces, two per page.
    let mut seen = Vec::new();
    let mut url = "/v1alpha1/leases?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let r = get(&f.app, &url, Some(WEST)).await;
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        pages += 1;
        for item in v["items"].as_array().unwrap() {
            seen.push(format!(
                "{}/{}",
                item["namespace"].as_str().unwrap(),
                item["name"].as_str().unwrap()
            ));
        }
        match v.get("continue").and_then(Value::as_str) {
            Some(c) => url = format!("/v1alpha1/leases?limit=2&continue={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "alpha/a1", "alpha/a2", "alpha/a3", "beta/b1", "beta/b2", "gamma/c1"
        ]
    );
    // A full last page may be followed by one empty page.
    assert!((3..=4).contains(&pages), "{pages} pages");

    // One namespace.
    let r = get(&f.app, "/v1alpha1/namespaces/alpha/leases", Some(EAST)).await;
    let v = r.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert!(v.get("continue").is_none());
    assert_eq!(v["items"][0]["state"], "held");
    assert_eq!(v["items"][0]["ttlSeconds"], 30);

    // Holder filter across namespaces, one per page.
    let mut held = Vec::new();
    let mut url = "/v1alpha1/leases?holder=east&limit=1".to_owned();
    loop {
        let v = get(&f.app, &url, Some(WEST)).await.json();
        for item in v["items"].as_array().unwrap() {
            assert_eq!(item["holder"], "east");
            held.push(item["name"].as_str().unwrap().to_owned());
        }
        match v.get("continue").and_then(Value::as_str) {
            Some(c) => url = format!("/v1alpha1/leases?holder=east&limit=1&continue={c}"),
            None => break,
        }
    }
    assert_eq!(held, ["a1", "b2"]);
    let v = get(
        &f.app,
        "/v1alpha1/namespaces/gamma/leases?holder=west",
        Some(WEST),
    )
    .await
    .json();
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        0,
        "released leases are not held"
    );

    // Bad parameters.
    for (url, msg) in [
        (
            "/v1alpha1/leases?limit=0",
            "limit must be an integer between 1 and 1000",
        ),
        (
            "/v1alpha1/leases?limit=1001",
            "limit must be an integer between 1 and 1000",
        ),
        (
            "/v1alpha1/leases?limit=abc",
            "limit must be an integer between 1 and 1000",
        ),
        ("/v1alpha1/leases?continue=%21%21", "invalid continue token"),
        (
            "/v1alpha1/namespaces/alpha/leases?continue=bm9wZQ",
            "invalid continue token",
        ),
    ] {
        let r = get(&f.app, url, Some(EAST)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(r.error(), msg, "{url}");
    }
    let r = get(
        &f.app,
        "/v1alpha1/namespaces/Not_A_Label/leases",
        Some(EAST),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn openapi_describes_the_lease_paths() {
    let f = mk_fixture();
    let r = get(&f.app, "/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    let paths = v["paths"].as_object().unwrap();
    for p in [
        "/v1alpha1/namespaces/{ns}/leases/{name}/acquire",
        "/v1alpha1/namespaces/{ns}/leases/{name}/renew",
        "/v1alpha1/namespaces/{ns}/leases/{name}/release",
        "/v1alpha1/namespaces/{ns}/leases/{name}",
        "/v1alpha1/namespaces/{ns}/leases",
        "/v1alpha1/leases",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(
        paths["/v1alpha1/namespaces/{ns}/leases/{name}/acquire"]["post"]["responses"]["200"]
            .is_object()
    );
    let schemas = v["components"]["schemas"].as_object().unwrap();
    for s in [
        "AcquireRequest",
        "RenewRequest",
        "ReleaseRequest",
        "LeaseResponse",
        "LeaseStatus",
        "LeaseList",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(s), "missing schema {s}");
    }
    assert_eq!(
        v["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for p in [
        "/v1alpha1/namespaces/{ns}/leases/{name}",
        "/v1alpha1/namespaces/{ns}/leases",
        "/v1alpha1/leases",
    ] {
        let names: Vec<&str> = paths[p]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|q| q["name"].as_str())
            .collect();
        for want in ["watch", "renewals", "resourceVersion", "bookmarkSeconds"] {
            assert!(
                names.contains(&want),
                "{p} lacks the {want} parameter: {names:?}"
            );
        }
    }
    for p in [
        "/v1alpha1/heartbeats",
        "/v1alpha1/namespaces/{ns}/leases/{name}/history",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
}

/// A store whose every call fails.
#[derive(Debug)]
struct BrokenStore;

fn broken() -> StoreError {
    StoreError::Unavailable {
        backend: "mem",
        source: "connection refused to secret-host:5432".into(),
    }
}

#[async_trait::async_trait]
impl LeaseStore for BrokenStore {
    fn backend(&self) -> &'static str {
        "mem"
    }
    async fn get(&self, _: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        Err(broken())
    }
    async fn list(&self, _: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        Err(broken())
    }
    async fn put(&self, _: &LeaseRecord, _: Expect) -> Result<Version, StoreError> {
        Err(broken())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(broken())
    }
}

#[tokio::test]
async fn store_failures_are_generic_500s_and_not_ready() {
    let f = mk_fixture_with(Arc::new(BrokenStore), true);
    let request = Request::builder()
        .method(Method::POST)
        .uri(ACQ)
        .header("authorization", format!("Bearer {EAST}"))
        .header("x-request-id", "req-500")
        .body(Body::from(r#"{"holder":"east","ttlSeconds":30}"#))
        .unwrap();
    let r = send(&f.app, request).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        r.json(),
        json!({"error": "internal error", "requestId": "req-500"})
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("secret-host"));
    let r = get(&f.app, "/v1alpha1/leases", Some(EAST)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let r = get(&f.app, "/readyz", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, b"not ready\n");
    let text = f.metrics.encode().unwrap();
    assert!(
        text.contains(r#"berth_apiserver_lease_outcomes_total{outcome="error"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"op="get",backend="mem",outcome="error""#),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_endpoint_exposes_the_series() {
    let f = mk_fixture();
    post(
        &f.app,
        ACQ,
        Some(EAST),
        r#"{"holder":"east","ttlSeconds":30}"#,
    )
    .await;
    post(
        &f.app,
        ACQ,
        Some(WEST),
        r#"{"holder":"west","ttlSeconds":30}"#,
    )
    .await;
    post(
        &f.app,
        REN,
        Some(EAST),
        r#"{"holder":"east","fencingToken":1,"ttlSeconds":30}"#,
    )
    .await;
    post(
        &f.app,
        REN,
        Some(EAST),
        r#"{"holder":"east","fencingToken":5,"ttlSeconds":30}"#,
    )
    .await;
    post(
        &f.app,
        REL,
        Some(EAST),
        r#"{"holder":"east","fencingToken":1}"#,
    )
    .await;
    post(&f.app, ACQ, None, "{}").await;
    post(
        &f.app,
        ACQ,
        Some(EAST),
        r#"{"holder":"west","ttlSeconds":30}"#,
    )
    .await;
    post(
        &f.app,
        ACQ,
        Some(EAST),
        r#"{"holder":"east","ttlSeconds":0}"#,
    )
    .await;
    post(
        &f.app,
        ACQ,
        Some(EAST),
        r#"{"holder":"east","ttlSeconds":30}"#,
    )
    .await;
    post(
        &f.app,
        REL,
        Some(WEST),
        r#"{"holder":"west","fencingToken":1}"#,
    )
    .await;
    get(&f.app, "/v1alpha1/namespaces/team/leases/db", Some(EAST)).await;
    get(&f.app, "/nope", None).await;

    let ready = Arc::new(berth_apiserver::ready::ReadyGate::new(Arc::new(
        MemStore::new(),
    )));
    let admin = berth_apiserver::metrics_router(f.metrics.clone(), ready);
    let r = admin
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for needle in [
        r#"berth_apiserver_requests_total{route="/v1alpha1/namespaces/{ns}/leases/{name}/acquire",method="POST",status="200"} 3"#,
        r#"berth_apiserver_requests_total{route="/v1alpha1/namespaces/{ns}/leases/{name}/acquire",method="POST",status="401"} 1"#,
        r#"berth_apiserver_requests_total{route="/v1alpha1/namespaces/{ns}/leases/{name}",method="GET",status="200"} 1"#,
        r#"berth_apiserver_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"berth_apiserver_request_duration_seconds_count{route="/v1alpha1/namespaces/{ns}/leases/{name}/release",method="POST",status="204"} 1"#,
        "berth_apiserver_requests_inflight 0",
        r#"berth_apiserver_lease_outcomes_total{outcome="acquired"} 2"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="held-by-other"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="renewed"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="lost"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="released"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="conflict"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="unauthorized"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="forbidden"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="invalid"} 1"#,
        r#"berth_lease_store_call_duration_seconds_count{op="put",backend="mem",outcome="ok"}"#,
        r#"berth_lease_store_call_duration_seconds_count{op="get",backend="mem",outcome="notfound"}"#,
        "berth_apiserver_live_leases",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains("team"), "no lease names in labels");
    assert!(!text.contains("east"), "no holders in labels");
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ok\n")] {
        let r = admin
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), body);
    }
}

#[tokio::test]
async fn heartbeat_items_answer_in_order_and_count_as_renewals() {
    let f = mk_fixture();
    for name in ["a", "b"] {
        let r = post(
            &f.app,
            &format!("/v1alpha1/namespaces/team/leases/{name}/acquire"),
            Some(EAST),
            r#"{"holder":"east","ttlSeconds":30}"#,
        )
        .await;
        assert_eq!(r.json()["acquired"], true);
    }
    let body = json!({
        "holder": "east",
        "leases": [
            {"namespace": "team", "name": "a", "fencingToken": 1, "ttlSeconds": 30},
            {"namespace": "team", "name": "b", "fencingToken": 7, "ttlSeconds": 30},
            {"namespace": "Team", "name": "c", "fencingToken": 1, "ttlSeconds": 30},
        ]
    });
    let r = post(
        &f.app,
        "/v1alpha1/heartbeats",
        Some(EAST),
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "one result per item: {v}");
    assert_eq!(results[0]["name"], "a");
    assert_eq!(results[0]["acquired"], true);
    assert_eq!(results[1]["name"], "b");
    assert_eq!(results[1]["acquired"], false, "a wrong token loses");
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .starts_with("namespace must be"),
        "{v}"
    );
    // A foreign holder is refused for the whole batch.
    let r = post(
        &f.app,
        "/v1alpha1/heartbeats",
        Some(WEST),
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let text = f.metrics.encode().unwrap();
    for needle in [
        r#"berth_apiserver_lease_outcomes_total{outcome="renewed"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="lost"} 1"#,
        r#"berth_apiserver_lease_outcomes_total{outcome="invalid"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}
