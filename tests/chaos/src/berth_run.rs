//! `berth run` under chaos: several `berth run --lease chaos/run -- berth-chaos-child`
//! processes compete for one lease on real replicas while a nemesis freezes whole `berth run`
//! process groups (supervisor and child, like a paused VM) for longer than the TTL and the
//! replica nemesis kills and pauses replicas.
//!
//! Every child writes to one [`FencedResource`] served by this process over a Unix socket
//! ([`FenceServer`]), so every start, write and exit is stamped on one clock, in the order the
//! resource saw it. [`Report::check`] then holds the run to this: a child never writes with a
//! stale token (one lower than a token that has already written) unless its `berth run` group
//! was frozen and resumed before the write — the documented window of a paused holder
//! (reference §9: "split-brain window between holder losing connectivity and observing loss;
//! downstream fencing required"). For each such window it measures how long the stale child
//! lived after the resume, and shows that the resource refused every one of its writes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::database::{Database, StoreKind};
use crate::fence::FencedResource;
use crate::nemesis::{self, Cluster, FaultEvent, FaultKind};
use crate::pki::Pki;
use crate::proxy::Proxy;
use crate::replica::Replica;

/// The lease every client competes for.
pub const LEASE: &str = "chaos/run";

/// Everything that shapes a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name in the report.
    pub name: String,
    /// Number of competing `berth run` clients.
    pub clients: u32,
    /// `--ttl` of `berth run`.
    pub ttl: Duration,
    /// `--kill-grace` of `berth run`.
    pub kill_grace: Duration,
    /// Run length.
    pub duration: Duration,
    /// Seed of the clients and both nemeses.
    pub seed: u64,
    /// The `berth` CLI binary.
    pub berth_bin: PathBuf,
    /// The `berth-chaos-child` binary.
    pub child_bin: PathBuf,
    /// The `berth-apiserver` binary.
    pub apiserver_bin: PathBuf,
    /// Replica fault kinds (one SQLite replica, so `kill` and `pause` apply).
    pub replica_faults: Vec<FaultKind>,
}

impl Config {
    /// Defaults: 3 clients, TTL 2 s, kill grace 500 ms, 20 s, replica `kill` (a paused replica
    /// would freeze every client at once, so a takeover would rarely be seen).
    pub fn new(name: &str, berth_bin: &Path, child_bin: &Path, apiserver_bin: &Path) -> Self {
        Self {
            name: name.to_owned(),
            clients: 3,
            ttl: Duration::from_secs(2),
            kill_grace: Duration::from_millis(500),
            duration: Duration::from_secs(20),
            seed: 1,
            berth_bin: berth_bin.to_path_buf(),
            child_bin: child_bin.to_path_buf(),
            apiserver_bin: apiserver_bin.to_path_buf(),
            replica_faults: vec![FaultKind::Kill],
        }
    }
}

/// One run of the child: from its `start` to its `stop` or the close of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Life {
    /// The holder (`client-N`).
    pub holder: String,
    /// Its fencing token.
    pub token: i64,
    /// PID of its `berth run` (the process group that may be frozen).
    pub supervisor: u32,
    /// When the resource saw its `start` (offset from the run's origin).
    pub start: Duration,
    /// When it sent `stop` or its connection closed (killed).
    pub end: Option<Duration>,
    /// Whether it finished its work and said `stop` (not killed).
    pub finished: bool,
}

/// One write (including the `start`) a child made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// Index into [`Journal::lives`].
    pub life: usize,
    /// When the resource took it.
    pub at: Duration,
    /// Whether the resource accepted it (its token was not stale).
    pub accepted: bool,
}

/// What the fenced resource saw, in its order.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    /// Every child run.
    pub lives: Vec<Life>,
    /// Every write.
    pub writes: Vec<Write>,
}

struct Fence {
    origin: Instant,
    resource: FencedResource,
    journal: Mutex<Journal>,
}

