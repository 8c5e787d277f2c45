//! The API server itself refuses broken bindings (OpenAPI + CEL in the CRD), with a message
//! that says what to fix; valid ones are accepted.

use mlflow_operator_test_support as common;

use common::webhook::ensure_crd;
use common::with_temp_ns;
use kube::Api;
use kube::api::PostParams;
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::{Value, json};

const GUID: &str = "00000000-0000-0000-0000-000000000000";

fn azure_ml() -> Value {
    json!({"subscriptionId": GUID, "resourceGroup": "ml-rg", "workspaceName": "ml-ws"})
}

fn with(mut base: Value, path: &[&str], v: Value) -> Value {
    let mut cur = &mut base;
    for (i, p) in path.iter().enumerate() {
        if i == path.len() - 1 {
            cur[*p] = v.clone();
        } else {
            cur = &mut cur[*p];
        }
    }
    base
}

fn invalid_cases() -> Vec<(&'static str, Value, &'static str)> {
    let tracking = json!({"trackingUri": "https://mlflow.example.com"});
    let aml = json!({"azureML": azure_ml()});
    let sp = json!({"clientId": GUID, "tenantId": GUID});
    vec![
        (
            "neither azureML nor trackingUri",
            json!({"experimentName": "e"}),
            "set exactly one of spec.azureML",
        ),
        (
            "both azureML and trackingUri",
            json!({"azureML": azure_ml(), "trackingUri": "https://x.example.com"}),
            "set exactly one of spec.azureML",
        ),
        (
            "subscriptionId not a GUID",
            with(aml.clone(), &["azureML", "subscriptionId"], json!("my-sub")),
            "subscriptionId must be a GUID",
        ),
        (
            "empty resourceGroup",
            with(aml.clone(), &["azureML", "resourceGroup"], json!("")),
            "resourceGroup must be 1 to 90",
        ),
        (
            "resourceGroup ending in a period",
            with(aml.clone(), &["azureML", "resourceGroup"], json!("rg.")),
            "must not end with '.'",
        ),
        (
            "empty workspaceName",
            with(aml.clone(), &["azureML", "workspaceName"], json!("")),
            "workspaceName must be 3 to 33",
        ),
        (
            "unknown cloud",
            with(
                aml.clone(),
                &["azureML", "cloud"],
                json!("AzureGermanCloud"),
            ),
            "Unsupported value",
        ),
        (
            "trackingUri with another scheme",
            json!({"trackingUri": "ftp://mlflow.example.com"}),
            "trackingUri must be an MLflow URI",
        ),
        (
            "trackingUri with spaces",
            json!({"trackingUri": "http://mlflow example.com"}),
            "trackingUri must be an MLflow URI",
        ),
        (
            "trackingUri not a URI",
            json!({"trackingUri": "mlflow"}),
            "trackingUri must be an MLflow URI",
        ),
        (
            "registryUri not a URI",
            with(tracking.clone(), &["registryUri"], json!("models")),
            "registryUri must be an MLflow URI",
        ),
        (
            "empty experimentName",
            with(tracking.clone(), &["experimentName"], json!("")),
            "experimentName must be 1 to 256",
        ),
        (
            "two identity modes",
            with(
                tracking.clone(),
                &["identity"],
                json!({"workloadIdentity": {}, "managedIdentity": {}}),
            ),
            "set at most one of identity.workloadIdentity",
        ),
        (
            "workload identity clientId not a GUID",
            with(
                tracking.clone(),
                &["identity"],
                json!({"workloadIdentity": {"clientId": "app"}}),
            ),
            "identity.workloadIdentity.clientId must be a GUID",
        ),
        (
            "workload identity tenantId not a GUID",
            with(
                tracking.clone(),
                &["identity"],
                json!({"workloadIdentity": {"tenantId": "contoso.onmicrosoft.com"}}),
            ),
            "identity.workloadIdentity.tenantId must be a GUID",
        ),
        (
            "token expiry below 3600",
            with(
                tracking.clone(),
                &["identity"],
                json!({"workloadIdentity": {"tokenExpirationSeconds": 600}}),
            ),
            "tokenExpirationSeconds must be between 3600 and 86400",
        ),
        (
            "token expiry above 86400",
            with(
                tracking.clone(),
                &["identity"],
                json!({"workloadIdentity": {"tokenExpirationSeconds": 86401}}),
            ),
            "tokenExpirationSeconds must be between 3600 and 86400",
        ),
        (
            "managed identity clientId not a GUID",
            with(
                tracking.clone(),
                &["identity"],
                json!({"managedIdentity": {"clientId": "mi"}}),
            ),
            "identity.managedIdentity.clientId must be a GUID",
        ),
        (
            "service principal with both secret references",
            with(
                tracking.clone(),
                &["identity"],
                json!({"servicePrincipal": with(with(sp.clone(), &["clientSecretRef"], json!({"name": "s", "key": "k"})), &["certificateSecretRef"], json!({"name": "c", "key": "tls.pem"}))}),
            ),
            "needs exactly one of clientSecretRef or certificateSecretRef",
        ),
        (
            "service principal with no secret reference",
            with(
                tracking.clone(),
                &["identity"],
                json!({"servicePrincipal": sp.clone()}),
            ),
            "needs exactly one of clientSecretRef or certificateSecretRef",
        ),
        (
            "service principal tenant not a GUID",
            with(
                tracking.clone(),
                &["identity"],
                json!({"servicePrincipal": with(with(sp.clone(), &["tenantId"], json!("t")), &["clientSecretRef"], json!({"name": "s", "key": "k"}))}),
            ),
            "identity.servicePrincipal.tenantId must be a GUID",
        ),
        (
            "service principal without clientId",
            with(
                tracking.clone(),
                &["identity"],
                json!({"servicePrincipal": {"tenantId": GUID, "clientSecretRef": {"name": "s", "key": "k"}}}),
            ),
            "clientId: Required value",
        ),
        (
            "auth secret name not a Secret name",
            with(
                tracking.clone(),
                &["auth"],
                json!({"secretName": "Bad_Name"}),
            ),
            "must be the name of a Secret",
        ),
        (
            "a run tag key with a character MLflow refuses",
            with(
                tracking.clone(),
                &["runTags"],
                json!({"extra": {"team$": "fraud"}}),
            ),
            "runTags.extra keys must be MLflow tag keys",
        ),
        (
            "a run tag key that is a path resolving elsewhere",
            with(
                tracking.clone(),
                &["runTags"],
                json!({"extra": {"a/../b": "x"}}),
            ),
            "no . or .. path segment",
        ),
        (
            "a run tag key over 250 characters",
            with(
                tracking.clone(),
                &["runTags"],
                json!({"extra": {"k".repeat(251): "x"}}),
            ),
            "1 to 250 of",
        ),
        (
            "more than 20 run tags",
            with(
                tracking.clone(),
                &["runTags", "extra"],
                (0..21).map(|i| (format!("t{i}"), json!("x"))).collect(),
            ),
            "must have at most 20 items",
        ),
        (
            "a run tag value over 1000 characters",
            with(
                tracking.clone(),
                &["runTags"],
                json!({"extra": {"a": "v".repeat(1001)}}),
            ),
            "Too long",
        ),
        (
            "a sampling interval of 0",
            with(
                tracking.clone(),
                &["systemMetrics"],
                json!({"samplingIntervalSeconds": 0}),
            ),
            "samplingIntervalSeconds must be between 1 and 3600",
        ),
    ]
}

