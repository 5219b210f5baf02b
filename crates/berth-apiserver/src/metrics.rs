//! Prometheus metrics (reference §2.8) and the [`InstrumentedStore`] decorator.
//!
//! Labels never carry a lease name, holder or tenant: `route` is the matched route template.

use std::sync::Arc;
use std::time::Instant;

use berth_core::{
    DynLeaseStore, Expect, LeaseKey, LeaseRecord, LeaseStore, ListParams, StoreError, Version,
    Versioned,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// Matched route template, or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: String,
}

/// Labels of the lease outcome counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `acquired`, `renewed`, `held-by-other`, `released`, `conflict`, `lost`, `unauthorized`,
    /// `forbidden`, `invalid` or `error`.
    pub outcome: String,
}

/// Labels of the store call histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StoreLabels {
    /// `get`, `list`, `put` or `ping`.
    pub op: &'static str,
    /// `mem`, `sql` or `k8s`.
    pub backend: &'static str,
    /// `ok`, `conflict`, `notfound` or `error`.
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every series the API server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `berth_apiserver_request_duration_seconds`.
    pub request_duration: HistogramFamily<RequestLabels>,
    /// `berth_apiserver_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `berth_apiserver_requests_inflight`.
    pub inflight: Gauge,
    /// `berth_apiserver_lease_outcomes_total`.
    pub lease_outcomes: Family<OutcomeLabels, Counter>,
    /// `berth_lease_store_call_duration_seconds`.
    pub store_calls: HistogramFamily<StoreLabels>,
    /// `berth_apiserver_live_leases`.
    pub live_leases: Gauge,
    /// `berth_apiserver_watchers`.
    pub watchers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every series registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let request_duration: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(request_histogram);
        let requests = Family::<RequestLabels, Counter>::default();
        let inflight = Gauge::default();
        let lease_outcomes = Family::<OutcomeLabels, Counter>::default();
        let store_calls: HistogramFamily<StoreLabels> =
            Family::new_with_constructor(store_histogram);
        let live_leases = Gauge::default();
        let watchers = Gauge::default();
        registry.register(
            "berth_apiserver_request_duration_seconds",
            "Latency of API requests by route, method and status",
            request_duration.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "berth_apiserver_requests",
            "API requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "berth_apiserver_requests_inflight",
            "API requests being served",
            inflight.clone(),
        );
        registry.register(
            "berth_apiserver_lease_outcomes",
            "Lease operation outcomes",
            lease_outcomes.clone(),
        );
        registry.register(
            "berth_lease_store_call_duration_seconds",
            "Latency of lease store calls by operation, backend and outcome",
            store_calls.clone(),
        );
        registry.register(
            "berth_apiserver_live_leases",
            "Leases held live at the last sweep",
            live_leases.clone(),
        );
        registry.register(
            "berth_apiserver_watchers",
            "Open watch streams",
            watchers.clone(),
        );
        Self {
            registry,
            request_duration,
            requests,
            inflight,
            lease_outcomes,
            store_calls,
            live_leases,
            watchers,
        }
    }

    /// Counts one lease outcome.
    pub fn lease_outcome(&self, outcome: &str) {
        self.lease_outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    ///
    /// # Errors
    /// Only if formatting fails, which writing into a `String` does not.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A [`LeaseStore`] decorator that times every call into
/// `berth_lease_store_call_duration_seconds{op,backend,outcome}`.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: DynLeaseStore,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: DynLeaseStore, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe(&self, op: &'static str, outcome: &'static str, started: Instant) {
        self.metrics
            .store_calls
            .get_or_create(&StoreLabels {
                op,
                backend: self.inner.backend(),
                outcome,
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

fn error_outcome(e: &StoreError) -> &'static str {
    if e.is_conflict() { "conflict" } else { "error" }
}

#[async_trait::async_trait]
impl LeaseStore for InstrumentedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        let started = Instant::now();
        let r = self.inner.get(key).await;
        let outcome = match &r {
            Ok(Some(_)) => "ok",
            Ok(None) => "notfound",
            Err(e) => error_outcome(e),
        };
        self.observe("get", outcome, started);
        r
    }

    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list(params).await;
        let outcome = r.as_ref().map_or_else(error_outcome, |_| "ok");
        self.observe("list", outcome, started);
        r
    }

    async fn put(&self, record: &LeaseRecord, expect: Expect) -> Result<Version, StoreError> {
        let started = Instant::now();
        let r = self.inner.put(record, expect).await;
        let outcome = r.as_ref().map_or_else(error_outcome, |_| "ok");
        self.observe("put", outcome, started);
        r
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.ping().await;
        let outcome = r.as_ref().map_or_else(error_outcome, |()| "ok");
        self.observe("ping", outcome, started);
        r
    }

    async fn get_many(
        &self,
        keys: &[LeaseKey],
    ) -> Result<Vec<Option<Versioned<LeaseRecord>>>, StoreError> {
        let started = Instant::now();
        let r = self.inner.get_many(keys).await;
        let outcome = r.as_ref().map_or_else(error_outcome, |_| "ok");
        self.observe("get_many", outcome, started);
        r
    }

    async fn put_batch(&self, items: &[(LeaseRecord, Expect)]) -> Vec<Result<Version, StoreError>> {
        let started = Instant::now();
        let r = self.inner.put_batch(items).await;
        let failed = r.iter().find_map(|x| x.as_ref().err());
        self.observe("put_batch", failed.map_or("ok", error_outcome), started);
        r
    }

    fn change_feed(&self) -> Option<berth_core::ChangeFeed> {
        self.inner.change_feed()
    }

    fn keeps_history(&self) -> bool {
        self.inner.keeps_history()
    }

    async fn append_history(&self, entry: &berth_core::HistoryEntry) -> Result<(), StoreError> {
        self.inner.append_history(entry).await
    }

    async fn history(
        &self,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Option<Vec<berth_core::HistoryEntry>>, StoreError> {
        self.inner.history(key, limit).await
    }
}

