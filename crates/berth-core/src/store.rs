//! The storage boundary: [`LeaseStore`] is a compare-and-set register of [`LeaseRecord`]s.
//!
//! A backend only stores records atomically; every lease rule (who may acquire, expiry,
//! fencing-token moves, tombstones, retries) lives once in [`crate::LeaseService`]. See
//! `docs/adr/0001-lease-store-is-a-cas-register.md`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::key::{Holder, LeaseKey};

/// A per-key fencing token: positive, strictly increasing over the key's whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken(i64);

impl FencingToken {
    /// The token of a key's first grant.
    pub const FIRST: Self = Self(1);

    /// Wraps a raw token; `None` unless positive.
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The raw value.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The token of the next grant, or `None` at the ceiling (tokens never wrap).
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A store-owned record version, the only compare-and-set predicate. Never reused for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(i64);

impl Version {
    /// The version a store gives a newly created record.
    pub const INITIAL: Self = Self(1);

    /// Wraps a raw version; `None` unless positive.
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The raw value.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The version a successful write over this one stores.
    ///
    /// # Panics
    /// Never in practice: a key would need 2^63 writes.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One lease record as a store keeps it.
///
/// `holder == None` is a *tombstone*: the lease was released (or swept) but the record stays,
/// so the key's fencing token never goes backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The key.
    pub key: LeaseKey,
    /// The holder; `None` for a tombstone.
    pub holder: Option<Holder>,
    /// Time to live of the current grant (zero on tombstones). Stores keep milliseconds.
    pub ttl: Duration,
    /// When the current (or, on a tombstone, the last) grant was made.
    pub acquired_at: OffsetDateTime,
    /// When the grant was last renewed, or when it was released.
    pub renewed_at: OffsetDateTime,
    /// Token of the current (or last) grant.
    pub fencing_token: FencingToken,
}

impl LeaseRecord {
    /// Whether this record is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.holder.is_none()
    }

    /// `renewed_at + ttl`, the instant the grant ends.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.renewed_at
            .saturating_add(time::Duration::try_from(self.ttl).unwrap_or(time::Duration::MAX))
    }
}

/// A value together with the store version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version.
    pub version: Version,
}

/// The precondition of a [`LeaseStore::put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist yet (create-if-absent).
    Absent,
    /// The key's current version must be exactly this one.
    Version(Version),
}

/// What to list. Results are ordered by `(namespace, name)`, byte-wise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only keys strictly after this one.
    pub after: Option<LeaseKey>,
    /// At most this many records; `None` for all.
    pub limit: Option<usize>,
}

impl ListParams {
    /// Whether `key` passes the namespace and `after` filters.
    pub fn admits(&self, key: &LeaseKey) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| key.namespace() == ns)
            && self.after.as_ref().is_none_or(|after| key > after)
    }
}

/// A boxed error from a backend library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The precondition of a put did not hold (someone else wrote first).
    #[error("write conflict on lease {key}")]
    Conflict {
        /// The contended key.
        key: LeaseKey,
    },
    /// The backend could not be reached or timed out; retrying may help.
    #[error("{backend} store unavailable")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// The backend answered with an error.
    #[error("{backend} store error")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record for lease {key}: {reason}")]
    Corrupt {
        /// The key whose record is bad.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::Unavailable { .. })
    }

    /// Whether this is a compare-and-set conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// A short label for metrics: `conflict`, `unavailable`, `error`, `corrupt`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "conflict",
            Self::Unavailable { .. } => "unavailable",
            Self::Backend { .. } => "error",
            Self::Corrupt { .. } => "corrupt",
        }
    }
}

