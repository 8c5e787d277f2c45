//! The binding CRD this release needs, and how a cluster's CRD compares with it.
//!
//! Helm installs `crds/` on the first install only and never upgrades it, and the API server
//! prunes every field its stored schema does not know. So the CRD carries a revision, and the
//! operator upgrades an older one itself at start (`run --upgrade-crd`, the chart's
//! `crds.upgrade`), never to a lower revision; until the CRD has every field this release writes,
//! it neither reconciles nor reports ready ([`crate::run`]), and `check` says the same.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use kube::CustomResourceExt;
use serde_json::Value;

use crate::binding::MlflowWorkspaceBinding;

/// The annotation that carries a CRD's revision; a CRD without it is revision 0 (before any).
pub const REVISION_ANNOTATION: &str = "mlflow-operator.io/crd-revision";

/// This release's CRD revision. Raise it with every change of the CRD: a unit test pins it to a
/// digest of the schema, so a change that forgets it fails there.
pub const REVISION: u32 = 1;

/// How a user applies this release's CRD by hand (what `check` and the operator's log advise).
pub const APPLY: &str = "mlflow-operator crd | kubectl apply --server-side --force-conflicts -f -";

/// This release's CRD, as `mlflow-operator crd` prints it and `crds/` holds it.
pub fn definition() -> CustomResourceDefinition {
    let mut crd = MlflowWorkspaceBinding::crd();
    crd.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_ANNOTATION.into(), REVISION.to_string());
    crd
}

/// The CRD's name.
pub fn name() -> String {
    format!(
        "{}.{}",
        <MlflowWorkspaceBinding as kube::Resource>::plural(&()),
        <MlflowWorkspaceBinding as kube::Resource>::group(&())
    )
}

/// How the cluster's CRD compares with [`definition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At this revision or a later one, with every field this release writes.
    Current,
    /// An earlier revision: an upgrade is due. `missing` are the fields it would prune.
    Behind { revision: u32, missing: Vec<String> },
    /// This revision or a later one, yet without some field: changed by hand. Not overwritten.
    Differs { revision: u32, missing: Vec<String> },
    /// Not installed.
    Absent,
}

impl Verdict {
    pub fn upgrade_due(&self) -> bool {
        matches!(self, Verdict::Behind { .. })
    }

    /// Why this release cannot run on the cluster's CRD: it is absent, or of an earlier revision
    /// that would prune fields this release writes. None otherwise, also for [`Verdict::Differs`]:
    /// a later release's CRD is what a rollback runs on, and a rollback must keep serving.
    pub fn problem(&self) -> Option<String> {
        match self {
            Verdict::Absent => Some(format!("the CRD {} is not installed", name())),
            Verdict::Behind { revision, missing } if !missing.is_empty() => {
                Some(lacks(*revision, missing))
            }
            _ => None,
        }
    }

    /// What is worth a warning without stopping anything: a CRD of this or a later revision that
    /// still lacks fields this release writes.
    pub fn warning(&self) -> Option<String> {
        match self {
            Verdict::Differs { revision, missing } => Some(lacks(*revision, missing)),
            _ => None,
        }
    }
}

fn lacks(revision: u32, missing: &[String]) -> String {
    format!(
        "the CRD {} (revision {revision}; this release's is {REVISION}) lacks fields this release writes, which the API server drops: {}",
        name(),
        missing.join(", ")
    )
}

/// Compares the cluster's CRD (`live`, None when absent) with this release's.
pub fn judge(live: Option<&CustomResourceDefinition>) -> Verdict {
    let Some(live) = live else {
        return Verdict::Absent;
    };
    let revision = revision(live);
    let missing = missing_fields(&definition(), live);
    if revision < REVISION {
        Verdict::Behind { revision, missing }
    } else if missing.is_empty() {
        Verdict::Current
    } else {
        Verdict::Differs { revision, missing }
    }
}

/// The revision a CRD carries (0 without the annotation or with one that is not a number).
pub fn revision(crd: &CustomResourceDefinition) -> u32 {
    crd.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0)
}

/// Every field of `ours` that `live` would prune, as `<version>: <path>` (`v1alpha1:
/// status.pods`), or a whole version `live` does not serve.
pub fn missing_fields(
    ours: &CustomResourceDefinition,
    live: &CustomResourceDefinition,
) -> Vec<String> {
    let mut missing = Vec::new();
    for version in &ours.spec.versions {
        let Some(theirs) = live.spec.versions.iter().find(|v| v.name == version.name) else {
            missing.push(format!("version {}", version.name));
            continue;
        };
        let mut paths = Vec::new();
        absent_paths(&schema(version), &schema(theirs), "", &mut paths);
        missing.extend(paths.into_iter().map(|p| format!("{}: {p}", version.name)));
    }
    missing
}

fn schema(version: &CustomResourceDefinitionVersion) -> Value {
    version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

/// The property paths under `ours` that `theirs` neither declares nor keeps as unknown fields.
fn absent_paths(ours: &Value, theirs: &Value, at: &str, out: &mut Vec<String>) {
    if theirs.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    let join = |key: &str| match at {
        "" => key.to_string(),
        _ => format!("{at}.{key}"),
    };
    if let Some(props) = ours.get("properties").and_then(Value::as_object) {
        for (key, schema) in props {
            match theirs.get("properties").and_then(|p| p.get(key)) {
                Some(their) => absent_paths(schema, their, &join(key), out),
                None => out.push(join(key)),
            }
        }
    }
    for nested in ["items", "additionalProperties"] {
        if let (Some(o), Some(t)) = (ours.get(nested), theirs.get(nested))
            && o.is_object()
            && t.is_object()
        {
            let suffix = if nested == "items" { "[]" } else { "{}" };
            absent_paths(o, t, &format!("{at}{suffix}"), out);
        }
    }
}

#[cfg(test)]
mod tests;
