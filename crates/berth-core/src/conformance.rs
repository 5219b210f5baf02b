//! The store conformance suite: checks every [`LeaseStore`] must pass.
//!
//! Store crates call [`run_all`] (or the single checks) from their tests with a fresh store.
//! Every check uses its own randomly named namespace, so several checks (and several test
//! processes) may share one database. Checks panic with a message on failure.
//!
//! Two groups:
//! - register checks drive [`LeaseStore`] directly: create-if-absent, conditional replace,
//!   concurrent writers, version monotonicity, tombstones, listing;
//! - rule checks drive [`LeaseService`] over the store with a [`ManualClock`], including the
//!   adversarial interleavings of reference §2.9 (a competing write injected between a
//!   service's read and its write through [`Interleave`]).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;

use crate::clock::ManualClock;
use crate::key::{Holder, LeaseKey};
use crate::service::{Acquire, Grant, LeaseError, LeaseService, LeaseState, Release, Renew};
use crate::store::{
    DynLeaseStore, Expect, FencingToken, LeaseRecord, LeaseStore, ListParams, StoreError, Version,
    Versioned,
};

/// Runs every check against `store`.
pub async fn run_all(store: DynLeaseStore) {
    run_register_checks(store.clone()).await;
    run_rule_checks(store).await;
}

/// Runs the register-level checks.
pub async fn run_register_checks(store: DynLeaseStore) {
    create_if_absent(&store).await;
    conditional_replace(&store).await;
    concurrent_creates_have_one_winner(&store).await;
    concurrent_replaces_have_one_winner(&store).await;
    versions_are_never_reused(&store).await;
    tombstones_round_trip(&store).await;
    list_orders_filters_and_pages(&store).await;
    wide_values_round_trip(&store).await;
    get_many_and_put_batch(&store).await;
    store
        .ping()
        .await
        .expect("ping must succeed on a healthy store");
}

/// Runs the lease-rule checks through [`LeaseService`].
pub async fn run_rule_checks(store: DynLeaseStore) {
    acquire_renew_release_cycle(&store).await;
    denied_acquire_reports_the_holder(&store).await;
    renew_never_resurrects(&store).await;
    release_rules(&store).await;
    tokens_never_repeat(&store).await;
    concurrent_acquirers_have_one_winner(&store).await;
    stale_renew_racing_a_reclaim_loses(&store).await;
    two_acquirers_racing_on_a_new_key(&store).await;
    release_racing_a_reclaim_keeps_the_new_holder(&store).await;
    sweep_tombstones_only_long_expired(&store).await;
    heartbeat_renews_per_item(&store).await;
    history_records_how_grants_ended(&store).await;
    watch_sees_every_transition(&store).await;
}

/// A fresh, random namespace for one check.
pub fn unique_namespace(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}-{n:016x}")
}

fn key(ns: &str, name: &str) -> LeaseKey {
    LeaseKey::new(ns, name).expect("test keys are valid")
}

fn holder(h: &str) -> Holder {
    Holder::new(h).expect("test holders are valid")
}

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2030-01-01 00:00:00.123456 UTC)
}

/// A live record for tests.
pub fn mk_record(key: &LeaseKey, holder_id: &str, token: i64, ttl: Duration) -> LeaseRecord {
    LeaseRecord {
        key: key.clone(),
        holder: Some(holder(holder_id)),
        ttl,
        acquired_at: t0(),
        renewed_at: t0() + time::Duration::milliseconds(1500),
        fencing_token: FencingToken::new(token).expect("positive token"),
    }
}

fn assert_conflict<T: fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

async fn must_get(store: &DynLeaseStore, k: &LeaseKey) -> Versioned<LeaseRecord> {
    store
        .get(k)
        .await
        .expect("get must succeed")
        .unwrap_or_else(|| panic!("record {k} must exist"))
}

async fn create_if_absent(store: &DynLeaseStore) {
    let ns = unique_namespace("cia");
    let k = key(&ns, "a");
    assert_eq!(
        store.get(&k).await.expect("get"),
        None,
        "a new key is absent"
    );
    let rec = mk_record(&k, "east", 1, Duration::from_millis(30_000));
    let v = store.put(&rec, Expect::Absent).await.expect("create");
    assert_eq!(
        v,
        Version::INITIAL,
        "a created record has the initial version"
    );
    let got = must_get(store, &k).await;
    assert_eq!(got.value, rec, "the stored record reads back unchanged");
    assert_eq!(got.version, v);
    assert_conflict(store.put(&rec, Expect::Absent).await, "second create");
    let other = key(&ns, "never-created");
    assert_conflict(
        store
            .put(
                &mk_record(&other, "east", 1, Duration::from_secs(1)),
                Expect::Version(v),
            )
            .await,
        "replace of an absent key",
    );
    assert_eq!(
        store.get(&other).await.expect("get"),
        None,
        "a failed replace creates nothing"
    );
}

