//! What a binding asks to inject, in a fixed order: the MLflow variables, the Azure cloud, the
//! identity's settings ([`super::identity`]), then the binding's extra env.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};

use super::identity;
use super::patch::TRACKING_URI;
use super::pod::{Owner, PodView};
use super::run_context::RunContext;
use crate::binding::{AzureCloud, EXPERIMENT_ANNOTATION, MlflowWorkspaceBinding};

/// The label a Deployment's ReplicaSet puts on its pods, the suffix of the ReplicaSet's name.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

pub(crate) const AZWI_SUFFIX: &str = " (identity: azure-workload-identity)";

/// Everything one binding injects into a pod.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Desired {
    /// Env entries in injection order, unique by name.
    pub env: Vec<Value>,
    /// Pod volumes.
    pub volumes: Vec<Value>,
    /// Mounts for every injected container.
    pub mounts: Vec<Value>,
    /// Appended to the injected annotation.
    pub annotation_suffix: &'static str,
    /// Run tags and system metrics, which differ per container.
    pub run_context: Option<RunContext>,
}

impl Desired {
    /// Appends `entry` unless an entry of that name is already wanted: the first one wins, so
    /// the binding's extra env cannot displace what the operator sets.
    pub(crate) fn push_env(&mut self, entry: Value) {
        let name = env_name(&entry);
        if name.is_some() && !self.env.iter().any(|e| env_name(e) == name) {
            self.env.push(entry);
        }
    }

    /// The MLFLOW_TRACKING_URI entry the binding injects, if it has a URI to give.
    pub(crate) fn tracking_uri(&self) -> Option<&Value> {
        self.env.iter().find(|e| env_name(e) == Some(TRACKING_URI))
    }
}

