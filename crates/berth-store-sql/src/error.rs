//! Start-up errors ([`SqlError`]) and the mapping of driver errors onto
//! [`berth_core::StoreError`].

use berth_core::StoreError;

use crate::config::{SqlDriver, scrub};

/// Why a [`crate::SqlStore`] could not be configured or started.
///
/// Messages are single lines meant for operators. They never contain the DSN's password: the
/// driver's error text is rendered and scrubbed when the error is built, and no driver error is
/// kept as a `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// A flag or DSN is wrong.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached in time.
    #[error("{driver} database unreachable: {message}")]
    Unavailable {
        /// The engine.
        driver: SqlDriver,
        /// What went wrong.
        message: String,
    },
    /// The schema is missing or differs from what this build needs.
    #[error("{0}")]
    Schema(String),
    /// The database answered with an error.
    #[error("{driver} database error: {message}")]
    Backend {
        /// The engine.
        driver: SqlDriver,
        /// What went wrong.
        message: String,
    },
}

impl SqlError {
    /// Whether retrying start-up later may help (the database was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn from_sqlx(
        driver: SqlDriver,
        context: &str,
        e: &sqlx::Error,
        secret: Option<&str>,
    ) -> Self {
        let message = scrub(format!("{context}: {}", render(e)), secret);
        match e {
            sqlx::Error::Configuration(_) => Self::Config(message),
            _ if is_unavailable(driver, e) => Self::Unavailable { driver, message },
            _ => Self::Backend { driver, message },
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn render(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out.replace('\n', " ")
}

/// Whether a driver error means "the database could not be reached or is too busy right
/// now", as opposed to a definite answer.
pub(crate) fn is_unavailable(driver: SqlDriver, e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            // MariaDB/MySQL report SQLSTATE as `code()`; their error number is more specific.
            let code = match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                Some(my) => Some(my.number().to_string().into()),
                None => db.code(),
            };
            code.is_some_and(|code| transient_code(driver, &code))
        }
        _ => false,
    }
}

fn transient_code(driver: SqlDriver, code: &str) -> bool {
    match driver {
        // SQLSTATEs: connection exceptions, shutdown, resource exhaustion, serialization
        // failures and deadlocks.
        SqlDriver::Postgres => {
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
        }
        // Too many connections, server shutdown, lock wait timeout, deadlock, connection
        // killed, and client-side connection errors.
        SqlDriver::Mysql => matches!(
            code.parse::<u32>(),
            Ok(1040 | 1053 | 1205 | 1213 | 1927 | 2002 | 2003 | 2006 | 2013 | 4031)
        ),
        // Result codes (primary code in the low byte): BUSY and LOCKED.
        SqlDriver::Sqlite => code
            .parse::<u32>()
            .is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6),
    }
}

/// Maps a driver error of a store call onto the store's error kinds.
pub(crate) fn store_error(driver: SqlDriver, e: sqlx::Error) -> StoreError {
    if is_unavailable(driver, &e) {
        StoreError::Unavailable {
            backend: crate::BACKEND,
            source: Box::new(e),
        }
    } else {
        StoreError::Backend {
            backend: crate::BACKEND,
            source: Box::new(e),
        }
    }
}

/// The error of a store call that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("{op} did not finish within {timeout:?}")]
pub(crate) struct TimedOut {
    pub(crate) op: &'static str,
    pub(crate) timeout: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        use SqlDriver::{Mysql, Postgres, Sqlite};
        for (d, c) in [
            (Postgres, "08006"),
            (Postgres, "57P01"),
            (Postgres, "53300"),
            (Postgres, "40001"),
            (Postgres, "40P01"),
            (Mysql, "1213"),
            (Mysql, "1205"),
            (Mysql, "2013"),
            (Sqlite, "5"),
            (Sqlite, "517"),
            (Sqlite, "6"),
        ] {
            assert!(transient_code(d, c), "{d} {c}");
        }
        for (d, c) in [
            (Postgres, "23505"),
            (Postgres, "42P01"),
            (Mysql, "1062"),
            (Mysql, "1146"),
            (Sqlite, "19"),
            (Sqlite, "2067"),
            (Sqlite, "1"),
        ] {
            assert!(!transient_code(d, c), "{d} {c}");
        }
    }
}
