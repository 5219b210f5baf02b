//! [`SqlStore`]: the compare-and-set register on PostgreSQL, MariaDB/MySQL or SQLite.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_core::clock::truncate_micros;
use berth_core::{
    Expect, FencingToken, HistoryEntry, Holder, LeaseKey, LeaseRecord, LeaseStore, ListParams,
    StoreError, Version, Versioned,
};
use secrecy::ExposeSecret;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{ConnectOptions, Connection as _, Row};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::clock::DbClock;
use crate::config::{
    Migrate, SqlDriver, SqlStoreConfig, mysql_options, postgres_options, sqlite_options,
};
use crate::error::{SqlError, TimedOut, render, store_error};
use crate::migrate;

/// Ended grants kept per key in `berth_lease_history` (by fencing token: the rows of the last
/// this-many grants).
pub const HISTORY_PER_KEY: i64 = 32;

fn history_entry(
    key: &LeaseKey,
    (holder, token, acquired_at, ended_at, reason): (
        String,
        i64,
        OffsetDateTime,
        OffsetDateTime,
        String,
    ),
) -> Result<HistoryEntry, StoreError> {
    let bad = |what: &str| corrupt(key.to_string(), format!("history row: {what}"));
    Ok(HistoryEntry {
        key: key.clone(),
        holder: Holder::new_unbounded(holder).map_err(|_| bad("holder"))?,
        fencing_token: FencingToken::new(token).ok_or_else(|| bad("fencing token"))?,
        acquired_at,
        ended_at,
        reason: berth_core::EndReason::parse(&reason).ok_or_else(|| bad("reason"))?,
    })
}

/// Keys read by one statement of `get_many`.
const GET_MANY_CHUNK: usize = 500;

/// The backend name in logs and metric labels.
pub const BACKEND: &str = "sql";

/// A pooled connection that goes back to the pool only when the call using it ran to its end.
///
/// A call can be cut off part-way: by the store timeout, or because the HTTP client hung up
/// and its request's future was dropped. sqlx 0.9 does not make every step safe to cut off: a
/// `BEGIN` cut off at the wrong moment leaves the session inside a transaction sqlx no longer
/// tracks (every later statement on that connection then runs inside it — acknowledged writes
/// invisible to other sessions and rolled back when it closes, PostgreSQL's `now()` frozen at
/// its start), and a MariaDB connection cut off mid-reply can hang the next statement. A
/// connection whose call did not finish is therefore closed, never reused; the server rolls
/// back whatever it had open. Test: `*_cancelled_calls_leave_no_transaction_open`.
pub(crate) struct Checkout<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    finished: bool,
}

impl<DB: sqlx::Database> Checkout<DB> {
    pub(crate) async fn of(pool: &sqlx::Pool<DB>, driver: SqlDriver) -> Result<Self, StoreError> {
        let conn = pool.acquire().await.map_err(|e| store_error(driver, e))?;
        Ok(Self {
            conn,
            finished: false,
        })
    }

    /// The call ran to its end (successfully or with an answer from the server): the
    /// connection may serve the next one.
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Checkout<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Checkout<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

impl<DB: sqlx::Database> Drop for Checkout<DB> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Evaluates `$body` with `$c` bound to a connection of `$pool` held by a [`Checkout`]: the
/// connection is reused afterwards only if `$body` ran to its end.
macro_rules! with_conn {
    ($pool:expr, $driver:expr, |$c:ident| $body:expr) => {{
        let mut checkout = $crate::store::Checkout::of($pool, $driver).await?;
        let $c = &mut *checkout;
        let out = $body;
        checkout.finish();
        out
    }};
}
pub(crate) use with_conn;

#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(PgPool),
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
}

struct Inner {
    pool: Pool,
    driver: SqlDriver,
    timeout: Duration,
    dsn: String,
    // Keys this process wrote, and on PostgreSQL the keys of transitions any replica wrote,
    // for watchers (see `LeaseStore::change_feed`).
    changes: tokio::sync::broadcast::Sender<LeaseKey>,
    // PostgreSQL: the task that turns NOTIFYs into `changes`.
    listener: Option<tokio::task::JoinHandle<()>>,
    // Identifies this store's clock (`LeaseStore::clock_source`, `Clock::store_source`).
    id: u64,
}

/// Source of [`Inner::id`].
static STORE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.listener {
            task.abort();
        }
    }
}

/// PostgreSQL channel of lease transitions (migration 0004: grants, takeovers and releases of
/// any replica; not renewals).
const PG_CHANNEL: &str = "berth_leases";

