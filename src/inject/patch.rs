//! The JSON patch of a pod: add-if-absent merging of env entries, volume mounts and volumes, and
//! the injected annotation. Nothing the pod already has is ever changed.

use serde::Serialize;
use serde_json::Value;
use smallvec::SmallVec;

use super::offer::Offer;
use super::pod::{ContainerView, PodView};
use super::values::{Desired, env_name};

mod json;

pub use json::Patch;
pub(crate) use json::{Op, Wanted, Writer, encode};

pub(crate) const TRACKING_URI: &str = "MLFLOW_TRACKING_URI";
pub(crate) const CURRENT_CLOUD: &str = "AZUREML_CURRENT_CLOUD";

/// Writes the ops that append `items` to the array at `tokens`: the whole array when it is
/// absent, else one `add .../-` per item.
pub(crate) fn append(w: &mut Writer, tokens: &[&str], present: bool, items: &[Wanted<'_>]) {
    if items.is_empty() {
        return;
    }
    if !present {
        return w.op(Op::Add, tokens, items);
    }
    let end: Few<&str> = tokens.iter().copied().chain(["-"]).collect();
    w.ops(Op::Add, &end, items);
}

/// A short list kept on the stack: a container gets a few entries of each kind, and under load
/// every heap allocation of an admission is a likely cache miss (BENCHMARKS.md, seventh stop).
type Few<T> = SmallVec<[T; 16]>;

/// The result of merging wanted entries into existing ones: a buffer the planner refills for
/// each container of a pod, so no list is built, moved or freed per container (as stack lists,
/// copying them was half the plan's time: BENCHMARKS.md, twenty-first stop).
#[derive(Debug, Default)]
pub(crate) struct Merge<'a> {
    /// Entries to add, in order.
    pub add: Vec<Wanted<'a>>,
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
fn taken<'e>(slot: &Slot, existing: &'e [Value], wanted: &[Wanted<'_>]) -> Few<Option<&'e Value>> {
    let Some(key) = slot.key else {
        let first = |w: &Wanted| existing.iter().find(|e| (slot.taken_by)(e, w.value));
        return wanted.iter().map(first).collect();
    };
    let keys: Few<Option<&str>> = wanted.iter().map(|w| key(w.value)).collect();
    let mut found: Few<Option<&Value>> = smallvec::smallvec![None; wanted.len()];
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

/// Add-if-absent, into `m`: a wanted entry whose slot is taken is never added; an identical
/// entry is silent, a different one is a conflict.
pub(crate) fn add_if_absent<'a>(
    slot: &Slot,
    existing: &[Value],
    wanted: impl IntoIterator<Item = Wanted<'a>>,
    m: &mut Merge<'a>,
) {
    m.add.clear();
    m.conflicts.clear();
    m.add.extend(wanted);
    // The common case: the readers keep only the entries a wanted one may collide with, and
    // most containers have none.
    if existing.is_empty() {
        return;
    }
    let taken = taken(slot, existing, &m.add);
    let Merge { add, conflicts } = m;
    let mut taken = taken.into_iter();
    add.retain(|w| match taken.next().flatten() {
        None => true,
        Some(e) if e == w.value => false,
        Some(_) => {
            let id = w.value.get(slot.reported).and_then(Value::as_str);
            conflicts.push(id.unwrap_or("").to_string());
            false
        }
    });
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

/// What a binding offers every injected container, as wanted entries with their JSON, and its
/// MLFLOW_TRACKING_URI entry.
pub(crate) struct Wants<'a> {
    pub desired: &'a Desired,
    env: Vec<Wanted<'a>>,
    mounts: Vec<Wanted<'a>>,
    ours: Option<&'a Value>,
}

/// The buffers a pod's containers are merged into, one after the other.
#[derive(Default)]
pub(crate) struct Merges<'a> {
    env: Merge<'a>,
    mounts: Merge<'a>,
}

/// What one container wants beyond the pod's env, made before the merges so that their
/// buffers can hold it for the whole pod.
pub(crate) struct Own {
    /// The container sets its own MLFLOW_TRACKING_URI.
    self_configured: bool,
    /// A self-configured container's own azureml:// URI decides its cloud, not the binding's.
    cloud: Option<Value>,
    /// Its run-context entries.
    run_context: Vec<Value>,
}

impl Own {
    pub(crate) fn of(c: &ContainerView<'_>, offer: &Wants<'_>) -> Self {
        let existing = c.env.as_deref().unwrap_or_default();
        let self_configured = self_configured(existing, offer.ours);
        let run_context = offer.desired.run_context.iter();
        Self {
            self_configured,
            cloud: self_configured
                .then(|| own_azureml_cloud(existing))
                .flatten(),
            run_context: run_context.flat_map(|r| r.env(c)).collect(),
        }
    }

    /// The env entries this container is offered, in order.
    fn wanted<'a>(&'a self, offer: &Wants<'a>) -> impl Iterator<Item = Wanted<'a>> {
        let mlflow = |e: &Wanted| env_name(e.value).is_some_and(|n| n.starts_with("MLFLOW_"));
        let cloud = |e: &Wanted| env_name(e.value) == Some(CURRENT_CLOUD);
        offer
            .env
            .iter()
            .copied()
            .chain(self.run_context.iter().map(Wanted::new))
            .filter(move |e| !(self.self_configured && mlflow(e)))
            .filter(move |e| self.cloud.is_none() || !cloud(e))
            .chain(self.cloud.iter().map(Wanted::new))
    }
}

/// Writes the ops for one injected container; returns its warnings.
pub(crate) fn merge_container<'a>(
    w: &mut Writer,
    c: &ContainerView<'_>,
    offer: &Wants<'a>,
    own: &'a Own,
    m: &mut Merges<'a>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if own.self_configured {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" already sets {TRACKING_URI}; it is self-configured, so no MLFLOW_* variables were added to it",
            c.name
        ));
    }
    let existing_env = c.env.as_deref().unwrap_or_default();
    add_if_absent(&ENV, existing_env, own.wanted(offer), &mut m.env);
    for name in &m.env.conflicts {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" already sets {name}; left unchanged",
            c.name
        ));
    }
    if c.has_env_from && !m.env.add.is_empty() {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" has envFrom: the variables injected into env take precedence over same-named envFrom values",
            c.name
        ));
    }
    let existing_mounts = c.mounts.as_deref().unwrap_or_default();
    add_if_absent(
        &MOUNT,
        existing_mounts,
        offer.mounts.iter().copied(),
        &mut m.mounts,
    );
    for path in &m.mounts.conflicts {
        warnings.push(format!(
            "mlflow-operator: container \"{}\" already has a different volume mount of the name or path of ours ({path}); left unchanged",
            c.name
        ));
    }
    let mut index = itoa::Buffer::new();
    let index = index.format(c.index);
    let env_at = ["spec", c.list, index, "env"];
    append(w, &env_at, c.env.is_some(), &m.env.add);
    let mounts_at = ["spec", c.list, index, "volumeMounts"];
    append(w, &mounts_at, c.mounts.is_some(), &m.mounts.add);
    warnings
}

