//! The injection planner: raw pod JSON + the namespace's view -> a JSON patch or a refusal.
//!
//! Pure: no I/O, no clock, no randomness. The webhook, the `inject` CLI and the tests share it.
//! The patch is computed against the raw JSON, so fields the Kubernetes types of this crate do
//! not know survive untouched.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use crate::binding::MlflowWorkspaceBinding;

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
    let _ = (pod, view, defaults);
    todo!("implemented by the planner work")
}
