//! Runs the real webhook in-process on 127.0.0.1 and registers it with the real API server
//! through `clientConfig.url`, with the MutatingWebhookConfiguration the Helm chart renders
//! (SPEC §6), scoped to one test namespace.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use mlflow_operator::binding_store::BindingStore;
use mlflow_operator::certs::{self, CertStore};
use mlflow_operator::inject::Defaults;
use mlflow_operator::metrics::Metrics;
use mlflow_operator::webhook::{self, BindingIndex};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{eventually, helm};

pub struct TestWebhook {
    pub client: Client,
    pub namespace: String,
    pub port: u16,
    pub ca_pem: String,
    pub metrics: Metrics,
    pub config_name: String,
    pub bindings: BindingIndex,
    stop: Option<oneshot::Sender<()>>,
    tasks: tokio::task::JoinSet<()>,
}

pub use crate::ensure_crd;

/// A fresh CA and serving certificate for `names`, loaded into a store ready to serve.
pub fn serving_certificate(names: &[&str]) -> (Arc<CertStore>, certs::Pems) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let pems = certs::generate(&names, 30, 10, jiff::Timestamp::now().as_second()).unwrap();
    let store = CertStore::new();
    store
        .set_pem(pems.cert.as_bytes(), pems.key.as_bytes())
        .unwrap();
    (store, pems)
}

