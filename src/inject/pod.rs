//! Reading the raw pod JSON: the few fields the planner needs, validated, never deserialized into
//! the Kubernetes types (unknown fields must survive untouched).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::binding::{SKIP_CONTAINERS_ANNOTATION, TRACK_LABEL};

mod sparse;
mod tree;

pub use sparse::{EnvNames, parse as parse_pod, seed as pod_seed};
pub(crate) use tree::read as read_tree;

/// The label azure-workload-identity's own webhook acts on.
pub(crate) const AZWI_USE_LABEL: &str = "azure.workload.identity/use";

/// The parts of a pod (or pod template) the planner reads, borrowed from the raw JSON.
#[derive(Debug)]
pub(crate) struct PodView<'a> {
    pub labels: Strings<'a>,
    /// String-valued annotations only ([`Strings::has_key`]: any value).
    pub annotations: Strings<'a>,
    /// `metadata` is an object (absent or null: false).
    pub has_metadata: bool,
    /// `metadata.annotations` is an object (absent or null: false).
    pub has_annotations: bool,
    pub service_account: &'a str,
    /// The controlling owner (`ownerReferences` entry with `controller: true`), if any.
    pub owner: Option<Owner<'a>>,
    pub containers: Vec<ContainerView<'a>>,
    /// `spec.volumes`, None when absent or null.
    pub volumes: Option<Entries<'a>>,
    pub opt_outs: OptOuts<'a>,
}

impl PodView<'_> {
    /// The containers the planner injects: all but those the pod opts out.
    pub(crate) fn injected_containers(&self) -> impl Iterator<Item = &ContainerView<'_>> {
        self.containers
            .iter()
            .filter(|c| !self.opt_outs.skip_containers.contains(c.name))
    }
}

/// What the pod asks the planner to leave to others, read once from its metadata.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct OptOuts<'a> {
    /// Containers named by [`SKIP_CONTAINERS_ANNOTATION`].
    pub skip_containers: BTreeSet<&'a str>,
    /// The pod carries azure-workload-identity's label: its webhook injects the identity, and
    /// two would fight.
    pub azure_workload_identity: bool,
}

impl<'a> OptOuts<'a> {
    fn of(labels: Strings<'a>, annotations: Strings<'a>) -> Self {
        Self {
            skip_containers: annotations
                .get(SKIP_CONTAINERS_ANNOTATION)
                .map(parse_skip_containers)
                .unwrap_or_default(),
            azure_workload_identity: labels.get(AZWI_USE_LABEL) == Some("true"),
        }
    }
}

/// The entries of one of the lists the planner looks entries up in (env, mounts, volumes): the
/// pod's own, or those a reader kept of them ([`EnvNames`]).
pub(crate) type Entries<'a> = Cow<'a, [Value]>;

/// The string-valued entries of one of the pod's maps (labels, annotations), read in place from
/// whichever tree the pod was read into: building a map of them cost more than the few lookups
/// the planner makes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Strings<'a> {
    #[default]
    Absent,
    Json(&'a serde_json::Map<String, Value>),
    /// Of sonic-rs's tree, whose objects keep a repeated key: the last one counts, as in
    /// serde_json's maps.
    Tree(&'a sonic_rs::Object),
}

impl<'a> Strings<'a> {
    fn of_json(map: Option<&'a serde_json::Map<String, Value>>) -> Self {
        map.map_or(Self::Absent, Self::Json)
    }

    /// The value of `key`, when it is a string.
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        use sonic_rs::JsonValueTrait;
        match *self {
            Self::Absent => None,
            Self::Json(m) => m.get(key)?.as_str(),
            Self::Tree(o) => tree::last(o, key)?.as_str(),
        }
    }

    /// Whether the map holds `key`, with any value.
    pub(crate) fn has_key(&self, key: &str) -> bool {
        match *self {
            Self::Absent => false,
            Self::Json(m) => m.contains_key(key),
            Self::Tree(o) => o.contains_key(&key),
        }
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let entries = match *self {
            Self::Json(m) => Some(m),
            _ => None,
        };
        let entries = entries.into_iter().flatten();
        entries.filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
    }
}

