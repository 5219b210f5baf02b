//! The `BerthLease` custom resource (`berth.skaphos.io/v1alpha1`), wire-compatible with the
//! original's CRD (reference §4.1), and the generation of its manifest.

use kube::CustomResource;
use kube::CustomResourceExt as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "berth.skaphos.io";
/// Finalizer that makes deletion wait for the graceful handover.
pub const FINALIZER: &str = "berth.skaphos.io/lease-release";
/// Annotation stamped on a target with the fencing token of the grant that activated it.
pub const FENCING_TOKEN_ANNOTATION: &str = "berth.skaphos.io/fencing-token";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "berth-operator";

/// Desired state of a `BerthLease`: which central lease to hold and what to do with the target
/// workload when the lease is won or lost.
#[allow(clippy::duplicated_attributes)] // several printcolumn(...) share key names
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "berth.skaphos.io",
    version = "v1alpha1",
    kind = "BerthLease",
    namespaced,
    status = "BerthLeaseStatus",
    shortname = "bl",
    printcolumn(name = "Holder", type_ = "string", json_path = ".status.currentHolder"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.leaseState"),
    printcolumn(name = "Token", type_ = "integer", json_path = ".status.fencingToken"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BerthLeaseSpec {
    /// Name of the central lease; its namespace is the namespace of this resource.
    #[schemars(length(min = 1, max = 253))]
    pub lease_name: String,
    /// Holder identity sent to the API server; `--cluster-id` overrides it.
    #[schemars(length(min = 1, max = 253))]
    pub holder_identity: String,
    /// Time to live of the central lease in seconds.
    #[schemars(range(min = 1))]
    pub ttl_seconds: i32,
    /// How often the holder renews, in seconds; must be below `ttlSeconds`.
    #[schemars(range(min = 1))]
    pub heartbeat_interval_seconds: i32,
    /// Whether a moment with two active targets (`at-least-once`) or with none
    /// (`at-most-once`) is the lesser evil.
    pub semantics: Semantics,
    /// Workload activated while the lease is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetRef>,
    /// What to do to the target when the lease is acquired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_action: Option<LeaseAction>,
    /// What to do to the target when the lease is lost or released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_action: Option<LeaseAction>,
}

/// `spec.semantics` (SPEC §2).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Semantics {
    /// Never two clusters active: the holder stops before its local deadline, a new holder
    /// starts only after acquiring.
    AtMostOnce,
    /// Never zero clusters active during a graceful handover: a new holder starts as soon as it
    /// acquires, the old one stops when it observes the loss.
    AtLeastOnce,
}

impl Semantics {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtMostOnce => "at-most-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// `spec.target`: the workload that runs only while the lease is held.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `apps/v1`, `batch/v1`, … (a CronJob given as `batch/v1` is also found on clusters that
    /// serve only `batch/v1beta1`).
    #[schemars(length(min = 1, max = 63))]
    pub api_version: String,
    /// `Deployment`, `StatefulSet`, `ReplicaSet`, `CronJob`, `Job` or a custom kind.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the object, in the namespace of the `BerthLease`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// `acquireAction` / `releaseAction`: at most one of `suspend` and `scale`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseAction {
    /// Set `spec.suspend` to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Scale the target through its scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleAction>,
}

/// `scale` action.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleAction {
    /// Desired `spec.replicas`.
    #[schemars(range(min = 0))]
    pub replicas: i32,
}

/// Observed state, written by the operator only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BerthLeaseStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// `held`, `waiting`, `stopping` or `released`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_state: Option<String>,
    /// Holder the API server reported last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_holder: Option<String>,
    /// Tenant of the holder (kept for compatibility; not populated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When the current holder acquired the lease (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub acquired_at: Option<String>,
    /// When the current grant expires unless renewed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    /// When this operator last renewed the lease successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_heartbeat: Option<String>,
    /// Fencing token of the grant this cluster holds; 0 while not holding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<i64>,
    /// `Acquired` and `HeartbeatHealthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Acquired` or `HeartbeatHealthy`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason in `PascalCase`.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD manifest as YAML, as checked in under `deploy/crds/`.
///
/// # Errors
/// When serialization fails, which does not happen for this type.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&BerthLease::crd())?;
    Ok(format!(
        "# Generated by `berth-operator crd`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example manifest of the product description (seed `000_…`), verbatim.
    pub(crate) const SEED_MANIFEST: &str = "apiVersion: berth.skaphos.io/v1alpha1
kind: BerthLease
metadata:
  name: ingest-worker
  namespace: pipeline
spec:
  leaseName: ingest-worker
  holderIdentity: fallback-holder
  ttlSeconds: 30
  heartbeatIntervalSeconds: 10
  semantics: at-most-once
  target:
    apiVersion: apps/v1
    kind: Deployment
    name: ingest-worker
  acquireAction:
    scale:
      replicas: 3
  releaseAction:
    scale:
      replicas: 0
";

    #[test]
    fn checked_in_crd_matches_the_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/crds/berthleases.berth.skaphos.io.yaml"
        );
        let on_disk = std::fs::read_to_string(path).expect("checked-in CRD");
        assert!(
            on_disk == crd_yaml().unwrap(),
            "{path} is out of date: run `cargo run -p berth-operator -- crd > {path}`"
        );
    }

    #[test]
    fn crd_has_status_subresource_and_printer_columns() {
        let crd = BerthLease::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("berthleases.berth.skaphos.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Holder", ".status.currentHolder"),
                ("State", ".status.leaseState"),
                ("Token", ".status.fencingToken"),
                ("Expires", ".status.expiresAt"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let mut required: Vec<_> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(
            required,
            [
                "heartbeatIntervalSeconds",
                "holderIdentity",
                "leaseName",
                "semantics",
                "ttlSeconds"
            ]
        );
        assert_eq!(
            spec["properties"]["semantics"]["enum"],
            serde_json::json!(["at-most-once", "at-least-once"])
        );
        assert_eq!(spec["properties"]["leaseName"]["maxLength"], 253);
        let conditions =
            &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
    }

    #[test]
    fn seed_manifest_parses_into_the_types() {
        let lease: BerthLease = serde_yaml::from_str(SEED_MANIFEST).unwrap();
        assert_eq!(lease.spec.lease_name, "ingest-worker");
        assert_eq!(lease.spec.semantics, Semantics::AtMostOnce);
        assert_eq!(lease.spec.target.as_ref().unwrap().kind, "Deployment");
        assert_eq!(
            lease.spec.acquire_action.as_ref().unwrap().scale,
            Some(ScaleAction { replicas: 3 })
        );
        // Round trip keeps the wire names.
        let back = serde_json::to_value(&lease.spec).unwrap();
        assert_eq!(back["heartbeatIntervalSeconds"], 10);
        assert_eq!(back["releaseAction"]["scale"]["replicas"], 0);
    }
}
