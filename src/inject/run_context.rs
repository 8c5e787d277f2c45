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
use super::values::env_name;
use crate::binding::MlflowWorkspaceBinding;

pub(crate) const RUN_CONTEXT: &str = "MLFLOW_RUN_CONTEXT";
pub(crate) const POD_NAME: &str = "MLFLOW_OPERATOR_POD_NAME";
pub(crate) const POD_UID: &str = "MLFLOW_OPERATOR_POD_UID";
pub(crate) const NODE_NAME: &str = "MLFLOW_OPERATOR_NODE_NAME";

/// The tags each container adds for itself; an extra tag of either key gives way.
const CONTAINER_KEYS: [&str; 2] = ["k8s.container.name", "container.image.name"];

/// What a binding wants in every injected container, beyond the pod-wide env. The pod's part of
/// the JSON is encoded once per pod; a container only adds its own name and image.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RunContext {
    /// `"key":"value",` members of the pod's Kubernetes tags, encoded.
    pod_members: String,
    /// `,"key":"value"` members of the binding's extra tags that no Kubernetes tag overrides.
    extra_members: String,
    kubernetes: bool,
    /// The binding's own env names MLFLOW_RUN_CONTEXT: it is not added per container.
    context_taken: bool,
    /// The downward-API entries, then (after MLFLOW_RUN_CONTEXT) the system-metrics entries.
    before: Vec<Value>,
    after: Vec<Value>,
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

/// The pod's Kubernetes tags as `(key, encoded value)`: text, or a `$(...)` reference.
fn pod_tags(
    b: &MlflowWorkspaceBinding,
    namespace: &str,
    owner: Option<&Owner<'_>>,
    pod_template_hash: Option<&str>,
) -> Vec<(String, String)> {
    let reference = |var: &str| format!("\"$({var})\"");
    let mut tags = vec![
        ("k8s.namespace.name".to_string(), literal(namespace)),
        ("k8s.pod.name".into(), reference(POD_NAME)),
        ("k8s.pod.uid".into(), reference(POD_UID)),
        ("k8s.node.name".into(), reference(NODE_NAME)),
    ];
    if let Some(owner) = owner {
        let key = format!("k8s.{}.name", owner.kind.to_ascii_lowercase());
        tags.push((key, literal(owner.name)));
        if let Some((key, name)) = workload_of(owner, pod_template_hash) {
            tags.push((key.into(), literal(&name)));
        }
    }
    let binding = b.metadata.name.as_deref().unwrap_or_default();
    let binding = literal(&format!("{namespace}/{binding}"));
    tags.push(("mlflow-operator.binding".into(), binding));
    tags
}

/// The system-metrics entries: on, the interval if set, and the pod's name as node id.
fn metrics_env(interval: Option<i32>) -> Vec<Value> {
    let mut env = vec![json!({"name": "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "value": "true"})];
    if let Some(seconds) = interval {
        let value = seconds.to_string();
        env.push(json!({"name": "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "value": value}));
    }
    let node = format!("$({POD_NAME})");
    env.push(json!({"name": "MLFLOW_SYSTEM_METRICS_NODE_ID", "value": node}));
    env
}

impl RunContext {
    /// What `b` asks for a pod in `namespace` owned by `owner`; None when it asks for nothing.
    /// `pod_wide` is the env every container already gets: a name it holds is not added again.
    pub(crate) fn of(
        b: &MlflowWorkspaceBinding,
        namespace: &str,
        owner: Option<&Owner<'_>>,
        pod_template_hash: Option<&str>,
        pod_wide: &[Value],
    ) -> Option<Self> {
        let tags = b.spec.run_tags.as_ref();
        let metrics = b.spec.system_metrics.as_ref().filter(|m| m.enabled());
        if tags.is_none() && metrics.is_none() {
            return None;
        }
        let kubernetes = tags.is_some_and(|t| t.kubernetes());
        let pod = match kubernetes {
            true => pod_tags(b, namespace, owner, pod_template_hash),
            false => Vec::new(),
        };
        let pod_members: String = pod
            .iter()
            .map(|(k, v)| format!("{}:{v},", literal(k)))
            .collect();
        let ours = |k: &str| {
            kubernetes && (CONTAINER_KEYS.contains(&k) || pod.iter().any(|(p, _)| p == k))
        };
        let extra = tags.into_iter().flat_map(|t| t.extra.iter());
        let extra_members: String = extra
            .filter(|(k, _)| !ours(k))
            .map(|(k, v)| format!(",{}:{}", literal(k), literal(v)))
            .collect();
        let mut before = Vec::new();
        if kubernetes || metrics.is_some() {
            before.push(downward(POD_NAME, "metadata.name"));
        }
        if kubernetes {
            before.push(downward(POD_UID, "metadata.uid"));
            before.push(downward(NODE_NAME, "spec.nodeName"));
        }
        let mut after = metrics
            .map(|m| metrics_env(m.sampling_interval_seconds))
            .unwrap_or_default();
        let taken = |name: Option<&str>| pod_wide.iter().any(|w| env_name(w) == name);
        before.retain(|e| !taken(env_name(e)));
        after.retain(|e| !taken(env_name(e)));
        let context_taken = taken(Some(RUN_CONTEXT));
        Some(Self {
            pod_members,
            extra_members,
            kubernetes,
            context_taken,
            before,
            after,
        })
    }

    /// The `MLFLOW_RUN_CONTEXT` value for container `c`, None without tags.
    pub(crate) fn run_context(&self, c: &ContainerView<'_>) -> Option<String> {
        if self.kubernetes {
            let image = c
                .image
                .map(|i| format!(",\"container.image.name\":{}", literal(i)));
            return Some(format!(
                "{{{}\"k8s.container.name\":{}{}{}}}",
                self.pod_members,
                literal(c.name),
                image.unwrap_or_default(),
                self.extra_members
            ));
        }
        let members = self.extra_members.strip_prefix(',')?;
        Some(format!("{{{members}}}"))
    }

    /// The env entries for container `c`: the downward-API variables first.
    pub(crate) fn env(&self, c: &ContainerView<'_>) -> Vec<Value> {
        let mut env = self.before.clone();
        if let Some(context) = self.run_context(c).filter(|_| !self.context_taken) {
            env.push(json!({"name": RUN_CONTEXT, "value": context}));
        }
        env.extend(self.after.iter().cloned());
        env
    }
}