async fn conditional_replace(store: &DynLeaseStore) {
    let ns = unique_namespace("cr");
    let k = key(&ns, "a");
    let v1 = store
        .put(
            &mk_record(&k, "east", 1, Duration::from_secs(30)),
            Expect::Absent,
        )
        .await
        .expect("create");
    let rec2 = mk_record(&k, "west", 2, Duration::from_millis(10_500));
    let v2 = store
        .put(&rec2, Expect::Version(v1))
        .await
        .expect("replace at the read version");
    assert!(v2 > v1, "a write moves the version up");
    assert_eq!(v2, v1.next(), "a write stores expected + 1");
    assert_conflict(
        store
            .put(
                &mk_record(&k, "north", 3, Duration::from_secs(30)),
                Expect::Version(v1),
            )
            .await,
        "replace at a stale version",
    );
    let got = must_get(store, &k).await;
    assert_eq!(got.value, rec2, "a stale write changes nothing");
    assert_eq!(got.version, v2);
}

async fn concurrent_creates_have_one_winner(store: &DynLeaseStore) {
    let ns = unique_namespace("cc");
    let k = key(&ns, "a");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let rec = mk_record(&k, &format!("h{i}"), 1, Duration::from_secs(30));
        tasks.push(tokio::spawn(async move {
            (i, store.put(&rec, Expect::Absent).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.expect("task");
        match r {
            Ok(_) => winners.push(i),
            Err(e) => assert!(e.is_conflict(), "losers see a conflict, got {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent create wins: {winners:?}"
    );
    let got = must_get(store, &k).await;
    assert_eq!(got.value.holder, Some(holder(&format!("h{}", winners[0]))));
}

async fn concurrent_replaces_have_one_winner(store: &DynLeaseStore) {
    let ns = unique_namespace("cru");
    let k = key(&ns, "a");
    let v1 = store
        .put(
            &mk_record(&k, "east", 1, Duration::from_secs(30)),
            Expect::Absent,
        )
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let rec = mk_record(&k, &format!("h{i}"), 2, Duration::from_secs(30));
        tasks.push(tokio::spawn(async move {
            (i, store.put(&rec, Expect::Version(v1)).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.expect("task");
        match r {
            Ok(_) => winners.push(i),
            Err(e) => assert!(e.is_conflict(), "losers see a conflict, got {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one replace at one version wins: {winners:?}"
    );
    let got = must_get(store, &k).await;
    assert_eq!(got.value.holder, Some(holder(&format!("h{}", winners[0]))));
}

async fn versions_are_never_reused(store: &DynLeaseStore) {
    let ns = unique_namespace("vr");
    let k = key(&ns, "a");
    let mut seen = HashSet::new();
    let mut v = store
        .put(
            &mk_record(&k, "east", 1, Duration::from_secs(30)),
            Expect::Absent,
        )
        .await
        .expect("create");
    seen.insert(v);
    for i in 0..20 {
        let rec = if i % 3 == 0 {
            LeaseRecord {
                holder: None,
                ttl: Duration::ZERO,
                ..mk_record(&k, "east", 1, Duration::ZERO)
            }
        } else {
            mk_record(&k, "east", 1, Duration::from_secs(30))
        };
        let next = store.put(&rec, Expect::Version(v)).await.expect("replace");
        assert!(next > v, "versions strictly increase: {v} then {next}");
        assert!(seen.insert(next), "version {next} was reused");
        v = next;
    }
}

async fn tombstones_round_trip(store: &DynLeaseStore) {
    let ns = unique_namespace("tomb");
    let k = key(&ns, "a");
    let v1 = store
        .put(
            &mk_record(&k, "east", 41, Duration::from_secs(30)),
            Expect::Absent,
        )
        .await
        .expect("create");
    let tomb = LeaseRecord {
        holder: None,
        ttl: Duration::ZERO,
        ..mk_record(&k, "east", 41, Duration::ZERO)
    };
    let v2 = store
        .put(&tomb, Expect::Version(v1))
        .await
        .expect("tombstone");
    let got = must_get(store, &k).await;
    assert_eq!(got.value, tomb, "a tombstone keeps its token and times");
    assert!(got.value.is_tombstone());
    let listed = store
        .list(&ListParams {
            namespace: Some(ns.clone()),
            ..ListParams::default()
        })
        .await
        .expect("list");
    assert_eq!(
        listed,
        vec![Versioned {
            value: tomb,
            version: v2
        }],
        "tombstones appear in list"
    );
}

async fn list_orders_filters_and_pages(store: &DynLeaseStore) {
    let ns_a = unique_namespace("la");
    let ns_b = format!("{ns_a}-b");
    // Inserted out of order; names chosen so byte order differs from some collations.
    let names = ["b", "a-z", "a.b", "a", "z", "b0"];
    for ns in [&ns_a, &ns_b] {
        for n in names {
            store
                .put(
                    &mk_record(&key(ns, n), "east", 1, Duration::from_secs(30)),
                    Expect::Absent,
                )
                .await
                .expect("create");
        }
    }
    let mut expected: Vec<String> = names.iter().map(ToString::to_string).collect();
    expected.sort();
    let all = store
        .list(&ListParams {
            namespace: Some(ns_a.clone()),
            ..ListParams::default()
        })
        .await
        .expect("list");
    let got: Vec<String> = all.iter().map(|v| v.value.key.name().to_string()).collect();
    assert_eq!(
        got, expected,
        "list is ordered by name byte-wise within a namespace"
    );
    assert!(
        all.iter().all(|v| v.value.key.namespace() == ns_a),
        "namespace filter holds"
    );

    // Pages of two, resumed with `after`.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListParams {
                namespace: Some(ns_a.clone()),
                after: after.clone(),
                limit: Some(2),
            })
            .await
            .expect("list page");
        assert!(page.len() <= 2, "limit holds");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|v| v.value.key.clone());
        paged.extend(page.into_iter().map(|v| v.value.key.name().to_string()));
    }
    assert_eq!(paged, expected, "pages add up to the whole list");

    // Across namespaces: ordered by namespace first.
    let both = store.list(&ListParams::default()).await.expect("list all");
    let ours: Vec<(String, String)> = both
        .iter()
        .filter(|v| v.value.key.namespace().starts_with(&ns_a))
        .map(|v| {
            (
                v.value.key.namespace().to_string(),
                v.value.key.name().to_string(),
            )
        })
        .collect();
    let mut sorted = ours.clone();
    sorted.sort();
    assert_eq!(ours.len(), 2 * names.len());
    assert_eq!(
        ours, sorted,
        "list across namespaces is ordered by namespace then name"
    );
    let after_a = store
        .list(&ListParams {
            after: Some(key(&ns_a, "z")),
            limit: Some(1),
            ..ListParams::default()
        })
        .await
        .expect("list after");
    assert_eq!(after_a.len(), 1);
    assert_eq!(
        after_a[0].value.key,
        key(&ns_b, "a"),
        "after moves into the next namespace"
    );
}

async fn wide_values_round_trip(store: &DynLeaseStore) {
    let ns = unique_namespace("wide");
    let name = format!("{}.{}", "n".repeat(63), "m".repeat(60));
    let k = key(&ns, &name);
    let long_holder = format!("tenant/{}", "h".repeat(246));
    let rec = LeaseRecord {
        key: k.clone(),
        holder: Some(holder(&long_holder)),
        ttl: Duration::from_millis(3_600_000),
        acquired_at: t0(),
        renewed_at: t0() + time::Duration::microseconds(999_999),
        // Tokens are 64-bit: past the original's int32 ceiling.
        fencing_token: FencingToken::new(i64::from(i32::MAX) + 5).expect("positive"),
    };
    store
        .put(&rec, Expect::Absent)
        .await
        .expect("create wide record");
    assert_eq!(
        must_get(store, &k).await.value,
        rec,
        "long names, long holders, 64-bit tokens and microseconds round-trip"
    );
}

fn service(store: &DynLeaseStore) -> (LeaseService, ManualClock) {
    let clock = ManualClock::new(t0());
    (
        LeaseService::new(store.clone(), Arc::new(clock.clone())),
        clock,
    )
}

const TTL: Duration = Duration::from_secs(10);

fn granted(r: Result<Acquire, LeaseError>, what: &str) -> (crate::LeaseView, Grant) {
    match r {
        Ok(Acquire::Granted { lease, grant }) => (lease, grant),
        other => panic!("{what}: expected a grant, got {other:?}"),
    }
}

fn denied(r: Result<Acquire, LeaseError>, what: &str) -> crate::LeaseView {
    match r {
        Ok(Acquire::Denied(view)) => view,
        other => panic!("{what}: expected a denial, got {other:?}"),
    }
}

async fn acquire_renew_release_cycle(store: &DynLeaseStore) {
    let (svc, clock) = service(store);
    let k = key(&unique_namespace("cycle"), "a");
    let east = holder("east");
    let (l1, g) = granted(svc.acquire(&k, &east, TTL).await, "first acquire");
    assert_eq!(g, Grant::Created);
    assert_eq!(
        l1.record.fencing_token.get(),
        1,
        "a new key starts at token 1"
    );
    assert_eq!(l1.remaining(), TTL);

    clock.advance(Duration::from_secs(4));
    let (l2, g) = granted(
        svc.acquire(&k, &east, Duration::from_secs(20)).await,
        "acquire as renew",
    );
    assert_eq!(g, Grant::Renewed, "the same live holder renews in place");
    assert_eq!(
        l2.record.fencing_token, l1.record.fencing_token,
        "renewal keeps the token"
    );
    assert_eq!(
        l2.record.acquired_at, l1.record.acquired_at,
        "renewal keeps acquiredAt"
    );
    assert_eq!(
        l2.record.expires_at(),
        clock.current() + time::Duration::seconds(20)
    );

    clock.advance(Duration::from_secs(15));
    let Ok(Renew::Renewed(l3)) = svc.renew(&k, &east, l1.record.fencing_token, TTL).await else {
        panic!("the live holder renews with its token");
    };
    assert_eq!(l3.record.renewed_at, clock.current());
    assert_eq!(l3.remaining(), TTL);

    let Ok(Release::Released(_)) = svc.release(&k, &east, 1).await else {
        panic!("the holder releases");
    };
    let view = svc.get(&k).await.expect("get").expect("tombstone stays");
    assert_eq!(view.state(), LeaseState::Released);
    assert_eq!(
        view.record.fencing_token.get(),
        1,
        "the tombstone keeps the token"
    );
    assert!(
        matches!(svc.release(&k, &east, 1).await, Ok(Release::NotHeld)),
        "release is idempotent"
    );

    let (l4, g) = granted(
        svc.acquire(&k, &holder("west"), TTL).await,
        "reacquire after release",
    );
    assert_eq!(g, Grant::Reclaimed);
    assert_eq!(
        l4.record.fencing_token.get(),
        2,
        "a released lease is reclaimed at token + 1"
    );
    assert_eq!(l4.transitions(), 1);
}

async fn denied_acquire_reports_the_holder(store: &DynLeaseStore) {
    let (svc, clock) = service(store);
    let k = key(&unique_namespace("deny"), "a");
    let (l1, _) = granted(svc.acquire(&k, &holder("east"), TTL).await, "east acquires");
    clock.advance(Duration::from_secs(3));
    let v = denied(
        svc.acquire(&k, &holder("west"), TTL).await,
        "west is denied",
    );
    assert_eq!(v.live_holder(), Some(&holder("east")));
    assert_eq!(v.record.fencing_token, l1.record.fencing_token);
    assert_eq!(v.record.expires_at(), l1.record.expires_at());
    assert_eq!(v.remaining(), Duration::from_secs(7));
    let after = svc.get(&k).await.expect("get").expect("exists");
    assert_eq!(after.version, l1.version, "a denied acquire writes nothing");
}

async fn renew_never_resurrects(store: &DynLeaseStore) {
    let (svc, clock) = service(store);
    let k = key(&unique_namespace("resur"), "a");
    let east = holder("east");
    assert!(
        matches!(
            svc.renew(&k, &east, FencingToken::FIRST, TTL).await,
            Ok(Renew::Lost(None))
        ),
        "renew of an absent key is lost"
    );
    let (l1, _) = granted(svc.acquire(&k, &east, TTL).await, "acquire");
    let tok = l1.record.fencing_token;
    let wrong = tok.next().expect("next");
    assert!(
        matches!(
            svc.renew(&k, &east, wrong, TTL).await,
            Ok(Renew::Lost(Some(_)))
        ),
        "a wrong token loses"
    );
    assert!(
        matches!(
            svc.renew(&k, &holder("west"), tok, TTL).await,
            Ok(Renew::Lost(Some(_)))
        ),
        "another holder loses"
    );
    clock.advance(TTL);
    let Ok(Renew::Lost(Some(v))) = svc.renew(&k, &east, tok, TTL).await else {
        panic!("renew exactly at expiry is lost");
    };
    assert_eq!(v.state(), LeaseState::Expired);
    let after = svc.get(&k).await.expect("get").expect("exists");
    assert_eq!(after.version, l1.version, "a lost renew writes nothing");
    assert_eq!(
        after.state(),
        LeaseState::Expired,
        "an expired lease is never resurrected"
    );
    // Acquire after expiry moves the token even for the same holder: a new epoch.
    let (l2, g) = granted(svc.acquire(&k, &east, TTL).await, "reacquire after expiry");
    assert_eq!(g, Grant::Reclaimed);
    assert_eq!(l2.record.fencing_token.get(), tok.get() + 1);
    assert!(
        matches!(
            svc.renew(&k, &east, tok, TTL).await,
            Ok(Renew::Lost(Some(_)))
        ),
        "the old epoch's token is dead"
    );
}

async fn release_rules(store: &DynLeaseStore) {
    let (svc, clock) = service(store);
    let ns = unique_namespace("rel");
    let k = key(&ns, "a");
    let east = holder("east");
    let west = holder("west");
    assert!(
        matches!(svc.release(&k, &east, 0).await, Ok(Release::NotHeld)),
        "release of an absent key succeeds"
    );
    assert_eq!(
        store.get(&k).await.expect("get"),
        None,
        "and writes nothing"
    );
    let (l1, _) = granted(svc.acquire(&k, &east, TTL).await, "acquire");
    assert!(
        matches!(svc.release(&k, &west, 1).await, Err(LeaseError::NotHolder)),
        "someone else's live lease: 409"
    );
    assert!(
        matches!(svc.release(&k, &east, 2).await, Err(LeaseError::NotHolder)),
        "wrong token on a live lease: 409"
    );
    clock.advance(TTL + Duration::from_secs(1));
    assert!(
        matches!(svc.release(&k, &west, 1).await, Ok(Release::NotHeld)),
        "another holder's expired lease is not held"
    );
    let Ok(Release::Released(v)) = svc.release(&k, &east, 1).await else {
        panic!("the holder may release its own expired, unreclaimed grant");
    };
    assert!(v.record.is_tombstone());
    assert_eq!(v.record.acquired_at, l1.record.acquired_at);
}

async fn tokens_never_repeat(store: &DynLeaseStore) {
    let (svc, clock) = service(store);
    let k = key(&unique_namespace("tok"), "a");
    let mut last = 0;
    for round in 0..6 {
        let h = holder(if round % 2 == 0 { "east" } else { "west" });
        let (l, _) = granted(svc.acquire(&k, &h, TTL).await, "acquire");
        let tok = l.record.fencing_token.get();
        assert!(
            tok > last,
            "token {tok} after {last}: tokens strictly increase"
        );
        last = tok;
        if round % 3 == 0 {
            clock.advance(TTL);
        } else {
            assert!(matches!(
                svc.release(&k, &h, tok).await,
                Ok(Release::Released(_))
            ));
        }
    }
    assert_eq!(last, 6);
}

async fn concurrent_acquirers_have_one_winner(store: &DynLeaseStore) {
    let (svc, _clock) = service(store);
    let k = key(&unique_namespace("race"), "a");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let svc = svc.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            svc.acquire(&k, &holder(&format!("h{i}")), TTL).await
        }));
    }
    let mut winners = Vec::new();
    let mut told = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(Acquire::Granted { lease, .. }) => {
                winners.push(lease.record.holder.expect("holder"))
            }
            Ok(Acquire::Denied(v)) => {
                told.push(v.live_holder().cloned().expect("denials name the holder"))
            }
            Err(LeaseError::TooManyConflicts { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 8 racing acquirers wins");
    assert!(
        told.iter().all(|h| *h == winners[0]),
        "every loser is told the real winner"
    );
    let v = svc.get(&k).await.expect("get").expect("exists");
    assert_eq!(v.record.fencing_token.get(), 1);
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A store decorator that runs a hook once, just before the next `put` reaches the inner store.
/// It injects a competing operation between a service's read and its write.
pub struct Interleave {
    inner: DynLeaseStore,
    hook: Mutex<Option<Hook>>,
}

impl fmt::Debug for Interleave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interleave")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Interleave {
    /// Wraps `inner`.
    pub fn new(inner: DynLeaseStore) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hook: Mutex::new(None),
        })
    }

    /// Arms the hook for the next `put`.
    pub fn before_next_put(&self, hook: impl Future<Output = ()> + Send + 'static) {
        *self
            .hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::pin(hook));
    }
}

