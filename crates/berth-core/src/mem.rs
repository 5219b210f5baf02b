//! [`MemStore`]: the in-memory reference store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::key::LeaseKey;
use crate::store::{
    ChangeFeed, Expect, HistoryEntry, LeaseRecord, LeaseStore, ListParams, StoreError, Version,
    Versioned,
};

/// Ended grants kept per key by [`MemStore`].
pub const MEM_HISTORY_PER_KEY: usize = 32;

/// A process-local store: reference semantics, single replica, lost on restart.
///
/// Every write is announced on its [`ChangeFeed`] (a complete feed: nothing else writes to
/// it), and the last [`MEM_HISTORY_PER_KEY`] ended grants of each key are kept.
#[derive(Debug)]
pub struct MemStore {
    // A std mutex, never held across an `.await`: every critical section is a few map
    // operations, cheaper than an async mutex's bookkeeping.
    records: Mutex<BTreeMap<LeaseKey, Versioned<LeaseRecord>>>,
    history: Mutex<HashMap<LeaseKey, VecDeque<HistoryEntry>>>,
    changes: broadcast::Sender<LeaseKey>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self {
            records: Mutex::default(),
            history: Mutex::default(),
            changes: broadcast::channel(4096).0,
        }
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records (tombstones included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<LeaseKey, Versioned<LeaseRecord>>> {
        // A panic while holding the lock cannot leave a half-written record: each critical
        // section does one insert. Recover rather than poison every later call.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl LeaseStore for MemStore {
    fn backend(&self) -> &'static str {
        "mem"
    }

    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let records = self.lock();
        let iter = records
            .values()
            .filter(|v| params.admits(&v.value.key))
            .cloned();
        Ok(match params.limit {
            Some(n) => iter.take(n).collect(),
            None => iter.collect(),
        })
    }

    async fn put(&self, record: &LeaseRecord, expect: Expect) -> Result<Version, StoreError> {
        let mut records = self.lock();
        let current = records.get(&record.key).map(|v| v.version);
        let version = match (expect, current) {
            (Expect::Absent, None) => Version::INITIAL,
            (Expect::Version(want), Some(have)) if want == have => have.next(),
            _ => {
                return Err(StoreError::Conflict {
                    key: record.key.clone(),
                });
            }
        };
        records.insert(
            record.key.clone(),
            Versioned {
                value: record.clone(),
                version,
            },
        );
        drop(records);
        // No receiver is not an error: nobody watches.
        let _ = self.changes.send(record.key.clone());
        Ok(version)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn change_feed(&self) -> Option<ChangeFeed> {
        Some(ChangeFeed {
            keys: self.changes.subscribe(),
            complete: true,
        })
    }

    fn keeps_history(&self) -> bool {
        true
    }

    async fn append_history(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let mut history = self
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ring = history.entry(entry.key.clone()).or_default();
        if ring.len() >= MEM_HISTORY_PER_KEY {
            ring.pop_front();
        }
        ring.push_back(entry.clone());
        Ok(())
    }

    async fn history(
        &self,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let history = self
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Some(
            history
                .get(key)
                .map(|ring| ring.iter().rev().take(limit).cloned().collect())
                .unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn mem_store_passes_conformance() {
        conformance::run_all(Arc::new(MemStore::new())).await;
    }
}
