//! `berth-operator`: reconciles `BerthLease` resources (`berth.skaphos.io/v1alpha1`). For each
//! one it holds the central Berth lease under the cluster's identity, heartbeats it, and
//! activates or stops the target workload (scale subresource or `spec.suspend`) so that only
//! the cluster holding the lease runs it.
//!
//! Modules: [`crd`] (types and CRD generation), [`decision`] (pure timing and action logic),
//! [`target`] (scale/suspend through the Kubernetes API), [`controller`] (the reconcile loop
//! and the graceful handover), [`metrics`], [`admin`] (metrics and health listeners),
//! [`leader`] (leader election) and [`args`] (flags and `run`).
#![deny(missing_docs)]

pub mod admin;
pub mod args;
pub mod clock;
pub mod controller;
pub mod crd;
pub mod decision;
pub mod leader;
pub mod metrics;
pub mod target;
pub mod telemetry;
