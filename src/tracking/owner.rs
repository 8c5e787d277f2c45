//! The workload that owns a pod, as a person would name it, and the command that gives its pods
//! a fresh injection.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The label the Deployment controller puts on its ReplicaSets' pods.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// A pod's owning workload: `Deployment/trainer`, `Job/train-42`, `Pod/debug`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Owner {
    /// The controlling owner of the pod; a ReplicaSet a Deployment made counts as that
    /// Deployment (its name is the Deployment's plus `-<pod-template-hash>`, so no read of the
    /// ReplicaSet is needed); a pod without an owner is its own.
    pub fn of(pod: &ObjectMeta) -> Owner {
        let refs = pod.owner_references.as_deref().unwrap_or_default();
        let Some(r) = refs
            .iter()
            .find(|r| r.controller == Some(true))
            .or(refs.first())
        else {
            return Owner {
                kind: "Pod".to_string(),
                name: pod.name.clone().unwrap_or_default(),
            };
        };
        let hash = pod.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH));
        let deployment = hash
            .filter(|_| r.kind == "ReplicaSet")
            .and_then(|h| r.name.strip_suffix(h.as_str())?.strip_suffix('-'));
        match deployment {
            Some(d) if !d.is_empty() => Owner {
                kind: "Deployment".to_string(),
                name: d.to_string(),
            },
            _ => Owner {
                kind: r.kind.clone(),
                name: r.name.clone(),
            },
        }
    }

    /// What gives the pods of this owner (named in `pods`) the webhook's current values. The
    /// webhook never changes a variable a container already sets, so a stale pod's own manifest
    /// cannot be re-applied: its controller must make a new pod from the template.
    pub fn fix(&self, namespace: &str, pods: &[String]) -> String {
        let (kind, name) = (self.kind.as_str(), self.name.as_str());
        match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" => format!(
                "kubectl rollout restart -n {namespace} {}/{name}",
                kind.to_ascii_lowercase()
            ),
            "Pod" => format!(
                "delete pod {name} (kubectl delete pod -n {namespace} {name}) and create it again from its manifest"
            ),
            "Job" => format!(
                "re-create job {name} from its manifest (kubectl delete job -n {namespace} {name}, then apply it again)"
            ),
            _ => format!(
                "kubectl delete pod -n {namespace} {} ({kind} {name} creates them again)",
                pods.join(" ")
            ),
        }
    }
}
