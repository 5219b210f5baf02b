//! `POST /v1alpha1/heartbeats`: renew many leases of one holder in one round trip.
//!
//! Check order: 401 (middleware) → 400 body (its own limit,
//! [`berth_api::MAX_HEARTBEAT_BODY_BYTES`], and at most [`berth_api::MAX_HEARTBEAT_ITEMS`]
//! items) → 400 holder → 403 (the holder must be the caller's) → per item: key, token and TTL
//! checks, then one batched renew. An invalid or failed item is reported in its own result
//! with `acquired: false` and `error`; it never fails the batch.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use berth_api::{
    ErrorBody, HeartbeatRequest, HeartbeatResponse, HeartbeatResult, MAX_HEARTBEAT_BODY_BYTES,
    MAX_HEARTBEAT_ITEMS,
};
use berth_core::{FencingToken, HeartbeatItem, Holder, LeaseError, LeaseKey, Renew};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::body::decode;
use super::lease::lease_response;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorInfo};
use crate::state::AppState;

/// A heartbeat body: at most [`MAX_HEARTBEAT_BODY_BYTES`], one JSON object, no unknown fields.
#[derive(Debug)]
pub struct HeartbeatBody(pub HeartbeatRequest);

/// 413 with the heartbeat limit in the message.
fn too_large() -> Response {
    let mut resp = ApiError::PayloadTooLarge.into_response();
    if let Some(info) = resp.extensions_mut().get_mut::<ErrorInfo>() {
        info.message = format!("request body must be at most {MAX_HEARTBEAT_BODY_BYTES} bytes");
    }
    resp
}

impl<S: Send + Sync> FromRequest<S> for HeartbeatBody {
    type Rejection = Response;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_HEARTBEAT_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes = Limited::new(req.into_body(), MAX_HEARTBEAT_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    too_large()
                } else {
                    ApiError::BadRequest("could not read request body".into()).into_response()
                }
            })?
            .to_bytes();
        decode(&bytes)
            .map(HeartbeatBody)
            .map_err(IntoResponse::into_response)
    }
}

fn item_error(namespace: String, name: String, error: String) -> HeartbeatResult {
    HeartbeatResult {
        namespace,
        name,
        lease: lease_response(false, None),
        error: Some(error),
    }
}

/// Renew many leases of one holder.
#[utoipa::path(post, path = "/v1alpha1/heartbeats", tag = "leases",
    request_body = berth_api::HeartbeatRequest,
    responses(
        (status = 200, description = "one result per lease, in request order", body = HeartbeatResponse),
        (status = 400, description = "invalid body or holder, or more than 2500 leases", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 403, description = "holder not owned by the caller", body = ErrorBody),
        (status = 413, description = "body larger than 1 MiB", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    HeartbeatBody(body): HeartbeatBody,
) -> Result<Response, ApiError> {
    if body.leases.len() > MAX_HEARTBEAT_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "leases must hold at most {MAX_HEARTBEAT_ITEMS} items"
        )));
    }
    let holder = Holder::new(body.holder)?;
    caller.authorize(holder.as_str())?;

    let mut results: Vec<Option<HeartbeatResult>> = Vec::with_capacity(body.leases.len());
    let mut batch = Vec::new();
    let mut slots = Vec::new();
    for item in body.leases {
        let checked = (|| {
            let key = LeaseKey::new(item.namespace.clone(), item.name.clone())
                .map_err(|e| e.to_string())?;
            if item.fencing_token == 0 {
                return Err("fencingToken must be non-zero".to_owned());
            }
            let token = FencingToken::new(item.fencing_token)
                .ok_or_else(|| "fencingToken must be positive".to_owned())?;
            let ttl = u64::try_from(item.ttl_seconds)
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| "ttlSeconds must be positive".to_owned())?;
            Ok(HeartbeatItem { key, token, ttl })
        })();
        match checked {
            Ok(hb) => {
                slots.push(results.len());
                results.push(None);
                batch.push(hb);
            }
            Err(e) => {
                state.metrics.lease_outcome("invalid");
                results.push(Some(item_error(item.namespace, item.name, e)));
            }
        }
    }
    let renewed = if batch.is_empty() {
        Vec::new()
    } else {
        state.leases.heartbeat(&holder, &batch).await?
    };
    for ((slot, item), outcome) in slots.into_iter().zip(batch).zip(renewed) {
        let namespace = item.key.namespace().to_owned();
        let name = item.key.name().to_owned();
        // Each item counts like the renew it stands for.
        state.metrics.lease_outcome(match &outcome {
            Ok(Renew::Renewed(_)) => "renewed",
            Ok(Renew::Lost(_)) => "lost",
            Err(LeaseError::TtlOutOfRange { .. }) => "invalid",
            Err(_) => "error",
        });
        results[slot] = Some(match outcome {
            Ok(Renew::Renewed(view)) => HeartbeatResult {
                namespace,
                name,
                lease: lease_response(true, Some(&view)),
                error: None,
            },
            Ok(Renew::Lost(view)) => HeartbeatResult {
                namespace,
                name,
                lease: lease_response(false, view.as_ref()),
                error: None,
            },
            Err(e @ LeaseError::TtlOutOfRange { .. }) => item_error(namespace, name, e.to_string()),
            Err(e) => {
                tracing::error!(key = %item.key, error = %e, "heartbeat item failed");
                item_error(namespace, name, "internal error".into())
            }
        });
    }
    Ok(Json(HeartbeatResponse {
        results: results.into_iter().flatten().collect(),
    })
    .into_response())
}
