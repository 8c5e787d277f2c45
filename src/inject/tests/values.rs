//! The MLflow and cloud variables a binding injects, and their fixed order.

use serde_json::json;

use super::*;

#[test]
fn values_tracking_registry_and_experiment() {
    let with_annotation = |v: &str| {
        let mut p = one();
        p["metadata"]["annotations"] = json!({"mlflow-operator.io/experiment-name": v});
        p
    };
    let mut status_registry = mwb("b", json!({"trackingUri": URI}));
    status_registry.status.as_mut().unwrap().registry_uri = Some("http://status-registry".into());
    let mut both = mwb(
        "b",
        json!({"trackingUri": URI, "registryUri": "http://spec-registry", "experimentName": "spec-exp"}),
    );
    both.status.as_mut().unwrap().registry_uri = Some("http://status-registry".into());
    let none = mwb("b", json!({"trackingUri": URI}));
    for (p, b, registry, experiment) in [
        (one(), &none, None, None),
        (
            one(),
            &status_registry,
            Some("http://status-registry"),
            None,
        ),
        (one(), &both, Some("http://spec-registry"), Some("spec-exp")),
        (
            with_annotation("pod-exp"),
            &both,
            Some("http://spec-registry"),
            Some("pod-exp"),
        ),
        (with_annotation("pod-exp"), &none, None, Some("pod-exp")),
        (
            with_annotation(""),
            &both,
            Some("http://spec-registry"),
            Some("spec-exp"),
        ),
    ] {
        let (out, _) = apply(&p, b);
        assert_eq!(
            get(&out, "containers", 0, "MLFLOW_TRACKING_URI").unwrap()["value"],
            URI
        );
        assert_eq!(
            get(&out, "containers", 0, "MLFLOW_REGISTRY_URI").map(|e| e["value"].clone()),
            registry.map(|s| json!(s))
        );
        assert_eq!(
            get(&out, "containers", 0, "MLFLOW_EXPERIMENT_NAME").map(|e| e["value"].clone()),
            experiment.map(|s| json!(s))
        );
    }
}

#[test]
fn azureml_current_cloud_and_authority_host_follow_the_cloud() {
    let ws = |cloud: &str| {
        json!({"azureML": {"subscriptionId": CLIENT, "resourceGroup": "rg", "workspaceName": "ws", "cloud": cloud},
                                  "identity": {"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "s", "key": "k"}}}})
    };
    let uri = |u: &str| json!({"trackingUri": u, "identity": {"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "s", "key": "k"}}}});
    for (spec, cloud, authority) in [
        (
            ws("AzurePublicCloud"),
            Some("AzureCloud"),
            "https://login.microsoftonline.com/",
        ),
        (
            ws("AzureChinaCloud"),
            Some("AzureChinaCloud"),
            "https://login.chinacloudapi.cn/",
        ),
        (
            ws("AzureUSGovernment"),
            Some("AzureUSGovernment"),
            "https://login.microsoftonline.us/",
        ),
        (
            uri("azureml://eastus.api.azureml.ms/mlflow/v1.0/x"),
            Some("AzureCloud"),
            "https://login.microsoftonline.com/",
        ),
        (
            uri("azureml://chinaeast2.api.ml.azure.cn/mlflow/v1.0/x"),
            Some("AzureChinaCloud"),
            "https://login.chinacloudapi.cn/",
        ),
        (
            uri("azureml://usgovvirginia.api.ml.azure.us/mlflow/v1.0/x"),
            Some("AzureUSGovernment"),
            "https://login.microsoftonline.us/",
        ),
        (
            uri("https://mlflow.example.com"),
            None,
            "https://login.microsoftonline.com/",
        ),
    ] {
        let (out, _) = apply(&one(), &mwb("b", spec.clone()));
        assert_eq!(
            get(&out, "containers", 0, "AZUREML_CURRENT_CLOUD").map(|e| e["value"].clone()),
            cloud.map(|s| json!(s)),
            "{spec}"
        );
        assert_eq!(
            get(&out, "containers", 0, "AZURE_AUTHORITY_HOST").unwrap()["value"],
            authority,
            "{spec}"
        );
    }
}

#[test]
fn auth_secret_is_referenced_by_optional_secret_key_refs_never_values() {
    let (out, _) = apply(
        &one(),
        &mwb(
            "b",
            json!({"trackingUri": URI, "auth": {"secretName": "creds"}}),
        ),
    );
    for (var, key) in [
        ("MLFLOW_TRACKING_USERNAME", "username"),
        ("MLFLOW_TRACKING_PASSWORD", "password"),
        ("MLFLOW_TRACKING_TOKEN", "token"),
    ] {
        assert_eq!(
            get(&out, "containers", 0, var).unwrap(),
            &json!({"name": var, "valueFrom": {"secretKeyRef": {"name": "creds", "key": key, "optional": true}}})
        );
    }
}

#[test]
fn env_order_is_fixed_and_spec_env_comes_last() {
    let b = mwb(
        "b",
        json!({
            "azureML": {"subscriptionId": CLIENT, "resourceGroup": "rg", "workspaceName": "ws"},
            "registryUri": "http://reg", "experimentName": "exp", "auth": {"secretName": "creds"},
            "identity": {"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}},
            "env": [{"name": "MLFLOW_TRACKING_INSECURE_TLS", "value": "true"}, {"name": "AZURE_CLIENT_ID", "value": "dup"}]
        }),
    );
    let (out, _) = apply(&one(), &b);
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_TRACKING_URI",
            "MLFLOW_REGISTRY_URI",
            "MLFLOW_EXPERIMENT_NAME",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
            "AZUREML_CURRENT_CLOUD",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_AUTHORITY_HOST",
            "AZURE_FEDERATED_TOKEN_FILE",
            "MLFLOW_TRACKING_INSECURE_TLS",
        ]
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_ID").unwrap()["value"],
        CLIENT
    );
}
