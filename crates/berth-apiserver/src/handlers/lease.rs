//! Lease endpoints (reference §2.1–2.5 and SPEC §3 read endpoints).
//!
//! Check order on writes: 401 (middleware, before the body) → 400 body and fields → 403 →
//! 400 key → store.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_api::{ErrorBody, LeaseList, LeaseResponse, LeaseStatus};
use berth_core::key::is_dns_label;
use berth_core::{
    Acquire, FencingToken, Holder, KeyError, LeaseKey, LeaseView, ListParams, Release, Renew,
};

use super::body::{AcquireBody, JsonBody, ReleaseBody, RenewBody};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::observe::LeaseOutcome;
use crate::state::AppState;

/// Default page size of the list endpoints.
pub const DEFAULT_LIMIT: usize = 500;
/// Largest page size of the list endpoints.
pub const MAX_LIMIT: usize = 1000;

fn path_params(
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
}

fn ttl(seconds: i64) -> Result<Duration, ApiError> {
    let s = u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| ApiError::BadRequest("ttlSeconds must be positive".into()))?;
    Ok(Duration::from_secs(s))
}

fn with_outcome(mut resp: Response, outcome: &'static str) -> Response {
    resp.extensions_mut().insert(LeaseOutcome(outcome));
    resp
}

/// `LeaseResponse` for a lease view; Go zero times where the key does not exist
/// (reference §2.4).
pub fn lease_response(acquired: bool, view: Option<&LeaseView>) -> LeaseResponse {
    let Some(v) = view else {
        return LeaseResponse {
            acquired,
            holder: String::new(),
            fencing_token: 0,
            expires_at: None,
            acquired_at: None,
            ttl_remaining_millis: 0,
            renewed_at: None,
            transitions: 0,
        };
    };
    let r = &v.record;
    LeaseResponse {
        acquired,
        holder: r
            .holder
            .as_ref()
            .map(|h| h.as_str().to_owned())
            .unwrap_or_default(),
        fencing_token: r.fencing_token.get(),
        expires_at: Some(r.expires_at()),
        acquired_at: Some(r.acquired_at),
        ttl_remaining_millis: i64::try_from(v.remaining().as_millis()).unwrap_or(i64::MAX),
        renewed_at: Some(r.renewed_at),
        transitions: v.transitions(),
    }
}

/// `LeaseStatus` for a lease view.
pub fn lease_status(v: &LeaseView) -> LeaseStatus {
    let r = &v.record;
    let state = match v.state() {
        berth_core::LeaseState::Held => berth_api::LeaseState::Held,
        berth_core::LeaseState::Expired => berth_api::LeaseState::Expired,
        berth_core::LeaseState::Released => berth_api::LeaseState::Released,
    };
    LeaseStatus {
        namespace: r.key.namespace().to_owned(),
        name: r.key.name().to_owned(),
        state,
        holder: r
            .holder
            .as_ref()
            .map(|h| h.as_str().to_owned())
            .unwrap_or_default(),
        fencing_token: r.fencing_token.get(),
        ttl_seconds: i64::try_from(r.ttl.as_secs()).unwrap_or(i64::MAX),
        acquired_at: Some(r.acquired_at),
        renewed_at: Some(r.renewed_at),
        expires_at: (!r.is_tombstone()).then(|| r.expires_at()),
        ttl_remaining_millis: i64::try_from(v.remaining().as_millis()).unwrap_or(i64::MAX),
        transitions: v.transitions(),
    }
}

