//! The `MlflowWorkspaceBinding` API (`mlflow-operator.io/v1alpha1`).
//!
//! Every rule a user can break is enforced by the API server itself (OpenAPI + CEL), so a broken
//! binding is refused at `kubectl apply` with a message that says what to fix, instead of failing
//! later in the controller or the webhook.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Pod opt-in label (the webhook's objectSelector).
pub const TRACK_LABEL: &str = "mlflow-operator.io/track";
/// Pod annotation: choose a binding by name.
pub const BINDING_ANNOTATION: &str = "mlflow-operator.io/binding";
/// Pod annotation: override the experiment name.
pub const EXPERIMENT_ANNOTATION: &str = "mlflow-operator.io/experiment-name";
/// Pod annotation: containers to leave alone (comma or semicolon separated).
pub const SKIP_CONTAINERS_ANNOTATION: &str = "mlflow-operator.io/skip-containers";
/// Pod annotation written by the webhook: `<binding-name>/<binding-generation>`.
pub const INJECTED_ANNOTATION: &str = "mlflow-operator.io/injected";
/// Pod annotation written by the webhook beside [`INJECTED_ANNOTATION`]: a hash of the resolved
/// URIs the pod got ([`MlflowWorkspaceBinding::injection_hash`]), so a pod injected before the
/// workspace's URI changed is known to be stale though the binding's generation did not move.
pub const INJECTED_HASH_ANNOTATION: &str = "mlflow-operator.io/injected-hash";

/// The condition type that says a binding can be injected.
pub const READY: &str = "Ready";
/// The condition type that says every pod the binding selects carries its current injection.
pub const PODS_CURRENT: &str = "PodsCurrent";

/// A condition's status as Kubernetes spells it; `Condition.status` is a plain string.
pub const TRUE: &str = "True";
/// See [`TRUE`].
pub const FALSE: &str = "False";
/// See [`TRUE`]; also what the `bindings{ready}` gauge counts a binding without a Ready
/// condition as.
pub const UNKNOWN: &str = "Unknown";

/// CEL rule of every GUID field (subscription, client and tenant ids).
const GUID_RULE: &str =
    "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')";

/// The message of a GUID field's rule.
macro_rules! guid_message {
    ($field:literal $(, $hint:literal)?) => {
        concat!($field, " must be a GUID such as 00000000-0000-0000-0000-000000000000" $(, " ", $hint)?)
    };
}

/// CEL rule of the MLflow URI fields: the URI forms MLflow clients accept.
const MLFLOW_URI_RULE: &str = "self.matches('^(https?://[A-Za-z0-9.\\\\-\\\\[\\\\]:]+(/[^\\\\s]*)?|databricks(-uc)?(://[^\\\\s]+)?|azureml://[A-Za-z0-9.\\\\-]+(:[0-9]+)?/[^\\\\s]*)$')";

/// The message of an MLflow URI field's rule.
macro_rules! mlflow_uri_message {
    ($field:literal) => {
        concat!($field, " must be an MLflow URI: http(s)://host[:port][/path], databricks, databricks://profile, databricks-uc or azureml://host/path, with no spaces")
    };
}

/// Binds the pods of a namespace to an MLflow workspace: which tracking server (an Azure Machine
/// Learning workspace, resolved through Azure Resource Manager, or any MLflow tracking URI), which
/// experiment, and which Azure identity the pods use.
// Each printcolumn repeats `type_ = "string"`, which the lint mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlflow-operator.io",
    version = "v1alpha1",
    kind = "MlflowWorkspaceBinding",
    plural = "mlflowworkspacebindings",
    shortname = "mwb",
    category = "mlflow",
    // The CRD's top-level description (`kubectl explain mwb`); without it kube-derive writes
    // "Auto-generated derived type ...". The spec struct's doc comment describes `spec` only.
    doc = "Binds a namespace to an MLflow tracking server: an Azure Machine Learning workspace (its tracking URI resolved through Azure Resource Manager) or any MLflow tracking URI. Pods created in the namespace with the label mlflow-operator.io/track: \"true\" (and matching spec.podSelector, if set) get the tracking environment injected: MLFLOW_TRACKING_URI, the experiment and the Azure identity to log with.",
    namespaced,
    status = "MlflowWorkspaceBindingStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "URI", type_ = "string", json_path = ".status.trackingUri"),
    printcolumn(
        name = "Experiment",
        type_ = "string",
        json_path = ".spec.experimentName"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Pods", type_ = "string", json_path = ".status.pods.summary"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.azureML) != has(self.trackingUri)").message(
    "set exactly one of spec.azureML (an Azure Machine Learning workspace) or spec.trackingUri (any MLflow server)"
).reason(Reason::FieldValueRequired))]
pub struct MlflowWorkspaceBindingSpec {
    /// An Azure Machine Learning workspace. The controller reads its MLflow tracking URI
    /// (`properties.mlFlowTrackingUri`) from Azure Resource Manager with the operator's own Azure
    /// identity. Exactly one of azureML and trackingUri must be set.
    #[serde(rename = "azureML")]
    pub azure_ml: Option<AzureMlWorkspace>,

