//! Embedded schema migrations (`migrations/<driver>/NNNN_description.sql`) and the schema check
//! behind `--sql-migrate off`.
//!
//! Migrations run under a database-wide lock (PostgreSQL advisory lock, MariaDB/MySQL
//! `GET_LOCK`, SQLite `BEGIN IMMEDIATE`), are recorded in `berth_schema_migrations`, and are
//! written idempotently, so several replicas starting at once are safe.

use sqlx::{Connection, Executor, MySqlConnection, PgConnection, Row, SqliteConnection};

use crate::config::{Migrate, SqlDriver};
use crate::error::SqlError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: u32,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The lease table.
pub const TABLE: &str = "berth_leases";

/// PostgreSQL advisory lock key for migrations ("berth" in ASCII).
const PG_LOCK_KEY: i64 = 0x0062_6572_7468;
/// MariaDB/MySQL named lock for migrations.
const MYSQL_LOCK: &str = "berth_schema_migrations";

/// The migrations embedded for `driver`.
#[cfg(test)]
pub(crate) fn embedded(driver: SqlDriver) -> &'static [Migration] {
    match driver {
        SqlDriver::Postgres => POSTGRES,
        SqlDriver::Mysql => MYSQL,
        SqlDriver::Sqlite => SQLITE,
    }
}

/// The statements of a migration file: split at `;` outside `$$`-quoted bodies (PostgreSQL
/// functions), comment-only chunks dropped.
fn statements(sql: &'static str) -> impl Iterator<Item = &'static str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$$") {
            quoted = !quoted;
            i += 2;
            continue;
        }
        if bytes[i] == b';' && !quoted {
            chunks.push(&sql[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    chunks.push(&sql[start..]);
    chunks.into_iter().map(str::trim).filter(|s| {
        s.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
    })
}

/// Whether `e` says a column being added exists already: `ADD COLUMN` statements of the
/// adoption migration are no-ops then (MariaDB/MySQL error 1060, SQLite "duplicate column").
fn is_duplicate_column(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|my| my.number() == 1060)
            || d.message().contains("duplicate column name")
    })
}

fn err(driver: SqlDriver, context: &str, e: &sqlx::Error) -> SqlError {
    SqlError::from_sqlx(driver, context, e, None)
}

/// Applies pending migrations on PostgreSQL under an advisory lock.
pub(crate) async fn run_postgres(conn: &mut PgConnection) -> Result<Vec<u32>, SqlError> {
    let d = SqlDriver::Postgres;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(|e| err(d, "failed to take the migration lock", &e))?;
    let result = async {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS berth_schema_migrations (
                version BIGINT PRIMARY KEY,
                description TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| err(d, "failed to create berth_schema_migrations", &e))?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM berth_schema_migrations")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| err(d, "failed to read berth_schema_migrations", &e))?;
        let mut done = Vec::new();
        for m in POSTGRES {
            if applied.contains(&i64::from(m.version)) {
                continue;
            }
            let mut tx = conn
                .begin()
                .await
                .map_err(|e| err(d, "failed to begin a migration", &e))?;
            for stmt in statements(m.sql) {
                tx.execute(stmt)
                    .await
                    .map_err(|e| err(d, &format!("migration {} failed", m.version), &e))?;
            }
            sqlx::query(
                "INSERT INTO berth_schema_migrations (version, description) VALUES ($1, $2)",
            )
            .bind(i64::from(m.version))
            .bind(m.description)
            .execute(&mut *tx)
            .await
            .map_err(|e| err(d, "failed to record a migration", &e))?;
            tx.commit()
                .await
                .map_err(|e| err(d, "failed to commit a migration", &e))?;
            done.push(m.version);
        }
        Ok(done)
    }
    .await;
    // Closing the connection would release the lock too; unlock so the connection is reusable.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result
}

