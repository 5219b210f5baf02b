//! `/healthz` and `/readyz`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ready::ReadyGate;
use crate::state::AppState;
use std::sync::Arc;

/// `GET /healthz`: always 200 `ok\n`.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

/// `GET /readyz`: 200 `ok\n` when the store answers its ping, else 503 `not ready\n`.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "store reachable", body = String, content_type = "text/plain"),
              (status = 503, description = "store unreachable", body = String, content_type = "text/plain")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    ready_response(&state.ready).await
}

/// The `/readyz` answer for a gate.
pub async fn ready_response(gate: &Arc<ReadyGate>) -> Response {
    if gate.is_ready().await {
        text(StatusCode::OK, "ok\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
