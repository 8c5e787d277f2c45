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
    o.iter().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
}

/// What an optional field holds: absent or null, a value of the wanted type, or another type.
enum Field<T> {
    None,
    Some(T),
    Other,
}

fn field<'a, T>(o: &'a Object, key: &str, of: impl Fn(&'a Value) -> Option<T>) -> Field<T> {
    match last(o, key) {
        None => Field::None,
        Some(v) if v.is_null() => Field::None,
        Some(v) => of(v).map_or(Field::Other, Field::Some),
    }
}

/// An optional object or array field as [`super::read`] accepts it; None for another type.
fn optional<'a, T>(
    o: &'a Object,
    key: &str,
    of: impl Fn(&'a Value) -> Option<T>,
) -> Option<Option<T>> {
    match field(o, key, of) {
        Field::None => Some(None),
        Field::Some(v) => Some(Some(v)),
        Field::Other => None,
    }
}

/// Reads the pod as [`super::read`] would read it whole, or None when it is not of the shape
/// the fast path reads.
pub(crate) fn read<'a>(pod: &'a Value, env: &EnvNames<'_>) -> Option<PodView<'a>> {
    let root = pod.as_object()?;
    let metadata = optional(root, "metadata", Value::as_object)?;
    let map = |key| match metadata {
        Some(m) => optional(m, key, Value::as_object),
        None => Some(None),
    };
    let (labels, annotations) = (map("labels")?, map("annotations")?);
    let spec = optional(root, "spec", Value::as_object)??;
    let mut containers = Vec::new();
    for list in ["containers", "initContainers"] {
        let Some(entries) = optional(spec, list, Value::as_array)? else {
            if list == "containers" {
                return None;
            }
            continue;
        };
        for (index, c) in entries.iter().enumerate() {
            containers.push(container(list, index, c.as_object()?, env)?);
        }
    }
    let of = |m: Option<&'a Object>| m.map_or(Strings::Absent, Strings::Tree);
    let (labels, annotations_map) = (of(labels), of(annotations));
    let volumes = optional(spec, "volumes", Value::as_array)?;
    Some(PodView {
        opt_outs: OptOuts::of(labels, annotations_map),
        labels,
        annotations: annotations_map,
        has_metadata: metadata.is_some(),
        has_annotations: annotations.is_some(),
        service_account: service_account_name(spec),
        owner: metadata.and_then(controller_owner),
        containers,
        volumes: volumes.map(|v| kept(v, |e| volume_kept(e, env))),
    })
}

fn container<'a>(
    list: &'static str,
    index: usize,
    c: &'a Object,
    env: &EnvNames<'_>,
) -> Option<ContainerView<'a>> {
    let name = last(c, "name")?.as_str()?;
    let env_from = optional(c, "envFrom", Value::as_array)?;
    let own_env = optional(c, "env", Value::as_array)?;
    let mounts = optional(c, "volumeMounts", Value::as_array)?;
    Some(ContainerView {
        list,
        index,
        name,
        image: last(c, "image").and_then(|v| v.as_str()),
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
fn string<'a>(entry: &'a Object, key: &str) -> Option<Option<&'a str>> {
    match field(entry, key, Value::as_str) {
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
    match string(e, "name") {
        None => true,
        Some(None) => false,
        Some(Some(name)) => env.keeps(name),
    }
}

fn mount_kept(entry: &Value, env: &EnvNames<'_>) -> bool {
    let Some(e) = entry.as_object() else {
        return true;
    };
    match (string(e, "name"), string(e, "mountPath")) {
        (Some(name), Some(path)) => env.keeps_mount(name, path),
        _ => true,
    }
}

fn volume_kept(entry: &Value, env: &EnvNames<'_>) -> bool {
    let Some(e) = entry.as_object() else {
        return true;
    };
    string(e, "name").is_none_or(|name| env.keeps_volume(name))
}

/// As [`super::service_account_name`] reads it.
fn service_account_name(spec: &Object) -> &str {
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| last(spec, k)?.as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
}

/// As [`super::controller_owner`] reads it.
fn controller_owner(metadata: &Object) -> Option<Owner<'_>> {
    let refs = last(metadata, "ownerReferences")?.as_array()?;
    let controller = refs.iter().find(|r| {
        let controller = r.as_object().and_then(|o| last(o, "controller"));
        controller.and_then(|c| c.as_bool()) == Some(true)
    })?;
    let o = controller.as_object()?;
    Some(Owner {
        kind: last(o, "kind")?.as_str()?,
        name: last(o, "name")?.as_str()?,
    })
}
