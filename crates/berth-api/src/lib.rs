//! Wire types of the Berth `v1alpha1` lease API.
//!
//! These types are the HTTP contract shared by `berth-apiserver`, `berth-client`, the `berth`
//! CLI and the operator. They are wire-compatible with the original Go implementation: the same
//! field names, the same `omitempty` behaviour, and Go's zero time
//! (`0001-01-01T00:00:00Z`) where a time is absent (reference §2.4).
//!
//! The crate depends on serde and the `time` crate only, so clients never compile server code.
//! With the `openapi` feature the types also derive `utoipa::ToSchema`.
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod gotime;

/// Path prefix of every versioned lease endpoint.
pub const API_PREFIX: &str = "/v1alpha1";

/// Largest request body the server accepts, whitespace and trailing data included.
pub const MAX_BODY_BYTES: usize = 4096;

/// Largest holder identity accepted by acquire and renew, in decoded UTF-8 bytes.
pub const MAX_HOLDER_BYTES: usize = 253;

/// Body of `POST …/leases/{name}/acquire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcquireRequest {
    /// Identity that wants to hold the lease: 1 to 253 UTF-8 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 253))]
    pub holder: String,
    /// Requested time to live in whole seconds; must be positive.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub ttl_seconds: i64,
}

/// Body of `POST …/leases/{name}/renew`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewRequest {
    /// Identity that holds the lease: 1 to 253 UTF-8 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 253))]
    pub holder: String,
    /// Fencing token returned by the acquire that granted the lease.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub fencing_token: i64,
    /// New time to live in whole seconds; must be positive.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub ttl_seconds: i64,
}

/// Body of `POST …/leases/{name}/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRequest {
    /// Identity that holds the lease (not length-limited, for legacy holders).
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub holder: String,
    /// Fencing token of the grant being released.
    #[serde(default)]
    pub fencing_token: i64,
}

/// Answer to acquire and renew.
///
/// When `acquired` is false the other fields describe the *current* holder, if any: a denied
/// contender gets HTTP 200, not an error (reference §2.4). `holder` and `fencingToken` are
/// omitted when empty or zero, and absent times are Go's zero time, as in the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaseResponse {
    /// Whether the caller holds the lease after this call.
    pub acquired: bool,
    /// Current holder; omitted when the lease is free.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub holder: String,
    /// Fencing token of the current grant; omitted when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fencing_token: i64,
    /// When the current grant expires unless renewed (`renewedAt + ttl`).
    #[serde(default, with = "gotime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// When the current holder acquired the lease.
    #[serde(default, with = "gotime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub acquired_at: Option<OffsetDateTime>,
    /// Berth addition: time left on the grant, in milliseconds, measured by the server when it
    /// answered. Clients add it to the moment they *sent* the request to get a safe deadline.
    #[serde(default)]
    pub ttl_remaining_millis: i64,
    /// Berth addition: when the current grant was last renewed.
    #[serde(
        default,
        with = "gotime::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub renewed_at: Option<OffsetDateTime>,
    /// Berth addition: how many times the lease has changed hands.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub transitions: u64,
}

/// State of a lease as the read endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// `held`, `expired` or `released`.
    pub state: LeaseState,
    /// Holder of the last grant; empty once released.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub holder: String,
    /// Fencing token of the last grant (kept after release).
    pub fencing_token: i64,
    /// Time to live of the last grant, in seconds.
    pub ttl_seconds: i64,
    /// When the last grant was made.
    #[serde(
        default,
        with = "gotime::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub acquired_at: Option<OffsetDateTime>,
    /// When the last grant was renewed (or released).
    #[serde(
        default,
        with = "gotime::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub renewed_at: Option<OffsetDateTime>,
    /// When the grant expires; absent once released.
    #[serde(
        default,
        with = "gotime::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// Time left on a held grant in milliseconds (0 when expired or released).
    pub ttl_remaining_millis: i64,
    /// How many times the lease has changed hands.
    pub transitions: u64,
}

/// Lifecycle state of a lease record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// A live holder owns the lease.
    Held,
    /// The last holder's TTL ran out; anyone may acquire.
    Expired,
    /// The last holder released the lease; anyone may acquire.
    Released,
}

impl LeaseState {
    /// Lowercase name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Expired => "expired",
            Self::Released => "released",
        }
    }
}

/// A page of leases from the list endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaseList {
    /// Leases on this page, ordered by namespace then name.
    pub items: Vec<LeaseStatus>,
    /// Opaque token for the next page; absent on the last page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// Error envelope of every non-2xx JSON answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Human-readable, actionable message (contract text; never internal details on 5xx).
    pub error: String,
    /// Request id, also sent as the `X-Request-Id` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Largest number of leases in one heartbeat request.
pub const MAX_HEARTBEAT_ITEMS: usize = 2500;

/// Largest heartbeat request body: room for [`MAX_HEARTBEAT_ITEMS`] items of the longest keys.
pub const MAX_HEARTBEAT_BODY_BYTES: usize = 1024 * 1024;

/// Body of `POST /v1alpha1/heartbeats`: renew many leases of one holder in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Identity that holds the leases: 1 to 253 UTF-8 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 253))]
    pub holder: String,
    /// The leases to renew, at most [`MAX_HEARTBEAT_ITEMS`]. An invalid item is answered in
    /// its own result, so items carry no constraints here.
    #[cfg_attr(feature = "openapi", schema(max_items = 2500))]
    pub leases: Vec<HeartbeatLease>,
}

