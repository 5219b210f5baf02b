//! Multi-cluster topology for the operator scenarios: a coordination cluster running one
//! `berth-apiserver` on the k8s store, and two tenant clusters (east, west, with
//! kube-controller-manager) each running one `berth-operator` whose connection to the API
//! server goes through a TCP proxy the test can cut.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_e2e::{ClusterOptions, TestCluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

/// Namespace of the BerthLeases (and of the central leases) in the tenant clusters.
pub const NS: &str = "team-a";
/// Coordination namespace of the k8s store.
pub const COORD_NS: &str = "berth-coordination";

/// Where the workspace's binaries are (next to the test binary's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p berth-apiserver -p berth-operator`",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(bin: &Path, args: &[String], log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(bin)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<_> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.child.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        self.kill9();
    }
}

/// A TCP proxy whose traffic the test can cut and restore.
#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    cut: Arc<Mutex<bool>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            cut: Arc::new(Mutex::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *p.cut.lock().unwrap() {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                p.conns.lock().unwrap().push(task.abort_handle());
            }
        });
        proxy
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        *self.cut.lock().unwrap() = true;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn heal(&self) {
        *self.cut.lock().unwrap() = false;
    }
}

/// One tenant cluster with its operator.
pub struct Tenant {
    pub id: &'static str,
    pub cluster: TestCluster,
    pub proxy: Proxy,
    pub operator: Option<Proc>,
    pub metrics_port: u16,
    pub health_port: u16,
}

impl Tenant {
    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.cluster.client(), NS)
    }

    pub fn berthleases(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.cluster.client(), NS, &berthlease_resource())
    }
}

pub fn berthlease_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "berth.skaphos.io",
        "v1alpha1",
        "BerthLease",
    ))
}

/// The whole topology.
pub struct Topology {
    pub dir: tempfile::TempDir,
    pub coord: TestCluster,
    pub api_port: u16,
    pub apiserver: Option<Proc>,
    pub east: Tenant,
    pub west: Tenant,
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
}

fn make_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    write(&dir.join("ca.crt"), &ca.pem());
    write(&dir.join("tls.crt"), &cert.pem());
    write(&dir.join("tls.key"), &key.serialize_pem());
}

async fn create_ns(c: &TestCluster, name: &str) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(c.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn install_crd(c: &TestCluster) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crds/berthleases.berth.skaphos.io.yaml"
    );
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(c.client());
    api.create(&PostParams::default(), &crd).await.unwrap();
    for _ in 0..100 {
        let got = api.get("berthleases.berth.skaphos.io").await.unwrap();
        let established = got
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            // Discovery of a fresh CRD lags a little behind Established.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("CRD not established");
}

