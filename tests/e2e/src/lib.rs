//! Test harness for Berth: real Kubernetes control planes on the loopback interface.
//!
//! [`TestCluster::start`] starts a real etcd and a real kube-apiserver 1.20.2 (and, if asked,
//! kube-controller-manager so Deployments get ReplicaSets and Pods) as child processes on free
//! loopback ports, with a fresh CA, serving certificate, service-account key and admin token in
//! a temporary run directory. It waits until the API server is ready and the `default`
//! namespace exists, writes a kubeconfig, and hands out [`kube::Client`]s. Several clusters may
//! run at once (a coordination cluster plus tenant clusters); each has its own ports and
//! directory.
//!
//! Binaries come from `BERTH_TEST_KUBE_BIN_DIR` (a directory holding `kube-apiserver`, `etcd`
//! and `kube-controller-manager`), which `hack/kube-test-env.sh` builds from Debian's packages
//! and prints. Tests get a cluster through [`cluster_or_skip`] (or [`shared_cluster_or_skip`]
//! for one cluster per test binary), which implements the project's skip rule: without the
//! variable a test prints `skipped: set BERTH_TEST_KUBE_BIN_DIR (run hack/kube-test-env.sh)`
//! and returns, unless `BERTH_REQUIRE_INTEGRATION=1`, in which case it panics.
//!
//! Teardown: [`TestCluster::stop`] or `Drop` stops every process by PID (SIGTERM, then SIGKILL
//! after two seconds) and removes the run directory. The same teardown also happens when the
//! test process ends in any other way (a panic across threads, `SIGKILL`, a static that is
//! never dropped): each cluster has a small `sh` reaper that holds a pipe to the test process
//! and cleans up when that pipe closes. A PID is only signalled while its command line still
//! names the run directory, so a recycled PID is never touched.
//!
//! Environment:
//! - `BERTH_TEST_KUBE_BIN_DIR`: the binaries (required);
//! - `BERTH_TEST_KUBE_RUN_BASE`: where run directories go (default `/dev/shm` when it exists,
//!   which keeps etcd's fsyncs off the disk, else the system temporary directory);
//! - `BERTH_TEST_KUBE_KEEP=1`: keep the run directory (logs, PKI, kubeconfig) after teardown;
//! - `BERTH_REQUIRE_INTEGRATION=1`: fail instead of skipping.

#![deny(missing_docs)]

use std::fmt;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::Rng as _;

/// Environment variable naming the directory with `kube-apiserver`, `etcd` and
/// `kube-controller-manager`.
pub const BIN_DIR_ENV: &str = "BERTH_TEST_KUBE_BIN_DIR";
/// Environment variable that turns skips into failures.
pub const REQUIRE_ENV: &str = "BERTH_REQUIRE_INTEGRATION";
/// Environment variable choosing where run directories are created.
pub const RUN_BASE_ENV: &str = "BERTH_TEST_KUBE_RUN_BASE";
/// Environment variable that keeps run directories after teardown.
pub const KEEP_ENV: &str = "BERTH_TEST_KUBE_KEEP";
/// The message printed when the binaries are not configured.
pub const SKIP_MESSAGE: &str = "skipped: set BERTH_TEST_KUBE_BIN_DIR (run hack/kube-test-env.sh)";

/// The controllers started by default with [`ClusterOptions::controller_manager`].
pub const DEFAULT_CONTROLLERS: &str = "garbagecollector,namespace";
/// Controllers that make workloads behave: Deployments get ReplicaSets and Pods, Jobs and
/// CronJobs are driven, garbage collection and namespace deletion work.
pub const WORKLOAD_CONTROLLERS: &str =
    "garbagecollector,namespace,deployment,replicaset,statefulset,job,cronjob";