/// Feeds `changes` with the keys on [`PG_CHANNEL`], over a connection of its own (`pool`
/// holds one). `PgListener` reconnects by itself after a lost connection; notifications sent
/// meanwhile are lost, which the watchers' polling covers.
async fn listen_postgres(pool: PgPool, changes: tokio::sync::broadcast::Sender<LeaseKey>) {
    loop {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(PG_CHANNEL).await?;
            tracing::debug!(channel = PG_CHANNEL, "listening for lease transitions");
            loop {
                let n = listener.recv().await?;
                match n
                    .payload()
                    .split_once('/')
                    .and_then(|(ns, name)| LeaseKey::new(ns, name).ok())
                {
                    Some(key) => {
                        // No receiver is not an error: nobody watches.
                        let _ = changes.send(key);
                    }
                    None => tracing::debug!(payload = n.payload(), "ignored a notification"),
                }
            }
        };
        let Err::<std::convert::Infallible, sqlx::Error>(e) = listening.await;
        tracing::warn!(error = %render(&e), "lease notifications interrupted; polling covers the gap");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A [`LeaseStore`] on a SQL database. Cheap to clone; clones share one connection pool.
///
/// # Guarantees
/// - Each write is one statement: an insert that does nothing when the key exists, or
///   `UPDATE … SET …, version = version + 1 WHERE namespace = ? AND name = ? AND version = ?`
///   that must affect exactly one row. Anything else is [`StoreError::Conflict`].
/// - Every call is bounded by the configured statement timeout; running out of time, losing
///   the connection, or a busy database is [`StoreError::Unavailable`]. A write that timed out
///   may still have been applied: the caller re-reads before deciding anything.
/// - `list` pushes the namespace, `after` and `limit` filters into SQL and walks the
///   primary-key index in byte order.
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("driver", &self.inner.driver)
            .field("dsn", &self.inner.dsn)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connects, then applies the embedded migrations ([`Migrate::Auto`]) or verifies the schema
    /// ([`Migrate::Off`]).
    ///
    /// # Errors
    /// [`SqlError::Config`] for a DSN the driver cannot use, [`SqlError::Unavailable`] when the
    /// database cannot be reached within `connect_timeout`, [`SqlError::Schema`] when the
    /// schema check fails, [`SqlError::Backend`] otherwise. No message contains the password.
    pub async fn connect(cfg: SqlStoreConfig) -> Result<Self, SqlError> {
        let secret = cfg.password();
        let secret = secret.as_deref();
        let dsn = cfg.dsn.expose_secret();
        let d = cfg.driver;
        let timeout = cfg.connect_timeout;
        let unreachable = |what: String| SqlError::Unavailable {
            driver: d,
            message: what,
        };
        let mut listener = None;
        let pool = match d {
            SqlDriver::Postgres => {
                let ms = cfg.statement_timeout.as_millis().to_string();
                let opts = postgres_options(dsn)?.options([("statement_timeout", ms.as_str())]);
                // One direct connection first: its error says why (the pool would only say
                // "timed out"), and it carries the migration lock.
                let mut conn = tokio::time::timeout(timeout, opts.connect())
                    .await
                    .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
                    .map_err(|e| SqlError::from_sqlx(d, "failed to connect", &e, secret))?;
                match cfg.migrate {
                    Migrate::Auto => {
                        let done = migrate::run_postgres(&mut conn).await?;
                        log_migrations(d, &done);
                        migrate::verify_postgres(Migrate::Auto, &mut conn).await?;
                    }
                    Migrate::Off => migrate::verify_postgres(Migrate::Off, &mut conn).await?,
                }
                let _ = sqlx::Connection::close(conn).await;
                let pool = PgPoolOptions::new()
                    .max_connections(cfg.max_connections.max(1))
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
                    .acquire_timeout(timeout)
                    .connect_with(opts.clone())
                    .await
                    .map_err(|e| SqlError::from_sqlx(d, "failed to open the pool", &e, secret))?;
                listener = Some(
                    PgPoolOptions::new()
                        .max_connections(1)
                        .connect_lazy_with(opts),
                );
                Pool::Postgres(pool)
            }
            SqlDriver::Mysql => {
                let opts = mysql_options(dsn)?;
                let mut conn = tokio::time::timeout(timeout, opts.connect())
                    .await
                    .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
                    .map_err(|e| SqlError::from_sqlx(d, "failed to connect", &e, secret))?;
                match cfg.migrate {
                    Migrate::Auto => {
                        let done = migrate::run_mysql(&mut conn).await?;
                        log_migrations(d, &done);
                        migrate::verify_mysql(Migrate::Auto, &mut conn).await?;
                    }
                    Migrate::Off => migrate::verify_mysql(Migrate::Off, &mut conn).await?,
                }
                let _ = sqlx::Connection::close(conn).await;
                let pool = MySqlPoolOptions::new()
                    .max_connections(cfg.max_connections.max(1))
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
                    .acquire_timeout(timeout)
                    .connect_with(opts)
                    .await
                    .map_err(|e| SqlError::from_sqlx(d, "failed to open the pool", &e, secret))?;
                Pool::Mysql(pool)
            }
            SqlDriver::Sqlite => {
                // One connection for reads and writes: SQLite has one writer, and a single
                // connection keeps every call linearizable. The exclusive lock keeps a second
                // process (a second replica, whose clock would differ) out of the file.
                let opts = sqlite_options(dsn, timeout)?
                    .locking_mode(sqlx::sqlite::SqliteLockingMode::Exclusive);
                let opened = async {
                    // A direct connection first: the pool would only report a timeout. (For
                    // `sqlite::memory:` it opens a separate, throwaway database.)
                    let probe = tokio::time::timeout(timeout, opts.connect())
                        .await
                        .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
                        .map_err(|e| SqlError::from_sqlx(d, "failed to open", &e, secret))?;
                    let _ = sqlx::Connection::close(probe).await;
                    // An in-process connection cannot be cut; skip the per-acquire ping.
                    let pool = SqlitePoolOptions::new()
                        .max_connections(1)
                        .test_before_acquire(false)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .acquire_timeout(timeout)
                        .connect_with(opts.clone())
                        .await
                        .map_err(|e| SqlError::from_sqlx(d, "failed to open", &e, secret))?;
                    let mut conn = pool
                        .acquire()
                        .await
                        .map_err(|e| SqlError::from_sqlx(d, "failed to open", &e, secret))?;
                    match cfg.migrate {
                        Migrate::Auto => {
                            let done = migrate::run_sqlite(&mut conn).await?;
                            log_migrations(d, &done);
                            migrate::verify_sqlite(Migrate::Auto, &mut conn).await?;
                        }
                        Migrate::Off => migrate::verify_sqlite(Migrate::Off, &mut conn).await?,
                    }
                    drop(conn);
                    Ok(pool)
                };
                let pool = match opened.await {
                    Ok(pool) => pool,
                    // SQLite has no server: "unavailable" means another connection holds the
                    // file's lock.
                    Err(SqlError::Unavailable { message, .. }) => {
                        return Err(SqlError::Unavailable {
                            driver: d,
                            message: format!(
                                "{} is locked by another process ({message}); the sqlite store \
                                 serves exactly one API server replica",
                                cfg.redacted_dsn()
                            ),
                        });
                    }
                    Err(e) => return Err(e),
                };
                if cfg.max_connections > 1 {
                    tracing::info!(
                        "the sqlite store uses one connection and serves exactly one API server replica"
                    );
                }
                Pool::Sqlite(pool)
            }
        };
        tracing::info!(driver = %d, dsn = %cfg.redacted_dsn(), "sql store ready");
        let changes = tokio::sync::broadcast::channel(4096).0;
        let listener = listener.map(|p| tokio::spawn(listen_postgres(p, changes.clone())));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                driver: d,
                timeout: cfg.statement_timeout,
                dsn: cfg.redacted_dsn(),
                changes,
                listener,
                id: STORE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }),
        })
    }

    fn announce(&self, key: &LeaseKey) {
        // No receiver is not an error: nobody watches.
        let _ = self.inner.changes.send(key.clone());
    }

    /// The engine.
    pub fn driver(&self) -> SqlDriver {
        self.inner.driver
    }

    /// The clock expiry is judged against: the database's clock for PostgreSQL and
    /// MariaDB/MySQL, the process monotonic clock for SQLite (see
    /// `docs/adr/0003-sql-store-time-source.md`).
    pub fn clock(&self) -> DbClock {
        DbClock::new(self.inner.pool.clone(), self.inner.timeout, self.inner.id)
    }

    /// Closes every pooled connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        if let Some(task) = &self.inner.listener {
            task.abort();
        }
        match &self.inner.pool {
            Pool::Postgres(p) => p.close().await,
            Pool::Mysql(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        timed(self.inner.timeout, op, fut).await
    }
}

/// A pooled connection idle for longer than this is pinged before use.
const IDLE_PING_AFTER: Duration = Duration::from_secs(10);

