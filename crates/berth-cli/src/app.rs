//! Dispatch of the parsed command line.

use std::io::IsTerminal;

use crate::{args, config, exit, lease, run};

/// Runs one invocation; returns the exit code, or the error that ended it.
pub(crate) fn run(args: args::Args, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    let args::Args { global, command } = args;
    if let args::Command::Version = command {
        println!("berth {}", env!("CARGO_PKG_VERSION"));
        return Ok(exit::OK);
    }
    init_logging(&global.log_level);
    let connection = config::Connection::resolve(&global, matches)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("failed to start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = connection.client()?;
        match command {
            args::Command::Lease { command } => lease::run(&client, global.output, command)
                .await
                .map(|()| exit::OK),
            args::Command::Run(run_args) => run::run(&client, run_args).await,
            args::Command::Version => Ok(exit::OK),
        }
    })
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}
