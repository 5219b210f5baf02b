//! Command-line flags (reference §1.2) and [`Args::run`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_client::{FileToken, StaticToken};
use clap::{Parser, Subcommand};

use crate::admin::{self, Readiness};
use crate::controller::{self, Context};
use crate::leader::{LeaderConfig, LeaderElector};
use crate::metrics::Metrics;
use crate::telemetry::{self, LogFormat};

/// The Berth operator.
#[derive(Debug, Parser)]
#[command(
    name = "berth-operator",
    version,
    about = "Reconciles BerthLease resources against a Berth API server",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Subcommand; without one the operator runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// URL of the Berth API server (`https://host:port`). Required.
    #[arg(long, env = "BERTH_OPERATOR_BERTH_API_SERVER")]
    pub berth_api_server: Option<String>,

    /// Bearer token for the Berth API server; prefer --berth-api-key-file (a literal is
    /// visible in the process list).
    #[arg(
        long,
        env = "BERTH_OPERATOR_BERTH_API_KEY",
        hide_env_values = true,
        conflicts_with = "berth_api_key_file"
    )]
    pub berth_api_key: Option<String>,

    /// File holding the bearer token; re-read with a 1 s cache, so a rotating token file (the
    /// OIDC broker's) works.
    #[arg(long, env = "BERTH_OPERATOR_BERTH_API_KEY_FILE")]
    pub berth_api_key_file: Option<PathBuf>,

    /// Holder identity for every lease (overrides spec.holderIdentity).
    #[arg(long, env = "BERTH_OPERATOR_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// PEM bundle trusted in addition to the system roots.
    #[arg(long, env = "BERTH_OPERATOR_BERTH_CA_BUNDLE_FILE")]
    pub berth_ca_bundle_file: Option<PathBuf>,

    /// Name the server certificate is verified against [default: the URL's host].
    #[arg(long, env = "BERTH_OPERATOR_BERTH_SERVER_NAME")]
    pub berth_server_name: Option<String>,

    /// Plain-HTTP address of /metrics; `0` disables.
    #[arg(
        long,
        default_value = ":8080",
        env = "BERTH_OPERATOR_METRICS_BIND_ADDRESS"
    )]
    pub metrics_bind_address: String,

    /// Address of /healthz and /readyz; `0` disables.
    #[arg(
        long,
        default_value = ":8081",
        env = "BERTH_OPERATOR_HEALTH_PROBE_BIND_ADDRESS"
    )]
    pub health_probe_bind_address: String,

    /// Elect one active replica through a Lease in the tenant cluster (required with more
    /// than one replica).
    #[arg(long, env = "BERTH_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        default_value = "berth-operator-leader",
        env = "BERTH_OPERATOR_LEADER_ELECTION_ID"
    )]
    pub leader_election_id: String,

    /// Namespace of the leader election Lease [default: $POD_NAMESPACE, else `default`].
    #[arg(long, env = "BERTH_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long a leader claim lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime_duration, env = "BERTH_OPERATOR_LEADER_ELECTION_LEASE_DURATION")]
    pub leader_election_lease_duration: Duration,

    /// How long the leader retries renewal before giving up.
    #[arg(long, default_value = "10s", value_parser = humantime_duration, env = "BERTH_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE")]
    pub leader_election_renew_deadline: Duration,

    /// Pause between leader election attempts.
    #[arg(long, default_value = "2s", value_parser = humantime_duration, env = "BERTH_OPERATOR_LEADER_ELECTION_RETRY_PERIOD")]
    pub leader_election_retry_period: Duration,

    /// Kubeconfig of the tenant cluster [default: $KUBECONFIG, ~/.kube/config or in-cluster].
    #[arg(long, env = "BERTH_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Log level or filter directives.
    #[arg(long, default_value = "info", env = "BERTH_OPERATOR_LOG_LEVEL")]
    pub log_level: String,

    /// Log output format.
    #[arg(
        long,
        value_enum,
        default_value = "json",
        env = "BERTH_OPERATOR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the BerthLease CustomResourceDefinition (YAML).
    Crd,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// Parses `500ms`, `2s`, `1m`, `1h` (one unit).
///
/// # Errors
/// Anything else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 15s, 500ms, 1m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("invalid duration {s:?} (e.g. 15s, 500ms, 1m)")),
    }
}

/// `:PORT` means all interfaces; `0` or empty disables.
fn listen_addr(flag: &str, value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let v = value.trim();
    if v.is_empty() || v == "0" {
        return Ok(None);
    }
    let full = if v.starts_with(':') {
        format!("0.0.0.0{v}")
    } else {
        v.to_owned()
    };
    full.parse()
        .map(Some)
        .with_context(|| format!("invalid {flag} {value:?}"))
}