/// `{"name": name, "value": value}`.
pub(crate) fn env_value(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// `{"name": name, "valueFrom": {"secretKeyRef": {...}}}`; `optional` only when true.
pub(crate) fn env_secret(name: &str, secret: &str, key: &str, optional: bool) -> Value {
    let mut r = json!({"name": secret, "key": key});
    if optional {
        r["optional"] = json!(true);
    }
    json!({"name": name, "valueFrom": {"secretKeyRef": r}})
}

/// The name of an env entry, if it has a string one. Its few members (two, mostly) are scanned
/// rather than looked up: the planner reads names often, and a scan is the cheapest read.
pub(crate) fn env_name(entry: &Value) -> Option<&str> {
    let mut members = entry.as_object()?.iter();
    members.find(|(key, _)| *key == "name")?.1.as_str()
}

/// The Azure cloud of an `azureml://` tracking URI, from its host.
pub(crate) fn cloud_from_azureml_uri(uri: &str) -> AzureCloud {
    let rest = uri.get("azureml://".len()..).unwrap_or("");
    let host = rest
        .split(['/', ':', '?'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if host.ends_with(".api.ml.azure.cn") {
        AzureCloud::AzureChinaCloud
    } else if host.ends_with(".api.ml.azure.us") {
        AzureCloud::AzureUSGovernment
    } else {
        AzureCloud::AzurePublicCloud
    }
}

/// The Azure cloud of a binding: the azureML workspace's, else that of the first `azureml://`
/// URI it gives pods (tracking, then registry); None for other MLflow servers.
pub(crate) fn binding_cloud(b: &MlflowWorkspaceBinding) -> Option<AzureCloud> {
    if let Some(ws) = &b.spec.azure_ml {
        return Some(ws.cloud);
    }
    let status = b.status.as_ref();
    [
        status.and_then(|s| s.tracking_uri.as_deref()),
        b.spec.tracking_uri.as_deref(),
        b.spec.registry_uri.as_deref(),
        status.and_then(|s| s.registry_uri.as_deref()),
    ]
    .into_iter()
    .flatten()
    .find(|u| super::credential::is_azureml(u))
    .map(cloud_from_azureml_uri)
}

/// What of a pod decides what a binding injects into it: [`desired`] reads nothing else of the
/// pod, so these, with the binding and the [`Context`], key the webhook's memo of offers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PodInputs<'a> {
    /// The experiment annotation, when not blank.
    pub experiment: Option<&'a str>,
    /// The pod carries azure-workload-identity's label.
    pub azwi_opt_out: bool,
    pub service_account: &'a str,
    /// The `pod-template-hash` label.
    pub template_hash: Option<&'a str>,
    pub owner: Option<Owner<'a>>,
}

impl<'a> PodInputs<'a> {
    pub(crate) fn of(pod: &PodView<'a>) -> Self {
        let experiment = pod.annotations.get(EXPERIMENT_ANNOTATION);
        Self {
            experiment: experiment.filter(|s| !s.trim().is_empty()),
            azwi_opt_out: pod.opt_outs.azure_workload_identity,
            service_account: pod.service_account,
            template_hash: pod.labels.get(POD_TEMPLATE_HASH),
            owner: pod.owner,
        }
    }
}

/// Inputs besides the binding and the pod.
pub(crate) struct Context<'a> {
    pub namespace: &'a str,
    pub service_account: Option<&'a ServiceAccount>,
    pub default_tenant_id: Option<&'a str>,
}

/// What `b` injects into `pod`; the error is an identity refusal message.
pub(crate) fn desired(
    b: &MlflowWorkspaceBinding,
    pod: &PodInputs<'_>,
    ctx: &Context<'_>,
) -> Result<Desired, String> {
    let mut d = Desired::default();
    mlflow(&mut d, b, pod);
    let cloud = binding_cloud(b);
    if let Some(cloud) = cloud {
        d.push_env(env_value(
            "AZUREML_CURRENT_CLOUD",
            cloud.azureml_current_cloud(),
        ));
    }
    if pod.azwi_opt_out {
        d.annotation_suffix = AZWI_SUFFIX;
    } else if let Some(id) = &b.spec.identity {
        let inputs = identity::Inputs {
            binding: b.metadata.name.as_deref().unwrap_or(""),
            namespace: ctx.namespace,
            pod_service_account: pod.service_account,
            service_account: ctx.service_account,
            default_tenant_id: ctx.default_tenant_id,
            authority: cloud.unwrap_or_default().authority_host(),
        };
        identity::add(&mut d, id, &inputs)?;
    }
    for extra in &b.spec.env {
        if let Ok(entry) = serde_json::to_value(extra) {
            d.push_env(entry);
        }
    }
    let owner = pod.owner.as_ref();
    d.run_context = RunContext::of(b, ctx.namespace, owner, pod.template_hash, &d.env);
    Ok(d)
}

/// The MLflow variables: tracking and registry URIs, experiment, and the auth Secret's keys.
fn mlflow(d: &mut Desired, b: &MlflowWorkspaceBinding, pod: &PodInputs<'_>) {
    let status = b.status.as_ref();
    if let Some(uri) = status.and_then(|s| s.tracking_uri.as_deref()) {
        d.push_env(env_value(TRACKING_URI, uri));
    }
    if let Some(uri) = b
        .spec
        .registry_uri
        .as_deref()
        .or(status.and_then(|s| s.registry_uri.as_deref()))
    {
        d.push_env(env_value("MLFLOW_REGISTRY_URI", uri));
    }
    // The pod's annotation, else the binding's.
    if let Some(exp) = pod.experiment.or(b.spec.experiment_name.as_deref()) {
        d.push_env(env_value("MLFLOW_EXPERIMENT_NAME", exp));
    }
    if let Some(auth) = &b.spec.auth {
        for (var, key) in [
            ("MLFLOW_TRACKING_USERNAME", "username"),
            ("MLFLOW_TRACKING_PASSWORD", "password"),
            ("MLFLOW_TRACKING_TOKEN", "token"),
        ] {
            d.push_env(env_secret(var, &auth.secret_name, key, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_cloud_follows_every_azureml_uri_it_gives_pods() {
        let binding =
            |spec: serde_json::Value, status: serde_json::Value| -> MlflowWorkspaceBinding {
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
                    "metadata": {"name": "b"}, "spec": spec, "status": status
                }))
                .unwrap()
            };
        let cn = "azureml://chinaeast2.api.ml.azure.cn/mlflow/v1.0/x";
        let ws = serde_json::json!({"subscriptionId": "00000000-0000-0000-0000-000000000000",
            "resourceGroup": "rg", "workspaceName": "ws", "cloud": "AzureUSGovernment"});
        for (case, spec, status, want) in [
            (
                "azureML: the workspace's cloud",
                serde_json::json!({"azureML": ws}),
                serde_json::json!({"trackingUri": cn}),
                Some(AzureCloud::AzureUSGovernment),
            ),
            (
                "azureml:// trackingUri",
                serde_json::json!({"trackingUri": cn}),
                serde_json::json!({}),
                Some(AzureCloud::AzureChinaCloud),
            ),
            (
                "http tracking, azureml:// registry",
                serde_json::json!({"trackingUri": "http://m:5000", "registryUri": cn}),
                serde_json::json!({}),
                Some(AzureCloud::AzureChinaCloud),
            ),
            (
                "the resolved URI in status",
                serde_json::json!({"trackingUri": "http://m:5000"}),
                serde_json::json!({"trackingUri": cn}),
                Some(AzureCloud::AzureChinaCloud),
            ),
            (
                "no azureml:// at all",
                serde_json::json!({"trackingUri": "databricks"}),
                serde_json::json!({}),
                None,
            ),
        ] {
            assert_eq!(binding_cloud(&binding(spec, status)), want, "{case}");
        }
    }

    #[test]
    fn cloud_inferred_from_azureml_host() {
        for (uri, want) in [
            (
                "azureml://eastus.api.azureml.ms/mlflow/v1.0/x",
                AzureCloud::AzurePublicCloud,
            ),
            (
                "azureml://chinaeast2.api.ml.azure.cn/mlflow/v1.0/x",
                AzureCloud::AzureChinaCloud,
            ),
            (
                "azureml://CHINAEAST2.API.ML.AZURE.CN:443/x",
                AzureCloud::AzureChinaCloud,
            ),
            (
                "azureml://usgovvirginia.api.ml.azure.us/mlflow",
                AzureCloud::AzureUSGovernment,
            ),
            (
                "azureml://evil.api.ml.azure.us.example.com/x",
                AzureCloud::AzurePublicCloud,
            ),
            ("azureml://", AzureCloud::AzurePublicCloud),
        ] {
            assert_eq!(cloud_from_azureml_uri(uri), want, "{uri}");
        }
    }

    #[test]
    fn env_entry_shapes() {
        assert_eq!(env_value("A", "b"), json!({"name": "A", "value": "b"}));
        assert_eq!(
            env_secret("A", "s", "k", true),
            json!({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}})
        );
        assert_eq!(
            env_secret("A", "s", "k", false),
            json!({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
        );
    }

    #[test]
    fn push_env_keeps_the_first_entry_of_a_name() {
        let mut d = Desired::default();
        d.push_env(env_value("A", "1"));
        d.push_env(env_value("B", "2"));
        d.push_env(env_value("A", "3"));
        d.push_env(json!({"value": "nameless"}));
        assert_eq!(d.env, vec![env_value("A", "1"), env_value("B", "2")]);
    }
}
