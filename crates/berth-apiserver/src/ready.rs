//! [`ReadyGate`]: `/readyz` through a store ping, cached 1 s, single-flight, 2 s timeout
//! (reference §2.8).

use std::time::{Duration, Instant};

use berth_core::DynLeaseStore;
use tokio::sync::Mutex;

/// How long a probe result is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness gate over a store's ping.
#[derive(Debug)]
pub struct ReadyGate {
    store: DynLeaseStore,
    // An async mutex held across the probe is the single flight: concurrent callers wait for
    // the one probe and then read its cached result.
    last: Mutex<Option<(Instant, bool)>>,
}

impl ReadyGate {
    /// A gate over `store`.
    pub fn new(store: DynLeaseStore) -> Self {
        Self {
            store,
            last: Mutex::new(None),
        }
    }

    /// Whether the store answered its ping recently.
    pub async fn is_ready(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < CACHE_FOR
        {
            return ok;
        }
        let store = self.store.clone();
        // Detached from the request: a client hanging up does not cancel the probe.
        let probe =
            tokio::spawn(async move { tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await });
        let ok = match probe.await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    backend = self.store.backend(),
                    "readiness probe failed"
                );
                false
            }
            Ok(Err(_)) => {
                tracing::warn!(backend = self.store.backend(), "readiness probe timed out");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "readiness probe task failed");
                false
            }
        };
        *last = Some((Instant::now(), ok));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{
        Expect, LeaseKey, LeaseRecord, LeaseStore, ListParams, StoreError, Version, Versioned,
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Probe {
        calls: AtomicUsize,
        fail: AtomicBool,
    }

    #[async_trait::async_trait]
    impl LeaseStore for Probe {
        fn backend(&self) -> &'static str {
            "mem"
        }
        async fn get(&self, _: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
            Ok(None)
        }
        async fn list(&self, _: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
            Ok(vec![])
        }
        async fn put(&self, _: &LeaseRecord, _: Expect) -> Result<Version, StoreError> {
            Ok(Version::INITIAL)
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable {
                    backend: "mem",
                    source: "down".into(),
                })
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn caches_and_single_flights() {
        let probe = Arc::new(Probe::default());
        let gate = Arc::new(ReadyGate::new(probe.clone()));
        let results = futures::future::join_all((0..10).map(|_| {
            let g = gate.clone();
            async move { g.is_ready().await }
        }))
        .await;
        assert!(results.iter().all(|r| *r));
        assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
        probe.fail.store(true, Ordering::SeqCst);
        assert!(gate.is_ready().await, "cached for a second");
        tokio::time::sleep(CACHE_FOR + Duration::from_millis(50)).await;
        assert!(!gate.is_ready().await);
        assert_eq!(probe.calls.load(Ordering::SeqCst), 2);
    }
}