impl Args {
    /// Runs the operator (or the subcommand) until SIGTERM/SIGINT.
    ///
    /// # Errors
    /// Invalid flags, unreachable clusters at start-up, a missing CRD, lost leadership.
    #[allow(clippy::too_many_lines)]
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            command,
            berth_api_server,
            berth_api_key,
            berth_api_key_file,
            cluster_id,
            berth_ca_bundle_file,
            berth_server_name,
            metrics_bind_address,
            health_probe_bind_address,
            leader_elect,
            leader_election_id,
            leader_election_namespace,
            leader_election_lease_duration,
            leader_election_renew_deadline,
            leader_election_retry_period,
            kubeconfig,
            log_level,
            log_format,
        } = self;
        if let Some(Command::Crd) = command {
            print!("{}", crate::crd::crd_yaml()?);
            return Ok(());
        }
        telemetry::init(&log_level, log_format)?;
        let server = berth_api_server.context("--berth-api-server must be set")?;
        let metrics_addr = listen_addr("--metrics-bind-address", &metrics_bind_address)?;
        let health_addr = listen_addr("--health-probe-bind-address", &health_probe_bind_address)?;
        anyhow::ensure!(
            leader_election_renew_deadline < leader_election_lease_duration,
            "--leader-election-renew-deadline must be less than --leader-election-lease-duration"
        );

        let mut builder = berth_client::Client::builder(&server)
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("berth-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &berth_ca_bundle_file {
            builder = builder.ca_file(ca);
        }
        if let Some(name) = &berth_server_name {
            builder = builder.server_name(name);
        }
        builder = match (berth_api_key, berth_api_key_file) {
            (Some(key), _) => {
                tracing::warn!(
                    "--berth-api-key is visible in the process list; prefer --berth-api-key-file"
                );
                builder.token_source(StaticToken::new(key))
            }
            (None, Some(path)) => builder.token_source(
                FileToken::new(&path)
                    .with_context(|| format!("--berth-api-key-file {}", path.display()))?,
            ),
            (None, None) => {
                tracing::warn!("no --berth-api-key-file: requests carry no bearer token");
                builder
            }
        };
        let berth = builder
            .build()
            .context("invalid Berth API client settings")?;

        let kube_config = match &kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("failed to read --kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .context("invalid --kubeconfig")?
            }
            None => kube::Config::infer()
                .await
                .context("no kubeconfig and not in a cluster")?,
        };
        let kube = kube::Client::try_from(kube_config).context("failed to build a kube client")?;

        let metrics = Arc::new(Metrics::new());
        let ready = Readiness::default();
        if let Some(addr) = metrics_addr {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to bind --metrics-bind-address {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics listener");
            admin::spawn_server(l, admin::metrics_router(metrics.clone()));
        }
        if let Some(addr) = health_addr {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to bind --health-probe-bind-address {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "health listener");
            admin::spawn_server(l, admin::health_router(ready.clone()));
        }
        admin::spawn_ready_probe(berth.clone(), ready, metrics.clone());

        let (sig_tx, sig_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            let _ = sig_tx.send(true);
        });
        let signalled = {
            let mut rx = sig_rx.clone();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        };

        let ctx = Arc::new(Context::new(kube.clone(), berth, cluster_id, metrics));
        if leader_elect {
            let namespace = leader_election_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".to_owned());
            let identity = std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map_or_else(|| "berth-operator".to_owned(), |h| h.trim().to_owned());
            let mut elector = LeaderElector::new(
                kube,
                LeaderConfig {
                    name: leader_election_id,
                    namespace,
                    identity: format!("{identity}_{}", std::process::id()),
                    lease_duration: leader_election_lease_duration,
                    renew_deadline: leader_election_renew_deadline,
                    retry_period: leader_election_retry_period,
                },
            );
            let mut rx = sig_rx.clone();
            tokio::select! {
                () = elector.acquire() => {}
                _ = rx.wait_for(|v| *v) => return Ok(()),
            }
            let result = tokio::select! {
                r = controller::run(ctx, signalled) => r,
                () = elector.hold() => Err(anyhow::anyhow!("lost leadership")),
            };
            elector.release().await;
            result
        } else {
            controller::run(ctx, signalled).await
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_and_defaults() {
        let a = Args::try_parse_from([
            "berth-operator",
            "--berth-api-server",
            "https://b:8443",
            "--cluster-id",
            "cluster-east",
            "--berth-api-key-file",
            "/t",
        ])
        .unwrap();
        assert_eq!(a.metrics_bind_address, ":8080");
        assert_eq!(a.health_probe_bind_address, ":8081");
        assert_eq!(a.leader_election_id, "berth-operator-leader");
        assert_eq!(a.leader_election_lease_duration, Duration::from_secs(15));
        assert!(!a.leader_elect);
        let err = Args::try_parse_from([
            "berth-operator",
            "--berth-api-key",
            "x",
            "--berth-api-key-file",
            "/t",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let a = Args::try_parse_from(["berth-operator", "crd"]).unwrap();
        assert!(matches!(a.command, Some(Command::Crd)));
    }

    #[test]
    fn durations_and_addresses() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(listen_addr("--x", "0").unwrap(), None);
        assert_eq!(
            listen_addr("--x", ":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert!(listen_addr("--x", "nope").is_err());
    }
}