/// The object that controls a pod: a ReplicaSet, Job, StatefulSet, a training operator's job...
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Owner<'a> {
    pub kind: &'a str,
    pub name: &'a str,
}

/// The controller among `metadata.ownerReferences`; entries of other shapes are ignored (the
/// API server validates them, and a template has none).
fn controller_owner(metadata: Option<&serde_json::Map<String, Value>>) -> Option<Owner<'_>> {
    let refs = metadata?.get("ownerReferences")?.as_array()?;
    let controller = refs
        .iter()
        .find(|r| r.get("controller") == Some(&Value::Bool(true)))?;
    Some(Owner {
        kind: controller.get("kind")?.as_str()?,
        name: controller.get("name")?.as_str()?,
    })
}

/// One entry of `spec.containers` or `spec.initContainers`.
#[derive(Debug)]
pub(crate) struct ContainerView<'a> {
    /// `containers` or `initContainers`.
    pub list: &'static str,
    /// Index in that list of the raw JSON (patch paths use it).
    pub index: usize,
    pub name: &'a str,
    /// `image` as the spec writes it, if a string.
    pub image: Option<&'a str>,
    /// `env`, None when absent or null.
    pub env: Option<Entries<'a>>,
    /// `volumeMounts`, None when absent or null.
    pub mounts: Option<Entries<'a>>,
    /// The container has a non-empty `envFrom`.
    pub has_env_from: bool,
}

/// An optional array field: absent or null is None, an array is Some, anything else an error.
fn optional_array<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
    at: impl fmt::Display,
) -> Result<Option<&'a Vec<Value>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(format!("{at}{key} must be an array")),
    }
}

/// An optional object field: absent or null is None, an object is Some, anything else an error.
fn optional_object<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
    at: impl fmt::Display,
) -> Result<Option<&'a serde_json::Map<String, Value>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("{at}{key} must be an object")),
    }
}

/// Where a container's fields are, `spec.<list>[<index>].`, written only into an error: every
/// container formatting it up front cost as much as reading its fields.
struct Container(&'static str, usize);

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec.{}[{}].", self.0, self.1)
    }
}

/// Reads and validates the pod; the error says what is wrong with it.
pub(crate) fn read(pod: &Value) -> Result<PodView<'_>, String> {
    let Value::Object(root) = pod else {
        return Err("the object is not a JSON object".to_string());
    };
    let metadata = optional_object(root, "metadata", "")?;
    let labels = match metadata {
        Some(m) => optional_object(m, "labels", "metadata.")?,
        None => None,
    };
    let annotations = match metadata {
        Some(m) => optional_object(m, "annotations", "metadata.")?,
        None => None,
    };
    let Some(spec) = optional_object(root, "spec", "")? else {
        return Err("spec is missing".to_string());
    };
    let mut containers = Vec::new();
    for list in ["containers", "initContainers"] {
        let entries = match optional_array(spec, list, "spec.")? {
            Some(entries) => entries,
            None if list == "containers" => return Err("spec.containers is missing".to_string()),
            None => continue,
        };
        for (index, entry) in entries.iter().enumerate() {
            let at = Container(list, index);
            let Value::Object(c) = entry else {
                return Err(format!("spec.{list}[{index}] must be an object"));
            };
            let Some(name) = c.get("name").and_then(Value::as_str) else {
                return Err(format!("{at}name must be a string"));
            };
            let has_env_from = optional_array(c, "envFrom", &at)?.is_some_and(|a| !a.is_empty());
            containers.push(ContainerView {
                list,
                index,
                name,
                image: c.get("image").and_then(Value::as_str),
                env: optional_array(c, "env", &at)?.map(|e| Cow::Borrowed(&e[..])),
                mounts: optional_array(c, "volumeMounts", &at)?.map(|m| Cow::Borrowed(&m[..])),
                has_env_from,
            });
        }
    }
    let (labels, annotations_map) = (Strings::of_json(labels), Strings::of_json(annotations));
    Ok(PodView {
        opt_outs: OptOuts::of(labels, annotations_map),
        labels,
        annotations: annotations_map,
        has_metadata: metadata.is_some(),
        has_annotations: annotations.is_some(),
        service_account: service_account_name(pod),
        owner: controller_owner(metadata),
        containers,
        volumes: optional_array(spec, "volumes", "spec.")?.map(|v| Cow::Borrowed(&v[..])),
    })
}

