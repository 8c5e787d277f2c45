//! The Azure identity a binding gives its pods, one function per mode: workload identity (a
//! projected ServiceAccount token), managed identity (the node's IMDS) or a service principal
//! (a Secret the pod references; the operator never reads it).

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::json;

use super::values::{Desired, env_secret, env_value};
use crate::binding::{Identity, ManagedIdentity, ServicePrincipal, WorkloadIdentity};

pub(crate) const SA_CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
pub(crate) const SA_TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";

pub(crate) const TOKEN_VOLUME: &str = "mlflow-operator-azure-token";
pub(crate) const TOKEN_DIR: &str = "/var/run/secrets/mlflow-operator/azure";
pub(crate) const TOKEN_FILE: &str = "azure-identity-token";
pub(crate) const TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";
pub(crate) const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;
pub(crate) const SP_CERT_VOLUME: &str = "mlflow-operator-azure-sp-cert";
pub(crate) const SP_CERT_DIR: &str = "/var/run/secrets/mlflow-operator/azure-sp";
/// Every volume the planner adds, by name, and where it mounts them: an existing volume or
/// mount can take the place of one of these only by these names and paths.
pub(crate) const VOLUMES: [&str; 2] = [TOKEN_VOLUME, SP_CERT_VOLUME];
pub(crate) const MOUNT_PATHS: [&str; 2] = [TOKEN_DIR, SP_CERT_DIR];

/// What the identity settings depend on besides the binding's identity.
pub(crate) struct Inputs<'a> {
    /// The binding's name, for messages.
    pub binding: &'a str,
    pub namespace: &'a str,
    /// The name of the ServiceAccount the pod runs as.
    pub pod_service_account: &'a str,
    /// That ServiceAccount, when it exists.
    pub service_account: Option<&'a ServiceAccount>,
    pub default_tenant_id: Option<&'a str>,
    /// AZURE_AUTHORITY_HOST of the binding's cloud.
    pub authority: &'a str,
}

/// Adds the settings of the identity's mode; the error is a refusal message.
pub(crate) fn add(d: &mut Desired, identity: &Identity, inputs: &Inputs<'_>) -> Result<(), String> {
    if let Some(wi) = &identity.workload_identity {
        workload_identity(d, wi, inputs)?;
    } else if let Some(mi) = &identity.managed_identity {
        managed_identity(d, mi);
    } else if let Some(sp) = &identity.service_principal {
        service_principal(d, sp, inputs.authority);
    }
    Ok(())
}

fn workload_identity(
    d: &mut Desired,
    wi: &WorkloadIdentity,
    inputs: &Inputs<'_>,
) -> Result<(), String> {
    let sa = inputs.service_account;
    let client = client_id(wi.client_id.as_deref(), sa);
    let tenant = tenant_id(wi.tenant_id.as_deref(), sa, inputs.default_tenant_id);
    let (Some(client), Some(tenant)) = (client, tenant) else {
        return Err(missing_ids_message(
            inputs,
            client.is_none(),
            tenant.is_none(),
        ));
    };
    d.push_env(env_value("AZURE_CLIENT_ID", client));
    d.push_env(env_value("AZURE_TENANT_ID", tenant));
    d.push_env(env_value("AZURE_AUTHORITY_HOST", inputs.authority));
    d.push_env(env_value(
        "AZURE_FEDERATED_TOKEN_FILE",
        &format!("{TOKEN_DIR}/{TOKEN_FILE}"),
    ));
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
    Ok(())
}

/// Only a user-assigned identity needs naming; IMDS finds the system-assigned one by itself.
fn managed_identity(d: &mut Desired, mi: &ManagedIdentity) {
    if let Some(client) = non_empty(mi.client_id.as_deref()) {
        d.push_env(env_value("AZURE_CLIENT_ID", client));
    }
}