/// Pings a connection only when it sat idle for a while. sqlx's default pings on every acquire,
/// a second round trip per statement; sqlx also pings each connection as it returns to the pool,
/// so one that broke mid-use is discarded then. What is left is a connection that died while
/// idle, e.g. cut by a firewall or a database restart.
async fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for >= IDLE_PING_AFTER {
        conn.ping().await?;
    }
    Ok(true)
}

fn log_migrations(d: SqlDriver, done: &[u32]) {
    if done.is_empty() {
        tracing::debug!(driver = %d, "sql schema up to date");
    } else {
        tracing::info!(driver = %d, applied = ?done, "applied sql migrations");
    }
}

/// Bounds `fut` by `timeout`; running out of time is `Unavailable`.
pub(crate) async fn timed<T>(
    timeout: Duration,
    op: &'static str,
    fut: impl Future<Output = Result<T, StoreError>> + Send,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                backend: BACKEND,
                source: Box::new(TimedOut { op, timeout }),
            })
        })
}

/// Which rows a list reads, after folding `ListParams` into index-friendly shapes.
enum Range<'a> {
    All,
    Namespace(&'a str),
    NamespaceAfter(&'a str, &'a str),
    After(&'a str, &'a str),
    Nothing,
}

fn range(p: &ListParams) -> Range<'_> {
    match (p.namespace.as_deref(), p.after.as_ref()) {
        (None, None) => Range::All,
        (Some(ns), None) => Range::Namespace(ns),
        (None, Some(a)) => Range::After(a.namespace(), a.name()),
        (Some(ns), Some(a)) => match a.namespace().as_bytes().cmp(ns.as_bytes()) {
            std::cmp::Ordering::Less => Range::Namespace(ns),
            std::cmp::Ordering::Equal => Range::NamespaceAfter(ns, a.name()),
            std::cmp::Ordering::Greater => Range::Nothing,
        },
    }
}

fn limit(p: &ListParams) -> i64 {
    p.limit
        .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

fn ttl_ms(r: &LeaseRecord) -> i64 {
    i64::try_from(r.ttl.as_millis()).unwrap_or(i64::MAX)
}

fn holder_text(r: &LeaseRecord) -> &str {
    r.holder.as_ref().map_or("", Holder::as_str)
}

fn conflict(r: &LeaseRecord) -> StoreError {
    StoreError::Conflict { key: r.key.clone() }
}

/// The columns of one row, before validation.
struct Raw {
    namespace: String,
    name: String,
    holder: String,
    ttl_ms: i64,
    acquired_at: OffsetDateTime,
    renewed_at: OffsetDateTime,
    fencing_token: i64,
    version: i64,
}

fn corrupt(key: String, reason: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key,
        reason: reason.to_string(),
    }
}

fn row_key(ns: Result<String, sqlx::Error>, name: Result<String, sqlx::Error>) -> String {
    match (ns, name) {
        (Ok(ns), Ok(name)) => format!("{ns}/{name}"),
        _ => "<undecodable key>".into(),
    }
}

fn validate(raw: Raw) -> Result<Versioned<LeaseRecord>, StoreError> {
    let id = format!("{}/{}", raw.namespace, raw.name);
    let key = LeaseKey::new(raw.namespace, raw.name).map_err(|e| corrupt(id.clone(), e))?;
    let holder = if raw.holder.is_empty() {
        None
    } else {
        Some(Holder::new_unbounded(raw.holder).map_err(|e| corrupt(id.clone(), e))?)
    };
    let ttl = u64::try_from(raw.ttl_ms)
        .map(Duration::from_millis)
        .map_err(|_| corrupt(id.clone(), format!("negative ttl_ms {}", raw.ttl_ms)))?;
    let fencing_token = FencingToken::new(raw.fencing_token).ok_or_else(|| {
        corrupt(
            id.clone(),
            format!("fencing_token {} is not positive", raw.fencing_token),
        )
    })?;
    let version = Version::new(raw.version).ok_or_else(|| {
        corrupt(
            id.clone(),
            format!("version {} is not positive", raw.version),
        )
    })?;
    Ok(Versioned {
        value: LeaseRecord {
            key,
            holder,
            ttl,
            acquired_at: raw.acquired_at,
            renewed_at: raw.renewed_at,
            fencing_token,
        },
        version,
    })
}

// === PostgreSQL ===

mod pg {
    use super::*;
    use sqlx::postgres::PgConnection;

    pub(super) async fn append_history(
        p: &mut PgConnection,
        e: &HistoryEntry,
    ) -> Result<(), StoreError> {
        let mut tx = p
            .begin()
            .await
            .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        sqlx::query(
            "INSERT INTO berth_lease_history (namespace, name, fencing_token, holder, acquired_at, ended_at, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (namespace, name, fencing_token) DO NOTHING",
        )
        .bind(e.key.namespace())
        .bind(e.key.name())
        .bind(e.fencing_token.get())
        .bind(e.holder.as_str())
        .bind(truncate_micros(e.acquired_at))
        .bind(truncate_micros(e.ended_at))
        .bind(e.reason.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        sqlx::query(
            "DELETE FROM berth_lease_history WHERE namespace = $1 AND name = $2 AND fencing_token <= $3",
        )
        .bind(e.key.namespace())
        .bind(e.key.name())
        .bind(e.fencing_token.get().saturating_sub(HISTORY_PER_KEY))
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        tx.commit()
            .await
            .map_err(|e| store_error(SqlDriver::Postgres, e))
    }

    pub(super) async fn history(
        p: &mut PgConnection,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT holder, fencing_token, acquired_at, ended_at, reason FROM berth_lease_history \
             WHERE namespace = $1 AND name = $2 ORDER BY fencing_token DESC LIMIT $3",
        )
        .bind(key.namespace())
        .bind(key.name())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        rows.iter()
            .map(|row| {
                let got = (|| {
                    Ok::<_, sqlx::Error>((
                        row.try_get::<String, _>(0)?,
                        row.try_get::<i64, _>(1)?,
                        row.try_get::<OffsetDateTime, _>(2)?,
                        row.try_get::<OffsetDateTime, _>(3)?,
                        row.try_get::<String, _>(4)?,
                    ))
                })()
                .map_err(|e| corrupt(key.to_string(), e))?;
                history_entry(key, got)
            })
            .collect()
    }

    pub(super) fn decode(row: &PgRow) -> Result<Versioned<LeaseRecord>, StoreError> {
        let raw = (|| {
            Ok::<_, sqlx::Error>(Raw {
                namespace: row.try_get(0)?,
                name: row.try_get(1)?,
                holder: row.try_get(2)?,
                ttl_ms: row.try_get(3)?,
                acquired_at: row.try_get(4)?,
                renewed_at: row.try_get(5)?,
                fencing_token: row.try_get(6)?,
                version: row.try_get(7)?,
            })
        })()
        .map_err(|e| corrupt(row_key(row.try_get(0), row.try_get(1)), e))?;
        validate(raw)
    }