#[async_trait::async_trait]
impl LeaseStore for Interleave {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        self.inner.list(params).await
    }
    async fn put(&self, record: &LeaseRecord, expect: Expect) -> Result<Version, StoreError> {
        let hook = self
            .hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook.await;
        }
        self.inner.put(record, expect).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

async fn stale_renew_racing_a_reclaim_loses(store: &DynLeaseStore) {
    let (plain, clock) = service(store);
    let racing = Interleave::new(store.clone());
    let svc = LeaseService::new(racing.clone(), Arc::new(clock.clone()));
    let k = key(&unique_namespace("stale"), "a");
    let east = holder("east");
    let (l1, _) = granted(plain.acquire(&k, &east, TTL).await, "east acquires");
    clock.advance(TTL - Duration::from_millis(1));
    // East reads its live lease; before its write lands, time passes the TTL and west reclaims.
    let (plain2, clock2, k2) = (plain.clone(), clock.clone(), k.clone());
    racing.before_next_put(async move {
        clock2.advance(Duration::from_millis(2));
        granted(
            plain2.acquire(&k2, &holder("west"), TTL).await,
            "west reclaims",
        );
    });
    let r = svc
        .renew(&k, &east, l1.record.fencing_token, TTL)
        .await
        .expect("renew");
    let Renew::Lost(Some(v)) = r else {
        panic!("the stale renew must lose, got {r:?}")
    };
    assert_eq!(
        v.live_holder(),
        Some(&holder("west")),
        "the loser is told the winner"
    );
    assert_eq!(v.record.fencing_token.get(), 2);
    let now = plain.get(&k).await.expect("get").expect("exists");
    assert_eq!(
        now.live_holder(),
        Some(&holder("west")),
        "the reclaim stands"
    );
}