/// Why a cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No binary directory was given and `BERTH_TEST_KUBE_BIN_DIR` is unset.
    #[error("{BIN_DIR_ENV} is not set (run hack/kube-test-env.sh)")]
    NoBinaries,
    /// A binary is missing.
    #[error("binary {0} not found or not executable")]
    MissingBinary(PathBuf),
    /// A file-system or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("failed to generate test PKI")]
    Pki(#[from] rcgen::Error),
    /// A component did not come up.
    #[error("{component} did not become ready: {reason}\n--- last lines of {log} ---\n{tail}")]
    NotReady {
        /// `etcd`, `kube-apiserver` or `kube-controller-manager`.
        component: &'static str,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Building a client failed.
    #[error("failed to build a kube client")]
    Kube(#[from] kube::Error),
    /// The generated kubeconfig could not be loaded.
    #[error("failed to load the generated kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Directory with the binaries; `None` reads `BERTH_TEST_KUBE_BIN_DIR`.
    pub bin_dir: Option<PathBuf>,
    /// Where to create the run directory; `None` reads `BERTH_TEST_KUBE_RUN_BASE`, else
    /// `/dev/shm`, else the system temporary directory.
    pub run_base: Option<PathBuf>,
    /// Start kube-controller-manager with these controllers (`None`: do not start it).
    pub controllers: Option<String>,
    /// Extra kube-apiserver flags.
    pub extra_apiserver_args: Vec<String>,
    /// How long each component may take to become ready.
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            bin_dir: None,
            run_base: None,
            controllers: None,
            extra_apiserver_args: Vec::new(),
            ready_timeout: Duration::from_secs(90),
        }
    }
}

impl ClusterOptions {
    /// Also start kube-controller-manager with [`DEFAULT_CONTROLLERS`].
    #[must_use]
    pub fn controller_manager(mut self) -> Self {
        self.controllers = Some(DEFAULT_CONTROLLERS.to_string());
        self
    }

    /// Also start kube-controller-manager with [`WORKLOAD_CONTROLLERS`], so Deployments create
    /// ReplicaSets and Pods.
    #[must_use]
    pub fn workload_controllers(mut self) -> Self {
        self.controllers = Some(WORKLOAD_CONTROLLERS.to_string());
        self
    }

    /// Also start kube-controller-manager with exactly these controllers (comma-separated).
    #[must_use]
    pub fn with_controllers(mut self, controllers: impl Into<String>) -> Self {
        self.controllers = Some(controllers.into());
        self
    }
}

/// Whether integration tests must fail instead of skipping (`BERTH_REQUIRE_INTEGRATION=1`).
pub fn integration_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// The configured binary directory, or `None` after printing the skip message.
///
/// # Panics
/// When the variable is unset and `BERTH_REQUIRE_INTEGRATION=1`.
pub fn bin_dir_or_skip() -> Option<PathBuf> {
    match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            assert!(
                !integration_required(),
                "{REQUIRE_ENV}=1 but {BIN_DIR_ENV} is not set (run hack/kube-test-env.sh)"
            );
            println!("{SKIP_MESSAGE}");
            None
        }
    }
}

/// Starts a cluster with `opts`, or skips (prints [`SKIP_MESSAGE`], returns `None`) when
/// `BERTH_TEST_KUBE_BIN_DIR` is unset.
///
/// # Panics
/// When the variable is unset and `BERTH_REQUIRE_INTEGRATION=1`, or when it is set and the
/// cluster fails to start.
pub async fn cluster_or_skip_with(opts: ClusterOptions) -> Option<TestCluster> {
    let bin_dir = match opts.bin_dir.clone() {
        Some(dir) => dir,
        None => bin_dir_or_skip()?,
    };
    let opts = ClusterOptions {
        bin_dir: Some(bin_dir),
        ..opts
    };
    match TestCluster::start(opts).await {
        Ok(c) => Some(c),
        Err(e) => panic!("failed to start a test cluster: {e}"),
    }
}

/// [`cluster_or_skip_with`] with default options (no controller-manager).
///
/// # Panics
/// See [`cluster_or_skip_with`].
pub async fn cluster_or_skip() -> Option<TestCluster> {
    cluster_or_skip_with(ClusterOptions::default()).await
}

static SHARED: tokio::sync::OnceCell<Option<TestCluster>> = tokio::sync::OnceCell::const_new();