    /// Any MLflow tracking URI: http(s)://host[:port][/path], databricks, databricks://profile,
    /// databricks-uc, or azureml://... Exactly one of azureML and trackingUri must be set.
    #[x_kube(validation = Rule::new(MLFLOW_URI_RULE).message(mlflow_uri_message!("trackingUri")))]
    #[schemars(length(max = 2048))]
    pub tracking_uri: Option<String>,

    /// MLflow model registry URI, injected as MLFLOW_REGISTRY_URI. Defaults to the tracking URI
    /// (MLflow's own default) when unset.
    #[x_kube(validation = Rule::new(MLFLOW_URI_RULE).message(mlflow_uri_message!("registryUri")))]
    #[schemars(length(max = 2048))]
    pub registry_uri: Option<String>,

    /// Default MLflow experiment for the pods (MLFLOW_EXPERIMENT_NAME); MLflow creates it on first
    /// use. A pod can override it with the annotation mlflow-operator.io/experiment-name.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 256").message(
        "experimentName must be 1 to 256 characters; remove the field to leave the experiment to the pod"
    ))]
    #[schemars(length(max = 256))]
    pub experiment_name: Option<String>,

    /// Which opted-in pods (label mlflow-operator.io/track: "true") of this namespace this binding
    /// applies to. Empty or unset: every opted-in pod of the namespace.
    pub pod_selector: Option<LabelSelector>,

    /// The Azure identity the pods use to reach Azure ML. At most one mode.
    pub identity: Option<Identity>,

    /// Credentials for MLflow servers that are not Azure ML.
    pub auth: Option<MlflowAuth>,

    /// Extra environment variables for every injected container (for example
    /// MLFLOW_TRACKING_INSECURE_TLS). Like every injected variable, never overrides a variable the
    /// container already sets. valueFrom.fileKeyRef needs Kubernetes 1.35 or later: on an older
    /// API server the binding is not Ready (reason UnsupportedByCluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// Tags for every run the pods start, given to MLflow as MLFLOW_RUN_CONTEXT: where the run
    /// ran (Kubernetes names) and static tags of your own. Unset: no run tags.
    pub run_tags: Option<RunTags>,

    /// MLflow's system metrics (CPU, memory, disk, network, GPU) for every run the pods start,
    /// logged as system/<pod name>/...; the training image needs psutil. Unset: off.
    pub system_metrics: Option<SystemMetrics>,
}

/// MLflow run tags: the pod's Kubernetes whereabouts and static tags.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunTags {
    /// Tag each run with OpenTelemetry's Kubernetes names: k8s.namespace.name, k8s.pod.name,
    /// k8s.pod.uid, k8s.node.name, k8s.container.name, container.image.name (the image as the
    /// spec writes it), the controlling owner as k8s.<kind>.name (k8s.job.name,
    /// k8s.replicaset.name, ...; k8s.deployment.name and k8s.cronjob.name where the owner's name
    /// tells them), and mlflow-operator.binding (<namespace>/<name>). Default true.
    pub kubernetes: Option<bool>,

    /// Static tags for every run, at most 20. Keys follow MLflow's tag-key rules: 1 to 250 of
    /// A-Z a-z 0-9 _ - . : / and space, not a path that resolves elsewhere (no leading or
    /// trailing /, no //, no . or .. segment). Values up to 1000 characters. Where a key is also
    /// one of the Kubernetes tags, the Kubernetes tag wins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20, "additionalProperties" = {"type": "string", "maxLength": 1000}))]
    #[x_kube(validation = Rule::new(TAG_KEYS_RULE).message(TAG_KEYS_MESSAGE))]
    pub extra: BTreeMap<String, String>,
}

impl RunTags {
    /// Whether the Kubernetes tags are wanted (the default).
    pub fn kubernetes(&self) -> bool {
        self.kubernetes.unwrap_or(true)
    }
}

