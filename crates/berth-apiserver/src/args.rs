//! Command-line flags (reference §1.1) and [`Args::run`], which wires everything together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_core::TtlBounds;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::oidc::OidcArgs;
use crate::auth::{Authenticator, OidcAuthenticator, StaticKeys};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{StoreArgs, open_store, spawn_sweeper};
use crate::telemetry::LogFormat;
use crate::tls::TlsFiles;

/// `--auth-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// No authentication (only with `--dev` or `--allow-unauthenticated`).
    None,
    /// Bearer tokens checked against `--api-keys-file`.
    StaticKeys,
    /// Bearer tokens that are JWTs of the OpenID provider `--oidc-issuer-url`.
    Oidc,
}

/// The Berth lease API server.
#[derive(Debug, Parser)]
#[command(
    name = "berth-apiserver",
    version,
    about = "Berth HTTPS lease API server"
)]
pub struct Args {
    /// HTTPS listen address; `:PORT` means all interfaces [default: :8443, or 127.0.0.1:8443
    /// with --dev].
    #[arg(long, env = "BERTH_APISERVER_LISTEN_ADDR")]
    pub listen_addr: Option<String>,

    /// Plain-HTTP address of /metrics, /healthz and /readyz; empty disables [default: :8080,
    /// or 127.0.0.1:8080 with --dev].
    #[arg(long, env = "BERTH_APISERVER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// TLS certificate chain (PEM); reloaded when it changes. Required unless --dev.
    #[arg(long, env = "BERTH_APISERVER_TLS_CERT_FILE", conflicts_with = "dev")]
    pub tls_cert_file: Option<PathBuf>,

    /// TLS private key (PEM); reloaded when it changes. Required unless --dev.
    #[arg(long, env = "BERTH_APISERVER_TLS_KEY_FILE", conflicts_with = "dev")]
    pub tls_key_file: Option<PathBuf>,

    /// Store selection and backend flags.
    #[command(flatten)]
    pub store: StoreArgs,

    /// How callers authenticate [default: static-keys, or none with --dev].
    #[arg(long, value_enum, env = "BERTH_APISERVER_AUTH_MODE")]
    pub auth_mode: Option<AuthMode>,

    /// File of `<key-id>:<sha256-hex-of-token>` lines; reloaded on SIGHUP and on change.
    #[arg(long, env = "BERTH_APISERVER_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Allow --auth-mode none outside --dev.
    #[arg(long, env = "BERTH_APISERVER_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// OIDC flags (`--auth-mode oidc`).
    #[command(flatten)]
    pub oidc: OidcArgs,

    /// Smallest TTL a client may request.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, env = "BERTH_APISERVER_MIN_TTL")]
    pub min_ttl: Duration,

    /// Largest TTL a client may request.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "BERTH_APISERVER_MAX_TTL")]
    pub max_ttl: Duration,

    /// Log level or filter directives (`debug`, `info`, `warn`, `error`, `info,berth_core=debug`).
    #[arg(long, default_value = "info", env = "BERTH_APISERVER_LOG_LEVEL")]
    pub log_level: String,

    /// Log output format.
    #[arg(
        long,
        value_enum,
        default_value = "json",
        env = "BERTH_APISERVER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// How often expired leases are swept.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "BERTH_APISERVER_SWEEP_INTERVAL")]
    pub sweep_interval: Duration,

    /// How long a lease stays expired before the sweeper tombstones it.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "BERTH_APISERVER_SWEEP_GRACE")]
    pub sweep_grace: Duration,

    /// How long open connections may drain after SIGTERM/SIGINT.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "BERTH_APISERVER_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Duration,

    /// Local development: mem store, no auth, generated CA and certificate in --dev-dir.
    #[arg(long, env = "BERTH_APISERVER_DEV")]
    pub dev: bool,

    /// Where --dev keeps its CA, certificate and CLI config.
    #[arg(long, default_value = "./.berth-dev", env = "BERTH_APISERVER_DEV_DIR")]
    pub dev_dir: PathBuf,
}

