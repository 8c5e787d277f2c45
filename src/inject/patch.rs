//! The JSON patch of a pod: add-if-absent merging of env entries, volume mounts and volumes, and
//! the injected annotation. Nothing the pod already has is ever changed.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::{Value, json};

use super::pod::{ContainerView, PodView};
use super::values::{Desired, env_name};

pub(crate) const TRACKING_URI: &str = "MLFLOW_TRACKING_URI";
pub(crate) const CURRENT_CLOUD: &str = "AZUREML_CURRENT_CLOUD";

/// A pointer from unescaped tokens; RFC 6901 escaping (`~` -> `~0`, `/` -> `~1`) happens on output.
pub(crate) fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

pub(crate) fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// Ops that append `items` to the array at `tokens`: the whole array when it is absent, else one
/// `add .../-` per item.
pub(crate) fn append(tokens: &[&str], present: bool, items: Vec<Value>) -> Vec<PatchOperation> {
    if items.is_empty() {
        Vec::new()
    } else if !present {
        vec![add(tokens, Value::Array(items))]
    } else {
        let mut end = tokens.to_vec();
        end.push("-");
        items.into_iter().map(|v| add(&end, v)).collect()
    }
}

/// The result of merging wanted entries into existing ones.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Merge {
    /// Entries to add, in order.
    pub add: Vec<Value>,
    /// Wanted entries the list already holds in another form, by their `Slot::reported` field.
    pub conflicts: Vec<String>,
}

/// A kind of list entry: when an existing entry takes the place of a wanted one, and which
/// field names it in a conflict warning.
pub(crate) struct Slot {
    taken_by: fn(existing: &Value, wanted: &Value) -> bool,
    reported: &'static str,
    /// When an entry is taken exactly by another with the same key: the key, so long lists
    /// (a container with 200 env entries) are read once for all wanted entries instead of once
    /// per wanted entry.
    key: Option<fn(&Value) -> Option<&str>>,
}

/// Env entries, by name.
pub(crate) const ENV: Slot = Slot {
    taken_by: |e, w| env_name(e).is_some() && env_name(e) == env_name(w),
    reported: "name",
    key: Some(env_name),
};
/// Volume mounts, by name or mountPath: two mounts at one path make the pod invalid.
pub(crate) const MOUNT: Slot = Slot {
    taken_by: |e, w| e.get("name") == w.get("name") || e.get("mountPath") == w.get("mountPath"),
    reported: "mountPath",
    key: None,
};
/// Pod volumes, by name.
pub(crate) const VOLUME: Slot = Slot {
    taken_by: |e, w| e.get("name") == w.get("name"),
    reported: "name",
    key: None,
};

/// For each wanted entry, the first existing entry that takes its slot. A keyed slot reads the
/// existing list once, comparing keys with the few wanted ones: hashing all 200 names of a
/// long env list cost more than the comparisons.
fn taken<'e>(slot: &Slot, existing: &'e [Value], wanted: &[&Value]) -> Vec<Option<&'e Value>> {
    let Some(key) = slot.key else {
        let first = |w: &&Value| existing.iter().find(|e| (slot.taken_by)(e, w));
        return wanted.iter().map(first).collect();
    };
    let keys: Vec<Option<&str>> = wanted.iter().map(|w| key(w)).collect();
    let mut found = vec![None; wanted.len()];
    for e in existing {
        let Some(k) = key(e) else { continue };
        for (slot, want) in found.iter_mut().zip(&keys) {
            if slot.is_none() && *want == Some(k) {
                *slot = Some(e);
            }
        }
    }
    found
}

