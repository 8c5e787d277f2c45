//! The patch itself: where it adds, the injected annotation, unknown fields, reinvocation.

use serde_json::{Value, json};

use super::*;

/// The operations of the pod's patch on its metadata; the whole patch applies.
fn metadata_ops(p: &Value, b: &MlflowWorkspaceBinding) -> Vec<Value> {
    let Plan::Inject { patch, .. } = plan_with(p, &[b], None, &Defaults::default()) else {
        panic!("{p} is injected")
    };
    let mut out = p.clone();
    json_patch::patch(&mut out, &patch.operations()).unwrap();
    let all: Value = serde_json::from_slice(patch.json()).unwrap();
    let ops = all.as_array().unwrap().iter();
    ops.filter(|o| o["path"].as_str().unwrap().starts_with("/metadata"))
        .cloned()
        .collect()
}

#[test]
fn injected_annotations_are_added_replaced_or_left() {
    let with = |annotations: Value| {
        let mut p = one();
        p["metadata"]["annotations"] = annotations;
        p
    };
    let mut no_generation = simple();
    no_generation.metadata.generation = None;
    no_generation.status.as_mut().unwrap().observed_generation = None;
    let mut no_metadata = one();
    no_metadata.as_object_mut().unwrap().remove("metadata");
    let h = simple().injection_hash();
    let both = |marker: &str| json!({"mlflow-operator.io/injected": marker, "mlflow-operator.io/injected-hash": h});
    let at = |key: &str| format!("/metadata/annotations/mlflow-operator.io~1{key}");
    for (p, b, ops) in [
        (
            one(),
            simple(),
            vec![json!({"op": "add", "path": "/metadata/annotations", "value": both("fraud/3")})],
        ),
        (
            with(json!(null)),
            simple(),
            vec![json!({"op": "add", "path": "/metadata/annotations", "value": both("fraud/3")})],
        ),
        (
            no_metadata,
            simple(),
            vec![
                json!({"op": "add", "path": "/metadata", "value": {"annotations": both("fraud/3")}}),
            ],
        ),
        (
            with(json!({"a": "b"})),
            simple(),
            vec![
                json!({"op": "add", "path": at("injected"), "value": "fraud/3"}),
                json!({"op": "add", "path": at("injected-hash"), "value": h}),
            ],
        ),
        (
            with(
                json!({"mlflow-operator.io/injected": "fraud/2", "mlflow-operator.io/injected-hash": "old"}),
            ),
            simple(),
            vec![
                json!({"op": "replace", "path": at("injected"), "value": "fraud/3"}),
                json!({"op": "replace", "path": at("injected-hash"), "value": h}),
            ],
        ),
        (
            // The URI moved under an unchanged generation: only the hash says so.
            with(
                json!({"mlflow-operator.io/injected": "fraud/3", "mlflow-operator.io/injected-hash": "old"}),
            ),
            simple(),
            vec![
                json!({"op": "replace", "path": at("injected"), "value": "fraud/3"}),
                json!({"op": "replace", "path": at("injected-hash"), "value": h}),
            ],
        ),
        (
            one(),
            no_generation,
            vec![json!({"op": "add", "path": "/metadata/annotations", "value": both("fraud/0")})],
        ),
    ] {
        assert_eq!(metadata_ops(&p, &b), ops, "{p}");
    }
    let done = with(both("fraud/3"));
    let (out, _) = apply(&done, &simple());
    assert_eq!(out["metadata"]["annotations"], both("fraud/3"));
}

#[test]
fn patch_adds_whole_arrays_when_absent_and_appends_otherwise() {
    let b = wi(json!({"clientId": CLIENT, "tenantId": TENANT}));
    let absent = one();
    let present = json!({"metadata": {"annotations": {}}, "spec": {
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "c", "env": [{"name": "X", "value": "1"}], "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}});
    let Plan::Inject { patch, .. } = plan_with(&absent, &[&b], None, &Defaults::default()) else {
        panic!()
    };
    let paths: Vec<String> = patch
        .operations()
        .iter()
        .map(|o| o.path().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/0/env",
            "/spec/containers/0/volumeMounts",
            "/spec/volumes",
            "/metadata/annotations"
        ]
    );
    let Plan::Inject { patch, .. } = plan_with(&present, &[&b], None, &Defaults::default()) else {
        panic!()
    };
    let ops: Value = serde_json::from_slice(patch.json()).unwrap();
    for op in ops.as_array().unwrap() {
        assert_eq!(op["op"], "add");
    }
    let paths: Vec<String> = patch
        .operations()
        .iter()
        .map(|o| o.path().to_string())
        .collect();
    assert_eq!(
        paths
            .iter()
            .filter(|p| *p == "/spec/containers/0/env/-")
            .count(),
        5
    );
    assert!(paths.contains(&"/spec/containers/0/volumeMounts/-".to_string()));
    assert!(paths.contains(&"/spec/volumes/-".to_string()));
    let (out, _) = apply(&present, &b);
    assert_eq!(out["spec"]["volumes"][0]["name"], "data");
}

#[test]
fn unknown_fields_survive() {
    let p = json!({
        "metadata": {"name": "p", "futureMeta": {"x": 1}},
        "spec": {"futurePodField": [1, 2], "containers": [{"name": "c", "futureContainerField": {"deep": true},
                 "env": [{"name": "X", "value": "1", "futureEnvField": "y"}]}]},
        "status": {"phase": "Pending"},
        "futureTopLevel": true
    });
    let (out, _) = apply(&p, &wi(json!({"clientId": CLIENT, "tenantId": TENANT})));
    assert_eq!(out["metadata"]["futureMeta"], p["metadata"]["futureMeta"]);
    assert_eq!(out["spec"]["futurePodField"], p["spec"]["futurePodField"]);
    assert_eq!(
        out["spec"]["containers"][0]["futureContainerField"],
        p["spec"]["containers"][0]["futureContainerField"]
    );
    assert_eq!(
        out["spec"]["containers"][0]["env"][0],
        p["spec"]["containers"][0]["env"][0]
    );
    assert_eq!(out["status"], p["status"]);
    assert_eq!(out["futureTopLevel"], true);
}

#[test]
fn reinvocation_gives_an_empty_patch_and_no_warnings() {
    let p = pod(json!([
        {"name": "own", "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://own"}], "envFrom": [{"secretRef": {"name": "s"}}]},
        {"name": "exp", "env": [{"name": "MLFLOW_EXPERIMENT_NAME", "value": "mine"}]}
    ]));
    let b = mwb(
        "b",
        json!({"trackingUri": URI, "experimentName": "e", "identity": {"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}}}),
    );
    let (once, warnings) = apply(&p, &b);
    assert!(!warnings.is_empty());
    assert_eq!(
        plan_with(&once, &[&b], None, &Defaults::default()),
        Plan::Inject {
            binding: "b".into(),
            patch: Patch::default(),
            warnings: vec![]
        }
    );
}
