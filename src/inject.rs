//! The injection planner: raw pod JSON + the namespace's view -> a JSON patch or a refusal.
//!
//! Pure: no I/O, no clock, no randomness. The webhook, the `inject` CLI and the tests share it.
//! The patch is computed against the raw JSON, so fields the Kubernetes types of this crate do
//! not know survive untouched.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use crate::binding::{INJECTED_ANNOTATION, INJECTED_HASH_ANNOTATION, MlflowWorkspaceBinding};

mod credential;
mod identity;
mod offer;
mod patch;
mod pod;
mod run_context;
mod select;
#[cfg(test)]
mod tests;
mod values;

pub use offer::Offers;
pub use patch::Patch;
pub use pod::{EnvNames, is_opted_in, parse_pod, pod_seed, service_account_name};
pub(crate) use pod::{PodView, read as read_pod_view, read_tree as read_pod_tree};
pub(crate) use select::selector_matches;

/// The binding the webhook picks for a pod with these labels and annotations, Ready or not: the
/// one the annotation names, else the one podSelector that matches. The controller counts pods
/// by it, so what it reports is what the webhook decides.
pub fn binding_of<'a>(
    labels: &std::collections::BTreeMap<&str, &str>,
    annotations: &std::collections::BTreeMap<&str, &str>,
    namespace: &str,
    bindings: &[&'a MlflowWorkspaceBinding],
) -> Result<&'a MlflowWorkspaceBinding, Refusal> {
    select::choose(labels, annotations, namespace, bindings)
}

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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Tenant used for workload identity when neither the binding nor the ServiceAccount names one.
    pub tenant_id: Option<String>,
    pub on_missing_binding: OnMissingBinding,
}

impl Defaults {
    /// The defaults from the command line's `--default-tenant-id` and the environment (read
    /// through `var`). `run` and `inject` both build them here: an offline preview that ignored
    /// AZURE_TENANT_ID refused pods the webhook injects.
    pub fn new(
        default_tenant_id: Option<&str>,
        on_missing_binding: OnMissingBinding,
        var: impl Fn(&str) -> Option<String>,
    ) -> Self {
        Self {
            tenant_id: default_tenant_id
                .map(str::to_string)
                .or_else(|| var("AZURE_TENANT_ID")),
            on_missing_binding,
        }
    }
}

/// Everything the planner may know about the pod's namespace.
#[derive(Clone, Debug, Default)]
pub struct NamespaceView<'a> {
    /// The namespace of the admission request (pods made by controllers often lack
    /// metadata.namespace).
    pub namespace: &'a str,
    /// The bindings of that namespace (only that namespace: bindings never reach across).
    pub bindings: Vec<&'a MlflowWorkspaceBinding>,
    /// The pod's ServiceAccount ([`service_account_name`]), when it exists.
    pub service_account: Option<&'a ServiceAccount>,
}

/// Why a pod was refused.
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
    /// An azureml:// tracking URI and no Azure credential for the pod at all.
    NoCredential,
    /// The object is not a pod the planner can read.
    InvalidPod,
}

impl RefusalReason {
    /// The admissions metric label, `refused-<reason>`.
    pub fn metric_label(self) -> &'static str {
        match self {
            RefusalReason::NoBinding => "refused-no-binding",
            RefusalReason::Ambiguous => "refused-ambiguous-binding",
            RefusalReason::MissingBinding => "refused-missing-binding",
            RefusalReason::NotReady => "refused-binding-not-ready",
            RefusalReason::Identity => "refused-identity",
            RefusalReason::NoCredential => "refused-no-azure-credential",
            RefusalReason::InvalidPod => "refused-invalid-pod",
        }
    }

    /// The reason alone (an Event's reason names it); spelled once, in the metric label.
    pub fn as_str(self) -> &'static str {
        let label = self.metric_label();
        label.strip_prefix("refused-").unwrap_or(label)
    }
}

/// A refused pod: why, in words a person can act on, and which binding it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub message: String,
    /// The binding the refusal is about, when there is one (for a Warning Event on it).
    pub binding: Option<String>,
}