/// Add-if-absent: a wanted entry whose slot is taken is never added; an identical entry is
/// silent, a different one is a conflict.
pub(crate) fn add_if_absent<'a>(
    slot: &Slot,
    existing: &[Value],
    wanted: impl IntoIterator<Item = &'a Value>,
) -> Merge {
    let wanted: Vec<&Value> = wanted.into_iter().collect();
    let mut m = Merge::default();
    for (w, e) in wanted.iter().zip(taken(slot, existing, &wanted)) {
        match e {
            Some(e) if e == *w => {}
            Some(_) => {
                let id = w.get(slot.reported).and_then(Value::as_str);
                m.conflicts.push(id.unwrap_or("").to_string());
            }
            None => m.add.push((*w).clone()),
        }
    }
    m
}

/// Whether the container sets MLFLOW_TRACKING_URI to something other than what we inject.
pub(crate) fn self_configured(existing: &[Value], ours: Option<&Value>) -> bool {
    existing
        .iter()
        .find(|e| env_name(e) == Some(TRACKING_URI))
        .is_some_and(|e| Some(e) != ours)
}

/// AZUREML_CURRENT_CLOUD for a container whose own MLFLOW_TRACKING_URI value is azureml://.
pub(crate) fn own_azureml_cloud(existing: &[Value]) -> Option<Value> {
    let uri = existing
        .iter()
        .find(|e| env_name(e) == Some(TRACKING_URI))?
        .get("value")?
        .as_str()
        .filter(|u| super::credential::is_azureml(u))?;
    let cloud = super::values::cloud_from_azureml_uri(uri);
    Some(super::values::env_value(
        CURRENT_CLOUD,
        cloud.azureml_current_cloud(),
    ))
}

/// The patch operations and warnings for one injected container; `ours` is `d`'s
/// [`Desired::tracking_uri`].
pub(crate) fn merge_container(
    c: &ContainerView<'_>,
    d: &Desired,
    ours: Option<&Value>,
) -> (Vec<PatchOperation>, Vec<String>) {
    let mut warnings = Vec::new();
    let existing_env = c.env.map(Vec::as_slice).unwrap_or_default();
    let self_conf = self_configured(existing_env, ours);
    if self_conf {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" already sets {TRACKING_URI}; it is self-configured, so no MLFLOW_* variables were added to it",
            c.name
        ));
    }
    // A self-configured container's own azureml:// URI decides its cloud, not the binding's.
    let own_cloud = self_conf.then(|| own_azureml_cloud(existing_env)).flatten();
    let per_container: Vec<Value> = d.run_context.iter().flat_map(|r| r.env(c)).collect();
    let wanted = d
        .env
        .iter()
        .chain(&per_container)
        .filter(|e| !(self_conf && env_name(e).is_some_and(|n| n.starts_with("MLFLOW_"))))
        .filter(|e| own_cloud.is_none() || env_name(e) != Some(CURRENT_CLOUD))
        .chain(own_cloud.iter());
    let env = add_if_absent(&ENV, existing_env, wanted);
    for name in &env.conflicts {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" already sets {name}; left unchanged",
            c.name
        ));
    }
    if c.has_env_from && !env.add.is_empty() {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" has envFrom: the variables injected into env take precedence over same-named envFrom values",
            c.name
        ));
    }
    let existing_mounts = c.mounts.map(Vec::as_slice).unwrap_or_default();
    let mounts = add_if_absent(&MOUNT, existing_mounts, &d.mounts);
    for path in &mounts.conflicts {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" already has a different volume mount of the name or path of ours ({path}); left unchanged",
            c.name
        ));
    }
    let index = c.index.to_string();
    let mut ops = append(&["spec", c.list, &index, "env"], c.env.is_some(), env.add);
    ops.extend(append(
        &["spec", c.list, &index, "volumeMounts"],
        c.mounts.is_some(),
        mounts.add,
    ));
    (ops, warnings)
}

