//! The three AdmissionReviews the generator replays, as kube-controller-manager and the API
//! server would send them: every pod is opted in to both webhooks (our label, azwi's label) and
//! runs as the ServiceAccount that carries azwi's client id, in the namespace with our binding.

use bytes::Bytes;
use serde_json::{Value, json};

/// The ServiceAccount every payload runs as (created by `cluster::prepare`).
pub const SERVICE_ACCOUNT: &str = "trainer";

pub struct Payload {
    pub name: &'static str,
    pub body: Bytes,
}

pub fn all(namespace: &str) -> Vec<Payload> {
    [
        ("small pod", small_pod()),
        ("10-container training pod", training_pod()),
        ("200-env pod", env_pod()),
    ]
    .into_iter()
    .map(|(name, pod)| Payload {
        name,
        body: Bytes::from(review(namespace, pod)),
    })
    .collect()
}

fn review(namespace: &str, pod: Value) -> Vec<u8> {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "6a1e3b0e-2c4d-4f5e-8a9b-0c1d2e3f4a5b",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .expect("JSON serializes")
}

/// Metadata and spec fields every payload shares: a ReplicaSet's pod with the ServiceAccount
/// token volume the ServiceAccount admission plugin adds before webhooks run.
fn pod(containers: Value, init_containers: Value) -> Value {
    json!({
        "metadata": {
            "generateName": "train-7d9f8c6b5-",
            "labels": {"app": "train", "pod-template-hash": "7d9f8c6b5",
                       "mlflow-operator.io/track": "true", "azure.workload.identity/use": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "train-7d9f8c6b5",
                                 "uid": "0b6e7c1a-6a5e-4d0e-9d8e-1f2a3b4c5d6e", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "initContainers": init_containers,
            "containers": containers,
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}}
            ],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        }
    })
}

fn container(name: &str, image: &str, env: Value) -> Value {
    json!({
        "name": name, "image": image, "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                         {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    })
}

fn small_pod() -> Value {
    let env = json!([{"name": "EPOCHS", "value": "20"}]);
    pod(
        json!([container("train", "registry.example/train:1.4.2", env)]),
        json!([]),
    )
}

/// Ten containers (a trainer and nine workers), one init container and two native sidecars.
fn training_pod() -> Value {
    let env = |rank: usize| {
        json!([{"name": "RANK", "value": rank.to_string()},
               {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    };
    let containers: Vec<Value> = (0..10)
        .map(|i| {
            let name = if i == 0 {
                "trainer".to_string()
            } else {
                format!("worker-{i}")
            };
            container(&name, "registry.example/train:1.4.2", env(i))
        })
        .collect();
    let mut sidecars: Vec<Value> = ["log-shipper", "metrics-proxy"]
        .iter()
        .map(|n| {
            let mut c = container(n, "registry.example/sidecar:2.0", json!([]));
            c["restartPolicy"] = json!("Always");
            c
        })
        .collect();
    sidecars.insert(
        0,
        container("fetch-data", "registry.example/fetch:1.0", json!([])),
    );
    pod(Value::Array(containers), Value::Array(sidecars))
}

fn env_pod() -> Value {
    let env: Vec<Value> = (0..200)
        .map(|i| json!({"name": format!("HYPERPARAM_{i:03}"), "value": format!("value-{i}")}))
        .collect();
    pod(
        json!([container(
            "train",
            "registry.example/train:1.4.2",
            Value::Array(env)
        )]),
        json!([]),
    )
}
