//! `berth-operator`: the Berth Kubernetes operator (`berth-operator crd` prints the CRD).

use std::process::ExitCode;

use berth_operator::args::Args;
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    // One crypto provider for every rustls user in the process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Args::parse().run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("berth-operator: {e:#}");
            ExitCode::from(1)
        }
    }
}
