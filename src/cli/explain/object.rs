//! The object `explain` is asked about: found by KIND/NAME (built-in short names, or any kind the
//! API server serves), its pod template, and for a live pod the template it was made from.

use anyhow::{Context, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::discovery::Discovery;
use serde_json::{Value, json};

use crate::binding::{MlflowWorkspaceBinding, TRACK_LABEL};

/// What explain looks at.
pub struct Target {
    /// `deployment/trainer`.
    pub display: String,
    pub name: String,
    /// Labels and annotations of the pod (a live pod's own, else the template's).
    pub meta: ObjectMeta,
    /// A live pod's metadata (None for a workload).
    pub live: Option<ObjectMeta>,
    /// The pod sent through the webhook: the template as it stands.
    pub pod: Value,
    /// Where that pod came from, for the reader.
    pub source: String,
}

impl Target {
    pub fn labelled(&self) -> bool {
        self.meta
            .labels
            .as_ref()
            .and_then(|l| l.get(TRACK_LABEL))
            .is_some_and(|v| v == "true")
    }

    /// Where a label or annotation of its pods is set.
    pub fn label_place(&self) -> String {
        match self.live {
            Some(_) => format!(
                "the manifest of {} (a pod's labels are read when it is created: create it again)",
                self.display
            ),
            None => format!("spec.template.metadata of {}", self.display),
        }
    }
}

/// Built-in kinds by every name kubectl accepts for them: (names, group, version, kind, plural).
const BUILTIN: [(&[&str], &str, &str, &str, &str); 7] = [
    (&["pod", "pods", "po"], "", "v1", "Pod", "pods"),
    (
        &["deployment", "deployments", "deploy"],
        "apps",
        "v1",
        "Deployment",
        "deployments",
    ),
    (
        &["statefulset", "statefulsets", "sts"],
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
    ),
    (
        &["daemonset", "daemonsets", "ds"],
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
    ),
    (
        &["replicaset", "replicasets", "rs"],
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
    ),
    (&["job", "jobs"], "batch", "v1", "Job", "jobs"),
    (
        &["cronjob", "cronjobs", "cj"],
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
    ),
];

async fn resource(client: &Client, kind: &str) -> anyhow::Result<ApiResource> {
    let k = kind.to_ascii_lowercase();
    if let Some((_, group, version, kind, plural)) =
        BUILTIN.iter().find(|b| b.0.contains(&k.as_str()))
    {
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        return Ok(ApiResource::from_gvk_with_plural(&gvk, plural));
    }
    // Any other kind: as kubectl does, ask the API server what it serves (k may be kind.group).
    let (k, group) = k
        .split_once('.')
        .map_or((k.as_str(), None), |(k, g)| (k, Some(g)));
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("discovering the API server's kinds")?;
    for g in discovery
        .groups()
        .filter(|g| group.is_none_or(|want| g.name() == want))
    {
        for (ar, _) in g.recommended_resources() {
            if ar.kind.to_ascii_lowercase() == k || ar.plural == k {
                return Ok(ar);
            }
        }
    }
    bail!("the API server serves no kind called {kind}")
}

/// Reads `KIND/NAME` in `ns`.
pub async fn read(client: &Client, ns: &str, object: &str) -> anyhow::Result<Target> {
    let Some((kind, name)) = object
        .split_once('/')
        .filter(|(k, n)| !k.is_empty() && !n.is_empty())
    else {
        bail!("{object:?} is not KIND/NAME, e.g. pod/trainer-0 or deployment/trainer");
    };
    let ar = resource(client, kind).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading {kind}/{name} in namespace {ns}"))?
        .with_context(|| format!("{} {name} not found in namespace {ns}", ar.kind))?;
    let display = format!("{}/{name}", ar.kind.to_ascii_lowercase());
    let raw = serde_json::to_value(&obj)?;
    if ar.kind == "Pod" && ar.group.is_empty() {
        return live_pod(client, ns, display, raw).await;
    }
    let template = template_of(&raw).with_context(|| format!("{display} has no pod template (spec.template, or spec.jobTemplate.spec.template of a CronJob)"))?;
    Ok(from_template(
        display,
        name,
        template,
        format!(
            "the pod template of {}/{name}",
            ar.kind.to_ascii_lowercase()
        ),
    ))
}

fn template_of(raw: &Value) -> Option<&Value> {
    let t = raw
        .pointer("/spec/template")
        .or_else(|| raw.pointer("/spec/jobTemplate/spec/template"))?;
    t.get("spec").is_some().then_some(t)
}

fn from_template(display: String, name: &str, template: &Value, source: String) -> Target {
    let meta: ObjectMeta =
        serde_json::from_value(template.get("metadata").cloned().unwrap_or(json!({})))
            .unwrap_or_default();
    Target {
        display,
        name: name.to_string(),
        pod: pod_from(name, template),
        meta,
        live: None,
        source,
    }
}

/// A pod to dry-run from a template or a live pod: its labels, annotations and spec, a fresh name.
fn pod_from(name: &str, template: &Value) -> Value {
    let meta = template.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": format!("{name}-explain-"), "labels": meta.get("labels"), "annotations": meta.get("annotations")},
        "spec": template.get("spec"),
    })
}

/// A live pod: its own metadata; the template of its workload owner for the dry-run, so the answer
/// is what a restart would give (the pod's own spec carries what it was given before).
async fn live_pod(
    client: &Client,
    ns: &str,
    display: String,
    raw: Value,
) -> anyhow::Result<Target> {
    let meta: ObjectMeta = serde_json::from_value(raw["metadata"].clone())?;
    let name = meta.name.clone().unwrap_or_default();
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .cloned();
    let owned = match owner {
        Some(o) if ["ReplicaSet", "StatefulSet", "DaemonSet", "Job"].contains(&o.kind.as_str()) => {
            let ar = resource(client, &o.kind).await?;
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let found = api
                .get_opt(&o.name)
                .await
                .ok()
                .flatten()
                .and_then(|x| serde_json::to_value(x).ok());
            found.and_then(|v| template_of(&v).cloned()).map(|t| {
                (
                    t,
                    format!(
                        "the pod template of {}/{}",
                        o.kind.to_ascii_lowercase(),
                        o.name
                    ),
                )
            })
        }
        _ => None,
    };
    let (pod, source) = match owned {
        Some((t, source)) => (pod_from(&name, &t), source),
        None => (pod_from(&name, &raw), format!("{display} as it stands")),
    };
    Ok(Target {
        display,
        name,
        meta: meta.clone(),
        live: Some(meta),
        pod,
        source,
    })
}

/// The bindings of `ns`.
pub async fn bindings(client: &Client, ns: &str) -> anyhow::Result<Vec<MlflowWorkspaceBinding>> {
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the MlflowWorkspaceBindings of namespace {ns}"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .collect())
}
