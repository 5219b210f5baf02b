//! The request-body extractors the lease handlers use (acquire, renew, release and heartbeats):
//! never a panic, never a 5xx; an accepted body is exactly one JSON object with only known
//! fields; a body over the limit is always 413.
#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use berth_api::{MAX_BODY_BYTES, MAX_HEARTBEAT_BODY_BYTES};
use berth_apiserver::handlers::body::{AcquireBody, JsonBody, ReleaseBody, RenewBody};
use berth_apiserver::handlers::heartbeat::HeartbeatBody;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// Runs one extractor on `body`: the first byte picks the operation and how `Content-Length`
/// is sent (absent, true or a lie).
fn request(body: &[u8], length: Option<u64>) -> Request {
    let mut b = Request::builder().method("POST").uri("/v1alpha1/x");
    if let Some(n) = length {
        b = b.header("content-length", n.to_string());
    }
    b.body(Body::from(body.to_vec())).expect("valid request")
}

/// The keys of the one JSON object in `body`, which must parse as exactly one value.
fn object_keys(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("accepted body is JSON");
    let obj = v.as_object().expect("accepted body is an object");
    obj.keys().cloned().collect()
}

fn check_json<T: DeserializeOwned>(body: &[u8], length: Option<u64>, known: &[&str]) {
    let res = futures::executor::block_on(JsonBody::<T>::from_request(request(body, length), &()));
    let declared_too_large = length.is_some_and(|n| n > MAX_BODY_BYTES as u64);
    match res {
        Ok(_) => {
            assert!(body.len() <= MAX_BODY_BYTES && !declared_too_large);
            for k in object_keys(body) {
                assert!(known.contains(&k.as_str()), "unknown field {k:?} accepted");
            }
        }
        Err(e) => {
            let status = e.status();
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
                "{status}"
            );
            if body.len() > MAX_BODY_BYTES || declared_too_large {
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            }
            let resp = e.into_response();
            assert!(!resp.status().is_server_error());
        }
    }
}

fn check_heartbeat(body: &[u8], length: Option<u64>) {
    let res = futures::executor::block_on(HeartbeatBody::from_request(request(body, length), &()));
    let declared_too_large = length.is_some_and(|n| n > MAX_HEARTBEAT_BODY_BYTES as u64);
    match res {
        Ok(HeartbeatBody(req)) => {
            assert!(!declared_too_large);
            for k in object_keys(body) {
                assert!(["holder", "leases"].contains(&k.as_str()), "{k:?}");
            }
            // What was decoded encodes and decodes back to itself.
            let again = serde_json::to_vec(&req).expect("encodes");
            let back: berth_api::HeartbeatRequest =
                serde_json::from_slice(&again).expect("decodes");
            assert_eq!(back, req);
        }
        Err(resp) => {
            let status = resp.status();
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
                "{status}"
            );
            if declared_too_large {
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let length = match (sel >> 2) % 4 {
        0 => None,
        1 => Some(body.len() as u64),
        // A declared length that lies, in either direction.
        2 => Some(u64::from(sel) * 64),
        _ => Some(MAX_HEARTBEAT_BODY_BYTES as u64 + u64::from(sel)),
    };
    match sel % 4 {
        0 => check_json::<AcquireBody>(body, length, &["holder", "ttlSeconds"]),
        1 => check_json::<RenewBody>(body, length, &["holder", "fencingToken", "ttlSeconds"]),
        2 => check_json::<ReleaseBody>(body, length, &["holder", "fencingToken"]),
        _ => check_heartbeat(body, length),
    }
});
