//! The cluster under test (replicas, their client-side proxies, their database-side proxies)
//! and the seeded nemesis that injects one fault at a time into it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

use crate::pgserver::PgServer;
use crate::proxy::{Mode, Proxy};
use crate::replica::Replica;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum FaultKind {
    /// `kill -9` one replica, restart it 0.2–0.8 s later (on a new port behind its proxy).
    Kill,
    /// `SIGSTOP` one replica for TTL + 0.3–1 s, then `SIGCONT`.
    Pause,
    /// Cut one replica off from every client (its proxy black-holes) for TTL + 0.3–1 s.
    Partition,
    /// Delay every chunk between the clients and one replica by 100–300 ms + up to 100 ms
    /// jitter, for 1–2.5 TTL.
    Latency,
    /// Cut one replica off from its database (PostgreSQL/MariaDB) for TTL + 0.3–1 s.
    DbPartition,
    /// `kill -9` the private PostgreSQL server (every process of it), restart it 0.2–0.8 s
    /// later on the same data directory (crash recovery); only with a private server.
    DbKill,
}

impl FaultKind {
    /// Every kind, in `--faults` order.
    pub const ALL: [Self; 6] = [
        Self::Kill,
        Self::Pause,
        Self::Partition,
        Self::Latency,
        Self::DbPartition,
        Self::DbKill,
    ];

    /// The `--faults` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
            Self::Latency => "latency",
            Self::DbPartition => "db-partition",
            Self::DbKill => "db-kill",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One injected fault: on which replica, from when to when (offsets from the run's origin;
/// for `kill` the end is when the restarted replica answered `/healthz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// The kind.
    pub kind: FaultKind,
    /// Replica index.
    pub replica: usize,
    /// Injected at.
    pub start: Duration,
    /// Healed at.
    pub end: Duration,
}

/// Number of faults per kind.
pub fn per_kind(events: &[FaultEvent]) -> BTreeMap<FaultKind, u32> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e.kind).or_insert(0) += 1;
    }
    out
}

/// The replicas with their proxies. Fields drop in order: replicas first.
pub struct Cluster {
    /// The `berth-apiserver` processes.
    pub replicas: Vec<Replica>,
    /// One proxy per replica that every client goes through.
    pub client_proxies: Vec<Proxy>,
    /// One proxy per replica between it and the database (empty for SQLite).
    pub db_proxies: Vec<Proxy>,
}

impl Cluster {
    /// (Re)starts replica `i` and points its client proxy at the new port; returns how long
    /// the start took.
    ///
    /// # Errors
    ///
    /// No such replica, or it did not come up.
    pub async fn start(&mut self, i: usize) -> Result<Duration> {
        let Some(r) = self.replicas.get_mut(i) else {
            bail!("no replica {i}");
        };
        let took = r.start().await?;
        if let Some(p) = self.client_proxies.get(i) {
            p.set_upstream(r.addr());
        }
        Ok(took)
    }

    /// Ends every fault: resumes paused replicas, restarts dead ones, sets every proxy to pass.
    ///
    /// # Errors
    ///
    /// A replica could not be resumed or restarted.
    pub async fn heal(&mut self) -> Result<()> {
        for p in self.client_proxies.iter().chain(&self.db_proxies) {
            p.set_mode(Mode::Pass);
        }
        for i in 0..self.replicas.len() {
            if let Some(r) = self.replicas.get_mut(i) {
                r.resume()?;
                if !r.is_running() {
                    self.start(i).await?;
                }
            }
        }
        Ok(())
    }
}

/// What the nemesis did.
#[derive(Debug, Default)]
pub struct NemesisLog {
    /// Every fault, in order.
    pub events: Vec<FaultEvent>,
    /// Longest kill-to-healthy restart of a replica.
    pub max_restart: Duration,
    /// Longest kill-to-ready restart of the private database.
    pub max_db_restart: Duration,
}