/// CEL rule of `runTags.extra`'s keys: MLflow's tag-key characters (ASCII) and path rules.
const TAG_KEYS_RULE: &str = "self.all(k, size(k) <= 250 && k.matches('^[A-Za-z0-9_.: /-]+$') && !k.startsWith('/') && !k.endsWith('/') && !k.contains('//') && !k.matches('(^|/)[.][.]?(/|$)'))";
const TAG_KEYS_MESSAGE: &str = "runTags.extra keys must be MLflow tag keys: 1 to 250 of A-Z a-z 0-9 _ - . : / and space, with no leading or trailing /, no //, and no . or .. path segment";

/// MLflow system metrics for every run.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SystemMetrics {
    /// MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING; each pod's metrics are told apart by its name
    /// (MLFLOW_SYSTEM_METRICS_NODE_ID). Default true.
    pub enabled: Option<bool>,

    /// Seconds between two samples (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL), 1 to 3600.
    /// Unset: MLflow's default (10).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message(
        "systemMetrics.samplingIntervalSeconds must be between 1 and 3600"
    ))]
    pub sampling_interval_seconds: Option<i32>,
}

impl SystemMetrics {
    /// Whether system metrics are on (the default when the block is given).
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// An Azure Machine Learning workspace, addressed the way Azure Resource Manager addresses it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AzureMlWorkspace {
    /// Azure subscription id (a GUID).
    #[x_kube(validation = Rule::new(GUID_RULE).message(guid_message!("subscriptionId", "(az account show --query id)")))]
    #[schemars(length(max = 36))]
    pub subscription_id: String,

    /// Resource group of the workspace.
    #[x_kube(validation = Rule::new("self.matches('^[-\\\\w._()]{0,89}[-\\\\w_()]$')").message(
        "resourceGroup must be 1 to 90 letters, digits, '-', '_', '.', '(' or ')' and must not end with '.'"
    ))]
    #[schemars(length(max = 90))]
    pub resource_group: String,

    /// Name of the Azure Machine Learning workspace.
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$')").message(
        "workspaceName must be 3 to 33 letters, digits, '-' or '_', starting with a letter or digit"
    ))]
    #[schemars(length(max = 33))]
    pub workspace_name: String,

    /// Azure cloud of the workspace: AzurePublicCloud (default), AzureChinaCloud or
    /// AzureUSGovernment.
    #[serde(default)]
    pub cloud: AzureCloud,
}

/// The Azure clouds the operator knows the endpoints of.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
)]
pub enum AzureCloud {
    #[default]
    AzurePublicCloud,
    AzureChinaCloud,
    AzureUSGovernment,
}

impl AzureCloud {
    /// Azure Resource Manager endpoint.
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            AzureCloud::AzurePublicCloud => "https://management.azure.com",
            AzureCloud::AzureChinaCloud => "https://management.chinacloudapi.cn",
            AzureCloud::AzureUSGovernment => "https://management.usgovcloudapi.net",
        }
    }

    /// Entra ID authority host (AZURE_AUTHORITY_HOST).
    pub fn authority_host(self) -> &'static str {
        match self {
            AzureCloud::AzurePublicCloud => "https://login.microsoftonline.com/",
            AzureCloud::AzureChinaCloud => "https://login.chinacloudapi.cn/",
            AzureCloud::AzureUSGovernment => "https://login.microsoftonline.us/",
        }
    }

    /// The value azureml-mlflow expects in AZUREML_CURRENT_CLOUD; without it the plugin makes a
    /// blocking metadata call to ARM on first use.
    pub fn azureml_current_cloud(self) -> &'static str {
        match self {
            AzureCloud::AzurePublicCloud => "AzureCloud",
            AzureCloud::AzureChinaCloud => "AzureChinaCloud",
            AzureCloud::AzureUSGovernment => "AzureUSGovernment",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AzureCloud::AzurePublicCloud => "AzurePublicCloud",
            AzureCloud::AzureChinaCloud => "AzureChinaCloud",
            AzureCloud::AzureUSGovernment => "AzureUSGovernment",
        }
    }
}

/// The Azure identity injected into pods. At most one mode.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.workloadIdentity) ? 1 : 0) + (has(self.managedIdentity) ? 1 : 0) + (has(self.servicePrincipal) ? 1 : 0) <= 1"
).message("set at most one of identity.workloadIdentity, identity.managedIdentity or identity.servicePrincipal"))]
pub struct Identity {
    /// Azure workload identity: a projected ServiceAccount token exchanged for an Entra ID token
    /// (azure-workload-identity compatible). clientId and tenantId default to the pod
    /// ServiceAccount's annotations azure.workload.identity/client-id and
    /// azure.workload.identity/tenant-id.
    pub workload_identity: Option<WorkloadIdentity>,

