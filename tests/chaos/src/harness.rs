//! One chaos run end to end: create the database, start the replicas behind their proxies,
//! run the clients and the nemesis, heal, read the final tokens, check the history and the
//! acting logs, and report.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::task::JoinSet;

use crate::acting::{self, Act, ActOverlap};
use crate::database::{Database, Dsn, StoreKind};
use crate::history::{self, History, Op, OpKind, OpResult, Violation, ViolationKind};
use crate::linear::{self, LinearReport, Verdict};
use crate::nemesis::{self, Cluster, FaultEvent, FaultKind};
use crate::pgserver::PgServer;
use crate::pki::Pki;
use crate::proxy::Proxy;
use crate::replica::Replica;
use crate::workload::{self, ClientTask, Workload};

/// Namespace of the run's keys.
pub const NAMESPACE: &str = "chaos";

/// Client ids of the `LeaseHandle` clients start here (the others count from 0).
pub const HANDLE_CLIENT_IDS: u32 = 1000;

/// Everything that shapes a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name in the report.
    pub name: String,
    /// Store backend.
    pub store: StoreKind,
    /// Admin DSN of PostgreSQL/MariaDB; the run creates and drops its own database.
    pub admin_dsn: Option<String>,
    /// Number of `berth-apiserver` replicas (1 for SQLite).
    pub replicas: usize,
    /// Number of client tasks.
    pub clients: u32,
    /// Number of client tasks that hold leases through `LeaseHandle` (on keys of their own).
    pub handle_clients: u32,
    /// Number of keys.
    pub keys: usize,
    /// Lease TTL.
    pub ttl: Duration,
    /// Run length.
    pub duration: Duration,
    /// Seed of the nemesis and the clients.
    pub seed: u64,
    /// Fault kinds the nemesis picks from.
    pub faults: Vec<FaultKind>,
    /// The `berth-apiserver` binary.
    pub apiserver_bin: PathBuf,
    /// Client request and connect timeout.
    pub request_timeout: Duration,
    /// `--store-timeout` of the replicas (SQL stores; `None`: the server's default).
    pub store_timeout: Option<Duration>,
    /// Chance per stretch of work that a client stalls longer than the TTL.
    pub stall_probability: f64,
    /// Extra environment of replica `i` on every (re)start (e.g. libfaketime).
    pub replica_env: Vec<Vec<(String, String)>>,
    /// A store the harness does not create: (name, `berth-apiserver` store arguments), e.g. the
    /// k8s store; replaces the database (`store` is then ignored apart from its defaults).
    pub custom_store: Option<(String, Vec<String>)>,
    /// PostgreSQL only: run a private server from these binaries (see [`crate::pgserver`])
    /// instead of using `admin_dsn`, so the `db-kill` fault can kill it.
    pub private_postgres: Option<PathBuf>,
}

impl Config {
    /// Defaults: 1 replica on SQLite, else 2; 8 clients and 2 `LeaseHandle` clients, 3 keys
    /// each, TTL 2 s, 12 s, every fault
    /// that applies to the store, 800 ms request timeout, store timeout TTL/2, stalls 5 %.
    pub fn new(name: &str, store: StoreKind, apiserver_bin: &Path) -> Self {
        let ttl = Duration::from_secs(2);
        Self {
            name: name.to_owned(),
            store,
            admin_dsn: None,
            replicas: if store == StoreKind::Sqlite { 1 } else { 2 },
            clients: 8,
            handle_clients: 2,
            keys: 3,
            ttl,
            duration: Duration::from_secs(12),
            seed: 1,
            faults: default_faults(store),
            apiserver_bin: apiserver_bin.to_path_buf(),
            request_timeout: Duration::from_millis(800),
            store_timeout: (store != StoreKind::Sqlite).then_some(ttl / 2),
            stall_probability: 0.05,
            replica_env: Vec::new(),
            custom_store: None,
            private_postgres: None,
        }
    }

    /// The store's name in reports.
    pub fn store_name(&self) -> &str {
        self.custom_store
            .as_ref()
            .map_or(self.store.as_str(), |(name, _)| name.as_str())
    }