/// Acquire (or heartbeat) a lease.
#[utoipa::path(post, path = "/v1alpha1/namespaces/{ns}/leases/{name}/acquire", tag = "leases",
    params(super::params::LeasePath),
    request_body = berth_api::AcquireRequest,
    responses(
        (status = 200, description = "granted, or denied with the current holder's data", body = LeaseResponse),
        (status = 400, description = "invalid body, holder, ttl or key", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 403, description = "holder not owned by the caller", body = ErrorBody),
        (status = 413, description = "body larger than 4096 bytes", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn acquire(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<AcquireBody>,
) -> Result<Response, ApiError> {
    let (ns, name) = path_params(path)?;
    let holder = Holder::new(body.holder)?;
    let ttl = ttl(body.ttl_seconds)?;
    caller.authorize(holder.as_str())?;
    let key = LeaseKey::new(ns, name)?;
    Ok(match state.leases.acquire(&key, &holder, ttl).await? {
        Acquire::Granted { lease, .. } => with_outcome(
            Json(lease_response(true, Some(&lease))).into_response(),
            "acquired",
        ),
        // A denied contender gets 200 with the current holder's data (reference §2.4).
        Acquire::Denied(view) => with_outcome(
            Json(lease_response(false, Some(&view))).into_response(),
            "held-by-other",
        ),
    })
}

/// Renew a held lease.
#[utoipa::path(post, path = "/v1alpha1/namespaces/{ns}/leases/{name}/renew", tag = "leases",
    params(super::params::LeasePath),
    request_body = berth_api::RenewRequest,
    responses(
        (status = 200, description = "renewed, or lost (`acquired: false`) with the current state", body = LeaseResponse),
        (status = 400, description = "invalid body, holder, token, ttl or key", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 403, description = "holder not owned by the caller", body = ErrorBody),
        (status = 413, description = "body larger than 4096 bytes", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn renew(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<RenewBody>,
) -> Result<Response, ApiError> {
    let (ns, name) = path_params(path)?;
    let holder = Holder::new(body.holder)?;
    if body.fencing_token == 0 {
        return Err(ApiError::BadRequest("fencingToken must be non-zero".into()));
    }
    // Go answers 500 for a negative token (reference §2.2 quirk); we say what is wrong.
    let token = FencingToken::new(body.fencing_token)
        .ok_or_else(|| ApiError::BadRequest("fencingToken must be positive".into()))?;
    let ttl = ttl(body.ttl_seconds)?;
    caller.authorize(holder.as_str())?;
    let key = LeaseKey::new(ns, name)?;
    Ok(match state.leases.renew(&key, &holder, token, ttl).await? {
        Renew::Renewed(view) => with_outcome(
            Json(lease_response(true, Some(&view))).into_response(),
            "renewed",
        ),
        Renew::Lost(view) => with_outcome(
            Json(lease_response(false, view.as_ref())).into_response(),
            "lost",
        ),
    })
}

/// Release a held lease.
#[utoipa::path(post, path = "/v1alpha1/namespaces/{ns}/leases/{name}/release", tag = "leases",
    params(super::params::LeasePath),
    request_body = berth_api::ReleaseRequest,
    responses(
        (status = 204, description = "released, or nothing to release"),
        (status = 400, description = "invalid body, holder or key", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 403, description = "holder not owned by the caller", body = ErrorBody),
        (status = 409, description = "lease held by another identity or token", body = ErrorBody),
        (status = 413, description = "body larger than 4096 bytes", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<Response, ApiError> {
    let (ns, name) = path_params(path)?;
    // Release accepts legacy holders longer than 253 bytes (reference §2.2).
    let holder = Holder::new_unbounded(body.holder)?;
    caller.authorize(holder.as_str())?;
    let key = LeaseKey::new(ns, name)?;
    match state
        .leases
        .release(&key, &holder, body.fencing_token)
        .await?
    {
        Release::Released(_) | Release::NotHeld => Ok(with_outcome(
            StatusCode::NO_CONTENT.into_response(),
            "released",
        )),
    }
}

/// One lease's full state. Released leases are shown with state `released`.
#[utoipa::path(get, path = "/v1alpha1/namespaces/{ns}/leases/{name}", tag = "leases",
    params(super::params::LeasePath,
           ("watch" = Option<bool>, Query, description = "true: stream changes as Server-Sent Events (text/event-stream) instead of answering once"),
           ("renewals" = Option<bool>, Query, description = "with watch: also send renewals"),
           ("resourceVersion" = Option<String>, Query, description = "with watch: resume after this revision (or send Last-Event-ID)"),
           ("bookmarkSeconds" = Option<u64>, Query, minimum = 1, maximum = 300, description = "with watch: bookmark interval, 1 to 300 seconds (default 10)")),
    responses(
        (status = 200, description = "the lease (or, with watch=true, a Server-Sent Events stream whose data are watch events)",
            content((LeaseStatus = "application/json"), (berth_api::WatchEvent = "text/event-stream"))),
        (status = 400, description = "invalid key", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 404, description = "lease not found", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_lease(
    State(state): State<AppState>,
    _caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (ns, name) = path_params(path)?;
    let key = LeaseKey::new(ns, name)?;
    match state.leases.get(&key).await? {
        Some(view) => Ok(Json(lease_status(&view)).into_response()),
        None => Err(ApiError::NotFound("lease not found")),
    }
}

/// Query of the list endpoints.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Page size.
    pub limit: usize,
    /// List keys strictly after this one.
    pub after: Option<LeaseKey>,
    /// Only leases this holder holds live.
    pub holder: Option<Holder>,
}

/// Encodes a continue token: base64url of `<namespace>/<name>`.
pub fn encode_continue(key: &LeaseKey) -> String {
    URL_SAFE_NO_PAD.encode(key.to_string())
}

/// Decodes a continue token.
///
/// # Errors
/// 400 `invalid continue token`.
pub fn decode_continue(token: &str) -> Result<LeaseKey, ApiError> {
    let bad = || ApiError::BadRequest("invalid continue token".into());
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    text.parse().map_err(|_| bad())
}

impl ListQuery {
    /// Parses `limit`, `continue` and `holder`.
    ///
    /// # Errors
    /// 400 with a message naming the parameter.
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match q.get("limit").map(String::as_str) {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "limit must be an integer between 1 and {MAX_LIMIT}"
                    ))
                })?,
        };
        let after = match q.get("continue").map(String::as_str) {
            None | Some("") => None,
            Some(t) => Some(decode_continue(t)?),
        };
        let holder = match q.get("holder").map(String::as_str) {
            None | Some("") => None,
            Some(h) => Some(Holder::new_unbounded(h)?),
        };
        Ok(Self {
            limit,
            after,
            holder,
        })
    }
}

async fn list(
    state: &AppState,
    namespace: Option<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let q = ListQuery::parse(&q)?;
    let params = ListParams {
        namespace,
        after: q.after,
        limit: Some(q.limit),
    };
    let (views, next) = state.leases.list(&params, q.holder.as_ref()).await?;
    Ok(Json(LeaseList {
        items: views.iter().map(lease_status).collect(),
        continue_token: next.as_ref().map(encode_continue),
    })
    .into_response())
}

/// Leases of one namespace, ordered by name.
#[utoipa::path(get, path = "/v1alpha1/namespaces/{ns}/leases", tag = "leases",
    params(super::params::NamespacePath,
           ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "page size, 1 to 1000 (default 500)"),
           ("continue" = Option<String>, Query, description = "token from the previous page"),
           ("holder" = Option<String>, Query, description = "only leases this holder holds live"),
           ("watch" = Option<bool>, Query, description = "true: stream changes as Server-Sent Events (text/event-stream) instead of answering once"),
           ("renewals" = Option<bool>, Query, description = "with watch: also send renewals"),
           ("resourceVersion" = Option<String>, Query, description = "with watch: resume after this revision (or send Last-Event-ID)"),
           ("bookmarkSeconds" = Option<u64>, Query, minimum = 1, maximum = 300, description = "with watch: bookmark interval, 1 to 300 seconds (default 10)")),
    responses(
        (status = 200, description = "a page of leases (or, with watch=true, a Server-Sent Events stream whose data are watch events)",
            content((LeaseList = "application/json"), (berth_api::WatchEvent = "text/event-stream"))),
        (status = 400, description = "invalid namespace or query", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_namespace(
    State(state): State<AppState>,
    _caller: Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(ns) =
        path.map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))?;
    if !is_dns_label(&ns) {
        return Err(KeyError::Namespace.into());
    }
    list(&state, Some(ns), q).await
}

/// Leases of every namespace, ordered by namespace then name.
#[utoipa::path(get, path = "/v1alpha1/leases", tag = "leases",
    params(("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "page size, 1 to 1000 (default 500)"),
           ("continue" = Option<String>, Query, description = "token from the previous page"),
           ("holder" = Option<String>, Query, description = "only leases this holder holds live"),
           ("watch" = Option<bool>, Query, description = "true: stream changes as Server-Sent Events (text/event-stream) instead of answering once"),
           ("renewals" = Option<bool>, Query, description = "with watch: also send renewals"),
           ("resourceVersion" = Option<String>, Query, description = "with watch: resume after this revision (or send Last-Event-ID)"),
           ("bookmarkSeconds" = Option<u64>, Query, minimum = 1, maximum = 300, description = "with watch: bookmark interval, 1 to 300 seconds (default 10)")),
    responses(
        (status = 200, description = "a page of leases (or, with watch=true, a Server-Sent Events stream whose data are watch events)",
            content((LeaseList = "application/json"), (berth_api::WatchEvent = "text/event-stream"))),
        (status = 400, description = "invalid query", body = ErrorBody),
        (status = 401, description = "missing or rejected credentials", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_all(
    State(state): State<AppState>,
    _caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    list(&state, None, q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_token_round_trips_and_rejects_garbage() {
        let key = LeaseKey::new("team-a", "db.primary").unwrap();
        assert_eq!(decode_continue(&encode_continue(&key)).unwrap(), key);
        for bad in ["!!!", "bm9zbGFzaA", "QS9C"] {
            assert_eq!(
                decode_continue(bad).unwrap_err().to_string(),
                "invalid continue token",
                "{bad}"
            );
        }
    }

    #[test]
    fn list_query_rules() {
        let q = |pairs: &[(&str, &str)]| {
            ListQuery::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert_eq!(q(&[]).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(q(&[("limit", "1000")]).unwrap().limit, 1000);
        for bad in ["0", "1001", "-1", "x"] {
            assert_eq!(
                q(&[("limit", bad)]).unwrap_err().to_string(),
                "limit must be an integer between 1 and 1000"
            );
        }
    }
}
