//! `berth-oidc-broker`: keeps a file holding a current OAuth2 access token for Berth clients.
//!
//! One loop (reference §5): fetch a token with the client-credentials grant from the issuer's
//! discovered `token_endpoint` (or `--oidc-token-url`); write the raw access token atomically
//! (temporary file in the same directory, mode 0600, rename) to `--output`; sleep until expiry
//! minus `--refresh-skew`, at least `--min-refresh-interval`. A failed fetch keeps the last good
//! file and retries with exponential backoff from `--min-refresh-interval`, capped at
//! `--max-retry-interval`. `/healthz`, `/readyz` (a valid, unexpired token was written) and
//! `/metrics` are served on `--admin-addr`. SIGTERM or SIGINT ends it with exit code 0.
//!
//! Consumers (`berth --token-file`, the operator's `--berth-api-key-file`) re-read the file
//! with a one-second cache, so a rotated token needs no restart.
#![deny(missing_docs)]

pub mod admin;
pub mod args;
pub mod output;
pub mod refresh;
pub mod token;

pub use args::{Args, Error};
