//! How a [`LeaseRecord`] is kept in a `coordination.k8s.io/v1` Lease object, and back.
//!
//! | record field | Lease field | also |
//! |---|---|---|
//! | key `(namespace, name)` | `metadata.name` = `<namespace>.<name>` | annotations [`TENANT_NAMESPACE_ANNOTATION`], [`LEASE_NAME_ANNOTATION`]; label [`TENANT_NAMESPACE_LABEL`] |
//! | holder (none on a tombstone) | `spec.holderIdentity` (absent on a tombstone) | |
//! | TTL | `spec.leaseDurationSeconds`, rounded up (absent on a tombstone or a zero TTL) | exact milliseconds in [`TTL_MILLIS_ANNOTATION`] |
//! | acquired at / renewed at | `spec.acquireTime` / `spec.renewTime` (MicroTime) | |
//! | fencing token (64-bit) | `spec.leaseTransitions` when it fits in an int32 | always in [`FENCING_TOKEN_ANNOTATION`] |
//! | record version | | [`VERSION_ANNOTATION`] |
//!
//! Every object carries the label [`MANAGED_BY_LABEL`]`=`[`MANAGED_BY_VALUE`]. Labels and
//! annotations that are not ours are kept on every write; ours are rewritten (repaired).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_core::{FencingToken, Holder, LeaseKey, LeaseRecord, Version, Versioned};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use time::OffsetDateTime;

/// Label that marks the Lease objects Berth manages.
pub const MANAGED_BY_LABEL: &str = "berth.skaphos.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "berth";
/// Label with the tenant namespace, for server-side filtering by namespace.
pub const TENANT_NAMESPACE_LABEL: &str = "berth.skaphos.io/tenant-namespace";
/// Annotation with the tenant namespace of the lease key.
pub const TENANT_NAMESPACE_ANNOTATION: &str = "berth.skaphos.io/tenant-namespace";
/// Annotation with the lease name of the lease key.
pub const LEASE_NAME_ANNOTATION: &str = "berth.skaphos.io/lease-name";
/// Annotation with the Berth record version (the store's compare-and-set predicate).
pub const VERSION_ANNOTATION: &str = "berth.skaphos.io/version";
/// Annotation with the 64-bit fencing token.
pub const FENCING_TOKEN_ANNOTATION: &str = "berth.skaphos.io/fencing-token";
/// Annotation with the exact TTL in milliseconds.
pub const TTL_MILLIS_ANNOTATION: &str = "berth.skaphos.io/ttl-millis";
/// The field manager named on every write.
pub const FIELD_MANAGER: &str = "berth";

/// The Lease object name of a key: `<namespace>.<name>`.
///
/// Injective because namespaces hold no dots, and a valid object name because the key is at
/// most 253 characters of DNS-subdomain text.
pub fn object_name(key: &LeaseKey) -> String {
    format!("{}.{}", key.namespace(), key.name())
}

/// The label selector matching every object Berth manages (optionally in one namespace).
pub fn selector(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{TENANT_NAMESPACE_LABEL}={ns}"),
        None => format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"),
    }
}

/// The Berth version an object carries, if it has a well-formed one.
pub fn berth_version(lease: &Lease) -> Option<Version> {
    annotation(lease, VERSION_ANNOTATION)
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(Version::new)
}

fn annotation<'a>(lease: &'a Lease, name: &str) -> Option<&'a str> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

fn to_micro(t: OffsetDateTime) -> MicroTime {
    let ts = k8s_openapi::jiff::Timestamp::from_nanosecond(t.unix_timestamp_nanos())
        // Both libraries span years -9999..=9999; clamp rather than fail on the impossible.
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    MicroTime(ts)
}

fn from_micro(t: &MicroTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok()
}

