//! Plan-level tests: every rule of the injection contract, each applied with `json_patch::patch`
//! to the original pod (a wrong path fails), plus property tests for idempotence and preservation.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};

use super::*;

const NS: &str = "team-a";
const URI: &str = "https://mlflow.example.com";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const TENANT: &str = "22222222-2222-2222-2222-222222222222";

/// A Ready binding (generation 3) with this spec.
fn mwb(name: &str, spec: Value) -> MlflowWorkspaceBinding {
    serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": name, "namespace": NS, "generation": 3},
        "spec": spec,
        "status": {
            "observedGeneration": 3,
            "trackingUri": URI,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Resolved", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }
    }))
    .unwrap()
}

fn simple() -> MlflowWorkspaceBinding {
    mwb("fraud", json!({"trackingUri": URI}))
}

fn sa(annotations: Value) -> ServiceAccount {
    serde_json::from_value(
        json!({"metadata": {"name": "default", "namespace": NS, "annotations": annotations}}),
    )
    .unwrap()
}

fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"mlflow-operator.io/track": "true"}},
        "spec": {"containers": containers}
    })
}

fn one() -> Value {
    pod(json!([{"name": "train", "image": "x"}]))
}

fn plan_with(
    p: &Value,
    bindings: &[&MlflowWorkspaceBinding],
    sa: Option<&ServiceAccount>,
    defaults: &Defaults,
) -> Plan {
    let view = NamespaceView {
        namespace: NS,
        bindings: bindings.to_vec(),
        service_account: sa,
    };
    plan(p, &view, defaults)
}

/// Plans with these bindings, applies the patch to a copy of `p`; returns the result and warnings.
fn apply_with(
    p: &Value,
    bindings: &[&MlflowWorkspaceBinding],
    sa: Option<&ServiceAccount>,
    defaults: &Defaults,
) -> (Value, Vec<String>) {
    match plan_with(p, bindings, sa, defaults) {
        Plan::Inject {
            patch, warnings, ..
        } => {
            let mut out = p.clone();
            json_patch::patch(&mut out, &patch.operations())
                .unwrap_or_else(|e| panic!("{e}: {patch}"));
            (out, warnings)
        }
        other => panic!("expected Inject, got {other:?}"),
    }
}

fn apply(p: &Value, b: &MlflowWorkspaceBinding) -> (Value, Vec<String>) {
    apply_with(p, &[b], None, &Defaults::default())
}

/// The env of `spec.<list>[i]` as (name, value-or-valueFrom) pairs.
fn env(p: &Value, list: &str, i: usize) -> Vec<(String, Value)> {
    p["spec"][list][i]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e.get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone()),
            )
        })
        .collect()
}

fn names(p: &Value, list: &str, i: usize) -> Vec<String> {
    env(p, list, i).into_iter().map(|(n, _)| n).collect()
}

fn get<'a>(p: &'a Value, list: &str, i: usize, name: &str) -> Option<&'a Value> {
    p["spec"][list][i]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// Whether the pod has no volumes and its first container no mounts.
fn mounts_nothing(p: &Value) -> bool {
    p["spec"].get("volumes").is_none() && p["spec"]["containers"][0].get("volumeMounts").is_none()
}

fn refusal(plan: Plan) -> Refusal {
    match plan {
        Plan::Refuse(r) => {
            assert!(r.message.starts_with("mlflow-operator: "), "{}", r.message);
            assert!(r.message.contains(NS), "{}", r.message);
            r
        }
        other => panic!("expected Refuse, got {other:?}"),
    }
}

/// A binding with workload identity settings `extra`.
fn wi(extra: Value) -> MlflowWorkspaceBinding {
    mwb(
        "wi",
        json!({"trackingUri": URI, "identity": {"workloadIdentity": extra}}),
    )
}

mod choice;
mod containers;
mod identity;
mod memo;
mod patch;
mod properties;
mod run_tags;
mod tree;
mod values;
