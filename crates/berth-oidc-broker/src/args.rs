//! Command-line flags (reference §1.3) and [`Args::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use secrecy::SecretString;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::admin::Status;
use crate::refresh::Schedule;
use crate::token::{ClientSecret, TokenClient, TokenParams, discover_token_endpoint, http_client};

/// Why the broker stopped; `main` maps it to the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration (exit code 2).
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// Anything else, such as a token endpoint that cannot be resolved (exit code 1).
    #[error("{0:#}")]
    Other(anyhow::Error),
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// OAuth2 client-credentials token refresher for Berth clients.
#[derive(Debug, Parser)]
#[command(name = "berth-oidc-broker", version, about)]
#[allow(clippy::struct_excessive_bools)]
pub struct Args {
    /// OIDC issuer whose discovery document names the token endpoint; required unless
    /// --oidc-token-url is set.
    #[arg(long, env = "BERTH_OIDC_BROKER_OIDC_ISSUER_URL")]
    pub oidc_issuer_url: Option<String>,

    /// Token endpoint; overrides discovery.
    #[arg(long, env = "BERTH_OIDC_BROKER_OIDC_TOKEN_URL")]
    pub oidc_token_url: Option<String>,

    /// OAuth2 client id.
    #[arg(long, env = "BERTH_OIDC_BROKER_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,

    /// Client secret (visible in the process list: prefer --oidc-client-secret-file).
    #[arg(
        long,
        env = "BERTH_OIDC_BROKER_OIDC_CLIENT_SECRET",
        hide_env_values = true,
        conflicts_with = "oidc_client_secret_file"
    )]
    pub oidc_client_secret: Option<SecretString>,

    /// File holding the client secret (trimmed; re-read for every request).
    #[arg(long, env = "BERTH_OIDC_BROKER_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,

    /// Audience, sent as the `audience` form parameter.
    #[arg(long, env = "BERTH_OIDC_BROKER_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// Scopes to request, comma-separated.
    #[arg(long, env = "BERTH_OIDC_BROKER_OIDC_SCOPES", value_delimiter = ',')]
    pub oidc_scopes: Vec<String>,

    /// Extra PEM CA certificates trusted for the provider's HTTPS endpoints.
    #[arg(long, env = "BERTH_OIDC_BROKER_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,

    /// Token file to keep current (raw access token, mode 0600, replaced atomically).
    #[arg(long, env = "BERTH_OIDC_BROKER_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Refresh this long before the token expires.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "BERTH_OIDC_BROKER_REFRESH_SKEW")]
    pub refresh_skew: Duration,

    /// Shortest wait between refreshes; also the first retry delay.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "BERTH_OIDC_BROKER_MIN_REFRESH_INTERVAL")]
    pub min_refresh_interval: Duration,

    /// Timeout of one token request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "BERTH_OIDC_BROKER_FETCH_TIMEOUT")]
    pub fetch_timeout: Duration,

    /// Cap of the exponential retry backoff.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "BERTH_OIDC_BROKER_MAX_RETRY_INTERVAL")]
    pub max_retry_interval: Duration,

    /// Plain-HTTP address of /healthz, /readyz and /metrics; `:PORT` means all interfaces;
    /// empty disables.
    #[arg(long, default_value = ":8081", env = "BERTH_OIDC_BROKER_ADMIN_ADDR")]
    pub admin_addr: String,

    /// Log level or filter directives.
    #[arg(long, default_value = "info", env = "BERTH_OIDC_BROKER_LOG_LEVEL")]
    pub log_level: String,

    /// Log output format.
    #[arg(
        long,
        value_enum,
        default_value = "json",
        env = "BERTH_OIDC_BROKER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Where tokens come from.
enum Endpoint {
    /// `--oidc-token-url`.
    TokenUrl(String),
    /// Discovered from `--oidc-issuer-url`.
    Issuer(String),
}

/// The validated settings.
struct Config {
    endpoint: Endpoint,
    params: TokenParams,
    output: PathBuf,
    schedule: Schedule,
    ca_file: Option<PathBuf>,
    admin_addr: String,
}

