//! What the chart renders: the CRD, the webhook configuration, the Deployment, how values reach
//! the operator, and the schema's refusals.

use std::path::Path;

use serde_json::{Value, json};

use super::common::helm::{CHART, helm, helm_ok, one, template};
use super::{TRACK, args_of, assert_cli_accepts, container, flag};

#[test]
fn chart_crd_equals_generated_crd() {
    let path = Path::new(CHART).join("crds/mlflowworkspacebindings.yaml");
    let in_chart = std::fs::read_to_string(&path).expect("the chart's CRD");
    assert!(
        in_chart == mlflow_operator::crd_yaml(),
        "{} is stale: run `cargo run -- crd > {}`",
        path.display(),
        "charts/mlflow-operator/crds/mlflowworkspacebindings.yaml"
    );
}

#[test]
fn chart_versions() {
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "mlflow-operator");
    assert_eq!(chart["version"], "0.1.0");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    for key in ["home", "sources", "maintainers"] {
        assert!(!chart[key].is_null(), "Chart.yaml has no {key}");
    }
    let annotations = &chart["annotations"];
    assert_eq!(
        annotations["artifacthub.io/license"],
        env!("CARGO_PKG_LICENSE")
    );
    // Artifact Hub reads these annotations as YAML documents of their own.
    for key in [
        "artifacthub.io/changes",
        "artifacthub.io/links",
        "artifacthub.io/crds",
    ] {
        let text = annotations[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key}"));
        let list: Vec<Value> = serde_yaml_ng::from_str(text).unwrap();
        assert!(!list.is_empty(), "{key} is empty");
    }
}

#[tokio::test]
async fn helm_lint_passes() {
    let out = helm_ok(&["lint", "--strict", CHART]).await;
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[tokio::test]
async fn webhook_configuration_has_exactly_the_spec_settings() {
    let docs = template(&[]).await;
    let mwc = one(&docs, "MutatingWebhookConfiguration");
    assert_eq!(mwc["metadata"]["name"], "mlflow-operator");
    let webhooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    let w = &webhooks[0];
    let expected = json!({
        "name": "pods.mlflow-operator.io",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {
            "name": "mlflow-operator-webhook",
            "namespace": "mlflow-operator",
            "path": "/mutate",
            "port": 443
        }},
        "rules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["pods"], "scope": "Namespaced"
        }],
        "objectSelector": {"matchLabels": {TRACK: "true"}},
        "namespaceSelector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", "mlflow-operator"]
        }]},
        "sideEffects": "None",
        "reinvocationPolicy": "IfNeeded",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": 5,
        "failurePolicy": "Fail"
    });
    // Exactly: no caBundle (the operator sets it), no url, nothing else.
    assert_eq!(w, &expected);

    // The Service the configuration names sends 443 to the container's webhook port.
    let svc = one(&docs, "Service");
    assert_eq!(svc["metadata"]["name"], "mlflow-operator-webhook");
    let ports = svc["spec"]["ports"].as_array().unwrap();
    assert!(
        ports.contains(
            &json!({"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"})
        ),
        "{ports:?}"
    );
    assert!(ports.iter().any(|p| p["name"] == "metrics"), "{ports:?}");
    let cports = container(&docs)["ports"].as_array().unwrap();
    assert!(cports.contains(&json!({"name": "webhook", "containerPort": 9443, "protocol": "TCP"})));

    // Configurable: policy, timeout, extra exclusions and an extra selector.
    let docs = template(&[
        "webhook.failurePolicy=Ignore",
        "webhook.timeoutSeconds=12",
        "webhook.excludeNamespaces={infra}",
        "webhook.namespaceSelector.matchLabels.team=a",
    ])
    .await;
    let w = &one(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["timeoutSeconds"], 12);
    assert_eq!(
        w["namespaceSelector"],
        json!({
            "matchLabels": {"team": "a"},
            "matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "mlflow-operator", "infra"]
            }]
        })
    );
}

