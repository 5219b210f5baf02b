//! Plain-HTTP admin listeners: `/metrics` on `--metrics-bind-address`, `/healthz` and
//! `/readyz` on `--health-probe-bind-address`. Readiness means the Berth API server answered
//! its health check recently (reference §1.2, lease-only mode).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// How often the Berth API server is pinged for readiness.
pub const READY_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Bound of one readiness ping.
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared readiness flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Whether the operator is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets readiness.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
}

/// Router of the metrics listener.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Router of the health listener.
pub fn health_router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.get() {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
}

/// Serves `router` on `listener` until the process ends.
pub fn spawn_server(listener: TcpListener, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    })
}

/// Pings the Berth API server every [`READY_PROBE_INTERVAL`] and records the result.
pub fn spawn_ready_probe(
    client: berth_client::Client,
    ready: Readiness,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let ok = matches!(
                tokio::time::timeout(READY_PROBE_TIMEOUT, client.healthz()).await,
                Ok(Ok(()))
            );
            if ok != ready.get() {
                tracing::info!(reachable = ok, "berth api server reachability changed");
            }
            ready.set(ok);
            metrics.api_reachable.set(i64::from(ok));
            tokio::time::sleep(READY_PROBE_INTERVAL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get_status(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_flag_and_metrics_are_served() {
        let ready = Readiness::default();
        let r = health_router(ready.clone());
        assert_eq!(
            get_status(r.clone(), "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
        );
        assert_eq!(get_status(r.clone(), "/healthz").await.0, StatusCode::OK);
        ready.set(true);
        assert_eq!(get_status(r, "/readyz").await.0, StatusCode::OK);

        let m = Arc::new(Metrics::new());
        m.reconciles.inc();
        let (code, body) = get_status(metrics_router(m), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("berth_operator_reconciles_total 1"), "{body}");
    }
}
