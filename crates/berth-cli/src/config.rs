//! Connection settings: flags beat environment, which beats the config file.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use berth_client::{Client, FileToken};
use clap::{ArgMatches, parser::ValueSource};
use serde::Deserialize;

use crate::args::GlobalArgs;

/// Config file read when neither --config nor BERTH_CONFIG is set, if it exists.
pub(crate) const DEFAULT_CONFIG: &str = ".berth-dev/config.json";

/// The config file `berth-apiserver --dev` writes; unknown keys are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigFile {
    server: Option<String>,
    ca_file: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    server_name: Option<String>,
}

/// Where the bearer token comes from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Token {
    None,
    Literal(String),
    File(PathBuf),
}

/// Settings after merging flags, environment and config file.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) server: String,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) server_name: Option<String>,
    pub(crate) token: Token,
    pub(crate) timeout: Duration,
}

impl Connection {
    pub(crate) fn resolve(global: &GlobalArgs, matches: &ArgMatches) -> anyhow::Result<Self> {
        let (config, config_dir) = load_config(global.config.as_deref())?;
        let in_dir = |p: PathBuf| match &config_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        };

        let server =
            global.server.clone().or(config.server).context(
                "no API server: set --server, BERTH_SERVER or `server` in a config file",
            )?;

        // The token may be given literally or as a file at each level; the strongest level
        // wins, and both at the same level is ambiguous.
        let flag_level = |id: &str| match matches.value_source(id) {
            Some(ValueSource::CommandLine) => 2,
            Some(ValueSource::EnvVariable) => 1,
            _ => 0,
        };
        if flag_level("token") == 2 {
            eprintln!(
                "berth: warning: --token is visible in the process list; prefer --token-file or BERTH_TOKEN"
            );
        }
        let literal = global
            .token
            .clone()
            .map(|t| (flag_level("token"), Token::Literal(t)));
        let file = global
            .token_file
            .clone()
            .map(|f| (flag_level("token_file"), Token::File(f)));
        let token = match (literal, file) {
            (Some((a, _)), Some((b, _))) if a == b => {
                bail!(
                    "--token and --token-file (or BERTH_TOKEN and BERTH_TOKEN_FILE) are mutually exclusive"
                )
            }
            (Some((a, lit)), Some((b, f))) => {
                if a > b {
                    lit
                } else {
                    f
                }
            }
            (Some((_, t)), None) | (None, Some((_, t))) => t,
            (None, None) => match (config.token, config.token_file) {
                (Some(_), Some(_)) => bail!("config file sets both `token` and `tokenFile`"),
                (Some(t), None) => Token::Literal(t),
                (None, Some(f)) => Token::File(in_dir(f)),
                (None, None) => Token::None,
            },
        };

        Ok(Self {
            server,
            ca_file: global.ca_file.clone().or(config.ca_file.map(in_dir)),
            server_name: global.server_name.clone().or(config.server_name),
            token,
            timeout: global.timeout,
        })
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let mut builder = Client::builder(&self.server)
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(5)))
            .user_agent(format!(
                "berth/{} {}",
                env!("CARGO_PKG_VERSION"),
                berth_client::USER_AGENT
            ));
        if let Some(ca) = &self.ca_file {
            builder = builder.ca_file(ca);
        }
        if let Some(name) = &self.server_name {
            builder = builder.server_name(name);
        }
        builder = match &self.token {
            Token::None => builder,
            Token::Literal(t) => builder.bearer_token(t),
            Token::File(path) => builder.token_source(FileToken::new(path)?),
        };
        Ok(builder.build()?)
    }
}

/// Reads the explicit config file, or the default one if it exists. Returns the file's
/// directory too, for resolving relative paths in it.
fn load_config(explicit: Option<&Path>) -> anyhow::Result<(ConfigFile, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG);
            if !p.is_file() {
                return Ok((ConfigFile::default(), None));
            }
            p
        }
    };
    let raw = std::fs::read(&path)
        .with_context(|| format!("failed to read config file {}", path.display()))?;
    let config: ConfigFile = serde_json::from_slice(&raw)
        .with_context(|| format!("invalid config file {}", path.display()))?;
    let dir = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .map(Path::to_path_buf);
    Ok((config, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use clap::{CommandFactory, FromArgMatches};

    fn resolve(argv: &[&str]) -> anyhow::Result<Connection> {
        let matches = Args::command().try_get_matches_from(argv)?;
        let args = Args::from_arg_matches(&matches)?;
        Connection::resolve(&args.global, &matches)
    }

    #[test]
    fn config_file_fills_gaps_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(
            &cfg,
            r#"{"server":"https://127.0.0.1:9","caFile":"ca.crt","tokenFile":"tok","extra":1}"#,
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let conn = resolve(&["berth", "--config", c, "version"]).unwrap();
        assert_eq!(conn.server, "https://127.0.0.1:9");
        assert_eq!(conn.ca_file.unwrap(), dir.path().join("ca.crt"));
        assert_eq!(conn.token, Token::File(dir.path().join("tok")));

        // Flags beat the file.
        let conn = resolve(&[
            "berth",
            "--config",
            c,
            "--token",
            "lit",
            "version",
            "--server",
            "https://other",
            "--ca-file",
            "/abs/ca.pem",
        ])
        .unwrap();
        assert_eq!(conn.server, "https://other");
        assert_eq!(conn.ca_file.unwrap(), PathBuf::from("/abs/ca.pem"));
        assert_eq!(conn.token, Token::Literal("lit".into()));
    }

    #[test]
    fn both_token_kinds_on_the_command_line_are_rejected() {
        let err = resolve(&[
            "berth",
            "--server",
            "https://x",
            "--token",
            "a",
            "--token-file",
            "/t",
            "version",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("mutually exclusive"), "{err}");
    }

    #[test]
    fn missing_server_and_bad_config_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.json");
        std::fs::write(&cfg, "{}").unwrap();
        let err = resolve(&["berth", "--config", cfg.to_str().unwrap(), "version"]).unwrap_err();
        assert!(err.to_string().starts_with("no API server"), "{err}");
        std::fs::write(&cfg, "{not json").unwrap();
        let err = resolve(&["berth", "--config", cfg.to_str().unwrap(), "version"]).unwrap_err();
        assert!(err.to_string().starts_with("invalid config file"), "{err}");
        let err = resolve(&["berth", "--config", "/nonexistent.json", "version"]).unwrap_err();
        assert!(
            err.to_string().starts_with("failed to read config file"),
            "{err}"
        );
    }
}
