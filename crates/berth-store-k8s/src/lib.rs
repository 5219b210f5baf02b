//! The `k8s` store of Berth: lease records kept as `coordination.k8s.io/v1` Lease objects in
//! one coordination namespace of a coordination cluster, through kube-rs.
//!
//! [`KubeStore`] implements [`berth_core::LeaseStore`], the compare-and-set register that
//! [`berth_core::LeaseService`] drives; every lease rule lives in the service, the store only
//! keeps records atomically.
//!
//! # Objects
//! One Lease per key, named `<namespace>.<name>`, labelled
//! `berth.skaphos.io/managed-by=berth` (and `berth.skaphos.io/tenant-namespace=<namespace>`),
//! with annotations for the tenant namespace, the lease name, the Berth record version, the
//! 64-bit fencing token and the exact TTL in milliseconds. `spec` mirrors the record for
//! people and tools (`holderIdentity`, `leaseDurationSeconds` rounded up, `leaseTransitions` =
//! token while it fits an int32, `acquireTime`/`renewTime` with microseconds). The full layout
//! is in [`codec`].
//!
//! # Compare-and-set
//! - create (`Expect::Absent`) is a `POST`; `AlreadyExists` is a conflict;
//! - update (`Expect::Version(v)`) reads the object (or reuses the copy this process saw
//!   last), checks the Berth version annotation equals `v`, and replaces the object carrying
//!   the `resourceVersion` it read. On a 409 it re-reads: if the Berth version is still `v`,
//!   someone else only edited labels or annotations, and the write is retried on the fresh
//!   object (at most [`METADATA_CONFLICT_RETRIES`] times); otherwise it is a conflict. A
//!   deleted-and-recreated object (another `uid`) is always a conflict;
//! - our labels and annotations are repaired on every write; foreign ones are kept;
//! - `list` selects by label, skips labelled objects that are not Berth records, sorts by
//!   `(namespace, name)` byte-wise and applies [`berth_core::ListParams`]; `ping` lists at most
//!   one object.
//!
//! Every call runs under [`KubeStoreConfig::request_timeout`]; a timeout, a transport failure,
//! a 429 or a 5xx is `StoreError::Unavailable`.
//!
//! # Rate limiting
//! The original implementation collapsed at 300 leases under client-go's default of 5 QPS.
//! kube-rs has no client-side limiter of its own; this crate adds a token bucket whose
//! defaults, [`DEFAULT_QPS`] = 1000 requests/s with a burst of [`DEFAULT_BURST`] = 2000, are
//! far above what a lease workload needs (2,000 leases renewed every 10 s take about 400
//! requests/s), so it only guards against runaway loops. Set `qps` to 0 to disable it.
//!
//! # Time
//! With several API server replicas on one coordination namespace, expiry must be judged
//! against one clock. [`KubeStore::clock`] returns a [`KubeClock`] that follows the
//! kube-apiserver's clock (from its `Date` header, calibrated to the second's tick and carried
//! forward on the local monotonic clock); give it to [`berth_core::LeaseService`]. See
//! `docs/adr/0004-kubernetes-store.md`.
//!
//! # Out-of-band deletion
//! Deleting a Lease object by hand deletes the record: the next acquire recreates it with
//! fencing token 1 and version 1, so the key's token history restarts. Holders of the old
//! grant lose it (their renew finds no record, or a record with another token).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use berth_core::LeaseService;
//! use berth_store_k8s::{KubeStore, KubeStoreConfig};
//!
//! let store = KubeStore::connect(KubeStoreConfig::new("berth-system")).await?;
//! let clock = store.clock();
//! let leases = LeaseService::new(Arc::new(store), Arc::new(clock));
//! # let _ = leases; Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod clock;
pub mod codec;
mod store;

pub use clock::KubeClock;
pub use store::{
    ConnectError, DEFAULT_BURST, DEFAULT_CLOCK_REFRESH, DEFAULT_QPS, DEFAULT_REQUEST_TIMEOUT,
    KubeStore, KubeStoreConfig, METADATA_CONFLICT_RETRIES,
};

/// The backend name used in logs and metrics.
pub const BACKEND: &str = "k8s";