    /// A managed identity of the node (IMDS). Only AZURE_CLIENT_ID is injected, and only when
    /// clientId is set (a user-assigned identity); omit clientId for the system-assigned identity.
    pub managed_identity: Option<ManagedIdentity>,

    /// A service principal with a client secret or a certificate kept in a Secret of this
    /// namespace (the "Environment" credential of the Azure ML docs). The operator never reads
    /// the Secret; pods reference it.
    // Boxed: the largest mode (170 bytes) made every binding's struct 1,056 bytes, whatever its
    // mode, and each stored binding an allocation of 1,280 (see the size test below).
    pub service_principal: Option<Box<ServicePrincipal>>,
}

#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentity {
    /// Client id of the Entra ID application or user-assigned managed identity (a GUID).
    #[x_kube(validation = Rule::new(GUID_RULE).message(guid_message!("identity.workloadIdentity.clientId")))]
    #[schemars(length(max = 36))]
    pub client_id: Option<String>,

    /// Entra ID tenant id (a GUID).
    #[x_kube(validation = Rule::new(GUID_RULE).message(guid_message!("identity.workloadIdentity.tenantId")))]
    #[schemars(length(max = 36))]
    pub tenant_id: Option<String>,

    /// Lifetime of the projected ServiceAccount token, 3600 to 86400 seconds (default 3600).
    #[x_kube(validation = Rule::new("self >= 3600 && self <= 86400").message(
        "identity.workloadIdentity.tokenExpirationSeconds must be between 3600 and 86400"
    ))]
    pub token_expiration_seconds: Option<i64>,
}

#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIdentity {
    /// Client id of a user-assigned managed identity (a GUID). Omit for the system-assigned one.
    #[x_kube(validation = Rule::new(GUID_RULE).message(guid_message!("identity.managedIdentity.clientId")))]
    #[schemars(length(max = 36))]
    pub client_id: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.clientSecretRef) != has(self.certificateSecretRef)").message(
    "identity.servicePrincipal needs exactly one of clientSecretRef or certificateSecretRef"
))]
pub struct ServicePrincipal {
    /// Application (client) id of the service principal (a GUID).
    #[x_kube(validation = Rule::new(GUID_RULE).message(guid_message!("identity.servicePrincipal.clientId")))]
    #[schemars(length(max = 36))]
    pub client_id: String,

    /// Entra ID tenant id (a GUID).
    #[x_kube(validation = Rule::new(GUID_RULE).message(guid_message!("identity.servicePrincipal.tenantId")))]
    #[schemars(length(max = 36))]
    pub tenant_id: String,

    /// Secret key holding the client secret, injected as AZURE_CLIENT_SECRET by secretKeyRef.
    pub client_secret_ref: Option<SecretKeyRef>,

    /// Secret key holding a PEM certificate with its private key, mounted read-only; its path is
    /// injected as AZURE_CLIENT_CERTIFICATE_PATH.
    pub certificate_secret_ref: Option<CertificateSecretRef>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of a Secret in the binding's namespace.
    #[x_kube(validation = Rule::new(DNS_SUBDOMAIN_RULE).message(SECRET_NAME_MESSAGE))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key in that Secret.
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    #[schemars(length(max = 253))]
    pub key: String,
}

#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSecretRef {
    /// The Secret and the key holding the PEM certificate and private key.
    #[serde(flatten)]
    pub secret: SecretKeyRef,
    /// Optional key holding the certificate's password (AZURE_CLIENT_CERTIFICATE_PASSWORD).
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    #[schemars(length(max = 253))]
    pub password_key: Option<String>,
}

/// Credentials for an MLflow server that is not Azure ML.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MlflowAuth {
    /// Secret in the binding's namespace with keys username and password (basic auth), or token
    /// (bearer). Pods reference the keys through secretKeyRef; the operator never reads them.
    #[x_kube(validation = Rule::new(DNS_SUBDOMAIN_RULE).message(SECRET_NAME_MESSAGE))]
    #[schemars(length(max = 253))]
    pub secret_name: String,
}

const DNS_SUBDOMAIN_RULE: &str = "size(self) <= 253 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
const SECRET_NAME_MESSAGE: &str =
    "must be the name of a Secret: lowercase letters, digits, '-' and '.', at most 253 characters";