/// The plain-HTTP admin router: `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(metrics: Arc<Metrics>, ready: Arc<crate::ready::ReadyGate>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.encode() {
                        Ok(text) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(crate::handlers::health::healthz))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move { crate::handlers::health::ready_response(&ready).await }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{FencingToken, Holder, MemStore};
    use time::macros::datetime;

    #[tokio::test]
    async fn instrumented_store_records_outcomes() {
        let metrics = Arc::new(Metrics::new());
        let store = InstrumentedStore::new(Arc::new(MemStore::new()), metrics.clone());
        let key = LeaseKey::new("ns", "a").unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
        let rec = LeaseRecord {
            key: key.clone(),
            holder: Some(Holder::new("h").unwrap()),
            ttl: std::time::Duration::from_secs(5),
            acquired_at: datetime!(2030-01-01 00:00 UTC),
            renewed_at: datetime!(2030-01-01 00:00 UTC),
            fencing_token: FencingToken::FIRST,
        };
        store.put(&rec, Expect::Absent).await.unwrap();
        assert!(store.put(&rec, Expect::Absent).await.is_err());
        store.ping().await.unwrap();
        let text = metrics.encode().unwrap();
        for needle in [
            r#"berth_lease_store_call_duration_seconds_count{op="get",backend="mem",outcome="notfound"} 1"#,
            r#"berth_lease_store_call_duration_seconds_count{op="put",backend="mem",outcome="ok"} 1"#,
            r#"berth_lease_store_call_duration_seconds_count{op="put",backend="mem",outcome="conflict"} 1"#,
            r#"berth_lease_store_call_duration_seconds_count{op="ping",backend="mem",outcome="ok"} 1"#,
            r#"berth_lease_store_call_duration_seconds_bucket{le="0.0001",op="ping""#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
