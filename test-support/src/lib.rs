//! Harness for tests against the real local control plane (`tests/cluster/up`).
//!
//! There is no skipping: a test that needs the cluster and cannot reach it fails with a message
//! that says how to start one (`hack/test` does all of it).

pub mod azure;
pub mod fake_azure;
pub mod fake_cloud;
pub mod fake_tls;
pub mod faults;
pub mod helm;
pub mod log_sweep;
pub mod mlflow;
pub mod node;
pub mod operator;
pub mod prometheus;
pub mod sidecar_webhook;
pub mod token_renewal;
pub mod training;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};

/// A client for the local control plane, from `KUBECONFIG`.
pub async fn client() -> Client {
    let hint = "no local control plane: run `hack/test` (or `tests/cluster/up` and \
                `source $MLFLOW_OPERATOR_CLUSTER_DIR/env`) so KUBECONFIG points at it";
    assert!(std::env::var_os("KUBECONFIG").is_some(), "{hint}");
    let config = Config::infer()
        .await
        .unwrap_or_else(|e| panic!("{hint}: {e}"));
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("{hint}: {e}"));
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("{hint}: {e}"));
    client
}

/// Polls `check` until it yields `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_ok(what, timeout, || {
        check().map(|found| found.ok_or("not yet".to_string()))
    })
    .await
}

/// Polls `check` until it yields `Ok`, or panics with `what` and the last error after `timeout`.
pub async fn eventually_ok<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watches `name` until `condition` holds (kube's `await_condition`), or panics with `what`
/// after `timeout`; returns the object as it was then. A watch the API server ends (410 Gone
/// when its watch cache has moved past the list, a restart) is started again: the watch is how
/// the test waits, not what it tests.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: impl kube::runtime::wait::Condition<K>,
) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
{
    let watching = async {
        loop {
            let holds = |o: Option<&K>| condition.matches_object(o);
            let once = kube::runtime::wait::await_condition(api.clone(), name, holds);
            match once.await {
                Ok(Some(object)) => return object,
                Ok(None) => panic!("{what}: {name} was deleted"),
                Err(e) => eprintln!("{what}: watching {name} ended ({e}); watching again"),
            }
        }
    };
    match tokio::time::timeout(timeout, watching).await {
        Ok(object) => object,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// A fresh CA and a serving certificate for 127.0.0.1, written to `dir` as `tls.key`, then
/// `tls.crt` (the key first: a reload triggered by the certificate finds its key); returns the
/// two paths and the PEMs.
pub fn write_loopback_certificate(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    mlflow_operator::certs::Pems,
) {
    let pems = mlflow_operator::certs::generate(
        &["127.0.0.1".into()],
        30,
        10,
        jiff::Timestamp::now().as_second(),
    )
    .unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&key, &pems.key).unwrap();
    std::fs::write(&cert, &pems.cert).unwrap();
    (cert, key, pems)
}

/// A plain reqwest client: reqwest is built without a crypto provider of its own, so the process
/// gets the operator's (ring) first.
pub fn http_client() -> reqwest::Client {
    mlflow_operator::install_crypto_provider();
    reqwest::Client::new()
}

/// A loopback port nobody listens on right now (bound to :0, then released).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Where [`free_ports`] chooses: below the kernel's ephemeral ports (32768 and up here) and
/// Services' NodePorts (30000-32767). A port from `bind(:0)` is an ephemeral one, and between
/// its release and the operator's own bind an outgoing connection took it as its source port
/// (an operator in CI failed with "Address already in use").
const TEST_PORTS: std::ops::Range<u16> = 20000..30000;

/// `N` distinct loopback ports nobody listens on right now (all held while choosing), from a
/// random place in [`TEST_PORTS`].
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::hash::{BuildHasher, Hasher};
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let start = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut held = Vec::with_capacity(N);
    for step in 0..u64::from(span) {
        let port = TEST_PORTS.start + (start.wrapping_add(step) % u64::from(span)) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
        if held.len() == N {
            return std::array::from_fn(|i| held[i].local_addr().unwrap().port());
        }
    }
    panic!("fewer than {N} free loopback ports in {TEST_PORTS:?}");
}

