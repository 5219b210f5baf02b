//! [`AppState`]: what every handler shares.

use std::sync::Arc;

use berth_core::{DynClock, DynLeaseStore, LeaseService, TtlBounds, WatchConfig, WatchHub};

use crate::auth::Authenticator;
use crate::metrics::{InstrumentedStore, Metrics};
use crate::ready::ReadyGate;

/// Shared state of the router.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The lease rules over the instrumented store.
    pub leases: LeaseService,
    /// How callers authenticate.
    pub auth: Authenticator,
    /// Every exported series.
    pub metrics: Arc<Metrics>,
    /// `/readyz` gate over the store's ping.
    pub ready: Arc<ReadyGate>,
    /// Source of lease changes for watchers (started by the first watch).
    pub watch: Arc<WatchHub>,
}

impl AppState {
    /// Builds the state: wraps `store` in an [`InstrumentedStore`] and applies the TTL bounds.
    pub fn new(
        store: DynLeaseStore,
        clock: DynClock,
        bounds: TtlBounds,
        auth: Authenticator,
        metrics: Arc<Metrics>,
    ) -> Self {
        let store: DynLeaseStore = Arc::new(InstrumentedStore::new(store, metrics.clone()));
        let ready = Arc::new(ReadyGate::new(store.clone()));
        let leases = LeaseService::new(store, clock).with_ttl_bounds(bounds);
        let watch = WatchHub::new(leases.clone(), WatchConfig::default());
        Self {
            leases,
            auth,
            metrics,
            ready,
            watch,
        }
    }

    /// Replaces the watch hub's tuning (poll period, buffer, resume slack).
    #[must_use]
    pub fn with_watch_config(mut self, config: WatchConfig) -> Self {
        self.watch = WatchHub::new(self.leases.clone(), config);
        self
    }
}
