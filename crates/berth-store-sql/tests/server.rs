//! `SqlStore` on real PostgreSQL and MariaDB/MySQL servers (`BERTH_TEST_POSTGRES_DSN`,
//! `BERTH_TEST_MYSQL_DSN`). Every test creates its own database and drops it afterwards.

mod common;

use std::time::{Duration, Instant};

use berth_core::conformance::{mk_record, run_all, unique_namespace};
use berth_core::{Acquire, Clock, Expect, LeaseKey, LeaseStore, Release, StoreError};
use berth_store_sql::{Migrate, SqlDriver, SqlError, SqlStore, SqlStoreConfig};
use common::{Proxy, TestDb, closed_port, dyn_store, service, silent_listener, via_port};

async fn conformance(db: TestDb) {
    let store = db.store().await;
    run_all(dyn_store(&store)).await;
    store.close().await;
}

async fn migrate_off_on_empty_then_auto(db: TestDb) {
    let e = SqlStore::connect(db.config(Migrate::Off))
        .await
        .expect_err("an empty database fails the schema check");
    let msg = e.to_string();
    assert!(matches!(e, SqlError::Schema(_)), "{e:?}");
    assert!(msg.contains("table berth_leases does not exist"), "{msg}");
    assert!(msg.contains("--sql-migrate auto"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");

    let s = SqlStore::connect(db.config(Migrate::Auto))
        .await
        .expect("auto migrates");
    s.close().await;
    let s = SqlStore::connect(db.config(Migrate::Auto))
        .await
        .expect("auto is idempotent");
    s.close().await;
    let s = SqlStore::connect(db.config(Migrate::Off))
        .await
        .expect("a migrated database passes the schema check");
    s.ping().await.expect("ping");
    s.close().await;
}

async fn concurrent_migrations(db: TestDb) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cfg = db.config(Migrate::Auto);
        tasks.push(tokio::spawn(async move { SqlStore::connect(cfg).await }));
    }
    for t in tasks {
        let s = t.await.expect("task").expect("every replica starts");
        s.close().await;
    }
    let s = SqlStore::connect(db.config(Migrate::Off))
        .await
        .expect("schema is complete");
    run_all(dyn_store(&s)).await;
    s.close().await;
}

async fn schema_drift(db: TestDb, create_without_version: &str, narrow_token: &str) {
    db.exec(create_without_version).await;
    let e = SqlStore::connect(db.config(Migrate::Off))
        .await
        .expect_err("a missing column is drift")
        .to_string();
    assert!(e.contains("has no column version"), "{e}");
    assert!(e.contains("--sql-migrate auto"), "{e}");
    db.exec(narrow_token).await;
    let e = SqlStore::connect(db.config(Migrate::Off))
        .await
        .expect_err("a 32-bit token column is drift")
        .to_string();
    assert!(
        e.contains("column berth_leases.fencing_token has type int"),
        "{e}"
    );
}

async fn durability(db: TestDb) {
    let ns = unique_namespace("dur");
    let keys: Vec<LeaseKey> = (0..3)
        .map(|i| LeaseKey::new(ns.clone(), format!("k{i}")).expect("key"))
        .collect();
    let east = berth_core::Holder::new("east").expect("holder");
    let ttl = Duration::from_secs(600);
    let mut tokens = Vec::new();
    {
        let store = db.store().await;
        let svc = service(&store);
        for k in &keys {
            // Two grants per key: acquire, release, acquire again → token 2.
            let Acquire::Granted { lease, .. } = svc.acquire(k, &east, ttl).await.expect("acquire")
            else {
                panic!("granted")
            };
            assert!(matches!(
                svc.release(k, &east, lease.record.fencing_token.get())
                    .await,
                Ok(Release::Released(_))
            ));
            let Acquire::Granted { lease, .. } = svc.acquire(k, &east, ttl).await.expect("acquire")
            else {
                panic!("granted")
            };
            tokens.push(lease.record.fencing_token.get());
        }
        store.close().await;
    }
    assert_eq!(tokens, vec![2, 2, 2]);
    let store = SqlStore::connect(db.config(Migrate::Off))
        .await
        .expect("reopen");
    let svc = service(&store);
    for k in &keys {
        let v = svc.get(k).await.expect("get").expect("record survived");
        assert_eq!(
            v.live_holder(),
            Some(&east),
            "the acknowledged grant is live"
        );
        assert_eq!(v.record.fencing_token.get(), 2, "the token survived");
        assert!(matches!(
            svc.release(k, &east, 2).await,
            Ok(Release::Released(_))
        ));
        let Acquire::Granted { lease, .. } = svc
            .acquire(k, &berth_core::Holder::new("west").expect("holder"), ttl)
            .await
            .expect("acquire")
        else {
            panic!("granted")
        };
        assert_eq!(
            lease.record.fencing_token.get(),
            3,
            "tokens continue after a restart"
        );
    }
    store.close().await;
}

