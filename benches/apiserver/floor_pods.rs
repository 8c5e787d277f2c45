//! The floor in the cluster: this benchmark binary (`serve-floor`) run in pods of the operator's
//! image, as many and with the same resources as the chart's, behind a Service of the same shape,
//! and registered with a copy of the chart's MutatingWebhookConfiguration that only points
//! elsewhere. The binary comes in through a hostPath volume: the node shares this machine's
//! files, and the operator's image has the C library the binary was linked against.

use std::path::PathBuf;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::common::kubectl;
use crate::common::node::{is_ready, pods_when};
use crate::{MINUTE, RELEASE};

/// The floor's MutatingWebhookConfiguration and, as the API server's metrics label it, webhook.
pub const NAME: &str = "apiserver-bench-floor";
pub const WEBHOOK: &str = "pods.floor.apiserver-bench.mlflow-operator.io";
const PORT: u16 = 9443;

/// Starts the floor in `namespace`, answering with `patch` (base64), and returns its
/// registration (not yet created).
pub async fn deploy(client: &Client, namespace: &str, ours: &Value, patch: &str) -> Value {
    let chart: Api<Deployment> = Api::namespaced(client.clone(), RELEASE);
    let chart = chart.get(RELEASE).await.expect("the chart's Deployment");
    let replicas = chart.spec.replicas.unwrap_or(1);
    let container = &chart
        .spec
        .template
        .spec
        .as_ref()
        .expect("a pod spec")
        .containers[0];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let pems = mlflow_operator::certs::generate(
        &[format!("floor.{namespace}.svc")],
        1,
        1,
        now.unwrap().as_secs() as i64,
    )
    .expect("the floor's certificate");
    let exe = std::env::current_exe().expect("this benchmark's binary");
    let manifest = objects(namespace, replicas, container, &exe, patch, &pems);
    kubectl(&["apply", "-f", "-"], &manifest.to_string()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods_when(
        &pods,
        "app=floor",
        "the floor's pods Ready",
        3 * MINUTE,
        |ps| ps.len() == replicas as usize && ps.iter().all(is_ready),
    )
    .await;
    registration(ours, namespace, &pems.ca_cert)
}

/// The namespace, certificate Secret, Deployment and Service, as one List.
fn objects(
    namespace: &str,
    replicas: i32,
    chart: &k8s_openapi::api::core::v1::Container,
    exe: &std::path::Path,
    patch: &str,
    pems: &mlflow_operator::certs::Pems,
) -> Value {
    let dir: PathBuf = exe.parent().expect("a directory").into();
    let file = exe.file_name().expect("a file name").to_string_lossy();
    let labels = json!({"app": "floor"});
    let pod = json!({
        "metadata": {"labels": labels},
        "spec": {
            // Root: the build's directory may be readable by root only.
            "securityContext": {"runAsUser": 0, "runAsNonRoot": false},
            "containers": [{
                "name": "floor",
                "image": chart.image,
                "imagePullPolicy": chart.image_pull_policy,
                "command": [format!("/bench/{file}"), "serve-floor", format!("0.0.0.0:{PORT}"), "/certs", patch],
                "ports": [{"name": "webhook", "containerPort": PORT}],
                "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1},
                "resources": chart.resources,
                "volumeMounts": [
                    {"name": "bench", "mountPath": "/bench", "readOnly": true},
                    {"name": "certs", "mountPath": "/certs", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "bench", "hostPath": {"path": dir, "type": "Directory"}},
                {"name": "certs", "secret": {"secretName": "floor-cert"}}
            ]
        }
    });
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "floor-cert", "namespace": namespace},
         "stringData": {"tls.crt": pems.cert, "tls.key": pems.key}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "floor", "namespace": namespace},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": pod}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "floor", "namespace": namespace},
         "spec": {"selector": labels, "ports": [{"name": "webhook", "port": 443, "targetPort": "webhook"}]}}
    ]})
}

/// The chart's registration pointed at the floor: same rules, selectors, failure policy,
/// timeout and path; another name, Service and CA.
fn registration(ours: &Value, namespace: &str, ca: &str) -> Value {
    let mut floor = ours.clone();
    floor["metadata"] = json!({"name": NAME});
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    for webhook in floor["webhooks"].as_array_mut().expect("webhooks") {
        webhook["name"] = json!(WEBHOOK);
        webhook["clientConfig"]["caBundle"] = json!(ca);
        let service = &mut webhook["clientConfig"]["service"];
        service["namespace"] = json!(namespace);
        service["name"] = json!("floor");
        service["port"] = json!(443);
    }
    floor
}
