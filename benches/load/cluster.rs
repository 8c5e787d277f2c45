//! What both webhooks read from the API server: a namespace with a Ready binding (ours), and
//! the payloads' ServiceAccount with azure-workload-identity's client id (both).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::json;

use crate::payloads::SERVICE_ACCOUNT;

pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "9c6f0e4d-2f53-4f8e-9d6a-1c4f2b7e8a01";
const TRACKING_URI: &str = "http://mlflow.bench.svc:5000";
const WAIT: Duration = Duration::from_secs(30);

pub async fn client() -> anyhow::Result<Client> {
    let hint = "the load benchmark needs a kube-apiserver: run it inside the test cluster \
                (tests/cluster/up, then tests/cluster/exec cargo bench --bench load)";
    let config = kube::Config::infer().await.context(hint)?;
    let client = Client::try_from(config).context(hint)?;
    client.apiserver_version().await.context(hint)?;
    Ok(client)
}

/// Creates the namespace `name` with the ServiceAccount and a Ready binding (the status is
/// written here: the benchmark runs the webhook without the controller), and a webhook
/// configuration `name` for ours to keep the caBundle of. It has no webhooks, so the API server
/// never calls the servers under test, but ours finds it and settles as when installed, instead
/// of looking for it every 5 s.
pub async fn prepare(client: &Client, name: &str) -> anyhow::Result<()> {
    install_crd(client).await?;
    let mwc: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": []}))?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .with_context(|| format!("creating webhook configuration {name}"))?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {
        "name": SERVICE_ACCOUNT,
        "annotations": {"azure.workload.identity/client-id": CLIENT_ID,
                        "azure.workload.identity/tenant-id": TENANT_ID}}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &sa)
        .await?;
    let bindings: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), name);
    let binding: MlflowWorkspaceBinding = serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "bench"},
        "spec": {"trackingUri": TRACKING_URI, "experimentName": "bench",
                 "identity": {"workloadIdentity": {"tenantId": TENANT_ID}}}
    }))?;
    let created = bindings.create(&PostParams::default(), &binding).await?;
    let status = json!({"status": {
        "observedGeneration": created.metadata.generation, "trackingUri": TRACKING_URI,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Resolved", "message": "benchmark",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    bindings
        .patch_status("bench", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("writing the binding's status")?;
    Ok(())
}

async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = mlflow_operator::crd::definition();
    let name = crd.metadata.name.clone().unwrap_or_default();
    let apply = PatchParams::apply("mlflow-operator-loadgen").force();
    crds.patch(&name, &apply, &Patch::Apply(&crd)).await?;
    let established = |c: &CustomResourceDefinition| {
        let conditions = c.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    };
    poll("the CRD to be established", || async {
        Ok(crds.get(&name).await.ok().filter(established).map(|_| ()))
    })
    .await
}

/// The CA our self-signed mode keeps in `secret` (created by its first start).
pub async fn our_ca(client: &Client, namespace: &str, secret: &str) -> anyhow::Result<Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    poll("the operator's certificate Secret", || async {
        let s = secrets.get_opt(secret).await?;
        Ok(s.and_then(|s| s.data?.remove("ca.crt")).map(|b| b.0))
    })
    .await
}

pub async fn remove(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Polls `check` every 50 ms until it yields a value, for at most 30 s.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