async fn two_acquirers_racing_on_a_new_key(store: &DynLeaseStore) {
    let (plain, clock) = service(store);
    let racing = Interleave::new(store.clone());
    let svc = LeaseService::new(racing.clone(), Arc::new(clock));
    let k = key(&unique_namespace("two"), "a");
    let (plain2, k2) = (plain.clone(), k.clone());
    racing.before_next_put(async move {
        granted(
            plain2.acquire(&k2, &holder("west"), TTL).await,
            "west creates first",
        );
    });
    let v = denied(
        svc.acquire(&k, &holder("east"), TTL).await,
        "east loses the create race",
    );
    assert_eq!(v.live_holder(), Some(&holder("west")));
    assert_eq!(v.record.fencing_token.get(), 1);
}

async fn release_racing_a_reclaim_keeps_the_new_holder(store: &DynLeaseStore) {
    let (plain, clock) = service(store);
    let racing = Interleave::new(store.clone());
    let svc = LeaseService::new(racing.clone(), Arc::new(clock.clone()));
    let k = key(&unique_namespace("relrace"), "a");
    let east = holder("east");
    granted(plain.acquire(&k, &east, TTL).await, "east acquires");
    clock.advance(TTL + Duration::from_secs(1));
    // East releases its expired grant; west reclaims between east's read and write.
    let (plain2, k2) = (plain.clone(), k.clone());
    racing.before_next_put(async move {
        granted(
            plain2.acquire(&k2, &holder("west"), TTL).await,
            "west reclaims",
        );
    });
    let r = svc.release(&k, &east, 1).await;
    assert!(
        matches!(r, Err(LeaseError::NotHolder)),
        "east's late release must not end west's grant, got {r:?}"
    );
    let now = plain.get(&k).await.expect("get").expect("exists");
    assert_eq!(
        now.live_holder(),
        Some(&holder("west")),
        "west still holds the lease"
    );
    assert_eq!(now.record.fencing_token.get(), 2);
}

