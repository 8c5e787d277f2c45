//! Where a run came from: the tags of `MLFLOW_RUN_CONTEXT` (OpenTelemetry's Kubernetes names and
//! the binding's static tags) and MLflow's system-metrics variables, per container.
//!
//! What is only known once the pod exists (its name: a Deployment's or Job's pods have only
//! `generateName` at admission; its uid; its node) comes from downward-API variables placed
//! before the values that name them, which the kubelet expands as `$(NAME)`. Literal text is
//! JSON-encoded and then has every `$` doubled, the exact inverse of the kubelet's expansion,
//! so no value can break the JSON or reference a variable.

use serde_json::{Value, json};

use super::pod::{ContainerView, Owner};
use crate::binding::MlflowWorkspaceBinding;

pub(crate) const RUN_CONTEXT: &str = "MLFLOW_RUN_CONTEXT";
pub(crate) const POD_NAME: &str = "MLFLOW_OPERATOR_POD_NAME";
pub(crate) const POD_UID: &str = "MLFLOW_OPERATOR_POD_UID";
pub(crate) const NODE_NAME: &str = "MLFLOW_OPERATOR_NODE_NAME";

/// A tag's value: text as it is, or a variable the kubelet fills in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TagValue {
    Text(String),
    Var(&'static str),
}

/// What a binding wants in every injected container, beyond the pod-wide env.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RunContext {
    /// The pod's tags, in order (the container's own two are added per container).
    pod_tags: Vec<(String, TagValue)>,
    /// The binding's static tags; a Kubernetes tag of the same key wins.
    extra: Vec<(String, String)>,
    kubernetes: bool,
    /// `Some(interval)` when system metrics are on.
    metrics: Option<Option<i32>>,
}

/// The downward-API entry `MLFLOW_OPERATOR_*` for `field`.
fn downward(name: &str, field: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}})
}

/// `text` as a JSON string literal whose `$` survive the kubelet's `$(...)` expansion.
pub(crate) fn literal(text: &str) -> String {
    serde_json::to_string(text)
        .unwrap_or_default()
        .replace('$', "$$")
}

/// `k8s.deployment.name` from a ReplicaSet owner (`<deployment>-<pod-template-hash>`), and
/// `k8s.cronjob.name` from a Job owner (`<cronjob>-<scheduled time in Unix minutes>`).
pub(crate) fn workload_of(
    owner: &Owner<'_>,
    pod_template_hash: Option<&str>,
) -> Option<(&'static str, String)> {
    match owner.kind {
        "ReplicaSet" => {
            let hash = pod_template_hash.filter(|h| !h.is_empty())?;
            let name = owner.name.strip_suffix(hash)?.strip_suffix('-')?;
            (!name.is_empty()).then(|| ("k8s.deployment.name", name.to_string()))
        }
        "Job" => {
            let (name, minutes) = owner.name.rsplit_once('-')?;
            // The CronJob controller names its Jobs by scheduled minute; 2015 to 2100 tells them
            // from a user's own `-<number>` suffix such as a date.
            let minutes: u64 = minutes.parse().ok()?;
            let scheduled = (23_667_840..68_374_080).contains(&minutes);
            (scheduled && !name.is_empty()).then(|| ("k8s.cronjob.name", name.to_string()))
        }
        _ => None,
    }
}

impl RunContext {
    /// What `b` asks for a pod in `namespace` owned by `owner`; None when it asks for nothing.
    pub(crate) fn of(
        b: &MlflowWorkspaceBinding,
        namespace: &str,
        owner: Option<&Owner<'_>>,
        pod_template_hash: Option<&str>,
    ) -> Option<Self> {
        let tags = b.spec.run_tags.as_ref();
        let metrics = b.spec.system_metrics.as_ref().filter(|m| m.enabled());
        if tags.is_none() && metrics.is_none() {
            return None;
        }
        let kubernetes = tags.is_some_and(|t| t.kubernetes());
        let mut pod_tags = Vec::new();
        if kubernetes {
            let text = |s: &str| TagValue::Text(s.to_string());
            pod_tags.push(("k8s.namespace.name".into(), text(namespace)));
            pod_tags.push(("k8s.pod.name".into(), TagValue::Var(POD_NAME)));
            pod_tags.push(("k8s.pod.uid".into(), TagValue::Var(POD_UID)));
            pod_tags.push(("k8s.node.name".into(), TagValue::Var(NODE_NAME)));
            if let Some(owner) = owner {
                let key = format!("k8s.{}.name", owner.kind.to_ascii_lowercase());
                pod_tags.push((key, text(owner.name)));
                if let Some((key, name)) = workload_of(owner, pod_template_hash) {
                    pod_tags.push((key.into(), TagValue::Text(name)));
                }
            }
            let binding = b.metadata.name.as_deref().unwrap_or_default();
            pod_tags.push((
                "mlflow-operator.binding".into(),
                text(&format!("{namespace}/{binding}")),
            ));
        }
        let extra = tags
            .map(|t| {
                t.extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let metrics = metrics.map(|m| m.sampling_interval_seconds);
        Some(Self {
            pod_tags,
            extra,
            kubernetes,
            metrics,
        })
    }

    /// The `MLFLOW_RUN_CONTEXT` value for container `c`, None without tags.
    pub(crate) fn run_context(&self, c: &ContainerView<'_>) -> Option<String> {
        let mut tags: Vec<(&str, TagValue)> = Vec::new();
        if self.kubernetes {
            tags.extend(self.pod_tags.iter().map(|(k, v)| (k.as_str(), v.clone())));
            tags.push(("k8s.container.name", TagValue::Text(c.name.to_string())));
            if let Some(image) = c.image {
                tags.push(("container.image.name", TagValue::Text(image.to_string())));
            }
        }
        for (k, v) in &self.extra {
            if !tags.iter().any(|(key, _)| key == k) {
                tags.push((k.as_str(), TagValue::Text(v.clone())));
            }
        }
        if tags.is_empty() {
            return None;
        }
        let members: Vec<String> = tags
            .iter()
            .map(|(k, v)| match v {
                TagValue::Text(t) => format!("{}:{}", literal(k), literal(t)),
                TagValue::Var(var) => format!("{}:\"$({var})\"", literal(k)),
            })
            .collect();
        Some(format!("{{{}}}", members.join(",")))
    }

    /// The env entries for container `c`, the downward-API variables first.
    pub(crate) fn env(&self, c: &ContainerView<'_>) -> Vec<Value> {
        let mut env = Vec::new();
        let context = self.run_context(c);
        if context.is_some() && self.kubernetes || self.metrics.is_some() {
            env.push(downward(POD_NAME, "metadata.name"));
        }
        if context.is_some() && self.kubernetes {
            env.push(downward(POD_UID, "metadata.uid"));
            env.push(downward(NODE_NAME, "spec.nodeName"));
        }
        if let Some(context) = context {
            env.push(json!({"name": RUN_CONTEXT, "value": context}));
        }
        if let Some(interval) = self.metrics {
            env.push(json!({"name": "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "value": "true"}));
            if let Some(seconds) = interval {
                let value = seconds.to_string();
                env.push(
                    json!({"name": "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "value": value}),
                );
            }
            let node = format!("$({POD_NAME})");
            env.push(json!({"name": "MLFLOW_SYSTEM_METRICS_NODE_ID", "value": node}));
        }
        env
    }
}
