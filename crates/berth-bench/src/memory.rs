//! Memory: resident set size of a `berth-apiserver --dev` process (mem store) before and after
//! acquiring many leases over HTTPS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::http::https_client;
use crate::stats::row;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `berth-apiserver` next to this binary, or `explicit`.
fn apiserver_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe()?;
    let path = me.with_file_name("berth-apiserver");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release -p berth-apiserver`",
        path.display()
    );
    Ok(path)
}

pub(crate) async fn run(leases: usize, conns: usize, bin: Option<&Path>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dev_dir = tmp.path().join("dev");
    let port = free_port()?;
    let child = Command::new(apiserver_bin(bin)?)
        .args(["--dev", "--dev-dir"])
        .arg(&dev_dir)
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let _guard = Killed(child);
    let ca = dev_dir.join("ca.crt");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dev_dir.join("config.json").is_file()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "berth-apiserver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = if ca.is_file() { ca } else { find_ca(&dev_dir)? };
    let base = format!("https://localhost:{port}");
    // One request so the connection path is warm before the idle figure.
    let client = https_client(&ca)?;
    client.get(format!("{base}/healthz")).send().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kib(pid)?;

    let started = Instant::now();
    let per = leases.div_ceil(conns);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let client = https_client(&ca)?;
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c * per)..((c + 1) * per).min(leases) {
                let r = client
                    .post(format!(
                        "{base}/v1alpha1/namespaces/ns-{}/leases/lease-{i}/acquire",
                        i % 100
                    ))
                    .json(&serde_json::json!({"holder": format!("holder-{}", i % 1000), "ttlSeconds": 3600}))
                    .send()
                    .await?
                    .error_for_status()?;
                let _ = r.bytes().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full = rss_kib(pid)?;
    let per_lease = (full.saturating_sub(idle) * 1024) / u64::try_from(leases.max(1))?;
    eprintln!(
        "rss idle {idle} KiB, with {leases} leases {full} KiB ({per_lease} B/lease); {leases} acquires in {took:.1?}"
    );
    println!("## Memory: berth-apiserver --dev (mem store)\n");
    println!(
        "{}",
        row(&[
            "live leases".into(),
            "RSS".into(),
            "RSS idle".into(),
            "bytes per lease".into(),
            "acquires/s while filling".into(),
        ])
    );
    println!("|---|---|---|---|---|");
    #[allow(clippy::cast_precision_loss)]
    let rate = leases as f64 / took.as_secs_f64().max(1e-9);
    println!(
        "{}",
        row(&[
            leases.to_string(),
            format!("{:.1} MiB", full as f64 / 1024.0),
            format!("{:.1} MiB", idle as f64 / 1024.0),
            per_lease.to_string(),
            format!("{rate:.0}"),
        ])
    );
    println!();
    Ok(())
}

fn find_ca(dir: &Path) -> anyhow::Result<PathBuf> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("ca") && name.ends_with(".crt") {
            return Ok(p);
        }
    }
    anyhow::bail!("no CA certificate in {}", dir.display())
}
