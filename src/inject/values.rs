//! What a binding asks to inject: the env entries (in their fixed order), volumes and mounts.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};

use super::pod::PodView;
use crate::binding::{AzureCloud, EXPERIMENT_ANNOTATION, MlflowWorkspaceBinding};

pub(crate) const AZWI_USE_LABEL: &str = "azure.workload.identity/use";
pub(crate) const SA_CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
pub(crate) const SA_TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
pub(crate) const AZWI_SUFFIX: &str = " (identity: azure-workload-identity)";

pub(crate) const TOKEN_VOLUME: &str = "mlflow-operator-azure-token";
pub(crate) const TOKEN_DIR: &str = "/var/run/secrets/mlflow-operator/azure";
pub(crate) const TOKEN_FILE: &str = "azure-identity-token";
pub(crate) const TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";
pub(crate) const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;
pub(crate) const SP_CERT_VOLUME: &str = "mlflow-operator-azure-sp-cert";
pub(crate) const SP_CERT_DIR: &str = "/var/run/secrets/mlflow-operator/azure-sp";

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

/// The name of an env entry, if it has a string one.
pub(crate) fn env_name(entry: &Value) -> Option<&str> {
    entry.get("name").and_then(Value::as_str)
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

/// The Azure cloud of a binding: the azureML workspace's, or inferred from an `azureml://`
/// trackingUri; None for other MLflow servers.
pub(crate) fn binding_cloud(b: &MlflowWorkspaceBinding) -> Option<AzureCloud> {
    if let Some(ws) = &b.spec.azure_ml {
        return Some(ws.cloud);
    }
    b.spec
        .tracking_uri
        .as_deref()
        .filter(|u| {
            u.get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case("azureml://"))
        })
        .map(cloud_from_azureml_uri)
}

fn sa_annotation<'a>(sa: Option<&'a ServiceAccount>, key: &str) -> Option<&'a str> {
    sa?.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

/// Workload identity client id: the binding's, else the ServiceAccount annotation.
pub(crate) fn client_id<'a>(
    binding: Option<&'a str>,
    sa: Option<&'a ServiceAccount>,
) -> Option<&'a str> {
    binding
        .filter(|s| !s.is_empty())
        .or_else(|| sa_annotation(sa, SA_CLIENT_ID_ANNOTATION))
}

/// Workload identity tenant id: the binding's, else the ServiceAccount annotation, else the
/// operator's default.
pub(crate) fn tenant_id<'a>(
    binding: Option<&'a str>,
    sa: Option<&'a ServiceAccount>,
    default: Option<&'a str>,
) -> Option<&'a str> {
    binding
        .filter(|s| !s.is_empty())
        .or_else(|| sa_annotation(sa, SA_TENANT_ID_ANNOTATION))
        .or(default.filter(|s| !s.is_empty()))
}

/// The MLflow experiment: the pod annotation (non-empty), else the binding's.
pub(crate) fn experiment<'a>(pod: &PodView<'a>, b: &'a MlflowWorkspaceBinding) -> Option<&'a str> {
    pod.annotations
        .get(EXPERIMENT_ANNOTATION)
        .copied()
        .filter(|s| !s.trim().is_empty())
        .or(b.spec.experiment_name.as_deref())
}

/// Appends `entry` unless an entry of that name is already wanted (first one wins).
fn push_unique(env: &mut Vec<Value>, entry: Value) {
    let name = env_name(&entry);
    if name.is_some() && !env.iter().any(|e| env_name(e) == name) {
        env.push(entry);
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
    pod: &PodView<'_>,
    ctx: &Context<'_>,
) -> Result<Desired, String> {
    let mut d = Desired::default();
    let status = b.status.as_ref();
    let env = &mut d.env;
    if let Some(uri) = status.and_then(|s| s.tracking_uri.as_deref()) {
        push_unique(env, env_value("MLFLOW_TRACKING_URI", uri));
    }
    if let Some(uri) = b
        .spec
        .registry_uri
        .as_deref()
        .or(status.and_then(|s| s.registry_uri.as_deref()))
    {
        push_unique(env, env_value("MLFLOW_REGISTRY_URI", uri));
    }
    if let Some(exp) = experiment(pod, b) {
        push_unique(env, env_value("MLFLOW_EXPERIMENT_NAME", exp));
    }
    if let Some(auth) = &b.spec.auth {
        for (var, key) in [
            ("MLFLOW_TRACKING_USERNAME", "username"),
            ("MLFLOW_TRACKING_PASSWORD", "password"),
            ("MLFLOW_TRACKING_TOKEN", "token"),
        ] {
            push_unique(env, env_secret(var, &auth.secret_name, key, true));
        }
    }
    let cloud = binding_cloud(b);
    if let Some(cloud) = cloud {
        push_unique(
            env,
            env_value("AZUREML_CURRENT_CLOUD", cloud.azureml_current_cloud()),
        );
    }
    let authority = cloud.unwrap_or_default().authority_host();

    if pod.labels.get(AZWI_USE_LABEL) == Some(&"true") {
        d.annotation_suffix = AZWI_SUFFIX;
    } else if let Some(identity) = &b.spec.identity {
        if let Some(wi) = &identity.workload_identity {
            let sa = ctx.service_account;
            let client = client_id(wi.client_id.as_deref(), sa);
            let tenant = tenant_id(wi.tenant_id.as_deref(), sa, ctx.default_tenant_id);
            let (Some(client), Some(tenant)) = (client, tenant) else {
                return Err(identity_message(
                    b,
                    pod,
                    ctx,
                    client.is_none(),
                    tenant.is_none(),
                ));
            };
            push_unique(env, env_value("AZURE_CLIENT_ID", client));
            push_unique(env, env_value("AZURE_TENANT_ID", tenant));
            push_unique(env, env_value("AZURE_AUTHORITY_HOST", authority));
            push_unique(
                env,
                env_value(
                    "AZURE_FEDERATED_TOKEN_FILE",
                    &format!("{TOKEN_DIR}/{TOKEN_FILE}"),
                ),
            );
            let expiration = wi
                .token_expiration_seconds
                .unwrap_or(DEFAULT_TOKEN_EXPIRATION);
            d.volumes.push(json!({
                "name": TOKEN_VOLUME,
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": TOKEN_AUDIENCE,
                    "expirationSeconds": expiration,
                    "path": TOKEN_FILE,
                }}]}
            }));
            d.mounts
                .push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
        } else if let Some(mi) = &identity.managed_identity {
            if let Some(client) = mi.client_id.as_deref().filter(|s| !s.is_empty()) {
                push_unique(env, env_value("AZURE_CLIENT_ID", client));
            }
        } else if let Some(sp) = &identity.service_principal {
            push_unique(env, env_value("AZURE_CLIENT_ID", &sp.client_id));
            push_unique(env, env_value("AZURE_TENANT_ID", &sp.tenant_id));
            push_unique(env, env_value("AZURE_AUTHORITY_HOST", authority));
            if let Some(secret) = &sp.client_secret_ref {
                push_unique(
                    env,
                    env_secret("AZURE_CLIENT_SECRET", &secret.name, &secret.key, false),
                );
            } else if let Some(cert) = &sp.certificate_secret_ref {
                push_unique(
                    env,
                    env_value(
                        "AZURE_CLIENT_CERTIFICATE_PATH",
                        &format!("{SP_CERT_DIR}/{}", cert.key),
                    ),
                );
                if let Some(pw) = &cert.password_key {
                    push_unique(
                        env,
                        env_secret("AZURE_CLIENT_CERTIFICATE_PASSWORD", &cert.name, pw, false),
                    );
                }
                d.volumes.push(json!({
                    "name": SP_CERT_VOLUME,
                    "secret": {"secretName": cert.name, "items": [{"key": cert.key, "path": cert.key}]}
                }));
                d.mounts.push(
                    json!({"name": SP_CERT_VOLUME, "mountPath": SP_CERT_DIR, "readOnly": true}),
                );
            }
        }
    }
    for extra in &b.spec.env {
        if let Ok(entry) = serde_json::to_value(extra) {
            push_unique(env, entry);
        }
    }
    Ok(d)
}