impl Topology {
    /// Starts three clusters, the API server and both operators. `None` when the kube
    /// binaries are not configured (the skip line has been printed).
    pub async fn start() -> Option<Self> {
        let bin_dir = berth_e2e::bin_dir_or_skip()?;
        let api_bin = bin("berth-apiserver");
        let op_bin = bin("berth-operator");
        let _ = (api_bin, op_bin);
        let base = ClusterOptions {
            bin_dir: Some(bin_dir),
            ..ClusterOptions::default()
        };
        let (coord, east, west) = tokio::join!(
            TestCluster::start(base.clone()),
            TestCluster::start(base.clone().workload_controllers()),
            TestCluster::start(base.clone().workload_controllers()),
        );
        let (coord, east, west) = (
            coord.expect("coordination cluster"),
            east.expect("east cluster"),
            west.expect("west cluster"),
        );
        let dir = tempfile::tempdir().unwrap();
        make_pki(dir.path());
        create_ns(&coord, COORD_NS).await;
        let mut keys = String::new();
        for id in ["cluster-east", "cluster-west"] {
            let token = format!("token-{id}-{}", rand::random::<u64>());
            write(&dir.path().join(format!("{id}.token")), &token);
            keys.push_str(&format!(
                "{id}:{}\n",
                hex(&Sha256::digest(token.as_bytes()))
            ));
        }
        write(&dir.path().join("keys"), &keys);

        for c in [&east, &west] {
            install_crd(c).await;
            create_ns(c, NS).await;
        }
        let api_port = free_port();
        let mut topo = Self {
            east: Tenant {
                id: "cluster-east",
                cluster: east,
                proxy: Proxy::start(api_port).await,
                operator: None,
                metrics_port: 0,
                health_port: 0,
            },
            west: Tenant {
                id: "cluster-west",
                cluster: west,
                proxy: Proxy::start(api_port).await,
                operator: None,
                metrics_port: 0,
                health_port: 0,
            },
            coord,
            api_port,
            apiserver: None,
            dir,
        };
        topo.start_apiserver().await;
        topo.start_operator("east").await;
        topo.start_operator("west").await;
        Some(topo)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn start_apiserver(&mut self) {
        let args: Vec<String> = [
            "--listen-addr",
            &format!("127.0.0.1:{}", self.api_port),
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--tls-cert-file",
            self.path("tls.crt").to_str().unwrap(),
            "--tls-key-file",
            self.path("tls.key").to_str().unwrap(),
            "--store-backend",
            "k8s",
            "--coordination-kubeconfig",
            self.coord.kubeconfig_path().to_str().unwrap(),
            "--coordination-namespace",
            COORD_NS,
            "--auth-mode",
            "static-keys",
            "--api-keys-file",
            self.path("keys").to_str().unwrap(),
            "--log-format",
            "text",
        ]
        .map(String::from)
        .to_vec();
        self.apiserver = Some(Proc::spawn(
            &bin("berth-apiserver"),
            &args,
            self.path("berth-apiserver.log"),
        ));
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.api_port)).is_err() {
            assert!(
                Instant::now() < end,
                "berth-apiserver did not listen:\n{}",
                self.apiserver.as_ref().unwrap().tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn tenant(&self, which: &str) -> &Tenant {
        match which {
            "east" => &self.east,
            _ => &self.west,
        }
    }

    pub fn tenant_mut(&mut self, which: &str) -> &mut Tenant {
        match which {
            "east" => &mut self.east,
            _ => &mut self.west,
        }
    }

    pub async fn start_operator(&mut self, which: &str) {
        let (p, metrics, health) = self.spawn_operator(which, &[], "").await;
        let t = self.tenant_mut(which);
        t.metrics_port = metrics;
        t.health_port = health;
        t.operator = Some(p);
    }

    /// Starts one more operator process for `which` with `extra` flags; returns it and its
    /// metrics and health ports once it listens.
    pub async fn spawn_operator(
        &self,
        which: &str,
        extra: &[&str],
        suffix: &str,
    ) -> (Proc, u16, u16) {
        let (metrics, health) = (free_port(), free_port());
        let dir = self.dir.path().to_path_buf();
        let t = self.tenant(which);
        let mut args: Vec<String> = vec![
            "--berth-api-server".into(),
            format!("https://127.0.0.1:{}", t.proxy.port),
            "--berth-api-key-file".into(),
            dir.join(format!("{}.token", t.id)).display().to_string(),
            "--berth-ca-bundle-file".into(),
            dir.join("ca.crt").display().to_string(),
            "--cluster-id".into(),
            t.id.into(),
            "--kubeconfig".into(),
            t.cluster.kubeconfig_path().display().to_string(),
            "--metrics-bind-address".into(),
            format!("127.0.0.1:{metrics}"),
            "--health-probe-bind-address".into(),
            format!("127.0.0.1:{health}"),
            "--log-format".into(),
            "text".into(),
            "--log-level".into(),
            "info,berth_operator=debug".into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let p = Proc::spawn(
            &bin("berth-operator"),
            &args,
            dir.join(format!("operator-{which}{suffix}.log")),
        );
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", health)).is_err() {
            if Instant::now() > end {
                panic!("operator {which} did not start:\n{}", p.tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (p, metrics, health)
    }

    /// Last lines of every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, p) in [
            ("berth-apiserver", &self.apiserver),
            ("operator east", &self.east.operator),
            ("operator west", &self.west.operator),
        ] {
            if let Some(p) = p {
                out.push_str(&format!("\n--- {name} ---\n{}\n", p.tail(60)));
            }
        }
        out
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Deployment with `replicas` and a never-pulled image (no kubelet runs the Pods).
pub async fn create_deployment(t: &Tenant, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/worker"}]}
            }
        }
    }))
    .unwrap();
    t.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// The BerthLease of the scenarios: ttl 6 s, heartbeat 2 s, Deployment target scaled to 2.
pub fn berthlease(name: &str, target: &str, semantics: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "berth.skaphos.io/v1alpha1",
        "kind": "BerthLease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "leaseName": name,
            "holderIdentity": "fallback-holder",
            "ttlSeconds": 6,
            "heartbeatIntervalSeconds": 2,
            "semantics": semantics,
            "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "acquireAction": {"scale": {"replicas": 2}},
            "releaseAction": {"scale": {"replicas": 0}}
        }
    }))
    .unwrap()
}

