//! The certificate modes besides the default self-managed one: cert-manager and a given Secret.

use serde_json::{Value, json};

use super::common::helm::{CHART, helm, objects, one, template};
use super::{args_of, assert_cli_accepts, container, flag};

#[tokio::test]
async fn cert_manager_mode_uses_a_certificate_and_ca_injection() {
    let docs = template(&["webhook.certificates.mode=certManager"]).await;
    let mwc = one(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "mlflow-operator/mlflow-operator-webhook"
    );
    assert!(mwc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    let cert = one(&docs, "Certificate");
    assert_eq!(cert["metadata"]["name"], "mlflow-operator-webhook");
    assert!(
        cert["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!("mlflow-operator-webhook.mlflow-operator.svc"))
    );
    let secret = cert["spec"]["secretName"].as_str().unwrap();
    let issuer = one(&docs, "Issuer");
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        issuer["metadata"]["name"]
    );

    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "webhook-tls", "secret": {"secretName": secret}}])
    );
    let c = container(&docs);
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "webhook-tls", "mountPath": "/etc/mlflow-operator/tls", "readOnly": true}])
    );
    let args = args_of(&docs);
    assert_cli_accepts(&args);
    assert_eq!(
        flag(&args, "--tls-cert-file"),
        Some("/etc/mlflow-operator/tls/tls.crt")
    );
    assert_eq!(
        flag(&args, "--tls-key-file"),
        Some("/etc/mlflow-operator/tls/tls.key")
    );
    assert!(!args.iter().any(|a| a == "--self-signed"));
    // Without self-managed certificates the operator needs no Secret or webhook-config rights.
    assert_no_certificate_rights(&docs);

    // A given issuer replaces the chart's self-signed one.
    let docs = template(&[
        "webhook.certificates.mode=certManager",
        "webhook.certificates.certManager.issuerRef.name=corp-ca",
        "webhook.certificates.certManager.issuerRef.kind=ClusterIssuer",
    ])
    .await;
    assert!(objects(&docs, "Issuer").is_empty());
    assert_eq!(
        one(&docs, "Certificate")["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );
}

#[tokio::test]
async fn secret_mode_uses_the_given_secret_and_ca_bundle() {
    let docs = template(&[
        "webhook.certificates.mode=secret",
        "webhook.certificates.secret.name=my-tls",
        "webhook.certificates.secret.caBundle=Q0FC",
    ])
    .await;
    let cc = &one(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"];
    assert_eq!(cc["caBundle"], "Q0FC");
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "my-tls"
    );
    assert_cli_accepts(&args_of(&docs));
    assert_no_certificate_rights(&docs);
    let (ok, _, stderr) = helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "webhook.certificates.mode=secret",
    ])
    .await;
    assert!(
        !ok && stderr.contains("is required when webhook.certificates.mode is secret"),
        "{stderr}"
    );
}

fn assert_no_certificate_rights(docs: &[Value]) {
    for kind in ["ClusterRole", "Role"] {
        let rules = one(docs, kind)["rules"].to_string();
        assert!(!rules.contains("secrets"), "{kind}: {rules}");
        assert!(
            !rules.contains("mutatingwebhookconfigurations"),
            "{kind}: {rules}"
        );
    }
}

/// The self-managed mode's CA probe: a flag, a container port, a Service port and a
/// NetworkPolicy port of the same number; none in the other modes or with `probePort: 0`.
#[tokio::test]
async fn the_ca_probe_is_served_and_reachable_in_self_managed_mode_only() {
    let port_named = |ports: &Value, name: &str| {
        ports
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .cloned()
    };
    let docs = template(&["networkPolicy.enabled=true"]).await;
    let args = args_of(&docs);
    assert_eq!(flag(&args, "--ca-probe-addr"), Some("0.0.0.0:9444"));
    assert_eq!(flag(&args, "--ca-probe-timeout"), Some("30s"));
    assert_cli_accepts(&args);
    let c = container(&docs);
    assert_eq!(
        port_named(&c["ports"], "ca-probe").unwrap()["containerPort"],
        9444
    );
    let service = one(&docs, "Service");
    let port = port_named(&service["spec"]["ports"], "ca-probe").unwrap();
    assert_eq!(
        (&port["port"], &port["targetPort"]),
        (&json!(9444), &json!("ca-probe"))
    );
    let policy = one(&docs, "NetworkPolicy");
    assert!(
        policy["spec"]["ingress"][0]["ports"]
            .as_array()
            .unwrap()
            .contains(&json!({"port": "ca-probe", "protocol": "TCP"})),
        "{policy:#}"
    );
    for sets in [
        vec!["webhook.certificates.selfManaged.probePort=0"],
        vec!["webhook.certificates.mode=certManager"],
    ] {
        let docs = template(&sets).await;
        assert_eq!(flag(&args_of(&docs), "--ca-probe-addr"), None, "{sets:?}");
        let service = one(&docs, "Service");
        assert!(
            port_named(&service["spec"]["ports"], "ca-probe").is_none(),
            "{sets:?}"
        );
    }
}