/// Parses a listen address; `:PORT` means `0.0.0.0:PORT`.
///
/// # Errors
/// Unparsable or unresolvable addresses.
pub async fn resolve_addr(flag: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    tokio::net::lookup_host(&full)
        .await
        .with_context(|| format!("invalid {flag} {addr:?}"))?
        .next()
        .with_context(|| format!("invalid {flag} {addr:?}: no address"))
}

async fn bind(flag: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let sa = resolve_addr(flag, addr).await?;
    TcpListener::bind(sa)
        .await
        .with_context(|| format!("failed to bind {flag} {sa}"))
}

impl Args {
    /// Runs the server until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// Invalid flag combinations, unreadable files, bind failures, or a server failure.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            listen_addr,
            metrics_addr,
            tls_cert_file,
            tls_key_file,
            store,
            auth_mode,
            api_keys_file,
            allow_unauthenticated,
            oidc,
            min_ttl,
            max_ttl,
            log_level,
            log_format,
            sweep_interval,
            sweep_grace,
            shutdown_timeout,
            dev,
            dev_dir,
        } = self;
        crate::telemetry::init(&log_level, log_format)?;

        anyhow::ensure!(
            min_ttl >= Duration::from_secs(1),
            "--min-ttl must be at least 1s"
        );
        anyhow::ensure!(min_ttl <= max_ttl, "--min-ttl must not exceed --max-ttl");
        anyhow::ensure!(
            !sweep_interval.is_zero(),
            "--sweep-interval must be positive"
        );
        let auth_mode = auth_mode.unwrap_or(if dev {
            AuthMode::None
        } else {
            AuthMode::StaticKeys
        });
        if auth_mode == AuthMode::None && !dev && !allow_unauthenticated {
            anyhow::bail!("--auth-mode none requires --allow-unauthenticated (or --dev)");
        }
        anyhow::ensure!(
            auth_mode == AuthMode::Oidc || !oidc.any_set(),
            "--oidc-* flags require --auth-mode oidc"
        );
        let tls_files = if dev {
            None
        } else {
            let cert = tls_cert_file.context("--tls-cert-file must be set (or use --dev)")?;
            let key = tls_key_file.context("--tls-key-file must be set (or use --dev)")?;
            Some(TlsFiles { cert, key })
        };
        let auth = match auth_mode {
            AuthMode::None => {
                tracing::warn!(
                    "AUTHENTICATION IS DISABLED (--auth-mode none): anyone who can reach this server can take, renew and release any lease"
                );
                Authenticator::None
            }
            AuthMode::StaticKeys => {
                let path = api_keys_file
                    .context("--api-keys-file must be set with --auth-mode static-keys")?;
                Authenticator::StaticKeys(Arc::new(StaticKeys::load(path)?))
            }
            AuthMode::Oidc => {
                Authenticator::Oidc(Arc::new(OidcAuthenticator::init(oidc.config()?).await?))
            }
        };

        let (store, clock) = open_store(&store).await?;
        tracing::info!(
            backend = store.backend(),
            clock = clock.name(),
            "store opened"
        );
        let metrics = Arc::new(Metrics::new());
        let state = AppState::new(
            store,
            clock,
            TtlBounds {
                min: min_ttl,
                max: max_ttl,
            },
            auth.clone(),
            metrics.clone(),
        );

        let listen_addr =
            listen_addr.unwrap_or_else(|| if dev { "127.0.0.1:8443" } else { ":8443" }.to_owned());
        let metrics_addr =
            metrics_addr.unwrap_or_else(|| if dev { "127.0.0.1:8080" } else { ":8080" }.to_owned());
        let listener = bind("--listen-addr", &listen_addr).await?;
        let local = listener.local_addr().context("listener address")?;

        let (tls_files, dev_files) = match tls_files {
            Some(f) => (f, None),
            None => {
                let d = crate::dev::prepare(&dev_dir)?;
                d.write_config(local)?;
                (
                    TlsFiles {
                        cert: d.tls_cert.clone(),
                        key: d.tls_key.clone(),
                    },
                    Some(d),
                )
            }
        };
        let tls = tls_files.load()?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = vec![
            tls_files.spawn_reloader(tls.clone(), crate::tls::RELOAD_POLL, stop_rx.clone()),
            spawn_sweeper(
                state.leases.clone(),
                metrics.clone(),
                sweep_interval,
                sweep_grace,
                stop_rx.clone(),
            ),
        ];
        if let Authenticator::StaticKeys(keys) = &auth {
            tracing::info!(path = %keys.path().display(), keys = keys.len(), "api keys loaded");
            tasks.push(
                keys.clone()
                    .spawn_reloader(Duration::from_secs(1), stop_rx.clone()),
            );
        }

        let metrics_server = if metrics_addr.is_empty() {
            None
        } else {
            let l = bind("--metrics-addr", &metrics_addr).await?;
            let addr = l.local_addr().context("metrics listener address")?;
            tracing::info!(addr = %addr, "metrics listening");
            let app = crate::metrics_router(metrics.clone(), state.ready.clone());
            Some(tokio::spawn(crate::server::serve_plain(
                l,
                app,
                stop_rx.clone(),
                shutdown_timeout,
            )))
        };

        tracing::info!(addr = %local, "listening");
        if let Some(d) = &dev_files {
            eprintln!("{}", d.hint());
        }
        let hub = state.watch.clone();
        let app = crate::router(state);
        let https = tokio::spawn(crate::server::serve_https(
            listener,
            app,
            tls,
            crate::server::wait_shutdown(stop_rx.clone()),
            shutdown_timeout,
        ));

        let signal = crate::server::termination_signal();
        tokio::pin!(signal);
        let mut https = https;
        let result = tokio::select! {
            s = &mut signal => {
                let s = s?;
                tracing::info!(signal = s, "shutting down");
                hub.close();
                let _ = stop_tx.send(true);
                flatten(https.await)
            }
            r = &mut https => {
                let _ = stop_tx.send(true);
                flatten(r).and(Err(anyhow::anyhow!("https server stopped unexpectedly")))
            }
        };
        if let Some(m) = metrics_server {
            flatten(m.await)?;
        }
        for t in tasks {
            let _ = t.await;
        }
        tracing::info!("stopped");
        result
    }
}

