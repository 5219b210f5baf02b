//! The reconcile loop: one heartbeat (acquire-as-renew) per `BerthLease` per interval, the
//! local deadline on the monotonic clock, target activation and stopping, status, events and
//! the graceful handover on deletion or shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_client::ClientError;
use futures::StreamExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;

use crate::clock;
use crate::crd::{BerthLease, BerthLeaseStatus, FIELD_MANAGER, FINALIZER, Semantics};
use crate::decision::{self, Deadlines, Plan, Step, TargetDecision};
use crate::metrics::Metrics;
use crate::target::{Applied, TargetError, Targets};

/// Upper bound of one reconcile (a handover waits for the target to stop inside it).
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(90);
/// Poll interval while waiting for a target to stop or a successor to appear.
const HANDOVER_POLL: Duration = Duration::from_millis(250);
/// Upper bound of the wait for a target to be observed stopped during a handover.
pub const MAX_STOP_WAIT: Duration = Duration::from_secs(30);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes call failed.
    #[error("kubernetes api call failed")]
    Kube(#[from] kube::Error),
    /// A target could not be read or changed.
    #[error("target workload")]
    Target(#[from] TargetError),
    /// The Berth API server failed.
    #[error("berth api call failed")]
    Berth(#[from] ClientError),
    /// The resource has no namespace.
    #[error("BerthLease has no namespace")]
    NoNamespace,
    /// The reconcile ran out of time.
    #[error("reconcile timed out")]
    Timeout,
}

impl Error {
    /// Low-cardinality label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Target(_) => "target",
            Self::Berth(_) => "berth_api",
            Self::NoNamespace => "no_namespace",
            Self::Timeout => "timeout",
        }
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A grant this operator holds for one `BerthLease`.
#[derive(Debug, Clone)]
pub struct Holding {
    /// `BerthLease` namespace (also the lease namespace).
    pub namespace: String,
    /// `BerthLease` name.
    pub name: String,
    /// Central lease name.
    pub lease_name: String,
    /// Holder identity used.
    pub holder: String,
    /// Fencing token of the grant.
    pub token: i64,
    /// Local deadline and stop point.
    pub deadlines: Deadlines,
    /// Whether the target may be running under this grant.
    pub active: bool,
    /// The plan the grant was taken under.
    pub plan: Plan,
}

#[derive(Debug, Clone)]
struct ObjState {
    generation: Option<i64>,
    next_due: Instant,
    holding: Option<Holding>,
    lease_state: &'static str,
}

/// Shared state of the reconciler.
pub struct Context {
    /// Client of the tenant cluster.
    pub kube: kube::Client,
    /// Client of the Berth API server.
    pub berth: berth_client::Client,
    /// `--cluster-id`.
    pub cluster_id: Option<String>,
    /// Target access.
    pub targets: Targets,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    state: Mutex<HashMap<String, ObjState>>,
    /// uid → (namespace, BerthLease name, lease name), for waking standbys on watch events.
    index: Mutex<HashMap<String, (String, String, String)>>,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context over the two clients.
    pub fn new(
        kube: kube::Client,
        berth: berth_client::Client,
        cluster_id: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: cluster_id.clone(),
        };
        Self {
            recorder: Recorder::new(kube.clone(), reporter),
            targets: Targets::new(kube.clone()),
            kube,
            berth,
            cluster_id,
            metrics,
            state: Mutex::new(HashMap::new()),
            index: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ObjState>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, uid: &str) -> Option<ObjState> {
        self.lock().get(uid).cloned()
    }

    fn set(&self, uid: &str, st: ObjState) {
        let mut map = self.lock();
        map.insert(uid.to_owned(), st);
        let mut held = 0;
        let mut waiting = 0;
        let mut invalid = 0;
        for s in map.values() {
            match s.lease_state {
                "held" => held += 1,
                "invalid" => invalid += 1,
                _ => waiting += 1,
            }
        }
        drop(map);
        self.metrics.set_lease_states(&[
            ("held", held),
            ("waiting", waiting),
            ("invalid", invalid),
        ]);
    }

    fn index(&self, uid: &str, namespace: &str, name: &str, lease_name: &str) {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                uid.to_owned(),
                (namespace.to_owned(), name.to_owned(), lease_name.to_owned()),
            );
    }

    /// Standby `BerthLease`s waiting for the lease `namespace/lease_name`: made due at once and
    /// returned, so a release or expiry seen on the watch is acted on without waiting for the
    /// next retry.
    pub fn wake_standbys(&self, namespace: &str, lease_name: &str) -> Vec<ObjectRef<BerthLease>> {
        let matches: Vec<(String, String)> = self
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, (ns, _, l))| ns == namespace && l == lease_name)
            .map(|(uid, (_, name, _))| (uid.clone(), name.clone()))
            .collect();
        let now = Instant::now();
        let mut map = self.lock();
        matches
            .into_iter()
            .filter_map(|(uid, name)| {
                let st = map.get_mut(&uid)?;
                if st.holding.is_some() {
                    return None;
                }
                st.next_due = now;
                Some(ObjectRef::new(&name).within(namespace))
            })
            .collect()
    }

    fn forget(&self, uid: &str) {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
        let removed = self.lock().remove(uid);
        if let Some(st) = removed {
            self.metrics
                .leases
                .get_or_create(&crate::metrics::StateLabel {
                    state: st.lease_state.to_owned(),
                })
                .dec();
        }
    }

    /// Grants currently held.
    pub fn holdings(&self) -> Vec<Holding> {
        self.lock()
            .values()
            .filter_map(|s| s.holding.clone())
            .collect()
    }

    async fn event(&self, bl: &BerthLease, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &bl.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "failed to publish event");
        }
    }
}