/// Installs (or updates) the CRD and waits until it is served.
pub async fn ensure_crd(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = mlflow_operator::crd::definition();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("mlflow-operator-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    wait_for(
        &crds,
        &name,
        "the CRD to be established",
        Duration::from_secs(30),
        kube::runtime::conditions::is_crd_established(),
    )
    .await;
}

/// Creates namespace `name`, labelled so webhooks under test can select it, and waits for its
/// default ServiceAccount: ServiceAccount admission refuses pods until kube-controller-manager
/// made it.
pub async fn create_test_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"mlflow-operator.io/test": "true"}}
    }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually(
        "the default ServiceAccount",
        // A minute: the node suites create their namespaces while other suites load the plane.
        Duration::from_secs(60),
        || async { sas.get_opt("default").await.ok().flatten() },
    )
    .await;
}

/// Runs `test` in a fresh namespace (labelled so webhooks under test can select it) and deletes
/// the namespace afterwards, also when the test panics.
pub async fn with_temp_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    // Every test in a namespace may create bindings; on a fresh plane the CRD is not there yet.
    ensure_crd(&client).await;
    let name = format!("{prefix}-{}", random_suffix());
    create_test_namespace(&client, &name).await;

    let outcome = std::panic::AssertUnwindSafe(test(client.clone(), name.clone()))
        .catch_unwind()
        .await;
    // Webhook configurations a test registered are named after its namespace; a failed test
    // may not have removed its own.
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Ok(list) = mwcs.list(&Default::default()).await {
        for m in &list.items {
            if let Some(n) = m
                .metadata
                .name
                .as_deref()
                .filter(|n| n.ends_with(name.as_str()))
            {
                let _ = mwcs.delete(n, &DeleteParams::default()).await;
            }
        }
    }
    let namespaces: Api<Namespace> = Api::all(client);
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:08x}", h.finish() as u32)
}

/// The pinned Kubernetes version (`tests/cluster/versions.env`).
pub fn pinned_k8s_version() -> String {
    include_str!("../../tests/cluster/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .expect("K8S_VERSION in versions.env")
        .trim()
        .to_string()
}

/// An env var the cluster scripts export (see `tests/cluster/up`), or a loud failure.
pub fn cluster_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: source $MLFLOW_OPERATOR_CLUSTER_DIR/env after tests/cluster/up (hack/test does)")
    })
}

/// Runs kubectl against the local plane with `stdin`, returning stdout; fails loudly on error.
/// Async, so an in-process webhook on the same runtime can answer the API server meanwhile.
pub async fn kubectl(args: &[&str], stdin: &str) -> String {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    // A fresh discovery cache, so CRDs installed a moment ago are known.
    let cache = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new("kubectl")
        .arg(format!("--cache-dir={}", cache.path().display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The API server's minor version (managed clusters spell it `34+`) and its `gitVersion`.
pub async fn server_version(client: &Client) -> (u32, String) {
    let info = client
        .apiserver_version()
        .await
        .expect("the API server's /version");
    let minor = info
        .minor
        .trim_end_matches('+')
        .parse()
        .expect("a numeric minor version");
    (minor, info.git_version)
}

/// The Events about object `name` in namespace `ns`.
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// A Deployment `name` of `replicas` pods labelled `app: <name>` and `labels`, running `spec`.
pub fn deployment(
    name: &str,
    replicas: i32,
    labels: serde_json::Value,
    spec: serde_json::Value,
) -> k8s_openapi::api::apps::v1::Deployment {
    let mut pod_labels = serde_json::json!({"app": name});
    for (k, v) in labels.as_object().into_iter().flatten() {
        pod_labels[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": spec},
        },
    }))
    .expect("a valid Deployment")
}