async fn sweep_tombstones_only_long_expired(store: &DynLeaseStore) {
    let (svc, clock) = service(store);
    let ns = unique_namespace("sweep");
    let old = key(&ns, "old");
    let fresh = key(&ns, "fresh");
    granted(svc.acquire(&old, &holder("east"), TTL).await, "acquire old");
    clock.advance(TTL + Duration::from_secs(301));
    granted(
        svc.acquire(&fresh, &holder("east"), TTL).await,
        "acquire fresh",
    );
    svc.sweep(Duration::from_secs(300)).await.expect("sweep");
    let o = svc.get(&old).await.expect("get").expect("exists");
    assert!(
        o.record.is_tombstone(),
        "a lease expired past the grace is tombstoned"
    );
    assert_eq!(o.record.fencing_token.get(), 1, "sweeping keeps the token");
    let f = svc.get(&fresh).await.expect("get").expect("exists");
    assert_eq!(f.state(), LeaseState::Held, "a live lease is left alone");
    let (l, _) = granted(
        svc.acquire(&old, &holder("west"), TTL).await,
        "reclaim swept",
    );
    assert_eq!(
        l.record.fencing_token.get(),
        2,
        "a swept key continues its token sequence"
    );
}

async fn get_many_and_put_batch(store: &DynLeaseStore) {
    let ns = unique_namespace("batch");
    let (a, b, c) = (key(&ns, "a"), key(&ns, "b"), key(&ns, "c"));
    let va = store
        .put(
            &mk_record(&a, "h", 1, Duration::from_secs(5)),
            Expect::Absent,
        )
        .await
        .expect("create a");
    let got = store
        .get_many(&[b.clone(), a.clone()])
        .await
        .expect("get_many");
    assert_eq!(got.len(), 2, "one answer per key");
    assert!(got[0].is_none(), "absent key answers None in its slot");
    assert_eq!(got[1].as_ref().map(|v| v.version), Some(va));

    let results = store
        .put_batch(&[
            (
                mk_record(&a, "h", 1, Duration::from_secs(7)),
                Expect::Version(va),
            ),
            (
                mk_record(&b, "h", 1, Duration::from_secs(5)),
                Expect::Absent,
            ),
            // Stale: a's version moves in this very batch, and c does not exist.
            (
                mk_record(&c, "h", 1, Duration::from_secs(5)),
                Expect::Version(va),
            ),
            (
                mk_record(&a, "h", 1, Duration::from_secs(9)),
                Expect::Version(va),
            ),
        ])
        .await;
    assert_eq!(results.len(), 4, "one result per item");
    assert_eq!(results[0].as_ref().ok(), Some(&va.next()), "a replaced");
    assert_eq!(
        results[1].as_ref().ok(),
        Some(&Version::INITIAL),
        "b created"
    );
    assert!(
        matches!(results[2], Err(StoreError::Conflict { .. })),
        "c conflicts: {:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Err(StoreError::Conflict { .. })),
        "second write of a under the old version conflicts: {:?}",
        results[3]
    );
    let a_now = must_get(store, &a).await;
    assert_eq!(a_now.version, va.next());
    assert_eq!(
        a_now.value.ttl,
        Duration::from_secs(7),
        "the conflicting item changed nothing"
    );
    assert!(store.get(&c).await.expect("get c").is_none());
    assert!(store.put_batch(&[]).await.is_empty());
}

