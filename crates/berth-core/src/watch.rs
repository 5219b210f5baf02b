//! [`WatchHub`]: turns a store's records into a stream of lease changes for watchers.
//!
//! One hub per process keeps a snapshot of every record and one background task that keeps
//! it current, from three sources:
//! - the store's [`crate::ChangeFeed`] (this process's writes, or every write for a
//!   single-process store such as `mem`): the written key is re-read at once;
//! - a poll of the whole store every [`WatchConfig::poll_interval`] (other replicas' writes on a
//!   shared store), or every [`WatchConfig::complete_feed_poll`] when the feed is complete;
//! - a timer on the earliest expiry in the snapshot, so an expiry is announced even if nobody
//!   calls the server: every key due by then is re-read, and those still expired are announced.
//!
//! Each change carries a *revision*: the instant of the change on the store's clock in
//! microseconds since the Unix epoch (acquire, renew and release: the write's time; expiry: the
//! expiry instant). Revisions are comparable between replicas of one shared store because every
//! replica judges time by the same clock (ADR 0002/0003). A watcher that resumes from revision
//! `R` is sent the current state of every lease whose last change is at or after
//! `R - resume_slack`; delivery is at least once, and every change names the record version so
//! a client can drop repeats. See `docs/adr/0007-watch-and-history.md`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};

use crate::key::LeaseKey;
use crate::service::{LeaseService, LeaseState, LeaseView};
use crate::store::ListParams;

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Part of a watcher's initial state: the lease as it is now.
    Initial,
    /// A holder was granted the lease (a new grant: new key, reclaim or takeover).
    Acquired,
    /// The holder renewed its grant.
    Renewed,
    /// The holder released the lease.
    Released,
    /// The grant's TTL ran out.
    Expired,
}

impl ChangeKind {
    /// `initial`, `acquired`, `renewed`, `released` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Acquired => "acquired",
            Self::Renewed => "renewed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

/// One change of one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The lease after the change.
    pub view: LeaseView,
    /// The change's revision (see the module documentation).
    pub revision: u64,
}

/// Which changes a watcher wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this name (with `namespace`).
    pub name: Option<String>,
    /// Whether renewals are sent (they are frequent; off by default).
    pub renewals: bool,
}

impl WatchFilter {
    /// Whether `change` passes the filter.
    pub fn admits(&self, change: &Change) -> bool {
        self.admits_key(&change.view.record.key)
            && (self.renewals || change.kind != ChangeKind::Renewed)
    }

    fn admits_key(&self, key: &LeaseKey) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| key.namespace() == ns)
            && self.name.as_deref().is_none_or(|n| key.name() == n)
    }
}

/// Tuning of a [`WatchHub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Poll period of a store whose change feed is partial or absent.
    pub poll_interval: Duration,
    /// Poll period of a store whose change feed is complete (a safety net only).
    pub complete_feed_poll: Duration,
    /// Changes buffered per watcher before it is cut off as too slow.
    pub capacity: usize,
    /// How far before a resume revision changes are sent again.
    pub resume_slack: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            complete_feed_poll: Duration::from_secs(60),
            capacity: 8192,
            resume_slack: Duration::from_secs(2),
        }
    }
}

/// A watcher's start: its initial changes, then the live stream.
#[derive(Debug)]
pub struct Subscription {
    /// Changes to send first: the whole filtered state as [`ChangeKind::Initial`], or, on a
    /// resume, the leases changed since the resume revision.
    pub initial: Vec<Change>,
    /// The revision up to which `initial` is complete.
    pub revision: u64,
    /// Every later change (unfiltered; apply [`WatchFilter::admits`]). A lagged receiver must
    /// end the watch: changes were lost.
    pub changes: broadcast::Receiver<Arc<Change>>,
}

#[derive(Debug, Clone)]
struct Entry {
    view: LeaseView,
    // The state last announced; expiry is announced once.
    announced: LeaseState,
}

#[derive(Debug, Default)]
struct HubState {
    snapshot: BTreeMap<LeaseKey, Entry>,
    synced: u64,
}

