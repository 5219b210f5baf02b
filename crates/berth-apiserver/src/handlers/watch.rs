//! Watch (`GET …/leases?watch=true`, `…/leases/{name}?watch=true`) as Server-Sent Events.
//!
//! A watch sends the filtered current state (`initial` events, or on a resume the leases
//! changed since the resume revision), then `synced`, then every change: `acquired`,
//! `released`, `expired`, and `renewed` only with `renewals=true`. A `bookmark` carrying the
//! latest revision is sent every `bookmarkSeconds` (default 10). Every event's SSE `id` is its
//! revision; reconnect with `Last-Event-ID` (or `resourceVersion=`) to resume. A watcher that
//! falls behind gets an `error` event and the stream ends; it resumes from its last revision.
//!
//! Without `watch=true` these routes answer the plain get and list of [`super::lease`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use berth_api::{WatchEvent, WatchEventType};
use berth_core::key::is_dns_label;
use berth_core::{Change, ChangeKind, KeyError, LeaseKey, WatchFilter};
use tokio::sync::{broadcast, mpsc};

use super::lease::{self, lease_status};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Default period of bookmark events.
pub const DEFAULT_BOOKMARK: Duration = Duration::from_secs(10);

/// The watch query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchQuery {
    /// Send renewals too.
    pub renewals: bool,
    /// Resume revision.
    pub since: Option<u64>,
    /// Bookmark period.
    pub bookmark: Duration,
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{name} must be true or false"
        ))),
    }
}

/// Whether the query asks for a watch. The watch parameters are checked either way, so a
/// malformed one is a 400 on a plain read too (the `Last-Event-ID` header only with a watch).
fn wants_watch(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    let watch = flag(q, "watch")?;
    if !watch {
        WatchQuery::parse(q, &HeaderMap::new())?;
    }
    Ok(watch)
}

impl WatchQuery {
    /// Parses `renewals`, `resourceVersion` (or the `Last-Event-ID` header) and
    /// `bookmarkSeconds`.
    ///
    /// # Errors
    /// 400 naming the bad parameter.
    pub fn parse(q: &HashMap<String, String>, headers: &HeaderMap) -> Result<Self, ApiError> {
        let renewals = flag(q, "renewals")?;
        let from_header = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let since = match q
            .get("resourceVersion")
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .or(from_header)
        {
            None => None,
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                ApiError::BadRequest("resourceVersion must be a revision from a watch event".into())
            })?),
        };
        let bookmark = match q.get("bookmarkSeconds").map(String::as_str) {
            None | Some("") => DEFAULT_BOOKMARK,
            Some(s) => s
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=300).contains(n))
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "bookmarkSeconds must be an integer between 1 and 300".into(),
                    )
                })?,
        };
        Ok(Self {
            renewals,
            since,
            bookmark,
        })
    }
}

/// Counts an open watch in `berth_apiserver_watchers` until dropped.
struct WatcherGauge(std::sync::Arc<crate::metrics::Metrics>);

impl WatcherGauge {
    fn new(metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        metrics.watchers.inc();
        Self(metrics)
    }
}

impl Drop for WatcherGauge {
    fn drop(&mut self) {
        self.0.watchers.dec();
    }
}

fn sse_event(e: &WatchEvent) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .event(e.event_type.as_str())
        .id(e.revision.to_string())
        .data(data)
}

fn change_event(c: &Change) -> WatchEvent {
    let event_type = match c.kind {
        ChangeKind::Initial => WatchEventType::Initial,
        ChangeKind::Acquired => WatchEventType::Acquired,
        ChangeKind::Renewed => WatchEventType::Renewed,
        ChangeKind::Released => WatchEventType::Released,
        ChangeKind::Expired => WatchEventType::Expired,
    };
    WatchEvent {
        event_type,
        revision: c.revision,
        version: c.view.version.get(),
        lease: Some(lease_status(&c.view)),
        message: None,
    }
}

fn marker(event_type: WatchEventType, revision: u64, message: Option<String>) -> WatchEvent {
    WatchEvent {
        event_type,
        revision,
        version: 0,
        lease: None,
        message,
    }
}

