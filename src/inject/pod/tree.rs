//! Reading the pod of a review from sonic-rs's tree, the webhook's fast path: its strings are
//! borrowed in place, and of env, mounts and volumes only the entries [`EnvNames`] keeps are
//! built as JSON. Only a pod every field of which has the type [`super::read`] accepts is read
//! here; any other gives None, and the webhook reads it as before, so that every refusal of a
//! pod is worded in one place.
//!
//! sonic-rs's objects keep a repeated key where serde_json's maps keep the last: every lookup
//! here takes the last, so both readers see the same pod.

use std::borrow::Cow;

use serde_json::Value as Json;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Object, Value};

use super::sparse::EnvNames;
use super::{ContainerView, Entries, OptOuts, Owner, PodView, Strings};

/// The last value of `key` in `o`.
pub(crate) fn last<'a>(o: &'a Object, key: &str) -> Option<&'a Value> {
    let [value] = last_each(o, [key]);
    value
}

/// The last value of each of `keys` in `o`, read in one walk of its members: a lookup per key
/// walked a container's members five times, a fifth of the fast path's time (BENCHMARKS.md,
/// twenty-first stop).
fn last_each<'a, const N: usize>(o: &'a Object, keys: [&str; N]) -> [Option<&'a Value>; N] {
    let mut found = [None; N];
    for (k, v) in o.iter() {
        if let Some(i) = keys.iter().position(|key| *key == k) {
            found[i] = Some(v);
        }
    }
    found
}

/// What an optional field holds: absent or null, a value of the wanted type, or another type.
enum Field<T> {
    None,
    Some(T),
    Other,
}

fn field<'a, T>(v: Option<&'a Value>, of: impl Fn(&'a Value) -> Option<T>) -> Field<T> {
    match v {
        None => Field::None,
        Some(v) if v.is_null() => Field::None,
        Some(v) => of(v).map_or(Field::Other, Field::Some),
    }
}

/// An optional object or array field as [`super::read`] accepts it; None for another type.
fn optional<'a, T>(v: Option<&'a Value>, of: impl Fn(&'a Value) -> Option<T>) -> Option<Option<T>> {
    match field(v, of) {
        Field::None => Some(None),
        Field::Some(v) => Some(Some(v)),
        Field::Other => None,
    }
}

/// Reads the pod as [`super::read`] would read it whole, or None when it is not of the shape
/// the fast path reads.
pub(crate) fn read<'a>(pod: &'a Value, env: &EnvNames<'_>) -> Option<PodView<'a>> {
    let [metadata, spec] = last_each(pod.as_object()?, ["metadata", "spec"]);
    let metadata = optional(metadata, Value::as_object)?;
    let [labels, annotations, owners] = match metadata {
        Some(m) => last_each(m, ["labels", "annotations", "ownerReferences"]),
        None => [None; 3],
    };
    let (labels, annotations) = (
        optional(labels, Value::as_object)?,
        optional(annotations, Value::as_object)?,
    );
    let spec = optional(spec, Value::as_object)??;
    let [containers, init, volumes, sa_name, sa] = last_each(spec, SPEC_FIELDS);
    let mut views = Vec::new();
    for (list, entries) in [("containers", containers), ("initContainers", init)] {
        let Some(entries) = optional(entries, Value::as_array)? else {
            if list == "containers" {
                return None;
            }
            continue;
        };
        for (index, c) in entries.iter().enumerate() {
            views.push(container(list, index, c.as_object()?, env)?);
        }
    }
    let of = |m: Option<&'a Object>| m.map_or(Strings::Absent, Strings::Tree);
    let (labels, annotations_map) = (of(labels), of(annotations));
    let volumes = optional(volumes, Value::as_array)?;
    Some(PodView {
        opt_outs: OptOuts::of(labels, annotations_map),
        labels,
        annotations: annotations_map,
        has_metadata: metadata.is_some(),
        has_annotations: annotations.is_some(),
        service_account: service_account_name([sa_name, sa]),
        owner: owners.and_then(controller_owner),
        containers: views,
        volumes: volumes.map(|v| kept(v, |e| volume_kept(e, env))),
    })
}

const SPEC_FIELDS: [&str; 5] = [
    "containers",
    "initContainers",
    "volumes",
    "serviceAccountName",
    "serviceAccount",
];

fn container<'a>(
    list: &'static str,
    index: usize,
    c: &'a Object,
    env: &EnvNames<'_>,
) -> Option<ContainerView<'a>> {
    let [name, image, own_env, env_from, mounts] =
        last_each(c, ["name", "image", "env", "envFrom", "volumeMounts"]);
    let env_from = optional(env_from, Value::as_array)?;
    let own_env = optional(own_env, Value::as_array)?;
    let mounts = optional(mounts, Value::as_array)?;
    Some(ContainerView {
        list,
        index,
        name: name?.as_str()?,
        image: image.and_then(|v| v.as_str()),
        env: own_env.map(|e| kept(e, |entry| env_kept(entry, env))),
        mounts: mounts.map(|m| kept(m, |entry| mount_kept(entry, env))),
        has_env_from: env_from.is_some_and(|a| !a.is_empty()),
    })
}

/// The entries of `list` that `keep` keeps, as JSON: few or none of a pod's own.
fn kept<'a>(list: &sonic_rs::Array, keep: impl Fn(&Value) -> bool) -> Entries<'a> {
    let entries = list.iter().filter(|e| keep(e)).map(to_json);
    Cow::Owned(entries.collect())
}

/// sonic-rs's value as serde_json's: the tree was valid JSON, so the conversion cannot fail.
fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// A member of an entry as the sparse parse judges it: Some(None) when absent or null,
/// Some(Some(text)) when a string, None (kept whole) for another type.
fn string(member: Option<&Value>) -> Option<Option<&str>> {
    match field(member, Value::as_str) {
        Field::None => Some(None),
        Field::Some(s) => Some(Some(s)),
        Field::Other => None,
    }
}

/// An env entry is built when the planner may read it: not an object, a name of another type,
/// or a name [`EnvNames`] keeps.
fn env_kept(entry: &Value, env: &EnvNames<'_>) -> bool {
    let Some(e) = entry.as_object() else {
        return true;
    };
    match string(last(e, "name")) {
        None => true,
        Some(None) => false,
        Some(Some(name)) => env.keeps(name),
    }
}

fn mount_kept(entry: &Value, env: &EnvNames<'_>) -> bool {
    let Some(e) = entry.as_object() else {
        return true;
    };
    let [name, path] = last_each(e, ["name", "mountPath"]);
    match (string(name), string(path)) {
        (Some(name), Some(path)) => env.keeps_mount(name, path),
        _ => true,
    }
}

fn volume_kept(entry: &Value, env: &EnvNames<'_>) -> bool {
    let Some(e) = entry.as_object() else {
        return true;
    };
    string(last(e, "name")).is_none_or(|name| env.keeps_volume(name))
}

/// As [`super::service_account_name`] reads it, from `serviceAccountName` and
/// `serviceAccount`.
fn service_account_name(fields: [Option<&Value>; 2]) -> &str {
    fields
        .into_iter()
        .find_map(|v| v?.as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
}

/// As [`super::controller_owner`] reads it.
fn controller_owner(refs: &Value) -> Option<Owner<'_>> {
    let controller = refs.as_array()?.iter().find_map(|r| {
        let [controller, kind, name] = last_each(r.as_object()?, ["controller", "kind", "name"]);
        controller?.as_bool()?.then_some([kind, name])
    })?;
    let [kind, name] = controller;
    Some(Owner {
        kind: kind?.as_str()?,
        name: name?.as_str()?,
    })
}
