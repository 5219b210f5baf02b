//! `berth-apiserver` replica processes: spawn, wait for health, `kill -9`, `SIGSTOP`/`SIGCONT`,
//! a bounded log of their stderr, and a `Drop` that kills them.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::pki::Pki;

/// How long a replica may take to answer `/healthz` after a start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines kept per replica.
const LOG_LINES: usize = 2000;

/// One replica. Every start picks a fresh port on 127.0.0.1; clients reach it through a
/// [`Proxy`](crate::proxy::Proxy) whose upstream follows it.
pub struct Replica {
    /// Name in reports (`pg-0`, ...).
    pub name: String,
    bin: PathBuf,
    args: Vec<String>,
    ca_pem: String,
    addr: SocketAddr,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
    paused: bool,
    env: Vec<(String, String)>,
}

fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?)
}

impl Replica {
    /// A replica of `bin` with the PKI's TLS arguments and `store_args` (not started).
    pub fn new(name: &str, bin: &Path, pki: &Pki, store_args: &[String]) -> Self {
        let mut args = pki.server_args.clone();
        args.extend([
            "--metrics-addr".to_owned(),
            String::new(),
            "--log-format".to_owned(),
            "json".to_owned(),
            "--log-level".to_owned(),
            "warn,berth_apiserver=info,berth_apiserver::observe=warn".to_owned(),
        ]);
        args.extend_from_slice(store_args);
        Self {
            name: name.to_owned(),
            bin: bin.to_path_buf(),
            args,
            ca_pem: pki.ca_pem.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            log: Arc::new(Mutex::new(VecDeque::new())),
            paused: false,
            env: Vec::new(),
        }
    }

    /// The same replica with extra environment variables on every (re)start (e.g.
    /// `LD_PRELOAD` and `FAKETIME` for libfaketime).
    #[must_use]
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    /// The address of the current (or last) process.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is stopped with `SIGSTOP`.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The last lines of the replica's stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let skip = log.len().saturating_sub(lines);
        log.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
    }

    /// Starts the process on a fresh port and waits until `/healthz` answers; returns how long
    /// that took.
    ///
    /// # Errors
    ///
    /// The process could not be spawned, exited, or was not healthy within [`START_TIMEOUT`]
    /// (the error carries its log).
    pub async fn start(&mut self) -> Result<Duration> {
        if self.child.is_some() {
            bail!("{}: already running", self.name);
        }
        let t = Instant::now();
        self.addr = free_addr()?;
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .args(["--listen-addr".to_owned(), self.addr.to_string()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        if let Some(stderr) = child.stderr.take() {
            let sink = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut log) = sink.lock() {
                        if log.len() >= LOG_LINES {
                            log.pop_front();
                        }
                        log.push_back(line);
                    }
                }
            });
        }
        self.child = Some(child);
        let base = format!("https://{}", self.addr);
        let client = berth_client::Client::builder(base)
            .ca_pem(self.ca_pem.as_bytes().to_vec())
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("health client")?;
        let deadline = t + START_TIMEOUT;
        loop {
            if client.healthz().await.is_ok() {
                return Ok(t.elapsed());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "{}: berth-apiserver exited ({status}); log:\n{}",
                    self.name,
                    self.log_tail(50)
                );
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("{}: never healthy; log:\n{}", self.name, self.log_tail(50));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` and reap the process (no-op when none runs).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    fn signal(&mut self, sig: &str) -> Result<()> {
        if let Some(c) = &self.child {
            let pid = c.id().to_string();
            let ok = Command::new("kill")
                .args([sig, pid.as_str()])
                .status()
                .context("run kill")?
                .success();
            if !ok {
                bail!("kill {sig} {pid} failed");
            }
        }
        Ok(())
    }

    /// `SIGSTOP`: the process freezes with its sockets open.
    ///
    /// # Errors
    ///
    /// `kill` failed.
    pub fn pause(&mut self) -> Result<()> {
        self.signal("-STOP")?;
        self.paused = self.child.is_some();
        Ok(())
    }

    /// `SIGCONT` after [`pause`](Self::pause).
    ///
    /// # Errors
    ///
    /// `kill` failed.
    pub fn resume(&mut self) -> Result<()> {
        if self.paused {
            self.signal("-CONT")?;
            self.paused = false;
        }
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.resume();
        self.kill9();
    }
}
