//! `berth-bench`: benchmarks that print throughput, p50/p99 latency and a ratio against a
//! baseline measured in the same run on the same machine, as markdown tables (stdout) with a
//! progress log (stderr). See `docs/benchmarks.md`.

mod failover;
mod http;
mod memory;
mod sql;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Berth benchmarks.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Measured time per run (after the warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime_secs, global = true)]
    duration: Duration,
    #[command(subcommand)]
    bench: Bench,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let n = s.strip_suffix('s').unwrap_or(s);
    n.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("expected whole seconds like 5s, got {s:?}"))
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// HTTP path: mem store acquire/renew over TLS vs a minimal axum+rustls handler.
    Http {
        /// Connection counts.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        conns: Vec<usize>,
        /// Warm-up per run.
        #[arg(long, default_value = "1s", value_parser = humantime_secs)]
        warmup: Duration,
        /// Rounds per cell (targets alternate; the median round is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// SQL renews on PostgreSQL and/or MariaDB vs a raw sqlx compare-and-set.
    Sql {
        /// PostgreSQL DSN.
        #[arg(long, env = "BERTH_TEST_POSTGRES_DSN")]
        postgres: Option<String>,
        /// MariaDB/MySQL DSN.
        #[arg(long, env = "BERTH_TEST_MYSQL_DSN")]
        mysql: Option<String>,
        /// Concurrent clients (and pool size).
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        conns: Vec<usize>,
        /// Leases per heartbeat batch.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// SQLite durable renews: one per transaction vs heartbeat batches.
    Sqlite {
        /// Batch sizes.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        batches: Vec<usize>,
    },
    /// Time from the holder letting go (release, or expiry after a kill) to a standby holding
    /// the lease, with a watch and with polling.
    Failover {
        /// Concurrent standby/holder pairs per case.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Poll interval of the polling standby, in whole seconds.
        #[arg(long, default_value = "1s", value_parser = humantime_secs)]
        poll: Duration,
        /// TTL of the grants, in seconds.
        #[arg(long, default_value_t = 2)]
        ttl: u64,
        /// Also measure two API server replicas on this PostgreSQL database (holder on one,
        /// standby on the other) [default: BERTH_TEST_POSTGRES_DSN if set].
        #[arg(long, env = "BERTH_TEST_POSTGRES_DSN")]
        postgres_dsn: Option<String>,
    },
    /// RSS of berth-apiserver --dev with many live leases.
    Memory {
        /// Live leases to create.
        #[arg(long, default_value_t = 100_000)]
        leases: usize,
        /// Concurrent connections while filling.
        #[arg(long, default_value_t = 32)]
        conns: usize,
        /// The berth-apiserver binary [default: next to this one].
        #[arg(long)]
        apiserver: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match args.bench {
        Bench::Http {
            conns,
            warmup,
            rounds,
        } => http::run(&conns, warmup, args.duration, rounds).await,
        Bench::Sql {
            postgres,
            mysql,
            conns,
            batch,
        } => {
            anyhow::ensure!(
                postgres.is_some() || mysql.is_some(),
                "set --postgres and/or --mysql (or BERTH_TEST_POSTGRES_DSN / BERTH_TEST_MYSQL_DSN)"
            );
            if let Some(dsn) = postgres {
                sql::run_server(
                    berth_store_sql::SqlDriver::Postgres,
                    &dsn,
                    &conns,
                    batch,
                    args.duration,
                )
                .await?;
            }
            if let Some(dsn) = mysql {
                sql::run_server(
                    berth_store_sql::SqlDriver::Mysql,
                    &dsn,
                    &conns,
                    batch,
                    args.duration,
                )
                .await?;
            }
            Ok(())
        }
        Bench::Failover {
            runs,
            poll,
            ttl,
            postgres_dsn,
        } => failover::run(runs, poll, ttl, postgres_dsn.as_deref()).await,
        Bench::Sqlite { batches } => sql::run_sqlite(&batches, args.duration).await,
        Bench::Memory {
            leases,
            conns,
            apiserver,
        } => memory::run(leases, conns, apiserver.as_deref()).await,
    }
}
