//! The outermost middleware: request id, error envelope, access log and request metrics.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::Caller;
use crate::error::{ErrorInfo, envelope};
use crate::metrics::RequestLabels;
use crate::state::AppState;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Response extension naming the lease outcome of a successful call.
#[derive(Debug, Clone, Copy)]
pub struct LeaseOutcome(pub &'static str);

/// The request id of a request: a safe inbound `X-Request-Id` (`[A-Za-z0-9_-]{1,64}`), else the
/// trace id of a W3C `traceparent`, else 16 random bytes in hex (reference §2.8).
pub fn request_id(headers: &HeaderMap) -> String {
    if let Some(id) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        let safe = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if safe {
            return id.to_owned();
        }
    }
    if let Some(trace) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(traceparent_trace_id)
    {
        return trace.to_owned();
    }
    hex::encode(rand::random::<[u8; 16]>())
}

fn traceparent_trace_id(tp: &str) -> Option<&str> {
    let mut parts = tp.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = is_hex(version, 2)
        && version != "ff"
        && is_hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && is_hex(span, 16)
        && is_hex(flags, 2);
    valid.then_some(trace)
}

fn is_lease_mutation(route: &str) -> bool {
    route.starts_with("/v1alpha1/namespaces/{ns}/leases/{name}/")
}

struct Inflight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware wrapping every route.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let metrics = state.metrics.clone();
    metrics.inflight.inc();
    let guard = Inflight(&metrics.inflight);

    let mut resp = next.run(req).await;

    let status = resp.status();
    let error = resp.extensions_mut().remove::<ErrorInfo>();
    if let Some(info) = &error {
        *resp.body_mut() = Body::from(envelope(&info.message, Some(&id)));
        resp.headers_mut()
            .remove(axum::http::header::CONTENT_LENGTH);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let outcome = resp
        .extensions()
        .get::<LeaseOutcome>()
        .map(|o| o.0)
        .or(error.as_ref().map(|e| e.outcome));
    if let Some(o) = outcome.filter(|_| is_lease_mutation(&route)) {
        metrics.lease_outcome(o);
    }
    let elapsed = started.elapsed();
    let labels = RequestLabels {
        route: route.clone(),
        method: method.to_string(),
        status: status.as_u16().to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .request_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    drop(guard);

    let identity = resp
        .extensions()
        .get::<Caller>()
        .and_then(Caller::identity)
        .cloned();
    let holder = identity.as_ref().map_or("", |i| i.holder.as_str());
    let tenant = identity.as_ref().map_or("", |i| i.tenant.as_str());
    let outcome = outcome.unwrap_or("");
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let status = status.as_u16();
    if status >= 500 {
        let detail = error.and_then(|e| e.detail).unwrap_or_default();
        tracing::error!(%method, path, route, status, duration_ms, request_id = %id, outcome, holder, tenant, error = detail, "request");
    } else if route == "/healthz" || route == "/readyz" {
        tracing::debug!(%method, path, route, status, duration_ms, request_id = %id, "request");
    } else {
        tracing::info!(%method, path, route, status, duration_ms, request_id = %id, outcome, holder, tenant, "request");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn request_id_rules() {
        assert_eq!(
            request_id(&headers(&[("x-request-id", "abc_DEF-1")])),
            "abc_DEF-1"
        );
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            request_id(&headers(&[
                ("x-request-id", "bad id!"),
                ("traceparent", tp)
            ])),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let long = "a".repeat(65);
        let random = request_id(&headers(&[("x-request-id", &long)]));
        assert_eq!(random.len(), 32);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(random, request_id(&HeaderMap::new()));
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_ne!(
            request_id(&headers(&[("traceparent", zero)])),
            "00000000000000000000000000000000"
        );
    }
}