fn valid_cases() -> Vec<(&'static str, Value)> {
    vec![
        (
            "https tracking server",
            json!({"trackingUri": "https://mlflow.example.com:5000/prefix"}),
        ),
        (
            "in-cluster http server",
            json!({"trackingUri": "http://mlflow.mlflow.svc.cluster.local:5000", "experimentName": "fraud-detection"}),
        ),
        (
            "databricks",
            json!({"trackingUri": "databricks", "registryUri": "databricks-uc"}),
        ),
        (
            "azureml URI",
            json!({"trackingUri": "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"}),
        ),
        (
            "Azure ML workspace, default cloud",
            json!({"azureML": azure_ml()}),
        ),
        (
            "Azure ML in China with workload identity",
            json!({"azureML": with(azure_ml(), &["cloud"], json!("AzureChinaCloud")), "identity": {"workloadIdentity": {"clientId": GUID, "tenantId": GUID, "tokenExpirationSeconds": 86400}}}),
        ),
        (
            "system-assigned managed identity",
            json!({"azureML": azure_ml(), "identity": {"managedIdentity": {}}}),
        ),
        (
            "service principal by certificate",
            json!({"azureML": azure_ml(), "identity": {"servicePrincipal": {"clientId": GUID, "tenantId": GUID, "certificateSecretRef": {"name": "sp-cert", "key": "tls.pem", "passwordKey": "password"}}}}),
        ),
        (
            "basic auth, selector and extra env",
            json!({"trackingUri": "https://mlflow.example.com", "auth": {"secretName": "mlflow-creds"}, "podSelector": {"matchLabels": {"team": "fraud"}}, "env": [{"name": "MLFLOW_TRACKING_INSECURE_TLS", "value": "true"}]}),
        ),
        (
            "run tags and system metrics",
            json!({"trackingUri": "https://mlflow.example.com",
                   "runTags": {"kubernetes": true, "extra": {"team": "fraud", "cost-center/id": "4711", "a b:c_d.e": "x"}},
                   "systemMetrics": {"enabled": true, "samplingIntervalSeconds": 10}}),
        ),
    ]
}

