//! Helpers of the short test tier: the skip-or-require rule and binary lookup.

use std::path::PathBuf;

use crate::harness;

/// Whether integration tests must fail instead of skipping (`BERTH_REQUIRE_INTEGRATION=1`).
pub fn integration_required() -> bool {
    std::env::var("BERTH_REQUIRE_INTEGRATION").as_deref() == Ok("1")
}

/// Prints `skipped: <test>: <why>`, or panics when integration tests are required.
///
/// # Panics
///
/// With `BERTH_REQUIRE_INTEGRATION=1`.
#[allow(clippy::print_stdout)]
pub fn skip(test: &str, why: &str) {
    assert!(
        !integration_required(),
        "{test}: {why} and BERTH_REQUIRE_INTEGRATION=1"
    );
    println!("skipped: {test}: {why}");
}

/// A non-empty environment variable, trimmed.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// An environment variable as a number.
pub fn env_u64(name: &str) -> Option<u64> {
    env_var(name).and_then(|v| v.parse().ok())
}

/// A workspace binary (`berth-apiserver`, `berth`) built next to the running test binary, or
/// `None` after [`skip`] (which panics when integration tests are required).
pub fn workspace_bin_or_skip(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    let found = harness::default_apiserver_bin()
        .map(|p| p.with_file_name(name))
        .filter(|p| p.is_file());
    if found.is_none() {
        skip(
            test,
            &format!("{name} is not built next to the test binary (cargo build -p {package})"),
        );
    }
    found
}

/// A custom store for [`harness::Config::custom_store`]: the k8s store on the cluster of
/// `kubeconfig`, Lease objects in `namespace` (which must exist).
pub fn k8s_store(kubeconfig: &std::path::Path, namespace: &str) -> (String, Vec<String>) {
    (
        "k8s".to_owned(),
        vec![
            "--store-backend".to_owned(),
            "k8s".to_owned(),
            "--coordination-kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
            "--coordination-namespace".to_owned(),
            namespace.to_owned(),
        ],
    )
}
