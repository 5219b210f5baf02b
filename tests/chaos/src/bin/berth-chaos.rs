//! `berth-chaos`: a chaos run against real `berth-apiserver` processes from the command line.
//! Prints the summary and every violation; exits 1 on a violation, 2 when the run could not be
//! carried out.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_chaos::database::StoreKind;
use berth_chaos::harness::{self, Config};
use berth_chaos::nemesis::FaultKind;
use clap::Parser;

/// Jepsen-style chaos run of Berth: clients acquire, renew and release leases through proxies
/// in front of every replica while a seeded nemesis injects faults; the recorded history and
/// the clients' acting logs are checked for safety violations.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Store backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Admin DSN of PostgreSQL/MariaDB (the run creates and drops a fresh database); default:
    /// BERTH_TEST_POSTGRES_DSN / BERTH_TEST_MYSQL_DSN.
    #[arg(long)]
    dsn: Option<String>,
    /// Number of replicas [default: 1 for sqlite, else 2].
    #[arg(long)]
    replicas: Option<usize>,
    /// Number of clients.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Number of clients that hold leases through the client library's `LeaseHandle`
    /// (background renewals, `safe_until`), on keys of their own.
    #[arg(long, default_value_t = 2)]
    handle_clients: u32,
    /// Number of keys (for each kind of client).
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Lease TTL (whole seconds).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    ttl: Duration,
    /// Run length, e.g. `90s`, `2h`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Seed of the nemesis and the clients (decimal or 0x-hex) [default: random].
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Fault kinds, comma separated [default: every kind the store allows].
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Option<Vec<FaultKind>>,
    /// Client request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "800ms")]
    request_timeout: Duration,
    /// The replicas' --store-timeout [default: TTL/2 for postgres/mysql].
    #[arg(long, value_parser = humantime::parse_duration)]
    store_timeout: Option<Duration>,
    /// Chance per stretch of client work of a stall longer than the TTL.
    #[arg(long, default_value_t = 0.05)]
    stall_probability: f64,
    /// With --store postgres: run a private PostgreSQL server (initdb into a temporary
    /// directory, as the `postgres` user when root) instead of using --dsn, and add the
    /// `db-kill` fault to the default faults.
    #[arg(long)]
    private_postgres: bool,
    /// PostgreSQL binaries for --private-postgres [default: BERTH_CHAOS_PG_BIN or the newest
    /// /usr/lib/postgresql/*/bin].
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    /// The berth-apiserver binary [default: next to this executable].
    #[arg(long)]
    apiserver_bin: Option<PathBuf>,
    /// Also print every operation of the history and every fault.
    #[arg(long)]
    print_history: bool,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    }
    .map_err(|e| format!("bad seed {s:?}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(bin) = args
        .apiserver_bin
        .clone()
        .or_else(harness::default_apiserver_bin)
    else {
        eprintln!(
            "berth-chaos: no berth-apiserver next to this executable; build it \
             (cargo build -p berth-apiserver) or pass --apiserver-bin"
        );
        return ExitCode::from(2);
    };
    let mut cfg = Config::new("berth-chaos", args.store, &bin);
    cfg.admin_dsn = args.dsn.clone().or_else(|| {
        args.store
            .dsn_env()
            .and_then(|v| std::env::var(v).ok())
            .filter(|v| !v.trim().is_empty())
    });
    if let Some(n) = args.replicas {
        cfg.replicas = n;
    }
    cfg.clients = args.clients;
    cfg.handle_clients = args.handle_clients;
    cfg.keys = args.keys;
    cfg.ttl = args.ttl;
    cfg.duration = args.duration;
    cfg.seed = args.seed.unwrap_or_else(rand::random);
    if args.private_postgres {
        let Some(dir) = args
            .pg_bin
            .clone()
            .or_else(berth_chaos::pgserver::find_bin_dir)
        else {
            eprintln!("berth-chaos: no PostgreSQL binaries found; pass --pg-bin");
            return ExitCode::from(2);
        };
        cfg.private_postgres = Some(dir);
        cfg.faults.push(FaultKind::DbKill);
    }
    if let Some(f) = args.faults.clone() {
        cfg.faults = f;
    }
    cfg.request_timeout = args.request_timeout;
    if args.store_timeout.is_some() {
        cfg.store_timeout = args.store_timeout;
    } else if cfg.store_timeout.is_some() {
        cfg.store_timeout = Some(cfg.ttl / 2);
    }
    cfg.stall_probability = args.stall_probability;

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(harness::run(cfg)) {
        Ok(report) => {
            if args.print_history {
                let mut ops = report.history.ops.clone();
                ops.sort_by_key(|o| (o.invoke, o.complete));
                for op in &ops {
                    println!("{op}");
                }
                for f in &report.faults {
                    println!(
                        "[{:>9.3}s .. {:>9.3}s] fault {} on replica {}",
                        f.start.as_secs_f64(),
                        f.end.as_secs_f64(),
                        f.kind,
                        f.replica
                    );
                }
            }
            print!("{report}");
            if report.is_safe() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("berth-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
