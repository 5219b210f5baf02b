//! Berth's SQL lease store: [`SqlStore`] implements [`berth_core::LeaseStore`] on PostgreSQL,
//! MariaDB/MySQL and SQLite through sqlx, with runtime queries (no database needed to build).
//!
//! - **Compare-and-set, one statement per write:** insert-if-absent, or
//!   `UPDATE … SET …, version = version + 1 WHERE namespace = ? AND name = ? AND version = ?`
//!   affecting exactly one row. Records are never deleted, so fencing tokens survive restarts.
//! - **Time:** [`SqlStore::clock`] returns a [`DbClock`]: the database's clock on PostgreSQL
//!   and MariaDB/MySQL, so several API server replicas on one database judge expiry against
//!   one clock; the process monotonic clock on SQLite, which serves one replica.
//! - **Schema:** migrations in `migrations/<driver>/` are embedded; [`Migrate::Auto`] applies
//!   them under a database-wide lock, [`Migrate::Off`] verifies the table and fails fast.
//! - **Secrets:** the DSN is a [`secrecy::SecretString`]; `Debug` output and every error
//!   message leave its password out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use berth_core::LeaseService;
//! use berth_store_sql::{Migrate, SqlDriver, SqlStore, SqlStoreConfig};
//!
//! let cfg = SqlStoreConfig::from_dsn_or_file(
//!     SqlDriver::Postgres,
//!     None,
//!     Some("/etc/berth/sql-dsn".into()),
//!     Migrate::Auto,
//! )?;
//! let store = SqlStore::connect(cfg).await?;
//! let leases = LeaseService::new(Arc::new(store.clone()), Arc::new(store.clock()));
//! # let _ = leases; Ok(()) }
//! ```
#![deny(missing_docs)]

mod clock;
mod config;
mod error;
mod migrate;
mod store;

pub use clock::DbClock;
pub use config::{Migrate, SqlDriver, SqlStoreConfig, redact_dsn};
pub use error::SqlError;
pub use migrate::TABLE;
pub use store::{BACKEND, HISTORY_PER_KEY, SqlStore};

impl SqlDriver {
    /// Whether several API server replicas may share one database with this engine.
    pub fn supports_replicas(self) -> bool {
        !matches!(self, Self::Sqlite)
    }
}
