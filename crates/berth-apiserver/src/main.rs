//! `berth-apiserver`: the Berth HTTPS lease API server.

use std::process::ExitCode;

use berth_apiserver::args::Args;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // One crypto provider for every rustls user in the process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match args.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("berth-apiserver: {e:#}");
            ExitCode::from(1)
        }
    }
}
