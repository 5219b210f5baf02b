//! The Helm charts under `deploy/helm`, rendered and linted by the real Helm engine
//! (`helm-python-sdk`, which wraps Helm's Go SDK) through `tests/e2e/helm/render.py`.
//!
//! Needs `BERTH_TEST_HELM_PYTHON` (a Python with `helm-python-sdk`; run
//! `hack/helm-test-env.sh`); without it the Helm tests print a skip line, or fail under
//! `BERTH_REQUIRE_INTEGRATION=1`. The flag checks run the workspace binaries
//! (`cargo build -p berth-apiserver -p berth-operator -p berth-oidc-broker`).
//! With `BERTH_TEST_KUBE_BIN_DIR` the rendered manifests are also sent to a real
//! kube-apiserver as a server-side dry run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value as Json, json};
use serde_yaml::Value;

const HELM_ENV: &str = "BERTH_TEST_HELM_PYTHON";

const SEED_K8S: &[&str] = &[
    "store.backend=k8s",
    "coordination.namespace=berth-coordination",
    "coordination.inCluster=true",
    "tls.certManager.enabled=true",
    "tls.certManager.issuerRef.name=berth-ca",
    "tls.certManager.issuerRef.kind=ClusterIssuer",
    "auth.mode=static-keys",
    "auth.staticKeys.secretName=berth-api-keys",
];
const SEED_SQL: &[&str] = &[
    "store.backend=sql",
    "store.sql.driver=postgres",
    "store.sql.dsnSecret.name=berth-sql-dsn",
    "tls.certManager.enabled=true",
    "tls.certManager.issuerRef.name=berth-ca",
    "tls.certManager.issuerRef.kind=ClusterIssuer",
    "auth.mode=static-keys",
    "auth.staticKeys.secretName=berth-api-keys",
];
const SEED_OPERATOR: &[&str] = &[
    "clusterID=cluster-east",
    "berth.apiServer=https://berth.example.com:8443",
    "berth.apiKey.secretName=berth-api-key",
    "berth.tls.caBundleConfigMap=berth-ca-bundle",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart(name: &str) -> PathBuf {
    root().join("deploy/helm").join(name)
}

fn helm_python() -> Option<PathBuf> {
    match std::env::var_os(HELM_ENV) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                !berth_e2e::integration_required(),
                "BERTH_REQUIRE_INTEGRATION=1 but {HELM_ENV} is not set (run hack/helm-test-env.sh)"
            );
            println!("skipped: set {HELM_ENV} (run hack/helm-test-env.sh)");
            None
        }
    }
}

