//! The Berth HTTPS lease API server.
//!
//! [`router::router`] builds the whole HTTP surface over an [`state::AppState`]; every lease rule
//! lives in [`berth_core::LeaseService`]. [`server::serve_https`] runs a router on an already
//! bound listener until a shutdown future resolves, so tests can run it on `127.0.0.1:0`.
//! [`args::Args::run`] wires flags, store, auth, TLS, metrics and signals together.
#![deny(missing_docs)]

pub mod args;
pub mod auth;
pub mod dev;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod observe;
pub mod ready;
pub mod router;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use error::ApiError;
pub use metrics::metrics_router;
pub use router::router;
pub use state::AppState;
