//! [`DbClock`]: the time source expiry is judged against on a SQL store.

use std::fmt;
use std::time::Duration;

use berth_core::clock::truncate_micros;
use berth_core::{Clock, StoreError, SystemClock};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::config::SqlDriver;
use crate::error::store_error;
use crate::store::{Pool, timed, with_conn};

/// The clock of a [`crate::SqlStore`] (SPEC §2 "Time", `docs/adr/0003-sql-store-time-source.md`).
///
/// - PostgreSQL and MariaDB/MySQL: the database server's clock (`clock_timestamp()` /
///   `UTC_TIMESTAMP(6)`), read once per lease operation. Every API server replica on one
///   database judges expiry against that one clock, so the replicas' own clocks need not agree.
///   It is the database host's wall clock, so it is not monotonic: a step on that host moves
///   every replica's notion of time at once.
/// - SQLite: the process monotonic clock ([`SystemClock`]). SQLite has no server; its `now` is
///   this host's wall clock at millisecond precision, which steps with NTP. The store serves one
///   replica, so the process clock is the single time source and never goes backwards.
#[derive(Clone)]
pub struct DbClock {
    source: Source,
    timeout: Duration,
    /// The store's [`berth_core::LeaseStore::clock_source`].
    store: u64,
}

#[derive(Clone)]
enum Source {
    Database(Pool),
    Process(SystemClock),
}

impl fmt::Debug for DbClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Database(Pool::Postgres(_)) => "postgres",
            Source::Database(Pool::Mysql(_)) => "mysql",
            Source::Database(Pool::Sqlite(_)) => "sqlite",
            Source::Process(_) => "process monotonic",
        };
        f.debug_struct("DbClock")
            .field("source", &source)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl DbClock {
    pub(crate) fn new(pool: Pool, timeout: Duration, store: u64) -> Self {
        let source = match pool {
            Pool::Sqlite(_) => Source::Process(SystemClock::new()),
            other => Source::Database(other),
        };
        Self {
            source,
            timeout,
            store,
        }
    }
}

#[async_trait::async_trait]
impl Clock for DbClock {
    async fn now(&self) -> Result<OffsetDateTime, StoreError> {
        let pool = match &self.source {
            Source::Process(c) => return Ok(c.now_utc()),
            Source::Database(p) => p,
        };
        let t = timed(self.timeout, "clock", async {
            match pool {
                // `clock_timestamp()`, not `now()`: the time of the read even if a session were
                // ever inside a transaction, where `now()` stays at the transaction's start.
                Pool::Postgres(p) => with_conn!(p, SqlDriver::Postgres, |c| {
                    sqlx::query_scalar::<_, OffsetDateTime>("SELECT clock_timestamp()")
                        .fetch_one(c)
                        .await
                        .map_err(|e| store_error(SqlDriver::Postgres, e))
                }),
                Pool::Mysql(p) => with_conn!(p, SqlDriver::Mysql, |c| {
                    sqlx::query_scalar::<_, PrimitiveDateTime>("SELECT UTC_TIMESTAMP(6)")
                        .fetch_one(c)
                        .await
                        .map(PrimitiveDateTime::assume_utc)
                        .map_err(|e| store_error(SqlDriver::Mysql, e))
                }),
                Pool::Sqlite(_) => unreachable_sqlite(),
            }
        })
        .await?;
        Ok(truncate_micros(t.to_offset(time::UtcOffset::UTC)))
    }

    fn name(&self) -> &'static str {
        match self.source {
            Source::Database(_) => "database",
            Source::Process(_) => "monotonic",
        }
    }

    /// The database clock is read together with records by the store's
    /// `get_with_clock`, one statement instead of two.
    fn store_source(&self) -> Option<u64> {
        matches!(self.source, Source::Database(_)).then_some(self.store)
    }

    fn is_monotonic(&self) -> bool {
        matches!(self.source, Source::Process(_))
    }
}

fn unreachable_sqlite() -> Result<OffsetDateTime, StoreError> {
    Err(StoreError::Backend {
        backend: crate::BACKEND,
        source: "sqlite stores use the process clock".into(),
    })
}
