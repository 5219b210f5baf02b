//! `berth-oidc-broker`: OAuth2 client-credentials token refresher writing a token file.

use std::process::ExitCode;

use berth_oidc_broker::{Args, Error};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // One crypto provider for every rustls user in the process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Args::parse().run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match &e {
                Error::Config(_) => 2,
                Error::Other(_) => 1,
            };
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("berth-oidc-broker: {e:#}");
            ExitCode::from(code)
        }
    }
}
