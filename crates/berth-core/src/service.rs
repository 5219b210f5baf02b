//! [`LeaseService`]: the lease rules, written once for every store.

use std::time::Duration;

use time::OffsetDateTime;
use tracing::instrument;

use crate::clock::DynClock;
use crate::key::{Holder, LeaseKey};
use crate::store::{
    DynLeaseStore, EndReason, Expect, FencingToken, HistoryEntry, LeaseRecord, ListParams,
    StoreError, Version, Versioned,
};

/// Ended grants kept per key by the per-process history of stores that keep none.
pub const LOCAL_HISTORY_PER_KEY: usize = 32;

/// Largest number of items in one [`LeaseService::heartbeat`].
pub const MAX_HEARTBEAT_ITEMS: usize = 2500;

/// One lease of a batched heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatItem {
    /// The key.
    pub key: LeaseKey,
    /// The token of the caller's grant.
    pub token: FencingToken,
    /// The new TTL.
    pub ttl: Duration,
}

type LocalHistory = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<LeaseKey, std::collections::VecDeque<HistoryEntry>>>,
>;

/// Compare-and-set attempts per operation before giving up (reference §2.9).
pub const MAX_CAS_ATTEMPTS: u32 = 8;

/// Why a lease operation failed. A denied acquire or a lost renew is *not* an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The requested TTL is outside the server's bounds.
    #[error("ttlSeconds must be between {} and {}", .min.as_secs(), .max.as_secs())]
    TtlOutOfRange {
        /// Smallest TTL allowed.
        min: Duration,
        /// Largest TTL allowed.
        max: Duration,
    },
    /// Release of a live lease held by another holder or under another token (HTTP 409).
    #[error("lease held by another identity or token")]
    NotHolder,
    /// The key's fencing token reached its ceiling; tokens never wrap.
    #[error("fencing token of lease {key} is exhausted")]
    TokenExhausted {
        /// The key.
        key: LeaseKey,
    },
    /// Every compare-and-set attempt lost to a concurrent writer.
    #[error("too many concurrent writes to lease {key}")]
    TooManyConflicts {
        /// The key.
        key: LeaseKey,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Bounds on requested TTLs (`--min-ttl`, `--max-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlBounds {
    /// Smallest TTL allowed.
    pub min: Duration,
    /// Largest TTL allowed.
    pub max: Duration,
}

impl Default for TtlBounds {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(3600),
        }
    }
}

/// The lifecycle state of a lease at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// A live holder owns it.
    Held,
    /// Its holder's TTL ran out.
    Expired,
    /// It was released (a tombstone).
    Released,
}

/// A lease record interpreted at one instant of the store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The record as stored.
    pub record: LeaseRecord,
    /// Its version.
    pub version: Version,
    /// The instant it was judged at.
    pub now: OffsetDateTime,
}

impl LeaseView {
    fn new(v: Versioned<LeaseRecord>, now: OffsetDateTime) -> Self {
        Self {
            record: v.value,
            version: v.version,
            now,
        }
    }

    /// State at `now`.
    pub fn state(&self) -> LeaseState {
        if self.record.is_tombstone() {
            LeaseState::Released
        } else if self.now >= self.record.expires_at() {
            LeaseState::Expired
        } else {
            LeaseState::Held
        }
    }

    /// Whether a holder owns the lease at `now`.
    pub fn is_live(&self) -> bool {
        self.state() == LeaseState::Held
    }

    /// The live holder, if any.
    pub fn live_holder(&self) -> Option<&Holder> {
        if self.is_live() {
            self.record.holder.as_ref()
        } else {
            None
        }
    }

    /// Time left on a live grant at `now`; zero otherwise.
    pub fn remaining(&self) -> Duration {
        if !self.is_live() {
            return Duration::ZERO;
        }
        let left = self.record.expires_at() - self.now;
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }

    /// How many times the lease has changed hands: every grant after the first moved the
    /// fencing token by one.
    pub fn transitions(&self) -> u64 {
        u64::try_from(self.record.fencing_token.get() - 1).unwrap_or(0)
    }
}

/// How an acquire that succeeded came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The key was new: token 1.
    Created,
    /// The caller already held it: renewed in place, same token.
    Renewed,
    /// It was released or expired: the token moved up by one.
    Reclaimed,
}

/// Result of [`LeaseService::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The caller holds the lease.
    Granted {
        /// The lease after the write.
        lease: LeaseView,
        /// How it was granted.
        grant: Grant,
    },
    /// Someone else holds it; the view shows them.
    Denied(LeaseView),
}

/// Result of [`LeaseService::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renew {
    /// Renewed; the view shows the new expiry.
    Renewed(LeaseView),
    /// The caller does not hold the lease (any more); the view shows the current state, if the
    /// key exists.
    Lost(Option<LeaseView>),
}

