//! Micro-benchmarks of admission, per payload (divan):
//! - `plan`: the pure planner (pod JSON + namespace view -> patch), the review already parsed;
//! - `review`: the whole in-process review (parse the AdmissionReview, choose the binding from
//!   the cache, plan, encode the answer);
//! - `review_of_load_payloads`: the same review of the three reviews `benches/load` sends (their
//!   pods carry what the API server adds: tolerations, the token volume, owner references), so
//!   its figures in process and under load are of the same bytes;
//! - `scan_of_load_payloads`, `parse_of_load_payloads`: `scan` and `parse` of those reviews;
//!   `borrowed_view_of_load_payloads`: the same fields read by serde's derive into structs that
//!   borrow from the body (`planner/borrowed_view.rs`), the least that reading costs without a
//!   `Value`;
//! - `review_among_cached_bindings`: the same review with 1 binding cached, and with 1,000
//!   bindings in 100 namespaces cached (the pod's namespace holds the same one binding in both);
//!   it must not grow;
//! - `namespace_lookup`: reading the pod's namespace from the per-namespace index, against
//!   copying the whole reflector Store and filtering it (what every admission did before);
//! - `pod_index_deletes`: the leader's pod index losing 1,000 of a namespace's 10,000 pods, the
//!   watch events applied one at a time or in batches.
//!
//! - `parse`: reading the review as the webhook does (the pod's fields the planner reads, in
//!   the same pass); `parse_in_two_passes`: the review first, then its pod;
//! - `scan`: only validating the review's JSON, building nothing: the least any webhook that
//!   reads the pod pays, against which `review` is measured.
//!
//! The allocator is the one the binary ships with (mimalloc).
//!
//! Run: `cargo bench --bench planner`. Under `cargo test` every benchmark runs once, checked.

use std::sync::Arc;

use divan::Bencher;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::runtime::{reflector, watcher};
use mlflow_operator::binding::{MlflowWorkspaceBinding, RunTags, SystemMetrics};
use mlflow_operator::inject::{self, Defaults, NamespaceView, Plan};
use mlflow_operator::webhook::{self, BindingIndex, NamespaceIndex, Slice, Webhook};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

const NS: &str = "team-a";
const PAYLOADS: [&str; 3] = ["small", "training-10-containers", "env-200"];

fn container(name: &str, env: usize) -> Value {
    let env: Vec<Value> = (0..env)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}")}))
        .collect();
    json!({
        "name": name, "image": format!("registry.example/{name}:1.0"),
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]
    })
}

/// The pod of each payload, as the API server sends it.
fn pod(payload: &str) -> Value {
    let (init, containers): (Vec<Value>, Vec<Value>) = match payload {
        "small" => (vec![], vec![json!({"name": "c", "image": "busybox"})]),
        // 2 init containers, 1 native sidecar, the trainer and 6 sidecars: 10 in all.
        "training-10-containers" => {
            let mut sidecar = container("log-shipper", 2);
            sidecar["restartPolicy"] = json!("Always");
            let init = vec![
                container("fetch-data", 3),
                container("warm-cache", 1),
                sidecar,
            ];
            let mut containers = vec![container("train", 8)];
            containers.extend((0..6).map(|i| container(&format!("sidecar-{i}"), 2)));
            (init, containers)
        }
        "env-200" => (vec![], vec![container("train", 200)]),
        other => panic!("unknown payload {other}"),
    };
    json!({
        "metadata": {"generateName": "train-", "namespace": NS,
                     "labels": {"app": "train", "mlflow-operator.io/track": "true"}},
        "spec": {"serviceAccountName": "trainer", "initContainers": init, "containers": containers,
                 "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}
    })
}

fn review_body(payload: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": NS, "operation": "CREATE",
                    "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                    "object": pod(payload), "oldObject": null, "dryRun": false}
    }))
    .unwrap()
}