impl Fence {
    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one message of connection `life` (`None` until `start`); returns the reply.
    fn handle(&self, life: &mut Option<usize>, line: &str) -> String {
        let mut j = self.journal();
        let at = self.origin.elapsed();
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default();
        if verb == "start" && life.is_none() {
            let holder = words.next().unwrap_or_default().to_owned();
            let token = words.next().and_then(|t| t.parse().ok()).unwrap_or(-1);
            let supervisor = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            j.lives.push(Life {
                holder,
                token,
                supervisor,
                start: at,
                end: None,
                finished: false,
            });
            *life = Some(j.lives.len() - 1);
        }
        let Some(i) = *life else {
            return "error: start first\n".to_owned();
        };
        let Some(token) = j.lives.get(i).map(|l| l.token) else {
            return "error\n".to_owned();
        };
        match verb {
            "start" | "write" => {
                let result = self.resource.write(token, line);
                j.writes.push(Write {
                    life: i,
                    at,
                    accepted: result.is_ok(),
                });
                match result {
                    Ok(()) => "ok\n".to_owned(),
                    Err(e) => format!("{e}\n"),
                }
            }
            "stop" => {
                if let Some(l) = j.lives.get_mut(i) {
                    l.end = Some(at);
                    l.finished = true;
                }
                "ok\n".to_owned()
            }
            _ => "error: unknown verb\n".to_owned(),
        }
    }

    fn closed(&self, life: Option<usize>) {
        let mut j = self.journal();
        let at = self.origin.elapsed();
        if let Some(l) = life.and_then(|i| j.lives.get_mut(i))
            && l.end.is_none()
        {
            l.end = Some(at);
        }
    }
}

/// The fenced resource on a Unix socket. Dropping it stops the listener.
pub struct FenceServer {
    path: PathBuf,
    fence: Arc<Fence>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve_conn(fence: Arc<Fence>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut life = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = fence.handle(&mut life, &line);
        if write.write_all(reply.as_bytes()).await.is_err() {
            break;
        }
    }
    fence.closed(life);
}

impl FenceServer {
    /// Listens on `path`; times are offsets from `origin`.
    ///
    /// # Errors
    ///
    /// The socket could not be bound.
    pub fn start(path: &Path, origin: Instant) -> Result<Self> {
        let listener = UnixListener::bind(path)
            .with_context(|| format!("bind the fence socket {}", path.display()))?;
        let fence = Arc::new(Fence {
            origin,
            resource: FencedResource::new(),
            journal: Mutex::new(Journal::default()),
        });
        let f = fence.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_conn(f.clone(), stream));
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            fence,
            task,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the journal.
    pub fn journal(&self) -> Journal {
        self.fence.journal().clone()
    }

    /// The `berth run` PID of the child that started last and has not ended, if any.
    pub fn running_supervisor(&self) -> Option<u32> {
        self.fence
            .journal()
            .lives
            .iter()
            .rev()
            .find(|l| l.end.is_none())
            .map(|l| l.supervisor)
    }
}