/// Result of [`LeaseService::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The caller's grant was ended (a tombstone was written).
    Released(LeaseView),
    /// Nothing to release: absent, already released, or expired and no longer the caller's.
    NotHeld,
}

/// Result of [`LeaseService::sweep`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Records looked at.
    pub scanned: usize,
    /// Long-expired records turned into tombstones.
    pub tombstoned: usize,
    /// Records skipped because another writer got there first.
    pub conflicts: usize,
    /// Leases held live at the time of the sweep.
    pub live: usize,
}

/// The lease rules over a [`crate::LeaseStore`] and a [`crate::Clock`].
#[derive(Debug, Clone)]
pub struct LeaseService {
    store: DynLeaseStore,
    clock: DynClock,
    bounds: TtlBounds,
    local_history: LocalHistory,
    /// The clock is the store's own and the store reads it with a record in one call.
    fused: bool,
}

impl LeaseService {
    /// A service with the default TTL bounds (1 s to 1 h).
    pub fn new(store: DynLeaseStore, clock: DynClock) -> Self {
        let fused = store
            .clock_source()
            .is_some_and(|id| clock.store_source() == Some(id));
        Self {
            store,
            clock,
            bounds: TtlBounds::default(),
            local_history: LocalHistory::default(),
            fused,
        }
    }