/// The pod's binding: Azure ML, workload identity, client id from the ServiceAccount.
fn binding(ns: &str, name: &str) -> MlflowWorkspaceBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "generation": 3,
                     "uid": format!("{ns}-{name}"), "resourceVersion": "4107"},
        "spec": {"azureML": {"subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "ml-rg", "workspaceName": "ml-ws"},
                 "experimentName": "fraud-detection",
                 "identity": {"workloadIdentity": {"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}},
        "status": {"observedGeneration": 3, "trackingUri": "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws",
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Resolved", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap()
}

/// `total` bindings over 100 namespaces (or 1): the pod's namespace holds exactly one.
fn bindings(total: usize) -> Vec<MlflowWorkspaceBinding> {
    let mut all = vec![binding(NS, "fraud")];
    all.extend((1..total).map(|i| binding(&format!("team-{}", i % 99), &format!("b-{i}"))));
    all
}

fn service_account() -> ServiceAccount {
    serde_json::from_value(json!({"metadata": {"name": "trainer", "namespace": NS,
        "uid": "5e7f2a3b-8c9d-4e1f-a2b3-c4d5e6f7a8b9", "resourceVersion": "4100",
        "annotations": {"azure.workload.identity/client-id": "9c6f0e4d-2f53-4f8e-9d6a-1c4f2b7e8a01"}}}))
    .unwrap()
}

fn webhook(total: usize) -> Webhook {
    let (sas, mut writer) = reflector::store::<ServiceAccount>();
    writer.apply_watcher_event(&watcher::Event::Apply(service_account()));
    // The writer is dropped: the store keeps what it holds.
    Webhook::cached(
        BindingIndex::from_objects(bindings(total)),
        sas,
        Defaults::default(),
    )
}

fn injected(plan: &Plan) -> bool {
    matches!(plan, Plan::Inject { patch, .. } if !patch.is_empty())
}

#[divan::bench(args = PAYLOADS)]
fn plan(bencher: Bencher, payload: &str) {
    bench_plan(bencher, payload, binding(NS, "fraud"));
}

/// `plan` with the binding's run tags (Kubernetes and 3 extra) and system metrics on: every
/// container gets its own MLFLOW_RUN_CONTEXT.
#[divan::bench(args = PAYLOADS)]
fn plan_with_run_tags(bencher: Bencher, payload: &str) {
    let mut b = binding(NS, "fraud");
    let extra = [
        ("team", "fraud"),
        ("cost-center", "4711"),
        ("project", "churn"),
    ];
    let extra = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    b.spec.run_tags = Some(RunTags {
        kubernetes: None,
        extra,
    });
    b.spec.system_metrics = Some(SystemMetrics::default());
    bench_plan(bencher, payload, b);
}

fn bench_plan(bencher: Bencher, payload: &str, b: MlflowWorkspaceBinding) {
    let (pod, sa, defaults) = (pod(payload), service_account(), Defaults::default());
    let view = NamespaceView {
        namespace: NS,
        bindings: vec![&b],
        service_account: Some(&sa),
    };
    let plan = inject::plan(&pod, &view, &defaults);
    assert!(injected(&plan), "{payload}: {plan:?}");
    bencher.bench_local(|| inject::plan(divan::black_box(&pod), &view, &defaults));
}

#[divan::bench(args = PAYLOADS)]
fn scan(bencher: Bencher, payload: &str) {
    bench_scan(bencher, &review_body(payload));
}

fn bench_scan(bencher: Bencher, body: &[u8]) {
    bencher.bench_local(|| {
        serde_json::from_slice::<serde::de::IgnoredAny>(divan::black_box(body)).unwrap()
    });
}

/// As the webhook reads a review: the pod in the same pass, once the namespace is read.
#[divan::bench(args = PAYLOADS)]
fn parse(bencher: Bencher, payload: &str) {
    bench_parse(bencher, &review_body(payload));
}

fn bench_parse(bencher: Bencher, body: &[u8]) {
    let bindings: Slice<MlflowWorkspaceBinding> = Arc::new([Arc::new(binding(NS, "fraud"))]);
    let lookup = |_: &str| bindings.clone();
    bencher.bench_local(|| {
        let mut req = webhook::parse_review_for(divan::black_box(body), &lookup).unwrap();
        req.take(&lookup).unwrap()
    });
}

/// The review read first with its pod kept as text, the pod read after: what the webhook did
/// before it read both in one pass.
#[divan::bench(args = PAYLOADS)]
fn parse_in_two_passes(bencher: Bencher, payload: &str) {
    let body = review_body(payload);
    let b = binding(NS, "fraud");
    bencher.bench_local(|| {
        let req = webhook::parse_review(divan::black_box(&body)).unwrap();
        req.pod(&inject::EnvNames::of([&b])).unwrap()
    });
}

/// One review answered from the caches: it never waits.
fn answer(wh: &Webhook, body: &[u8]) -> mlflow_operator::webhook::Answer {
    wh.review(body)
        .now_or_never()
        .expect("a review answered from the caches never waits")
}

#[divan::bench(args = PAYLOADS)]
fn review(bencher: Bencher, payload: &str) {
    let (wh, body) = (webhook(1), review_body(payload));
    assert_eq!(
        answer(&wh, &body).outcome.metric_label(),
        "injected",
        "{payload}"
    );
    bencher.bench_local(|| answer(&wh, divan::black_box(&body)));
}

#[path = "load/payloads.rs"]
#[allow(dead_code)]
mod load_payloads;

/// Its fields are built, not read: what it measures is the building.
#[path = "planner/borrowed_view.rs"]
#[allow(dead_code)]
mod borrowed_view;

const LOAD_PAYLOADS: [&str; 3] = ["small pod", "10-container training pod", "200-env pod"];

fn load_body(payload: &str) -> bytes::Bytes {
    load_payloads::all(NS)
        .into_iter()
        .find(|p| p.name == payload)
        .expect("a payload of benches/load")
        .body
}

#[divan::bench(args = LOAD_PAYLOADS)]
fn review_of_load_payloads(bencher: Bencher, payload: &str) {
    let (wh, body) = (webhook(1), load_body(payload));
    assert_eq!(answer(&wh, &body).outcome.metric_label(), "injected");
    bencher.bench_local(|| answer(&wh, divan::black_box(&body)));
}

#[divan::bench(args = LOAD_PAYLOADS)]
fn scan_of_load_payloads(bencher: Bencher, payload: &str) {
    bench_scan(bencher, &load_body(payload));
}

#[divan::bench(args = LOAD_PAYLOADS)]
fn parse_of_load_payloads(bencher: Bencher, payload: &str) {
    bench_parse(bencher, &load_body(payload));
}

#[divan::bench(args = LOAD_PAYLOADS)]
fn borrowed_view_of_load_payloads(bencher: Bencher, payload: &str) {
    let body = load_body(payload);
    let review = borrowed_view::read(&body);
    let pod = review.request.and_then(|r| r.object).expect("a pod");
    let containers = pod.spec.and_then(|s| s.containers).unwrap_or_default();
    assert_eq!(
        containers.len(),
        if payload == "10-container training pod" {
            10
        } else {
            1
        }
    );
    bencher.bench_local(|| borrowed_view::read(divan::black_box(&body)));
}

/// sonic-rs's tree of the review and the webhook's fields taken from it: the bound measured
/// before the webhook's fast path was written.
#[path = "planner/sonic_view.rs"]
#[allow(dead_code)]
mod sonic_view;

#[divan::bench(args = LOAD_PAYLOADS)]
fn sonic_view_of_load_payloads(bencher: Bencher, payload: &str) {
    let body = load_body(payload);
    let tree = sonic_view::parse(&body);
    let review = sonic_view::view(&tree);
    let want = if payload == "10-container training pod" {
        10
    } else {
        1
    };
    assert!(review.containers.len() >= want, "{payload}");
    assert_eq!(review.namespace, NS);
    bencher.bench_local(|| {
        let tree = sonic_view::parse(divan::black_box(&body));
        sonic_view::view(&tree).containers.len()
    });
}

#[divan::bench(args = [1, 1000])]
fn review_among_cached_bindings(bencher: Bencher, cached: usize) {
    let (wh, body) = (webhook(cached), review_body("training-10-containers"));
    assert_eq!(wh.bindings.len(), cached);
    assert_eq!(answer(&wh, &body).outcome.metric_label(), "injected");
    bencher.bench_local(|| answer(&wh, divan::black_box(&body)));
}

#[divan::bench(args = [1, 1000])]
fn namespace_lookup_index(bencher: Bencher, cached: usize) {
    let index = BindingIndex::from_objects(bindings(cached));
    assert_eq!(index.namespace(NS).len(), 1);
    bencher.bench_local(|| index.namespace(divan::black_box(NS)));
}

/// What every admission did before the index: copy the whole Store, keep the namespace's.
#[divan::bench(args = [1, 1000])]
fn namespace_lookup_store_copy(bencher: Bencher, cached: usize) {
    let (store, mut writer) = reflector::store::<MlflowWorkspaceBinding>();
    for b in bindings(cached) {
        writer.apply_watcher_event(&watcher::Event::Apply(b));
    }
    let lookup = |ns: &str| -> Vec<Arc<MlflowWorkspaceBinding>> {
        store
            .state()
            .into_iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
            .collect()
    };
    assert_eq!(lookup(NS).len(), 1);
    bencher.bench_local(|| lookup(divan::black_box(NS)));
}

/// Pods in one namespace (a large job's).
const JOB_PODS: usize = 10_000;

/// The leader's index of opted-in pods has this shape (`controller::pods`).
type PodIndex = NamespaceIndex<Pod>;

/// 1,000 of a namespace's 10,000 pods deleted, their watch events applied `batch` at a time
/// (1: one by one, as the pod watch did before it applied what had arrived together). Each
/// change copies the namespace's slice: one copy per batch.
#[divan::bench(args = [1, 64, 1024], sample_count = 10, sample_size = 1)]
fn pod_index_deletes(bencher: Bencher, batch: usize) {
    let pod = |i: usize| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"namespace": NS, "name": format!("job-{i:05}")}}),
        )
        .unwrap()
    };
    bencher
        .with_inputs(|| {
            let (index, mut writer) = PodIndex::new();
            writer.apply_all((0..JOB_PODS).map(|i| watcher::Event::Apply(pod(i))));
            let deletes: Vec<_> = (0..1_000)
                .map(|i| watcher::Event::Delete(pod(i * 7)))
                .collect();
            (index, writer, deletes)
        })
        .bench_local_values(|(index, mut writer, deletes)| {
            let mut deletes = deletes.into_iter().peekable();
            while deletes.peek().is_some() {
                writer.apply_all(deletes.by_ref().take(batch));
            }
            assert_eq!(index.namespace(NS).len(), JOB_PODS - 1_000);
            (index, writer)
        });
}