async fn heartbeat_renews_per_item(store: &DynLeaseStore) {
    use crate::service::HeartbeatItem;
    let (svc, clock) = service(store);
    let ns = unique_namespace("heartbeat");
    let east = holder("east");
    let mut items = Vec::new();
    for n in ["a", "b", "c"] {
        let ttl = if n == "b" {
            Duration::from_secs(1)
        } else {
            TTL
        };
        let (l, _) = granted(svc.acquire(&key(&ns, n), &east, ttl).await, "acquire");
        items.push(HeartbeatItem {
            key: key(&ns, n),
            token: l.record.fencing_token,
            ttl: TTL,
        });
    }
    // b is taken over by west after expiring; d never existed; e asks for a bad TTL.
    clock.advance(Duration::from_secs(2));
    granted(
        svc.acquire(&key(&ns, "b"), &holder("west"), TTL).await,
        "takeover",
    );
    items.push(HeartbeatItem {
        key: key(&ns, "d"),
        token: FencingToken::FIRST,
        ttl: TTL,
    });
    items.push(HeartbeatItem {
        key: key(&ns, "a"),
        token: FencingToken::FIRST,
        ttl: Duration::from_secs(1_000_000),
    });
    clock.advance(Duration::from_secs(2));
    let out = svc.heartbeat(&east, &items).await.expect("heartbeat");
    assert_eq!(out.len(), 5, "one result per item, in order");
    for i in [0, 2] {
        match &out[i] {
            Ok(Renew::Renewed(v)) => {
                assert_eq!(v.record.renewed_at, clock.current());
                assert_eq!(v.remaining(), TTL);
            }
            other => panic!("item {i}: expected a renewal, got {other:?}"),
        }
    }
    match &out[1] {
        Ok(Renew::Lost(Some(v))) => {
            assert_eq!(v.record.holder.as_ref(), Some(&holder("west")));
        }
        other => panic!("taken-over item: expected Lost with the winner, got {other:?}"),
    }
    assert!(matches!(out[3], Ok(Renew::Lost(None))), "{:?}", out[3]);
    assert!(
        matches!(out[4], Err(LeaseError::TtlOutOfRange { .. })),
        "{:?}",
        out[4]
    );
    let a = svc.get(&key(&ns, "a")).await.expect("get").expect("a");
    assert_eq!(a.record.renewed_at, clock.current(), "the write is stored");
}