fn has_finalizer(bl: &BerthLease) -> bool {
    bl.finalizers().iter().any(|f| f == FINALIZER)
}

async fn add_finalizer(api: &Api<BerthLease>, bl: &BerthLease) -> Result<()> {
    let mut finalizers = bl.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": bl.resource_version(),
    }});
    api.patch(&bl.name_any(), &pp(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn remove_finalizer(api: &Api<BerthLease>, bl: &BerthLease) -> Result<()> {
    let finalizers: Vec<_> = bl
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": bl.resource_version(),
    }});
    match api
        .patch(&bl.name_any(), &pp(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn pp() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

async fn write_status(api: &Api<BerthLease>, name: &str, status: &BerthLeaseStatus) -> Result<()> {
    let patch = json!({ "status": status });
    match api.patch_status(name, &pp(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Deleted under our feet: nothing left to describe.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Entry point for the controller: one reconcile with metrics and a time bound.
///
/// # Errors
/// Any [`Error`]; the controller requeues through [`error_policy`].
pub async fn reconcile(bl: Arc<BerthLease>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = match tokio::time::timeout(RECONCILE_TIMEOUT, reconcile_inner(&bl, &ctx)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout),
    };
    ctx.metrics
        .reconcile_duration
        .observe(start.elapsed().as_secs_f64());
    result
}

/// Counts the failure and retries soon.
pub fn error_policy(bl: Arc<BerthLease>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&crate::metrics::ErrorLabel {
            error: error.metric_label().to_owned(),
        })
        .inc();
    tracing::warn!(
        name = %bl.name_any(),
        namespace = ?bl.namespace(),
        error = %error_chain(error),
        "reconcile failed"
    );
    Action::requeue(Duration::from_secs(1))
}

/// An error and all its causes on one line (`target workload: kubernetes api call failed:
/// … forbidden …`), so a log line names the root cause, e.g. missing RBAC.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[allow(clippy::too_many_lines)]
async fn reconcile_inner(bl: &BerthLease, ctx: &Context) -> Result<Action> {
    let ns = bl.namespace().ok_or(Error::NoNamespace)?;
    let name = bl.name_any();
    let uid = bl.uid().unwrap_or_default();
    let api: Api<BerthLease> = Api::namespaced(ctx.kube.clone(), &ns);
    let generation = bl.metadata.generation;

    if bl.metadata.deletion_timestamp.is_some() {
        if !has_finalizer(bl) {
            ctx.forget(&uid);
            return Ok(Action::await_change());
        }
        let holding = ctx.get(&uid).and_then(|s| s.holding);
        let holding = holding.or_else(|| holding_from_status(bl, ctx));
        if let Some(h) = holding {
            handover(ctx, Some(bl), &h).await?;
        }
        remove_finalizer(&api, bl).await?;
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    if !has_finalizer(bl) {
        add_finalizer(&api, bl).await?;
    }
    ctx.index(&uid, &ns, &name, &bl.spec.lease_name);
    if ctx.shutting_down.load(Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let now = Instant::now();
    let prev = ctx.get(&uid);
    if let Some(p) = &prev
        && p.generation == generation
        && now < p.next_due
    {
        // Woken by a watch event (often our own status write) before the next heartbeat.
        return Ok(Action::requeue(p.next_due - now));
    }
    let mut holding = prev.and_then(|p| p.holding);
    let mut status = bl.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let now_s = clock::wall_now_rfc3339();

    let plan = match decision::plan(&bl.spec, ctx.cluster_id.as_deref()) {
        Ok(p) => p,
        Err(invalid) => {
            if let Some(h) = holding.take() {
                handover(ctx, None, &h).await?;
            }
            let changed = decision::set_condition(
                &mut status.conditions,
                "Acquired",
                false,
                "InvalidSpec",
                &invalid.0,
                &now_s,
                generation,
            );
            status.lease_state = Some("waiting".into());
            status.fencing_token = Some(0);
            write_status(&api, &name, &status).await?;
            if changed {
                ctx.event(bl, true, "InvalidSpec", invalid.0.clone()).await;
            }
            ctx.set(
                &uid,
                ObjState {
                    generation,
                    next_due: now + Duration::from_secs(3600),
                    holding: None,
                    lease_state: "invalid",
                },
            );
            return Ok(Action::await_change());
        }
    };

    // A changed lease name or identity: the old grant is no longer what the spec asks for.
    if let Some(h) = &holding
        && (h.lease_name != bl.spec.lease_name || h.holder != plan.holder)
    {
        handover(ctx, None, h).await?;
        holding = None;
    }

    // A different target: the old one must not keep running under this grant.
    if let Some(h) = holding.as_mut()
        && let Some(old) = &h.plan.target
        && plan.target.as_ref().map(|t| &t.target) != Some(&old.target)
    {
        if ctx.targets.apply(&ns, &old.target, old.stop, None).await? == Applied::Changed {
            ctx.metrics.target_write("stop");
            ctx.event(
                bl,
                false,
                "TargetStopped",
                format!(
                    "{} {} stopped: no longer the target",
                    old.target.kind, old.target.name
                ),
            )
            .await;
        }
        h.plan.target.clone_from(&plan.target);
    }

    // Fence first: past the stop point, no network call may delay stopping.
    if let Some(h) = holding.as_mut()
        && h.active
        && plan.semantics == Semantics::AtMostOnce
        && now >= h.deadlines.stop_at
    {
        fence(ctx, bl, &ns, h).await?;
    }

    let timing = plan.timing;
    let budget = match &holding {
        Some(h) if h.active && plan.semantics == Semantics::AtMostOnce => {
            timing.request_timeout().min(
                h.deadlines
                    .stop_at
                    .saturating_duration_since(Instant::now()),
            )
        }
        _ => timing.request_timeout(),
    };
    let sent = Instant::now();
    if let Some(h) = holding.as_mut() {
        h.deadlines = h.deadlines.cut_by_request(sent, &timing);
    }
    let answer = if budget.is_zero() {
        Err(None)
    } else {
        match tokio::time::timeout(
            budget,
            ctx.berth
                .acquire(&ns, &bl.spec.lease_name, &plan.holder, timing.ttl),
        )
        .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    };
    let took = sent.elapsed();

    match answer {
        Ok(resp) if resp.acquired && resp.fencing_token > 0 && resp.holder == plan.holder => {
            ctx.metrics.heartbeat("acquired", took);
            let d = decision::deadlines(sent, &timing, resp.ttl_remaining_millis);
            let now = Instant::now();
            let new_epoch = holding
                .as_ref()
                .is_none_or(|h| h.token != resp.fencing_token);
            let was_active = holding.as_ref().is_some_and(|h| h.active) && !new_epoch;
            let mut h = Holding {
                namespace: ns.clone(),
                name: name.clone(),
                lease_name: bl.spec.lease_name.clone(),
                holder: plan.holder.clone(),
                token: resp.fencing_token,
                deadlines: d,
                active: was_active,
                plan: plan.clone(),
            };
            if now >= d.stop_at {
                // The answer came too late to act on: treat as a failed heartbeat.
                ctx.metrics.heartbeat("late", took);
                if h.active && plan.semantics == Semantics::AtMostOnce {
                    fence(ctx, bl, &ns, &mut h).await?;
                }
                let next = timing.error_retry();
                ctx.set(
                    &uid,
                    ObjState {
                        generation,
                        next_due: now + next,
                        holding: Some(h),
                        lease_state: "held",
                    },
                );
                return Ok(Action::requeue(next));
            }

            let was_unhealthy = status
                .conditions
                .iter()
                .any(|c| c.type_ == "HeartbeatHealthy" && c.status == "False");
            let acquired_changed = decision::status_held(&mut status, &resp, &now_s, generation);
            // Ownership is recorded before the target is touched (reference §4.2).
            write_status(&api, &name, &status).await?;
            if new_epoch || acquired_changed {
                ctx.metrics.transition("acquired");
                ctx.event(
                    bl,
                    false,
                    "Acquired",
                    format!(
                        "lease {}/{} acquired by {} with fencing token {}",
                        ns, bl.spec.lease_name, plan.holder, resp.fencing_token
                    ),
                )
                .await;
            }
            if was_unhealthy && !new_epoch {
                ctx.event(
                    bl,
                    false,
                    "HeartbeatRecovered",
                    format!("renewed with fencing token {}", resp.fencing_token),
                )
                .await;
            }
            // From here on the target may run: the fence must know it even if a write fails.
            h.active = true;
            let next = decision::holder_requeue(now, &timing, d.stop_at);
            ctx.set(
                &uid,
                ObjState {
                    generation,
                    next_due: now + next,
                    holding: Some(h),
                    lease_state: "held",
                },
            );
            if let Some(tp) = &plan.target {
                let applied = ctx
                    .targets
                    .apply(&ns, &tp.target, tp.activate, Some(resp.fencing_token))
                    .await?;
                if applied == Applied::Changed {
                    ctx.metrics.target_write("activate");
                    ctx.event(
                        bl,
                        false,
                        "TargetActivated",
                        format!(
                            "{} {} set to {} (fencing token {})",
                            tp.target.kind,
                            tp.target.name,
                            describe(tp.activate),
                            resp.fencing_token
                        ),
                    )
                    .await;
                } else if applied == Applied::Missing && !was_active {
                    ctx.event(
                        bl,
                        true,
                        "TargetMissing",
                        format!("{} {} does not exist", tp.target.kind, tp.target.name),
                    )
                    .await;
                }
            }
            Ok(Action::requeue(next))
        }
        Ok(resp) => {
            // Denied (or an answer that does not name us): someone else holds the lease.
            ctx.metrics.heartbeat("held-by-other", took);
            let lost = holding.is_some();
            if let Some(tp) = &plan.target {
                let applied = ctx.targets.apply(&ns, &tp.target, tp.stop, None).await;
                if let Ok(Applied::Changed) = applied {
                    ctx.metrics.target_write("stop");
                    ctx.event(
                        bl,
                        lost,
                        "TargetStopped",
                        format!(
                            "{} {} set to {}: lease held by {:?}",
                            tp.target.kind,
                            tp.target.name,
                            describe(tp.stop),
                            resp.holder
                        ),
                    )
                    .await;
                }
                applied?;
            }
            let changed = decision::status_waiting(&mut status, &resp, &now_s, generation);
            write_status(&api, &name, &status).await?;
            if lost {
                ctx.metrics.transition("lost");
            }
            if changed {
                ctx.event(
                    bl,
                    lost,
                    if lost { "LeaseLost" } else { "Standby" },
                    format!("lease held by {:?}", resp.holder),
                )
                .await;
            }
            let next = timing.standby_retry();
            ctx.set(
                &uid,
                ObjState {
                    generation,
                    next_due: Instant::now() + next,
                    holding: None,
                    lease_state: "waiting",
                },
            );
            Ok(Action::requeue(next))
        }
        Err(e) => {
            let outcome = if e.is_some() { "error" } else { "timeout" };
            ctx.metrics.heartbeat(outcome, took);
            let reason = e.as_ref().map_or_else(
                || format!("no answer within {budget:?}"),
                |e| format!("{e}"),
            );
            let now = Instant::now();
            let active = holding.as_ref().is_some_and(|h| h.active);
            let past_stop = holding.as_ref().is_none_or(|h| now >= h.deadlines.stop_at);
            if decision::on_failure(plan.semantics, active, past_stop) == TargetDecision::Stop {
                if let Some(h) = holding.as_mut() {
                    fence(ctx, bl, &ns, h).await?;
                } else if let Some(tp) = &plan.target {
                    // Not holding anything known: under at-most-once nothing may run here.
                    if ctx.targets.apply(&ns, &tp.target, tp.stop, None).await? == Applied::Changed
                    {
                        ctx.metrics.target_write("stop");
                        ctx.event(
                            bl,
                            true,
                            "TargetStopped",
                            format!(
                                "{} {} set to {}: lease not held ({reason})",
                                tp.target.kind,
                                tp.target.name,
                                describe(tp.stop)
                            ),
                        )
                        .await;
                    }
                }
            }
            // Past the local deadline the grant is gone whatever the server says later.
            if holding
                .as_ref()
                .is_some_and(|h| now >= h.deadlines.deadline)
            {
                holding = None;
                status.lease_state = Some("waiting".into());
                status.fencing_token = Some(0);
                decision::set_condition(
                    &mut status.conditions,
                    "Acquired",
                    false,
                    "Stopped",
                    "local deadline passed without a successful heartbeat",
                    &now_s,
                    generation,
                );
            }
            let changed = decision::set_condition(
                &mut status.conditions,
                "HeartbeatHealthy",
                false,
                "AcquireFailed",
                &reason,
                &now_s,
                generation,
            );
            // Best effort: the tenant cluster may be fine while the Berth API is not.
            if let Err(e) = write_status(&api, &name, &status).await {
                tracing::warn!(error = %e, "failed to write status");
            }
            if changed {
                ctx.event(bl, true, "HeartbeatFailed", reason.clone()).await;
            }
            let next = match &holding {
                Some(h) if h.active => timing
                    .error_retry()
                    .min(h.deadlines.stop_at.saturating_duration_since(now))
                    .max(Duration::from_millis(50)),
                _ => timing.error_retry(),
            };
            let lease_state = if holding.is_some() { "held" } else { "waiting" };
            ctx.set(
                &uid,
                ObjState {
                    generation,
                    next_due: now + next,
                    holding,
                    lease_state,
                },
            );
            Ok(Action::requeue(next))
        }
    }
}

fn describe(step: Step) -> String {
    match step {
        Step::Scale(n) => format!("{n} replicas"),
        Step::Suspend(s) => format!("suspend={s}"),
    }
}

/// A grant described only by the status (e.g. after a restart): enough to release it.
fn holding_from_status(bl: &BerthLease, ctx: &Context) -> Option<Holding> {
    let status = bl.status.as_ref()?;
    let token = status.fencing_token.filter(|t| *t > 0)?;
    let plan = decision::plan(&bl.spec, ctx.cluster_id.as_deref()).ok()?;
    if status.current_holder.as_deref() != Some(plan.holder.as_str()) {
        return None;
    }
    let now = Instant::now();
    Some(Holding {
        namespace: bl.namespace()?,
        name: bl.name_any(),
        lease_name: bl.spec.lease_name.clone(),
        holder: plan.holder.clone(),
        token,
        deadlines: Deadlines {
            deadline: now,
            stop_at: now,
        },
        active: true,
        plan,
    })
}

/// Stops the target of a grant whose stop point has passed.
async fn fence(ctx: &Context, bl: &BerthLease, ns: &str, h: &mut Holding) -> Result<()> {
    if let Some(tp) = &h.plan.target {
        let applied = ctx.targets.apply(ns, &tp.target, tp.stop, None).await?;
        if applied == Applied::Changed {
            ctx.metrics.target_write("stop");
        }
        ctx.event(
            bl,
            true,
            "Fenced",
            format!(
                "{} {} set to {}: no successful heartbeat before the local deadline",
                tp.target.kind,
                tp.target.name,
                describe(tp.stop)
            ),
        )
        .await;
    }
    ctx.metrics.transition("fenced");
    h.active = false;
    Ok(())
}

/// Graceful handover of one grant: under `at-most-once` stop the target, wait until it is
/// observed stopped (bounded), then release; under `at-least-once` release first, keep the
/// target running until another holder is observed renewing after its acquisition (bounded),
/// then stop it.
///
/// # Errors
/// When the target cannot be stopped or the release fails for a reason other than a
/// conflict (someone else already holds the lease).
pub async fn handover(ctx: &Context, bl: Option<&BerthLease>, h: &Holding) -> Result<()> {
    let ns = h.namespace.as_str();
    let timing = h.plan.timing;
    let api: Api<BerthLease> = Api::namespaced(ctx.kube.clone(), ns);
    let start = Instant::now();
    if let Some(bl) = bl {
        let mut status = bl.status.clone().unwrap_or_default();
        status.lease_state = Some("stopping".into());
        decision::set_condition(
            &mut status.conditions,
            "Acquired",
            false,
            "Stopping",
            "stopping the target before releasing the lease",
            &clock::wall_now_rfc3339(),
            bl.metadata.generation,
        );
        if let Err(e) = write_status(&api, &h.name, &status).await {
            tracing::warn!(error = %e, "failed to write status");
        }
    }
    match h.plan.semantics {
        Semantics::AtMostOnce => {
            stop_and_confirm(ctx, ns, h).await?;
            release(ctx, h).await?;
        }
        Semantics::AtLeastOnce => {
            release(ctx, h).await?;
            // The successor activates its target in the reconcile that acquired the lease and
            // renews only in a later one, so a renewal after its acquisition proves its target
            // is up: only then may this one stop.
            let bound = Instant::now() + timing.ttl + timing.heartbeat * 2;
            while Instant::now() < bound {
                match ctx.berth.get(ns, &h.lease_name).await {
                    Ok(Some(s))
                        if !s.holder.is_empty()
                            && s.holder != h.holder
                            && s.renewed_at > s.acquired_at =>
                    {
                        break;
                    }
                    _ => tokio::time::sleep(HANDOVER_POLL).await,
                }
            }
            stop_and_confirm(ctx, ns, h).await?;
        }
    }
    ctx.metrics.transition("released");
    if let Some(bl) = bl {
        ctx.event(
            bl,
            false,
            "Released",
            format!(
                "target stopped and lease {}/{} released after {} ms",
                ns,
                h.lease_name,
                start.elapsed().as_millis()
            ),
        )
        .await;
    }
    tracing::info!(namespace = ns, lease = %h.lease_name, took_ms = start.elapsed().as_millis(), "handed over");
    Ok(())
}

async fn stop_and_confirm(ctx: &Context, ns: &str, h: &Holding) -> Result<()> {
    let Some(tp) = &h.plan.target else {
        return Ok(());
    };
    if ctx.targets.apply(ns, &tp.target, tp.stop, None).await? == Applied::Changed {
        ctx.metrics.target_write("stop");
    }
    let bound = Instant::now() + h.plan.timing.ttl.min(MAX_STOP_WAIT);
    loop {
        match ctx.targets.is_stopped(ns, &tp.target, tp.stop).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "failed to read the target while stopping"),
        }
        if Instant::now() >= bound {
            tracing::warn!(target = %tp.target.name, "target not observed stopped in time; releasing anyway");
            return Ok(());
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
}

async fn release(ctx: &Context, h: &Holding) -> Result<()> {
    release_until_answered(
        &ctx.berth,
        &h.namespace,
        &h.lease_name,
        &h.holder,
        h.token,
        h.plan.timing.ttl,
    )
    .await
    .map_err(Into::into)
}

/// Releases a grant. A release without an answer may still land later, and a late release
/// would end the grant this holder gets back if it acquires again while the old one is live
/// (after a restart, acquire by the same holder renews it): so a retryable failure is retried
/// (200 ms doubling to 2 s) until answered or until `ttl` has passed, by when the old grant
/// has expired and a new acquire would get a new token. A conflict (someone else holds the
/// lease) counts as done.
async fn release_until_answered(
    berth: &berth_client::Client,
    namespace: &str,
    lease: &str,
    holder: &str,
    token: i64,
    ttl: Duration,
) -> std::result::Result<(), ClientError> {
    let horizon = Instant::now() + ttl;
    let mut backoff = Duration::from_millis(200);
    loop {
        match berth.release(namespace, lease, holder, token).await {
            Ok(()) | Err(ClientError::Conflict { .. }) => return Ok(()),
            Err(e) if e.is_retryable() && Instant::now() + backoff < horizon => {
                tracing::warn!(error = %e, lease, "release failed; sending it again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the controller until `shutdown` resolves, then hands every held lease over.
///
/// # Errors
/// When the `BerthLease` CRD is not installed.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let api: Api<BerthLease> = Api::all(ctx.kube.clone());
    if let Err(e) = api.list(&kube::api::ListParams::default().limit(1)).await {
        anyhow::bail!(
            "BerthLease CRD is not served ({e}); install it with `berth-operator crd | kubectl apply -f -`"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ctx2 = ctx.clone();
    let trigger = async move {
        shutdown.await;
        ctx2.shutting_down.store(true, Ordering::SeqCst);
        let _ = stop_tx.send(());
    };
    let stopped = async move {
        let _ = stop_rx.await;
    };
    tokio::spawn(trigger);
    let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(watch_leases(ctx.clone(), wake_tx));
    let wakes =
        futures::stream::unfold(
            wake_rx,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    Controller::new(api, watcher::Config::default())
        .reconcile_on(wakes)
        .graceful_shutdown_on(stopped)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()))
        .await;
    watch.abort();
    shutdown_handover(&ctx).await;
    Ok(())
}

/// Follows the Berth API server's lease watch and wakes standbys when a lease they wait for is
/// released or expires (SPEC §6: react at once to a watch event, not only on the retry
/// cadence). The watch is an accelerator: the retry cadence alone is still correct.
async fn watch_leases(
    ctx: Arc<Context>,
    wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<BerthLease>>,
) {
    use berth_api::WatchEventType;
    let events = ctx.berth.watch_resuming(
        berth_client::WatchTarget::All,
        berth_client::WatchOptions::default(),
        Duration::from_secs(1),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(ev)
                if matches!(
                    ev.event_type,
                    WatchEventType::Released | WatchEventType::Expired
                ) =>
            {
                if let Some(lease) = ev.lease {
                    for r in ctx.wake_standbys(&lease.namespace, &lease.name) {
                        tracing::debug!(lease = %lease.name, berthlease = %r.name, "lease freed: waking standby");
                        if wake.send(r).is_err() {
                            return;
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "lease watch interrupted; resuming"),
        }
    }
}

/// Hands over every held lease (SIGTERM path), concurrently and bounded.
pub async fn shutdown_handover(ctx: &Context) {
    let holdings = ctx.holdings();
    if holdings.is_empty() {
        return;
    }
    tracing::info!(count = holdings.len(), "handing leases over before exit");
    let all = futures::future::join_all(holdings.iter().map(|h| async move {
        let api: Api<BerthLease> = Api::namespaced(ctx.kube.clone(), &h.namespace);
        let bl = api.get_opt(&h.name).await.ok().flatten();
        if let Err(e) = handover(ctx, bl.as_ref(), h).await {
            tracing::warn!(error = %e, lease = %h.lease_name, "handover failed");
        }
    }));
    if tokio::time::timeout(RECONCILE_TIMEOUT, all).await.is_err() {
        tracing::warn!("handover did not finish in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Berth API that answers `fails` releases with 503, then 204; counts them.
    async fn flaky_api(
        fails: usize,
    ) -> (berth_client::Client, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/v1alpha1/namespaces/{ns}/leases/{name}/release",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < fails {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = berth_client::Client::builder(format!("http://{addr}"))
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        (client, calls)
    }

    #[tokio::test]
    async fn an_unanswered_release_is_sent_again_until_answered() {
        let (c, calls) = flaky_api(2).await;
        release_until_answered(&c, "ns", "l", "east", 3, Duration::from_secs(10))
            .await
            .expect("answered on the third try");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn release_retries_stop_after_one_ttl() {
        let (c, calls) = flaky_api(usize::MAX).await;
        let e = release_until_answered(&c, "ns", "l", "east", 3, Duration::from_secs(1))
            .await
            .expect_err("never answered");
        assert_eq!(e.status(), Some(503));
        let n = calls.load(std::sync::atomic::Ordering::SeqCst);
        // 200 + 400 ms of backoff fit in the TTL, the next 800 ms would not (2 if the machine
        // is so slow that the second answer takes 200 ms).
        assert!((2..=3).contains(&n), "{n} attempts");
    }

    #[test]
    fn error_chain_names_the_root_cause() {
        let e = Error::Target(TargetError::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("deployments.apps \"x\" is forbidden", "Forbidden")
                .with_code(403),
        ))));
        let line = error_chain(&e);
        assert!(
            line.starts_with("target workload: kubernetes api call failed"),
            "{line}"
        );
        assert!(line.contains("forbidden"), "{line}");
    }
}
