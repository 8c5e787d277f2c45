//! The Azure ML client's trap: with an `azureml://` tracking URI and no Azure credential at all,
//! azure-identity ends its chain with a device-code login that waits about 15 minutes for a
//! person. A pod that would do that is refused with what to set, rather than admitted to hang.

use serde_json::Value;

use super::patch::self_configured;
use super::pod::PodView;
use super::values::{Desired, env_name};
use crate::binding::MlflowWorkspaceBinding;

/// Variables that give azure-identity a credential without a person: environment (secret,
/// certificate, username), workload identity, managed identity (a client id or an endpoint).
const CREDENTIAL_VARS: &[&str] = &[
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
];

pub(crate) fn is_azureml(uri: &str) -> bool {
    uri.get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("azureml://"))
}

fn sets_credential(env: &[Value]) -> bool {
    env.iter()
        .any(|e| env_name(e).is_some_and(|n| CREDENTIAL_VARS.contains(&n)))
}

/// The refusal message when a container of `pod` would use `desired`'s azureml:// tracking URI
/// with no credential from the binding, azure-workload-identity, or its own environment.
pub(crate) fn missing(
    b: &MlflowWorkspaceBinding,
    pod: &PodView<'_>,
    desired: &Desired,
    namespace: &str,
) -> Option<String> {
    let ours = desired.tracking_uri()?;
    let uri = ours.get("value").and_then(Value::as_str)?;
    let covered = !is_azureml(uri)
        || b.spec.identity.is_some()
        || pod.opt_outs.azure_workload_identity
        || sets_credential(&desired.env);
    if covered {
        return None;
    }
    let stuck: Vec<&str> = pod
        .injected_containers()
        .filter(|c| {
            let env = c.env.as_deref().unwrap_or_default();
            !self_configured(env, Some(ours)) && !sets_credential(env)
        })
        .map(|c| c.name)
        .collect();
    let first = stuck.first()?;
    let binding = b.metadata.name.as_deref().unwrap_or("");
    Some(format!(
        "mlflow-operator: binding \"{binding}\" in namespace \"{namespace}\" points pods at the Azure ML workspace {uri}, \
         but gives them no Azure identity: container \"{first}\" would wait about 15 minutes for an interactive \
         device-code login. Set spec.identity on the binding (workloadIdentity, managedIdentity or servicePrincipal), \
         label the pod azure.workload.identity/use: \"true\" for azure-workload-identity, or give the container \
         its own AZURE_* credential"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::patch::TRACKING_URI;
    use crate::inject::pod;
    use crate::inject::values::env_value;

    fn binding(identity: Option<Value>) -> MlflowWorkspaceBinding {
        let mut spec = json!({"trackingUri": AZUREML});
        if let Some(id) = identity {
            spec["identity"] = id;
        }
        serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": "ws", "namespace": "team"}, "spec": spec
        }))
        .unwrap()
    }

    fn desired(uri: &str, extra: &[(&str, &str)]) -> Desired {
        let mut d = Desired::default();
        d.push_env(env_value(TRACKING_URI, uri));
        for (k, v) in extra {
            d.push_env(env_value(k, v));
        }
        d
    }

    const AZUREML: &str = "azureml://westeurope.api.azureml.ms/mlflow/v1.0/x";

    fn container(env: Value) -> Value {
        json!({"name": "train", "image": "i", "env": env})
    }

    /// One container with no variables of its own, no labels or annotations.
    fn plain(case: &'static str, identity: Option<Value>, d: Desired, refused: bool) -> Case {
        let containers = vec![container(json!([]))];
        (case, identity, d, json!({}), containers, refused)
    }

    #[test]
    fn an_azureml_pod_without_any_credential_is_refused_and_every_way_out_is_accepted() {
        let cases: Vec<Case> = vec![
            plain("no credential anywhere", None, desired(AZUREML, &[]), true),
            plain(
                "http server",
                None,
                desired("http://mlflow:5000", &[]),
                false,
            ),
            plain(
                "binding identity",
                Some(json!({"workloadIdentity": {"clientId": "c"}})),
                desired(AZUREML, &[]),
                false,
            ),
            (
                "azure-workload-identity pod",
                None,
                desired(AZUREML, &[]),
                json!({"labels": {"azure.workload.identity/use": "true"}}),
                vec![container(json!([]))],
                false,
            ),
            plain(
                "binding env credential",
                None,
                desired(AZUREML, &[("AZURE_CLIENT_ID", "c")]),
                false,
            ),
            (
                "container's own secret",
                None,
                desired(AZUREML, &[]),
                json!({}),
                vec![container(
                    json!([{"name": "AZURE_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
                )],
                false,
            ),
            (
                "self-configured container",
                None,
                desired(AZUREML, &[]),
                json!({}),
                vec![container(
                    json!([{"name": "MLFLOW_TRACKING_URI", "value": "http://elsewhere"}]),
                )],
                false,
            ),
            (
                "skipped container",
                None,
                desired(AZUREML, &[]),
                json!({"annotations": {"mlflow-operator.io/skip-containers": "train"}}),
                vec![container(json!([]))],
                false,
            ),
            (
                "one of two containers stuck",
                None,
                desired(AZUREML, &[]),
                json!({}),
                vec![
                    container(json!([{"name": "AZURE_CLIENT_ID", "value": "c"}])),
                    json!({"name": "sidecar", "image": "i"}),
                ],
                true,
            ),
        ];
        for case in cases {
            refused_or_not(case);
        }
    }

    /// (case, binding identity, desired, pod labels/annotations, containers, refused)
    type Case = (
        &'static str,
        Option<Value>,
        Desired,
        Value,
        Vec<Value>,
        bool,
    );

    fn refused_or_not((case, identity, d, meta, containers, refused): Case) {
        let raw = json!({"metadata": meta, "spec": {"containers": containers}});
        let pod = pod::read(&raw).unwrap();
        let got = missing(&binding(identity), &pod, &d, "team");
        assert_eq!(got.is_some(), refused, "{case}: {got:?}");
        if let Some(msg) = got {
            assert!(
                msg.contains("spec.identity") && msg.contains("15 minutes"),
                "{case}: {msg}"
            );
        }
    }
}
