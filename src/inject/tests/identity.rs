//! The three identity modes, and pods whose identity azure-workload-identity injects.

use serde_json::json;

use super::*;

#[test]
fn workload_identity_injects_env_projected_volume_and_mount() {
    let (out, _) = apply(
        &one(),
        &wi(json!({"clientId": CLIENT, "tenantId": TENANT, "tokenExpirationSeconds": 7200})),
    );
    let e = env(&out, "containers", 0);
    assert_eq!(
        e[1..],
        [
            ("AZURE_CLIENT_ID".to_string(), json!(CLIENT)),
            ("AZURE_TENANT_ID".to_string(), json!(TENANT)),
            (
                "AZURE_AUTHORITY_HOST".to_string(),
                json!("https://login.microsoftonline.com/")
            ),
            (
                "AZURE_FEDERATED_TOKEN_FILE".to_string(),
                json!("/var/run/secrets/mlflow-operator/azure/azure-identity-token")
            ),
        ]
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "mlflow-operator-azure-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "api://AzureADTokenExchange", "expirationSeconds": 7200, "path": "azure-identity-token"}}]}}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "mlflow-operator-azure-token", "mountPath": "/var/run/secrets/mlflow-operator/azure", "readOnly": true}])
    );
    let (out, _) = apply(&one(), &wi(json!({"clientId": CLIENT, "tenantId": TENANT})));
    assert_eq!(
        out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
}

#[test]
fn workload_identity_ids_come_from_binding_then_service_account_then_default_tenant() {
    let full_sa = sa(
        json!({"azure.workload.identity/client-id": "sa-client", "azure.workload.identity/tenant-id": "sa-tenant"}),
    );
    let client_sa = sa(json!({"azure.workload.identity/client-id": "sa-client"}));
    let with_default = Defaults {
        tenant_id: Some("default-tenant".into()),
        ..Default::default()
    };
    for (b, sa, defaults, client, tenant) in [
        (
            wi(json!({"clientId": CLIENT, "tenantId": TENANT})),
            Some(&full_sa),
            &with_default,
            CLIENT,
            TENANT,
        ),
        (
            wi(json!({})),
            Some(&full_sa),
            &with_default,
            "sa-client",
            "sa-tenant",
        ),
        (
            wi(json!({})),
            Some(&client_sa),
            &with_default,
            "sa-client",
            "default-tenant",
        ),
        (
            wi(json!({"clientId": CLIENT})),
            None,
            &with_default,
            CLIENT,
            "default-tenant",
        ),
    ] {
        let (out, _) = apply_with(&one(), &[&b], sa, defaults);
        assert_eq!(
            get(&out, "containers", 0, "AZURE_CLIENT_ID").unwrap()["value"],
            client
        );
        assert_eq!(
            get(&out, "containers", 0, "AZURE_TENANT_ID").unwrap()["value"],
            tenant
        );
    }
}

#[test]
fn workload_identity_without_client_or_tenant_is_refused_saying_where_to_set_it() {
    let mut p = one();
    p["spec"]["serviceAccountName"] = json!("trainer");
    let tenant_sa = sa(json!({"azure.workload.identity/tenant-id": TENANT}));
    for (b, sa, wants) in [
        (
            wi(json!({"tenantId": TENANT})),
            None,
            vec![
                "no client id",
                "spec.identity.workloadIdentity.clientId",
                "ServiceAccount \"trainer\" (not found)",
                "azure.workload.identity/client-id",
            ],
        ),
        (
            wi(json!({})),
            Some(&tenant_sa),
            vec![
                "no client id",
                "kubectl annotate serviceaccount trainer -n team-a azure.workload.identity/client-id=<client-id>",
            ],
        ),
        (
            wi(json!({"clientId": CLIENT})),
            None,
            vec![
                "no tenant id",
                "spec.identity.workloadIdentity.tenantId",
                "azure.workload.identity/tenant-id",
                "--default-tenant-id",
            ],
        ),
    ] {
        let Refusal {
            reason,
            message,
            binding,
        } = refusal(plan_with(&p, &[&b], sa, &Defaults::default()));
        assert_eq!(reason, RefusalReason::Identity);
        assert_eq!(binding.as_deref(), Some("wi"));
        assert!(
            message.contains("MlflowWorkspaceBinding \"wi\""),
            "{message}"
        );
        for want in wants {
            assert!(message.contains(want), "{want}: {message}");
        }
    }
}

#[test]
fn token_volume_and_mount_are_added_only_when_absent() {
    let b = wi(json!({"clientId": CLIENT, "tenantId": TENANT}));
    let p = json!({"spec": {
    "volumes": [{"name": "mlflow-operator-azure-token", "emptyDir": {}}],
    "containers": [
        {"name": "by-name", "volumeMounts": [{"name": "mlflow-operator-azure-token", "mountPath": "/elsewhere"}]},
        {"name": "by-path", "volumeMounts": [{"name": "mine", "mountPath": "/var/run/secrets/mlflow-operator/azure"}]},
        {"name": "fresh", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    ]}});
    let (out, warnings) = apply(&p, &b);
    assert_eq!(out["spec"]["volumes"], p["spec"]["volumes"]);
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        p["spec"]["containers"][0]["volumeMounts"]
    );
    assert_eq!(
        out["spec"]["containers"][1]["volumeMounts"],
        p["spec"]["containers"][1]["volumeMounts"]
    );
    assert_eq!(
        out["spec"]["containers"][2]["volumeMounts"][1]["name"],
        "mlflow-operator-azure-token"
    );
    assert_eq!(warnings.len(), 3, "{warnings:?}");
}

#[test]
fn managed_identity_injects_only_azure_client_id_when_given() {
    let (out, _) = apply(
        &one(),
        &mwb(
            "mi",
            json!({"trackingUri": URI, "identity": {"managedIdentity": {"clientId": CLIENT}}}),
        ),
    );
    assert_eq!(
        names(&out, "containers", 0),
        ["MLFLOW_TRACKING_URI", "AZURE_CLIENT_ID"]
    );
    assert!(mounts_nothing(&out));
    let (out, _) = apply(
        &one(),
        &mwb(
            "mi",
            json!({"trackingUri": URI, "identity": {"managedIdentity": {}}}),
        ),
    );
    assert_eq!(names(&out, "containers", 0), ["MLFLOW_TRACKING_URI"]);
}

#[test]
fn service_principal_with_client_secret() {
    let b = mwb(
        "sp",
        json!({"trackingUri": URI, "identity": {"servicePrincipal": {
        "clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "sp-creds", "key": "clientSecret"}}}}),
    );
    let (out, _) = apply(&one(), &b);
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_TRACKING_URI",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_AUTHORITY_HOST",
            "AZURE_CLIENT_SECRET"
        ]
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_SECRET").unwrap(),
        &json!({"name": "AZURE_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "sp-creds", "key": "clientSecret"}}})
    );
    assert!(out["spec"].get("volumes").is_none());
}

#[test]
fn service_principal_with_certificate_mounts_the_secret() {
    let b = mwb(
        "sp",
        json!({"trackingUri": URI, "identity": {"servicePrincipal": {
        "clientId": CLIENT, "tenantId": TENANT, "certificateSecretRef": {"name": "sp-cert", "key": "tls.pem", "passwordKey": "password"}}}}),
    );
    let (out, _) = apply(&one(), &b);
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_CERTIFICATE_PATH").unwrap()["value"],
        "/var/run/secrets/mlflow-operator/azure-sp/tls.pem"
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_CERTIFICATE_PASSWORD").unwrap()["valueFrom"],
        json!({"secretKeyRef": {"name": "sp-cert", "key": "password"}})
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "mlflow-operator-azure-sp-cert", "secret": {"secretName": "sp-cert", "items": [{"key": "tls.pem", "path": "tls.pem"}]}}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "mlflow-operator-azure-sp-cert", "mountPath": "/var/run/secrets/mlflow-operator/azure-sp", "readOnly": true}])
    );
    let no_pw = mwb(
        "sp",
        json!({"trackingUri": URI, "identity": {"servicePrincipal": {
        "clientId": CLIENT, "tenantId": TENANT, "certificateSecretRef": {"name": "sp-cert", "key": "tls.pem"}}}}),
    );
    let (out, _) = apply(&one(), &no_pw);
    assert!(get(&out, "containers", 0, "AZURE_CLIENT_CERTIFICATE_PASSWORD").is_none());
}

#[test]
fn azure_workload_identity_labelled_pod_gets_mlflow_only_and_annotation_says_so() {
    let mut p = one();
    p["metadata"]["labels"]["azure.workload.identity/use"] = json!("true");
    let b = mwb(
        "wi",
        json!({"azureML": {"subscriptionId": CLIENT, "resourceGroup": "rg", "workspaceName": "ws"},
                             "identity": {"workloadIdentity": {}}}),
    );
    let (out, _) = apply(&p, &b);
    assert_eq!(
        names(&out, "containers", 0),
        ["MLFLOW_TRACKING_URI", "AZUREML_CURRENT_CLOUD"]
    );
    assert!(mounts_nothing(&out));
    assert_eq!(
        out["metadata"]["annotations"]["mlflow-operator.io/injected"],
        "wi/3 (identity: azure-workload-identity)"
    );
}