#[allow(clippy::disallowed_methods)] // comparing the database clock with this host's clock
async fn db_clock(db: TestDb) {
    let store = db.store().await;
    // The store reads its clock together with a record, and a service on that clock uses it.
    assert_eq!(
        LeaseStore::clock_source(&store),
        store.clock().store_source(),
        "the store's clock is its own"
    );
    assert!(store.clock().store_source().is_some());
    let key = LeaseKey::new(unique_namespace("clock"), "k").expect("key");
    let before = store.clock().now().await.expect("db now");
    let (absent, t1) = store.get_with_clock(&key).await.expect("fused read");
    assert!(absent.is_none());
    store
        .put(
            &mk_record(&key, "h", 1, Duration::from_secs(5)),
            Expect::Absent,
        )
        .await
        .expect("create");
    let (present, t2) = store.get_with_clock(&key).await.expect("fused read");
    let after = store.clock().now().await.expect("db now");
    assert_eq!(present.expect("present").value.key, key);
    assert!(
        before <= t1 && t1 <= t2 && t2 <= after,
        "{before} <= {t1} <= {t2} <= {after}"
    );
    let other = db.store().await;
    assert_ne!(
        LeaseStore::clock_source(&other),
        store.clock().store_source(),
        "another pool is another store"
    );
    other.close().await;
    let clock = store.clock();
    assert_eq!(clock.name(), "database");
    let a = clock.now().await.expect("db now");
    let local = time::OffsetDateTime::now_utc();
    let b = clock.now().await.expect("db now");
    assert!(
        (a - local).abs() < time::Duration::seconds(5),
        "db {a} vs local {local}"
    );
    assert!(b >= a, "consecutive reads move forward here: {a} then {b}");
    assert_eq!(a.offset(), time::UtcOffset::UTC);
    assert_eq!(a.nanosecond() % 1000, 0, "microseconds");
    store.close().await;
}

