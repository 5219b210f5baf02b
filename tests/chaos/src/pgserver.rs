//! A private PostgreSQL server for one run, so the nemesis can `kill -9` the database itself:
//! `initdb` into a temporary directory, `postgres` on a free port of 127.0.0.1 in its own
//! process group (running as the `postgres` OS user when this process is root), killed as a
//! group and restarted on the same data directory (crash recovery).

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// How long a (re)start may take, crash recovery included.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The PostgreSQL binaries: `BERTH_CHAOS_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
/// that has `initdb` and `postgres`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("BERTH_CHAOS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// One private PostgreSQL server; dropping it kills it and removes its data.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    child: Option<Child>,
}

impl PgServer {
    /// Initialises a data directory with `bin`'s `initdb` (trust authentication, superuser
    /// `postgres`) and starts the server.
    ///
    /// # Errors
    ///
    /// `initdb` or the start failed.
    pub async fn start(bin: &Path) -> Result<Self> {
        let dir = tempfile::tempdir().context("tempdir for PostgreSQL")?;
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .context("chown the PostgreSQL directory")?
                .success();
            if !ok {
                bail!("chown postgres {} failed", dir.path().display());
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            dir,
            bin: bin.to_path_buf(),
            port,
            as_postgres,
            child: None,
        };
        let data = server.data_dir();
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("run initdb")?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        server.restart().await?;
        Ok(server)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `bin/<tool>`, run as the `postgres` user (through `setpriv`, which execs, so the child's
    /// pid is the tool's) when this process is root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The admin DSN (`postgres` superuser, database `postgres`).
    pub fn admin_dsn(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Whether the server process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server (after a kill: crash recovery) and waits until it accepts
    /// connections; returns how long that took.
    ///
    /// # Errors
    ///
    /// It is running already, could not be spawned, exited, or did not get ready in time.
    pub async fn restart(&mut self) -> Result<Duration> {
        if self.child.is_some() {
            bail!("PostgreSQL is running already");
        }
        let t = Instant::now();
        let log = std::fs::File::create(self.dir.path().join("postgres.log"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("unix_socket_directories={}", self.dir.path().display()),
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("spawn postgres")?;
        self.child = Some(child);
        let deadline = t + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(t.elapsed());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("postgres exited ({status}):\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("postgres not ready in time:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9` of the whole process group (postmaster and every backend), then reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