pub async fn apply_berthlease(t: &Tenant, obj: &DynamicObject) {
    t.berthleases()
        .create(&PostParams::default(), obj)
        .await
        .unwrap();
}

pub async fn delete_berthlease(t: &Tenant, name: &str) {
    t.berthleases()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// `(spec.replicas, status.replicas)` of a Deployment, `None` when absent or unreadable.
pub async fn replicas(t: &Tenant, name: &str) -> Option<(i32, i32)> {
    let d = tokio::time::timeout(Duration::from_secs(2), t.deployments().get_opt(name))
        .await
        .ok()?
        .ok()??;
    Some((
        d.spec.and_then(|s| s.replicas).unwrap_or(0),
        d.status.and_then(|s| s.replicas).unwrap_or(0),
    ))
}

pub async fn annotation(t: &Tenant, name: &str, key: &str) -> Option<String> {
    let d = t.deployments().get(name).await.ok()?;
    d.metadata.annotations.and_then(|a| a.get(key).cloned())
}

/// Status of a BerthLease as JSON.
pub async fn bl_status(t: &Tenant, name: &str) -> serde_json::Value {
    match t.berthleases().get_opt(name).await {
        Ok(Some(o)) => o.data["status"].clone(),
        _ => serde_json::Value::Null,
    }
}

/// One observation of both targets.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub east: Option<(i32, i32)>,
    pub west: Option<(i32, i32)>,
}

impl Sample {
    pub fn active(r: Option<(i32, i32)>) -> bool {
        r.is_some_and(|(spec, _)| spec > 0)
    }
}

/// Samples both targets every 100 ms until stopped.
pub struct Sampler {
    pub samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(east: kube::Client, west: kube::Client, target: &str) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let s = samples.clone();
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            let e: Api<Deployment> = Api::namespaced(east, NS);
            let w: Api<Deployment> = Api::namespaced(west, NS);
            loop {
                let read = |api: Api<Deployment>, name: String| async move {
                    let d = tokio::time::timeout(Duration::from_secs(1), api.get_opt(&name))
                        .await
                        .ok()?
                        .ok()??;
                    Some((
                        d.spec.and_then(|s| s.replicas).unwrap_or(0),
                        d.status.and_then(|s| s.replicas).unwrap_or(0),
                    ))
                };
                let (ev, wv) = tokio::join!(
                    read(e.clone(), target.clone()),
                    read(w.clone(), target.clone())
                );
                s.lock().unwrap().push(Sample {
                    at: Instant::now(),
                    east: ev,
                    west: wv,
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { samples, task }
    }

    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Samples in which both targets had replicas wanted.
    pub fn overlaps(&self, since: Instant) -> Vec<Sample> {
        self.snapshot()
            .into_iter()
            .filter(|s| s.at >= since && Sample::active(s.east) && Sample::active(s.west))
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` with `what` and
/// the logs.
pub async fn wait_for<T, F, Fut>(topo: &Topology, timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > end {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                topo.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which tenant runs the target: `Some("east")` / `Some("west")` when exactly one has it
/// scaled up and the other at 0.
pub async fn active_side(topo: &Topology, target: &str) -> Option<&'static str> {
    let (e, w) = tokio::join!(replicas(&topo.east, target), replicas(&topo.west, target));
    match (e?, w?) {
        ((2, _), (0, _)) => Some("east"),
        ((0, _), (2, _)) => Some("west"),
        _ => None,
    }
}

pub fn other(side: &str) -> &'static str {
    if side == "east" { "west" } else { "east" }
}

/// Metrics text of one operator.
pub async fn metrics_text(t: &Tenant) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", t.metrics_port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf)
        .await
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reason → count of the Events about one BerthLease.
pub async fn event_reasons(t: &Tenant, name: &str) -> BTreeMap<String, usize> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(t.cluster.client(), NS);
    let mut out = BTreeMap::new();
    for e in api.list(&Default::default()).await.unwrap().items {
        if e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name) {
            *out.entry(e.reason.unwrap_or_default()).or_default() += 1;
        }
    }
    out
}