impl Refusal {
    pub fn new(reason: RefusalReason, message: String, binding: Option<String>) -> Self {
        Self {
            reason,
            message,
            binding,
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
        patch: Patch,
        /// One line per skipped variable/container, for AdmissionResponse.warnings.
        warnings: Vec<String>,
    },
    /// Admit unchanged (onMissingBinding: allow), with warnings saying why.
    Allow { warnings: Vec<String> },
    /// Refuse with a message a person can act on.
    Refuse(Refusal),
}

/// Plans the mutation of one pod (or pod template: `{metadata, spec}`).
pub fn plan(pod: &Value, view: &NamespaceView<'_>, defaults: &Defaults) -> Plan {
    planned(pod, view, defaults, None)
}

/// [`plan`], taking what the binding offers the pod from `offers` when a pod of the same
/// inputs asked before: the same answer, with less built (the webhook's path).
pub fn plan_memoized(
    pod: &Value,
    view: &NamespaceView<'_>,
    defaults: &Defaults,
    offers: &Offers,
) -> Plan {
    planned(pod, view, defaults, Some(offers))
}

fn planned(
    pod: &Value,
    view: &NamespaceView<'_>,
    defaults: &Defaults,
    offers: Option<&Offers>,
) -> Plan {
    plan_read(pod::read(pod), view, defaults, offers)
}

/// [`plan_memoized`] of a pod the webhook has already read ([`pod::read_tree`]), or the reason
/// it could not be read.
pub(crate) fn plan_read(
    pod: Result<pod::PodView<'_>, String>,
    view: &NamespaceView<'_>,
    defaults: &Defaults,
    offers: Option<&Offers>,
) -> Plan {
    let ns = view.namespace;
    let pod = match pod {
        Ok(p) => p,
        Err(detail) => {
            let message =
                format!("mlflow-operator: cannot read the pod in namespace \"{ns}\": {detail}");
            return Plan::Refuse(Refusal::new(RefusalReason::InvalidPod, message, None));
        }
    };
    let binding = match select::choose_ready(&pod, ns, &view.bindings) {
        Ok(b) => b,
        Err(refusal) if defaults.on_missing_binding == OnMissingBinding::Allow => {
            return Plan::Allow {
                warnings: vec![refusal.message],
            };
        }
        Err(refusal) => return Plan::Refuse(refusal),
    };
    let ctx = values::Context {
        namespace: ns,
        service_account: view.service_account,
        default_tenant_id: defaults.tenant_id.as_deref(),
    };
    let inputs = values::PodInputs::of(&pod);
    let offered = match offers {
        Some(offers) => offers.get(binding, &inputs, &ctx),
        None => std::sync::Arc::new(offer::Offer::of(binding, &inputs, &ctx)),
    };
    let name = || Some(binding.metadata.name.clone().unwrap_or_default());
    match &*offered {
        Ok(offer) => match credential::missing(binding, &pod, &offer.desired, ns) {
            None => patch_for(binding, &pod, offer),
            Some(message) => {
                Plan::Refuse(Refusal::new(RefusalReason::NoCredential, message, name()))
            }
        },
        Err(message) => Plan::Refuse(Refusal::new(
            RefusalReason::Identity,
            message.clone(),
            name(),
        )),
    }
}

/// The patch that gives `pod` what `binding` offers; empty when it already has it.
fn patch_for(
    binding: &MlflowWorkspaceBinding,
    pod: &pod::PodView<'_>,
    offer: &offer::Offer,
) -> Plan {
    let mut w = patch::Writer::new();
    let mut warnings = patch::containers_and_volumes(&mut w, pod, offer);
    let (marker, hash) = (offer.marker.as_str(), offer.hash.as_str());
    let has = |key: &str, value: &str| pod.annotations.get(key) == Some(value);
    if has(INJECTED_ANNOTATION, marker) && has(INJECTED_HASH_ANNOTATION, hash) {
        // Reinvocation: whatever there was to say was said when the pod was first injected.
        warnings.clear();
    } else {
        let entries = [
            (INJECTED_ANNOTATION, marker),
            (INJECTED_HASH_ANNOTATION, hash),
        ];
        patch::injected_annotations(&mut w, pod, &entries);
    }
    Plan::Inject {
        binding: binding.metadata.name.clone().unwrap_or_default(),
        patch: w.finish(),
        warnings,
    }
}