    pub(super) async fn get(
        p: &mut PgConnection,
        key: &LeaseKey,
    ) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        let row = sqlx::query(
            "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
             FROM berth_leases WHERE namespace = $1 AND name = $2",
        )
        .bind(key.namespace())
        .bind(key.name())
        .fetch_optional(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        row.as_ref().map(decode).transpose()
    }

    /// One statement: the record (if any) and `now()`, the start of the statement's implicit
    /// transaction, which precedes the snapshot the record is read from (the snapshot is
    /// taken when the statement is bound; `statement_timestamp()` is set again when it
    /// executes, a little later). `now()` would stand still inside a stray transaction, so the
    /// statement also reads `statement_timestamp()`: if the two are further apart than a
    /// statement takes, the session is inside one; it is rolled back and the call fails.
    pub(super) async fn get_with_clock(
        p: &mut PgConnection,
        key: &LeaseKey,
    ) -> Result<(Option<Versioned<LeaseRecord>>, OffsetDateTime), StoreError> {
        let row = sqlx::query(
            "SELECT l.namespace, l.name, l.holder, l.ttl_ms, l.acquired_at, l.renewed_at, \
             l.fencing_token, l.version, now(), statement_timestamp() \
             FROM (SELECT 1) AS one LEFT JOIN berth_leases l ON l.namespace = $1 AND l.name = $2",
        )
        .bind(key.namespace())
        .bind(key.name())
        .fetch_one(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        let at = |i| {
            row.try_get::<OffsetDateTime, _>(i)
                .map_err(|e| corrupt(key.to_string(), e))
        };
        let (now, statement) = (at(8)?, at(9)?);
        if statement - now > time::Duration::seconds(1) {
            let _ = sqlx::query("ROLLBACK").execute(&mut *p).await;
            return Err(StoreError::Unavailable {
                backend: BACKEND,
                source: format!(
                    "a pooled connection was inside a transaction that began at {now}; rolled back"
                )
                .into(),
            });
        }
        let present: Option<String> = row.try_get(0).map_err(|e| corrupt(key.to_string(), e))?;
        let record = present.map(|_| decode(&row)).transpose()?;
        Ok((record, truncate_micros(now.to_offset(UtcOffset::UTC))))
    }

    /// Reads up to [`GET_MANY_CHUNK`] keys in one statement.
    pub(super) async fn get_chunk(
        p: &mut PgConnection,
        keys: &[LeaseKey],
    ) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let ph: Vec<String> = (0..keys.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let sql = format!(
            "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
             FROM berth_leases WHERE (namespace, name) IN ({})",
            ph.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in keys {
            q = q.bind(k.namespace()).bind(k.name());
        }
        let rows = q
            .fetch_all(&mut *p)
            .await
            .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn list(
        p: &mut PgConnection,
        params: &ListParams,
    ) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let lim = limit(params);
        let q = match range(params) {
            Range::Nothing => return Ok(Vec::new()),
            Range::All => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases ORDER BY namespace, name LIMIT $1",
            )
            .bind(lim),
            Range::Namespace(ns) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE namespace = $1 ORDER BY namespace, name LIMIT $2",
            )
            .bind(ns)
            .bind(lim),
            Range::NamespaceAfter(ns, after) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE namespace = $1 AND name > $2 ORDER BY namespace, name LIMIT $3",
            )
            .bind(ns)
            .bind(after)
            .bind(lim),
            Range::After(ns, name) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE (namespace, name) > ($1, $2) ORDER BY namespace, name LIMIT $3",
            )
            .bind(ns)
            .bind(name)
            .bind(lim),
        };
        let rows = q
            .fetch_all(&mut *p)
            .await
            .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn put<'e, E: sqlx::PgExecutor<'e>>(
        p: E,
        r: &LeaseRecord,
        expect: Expect,
    ) -> Result<Version, StoreError> {
        let acquired = truncate_micros(r.acquired_at);
        let renewed = truncate_micros(r.renewed_at);
        let res = match expect {
            Expect::Absent => sqlx::query(
                "INSERT INTO berth_leases (namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1) ON CONFLICT (namespace, name) DO NOTHING",
            )
            .bind(r.key.namespace())
            .bind(r.key.name())
            .bind(holder_text(r))
            .bind(ttl_ms(r))
            .bind(acquired)
            .bind(renewed)
            .bind(r.fencing_token.get()),
            Expect::Version(v) => sqlx::query(
                "UPDATE berth_leases SET holder = $3, ttl_ms = $4, acquired_at = $5, renewed_at = $6, \
                 fencing_token = $7, version = version + 1 \
                 WHERE namespace = $1 AND name = $2 AND version = $8",
            )
            .bind(r.key.namespace())
            .bind(r.key.name())
            .bind(holder_text(r))
            .bind(ttl_ms(r))
            .bind(acquired)
            .bind(renewed)
            .bind(r.fencing_token.get())
            .bind(v.get()),
        };
        let res = res
            .execute(p)
            .await
            .map_err(|e| store_error(SqlDriver::Postgres, e))?;
        written(res.rows_affected(), r, expect)
    }
}

/// A statement error other than a conflict (it aborts the transaction on PostgreSQL): the
/// batch is rolled back and fails as a whole.
fn hard_failure(out: &[Result<Version, StoreError>]) -> Option<StoreError> {
    out.iter()
        .find_map(|r| r.as_ref().err().filter(|e| !e.is_conflict()))
        .map(batch_failure)
}

/// The error each item of a failed batch reports.
fn batch_failure(e: &StoreError) -> StoreError {
    let source: berth_core::BoxError = format!("batch write failed: {e}").into();
    if e.is_retryable() {
        StoreError::Unavailable {
            backend: BACKEND,
            source,
        }
    } else {
        StoreError::Backend {
            backend: BACKEND,
            source,
        }
    }
}

fn written(rows: u64, r: &LeaseRecord, expect: Expect) -> Result<Version, StoreError> {
    if rows != 1 {
        return Err(conflict(r));
    }
    Ok(match expect {
        Expect::Absent => Version::INITIAL,
        Expect::Version(v) => v.next(),
    })
}

// === MariaDB / MySQL ===

mod my {
    use super::*;
    use sqlx::mysql::MySqlConnection;

    fn utc(t: OffsetDateTime) -> PrimitiveDateTime {
        let t = truncate_micros(t).to_offset(UtcOffset::UTC);
        PrimitiveDateTime::new(t.date(), t.time())
    }