impl Args {
    /// Runs the broker until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid flags (including an unreadable secret file);
    /// [`Error::Other`] when the token endpoint cannot be discovered or the admin port cannot
    /// be bound.
    pub async fn run(self) -> Result<(), Error> {
        init_logging(&self.log_level, self.log_format).map_err(Error::Config)?;
        let config = self.validate().map_err(Error::Config)?;
        let Config {
            endpoint,
            params,
            output,
            schedule,
            ca_file,
            admin_addr,
        } = config;
        let http = http_client(ca_file.as_deref()).map_err(Error::Config)?;
        let token_url = match endpoint {
            Endpoint::TokenUrl(url) => url,
            Endpoint::Issuer(issuer) => discover_token_endpoint(&http, &issuer, params.timeout)
                .await
                .context("cannot resolve the token endpoint")
                .map_err(Error::Other)?,
        };
        let status = Arc::new(Status::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin = if admin_addr.is_empty() {
            None
        } else {
            let listener = bind(&admin_addr).await.map_err(Error::Other)?;
            let addr = listener
                .local_addr()
                .context("admin address")
                .map_err(Error::Other)?;
            tracing::info!(addr = %addr, "admin listening");
            let app = crate::admin::router(status.clone());
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            }))
        };
        tracing::info!(
            token_url = %token_url,
            client_id = %params.client_id,
            output = %output.display(),
            "starting"
        );
        let client = TokenClient::new(http, token_url, params);
        let refresher = tokio::spawn(crate::refresh::run(
            client, output, schedule, status, stop_rx,
        ));
        let signal = termination_signal().await.map_err(Error::Other)?;
        tracing::info!(signal, "shutting down");
        let _ = stop_tx.send(true);
        let _ = refresher.await;
        if let Some(a) = admin {
            let _ = a.await;
        }
        Ok(())
    }

    fn validate(self) -> anyhow::Result<Config> {
        let Self {
            oidc_issuer_url,
            oidc_token_url,
            oidc_client_id,
            oidc_client_secret,
            oidc_client_secret_file,
            oidc_audience,
            oidc_scopes,
            oidc_ca_file,
            output,
            refresh_skew,
            min_refresh_interval,
            fetch_timeout,
            max_retry_interval,
            admin_addr,
            log_level: _,
            log_format: _,
        } = self;
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let endpoint = match (nonempty(oidc_token_url), nonempty(oidc_issuer_url)) {
            (Some(url), _) => Endpoint::TokenUrl(url),
            (None, Some(issuer)) => Endpoint::Issuer(issuer),
            (None, None) => {
                anyhow::bail!("--oidc-issuer-url must be set unless --oidc-token-url is")
            }
        };
        let client_id = nonempty(oidc_client_id).context("--oidc-client-id must be set")?;
        let secret = match (oidc_client_secret, oidc_client_secret_file) {
            (Some(s), None) => {
                tracing::warn!(
                    "--oidc-client-secret is visible in the process list and environment; prefer --oidc-client-secret-file"
                );
                ClientSecret::Literal(s)
            }
            (None, Some(path)) => {
                let s = ClientSecret::File(path);
                s.load()?; // fail at start-up, not at the first refresh
                s
            }
            (None, None) => anyhow::bail!(
                "exactly one of --oidc-client-secret or --oidc-client-secret-file must be set"
            ),
            (Some(_), Some(_)) => anyhow::bail!(
                "--oidc-client-secret and --oidc-client-secret-file are mutually exclusive"
            ),
        };
        let output = output.context("--output must be set")?;
        anyhow::ensure!(
            !min_refresh_interval.is_zero(),
            "--min-refresh-interval must be positive"
        );
        anyhow::ensure!(!fetch_timeout.is_zero(), "--fetch-timeout must be positive");
        anyhow::ensure!(
            max_retry_interval >= min_refresh_interval,
            "--max-retry-interval must be at least --min-refresh-interval"
        );
        let scopes: Vec<String> = oidc_scopes
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Config {
            endpoint,
            params: TokenParams {
                client_id,
                secret,
                audience: nonempty(oidc_audience),
                scopes,
                timeout: fetch_timeout,
            },
            output,
            schedule: Schedule {
                refresh_skew,
                min_refresh: min_refresh_interval,
                max_retry: max_retry_interval,
            },
            ca_file: oidc_ca_file,
            admin_addr,
        })
    }
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    tokio::net::TcpListener::bind(&full)
        .await
        .with_context(|| format!("failed to bind --admin-addr {addr}"))
}