/// The ops and warnings for every injected container, and the volumes they mount.
pub(crate) fn containers_and_volumes(
    pod: &PodView<'_>,
    d: &Desired,
) -> (Vec<PatchOperation>, Vec<String>) {
    let ours = d.tracking_uri();
    let (mut ops, mut warnings) = (Vec::new(), Vec::new());
    let mut injected_any = false;
    for c in pod.injected_containers() {
        injected_any = true;
        let (o, w) = merge_container(c, d, ours);
        ops.extend(o);
        warnings.extend(w);
    }
    if injected_any {
        let existing = pod.volumes.map(Vec::as_slice).unwrap_or_default();
        let volumes = add_if_absent(&VOLUME, existing, &d.volumes);
        for v in &volumes.conflicts {
            warnings.push(format!(
                "mlflow-operator: the pod already has a different volume named \"{v}\"; left unchanged"
            ));
        }
        ops.extend(append(
            &["spec", "volumes"],
            pod.volumes.is_some(),
            volumes.add,
        ));
    }
    (ops, warnings)
}

/// Sets the injected annotations (`(key, value)` pairs), creating `metadata` and
/// `metadata.annotations` when needed.
pub(crate) fn injected_annotations(
    pod: &PodView<'_>,
    entries: &[(&str, String)],
) -> Vec<PatchOperation> {
    let object = || {
        let map = entries.iter().map(|(k, v)| (k.to_string(), json!(v)));
        Value::Object(map.collect())
    };
    if !pod.has_metadata {
        return vec![add(&["metadata"], json!({"annotations": object()}))];
    }
    if !pod.has_annotations {
        return vec![add(&["metadata", "annotations"], object())];
    }
    let one = |(key, value): &(&str, String)| {
        let path = ["metadata", "annotations", key];
        if pod.annotation_keys.contains(key) {
            PatchOperation::Replace(ReplaceOperation {
                path: pointer(&path),
                value: Value::String(value.clone()),
            })
        } else {
            add(&path, Value::String(value.clone()))
        }
    };
    entries.iter().map(one).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 6901 escaping of one reference token, the reference for `pointer`.
    fn escape(token: &str) -> String {
        token.replace('~', "~0").replace('/', "~1")
    }

    #[test]
    fn json_pointer_escaping() {
        for (token, want) in [
            ("a", "a"),
            ("a/b", "a~1b"),
            ("a~b", "a~0b"),
            ("~/", "~0~1"),
            ("", ""),
        ] {
            assert_eq!(escape(token), want);
        }
        assert_eq!(
            pointer(&["metadata", "annotations", "mlflow-operator.io/injected"]).to_string(),
            "/metadata/annotations/mlflow-operator.io~1injected"
        );
        assert_eq!(pointer(&["a~b"]).to_string(), format!("/{}", escape("a~b")));
    }

    type AddCase<'a> = (
        Vec<&'a Value>,
        Vec<Value>,
        Vec<&'a Value>,
        Vec<&'static str>,
    );

    /// (wanted, existing, added, conflicts) for one slot.
    fn assert_adds(slot: &Slot, cases: Vec<AddCase<'_>>) {
        for (wanted, existing, added, conflicts) in cases {
            let m = add_if_absent(slot, &existing, wanted);
            let added: Vec<Value> = added.into_iter().cloned().collect();
            assert_eq!(m.add, added, "{existing:?}");
            assert_eq!(m.conflicts, conflicts, "{existing:?}");
        }
    }

    #[test]
    fn add_if_absent_env() {
        let a = json!({"name": "A", "value": "1"});
        let b = json!({"name": "B", "value": "1"});
        assert_adds(
            &ENV,
            vec![
                (vec![&a, &b], vec![], vec![&a, &b], vec![]),
                (vec![&a, &b], vec![a.clone()], vec![&b], vec![]),
                (
                    vec![&a, &b],
                    vec![json!({"name": "A", "value": "2"})],
                    vec![&b],
                    vec!["A"],
                ),
                (
                    vec![&a, &b],
                    vec![
                        json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
                    ],
                    vec![&b],
                    vec!["A"],
                ),
                (vec![&a, &b], vec![a.clone(), b.clone()], vec![], vec![]),
                (
                    vec![&a],
                    vec![json!({"value": "x"}), json!(3)],
                    vec![&a],
                    vec![],
                ),
            ],
        );
    }

    #[test]
    fn add_if_absent_mounts() {
        let mount = json!({"name": "v", "mountPath": "/p", "readOnly": true});
        assert_adds(
            &MOUNT,
            vec![
                (vec![&mount], vec![], vec![&mount], vec![]),
                (vec![&mount], vec![mount.clone()], vec![], vec![]),
                (
                    vec![&mount],
                    vec![json!({"name": "v", "mountPath": "/o"})],
                    vec![],
                    vec!["/p"],
                ),
                (
                    vec![&mount],
                    vec![json!({"name": "o", "mountPath": "/p"})],
                    vec![],
                    vec!["/p"],
                ),
                (
                    vec![&mount],
                    vec![json!({"name": "o", "mountPath": "/o"})],
                    vec![&mount],
                    vec![],
                ),
            ],
        );
    }

    #[test]
    fn add_if_absent_volumes() {
        let volume = json!({"name": "v", "emptyDir": {}});
        assert_adds(
            &VOLUME,
            vec![
                (vec![&volume], vec![], vec![&volume], vec![]),
                (vec![&volume], vec![volume.clone()], vec![], vec![]),
                (
                    vec![&volume],
                    vec![json!({"name": "v", "secret": {"secretName": "s"}})],
                    vec![],
                    vec!["v"],
                ),
                (
                    vec![&volume],
                    vec![json!({"name": "w", "emptyDir": {}})],
                    vec![&volume],
                    vec![],
                ),
            ],
        );
    }

    #[test]
    fn a_self_configured_containers_own_azureml_uri_decides_its_cloud() {
        let uri = |v: Value| json!([{"name": "MLFLOW_TRACKING_URI", "value": v}]);
        for (case, env, want) in [
            (
                "china",
                uri(json!("azureml://chinaeast2.api.ml.azure.cn/mlflow/v1.0/x")),
                Some("AzureChinaCloud"),
            ),
            (
                "public",
                uri(json!("azureml://westeurope.api.azureml.ms/mlflow/v1.0/x")),
                Some("AzureCloud"),
            ),
            ("http", uri(json!("http://mlflow:5000")), None),
            (
                "from a Secret",
                json!([{"name": "MLFLOW_TRACKING_URI", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
                None,
            ),
            ("unset", json!([]), None),
        ] {
            let got = own_azureml_cloud(env.as_array().unwrap());
            let value = got
                .as_ref()
                .and_then(|v| v.get("value"))
                .and_then(Value::as_str);
            assert_eq!(value, want, "{case}");
        }
    }

    #[test]
    fn self_configured_detection() {
        let ours = json!({"name": TRACKING_URI, "value": "http://ours"});
        for (existing, want) in [
            (vec![], false),
            (vec![ours.clone()], false),
            (
                vec![json!({"name": TRACKING_URI, "value": "http://theirs"})],
                true,
            ),
            (
                vec![
                    json!({"name": TRACKING_URI, "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}),
                ],
                true,
            ),
            (vec![json!({"name": "OTHER", "value": "x"})], false),
        ] {
            assert_eq!(
                self_configured(&existing, Some(&ours)),
                want,
                "{existing:?}"
            );
        }
    }

    #[test]
    fn append_whole_array_or_per_entry() {
        let ops = append(
            &["spec", "containers", "0", "env"],
            false,
            vec![json!(1), json!(2)],
        );
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([{"op": "add", "path": "/spec/containers/0/env", "value": [1, 2]}])
        );
        let ops = append(
            &["spec", "containers", "0", "env"],
            true,
            vec![json!(1), json!(2)],
        );
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([
                {"op": "add", "path": "/spec/containers/0/env/-", "value": 1},
                {"op": "add", "path": "/spec/containers/0/env/-", "value": 2}
            ])
        );
        assert!(append(&["x"], false, vec![]).is_empty());
    }
}