async fn history_records_how_grants_ended(store: &DynLeaseStore) {
    use crate::store::EndReason;
    let (svc, clock) = service(store);
    let k = key(&unique_namespace("history"), "a");
    let (l1, _) = granted(svc.acquire(&k, &holder("east"), TTL).await, "east");
    clock.advance(Duration::from_secs(1));
    let Ok(Release::Released(_)) = svc.release(&k, &holder("east"), 1).await else {
        panic!("east releases");
    };
    let released_at = clock.current();
    granted(svc.acquire(&k, &holder("west"), TTL).await, "west");
    clock.advance(TTL + Duration::from_secs(1));
    granted(
        svc.acquire(&k, &holder("north"), TTL).await,
        "north takes over",
    );
    let h = svc.history(&k, 10).await.expect("history");
    assert_eq!(h.len(), 2, "two grants ended: {h:?}");
    assert_eq!(h[0].holder, holder("west"), "newest first");
    assert_eq!(h[0].reason, EndReason::TakenOver);
    assert_eq!(h[0].fencing_token.get(), 2);
    assert_eq!(h[1].holder, holder("east"));
    assert_eq!(h[1].reason, EndReason::Released);
    assert_eq!(h[1].acquired_at, l1.record.acquired_at);
    assert_eq!(h[1].ended_at, released_at);
    assert_eq!(svc.history(&k, 1).await.expect("history").len(), 1);
}

