//! Which containers are injected, and what a container that already sets something keeps.

use serde_json::json;

use super::*;

#[test]
fn every_container_and_init_container_is_injected_and_native_sidecar_fields_kept() {
    let p = json!({
        "metadata": {"name": "p"},
        "spec": {
            "initContainers": [
                {"name": "setup", "image": "i"},
                {"name": "sidecar", "image": "s", "restartPolicy": "Always", "startupProbe": {"exec": {"command": ["true"]}}}
            ],
            "containers": [{"name": "a"}, {"name": "b", "env": [{"name": "KEEP", "value": "1"}]}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
        }
    });
    let (out, _) = apply(&p, &simple());
    for (list, i) in [
        ("initContainers", 0),
        ("initContainers", 1),
        ("containers", 0),
        ("containers", 1),
    ] {
        assert!(
            get(&out, list, i, "MLFLOW_TRACKING_URI").is_some(),
            "{list}[{i}]"
        );
    }
    assert_eq!(out["spec"]["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(
        out["spec"]["initContainers"][1]["startupProbe"],
        p["spec"]["initContainers"][1]["startupProbe"]
    );
    assert_eq!(names(&out, "containers", 1)[0], "KEEP");
    // Ephemeral containers are not touched.
    assert_eq!(
        out["spec"]["ephemeralContainers"],
        p["spec"]["ephemeralContainers"]
    );
}

#[test]
fn skip_containers_get_no_env_and_no_mount() {
    let mut p = pod(json!([{"name": "train"}, {"name": "proxy"}, {"name": "log"}]));
    p["spec"]["initContainers"] = json!([{"name": "init"}]);
    p["metadata"]["annotations"] = json!({"mlflow-operator.io/skip-containers": " proxy ;init, "});
    let b = mwb(
        "b",
        json!({"trackingUri": URI, "identity": {"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}}}),
    );
    let (out, _) = apply(&p, &b);
    for (list, i, injected) in [
        ("containers", 0, true),
        ("containers", 1, false),
        ("containers", 2, true),
        ("initContainers", 0, false),
    ] {
        assert_eq!(
            out["spec"][list][i].get("env").is_some(),
            injected,
            "{list}[{i}]"
        );
        assert_eq!(
            out["spec"][list][i].get("volumeMounts").is_some(),
            injected,
            "{list}[{i}]"
        );
    }
}

#[test]
fn existing_variable_is_never_changed_and_is_reported() {
    let p = pod(json!([{"name": "train", "env": [
        {"name": "MLFLOW_EXPERIMENT_NAME", "value": "mine"},
        {"name": "AZURE_CLIENT_ID", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}
    ]}]));
    let b = mwb(
        "b",
        json!({"trackingUri": URI, "experimentName": "theirs", "identity": {"managedIdentity": {"clientId": CLIENT}}}),
    );
    let (out, warnings) = apply(&p, &b);
    assert_eq!(
        get(&out, "containers", 0, "MLFLOW_EXPERIMENT_NAME").unwrap()["value"],
        "mine"
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_ID").unwrap()["valueFrom"]["secretKeyRef"]["name"],
        "x"
    );
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_EXPERIMENT_NAME",
            "AZURE_CLIENT_ID",
            "MLFLOW_TRACKING_URI"
        ]
    );
    assert_eq!(
        warnings,
        [
            "mlflow-operator: container \"train\" already sets MLFLOW_EXPERIMENT_NAME; left unchanged",
            "mlflow-operator: container \"train\" already sets AZURE_CLIENT_ID; left unchanged",
        ]
    );
}

#[test]
fn existing_entry_identical_to_ours_is_silent() {
    let p = pod(json!([{"name": "train", "env": [{"name": "MLFLOW_TRACKING_URI", "value": URI}]}]));
    let b = mwb("b", json!({"trackingUri": URI, "experimentName": "exp"}));
    let (out, warnings) = apply(&p, &b);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        names(&out, "containers", 0),
        ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"]
    );
}

#[test]
fn self_configured_container_gets_no_mlflow_variables_but_identity_and_cloud() {
    let p = pod(json!([
        {"name": "own", "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://own"}]},
        {"name": "plain"}
    ]));
    let b = mwb(
        "b",
        json!({
            "trackingUri": "azureml://eastus.api.azureml.ms/mlflow/v1.0/x", "experimentName": "exp",
            "identity": {"managedIdentity": {"clientId": CLIENT}},
            "env": [{"name": "MLFLOW_TRACKING_INSECURE_TLS", "value": "true"}, {"name": "OTHER", "value": "1"}]
        }),
    );
    let (out, warnings) = apply(&p, &b);
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_TRACKING_URI",
            "AZUREML_CURRENT_CLOUD",
            "AZURE_CLIENT_ID",
            "OTHER"
        ]
    );
    assert_eq!(
        get(&out, "containers", 0, "MLFLOW_TRACKING_URI").unwrap()["value"],
        "http://own"
    );
    assert!(names(&out, "containers", 1).contains(&"MLFLOW_EXPERIMENT_NAME".to_string()));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("\"own\" already sets MLFLOW_TRACKING_URI; it is self-configured"),
        "{warnings:?}"
    );
}

#[test]
fn env_from_is_warned_once_per_container_when_we_add_env() {
    let p = pod(json!([
        {"name": "a", "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}}]},
        {"name": "b", "envFrom": []}
    ]));
    let (_, warnings) = apply(&p, &simple());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("container \"a\" has envFrom"),
        "{warnings:?}"
    );
}