fn binding(name: &str, spec: Value) -> MlflowWorkspaceBinding {
    serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Sends the spec as raw JSON, so values the Rust types would not even represent (an unknown
/// cloud) reach the API server as a user's YAML would.
async fn submit(client: &kube::Client, ns: &str, name: &str, spec: &Value) -> Result<(), String> {
    let req = http::Request::post(format!(
        "/apis/mlflow-operator.io/v1alpha1/namespaces/{ns}/mlflowworkspacebindings?dryRun=All"
    ))
    .header("content-type", "application/json")
    .body(
        serde_json::to_vec(&json!({
            "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap(),
    )
    .unwrap();
    match client.request::<Value>(req).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(e.message),
        Err(e) => panic!("{name}: unexpected error {e}"),
    }
}

#[tokio::test]
async fn rejects_each_invalid_binding_with_a_message_that_says_what_to_fix() {
    with_temp_ns("crd-invalid", |client, ns| async move {
        ensure_crd(&client).await;
        let mut failures = vec![];
        for (i, (what, spec, want)) in invalid_cases().into_iter().enumerate() {
            match submit(&client, &ns, &format!("bad-{i}"), &spec).await {
                Ok(()) => failures.push(format!("{what}: accepted, should be refused")),
                Err(msg) if msg.contains(want) => {}
                Err(msg) => failures.push(format!("{what}: message {msg:?} lacks {want:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    })
    .await;
}

#[tokio::test]
async fn accepts_valid_bindings() {
    with_temp_ns("crd-valid", |client, ns| async move {
        ensure_crd(&client).await;
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        for (i, (what, spec)) in valid_cases().into_iter().enumerate() {
            let b = binding(&format!("ok-{i}"), spec);
            api.create(&PostParams::default(), &b)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    })
    .await;
}

#[tokio::test]
async fn kubectl_explains_fields_and_lists_uri_experiment_ready_and_age() {
    with_temp_ns("crd-kubectl", |client, ns| async move {
        ensure_crd(&client).await;
        let explain = common::kubectl(&["explain", "mwb.spec.identity.workloadIdentity"], "").await;
        assert!(
            explain.contains("tokenExpirationSeconds") && explain.contains("3600 to 86400"),
            "{explain}"
        );
        let explain = common::kubectl(&["explain", "mwb.spec.azureML.subscriptionId"], "").await;
        assert!(explain.contains("subscription id"), "{explain}");

        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        api.create(
            &PostParams::default(),
            &binding(
                "b",
                json!({"trackingUri": "https://x.example.com", "experimentName": "exp-1"}),
            ),
        )
        .await
        .unwrap();
        let table = common::kubectl(&["get", "mwb", "-n", &ns], "").await;
        let header = table.lines().next().unwrap();
        for col in ["NAME", "URI", "EXPERIMENT", "READY", "AGE"] {
            assert!(header.contains(col), "{header}");
        }
        assert!(table.contains("exp-1"), "{table}");
        let by_category = common::kubectl(&["get", "mlflow", "-n", &ns, "-o", "name"], "").await;
        assert!(
            by_category.contains("mlflowworkspacebinding.mlflow-operator.io/b"),
            "{by_category}"
        );
    })
    .await;
}
