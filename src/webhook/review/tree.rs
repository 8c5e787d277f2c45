//! The webhook's fast path: an AdmissionReview read as sonic-rs's tree, whose SIMD string scans
//! read a pod's text faster than serde_json skips it, and the planner's fields taken from it in
//! place (BENCHMARKS.md, twentieth stop). Only a review as the API server sends it is read
//! here: every field of the type it must have, none repeated, the namespace given. Any other
//! gives None and is read by [`super::parse_review_for`], which words every error; the tests
//! hold both readers to the same answers.

use std::sync::Arc;

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Object, Value};

use super::{API_VERSION, KIND, Lookup};
use crate::binding::MlflowWorkspaceBinding;
use crate::inject::{EnvNames, PodView, read_pod_tree};
use crate::webhook::Slice;

/// A review read on the fast path, borrowed from its tree.
pub(crate) struct TreeRequest<'t> {
    pub uid: &'t str,
    pub operation: &'t str,
    pub namespace: &'t str,
    pub dry_run: bool,
    pub bindings: Slice<MlflowWorkspaceBinding>,
    pub pod: PodView<'t>,
}

/// The body as sonic-rs's tree, when it is UTF-8 and JSON.
pub(crate) fn tree(body: &[u8]) -> Option<Value> {
    sonic_rs::from_str(std::str::from_utf8(body).ok()?).ok()
}

/// Reads a review of a pod, with the pod as its namespace's bindings need it; None when the
/// review is not as the API server sends it.
pub(crate) fn read_tree<'t>(review: &'t Value, lookup: Lookup<'_>) -> Option<TreeRequest<'t>> {
    let [api_version, kind, request] = once_each(review.as_object()?, FIELDS)?;
    let is_review = api_version?.as_str()? == API_VERSION && kind?.as_str()? == KIND;
    let request = request?.as_object().filter(|_| is_review)?;
    let [uid, gvk, namespace, operation, object, dry_run] = once_each(request, REQUEST_FIELDS)?;
    if !is_pod(gvk?.as_object()?)? {
        return None;
    }
    let dry_run = match dry_run {
        Some(v) if !v.is_null() => v.as_bool()?,
        _ => false,
    };
    let namespace = text(namespace?)?;
    let bindings = lookup(namespace);
    let env = EnvNames::of(bindings.iter().map(Arc::as_ref));
    let pod = read_pod_tree(object?, &env)?;
    drop(env);
    Some(TreeRequest {
        uid: text(uid?)?,
        operation: text(operation?)?,
        namespace,
        dry_run,
        bindings,
        pod,
    })
}

const FIELDS: [&str; 3] = ["apiVersion", "kind", "request"];
const REQUEST_FIELDS: [&str; 6] = ["uid", "kind", "namespace", "operation", "object", "dryRun"];

/// A non-empty string.
fn text(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// Whether `request.kind` names core/v1 Pod; None when one of its fields is of another type
/// or repeated.
fn is_pod(gvk: &Object) -> Option<bool> {
    let [group, version, kind] = once_each(gvk, ["group", "version", "kind"])?;
    Some(field(group)?.is_empty() && field(version)? == "v1" && field(kind)? == "Pod")
}

/// A field of `request.kind`: absent is empty, as serde's default makes it.
fn field(v: Option<&Value>) -> Option<&str> {
    v.map_or(Some(""), |v| v.as_str())
}

/// The values of `keys` in `o`; None when one is repeated (serde's derive, which reads the
/// review on the other path, refuses a repeated field).
fn once_each<'a, const N: usize>(o: &'a Object, keys: [&str; N]) -> Option<[Option<&'a Value>; N]> {
    let mut found = [None; N];
    for (k, v) in o.iter() {
        let slot = keys.iter().position(|key| *key == k);
        if slot.is_some_and(|i| found[i].replace(v).is_some()) {
            return None;
        }
    }
    Some(found)
}
