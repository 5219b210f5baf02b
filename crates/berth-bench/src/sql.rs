//! SQL: Berth renews through `LeaseService` on `SqlStore` against a raw sqlx client running the
//! same single-row compare-and-set, on PostgreSQL and MariaDB; SQLite renews one by one and in
//! heartbeat batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_core::{FencingToken, HeartbeatItem, Holder, LeaseKey, LeaseService, Renew};
use berth_store_sql::{Migrate, SqlDriver, SqlStore, SqlStoreConfig};

use crate::stats::{Samples, Summary, fmt_ms, row};

const TTL: Duration = Duration::from_secs(60);

async fn store(driver: SqlDriver, dsn: &str, conns: usize) -> anyhow::Result<SqlStore> {
    let mut cfg = SqlStoreConfig::new(driver, dsn, Migrate::Auto);
    cfg.max_connections = u32::try_from(conns).unwrap_or(u32::MAX).max(1);
    Ok(SqlStore::connect(cfg).await?)
}

fn service(store: &SqlStore) -> LeaseService {
    LeaseService::new(Arc::new(store.clone()), Arc::new(store.clock()))
}

/// The store's clock, not recognised as the store's own: the service reads it in a statement of
/// its own before reading the record (the path before `get_with_clock`), for comparison.
#[derive(Debug)]
struct Apart(berth_store_sql::DbClock);

#[async_trait::async_trait]
impl berth_core::Clock for Apart {
    async fn now(&self) -> Result<time::OffsetDateTime, berth_core::StoreError> {
        self.0.now().await
    }
    fn name(&self) -> &'static str {
        "database, read apart"
    }
}

fn service_clock_apart(store: &SqlStore) -> LeaseService {
    LeaseService::new(Arc::new(store.clone()), Arc::new(Apart(store.clock())))
}

fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(1);
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

/// Acquires `n` keys `bench-<run>/<prefix>-<i>` for one holder, returning their tokens.
async fn acquire_all(
    svc: &LeaseService,
    ns: &str,
    prefix: &str,
    n: usize,
    holder: &Holder,
) -> anyhow::Result<Vec<(LeaseKey, FencingToken)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = LeaseKey::new(ns, format!("{prefix}-{i}"))?;
        match svc.acquire(&key, holder, TTL).await? {
            berth_core::Acquire::Granted { lease, .. } => {
                out.push((key, lease.record.fencing_token));
            }
            berth_core::Acquire::Denied(_) => anyhow::bail!("{key} is held by someone else"),
        }
    }
    Ok(out)
}

