//! Admission cost, as ratios measured in one run on the same payloads:
//! - in-process review (parse AdmissionReview, choose binding, plan, encode answer) against the
//!   floor every webhook pays (parse the review JSON and encode a bare "allowed" answer), and
//!   against the typed round trip other injectors use (decode into a typed Pod, mutate, encode,
//!   diff against the original);
//! - the same over HTTPS (rustls, one kept-alive connection) against a floor server that answers
//!   "allowed" without reading the body.
//!
//! Run: `cargo bench --bench admission` (release build). Prints a Markdown table. Under
//! `cargo test` (no `--bench` argument) it runs a few iterations only, to prove it still works.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{EnvVar, Pod, ServiceAccount};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use mlflow_operator::binding::MlflowWorkspaceBinding;
use mlflow_operator::certs::{self, CertStore};
use mlflow_operator::inject::Defaults;
use mlflow_operator::webhook::{self, BindingIndex, Webhook};
use serde_json::{Value, json};

/// A pod as kube-controller-manager creates it for a training Deployment: two containers, a
/// native sidecar, resources, probes, the ServiceAccount token volume added by admission.
fn pod() -> Value {
    json!({
        "metadata": {
            "generateName": "train-7d9f8c6b5-", "namespace": "team-a",
            "labels": {"app": "train", "pod-template-hash": "7d9f8c6b5", "mlflow-operator.io/track": "true"},
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "train-7d9f8c6b5", "uid": "0b6e7c1a-6a5e-4d0e-9d8e-1f2a3b4c5d6e", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "serviceAccountName": "trainer",
            "initContainers": [{"name": "log-shipper", "image": "fluent/fluent-bit:3.1", "restartPolicy": "Always",
                                "volumeMounts": [{"name": "logs", "mountPath": "/logs"}]}],
            "containers": [
                {"name": "train", "image": "registry.example/train:1.4.2", "command": ["python", "-m", "train"],
                 "args": ["--epochs", "20", "--lr", "3e-4"],
                 "env": [{"name": "EPOCHS", "value": "20"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": "1"}},
                 "volumeMounts": [{"name": "logs", "mountPath": "/logs"}, {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}},
                {"name": "metrics", "image": "prom/statsd-exporter:v0.26.0", "ports": [{"containerPort": 9102}]}
            ],
            "volumes": [
                {"name": "logs", "emptyDir": {}},
                {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}}
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "schedulerName": "default-scheduler"
        }
    })
}

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod(), "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

fn webhook() -> Arc<Webhook> {
    let (sas, mut sw) = reflector::store::<ServiceAccount>();
    let mut others: Vec<MlflowWorkspaceBinding> = (0..20)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("other-{i}"), "namespace": format!("team-{i}"), "generation": 1},
                "spec": {"trackingUri": "http://mlflow:5000"}
            }))
            .unwrap()
        })
        .collect();
    others.push(
        serde_json::from_value(json!({
            "metadata": {"name": "fraud", "namespace": "team-a", "generation": 3},
            "spec": {"azureML": {"subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "ml-rg", "workspaceName": "ml-ws"},
                     "experimentName": "fraud-detection",
                     "identity": {"workloadIdentity": {"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}},
            "status": {"observedGeneration": 3, "trackingUri": "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Resolved", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap(),
    );
    let bindings = BindingIndex::from_objects(others);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "trainer", "namespace": "team-a",
        "annotations": {"azure.workload.identity/client-id": "9c6f0e4d-2f53-4f8e-9d6a-1c4f2b7e8a01"}}}))
    .unwrap();
    sw.apply_watcher_event(&Event::Apply(sa));
    std::mem::forget(sw); // the stores outlive the benchmark
    Arc::new(Webhook::cached(bindings, sas, Defaults::default()))
}

/// The least any webhook does: read the review, answer "allowed".
fn floor(body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap();
    serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": v["request"]["uid"], "allowed": true}}),
    )
    .unwrap()
}

/// The typed round trip (decode into a typed Pod, append env, encode, diff), as webhooks built
/// on typed clients do; it is also what drops fields the typed Pod does not know.
fn typed_round_trip(body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap();
    let original = v["request"]["object"].clone();
    let mut pod: Pod = serde_json::from_value(original.clone()).unwrap();
    for c in pod.spec.as_mut().unwrap().containers.iter_mut() {
        let env = c.env.get_or_insert_with(Vec::new);
        for (n, val) in [
            ("MLFLOW_TRACKING_URI", "azureml://x"),
            ("MLFLOW_EXPERIMENT_NAME", "fraud-detection"),
        ] {
            if !env.iter().any(|e| e.name == n) {
                env.push(EnvVar {
                    name: n.into(),
                    value: Some(val.into()),
                    value_from: None,
                });
            }
        }
    }
    let patch = json_patch::diff(&original, &serde_json::to_value(&pod).unwrap());
    let raw = serde_json::to_vec(&patch).unwrap();
    serde_json::to_vec(
        &json!({"response": {"uid": v["request"]["uid"], "allowed": true, "patch": raw.len()}}),
    )
    .unwrap()
}

/// Median of `rounds` timings of `n` calls, in microseconds per call.
fn per_call(rounds: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[rounds / 2]
}

async fn serve_floor(listener: tokio::net::TcpListener, store: Arc<CertStore>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(store.server_config()));
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let tls = acceptor.accept(stream).await.unwrap();
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":true}}"#,
                ))))
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// Sequential requests over one kept-alive TLS connection: (p50, p99) in microseconds.
async fn https_latency(port: u16, ca_pem: &str, body: &[u8], n: usize) -> (f64, f64) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = mlflow_operator_test_support::fake_tls::connector(ca_pem)
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut lat = Vec::with_capacity(n);
    let warmup = n / 10;
    for i in 0..n + warmup {
        let req = http::Request::post("/mutate")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        sender.ready().await.unwrap();
        let t = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap();
        if i >= warmup {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    (lat[n / 2], lat[n * 99 / 100])
}

fn main() {
    let body = review_body();
    let wh = webhook();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The review must really inject, or the comparison is meaningless.
    let answer: Value = serde_json::from_slice(&rt.block_on(wh.review(&body)).body).unwrap();
    assert!(
        answer["response"]["patch"].is_string(),
        "the benchmark pod must be injected: {answer}"
    );

    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, n, https_n) = if full { (15, 2000, 5000) } else { (3, 20, 50) };
    let ours = rt.block_on(async {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..n {
                let _ = wh.review(&body).await;
            }
            samples.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        samples.sort_by(f64::total_cmp);
        samples[rounds / 2]
    });
    let floor_us = per_call(rounds, n, || {
        let _ = floor(&body);
    });
    let typed = per_call(rounds, n, || {
        let _ = typed_round_trip(&body);
    });

    let (store, pems) = {
        let pems = certs::generate(
            &["127.0.0.1".into()],
            30,
            10,
            jiff::Timestamp::now().as_second(),
        )
        .unwrap();
        let store = CertStore::new();
        store
            .set_pem(pems.cert.as_bytes(), pems.key.as_bytes())
            .unwrap();
        (store, pems)
    };
    let (ours_https, floor_https) = rt.block_on(async {
        let l1 = webhook::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let p1 = l1.local_addr().unwrap().port();
        tokio::spawn(webhook::serve(
            l1,
            wh.clone(),
            store.clone(),
            std::future::pending(),
        ));
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p2 = l2.local_addr().unwrap().port();
        tokio::spawn(serve_floor(l2, store.clone()));
        let ours = https_latency(p1, &pems.ca_cert, &body, https_n).await;
        let floor = https_latency(p2, &pems.ca_cert, &body, https_n).await;
        (ours, floor)
    });

    println!("| measure | ours | comparison | ratio (ours / comparison) |");
    println!("|---|---|---|---|");
    println!(
        "| in-process review, µs/call (median of {rounds}×{n}) | {ours:.1} | floor (parse + bare answer) {floor_us:.1} | {:.2} |",
        ours / floor_us
    );
    println!(
        "| in-process review, µs/call | {ours:.1} | typed round trip + diff {typed:.1} | {:.2} |",
        ours / typed
    );
    println!(
        "| HTTPS round trip p50, µs ({https_n} sequential, keep-alive) | {:.0} | floor server {:.0} | {:.2} |",
        ours_https.0,
        floor_https.0,
        ours_https.0 / floor_https.0
    );
    println!(
        "| HTTPS round trip p99, µs | {:.0} | floor server {:.0} | {:.2} |",
        ours_https.1,
        floor_https.1,
        ours_https.1 / floor_https.1
    );
    println!(
        "\nreview body: {} bytes; {} cores",
        body.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
}
