//! The injection planner: raw pod JSON + the namespace's view -> a JSON patch or a refusal.
//!
//! Pure: no I/O, no clock, no randomness. The webhook, the `inject` CLI and the tests share it.
//! The patch is computed against the raw JSON, so fields the Kubernetes types of this crate do
//! not know survive untouched.

use json_patch::{PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};

use crate::binding::{INJECTED_ANNOTATION, MlflowWorkspaceBinding, SKIP_CONTAINERS_ANNOTATION};

mod patch;
mod pod;
mod select;
#[cfg(test)]
mod tests;
mod values;

/// What the webhook does when no binding applies (Helm value `webhook.onMissingBinding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnMissingBinding {
    /// Refuse the pod with a message that names the fix (default).
    #[default]
    Refuse,
    /// Admit the pod unchanged, with a warning.
    Allow,
}

/// Operator-wide settings the planner needs.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// Tenant used for workload identity when neither the binding nor the ServiceAccount names one.
    pub tenant_id: Option<String>,
    pub on_missing_binding: OnMissingBinding,
}

/// Everything the planner may know about the pod's namespace.
#[derive(Clone, Debug, Default)]
pub struct NamespaceView<'a> {
    /// The namespace of the admission request (pods made by controllers often lack
    /// metadata.namespace).
    pub namespace: &'a str,
    /// The bindings of that namespace (only that namespace: bindings never reach across).
    pub bindings: Vec<&'a MlflowWorkspaceBinding>,
    /// The pod's ServiceAccount, when it exists.
    pub service_account: Option<&'a ServiceAccount>,
}

/// Why a pod was refused; also the metric label `refused-<reason>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// No binding in the namespace matches the pod.
    NoBinding,
    /// More than one binding matches and the pod names none.
    Ambiguous,
    /// The pod names a binding that does not exist.
    MissingBinding,
    /// The chosen binding is not Ready.
    NotReady,
    /// Workload identity without a client id or tenant id.
    Identity,
    /// The object is not a pod the planner can read.
    InvalidPod,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoBinding => "no-binding",
            RefusalReason::Ambiguous => "ambiguous-binding",
            RefusalReason::MissingBinding => "missing-binding",
            RefusalReason::NotReady => "binding-not-ready",
            RefusalReason::Identity => "identity",
            RefusalReason::InvalidPod => "invalid-pod",
        }
    }
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Apply `patch` (may be empty when the pod already has everything: reinvocation).
    Inject {
        /// Name of the binding applied.
        binding: String,
        patch: json_patch::Patch,
        /// One line per skipped variable/container, for AdmissionResponse.warnings.
        warnings: Vec<String>,
    },
    /// Admit unchanged (onMissingBinding: allow), with warnings saying why.
    Allow { warnings: Vec<String> },
    /// Refuse with a message a person can act on.
    Refuse {
        reason: RefusalReason,
        message: String,
        /// The binding the refusal is about, when there is one (for a Warning Event on it).
        binding: Option<String>,
    },
}

/// Plans the mutation of one pod (or pod template: `{metadata, spec}`).
pub fn plan(pod: &Value, view: &NamespaceView<'_>, defaults: &Defaults) -> Plan {
    let ns = view.namespace;
    let pod = match pod::read(pod) {
        Ok(p) => p,
        Err(detail) => {
            return Plan::Refuse {
                reason: RefusalReason::InvalidPod,
                message: format!(
                    "mlflow-operator: cannot read the pod in namespace \"{ns}\": {detail}"
                ),
                binding: None,
            };
        }
    };
    let chosen = select::choose(&pod, ns, &view.bindings).and_then(|b| {
        if b.is_ready() {
            Ok(b)
        } else {
            Err(select::not_ready(b, ns))
        }
    });
    let binding = match chosen {
        Ok(b) => b,
        Err((_, message, _)) if defaults.on_missing_binding == OnMissingBinding::Allow => {
            return Plan::Allow {
                warnings: vec![message],
            };
        }
        Err((reason, message, binding)) => {
            return Plan::Refuse {
                reason,
                message,
                binding,
            };
        }
    };
    let name = binding.metadata.name.clone().unwrap_or_default();
    let ctx = values::Context {
        namespace: ns,
        service_account: view.service_account,
        default_tenant_id: defaults.tenant_id.as_deref(),
    };
    let desired = match values::desired(binding, &pod, &ctx) {
        Ok(d) => d,
        Err(message) => {
            return Plan::Refuse {
                reason: RefusalReason::Identity,
                message,
                binding: Some(name),
            };
        }
    };

    let skip = pod
        .annotations
        .get(SKIP_CONTAINERS_ANNOTATION)
        .map(|s| pod::parse_skip_containers(s))
        .unwrap_or_default();
    let mut ops = Vec::new();
    let mut warnings = Vec::new();
    let mut injected_any = false;
    for c in pod.containers.iter().filter(|c| !skip.contains(c.name)) {
        injected_any = true;
        let (o, w) = patch::merge_container(c, &desired);
        ops.extend(o);
        warnings.extend(w);
    }
    if injected_any {
        let existing = pod.volumes.map(Vec::as_slice).unwrap_or_default();
        let volumes = patch::add_volumes_if_absent(existing, &desired.volumes);
        for v in &volumes.conflicts {
            warnings.push(format!(
                "mlflow-operator: the pod already has a different volume named \"{v}\"; left unchanged"
            ));
        }
        ops.extend(patch::append(
            &["spec", "volumes"],
            pod.volumes.is_some(),
            volumes.add,
        ));
    }

    let generation = binding.metadata.generation.unwrap_or(0);
    let marker = format!("{name}/{generation}{}", desired.annotation_suffix);
    let already = pod.annotations.get(INJECTED_ANNOTATION) == Some(&marker.as_str());
    if already {
        // Reinvocation: whatever there was to say was said when the pod was first injected.
        warnings.clear();
    } else {
        ops.push(annotation_op(&pod, marker));
    }
    Plan::Inject {
        binding: name,
        patch: json_patch::Patch(ops),
        warnings,
    }
}

/// Sets the injected annotation, creating `metadata` and `metadata.annotations` when needed.
fn annotation_op(pod: &pod::PodView<'_>, marker: String) -> PatchOperation {
    if !pod.has_metadata {
        patch::add(
            &["metadata"],
            json!({"annotations": {INJECTED_ANNOTATION: marker}}),
        )
    } else if !pod.has_annotations {
        patch::add(
            &["metadata", "annotations"],
            json!({INJECTED_ANNOTATION: marker}),
        )
    } else if pod.annotation_keys.contains(INJECTED_ANNOTATION) {
        PatchOperation::Replace(ReplaceOperation {
            path: patch::pointer(&["metadata", "annotations", INJECTED_ANNOTATION]),
            value: Value::String(marker),
        })
    } else {
        patch::add(
            &["metadata", "annotations", INJECTED_ANNOTATION],
            Value::String(marker),
        )
    }
}