/// Starts a watch and answers with its event stream.
///
/// # Errors
/// 503-class store failures while the hub takes its first snapshot (as 500).
pub async fn watch(
    state: &AppState,
    filter: WatchFilter,
    q: WatchQuery,
) -> Result<Response, ApiError> {
    let hub = state.watch.clone();
    let mut sub = hub.subscribe(&filter, q.since).await?;
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    let gauge = WatcherGauge::new(state.metrics.clone());
    tokio::spawn(async move {
        let _gauge = gauge;
        for c in &sub.initial {
            if tx.send(sse_event(&change_event(c))).await.is_err() {
                return;
            }
        }
        let mut last = sub.revision;
        if tx
            .send(sse_event(&marker(WatchEventType::Synced, last, None)))
            .await
            .is_err()
        {
            return;
        }
        let mut bookmarks = tokio::time::interval(q.bookmark);
        bookmarks.tick().await;
        loop {
            tokio::select! {
                c = sub.changes.recv() => match c {
                    Ok(c) => {
                        if filter.admits(&c)
                            && tx.send(sse_event(&change_event(&c))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let msg = format!("watch fell behind by {n} changes; resume from the last revision");
                        let _ = tx.send(sse_event(&marker(WatchEventType::Error, last, Some(msg)))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmarks.tick() => {
                    last = last.max(hub.synced_revision());
                    if tx.send(sse_event(&marker(WatchEventType::Bookmark, last, None))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
                () = hub.closed() => return,
            }
        }
    });
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
}

/// `GET /v1alpha1/namespaces/{ns}/leases/{name}`: one lease, or its watch.
pub async fn get_or_watch_lease(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(q)?;
    if !wants_watch(&params)? {
        return lease::get_lease(State(state), caller, path).await;
    }
    let (ns, name) = path
        .map(|Path(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))?;
    let key = LeaseKey::new(ns, name)?;
    let wq = WatchQuery::parse(&params, &headers)?;
    let filter = WatchFilter {
        namespace: Some(key.namespace().to_owned()),
        name: Some(key.name().to_owned()),
        renewals: wq.renewals,
    };
    watch(&state, filter, wq).await
}

/// `GET /v1alpha1/namespaces/{ns}/leases`: a page of leases, or the namespace's watch.
pub async fn list_or_watch_namespace(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = match &q {
        Ok(Query(p)) => p.clone(),
        Err(_) => return lease::list_namespace(State(state), caller, path, q).await,
    };
    if !wants_watch(&params)? {
        return lease::list_namespace(State(state), caller, path, q).await;
    }
    let Path(ns) =
        path.map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))?;
    if !is_dns_label(&ns) {
        return Err(KeyError::Namespace.into());
    }
    let wq = WatchQuery::parse(&params, &headers)?;
    let filter = WatchFilter {
        namespace: Some(ns),
        name: None,
        renewals: wq.renewals,
    };
    watch(&state, filter, wq).await
}

/// `GET /v1alpha1/leases`: a page of every namespace's leases, or the watch of all of them.
pub async fn list_or_watch_all(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = match &q {
        Ok(Query(p)) => p.clone(),
        Err(_) => return lease::list_all(State(state), caller, q).await,
    };
    if !wants_watch(&params)? {
        return lease::list_all(State(state), caller, q).await;
    }
    let wq = WatchQuery::parse(&params, &headers)?;
    let filter = WatchFilter {
        namespace: None,
        name: None,
        renewals: wq.renewals,
    };
    watch(&state, filter, wq).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_query_rules() {
        let q = |pairs: &[(&str, &str)], h: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (k, v) in h {
                headers.insert(*k, v.parse().unwrap());
            }
            WatchQuery::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                &headers,
            )
        };
        let d = q(&[], &[]).unwrap();
        assert_eq!(
            (d.renewals, d.since, d.bookmark),
            (false, None, DEFAULT_BOOKMARK)
        );
        assert_eq!(q(&[], &[("last-event-id", "42")]).unwrap().since, Some(42));
        assert_eq!(
            q(&[("resourceVersion", "7")], &[("last-event-id", "42")])
                .unwrap()
                .since,
            Some(7),
            "the query wins over the header"
        );
        assert!(q(&[("renewals", "true")], &[]).unwrap().renewals);
        assert_eq!(
            q(&[("renewals", "yes")], &[]).unwrap_err().to_string(),
            "renewals must be true or false"
        );
        assert!(q(&[("resourceVersion", "x")], &[]).is_err());
        assert!(q(&[("bookmarkSeconds", "0")], &[]).is_err());
        assert_eq!(
            q(&[("bookmarkSeconds", "2")], &[]).unwrap().bookmark,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn watch_parameters_are_checked_without_watch_too() {
        let q = |pairs: &[(&str, &str)]| {
            wants_watch(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert!(!q(&[]).unwrap());
        assert!(q(&[("watch", "true")]).unwrap());
        assert!(!q(&[("watch", "false"), ("bookmarkSeconds", "5")]).unwrap());
        // Found by schemathesis: a plain list ignored a malformed bookmarkSeconds.
        assert_eq!(
            q(&[("watch", "false"), ("bookmarkSeconds", "\u{16}YB")])
                .unwrap_err()
                .to_string(),
            "bookmarkSeconds must be an integer between 1 and 300"
        );
        assert!(q(&[("resourceVersion", "x")]).is_err());
        assert!(q(&[("renewals", "maybe")]).is_err());
        assert!(q(&[("watch", "yes")]).is_err());
    }
}
