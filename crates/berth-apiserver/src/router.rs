//! [`router`]: the whole HTTPS surface.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use crate::auth::require_caller;
use crate::error::ApiError;
use crate::handlers::{health, heartbeat, history, lease, openapi, watch};
use crate::observe::observe;
use crate::state::AppState;

/// The API router: lease routes behind authentication, health and OpenAPI open, every
/// response observed (request id, envelope, access log, metrics).
pub fn router(state: AppState) -> Router {
    let leases = Router::new()
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/acquire",
            post(lease::acquire),
        )
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/renew",
            post(lease::renew),
        )
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/release",
            post(lease::release),
        )
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}",
            get(watch::get_or_watch_lease),
        )
        .route(
            "/v1alpha1/namespaces/{ns}/leases",
            get(watch::list_or_watch_namespace),
        )
        .route("/v1alpha1/leases", get(watch::list_or_watch_all))
        .route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/history",
            get(history::history),
        )
        .route("/v1alpha1/heartbeats", post(heartbeat::heartbeat))
        .route_layer(from_fn_with_state(state.clone(), require_caller));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(leases)
        .fallback(|| async { ApiError::NotFound("not found") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), observe))
        .with_state(state)
}
