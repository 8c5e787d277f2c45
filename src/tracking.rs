//! Which opted-in pods track, and whether with what their binding would inject now.
//!
//! Pure: pod metadata (what a metadata-only watch or list gives) and the namespace's bindings in,
//! per-binding counts, the owners to restart and the PodsCurrent condition out. The controller
//! writes it to each binding's status; `check` and `explain` read pods the same way.

mod owner;

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

use crate::binding::{
    FALSE, INJECTED_ANNOTATION, INJECTED_HASH_ANNOTATION, MlflowWorkspaceBinding, PODS_CURRENT,
    PodCounts, TRACK_LABEL, TRUE,
};
pub use owner::Owner;

/// How many owners a PodsCurrent message names.
pub const OWNERS_SHOWN: usize = 5;

/// Where an opted-in pod stands with the binding that selects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodState {
    /// Injected by this binding with what it would inject now.
    Injected,
    /// Injected from an older generation or resolved URI, or by another binding.
    Stale,
    /// Carrying no injection at all.
    NotInjected,
}

impl PodState {
    pub const ALL: [PodState; 3] = [PodState::Injected, PodState::Stale, PodState::NotInjected];

    /// The status field's name; also the `state` label of `mlflow_operator_pods`.
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Injected => "injected",
            PodState::Stale => "stale",
            PodState::NotInjected => "notInjected",
        }
    }
}

/// What a pod's injected annotations say it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection<'a> {
    pub binding: &'a str,
    /// None when the annotation's generation is unreadable.
    pub generation: Option<i64>,
    /// [`INJECTED_HASH_ANNOTATION`]; pods injected by a release before it have none.
    pub hash: Option<&'a str>,
}

/// Reads `<binding>/<generation>[ (identity: ...)]` and the hash annotation.
pub fn injection(annotations: &BTreeMap<String, String>) -> Option<Injection<'_>> {
    let marker = annotations.get(INJECTED_ANNOTATION)?;
    let marker = marker.split(' ').next().unwrap_or_default();
    let (binding, generation) = marker.rsplit_once('/').unwrap_or((marker, ""));
    Some(Injection {
        binding,
        generation: generation.parse().ok(),
        hash: annotations
            .get(INJECTED_HASH_ANNOTATION)
            .map(String::as_str),
    })
}

/// Where `pod` stands with `binding`, the binding that selects it now.
pub fn state(pod: &ObjectMeta, binding: &MlflowWorkspaceBinding) -> PodState {
    let Some(got) = pod.annotations.as_ref().and_then(injection) else {
        return PodState::NotInjected;
    };
    let same_binding = Some(got.binding) == binding.metadata.name.as_deref();
    let same_generation = got.generation == Some(binding.metadata.generation.unwrap_or(0));
    // No hash: injected by a release that wrote none; the generation is all there is to go by.
    let same_uri = got.hash.is_none_or(|h| h == binding.injection_hash());
    if same_binding && same_generation && same_uri {
        PodState::Injected
    } else {
        PodState::Stale
    }
}

/// Whether the pod is opted in and still running its course (not being deleted).
pub fn is_tracked(pod: &ObjectMeta) -> bool {
    let opted_in = pod
        .labels
        .as_ref()
        .and_then(|l| l.get(TRACK_LABEL))
        .is_some_and(|v| v == "true");
    opted_in && pod.deletion_timestamp.is_none()
}

/// The binding the webhook would pick for this pod now, Ready or not.
pub fn selecting<'a>(
    pod: &ObjectMeta,
    namespace: &str,
    bindings: &[&'a MlflowWorkspaceBinding],
) -> Option<&'a MlflowWorkspaceBinding> {
    let (labels, annotations) = (borrowed(&pod.labels), borrowed(&pod.annotations));
    crate::inject::binding_of(&labels, &annotations, namespace, bindings).ok()
}

fn borrowed(map: &Option<BTreeMap<String, String>>) -> BTreeMap<&str, &str> {
    map.iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// One owner's pods that are not current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    pub owner: Owner,
    pub stale: usize,
    pub not_injected: usize,
    /// The pods' names, sorted.
    pub pods: Vec<String>,
}

/// The pods one binding selects, counted, with the owners of those that are not current.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub counts: PodCounts,
    /// Sorted by owner.
    pub behind: Vec<Behind>,
}