async fn unreachable(driver: SqlDriver, dsn: &str) {
    let with_pw = |port: u16| {
        let mut u = url::Url::parse(&via_port(dsn, port)).expect("url");
        u.set_password(Some("pw-must-not-leak")).expect("password");
        u.to_string()
    };
    // Nothing listens: refused at once.
    let mut cfg = SqlStoreConfig::new(driver, with_pw(closed_port()), Migrate::Auto);
    cfg.connect_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let e = SqlStore::connect(cfg).await.expect_err("refused");
    assert!(e.is_unavailable(), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(!e.to_string().contains("pw-must-not-leak"), "{e}");
    assert!(!format!("{e:?}").contains("pw-must-not-leak"), "{e:?}");

    // Something accepts but never answers: bounded by the connect timeout.
    let (port, listener) = silent_listener().await;
    let mut cfg = SqlStoreConfig::new(driver, with_pw(port), Migrate::Auto);
    cfg.connect_timeout = Duration::from_millis(700);
    let t = Instant::now();
    let e = SqlStore::connect(cfg).await.expect_err("silent server");
    assert!(e.is_unavailable(), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(!e.to_string().contains("pw-must-not-leak"), "{e}");
    listener.abort();
}

async fn lost_connection(db: TestDb, default_port: u16) {
    db.store().await.close().await;
    let proxy = Proxy::start(common::host_port(&db.dsn, default_port)).await;
    let mut cfg = SqlStoreConfig::new(db.driver, via_port(&db.dsn, proxy.port), Migrate::Off);
    cfg.statement_timeout = Duration::from_secs(1);
    cfg.connect_timeout = Duration::from_millis(500);
    let store = SqlStore::connect(cfg)
        .await
        .expect("connect through the proxy");
    // Reachable first (a loaded machine may need more than one try within the 500 ms pool
    // timeout this test sets).
    let t = Instant::now();
    while let Err(e) = store.ping().await {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never reachable: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.cut();
    let t = Instant::now();
    let e = store.ping().await.expect_err("the database is gone");
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let k = LeaseKey::new("gone", "a").expect("key");
    let e = store.get(&k).await.expect_err("the database is gone");
    assert!(e.is_retryable(), "{e:?}");
    let e = store
        .clock()
        .now()
        .await
        .expect_err("no clock without the database");
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // The database comes back on the same address: the pool reconnects on its own.
    let target = common::host_port(&db.dsn, default_port);
    let _back = Proxy::start_on(proxy.port, target).await;
    let t = Instant::now();
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(10),
                "still unreachable after the database came back: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.get(&k).await.expect("get after recovery").is_none());
    store.close().await;
}

async fn identical_update_counts_as_written(db: TestDb) {
    let store = db.store().await;
    let k = LeaseKey::new(unique_namespace("same"), "a").expect("key");
    let rec = mk_record(&k, "east", 1, Duration::from_secs(30));
    let v1 = store.put(&rec, Expect::Absent).await.expect("create");
    // Same content: only the version changes, and that must still count as one row written.
    let v2 = store
        .put(&rec, Expect::Version(v1))
        .await
        .expect("identical rewrite");
    assert_eq!(v2, v1.next());
    assert!(
        store
            .put(&rec, Expect::Version(v1))
            .await
            .is_err_and(|e| e.is_conflict())
    );
    store.close().await;
}

/// A table as the original implementation (Berth 0.4) left it, with one record: `--sql-migrate
/// auto` adopts it, and the record keeps its token.
async fn adopts_legacy_table(db: TestDb, create: &str, insert: &str) {
    db.exec(create).await;
    db.exec(insert).await;
    let store = db.store().await;
    let key = LeaseKey::new("legacy", "job").expect("key");
    let v = store.get(&key).await.expect("get").expect("legacy record");
    assert_eq!(v.version.get(), 1, "legacy rows read as version 1");
    assert_eq!(v.value.fencing_token.get(), 41);
    assert_eq!(
        v.value.holder.as_ref().map(berth_core::Holder::as_str),
        Some("east")
    );
    assert_eq!(v.value.ttl, Duration::from_secs(30));
    let next = mk_record(
        &key,
        "west",
        i64::from(i32::MAX) + 1,
        Duration::from_secs(30),
    );
    store
        .put(&next, Expect::Version(v.version))
        .await
        .expect("64-bit tokens fit after adoption");
    store.close().await;
    let s = SqlStore::connect(db.config(Migrate::Off))
        .await
        .expect("the adopted table passes the schema check");
    assert_eq!(s.get(&key).await.expect("get").expect("record").value, next);
    s.close().await;
}

/// What one replica acknowledged to one client.
#[derive(Debug, Clone)]
enum Event {
    Grant {
        key: usize,
        token: i64,
        at: time::OffsetDateTime,
        ttl: Duration,
    },
    Renew {
        key: usize,
        token: i64,
        at: time::OffsetDateTime,
        ttl: Duration,
    },
    Release {
        key: usize,
        token: i64,
        at: time::OffsetDateTime,
    },
}

/// Calls cut off at random points — a store timeout, or an HTTP client that hung up and took
/// its request's future with it — must leave no pooled connection inside an open transaction.
/// One that did would run later statements inside it: acknowledged writes invisible to every
/// other connection (and lost when it closes), and PostgreSQL's `now()` frozen at its start.
async fn cancelled_calls_leave_no_transaction_open(db: TestDb) {
    use berth_core::{EndReason, HistoryEntry, Holder};
    use rand::Rng as _;

    let mut cfg = db.config(Migrate::Auto);
    cfg.max_connections = 2;
    let store = SqlStore::connect(cfg).await.expect("connect");
    let outside = db.store().await;
    let ns = unique_namespace("cancel");
    let key = |name: String| LeaseKey::new(ns.clone(), name).expect("key");
    let holder = Holder::new("h").expect("holder");
    let ttl = Duration::from_secs(30);
    let mut rng = rand::rng();
    let started = time::macros::datetime!(2030-01-01 00:00 UTC);
    // How long an uncut call takes here, so the cuts land anywhere inside one.
    let t = Instant::now();
    for i in 0..20 {
        let batch: Vec<_> = (0..2)
            .map(|j| {
                (
                    mk_record(&key(format!("w{i}-{j}")), "h", 1, ttl),
                    Expect::Absent,
                )
            })
            .collect();
        for r in store.put_batch(&batch).await {
            r.expect("uncut batch");
        }
    }
    let span = (t.elapsed() / 20).as_micros().max(50);
    // Log-uniform between 10 µs and twice that: as often early as late in a call.
    let top = (2.0 * span as f64).ln();
    let cut_at = |rng: &mut rand::rngs::ThreadRng| {
        Duration::from_micros(rng.random_range(10f64.ln()..top).exp() as u64)
    };
    let mut cut_off = 0;
    for i in 0..1500_i64 {
        let entry = HistoryEntry {
            key: key(format!("h{}", i % 4)),
            holder: holder.clone(),
            fencing_token: berth_core::FencingToken::new(i + 1).expect("token"),
            acquired_at: started,
            ended_at: started,
            reason: EndReason::Released,
        };
        let cut = cut_at(&mut rng);
        if tokio::time::timeout(cut, store.append_history(&entry))
            .await
            .is_err()
        {
            cut_off += 1;
        }
        let batch: Vec<_> = (0..2)
            .map(|j| {
                (
                    mk_record(&key(format!("b{i}-{j}")), "h", 1, ttl),
                    Expect::Absent,
                )
            })
            .collect();
        let cut = cut_at(&mut rng);
        if tokio::time::timeout(cut, store.put_batch(&batch))
            .await
            .is_err()
        {
            cut_off += 1;
        }
        // A connection left inside a transaction can be freed again by a later call on it
        // (its COMMIT ends the stray transaction too), so look often.
        if i % 25 == 24 {
            check_connections(&store, &outside, &ns, i).await;
        }
    }
    assert!(cut_off > 100, "the calls were cut off ({cut_off} times)");
    check_connections(&store, &outside, &ns, 1500).await;
    store.close().await;
    outside.close().await;
}

/// Writes through every connection of `store`'s pool (it has at most 2) and reads each write
/// back through `outside`; reads `store`'s clock against `outside`'s. Fails on a write another
/// connection cannot see, a clock behind, or a call that hangs.
async fn check_connections(store: &SqlStore, outside: &SqlStore, ns: &str, round: i64) {
    let bound = Duration::from_secs(10);
    let hung = |what: &str| format!("{what} hung after cut-off calls (round {round})");
    for j in 0..4 {
        let k = LeaseKey::new(ns, format!("check-{round}-{j}")).expect("key");
        let record = mk_record(&k, "h", 1, Duration::from_secs(30));
        tokio::time::timeout(bound, store.put(&record, Expect::Absent))
            .await
            .unwrap_or_else(|_| panic!("{}", hung("a write")))
            .expect("acknowledged write");
        assert!(
            outside.get(&k).await.expect("outside read").is_some(),
            "round {round}: an acknowledged write is invisible to another connection"
        );
        let before = outside.clock().now().await.expect("outside clock");
        let now = tokio::time::timeout(bound, store.clock().now())
            .await
            .unwrap_or_else(|_| panic!("{}", hung("a clock read")))
            .expect("clock");
        assert!(
            now >= before,
            "round {round}: the clock read {now}, after {before} from another connection"
        );
    }
}

/// Two replicas (two pools, two database clocks) on one database; 16 clients race to acquire,
/// renew and release three keys with a 1 s TTL. Afterwards, per key: tokens were granted once
/// each and in order, a grant never began before the previous grant's last acknowledged expiry
/// (or its release), and the store holds the latest acknowledged token.
async fn two_replicas_race(db: TestDb) {
    use berth_core::{Grant, Holder, LeaseError, Renew};
    use std::sync::{Arc, Mutex};

    let replicas = [db.store().await, db.store().await];
    let services = [service(&replicas[0]), service(&replicas[1])];
    let ns = unique_namespace("race");
    let keys: Arc<Vec<LeaseKey>> = Arc::new(
        (0..3)
            .map(|i| LeaseKey::new(ns.clone(), format!("k{i}")).expect("key"))
            .collect(),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let ttl = Duration::from_secs(1);
    let until = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let svc = services[c % 2].clone();
        let (keys, events) = (keys.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let me = Holder::new(format!("client-{c}")).expect("holder");
            let mut round = c;
            while Instant::now() < until {
                round += 7;
                let k = round % keys.len();
                let key = &keys[k];
                let (lease, grant) = match svc.acquire(key, &me, ttl).await {
                    Ok(Acquire::Granted { lease, grant }) => (lease, grant),
                    // Losing every compare-and-set to other clients is an answer, not a fault.
                    Ok(Acquire::Denied(_)) | Err(LeaseError::TooManyConflicts { .. }) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(e) => panic!("acquire: {e:?}"),
                };
                let token = lease.record.fencing_token;
                let (at, token_raw) = (lease.record.renewed_at, token.get());
                // Acquiring a lease one already holds renews it in place.
                events
                    .lock()
                    .expect("events")
                    .push(if grant == Grant::Renewed {
                        Event::Renew {
                            key: k,
                            token: token_raw,
                            at,
                            ttl,
                        }
                    } else {
                        Event::Grant {
                            key: k,
                            token: token_raw,
                            at,
                            ttl,
                        }
                    });
                for _ in 0..(round % 4) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    match svc.renew(key, &me, token, ttl).await {
                        Err(e) => panic!("renew: {e:?}"),
                        Ok(Renew::Renewed(v)) => {
                            events.lock().expect("events").push(Event::Renew {
                                key: k,
                                token: token.get(),
                                at: v.record.renewed_at,
                                ttl,
                            })
                        }
                        Ok(Renew::Lost(_)) => break,
                    }
                }
                if round % 3 == 0 {
                    if let Ok(Release::Released(v)) = svc.release(key, &me, token.get()).await {
                        events.lock().expect("events").push(Event::Release {
                            key: k,
                            token: token.get(),
                            at: v.record.renewed_at,
                        });
                    }
                } else {
                    // Walk away without releasing, like a crashed client: the lease expires.
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let events = events.lock().expect("events").clone();
    let mut grants_total = 0;
    let mut expiries = 0;
    for (k, key) in keys.iter().enumerate() {
        let mut grants: Vec<(i64, time::OffsetDateTime)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Grant { key, token, at, .. } if *key == k => Some((*token, *at)),
                _ => None,
            })
            .collect();
        grants.sort();
        grants_total += grants.len();
        for w in grants.windows(2) {
            assert!(w[0].0 < w[1].0, "key {k}: token {} granted twice", w[0].0);
            assert!(w[0].1 <= w[1].1, "key {k}: tokens out of time order {w:?}");
        }
        // End of each grant: its last acknowledged expiry, or its release if earlier.
        for w in grants.windows(2) {
            let (prev, (_, next_at)) = (w[0].0, w[1]);
            let mut end = None::<time::OffsetDateTime>;
            let mut released = None::<time::OffsetDateTime>;
            for e in &events {
                match e {
                    Event::Grant {
                        key,
                        token,
                        at,
                        ttl,
                    }
                    | Event::Renew {
                        key,
                        token,
                        at,
                        ttl,
                    } if *key == k && *token == prev => {
                        let exp = *at + time::Duration::try_from(*ttl).expect("ttl");
                        end = Some(end.map_or(exp, |e| e.max(exp)));
                    }
                    Event::Release { key, token, at } if *key == k && *token == prev => {
                        released = Some(*at);
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("key {k}: token {prev} has no grant"));
            // An acknowledged release precedes the next grant in the store's order (a reclaim
            // first would have made the release fail), though its timestamp may be a little
            // later: each operation reads the clock before its record. Only expiry is timed.
            if released.is_none() {
                assert!(
                    next_at >= end,
                    "key {k}: token {} began at {next_at} before token {prev} expired at {end}",
                    w[1].0
                );
                expiries += 1;
            }
        }
        let last = grants.last().map_or(0, |g| g.0);
        let stored = replicas[0]
            .get(key)
            .await
            .expect("get")
            .map_or(0, |v| v.value.fencing_token.get());
        assert_eq!(
            stored, last,
            "key {k}: the store holds the last acknowledged token"
        );
    }
    assert!(
        grants_total >= 6,
        "the race produced handovers: {grants_total} grants"
    );
    assert!(
        expiries >= 2,
        "some handovers followed an expiry: {expiries}"
    );
    eprintln!(
        "{grants_total} grants, {expiries} after an expiry, {} events",
        events.len()
    );
    for r in replicas {
        r.close().await;
    }
}

// === PostgreSQL ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_adopts_a_legacy_table() {
    if let Some(db) = TestDb::postgres("postgres_adopts_a_legacy_table").await {
        adopts_legacy_table(
            db,
            "CREATE TABLE berth_leases (namespace TEXT NOT NULL, name TEXT NOT NULL, holder TEXT NOT NULL,
               ttl_ms BIGINT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL, renewed_at TIMESTAMPTZ NOT NULL,
               fencing_token INTEGER NOT NULL, PRIMARY KEY (namespace, name))",
            "INSERT INTO berth_leases VALUES ('legacy', 'job', 'east', 30000,
               '2030-01-01T00:00:00.123456Z', '2030-01-01T00:00:01.5Z', 41)",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_race() {
    if let Some(db) = TestDb::postgres("postgres_two_replicas_race").await {
        two_replicas_race(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    if let Some(db) = TestDb::postgres("postgres_conformance").await {
        conformance(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrate_off_on_empty_then_auto() {
    if let Some(db) = TestDb::postgres("postgres_migrate_off_on_empty_then_auto").await {
        migrate_off_on_empty_then_auto(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_migrations() {
    if let Some(db) = TestDb::postgres("postgres_concurrent_migrations").await {
        concurrent_migrations(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_drift() {
    if let Some(db) = TestDb::postgres("postgres_schema_drift").await {
        schema_drift(
            db,
            r#"CREATE TABLE berth_leases (namespace TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL,
               holder TEXT NOT NULL, ttl_ms BIGINT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL,
               renewed_at TIMESTAMPTZ NOT NULL, fencing_token BIGINT NOT NULL,
               PRIMARY KEY (namespace, name))"#,
            "ALTER TABLE berth_leases ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
             ALTER TABLE berth_leases ALTER COLUMN fencing_token TYPE INTEGER",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_default_collation_is_drift() {
    if let Some(db) = TestDb::postgres("postgres_default_collation_is_drift").await {
        db.exec(
            "CREATE TABLE berth_leases (namespace TEXT COLLATE \"und-x-icu\" NOT NULL, name TEXT NOT NULL,
             holder TEXT NOT NULL, ttl_ms BIGINT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL,
             renewed_at TIMESTAMPTZ NOT NULL, fencing_token BIGINT NOT NULL,
             version BIGINT NOT NULL DEFAULT 1, PRIMARY KEY (namespace, name))",
        )
        .await;
        let e = SqlStore::connect(db.config(Migrate::Off))
            .await
            .expect_err("a locale collation breaks byte order")
            .to_string();
        assert!(e.contains("berth_leases.namespace has collation"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_durability() {
    if let Some(db) = TestDb::postgres("postgres_durability").await {
        durability(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clock_is_the_database_clock() {
    if let Some(db) = TestDb::postgres("postgres_clock_is_the_database_clock").await {
        db_clock(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_unavailable_quickly() {
    if let Some(dsn) = common::admin_dsn(common::POSTGRES_ENV, "postgres_unreachable") {
        unreachable(SqlDriver::Postgres, &dsn).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_connection_is_unavailable() {
    if let Some(db) = TestDb::postgres("postgres_lost_connection_is_unavailable").await {
        lost_connection(db, 5432).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_identical_update_counts_as_written() {
    if let Some(db) = TestDb::postgres("postgres_identical_update").await {
        identical_update_counts_as_written(db).await;
    }
}

// === MariaDB / MySQL ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_adopts_a_legacy_table() {
    if let Some(db) = TestDb::mysql("mysql_adopts_a_legacy_table").await {
        adopts_legacy_table(
            db,
            "CREATE TABLE berth_leases (namespace VARCHAR(253) NOT NULL, name VARCHAR(253) NOT NULL,
               holder VARCHAR(253) NOT NULL, ttl_ms BIGINT NOT NULL, acquired_at DATETIME(6) NOT NULL,
               renewed_at DATETIME(6) NOT NULL, fencing_token INT NOT NULL,
               PRIMARY KEY (namespace, name)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci",
            "INSERT INTO berth_leases VALUES ('legacy', 'job', 'east', 30000,
               '2030-01-01 00:00:00.123456', '2030-01-01 00:00:01.5', 41)",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_two_replicas_race() {
    if let Some(db) = TestDb::mysql("mysql_two_replicas_race").await {
        two_replicas_race(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_conformance() {
    if let Some(db) = TestDb::mysql("mysql_conformance").await {
        conformance(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_go_form_dsn_connects() {
    if let Some(db) = TestDb::mysql("mysql_go_form_dsn_connects").await {
        let u = url::Url::parse(&common::mysql_url(&db.dsn)).expect("url");
        let creds = match u.password() {
            Some(p) => format!("{}:{p}", u.username()),
            None => u.username().to_string(),
        };
        let go = format!(
            "{creds}@tcp({}:{}){}?parseTime=true&loc=UTC",
            u.host_str().expect("host"),
            u.port().unwrap_or(3306),
            u.path()
        );
        let s = SqlStore::connect(SqlStoreConfig::new(SqlDriver::Mysql, go, Migrate::Auto))
            .await
            .expect("the Go driver form connects");
        run_all(dyn_store(&s)).await;
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_wrong_password_does_not_leak() {
    if let Some(db) = TestDb::mysql("mysql_wrong_password_does_not_leak").await {
        let mut u = url::Url::parse(&common::mysql_url(&db.dsn)).expect("url");
        u.set_username("berth_no_such_user").expect("user");
        u.set_password(Some("Sup3r-s3cret")).expect("password");
        let e = SqlStore::connect(SqlStoreConfig::new(
            SqlDriver::Mysql,
            u.to_string(),
            Migrate::Auto,
        ))
        .await
        .expect_err("access denied");
        let msg = format!("{e} {e:?}");
        assert!(!msg.contains("Sup3r-s3cret"), "{msg}");
        assert!(msg.contains("Access denied"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_migrate_off_on_empty_then_auto() {
    if let Some(db) = TestDb::mysql("mysql_migrate_off_on_empty_then_auto").await {
        migrate_off_on_empty_then_auto(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_concurrent_migrations() {
    if let Some(db) = TestDb::mysql("mysql_concurrent_migrations").await {
        concurrent_migrations(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_schema_drift() {
    if let Some(db) = TestDb::mysql("mysql_schema_drift").await {
        schema_drift(
            db,
            "CREATE TABLE berth_leases (namespace VARCHAR(253) COLLATE utf8mb4_bin NOT NULL,
               name VARCHAR(253) COLLATE utf8mb4_bin NOT NULL, holder VARCHAR(253) NOT NULL,
               ttl_ms BIGINT NOT NULL, acquired_at DATETIME(6) NOT NULL, renewed_at DATETIME(6) NOT NULL,
               fencing_token BIGINT NOT NULL, PRIMARY KEY (namespace, name)) DEFAULT CHARSET=utf8mb4",
            "ALTER TABLE berth_leases ADD COLUMN version BIGINT NOT NULL DEFAULT 1, MODIFY fencing_token INT NOT NULL",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_durability() {
    if let Some(db) = TestDb::mysql("mysql_durability").await {
        durability(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_clock_is_the_database_clock() {
    if let Some(db) = TestDb::mysql("mysql_clock_is_the_database_clock").await {
        db_clock(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unreachable_is_unavailable_quickly() {
    if let Some(dsn) = common::admin_dsn(common::MYSQL_ENV, "mysql_unreachable") {
        unreachable(SqlDriver::Mysql, &common::mysql_url(&dsn)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lost_connection_is_unavailable() {
    if let Some(db) = TestDb::mysql("mysql_lost_connection_is_unavailable").await {
        lost_connection(db, 3306).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_identical_update_counts_as_written() {
    if let Some(db) = TestDb::mysql("mysql_identical_update").await {
        identical_update_counts_as_written(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancelled_calls_leave_no_transaction_open() {
    if let Some(db) = TestDb::postgres("postgres_cancelled_calls").await {
        cancelled_calls_leave_no_transaction_open(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_cancelled_calls_leave_no_transaction_open() {
    if let Some(db) = TestDb::mysql("mysql_cancelled_calls").await {
        cancelled_calls_leave_no_transaction_open(db).await;
    }
}

/// A replica hears of another replica's grants and releases through PostgreSQL's NOTIFY (its
/// change feed would otherwise carry only its own writes), and not of renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_feed_hears_other_replicas_transitions() {
    let Some(db) = TestDb::postgres("postgres_change_feed").await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    let mut feed = b.change_feed().expect("feed").keys;
    // The listener connects in the background; write until it hears the first grant.
    let ns = unique_namespace("feed");
    let ttl = Duration::from_secs(30);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    let heard = loop {
        assert!(
            Instant::now() < deadline,
            "no notification reached the other replica"
        );
        let k = LeaseKey::new(ns.clone(), format!("k{n}")).expect("key");
        n += 1;
        a.put(&mk_record(&k, "h", 1, ttl), Expect::Absent)
            .await
            .expect("grant");
        if let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(500), feed.recv()).await {
            assert_eq!(got, k, "the notification names the key written");
            break k;
        }
    };
    let current = a.get(&heard).await.expect("get").expect("present");
    // A renewal: same holder and token. Nothing is sent.
    let mut renewed = current.value.clone();
    renewed.renewed_at += time::Duration::seconds(1);
    let v = a
        .put(&renewed, Expect::Version(current.version))
        .await
        .expect("renewal");
    assert!(
        tokio::time::timeout(Duration::from_millis(700), feed.recv())
            .await
            .is_err(),
        "a renewal is not announced"
    );
    // A release (holder cleared): announced.
    let released = berth_core::LeaseRecord {
        holder: None,
        ttl: Duration::ZERO,
        ..renewed
    };
    a.put(&released, Expect::Version(v)).await.expect("release");
    let got = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("the release is announced")
        .expect("feed open");
    assert_eq!(got, heard);
    a.close().await;
    b.close().await;
}
