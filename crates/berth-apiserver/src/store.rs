//! Backend selection (`--store-backend`) and the background sweeper.
//!
//! [`open_store`] is the seam where the SQL and Kubernetes store crates plug in: each backend
//! returns its store together with the clock that judges expiry for it (SPEC §2 "Time").

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(any(feature = "sql", feature = "k8s"))]
use anyhow::Context as _;
use berth_core::{DynClock, DynLeaseStore, LeaseService, MemStore, SystemClock};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// `--store-backend`. Every backend is listed even when not compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// In-process map: one replica, lost on restart.
    Mem,
    /// SQLite, PostgreSQL or MariaDB/MySQL.
    Sql,
    /// `coordination.k8s.io/v1` Lease objects.
    K8s,
}

impl StoreKind {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mem => "mem",
            Self::Sql => "sql",
            Self::K8s => "k8s",
        }
    }
}

/// `--sql-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqlDriverArg {
    /// PostgreSQL (several replicas on one database).
    Postgres,
    /// MariaDB or MySQL (several replicas on one database).
    Mysql,
    /// SQLite file (one replica).
    Sqlite,
}

/// `--sql-migrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateArg {
    /// Apply the embedded migrations at start-up.
    Auto,
    /// Apply nothing; verify the schema and fail fast on drift.
    Off,
}

/// Store flags: the backend and its own settings.
#[derive(Clone, clap::Args)]
pub struct StoreArgs {
    /// Lease store backend [default: mem; deprecated: k8s when only --coordination-namespace
    /// is set].
    #[arg(long, value_enum, env = "BERTH_APISERVER_STORE_BACKEND")]
    pub store_backend: Option<StoreKind>,

    /// SQL engine (with --store-backend sql).
    #[arg(long, value_enum, env = "BERTH_APISERVER_SQL_DRIVER")]
    pub sql_driver: Option<SqlDriverArg>,

    /// SQL data source name; prefer --sql-dsn-file, a DSN on the command line is visible to
    /// other local users.
    #[arg(
        long,
        env = "BERTH_APISERVER_SQL_DSN",
        hide_env_values = true,
        conflicts_with = "sql_dsn_file"
    )]
    pub sql_dsn: Option<String>,

    /// File holding the SQL data source name (read once at start-up, trimmed).
    #[arg(long, env = "BERTH_APISERVER_SQL_DSN_FILE")]
    pub sql_dsn_file: Option<PathBuf>,

    /// Schema handling at start-up [default: auto].
    #[arg(long, value_enum, env = "BERTH_APISERVER_SQL_MIGRATE")]
    pub sql_migrate: Option<MigrateArg>,

    /// Connection pool size for PostgreSQL and MariaDB/MySQL [default: 10].
    #[arg(long, env = "BERTH_APISERVER_SQL_MAX_CONNECTIONS")]
    pub sql_max_connections: Option<u32>,

    /// Kubeconfig of the coordination cluster; unset uses $KUBECONFIG, ~/.kube/config or the
    /// in-cluster service account.
    #[arg(long, env = "BERTH_APISERVER_COORDINATION_KUBECONFIG")]
    pub coordination_kubeconfig: Option<PathBuf>,

    /// Namespace of the coordination cluster that holds the Lease objects (required with k8s).
    #[arg(long, env = "BERTH_APISERVER_COORDINATION_NAMESPACE")]
    pub coordination_namespace: Option<String>,

    /// Client-side rate limit towards the coordination cluster, requests per second; 0
    /// disables it [default: 1000].
    #[arg(long, env = "BERTH_APISERVER_COORDINATION_QPS")]
    pub coordination_qps: Option<f64>,

    /// Requests allowed at once above --coordination-qps [default: 2000].
    #[arg(long, env = "BERTH_APISERVER_COORDINATION_BURST")]
    pub coordination_burst: Option<u32>,

    /// Bound on every store call [default: 5s for sql, 10s for k8s].
    #[arg(long, value_parser = humantime::parse_duration, env = "BERTH_APISERVER_STORE_TIMEOUT")]
    pub store_timeout: Option<Duration>,
}

