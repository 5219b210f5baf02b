//! `GET /v1alpha1/namespaces/{ns}/leases/{name}/history`: the recent ended grants of a lease.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use berth_api::{ErrorBody, HistoryItem, LeaseHistory};
use berth_core::LeaseKey;

use super::lease::lease_status;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Default number of entries.
pub const DEFAULT_HISTORY: usize = 20;
/// Largest number of entries per request.
pub const MAX_HISTORY: usize = 100;

/// The recent transitions of one lease.
#[utoipa::path(get, path = "/v1alpha1/namespaces/{ns}/leases/{name}/history", tag = "leases",
    params(super::params::LeasePath,
           ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "entries, 1 to 100 (default 20)")),
    responses(
        (status = 200, description = "the lease now and its ended grants, newest first", body = LeaseHistory),
        (status = 400, description = "invalid key or limit", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 404, description = "lease not found", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    _caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((ns, name)) =
        path.map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))?;
    let Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => DEFAULT_HISTORY,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_HISTORY).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be an integer between 1 and {MAX_HISTORY}"
                ))
            })?,
    };
    let key = LeaseKey::new(ns, name)?;
    let current = state.leases.get(&key).await?;
    let entries = state.leases.history(&key, limit).await?;
    if current.is_none() && entries.is_empty() {
        return Err(ApiError::NotFound("lease not found"));
    }
    Ok(Json(LeaseHistory {
        namespace: key.namespace().to_owned(),
        name: key.name().to_owned(),
        current: current.as_ref().map(lease_status),
        items: entries
            .into_iter()
            .map(|e| HistoryItem {
                holder: e.holder.as_str().to_owned(),
                fencing_token: e.fencing_token.get(),
                acquired_at: Some(e.acquired_at),
                ended_at: Some(e.ended_at),
                reason: e.reason.as_str().to_owned(),
            })
            .collect(),
    })
    .into_response())
}