/// The chart's MutatingWebhookConfiguration (`helm template` with `webhook.url`), named `name`,
/// scoped to `namespace`, with `ca_pem` as caBundle (None: left for the self-managed mode).
pub async fn webhook_configuration(
    name: &str,
    url: &str,
    ca_pem: Option<&str>,
    namespace: &str,
) -> Value {
    let docs = helm::template(&[
        &format!("fullnameOverride={name}"),
        &format!("webhook.url={url}"),
        &format!(
            "webhook.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={namespace}"
        ),
    ])
    .await;
    let mut mwc = helm::one(&docs, "MutatingWebhookConfiguration").clone();
    if let Some(ca) = ca_pem {
        mwc["webhooks"][0]["clientConfig"]["caBundle"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    mwc
}

/// Total AdmissionReviews the webhook answered, from its own metrics.
pub fn admissions_total(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("mlflow_operator_admissions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A labelled throwaway pod used to probe whether the webhook is in the admission chain.
pub fn probe_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "probe-", "labels": {"mlflow-operator.io/track": "true"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

pub async fn register(client: &Client, mwc: &Value) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = mwc["metadata"]["name"].as_str().unwrap();
    api.patch(
        name,
        &PatchParams::apply("mlflow-operator-tests").force(),
        &Patch::Apply(mwc),
    )
    .await
    .expect("apply the MutatingWebhookConfiguration");
}

impl TestWebhook {
    pub async fn start(client: &Client, namespace: &str, defaults: Defaults) -> Self {
        ensure_crd(client).await;
        let (store, pems) = serving_certificate(&["127.0.0.1", "localhost"]);
        Self::start_with(client, namespace, defaults, store, Some(pems.ca_cert)).await
    }

    /// Starts the webhook serving from `store`; registers it with `ca_pem` as caBundle (None: the
    /// caller sets caBundle, as the self-managed mode does).
    pub async fn start_with(
        client: &Client,
        namespace: &str,
        defaults: Defaults,
        store: Arc<CertStore>,
        ca_pem: Option<String>,
    ) -> Self {
        ensure_crd(client).await;
        let metrics = Metrics::new();
        let mut tasks = tokio::task::JoinSet::new();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // As `run` does: the process's one binding store, filled by its own watch.
        let (bindings, watch) = BindingStore::new(client);
        tasks.spawn(watch);
        let serving = webhook::start(
            webhook::Caches::new(client, bindings.index),
            defaults,
            &metrics,
            "test",
            "127.0.0.1:0".parse().unwrap(),
            store,
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();
        for d in serving.drivers {
            tasks.spawn(d);
        }
        tokio::time::timeout(Duration::from_secs(30), serving.synced)
            .await
            .expect("caches sync");
        let bindings = serving.webhook.bindings.clone();
        let port = serving.addr.port();
        tasks.spawn(serving.server);
        let config_name = format!("mlflow-operator-test-{namespace}");
        let url = format!("https://127.0.0.1:{port}/mutate");
        let mwc = webhook_configuration(&config_name, &url, ca_pem.as_deref(), namespace).await;
        register(client, &mwc).await;
        Self {
            client: client.clone(),
            namespace: namespace.to_string(),
            port,
            ca_pem: ca_pem.unwrap_or_default(),
            metrics,
            config_name,
            bindings,
            stop: Some(stop_tx),
            tasks,
        }
    }

    /// Waits until the API server calls this webhook for labelled pods (the admission plugin
    /// learns of new configurations through an informer, so there is a lag).
    pub async fn wait_effective(&self) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let before = admissions_total(&self.metrics);
        eventually(
            "the API server to call the webhook",
            Duration::from_secs(30),
            || async {
                let _ = pods
                    .create(
                        &PostParams {
                            dry_run: true,
                            ..Default::default()
                        },
                        &probe_pod(),
                    )
                    .await;
                (admissions_total(&self.metrics) > before).then_some(())
            },
        )
        .await;
    }

    /// Waits until the webhook's cache sees `name` with a Ready status.
    pub async fn wait_binding_ready(&self, name: &str) {
        self.wait_binding_ready_in(&self.namespace, name).await;
    }

    /// Waits until the webhook's cache sees `name` in namespace `ns` with a Ready status.
    pub async fn wait_binding_ready_in(&self, ns: &str, name: &str) {
        eventually(
            &format!("binding {ns}/{name} Ready in the webhook cache"),
            Duration::from_secs(30),
            || async {
                self.bindings
                    .get(ns, name)
                    .filter(|b| b.is_ready())
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Waits until the webhook's cache sees `name` (in any state).
    pub async fn wait_binding_seen(&self, name: &str) {
        let ns = &self.namespace;
        eventually(
            &format!("binding {name} in the webhook cache"),
            Duration::from_secs(30),
            || async { self.bindings.get(ns, name).map(|_| ()) },
        )
        .await;
    }

    pub async fn stop(mut self) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = api
            .delete(&self.config_name, &DeleteParams::default())
            .await;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.tasks.abort_all();
    }
}

/// Creates a binding and writes a Ready status for it directly (webhook tests do not need the
/// controller; its own tests prove it writes this status).
pub async fn ready_binding(
    client: &Client,
    ns: &str,
    name: &str,
    spec: Value,
    tracking_uri: &str,
) -> MlflowWorkspaceBinding {
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    let b: MlflowWorkspaceBinding =
        serde_json::from_value(json!({"apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding", "metadata": {"name": name}, "spec": spec}))
            .expect("a binding");
    let created = api
        .create(&PostParams::default(), &b)
        .await
        .expect("create binding");
    set_status(
        client,
        ns,
        name,
        created.metadata.generation.unwrap_or(1),
        Some(tracking_uri),
        ("True", "Resolved", "resolved"),
    )
    .await
}

pub async fn set_status(
    client: &Client,
    ns: &str,
    name: &str,
    generation: i64,
    tracking_uri: Option<&str>,
    (ready, reason, message): (&str, &str, &str),
) -> MlflowWorkspaceBinding {
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    let mut status = json!({
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready", "status": ready, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": generation
        }]
    });
    if let Some(uri) = tracking_uri {
        status["trackingUri"] = json!(uri);
    }
    api.patch_status(
        name,
        &PatchParams::apply("mlflow-operator-tests").force(),
        &Patch::Apply(json!({"apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding", "status": status})),
    )
    .await
    .expect("patch binding status")
}

/// The env of container `name` (containers or initContainers) of a stored pod, as name -> entry.
pub fn env_of(pod: &Pod, container: &str) -> std::collections::BTreeMap<String, Value> {
    let spec = pod.spec.as_ref().unwrap();
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .unwrap_or_else(|| panic!("container {container}"));
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect()
}

/// The value of env var `var` in container `c`, when it is a plain value.
pub fn env_value(pod: &Pod, c: &str, var: &str) -> Option<String> {
    env_of(pod, c)
        .get(var)
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_string)
}