/// Counts the opted-in pods among `pods` (one namespace's) that `binding` selects, given every
/// binding of that namespace.
/// `pods` may build each pod's metadata as it goes: the controller keeps compact copies, and a
/// namespace of 60,000 pods built at once took the operator past its memory limit.
pub fn report<P: Borrow<ObjectMeta>>(
    binding: &MlflowWorkspaceBinding,
    pods: impl IntoIterator<Item = P>,
    bindings: &[&MlflowWorkspaceBinding],
) -> Report {
    let namespace = binding.metadata.namespace.as_deref().unwrap_or_default();
    let this = binding.metadata.name.as_deref();
    let mut counts = PodCounts::default();
    let mut behind: BTreeMap<Owner, Behind> = BTreeMap::new();
    for pod in pods {
        let pod = pod.borrow();
        if !is_tracked(pod) {
            continue;
        }
        let selected = selecting(pod, namespace, bindings);
        if selected.and_then(|b| b.metadata.name.as_deref()) != this {
            continue;
        }
        let state = state(pod, binding);
        match state {
            PodState::Injected => counts.injected += 1,
            PodState::Stale => counts.stale += 1,
            PodState::NotInjected => counts.not_injected += 1,
        }
        if state != PodState::Injected {
            let owner = Owner::of(pod);
            let entry = behind.entry(owner.clone()).or_insert_with(|| Behind {
                owner,
                stale: 0,
                not_injected: 0,
                pods: Vec::new(),
            });
            *if state == PodState::Stale {
                &mut entry.stale
            } else {
                &mut entry.not_injected
            } += 1;
            entry.pods.push(pod.name.clone().unwrap_or_default());
        }
    }
    counts.summary = format!("{}/{}", counts.injected, counts.total());
    let mut behind: Vec<Behind> = behind.into_values().collect();
    behind.iter_mut().for_each(|b| b.pods.sort());
    Report { counts, behind }
}

impl Behind {
    /// `Deployment/trainer (2 stale, 1 not injected)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.stale > 0 {
            parts.push(format!("{} stale", self.stale));
        }
        if self.not_injected > 0 {
            parts.push(format!("{} not injected", self.not_injected));
        }
        format!("{} ({})", self.owner, parts.join(", "))
    }
}

/// `1 pod` / `2 pods`.
pub fn pods(n: i64) -> String {
    if n == 1 {
        "1 pod".to_string()
    } else {
        format!("{n} pods")
    }
}

/// The reason and message of PodsCurrent for a report; status "True" when nothing is behind.
pub fn verdict(report: &Report, namespace: &str) -> (&'static str, &'static str, String) {
    let c = &report.counts;
    if report.behind.is_empty() {
        let message = match c.injected {
            0 => "no opted-in pod selects this binding".to_string(),
            n => format!(
                "all {} this binding selects carry its current injection",
                pods(n)
            ),
        };
        return (TRUE, "PodsCurrent", message);
    }
    let reason = if c.stale > 0 {
        "PodsStale"
    } else {
        "PodsNotInjected"
    };
    let shown = &report.behind[..report.behind.len().min(OWNERS_SHOWN)];
    let owners: Vec<String> = shown.iter().map(Behind::describe).collect();
    let fixes: Vec<String> = shown
        .iter()
        .map(|b| b.owner.fix(namespace, &b.pods))
        .collect();
    let more = match report.behind.len() - shown.len() {
        0 => String::new(),
        n => format!(" and {n} more (mlflow-operator check -n {namespace} lists them all)"),
    };
    let message = format!(
        "{} of {} do not carry this binding's current injection ({} stale: injected from an older generation or tracking URI; {} not injected): {}{more}. Fix: {}",
        c.stale + c.not_injected,
        pods(c.total()),
        c.stale,
        c.not_injected,
        owners.join(", "),
        fixes.join("; "),
    );
    (FALSE, reason, message)
}

/// The PodsCurrent condition for `report`, keeping `old`'s transition time while its status
/// does not change.
pub fn condition(
    report: &Report,
    binding: &MlflowWorkspaceBinding,
    old: Option<&Condition>,
    now: jiff::Timestamp,
) -> Condition {
    let namespace = binding.metadata.namespace.as_deref().unwrap_or_default();
    let (status, reason, message) = verdict(report, namespace);
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)),
    };
    Condition {
        type_: PODS_CURRENT.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: binding.metadata.generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests;