/// Applies pending migrations on MariaDB/MySQL under a named lock. DDL commits implicitly
/// there, so every statement is idempotent on its own.
pub(crate) async fn run_mysql(conn: &mut MySqlConnection) -> Result<Vec<u32>, SqlError> {
    let d = SqlDriver::Mysql;
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 60)")
        .bind(MYSQL_LOCK)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| err(d, "failed to take the migration lock", &e))?;
    if got != Some(1) {
        return Err(SqlError::Unavailable {
            driver: d,
            message: "timed out waiting for the migration lock held by another replica".into(),
        });
    }
    let result = async {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS berth_schema_migrations (
                version BIGINT PRIMARY KEY,
                description VARCHAR(200) NOT NULL,
                applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
            ) ENGINE=InnoDB",
        )
        .await
        .map_err(|e| err(d, "failed to create berth_schema_migrations", &e))?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM berth_schema_migrations")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| err(d, "failed to read berth_schema_migrations", &e))?;
        let mut done = Vec::new();
        for m in MYSQL {
            if applied.contains(&i64::from(m.version)) {
                continue;
            }
            for stmt in statements(m.sql) {
                match conn.execute(stmt).await {
                    Ok(_) => {}
                    Err(e) if is_duplicate_column(&e) => {}
                    Err(e) => return Err(err(d, &format!("migration {} failed", m.version), &e)),
                }
            }
            sqlx::query("INSERT INTO berth_schema_migrations (version, description) VALUES (?, ?)")
                .bind(i64::from(m.version))
                .bind(m.description)
                .execute(&mut *conn)
                .await
                .map_err(|e| err(d, "failed to record a migration", &e))?;
            done.push(m.version);
        }
        Ok(done)
    }
    .await;
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(MYSQL_LOCK)
        .execute(&mut *conn)
        .await;
    result
}

/// Applies pending migrations on SQLite inside one `BEGIN IMMEDIATE` transaction.
pub(crate) async fn run_sqlite(conn: &mut SqliteConnection) -> Result<Vec<u32>, SqlError> {
    let d = SqlDriver::Sqlite;
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| err(d, "failed to lock the database for migrations", &e))?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS berth_schema_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
    )
    .await
    .map_err(|e| err(d, "failed to create berth_schema_migrations", &e))?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM berth_schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| err(d, "failed to read berth_schema_migrations", &e))?;
    let mut done = Vec::new();
    for m in SQLITE {
        if applied.contains(&i64::from(m.version)) {
            continue;
        }
        for stmt in statements(m.sql) {
            match tx.execute(stmt).await {
                Ok(_) => {}
                Err(e) if is_duplicate_column(&e) => {}
                Err(e) => return Err(err(d, &format!("migration {} failed", m.version), &e)),
            }
        }
        sqlx::query("INSERT INTO berth_schema_migrations (version, description) VALUES (?, ?)")
            .bind(i64::from(m.version))
            .bind(m.description)
            .execute(&mut *tx)
            .await
            .map_err(|e| err(d, "failed to record a migration", &e))?;
        done.push(m.version);
    }
    tx.commit()
        .await
        .map_err(|e| err(d, "failed to commit migrations", &e))?;
    Ok(done)
}

/// A column the store needs and the types it can work with.
struct Want {
    column: &'static str,
    kinds: &'static [&'static str],
    /// The collation text columns must have for byte-wise ordering, if the engine has one.
    binary_collation: bool,
}