/// Whole seconds, rounded up, for `spec.leaseDurationSeconds`; `None` for a zero TTL.
fn duration_seconds(ttl: Duration) -> Option<i32> {
    if ttl.is_zero() {
        return None;
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Some(i32::try_from(secs).unwrap_or(i32::MAX))
}

/// Builds the object for `record` at `version`, starting from `base` (the object as read, so
/// its resourceVersion, uid and foreign labels/annotations are carried over).
pub fn encode(record: &LeaseRecord, version: Version, base: Option<Lease>) -> Lease {
    let mut lease = base.unwrap_or_default();
    let meta = &mut lease.metadata;
    meta.name = Some(object_name(&record.key));
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(TENANT_NAMESPACE_LABEL.into(), record.key.namespace().into());
    let ann = meta.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(
        TENANT_NAMESPACE_ANNOTATION.into(),
        record.key.namespace().into(),
    );
    ann.insert(LEASE_NAME_ANNOTATION.into(), record.key.name().into());
    ann.insert(VERSION_ANNOTATION.into(), version.get().to_string());
    ann.insert(
        FENCING_TOKEN_ANNOTATION.into(),
        record.fencing_token.get().to_string(),
    );
    ann.insert(
        TTL_MILLIS_ANNOTATION.into(),
        record.ttl.as_millis().to_string(),
    );
    // Server-managed bookkeeping is not ours to send back.
    meta.managed_fields = None;
    let tombstone = record.is_tombstone();
    lease.spec = Some(LeaseSpec {
        holder_identity: record.holder.as_ref().map(|h| h.as_str().to_string()),
        lease_duration_seconds: if tombstone {
            None
        } else {
            duration_seconds(record.ttl)
        },
        lease_transitions: i32::try_from(record.fencing_token.get()).ok(),
        acquire_time: Some(to_micro(record.acquired_at)),
        renew_time: Some(to_micro(record.renewed_at)),
        ..LeaseSpec::default()
    });
    lease
}

/// Why an object is not a Berth record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotARecord(pub String);

fn need<'a>(lease: &'a Lease, name: &str) -> Result<&'a str, NotARecord> {
    annotation(lease, name).ok_or_else(|| NotARecord(format!("annotation {name} is missing")))
}