    fn validate(&self) -> Result<()> {
        if self.replicas == 0 || self.clients == 0 || self.keys == 0 {
            bail!("replicas, clients and keys must be positive");
        }
        if self.store == StoreKind::Sqlite && self.replicas != 1 && self.custom_store.is_none() {
            bail!("SQLite serves exactly one replica (--replicas 1)");
        }
        if self.store == StoreKind::Sqlite && self.faults.contains(&FaultKind::DbPartition) {
            bail!("db-partition needs a networked database (postgres or mysql)");
        }
        if self.faults.contains(&FaultKind::DbKill) && self.private_postgres.is_none() {
            bail!("db-kill needs a private PostgreSQL server (--private-postgres)");
        }
        if self.private_postgres.is_some() && self.store != StoreKind::Postgres {
            bail!("a private database server is only available for postgres");
        }
        if self.ttl < Duration::from_secs(1) {
            bail!("the TTL must be at least 1s (the API counts whole seconds)");
        }
        if !self.apiserver_bin.is_file() {
            bail!(
                "{} is missing (cargo build -p berth-apiserver)",
                self.apiserver_bin.display()
            );
        }
        Ok(())
    }
}

/// Every fault kind that applies to `store` on a shared database server (`db-kill` needs a
/// private one: add it with [`Config::private_postgres`]).
pub fn default_faults(store: StoreKind) -> Vec<FaultKind> {
    FaultKind::ALL
        .into_iter()
        .filter(|k| *k != FaultKind::DbPartition || store != StoreKind::Sqlite)
        .filter(|k| *k != FaultKind::DbKill)
        .collect()
}

/// `berth-apiserver` next to the running executable (or next to its parent directory, where
/// cargo puts it for test binaries in `target/*/deps`).
pub fn default_apiserver_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("berth-apiserver"))
        .find(|p| p.is_file())
}

/// Totals of the `LeaseHandle` clients of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct HandleStats {
    /// Grants held.
    pub grants: u32,
    /// Holds ended by a lost renewal.
    pub lost: u32,
    /// Holds ended by `safe_until` passing.
    pub expired: u32,
    /// Releases answered.
    pub released: u32,
    /// Releases sent again after no answer.
    pub release_retries: u32,
    /// Acts.
    pub acts: usize,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The configuration.
    pub config: Config,
    /// Every client call.
    pub history: History,
    /// The replica each call of `history` went to (same index).
    pub replica_of: Vec<usize>,
    /// Token per key read after healing.
    pub finals: BTreeMap<String, i64>,
    /// Every act of every client.
    pub acts: Vec<Act>,
    /// Client stalls past the TTL.
    pub stalls: u32,
    /// What the `LeaseHandle` clients did (their acts are in `acts`).
    pub handles: HandleStats,
    /// Failed calls per kind of failure.
    pub errors: BTreeMap<String, u32>,
    /// Every fault.
    pub faults: Vec<FaultEvent>,
    /// Longest kill-to-healthy restart of a replica.
    pub max_restart: Duration,
    /// Longest kill-to-ready restart of the private database.
    pub max_db_restart: Duration,
    /// Violations of the history rules.
    pub violations: Vec<Violation>,
    /// Clients that acted at once.
    pub act_violations: Vec<ActOverlap>,
    /// The per-key linearizability check of `history`.
    pub linear: LinearReport,
}

fn answered(op: &Op) -> bool {
    op.result != OpResult::Unknown
}

impl Report {
    /// Whether the run found no violation.
    pub fn is_safe(&self) -> bool {
        self.violations.is_empty()
            && self.act_violations.is_empty()
            && self.linear.failures().next().is_none()
    }

    /// Longest stretch in which no call was answered by any replica: what clients saw of the
    /// worst failover.
    pub fn max_gap(&self) -> Duration {
        let mut done: Vec<Duration> = self
            .history
            .ops
            .iter()
            .filter(|o| answered(o))
            .map(|o| o.complete)
            .collect();
        done.sort_unstable();
        done.windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .max()
            .unwrap_or_default()
    }

    /// Longest time from the end of a fault until the faulted replica answered a call invoked
    /// after it.
    pub fn max_recovery(&self) -> Duration {
        self.faults
            .iter()
            .filter_map(|f| {
                self.history
                    .ops
                    .iter()
                    .zip(&self.replica_of)
                    .filter(|(o, r)| **r == f.replica && o.invoke >= f.end && answered(o))
                    .map(|(o, _)| o.complete.saturating_sub(f.end))
                    .min()
            })
            .max()
            .unwrap_or_default()
    }

