//! Command-line definition of `berth`.

use std::{ffi::OsString, fmt, path::PathBuf, str::FromStr, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

/// Command-line client of the Berth lease API.
///
/// Connection settings come from flags, then `BERTH_*` environment variables, then the config
/// file (`--config`, or `./.berth-dev/config.json` as written by `berth-apiserver --dev`).
///
/// Exit codes: 0 success, 1 error, 2 usage, 3 lease held by someone else (denied acquire,
/// refused renew, release conflict, wait timed out), 4 `berth run` stopped the command because
/// the lease was lost or could not be renewed in time.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options shared by every command.
#[derive(Debug, clap::Args)]
pub(crate) struct GlobalArgs {
    /// API server URL, such as `https://berth.example.com:8443`.
    #[arg(long, global = true, env = "BERTH_SERVER")]
    pub(crate) server: Option<String>,

    /// Bearer token (prefer --token-file: a literal is visible in the process list). Give it
    /// before the subcommand; after `lease renew|release`, --token is the fencing token.
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// File holding the bearer token; re-read when it changes.
    #[arg(long, global = true, env = "BERTH_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// PEM bundle of CA certificates trusted in addition to the system roots.
    #[arg(long, global = true, env = "BERTH_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,

    /// Name to verify the server certificate against instead of the URL's host.
    #[arg(long, global = true, env = "BERTH_SERVER_NAME")]
    pub(crate) server_name: Option<String>,

    /// Limit for each request to the API server.
    #[arg(long, global = true, env = "BERTH_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub(crate) timeout: Duration,

    /// Output format.
    #[arg(short, long, global = true, env = "BERTH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,

    /// JSON config file with `server`, `caFile`, `token`, `tokenFile`, `serverName`
    /// [default: ./.berth-dev/config.json if it exists].
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Log filter for diagnostics on stderr (e.g. `warn`, `debug`).
    #[arg(long, global = true, env = "BERTH_LOG_LEVEL", default_value = "warn")]
    pub(crate) log_level: String,
}

/// Output format of API objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns for people.
    Table,
    /// The API object as JSON.
    Json,
    /// The API object as YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Acquire, renew, release, inspect and list leases.
    Lease {
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Run a command only while holding a lease: wait for it, renew it in the background, stop
    /// the command before the lease could expire, release it when the command exits.
    ///
    /// The command sees `BERTH_LEASE_KEY` (NAMESPACE/NAME), `BERTH_LEASE_HOLDER` and
    /// `BERTH_FENCING_TOKEN`. SIGINT and SIGTERM sent to `berth` are forwarded to it.
    ///
    /// Exit code: the command's (128+N if it died of signal N); 4 if it was stopped because the
    /// lease was lost or could not be renewed in time; 3 if --wait-timeout passed first.
    Run(RunArgs),
    /// Print the version of this binary.
    Version,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// Acquire a lease (exit 3 if someone else holds it).
    Acquire(AcquireArgs),
    /// Renew a held lease (exit 3 if it is no longer ours).
    Renew(RenewArgs),
    /// Release a held lease (exit 3 if someone else holds it).
    Release(ReleaseArgs),
    /// Show one lease.
    Get(GetArgs),
    /// List leases, in one namespace or all.
    List(ListArgs),
    /// Print lease changes as they happen (NAMESPACE or NAMESPACE/NAME).
    Watch(crate::watch::WatchArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct AcquireArgs {
    /// Lease as NAMESPACE/NAME.
    pub(crate) lease: LeaseRef,
    /// Holder identity.
    #[arg(long, env = "BERTH_HOLDER")]
    pub(crate) holder: String,
    /// Time to live: `30s`, `1m` or whole seconds.
    #[arg(long, env = "BERTH_TTL", default_value = "30s", value_parser = parse_ttl)]
    pub(crate) ttl: Duration,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

/// How to wait for a lease someone else holds.
#[derive(Debug, clap::Args)]
pub(crate) struct WaitArgs {
    /// Keep trying until the lease is granted.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Give up waiting after this long (exit 3).
    #[arg(long, env = "BERTH_WAIT_TIMEOUT", value_parser = parse_positive_duration)]
    pub(crate) wait_timeout: Option<Duration>,
    /// Delay between attempts while waiting.
    #[arg(long, env = "BERTH_POLL_INTERVAL", default_value = "2s", value_parser = parse_positive_duration)]
    pub(crate) poll_interval: Duration,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RenewArgs {
    /// Lease as NAMESPACE/NAME.
    pub(crate) lease: LeaseRef,
    /// Holder identity.
    #[arg(long, env = "BERTH_HOLDER")]
    pub(crate) holder: String,
    /// Fencing token returned by acquire.
    #[arg(long = "token", visible_alias = "fencing-token", value_name = "N")]
    pub(crate) fencing_token: i64,
    /// Time to live: `30s`, `1m` or whole seconds.
    #[arg(long, env = "BERTH_TTL", default_value = "30s", value_parser = parse_ttl)]
    pub(crate) ttl: Duration,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// Lease as NAMESPACE/NAME.
    pub(crate) lease: LeaseRef,
    /// Holder identity.
    #[arg(long, env = "BERTH_HOLDER")]
    pub(crate) holder: String,
    /// Fencing token returned by acquire.
    #[arg(long = "token", visible_alias = "fencing-token", value_name = "N")]
    pub(crate) fencing_token: i64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// Lease as NAMESPACE/NAME.
    pub(crate) lease: LeaseRef,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only this namespace [default: all namespaces].
    pub(crate) namespace: Option<String>,
    /// Only leases held by this holder.
    #[arg(long)]
    pub(crate) holder: Option<String>,
    /// Page size.
    #[arg(long)]
    pub(crate) limit: Option<u32>,
    /// Start from this continue token (printed on stderr when more pages exist).
    #[arg(long = "continue", value_name = "TOKEN", conflicts_with = "all_pages")]
    pub(crate) continue_token: Option<String>,
    /// Fetch every page.
    #[arg(long)]
    pub(crate) all_pages: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Lease as NAMESPACE/NAME.
    #[arg(long, env = "BERTH_LEASE")]
    pub(crate) lease: LeaseRef,
    /// Holder identity [default: this host's name].
    #[arg(long, env = "BERTH_HOLDER")]
    pub(crate) holder: Option<String>,
    /// Time to live of each grant: `30s`, `1m` or whole seconds.
    #[arg(long, env = "BERTH_TTL", default_value = "30s", value_parser = parse_ttl)]
    pub(crate) ttl: Duration,
    /// Interval between renewals [default: a third of the TTL].
    #[arg(long, env = "BERTH_RENEW_INTERVAL", value_parser = parse_positive_duration)]
    pub(crate) renew_interval: Option<Duration>,
    /// Send SIGTERM this long before the lease could expire, SIGKILL when it could; must be
    /// shorter than the TTL.
    #[arg(long, env = "BERTH_KILL_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub(crate) kill_grace: Duration,
    /// Give up waiting for the lease after this long (exit 3) [default: wait forever].
    #[arg(long, env = "BERTH_WAIT_TIMEOUT", value_parser = parse_positive_duration)]
    pub(crate) wait_timeout: Option<Duration>,
    /// Delay between acquire attempts while the lease is held elsewhere.
    #[arg(long, env = "BERTH_POLL_INTERVAL", default_value = "2s", value_parser = parse_positive_duration)]
    pub(crate) poll_interval: Duration,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub(crate) command: Vec<OsString>,
}

/// A lease key as `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl FromStr for LeaseRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
        }
    }
}

impl fmt::Display for LeaseRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `30s`, `1m`, `1m30s`, `250ms` or a bare number of seconds.
/// At most `i32::MAX` seconds, so deadlines computed from it never overflow.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?
        }
    };
    if d > Duration::from_secs(MAX_SECONDS) {
        return Err(format!("{s:?} is longer than {MAX_SECONDS} seconds"));
    }
    Ok(d)
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be positive".to_owned());
    }
    Ok(d)
}