#[tokio::test]
async fn deployment_is_pss_restricted_and_highly_available() {
    let docs = template(&[]).await;
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_i64().unwrap() > 0);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
    assert!(
        pod.get("volumes").is_none(),
        "selfManaged mode mounts nothing"
    );

    let c = container(&docs);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc.get("privileged").is_none());

    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    let env = c["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        assert!(
            env.contains(&json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}})),
            "{name} from the downward API: {env:?}"
        );
    }

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"],
        one(&docs, "Service")["spec"]["selector"]
    );

    // The args are valid `mlflow-operator run` arguments and name the chart's own objects.
    let args = args_of(&docs);
    assert_cli_accepts(&args);
    assert_eq!(args[0], "run");
    assert!(args.iter().any(|a| a == "--self-signed"), "{args:?}");
    assert_eq!(flag(&args, "--webhook-config"), Some("mlflow-operator"));
    assert_eq!(
        flag(&args, "--service-name"),
        Some("mlflow-operator-webhook")
    );
    assert_eq!(
        flag(&args, "--cert-secret"),
        Some("mlflow-operator-webhook-cert")
    );
    assert_eq!(
        flag(&args, "--lease-name"),
        Some("mlflow-operator-controller")
    );
    assert_eq!(flag(&args, "--webhook-addr"), Some("0.0.0.0:9443"));
    assert_eq!(flag(&args, "--on-missing-binding"), Some("refuse"));
    assert_eq!(flag(&args, "--log-format"), Some("text"));
    assert_eq!(flag(&args, "--refresh-interval"), Some("5m"));
    assert_eq!(flag(&args, "--error-retry"), Some("30s"));
    assert_eq!(flag(&args, "--cert-check-interval"), Some("5m"));
}

#[tokio::test]
async fn values_reach_the_operator() {
    let docs = template(&[
        "webhook.onMissingBinding=allow",
        "logFormat=json",
        "azure.tenantId=11111111-2222-3333-4444-555555555555",
        "azure.armEndpoint=https://arm.example",
        "azure.authorityHost=https://login.example/",
        "azure.workloadIdentity.enabled=true",
        "serviceAccount.annotations.azure\\.workload\\.identity/client-id=abc",
        "controller.refreshInterval=2m",
        "controller.errorRetry=5s",
        "webhook.certificates.selfManaged.checkInterval=2s",
        "controller.watchNamespace=team-a",
        "image.repository=example/mlflow-operator",
        "image.tag=1.2.3",
        "priorityClassName=system-cluster-critical",
        "extraArgs={--azure-ca-file=/etc/azure-ca/ca.pem}",
        "extraEnv[0].name=FOO",
        "extraEnv[0].value=bar",
        "webhook.certificates.selfManaged.dnsNames={a.example,127.0.0.1}",
    ])
    .await;
    let args = args_of(&docs);
    assert_eq!(flag(&args, "--on-missing-binding"), Some("allow"));
    assert_eq!(flag(&args, "--log-format"), Some("json"));
    assert_eq!(
        flag(&args, "--default-tenant-id"),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(flag(&args, "--arm-endpoint"), Some("https://arm.example"));
    assert_eq!(
        flag(&args, "--authority-host"),
        Some("https://login.example/")
    );
    assert_eq!(flag(&args, "--refresh-interval"), Some("2m"));
    assert_eq!(flag(&args, "--error-retry"), Some("5s"));
    assert_eq!(flag(&args, "--cert-check-interval"), Some("2s"));
    assert_eq!(flag(&args, "--watch-namespace"), Some("team-a"));
    assert_eq!(flag(&args, "--cert-dns-names"), Some("a.example,127.0.0.1"));
    assert_eq!(args.last().unwrap(), "--azure-ca-file=/etc/azure-ca/ca.pem");
    assert_cli_accepts(&args);
    let c = container(&docs);
    assert_eq!(c["image"], "example/mlflow-operator:1.2.3");
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "FOO", "value": "bar"}))
    );
    let deploy = one(&docs, "Deployment");
    let tpl = &deploy["spec"]["template"];
    assert_eq!(
        tpl["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(tpl["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "abc"
    );
}

#[tokio::test]
async fn schema_rejects_bad_values() {
    for (set, want) in [
        ("webhook.failurePolicy=Sometimes", "/webhook/failurePolicy"),
        ("webhook.timeoutSeconds=60", "/webhook/timeoutSeconds"),
        ("webhook.timeoutSeconds=0", "/webhook/timeoutSeconds"),
        (
            "webhook.onMissingBinding=maybe",
            "/webhook/onMissingBinding",
        ),
        (
            "webhook.certificates.mode=vault",
            "/webhook/certificates/mode",
        ),
        ("azure.tenantId=not-a-guid", "/azure/tenantId"),
        ("logFormat=logfmt", "/logFormat"),
        (
            "controller.refreshInterval=soon",
            "/controller/refreshInterval",
        ),
        ("unknownKey=1", "'unknownKey' not allowed"),
        ("webhook.unknown=1", "'unknown' not allowed"),
    ] {
        let (ok, stdout, stderr) = helm(&["template", "x", CHART, "--set", set]).await;
        assert!(!ok, "helm accepted {set}:\n{stdout}");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{set}: not a schema error:\n{stderr}"
        );
        assert!(
            stderr.contains(want),
            "{set}: error does not name {want}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn url_replaces_the_service_reference() {
    let docs = template(&["webhook.url=https://127.0.0.1:9443/mutate"]).await;
    let cc = &one(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"];
    assert_eq!(cc, &json!({"url": "https://127.0.0.1:9443/mutate"}));
}