/// Reads the record an object holds.
///
/// # Errors
/// [`NotARecord`] when an annotation is missing or malformed, the annotations do not match
/// the object name, or a spec field Berth always writes is missing.
pub fn decode(lease: &Lease) -> Result<Versioned<LeaseRecord>, NotARecord> {
    let ns = need(lease, TENANT_NAMESPACE_ANNOTATION)?;
    let name = need(lease, LEASE_NAME_ANNOTATION)?;
    let key = LeaseKey::new(ns, name).map_err(|e| NotARecord(format!("bad key: {e}")))?;
    if lease.metadata.name.as_deref() != Some(object_name(&key).as_str()) {
        return Err(NotARecord(
            "key annotations do not match the object name".into(),
        ));
    }
    let version = need(lease, VERSION_ANNOTATION)?
        .parse::<i64>()
        .ok()
        .and_then(Version::new)
        .ok_or_else(|| NotARecord(format!("annotation {VERSION_ANNOTATION} is malformed")))?;
    let fencing_token = need(lease, FENCING_TOKEN_ANNOTATION)?
        .parse::<i64>()
        .ok()
        .and_then(FencingToken::new)
        .ok_or_else(|| {
            NotARecord(format!(
                "annotation {FENCING_TOKEN_ANNOTATION} is malformed"
            ))
        })?;
    let ttl = need(lease, TTL_MILLIS_ANNOTATION)?
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| NotARecord(format!("annotation {TTL_MILLIS_ANNOTATION} is malformed")))?;
    let spec = lease
        .spec
        .as_ref()
        .ok_or_else(|| NotARecord("spec is missing".into()))?;
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => None,
        Some(h) => {
            Some(Holder::new_unbounded(h).map_err(|e| NotARecord(format!("bad holder: {e}")))?)
        }
    };
    let time = |t: Option<&MicroTime>, what: &str| {
        t.and_then(from_micro)
            .ok_or_else(|| NotARecord(format!("spec.{what} is missing")))
    };
    Ok(Versioned {
        value: LeaseRecord {
            key,
            holder,
            ttl,
            acquired_at: time(spec.acquire_time.as_ref(), "acquireTime")?,
            renewed_at: time(spec.renew_time.as_ref(), "renewTime")?,
            fencing_token,
        },
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(token: i64, holder: Option<&str>, ttl: Duration) -> LeaseRecord {
        let t = time::macros::datetime!(2030-01-01 00:00:00.123456 UTC);
        LeaseRecord {
            key: LeaseKey::new("team-a", "db.primary").unwrap(),
            holder: holder.map(|h| Holder::new(h).unwrap()),
            ttl,
            acquired_at: t,
            renewed_at: t + time::Duration::microseconds(1_500_001),
            fencing_token: FencingToken::new(token).unwrap(),
        }
    }

    #[test]
    fn round_trips_through_json() {
        for r in [
            rec(7, Some("east"), Duration::from_millis(10_500)),
            rec(
                i64::from(i32::MAX) + 1,
                Some("tenant/x"),
                Duration::from_secs(30),
            ),
            rec(3, None, Duration::ZERO),
        ] {
            let lease = encode(&r, Version::new(9).unwrap(), None);
            let json = serde_json::to_string(&lease).unwrap();
            let back: Lease = serde_json::from_str(&json).unwrap();
            let got = decode(&back).unwrap();
            assert_eq!(got.value, r);
            assert_eq!(got.version.get(), 9);
        }
    }

    #[test]
    fn spec_fields_follow_the_record() {
        let lease = encode(
            &rec(7, Some("east"), Duration::from_millis(10_500)),
            Version::INITIAL,
            None,
        );
        assert_eq!(lease.metadata.name.as_deref(), Some("team-a.db.primary"));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(11), "rounded up");
        assert_eq!(spec.lease_transitions, Some(7));
        assert_eq!(spec.holder_identity.as_deref(), Some("east"));

        let wide = encode(
            &rec(
                i64::from(i32::MAX) + 1,
                Some("east"),
                Duration::from_secs(1),
            ),
            Version::INITIAL,
            None,
        );
        assert_eq!(
            wide.spec.unwrap().lease_transitions,
            None,
            "too wide for int32"
        );

        let tomb = encode(&rec(7, None, Duration::ZERO), Version::INITIAL, None);
        let spec = tomb.spec.unwrap();
        assert_eq!(spec.lease_duration_seconds, None);
        assert_eq!(spec.holder_identity, None);
    }

    #[test]
    fn foreign_metadata_is_kept_and_ours_repaired() {
        let mut base = encode(
            &rec(1, Some("east"), Duration::from_secs(5)),
            Version::INITIAL,
            None,
        );
        let meta = &mut base.metadata;
        meta.resource_version = Some("42".into());
        meta.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
        meta.labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "x".into());
        meta.annotations
            .as_mut()
            .unwrap()
            .insert("note".into(), "hello".into());
        let out = encode(
            &rec(2, Some("west"), Duration::from_secs(5)),
            Version::new(2).unwrap(),
            Some(base),
        );
        assert_eq!(out.metadata.resource_version.as_deref(), Some("42"));
        let labels = out.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("x"));
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some("berth")
        );
        let ann = out.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.get("note").map(String::as_str), Some("hello"));
        assert_eq!(berth_version(&out), Version::new(2));
    }

    #[test]
    fn objects_without_our_annotations_are_not_records() {
        let mut lease = encode(
            &rec(1, Some("east"), Duration::from_secs(5)),
            Version::INITIAL,
            None,
        );
        lease
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(VERSION_ANNOTATION);
        assert!(decode(&lease).unwrap_err().0.contains(VERSION_ANNOTATION));
        assert!(decode(&Lease::default()).is_err());

        let mut renamed = encode(
            &rec(1, Some("east"), Duration::from_secs(5)),
            Version::INITIAL,
            None,
        );
        renamed.metadata.name = Some("team-a.other".into());
        assert!(decode(&renamed).is_err());
    }

    #[test]
    fn selectors() {
        assert_eq!(selector(None), "berth.skaphos.io/managed-by=berth");
        assert_eq!(
            selector(Some("ns1")),
            "berth.skaphos.io/managed-by=berth,berth.skaphos.io/tenant-namespace=ns1"
        );
    }
}