/// Longest accepted duration: the wire's TTL is an int32 number of seconds (reference §2.9).
const MAX_SECONDS: u64 = i32::MAX as u64;

/// A TTL: positive, at most `i32::MAX` seconds, sent in whole seconds, so sub-second parts
/// round up.
pub(crate) fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(s)?;
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn ttl_accepts_units_and_bare_seconds() {
        assert_eq!(parse_ttl("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_ttl("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_ttl("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_ttl("1500ms").unwrap(), Duration::from_secs(2));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("soon").is_err());
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_ttl("2147483648").is_err());
        assert!(parse_ttl("100years").is_err());
        assert_eq!(
            parse_ttl("2147483647").unwrap(),
            Duration::from_secs(2_147_483_647)
        );
    }

    #[test]
    fn lease_refs_need_both_parts() {
        let r: LeaseRef = "team-a/db.primary".parse().unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("team-a", "db.primary")
        );
        assert_eq!(r.to_string(), "team-a/db.primary");
        for bad in ["db", "/db", "ns/", "a/b/c", ""] {
            assert!(bad.parse::<LeaseRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let args = Args::try_parse_from([
            "berth",
            "lease",
            "get",
            "ns/n",
            "--server",
            "https://x",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(args.global.server.as_deref(), Some("https://x"));
        assert_eq!(args.global.output, Output::Json);
    }

    #[test]
    fn bearer_token_and_fencing_token_do_not_clash() {
        let args = Args::try_parse_from([
            "berth", "--token", "secret", "lease", "renew", "ns/n", "--holder", "h", "--token", "7",
        ])
        .unwrap();
        assert_eq!(args.global.token.as_deref(), Some("secret"));
        let Command::Lease {
            command: LeaseCommand::Renew(renew),
        } = args.command
        else {
            panic!("renew expected")
        };
        assert_eq!(renew.fencing_token, 7);
        assert_eq!(renew.ttl, Duration::from_secs(30));
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let args = Args::try_parse_from([
            "berth", "run", "--lease", "ns/n", "--ttl", "3", "--", "sh", "-c", "exit 3",
        ])
        .unwrap();
        let Command::Run(run) = args.command else {
            panic!("run expected")
        };
        assert_eq!(run.command, vec!["sh", "-c", "exit 3"]);
        assert_eq!(run.kill_grace, Duration::from_secs(5));
        assert!(Args::try_parse_from(["berth", "run", "--lease", "ns/n"]).is_err());
    }
}