/// One cluster (default options) shared by every test of the current test binary, started on
/// first use; or `None` after printing the skip message.
///
/// Tests sharing it should create uniquely named objects. It is torn down by its reaper when
/// the test process exits. Build a client per test with [`TestCluster::client`]: a client
/// belongs to the runtime it was created on.
///
/// # Panics
/// See [`cluster_or_skip_with`].
pub async fn shared_cluster_or_skip() -> Option<&'static TestCluster> {
    SHARED.get_or_init(cluster_or_skip).await.as_ref()
}

/// One running control plane: etcd, kube-apiserver and optionally kube-controller-manager.
pub struct TestCluster {
    run_dir: PathBuf,
    server_url: String,
    kubeconfig_path: PathBuf,
    config: kube::Config,
    admin_token: String,
    ca_pem: String,
    procs: Mutex<Procs>,
    /// kube-apiserver's binary and flags, for [`TestCluster::restart_apiserver`].
    apiserver_cmd: (PathBuf, Vec<String>),
    ready_timeout: Duration,
    apiserver_restarts: std::sync::atomic::AtomicU32,
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("server_url", &self.server_url)
            .field("run_dir", &self.run_dir)
            .finish_non_exhaustive()
    }
}

/// The processes of one cluster and its reaper.
struct Procs {
    children: Vec<(&'static str, Child)>,
    /// Write end of the reaper's stdin: PIDs are sent here, and closing it stops everything.
    reaper_in: Option<ChildStdin>,
    reaper: Option<Child>,
}

/// The reaper: reads PIDs until its stdin closes, then stops them newest first (SIGTERM, then
/// SIGKILL after 2 s) and removes the run directory unless told to keep it. A PID is signalled
/// only while its command line names the run directory, so recycled PIDs are safe.
const REAPER_SCRIPT: &str = r#"
dir=$1; keep=$2; pids=
while read -r pid; do pids="$pid $pids"; done
ours() { tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$dir"; }
for p in $pids; do ours "$p" && kill -TERM "$p" 2>/dev/null; done
i=0
while [ "$i" -lt 20 ]; do
  alive=
  for p in $pids; do ours "$p" && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.1; i=$((i + 1))
done
for p in $pids; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
[ "$keep" = 1 ] || rm -rf -- "$dir"
"#;

impl Procs {
    fn new(run_dir: &Path) -> Result<Self, Error> {
        let keep = if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            "1"
        } else {
            "0"
        };
        let mut reaper = Command::new("sh")
            .arg("-c")
            .arg(REAPER_SCRIPT)
            .arg("berth-e2e-reaper")
            .arg(run_dir)
            .arg(keep)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("failed to spawn the cluster reaper (sh)"))?;
        let reaper_in = reaper.stdin.take();
        Ok(Self {
            children: Vec::new(),
            reaper_in,
            reaper: Some(reaper),
        })
    }

    fn spawn(
        &mut self,
        name: &'static str,
        bin: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<u32, Error> {
        let out =
            File::create(log).map_err(io_err(format!("failed to create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err("failed to duplicate a log file handle"))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!("failed to spawn {}", bin.display())))?;
        let pid = child.id();
        if let Some(w) = self.reaper_in.as_mut() {
            // If the reaper is gone the explicit teardown below still stops the child.
            let _ = writeln!(w, "{pid}").and_then(|()| w.flush());
        }
        self.children.push((name, child));
        Ok(pid)
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.id())
    }

    /// Removes and kills one child (used to retry after a port clash).
    fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| *n == name) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find(|(n, _)| *n == name)
            .and_then(|(_, c)| c.try_wait().ok().flatten())
    }

    fn shutdown(&mut self) {
        // Closing the pipe lets the reaper stop everything and remove the run directory.
        drop(self.reaper_in.take());
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.wait();
        }
        for (_, child) in &mut self.children {
            // Already signalled by the reaper; SIGKILL is a no-op for exited processes.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn free_ports(n: usize) -> Result<Vec<u16>, Error> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("failed to bind 127.0.0.1:0"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("failed to read a local address"))
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn log_contains(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle))
}

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    sa_key: String,
    sa_pub: String,
}

