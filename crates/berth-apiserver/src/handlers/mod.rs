//! HTTP handlers.

pub mod body;
pub mod health;
pub mod heartbeat;
pub mod history;
pub mod lease;
pub mod openapi;
pub mod params;
pub mod watch;