/// Injects faults of `kinds` (each kind once per round, in an order shuffled on `seed`), one at a time on a random replica, 0.3–0.9 s
/// apart, until the next fault would not end before `until`.
///
/// # Errors
///
/// A replica failed to restart or to be signalled; the cluster may be left faulty (dropping it
/// cleans up).
pub async fn run(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    ttl: Duration,
    origin: Instant,
    until: Instant,
    seed: u64,
) -> Result<NemesisLog> {
    run_with_db(cluster, None, kinds, ttl, origin, until, seed).await
}

/// [`run`], with a private database server the `db-kill` fault applies to.
///
/// # Errors
///
/// As [`run`]; also when the database does not come back.
pub async fn run_with_db(
    cluster: &mut Cluster,
    mut db: Option<&mut PgServer>,
    kinds: &[FaultKind],
    ttl: Duration,
    origin: Instant,
    until: Instant,
    seed: u64,
) -> Result<NemesisLog> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = NemesisLog::default();
    let kinds: Vec<FaultKind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != FaultKind::DbPartition || !cluster.db_proxies.is_empty())
        .filter(|k| *k != FaultKind::DbKill || db.is_some())
        .collect();
    let mut bag: Vec<FaultKind> = Vec::new();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    while !kinds.is_empty() {
        // A shuffled bag: every kind once per round, in a seeded order.
        if bag.is_empty() {
            bag.clone_from(&kinds);
            bag.shuffle(&mut rng);
        }
        let Some(kind) = bag.pop() else { break };
        let i = rng.random_range(0..cluster.replicas.len());
        // How long the fault lasts (for kill: how long the replica stays down).
        let hold = match kind {
            FaultKind::Kill | FaultKind::DbKill => {
                Duration::from_millis(rng.random_range(200..800))
            }
            FaultKind::Latency => ttl.mul_f64(rng.random_range(1.0..2.5)),
            _ => ttl + Duration::from_millis(rng.random_range(300..1000)),
        };
        let latency = Duration::from_millis(rng.random_range(100..300));
        // A restart may take a few seconds more; stop when the fault would not end in time.
        let margin = Duration::from_millis(match kind {
            FaultKind::Kill | FaultKind::DbKill => 3000,
            _ => 500,
        });
        if Instant::now() + hold + margin > until {
            break;
        }
        let start = origin.elapsed();
        match kind {
            FaultKind::Kill => {
                if let Some(r) = cluster.replicas.get_mut(i) {
                    r.kill9();
                }
                tokio::time::sleep(hold).await;
                let took = cluster.start(i).await?;
                log.max_restart = log.max_restart.max(took);
            }
            FaultKind::DbKill => {
                if let Some(pg) = db.as_deref_mut() {
                    pg.kill9();
                    tokio::time::sleep(hold).await;
                    let took = pg.restart().await?;
                    log.max_db_restart = log.max_db_restart.max(took);
                }
            }
            FaultKind::Pause => {
                if let Some(r) = cluster.replicas.get_mut(i) {
                    r.pause()?;
                    tokio::time::sleep(hold).await;
                    r.resume()?;
                }
            }
            FaultKind::Partition | FaultKind::DbPartition => {
                let proxies = if kind == FaultKind::Partition {
                    &cluster.client_proxies
                } else {
                    &cluster.db_proxies
                };
                if let Some(p) = proxies.get(i) {
                    p.set_mode(Mode::Partition);
                    tokio::time::sleep(hold).await;
                    p.set_mode(Mode::Pass);
                }
            }
            FaultKind::Latency => {
                if let Some(p) = cluster.client_proxies.get(i) {
                    p.set_mode(Mode::Latency {
                        fixed: latency,
                        jitter: Duration::from_millis(100),
                    });
                    tokio::time::sleep(hold).await;
                    p.set_mode(Mode::Pass);
                }
            }
        }
        log.events.push(FaultEvent {
            kind,
            replica: i,
            start,
            end: origin.elapsed(),
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
    }
    Ok(log)
}
