//! Choosing the binding of a pod: by annotation, else by podSelector (Kubernetes label-selector
//! semantics), then checking that it is Ready.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::pod::{PodView, Strings};
use super::{Refusal, RefusalReason};
use crate::binding::{BINDING_ANNOTATION, MlflowWorkspaceBinding, NotReady, TRACK_LABEL};

/// Labels or annotations looked up by key: a map of an object's (the controller, `explain`) or
/// the pod's JSON read in place (the planner), under one set of rules.
pub(crate) trait Lookup {
    fn lookup(&self, key: &str) -> Option<&str>;
}

impl Lookup for BTreeMap<&str, &str> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).copied()
    }
}

impl Lookup for Strings<'_> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

fn name(b: &MlflowWorkspaceBinding) -> &str {
    b.metadata.name.as_deref().unwrap_or("")
}

/// Kubernetes semantics of one matchExpressions requirement; an unknown operator, or values that
/// do not fit the operator, match nothing (the API server would call the selector invalid).
pub(crate) fn requirement_matches(req: &LabelSelectorRequirement, labels: &impl Lookup) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.lookup(req.key.as_str());
    match req.operator.as_str() {
        "In" if !values.is_empty() => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" if !values.is_empty() => !value.is_some_and(|v| values.iter().any(|w| w == v)),
        "Exists" if values.is_empty() => value.is_some(),
        "DoesNotExist" if values.is_empty() => value.is_none(),
        _ => false,
    }
}

/// Whether a podSelector matches the labels; None or an empty selector matches every pod.
pub(crate) fn selector_matches(selector: Option<&LabelSelector>, labels: &impl Lookup) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.lookup(k.as_str()) == Some(v.as_str()));
    labels_match
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, labels))
}

/// Names of the bindings, sorted, for messages.
fn names(bindings: &[&MlflowWorkspaceBinding]) -> String {
    let mut names: Vec<&str> = bindings.iter().map(|b| name(b)).collect();
    names.sort_unstable();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The binding of the pod, when it is Ready for injection.
pub(crate) fn choose_ready<'a>(
    pod: &PodView<'_>,
    namespace: &str,
    bindings: &[&'a MlflowWorkspaceBinding],
) -> Result<&'a MlflowWorkspaceBinding, Refusal> {
    let b = choose(&pod.labels, &pod.annotations, namespace, bindings)?;
    match b.readiness() {
        Ok(_) => Ok(b),
        Err(why) => Err(not_ready(b, why, namespace)),
    }
}

/// Picks the binding of a pod with these labels and annotations among the namespace's bindings,
/// Ready or not (the controller counts a not-Ready binding's pods as its own).
pub(crate) fn choose<'a>(
    labels: &impl Lookup,
    annotations: &impl Lookup,
    namespace: &str,
    bindings: &[&'a MlflowWorkspaceBinding],
) -> Result<&'a MlflowWorkspaceBinding, Refusal> {
    if let Some(wanted) = annotations
        .lookup(BINDING_ANNOTATION)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        return bindings.iter().copied().find(|b| name(b) == wanted).ok_or_else(|| {
            let message = format!(
                "mlflow-operator: the pod names MlflowWorkspaceBinding \"{wanted}\" (annotation {BINDING_ANNOTATION}) but namespace \"{namespace}\" has no binding of that name; bindings in \"{namespace}\": {}. Fix: create binding \"{wanted}\" in namespace \"{namespace}\", or set the annotation to an existing binding",
                names(bindings)
            );
            Refusal::new(RefusalReason::MissingBinding, message, None)
        });
    }
    let candidates: Vec<&MlflowWorkspaceBinding> = bindings
        .iter()
        .copied()
        .filter(|b| selector_matches(b.spec.pod_selector.as_ref(), labels))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => {
            let message = format!(
                "mlflow-operator: no MlflowWorkspaceBinding in namespace \"{namespace}\" matches this pod (label {TRACK_LABEL}: \"true\"); bindings in \"{namespace}\": {}. Fix: create a binding in namespace \"{namespace}\", widen the podSelector of one, name one with annotation {BINDING_ANNOTATION}, or remove the label {TRACK_LABEL}",
                names(bindings)
            );
            Err(Refusal::new(RefusalReason::NoBinding, message, None))
        }
        many => {
            let message = format!(
                "mlflow-operator: {} MlflowWorkspaceBindings in namespace \"{namespace}\" match this pod: {}. Fix: set annotation {BINDING_ANNOTATION} on the pod template, or make the podSelectors disjoint",
                many.len(),
                names(many)
            );
            Err(Refusal::new(RefusalReason::Ambiguous, message, None))
        }
    }
}