/// Bytes the ops of the pod's volumes and injected annotations take, about.
const POD_OPS_ROOM: usize = 512;

/// Writes the ops for every injected container, and the volumes they mount; returns the
/// warnings.
pub(crate) fn containers_and_volumes(w: &mut Writer, pod: &PodView<'_>, o: &Offer) -> Vec<String> {
    let d = &o.desired;
    // Room for every container's ops (an op's member names and pointer take under 64 bytes),
    // and for the pod's own (volumes, the injected annotations): growing the patch copies it.
    let encoded = o.env_json.iter().chain(&o.mounts_json);
    let per_container: usize = encoded.map(|json| json.get().len() + 64).sum();
    w.reserve(pod.containers.len() * per_container + POD_OPS_ROOM);
    let offer = Wants {
        desired: d,
        env: Wanted::all_encoded(&d.env, &o.env_json),
        mounts: Wanted::all_encoded(&d.mounts, &o.mounts_json),
        ours: d.tracking_uri(),
    };
    let own: Vec<Own> = pod
        .injected_containers()
        .map(|c| Own::of(c, &offer))
        .collect();
    let mut warnings = Vec::new();
    let mut merges = Merges::default();
    for (c, own) in pod.injected_containers().zip(&own) {
        warnings.extend(merge_container(w, c, &offer, own, &mut merges));
    }
    if !own.is_empty() {
        let existing = pod.volumes.as_deref().unwrap_or_default();
        let mut volumes = Merge::default();
        add_if_absent(
            &VOLUME,
            existing,
            d.volumes.iter().map(Wanted::new),
            &mut volumes,
        );
        for v in &volumes.conflicts {
            warnings.push(format!(
                "mlflow-operator: the pod already has a different volume named \"{v}\"; left unchanged"
            ));
        }
        append(w, &["spec", "volumes"], pod.volumes.is_some(), &volumes.add);
    }
    warnings
}