    pub(super) async fn append_history(
        p: &mut MySqlConnection,
        e: &HistoryEntry,
    ) -> Result<(), StoreError> {
        let mut tx = p
            .begin()
            .await
            .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        sqlx::query(
            "INSERT INTO berth_lease_history (namespace, name, fencing_token, holder, acquired_at, ended_at, reason) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE fencing_token = fencing_token",
        )
        .bind(e.key.namespace())
        .bind(e.key.name())
        .bind(e.fencing_token.get())
        .bind(e.holder.as_str())
        .bind(utc(e.acquired_at))
        .bind(utc(e.ended_at))
        .bind(e.reason.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        sqlx::query(
            "DELETE FROM berth_lease_history WHERE namespace = ? AND name = ? AND fencing_token <= ?",
        )
        .bind(e.key.namespace())
        .bind(e.key.name())
        .bind(e.fencing_token.get().saturating_sub(HISTORY_PER_KEY))
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        tx.commit()
            .await
            .map_err(|e| store_error(SqlDriver::Mysql, e))
    }

    pub(super) async fn history(
        p: &mut MySqlConnection,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT holder, fencing_token, acquired_at, ended_at, reason FROM berth_lease_history \
             WHERE namespace = ? AND name = ? ORDER BY fencing_token DESC LIMIT ?",
        )
        .bind(key.namespace())
        .bind(key.name())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        rows.iter()
            .map(|row| {
                let got = (|| {
                    Ok::<_, sqlx::Error>((
                        row.try_get::<String, _>(0)?,
                        row.try_get::<i64, _>(1)?,
                        row.try_get::<PrimitiveDateTime, _>(2)?.assume_utc(),
                        row.try_get::<PrimitiveDateTime, _>(3)?.assume_utc(),
                        row.try_get::<String, _>(4)?,
                    ))
                })()
                .map_err(|e| corrupt(key.to_string(), e))?;
                history_entry(key, got)
            })
            .collect()
    }

    pub(super) fn decode(row: &MySqlRow) -> Result<Versioned<LeaseRecord>, StoreError> {
        let raw = (|| {
            let acquired: PrimitiveDateTime = row.try_get(4)?;
            let renewed: PrimitiveDateTime = row.try_get(5)?;
            Ok::<_, sqlx::Error>(Raw {
                namespace: row.try_get(0)?,
                name: row.try_get(1)?,
                holder: row.try_get(2)?,
                ttl_ms: row.try_get(3)?,
                acquired_at: acquired.assume_utc(),
                renewed_at: renewed.assume_utc(),
                fencing_token: row.try_get(6)?,
                version: row.try_get(7)?,
            })
        })()
        .map_err(|e| corrupt(row_key(row.try_get(0), row.try_get(1)), e))?;
        validate(raw)
    }

    pub(super) async fn get(
        p: &mut MySqlConnection,
        key: &LeaseKey,
    ) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        let row = sqlx::query(
            "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
             FROM berth_leases WHERE namespace = ? AND name = ?",
        )
        .bind(key.namespace())
        .bind(key.name())
        .fetch_optional(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        row.as_ref().map(decode).transpose()
    }

    /// One statement: the record (if any) and `UTC_TIMESTAMP(6)`, the statement's start,
    /// which precedes the read view the record is read from.
    pub(super) async fn get_with_clock(
        p: &mut MySqlConnection,
        key: &LeaseKey,
    ) -> Result<(Option<Versioned<LeaseRecord>>, OffsetDateTime), StoreError> {
        let row = sqlx::query(
            "SELECT l.namespace, l.name, l.holder, l.ttl_ms, l.acquired_at, l.renewed_at, \
             l.fencing_token, l.version, UTC_TIMESTAMP(6) \
             FROM (SELECT 1) AS one LEFT JOIN berth_leases l ON l.namespace = ? AND l.name = ?",
        )
        .bind(key.namespace())
        .bind(key.name())
        .fetch_one(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        let now: PrimitiveDateTime = row.try_get(8).map_err(|e| corrupt(key.to_string(), e))?;
        let present: Option<String> = row.try_get(0).map_err(|e| corrupt(key.to_string(), e))?;
        let record = present.map(|_| decode(&row)).transpose()?;
        Ok((record, truncate_micros(now.assume_utc())))
    }

    /// Reads up to [`GET_MANY_CHUNK`] keys in one statement.
    pub(super) async fn get_chunk(
        p: &mut MySqlConnection,
        keys: &[LeaseKey],
    ) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let ph: Vec<&str> = keys.iter().map(|_| "(?, ?)").collect();
        let sql = format!(
            "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
             FROM berth_leases WHERE (namespace, name) IN ({})",
            ph.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in keys {
            q = q.bind(k.namespace()).bind(k.name());
        }
        let rows = q
            .fetch_all(&mut *p)
            .await
            .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn list(
        p: &mut MySqlConnection,
        params: &ListParams,
    ) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let lim = limit(params);
        let q = match range(params) {
            Range::Nothing => return Ok(Vec::new()),
            Range::All => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases ORDER BY namespace, name LIMIT ?",
            )
            .bind(lim),
            Range::Namespace(ns) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE namespace = ? ORDER BY namespace, name LIMIT ?",
            )
            .bind(ns)
            .bind(lim),
            Range::NamespaceAfter(ns, after) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE namespace = ? AND name > ? ORDER BY namespace, name LIMIT ?",
            )
            .bind(ns)
            .bind(after)
            .bind(lim),
            // An OR of two index ranges: both MariaDB and MySQL plan it as a range scan.
            Range::After(ns, name) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE namespace > ? OR (namespace = ? AND name > ?) \
                 ORDER BY namespace, name LIMIT ?",
            )
            .bind(ns)
            .bind(ns)
            .bind(name)
            .bind(lim),
        };
        let rows = q
            .fetch_all(&mut *p)
            .await
            .map_err(|e| store_error(SqlDriver::Mysql, e))?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn put<'e, E: sqlx::MySqlExecutor<'e>>(
        p: E,
        r: &LeaseRecord,
        expect: Expect,
    ) -> Result<Version, StoreError> {
        let res = match expect {
            // A plain INSERT: a duplicate key (error 1062) is the conflict. INSERT IGNORE would
            // also swallow truncation and other errors.
            Expect::Absent => sqlx::query(
                "INSERT INTO berth_leases (namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
            )
            .bind(r.key.namespace())
            .bind(r.key.name())
            .bind(holder_text(r))
            .bind(ttl_ms(r))
            .bind(utc(r.acquired_at))
            .bind(utc(r.renewed_at))
            .bind(r.fencing_token.get()),
            // The version bump always changes the row, so MySQL's "rows changed" count is 1
            // exactly when the predicate matched, with or without CLIENT_FOUND_ROWS.
            Expect::Version(v) => sqlx::query(
                "UPDATE berth_leases SET holder = ?, ttl_ms = ?, acquired_at = ?, renewed_at = ?, \
                 fencing_token = ?, version = version + 1 \
                 WHERE namespace = ? AND name = ? AND version = ?",
            )
            .bind(holder_text(r))
            .bind(ttl_ms(r))
            .bind(utc(r.acquired_at))
            .bind(utc(r.renewed_at))
            .bind(r.fencing_token.get())
            .bind(r.key.namespace())
            .bind(r.key.name())
            .bind(v.get()),
        };
        match res.execute(p).await {
            Ok(res) => written(res.rows_affected(), r, expect),
            Err(e) if is_duplicate(&e) => Err(conflict(r)),
            Err(e) => Err(store_error(SqlDriver::Mysql, e)),
        }
    }

    fn is_duplicate(e: &sqlx::Error) -> bool {
        e.as_database_error()
            .is_some_and(|d| d.is_unique_violation() || d.code().as_deref() == Some("23000"))
    }
}