fn flatten(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.context("server task failed")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreKind;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_and_env_names() {
        let a = Args::try_parse_from(["berth-apiserver"]).unwrap();
        assert_eq!(a.store.kind(), StoreKind::Mem);
        assert_eq!(a.min_ttl, Duration::from_secs(1));
        assert_eq!(a.max_ttl, Duration::from_secs(3600));
        assert_eq!(a.sweep_interval, Duration::from_secs(30));
        assert_eq!(a.sweep_grace, Duration::from_secs(300));
        assert_eq!(a.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.dev_dir, PathBuf::from("./.berth-dev"));
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let want = format!("BERTH_APISERVER_{}", id.to_uppercase());
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "flag {id}"
            );
        }
    }

    #[test]
    fn value_enums() {
        let a = Args::try_parse_from([
            "x",
            "--store-backend",
            "k8s",
            "--auth-mode",
            "none",
            "--log-format",
            "text",
            "--min-ttl",
            "5s",
            "--max-ttl",
            "2m",
        ])
        .unwrap();
        assert_eq!(a.store.kind(), StoreKind::K8s);
        assert_eq!(a.auth_mode, Some(AuthMode::None));
        assert_eq!(a.max_ttl, Duration::from_secs(120));
        assert!(Args::try_parse_from(["x", "--auth-mode", "bogus"]).is_err());
        assert!(Args::try_parse_from(["x", "--dev", "--tls-cert-file", "c"]).is_err());
    }

    #[tokio::test]
    async fn listen_addr_forms() {
        assert_eq!(
            resolve_addr("--listen-addr", ":8443").await.unwrap(),
            "0.0.0.0:8443".parse().unwrap()
        );
        assert_eq!(
            resolve_addr("--listen-addr", "127.0.0.1:0").await.unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            resolve_addr("--listen-addr", "[::1]:9").await.unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert!(resolve_addr("--listen-addr", "nonsense").await.is_err());
    }
}