const SECRET_KEY_RULE: &str = "size(self) <= 253 && self.matches('^[-._a-zA-Z0-9]+$')";
const SECRET_KEY_MESSAGE: &str = "must be a Secret key: letters, digits, '-', '_' or '.'";

/// What the controller observed. Written only by the controller (server-side apply).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlflowWorkspaceBindingStatus {
    /// The metadata.generation this status describes.
    pub observed_generation: Option<i64>,
    /// The resolved MLflow tracking URI injected as MLFLOW_TRACKING_URI. Kept while a refresh
    /// fails.
    #[schemars(length(max = 2048))]
    pub tracking_uri: Option<String>,
    /// The resolved registry URI injected as MLFLOW_REGISTRY_URI, when there is one.
    #[schemars(length(max = 2048))]
    pub registry_uri: Option<String>,
    /// The opted-in pods this binding selects now, by whether they carry its current injection.
    pub pods: Option<PodCounts>,
    /// Kubernetes conditions; Ready says whether pods can be injected. While Azure Resource
    /// Manager or Entra ID throttles, fails or does not answer, Ready stays True with the last
    /// good URI and reason RefreshFailing. PodsCurrent says whether every pod it selects carries
    /// what it would inject now; when False its message names the owners and the command that
    /// fixes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Opted-in pods (label mlflow-operator.io/track: "true") a binding selects now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Injected by this binding with what it would inject now.
    pub injected: i64,
    /// Injected from an older generation of this binding, an older resolved URI, or by another
    /// binding: restart them to get the current values.
    pub stale: i64,
    /// Carrying no injection: created before the webhook was installed, while it was
    /// unreachable, or admitted unchanged (webhook.onMissingBinding: allow).
    pub not_injected: i64,
    /// injected/total, for the PODS column of kubectl get.
    #[serde(default)]
    pub summary: String,
}

impl PodCounts {
    pub fn total(&self) -> i64 {
        self.injected + self.stale + self.not_injected
    }
}

impl MlflowWorkspaceBindingStatus {
    /// The Ready condition, if the controller wrote one.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }

    /// Replaces the Ready condition; it goes first, where `kubectl describe` shows it first.
    pub fn set_ready(&mut self, ready: Condition) {
        self.conditions.retain(|c| c.type_ != READY);
        self.conditions.insert(0, ready);
    }

    /// The PodsCurrent condition, if the controller wrote one.
    pub fn pods_current(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == PODS_CURRENT)
    }

    /// The status as the binding's resolution alone makes it: no pod counts, no PodsCurrent.
    pub fn without_pods(&self) -> Self {
        let mut s = self.clone();
        s.pods = None;
        s.conditions.retain(|c| c.type_ != PODS_CURRENT);
        s
    }

    /// Replaces the PodsCurrent condition; it goes after Ready.
    pub fn set_pods_current(&mut self, pods: Condition) {
        self.conditions.retain(|c| c.type_ != PODS_CURRENT);
        let at = usize::from(self.ready().is_some());
        self.conditions.insert(at.min(self.conditions.len()), pods);
    }
}

impl MlflowWorkspaceBinding {
    /// What the webhook writes to [`INJECTED_HASH_ANNOTATION`]: 16 hex digits of the SHA-256
    /// of the resolved tracking and registry URIs in the status (what the generation does not
    /// cover: ARM may move a workspace's URI under an unchanged spec).
    pub fn injection_hash(&self) -> String {
        use sha2::Digest;
        let status = self.status.as_ref();
        let uri = |f: fn(&MlflowWorkspaceBindingStatus) -> Option<&String>| {
            status.and_then(f).map(String::as_str).unwrap_or_default()
        };
        let mut h = sha2::Sha256::new();
        h.update(uri(|s| s.tracking_uri.as_ref()));
        h.update([0]);
        h.update(uri(|s| s.registry_uri.as_ref()));
        // The digest's own hex formatting: one allocation, not one `format!` per byte.
        let mut hex = format!("{:x}", h.finalize());
        hex.truncate(16);
        hex
    }