const fn want(column: &'static str, kinds: &'static [&'static str], binary: bool) -> Want {
    Want {
        column,
        kinds,
        binary_collation: binary,
    }
}

fn wanted(driver: SqlDriver) -> [Want; 8] {
    let (text, int, ts): (&[&str], &[&str], &[&str]) = match driver {
        SqlDriver::Postgres => (
            &["text", "character varying"],
            &["bigint"],
            &["timestamp with time zone"],
        ),
        SqlDriver::Mysql => (&["varchar", "char", "text"], &["bigint"], &["datetime"]),
        SqlDriver::Sqlite => (
            &["text", "varchar", "char"],
            &["integer", "bigint", "int"],
            &["text", "varchar"],
        ),
    };
    [
        want("namespace", text, true),
        want("name", text, true),
        want("holder", text, false),
        want("ttl_ms", int, false),
        want("acquired_at", ts, false),
        want("renewed_at", ts, false),
        want("fencing_token", int, false),
        want("version", int, false),
    ]
}

/// What the catalog says about one column.
struct Have {
    column: String,
    kind: String,
    collation: Option<String>,
    precision: Option<i64>,
}

fn drift(driver: SqlDriver, mode: Migrate, what: &str) -> SqlError {
    SqlError::Schema(match mode {
        Migrate::Off => format!(
            "{driver} schema check failed (--sql-migrate off): {what}; run with --sql-migrate auto \
             or apply crates/berth-store-sql/migrations/{driver} by hand"
        ),
        Migrate::Auto => format!(
            "{driver} schema check failed after migrating: {what}; table {TABLE} was changed \
             outside Berth's migrations and needs fixing by hand"
        ),
    })
}

fn check(driver: SqlDriver, mode: Migrate, have: &[Have]) -> Result<(), SqlError> {
    if have.is_empty() {
        return Err(drift(
            driver,
            mode,
            &format!("table {TABLE} does not exist"),
        ));
    }
    for w in wanted(driver) {
        let Some(h) = have
            .iter()
            .find(|h| h.column.eq_ignore_ascii_case(w.column))
        else {
            return Err(drift(
                driver,
                mode,
                &format!("table {TABLE} has no column {}", w.column),
            ));
        };
        let kind = h.kind.to_ascii_lowercase();
        if !w.kinds.iter().any(|k| kind == *k) {
            return Err(drift(
                driver,
                mode,
                &format!(
                    "column {TABLE}.{} has type {kind}, expected {}",
                    w.column,
                    w.kinds.join(" or ")
                ),
            ));
        }
        if driver == SqlDriver::Mysql && kind == "datetime" && h.precision != Some(6) {
            return Err(drift(
                driver,
                mode,
                &format!(
                    "column {TABLE}.{} must be DATETIME(6) (microseconds)",
                    w.column
                ),
            ));
        }
        if w.binary_collation {
            let ok = match driver {
                SqlDriver::Postgres => {
                    matches!(h.collation.as_deref(), Some("C" | "POSIX" | "ucs_basic"))
                }
                SqlDriver::Mysql => h
                    .collation
                    .as_deref()
                    .is_some_and(|c| c.ends_with("_bin") || c == "binary"),
                SqlDriver::Sqlite => true,
            };
            if !ok {
                return Err(drift(
                    driver,
                    mode,
                    &format!(
                        "column {TABLE}.{} has collation {}, expected a byte-order collation ({})",
                        w.column,
                        h.collation.as_deref().unwrap_or("default"),
                        if driver == SqlDriver::Postgres {
                            "\"C\""
                        } else {
                            "utf8mb4_bin"
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Verifies the PostgreSQL schema.
pub(crate) async fn verify_postgres(
    mode: Migrate,
    conn: &mut PgConnection,
) -> Result<(), SqlError> {
    let d = SqlDriver::Postgres;
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text, collation_name::text
           FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(TABLE)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| err(d, "failed to read the schema", &e))?;
    let have = rows
        .iter()
        .map(|r| {
            Ok(Have {
                column: r.try_get(0)?,
                kind: r.try_get(1)?,
                collation: r.try_get(2)?,
                precision: None,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| err(d, "failed to read the schema", &e))?;
    check(d, mode, &have)
}

/// Verifies the MariaDB/MySQL schema.
pub(crate) async fn verify_mysql(
    mode: Migrate,
    conn: &mut MySqlConnection,
) -> Result<(), SqlError> {
    let d = SqlDriver::Mysql;
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLLATION_NAME AS CHAR),
                CAST(DATETIME_PRECISION AS SIGNED)
           FROM information_schema.COLUMNS
          WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(TABLE)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| err(d, "failed to read the schema", &e))?;
    let have = rows
        .iter()
        .map(|r| {
            Ok(Have {
                column: r.try_get(0)?,
                kind: r.try_get(1)?,
                collation: r.try_get(2)?,
                precision: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| err(d, "failed to read the schema", &e))?;
    check(d, mode, &have)
}

/// Verifies the SQLite schema.
pub(crate) async fn verify_sqlite(
    mode: Migrate,
    conn: &mut SqliteConnection,
) -> Result<(), SqlError> {
    let d = SqlDriver::Sqlite;
    let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?)")
        .bind(TABLE)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| err(d, "failed to read the schema", &e))?;
    let have = rows
        .iter()
        .map(|r| {
            let kind: String = r.try_get(1)?;
            // Declared types may carry a length, e.g. VARCHAR(253).
            let kind = kind.split('(').next().unwrap_or("").trim().to_string();
            Ok(Have {
                column: r.try_get(0)?,
                kind,
                collation: None,
                precision: None,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| err(d, "failed to read the schema", &e))?;
    check(d, mode, &have)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_driver_embeds_the_lease_table() {
        for d in [SqlDriver::Postgres, SqlDriver::Mysql, SqlDriver::Sqlite] {
            let ms = embedded(d);
            assert_eq!(ms.first().map(|m| m.version), Some(1), "{d}");
            assert!(
                ms[0]
                    .sql
                    .contains("CREATE TABLE IF NOT EXISTS berth_leases")
            );
            assert_eq!(statements(ms[0].sql).count(), 1, "{d}");
            assert_eq!(ms.get(1).map(|m| m.description), Some("adopt legacy table"));
        }
    }

    #[test]
    fn statements_split_outside_dollar_quoted_bodies() {
        let sql = "-- a comment;\nCREATE TABLE t (a INT);\nCREATE FUNCTION f() RETURNS trigger \
                   LANGUAGE plpgsql AS $$\nBEGIN\n  PERFORM 1;\n  RETURN NULL;\nEND\n$$;\n\
                   DROP TRIGGER IF EXISTS x ON t;\n-- only a comment\n";
        let got: Vec<&str> = statements(sql).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].ends_with("CREATE TABLE t (a INT)"), "{}", got[0]);
        assert!(
            got[1].contains("PERFORM 1;\n  RETURN NULL;\nEND\n$$"),
            "{}",
            got[1]
        );
        assert_eq!(got[2], "DROP TRIGGER IF EXISTS x ON t");
        // Every embedded migration splits into statements that each carry some SQL.
        for d in [SqlDriver::Postgres, SqlDriver::Mysql, SqlDriver::Sqlite] {
            for m in embedded(d) {
                assert!(statements(m.sql).count() > 0, "{d} {}", m.version);
            }
        }
    }

    #[test]
    fn check_names_the_missing_column_and_the_fix() {
        let have: Vec<Have> = [
            "namespace",
            "name",
            "holder",
            "ttl_ms",
            "acquired_at",
            "renewed_at",
            "fencing_token",
        ]
        .iter()
        .map(|c| Have {
            column: (*c).to_string(),
            kind: if c.ends_with("_at") || c.starts_with('n') || *c == "holder" {
                "TEXT".into()
            } else {
                "INTEGER".into()
            },
            collation: None,
            precision: None,
        })
        .collect();
        let e = check(SqlDriver::Sqlite, Migrate::Off, &have)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column version"), "{e}");
        assert!(e.contains("--sql-migrate auto"), "{e}");
        assert!(!e.contains('\n'));
        let e = check(SqlDriver::Postgres, Migrate::Off, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("table berth_leases does not exist"), "{e}");
    }
}
