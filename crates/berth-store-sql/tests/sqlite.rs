//! `SqlStore` on SQLite: always runs, on temporary files.

mod common;

use std::time::Duration;

use berth_core::conformance::{mk_record, run_all, unique_namespace};
use berth_core::{Acquire, Clock, Expect, Holder, LeaseKey, LeaseStore, Release, StoreError};
use berth_store_sql::{Migrate, SqlDriver, SqlError, SqlStore, SqlStoreConfig};
use common::{dyn_store, service};
use sqlx::Connection;

fn file_dsn(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("berth.db").display())
}

fn cfg(dsn: &str, migrate: Migrate) -> SqlStoreConfig {
    let mut c = SqlStoreConfig::new(SqlDriver::Sqlite, dsn, migrate);
    c.connect_timeout = Duration::from_millis(500);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect(cfg(&file_dsn(&dir), Migrate::Auto))
        .await
        .expect("open");
    run_all(dyn_store(&store)).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_conformance() {
    let store = SqlStore::connect(cfg("sqlite::memory:", Migrate::Auto))
        .await
        .expect("open");
    run_all(dyn_store(&store)).await;
}

#[tokio::test]
async fn sqlite_dsn_forms_create_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, form) in ["sqlite://", "sqlite:"].iter().enumerate() {
        let path = dir.path().join(format!("sub-{i}.db"));
        let store = SqlStore::connect(cfg(&format!("{form}{}", path.display()), Migrate::Auto))
            .await
            .expect("open");
        store.ping().await.expect("ping");
        store.close().await;
        assert!(path.exists(), "{form} creates {}", path.display());
    }
}

#[tokio::test]
async fn sqlite_migrate_off_on_empty_fails_then_succeeds_after_auto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dsn = file_dsn(&dir);
    let e = SqlStore::connect(cfg(&dsn, Migrate::Off))
        .await
        .expect_err("empty database");
    assert!(matches!(e, SqlError::Schema(_)), "{e:?}");
    let msg = e.to_string();
    assert_eq!(
        msg,
        "sqlite schema check failed (--sql-migrate off): table berth_leases does not exist; run \
         with --sql-migrate auto or apply crates/berth-store-sql/migrations/sqlite by hand"
    );
    SqlStore::connect(cfg(&dsn, Migrate::Auto))
        .await
        .expect("auto")
        .close()
        .await;
    SqlStore::connect(cfg(&dsn, Migrate::Auto))
        .await
        .expect("auto again is a no-op")
        .close()
        .await;
    let s = SqlStore::connect(cfg(&dsn, Migrate::Off))
        .await
        .expect("migrated database passes");
    s.ping().await.expect("ping");
    s.close().await;
}

#[tokio::test]
async fn sqlite_schema_drift_names_the_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.db");
    let mut c = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .expect("open");
    sqlx::raw_sql(
        "CREATE TABLE berth_leases (namespace TEXT NOT NULL, name TEXT NOT NULL, holder TEXT NOT NULL,
         ttl_ms INTEGER NOT NULL, acquired_at TEXT NOT NULL, renewed_at TEXT NOT NULL,
         fencing_token INTEGER NOT NULL, PRIMARY KEY (namespace, name))",
    )
    .execute(&mut c)
    .await
    .expect("create legacy table");
    c.close().await.expect("close");
    let e = SqlStore::connect(cfg(&format!("sqlite://{}", path.display()), Migrate::Off))
        .await
        .expect_err("drift")
        .to_string();
    assert!(
        e.contains("table berth_leases has no column version"),
        "{e}"
    );
    assert!(e.contains("--sql-migrate auto"), "{e}");
}

