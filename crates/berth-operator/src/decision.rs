//! Pure decision logic of the reconciler: spec validation, timing (deadlines, retry cadence),
//! which action a target needs, and condition bookkeeping. Nothing here touches the network or
//! a clock; callers pass instants and times in. `docs/adr/0006-operator-timing.md` explains
//! the numbers.

use std::time::{Duration, Instant};

use berth_api::LeaseResponse;

use crate::clock;
use crate::crd::{
    BerthLeaseSpec, BerthLeaseStatus, Condition, LeaseAction, ScaleAction, Semantics, TargetRef,
};

/// Longest single acquire/renew request (reference §4.2: `min(heartbeat, 2.5 s)`).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_millis(2500);
/// Longest pause between retries after an error.
pub const MAX_ERROR_RETRY: Duration = Duration::from_secs(1);
/// Smallest and largest time reserved for stopping the target before the local deadline.
pub const MIN_STOP_MARGIN: Duration = Duration::from_secs(1);
/// See [`MIN_STOP_MARGIN`].
pub const MAX_STOP_MARGIN: Duration = Duration::from_secs(10);

/// A spec the reconciler refuses, with the reason shown in the `Acquired` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// What the reconciler does with a validated spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Holder identity sent to the API server.
    pub holder: String,
    /// Lease timing.
    pub timing: Timing,
    /// Semantics.
    pub semantics: Semantics,
    /// Target and the two actions, when the resource drives a workload.
    pub target: Option<TargetPlan>,
}

/// Target and the action for each side of the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlan {
    /// The workload.
    pub target: TargetRef,
    /// Applied when the lease is held.
    pub activate: Step,
    /// Applied when it is not.
    pub stop: Step,
}

/// One concrete change to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Set `spec.replicas` through the scale subresource.
    Scale(i32),
    /// Set `spec.suspend`.
    Suspend(bool),
}

impl Step {
    fn from_action(action: &LeaseAction, which: &str) -> Result<Self, InvalidSpec> {
        match (action.suspend, &action.scale) {
            (Some(s), None) => Ok(Self::Suspend(s)),
            (None, Some(ScaleAction { replicas })) if *replicas >= 0 => Ok(Self::Scale(*replicas)),
            (None, Some(_)) => Err(InvalidSpec(format!(
                "{which}.scale.replicas must not be negative"
            ))),
            (Some(_), Some(_)) => Err(InvalidSpec(format!(
                "{which}: at most one of suspend or scale may be set"
            ))),
            (None, None) => Err(InvalidSpec(format!("{which} must set suspend or scale"))),
        }
    }

    /// Whether this step leaves the workload stopped.
    pub fn is_stop(self) -> bool {
        matches!(self, Self::Scale(0) | Self::Suspend(true))
    }
}

/// Validates `spec` and derives the plan. `cluster_id` (from `--cluster-id`) overrides
/// `spec.holderIdentity`.
///
/// # Errors
/// [`InvalidSpec`] naming the offending field.
pub fn plan(spec: &BerthLeaseSpec, cluster_id: Option<&str>) -> Result<Plan, InvalidSpec> {
    if spec.lease_name.is_empty() {
        return Err(InvalidSpec("spec.leaseName must not be empty".into()));
    }
    if !is_dns_subdomain(&spec.lease_name) {
        return Err(InvalidSpec(
            "spec.leaseName must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.')"
                .into(),
        ));
    }
    let holder = cluster_id
        .filter(|c| !c.is_empty())
        .unwrap_or(&spec.holder_identity)
        .to_owned();
    if holder.is_empty() {
        return Err(InvalidSpec("spec.holderIdentity must not be empty".into()));
    }
    if holder.len() > 253 {
        return Err(InvalidSpec(
            "holder identity must be at most 253 bytes".into(),
        ));
    }
    let timing = Timing::new(spec.ttl_seconds, spec.heartbeat_interval_seconds)?;
    let target = match (&spec.target, &spec.acquire_action, &spec.release_action) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err(InvalidSpec(
                "acquireAction and releaseAction need spec.target".into(),
            ));
        }
        (Some(_), None, _) => {
            return Err(InvalidSpec("spec.target needs an acquireAction".into()));
        }
        (Some(t), Some(acquire), release) => {
            if t.api_version.is_empty() || t.kind.is_empty() || t.name.is_empty() {
                return Err(InvalidSpec(
                    "spec.target needs apiVersion, kind and name".into(),
                ));
            }
            let activate = Step::from_action(acquire, "acquireAction")?;
            let stop = match release {
                Some(r) => Step::from_action(r, "releaseAction")?,
                // Without a releaseAction the natural opposite of the acquire action stops it.
                None => match activate {
                    Step::Scale(_) => Step::Scale(0),
                    Step::Suspend(_) => Step::Suspend(true),
                },
            };
            if std::mem::discriminant(&activate) != std::mem::discriminant(&stop) {
                return Err(InvalidSpec(
                    "acquireAction and releaseAction must both scale or both suspend".into(),
                ));
            }
            if !stop.is_stop() {
                return Err(InvalidSpec(
                    "releaseAction must stop the target (scale.replicas: 0 or suspend: true)"
                        .into(),
                ));
            }
            Some(TargetPlan {
                target: t.clone(),
                activate,
                stop,
            })
        }
    };
    Ok(Plan {
        holder,
        timing,
        semantics: spec.semantics,
        target,
    })
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// TTL and heartbeat of one `BerthLease`, and everything derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Lease time to live.
    pub ttl: Duration,
    /// Renewal interval of the holder.
    pub heartbeat: Duration,
}