/// Writes the ops that set the injected annotations (`(key, value)` pairs), creating `metadata`
/// and `metadata.annotations` when needed.
pub(crate) fn injected_annotations(w: &mut Writer, pod: &PodView<'_>, entries: &[(&str, &str)]) {
    if !pod.has_metadata {
        let metadata = Pairs(&[("annotations", Pairs(entries))]);
        return w.op(Op::Add, &["metadata"], &metadata);
    }
    if !pod.has_annotations {
        return w.op(Op::Add, &["metadata", "annotations"], &Pairs(entries));
    }
    for (key, value) in entries {
        let op = match pod.annotations.has_key(key) {
            true => Op::Replace,
            false => Op::Add,
        };
        w.op(op, &["metadata", "annotations", key], value);
    }
}

/// `(key, value)` pairs written as a JSON object, in their order, without building one.
struct Pairs<'a, V>(&'a [(&'a str, V)]);

impl<V: Serialize> Serialize for Pairs<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn injected_annotations_create_what_the_pod_lacks() {
        let entries = [("a/injected", "m"), ("a/injected-hash", "h")];
        // (pod, the patch's text)
        for (pod, want) in [
            (
                json!({"spec": {"containers": []}}),
                r#"[{"op":"add","path":"/metadata","value":{"annotations":{"a/injected":"m","a/injected-hash":"h"}}}]"#,
            ),
            (
                json!({"metadata": {"labels": {}}, "spec": {"containers": []}}),
                r#"[{"op":"add","path":"/metadata/annotations","value":{"a/injected":"m","a/injected-hash":"h"}}]"#,
            ),
            (
                json!({"metadata": {"annotations": {"a/injected": 1}}, "spec": {"containers": []}}),
                r#"[{"op":"replace","path":"/metadata/annotations/a~1injected","value":"m"},{"op":"add","path":"/metadata/annotations/a~1injected-hash","value":"h"}]"#,
            ),
        ] {
            let view = crate::inject::pod::read(&pod).unwrap();
            let mut w = Writer::new();
            injected_annotations(&mut w, &view, &entries);
            let patch = w.finish();
            assert_eq!(std::str::from_utf8(patch.json()).unwrap(), want, "{pod}");
        }
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
            let mut m = Merge::default();
            add_if_absent(slot, &existing, wanted.into_iter().map(Wanted::new), &mut m);
            let got: Vec<&Value> = m.add.iter().map(|w| w.value).collect();
            assert_eq!(got, added, "{existing:?}");
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
        let items = [json!(1), json!(2)];
        let items: Vec<Wanted> = items.iter().map(Wanted::new).collect();
        let ops = |present: bool, items: &[Wanted]| {
            let mut w = Writer::new();
            append(&mut w, &["spec", "containers", "0", "env"], present, items);
            serde_json::from_slice::<Value>(w.finish().json()).unwrap()
        };
        assert_eq!(
            ops(false, &items),
            json!([{"op": "add", "path": "/spec/containers/0/env", "value": [1, 2]}])
        );
        assert_eq!(
            ops(true, &items),
            json!([
                {"op": "add", "path": "/spec/containers/0/env/-", "value": 1},
                {"op": "add", "path": "/spec/containers/0/env/-", "value": 2}
            ])
        );
        assert_eq!(ops(false, &[]), json!([]));
    }
}