#[tokio::test]
async fn sqlite_adopts_a_legacy_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.db");
    let mut c = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .expect("open");
    // As the original implementation wrote it: RFC 3339 with nanoseconds, no version column.
    sqlx::raw_sql(
        "CREATE TABLE berth_leases (namespace TEXT NOT NULL, name TEXT NOT NULL, holder TEXT NOT NULL,
         ttl_ms INTEGER NOT NULL, acquired_at TEXT NOT NULL, renewed_at TEXT NOT NULL,
         fencing_token INTEGER NOT NULL, PRIMARY KEY (namespace, name));
         INSERT INTO berth_leases VALUES ('legacy', 'job', 'east', 30000,
           '2030-01-01T00:00:00.123456789Z', '2030-01-01T00:00:01.5Z', 41);",
    )
    .execute(&mut c)
    .await
    .expect("create legacy table");
    c.close().await.expect("close");
    let dsn = format!("sqlite://{}", path.display());
    let store = SqlStore::connect(cfg(&dsn, Migrate::Auto))
        .await
        .expect("auto adopts the table");
    let key = LeaseKey::new("legacy", "job").expect("key");
    let v = store.get(&key).await.expect("get").expect("legacy record");
    assert_eq!(v.version.get(), 1);
    assert_eq!(v.value.fencing_token.get(), 41);
    assert_eq!(
        v.value.renewed_at,
        time::macros::datetime!(2030-01-01 00:00:01.5 UTC)
    );
    store
        .put(&v.value, Expect::Version(v.version))
        .await
        .expect("writable");
    store.close().await;
    SqlStore::connect(cfg(&dsn, Migrate::Off))
        .await
        .expect("passes the check")
        .close()
        .await;
}

#[tokio::test]
async fn sqlite_durability_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dsn = file_dsn(&dir);
    let east = Holder::new("east").expect("holder");
    let ttl = Duration::from_secs(600);
    let ns = unique_namespace("dur");
    let keys: Vec<LeaseKey> = (0..5)
        .map(|i| LeaseKey::new(ns.clone(), format!("k{i}")).expect("key"))
        .collect();
    {
        let store = SqlStore::connect(cfg(&dsn, Migrate::Auto))
            .await
            .expect("open");
        let svc = service(&store);
        for k in &keys {
            for _ in 0..3 {
                let Acquire::Granted { lease, .. } =
                    svc.acquire(k, &east, ttl).await.expect("acquire")
                else {
                    panic!("granted")
                };
                let tok = lease.record.fencing_token.get();
                assert!(matches!(
                    svc.release(k, &east, tok).await,
                    Ok(Release::Released(_))
                ));
            }
            svc.acquire(k, &east, ttl).await.expect("final acquire");
        }
        // Dropped without close: what was acknowledged is on disk (synchronous=FULL).
    }
    let store = SqlStore::connect(cfg(&dsn, Migrate::Off))
        .await
        .expect("reopen");
    let svc = service(&store);
    for k in &keys {
        let v = svc.get(k).await.expect("get").expect("record survived");
        assert_eq!(v.live_holder(), Some(&east));
        assert_eq!(
            v.record.fencing_token.get(),
            4,
            "token survived the restart"
        );
    }
    store.close().await;
}

#[tokio::test]
async fn sqlite_second_process_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dsn = file_dsn(&dir);
    let first = SqlStore::connect(cfg(&dsn, Migrate::Auto))
        .await
        .expect("open");
    first.ping().await.expect("ping");
    let e = SqlStore::connect(cfg(&dsn, Migrate::Auto))
        .await
        .expect_err("a second opener must not share the file");
    let msg = e.to_string();
    assert!(msg.contains("locked by another process"), "{msg}");
    assert!(msg.contains("one API server replica"), "{msg}");
    first.close().await;
    SqlStore::connect(cfg(&dsn, Migrate::Auto))
        .await
        .expect("free again once the first store is closed")
        .close()
        .await;
}

#[tokio::test]
async fn sqlite_clock_is_the_process_monotonic_clock() {
    let store = SqlStore::connect(cfg("sqlite::memory:", Migrate::Auto))
        .await
        .expect("open");
    let clock = store.clock();
    assert_eq!(clock.name(), "monotonic");
    assert!(clock.is_monotonic());
    let mut last = clock.now().await.expect("now");
    for _ in 0..100 {
        let now = clock.now().await.expect("now");
        assert!(now >= last);
        assert_eq!(now.nanosecond() % 1000, 0);
        last = now;
    }
}