impl Timing {
    /// Checks `0 < heartbeat < ttl`.
    ///
    /// # Errors
    /// [`InvalidSpec`] naming the field.
    pub fn new(ttl_seconds: i32, heartbeat_seconds: i32) -> Result<Self, InvalidSpec> {
        let ttl = u64::try_from(ttl_seconds)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| InvalidSpec("spec.ttlSeconds must be positive".into()))?;
        let hb = u64::try_from(heartbeat_seconds)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| InvalidSpec("spec.heartbeatIntervalSeconds must be positive".into()))?;
        if hb >= ttl {
            return Err(InvalidSpec(
                "spec.heartbeatIntervalSeconds must be less than spec.ttlSeconds".into(),
            ));
        }
        Ok(Self {
            ttl: Duration::from_secs(ttl),
            heartbeat: Duration::from_secs(hb),
        })
    }

    /// Bound of one acquire request: `min(heartbeat, 2.5 s)`.
    pub fn request_timeout(&self) -> Duration {
        self.heartbeat.min(MAX_REQUEST_TIMEOUT)
    }

    /// Time reserved before the local deadline to stop the target: `ttl / 4`, clamped to
    /// 1–10 s and never more than `ttl − heartbeat` (so a healthy holder is never fenced
    /// between two successful heartbeats).
    pub fn stop_margin(&self) -> Duration {
        (self.ttl / 4)
            .clamp(MIN_STOP_MARGIN, MAX_STOP_MARGIN)
            .min(self.ttl.saturating_sub(self.heartbeat))
    }

    /// How often a standby tries to acquire: `min(heartbeat, ttl / 3)` (reference §4.2).
    pub fn standby_retry(&self) -> Duration {
        self.heartbeat.min(self.ttl / 3)
    }

    /// Pause after a failed request: `min(heartbeat, 1 s)`.
    pub fn error_retry(&self) -> Duration {
        self.heartbeat.min(MAX_ERROR_RETRY)
    }

    /// Whether a holder survives `failures` consecutive failed heartbeats without fencing
    /// itself: each failure costs at most one request timeout plus one error retry, and the
    /// first one is noticed one heartbeat after the last success.
    pub fn tolerates_failures(&self, failures: u32) -> bool {
        let lost = self.heartbeat
            + (self.request_timeout() + self.error_retry()) * failures.saturating_sub(1)
            + self.request_timeout();
        lost < self.ttl.saturating_sub(self.stop_margin())
    }
}

/// The holder's view of one grant, on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Conservative local expiry: request *send* instant + min(ttl, server's remaining time).
    pub deadline: Instant,
    /// When the target must be stopped unless renewed: `deadline − stop_margin`.
    pub stop_at: Instant,
}

impl Deadlines {
    /// These deadlines cut to what a heartbeat sent at `sent` with `timing`'s TTL leaves
    /// standing. The server applies the TTL a heartbeat asks for as soon as it receives it,
    /// possibly before answering or without an answer ever arriving, so when the TTL was
    /// lowered (an edited `ttlSeconds`) the older, longer deadline is void from the send on.
    /// With an unchanged TTL this changes nothing.
    pub fn cut_by_request(self, sent: Instant, timing: &Timing) -> Self {
        let cap = deadlines(sent, timing, 0);
        Self {
            deadline: self.deadline.min(cap.deadline),
            stop_at: self.stop_at.min(cap.stop_at),
        }
    }
}

