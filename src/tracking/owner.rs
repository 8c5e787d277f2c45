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

/// At most this many pod names in a fix: a custom controller's thousands of stale pods would
/// otherwise all be named in a binding's status message.
const PODS_NAMED: usize = 10;

fn named(pods: &[String]) -> String {
    let shown = pods[..pods.len().min(PODS_NAMED)].join(" ");
    match pods.len().saturating_sub(PODS_NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
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
                named(pods)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fix_names_at_most_ten_pods() {
        let pods = |n: usize| (0..n).map(|i| format!("p{i}")).collect::<Vec<_>>();
        for (n, want) in [
            (1, "p0"),
            (10, "p0 p1 p2 p3 p4 p5 p6 p7 p8 p9"),
            (11, "p0 p1 p2 p3 p4 p5 p6 p7 p8 p9 and 1 more"),
            (5000, "p0 p1 p2 p3 p4 p5 p6 p7 p8 p9 and 4990 more"),
        ] {
            let owner = Owner {
                kind: "RayCluster".into(),
                name: "r".into(),
            };
            assert_eq!(
                owner.fix("team", &pods(n)),
                format!("kubectl delete pod -n team {want} (RayCluster r creates them again)"),
                "{n} pods"
            );
        }
    }
}