fn service_principal(d: &mut Desired, sp: &ServicePrincipal, authority: &str) {
    d.push_env(env_value("AZURE_CLIENT_ID", &sp.client_id));
    d.push_env(env_value("AZURE_TENANT_ID", &sp.tenant_id));
    d.push_env(env_value("AZURE_AUTHORITY_HOST", authority));
    if let Some(secret) = &sp.client_secret_ref {
        d.push_env(env_secret(
            "AZURE_CLIENT_SECRET",
            &secret.name,
            &secret.key,
            false,
        ));
    } else if let Some(cert_ref) = &sp.certificate_secret_ref {
        let cert = &cert_ref.secret;
        d.push_env(env_value(
            "AZURE_CLIENT_CERTIFICATE_PATH",
            &format!("{SP_CERT_DIR}/{}", cert.key),
        ));
        if let Some(pw) = &cert_ref.password_key {
            d.push_env(env_secret(
                "AZURE_CLIENT_CERTIFICATE_PASSWORD",
                &cert.name,
                pw,
                false,
            ));
        }
        d.volumes.push(json!({
            "name": SP_CERT_VOLUME,
            "secret": {"secretName": cert.name, "items": [{"key": cert.key, "path": cert.key}]}
        }));
        d.mounts
            .push(json!({"name": SP_CERT_VOLUME, "mountPath": SP_CERT_DIR, "readOnly": true}));
    }
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
    non_empty(binding).or_else(|| sa_annotation(sa, SA_CLIENT_ID_ANNOTATION))
}

