//! End to end with the real MLflow: the environment the real webhook injects into a pod, read
//! back from the API server, makes the real MLflow Python client log a run to a real
//! `mlflow server`, in the experiment the binding (or the pod's annotation) names.
//!
//! Needs the local control plane and MLFLOW_OPERATOR_MLFLOW_BIN (`hack/test` provides both).

use mlflow_operator_test_support as common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::mlflow::{BasicAuth, MlflowServer, run_python};
use common::webhook::{TestWebhook, env_of, ready_binding};
use common::with_temp_ns;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use mlflow_operator::inject::Defaults;
use serde_json::{Value, json};

/// A training script that relies on the environment alone: it never sets the tracking URI, the
/// experiment or credentials.
const TRAIN: &str = r#"
import os
import mlflow
with mlflow.start_run(run_name="e2e") as r:
    mlflow.log_param("epochs", os.environ["EPOCHS"])
    mlflow.log_metric("loss", 0.5)
    print("run", r.info.run_id, "experiment", r.info.experiment_id)
"#;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the webhook in `ns` and a Ready binding "b" for `server` with `spec` (trackingUri is
/// added), waiting until the API server calls the webhook and its cache sees the binding.
async fn webhook_and_binding(
    client: &Client,
    ns: &str,
    server: &MlflowServer,
    mut spec: Value,
) -> TestWebhook {
    let wh = TestWebhook::start(client, ns, Defaults::default()).await;
    wh.wait_effective().await;
    spec["trackingUri"] = json!(server.url);
    ready_binding(client, ns, "b", spec, &server.url).await;
    wh.wait_binding_ready("b").await;
    wh
}

/// Runs `test` in a fresh namespace with the webhook and a Ready binding for `server` (see
/// `webhook_and_binding`); stops the webhook afterwards.
async fn with_binding(
    prefix: &str,
    server: &MlflowServer,
    spec: Value,
    test: impl AsyncFnOnce(&Client, &str),
) {
    with_temp_ns(prefix, |client, ns| async move {
        let wh = webhook_and_binding(&client, &ns, server, spec).await;
        test(&client, &ns).await;
        wh.stop().await;
    })
    .await;
}

/// Creates a labelled training pod through the API server and returns it as stored.
async fn create_pod(client: &Client, ns: &str, annotations: Value) -> Pod {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "train",
            "labels": {"mlflow-operator.io/track": "true"},
            "annotations": annotations
        },
        "spec": {"containers": [{
            "name": "train",
            "image": "python:3.11",
            "env": [{"name": "EPOCHS", "value": "3"}]
        }]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &p)
        .await
        .expect("create the training pod");
    // What a kubelet would start: the pod as the API server stored it.
    Api::<Pod>::namespaced(client.clone(), ns)
        .get("train")
        .await
        .unwrap()
}

/// The plain-value env entries of container `train`.
fn plain_env(pod: &Pod) -> BTreeMap<String, String> {
    env_of(pod, "train")
        .into_iter()
        .filter_map(|(k, e)| Some((k, e.get("value")?.as_str()?.to_string())))
        .collect()
}

/// Asserts that experiment `experiment` holds exactly one FINISHED run "e2e" with the param
/// and the metric the script logged.
async fn assert_logged(server: &MlflowServer, experiment: &str) {
    let id = server
        .experiment_id(experiment)
        .await
        .unwrap_or_else(|| panic!("no experiment {experiment} on the server"));
    let runs = server.runs_named(&id, "e2e").await;
    assert_eq!(runs.len(), 1, "one run e2e in {experiment}: {runs:?}");
    let run = &runs[0];
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
    assert_eq!(run["info"]["experiment_id"], json!(id), "{run}");
    let params = run["data"]["params"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        params.contains(&json!({"key": "epochs", "value": "3"})),
        "param epochs=3 in {run}"
    );
    let metrics = run["data"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        metrics
            .iter()
            .any(|m| m["key"] == "loss" && m["value"].as_f64() == Some(0.5)),
        "metric loss=0.5 in {run}"
    );
}

#[tokio::test]
async fn a_pod_injected_by_the_webhook_logs_a_run_with_the_real_mlflow_client() {
    let server = MlflowServer::start().await;
    let spec = json!({"experimentName": "fraud-detection"});
    with_binding("mlflow-e2e", &server, spec, async |client, ns| {
        let pod = create_pod(client, ns, json!({})).await;
        let env = plain_env(&pod);
        assert_eq!(
            env.get("MLFLOW_TRACKING_URI"),
            Some(&server.url),
            "injected env: {env:?}"
        );
        assert_eq!(
            env.get("MLFLOW_EXPERIMENT_NAME").map(String::as_str),
            Some("fraud-detection")
        );
        assert_eq!(env.get("EPOCHS").map(String::as_str), Some("3"));

        let out = run_python(&env, TRAIN, CLIENT_TIMEOUT).await;
        eprintln!("{out}");
        assert_logged(&server, "fraud-detection").await;
    })
    .await;
}