/// The refusal message for workload identity without a client id and/or tenant id.
fn identity_message(
    b: &MlflowWorkspaceBinding,
    pod: &PodView<'_>,
    ctx: &Context<'_>,
    no_client: bool,
    no_tenant: bool,
) -> String {
    let name = b.metadata.name.as_deref().unwrap_or("");
    let ns = ctx.namespace;
    let sa = pod.service_account;
    let sa_state = if ctx.service_account.is_some() {
        ""
    } else {
        " (not found)"
    };
    let mut fixes = Vec::new();
    if no_client {
        fixes.push(format!(
            "no client id: set spec.identity.workloadIdentity.clientId on MlflowWorkspaceBinding \"{name}\", or annotate ServiceAccount \"{sa}\"{sa_state}: kubectl annotate serviceaccount {sa} -n {ns} {SA_CLIENT_ID_ANNOTATION}=<client-id>"
        ));
    }
    if no_tenant {
        fixes.push(format!(
            "no tenant id: set spec.identity.workloadIdentity.tenantId on MlflowWorkspaceBinding \"{name}\", annotate ServiceAccount \"{sa}\"{sa_state}: kubectl annotate serviceaccount {sa} -n {ns} {SA_TENANT_ID_ANNOTATION}=<tenant-id>, or set the operator's default tenant (--default-tenant-id)"
        ));
    }
    format!(
        "mlflow-operator: MlflowWorkspaceBinding \"{name}\" in namespace \"{ns}\" uses workload identity but {}",
        fixes.join("; and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn sa(annotations: &[(&str, &str)]) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn get_client_id() {
        let with = sa(&[(SA_CLIENT_ID_ANNOTATION, "sa-client")]);
        let blank = sa(&[(SA_CLIENT_ID_ANNOTATION, " ")]);
        for (binding, sa, want) in [
            (Some("b-client"), Some(&with), Some("b-client")),
            (None, Some(&with), Some("sa-client")),
            (Some(""), Some(&with), Some("sa-client")),
            (None, Some(&blank), None),
            (None, None, None),
            (Some("b-client"), None, Some("b-client")),
        ] {
            assert_eq!(client_id(binding, sa), want, "{binding:?}");
        }
    }

    #[test]
    fn get_tenant_id() {
        let with = sa(&[(SA_TENANT_ID_ANNOTATION, "sa-tenant")]);
        let without = sa(&[]);
        for (binding, sa, default, want) in [
            (Some("b"), Some(&with), Some("d"), Some("b")),
            (None, Some(&with), Some("d"), Some("sa-tenant")),
            (None, Some(&without), Some("d"), Some("d")),
            (None, None, Some("d"), Some("d")),
            (None, None, Some(""), None),
            (None, None, None, None),
        ] {
            assert_eq!(
                tenant_id(binding, sa, default),
                want,
                "{binding:?} {default:?}"
            );
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
    fn push_unique_keeps_the_first_entry_of_a_name() {
        let mut env = vec![];
        push_unique(&mut env, env_value("A", "1"));
        push_unique(&mut env, env_value("B", "2"));
        push_unique(&mut env, env_value("A", "3"));
        push_unique(&mut env, json!({"value": "nameless"}));
        assert_eq!(env, vec![env_value("A", "1"), env_value("B", "2")]);
    }
}