    /// The self-test of the checker: the run's history plus a forged grant to another client
    /// inside the first acknowledged window must be reported as an overlap.
    pub fn forged_overlap(&self) -> Option<Violation> {
        let first = self
            .history
            .ops
            .iter()
            .find(|o| o.kind == OpKind::Acquire && matches!(o.result, OpResult::Granted { .. }))?
            .clone();
        let mut forged = self.history.clone();
        forged.push(Op {
            client: first.client + 100_000,
            invoke: first.complete,
            complete: first.complete + Duration::from_millis(1),
            result: OpResult::Granted {
                token: i64::MAX / 2,
                ttl_remaining: self.config.ttl,
            },
            ..first
        });
        history::check(&forged, &BTreeMap::new())
            .into_iter()
            .find(|v| v.kind == ViolationKind::Overlap)
    }

    /// Number of faults per kind.
    pub fn faults_per_kind(&self) -> BTreeMap<FaultKind, u32> {
        nemesis::per_kind(&self.faults)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.history.result_counts();
        let faults: Vec<String> = self
            .faults_per_kind()
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "{}: store {}, {} replica(s), {} clients, {} keys, ttl {}, seed {:#x}, {} s",
            self.config.name,
            self.config.store_name(),
            self.config.replicas,
            self.config.clients,
            self.config.keys,
            humantime::format_duration(self.config.ttl),
            self.config.seed,
            self.config.duration.as_secs()
        )?;
        writeln!(
            f,
            "{}: operations {} (granted {}, denied {}, lost {}, released {}, conflict {}, \
             unknown {}; failures {:?}); acts {}, stalls {}; faults: {}; max restart {} ms, max gap without \
             an answer {} ms, max recovery after a fault {} ms, max database restart {} ms; final \
             tokens {:?}; violations {}",
            self.config.name,
            self.history.ops.len(),
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            self.errors,
            self.acts.len(),
            self.stalls,
            if faults.is_empty() {
                "none".to_owned()
            } else {
                faults.join(", ")
            },
            self.max_restart.as_millis(),
            self.max_gap().as_millis(),
            self.max_recovery().as_millis(),
            self.max_db_restart.as_millis(),
            self.finals,
            self.violations.len() + self.act_violations.len()
        )?;
        let h = &self.handles;
        writeln!(
            f,
            "{}: LeaseHandle clients {}: grants {}, lost {}, expired {}, released {} ({} resent), \
             acts {}",
            self.config.name,
            self.config.handle_clients,
            h.grants,
            h.lost,
            h.expired,
            h.released,
            h.release_retries,
            h.acts
        )?;
        let lin = &self.linear;
        writeln!(
            f,
            "{}: linearizability: {} keys, {} operations, {} states explored; not linearizable \
             {}, undecided {}",
            self.config.name,
            lin.keys.len(),
            lin.keys.iter().map(|k| k.ops).sum::<usize>(),
            lin.states(),
            lin.failures().count(),
            lin.undecided().count()
        )?;
        for v in &self.violations {
            write!(f, "{v}")?;
        }
        for v in &self.act_violations {
            write!(f, "{v}")?;
        }
        for k in lin
            .keys
            .iter()
            .filter(|k| k.verdict != Verdict::Linearizable)
        {
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

/// Runs the chaos run `cfg` describes.
///
/// # Errors
///
/// Bad configuration, the database or a replica could not be set up or restarted, or the
/// final read failed. Safety violations are not errors: they are in the report.
pub async fn run(cfg: Config) -> Result<Report> {
    cfg.validate()?;
    let mut pg = match &cfg.private_postgres {
        Some(bin) => Some(PgServer::start(bin).await?),
        None => None,
    };
    let admin = pg
        .as_ref()
        .map(PgServer::admin_dsn)
        .or(cfg.admin_dsn.clone());
    let db = Database::create(cfg.store, admin.as_deref())?;
    let pki = Pki::new()?;
    let mut cluster = Cluster {
        replicas: Vec::new(),
        client_proxies: Vec::new(),
        db_proxies: Vec::new(),
    };
    let db_dsn = (cfg.store != StoreKind::Sqlite)
        .then(|| Dsn::parse(&db.dsn))
        .transpose()?;
    let db_addr = match &db_dsn {
        Some(d) => Some(d.resolve().await?),
        None => None,
    };
    for i in 0..cfg.replicas {
        let seed = cfg.seed ^ (0xD1B5_4A32 + i as u64);
        let dsn = match (&db_dsn, db_addr) {
            (Some(d), Some(addr)) => {
                let p = Proxy::start(addr, seed).await?;
                let dsn = d.with_addr(p.addr()).to_string();
                cluster.db_proxies.push(p);
                dsn
            }
            _ => db.dsn.clone(),
        };
        let mut args = match &cfg.custom_store {
            Some((_, args)) => args.clone(),
            None => db.server_args(&dsn),
        };
        if let Some(t) = cfg.store_timeout {
            args.extend([
                "--store-timeout".to_owned(),
                humantime::format_duration(t).to_string(),
            ]);
        }
        let name = format!("{}-{i}", cfg.store_name());
        let env = cfg.replica_env.get(i).cloned().unwrap_or_default();
        cluster
            .replicas
            .push(Replica::new(&name, &cfg.apiserver_bin, &pki, &args).with_env(env));
        // One after the other: the first applies the migrations alone.
        let took = cluster.start(i).await?;
        let addr = cluster
            .replicas
            .get(i)
            .map(Replica::addr)
            .context("replica")?;
        cluster
            .client_proxies
            .push(Proxy::start(addr, seed ^ 0xC11E).await?);
        let _ = took;
    }

    let work = Workload {
        namespace: NAMESPACE.to_owned(),
        keys: (0..cfg.keys).map(|k| format!("k{k}")).collect(),
        ttl: cfg.ttl,
        stall_probability: cfg.stall_probability,
    };
    let origin = Instant::now();
    let until = origin + cfg.duration;
    let task = |id: u32, work: &Workload| -> Result<ClientTask> {
        let replicas = cluster
            .client_proxies
            .iter()
            .map(|p| pki.client(&format!("https://{}", p.addr()), cfg.request_timeout))
            .collect::<Result<Vec<_>>>()?;
        Ok(ClientTask {
            id,
            replicas,
            work: work.clone(),
            origin,
            until,
            seed: cfg.seed,
        })
    };
    let mut tasks = JoinSet::new();
    for id in 0..cfg.clients {
        tasks.spawn(workload::run_client(task(id, &work)?));
    }
    let handle_work = Workload {
        keys: (0..cfg.keys).map(|k| format!("h{k}")).collect(),
        ..work.clone()
    };
    let mut handle_tasks = JoinSet::new();
    for i in 0..cfg.handle_clients {
        handle_tasks.spawn(workload::run_handle_client(task(
            HANDLE_CLIENT_IDS + i,
            &handle_work,
        )?));
    }
    let nemesis = nemesis::run_with_db(
        &mut cluster,
        pg.as_mut(),
        &cfg.faults,
        cfg.ttl,
        origin,
        until,
        cfg.seed,
    )
    .await?;

    let mut history = History::new();
    let mut replica_of = Vec::new();
    let mut acts = Vec::new();
    let mut stalls = 0;
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let log = done.context("client task")?;
        for (op, r) in log.ops {
            history.push(op);
            replica_of.push(r);
        }
        acts.extend(log.acts);
        stalls += log.stalls;
        for (k, n) in log.errors {
            *errors.entry(k).or_insert(0) += n;
        }
    }

    let mut handles = HandleStats::default();
    while let Some(done) = handle_tasks.join_next().await {
        let log = done.context("LeaseHandle client task")?;
        handles.grants += log.grants;
        handles.lost += log.lost;
        handles.expired += log.expired;
        handles.released += log.released;
        handles.release_retries += log.release_retries;
        handles.acts += log.acts.len();
        stalls += log.stalls;
        acts.extend(log.acts);
    }

    if let Some(pg) = pg.as_mut()
        && !pg.is_running()
    {
        pg.restart().await?;
    }
    cluster.heal().await?;
    let finals = final_tokens(&cluster, &pki, &work).await?;
    let violations = history::check(&history, &finals);
    let act_violations = acting::check(&acts);
    let linear = linear::check(&history);
    Ok(Report {
        config: cfg,
        history,
        replica_of,
        finals,
        acts,
        stalls,
        handles,
        errors,
        faults: nemesis.events,
        max_restart: nemesis.max_restart,
        max_db_restart: nemesis.max_db_restart,
        violations,
        act_violations,
        linear,
    })
}

/// Reads every key's token through the first replica (directly), retrying for up to 30 s.
async fn final_tokens(
    cluster: &Cluster,
    pki: &Pki,
    work: &Workload,
) -> Result<BTreeMap<String, i64>> {
    let addr = cluster.replicas.first().context("no replica")?.addr();
    let reader = pki.client(&format!("https://{addr}"), Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut finals = BTreeMap::new();
    for key in &work.keys {
        loop {
            match reader.get(&work.namespace, key).await {
                Ok(status) => {
                    if let Some(s) = status {
                        finals.insert(format!("{}/{key}", work.namespace), s.fencing_token);
                    }
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("final read"),
            }
        }
    }
    Ok(finals)
}
