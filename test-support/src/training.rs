//! The example training image on the node (`examples/training`, loaded by
//! `tests/cluster/images/load training`), as the Azure ML node suites run it: a team namespace
//! whose pods trust the fake cloud's CA, the training container and its pod, and waiting for
//! train.py's result line.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

pub const TRAINING_IMAGE: &str = "mlflow-training:3.15.0";
/// The ConfigMap with the fake cloud's CA (`ca.crt`) in every team namespace.
pub const CA_CONFIGMAP: &str = "fake-cloud-ca";
pub const CA_DIR: &str = "/etc/fake-cloud-ca";

/// Creates team namespace `name` with the fakes' CA (`ca_pem`) and a `trainer` ServiceAccount,
/// and waits for its `default` ServiceAccount (pods are refused before it exists).
pub async fn team_namespace(client: &Client, name: &str, ca_pem: &str) {
    crate::create_test_namespace(client, name).await;
    crate::fake_cloud::ca_configmap(client, name, CA_CONFIGMAP, ca_pem).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "trainer"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
}

/// The subject of the `trainer` ServiceAccount's tokens, which applications are federated with.
pub fn trainer_subject(ns: &str) -> String {
    format!("system:serviceaccount:{ns}:trainer")
}

/// The training container: the example image, its own command, plus only the CA bundle.
pub fn container(command: Value, env: Value) -> Value {
    let mut env_list =
        vec![json!({"name": "REQUESTS_CA_BUNDLE", "value": format!("{CA_DIR}/ca.crt")})];
    env_list.extend(env.as_array().cloned().unwrap_or_default());
    let mut c = json!({
        "name": "train",
        "image": TRAINING_IMAGE,
        "imagePullPolicy": "Never",
        "env": env_list,
        "volumeMounts": [{"name": CA_CONFIGMAP, "mountPath": CA_DIR, "readOnly": true}],
    });
    if !command.is_null() {
        c["command"] = command;
    }
    c
}

pub fn pod_spec(sa: &str, restart: &str, container: Value) -> Value {
    json!({
        "serviceAccountName": sa,
        "restartPolicy": restart,
        "containers": [container],
        "volumes": [{"name": CA_CONFIGMAP, "configMap": {"name": CA_CONFIGMAP}}],
    })
}

/// The first pod matching `selector`: the pod, its name, phase and log so far.
pub async fn first_pod(
    pods: &Api<Pod>,
    selector: &str,
) -> Result<(Pod, String, String, String), String> {
    let selected = ListParams::default().labels(selector);
    let list = pods.list(&selected).await.map_err(|e| e.to_string())?;
    let pod = list.items.first().ok_or("no pod yet")?.clone();
    let name = pod.metadata.name.clone().unwrap();
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let log = pods.logs(&name, &LogParams::default()).await;
    Ok((
        pod,
        name,
        phase.unwrap_or_default(),
        log.unwrap_or_default(),
    ))
}

/// Waits for the pod matching `selector` to print train.py's result line, within `deadline`;
/// returns it, asserting the run FINISHED. Fails with the pod's log when the pod fails or the
/// deadline passes.
pub async fn trained_within(
    client: &Client,
    ns: &str,
    selector: &str,
    deadline: Duration,
) -> Value {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let what = format!("a pod matching {selector} in {ns} to log its run");
    let (pod, result) = crate::eventually_ok(&what, deadline, || async {
        let (pod, name, phase, log) = first_pod(&pods, selector).await?;
        if let Some(line) = log
            .lines()
            .rev()
            .find(|l| l.starts_with("{\"tracking_uri\""))
        {
            return Ok((name, serde_json::from_str::<Value>(line).unwrap()));
        }
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let message = format!(
            "pod {name} is {phase}{}; log tail:\n{}",
            waiting(&pod),
            tail.join("\n")
        );
        if phase == "Failed" {
            panic!("the training pod failed: {message}");
        }
        Err(message)
    })
    .await;
    println!("{ns}/{pod}: {result}");
    assert_eq!(result["status"], "FINISHED", "{result}");
    result
}

/// Why a pod's containers wait, e.g. `ErrImageNeverPull` when the training image was not loaded
/// into the node (`tests/cluster/images/load training`).
pub fn waiting(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .map(|w| {
            format!(
                " ({}: {})",
                w.reason.as_deref().unwrap_or(""),
                w.message.as_deref().unwrap_or("")
            )
        })
        .collect()
}