// === SQLite ===

mod lite {
    use super::*;
    use sqlx::sqlite::SqliteConnection;

    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );

    pub(super) fn format(t: OffsetDateTime) -> Result<String, StoreError> {
        truncate_micros(t)
            .to_offset(UtcOffset::UTC)
            .format(FORMAT)
            .map_err(|e| StoreError::Backend {
                backend: BACKEND,
                source: Box::new(e),
            })
    }

    fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
    }

    pub(super) async fn append_history(
        p: &mut SqliteConnection,
        e: &HistoryEntry,
    ) -> Result<(), StoreError> {
        let mut tx = p
            .begin()
            .await
            .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        sqlx::query(
            "INSERT INTO berth_lease_history (namespace, name, fencing_token, holder, acquired_at, ended_at, reason) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, name, fencing_token) DO NOTHING",
        )
        .bind(e.key.namespace())
        .bind(e.key.name())
        .bind(e.fencing_token.get())
        .bind(e.holder.as_str())
        .bind(format(e.acquired_at)?)
        .bind(format(e.ended_at)?)
        .bind(e.reason.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        sqlx::query(
            "DELETE FROM berth_lease_history WHERE namespace = ? AND name = ? AND fencing_token <= ?",
        )
        .bind(e.key.namespace())
        .bind(e.key.name())
        .bind(e.fencing_token.get().saturating_sub(HISTORY_PER_KEY))
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        tx.commit()
            .await
            .map_err(|e| store_error(SqlDriver::Sqlite, e))
    }

    pub(super) async fn history(
        p: &mut SqliteConnection,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT holder, fencing_token, acquired_at, ended_at, reason FROM berth_lease_history \
             WHERE namespace = ? AND name = ? ORDER BY fencing_token DESC LIMIT ?",
        )
        .bind(key.namespace())
        .bind(key.name())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        rows.iter()
            .map(|row| {
                let got = (|| {
                    Ok::<_, String>((
                        row.try_get::<String, _>(0).map_err(|e| e.to_string())?,
                        row.try_get::<i64, _>(1).map_err(|e| e.to_string())?,
                        parse(&row.try_get::<String, _>(2).map_err(|e| e.to_string())?)
                            .map_err(|e| e.to_string())?,
                        parse(&row.try_get::<String, _>(3).map_err(|e| e.to_string())?)
                            .map_err(|e| e.to_string())?,
                        row.try_get::<String, _>(4).map_err(|e| e.to_string())?,
                    ))
                })()
                .map_err(|e| corrupt(key.to_string(), e))?;
                history_entry(key, got)
            })
            .collect()
    }

    pub(super) fn decode(row: &SqliteRow) -> Result<Versioned<LeaseRecord>, StoreError> {
        let id = || row_key(row.try_get(0), row.try_get(1));
        let (raw, acquired, renewed) = (|| {
            let acquired: String = row.try_get(4)?;
            let renewed: String = row.try_get(5)?;
            Ok::<_, sqlx::Error>((
                Raw {
                    namespace: row.try_get(0)?,
                    name: row.try_get(1)?,
                    holder: row.try_get(2)?,
                    ttl_ms: row.try_get(3)?,
                    acquired_at: OffsetDateTime::UNIX_EPOCH,
                    renewed_at: OffsetDateTime::UNIX_EPOCH,
                    fencing_token: row.try_get(6)?,
                    version: row.try_get(7)?,
                },
                acquired,
                renewed,
            ))
        })()
        .map_err(|e| corrupt(id(), e))?;
        let acquired_at = parse(&acquired)
            .map_err(|e| corrupt(id(), format!("acquired_at {acquired:?}: {e}")))?;
        let renewed_at =
            parse(&renewed).map_err(|e| corrupt(id(), format!("renewed_at {renewed:?}: {e}")))?;
        validate(Raw {
            acquired_at: acquired_at.to_offset(UtcOffset::UTC),
            renewed_at: renewed_at.to_offset(UtcOffset::UTC),
            ..raw
        })
    }

    pub(super) async fn get(
        p: &mut SqliteConnection,
        key: &LeaseKey,
    ) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        let row = sqlx::query(
            "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
             FROM berth_leases WHERE namespace = ? AND name = ?",
        )
        .bind(key.namespace())
        .bind(key.name())
        .fetch_optional(&mut *p)
        .await
        .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Reads up to [`GET_MANY_CHUNK`] keys in one statement.
    pub(super) async fn get_chunk(
        p: &mut SqliteConnection,
        keys: &[LeaseKey],
    ) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let ph: Vec<&str> = keys.iter().map(|_| "(?, ?)").collect();
        let sql = format!(
            "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
             FROM berth_leases WHERE (namespace, name) IN ({})",
            ph.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in keys {
            q = q.bind(k.namespace()).bind(k.name());
        }
        let rows = q
            .fetch_all(&mut *p)
            .await
            .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn list(
        p: &mut SqliteConnection,
        params: &ListParams,
    ) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let lim = limit(params);
        let q = match range(params) {
            Range::Nothing => return Ok(Vec::new()),
            Range::All => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases ORDER BY namespace, name LIMIT ?",
            )
            .bind(lim),
            Range::Namespace(ns) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE namespace = ? ORDER BY namespace, name LIMIT ?",
            )
            .bind(ns)
            .bind(lim),
            Range::NamespaceAfter(ns, after) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE namespace = ? AND name > ? ORDER BY namespace, name LIMIT ?",
            )
            .bind(ns)
            .bind(after)
            .bind(lim),
            Range::After(ns, name) => sqlx::query(
                "SELECT namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version \
                 FROM berth_leases WHERE (namespace, name) > (?, ?) ORDER BY namespace, name LIMIT ?",
            )
            .bind(ns)
            .bind(name)
            .bind(lim),
        };
        let rows = q
            .fetch_all(&mut *p)
            .await
            .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn put<'e, E: sqlx::SqliteExecutor<'e>>(
        p: E,
        r: &LeaseRecord,
        expect: Expect,
    ) -> Result<Version, StoreError> {
        let acquired = format(r.acquired_at)?;
        let renewed = format(r.renewed_at)?;
        let res = match expect {
            Expect::Absent => sqlx::query(
                "INSERT INTO berth_leases (namespace, name, holder, ttl_ms, acquired_at, renewed_at, fencing_token, version) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (namespace, name) DO NOTHING",
            )
            .bind(r.key.namespace())
            .bind(r.key.name())
            .bind(holder_text(r))
            .bind(ttl_ms(r))
            .bind(acquired)
            .bind(renewed)
            .bind(r.fencing_token.get()),
            Expect::Version(v) => sqlx::query(
                "UPDATE berth_leases SET holder = ?, ttl_ms = ?, acquired_at = ?, renewed_at = ?, \
                 fencing_token = ?, version = version + 1 \
                 WHERE namespace = ? AND name = ? AND version = ?",
            )
            .bind(holder_text(r))
            .bind(ttl_ms(r))
            .bind(acquired)
            .bind(renewed)
            .bind(r.fencing_token.get())
            .bind(r.key.namespace())
            .bind(r.key.name())
            .bind(v.get()),
        };
        let res = res
            .execute(p)
            .await
            .map_err(|e| store_error(SqlDriver::Sqlite, e))?;
        written(res.rows_affected(), r, expect)
    }
}