/// A linearizable per-key compare-and-set register of lease records.
///
/// # Guarantees
/// - `put` is atomic: it writes only if the precondition holds at the moment of writing, and
///   any miss is [`StoreError::Conflict`].
/// - A successful `put` returns a version that the key has never had before; `get` then
///   returns that version until the next successful `put`. Creates store
///   [`Version::INITIAL`]; later writes store `expected.next()`.
/// - Records are never deleted; tombstones are ordinary records.
/// - Stores never interpret records: they store what they are given. They never read the
///   clock, except [`LeaseStore::get_with_clock`], which reads the store's own clock together
///   with a record.
#[async_trait::async_trait]
pub trait LeaseStore: fmt::Debug + Send + Sync + 'static {
    /// `mem`, `sql` or `k8s`: used in logs and as a metric label.
    fn backend(&self) -> &'static str;

    /// Reads one record.
    ///
    /// # Errors
    /// `Unavailable`, `Backend` or `Corrupt`.
    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError>;

    /// Lists records (tombstones included) ordered by key, filtered by `params`.
    ///
    /// # Errors
    /// `Unavailable`, `Backend` or `Corrupt`.
    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError>;

    /// Writes `record` if `expect` holds, returning the record's new version.
    ///
    /// # Errors
    /// `Conflict` when the precondition does not hold; `Unavailable` or `Backend` otherwise.
    async fn put(&self, record: &LeaseRecord, expect: Expect) -> Result<Version, StoreError>;

    /// A constant-cost reachability check for `/readyz`.
    ///
    /// # Errors
    /// `Unavailable` or `Backend`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Reads several records, one answer per key in order.
    ///
    /// The default reads them one by one; stores with a cheaper bulk read override it.
    ///
    /// # Errors
    /// `Unavailable`, `Backend` or `Corrupt` for the whole call.
    async fn get_many(
        &self,
        keys: &[LeaseKey],
    ) -> Result<Vec<Option<Versioned<LeaseRecord>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Writes several records, each under its own precondition, and answers one result per item
    /// in order. Items succeed or fail on their own: a conflict on one item never undoes
    /// another. Each successful item has exactly the effect of [`LeaseStore::put`].
    ///
    /// The default calls `put` for each item; SQL stores commit the whole batch in one
    /// transaction (one durable commit instead of one per item).
    async fn put_batch(&self, items: &[(LeaseRecord, Expect)]) -> Vec<Result<Version, StoreError>> {
        let mut out = Vec::with_capacity(items.len());
        for (record, expect) in items {
            out.push(self.put(record, *expect).await);
        }
        out
    }

    /// An identifier of this store's own clock, when [`LeaseStore::get_with_clock`] is
    /// supported: the [`crate::Clock::store_source`] of the clock it reads. `None` (the
    /// default): not supported.
    fn clock_source(&self) -> Option<u64> {
        None
    }

    /// Reads one record together with a reading of the store's own clock taken no later than
    /// the record was read, in one call (one round trip for a database). Only called when
    /// [`LeaseStore::clock_source`] matches the service's clock.
    ///
    /// # Errors
    /// As [`LeaseStore::get`]; `Backend` when not supported (the default).
    async fn get_with_clock(
        &self,
        key: &LeaseKey,
    ) -> Result<(Option<Versioned<LeaseRecord>>, OffsetDateTime), StoreError> {
        let _ = key;
        Err(StoreError::Backend {
            backend: self.backend(),
            source: "get_with_clock is not supported by this store".into(),
        })
    }

    /// Notifications of the keys this store writes, for watchers. `None` (the default): the
    /// store announces nothing and watchers poll it.
    fn change_feed(&self) -> Option<ChangeFeed> {
        None
    }

    /// Whether this store keeps lease history ([`LeaseStore::append_history`] and
    /// [`LeaseStore::history`]). The default is `false`.
    fn keeps_history(&self) -> bool {
        false
    }

    /// Appends an ended grant to the key's history. Stores that keep no history ignore it (the
    /// default) and answer `None` from [`LeaseStore::history`]; the service then keeps a
    /// per-process history instead.
    ///
    /// # Errors
    /// `Unavailable` or `Backend`.
    async fn append_history(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let _ = entry;
        Ok(())
    }

    /// The most recent ended grants of `key`, newest first, at most `limit`; `None` when the
    /// store keeps no history.
    ///
    /// # Errors
    /// `Unavailable`, `Backend` or `Corrupt`.
    async fn history(
        &self,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let _ = (key, limit);
        Ok(None)
    }
}

/// A subscription to the keys a store writes (see [`LeaseStore::change_feed`]).
#[derive(Debug)]
pub struct ChangeFeed {
    /// Receives the key of every write announced.
    pub keys: tokio::sync::broadcast::Receiver<LeaseKey>,
    /// Whether *every* write to the store is announced (a single-process store). When false,
    /// only this process's writes are, and watchers still poll for the others.
    pub complete: bool,
}

/// How a grant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Its holder released it.
    Released,
    /// Its TTL ran out and the sweeper tombstoned it.
    Expired,
    /// Its TTL ran out and another holder (or the same one, anew) acquired the lease.
    TakenOver,
}

impl EndReason {
    /// `released`, `expired` or `taken-over`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Expired => "expired",
            Self::TakenOver => "taken-over",
        }
    }

    /// Parses [`EndReason::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "released" => Some(Self::Released),
            "expired" => Some(Self::Expired),
            "taken-over" => Some(Self::TakenOver),
            _ => None,
        }
    }
}

/// One ended grant of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The key.
    pub key: LeaseKey,
    /// Who held it.
    pub holder: Holder,
    /// The grant's fencing token.
    pub fencing_token: FencingToken,
    /// When the grant was made.
    pub acquired_at: OffsetDateTime,
    /// When it ended: the release, or the expiry instant.
    pub ended_at: OffsetDateTime,
    /// Why it ended.
    pub reason: EndReason,
}

/// A shared, dynamically chosen store.
pub type DynLeaseStore = Arc<dyn LeaseStore>;
