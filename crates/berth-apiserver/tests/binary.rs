//! Runs the real `berth-apiserver` binary: `--dev` on free ports, TLS with the written CA,
//! `config.json`, a lease, metrics, SIGTERM → exit 0, and CA reuse across a restart.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-apiserver");

fn client_trusting(ca: &Path) -> reqwest::Client {
    client_trusting_with(ca, Some(Duration::from_secs(5)))
}

fn client_trusting_with(ca: &Path, timeout: Option<Duration>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut b = reqwest::Client::builder().tls_backend_preconfigured(config);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().unwrap()
}

struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Server {
    fn start(dev_dir: &Path) -> Self {
        Self::start_with(dev_dir, &[])
    }

    fn start_with(dev_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--dev", "--dev-dir"])
            .arg(dev_dir)
            .args([
                "--listen-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth-apiserver");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a JSON log line with this message and returns its `addr` field.
    fn addr_of(&mut self, message: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = self.log.iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == message).then(|| v["addr"].as_str().map(str::to_owned))?
            }) {
                return addr;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.log.push(l),
                Err(_) => panic!(
                    "no {message:?} log line; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "ok\n");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/healthz never answered over TLS");
}

#[tokio::test]
async fn dev_mode_binary_serves_and_exits_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dev_dir = tmp.path().join("dev");
    let mut server = Server::start(&dev_dir);
    let addr = server.addr_of("listening");
    let metrics_addr = server.addr_of("metrics listening");
    let port = addr.rsplit(':').next().unwrap().to_owned();

    let canonical = std::fs::canonicalize(&dev_dir).unwrap();
    let ca = canonical.join("ca.crt");
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(canonical.join(f).is_file(), "{f} written");
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(canonical.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config,
        json!({"server": format!("https://127.0.0.1:{port}"), "caFile": ca.display().to_string()})
    );

    let client = client_trusting(&ca);
    let base = config["server"].as_str().unwrap().to_owned();
    wait_healthy(&client, &base).await;
    let r = client
        .post(format!(
            "{base}/v1alpha1/namespaces/demo/leases/hello/acquire"
        ))
        .json(&json!({"holder": "me", "ttlSeconds": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["acquired"], true);
    assert_eq!(v["holder"], "me");

    let metrics = reqwest::Client::new()
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"berth_apiserver_lease_outcomes_total{outcome="acquired"} 1"#),
        "{metrics}"
    );

    let warned = server
        .log
        .iter()
        .any(|l| l.contains("AUTHENTICATION IS DISABLED"));
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(warned, "dev mode warns loudly about disabled auth");

    // A restart reuses the CA: the same client still trusts the server.
    let mut again = Server::start(&dev_dir);
    again.addr_of("listening");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(canonical.join("config.json")).unwrap())
            .unwrap();
    let base = config["server"].as_str().unwrap().to_owned();
    wait_healthy(&client_trusting(&ca), &base).await;
    assert!(again.terminate().success());
}

#[test]
fn refuses_to_start_without_tls_or_keys() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--listen-addr", "127.0.0.1:0", "--metrics-addr", ""])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--auth-mode", "none", "--allow-unauthenticated"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--tls-cert-file must be set"), "{err}");
    let (code, err) = run(&["--auth-mode", "none"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--auth-mode none requires --allow-unauthenticated"),
        "{err}"
    );
    let (code, err) = run(&[
        "--tls-cert-file",
        "/nonexistent",
        "--tls-key-file",
        "/nonexistent",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--api-keys-file must be set"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let dev_dir = tmp.path().join("dev").display().to_string();
    let (code, err) = run(&["--dev", "--store-backend", "sql", "--dev-dir", &dev_dir]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--sql-driver must be set with --store-backend sql"),
        "{err}"
    );
    // An unreachable database is one clear line and exit 1, without the password.
    let (code, err) = run(&[
        "--dev",
        "--dev-dir",
        &dev_dir,
        "--store-backend",
        "sql",
        "--sql-driver",
        "postgres",
        "--sql-dsn",
        "postgres://berth:hunter2@127.0.0.1:1/berth",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("failed to open the postgres store"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// An open watch must not hold a graceful shutdown until `--shutdown-timeout`: SIGTERM ends
/// the streams, and the server exits long before the 60 s drain bound (`terminate` gives up
/// after 15 s).
#[tokio::test]
async fn sigterm_ends_open_watch_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let dev_dir = tmp.path().join("dev");
    let mut server = Server::start_with(&dev_dir, &["--shutdown-timeout", "60s"]);
    let addr = server.addr_of("listening");
    let port = addr.rsplit(':').next().unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let ca = dev_dir.join("ca.crt");
    wait_healthy(&client_trusting(&ca), &base).await;
    let mut stream = client_trusting_with(&ca, None)
        .get(format!("{base}/v1alpha1/namespaces/demo/leases?watch=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream
        .chunk()
        .await
        .unwrap()
        .expect("the watch sends its initial events");
    assert!(
        String::from_utf8_lossy(&first).contains("synced"),
        "{first:?}"
    );
    let reader = tokio::spawn(async move {
        // Drain until the server ends the stream.
        while let Ok(Some(_)) = stream.chunk().await {}
    });
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the watch stream ended with the server")
        .unwrap();
}