/// Why a binding is not Ready, as a refusal.
fn not_ready(b: &MlflowWorkspaceBinding, why: NotReady<'_>, namespace: &str) -> Refusal {
    let n = name(b);
    let why = match why {
        NotReady::NoStatus => {
            "it has no status yet (the controller has not resolved it)".to_string()
        }
        NotReady::NotTrue(c) => {
            let mut why = format!("Ready is {}", c.status);
            if !c.reason.is_empty() {
                why.push_str(&format!(", reason {}", c.reason));
            }
            if !c.message.is_empty() {
                why.push_str(&format!(": {}", c.message));
            }
            why
        }
        NotReady::NoCondition => "it has no Ready condition yet".to_string(),
        NotReady::NoTrackingUri => "its status has no trackingUri yet".to_string(),
        NotReady::Behind {
            observed,
            generation,
        } => format!(
            "its status describes generation {} but the binding is at generation {} (the controller has not caught up yet)",
            observed.map_or("none".to_string(), |g| g.to_string()),
            generation.unwrap_or(0)
        ),
    };
    let message = format!(
        "mlflow-operator: MlflowWorkspaceBinding \"{n}\" in namespace \"{namespace}\" is not Ready: {why}. See kubectl describe mwb {n} -n {namespace}"
    );
    Refusal::new(RefusalReason::NotReady, message, Some(n.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_selector_requirements() {
        let labels: BTreeMap<&str, &str> = [("team", "a"), ("tier", "gpu")].into();
        for (r, want) in [
            (req("team", "In", &["a", "b"]), true),
            (req("team", "In", &["b"]), false),
            (req("missing", "In", &["a"]), false),
            (req("team", "In", &[]), false),
            (req("team", "NotIn", &["b"]), true),
            (req("team", "NotIn", &["a"]), false),
            (req("missing", "NotIn", &["a"]), true),
            (req("team", "NotIn", &[]), false),
            (req("team", "Exists", &[]), true),
            (req("missing", "Exists", &[]), false),
            (req("team", "Exists", &["a"]), false),
            (req("missing", "DoesNotExist", &[]), true),
            (req("team", "DoesNotExist", &[]), false),
            (req("team", "Equals", &["a"]), false),
            (req("team", "in", &["a"]), false),
        ] {
            assert_eq!(requirement_matches(&r, &labels), want, "{r:?}");
        }
    }

    #[test]
    fn label_selector_matching() {
        let labels: BTreeMap<&str, &str> = [("team", "a"), ("tier", "gpu")].into();
        let ml = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        for (sel, want) in [
            (None, true),
            (Some(LabelSelector::default()), true),
            (
                Some(LabelSelector {
                    match_labels: ml(&[]),
                    match_expressions: Some(vec![]),
                }),
                true,
            ),
            (
                Some(LabelSelector {
                    match_labels: ml(&[("team", "a")]),
                    ..Default::default()
                }),
                true,
            ),
            (
                Some(LabelSelector {
                    match_labels: ml(&[("team", "a"), ("tier", "cpu")]),
                    ..Default::default()
                }),
                false,
            ),
            (
                Some(LabelSelector {
                    match_labels: ml(&[("other", "a")]),
                    ..Default::default()
                }),
                false,
            ),
            (
                Some(LabelSelector {
                    match_labels: ml(&[("team", "a")]),
                    match_expressions: Some(vec![req("tier", "In", &["gpu"])]),
                }),
                true,
            ),
            (
                Some(LabelSelector {
                    match_labels: ml(&[("team", "a")]),
                    match_expressions: Some(vec![req("tier", "Bogus", &[])]),
                }),
                false,
            ),
        ] {
            assert_eq!(selector_matches(sel.as_ref(), &labels), want, "{sel:?}");
        }
    }
}