/// The ServiceAccount a pod (or pod template) runs as: `spec.serviceAccountName`, else the
/// deprecated `spec.serviceAccount`, else `default`, as the API server decides it. Empty counts
/// as unset.
pub fn service_account_name(pod: &Value) -> &str {
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| pod.get("spec")?.get(*k)?.as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
}

/// Whether a pod (or pod template) carries the opt-in label; the webhook's objectSelector makes
/// the same choice inside the cluster.
pub fn is_opted_in(pod: &Value) -> bool {
    pod.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get(TRACK_LABEL))
        .and_then(Value::as_str)
        == Some("true")
}

/// Parses `mlflow-operator.io/skip-containers`: names separated by ',' or ';', trimmed, empties
/// dropped.
fn parse_skip_containers(value: &str) -> BTreeSet<&str> {
    value
        .split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skip_containers_parsing() {
        for (input, want) in [
            ("", vec![]),
            ("a", vec!["a"]),
            ("a,b", vec!["a", "b"]),
            ("a;b", vec!["a", "b"]),
            (" a , b ;c ", vec!["a", "b", "c"]),
            ("a,,;b,", vec!["a", "b"]),
            (" ; , ", vec![]),
        ] {
            let got: Vec<&str> = parse_skip_containers(input).into_iter().collect();
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn opt_outs_are_read_once_from_labels_and_annotations() {
        let skip = SKIP_CONTAINERS_ANNOTATION;
        // (case, metadata, skipped containers, azure-workload-identity)
        for (case, metadata, skipped, azwi) in [
            ("none", json!({}), vec![], false),
            (
                "skip list",
                json!({"annotations": {skip: "a; b"}}),
                vec!["a", "b"],
                false,
            ),
            (
                "skip list not a string",
                json!({"annotations": {skip: 1}}),
                vec![],
                false,
            ),
            (
                "azure-workload-identity",
                json!({"labels": {AZWI_USE_LABEL: "true"}}),
                vec![],
                true,
            ),
            (
                "azure-workload-identity off",
                json!({"labels": {AZWI_USE_LABEL: "false"}}),
                vec![],
                false,
            ),
            (
                "as an annotation it is no opt-out",
                json!({"annotations": {AZWI_USE_LABEL: "true"}}),
                vec![],
                false,
            ),
        ] {
            let raw = json!({"metadata": metadata, "spec": {"containers": [{"name": "a"}, {"name": "c"}]}});
            let pod = read(&raw).unwrap();
            let got: Vec<&str> = pod.opt_outs.skip_containers.iter().copied().collect();
            assert_eq!(got, skipped, "{case}");
            assert_eq!(pod.opt_outs.azure_workload_identity, azwi, "{case}");
            let injected: Vec<&str> = pod.injected_containers().map(|c| c.name).collect();
            let want: Vec<&str> = ["a", "c"]
                .into_iter()
                .filter(|n| !skipped.contains(n))
                .collect();
            assert_eq!(injected, want, "{case}");
        }
    }

    #[test]
    fn read_validates_the_pod() {
        let ok = |v: Value| read(&v).map(|_| ());
        for (pod, want_err) in [
            (json!({"spec": {"containers": []}}), None),
            (
                json!({"metadata": null, "spec": {"containers": [{"name": "a", "env": null}]}}),
                None,
            ),
            (json!([]), Some("not a JSON object")),
            (json!("pod"), Some("not a JSON object")),
            (json!({}), Some("spec is missing")),
            (json!({"spec": {}}), Some("spec.containers is missing")),
            (
                json!({"spec": {"containers": {}}}),
                Some("spec.containers must be an array"),
            ),
            (
                json!({"spec": {"containers": [{}]}}),
                Some("spec.containers[0].name must be a string"),
            ),
            (
                json!({"spec": {"containers": [{"name": 3}]}}),
                Some("spec.containers[0].name must be a string"),
            ),
            (
                json!({"spec": {"containers": [7]}}),
                Some("spec.containers[0] must be an object"),
            ),
            (
                json!({"spec": {"containers": [], "initContainers": [{"image": "x"}]}}),
                Some("spec.initContainers[0].name"),
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "env": {}}]}}),
                Some("spec.containers[0].env must be an array"),
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "volumeMounts": "x"}]}}),
                Some("volumeMounts must be an array"),
            ),
            (
                json!({"spec": {"containers": [], "volumes": {}}}),
                Some("spec.volumes must be an array"),
            ),
            (
                json!({"metadata": [], "spec": {"containers": []}}),
                Some("metadata must be an object"),
            ),
            (
                json!({"metadata": {"annotations": "x"}, "spec": {"containers": []}}),
                Some("metadata.annotations must be an object"),
            ),
        ] {
            match (ok(pod.clone()), want_err) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) => assert!(e.contains(want), "{pod}: {e}"),
                (got, want) => panic!("{pod}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn read_collects_containers_labels_and_service_account() {
        let pod = json!({
            "metadata": {"labels": {"app": "x", "n": 1}, "annotations": {"a": "b", "z": true}},
            "spec": {
                "serviceAccountName": "trainer",
                "initContainers": [{"name": "init", "restartPolicy": "Always", "envFrom": [{"secretRef": {"name": "s"}}]}],
                "containers": [{"name": "main", "env": [], "volumeMounts": []}],
            }
        });
        let v = read(&pod).unwrap();
        assert_eq!(v.labels.iter().collect::<Vec<_>>(), vec![("app", "x")]);
        assert_eq!(v.annotations.iter().collect::<Vec<_>>(), vec![("a", "b")]);
        assert!(v.annotations.has_key("z") && v.annotations.get("z").is_none());
        assert_eq!(v.labels.get("n"), None);
        assert_eq!(v.service_account, "trainer");
        let names: Vec<_> = v
            .containers
            .iter()
            .map(|c| (c.list, c.index, c.name, c.has_env_from))
            .collect();
        assert_eq!(
            names,
            vec![
                ("containers", 0, "main", false),
                ("initContainers", 0, "init", true)
            ]
        );
        assert!(v.containers[0].env.is_some() && v.containers[1].env.is_none());
    }

    #[test]
    fn service_account_name_is_decided_as_the_api_server_does() {
        for (spec, want) in [
            (json!({"containers": []}), "default"),
            (json!({"serviceAccountName": ""}), "default"),
            (json!({"serviceAccountName": null}), "default"),
            (json!({"serviceAccountName": 7}), "default"),
            (json!({"serviceAccountName": "trainer"}), "trainer"),
            (json!({"serviceAccount": "legacy"}), "legacy"),
            (
                json!({"serviceAccountName": "", "serviceAccount": "legacy"}),
                "legacy",
            ),
            (
                json!({"serviceAccountName": "new", "serviceAccount": "legacy"}),
                "new",
            ),
        ] {
            assert_eq!(service_account_name(&json!({"spec": spec})), want, "{spec}");
        }
        for pod in [json!(null), json!({}), json!({"spec": []})] {
            assert_eq!(service_account_name(&pod), "default", "{pod}");
        }
    }

    #[test]
    fn opt_in_label() {
        for (metadata, want) in [
            (
                json!({"labels": {"mlflow-operator.io/track": "true"}}),
                true,
            ),
            (
                json!({"labels": {"mlflow-operator.io/track": "True"}}),
                false,
            ),
            (json!({"labels": {"mlflow-operator.io/track": true}}), false),
            (json!({"labels": {"app": "x"}}), false),
            (
                json!({"annotations": {"mlflow-operator.io/track": "true"}}),
                false,
            ),
            (json!({}), false),
        ] {
            assert_eq!(
                is_opted_in(&json!({"metadata": metadata})),
                want,
                "{metadata}"
            );
        }
    }
}
