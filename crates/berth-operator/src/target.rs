//! Target workloads: resolving `apiVersion`/`kind` through discovery, applying a [`Step`]
//! (scale subresource or `spec.suspend`) without no-op writes, stamping the fencing token, and
//! checking whether a stopped target is really stopped.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::crd::{FENCING_TOKEN_ANNOTATION, FIELD_MANAGER, TargetRef};
use crate::decision::Step;

/// Errors of target handling.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The kind is not served by this cluster.
    #[error("{api_version} {kind} is not served by this cluster")]
    Unknown {
        /// Requested `apiVersion`.
        api_version: String,
        /// Requested kind.
        kind: String,
    },
    /// The kind has no scale subresource but a scale action was asked for.
    #[error("{kind} has no scale subresource")]
    NoScale {
        /// Kind.
        kind: String,
    },
    /// The Kubernetes API failed.
    #[error("kubernetes api call failed")]
    Kube(#[from] kube::Error),
}

/// Result of [`Targets::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The target does not exist (nothing to do; checked again next heartbeat).
    Missing,
    /// Already in the wanted state; nothing written.
    Unchanged,
    /// A write was made.
    Changed,
}

#[derive(Debug, Clone)]
struct Resolved {
    resource: ApiResource,
    scale: bool,
}

/// Target access with a discovery cache.
pub struct Targets {
    client: kube::Client,
    cache: Mutex<HashMap<(String, String), Resolved>>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets").finish_non_exhaustive()
    }
}

impl Targets {
    /// Target access over `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve(&self, target: &TargetRef) -> Result<Resolved, TargetError> {
        let key = (target.api_version.clone(), target.kind.clone());
        if let Some(r) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(r.clone());
        }
        let (group, version) = match target.api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), target.api_version.clone()),
        };
        let mut candidates = vec![version.clone()];
        // CronJob is batch/v1beta1 up to Kubernetes 1.20 and batch/v1 from 1.21 on; a manifest
        // written for either works on both.
        if group == "batch" && target.kind == "CronJob" {
            for v in ["v1", "v1beta1"] {
                if v != version {
                    candidates.push(v.to_owned());
                }
            }
        }
        let mut last_err = None;
        for v in candidates {
            let gvk = GroupVersionKind::gvk(&group, &v, &target.kind);
            match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok((resource, caps)) => {
                    let scale = caps.subresources.iter().any(|(r, _)| r.plural == "scale")
                        || matches!(
                            (group.as_str(), target.kind.as_str()),
                            ("apps", "Deployment" | "StatefulSet" | "ReplicaSet")
                        );
                    let resolved = Resolved { resource, scale };
                    self.cache
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key, resolved.clone());
                    return Ok(resolved);
                }
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(kube::Error::Api(s)) if s.code == 404 => Err(TargetError::Unknown {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
            }),
            Some(kube::Error::Discovery(_)) | None => Err(TargetError::Unknown {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
            }),
            Some(e) => Err(e.into()),
        }
    }

    fn api(&self, namespace: &str, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, resource)
    }

    /// Brings the target to `step`; with `token`, also stamps
    /// `berth.skaphos.io/fencing-token` (before the step, so the workload starts with it).
    /// Writes nothing when the target is already there.
    ///
    /// # Errors
    /// Discovery or API failures.
    pub async fn apply(
        &self,
        namespace: &str,
        target: &TargetRef,
        step: Step,
        token: Option<i64>,
    ) -> Result<Applied, TargetError> {
        let resolved = self.resolve(target).await?;
        let api = self.api(namespace, &resolved.resource);
        let Some(obj) = api.get_opt(&target.name).await? else {
            return Ok(Applied::Missing);
        };
        let pp = merge_params();
        let mut changed = false;
        if let Some(token) = token {
            let want = token.to_string();
            let have = obj
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FENCING_TOKEN_ANNOTATION));
            if have != Some(&want) {
                let patch = json!({"metadata": {"annotations": {FENCING_TOKEN_ANNOTATION: want}}});
                api.patch(&target.name, &pp, &Patch::Merge(&patch)).await?;
                changed = true;
            }
        }
        match step {
            Step::Scale(replicas) => {
                if !resolved.scale {
                    return Err(TargetError::NoScale {
                        kind: target.kind.clone(),
                    });
                }
                let scale = api.get_scale(&target.name).await?;
                let have = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                if have != replicas {
                    let patch = json!({"spec": {"replicas": replicas}});
                    api.patch_scale(&target.name, &pp, &Patch::Merge(&patch))
                        .await?;
                    changed = true;
                }
            }
            Step::Suspend(suspend) => {
                let have = obj.data["spec"]["suspend"].as_bool().unwrap_or(false);
                if have != suspend {
                    let patch = json!({"spec": {"suspend": suspend}});
                    api.patch(&target.name, &pp, &Patch::Merge(&patch)).await?;
                    changed = true;
                }
            }
        }
        Ok(if changed {
            Applied::Changed
        } else {
            Applied::Unchanged
        })
    }

    /// Whether the target is observed stopped: no replicas left (scale) or no active runs
    /// (suspend on CronJob/Job). A missing target counts as stopped.
    ///
    /// # Errors
    /// Discovery or API failures.
    pub async fn is_stopped(
        &self,
        namespace: &str,
        target: &TargetRef,
        step: Step,
    ) -> Result<bool, TargetError> {
        let resolved = self.resolve(target).await?;
        let api = self.api(namespace, &resolved.resource);
        let Some(obj) = api.get_opt(&target.name).await? else {
            return Ok(true);
        };
        Ok(match step {
            Step::Scale(want) => {
                let scale = api.get_scale(&target.name).await?;
                let spec = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
                let status = scale.status.map_or(0, |s| s.replicas);
                spec == want && status <= want
            }
            Step::Suspend(_) => {
                let active = &obj.data["status"]["active"];
                match active {
                    serde_json::Value::Array(a) => a.is_empty(),
                    serde_json::Value::Number(n) => n.as_i64() == Some(0),
                    _ => true,
                }
            }
        })
    }
}

/// Merge patches under the operator's field manager.
fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}