/// The per-process source of lease changes. Cheap to share behind an `Arc`; its background task
/// starts with the first subscriber and stops when the hub is dropped.
#[derive(Debug)]
pub struct WatchHub {
    service: LeaseService,
    config: WatchConfig,
    state: Mutex<HubState>,
    tx: broadcast::Sender<Arc<Change>>,
    ready: watch::Sender<Option<Result<(), String>>>,
    started: std::sync::Once,
    closing: watch::Sender<bool>,
}

/// The revision of an instant: microseconds since the Unix epoch, 0 before it.
pub fn revision_of(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(0)
}

fn change_time(view: &LeaseView, kind: ChangeKind) -> OffsetDateTime {
    let r = &view.record;
    match kind {
        ChangeKind::Acquired => r.acquired_at,
        ChangeKind::Expired => r.expires_at(),
        ChangeKind::Renewed | ChangeKind::Released => r.renewed_at,
        ChangeKind::Initial => last_change(view).1,
    }
}

/// The last change a record shows, and its instant.
fn last_change(view: &LeaseView) -> (ChangeKind, OffsetDateTime) {
    let r = &view.record;
    match view.state() {
        LeaseState::Released => (ChangeKind::Released, r.renewed_at),
        LeaseState::Expired => (ChangeKind::Expired, r.expires_at()),
        LeaseState::Held if r.renewed_at > r.acquired_at => (ChangeKind::Renewed, r.renewed_at),
        LeaseState::Held => (ChangeKind::Acquired, r.acquired_at),
    }
}

/// What changed between the announced entry and a fresh view, if anything worth announcing.
fn classify(prev: Option<&Entry>, view: &LeaseView) -> Option<ChangeKind> {
    let state = view.state();
    let Some(p) = prev else {
        return Some(match state {
            LeaseState::Held => ChangeKind::Acquired,
            LeaseState::Released => ChangeKind::Released,
            LeaseState::Expired => ChangeKind::Expired,
        });
    };
    let same_grant = p.view.record.fencing_token == view.record.fencing_token
        && p.view.record.holder == view.record.holder;
    if p.view.version == view.version && p.announced == state {
        return None;
    }
    match state {
        LeaseState::Held if p.announced == LeaseState::Held && same_grant => {
            (p.view.version != view.version).then_some(ChangeKind::Renewed)
        }
        LeaseState::Held => Some(ChangeKind::Acquired),
        LeaseState::Released => (p.announced != LeaseState::Released
            || p.view.record.fencing_token != view.record.fencing_token)
            .then_some(ChangeKind::Released),
        LeaseState::Expired => {
            (p.announced != LeaseState::Expired || !same_grant).then_some(ChangeKind::Expired)
        }
    }
}

impl WatchHub {
    /// A hub over `service`'s store and clock.
    pub fn new(service: LeaseService, config: WatchConfig) -> Arc<Self> {
        Arc::new(Self {
            service,
            config,
            state: Mutex::default(),
            tx: broadcast::channel(config.capacity.max(16)).0,
            ready: watch::channel(None).0,
            started: std::sync::Once::new(),
            closing: watch::channel(false).0,
        })
    }

    /// Tells every watch stream to end (the server is shutting down), so open streams do not
    /// hold a graceful shutdown until its timeout. Clients resume from their last revision.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once [`WatchHub::close`] has been called.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        // The sender lives as long as the hub, so this only ends when closed.
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// The hub's tuning.
    pub fn config(&self) -> WatchConfig {
        self.config
    }