impl fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreArgs")
            .field("store_backend", &self.store_backend)
            .field("sql_driver", &self.sql_driver)
            .field("sql_dsn", &self.sql_dsn.as_ref().map(|_| "<redacted>"))
            .field("sql_dsn_file", &self.sql_dsn_file)
            .field("sql_migrate", &self.sql_migrate)
            .field("sql_max_connections", &self.sql_max_connections)
            .field("coordination_kubeconfig", &self.coordination_kubeconfig)
            .field("coordination_namespace", &self.coordination_namespace)
            .field("coordination_qps", &self.coordination_qps)
            .field("coordination_burst", &self.coordination_burst)
            .field("store_timeout", &self.store_timeout)
            .finish()
    }
}

impl StoreArgs {
    /// The backend: the flag, or the original's deprecated inference (k8s when a coordination
    /// namespace is given, mem otherwise).
    pub fn kind(&self) -> StoreKind {
        match (self.store_backend, &self.coordination_namespace) {
            (Some(kind), _) => kind,
            (None, Some(_)) => StoreKind::K8s,
            (None, None) => StoreKind::Mem,
        }
    }

    /// Rejects flags that do not belong to the chosen backend.
    ///
    /// # Errors
    /// A message naming the stray flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        let kind = self.kind();
        let sql_flags = [
            ("--sql-driver", self.sql_driver.is_some()),
            ("--sql-dsn", self.sql_dsn.is_some()),
            ("--sql-dsn-file", self.sql_dsn_file.is_some()),
            ("--sql-migrate", self.sql_migrate.is_some()),
            ("--sql-max-connections", self.sql_max_connections.is_some()),
        ];
        let k8s_flags = [
            (
                "--coordination-kubeconfig",
                self.coordination_kubeconfig.is_some(),
            ),
            (
                "--coordination-namespace",
                self.coordination_namespace.is_some(),
            ),
            ("--coordination-qps", self.coordination_qps.is_some()),
            ("--coordination-burst", self.coordination_burst.is_some()),
        ];
        for (flags, owner) in [
            (&sql_flags[..], StoreKind::Sql),
            (&k8s_flags[..], StoreKind::K8s),
        ] {
            if kind != owner
                && let Some((flag, _)) = flags.iter().find(|(_, set)| *set)
            {
                anyhow::bail!(
                    "{flag} is only valid with --store-backend {} (the store backend is {})",
                    owner.as_str(),
                    kind.as_str()
                );
            }
        }
        if kind == StoreKind::Mem && self.store_timeout.is_some() {
            anyhow::bail!("--store-timeout is not valid with --store-backend mem");
        }
        Ok(())
    }
}

/// Opens the chosen backend and the clock that judges expiry for it.
///
/// # Errors
/// Flags that do not fit the backend, a backend not compiled into this build, or one that
/// fails to open (unreachable, schema drift, bad DSN).
pub async fn open_store(args: &StoreArgs) -> anyhow::Result<(DynLeaseStore, DynClock)> {
    args.validate()?;
    let kind = args.kind();
    if args.store_backend.is_none() && kind == StoreKind::K8s {
        tracing::warn!(
            "--store-backend is not set: inferring k8s from --coordination-namespace; this inference is deprecated, set --store-backend k8s"
        );
    }
    match kind {
        StoreKind::Mem => Ok((Arc::new(MemStore::new()), Arc::new(SystemClock::new()))),
        StoreKind::Sql => open_sql(args).await,
        StoreKind::K8s => open_k8s(args).await,
    }
}