/// `conns` tasks, each renewing its own lease (or batch) in a loop for `duration`.
async fn berth_renews(
    svc: &LeaseService,
    ns: &str,
    conns: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Summary> {
    let holder = Holder::new("bench")?;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let leases = acquire_all(svc, ns, &format!("b{batch}-c{c}"), batch, &holder).await?;
        let svc = svc.clone();
        let holder = holder.clone();
        tasks.push(tokio::spawn(async move {
            let items: Vec<HeartbeatItem> = leases
                .iter()
                .map(|(key, token)| HeartbeatItem {
                    key: key.clone(),
                    token: *token,
                    ttl: TTL,
                })
                .collect();
            let end = Instant::now() + duration;
            let mut samples = Samples::default();
            while Instant::now() < end {
                let t = Instant::now();
                let ok = if batch == 1 {
                    matches!(
                        svc.renew(&items[0].key, &holder, items[0].token, TTL).await,
                        Ok(Renew::Renewed(_))
                    )
                } else {
                    svc.heartbeat(&holder, &items)
                        .await
                        .is_ok_and(|rs| rs.iter().all(|r| matches!(r, Ok(Renew::Renewed(_)))))
                };
                if ok {
                    samples.latencies.push(t.elapsed());
                } else {
                    samples.errors += 1;
                }
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await?);
    }
    Ok(all.summary(duration, u64::try_from(batch).unwrap_or(1)))
}

/// The raw client: one `UPDATE … WHERE version = ?` per renew on the same table, tracking the
/// version locally, on a pool of `conns` connections.
async fn raw_renews(
    driver: SqlDriver,
    dsn: &str,
    ns: &str,
    conns: usize,
    duration: Duration,
) -> anyhow::Result<Summary> {
    let size = u32::try_from(conns).unwrap_or(u32::MAX);
    let mut tasks = Vec::new();
    match driver {
        SqlDriver::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(size)
                .connect(dsn)
                .await?;
            for c in 0..conns {
                let pool = pool.clone();
                let name = format!("raw-{c}");
                sqlx::query(
                    "INSERT INTO berth_leases (namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version) \
                     VALUES ($1, $2, 'bench', 60000, now(), now(), 1, 1)",
                )
                .bind(ns)
                .bind(&name)
                .execute(&pool)
                .await?;
                let ns = ns.to_owned();
                tasks.push(tokio::spawn(async move {
                    let mut version: i64 = 1;
                    let end = Instant::now() + duration;
                    let mut samples = Samples::default();
                    while Instant::now() < end {
                        let t = Instant::now();
                        let r = sqlx::query(
                            "UPDATE berth_leases SET ttl_ms = $1, renewed_at = now(), version = version + 1 \
                             WHERE namespace = $2 AND name = $3 AND version = $4",
                        )
                        .bind(60_000_i64)
                        .bind(&ns)
                        .bind(&name)
                        .bind(version)
                        .execute(&pool)
                        .await;
                        match r {
                            Ok(done) if done.rows_affected() == 1 => {
                                version += 1;
                                samples.latencies.push(t.elapsed());
                            }
                            _ => samples.errors += 1,
                        }
                    }
                    samples
                }));
            }
        }
        SqlDriver::Mysql => {
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(size)
                .connect(dsn)
                .await?;
            for c in 0..conns {
                let pool = pool.clone();
                let name = format!("raw-{c}");
                sqlx::query(
                    "INSERT INTO berth_leases (namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version) \
                     VALUES (?, ?, 'bench', 60000, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 1, 1)",
                )
                .bind(ns)
                .bind(&name)
                .execute(&pool)
                .await?;
                let ns = ns.to_owned();
                tasks.push(tokio::spawn(async move {
                    let mut version: i64 = 1;
                    let end = Instant::now() + duration;
                    let mut samples = Samples::default();
                    while Instant::now() < end {
                        let t = Instant::now();
                        let r = sqlx::query(
                            "UPDATE berth_leases SET ttl_ms = ?, renewed_at = UTC_TIMESTAMP(6), version = version + 1 \
                             WHERE namespace = ? AND name = ? AND version = ?",
                        )
                        .bind(60_000_i64)
                        .bind(&ns)
                        .bind(&name)
                        .bind(version)
                        .execute(&pool)
                        .await;
                        match r {
                            Ok(done) if done.rows_affected() == 1 => {
                                version += 1;
                                samples.latencies.push(t.elapsed());
                            }
                            _ => samples.errors += 1,
                        }
                    }
                    samples
                }));
            }
        }
        SqlDriver::Sqlite => anyhow::bail!("the raw comparison runs on PostgreSQL and MariaDB"),
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await?);
    }
    Ok(all.summary(duration, 1))
}

fn print_header(title: &str) {
    println!("## {title}\n");
    println!(
        "{}",
        row(&[
            "engine".into(),
            "conns".into(),
            "client".into(),
            "renews/s".into(),
            "p50 ms (per call)".into(),
            "p99 ms (per call)".into(),
            "ratio to raw".into(),
        ])
    );
    println!("|---|---|---|---|---|---|---|");
}

fn print_row(engine: &str, conns: usize, client: &str, s: &Summary, base: Option<f64>) {
    eprintln!("{engine:<9} {conns:>3} conns  {client:<28} {s}");
    println!(
        "{}",
        row(&[
            engine.into(),
            conns.to_string(),
            client.into(),
            format!("{:.0}", s.throughput),
            fmt_ms(s.p50),
            fmt_ms(s.p99),
            base.map_or("-".into(), |b| format!("{:.2}", s.throughput / b)),
        ])
    );
}

/// Renew throughput on one server database: raw CAS, Berth renew, Berth heartbeat batches.
pub(crate) async fn run_server(
    driver: SqlDriver,
    dsn: &str,
    conns: &[usize],
    batch: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let engine = match driver {
        SqlDriver::Postgres => "postgres",
        SqlDriver::Mysql => "mariadb",
        SqlDriver::Sqlite => "sqlite",
    };
    print_header(&format!(
        "SQL renews on {engine}: Berth vs a raw sqlx compare-and-set"
    ));
    for &c in conns {
        let st = store(driver, dsn, c).await.context("connect")?;
        let svc = service(&st);
        let ns = format!("bench-{}", run_id());
        let raw = raw_renews(driver, dsn, &ns, c, duration).await?;
        print_row(engine, c, "raw sqlx UPDATE … WHERE version", &raw, None);
        let one = berth_renews(&svc, &ns, c, 1, duration).await?;
        print_row(
            engine,
            c,
            "berth LeaseService::renew",
            &one,
            Some(raw.throughput),
        );
        let apart = berth_renews(&service_clock_apart(&st), &ns, c, 1, duration).await?;
        print_row(
            engine,
            c,
            "berth renew, clock read apart",
            &apart,
            Some(raw.throughput),
        );
        let hb = berth_renews(&svc, &ns, c, batch, duration).await?;
        print_row(
            engine,
            c,
            &format!("berth heartbeat, {batch} per batch"),
            &hb,
            Some(raw.throughput),
        );
        st.close().await;
    }
    println!();
    Ok(())
}

/// Durable SQLite renews: one per transaction vs heartbeat batches.
pub(crate) async fn run_sqlite(batches: &[usize], duration: Duration) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dsn = format!("sqlite://{}", tmp.path().join("bench.db").display());
    let st = store(SqlDriver::Sqlite, &dsn, 1).await?;
    let svc = service(&st);
    println!("## SQLite (file, WAL, durable commits): renews one by one vs batched heartbeats\n");
    println!(
        "{}",
        row(&[
            "tasks".into(),
            "leases per call".into(),
            "renews/s".into(),
            "p50 ms (per call)".into(),
            "p99 ms (per call)".into(),
            "ratio to one by one".into(),
        ])
    );
    println!("|---|---|---|---|---|---|");
    let ns = format!("bench-{}", run_id());
    let mut base = None;
    for (tasks, batch) in std::iter::once((4usize, 1usize)).chain(batches.iter().map(|b| (1, *b))) {
        let s = berth_renews(&svc, &ns, tasks, batch, duration).await?;
        eprintln!("sqlite    {tasks} tasks  {batch:>5} per call  {s}");
        let ratio = match base {
            None => {
                base = Some(s.throughput);
                "1.00".to_owned()
            }
            Some(b) => format!("{:.2}", s.throughput / b),
        };
        println!(
            "{}",
            row(&[
                tasks.to_string(),
                batch.to_string(),
                format!("{:.0}", s.throughput),
                fmt_ms(s.p50),
                fmt_ms(s.p99),
                ratio,
            ])
        );
    }
    println!();
    st.close().await;
    Ok(())
}
