//! Berth's safety harness.
//!
//! - [`history`]: an invocation/completion history of lease operations and a per-key checker
//!   for Berth's promise: no two acknowledged grant windows of different tokens overlap,
//!   fencing tokens strictly increase and never go to two holders, and nothing acknowledged is
//!   lost.
//! - [`acting`]: acting logs of clients that follow their "safe until" deadline, and the check
//!   that two clients never act on one key at once.
//! - [`fence`]: a fencing-token demo resource that accepts a write only with a token at least
//!   as high as the highest it has seen.
//! - The run itself: [`harness`] (configuration, run, report) built on [`pki`], [`database`],
//!   [`replica`] (processes), [`proxy`] (fault-injecting TCP proxy), [`workload`] (clients)
//!   and [`nemesis`] (faults); [`pgserver`] is a private PostgreSQL server the nemesis can
//!   `kill -9`. The `berth-chaos` binary is a command line over [`harness`].
//! - [`berth_run`]: `berth run` clients under chaos (frozen process groups, a fenced
//!   resource the children write to); [`tier`]: the short test tier's skip rule.
//! - [`faketime`]: clock faults for replica processes with libfaketime.
#![deny(missing_docs)]

pub mod acting;
pub mod berth_run;
pub mod database;
pub mod faketime;
pub mod fence;
pub mod harness;
pub mod history;
pub mod linear;
pub mod nemesis;
pub mod pgserver;
pub mod pki;
pub mod proxy;
pub mod replica;
pub mod tier;
pub mod workload;
