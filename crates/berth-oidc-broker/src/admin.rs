//! Health, readiness and metrics on `--admin-addr`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of `berth_oidc_broker_token_refreshes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// What the refresh loop reports, and the series exported from it.
pub struct Status {
    /// When the last written token stops being valid (`None`: none written, or no expiry).
    valid_until: Mutex<Option<Option<Instant>>>,
    consecutive_failures: AtomicU64,
    registry: Registry,
    refreshes: Family<ResultLabel, Counter>,
    fetch_duration: Histogram,
    token_lifetime: Gauge,
    token_valid: Gauge,
    failures_gauge: Gauge,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("ready", &self.ready())
            .field(
                "consecutive_failures",
                &self.consecutive_failures.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Status {
    fn default() -> Self {
        Self::new()
    }
}

impl Status {
    /// No token yet, every series registered under `berth_oidc_broker_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth_oidc_broker");
        let refreshes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "token_refreshes",
            "Token fetch-and-write attempts by result",
            refreshes.clone(),
        );
        let fetch_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "token_fetch_duration_seconds",
            "Duration of one token fetch and write",
            fetch_duration.clone(),
        );
        let token_lifetime = Gauge::default();
        registry.register(
            "token_lifetime_seconds",
            "expires_in of the last token written (0 when the provider sent none)",
            token_lifetime.clone(),
        );
        let token_valid = Gauge::default();
        registry.register(
            "token_valid",
            "1 while the token file holds a token that has not expired",
            token_valid.clone(),
        );
        let failures_gauge = Gauge::default();
        registry.register(
            "consecutive_failures",
            "Failed refreshes since the last success",
            failures_gauge.clone(),
        );
        Self {
            valid_until: Mutex::new(None),
            consecutive_failures: AtomicU64::new(0),
            registry,
            refreshes,
            fetch_duration,
            token_lifetime,
            token_valid,
            failures_gauge,
        }
    }

    /// A token fetched at `fetched_at` was written.
    pub fn record_success(
        &self,
        fetched_at: Instant,
        expires_in: Option<Duration>,
        took: Duration,
    ) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some(expires_in.and_then(|e| fetched_at.checked_add(e)));
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.failures_gauge.set(0);
        self.refreshes
            .get_or_create(&ResultLabel { result: "success" })
            .inc();
        self.fetch_duration.observe(took.as_secs_f64());
        self.token_lifetime
            .set(expires_in.map_or(0, |e| i64::try_from(e.as_secs()).unwrap_or(i64::MAX)));
    }

    /// A fetch or write failed; the previous file stays.
    pub fn record_failure(&self, took: Duration) {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.failures_gauge
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        self.refreshes
            .get_or_create(&ResultLabel { result: "failure" })
            .inc();
        self.fetch_duration.observe(took.as_secs_f64());
    }

    /// Whether a written token exists and has not expired (a token without expiry counts as
    /// valid).
    pub fn ready(&self) -> bool {
        match *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            None => false,
            Some(None) => true,
            Some(Some(until)) => Instant::now() < until,
        }
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> String {
        self.token_valid.set(i64::from(self.ready()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `/healthz` (always 200 while the process serves), `/readyz` (200 with a valid token, else
/// 503) and `/metrics`.
pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(status)
}

async fn readyz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if status.ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no valid token\n")
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        status.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_written_token() {
        let s = Status::new();
        assert!(!s.ready());
        s.record_failure(Duration::from_millis(5));
        assert!(!s.ready());
        s.record_success(
            Instant::now(),
            Some(Duration::from_secs(60)),
            Duration::ZERO,
        );
        assert!(s.ready());
        // A failure keeps the still-valid last token.
        s.record_failure(Duration::ZERO);
        assert!(s.ready());
        let text = s.encode();
        assert!(text.contains("berth_oidc_broker_token_refreshes_total{result=\"success\"} 1"));
        assert!(text.contains("berth_oidc_broker_token_refreshes_total{result=\"failure\"} 2"));
        assert!(text.contains("berth_oidc_broker_consecutive_failures 1"));
        assert!(text.contains("berth_oidc_broker_token_valid 1"));
        assert!(text.contains("berth_oidc_broker_token_lifetime_seconds 60"));
        // Expired.
        let past = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .unwrap();
        s.record_success(past, Some(Duration::from_secs(60)), Duration::ZERO);
        assert!(!s.ready());
        assert!(s.encode().contains("berth_oidc_broker_token_valid 0"));
        // No expiry sent: valid until replaced.
        s.record_success(past, None, Duration::ZERO);
        assert!(s.ready());
    }
}