/// One lease of a [`HeartbeatRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatLease {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// Fencing token of the holder's grant.
    pub fencing_token: i64,
    /// New time to live in whole seconds.
    pub ttl_seconds: i64,
}

/// Answer to a heartbeat: one result per requested lease, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// Per-lease results.
    pub results: Vec<HeartbeatResult>,
}

/// The result for one lease of a heartbeat: the fields of a [`LeaseResponse`] (as renew would
/// answer), the key, and `error` when this item was rejected (bad key, token or TTL) or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResult {
    /// Lease namespace, as requested.
    pub namespace: String,
    /// Lease name, as requested.
    pub name: String,
    /// Renew's answer for this lease (`acquired: false` on loss or error).
    #[serde(flatten)]
    pub lease: LeaseResponse,
    /// Why this item was not renewed, when it was invalid or failed; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Kind of a watch event (the SSE `event:` field and the `type` field of its data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WatchEventType {
    /// A lease as it is when the watch starts.
    Initial,
    /// The initial state (or, on a resume, the changes since the resume revision) is complete.
    Synced,
    /// A holder was granted the lease.
    Acquired,
    /// The holder renewed (only with `renewals=true`).
    Renewed,
    /// The holder released the lease.
    Released,
    /// The grant's TTL ran out.
    Expired,
    /// Nothing to report; resume from this revision.
    Bookmark,
    /// The watch ends (for example, the watcher fell behind); reconnect with `Last-Event-ID`.
    Error,
}

impl WatchEventType {
    /// Lowercase name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Synced => "synced",
            Self::Acquired => "acquired",
            Self::Renewed => "renewed",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Bookmark => "bookmark",
            Self::Error => "error",
        }
    }
}

/// Data of one watch event (Server-Sent Events, `id:` = `revision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WatchEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: WatchEventType,
    /// Resume point: microseconds since the Unix epoch on the store's clock. Send it back as
    /// `Last-Event-ID` or `resourceVersion` to resume.
    pub revision: u64,
    /// The store version of the lease record after the change; with the key it identifies a
    /// change, so repeats after a resume can be dropped.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: i64,
    /// The lease after the change; absent on `synced`, `bookmark` and `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    /// Message of an `error` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Answer of `GET …/leases/{name}/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaseHistory {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// The lease now; absent if it never existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<LeaseStatus>,
    /// Ended grants, newest first.
    pub items: Vec<HistoryItem>,
}

/// One ended grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    /// Who held the lease.
    pub holder: String,
    /// The grant's fencing token.
    pub fencing_token: i64,
    /// When the grant was made.
    #[serde(with = "gotime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub acquired_at: Option<OffsetDateTime>,
    /// When it ended (the release, or the instant the TTL ran out).
    #[serde(with = "gotime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ended_at: Option<OffsetDateTime>,
    /// `released`, `expired` (ran out, then swept) or `taken-over` (ran out, then acquired).
    pub reason: String,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn denied_response_on_absent_key_matches_go_shape() {
        let r = LeaseResponse {
            acquired: false,
            holder: String::new(),
            fencing_token: 0,
            expires_at: None,
            acquired_at: None,
            ttl_remaining_millis: 0,
            renewed_at: None,
            transitions: 0,
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "acquired": false,
                "expiresAt": "0001-01-01T00:00:00Z",
                "acquiredAt": "0001-01-01T00:00:00Z",
                "ttlRemainingMillis": 0
            })
        );
        let back: LeaseResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn granted_response_round_trips() {
        let r = LeaseResponse {
            acquired: true,
            holder: "cluster-east".into(),
            fencing_token: 7,
            expires_at: Some(datetime!(2026-01-02 03:04:35.5 UTC)),
            acquired_at: Some(datetime!(2026-01-02 03:04:05 UTC)),
            ttl_remaining_millis: 30_000,
            renewed_at: Some(datetime!(2026-01-02 03:04:05.5 UTC)),
            transitions: 2,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""expiresAt":"2026-01-02T03:04:35.5Z""#), "{s}");
        assert!(s.contains(r#""fencingToken":7"#), "{s}");
        let back: LeaseResponse = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn requests_reject_unknown_fields() {
        let err =
            serde_json::from_str::<AcquireRequest>(r#"{"holder":"a","ttlSeconds":3,"extra":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn release_token_defaults_to_zero() {
        let r: ReleaseRequest = serde_json::from_str(r#"{"holder":"a"}"#).unwrap();
        assert_eq!(r.fencing_token, 0);
    }

    #[test]
    fn heartbeat_result_flattens_the_lease_response() {
        let r = HeartbeatResult {
            namespace: "ns".into(),
            name: "a".into(),
            lease: LeaseResponse {
                acquired: true,
                holder: "h".into(),
                fencing_token: 3,
                expires_at: Some(datetime!(2026-01-02 03:04:35 UTC)),
                acquired_at: Some(datetime!(2026-01-02 03:04:05 UTC)),
                ttl_remaining_millis: 30_000,
                renewed_at: None,
                transitions: 0,
            },
            error: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["acquired"], true);
        assert_eq!(v["fencingToken"], 3);
        assert_eq!(v["namespace"], "ns");
        assert!(v.get("error").is_none());
        let back: HeartbeatResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn watch_event_shape() {
        let e = WatchEvent {
            event_type: WatchEventType::Bookmark,
            revision: 1_700_000_000_000_000,
            version: 0,
            lease: None,
            message: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"bookmark","revision":1700000000000000}"#
        );
    }

    #[test]
    fn list_uses_continue_key() {
        let l = LeaseList {
            items: vec![],
            continue_token: Some("abc".into()),
        };
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"items":[],"continue":"abc"}"#
        );
    }
}
