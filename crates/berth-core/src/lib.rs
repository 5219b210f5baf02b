//! The core of Berth: lease keys, the lease rules ([`LeaseService`]), the [`Clock`] that
//! judges expiry, the [`LeaseStore`] compare-and-set trait every backend implements, the
//! in-memory reference store [`MemStore`], and (feature `conformance`) the store conformance
//! suite every backend runs.
//!
//! The rules live here once; stores are dumb registers (SPEC §2, reference §2.9):
//! - acquire: absent, released or expired → granted with the token moved up by one (1 for a
//!   new key); the same live holder → renewed in place; another live holder → denied;
//! - renew: only the live holder with the right token; an expired lease is never resurrected;
//! - release: the live holder with the right token writes a tombstone that keeps the token;
//!   absent or released → success; someone else's live lease → [`LeaseError::NotHolder`];
//! - every write is a compare-and-set on the store-owned [`Version`], retried at most
//!   [`service::MAX_CAS_ATTEMPTS`] times.
//!
//! ```
//! # tokio_test_block_on(async {
//! use std::{sync::Arc, time::Duration};
//! use berth_core::{Acquire, Holder, LeaseKey, LeaseService, ManualClock, MemStore};
//!
//! let clock = ManualClock::at_epoch();
//! let leases = LeaseService::new(Arc::new(MemStore::new()), Arc::new(clock.clone()));
//! let key = LeaseKey::new("pipeline", "ingest-worker").unwrap();
//! let east = Holder::new("cluster-east").unwrap();
//! let Acquire::Granted { lease, .. } = leases.acquire(&key, &east, Duration::from_secs(30)).await.unwrap()
//! else { panic!("a new key is always granted") };
//! assert_eq!(lease.record.fencing_token.get(), 1);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
#![deny(missing_docs)]
#![warn(clippy::future_not_send)]

pub mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod key;
pub mod mem;
pub mod service;
pub mod store;
pub mod watch;

pub use clock::{Clock, DynClock, ManualClock, Reading, SystemClock};
pub use key::{Holder, KeyError, LeaseKey};
pub use mem::MemStore;
pub use service::{
    Acquire, Grant, HeartbeatItem, LeaseError, LeaseService, LeaseState, LeaseView, Release, Renew,
    SweepStats, TtlBounds,
};
pub use store::{
    BoxError, ChangeFeed, DynLeaseStore, EndReason, Expect, FencingToken, HistoryEntry,
    LeaseRecord, LeaseStore, ListParams, StoreError, Version, Versioned,
};
pub use watch::{Change, ChangeKind, Subscription, WatchConfig, WatchFilter, WatchHub};
