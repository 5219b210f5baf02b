//! Prometheus metrics of the operator (`berth_operator_*`). No lease name, holder or tenant
//! appears in a label.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label with one `outcome` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `acquired`, `held-by-other`, `error`, …
    pub outcome: String,
}

/// Label with one `error` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// [`crate::controller::Error::metric_label`].
    pub error: String,
}

/// Label with one `state` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `held`, `waiting`, `stopping`, `invalid`.
    pub state: String,
}

/// Label with one `action` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `activate` or `stop`.
    pub action: String,
}

/// Every metric of the operator.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconcile failures by error kind.
    pub failures: Family<ErrorLabel, Counter>,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Heartbeat (acquire) latency by outcome.
    pub heartbeat_duration: Family<OutcomeLabel, Histogram>,
    /// BerthLeases per state.
    pub leases: Family<StateLabel, Gauge>,
    /// Target writes by action.
    pub target_writes: Family<ActionLabel, Counter>,
    /// Lease transitions seen by this operator (acquired, lost, released, fenced).
    pub transitions: Family<OutcomeLabel, Counter>,
    /// 1 while the Berth API server answers.
    pub api_reachable: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Metrics {
    /// Creates and registers every metric under the `berth_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let reconcile_duration = latency_histogram();
        let heartbeat_duration =
            Family::<OutcomeLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let leases = Family::<StateLabel, Gauge>::default();
        let target_writes = Family::<ActionLabel, Counter>::default();
        let transitions = Family::<OutcomeLabel, Counter>::default();
        let api_reachable = Gauge::default();
        {
            let r = registry.sub_registry_with_prefix("berth_operator");
            r.register("reconciles", "Reconciles run", reconciles.clone());
            r.register(
                "reconcile_failures",
                "Reconciles that failed, by error kind",
                failures.clone(),
            );
            r.register(
                "reconcile_duration_seconds",
                "Duration of one reconcile",
                reconcile_duration.clone(),
            );
            r.register(
                "heartbeat_duration_seconds",
                "Latency of acquire/renew calls to the Berth API server, by outcome",
                heartbeat_duration.clone(),
            );
            r.register(
                "leases",
                "BerthLeases handled by this operator, by lease state",
                leases.clone(),
            );
            r.register(
                "target_writes",
                "Writes to target workloads, by action",
                target_writes.clone(),
            );
            r.register(
                "lease_transitions",
                "Lease transitions observed, by kind",
                transitions.clone(),
            );
            r.register(
                "berth_api_reachable",
                "1 while the Berth API server answers its health check",
                api_reachable.clone(),
            );
        }
        Self {
            registry,
            reconciles,
            failures,
            reconcile_duration,
            heartbeat_duration,
            leases,
            target_writes,
            transitions,
            api_reachable,
        }
    }

    /// Records one heartbeat.
    pub fn heartbeat(&self, outcome: &str, took: Duration) {
        self.heartbeat_duration
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a transition.
    pub fn transition(&self, kind: &str) {
        self.transitions
            .get_or_create(&OutcomeLabel {
                outcome: kind.to_owned(),
            })
            .inc();
    }

    /// Counts a target write.
    pub fn target_write(&self, action: &str) {
        self.target_writes
            .get_or_create(&ActionLabel {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Sets the per-state counts of leases.
    pub fn set_lease_states(&self, counts: &[(&str, i64)]) {
        for (state, n) in counts {
            self.leases
                .get_or_create(&StateLabel {
                    state: (*state).to_owned(),
                })
                .set(*n);
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_series_without_lease_labels() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.heartbeat("acquired", Duration::from_millis(3));
        m.transition("acquired");
        m.target_write("activate");
        m.set_lease_states(&[("held", 1), ("waiting", 0)]);
        m.failures
            .get_or_create(&ErrorLabel {
                error: "berth_api".into(),
            })
            .inc();
        let text = m.encode();
        for want in [
            "berth_operator_reconciles_total 1",
            "berth_operator_heartbeat_duration_seconds_count{outcome=\"acquired\"} 1",
            "berth_operator_lease_transitions_total{outcome=\"acquired\"} 1",
            "berth_operator_target_writes_total{action=\"activate\"} 1",
            "berth_operator_leases{state=\"held\"} 1",
            "berth_operator_reconcile_failures_total{error=\"berth_api\"} 1",
            "berth_operator_berth_api_reachable 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