    /// Replaces the TTL bounds.
    #[must_use]
    pub fn with_ttl_bounds(mut self, bounds: TtlBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// The store.
    pub fn store(&self) -> &DynLeaseStore {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &DynClock {
        &self.clock
    }

    /// The TTL bounds.
    pub fn ttl_bounds(&self) -> TtlBounds {
        self.bounds
    }

    /// Checks a requested TTL against the bounds.
    ///
    /// # Errors
    /// [`LeaseError::TtlOutOfRange`].
    pub fn check_ttl(&self, ttl: Duration) -> Result<(), LeaseError> {
        if ttl < self.bounds.min || ttl > self.bounds.max {
            return Err(LeaseError::TtlOutOfRange {
                min: self.bounds.min,
                max: self.bounds.max,
            });
        }
        Ok(())
    }

    async fn observe(
        &self,
        key: &LeaseKey,
    ) -> Result<(Option<LeaseView>, OffsetDateTime), LeaseError> {
        // Read the clock first: a view is never judged at a time earlier than its read.
        // Views are judged at the earliest possible time (nothing expires early); the caller
        // stamps its write with the latest (nothing stored expires early either). See
        // `Clock::read`.
        if self.fused {
            // The store's own clock (an exact one: both ends of the reading are the same),
            // read by the same statement before the record.
            let (current, now) = self.store.get_with_clock(key).await?;
            return Ok((current.map(|v| LeaseView::new(v, now)), now));
        }
        let reading = self.clock.read().await?;
        let current = self.store.get(key).await?;
        Ok((
            current.map(|v| LeaseView::new(v, reading.earliest)),
            reading.latest,
        ))
    }

    async fn write(
        &self,
        record: LeaseRecord,
        expect: Expect,
        now: OffsetDateTime,
    ) -> Result<Option<LeaseView>, LeaseError> {
        match self.store.put(&record, expect).await {
            Ok(version) => Ok(Some(LeaseView {
                record,
                version,
                now,
            })),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Acquires `key` for `holder`, or renews it if `holder` already holds it.
    ///
    /// # Errors
    /// TTL out of bounds, token exhaustion, too many conflicts, or a store failure.
    #[instrument(skip_all, fields(key = %key, holder = %holder, backend = self.store.backend()))]
    pub async fn acquire(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Acquire, LeaseError> {
        self.check_ttl(ttl)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (current, now) = self.observe(key).await?;
            let mut ended = None;
            let (record, expect, grant) = match current {
                None => (
                    LeaseRecord {
                        key: key.clone(),
                        holder: Some(holder.clone()),
                        ttl,
                        acquired_at: now,
                        renewed_at: now,
                        fencing_token: FencingToken::FIRST,
                    },
                    Expect::Absent,
                    Grant::Created,
                ),
                Some(view) => match view.live_holder() {
                    Some(h) if h == holder => (
                        extended(&view.record, ttl, now),
                        Expect::Version(view.version),
                        Grant::Renewed,
                    ),
                    Some(_) => return Ok(Acquire::Denied(view)),
                    None => {
                        let Some(token) = view.record.fencing_token.next() else {
                            return Err(LeaseError::TokenExhausted { key: key.clone() });
                        };
                        ended = ended_by_takeover(&view);
                        (
                            LeaseRecord {
                                key: key.clone(),
                                holder: Some(holder.clone()),
                                ttl,
                                acquired_at: now,
                                renewed_at: now,
                                fencing_token: token,
                            },
                            Expect::Version(view.version),
                            Grant::Reclaimed,
                        )
                    }
                },
            };
            if let Some(lease) = self.write(record, expect, now).await? {
                if let Some(entry) = ended {
                    self.record_history(entry).await;
                }
                return Ok(Acquire::Granted { lease, grant });
            }
        }
        Err(LeaseError::TooManyConflicts { key: key.clone() })
    }

    /// Renews `holder`'s live grant of `key` under `token`. Never resurrects an expired lease.
    ///
    /// # Errors
    /// TTL out of bounds, too many conflicts, or a store failure.
    #[instrument(skip_all, fields(key = %key, holder = %holder, backend = self.store.backend()))]
    pub async fn renew(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        token: FencingToken,
        ttl: Duration,
    ) -> Result<Renew, LeaseError> {
        self.check_ttl(ttl)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (current, now) = self.observe(key).await?;
            let Some(view) = current else {
                return Ok(Renew::Lost(None));
            };
            if view.live_holder() != Some(holder) || view.record.fencing_token != token {
                return Ok(Renew::Lost(Some(view)));
            }
            let record = extended(&view.record, ttl, now);
            // On a conflict the loop re-reads and reports whoever won (reference §2.9, #120).
            if let Some(lease) = self
                .write(record, Expect::Version(view.version), now)
                .await?
            {
                return Ok(Renew::Renewed(lease));
            }
        }
        Err(LeaseError::TooManyConflicts { key: key.clone() })
    }

    /// Releases `holder`'s grant of `key` under `token`, leaving a tombstone that keeps the token.
    ///
    /// Idempotent: an absent key, a tombstone, or an expired grant that is not the caller's is
    /// `NotHeld`. The caller's own expired (not yet reclaimed) grant may still be released.
    ///
    /// # Errors
    /// [`LeaseError::NotHolder`] when someone else holds the lease live; conflicts or store
    /// failures.
    #[instrument(skip_all, fields(key = %key, holder = %holder, backend = self.store.backend()))]
    pub async fn release(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        token: i64,
    ) -> Result<Release, LeaseError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (current, now) = self.observe(key).await?;
            let Some(view) = current else {
                return Ok(Release::NotHeld);
            };
            let mine = view.record.holder.as_ref() == Some(holder)
                && view.record.fencing_token.get() == token;
            match view.state() {
                LeaseState::Released => return Ok(Release::NotHeld),
                LeaseState::Held if !mine => return Err(LeaseError::NotHolder),
                LeaseState::Expired if !mine => return Ok(Release::NotHeld),
                LeaseState::Held | LeaseState::Expired => {}
            }
            let record = tombstone(&view.record, now);
            if let Some(lease) = self
                .write(record, Expect::Version(view.version), now)
                .await?
            {
                if let Some(h) = view.record.holder.clone() {
                    let expired = view.state() == LeaseState::Expired;
                    self.record_history(HistoryEntry {
                        key: key.clone(),
                        holder: h,
                        fencing_token: view.record.fencing_token,
                        acquired_at: view.record.acquired_at,
                        ended_at: if expired {
                            view.record.expires_at()
                        } else {
                            now
                        },
                        reason: if expired {
                            EndReason::Expired
                        } else {
                            EndReason::Released
                        },
                    })
                    .await;
                }
                return Ok(Release::Released(lease));
            }
        }
        Err(LeaseError::TooManyConflicts { key: key.clone() })
    }

    /// Reads one lease.
    ///
    /// # Errors
    /// A store failure.
    pub async fn get(&self, key: &LeaseKey) -> Result<Option<LeaseView>, LeaseError> {
        Ok(self.observe(key).await?.0)
    }

    /// Lists leases ordered by key. With `holder`, only leases that holder holds live; pages may
    /// then need several store calls. Returns the page and the last key looked at when more may
    /// follow.
    ///
    /// # Errors
    /// A store failure.
    pub async fn list(
        &self,
        params: &ListParams,
        holder: Option<&Holder>,
    ) -> Result<(Vec<LeaseView>, Option<LeaseKey>), LeaseError> {
        let now = self.clock.now().await?;
        let limit = params.limit;
        let mut params = params.clone();
        let mut out = Vec::new();
        loop {
            let page = self.store.list(&params).await?;
            let exhausted = limit.is_none_or(|l| page.len() < l);
            let count = page.len();
            let mut last = None;
            for (i, v) in page.into_iter().enumerate() {
                last = Some(v.value.key.clone());
                let view = LeaseView::new(v, now);
                if holder.is_none_or(|h| view.live_holder() == Some(h)) {
                    out.push(view);
                    if limit.is_some_and(|l| out.len() >= l) {
                        let at_end = exhausted && i + 1 == count;
                        return Ok((out, if at_end { None } else { last }));
                    }
                }
            }
            if exhausted || last.is_none() {
                return Ok((out, None));
            }
            params.after = last;
        }
    }

    /// Renews many grants of one `holder` in one call: one clock read, one bulk read, and one
    /// [`crate::LeaseStore::put_batch`] (one transaction on SQL). Answers one result per item,
    /// in order, each exactly what [`LeaseService::renew`] would have answered; an item that
    /// loses its compare-and-set to a concurrent writer is retried alone through `renew`.
    ///
    /// # Errors
    /// A store failure of the bulk read fails the whole call; per-item failures are per item.
    #[instrument(skip_all, fields(holder = %holder, items = items.len(), backend = self.store.backend()))]
    pub async fn heartbeat(
        &self,
        holder: &Holder,
        items: &[HeartbeatItem],
    ) -> Result<Vec<Result<Renew, LeaseError>>, LeaseError> {
        let mut out: Vec<Option<Result<Renew, LeaseError>>> = Vec::with_capacity(items.len());
        let mut to_read = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.check_ttl(item.ttl) {
                Ok(()) => {
                    out.push(None);
                    to_read.push(i);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let reading = self.clock.read().await?;
        let now = reading.latest;
        let keys: Vec<LeaseKey> = to_read.iter().map(|&i| items[i].key.clone()).collect();
        let current = self.store.get_many(&keys).await?;
        let mut writes = Vec::new();
        let mut written = Vec::new();
        for (&i, cur) in to_read.iter().zip(current) {
            let item = &items[i];
            let Some(view) = cur.map(|v| LeaseView::new(v, reading.earliest)) else {
                out[i] = Some(Ok(Renew::Lost(None)));
                continue;
            };
            if view.live_holder() != Some(holder) || view.record.fencing_token != item.token {
                out[i] = Some(Ok(Renew::Lost(Some(view))));
                continue;
            }
            let record = extended(&view.record, item.ttl, now);
            writes.push((record, Expect::Version(view.version)));
            written.push(i);
        }
        let results = if writes.is_empty() {
            Vec::new()
        } else {
            self.store.put_batch(&writes).await
        };
        for ((i, (record, _)), result) in written.into_iter().zip(writes).zip(results) {
            let item = &items[i];
            out[i] = Some(match result {
                Ok(version) => Ok(Renew::Renewed(LeaseView {
                    record,
                    version,
                    now,
                })),
                Err(e) if e.is_conflict() => {
                    self.renew(&item.key, holder, item.token, item.ttl).await
                }
                Err(e) => Err(e.into()),
            });
        }
        // Every slot was filled above: TTL errors, reads, then writes.
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Ok(Renew::Lost(None))))
            .collect())
    }