#[tokio::test]
async fn the_experiment_annotation_overrides_the_binding() {
    let server = MlflowServer::start().await;
    let spec = json!({"experimentName": "fraud-detection"});
    with_binding("mlflow-e2e-ann", &server, spec, async |client, ns| {
        let pod = create_pod(
            client,
            ns,
            json!({"mlflow-operator.io/experiment-name": "override-exp"}),
        )
        .await;
        let env = plain_env(&pod);
        assert_eq!(
            env.get("MLFLOW_EXPERIMENT_NAME").map(String::as_str),
            Some("override-exp"),
            "injected env: {env:?}"
        );

        run_python(&env, TRAIN, CLIENT_TIMEOUT).await;
        assert_logged(&server, "override-exp").await;
        assert_eq!(
            server.experiment_id("fraud-detection").await,
            None,
            "the binding's experiment is not used"
        );
    })
    .await;
}

/// What a kubelet does with the env of container `train`: plain values as they are, secretKeyRef
/// values read from the Secret (an optional reference to a missing key sets nothing).
async fn resolve_env(client: &Client, ns: &str, pod: &Pod) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut env = BTreeMap::new();
    for (name, entry) in env_of(pod, "train") {
        if let Some(v) = entry.get("value").and_then(Value::as_str) {
            env.insert(name, v.to_string());
            continue;
        }
        let r = entry
            .pointer("/valueFrom/secretKeyRef")
            .unwrap_or_else(|| panic!("{name}: neither a value nor a secretKeyRef: {entry}"));
        let secret = secrets
            .get(r["name"].as_str().unwrap())
            .await
            .expect("the referenced Secret");
        let key = r["key"].as_str().unwrap();
        match secret.data.unwrap_or_default().get(key) {
            Some(bytes) => {
                env.insert(name, String::from_utf8(bytes.0.clone()).unwrap());
            }
            None => assert_eq!(r["optional"], json!(true), "{name}: missing key {key}"),
        }
    }
    env
}

#[tokio::test]
async fn basic_auth_credentials_come_from_the_secret_by_reference() {
    let auth = BasicAuth {
        username: "admin".into(),
        password: format!(
            "e2e-{}-{}",
            common::random_suffix(),
            common::random_suffix()
        ),
    };
    let server = MlflowServer::start_with(Some(auth.clone())).await;
    // The server really demands the credentials.
    let anonymous = common::http_client()
        .get(format!(
            "{}/api/2.0/mlflow/experiments/get-by-name?experiment_name=secured",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(anonymous, reqwest::StatusCode::UNAUTHORIZED);

    let spec = json!({"experimentName": "secured", "auth": {"secretName": "mlflow-creds"}});
    with_binding("mlflow-e2e-auth", &server, spec, async |client, ns| {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "mlflow-creds"},
            "stringData": {"username": auth.username, "password": auth.password}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the credentials Secret");
        let pod = create_pod(client, ns, json!({})).await;

        // The pod carries references, never the credentials themselves.
        let entries = env_of(&pod, "train");
        for (var, key) in [
            ("MLFLOW_TRACKING_USERNAME", "username"),
            ("MLFLOW_TRACKING_PASSWORD", "password"),
            ("MLFLOW_TRACKING_TOKEN", "token"),
        ] {
            assert_eq!(
                entries
                    .get(var)
                    .and_then(|e| e.pointer("/valueFrom/secretKeyRef")),
                Some(&json!({"name": "mlflow-creds", "key": key, "optional": true})),
                "{var} in {entries:?}"
            );
            assert!(entries[var].get("value").is_none(), "{var} has no value");
        }
        let pod_json = serde_json::to_string(&pod).unwrap();
        assert!(
            !pod_json.contains(&auth.password),
            "the password is not in the pod"
        );

        let env = resolve_env(client, ns, &pod).await;
        assert_eq!(env.get("MLFLOW_TRACKING_USERNAME"), Some(&auth.username));
        assert!(
            !env.contains_key("MLFLOW_TRACKING_TOKEN"),
            "no token key in the Secret"
        );
        run_python(&env, TRAIN, CLIENT_TIMEOUT).await;
        assert_logged(&server, "secured").await;
    })
    .await;
}