impl Drop for FenceServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `sig` (`-STOP`, `-CONT`, `-KILL`) to the process group `pgid`.
fn signal_group(sig: &str, pgid: u32) -> Result<()> {
    let ok = std::process::Command::new("kill")
        .args([sig, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .context("run kill")?
        .success();
    if !ok {
        bail!("kill {sig} -{pgid} failed");
    }
    Ok(())
}

/// The `berth run` process group of each client while one runs (the PID of `berth run`, the
/// group leader). A group is signalled only under this lock and only while its leader is
/// unreaped, so a signal never reaches a recycled PID.
type Slots = Arc<Mutex<Vec<Option<u32>>>>;

fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, Vec<Option<u32>>> {
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills a `berth run` process group on drop unless it was reaped.
struct GroupGuard {
    pgid: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = signal_group("-CONT", pgid);
            let _ = signal_group("-KILL", pgid);
        }
    }
}

/// What a client needs to start `berth run`.
struct ClientSetup {
    cfg: Config,
    server: String,
    ca_file: PathBuf,
    fence: PathBuf,
    logs: PathBuf,
}

fn millis_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Runs client `id`: `berth run` again and again until `until`; returns how often it started.
async fn run_client(id: u32, setup: Arc<ClientSetup>, slots: Slots, until: Instant) -> Result<u32> {
    let cfg = &setup.cfg;
    let mut rng = StdRng::seed_from_u64(crate::workload::client_seed(cfg.seed, id));
    let slot = usize::try_from(id)?;
    let log = std::fs::File::create(setup.logs.join(format!("client-{id}.log")))?;
    let mut spawns = 0;
    while Instant::now() < until {
        let work = Duration::from_millis(rng.random_range(300..1500));
        let mut cmd = tokio::process::Command::new(&cfg.berth_bin);
        cmd.arg("--server")
            .arg(&setup.server)
            .arg("--ca-file")
            .arg(&setup.ca_file)
            .args(["--timeout", "800ms", "run", "--lease", LEASE])
            .args(["--holder", &format!("client-{id}")])
            .args(["--ttl", &millis_arg(cfg.ttl)])
            .args(["--kill-grace", &millis_arg(cfg.kill_grace)])
            .args(["--poll-interval", "100ms", "--"])
            .arg(&cfg.child_bin)
            .env("BERTH_CHAOS_FENCE", &setup.fence)
            .env("BERTH_CHAOS_WORK_MS", work.as_millis().to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone()?)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawn berth run")?;
        spawns += 1;
        let mut guard = GroupGuard { pgid: child.id() };
        if let Some(s) = lock(&slots).get_mut(slot) {
            *s = guard.pgid;
        }
        let exited = loop {
            {
                let mut slots = lock(&slots);
                let exited = child.try_wait()?.is_some();
                if exited || Instant::now() >= until {
                    if let Some(s) = slots.get_mut(slot) {
                        *s = None;
                    }
                    break exited;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if exited {
            guard.pgid = None;
        } else {
            drop(guard);
            let _ = child.wait().await;
            return Ok(spawns);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
    Ok(spawns)
}

/// One `berth run` group frozen and resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPause {
    /// Its `berth run` PID.
    pub supervisor: u32,
    /// `SIGSTOP` at.
    pub start: Duration,
    /// `SIGCONT` at.
    pub end: Duration,
}

/// Freezes the running holder's `berth run` group (or, when none runs, a random client's) for
/// TTL + 0.3–1 s, 1–2.5 s apart, until `until`.
async fn pause_groups(
    slots: Slots,
    fence: &FenceServer,
    ttl: Duration,
    origin: Instant,
    until: Instant,
    seed: u64,
) -> Result<Vec<GroupPause>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6A0F_5EED);
    let mut out = Vec::new();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while Instant::now() + ttl * 2 + Duration::from_secs(1) < until {
        let holding = fence.running_supervisor();
        let victim = {
            let slots = lock(&slots);
            let running: Vec<u32> = slots.iter().flatten().copied().collect();
            let pick = holding.filter(|h| running.contains(h)).or_else(|| {
                (!running.is_empty()).then(|| running[rng.random_range(0..running.len())])
            });
            if let Some(pgid) = pick {
                signal_group("-STOP", pgid)?;
            }
            pick
        };
        if let Some(pgid) = victim {
            let start = origin.elapsed();
            tokio::time::sleep(ttl + Duration::from_millis(rng.random_range(300..1000))).await;
            // Stamped before the signal, so windows measured from it are not shortened.
            let end = origin.elapsed();
            // A frozen leader cannot exit, so its slot still names it.
            signal_group("-CONT", pgid)?;
            out.push(GroupPause {
                supervisor: pgid,
                start,
                end,
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2500))).await;
    }
    Ok(out)
}

/// A stale child that ran after its frozen group resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The stale child.
    pub life: Life,
    /// When its group was resumed.
    pub resumed: Duration,
    /// Whether `berth run` started the child only after the resume (the grant had expired
    /// while it was frozen).
    pub started_after_resume: bool,
    /// Its writes after the resume refused by the resource.
    pub refused: u32,
    /// Its writes after the resume the resource accepted (a stale token must not get through).
    pub accepted: u32,
}

impl Window {
    /// From the resume to the stale child's end.
    pub fn length(&self) -> Duration {
        self.life
            .end
            .unwrap_or(self.resumed)
            .saturating_sub(self.resumed)
    }
}

/// What [`Report::check`] found.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// Stale children after a resume.
    pub windows: Vec<Window>,
    /// Two holders' children alive at once without a freeze to explain it (earlier, later,
    /// how long): the resource refused no write of either, so this is the time between the
    /// supervisor's kill and the close of the child's connection being seen.
    pub overlaps: Vec<(Life, Life, Duration)>,
    /// Broken promises, described.
    pub violations: Vec<String>,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The configuration.
    pub config: Config,
    /// What the fenced resource saw.
    pub journal: Journal,
    /// `berth run` starts.
    pub spawns: u32,
    /// Frozen `berth run` groups.
    pub group_pauses: Vec<GroupPause>,
    /// Replica faults.
    pub replica_faults: Vec<FaultEvent>,
    /// Windows, overlaps and violations.
    pub checked: Checked,
}

impl Report {
    /// Holds `journal` to the rules in the module docs given the frozen groups and the TTL.
    ///
    /// A window is a child whose `berth run` group was frozen while the child ran (or just
    /// before `berth run` started it: within a TTL of the resume, on a grant from before the
    /// freeze) and that lived on after another holder's child with a higher token had started
    /// during or after the freeze: from the resume to the stale child's end the two ran at
    /// once.
    pub fn check(journal: &Journal, pauses: &[GroupPause], ttl: Duration) -> Checked {
        let mut checked = Checked::default();
        let lives = &journal.lives;
        for (i, l) in lives.iter().enumerate() {
            let end = l.end.unwrap_or(Duration::MAX);
            let mut explained: Vec<GroupPause> = Vec::new();
            // Each child of another holder with a higher token that started before `l` ended
            // overtook it; the freeze that explains it is the last one of `l`'s group that
            // began before the overtaking child started.
            for m in lives {
                if m.holder == l.holder || m.token <= l.token || m.start > end {
                    continue;
                }
                let Some(p) = pauses
                    .iter()
                    .filter(|p| p.supervisor == l.supervisor && p.start <= m.start)
                    .max_by_key(|p| p.start)
                else {
                    continue;
                };
                // `l` was alive when the freeze began, or started on a grant from before it.
                if end < p.start || l.start > p.end + ttl || explained.contains(p) {
                    continue;
                }
                explained.push(*p);
                let after = |accepted: bool| {
                    let n = journal
                        .writes
                        .iter()
                        .filter(|w| w.life == i && w.accepted == accepted && w.at >= p.end)
                        .count();
                    u32::try_from(n).unwrap_or(u32::MAX)
                };
                checked.windows.push(Window {
                    life: l.clone(),
                    resumed: p.end,
                    started_after_resume: l.start >= p.end,
                    refused: after(false),
                    accepted: after(true),
                });
            }
        }
        let windows = checked.windows.clone();
        let in_window =
            |l: &Life, at: Duration| windows.iter().any(|w| w.life == *l && at >= w.resumed);
        for w in &journal.writes {
            let Some(life) = lives.get(w.life) else {
                continue;
            };
            if !w.accepted && !in_window(life, w.at) {
                checked.violations.push(format!(
                    "{} (token {}) wrote at {:.3}s with a stale token outside a window after \
                     a resume: two holders' children ran at once",
                    life.holder,
                    life.token,
                    w.at.as_secs_f64()
                ));
            }
        }
        // Lifetimes (start to stop or connection close) of two holders' children that overlap
        // although no freeze explains it.
        for (i, a) in lives.iter().enumerate() {
            for b in lives.iter().skip(i + 1) {
                let (first, second) = if a.start <= b.start { (a, b) } else { (b, a) };
                let first_end = first.end.unwrap_or(Duration::MAX);
                if a.holder == b.holder
                    || second.start >= first_end
                    || windows.iter().any(|w| w.life == *a || w.life == *b)
                {
                    continue;
                }
                let overlap = first_end.min(second.end.unwrap_or(Duration::MAX)) - second.start;
                checked
                    .overlaps
                    .push((first.clone(), second.clone(), overlap));
            }
        }
        // A token belongs to one holder.
        let mut owner: BTreeMap<i64, &str> = BTreeMap::new();
        for l in lives {
            let first = *owner.entry(l.token).or_insert(&l.holder);
            if first != l.holder {
                checked.violations.push(format!(
                    "token {} was granted to {first} and to {}",
                    l.token, l.holder
                ));
            }
        }
        checked
    }

    /// Whether the run found no violation.
    pub fn is_safe(&self) -> bool {
        self.checked.violations.is_empty()
    }

    /// The longest window after a resume.
    pub fn max_window(&self) -> Duration {
        self.checked
            .windows
            .iter()
            .map(Window::length)
            .max()
            .unwrap_or_default()
    }

    /// Number of faults per kind, `group-pause` included.
    pub fn faults_per_kind(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = nemesis::per_kind(&self.replica_faults)
            .into_iter()
            .map(|(k, n)| (format!("replica-{k}"), n))
            .collect();
        if !self.group_pauses.is_empty() {
            out.insert(
                "berth-run-group-pause".to_owned(),
                u32::try_from(self.group_pauses.len()).unwrap_or(u32::MAX),
            );
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = &self.journal;
        let accepted = j.writes.iter().filter(|w| w.accepted).count();
        let holders: std::collections::BTreeSet<&str> =
            j.lives.iter().map(|l| l.holder.as_str()).collect();
        let killed = j.lives.iter().filter(|l| !l.finished).count();
        let faults: Vec<String> = self
            .faults_per_kind()
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "{}: {} berth run clients, ttl {}, kill grace {}, seed {:#x}, {} s: {} berth run \
             starts, {} children ({} holders, {} stopped by berth run), writes {} accepted / {} \
             refused; faults: {}; windows after a resume {} (max {} ms); overlaps without a \
             freeze {} (max {} ms); violations {}",
            self.config.name,
            self.config.clients,
            humantime::format_duration(self.config.ttl),
            humantime::format_duration(self.config.kill_grace),
            self.config.seed,
            self.config.duration.as_secs(),
            self.spawns,
            j.lives.len(),
            holders.len(),
            killed,
            accepted,
            j.writes.len() - accepted,
            if faults.is_empty() {
                "none".to_owned()
            } else {
                faults.join(", ")
            },
            self.checked.windows.len(),
            self.max_window().as_millis(),
            self.checked.overlaps.len(),
            self.checked
                .overlaps
                .iter()
                .map(|o| o.2)
                .max()
                .unwrap_or_default()
                .as_millis(),
            self.checked.violations.len()
        )?;
        for w in &self.checked.windows {
            writeln!(
                f,
                "  window: {} token {} resumed at {:.3}s, ended {} ms later ({}), {} writes \
                 refused, {} accepted",
                w.life.holder,
                w.life.token,
                w.resumed.as_secs_f64(),
                w.length().as_millis(),
                if w.started_after_resume {
                    "child started after the resume"
                } else {
                    "child frozen mid-work"
                },
                w.refused,
                w.accepted
            )?;
        }
        for (a, b, d) in &self.checked.overlaps {
            writeln!(
                f,
                "  overlap: {} token {} ended {} ms after {} token {} started",
                a.holder,
                a.token,
                d.as_millis(),
                b.holder,
                b.token
            )?;
        }
        for v in &self.checked.violations {
            writeln!(f, "VIOLATION {v}")?;
        }
        Ok(())
    }
}

/// Runs the `berth run` chaos run `cfg` describes on one SQLite replica.
///
/// # Errors
///
/// A binary is missing, or a process could not be started or signalled.
pub async fn run(cfg: Config) -> Result<Report> {
    for bin in [&cfg.berth_bin, &cfg.child_bin, &cfg.apiserver_bin] {
        if !bin.is_file() {
            bail!("{} is missing", bin.display());
        }
    }
    let dir = tempfile::tempdir().context("tempdir")?;
    let db = Database::create(StoreKind::Sqlite, None)?;
    let pki = Pki::new()?;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &pki.ca_pem)?;
    let mut cluster = Cluster {
        replicas: vec![Replica::new(
            "sqlite-0",
            &cfg.apiserver_bin,
            &pki,
            &db.server_args(&db.dsn),
        )],
        client_proxies: Vec::new(),
        db_proxies: Vec::new(),
    };
    cluster.start(0).await?;
    let addr = cluster.replicas.first().context("replica")?.addr();
    cluster
        .client_proxies
        .push(Proxy::start(addr, cfg.seed).await?);
    let server = format!(
        "https://{}",
        cluster.client_proxies.first().context("proxy")?.addr()
    );

    let origin = Instant::now();
    let until = origin + cfg.duration;
    let fence = FenceServer::start(&dir.path().join("fence.sock"), origin)?;
    let setup = Arc::new(ClientSetup {
        cfg: cfg.clone(),
        server,
        ca_file,
        fence: fence.path().to_path_buf(),
        logs: dir.path().to_path_buf(),
    });
    let slots: Slots = Arc::new(Mutex::new(vec![None; usize::try_from(cfg.clients)?]));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..cfg.clients {
        tasks.spawn(run_client(id, setup.clone(), slots.clone(), until));
    }
    let (replica_faults, group_pauses) = tokio::join!(
        nemesis::run(
            &mut cluster,
            &cfg.replica_faults,
            cfg.ttl,
            origin,
            until,
            cfg.seed
        ),
        pause_groups(slots.clone(), &fence, cfg.ttl, origin, until, cfg.seed),
    );
    let mut spawns = 0;
    while let Some(done) = tasks.join_next().await {
        spawns += done.context("client task")??;
    }
    let replica_faults = replica_faults?.events;
    let group_pauses = group_pauses?;
    cluster.heal().await?;
    // Let the last connections close.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let journal = fence.journal();
    let checked = Report::check(&journal, &group_pauses, cfg.ttl);
    if journal.lives.is_empty() {
        let tail = std::fs::read_to_string(dir.path().join("client-0.log")).unwrap_or_default();
        bail!("no child ever ran; berth run said:\n{tail}");
    }
    Ok(Report {
        config: cfg,
        journal,
        spawns,
        group_pauses,
        replica_faults,
        checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(holder: &str, token: i64, supervisor: u32, start: u64, end: u64) -> Life {
        Life {
            holder: holder.to_owned(),
            token,
            supervisor,
            start: Duration::from_millis(start),
            end: Some(Duration::from_millis(end)),
            finished: false,
        }
    }

    fn write(life: usize, at: u64, accepted: bool) -> Write {
        Write {
            life,
            at: Duration::from_millis(at),
            accepted,
        }
    }

    #[test]
    fn a_stale_write_after_a_resume_is_a_window() {
        let journal = Journal {
            lives: vec![life("a", 1, 100, 0, 3_050), life("b", 2, 200, 2_500, 4_000)],
            writes: vec![
                write(0, 0, true),
                write(1, 2_500, true),
                write(0, 3_010, false),
                write(0, 3_030, false),
            ],
        };
        let pauses = [GroupPause {
            supervisor: 100,
            start: Duration::from_millis(100),
            end: Duration::from_millis(3_000),
        }];
        let Checked {
            windows,
            violations,
            overlaps,
        } = Report::check(&journal, &pauses, Duration::from_secs(2));
        assert!(violations.is_empty(), "{violations:?}");
        assert!(overlaps.is_empty(), "{overlaps:?}");
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].refused, 2);
        assert_eq!(windows[0].length(), Duration::from_millis(50));
        assert!(!windows[0].started_after_resume);
    }

    #[test]
    fn a_stale_write_without_a_pause_is_a_violation() {
        let journal = Journal {
            lives: vec![life("a", 1, 100, 0, 3_050), life("b", 2, 200, 2_500, 4_000)],
            writes: vec![
                write(0, 0, true),
                write(1, 2_500, true),
                write(0, 2_520, false),
            ],
        };
        // A pause of another group, or one that ended after the write, does not explain it.
        let pauses = [
            GroupPause {
                supervisor: 200,
                start: Duration::ZERO,
                end: Duration::from_millis(100),
            },
            GroupPause {
                supervisor: 100,
                start: Duration::from_millis(2_510),
                end: Duration::from_millis(2_600),
            },
        ];
        let checked = Report::check(&journal, &pauses, Duration::from_secs(2));
        assert_eq!(checked.violations.len(), 1, "{checked:?}");
        assert_eq!(checked.overlaps.len(), 1, "{checked:?}");
        assert_eq!(checked.overlaps[0].2, Duration::from_millis(550));
    }

    #[test]
    fn a_child_started_on_a_grant_from_before_the_freeze_is_a_window_a_later_grant_is_not() {
        let pause = GroupPause {
            supervisor: 100,
            start: Duration::from_millis(500),
            end: Duration::from_millis(3_000),
        };
        // Acquired token 1 just before the freeze, started the child only after the resume,
        // while client b (token 2) had taken over.
        let stale = Journal {
            lives: vec![
                life("b", 2, 200, 2_600, 4_000),
                life("a", 1, 100, 3_001, 3_004),
            ],
            writes: vec![write(0, 2_600, true), write(1, 3_001, false)],
        };
        let checked = Report::check(&stale, &[pause], Duration::from_secs(2));
        assert!(checked.violations.is_empty(), "{checked:?}");
        assert!(checked.overlaps.is_empty(), "{checked:?}");
        assert_eq!(checked.windows.len(), 1);
        assert!(checked.windows[0].started_after_resume);
        assert_eq!(checked.windows[0].refused, 1);
        // Frozen while waiting, it later acquired token 3 fairly after b's child ended: no
        // window, nothing to explain.
        let later = Journal {
            lives: vec![
                life("b", 2, 200, 2_600, 4_000),
                life("a", 3, 100, 4_100, 5_000),
            ],
            writes: vec![write(0, 2_600, true), write(1, 4_100, true)],
        };
        let checked = Report::check(&later, &[pause], Duration::from_secs(2));
        assert!(checked.windows.is_empty(), "{checked:?}");
        assert!(checked.violations.is_empty() && checked.overlaps.is_empty());
        // Resumed, it acquired token 3 fairly, was frozen again and overtaken by c (token 4):
        // the window is the second freeze's, the writes between the freezes were its own.
        let second = GroupPause {
            supervisor: 100,
            start: Duration::from_millis(4_500),
            end: Duration::from_millis(7_000),
        };
        let again = Journal {
            lives: vec![
                life("a", 3, 100, 4_100, 7_005),
                life("c", 4, 300, 6_600, 8_000),
            ],
            writes: vec![
                write(0, 4_100, true),
                write(0, 4_400, true),
                write(1, 6_600, true),
                write(0, 7_001, false),
            ],
        };
        let checked = Report::check(&again, &[pause, second], Duration::from_secs(2));
        assert!(checked.violations.is_empty(), "{checked:?}");
        assert_eq!(checked.windows.len(), 1, "{checked:?}");
        assert_eq!(checked.windows[0].resumed, second.end);
        assert_eq!(
            (checked.windows[0].refused, checked.windows[0].accepted),
            (1, 0)
        );
    }

    #[tokio::test]
    async fn the_fence_server_refuses_a_stale_token_and_marks_the_close() {
        let dir = tempfile::tempdir().unwrap();
        let fence = FenceServer::start(&dir.path().join("f.sock"), Instant::now()).unwrap();
        async fn say(s: &mut BufReader<UnixStream>, msg: &str) -> String {
            s.get_mut().write_all(msg.as_bytes()).await.unwrap();
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            line
        }
        let mut old = BufReader::new(UnixStream::connect(fence.path()).await.unwrap());
        let mut new = BufReader::new(UnixStream::connect(fence.path()).await.unwrap());
        assert_eq!(say(&mut old, "start client-0 1 100\n").await, "ok\n");
        assert_eq!(fence.running_supervisor(), Some(100));
        assert_eq!(say(&mut new, "start client-1 2 200\n").await, "ok\n");
        assert_eq!(
            say(&mut old, "write 1\n").await,
            "stale fencing token 1 (highest seen 2)\n"
        );
        assert_eq!(say(&mut new, "stop\n").await, "ok\n");
        drop(old);
        for _ in 0..100 {
            if fence.journal().lives.iter().all(|l| l.end.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let j = fence.journal();
        assert_eq!(j.writes.iter().filter(|w| w.accepted).count(), 2);
        assert_eq!(j.writes.iter().filter(|w| !w.accepted).count(), 1);
        assert!(j.lives[1].finished && !j.lives[0].finished);
        assert!(
            j.lives[0].end.is_some(),
            "the close of a killed child is recorded"
        );
    }
}