async fn termination_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("failed to watch SIGINT")?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("failed to watch Ctrl-C")?;
        Ok("interrupt")
    }
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| anyhow::anyhow!("failed to install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_and_env_names() {
        let a = Args::try_parse_from(["b"]).unwrap();
        assert_eq!(a.refresh_skew, Duration::from_secs(60));
        assert_eq!(a.min_refresh_interval, Duration::from_secs(30));
        assert_eq!(a.fetch_timeout, Duration::from_secs(30));
        assert_eq!(a.max_retry_interval, Duration::from_secs(300));
        assert_eq!(a.admin_addr, ":8081");
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let want = format!("BERTH_OIDC_BROKER_{}", id.to_uppercase());
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "flag {id}"
            );
        }
    }

    fn parse(extra: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["b"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap().validate()
    }

    #[test]
    fn validation_names_the_flags() {
        let base = [
            "--oidc-token-url",
            "http://127.0.0.1:1/token",
            "--oidc-client-id",
            "c",
            "--oidc-client-secret",
            "s",
            "--output",
            "/tmp/t",
        ];
        let ok = parse(&base).unwrap();
        assert_eq!(ok.schedule.min_refresh, Duration::from_secs(30));
        let with_scopes = parse(&[&base[..], &["--oidc-scopes", "a, b,,c"]].concat()).unwrap();
        assert_eq!(with_scopes.params.scopes, ["a", "b", "c"]);
        for (args, want) in [
            (
                &base[2..],
                "--oidc-issuer-url must be set unless --oidc-token-url is",
            ),
            (
                &[
                    "--oidc-issuer-url",
                    "x",
                    "--oidc-client-secret",
                    "s",
                    "--output",
                    "o",
                ][..],
                "--oidc-client-id must be set",
            ),
            (
                &[
                    "--oidc-issuer-url",
                    "x",
                    "--oidc-client-id",
                    "c",
                    "--output",
                    "o",
                ][..],
                "exactly one of --oidc-client-secret or --oidc-client-secret-file",
            ),
            (&base[..6], "--output must be set"),
        ] {
            let e = format!("{:#}", parse(args).err().unwrap());
            assert!(e.contains(want), "{e}");
        }
        for (flag, value, want) in [
            (
                "--min-refresh-interval",
                "0s",
                "--min-refresh-interval must be positive",
            ),
            ("--fetch-timeout", "0s", "--fetch-timeout must be positive"),
            (
                "--max-retry-interval",
                "10s",
                "--max-retry-interval must be at least --min-refresh-interval",
            ),
        ] {
            let e = format!(
                "{:#}",
                parse(&[&base[..], &[flag, value]].concat()).err().unwrap()
            );
            assert!(e.contains(want), "{e}");
        }
        let e = format!(
            "{:#}",
            parse(
                &[
                    &base[..4],
                    &[
                        "--oidc-client-secret-file",
                        "/nonexistent/s",
                        "--output",
                        "o"
                    ]
                ]
                .concat()
            )
            .err()
            .unwrap()
        );
        assert!(
            e.contains("failed to read --oidc-client-secret-file"),
            "{e}"
        );
        // Literal and file together are rejected by clap itself.
        assert!(
            Args::try_parse_from([
                "b",
                "--oidc-client-secret",
                "s",
                "--oidc-client-secret-file",
                "f"
            ])
            .is_err()
        );
    }
}
