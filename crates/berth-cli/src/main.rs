//! `berth`: command-line client of the Berth lease API. See `berth --help`.

mod app;
mod args;
mod config;
mod exit;
mod lease;
mod output;
mod run;
mod wait;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    berth_client::install_default_crypto_provider();
    let matches = args::Args::command().get_matches();
    let args = match args::Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    match app::run(args, &matches) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::code_for(&err)
        }
    }
}