#[cfg(feature = "sql")]
async fn open_sql(args: &StoreArgs) -> anyhow::Result<(DynLeaseStore, DynClock)> {
    use berth_store_sql::{Migrate, SqlDriver, SqlStore, SqlStoreConfig};
    let driver = match args
        .sql_driver
        .context("--sql-driver must be set with --store-backend sql")?
    {
        SqlDriverArg::Postgres => SqlDriver::Postgres,
        SqlDriverArg::Mysql => SqlDriver::Mysql,
        SqlDriverArg::Sqlite => SqlDriver::Sqlite,
    };
    let migrate = match args.sql_migrate.unwrap_or(MigrateArg::Auto) {
        MigrateArg::Auto => Migrate::Auto,
        MigrateArg::Off => Migrate::Off,
    };
    if args.sql_dsn.is_some() {
        tracing::warn!("--sql-dsn is visible in the process list; prefer --sql-dsn-file");
    }
    let mut cfg = SqlStoreConfig::from_dsn_or_file(
        driver,
        args.sql_dsn.clone(),
        args.sql_dsn_file.clone(),
        migrate,
    )?;
    if let Some(n) = args.sql_max_connections {
        anyhow::ensure!(n > 0, "--sql-max-connections must be positive");
        cfg.max_connections = n;
    }
    if let Some(t) = args.store_timeout {
        anyhow::ensure!(!t.is_zero(), "--store-timeout must be positive");
        cfg.statement_timeout = t;
    }
    cfg.validate()?;
    let dsn = cfg.redacted_dsn();
    let store = SqlStore::connect(cfg)
        .await
        .with_context(|| format!("failed to open the {driver} store at {dsn}"))?;
    if driver == SqlDriver::Sqlite {
        tracing::info!(
            "the sqlite store serves exactly one API server replica; use postgres or mysql for several"
        );
    }
    let clock = store.clock();
    Ok((Arc::new(store), Arc::new(clock)))
}

#[cfg(not(feature = "sql"))]
async fn open_sql(_: &StoreArgs) -> anyhow::Result<(DynLeaseStore, DynClock)> {
    anyhow::bail!("store backend sql is not compiled into this build")
}

#[cfg(feature = "k8s")]
async fn open_k8s(args: &StoreArgs) -> anyhow::Result<(DynLeaseStore, DynClock)> {
    use berth_store_k8s::{KubeStore, KubeStoreConfig};
    let namespace = args
        .coordination_namespace
        .clone()
        .context("--coordination-namespace must be set with --store-backend k8s")?;
    anyhow::ensure!(
        berth_core::key::is_dns_label(&namespace),
        "--coordination-namespace must be a DNS-1123 label (got {namespace:?})"
    );
    let mut cfg = KubeStoreConfig::new(namespace.clone());
    cfg.kubeconfig.clone_from(&args.coordination_kubeconfig);
    if let Some(qps) = args.coordination_qps {
        anyhow::ensure!(
            qps.is_finite() && qps >= 0.0,
            "--coordination-qps must be a non-negative number"
        );
        cfg.qps = qps;
    }
    if let Some(burst) = args.coordination_burst {
        cfg.burst = burst;
    }
    if let Some(t) = args.store_timeout {
        anyhow::ensure!(!t.is_zero(), "--store-timeout must be positive");
        cfg.request_timeout = t;
    }
    let store = KubeStore::connect(cfg)
        .await
        .context("failed to open the k8s store")?;
    let clock = store.clock();
    clock.calibrate().await.with_context(|| {
        format!("failed to reach the coordination cluster (namespace {namespace})")
    })?;
    Ok((Arc::new(store), Arc::new(clock)))
}

#[cfg(not(feature = "k8s"))]
async fn open_k8s(_: &StoreArgs) -> anyhow::Result<(DynLeaseStore, DynClock)> {
    anyhow::bail!("store backend k8s is not compiled into this build")
}

/// Tombstones long-expired leases every `interval` and refreshes the live-leases gauge,
/// until `shutdown` turns true.
pub fn spawn_sweeper(
    leases: LeaseService,
    metrics: Arc<Metrics>,
    interval: Duration,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            sweep_once(&leases, &metrics, grace).await;
        }
    })
}