#[async_trait::async_trait]
impl LeaseStore for SqlStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %key, driver = %self.inner.driver))]
    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        self.timed("get", async {
            match &self.inner.pool {
                Pool::Postgres(p) => with_conn!(p, self.inner.driver, |c| pg::get(c, key).await),
                Pool::Mysql(p) => with_conn!(p, self.inner.driver, |c| my::get(c, key).await),
                Pool::Sqlite(p) => with_conn!(p, self.inner.driver, |c| lite::get(c, key).await),
            }
        })
        .await
    }

    /// PostgreSQL and MariaDB/MySQL: the database clock is the store's clock
    /// ([`SqlStore::clock`]); SQLite's is the process clock, read apart.
    fn clock_source(&self) -> Option<u64> {
        (self.inner.driver != SqlDriver::Sqlite).then_some(self.inner.id)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %key, driver = %self.inner.driver))]
    async fn get_with_clock(
        &self,
        key: &LeaseKey,
    ) -> Result<(Option<Versioned<LeaseRecord>>, OffsetDateTime), StoreError> {
        self.timed("get", async {
            match &self.inner.pool {
                Pool::Postgres(p) => {
                    with_conn!(p, self.inner.driver, |c| pg::get_with_clock(c, key).await)
                }
                Pool::Mysql(p) => {
                    with_conn!(p, self.inner.driver, |c| my::get_with_clock(c, key).await)
                }
                Pool::Sqlite(_) => Err(StoreError::Backend {
                    backend: BACKEND,
                    source: "sqlite stores read the process clock apart".into(),
                }),
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(driver = %self.inner.driver))]
    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        self.timed("list", async {
            match &self.inner.pool {
                Pool::Postgres(p) => {
                    with_conn!(p, self.inner.driver, |c| pg::list(c, params).await)
                }
                Pool::Mysql(p) => with_conn!(p, self.inner.driver, |c| my::list(c, params).await),
                Pool::Sqlite(p) => {
                    with_conn!(p, self.inner.driver, |c| lite::list(c, params).await)
                }
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %record.key, driver = %self.inner.driver))]
    async fn put(&self, record: &LeaseRecord, expect: Expect) -> Result<Version, StoreError> {
        let r = self
            .timed("put", async {
                match &self.inner.pool {
                    Pool::Postgres(p) => {
                        with_conn!(p, self.inner.driver, |c| pg::put(c, record, expect).await)
                    }
                    Pool::Mysql(p) => {
                        with_conn!(p, self.inner.driver, |c| my::put(c, record, expect).await)
                    }
                    Pool::Sqlite(p) => {
                        with_conn!(p, self.inner.driver, |c| lite::put(c, record, expect).await)
                    }
                }
            })
            .await;
        if r.is_ok() {
            self.announce(&record.key);
        }
        r
    }

    /// This process's writes; on PostgreSQL also every replica's grants, takeovers and releases
    /// (`NOTIFY`, migration 0004). Complete for SQLite (one replica owns the file); partial for
    /// PostgreSQL (renewals of other replicas, notifications lost while reconnecting) and
    /// MariaDB (other replicas' writes), which watchers complete by polling.
    fn change_feed(&self) -> Option<berth_core::ChangeFeed> {
        Some(berth_core::ChangeFeed {
            keys: self.inner.changes.subscribe(),
            complete: self.inner.driver == SqlDriver::Sqlite,
        })
    }

    fn keeps_history(&self) -> bool {
        true
    }

    /// Appends to `berth_lease_history` and trims the key to its last [`HISTORY_PER_KEY`]
    /// grants, in one transaction; appending the same grant twice is a no-op.
    async fn append_history(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.timed("append_history", async {
            match &self.inner.pool {
                Pool::Postgres(p) => {
                    with_conn!(p, self.inner.driver, |c| pg::append_history(c, entry).await)
                }
                Pool::Mysql(p) => {
                    with_conn!(p, self.inner.driver, |c| my::append_history(c, entry).await)
                }
                Pool::Sqlite(p) => {
                    with_conn!(p, self.inner.driver, |c| lite::append_history(c, entry)
                        .await)
                }
            }
        })
        .await
    }

    async fn history(
        &self,
        key: &LeaseKey,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        self.timed("history", async {
            match &self.inner.pool {
                Pool::Postgres(p) => {
                    with_conn!(p, self.inner.driver, |c| pg::history(c, key, limit).await)
                }
                Pool::Mysql(p) => {
                    with_conn!(p, self.inner.driver, |c| my::history(c, key, limit).await)
                }
                Pool::Sqlite(p) => {
                    with_conn!(p, self.inner.driver, |c| lite::history(c, key, limit).await)
                }
            }
        })
        .await
        .map(Some)
    }

    /// One statement per [`GET_MANY_CHUNK`] keys (`WHERE (namespace, name) IN (…)`).
    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len(), driver = %self.inner.driver))]
    async fn get_many(
        &self,
        keys: &[LeaseKey],
    ) -> Result<Vec<Option<Versioned<LeaseRecord>>>, StoreError> {
        let mut found = std::collections::HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(GET_MANY_CHUNK) {
            let rows = self
                .timed("get_many", async {
                    match &self.inner.pool {
                        Pool::Postgres(p) => {
                            with_conn!(p, self.inner.driver, |c| pg::get_chunk(c, chunk).await)
                        }
                        Pool::Mysql(p) => {
                            with_conn!(p, self.inner.driver, |c| my::get_chunk(c, chunk).await)
                        }
                        Pool::Sqlite(p) => {
                            with_conn!(p, self.inner.driver, |c| lite::get_chunk(c, chunk).await)
                        }
                    }
                })
                .await?;
            for v in rows {
                found.insert(v.value.key.clone(), v);
            }
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// One transaction for the whole batch: one durable commit instead of one per item. A
    /// conflicting item writes nothing and the others still commit; a failure of the
    /// transaction itself fails every item (none was written, or, after a timeout of the
    /// commit, the caller re-reads as after any timed-out write).
    #[tracing::instrument(level = "debug", skip_all, fields(items = items.len(), driver = %self.inner.driver))]
    async fn put_batch(&self, items: &[(LeaseRecord, Expect)]) -> Vec<Result<Version, StoreError>> {
        if items.len() <= 1 {
            let mut out = Vec::with_capacity(items.len());
            for (record, expect) in items {
                out.push(self.put(record, *expect).await);
            }
            return out;
        }
        let d = self.inner.driver;
        let r = self
            .timed("put_batch", async {
                let mut out = Vec::with_capacity(items.len());
                match &self.inner.pool {
                    Pool::Postgres(p) => with_conn!(p, d, |c| async {
                        let mut tx = c.begin().await.map_err(|e| store_error(d, e))?;
                        for (record, expect) in items {
                            out.push(pg::put(&mut *tx, record, *expect).await);
                        }
                        if let Some(e) = hard_failure(&out) {
                            let _ = tx.rollback().await;
                            return Err(e);
                        }
                        tx.commit().await.map_err(|e| store_error(d, e))
                    }
                    .await)?,
                    Pool::Mysql(p) => with_conn!(p, d, |c| async {
                        let mut tx = c.begin().await.map_err(|e| store_error(d, e))?;
                        for (record, expect) in items {
                            out.push(my::put(&mut *tx, record, *expect).await);
                        }
                        if let Some(e) = hard_failure(&out) {
                            let _ = tx.rollback().await;
                            return Err(e);
                        }
                        tx.commit().await.map_err(|e| store_error(d, e))
                    }
                    .await)?,
                    Pool::Sqlite(p) => with_conn!(p, d, |c| async {
                        let mut tx = c.begin().await.map_err(|e| store_error(d, e))?;
                        for (record, expect) in items {
                            out.push(lite::put(&mut *tx, record, *expect).await);
                        }
                        if let Some(e) = hard_failure(&out) {
                            let _ = tx.rollback().await;
                            return Err(e);
                        }
                        tx.commit().await.map_err(|e| store_error(d, e))
                    }
                    .await)?,
                }
                Ok(out)
            })
            .await;
        match r {
            Ok(out) => {
                for ((record, _), r) in items.iter().zip(&out) {
                    if r.is_ok() {
                        self.announce(&record.key);
                    }
                }
                out
            }
            Err(e) => items.iter().map(|_| Err(batch_failure(&e))).collect(),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", async {
            let d = self.inner.driver;
            let r = match &self.inner.pool {
                Pool::Postgres(p) => {
                    with_conn!(p, d, |c| sqlx::query("SELECT 1").execute(c).await.map(drop))
                }
                Pool::Mysql(p) => {
                    with_conn!(p, d, |c| sqlx::query("SELECT 1").execute(c).await.map(drop))
                }
                Pool::Sqlite(p) => {
                    with_conn!(p, d, |c| sqlx::query("SELECT 1").execute(c).await.map(drop))
                }
            };
            r.map_err(|e| store_error(d, e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_ranges_fold_the_filters() {
        let k = |ns: &str, n: &str| LeaseKey::new(ns, n).unwrap();
        let p = |ns: Option<&str>, after: Option<LeaseKey>| ListParams {
            namespace: ns.map(str::to_string),
            after,
            limit: None,
        };
        assert!(matches!(range(&p(None, None)), Range::All));
        assert!(matches!(range(&p(Some("b"), None)), Range::Namespace("b")));
        assert!(matches!(
            range(&p(Some("b"), Some(k("a", "z")))),
            Range::Namespace("b")
        ));
        assert!(matches!(
            range(&p(Some("b"), Some(k("b", "x")))),
            Range::NamespaceAfter("b", "x")
        ));
        assert!(matches!(
            range(&p(Some("b"), Some(k("c", "a")))),
            Range::Nothing
        ));
        assert!(matches!(
            range(&p(None, Some(k("c", "a")))),
            Range::After("c", "a")
        ));
        assert_eq!(limit(&p(None, None)), i64::MAX);
    }

    /// A session left inside a transaction (as a cut-off `BEGIN` used to leave one) is caught
    /// by the combined clock-and-record read: it fails, and the transaction is rolled back.
    #[tokio::test]
    async fn a_stray_transaction_is_caught_by_the_clock_read() {
        use sqlx::Connection as _;
        const VAR: &str = "BERTH_TEST_POSTGRES_DSN";
        let Some(dsn) = std::env::var(VAR).ok().filter(|v| !v.trim().is_empty()) else {
            assert_ne!(
                std::env::var("BERTH_REQUIRE_INTEGRATION").as_deref(),
                Ok("1"),
                "{VAR} is not set and BERTH_REQUIRE_INTEGRATION=1"
            );
            eprintln!("skipped: set {VAR} to run a_stray_transaction_is_caught_by_the_clock_read");
            return;
        };
        let mut c = sqlx::PgConnection::connect(dsn.trim())
            .await
            .expect("connect");
        let schema = format!("berth_stray_{:08x}", rand::random::<u32>());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}"
        )))
        .execute(&mut c)
        .await
        .expect("schema");
        crate::migrate::run_postgres(&mut c).await.expect("migrate");
        let key = LeaseKey::new("ns", "k").unwrap();
        let (absent, _) = pg::get_with_clock(&mut c, &key)
            .await
            .expect("clean session");
        assert!(absent.is_none());
        sqlx::raw_sql("BEGIN").execute(&mut c).await.expect("begin");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let e = pg::get_with_clock(&mut c, &key)
            .await
            .expect_err("stray transaction");
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.to_string().contains("rolled back") || format!("{e:?}").contains("rolled back"),
            "{e:?}"
        );
        pg::get_with_clock(&mut c, &key)
            .await
            .expect("the session is clean again");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut c)
            .await
            .expect("drop schema");
    }

    #[test]
    fn sqlite_times_are_fixed_width_utc() {
        let t = time::macros::datetime!(2030-01-01 01:02:03.123456789 +02:00);
        assert_eq!(lite::format(t).unwrap(), "2029-12-31T23:02:03.123456Z");
        let t = time::macros::datetime!(2030-01-01 00:00:00 UTC);
        assert_eq!(lite::format(t).unwrap(), "2030-01-01T00:00:00.000000Z");
    }
}