/// Workload identity tenant id: the binding's, else the ServiceAccount annotation, else the
/// operator's default.
pub(crate) fn tenant_id<'a>(
    binding: Option<&'a str>,
    sa: Option<&'a ServiceAccount>,
    default: Option<&'a str>,
) -> Option<&'a str> {
    non_empty(binding)
        .or_else(|| sa_annotation(sa, SA_TENANT_ID_ANNOTATION))
        .or(non_empty(default))
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The refusal message for workload identity without a client id and/or tenant id.
fn missing_ids_message(inputs: &Inputs<'_>, no_client: bool, no_tenant: bool) -> String {
    let (name, ns, sa) = (inputs.binding, inputs.namespace, inputs.pod_service_account);
    let sa_state = if inputs.service_account.is_some() {
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
            "no tenant id: set spec.identity.workloadIdentity.tenantId on MlflowWorkspaceBinding \"{name}\", annotate ServiceAccount \"{sa}\"{sa_state}: kubectl annotate serviceaccount {sa} -n {ns} {SA_TENANT_ID_ANNOTATION}=<tenant-id>, or set the operator's default tenant (--default-tenant-id, or AZURE_TENANT_ID in its environment; the chart's azure.tenantId)"
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
    use serde_json::Value;

    const AUTHORITY: &str = "https://login.example/";

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

    fn inputs<'a>(sa: Option<&'a ServiceAccount>, default_tenant: Option<&'a str>) -> Inputs<'a> {
        Inputs {
            binding: "b",
            namespace: "ns",
            pod_service_account: "trainer",
            service_account: sa,
            default_tenant_id: default_tenant,
            authority: AUTHORITY,
        }
    }

    /// The identity settings of `identity` (JSON of the binding's `spec.identity`).
    fn settings(identity: Value, inputs: &Inputs<'_>) -> Result<Desired, String> {
        let identity: Identity = serde_json::from_value(identity).unwrap();
        let mut d = Desired::default();
        add(&mut d, &identity, inputs).map(|()| d)
    }

    /// The env as (name, value or valueFrom) pairs.
    fn env(d: &Desired) -> Vec<(&str, Value)> {
        d.env
            .iter()
            .map(|e| {
                let v = e.get("value").or(e.get("valueFrom")).cloned();
                (e["name"].as_str().unwrap(), v.unwrap())
            })
            .collect()
    }

    fn secret_ref(name: &str, key: &str) -> Value {
        json!({"secretKeyRef": {"name": name, "key": key}})
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
    fn workload_identity_settings() {
        let annotated = sa(&[
            (SA_CLIENT_ID_ANNOTATION, "sa-client"),
            (SA_TENANT_ID_ANNOTATION, "sa-tenant"),
        ]);
        let token_file = json!("/var/run/secrets/mlflow-operator/azure/azure-identity-token");
        for (wi, inputs, client, tenant, expiration) in [
            (
                json!({"clientId": "c", "tenantId": "t", "tokenExpirationSeconds": 7200}),
                inputs(None, None),
                "c",
                "t",
                7200,
            ),
            (
                json!({}),
                inputs(Some(&annotated), None),
                "sa-client",
                "sa-tenant",
                3600,
            ),
            (
                json!({"clientId": "c"}),
                inputs(None, Some("d")),
                "c",
                "d",
                3600,
            ),
        ] {
            let d = settings(json!({"workloadIdentity": wi}), &inputs).unwrap();
            assert_eq!(
                env(&d),
                [
                    ("AZURE_CLIENT_ID", json!(client)),
                    ("AZURE_TENANT_ID", json!(tenant)),
                    ("AZURE_AUTHORITY_HOST", json!(AUTHORITY)),
                    ("AZURE_FEDERATED_TOKEN_FILE", token_file.clone()),
                ],
                "{wi}"
            );
            assert_eq!(
                d.volumes,
                [
                    json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "api://AzureADTokenExchange", "expirationSeconds": expiration,
                    "path": "azure-identity-token"}}]}})
                ],
                "{wi}"
            );
            assert_eq!(
                d.mounts,
                [json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true})]
            );
        }
    }

    #[test]
    fn workload_identity_without_ids_says_where_to_set_them() {
        let tenant_only = sa(&[(SA_TENANT_ID_ANNOTATION, "t")]);
        for (wi, sa, wants, not_wanted) in [
            (
                json!({"tenantId": "t"}),
                None,
                vec!["no client id", "ServiceAccount \"trainer\" (not found)"],
                "no tenant id",
            ),
            (
                json!({}),
                Some(&tenant_only),
                vec![
                    "no client id",
                    "kubectl annotate serviceaccount trainer -n ns",
                ],
                "(not found)",
            ),
            (
                json!({"clientId": "c"}),
                None,
                vec!["no tenant id", "--default-tenant-id"],
                "no client id",
            ),
        ] {
            let err = settings(json!({"workloadIdentity": wi}), &inputs(sa, None)).unwrap_err();
            for want in wants {
                assert!(err.contains(want), "{want}: {err}");
            }
            assert!(!err.contains(not_wanted), "{not_wanted}: {err}");
        }
    }

    #[test]
    fn managed_identity_settings() {
        for (mi, want) in [
            (
                json!({"clientId": "c"}),
                vec![("AZURE_CLIENT_ID", json!("c"))],
            ),
            (json!({"clientId": ""}), vec![]),
            (json!({}), vec![]),
        ] {
            let d = settings(json!({"managedIdentity": mi}), &inputs(None, None)).unwrap();
            assert_eq!(env(&d), want, "{mi}");
            assert!(d.volumes.is_empty() && d.mounts.is_empty());
        }
    }

    #[test]
    fn service_principal_settings() {
        let ids = [
            ("AZURE_CLIENT_ID", json!("c")),
            ("AZURE_TENANT_ID", json!("t")),
            ("AZURE_AUTHORITY_HOST", json!(AUTHORITY)),
        ];
        let cert_path = (
            "AZURE_CLIENT_CERTIFICATE_PATH",
            json!(format!("{SP_CERT_DIR}/tls.pem")),
        );
        let cert_volume = json!({"name": SP_CERT_VOLUME,
            "secret": {"secretName": "sp-cert", "items": [{"key": "tls.pem", "path": "tls.pem"}]}});
        for (credential, extra_env, volumes) in [
            (
                json!({"clientSecretRef": {"name": "sp-creds", "key": "clientSecret"}}),
                vec![(
                    "AZURE_CLIENT_SECRET",
                    secret_ref("sp-creds", "clientSecret"),
                )],
                vec![],
            ),
            (
                json!({"certificateSecretRef": {"name": "sp-cert", "key": "tls.pem", "passwordKey": "pw"}}),
                vec![
                    cert_path.clone(),
                    (
                        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
                        secret_ref("sp-cert", "pw"),
                    ),
                ],
                vec![cert_volume.clone()],
            ),
            (
                json!({"certificateSecretRef": {"name": "sp-cert", "key": "tls.pem"}}),
                vec![cert_path.clone()],
                vec![cert_volume.clone()],
            ),
        ] {
            let mut sp = json!({"clientId": "c", "tenantId": "t"});
            sp.as_object_mut()
                .unwrap()
                .extend(credential.as_object().unwrap().clone());
            let d = settings(json!({"servicePrincipal": sp}), &inputs(None, None)).unwrap();
            let want: Vec<_> = ids.iter().cloned().chain(extra_env).collect();
            assert_eq!(env(&d), want, "{credential}");
            assert_eq!(d.volumes, volumes, "{credential}");
            let mounts = volumes
                .iter()
                .map(
                    |_| json!({"name": SP_CERT_VOLUME, "mountPath": SP_CERT_DIR, "readOnly": true}),
                )
                .collect::<Vec<_>>();
            assert_eq!(d.mounts, mounts, "{credential}");
        }
    }
}
