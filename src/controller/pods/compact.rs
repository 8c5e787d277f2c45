//! A labelled pod as the controller keeps it in memory. A slimmed `ObjectMeta` still cost about
//! 1.8 KiB a pod (each label or annotation map is a B-tree node sized for eleven entries): with
//! 10,000 pods the operator grew 17 MiB. Boxed slices of what is read cost a fifth of that.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::PartialObjectMeta;

use crate::webhook::Keyed;

type Pairs = Box<[(Box<str>, Box<str>)]>;

/// Name, namespace, labels, the annotations in `kept`, the controlling owner and whether the
/// pod is being deleted: everything [`crate::tracking`] reads of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactPod {
    namespace: Box<str>,
    name: Box<str>,
    labels: Pairs,
    annotations: Pairs,
    /// (kind, name) of the controlling owner reference, or of the first one.
    owner: Option<(Box<str>, Box<str>)>,
    deleting: Option<Time>,
}

fn pairs(map: Option<BTreeMap<String, String>>, keep: impl Fn(&str) -> bool) -> Pairs {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
        .collect()
}

fn map(pairs: &Pairs) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

impl CompactPod {
    /// Keeps of `pod` what the controller reads, and of its annotations those in `kept`.
    pub fn new(pod: PartialObjectMeta<Pod>, kept: &[&str]) -> Self {
        let m = pod.metadata;
        let refs = m.owner_references.unwrap_or_default();
        let owner = refs
            .iter()
            .find(|r| r.controller == Some(true))
            .or(refs.first())
            .map(|r| (r.kind.as_str().into(), r.name.as_str().into()));
        Self {
            namespace: m.namespace.unwrap_or_default().into_boxed_str(),
            name: m.name.unwrap_or_default().into_boxed_str(),
            labels: pairs(m.labels, |_| true),
            annotations: pairs(m.annotations, |k| kept.contains(&k)),
            owner,
            deleting: m.deletion_timestamp,
        }
    }

    /// The metadata [`crate::tracking`] reads, built for one count and dropped after it.
    pub fn meta(&self) -> ObjectMeta {
        let owner = self.owner.as_ref().map(|(kind, name)| {
            vec![OwnerReference {
                kind: kind.to_string(),
                name: name.to_string(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        ObjectMeta {
            namespace: Some(self.namespace.to_string()),
            name: Some(self.name.to_string()),
            labels: map(&self.labels),
            annotations: map(&self.annotations),
            owner_references: owner,
            deletion_timestamp: self.deleting.clone(),
            ..Default::default()
        }
    }
}

impl Keyed for CompactPod {
    fn namespace_key(&self) -> &str {
        &self.namespace
    }

    fn name_key(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::Owner;
    use serde_json::json;

    fn pod(owners: serde_json::Value) -> PartialObjectMeta<Pod> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {
                "name": "trainer-7d4b9-x2x", "namespace": "team", "uid": "u",
                "labels": {"app": "trainer", "pod-template-hash": "7d4b9"},
                "annotations": {"mlflow-operator.io/injected": "fraud/2", "other": "x".repeat(4096)},
                "ownerReferences": owners,
                "managedFields": [{"manager": "kubectl"}],
            }
        }))
        .unwrap()
    }

    #[test]
    fn what_tracking_reads_survives_and_nothing_else() {
        let rs = json!([
            {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "trainer-7d4b9", "uid": "2", "controller": true},
        ]);
        let full = pod(rs);
        let compact = CompactPod::new(full.clone(), &["mlflow-operator.io/injected"]);
        let meta = compact.meta();
        assert_eq!(meta.labels, full.metadata.labels);
        assert_eq!(
            meta.annotations
                .clone()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [("mlflow-operator.io/injected".into(), "fraud/2".into())]
        );
        assert_eq!(Owner::of(&meta), Owner::of(&full.metadata));
        assert_eq!(
            (compact.namespace_key(), compact.name_key()),
            ("team", "trainer-7d4b9-x2x")
        );
        assert!(meta.managed_fields.is_none() && meta.uid.is_none());
    }

    #[test]
    fn without_a_controller_the_first_owner_counts() {
        let owners = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "1"}]);
        let meta = CompactPod::new(pod(owners), &[]).meta();
        assert_eq!(Owner::of(&meta).to_string(), "Job/j");
        let none = CompactPod::new(pod(json!([])), &[]).meta();
        assert_eq!(Owner::of(&none).to_string(), "Pod/trainer-7d4b9-x2x");
    }
}