    /// The Ready condition, if the controller wrote one.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status.as_ref()?.ready()
    }

    /// Ready for injection: see [`Self::readiness`].
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Whether pods can be injected from this binding: the Ready condition is True, the status
    /// carries a tracking URI, and it describes the current spec. A status of an older
    /// generation could point pods at the workspace the user just moved away from, so it does
    /// not count. The webhook, the controller's last good URI and `is_ready` all decide here.
    /// Ok is the tracking URI pods get; Err the first thing in the way.
    pub fn readiness(&self) -> Result<&str, NotReady<'_>> {
        let Some(status) = self.status.as_ref() else {
            return Err(NotReady::NoStatus);
        };
        let current = match (self.metadata.generation, status.observed_generation) {
            (Some(g), Some(o)) => g == o,
            (None, _) => true,
            (Some(_), None) => false,
        };
        match (status.ready(), status.tracking_uri.as_deref()) {
            (Some(c), _) if c.status != TRUE => Err(NotReady::NotTrue(c)),
            (None, _) => Err(NotReady::NoCondition),
            (Some(_), None) => Err(NotReady::NoTrackingUri),
            (Some(_), Some(_)) if !current => Err(NotReady::Behind {
                observed: status.observed_generation,
                generation: self.metadata.generation,
            }),
            (Some(_), Some(tracking_uri)) => Ok(tracking_uri),
        }
    }
}

/// Why pods cannot be injected from a binding ([`MlflowWorkspaceBinding::readiness`]): the
/// first thing that stands in the way, in the order a person should fix them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NotReady<'a> {
    /// The controller has not written a status yet.
    NoStatus,
    /// The Ready condition is there and not True.
    NotTrue(&'a Condition),
    NoCondition,
    NoTrackingUri,
    /// The status describes another generation than the binding's.
    Behind {
        observed: Option<i64>,
        generation: Option<i64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding(
        generation: Option<i64>,
        status: Option<serde_json::Value>,
    ) -> MlflowWorkspaceBinding {
        serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": "b", "generation": generation},
            "spec": {"trackingUri": "http://x"}, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn readiness_names_the_first_thing_in_the_way() {
        let ready = |status: &str| {
            json!({"type": "Ready", "status": status, "reason": "R",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        // (case, metadata.generation, status, want: Ready URI or the failure's name)
        for (case, generation, status, want) in [
            ("no status", Some(1), None, "NoStatus"),
            (
                "Ready False",
                Some(1),
                Some(
                    json!({"observedGeneration": 1, "trackingUri": "u", "conditions": [ready(FALSE)]}),
                ),
                "NotTrue",
            ),
            (
                "Ready False wins over an old generation",
                Some(2),
                Some(json!({"observedGeneration": 1, "conditions": [ready(UNKNOWN)]})),
                "NotTrue",
            ),
            (
                "no condition",
                Some(1),
                Some(json!({"observedGeneration": 1, "trackingUri": "u"})),
                "NoCondition",
            ),
            (
                "no URI",
                Some(1),
                Some(json!({"observedGeneration": 1, "conditions": [ready(TRUE)]})),
                "NoTrackingUri",
            ),
            (
                "older generation",
                Some(2),
                Some(
                    json!({"observedGeneration": 1, "trackingUri": "u", "conditions": [ready(TRUE)]}),
                ),
                "Behind",
            ),
            (
                "no observedGeneration",
                Some(2),
                Some(json!({"trackingUri": "u", "conditions": [ready(TRUE)]})),
                "Behind",
            ),
            (
                "current",
                Some(2),
                Some(
                    json!({"observedGeneration": 2, "trackingUri": "u", "conditions": [ready(TRUE)]}),
                ),
                "u",
            ),
            (
                "no generation: nothing to be behind of",
                None,
                Some(
                    json!({"observedGeneration": 7, "trackingUri": "u", "conditions": [ready(TRUE)]}),
                ),
                "u",
            ),
        ] {
            let b = binding(generation, status);
            let got = match b.readiness() {
                Ok(tracking_uri) => tracking_uri,
                Err(NotReady::NoStatus) => "NoStatus",
                Err(NotReady::NotTrue(_)) => "NotTrue",
                Err(NotReady::NoCondition) => "NoCondition",
                Err(NotReady::NoTrackingUri) => "NoTrackingUri",
                Err(NotReady::Behind { .. }) => "Behind",
            };
            assert_eq!(got, want, "{case}");
            assert_eq!(b.is_ready(), want == "u", "{case}");
        }
    }

    /// The leader keeps every binding in one allocation (kube's store: `Arc<Binding>`, with 16
    /// bytes of counts); past 1,008 bytes of struct, each takes mimalloc's next size, 1,280.
    #[test]
    fn a_stored_binding_fits_a_1024_byte_allocation() {
        let size = std::mem::size_of::<MlflowWorkspaceBinding>();
        assert!(size + 16 <= 1024, "MlflowWorkspaceBinding is {size} bytes");
    }
}
