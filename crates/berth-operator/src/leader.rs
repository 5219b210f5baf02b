//! Leader election for several operator replicas in one tenant cluster (`--leader-elect`): a
//! `coordination.k8s.io/v1` Lease named `--leader-election-id`. Expiry of another replica's
//! claim is judged like client-go does, on this process's monotonic clock: a claim is stale
//! when its record has not changed for the lease duration, so the replicas' wall clocks never
//! need to agree.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::clock;

/// Leader election settings (reference §1.2 defaults: 15 s / 10 s / 2 s).
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Lease name.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a claim lasts without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before giving up leadership.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

/// A replica taking part in the election.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    observed: Option<(String, Instant)>,
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl LeaderElector {
    /// An elector over `client`.
    pub fn new(client: kube::Client, cfg: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    /// One attempt to take or renew the claim. `Ok(true)` when this replica leads.
    ///
    /// # Errors
    /// Kubernetes failures other than a lost race.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now_s = clock::wall_now_micro();
        let me = self.cfg.identity.clone();
        let Some(current) = self.api.get_opt(&self.cfg.name).await? else {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace},
                "spec": {
                    "holderIdentity": me,
                    "leaseDurationSeconds": duration_secs(self.cfg.lease_duration),
                    "acquireTime": now_s,
                    "renewTime": now_s,
                    "leaseTransitions": 0
                }
            }))
            .map_err(kube::Error::SerdeError)?;
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let now = Instant::now();
        match &self.observed {
            Some((seen, _)) if *seen == rv => {}
            _ => self.observed = Some((rv.clone(), now)),
        }
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| now.saturating_duration_since(*at));
        let ours = holder == me;
        let free = holder.is_empty();
        let stale = unchanged_for
            > Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
            );
        if !(ours || free || stale) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquire_time = if ours {
            json!(spec.acquire_time)
        } else {
            json!(now_s)
        };
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {
                "name": self.cfg.name,
                "namespace": self.cfg.namespace,
                "resourceVersion": rv
            },
            "spec": {
                "holderIdentity": me,
                "leaseDurationSeconds": duration_secs(self.cfg.lease_duration),
                "acquireTime": acquire_time,
                "renewTime": now_s,
                "leaseTransitions": transitions
            }
        }))
        .map_err(kube::Error::SerdeError)?;
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews until renewal has failed for the renew deadline; returns then (leadership
    /// lost).
    pub async fn hold(&mut self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    tracing::error!("leadership taken by another replica");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "leader lease renewal failed"),
            }
            if last_ok.elapsed() > self.cfg.renew_deadline {
                tracing::error!("leader lease not renewed within the renew deadline");
                return;
            }
        }
    }

    /// Gives the claim up so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        let mut lease = current;
        if let Some(s) = lease.spec.as_mut() {
            s.holder_identity = None;
            s.lease_duration_seconds = Some(1);
        }
        if let Err(e) = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "failed to release the leader lease");
        }
    }
}