    /// Number of live subscribers.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The revision up to which the hub has seen every change.
    pub fn synced_revision(&self) -> u64 {
        self.lock().synced
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes: waits for the hub's first full read of the store, then returns the initial
    /// changes and the live stream, with nothing lost or repeated between the two.
    ///
    /// `since`: a resume revision; `None` sends the whole current state as `Initial`.
    ///
    /// # Errors
    /// The store could not be read for the hub's first snapshot.
    pub async fn subscribe(
        self: &Arc<Self>,
        filter: &WatchFilter,
        since: Option<u64>,
    ) -> Result<Subscription, crate::LeaseError> {
        self.start();
        let mut ready = self.ready.subscribe();
        loop {
            if let Some(r) = ready.borrow_and_update().clone() {
                match r {
                    Ok(()) => break,
                    Err(e) => {
                        // Let the next subscriber try again.
                        self.ready.send_replace(None);
                        return Err(crate::LeaseError::Store(crate::StoreError::Unavailable {
                            backend: self.service.store().backend(),
                            source: e.into(),
                        }));
                    }
                }
            }
            if ready.changed().await.is_err() {
                break;
            }
        }
        // Initial views are judged now, not when their record was last read.
        let now = self.now().await?;
        let state = self.lock();
        // Subscribe under the lock: the task announces under it too, so every change is either
        // in the snapshot read below or in the stream, never both or neither.
        let changes = self.tx.subscribe();
        let slack = u64::try_from(self.config.resume_slack.as_micros()).unwrap_or(u64::MAX);
        let from = since.map(|s| s.saturating_sub(slack));
        let mut initial = Vec::new();
        for (key, entry) in &state.snapshot {
            if !filter.admits_key(key) {
                continue;
            }
            let (kind, at) = last_change(&entry.view);
            let revision = revision_of(at);
            let kind = match from {
                None => ChangeKind::Initial,
                Some(from) if revision < from => continue,
                Some(_) => {
                    if kind == ChangeKind::Renewed
                        && !filter.renewals
                        && revision_of(entry.view.record.acquired_at) >= from.unwrap_or(0)
                    {
                        ChangeKind::Acquired
                    } else if kind == ChangeKind::Renewed && !filter.renewals {
                        continue;
                    } else {
                        kind
                    }
                }
            };
            let mut view = entry.view.clone();
            view.now = view.now.max(now);
            initial.push(Change {
                kind,
                view,
                revision,
            });
        }
        let revision = state.synced;
        drop(state);
        Ok(Subscription {
            initial,
            revision,
            changes,
        })
    }

    fn start(self: &Arc<Self>) {
        self.started.call_once(|| {
            let weak = Arc::downgrade(self);
            let feed = self.service.store().change_feed();
            tokio::spawn(run(weak, feed));
        });
    }

    /// The instant records are judged at: the earliest the clock may be, as the service judges
    /// expiry, so an `expired` event never precedes the moment an acquire would succeed.
    async fn now(&self) -> Result<OffsetDateTime, crate::LeaseError> {
        Ok(self.service.clock().read().await?.earliest)
    }

    /// Re-reads the whole store and announces every difference.
    async fn refresh_all(&self) -> Result<(), crate::LeaseError> {
        let now = self.now().await?;
        let records = self.service.store().list(&ListParams::default()).await?;
        let mut state = self.lock();
        let mut seen = std::collections::HashSet::with_capacity(records.len());
        for v in records {
            let view = LeaseView {
                record: v.value,
                version: v.version,
                now,
            };
            seen.insert(view.record.key.clone());
            self.apply(&mut state, view);
        }
        // Records are never deleted; one that vanished was removed out of band.
        state.snapshot.retain(|k, _| seen.contains(k));
        state.synced = state.synced.max(revision_of(now));
        Ok(())
    }

    /// Re-reads some keys and announces their differences.
    async fn refresh_keys(
        &self,
        keys: &[LeaseKey],
        complete: bool,
    ) -> Result<(), crate::LeaseError> {
        let now = self.now().await?;
        let records = self.service.store().get_many(keys).await?;
        let mut state = self.lock();
        for v in records.into_iter().flatten() {
            let view = LeaseView {
                record: v.value,
                version: v.version,
                now,
            };
            self.apply(&mut state, view);
        }
        if complete {
            state.synced = state.synced.max(revision_of(now));
        }
        Ok(())
    }

    fn apply(&self, state: &mut HubState, view: LeaseView) {
        let key = view.record.key.clone();
        let prev = state.snapshot.get(&key);
        let kind = classify(prev, &view);
        let announced = view.state();
        if let Some(kind) = kind {
            let revision = revision_of(change_time(&view, kind));
            // No receiver is not an error.
            let _ = self.tx.send(Arc::new(Change {
                kind,
                view: view.clone(),
                revision,
            }));
        }
        state.snapshot.insert(key, Entry { view, announced });
    }

    /// Keys announced as held whose grant has ended by `now`.
    fn due(&self, now: OffsetDateTime) -> Vec<LeaseKey> {
        self.lock()
            .snapshot
            .iter()
            .filter(|(_, e)| e.announced == LeaseState::Held && e.view.record.expires_at() <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How long until the earliest grant announced as held ends.
    fn next_expiry(&self, now: OffsetDateTime) -> Option<Duration> {
        let state = self.lock();
        let at = state
            .snapshot
            .values()
            .filter(|e| e.announced == LeaseState::Held)
            .map(|e| e.view.record.expires_at())
            .min()?;
        Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
    }
}

async fn run(hub: Weak<WatchHub>, feed: Option<crate::ChangeFeed>) {
    let complete = feed.as_ref().is_some_and(|f| f.complete);
    let mut keys_rx = feed.map(|f| f.keys);
    // First snapshot, retried until it works or the hub is gone.
    loop {
        let Some(h) = hub.upgrade() else { return };
        match h.refresh_all().await {
            Ok(()) => {
                h.ready.send_replace(Some(Ok(())));
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch: could not read the store");
                h.ready.send_replace(Some(Err(e.to_string())));
            }
        }
        let poll = h.config.poll_interval;
        drop(h);
        tokio::time::sleep(poll).await;
    }
    let mut last_poll = tokio::time::Instant::now();
    loop {
        let Some(h) = hub.upgrade() else { return };
        let poll = if complete {
            h.config.complete_feed_poll
        } else {
            h.config.poll_interval
        };
        let expiry = match h.now().await {
            Ok(now) => h.next_expiry(now),
            Err(_) => None,
        };
        drop(h);
        let poll_at = last_poll + poll;
        // A little after the expiry instant, so the re-read judges it expired.
        let expiry_at =
            expiry.map(|wait| tokio::time::Instant::now() + wait + Duration::from_millis(2));
        enum Wake {
            Key(LeaseKey),
            Lagged,
            FeedClosed,
            Poll,
            Expiry,
        }
        let wake = tokio::select! {
            k = async {
                match keys_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match k {
                Ok(k) => Wake::Key(k),
                Err(broadcast::error::RecvError::Lagged(_)) => Wake::Lagged,
                Err(broadcast::error::RecvError::Closed) => Wake::FeedClosed,
            },
            () = tokio::time::sleep_until(poll_at) => Wake::Poll,
            () = async {
                match expiry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Wake::Expiry,
        };
        let Some(h) = hub.upgrade() else { return };
        let result = match wake {
            Wake::Key(first) => {
                // Drain what is already queued into one bulk read.
                let mut keys = vec![first];
                if let Some(rx) = keys_rx.as_mut() {
                    while keys.len() < 1024 {
                        match rx.try_recv() {
                            Ok(k) => keys.push(k),
                            Err(_) => break,
                        }
                    }
                }
                keys.sort();
                keys.dedup();
                h.refresh_keys(&keys, complete).await
            }
            Wake::Expiry => {
                // Every grant due by now, not only the one the timer was set for: grants that
                // end within a few milliseconds of each other are re-read together.
                match h.now().await {
                    Ok(now) => {
                        let due = h.due(now);
                        h.refresh_keys(&due, complete).await
                    }
                    Err(e) => Err(e),
                }
            }
            Wake::FeedClosed => {
                keys_rx = None;
                last_poll = tokio::time::Instant::now();
                h.refresh_all().await
            }
            Wake::Lagged | Wake::Poll => {
                last_poll = tokio::time::Instant::now();
                h.refresh_all().await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "watch: could not read the store");
            let wait = h.config.poll_interval;
            drop(h);
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Holder, ManualClock, MemStore};

    fn key(n: &str) -> LeaseKey {
        LeaseKey::new("ns", n).unwrap()
    }

    async fn next(sub: &mut Subscription, filter: &WatchFilter) -> Arc<Change> {
        loop {
            let c = tokio::time::timeout(Duration::from_secs(5), sub.changes.recv())
                .await
                .expect("a change within 5 s")
                .expect("stream open");
            if filter.admits(&c) {
                return c;
            }
        }
    }

    #[tokio::test]
    async fn mem_changes_are_announced_in_order_with_expiry() {
        let clock = ManualClock::at_epoch();
        let service = LeaseService::new(Arc::new(MemStore::new()), Arc::new(clock.clone()));
        let h = Holder::new("a").unwrap();
        let other = Holder::new("b").unwrap();
        service
            .acquire(&key("pre"), &h, Duration::from_secs(30))
            .await
            .unwrap();
        let hub = WatchHub::new(service.clone(), WatchConfig::default());
        let filter = WatchFilter {
            namespace: Some("ns".into()),
            name: None,
            renewals: true,
        };
        let mut sub = hub.subscribe(&filter, None).await.unwrap();
        assert_eq!(sub.initial.len(), 1);
        assert_eq!(sub.initial[0].kind, ChangeKind::Initial);

        let crate::Acquire::Granted { lease, .. } = service
            .acquire(&key("x"), &h, Duration::from_secs(5))
            .await
            .unwrap()
        else {
            panic!("granted")
        };
        let c = next(&mut sub, &filter).await;
        assert_eq!(
            (c.kind, c.view.record.key.name()),
            (ChangeKind::Acquired, "x")
        );
        clock.advance(Duration::from_secs(1));
        service
            .renew(
                &key("x"),
                &h,
                lease.record.fencing_token,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(next(&mut sub, &filter).await.kind, ChangeKind::Renewed);
        service
            .release(&key("x"), &h, lease.record.fencing_token.get())
            .await
            .unwrap();
        let c = next(&mut sub, &filter).await;
        assert_eq!(c.kind, ChangeKind::Released);
        assert!(c.view.record.is_tombstone());
        service
            .acquire(&key("x"), &other, Duration::from_secs(5))
            .await
            .unwrap();
        let c = next(&mut sub, &filter).await;
        assert_eq!(c.kind, ChangeKind::Acquired);
        assert_eq!(c.view.record.fencing_token.get(), 2);

        // Nobody touches "pre" or "x": the expiry timer announces them. The timer sleeps in
        // real time for what the clock said was left, so after jumping the manual clock a
        // write elsewhere wakes the task to look at the clock again.
        clock.advance(Duration::from_secs(40));
        let elsewhere = LeaseKey::new("other", "wake").unwrap();
        service
            .acquire(&elsewhere, &h, Duration::from_secs(600))
            .await
            .unwrap();
        let mut expired = Vec::new();
        while expired.len() < 2 {
            let c = next(&mut sub, &filter).await;
            assert_eq!(c.kind, ChangeKind::Expired, "{c:?}");
            expired.push(c.view.record.key.name().to_owned());
        }
        expired.sort();
        assert_eq!(expired, ["pre", "x"]);
    }

    #[tokio::test]
    async fn resume_sends_only_later_changes() {
        let clock = ManualClock::at_epoch();
        let service = LeaseService::new(Arc::new(MemStore::new()), Arc::new(clock.clone()));
        let h = Holder::new("a").unwrap();
        service
            .acquire(&key("old"), &h, Duration::from_secs(600))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(10));
        let hub = WatchHub::new(
            service.clone(),
            WatchConfig {
                resume_slack: Duration::ZERO,
                ..WatchConfig::default()
            },
        );
        let filter = WatchFilter::default();
        let first = hub.subscribe(&filter, None).await.unwrap();
        let rev = first.revision;
        drop(first);
        clock.advance(Duration::from_secs(1));
        service
            .acquire(&key("new"), &h, Duration::from_secs(600))
            .await
            .unwrap();
        // Wait until the hub has applied the write.
        for _ in 0..200 {
            if hub.synced_revision() > rev {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resumed = hub.subscribe(&filter, Some(rev)).await.unwrap();
        let names: Vec<_> = resumed
            .initial
            .iter()
            .map(|c| (c.kind, c.view.record.key.name().to_owned()))
            .collect();
        assert_eq!(names, [(ChangeKind::Acquired, "new".to_owned())]);
    }
}