/// Deadlines of a grant whose request was sent at `sent`. `ttl_remaining_millis` is the
/// server's remaining time (0 or negative when the server did not send it, then `ttl` is used).
/// The deadline never exceeds `sent + ttl`, so a slow answer never extends it.
pub fn deadlines(sent: Instant, timing: &Timing, ttl_remaining_millis: i64) -> Deadlines {
    let remaining = u64::try_from(ttl_remaining_millis)
        .ok()
        .filter(|ms| *ms > 0)
        .map_or(timing.ttl, |ms| Duration::from_millis(ms).min(timing.ttl));
    let deadline = sent + remaining;
    let stop_at = deadline
        .checked_sub(timing.stop_margin())
        .unwrap_or(sent)
        .max(sent);
    Deadlines { deadline, stop_at }
}

/// When the next reconcile of a holder should run: the next heartbeat, or the stop point if
/// that comes first.
pub fn holder_requeue(now: Instant, timing: &Timing, stop_at: Instant) -> Duration {
    timing
        .heartbeat
        .min(stop_at.saturating_duration_since(now))
        .max(Duration::from_millis(50))
}

/// What an acquire answer or failure means for the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetDecision {
    /// Apply the acquire action (and stamp the token).
    Activate,
    /// Apply the release action.
    Stop,
    /// Leave the target as it is.
    Keep,
}

/// Decision after a failed heartbeat. `active` says whether this cluster has the target
/// running under a grant it held; `past_stop` whether the stop point has passed.
pub fn on_failure(semantics: Semantics, active: bool, past_stop: bool) -> TargetDecision {
    match (semantics, active) {
        // Not holding (e.g. just restarted): under at-most-once nothing may run here.
        (Semantics::AtMostOnce, false) => TargetDecision::Stop,
        (Semantics::AtMostOnce, true) if past_stop => TargetDecision::Stop,
        (Semantics::AtMostOnce, true) => TargetDecision::Keep,
        // at-least-once stops only when the loss is observed, never on silence.
        (Semantics::AtLeastOnce, _) => TargetDecision::Keep,
    }
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change. Returns
/// whether the status changed (a transition worth an Event).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
    generation: Option<i64>,
) -> bool {
    let status = if status { "True" } else { "False" };
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let changed = c.status != status || c.reason != reason;
        if c.status != status {
            c.last_transition_time = now.to_owned();
        }
        c.status = status.to_owned();
        reason.clone_into(&mut c.reason);
        message.clone_into(&mut c.message);
        c.observed_generation = generation;
        changed
    } else {
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: now.to_owned(),
            observed_generation: generation,
        });
        true
    }
}

/// Status of a holder after a successful heartbeat answered by `resp`. Returns whether the
/// `Acquired` condition changed (a transition).
pub fn status_held(
    status: &mut BerthLeaseStatus,
    resp: &LeaseResponse,
    now: &str,
    generation: Option<i64>,
) -> bool {
    status.observed_generation = generation;
    status.lease_state = Some("held".into());
    status.current_holder = Some(resp.holder.clone());
    status.fencing_token = Some(resp.fencing_token);
    status.acquired_at = resp.acquired_at.map(clock::rfc3339);
    status.expires_at = resp.expires_at.map(clock::rfc3339);
    status.last_heartbeat = Some(now.to_owned());
    let changed = set_condition(
        &mut status.conditions,
        "Acquired",
        true,
        "Held",
        &format!("lease held with fencing token {}", resp.fencing_token),
        now,
        generation,
    );
    set_condition(
        &mut status.conditions,
        "HeartbeatHealthy",
        true,
        "Heartbeating",
        "renewing the lease",
        now,
        generation,
    );
    changed
}