fn make_pki() -> Result<Pki, Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "berth-e2e-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(
        [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "10.0.0.1",
        ]
        .map(String::from)
        .to_vec(),
    )?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        sa_key: sa.serialize_pem(),
        sa_pub: sa.public_key_pem(),
    })
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_file(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(io_err(format!("failed to write {}", path.display())))
}

/// A minimal HTTP/1.0 GET on loopback, for etcd's `/health` (no TLS, no client library).
async fn http_get_plain(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// GETs `path` with `client`, returning the status and body.
async fn kube_get(client: &kube::Client, path: &str) -> Option<(u16, String)> {
    let req = http::Request::get(path).body(Vec::new()).ok()?;
    let fut = client.send(req.map(kube::client::Body::from));
    let resp = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect_bytes().await.ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

enum Outcome {
    Ready,
    PortClash,
}

impl TestCluster {
    /// Starts etcd, kube-apiserver and (if configured) kube-controller-manager, and waits until
    /// they are ready. Ports are picked at run time; a port clash is retried with new ports.
    ///
    /// # Errors
    /// Missing binaries, I/O failures, or a component that does not become ready in time
    /// (the error carries the end of its log).
    pub async fn start(opts: ClusterOptions) -> Result<Self, Error> {
        let bin_dir = match &opts.bin_dir {
            Some(d) => d.clone(),
            None => std::env::var_os(BIN_DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .ok_or(Error::NoBinaries)?,
        };
        let bin = |name: &str| -> Result<PathBuf, Error> {
            let p = bin_dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::MissingBinary(p))
            }
        };
        let etcd_bin = bin("etcd")?;
        let apiserver_bin = bin("kube-apiserver")?;
        let kcm_bin = match opts.controllers {
            Some(_) => Some(bin("kube-controller-manager")?),
            None => None,
        };

        let base = opts
            .run_base
            .clone()
            .or_else(|| std::env::var_os(RUN_BASE_ENV).map(PathBuf::from))
            .unwrap_or_else(|| {
                let shm = PathBuf::from("/dev/shm");
                if shm.is_dir() {
                    shm
                } else {
                    std::env::temp_dir()
                }
            });
        let run_dir = tempfile::Builder::new()
            .prefix("berth-kube-")
            .tempdir_in(&base)
            .map_err(io_err(format!(
                "failed to create a run directory in {}",
                base.display()
            )))?
            .keep();
        // From here on the reaper owns the directory's removal.
        let mut procs = Procs::new(&run_dir)?;

        let pki_dir = run_dir.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(io_err("failed to create pki dir"))?;
        let pki = make_pki()?;
        let p = |n: &str| pki_dir.join(n);
        write_file(&p("ca.crt"), &pki.ca_pem)?;
        write_file(&p("server.crt"), &pki.server_cert)?;
        write_file(&p("server.key"), &pki.server_key)?;
        write_file(&p("sa.key"), &pki.sa_key)?;
        write_file(&p("sa.pub"), &pki.sa_pub)?;
        let admin_token = random_token();
        let user_token = random_token();
        write_file(
            &p("tokens.csv"),
            &format!(
                "{admin_token},admin,admin-uid,system:masters\n{user_token},tester,tester-uid\n"
            ),
        )?;

        let mut attempt = 0;
        let (server_url, config, apiserver_args) = loop {
            attempt += 1;
            let ports = free_ports(3)?;
            let (eport, pport, aport) = (ports[0], ports[1], ports[2]);
            match start_etcd(
                &mut procs,
                &etcd_bin,
                &run_dir,
                eport,
                pport,
                opts.ready_timeout,
            )
            .await?
            {
                Outcome::Ready => {}
                Outcome::PortClash if attempt < 5 => {
                    procs.kill("etcd");
                    continue;
                }
                Outcome::PortClash => {
                    return Err(not_ready(
                        "etcd",
                        "no free ports after 5 attempts",
                        &run_dir,
                    ));
                }
            }
            let url = format!("https://127.0.0.1:{aport}");
            let kubeconfig = kubeconfig_yaml(&url, &pki.ca_pem, &admin_token, &user_token);
            let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?;
            let mut args = vec![
                format!("--etcd-servers=http://127.0.0.1:{eport}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={aport}"),
                "--insecure-port=0".into(),
                format!("--tls-cert-file={}", p("server.crt").display()),
                format!("--tls-private-key-file={}", p("server.key").display()),
                format!("--client-ca-file={}", p("ca.crt").display()),
                format!("--token-auth-file={}", p("tokens.csv").display()),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p("sa.pub").display()),
                format!(
                    "--service-account-signing-key-file={}",
                    p("sa.key").display()
                ),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--allow-privileged=true".into(),
                // Tests run many concurrent writers against one server.
                "--max-requests-inflight=1000".into(),
                "--max-mutating-requests-inflight=500".into(),
            ];
            args.extend(opts.extra_apiserver_args.iter().cloned());
            let client = kube::Client::try_from(config.clone())?;
            match start_apiserver(
                &mut procs,
                &apiserver_bin,
                &args,
                &run_dir,
                &client,
                opts.ready_timeout,
            )
            .await?
            {
                Outcome::Ready => {}
                Outcome::PortClash if attempt < 5 => {
                    procs.kill("kube-apiserver");
                    procs.kill("etcd");
                    continue;
                }
                Outcome::PortClash => {
                    return Err(not_ready(
                        "kube-apiserver",
                        "no free ports after 5 attempts",
                        &run_dir,
                    ));
                }
            }
            write_file(&run_dir.join("kubeconfig"), &kubeconfig)?;
            break (url, config, args);
        };

        if let (Some(kcm_bin), Some(controllers)) = (kcm_bin, &opts.controllers) {
            start_kcm(
                &mut procs,
                &kcm_bin,
                &run_dir,
                controllers,
                opts.ready_timeout,
            )
            .await?;
        }

        tracing::info!(%server_url, run_dir = %run_dir.display(), "test cluster ready");
        Ok(Self {
            kubeconfig_path: run_dir.join("kubeconfig"),
            run_dir,
            server_url,
            config,
            admin_token,
            ca_pem: pki.ca_pem,
            procs: Mutex::new(procs),
            apiserver_cmd: (apiserver_bin, apiserver_args),
            ready_timeout: opts.ready_timeout,
            apiserver_restarts: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A new client for the admin user (`system:masters`), on the current tokio runtime.
    ///
    /// # Panics
    /// If the client's TLS stack cannot be built from the cluster's own CA, which does not
    /// happen with the generated PKI. Use [`Self::try_client`] to handle it.
    pub fn client(&self) -> kube::Client {
        match self.try_client() {
            Ok(c) => c,
            Err(e) => panic!("failed to build a client for {}: {e}", self.server_url),
        }
    }

    /// A new client for the admin user.
    ///
    /// # Errors
    /// When kube cannot build its TLS stack.
    pub fn try_client(&self) -> Result<kube::Client, Error> {
        Ok(kube::Client::try_from(self.config.clone())?)
    }

    /// Creates a namespace named `<prefix>-<random hex>` and returns its name, so tests sharing
    /// a cluster do not see each other's objects.
    ///
    /// # Errors
    /// When the API server refuses or cannot be reached.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String, Error> {
        use k8s_openapi::api::core::v1::Namespace;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let n: u32 = rand::rng().random();
        let name = format!("{prefix}-{n:08x}");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        kube::Api::<Namespace>::all(self.try_client()?)
            .create(&kube::api::PostParams::default(), &ns)
            .await?;
        Ok(name)
    }

    /// The client configuration (admin user, the cluster's CA).
    pub fn kube_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// Path of the kubeconfig (contexts `admin`, current, and `tester`, an authenticated user
    /// without RBAC rights).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The run directory (logs, PKI, kubeconfig).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// PID of kube-apiserver, while it runs.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.lock().pid("kube-apiserver")
    }

    /// PID of etcd, while it runs.
    pub fn etcd_pid(&self) -> Option<u32> {
        self.lock().pid("etcd")
    }

    /// Freezes kube-apiserver (SIGSTOP), e.g. to simulate an unreachable coordination cluster.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause_apiserver(&self) -> Result<(), Error> {
        self.signal_apiserver("-STOP")
    }

    /// Resumes kube-apiserver after [`Self::pause_apiserver`] (SIGCONT).
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume_apiserver(&self) -> Result<(), Error> {
        self.signal_apiserver("-CONT")
    }

    /// Kills kube-apiserver with SIGKILL (also when it is paused) and starts it again with the
    /// same flags on the same port, keeping etcd and its data; waits until it is ready and
    /// returns how long the restart took. The new process logs to
    /// `kube-apiserver.restart-<n>.log` in the run directory.
    ///
    /// # Errors
    /// When it cannot be spawned or does not become ready in time (e.g. someone else took its
    /// port meanwhile).
    pub async fn restart_apiserver(&self) -> Result<Duration, Error> {
        let t = Instant::now();
        let n = self
            .apiserver_restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let log = self.run_dir.join(format!("kube-apiserver.restart-{n}.log"));
        let (bin, args) = &self.apiserver_cmd;
        {
            let mut procs = self.lock();
            procs.kill("kube-apiserver");
            procs.spawn("kube-apiserver", bin, args, &log)?;
        }
        let client = self.try_client()?;
        let deadline = t + self.ready_timeout;
        loop {
            let exited = self.lock().exited("kube-apiserver");
            if let Some(status) = exited {
                return Err(Error::NotReady {
                    component: "kube-apiserver",
                    reason: format!("restarted process exited ({status})"),
                    tail: log_tail(&log, 30),
                    log,
                });
            }
            if apiserver_ready(&client).await {
                return Ok(t.elapsed());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    component: "kube-apiserver",
                    reason: "timed out after a restart".into(),
                    tail: log_tail(&log, 30),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal_apiserver(&self, sig: &str) -> Result<(), Error> {
        let pid = self.apiserver_pid().ok_or_else(|| Error::Io {
            what: "kube-apiserver is not running".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .map_err(io_err("failed to run kill"))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Io {
                what: format!("kill {sig} {pid} failed with {status}"),
                source: std::io::Error::other("kill failed"),
            })
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL) and removes the run directory.
    pub fn stop(self) {
        self.lock().shutdown();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn not_ready(component: &'static str, reason: &str, run_dir: &Path) -> Error {
    let log = run_dir.join(format!("{component}.log"));
    Error::NotReady {
        component,
        reason: reason.to_string(),
        tail: log_tail(&log, 30),
        log,
    }
}

async fn start_etcd(
    procs: &mut Procs,
    bin: &Path,
    run_dir: &Path,
    eport: u16,
    pport: u16,
    timeout: Duration,
) -> Result<Outcome, Error> {
    let data = run_dir.join("etcd-data");
    let _ = std::fs::remove_dir_all(&data);
    let client_url = format!("http://127.0.0.1:{eport}");
    let peer_url = format!("http://127.0.0.1:{pport}");
    let args = vec![
        "--name=berth".to_string(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=berth={peer_url}"),
        "--initial-cluster-state=new".into(),
    ];
    let log = run_dir.join("etcd.log");
    procs.spawn("etcd", bin, &args, &log)?;
    let deadline = Instant::now() + timeout;
    loop {
        if procs.exited("etcd").is_some() {
            if log_contains(&log, "address already in use") {
                return Ok(Outcome::PortClash);
            }
            return Err(not_ready("etcd", "process exited", run_dir));
        }
        // Only our own etcd logs this line, and only it answers on the port we gave it.
        if log_contains(&log, "ready to serve client requests")
            && http_get_plain(eport, "/health")
                .await
                .is_some_and(|b| b.contains("\"health\":\"true\""))
        {
            return Ok(Outcome::Ready);
        }
        if Instant::now() > deadline {
            return Err(not_ready("etcd", "timed out", run_dir));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether kube-apiserver is ready and serves the core API. TLS is verified against the
/// cluster's fresh CA, so a foreign server on the port never passes.
async fn apiserver_ready(client: &kube::Client) -> bool {
    kube_get(client, "/readyz")
        .await
        .is_some_and(|(code, body)| code == 200 && body.trim() == "ok")
        && kube_get(client, "/api/v1/namespaces/default")
            .await
            .is_some_and(|(code, _)| code == 200)
}

async fn start_apiserver(
    procs: &mut Procs,
    bin: &Path,
    args: &[String],
    run_dir: &Path,
    client: &kube::Client,
    timeout: Duration,
) -> Result<Outcome, Error> {
    let log = run_dir.join("kube-apiserver.log");
    procs.spawn("kube-apiserver", bin, args, &log)?;
    let deadline = Instant::now() + timeout;
    loop {
        if procs.exited("kube-apiserver").is_some() {
            if log_contains(&log, "address already in use") {
                return Ok(Outcome::PortClash);
            }
            return Err(not_ready("kube-apiserver", "process exited", run_dir));
        }
        if apiserver_ready(client).await {
            return Ok(Outcome::Ready);
        }
        if Instant::now() > deadline {
            return Err(not_ready("kube-apiserver", "timed out", run_dir));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_kcm(
    procs: &mut Procs,
    bin: &Path,
    run_dir: &Path,
    controllers: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let args = vec![
        format!("--kubeconfig={}", run_dir.join("kubeconfig").display()),
        format!("--controllers={controllers}"),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
        "--port=0".into(),
        "--use-service-account-credentials=false".into(),
    ];
    let log = run_dir.join("kube-controller-manager.log");
    procs.spawn("kube-controller-manager", bin, &args, &log)?;
    let want = if controllers
        .split(',')
        .any(|c| c == "garbagecollector" || c == "*")
    {
        "all resource monitors have synced"
    } else {
        "Started \""
    };
    let deadline = Instant::now() + timeout;
    loop {
        if procs.exited("kube-controller-manager").is_some() {
            return Err(not_ready(
                "kube-controller-manager",
                "process exited",
                run_dir,
            ));
        }
        if log_contains(&log, want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(not_ready("kube-controller-manager", "timed out", run_dir));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kubeconfig_yaml(url: &str, ca_pem: &str, admin_token: &str, user_token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: berth-test
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {admin_token}
- name: tester
  user:
    token: {user_token}
contexts:
- name: admin
  context:
    cluster: berth-test
    user: admin
    namespace: default
- name: tester
  context:
    cluster: berth-test
    user: tester
    namespace: default
current-context: admin
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_nonzero() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p != 0));
        assert_ne!(ports[0], ports[1]);
    }

    #[test]
    fn pki_has_pem_blocks() {
        let pki = make_pki().unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.server_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.server_key.contains("PRIVATE KEY"));
        assert!(pki.sa_pub.contains("PUBLIC KEY"));
    }

    #[tokio::test]
    async fn kubeconfig_loads_into_a_client_config() {
        let yaml = kubeconfig_yaml(
            "https://127.0.0.1:6443",
            &make_pki().unwrap().ca_pem,
            "a",
            "b",
        );
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(cfg.default_namespace, "default");
        assert!(cfg.root_cert.is_some());
    }

    #[tokio::test]
    async fn start_without_binaries_is_a_clear_error() {
        let opts = ClusterOptions {
            bin_dir: Some(PathBuf::from("/nonexistent-berth-bin")),
            ..ClusterOptions::default()
        };
        let err = TestCluster::start(opts).await.unwrap_err();
        assert!(matches!(err, Error::MissingBinary(_)), "{err}");
    }

    #[tokio::test]
    async fn reaper_stops_children_and_removes_the_dir() {
        let dir = tempfile::tempdir().unwrap().keep();
        let mut procs = Procs::new(&dir).unwrap();
        // A child whose command line names the run directory, as the real components do.
        let marker = dir.join("marker");
        let pid = procs
            .spawn(
                "sleeper",
                Path::new("sh"),
                &[
                    "-c".into(),
                    "sleep 60; true".into(),
                    marker.display().to_string(),
                ],
                &dir.join("sleeper.log"),
            )
            .unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        procs.shutdown();
        assert!(!dir.exists(), "run dir removed");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty(), "child reaped: {stat}");
    }
}