/// Where the workspace's binaries are (next to the test binary's `deps/`).
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p {name}`",
        path.display()
    );
    path
}

/// Runs `render.py MODE CHART` with `request` on stdin.
fn helm(python: &Path, mode: &str, chart_name: &str, request: &Json) -> Json {
    let mut child = Command::new(python)
        .arg(root().join("tests/e2e/helm/render.py"))
        .arg(mode)
        .arg(chart(chart_name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Helm render script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "render.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "render.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn request(release: &str, values_files: &[PathBuf], set: &[&str]) -> Json {
    let values_yaml: Vec<String> = values_files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    json!({"name": release, "namespace": "berth-system", "values_yaml": values_yaml, "set": set})
}

/// Renders and returns every manifest document, or the Helm error message.
fn try_render(
    python: &Path,
    chart_name: &str,
    values_files: &[PathBuf],
    set: &[&str],
) -> Result<Vec<Value>, String> {
    let answer = helm(
        python,
        "render",
        chart_name,
        &request(chart_name, values_files, set),
    );
    if answer["ok"] != json!(true) {
        return Err(format!(
            "{}: {}",
            answer["kind"].as_str().unwrap_or("?"),
            answer["error"].as_str().unwrap_or("?")
        ));
    }
    let manifests: BTreeMap<String, String> =
        serde_json::from_value(answer["manifests"].clone()).unwrap();
    let mut docs = Vec::new();
    for (path, text) in manifests {
        if !path.ends_with(".yaml") {
            continue;
        }
        for part in format!("\n{text}").split("\n---") {
            let doc: Value = serde_yaml::from_str(part)
                .unwrap_or_else(|e| panic!("{path} is not YAML: {e}\n{part}"));
            if !doc.is_null() {
                docs.push(doc);
            }
        }
    }
    Ok(docs)
}

fn render(python: &Path, chart_name: &str, values_files: &[PathBuf], set: &[&str]) -> Vec<Value> {
    try_render(python, chart_name, values_files, set)
        .unwrap_or_else(|e| panic!("{chart_name} {values_files:?} {set:?} failed to render: {e}"))
}

fn ci_files(chart_name: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart(chart_name).join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn find<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found = find(docs, k);
    assert_eq!(found.len(), 1, "expected one {k}, got {}", found.len());
    found[0]
}

fn container<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn has_arg(c: &Value, arg: &str) -> bool {
    args(c).iter().any(|a| a == arg)
}

fn flag_names(c: &Value) -> BTreeSet<String> {
    args(c)
        .iter()
        .map(|a| a.split('=').next().unwrap().to_owned())
        .collect()
}

/// The `--long` flags a binary's `--help` lists.
fn known_flags(binary: &str) -> BTreeSet<String> {
    let out = Command::new(bin(binary)).arg("--help").output().unwrap();
    assert!(out.status.success(), "{binary} --help failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .to_owned()
        })
        .collect()
}

/// Checks every document of a chart: common labels, version, security context, that every
/// flag passed to a container is one its binary knows, and that mounts match volumes.
fn check_common(docs: &[Value], flags: &BTreeMap<&str, BTreeSet<String>>) {
    let version = env!("CARGO_PKG_VERSION");
    for d in docs {
        assert!(
            d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
            "{d:?}"
        );
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/version"].as_str(),
            Some(version),
            "{} {:?}",
            kind(d),
            d["metadata"]["name"]
        );
    }
    let dep = one(docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let volumes: BTreeSet<&str> = pod["volumes"]
        .as_sequence()
        .map(|v| v.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    for c in pod["containers"].as_sequence().unwrap() {
        let name = c["name"].as_str().unwrap();
        let image = c["image"].as_str().unwrap();
        assert!(image.ends_with(&format!(":{version}")), "{image}");
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"],
            Value::Bool(true)
        );
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"],
            Value::Bool(false)
        );
        let known = flags
            .get(name)
            .unwrap_or_else(|| panic!("no binary for container {name}"));
        for flag in flag_names(c) {
            assert!(
                known.contains(&flag),
                "container {name} passes unknown flag {flag}"
            );
        }
        for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
            let v = m["name"].as_str().unwrap();
            assert!(
                volumes.contains(v),
                "container {name} mounts missing volume {v}"
            );
        }
        // Every file a flag names lives under a mount.
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        for a in args(c) {
            let Some((flag, value)) = a.split_once('=') else {
                continue;
            };
            if flag.ends_with("-file") || flag == "--output" || flag == "--coordination-kubeconfig"
            {
                assert!(
                    mounts.iter().any(|m| value.starts_with(&format!("{m}/"))),
                    "{name}: {a} is not under a mount ({mounts:?})"
                );
            }
        }
    }
}

fn apiserver_flags() -> BTreeMap<&'static str, BTreeSet<String>> {
    BTreeMap::from([("apiserver", known_flags("berth-apiserver"))])
}

fn operator_flags() -> BTreeMap<&'static str, BTreeSet<String>> {
    BTreeMap::from([
        ("operator", known_flags("berth-operator")),
        ("oidc-broker", known_flags("berth-oidc-broker")),
    ])
}

fn file(chart_name: &str, ci: &str) -> PathBuf {
    chart(chart_name)
        .join("ci")
        .join(format!("{ci}-values.yaml"))
}

#[test]
fn apiserver_value_sets_render() {
    let Some(py) = helm_python() else { return };
    let flags = apiserver_flags();
    let files = ci_files("berth-apiserver");
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        let docs = render(&py, "berth-apiserver", std::slice::from_ref(f), &[]);
        check_common(&docs, &flags);
        println!("berth-apiserver {}: {} objects", f.display(), docs.len());
    }

    // k8s store in-cluster: Lease RBAC in the coordination namespace, cert-manager
    // Certificate, ServiceMonitor, PDB (2 replicas), rolling update without unavailability.
    let docs = render(
        &py,
        "berth-apiserver",
        &[file("berth-apiserver", "k8s-incluster")],
        &[],
    );
    let c = container(&docs, "apiserver");
    for a in [
        "--store-backend=k8s",
        "--coordination-namespace=berth-coordination",
        "--auth-mode=static-keys",
        "--api-keys-file=/etc/berth/auth/api-keys",
        "--tls-cert-file=/etc/berth/tls/tls.crt",
    ] {
        assert!(has_arg(c, a), "missing {a}: {:?}", args(c));
    }
    assert!(!flag_names(c).contains("--coordination-kubeconfig"));
    let role = one(&docs, "Role");
    assert_eq!(
        role["metadata"]["namespace"].as_str(),
        Some("berth-coordination")
    );
    assert_eq!(role["rules"][0]["resources"][0].as_str(), Some("leases"));
    let rb = one(&docs, "RoleBinding");
    assert_eq!(
        rb["subjects"][0]["namespace"].as_str(),
        Some("berth-system")
    );
    let cert = one(&docs, "Certificate");
    assert_eq!(
        cert["spec"]["issuerRef"]["kind"].as_str(),
        Some("ClusterIssuer")
    );
    let dep = one(&docs, "Deployment");
    assert_eq!(
        cert["spec"]["secretName"],
        dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    );
    assert_eq!(dep["spec"]["replicas"].as_u64(), Some(2));
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0)
    );
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1"));
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
    one(&docs, "ServiceMonitor");
    one(&docs, "Ingress");
    assert_eq!(find(&docs, "Service").len(), 2);

    // Kubeconfig of another cluster: mounted, no RBAC, no token automount.
    let docs = render(
        &py,
        "berth-apiserver",
        &[file("berth-apiserver", "k8s-kubeconfig")],
        &[],
    );
    let c = container(&docs, "apiserver");
    assert!(has_arg(
        c,
        "--coordination-kubeconfig=/etc/berth/coordination/kubeconfig"
    ));
    assert!(has_arg(c, "--coordination-qps=100") && has_arg(c, "--coordination-burst=200"));
    assert!(find(&docs, "Role").is_empty());
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"],
        Value::Bool(false)
    );

    // SQL with a DSN Secret: the Secret's key is mounted as the --sql-dsn-file.
    let docs = render(
        &py,
        "berth-apiserver",
        &[file("berth-apiserver", "sql-postgres")],
        &[],
    );
    let c = container(&docs, "apiserver");
    assert!(has_arg(c, "--sql-driver=postgres") && has_arg(c, "--sql-dsn-file=/etc/berth/sql/dsn"));
    assert!(has_arg(c, "--sql-migrate=auto") && has_arg(c, "--sql-max-connections=20"));
    assert!(
        find(&docs, "Secret").is_empty(),
        "the chart must not create a DSN Secret here"
    );
    let vols = &one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    let dsn = vols
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("sql-dsn"))
        .unwrap();
    assert_eq!(dsn["secret"]["secretName"].as_str(), Some("berth-sql-dsn"));
    assert_eq!(dsn["secret"]["items"][0]["key"].as_str(), Some("dsn"));
    assert_eq!(
        one(&docs, "Deployment")["spec"]["replicas"].as_u64(),
        Some(3)
    );

    // SQLite: one replica, Recreate, PVC at /var/lib/berth, DSN Secret made by the chart, no PDB.
    let docs = render(
        &py,
        "berth-apiserver",
        &[file("berth-apiserver", "sqlite")],
        &[],
    );
    let dep = one(&docs, "Deployment");
    assert_eq!(dep["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(dep["spec"]["strategy"]["type"].as_str(), Some("Recreate"));
    assert_eq!(
        one(&docs, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"].as_str(),
        Some("2Gi")
    );
    assert_eq!(
        one(&docs, "Secret")["stringData"]["dsn"].as_str(),
        Some("sqlite:///var/lib/berth/berth.db")
    );
    assert!(find(&docs, "PodDisruptionBudget").is_empty());
    let c = container(&docs, "apiserver");
    assert!(
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/var/lib/berth"))
    );

    // mem without auth needs the explicit opt-in and passes --allow-unauthenticated.
    let docs = render(
        &py,
        "berth-apiserver",
        &[file("berth-apiserver", "mem-dev")],
        &[],
    );
    let c = container(&docs, "apiserver");
    assert!(has_arg(c, "--auth-mode=none") && has_arg(c, "--allow-unauthenticated"));

    // OIDC settings become --oidc-* flags; no API keys mounted.
    let docs = render(
        &py,
        "berth-apiserver",
        &[file("berth-apiserver", "oidc")],
        &[],
    );
    let c = container(&docs, "apiserver");
    for a in [
        "--auth-mode=oidc",
        "--oidc-issuer-url=https://idp.example.com/realms/berth",
        "--oidc-audience=berth",
        "--oidc-username-claim=client_id",
        "--oidc-tenant-claim=tenant",
        "--oidc-required-claim=groups=berth-operators",
        "--oidc-ca-file=/etc/berth/oidc-ca/ca.crt",
    ] {
        assert!(has_arg(c, a), "missing {a}: {:?}", args(c));
    }
    assert!(!flag_names(c).contains("--api-keys-file"));
}

#[test]
fn operator_value_sets_render() {
    let Some(py) = helm_python() else { return };
    let flags = operator_flags();
    let files = ci_files("berth-operator");
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let docs = render(&py, "berth-operator", std::slice::from_ref(f), &[]);
        check_common(&docs, &flags);
        println!("berth-operator {}: {} objects", f.display(), docs.len());
    }

    for (ci, cluster) in [("east", "cluster-east"), ("west", "cluster-west")] {
        let docs = render(&py, "berth-operator", &[file("berth-operator", ci)], &[]);
        let c = container(&docs, "operator");
        for a in [
            format!("--cluster-id={cluster}"),
            "--berth-api-server=https://berth.example.com:8443".to_owned(),
            "--berth-api-key-file=/etc/berth/api-key/api-key".to_owned(),
            "--berth-ca-bundle-file=/etc/berth/ca/ca.crt".to_owned(),
        ] {
            assert!(has_arg(c, &a), "{ci}: missing {a}: {:?}", args(c));
        }
        assert!(!flag_names(c).contains("--leader-elect"));
        assert_eq!(
            one(&docs, "Deployment")["spec"]["strategy"]["type"].as_str(),
            Some("Recreate")
        );
        let rules = &one(&docs, "ClusterRole")["rules"];
        let rules = rules.as_sequence().unwrap();
        let grants = |group: &str, resource: &str, verb: &str| {
            rules.iter().any(|r| {
                r["apiGroups"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|g| g.as_str() == Some(group))
                    && r["resources"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|x| x.as_str() == Some(resource))
                    && r["verbs"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|x| x.as_str() == Some(verb))
            })
        };
        for (g, r, v) in [
            ("berth.skaphos.io", "berthleases", "watch"),
            ("berth.skaphos.io", "berthleases", "patch"),
            ("berth.skaphos.io", "berthleases/status", "patch"),
            ("apps", "deployments", "patch"),
            ("apps", "deployments/scale", "patch"),
            ("apps", "statefulsets/scale", "get"),
            ("batch", "cronjobs", "patch"),
            ("events.k8s.io", "events", "create"),
        ] {
            assert!(grants(g, r, v), "{ci}: ClusterRole lacks {v} {g}/{r}");
        }
        assert!(
            find(&docs, "Role").is_empty(),
            "no leader election Role without leader election"
        );
    }
    let west = render(
        &py,
        "berth-operator",
        &[file("berth-operator", "west")],
        &[],
    );
    assert!(has_arg(
        container(&west, "operator"),
        "--berth-server-name=berth.example.com"
    ));
    one(&west, "ServiceMonitor");

    // HA: leader election flags, a Role for the election Lease, PDB.
    let docs = render(&py, "berth-operator", &[file("berth-operator", "ha")], &[]);
    let c = container(&docs, "operator");
    for a in [
        "--leader-elect",
        "--leader-election-id=berth-operator-leader",
        "--leader-election-namespace=berth-system",
        "--leader-election-lease-duration=15s",
    ] {
        assert!(has_arg(c, a), "missing {a}: {:?}", args(c));
    }
    let role = one(&docs, "Role");
    assert_eq!(role["rules"][0]["resources"][0].as_str(), Some("leases"));
    one(&docs, "PodDisruptionBudget");

    // Broker sidecar: writes the token to a shared in-memory volume the operator reads.
    let docs = render(
        &py,
        "berth-operator",
        &[file("berth-operator", "oidc-sidecar")],
        &[],
    );
    let op = container(&docs, "operator");
    let broker = container(&docs, "oidc-broker");
    assert!(has_arg(op, "--berth-api-key-file=/var/run/berth/token"));
    for a in [
        "--output=/var/run/berth/token",
        "--oidc-issuer-url=https://idp.example.com/realms/berth",
        "--oidc-client-id=berth-operator-east",
        "--oidc-client-secret-file=/etc/berth/oidc-client/client-secret",
        "--oidc-scopes=berth.lease",
        "--oidc-audience=berth",
        "--admin-addr=:8082",
    ] {
        assert!(has_arg(broker, a), "missing {a}: {:?}", args(broker));
    }
    let vols = &one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert!(vols.as_sequence().unwrap().iter().any(|v| {
        v["name"].as_str() == Some("broker-token")
            && v["emptyDir"]["medium"].as_str() == Some("Memory")
    }));
}

#[test]
fn seed_install_commands_render() {
    let Some(py) = helm_python() else { return };
    let docs = render(&py, "berth-apiserver", &[], SEED_K8S);
    check_common(&docs, &apiserver_flags());
    assert!(has_arg(
        container(&docs, "apiserver"),
        "--store-backend=k8s"
    ));
    let docs = render(&py, "berth-apiserver", &[], SEED_SQL);
    check_common(&docs, &apiserver_flags());
    assert!(has_arg(
        container(&docs, "apiserver"),
        "--sql-dsn-file=/etc/berth/sql/dsn"
    ));
    let docs = render(&py, "berth-operator", &[], SEED_OPERATOR);
    check_common(&docs, &operator_flags());
    assert!(has_arg(
        container(&docs, "operator"),
        "--cluster-id=cluster-east"
    ));
    // The seed's operator lines for the second cluster differ only in clusterID.
    let mut west: Vec<&str> = SEED_OPERATOR.to_vec();
    west[0] = "clusterID=cluster-west";
    let docs = render(&py, "berth-operator", &[], &west);
    assert!(has_arg(
        container(&docs, "operator"),
        "--cluster-id=cluster-west"
    ));
}

#[test]
fn readme_install_commands_render() {
    let Some(py) = helm_python() else { return };
    // README.md, "Install on Kubernetes": SQLite on a PVC.
    let docs = render(
        &py,
        "berth-apiserver",
        &[],
        &[
            "replicaCount=1",
            "store.backend=sql",
            "store.sql.driver=sqlite",
            "store.sql.dsn=sqlite:///var/lib/berth/berth.db",
            "store.sql.sqlite.persistence.enabled=true",
            "tls.existingSecret=berth-apiserver-tls",
            "auth.staticKeys.secretName=berth-api-keys",
        ],
    );
    check_common(&docs, &apiserver_flags());
    one(&docs, "PersistentVolumeClaim");
    // The OIDC settings on top of the seed's k8s command.
    let mut set: Vec<&str> = SEED_K8S.to_vec();
    set.retain(|s| !s.starts_with("auth."));
    set.extend([
        "auth.mode=oidc",
        "auth.oidc.issuerURL=https://idp.example.com/realms/berth",
        "auth.oidc.audience=berth",
        "auth.oidc.tenantClaim=berth_tenant",
        "auth.oidc.requiredClaims={groups=berth-clusters}",
    ]);
    let docs = render(&py, "berth-apiserver", &[], &set);
    check_common(&docs, &apiserver_flags());
    let c = container(&docs, "apiserver");
    assert!(
        has_arg(c, "--oidc-required-claim=groups=berth-clusters"),
        "{:?}",
        args(c)
    );
    assert!(has_arg(c, "--oidc-tenant-claim=berth_tenant"));
    // The broker sidecar settings on top of the seed's operator command.
    let mut set: Vec<&str> = SEED_OPERATOR.to_vec();
    set.retain(|s| !s.starts_with("berth.apiKey"));
    set.extend([
        "sidecarBroker.enabled=true",
        "sidecarBroker.oidc.issuerURL=https://idp.example.com/realms/berth",
        "sidecarBroker.oidc.clientID=berth-operator-east",
        "sidecarBroker.oidc.clientSecret.secretName=berth-oidc-client",
        "sidecarBroker.oidc.audience=berth",
    ]);
    let docs = render(&py, "berth-operator", &[], &set);
    check_common(&docs, &operator_flags());
    assert!(has_arg(
        container(&docs, "oidc-broker"),
        "--output=/var/run/berth/token"
    ));
}

#[test]
fn invalid_values_are_rejected_with_a_clear_message() {
    let Some(py) = helm_python() else { return };
    let with = |base: &[&'static str], extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        // Schema violations.
        (
            "berth-apiserver",
            with(SEED_K8S, &["store.backend=etcd"]),
            "store/backend",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["auth.mode=basic"]),
            "auth/mode",
        ),
        (
            "berth-apiserver",
            with(SEED_SQL, &["store.sql.driver=oracle"]),
            "store/sql/driver",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["tls.certManager.issuerRef.kind=Cluster"]),
            "issuerRef/kind",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["service.port=70000"]),
            "service/port",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["ttl.max=forever"]),
            "ttl/max",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["store.sqlDriver=postgres"]),
            "sqlDriver",
        ),
        (
            "berth-operator",
            with(SEED_OPERATOR, &["berth.apiServer=http://berth:8080"]),
            "berth/apiServer",
        ),
        (
            "berth-operator",
            with(SEED_OPERATOR, &["leaderElection.leaseDuration=15"]),
            "leaseDuration",
        ),
        (
            "berth-operator",
            with(SEED_OPERATOR, &["clusterID=cluster east"]),
            "clusterID",
        ),
        // Cross-field rules.
        (
            "berth-apiserver",
            SEED_K8S[..7].to_vec(),
            "auth.staticKeys.secretName is required",
        ),
        (
            "berth-apiserver",
            with(
                &SEED_K8S[..1],
                &[
                    "auth.staticKeys.secretName=k",
                    "coordination.namespace=c",
                    "coordination.inCluster=true",
                ],
            ),
            "tls: set exactly one of",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["tls.existingSecret=mine"]),
            "not both",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["coordination.namespace="]),
            "coordination.namespace is required",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["coordination.kubeconfig.secretName=kc"]),
            "not both",
        ),
        (
            "berth-apiserver",
            with(SEED_SQL, &["store.sql.dsnSecret.name="]),
            "store.sql.dsnSecret.name",
        ),
        (
            "berth-apiserver",
            with(SEED_SQL, &["store.sql.driver=sqlite", "replicaCount=2"]),
            "set replicaCount=1",
        ),
        (
            "berth-apiserver",
            with(SEED_SQL, &["coordination.namespace=x"]),
            "only valid with store.backend=k8s",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["auth.mode=none"]),
            "auth.allowUnauthenticated=true",
        ),
        (
            "berth-apiserver",
            with(SEED_K8S, &["auth.mode=oidc"]),
            "auth.oidc.issuerURL and auth.oidc.audience are required",
        ),
        (
            "berth-operator",
            SEED_OPERATOR[..1].to_vec(),
            "berth.apiServer",
        ),
        (
            "berth-operator",
            with(SEED_OPERATOR, &["replicaCount=2"]),
            "leaderElection.enabled=true",
        ),
        (
            "berth-operator",
            with(SEED_OPERATOR, &["berth.tokenFile.path=/t"]),
            "set only one of",
        ),
        (
            "berth-operator",
            with(&SEED_OPERATOR[..2], &[]),
            "berth credentials",
        ),
        (
            "berth-operator",
            with(&SEED_OPERATOR[..2], &["sidecarBroker.enabled=true"]),
            "sidecarBroker.oidc.issuerURL",
        ),
    ];
    for (chart_name, set, expected) in cases {
        match try_render(&py, chart_name, &[], &set) {
            Ok(_) => panic!("{chart_name} {set:?} rendered; expected an error naming {expected:?}"),
            Err(e) => {
                assert!(
                    e.contains(expected),
                    "{chart_name} {set:?}: message {e:?} lacks {expected:?}"
                );
                println!(
                    "rejected {chart_name} {:?}: {}",
                    set.last().unwrap_or(&""),
                    e.replace('\n', " ")
                );
            }
        }
    }
}

#[test]
fn charts_pass_helm_lint() {
    let Some(py) = helm_python() else { return };
    let mut runs: Vec<(&str, Vec<PathBuf>, &[&str])> = vec![
        ("berth-apiserver", vec![], SEED_K8S),
        ("berth-apiserver", vec![], SEED_SQL),
        ("berth-operator", vec![], SEED_OPERATOR),
    ];
    for chart_name in ["berth-apiserver", "berth-operator"] {
        for f in ci_files(chart_name) {
            runs.push((chart_name, vec![f], &[]));
        }
    }
    for (chart_name, files, set) in runs {
        let answer = helm(&py, "lint", chart_name, &request(chart_name, &files, set));
        assert_eq!(answer["ok"], json!(true), "{answer}");
        let report = &answer["report"];
        let errors = report["errors"].as_array().map_or(0, Vec::len);
        let bad: Vec<&Json> = report["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["severity"].as_u64().unwrap_or(0) >= 2)
            .collect();
        assert!(
            errors == 0 && bad.is_empty(),
            "{chart_name} {files:?}: {report}"
        );
    }
}

#[test]
fn bundled_crd_is_the_generated_one() {
    let bundled = std::fs::read_to_string(
        chart("berth-operator").join("crds/berthleases.berth.skaphos.io.yaml"),
    )
    .unwrap();
    let generated =
        std::fs::read_to_string(root().join("deploy/crds/berthleases.berth.skaphos.io.yaml"))
            .unwrap();
    assert_eq!(
        bundled, generated,
        "deploy/helm/berth-operator/crds/ differs from deploy/crds/: copy it again"
    );
    let out = Command::new(bin("berth-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let from_binary: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let from_file: Value = serde_yaml::from_str(&bundled).unwrap();
    assert_eq!(
        from_binary, from_file,
        "`berth-operator crd` and the bundled CRD differ"
    );
}

#[test]
fn one_version_across_workspace_and_charts() {
    let version = env!("CARGO_PKG_VERSION");
    for name in ["berth-apiserver", "berth-operator"] {
        let meta: Value =
            serde_yaml::from_str(&std::fs::read_to_string(chart(name).join("Chart.yaml")).unwrap())
                .unwrap();
        assert_eq!(meta["version"].as_str(), Some(version), "{name} version");
        assert_eq!(
            meta["appVersion"].as_str(),
            Some(version),
            "{name} appVersion"
        );
    }
    for bin in [
        "berth-apiserver",
        "berth-operator",
        "berth-oidc-broker",
        "berth",
    ] {
        let path = root().join(format!("deploy/docker/{bin}.Dockerfile"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("ARG VERSION={version}\n")),
            "{}",
            path.display()
        );
        assert!(
            text.contains(&format!("--bin {bin} ")),
            "{}",
            path.display()
        );
        assert!(
            text.contains("USER 65532:65532"),
            "{} must run as non-root",
            path.display()
        );
    }
}

// ---- The rendered manifests on a real kube-apiserver ----

mod cluster {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use berth_e2e::{ClusterOptions, TestCluster};
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, PostParams};
    use kube::discovery::Scope;
    use serde_json::json;
    use serde_yaml::Value;
    use sha2::{Digest as _, Sha256};

    /// A child process killed on drop; output goes to `log`.
    pub(crate) struct Proc {
        child: Child,
        log: PathBuf,
    }

    impl Proc {
        pub(crate) fn spawn(bin: &Path, args: &[String], log: PathBuf) -> Self {
            let out = std::fs::File::create(&log).unwrap();
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

        pub(crate) fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub(crate) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub(crate) async fn start() -> Option<TestCluster> {
        let bin_dir = berth_e2e::bin_dir_or_skip()?;
        Some(
            TestCluster::start(ClusterOptions {
                bin_dir: Some(bin_dir),
                ..ClusterOptions::default()
            })
            .await
            .expect("test cluster"),
        )
    }

    pub(crate) async fn create_ns(c: &TestCluster, name: &str) {
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<k8s_openapi::api::core::v1::Namespace>::all(c.client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }

    pub(crate) async fn install_crd(c: &TestCluster, path: &Path) {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let api: Api<CustomResourceDefinition> = Api::all(c.client());
        api.create(&PostParams::default(), &crd).await.unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let got = api.get("berthleases.berth.skaphos.io").await.unwrap();
            let established = got
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
            assert!(Instant::now() < end, "CRD not established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates every document (a server-side dry run when `dry_run`). Returns the kinds the
    /// cluster does not serve (skipped).
    pub(crate) async fn apply(c: &TestCluster, docs: &[Value], dry_run: bool) -> Vec<String> {
        let client = c.client();
        let mut skipped = Vec::new();
        for doc in docs {
            let api_version = doc["apiVersion"].as_str().unwrap();
            let kind = doc["kind"].as_str().unwrap();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let Ok((ar, caps)) = kube::discovery::pinned_kind(&client, &gvk).await else {
                skipped.push(format!("{api_version}/{kind}"));
                continue;
            };
            let obj: DynamicObject =
                serde_json::from_value(serde_json::to_value(doc).unwrap()).unwrap();
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Cluster => Api::all_with(client.clone(), &ar),
                Scope::Namespaced => Api::namespaced_with(
                    client.clone(),
                    doc["metadata"]["namespace"]
                        .as_str()
                        .expect("namespaced object without namespace"),
                    &ar,
                ),
            };
            let pp = PostParams {
                dry_run,
                ..PostParams::default()
            };
            if let Err(e) = api.create(&pp, &obj).await {
                panic!(
                    "{api_version} {kind} {:?} refused (dry run {dry_run}): {e}",
                    doc["metadata"]["name"]
                );
            }
        }
        skipped
    }

    /// A kubeconfig that authenticates as the ServiceAccount `ns/name` with a bound token.
    pub(crate) async fn service_account_kubeconfig(
        c: &TestCluster,
        ns: &str,
        name: &str,
        out: &Path,
    ) {
        let tr: TokenRequest = serde_json::from_value(json!({
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}
        }))
        .unwrap();
        let got = Api::<ServiceAccount>::namespaced(c.client(), ns)
            .create_token_request(name, &PostParams::default(), &tr)
            .await
            .unwrap_or_else(|e| panic!("token for {ns}/{name}: {e}"));
        let token = got.status.expect("token status").token;
        let ca = base64::engine::general_purpose::STANDARD.encode(c.ca_pem());
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context: {{cluster: c, user: u, namespace: {ns}}}\ncurrent-context: sa\n",
            c.server_url()
        );
        std::fs::write(out, yaml).unwrap();
    }

    /// CA, a serving certificate for 127.0.0.1 and a key file with one token.
    pub(crate) fn pki_and_keys(dir: &Path) -> String {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        let token = format!("token-{}", rand::random::<u64>());
        let hex: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(dir.join("api-keys"), format!("cluster-east:{hex}\n")).unwrap();
        std::fs::write(dir.join("api-key"), &token).unwrap();
        token
    }

    /// The rendered args of `container` with the in-pod paths and addresses replaced.
    pub(crate) fn local_args(rendered: &[String], replace: &[(&str, String)]) -> Vec<String> {
        rendered
            .iter()
            .map(|a| {
                let flag = a.split('=').next().unwrap();
                replace
                    .iter()
                    .find(|(f, _)| *f == flag)
                    .map_or_else(|| a.clone(), |(f, v)| format!("{f}={v}"))
            })
            .collect()
    }

    pub(crate) async fn leases(c: &TestCluster, ns: &str) -> Vec<String> {
        Api::<Lease>::namespaced(c.client(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect()
    }
}

/// Every CI value set of both charts passes a server-side dry run; the in-cluster API server
/// set and the HA operator set are created for real, and both binaries then run with the
/// rendered arguments under the charts' ServiceAccount tokens: the API server keeps its
/// Leases in the coordination namespace and the operator reconciles a BerthLease (scales
/// its Deployment, takes its election Lease) without a permission error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_install_into_a_real_cluster_and_their_rbac_suffices() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
    use std::time::{Duration, Instant};

    let Some(py) = helm_python() else { return };
    let Some(c) = cluster::start().await else {
        return;
    };
    for ns in ["berth-system", "berth-coordination", "pipeline"] {
        cluster::create_ns(&c, ns).await;
    }
    cluster::install_crd(
        &c,
        &chart("berth-operator").join("crds/berthleases.berth.skaphos.io.yaml"),
    )
    .await;

    // Kinds a bare 1.20 cluster does not serve: cert-manager, Prometheus operator, policy/v1.
    let allowed_skips = [
        "cert-manager.io/v1/Certificate",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "policy/v1/PodDisruptionBudget",
    ];
    for chart_name in ["berth-apiserver", "berth-operator"] {
        for f in ci_files(chart_name) {
            let docs = render(&py, chart_name, std::slice::from_ref(&f), &[]);
            let skipped = cluster::apply(&c, &docs, true).await;
            for s in &skipped {
                assert!(
                    allowed_skips.contains(&s.as_str()),
                    "{}: {s} not served",
                    f.display()
                );
            }
            println!(
                "dry run {}: {} accepted, skipped {skipped:?}",
                f.display(),
                docs.len() - skipped.len()
            );
        }
    }
    let api_docs = render(
        &py,
        "berth-apiserver",
        &[file("berth-apiserver", "k8s-incluster")],
        &[],
    );
    let op_docs = render(&py, "berth-operator", &[file("berth-operator", "ha")], &[]);
    cluster::apply(&c, &api_docs, false).await;
    cluster::apply(&c, &op_docs, false).await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cluster::pki_and_keys(d);
    cluster::service_account_kubeconfig(
        &c,
        "berth-system",
        "berth-apiserver",
        &d.join("apiserver.kubeconfig"),
    )
    .await;
    cluster::service_account_kubeconfig(
        &c,
        "berth-system",
        "berth-operator",
        &d.join("operator.kubeconfig"),
    )
    .await;

    // The API server with the chart's arguments, as its ServiceAccount.
    let port = cluster::free_port();
    let p = |n: &str| d.join(n).display().to_string();
    let mut api_args = cluster::local_args(
        &args(container(&api_docs, "apiserver")),
        &[
            ("--listen-addr", format!("127.0.0.1:{port}")),
            (
                "--metrics-addr",
                format!("127.0.0.1:{}", cluster::free_port()),
            ),
            ("--tls-cert-file", p("tls.crt")),
            ("--tls-key-file", p("tls.key")),
            ("--api-keys-file", p("api-keys")),
            ("--log-format", "text".to_owned()),
        ],
    );
    api_args.push(format!(
        "--coordination-kubeconfig={}",
        p("apiserver.kubeconfig")
    ));
    let apiserver =
        cluster::Proc::spawn(&bin("berth-apiserver"), &api_args, d.join("apiserver.log"));
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "berth-apiserver did not listen:\n{}",
            apiserver.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The operator with the chart's arguments (HA set: leader election), as its ServiceAccount.
    let health = cluster::free_port();
    let mut op_args = cluster::local_args(
        &args(container(&op_docs, "operator")),
        &[
            ("--berth-api-server", format!("https://127.0.0.1:{port}")),
            ("--berth-api-key-file", p("api-key")),
            ("--berth-ca-bundle-file", p("ca.crt")),
            (
                "--metrics-bind-address",
                format!("127.0.0.1:{}", cluster::free_port()),
            ),
            ("--health-probe-bind-address", format!("127.0.0.1:{health}")),
            ("--log-format", "text".to_owned()),
        ],
    );
    op_args.push(format!("--kubeconfig={}", p("operator.kubeconfig")));
    let operator = cluster::Proc::spawn(&bin("berth-operator"), &op_args, d.join("operator.log"));

    let deployments: Api<Deployment> = Api::namespaced(c.client(), "pipeline");
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "ingest-worker"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "ingest-worker"}},
            "template": {
                "metadata": {"labels": {"app": "ingest-worker"}},
                "spec": {"containers": [{"name": "w", "image": "registry.k8s.io/pause:3.9"}]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &dep)
        .await
        .unwrap();
    let bl: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "berth.skaphos.io/v1alpha1",
        "kind": "BerthLease",
        "metadata": {"name": "ingest-worker", "namespace": "pipeline"},
        "spec": {
            "leaseName": "ingest-worker",
            "holderIdentity": "fallback-holder",
            "ttlSeconds": 30,
            "heartbeatIntervalSeconds": 10,
            "semantics": "at-most-once",
            "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ingest-worker"},
            "acquireAction": {"scale": {"replicas": 3}},
            "releaseAction": {"scale": {"replicas": 0}}
        }
    }))
    .unwrap();
    let bls: Api<DynamicObject> = Api::namespaced_with(
        c.client(),
        "pipeline",
        &kube::api::ApiResource::from_gvk(&GroupVersionKind::gvk(
            "berth.skaphos.io",
            "v1alpha1",
            "BerthLease",
        )),
    );
    bls.create(&PostParams::default(), &bl).await.unwrap();

    let started = Instant::now();
    let end = started + Duration::from_secs(60);
    loop {
        let replicas = deployments
            .get("ingest-worker")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas);
        let status = bls.get("ingest-worker").await.unwrap().data["status"].clone();
        if replicas == Some(3) && status["currentHolder"] == json!("cluster-east") {
            println!(
                "operator under the chart's ServiceAccount scaled the target to 3 after {:?}; status {status}",
                started.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "no reconcile: replicas {replicas:?}, status {status}\n--- operator ---\n{}\n--- apiserver ---\n{}",
            operator.log(),
            apiserver.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let election = cluster::leases(&c, "berth-system").await;
    assert!(
        election.contains(&"berth-operator-leader".to_owned()),
        "{election:?}"
    );
    let coordination = cluster::leases(&c, "berth-coordination").await;
    assert!(
        !coordination.is_empty(),
        "no Lease in the coordination namespace"
    );
    println!("leases: berth-system {election:?}, berth-coordination {coordination:?}");
    for (name, log) in [("operator", operator.log()), ("apiserver", apiserver.log())] {
        let lower = log.to_lowercase();
        assert!(
            !lower.contains("forbidden")
                && !lower.contains(" 403")
                && !lower
                    .lines()
                    .any(|l| l.contains("reconcile failed") && l.contains("target workload")),
            "{name} hit a permission error:\n{log}"
        );
    }

    // Control: the same operator under a release whose ClusterRole lacks the target rules
    // cannot scale its target, so the check above is meaningful.
    drop(operator);
    let norbac = d.join("norbac-values.yaml");
    std::fs::write(
        &norbac,
        "fullnameOverride: berth-operator-norbac\nrbac:\n  targets: []\n",
    )
    .unwrap();
    let docs = render(
        &py,
        "berth-operator",
        &[file("berth-operator", "ha"), norbac],
        &[],
    );
    cluster::apply(&c, &docs, false).await;
    cluster::service_account_kubeconfig(
        &c,
        "berth-system",
        "berth-operator-norbac",
        &d.join("norbac.kubeconfig"),
    )
    .await;
    let mut args2 = cluster::local_args(
        &args(container(&docs, "operator")),
        &[
            ("--berth-api-server", format!("https://127.0.0.1:{port}")),
            ("--berth-api-key-file", p("api-key")),
            ("--berth-ca-bundle-file", p("ca.crt")),
            (
                "--metrics-bind-address",
                format!("127.0.0.1:{}", cluster::free_port()),
            ),
            (
                "--health-probe-bind-address",
                format!("127.0.0.1:{}", cluster::free_port()),
            ),
            ("--log-format", "text".to_owned()),
        ],
    );
    args2.push(format!("--kubeconfig={}", p("norbac.kubeconfig")));
    let restricted = cluster::Proc::spawn(&bin("berth-operator"), &args2, d.join("norbac.log"));
    let mut dep2 = dep.clone();
    dep2.metadata.name = Some("ingest-worker-2".into());
    deployments
        .create(&PostParams::default(), &dep2)
        .await
        .unwrap();
    let mut bl2 = bl.clone();
    bl2.metadata.name = Some("ingest-worker-2".into());
    bl2.data["spec"]["leaseName"] = json!("ingest-worker-2");
    bl2.data["spec"]["target"]["name"] = json!("ingest-worker-2");
    bls.create(&PostParams::default(), &bl2).await.unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let replicas = deployments
            .get("ingest-worker-2")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas);
        assert_eq!(
            replicas,
            Some(0),
            "scaled without target RBAC:\n{}",
            restricted.log()
        );
        if restricted.log().lines().any(|l| {
            l.contains("reconcile failed")
                && l.contains("name=ingest-worker-2")
                && l.contains("target workload")
        }) {
            break;
        }
        assert!(
            Instant::now() < end,
            "no permission error without target RBAC:\n{}",
            restricted.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let line = restricted
        .log()
        .lines()
        .find(|l| l.contains("reconcile failed") && l.contains("name=ingest-worker-2"))
        .map(str::to_owned);
    println!("without target RBAC the operator reports: {line:?}");
}