    /// The most recent ended grants of `key`, newest first, at most `limit`: from the store
    /// when it keeps history, else from this process's own record of the grants it ended.
    ///
    /// # Errors
    /// A store failure.
    pub async fn history(
        &self,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, LeaseError> {
        if let Some(h) = self.store.history(key, limit).await? {
            return Ok(h);
        }
        let local = self
            .local_history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(local
            .get(key)
            .map(|ring| ring.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn record_history(&self, entry: HistoryEntry) {
        if self.store.keeps_history() {
            // History is best effort: the lease write already happened and stands.
            if let Err(e) = self.store.append_history(&entry).await {
                tracing::warn!(key = %entry.key, error = %e, "could not record lease history");
            }
            return;
        }
        let mut local = self
            .local_history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ring = local.entry(entry.key.clone()).or_default();
        if ring.len() >= LOCAL_HISTORY_PER_KEY {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// Tombstones every record whose grant expired more than `grace` ago. Safe with several
    /// replicas: each write is guarded by the version scanned, and conflicts are skipped.
    ///
    /// # Errors
    /// A store failure while listing.
    pub async fn sweep(&self, grace: Duration) -> Result<SweepStats, LeaseError> {
        let reading = self.clock.read().await?;
        let now = reading.earliest;
        let grace = time::Duration::try_from(grace).unwrap_or(time::Duration::MAX);
        let mut stats = SweepStats::default();
        for v in self.store.list(&ListParams::default()).await? {
            stats.scanned += 1;
            let r = &v.value;
            if !r.is_tombstone() && r.expires_at() > now {
                stats.live += 1;
            }
            if r.is_tombstone() || r.expires_at().saturating_add(grace) > now {
                continue;
            }
            match self
                .store
                .put(&tombstone(r, reading.latest), Expect::Version(v.version))
                .await
            {
                Ok(_) => {
                    stats.tombstoned += 1;
                    if let Some(h) = r.holder.clone() {
                        self.record_history(HistoryEntry {
                            key: r.key.clone(),
                            holder: h,
                            fencing_token: r.fencing_token,
                            acquired_at: r.acquired_at,
                            ended_at: r.expires_at(),
                            reason: EndReason::Expired,
                        })
                        .await;
                    }
                }
                Err(e) if e.is_conflict() => stats.conflicts += 1,
                Err(e) => {
                    tracing::warn!(key = %r.key, error = %e, "sweeper could not tombstone an expired lease")
                }
            }
        }
        Ok(stats)
    }
}

fn ended_by_takeover(view: &LeaseView) -> Option<HistoryEntry> {
    // A released lease's grant was recorded when it was released.
    let holder = view.record.holder.clone()?;
    Some(HistoryEntry {
        key: view.record.key.clone(),
        holder,
        fencing_token: view.record.fencing_token,
        acquired_at: view.record.acquired_at,
        ended_at: view.record.expires_at(),
        reason: EndReason::TakenOver,
    })
}

/// `r` renewed at `now` for `ttl`, stamped no earlier than its current stamp.
///
/// A request's clock reading can be stale by the time it writes: its replica may stall
/// (a pause, a long GC-like stop) after reading the clock and before reading the record, while
/// the same holder's next renewal goes through another replica and is acknowledged with a later
/// expiry. Stamping the stale reading would move that acknowledged expiry earlier, and another
/// holder could be granted the lease while the first still counts on it. So a renewal keeps
/// the later of the two stamps. The TTL is the one asked for (as in the reference): a holder
/// that deliberately asks for a shorter TTL gets it, and must then not count on a deadline an
/// earlier, longer grant gave it.
fn extended(r: &LeaseRecord, ttl: Duration, now: OffsetDateTime) -> LeaseRecord {
    LeaseRecord {
        ttl,
        renewed_at: now.max(r.renewed_at),
        ..r.clone()
    }
}

fn tombstone(r: &LeaseRecord, now: OffsetDateTime) -> LeaseRecord {
    LeaseRecord {
        key: r.key.clone(),
        holder: None,
        ttl: Duration::ZERO,
        acquired_at: r.acquired_at,
        renewed_at: now,
        fencing_token: r.fencing_token,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ManualClock, MemStore};

    /// A renewal whose clock reading went stale (its replica stalled after reading the clock)
    /// must not move an expiry another replica already acknowledged to an earlier instant.
    #[tokio::test]
    async fn a_stale_renewal_never_shortens_an_acknowledged_expiry() {
        let store: DynLeaseStore = Arc::new(MemStore::new());
        let fresh = ManualClock::at_epoch();
        // Replica A read the clock 5 s ago and has not written yet.
        let stale = ManualClock::new(fresh.current() - Duration::from_secs(5));
        let a = LeaseService::new(store.clone(), Arc::new(stale.clone()));
        let b = LeaseService::new(store.clone(), Arc::new(fresh.clone()));
        let key = LeaseKey::new("ns", "a").unwrap();
        let east = Holder::new("east").unwrap();
        let ttl = Duration::from_secs(10);
        let Acquire::Granted { lease, .. } = b.acquire(&key, &east, ttl).await.unwrap() else {
            panic!("a new key is granted");
        };
        let token = lease.record.fencing_token;
        let acknowledged = lease.record.expires_at();

        {
            let Renew::Renewed(late) = a.renew(&key, &east, token, ttl).await.unwrap() else {
                panic!("the holder's live lease is renewed");
            };
            assert!(
                late.record.expires_at() >= acknowledged,
                "expiry moved from {acknowledged} to {}",
                late.record.expires_at()
            );
            let Acquire::Granted { lease: again, .. } = a.acquire(&key, &east, ttl).await.unwrap()
            else {
                panic!("acquire-as-renew for the holder");
            };
            assert!(again.record.expires_at() >= acknowledged);
            let items = [HeartbeatItem {
                key: key.clone(),
                token,
                ttl,
            }];
            let beat = a.heartbeat(&east, &items).await.unwrap();
            let Ok(Renew::Renewed(beat)) = &beat[0] else {
                panic!("heartbeat renews: {beat:?}");
            };
            assert!(beat.record.expires_at() >= acknowledged);
        }

        // One second before the acknowledged expiry another holder is still denied.
        fresh.advance(ttl - Duration::from_secs(1));
        let r = b
            .acquire(&key, &Holder::new("west").unwrap(), ttl)
            .await
            .unwrap();
        assert!(matches!(r, Acquire::Denied(_)), "freed early: {r:?}");
    }

    /// Two replicas whose clocks estimate one source with different lags must never free a
    /// lease before the holder's own deadline (send time + granted TTL).
    #[tokio::test]
    async fn an_uncertain_clock_never_frees_a_lease_early() {
        let store: DynLeaseStore = Arc::new(MemStore::new());
        let truth = ManualClock::at_epoch();
        // Replica A's estimate lags the true time by 700 ms and knows it may.
        let lag = Duration::from_millis(700);
        let a_clock = ManualClock::new(truth.current() - lag).with_uncertainty(lag);
        // Replica B's estimate is exact.
        let b_clock = ManualClock::new(truth.current());
        let a = LeaseService::new(store.clone(), Arc::new(a_clock.clone()));
        let b = LeaseService::new(store, Arc::new(b_clock.clone()));
        let key = LeaseKey::new("ns", "a").unwrap();
        let ttl = Duration::from_secs(10);

        // The client sends at true time T0 and is granted through A.
        let sent_at = truth.current();
        let Acquire::Granted { lease, .. } = a
            .acquire(&key, &Holder::new("east").unwrap(), ttl)
            .await
            .unwrap()
        else {
            panic!("a new key is granted");
        };
        let client_deadline = sent_at + time::Duration::try_from(lease.remaining()).unwrap();

        // Just before the client's deadline (true time), B must still deny another holder.
        let step = ttl - Duration::from_millis(1);
        truth.advance(step);
        a_clock.advance(step);
        b_clock.advance(step);
        assert!(truth.current() < client_deadline);
        let r = b
            .acquire(&key, &Holder::new("west").unwrap(), ttl)
            .await
            .unwrap();
        assert!(
            matches!(r, Acquire::Denied(_)),
            "freed before the holder's deadline: {r:?}"
        );

        // Once the true time passes the deadline, B grants it.
        truth.advance(Duration::from_millis(2));
        b_clock.advance(Duration::from_millis(2));
        let r = b
            .acquire(&key, &Holder::new("west").unwrap(), ttl)
            .await
            .unwrap();
        assert!(
            matches!(
                r,
                Acquire::Granted {
                    grant: Grant::Reclaimed,
                    ..
                }
            ),
            "{r:?}"
        );
    }

    /// A store whose clock is its own: `get_with_clock` reads both and counts the calls.
    #[derive(Debug)]
    struct OwnClockStore {
        inner: MemStore,
        clock: ManualClock,
        fused_reads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl crate::LeaseStore for OwnClockStore {
        fn backend(&self) -> &'static str {
            "own-clock"
        }
        async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, p: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
            self.inner.list(p).await
        }
        async fn put(&self, r: &LeaseRecord, e: Expect) -> Result<Version, StoreError> {
            self.inner.put(r, e).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn clock_source(&self) -> Option<u64> {
            Some(7)
        }
        async fn get_with_clock(
            &self,
            key: &LeaseKey,
        ) -> Result<(Option<Versioned<LeaseRecord>>, OffsetDateTime), StoreError> {
            self.fused_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let now = crate::Clock::now(&self.clock).await?;
            Ok((self.inner.get(key).await?, now))
        }
    }

    /// The same manual clock, claiming to be the clock of store `id`.
    #[derive(Debug)]
    struct StoreClock(ManualClock, Option<u64>);

    #[async_trait::async_trait]
    impl crate::Clock for StoreClock {
        async fn now(&self) -> Result<OffsetDateTime, StoreError> {
            crate::Clock::now(&self.0).await
        }
        fn name(&self) -> &'static str {
            "store"
        }
        fn store_source(&self) -> Option<u64> {
            self.1
        }
    }

    #[tokio::test]
    async fn a_store_that_reads_its_own_clock_is_read_once_per_observation() {
        let clock = ManualClock::new(time::macros::datetime!(2030-01-01 00:00 UTC));
        let store = Arc::new(OwnClockStore {
            inner: MemStore::new(),
            clock: clock.clone(),
            fused_reads: std::sync::atomic::AtomicUsize::new(0),
        });
        let key = LeaseKey::new("ns", "a").unwrap();
        let h = Holder::new("h").unwrap();
        let ttl = Duration::from_secs(10);
        // Another store's clock (or no store's): the clock and the record are read apart.
        for other in [None, Some(8)] {
            let svc = LeaseService::new(store.clone(), Arc::new(StoreClock(clock.clone(), other)));
            svc.get(&key).await.unwrap();
        }
        assert_eq!(
            store.fused_reads.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        // Its own clock: one call reads both, and the rules hold as before.
        let svc = LeaseService::new(store.clone(), Arc::new(StoreClock(clock.clone(), Some(7))));
        let Acquire::Granted { lease, .. } = svc.acquire(&key, &h, ttl).await.unwrap() else {
            panic!("granted");
        };
        assert_eq!(lease.remaining(), ttl);
        clock.advance(Duration::from_secs(4));
        let view = svc.get(&key).await.unwrap().unwrap();
        assert_eq!(view.remaining(), Duration::from_secs(6));
        clock.advance(Duration::from_secs(6));
        assert_eq!(
            svc.get(&key).await.unwrap().unwrap().state(),
            LeaseState::Expired
        );
        assert_eq!(
            store.fused_reads.load(std::sync::atomic::Ordering::SeqCst),
            3
        );
    }
}
