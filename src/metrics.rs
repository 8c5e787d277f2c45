//! Prometheus metrics (prometheus-client, OpenMetrics text on `/metrics`).
//!
//! One `Metrics` value is shared by the controller and the webhook, so a single registry serves
//! both from every replica.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::webhook::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// [`Outcome::metric_label`]; static, so counting an admission allocates nothing.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// HTTP status, or `error` when no response arrived.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// `True`, `False` or `Unknown`.
    pub ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodsLabels {
    pub namespace: String,
    pub binding: String,
    /// `injected`, `stale` or `notInjected` (the fields of status.pods).
    pub state: String,
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Time to answer one AdmissionReview, in seconds, with millisecond-scale buckets.
    pub admission_duration: Histogram,
    /// AdmissionReviews answered, by outcome.
    pub admissions: Family<OutcomeLabels, Counter>,
    /// Reconciles run (every result).
    pub reconciles: Counter,
    /// Bindings whose tracking URI could not be resolved, by condition reason.
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    /// Status writes that failed (the reconcile is retried).
    pub status_write_errors: Counter,
    /// Azure Resource Manager request latency, by HTTP status.
    pub arm_request_duration: Family<StatusLabels, Histogram>,
    /// Bindings by Ready state, as last seen by the controller.
    pub bindings: Family<ReadyLabels, Gauge>,
    /// 1 while this replica holds the controller Lease.
    pub leader: Gauge,
    /// Opted-in pods each binding selects, by state, as last seen by the controller.
    pub pods: Family<PodsLabels, Gauge>,
    /// Idle webhook connections closed to make room for a new one at the connection limit.
    pub connections_evicted: Counter,
    /// The served certificate's notAfter, Unix seconds; 0 until one is loaded.
    pub certificate_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mlflow_operator");
        let (admission_duration, admissions, connections_evicted, certificate_expiry) =
            webhook_metrics(&mut registry);
        let (reconciles, reconcile_errors, status_write_errors, arm_request_duration) =
            resolve_metrics(&mut registry);
        let (bindings, leader, pods) = state_metrics(&mut registry);
        Self {
            registry: Arc::new(registry),
            admission_duration,
            admissions,
            reconciles,
            reconcile_errors,
            status_write_errors,
            arm_request_duration,
            bindings,
            leader,
            pods,
            connections_evicted,
            certificate_expiry,
        }
    }

    /// Counts one admission outcome.
    pub fn admission(&self, outcome: Outcome) {
        self.admissions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.metric_label(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Registers `metric` under `name` and returns it (metrics are handles: the clone registered and
/// the one returned count together).
fn add<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The webhook's: admission latency and outcomes, evicted connections, certificate expiry.
fn webhook_metrics(
    r: &mut Registry,
) -> (Histogram, Family<OutcomeLabels, Counter>, Counter, Gauge) {
    // 0.25 ms .. ~1 s: admission is in-memory work, so the interesting range is sub-ms to ms.
    let buckets = [
        0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    (
        add(
            r,
            "admission_duration_seconds",
            "Time to answer one AdmissionReview",
            Histogram::new(buckets),
        ),
        add(
            r,
            "admissions",
            "AdmissionReviews answered, by outcome",
            Family::default(),
        ),
        add(
            r,
            "webhook_connections_evicted",
            "Idle webhook connections closed to make room for a new one at the connection limit",
            Counter::default(),
        ),
        add(
            r,
            "certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires (its notAfter), in Unix seconds",
            Gauge::default(),
        ),
    )
}

/// The controller's resolving: reconciles, their failures, status writes, ARM calls.
fn resolve_metrics(
    r: &mut Registry,
) -> (
    Counter,
    Family<ReasonLabels, Counter>,
    Counter,
    Family<StatusLabels, Histogram>,
) {
    let arm = Family::<StatusLabels, Histogram>::new_with_constructor(|| {
        Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
    });
    (
        add(
            r,
            "reconciles",
            "Binding reconciles run",
            Counter::default(),
        ),
        add(
            r,
            "reconcile_errors",
            "Binding reconciles whose tracking URI could not be resolved, by reason",
            Family::default(),
        ),
        add(
            r,
            "status_write_errors",
            "Binding status writes that failed",
            Counter::default(),
        ),
        add(
            r,
            "arm_request_duration_seconds",
            "Azure Resource Manager request latency, by HTTP status",
            arm,
        ),
    )
}

/// What the controller last saw: bindings by readiness, leadership, pods by state.
fn state_metrics(
    r: &mut Registry,
) -> (Family<ReadyLabels, Gauge>, Gauge, Family<PodsLabels, Gauge>) {
    (
        add(
            r,
            "bindings",
            "MlflowWorkspaceBindings by Ready state",
            Family::default(),
        ),
        add(
            r,
            "leader",
            "1 while this replica holds the controller Lease",
            Gauge::default(),
        ),
        add(
            r,
            "pods",
            "Opted-in pods each binding selects, by whether they carry its current injection",
            Family::default(),
        ),
    )
}