/// Status of a standby whose acquire was denied with `resp` (the current holder's data).
/// Returns whether the `Acquired` condition changed.
pub fn status_waiting(
    status: &mut BerthLeaseStatus,
    resp: &LeaseResponse,
    now: &str,
    generation: Option<i64>,
) -> bool {
    status.observed_generation = generation;
    status.lease_state = Some("waiting".into());
    status.current_holder = (!resp.holder.is_empty()).then(|| resp.holder.clone());
    status.fencing_token = Some(0);
    status.acquired_at = resp.acquired_at.map(clock::rfc3339);
    status.expires_at = resp.expires_at.map(clock::rfc3339);
    let changed = set_condition(
        &mut status.conditions,
        "Acquired",
        false,
        "HeldByOther",
        &format!("lease held by {:?}", resp.holder),
        now,
        generation,
    );
    set_condition(
        &mut status.conditions,
        "HeartbeatHealthy",
        true,
        "Standby",
        "monitoring for reacquire",
        now,
        generation,
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BerthLease, LeaseAction};

    fn mk_spec() -> BerthLeaseSpec {
        let lease: BerthLease = serde_yaml::from_str(crate::crd::tests::SEED_MANIFEST).unwrap();
        lease.spec
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn seed_spec_plans_a_scale_target() {
        let p = plan(&mk_spec(), Some("cluster-east")).unwrap();
        assert_eq!(p.holder, "cluster-east");
        assert_eq!(p.timing.ttl, secs(30));
        let t = p.target.unwrap();
        assert_eq!(t.activate, Step::Scale(3));
        assert_eq!(t.stop, Step::Scale(0));
        let p = plan(&mk_spec(), None).unwrap();
        assert_eq!(
            p.holder, "fallback-holder",
            "spec holder without --cluster-id"
        );
        assert_eq!(
            plan(&mk_spec(), Some("")).unwrap().holder,
            "fallback-holder"
        );
    }

    #[test]
    fn invalid_specs_name_the_field() {
        type Mutation = Box<dyn Fn(&mut BerthLeaseSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|s| s.ttl_seconds = 0),
                "spec.ttlSeconds must be positive",
            ),
            (
                Box::new(|s| s.heartbeat_interval_seconds = 30),
                "spec.heartbeatIntervalSeconds must be less than spec.ttlSeconds",
            ),
            (
                Box::new(|s| s.heartbeat_interval_seconds = -1),
                "spec.heartbeatIntervalSeconds must be positive",
            ),
            (
                Box::new(|s| s.lease_name = String::new()),
                "spec.leaseName must not be empty",
            ),
            (Box::new(|s| s.lease_name = "Upper".into()), "DNS-1123"),
            (
                Box::new(|s| s.acquire_action = None),
                "needs an acquireAction",
            ),
            (
                Box::new(|s| {
                    s.acquire_action = Some(LeaseAction {
                        suspend: Some(false),
                        scale: Some(ScaleAction { replicas: 1 }),
                    });
                }),
                "at most one of suspend or scale",
            ),
            (
                Box::new(|s| {
                    s.release_action = Some(LeaseAction {
                        suspend: Some(true),
                        scale: None,
                    });
                }),
                "both scale or both suspend",
            ),
            (
                Box::new(|s| {
                    s.release_action = Some(LeaseAction {
                        suspend: None,
                        scale: Some(ScaleAction { replicas: 1 }),
                    });
                }),
                "releaseAction must stop the target",
            ),
            (
                Box::new(|s| {
                    s.target = None;
                }),
                "need spec.target",
            ),
        ];
        for (mutate, want) in cases {
            let mut spec = mk_spec();
            mutate(&mut spec);
            let err = plan(&spec, None).unwrap_err();
            assert!(err.0.contains(want), "{err} should contain {want}");
        }
        let mut spec = mk_spec();
        spec.holder_identity = String::new();
        assert!(plan(&spec, None).is_err());
        assert!(
            plan(&spec, Some("cluster-west")).is_ok(),
            "--cluster-id fills in"
        );
    }

    #[test]
    fn lease_only_and_suspend_plans() {
        let mut spec = mk_spec();
        spec.target = None;
        spec.acquire_action = None;
        spec.release_action = None;
        assert_eq!(plan(&spec, None).unwrap().target, None);

        let mut spec = mk_spec();
        spec.target = Some(TargetRef {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            name: "nightly".into(),
        });
        spec.acquire_action = Some(LeaseAction {
            suspend: Some(false),
            scale: None,
        });
        spec.release_action = None;
        let t = plan(&spec, None).unwrap().target.unwrap();
        assert_eq!(
            (t.activate, t.stop),
            (Step::Suspend(false), Step::Suspend(true))
        );
    }

    #[test]
    fn timing_derivations() {
        let t = Timing::new(30, 10).unwrap();
        assert_eq!(t.request_timeout(), MAX_REQUEST_TIMEOUT);
        assert_eq!(t.stop_margin(), Duration::from_millis(7500));
        assert_eq!(t.standby_retry(), secs(10));
        assert_eq!(t.error_retry(), secs(1));

        let t = Timing::new(6, 2).unwrap();
        assert_eq!(t.request_timeout(), secs(2));
        assert_eq!(t.stop_margin(), Duration::from_millis(1500));
        assert_eq!(t.standby_retry(), secs(2));

        let t = Timing::new(15, 5).unwrap();
        assert_eq!(t.standby_retry(), secs(5));
        // ttl/3 wins when the heartbeat is long.
        let t = Timing::new(9, 8).unwrap();
        assert_eq!(t.standby_retry(), secs(3));
        assert_eq!(t.stop_margin(), secs(1), "capped by ttl - heartbeat");
        let t = Timing::new(120, 10).unwrap();
        assert_eq!(t.stop_margin(), MAX_STOP_MARGIN);
        let t = Timing::new(2, 1).unwrap();
        assert_eq!(t.stop_margin(), secs(1));
        assert_eq!(t.request_timeout(), secs(1));
    }

    #[test]
    fn failure_tolerance_follows_the_inequality() {
        // ttl 30 / hb 10: 10 + 2.5 (first) + 3.5 per further failure < 22.5.
        let t = Timing::new(30, 10).unwrap();
        assert!(t.tolerates_failures(1));
        assert!(t.tolerates_failures(3));
        assert!(!t.tolerates_failures(4));
        // ttl 6 / hb 2: 2 + 2 = 4 < 4.5, a second failure (4 + 3 = 7) is fenced.
        let t = Timing::new(6, 2).unwrap();
        assert!(t.tolerates_failures(1));
        assert!(!t.tolerates_failures(2));
    }

    #[test]
    fn deadline_is_from_the_send_instant_and_never_later_than_ttl() {
        let t = Timing::new(6, 2).unwrap();
        let sent = Instant::now();
        // Server remaining time larger than the TTL (clock skew) is capped by the TTL.
        let d = deadlines(sent, &t, 9_000);
        assert_eq!(d.deadline, sent + secs(6));
        assert_eq!(d.stop_at, sent + Duration::from_millis(4500));
        // Smaller server remaining time wins.
        let d = deadlines(sent, &t, 3_000);
        assert_eq!(d.deadline, sent + secs(3));
        assert_eq!(d.stop_at, sent + Duration::from_millis(1500));
        // Missing field: the TTL.
        assert_eq!(deadlines(sent, &t, 0).deadline, sent + secs(6));
        assert_eq!(deadlines(sent, &t, -5).deadline, sent + secs(6));
        // Almost nothing left: stop point is the send instant itself.
        let d = deadlines(sent, &t, 500);
        assert_eq!(d.stop_at, sent);
    }

    #[test]
    fn a_lowered_ttl_cuts_the_deadline_from_the_send_on() {
        let t0 = Instant::now();
        let long = Timing::new(60, 10).unwrap();
        let held = deadlines(t0, &long, 60_000);
        // Same TTL, a later send: nothing moves.
        assert_eq!(held.cut_by_request(t0 + secs(10), &long), held);
        // The TTL was lowered to 6 s: the grant may end 6 s after this send.
        let short = Timing::new(6, 2).unwrap();
        let cut = held.cut_by_request(t0 + secs(10), &short);
        assert_eq!(cut.deadline, t0 + secs(16));
        assert_eq!(cut.stop_at, t0 + secs(16) - short.stop_margin());
    }

    #[test]
    fn holder_requeue_is_heartbeat_or_stop_point() {
        let t = Timing::new(6, 2).unwrap();
        let now = Instant::now();
        assert_eq!(holder_requeue(now, &t, now + secs(5)), secs(2));
        assert_eq!(
            holder_requeue(now, &t, now + Duration::from_millis(700)),
            Duration::from_millis(700)
        );
        assert_eq!(
            holder_requeue(now, &t, now),
            Duration::from_millis(50),
            "never a busy loop"
        );
    }

    #[test]
    fn failure_decisions_per_semantics() {
        use Semantics::*;
        use TargetDecision::*;
        assert_eq!(on_failure(AtMostOnce, true, false), Keep);
        assert_eq!(on_failure(AtMostOnce, true, true), Stop);
        assert_eq!(on_failure(AtMostOnce, false, false), Stop);
        assert_eq!(on_failure(AtLeastOnce, true, true), Keep);
        assert_eq!(on_failure(AtLeastOnce, false, false), Keep);
    }

    #[test]
    fn conditions_keep_transition_time_unless_status_changes() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "Acquired",
            true,
            "Held",
            "m",
            "t1",
            Some(1)
        ));
        assert!(!set_condition(
            &mut c,
            "Acquired",
            true,
            "Held",
            "m2",
            "t2",
            Some(1)
        ));
        assert_eq!(c[0].last_transition_time, "t1");
        assert_eq!(c[0].message, "m2");
        assert!(set_condition(
            &mut c,
            "Acquired",
            false,
            "HeldByOther",
            "x",
            "t3",
            Some(2)
        ));
        assert_eq!(c[0].last_transition_time, "t3");
        assert_eq!(c[0].status, "False");
        assert!(set_condition(
            &mut c,
            "HeartbeatHealthy",
            true,
            "Standby",
            "",
            "t3",
            Some(2)
        ));
        assert_eq!(c.len(), 2);
        // A reason change with the same status is a transition for events, not for the time.
        assert!(set_condition(
            &mut c,
            "Acquired",
            false,
            "Stopped",
            "y",
            "t4",
            Some(2)
        ));
        assert_eq!(c[0].last_transition_time, "t3");
    }

    fn mk_resp(acquired: bool, holder: &str, token: i64) -> LeaseResponse {
        LeaseResponse {
            acquired,
            holder: holder.into(),
            fencing_token: token,
            expires_at: Some(time::macros::datetime!(2026-05-30 12:00:30 UTC)),
            acquired_at: Some(time::macros::datetime!(2026-05-30 12:00:00.250 UTC)),
            ttl_remaining_millis: 30_000,
            renewed_at: None,
            transitions: 0,
        }
    }

    #[test]
    fn held_then_waiting_status() {
        let mut st = BerthLeaseStatus::default();
        assert!(status_held(
            &mut st,
            &mk_resp(true, "cluster-east", 7),
            "t1",
            Some(3)
        ));
        assert_eq!(st.lease_state.as_deref(), Some("held"));
        assert_eq!(st.current_holder.as_deref(), Some("cluster-east"));
        assert_eq!(st.fencing_token, Some(7));
        assert_eq!(st.acquired_at.as_deref(), Some("2026-05-30T12:00:00Z"));
        assert_eq!(st.expires_at.as_deref(), Some("2026-05-30T12:00:30Z"));
        assert_eq!(st.last_heartbeat.as_deref(), Some("t1"));
        assert_eq!(st.observed_generation, Some(3));
        let acquired = &st.conditions[0];
        assert_eq!(
            (
                acquired.type_.as_str(),
                acquired.status.as_str(),
                acquired.reason.as_str()
            ),
            ("Acquired", "True", "Held")
        );
        assert_eq!(acquired.message, "lease held with fencing token 7");
        assert_eq!(st.conditions[1].reason, "Heartbeating");
        // A renewal is not a transition.
        assert!(!status_held(
            &mut st,
            &mk_resp(true, "cluster-east", 7),
            "t2",
            Some(3)
        ));
        assert_eq!(st.last_heartbeat.as_deref(), Some("t2"));
        assert_eq!(st.conditions[0].last_transition_time, "t1");

        assert!(status_waiting(
            &mut st,
            &mk_resp(false, "cluster-west", 8),
            "t3",
            Some(3)
        ));
        assert_eq!(st.lease_state.as_deref(), Some("waiting"));
        assert_eq!(st.current_holder.as_deref(), Some("cluster-west"));
        assert_eq!(st.fencing_token, Some(0));
        assert_eq!(st.conditions[0].reason, "HeldByOther");
        assert_eq!(st.conditions[0].message, "lease held by \"cluster-west\"");
        assert_eq!(st.conditions[0].last_transition_time, "t3");
        assert_eq!(st.conditions[1].reason, "Standby");
        assert_eq!(st.conditions[1].status, "True");
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["leaseState"], "waiting");
        assert_eq!(json["conditions"][0]["lastTransitionTime"], "t3");
    }

    #[test]
    fn dns_subdomain_rule() {
        assert!(is_dns_subdomain("db.primary-1"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain(&"a".repeat(64)));
        assert!(is_dns_subdomain(&format!("{}.b", "a".repeat(63))));
    }
}