#[tokio::test]
async fn sqlite_corrupt_rows_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.db");
    let dsn = format!("sqlite://{}", path.display());
    SqlStore::connect(cfg(&dsn, Migrate::Auto))
        .await
        .expect("migrate")
        .close()
        .await;
    let mut c = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
    )
    .await
    .expect("open");
    sqlx::raw_sql(
        "INSERT INTO berth_leases VALUES ('bad', 'token', 'east', 1000, '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z', 0, 1);
         INSERT INTO berth_leases VALUES ('bad', 'time', 'east', 1000, 'yesterday', '2030-01-01T00:00:00.000000Z', 1, 1);
         INSERT INTO berth_leases VALUES ('Bad_NS', 'x', 'east', 1000, '2030-01-01T00:00:00Z', '2030-01-01T00:00:00Z', 1, 1);",
    )
    .execute(&mut c)
    .await
    .expect("insert bad rows");
    c.close().await.expect("close");
    let store = SqlStore::connect(cfg(&dsn, Migrate::Off))
        .await
        .expect("open");
    for (name, why) in [("token", "fencing_token 0"), ("time", "acquired_at")] {
        let e = store
            .get(&LeaseKey::new("bad", name).expect("key"))
            .await
            .expect_err("corrupt");
        let StoreError::Corrupt { key, reason } = &e else {
            panic!("expected Corrupt, got {e:?}")
        };
        assert_eq!(key, &format!("bad/{name}"));
        assert!(reason.contains(why), "{reason}");
    }
    let e = store
        .list(&berth_core::ListParams::default())
        .await
        .expect_err("an invalid key in the table");
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    store.close().await;
}

#[tokio::test]
async fn sqlite_unwritable_path_is_a_clear_error() {
    let e = SqlStore::connect(cfg(
        "sqlite:///proc/berth-does-not-exist/dir/berth.db",
        Migrate::Auto,
    ))
    .await
    .expect_err("cannot create the file");
    assert!(e.to_string().starts_with("sqlite database"), "{e}");
}

#[tokio::test]
async fn sqlite_rewrite_with_same_content_bumps_the_version() {
    let store = SqlStore::connect(cfg("sqlite::memory:", Migrate::Auto))
        .await
        .expect("open");
    let k = LeaseKey::new(unique_namespace("same"), "a").expect("key");
    let rec = mk_record(&k, "east", 1, Duration::from_secs(30));
    let v1 = store.put(&rec, Expect::Absent).await.expect("create");
    let v2 = store.put(&rec, Expect::Version(v1)).await.expect("rewrite");
    assert_eq!(v2, v1.next());
    assert!(
        store
            .put(&rec, Expect::Version(v1))
            .await
            .is_err_and(|e| e.is_conflict())
    );
}

#[test]
fn wrong_driver_for_the_dsn_is_a_config_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let e = rt
        .block_on(SqlStore::connect(SqlStoreConfig::new(
            SqlDriver::Sqlite,
            "postgres://berth:pw-x@127.0.0.1/berth",
            Migrate::Auto,
        )))
        .expect_err("driver/dsn mismatch");
    assert!(matches!(e, SqlError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("sqlite"), "{e}");
    assert!(!e.to_string().contains("pw-x"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_is_bounded_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect(cfg(&file_dsn(&dir), Migrate::Auto))
        .await
        .expect("open");
    let svc = berth_core::LeaseService::new(dyn_store(&store), std::sync::Arc::new(store.clock()));
    let key = LeaseKey::new("hist", "a").expect("key");
    let h = Holder::new("east").expect("holder");
    let grants = berth_store_sql::HISTORY_PER_KEY + 8;
    for token in 1..=grants {
        let Acquire::Granted { lease, .. } = svc
            .acquire(&key, &h, Duration::from_secs(30))
            .await
            .expect("acquire")
        else {
            panic!("granted");
        };
        assert_eq!(lease.record.fencing_token.get(), token);
        assert!(matches!(
            svc.release(&key, &h, token).await.expect("release"),
            Release::Released(_)
        ));
    }
    store.close().await;
    let store = SqlStore::connect(cfg(&file_dsn(&dir), Migrate::Off))
        .await
        .expect("reopen");
    let all = store
        .history(&key, 1000)
        .await
        .expect("history")
        .expect("kept");
    assert_eq!(
        all.len(),
        usize::try_from(berth_store_sql::HISTORY_PER_KEY).expect("small"),
        "only the newest grants are kept"
    );
    assert_eq!(all[0].fencing_token.get(), grants, "newest first");
    assert!(
        all.iter()
            .all(|e| e.reason == berth_core::EndReason::Released)
    );
    // Appending a grant again is a no-op.
    store.append_history(&all[0]).await.expect("append again");
    let again = store
        .history(&key, 1000)
        .await
        .expect("history")
        .expect("kept");
    assert_eq!(again, all);
}