/// A store that hides its change feed, so a watcher must poll it.
#[derive(Debug)]
struct Unannounced(DynLeaseStore);

#[async_trait::async_trait]
impl LeaseStore for Unannounced {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        self.0.get(key).await
    }
    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        self.0.list(params).await
    }
    async fn put(&self, record: &LeaseRecord, expect: Expect) -> Result<Version, StoreError> {
        self.0.put(record, expect).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}

async fn watch_sees_every_transition(store: &DynLeaseStore) {
    use crate::watch::{ChangeKind, WatchConfig, WatchFilter, WatchHub};
    for polled in [false, true] {
        let (svc, clock) = service(store);
        let watched: DynLeaseStore = if polled {
            Arc::new(Unannounced(store.clone()))
        } else {
            store.clone()
        };
        let hub = WatchHub::new(
            LeaseService::new(watched, Arc::new(clock.clone())),
            WatchConfig {
                poll_interval: Duration::from_millis(50),
                ..WatchConfig::default()
            },
        );
        let ns = unique_namespace("watch");
        let k = key(&ns, "a");
        let filter = WatchFilter {
            namespace: Some(ns.clone()),
            name: None,
            renewals: false,
        };
        let mut sub = hub.subscribe(&filter, None).await.expect("subscribe");
        assert!(sub.initial.is_empty(), "fresh namespace");
        let mut next = async || loop {
            let c = tokio::time::timeout(Duration::from_secs(10), sub.changes.recv())
                .await
                .expect("a change within 10 s")
                .expect("the stream stays open");
            if filter.admits(&c) {
                return c;
            }
        };
        granted(svc.acquire(&k, &holder("east"), TTL).await, "east");
        let c = next().await;
        assert_eq!(
            (c.kind, c.view.record.fencing_token.get()),
            (ChangeKind::Acquired, 1)
        );
        // A release, then a reacquire: both visible even when polled.
        svc.release(&k, &holder("east"), 1).await.expect("release");
        let c = next().await;
        assert_eq!(c.kind, ChangeKind::Released, "polled={polled}");
        if !polled {
            granted(svc.acquire(&k, &holder("west"), TTL).await, "west");
            let c = next().await;
            assert_eq!(
                (c.kind, c.view.record.fencing_token.get()),
                (ChangeKind::Acquired, 2)
            );
        }
    }
}