/// One sweep: tombstone records expired for longer than `grace`, and count live leases from
/// the same scan.
pub async fn sweep_once(leases: &LeaseService, metrics: &Metrics, grace: Duration) {
    match leases.sweep(grace).await {
        Ok(s) => {
            if s.tombstoned > 0 || s.conflicts > 0 {
                tracing::info!(
                    scanned = s.scanned,
                    tombstoned = s.tombstoned,
                    conflicts = s.conflicts,
                    "swept expired leases"
                );
            }
            metrics
                .live_leases
                .set(i64::try_from(s.live).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "lease sweep failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{Holder, LeaseKey, LeaseState, ManualClock};

    fn parse(args: &[&str]) -> StoreArgs {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            store: StoreArgs,
        }
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        <T as clap::Parser>::try_parse_from(all).unwrap().store
    }

    #[tokio::test]
    async fn mem_is_the_default() {
        let args = parse(&[]);
        assert_eq!(args.kind(), StoreKind::Mem);
        let (store, clock) = open_store(&args).await.unwrap();
        assert_eq!(store.backend(), "mem");
        assert_eq!(clock.name(), "monotonic");
    }

    #[test]
    fn coordination_namespace_alone_infers_k8s() {
        assert_eq!(
            parse(&["--coordination-namespace", "berth"]).kind(),
            StoreKind::K8s
        );
        assert_eq!(
            parse(&["--store-backend", "sql", "--sql-driver", "sqlite"]).kind(),
            StoreKind::Sql
        );
    }

    #[tokio::test]
    async fn flags_of_another_backend_are_rejected() {
        let cases: [(&[&str], &str); 4] = [
            (
                &["--sql-driver", "postgres"],
                "--sql-driver is only valid with --store-backend sql (the store backend is mem)",
            ),
            (
                &[
                    "--store-backend",
                    "k8s",
                    "--coordination-namespace",
                    "b",
                    "--sql-dsn",
                    "x",
                ],
                "--sql-dsn is only valid with --store-backend sql (the store backend is k8s)",
            ),
            (
                &[
                    "--store-backend",
                    "sql",
                    "--sql-driver",
                    "sqlite",
                    "--coordination-qps",
                    "5",
                ],
                "--coordination-qps is only valid with --store-backend k8s (the store backend is sql)",
            ),
            (
                &["--store-timeout", "1s"],
                "--store-timeout is not valid with --store-backend mem",
            ),
        ];
        for (args, want) in cases {
            let err = open_store(&parse(args)).await.unwrap_err();
            assert_eq!(format!("{err:#}"), want, "{args:?}");
        }
    }

    #[tokio::test]
    async fn sql_needs_driver_and_one_dsn() {
        let err = open_store(&parse(&["--store-backend", "sql"]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--sql-driver must be set with --store-backend sql"
        );
        let err = open_store(&parse(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "sqlite",
        ]))
        .await
        .unwrap_err();
        assert!(err.to_string().contains("--sql-dsn"), "{err:#}");
        let err = open_store(&parse(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "sqlite",
            "--sql-dsn-file",
            "/nonexistent/dsn",
        ]))
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/dsn"), "{err:#}");
    }

    #[tokio::test]
    async fn sqlite_opens_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let dsn = format!("sqlite://{}/berth.db", dir.path().display());
        let args = parse(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "sqlite",
            "--sql-dsn",
            &dsn,
        ]);
        let key = berth_core::LeaseKey::new("ns", "a").unwrap();
        let holder = berth_core::Holder::new("east").unwrap();
        {
            let (store, clock) = open_store(&args).await.unwrap();
            assert_eq!(store.backend(), "sql");
            let leases = LeaseService::new(store, clock);
            leases
                .acquire(&key, &holder, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let (store, clock) = open_store(&args).await.unwrap();
        let view = LeaseService::new(store, clock)
            .get(&key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.record.holder, Some(holder));
        assert_eq!(view.record.fencing_token.get(), 1);
    }

    #[test]
    fn debug_redacts_the_dsn() {
        let args = parse(&[
            "--store-backend",
            "sql",
            "--sql-dsn",
            "postgres://u:hunter2@h/db",
        ]);
        let dbg = format!("{args:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[tokio::test]
    async fn sweep_tombstones_and_counts_live() {
        let clock = ManualClock::at_epoch();
        let leases = LeaseService::new(Arc::new(MemStore::new()), Arc::new(clock.clone()));
        let metrics = Metrics::new();
        let h = Holder::new("east").unwrap();
        let old = LeaseKey::new("ns", "old").unwrap();
        leases
            .acquire(&old, &h, Duration::from_secs(1))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(400));
        let live = LeaseKey::new("ns", "live").unwrap();
        leases
            .acquire(&live, &h, Duration::from_secs(60))
            .await
            .unwrap();
        sweep_once(&leases, &metrics, Duration::from_secs(300)).await;
        assert_eq!(metrics.live_leases.get(), 1);
        let v = leases.get(&old).await.unwrap().unwrap();
        assert_eq!(v.state(), LeaseState::Released);
    }
}
