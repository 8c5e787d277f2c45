//! The Helm chart (`charts/mlflow-operator`), checked with the real `helm` binary and, for the
//! install test, the real API server: the chart renders what SPEC §6 promises, its schema refuses
//! bad values, and the operator binary runs with nothing but the chart's ServiceAccount token.
//!
//! `helm` must be on PATH (`tests/cluster/up` builds it; its env file puts it on PATH). There is no
//! skipping: a missing `helm` fails every test here.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::{Value, json};

use common::webhook::{ensure_crd, env_value};
use common::{eventually, random_suffix, with_temp_ns};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/mlflow-operator");
const TRACK: &str = "mlflow-operator.io/track";

// ---------------------------------------------------------------------------------------------
// helm and YAML helpers

/// Runs the real `helm`, returning (success, stdout, stderr). Panics when helm is not on PATH.
async fn helm(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("helm")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `helm` ({e}): put a helm v3 binary on PATH (tests/cluster/up builds \
                 one; `source $MLFLOW_OPERATOR_CLUSTER_DIR/env` puts it on PATH)"
            )
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn helm_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = helm(args).await;
    assert!(ok, "helm {args:?} failed:\n{stderr}\n{stdout}");
    stdout
}

/// Every document of a multi-document YAML stream, as JSON values (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("helm output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart with `--set` pairs, as documents.
async fn template(sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "mlflow-operator",
        CHART,
        "--namespace",
        "mlflow-operator",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    documents(&helm_ok(&args).await)
}

fn objects<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = objects(docs, kind);
    assert_eq!(
        found.len(),
        1,
        "exactly one {kind} expected, got {found:#?}"
    );
    found[0]
}

fn container(docs: &[Value]) -> &Value {
    let containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn args_of(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The value of `--flag=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// The chart's args must be accepted by the real command line of `mlflow-operator run`.
fn assert_cli_accepts(args: &[String]) {
    use clap::Parser;
    let argv = std::iter::once("mlflow-operator".to_string()).chain(args.iter().cloned());
    if let Err(e) = mlflow_operator::cli::Cli::try_parse_from(argv) {
        panic!("the chart's args {args:?} are not valid for mlflow-operator: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

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
    assert_eq!(flag(&args, "--refresh-interval"), Some("5m"));
}

#[tokio::test]
async fn values_reach_the_operator() {
    let docs = template(&[
        "webhook.onMissingBinding=allow",
        "azure.tenantId=11111111-2222-3333-4444-555555555555",
        "azure.armEndpoint=https://arm.example",
        "azure.authorityHost=https://login.example/",
        "azure.workloadIdentity.enabled=true",
        "serviceAccount.annotations.azure\\.workload\\.identity/client-id=abc",
        "controller.refreshInterval=2m",
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

#[tokio::test]
async fn rbac_grants_exactly_the_documented_rules() {
    let docs = template(&[]).await;
    let rule = |groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]| {
        let mut r = json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
        if !names.is_empty() {
            r["resourceNames"] = json!(names);
        }
        r
    };
    assert_eq!(
        one(&docs, "ClusterRole")["rules"],
        json!([
            rule(
                &["mlflow-operator.io"],
                &["mlflowworkspacebindings"],
                &[],
                &["get", "list", "watch"]
            ),
            rule(
                &["mlflow-operator.io"],
                &["mlflowworkspacebindings/status"],
                &[],
                &["patch"]
            ),
            rule(&[""], &["serviceaccounts"], &[], &["get", "list", "watch"]),
            rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
            rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations"],
                &["mlflow-operator"],
                &["get", "patch"]
            ),
        ])
    );
    assert_eq!(
        one(&docs, "Role")["rules"],
        json!([
            rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["mlflow-operator-controller"],
                &["get", "patch"]
            ),
            rule(&[""], &["secrets"], &[], &["create"]),
            rule(
                &[""],
                &["secrets"],
                &["mlflow-operator-webhook-cert"],
                &["get", "update"]
            ),
        ])
    );
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        assert_eq!(
            one(&docs, binding)["subjects"],
            json!([{"kind": "ServiceAccount", "name": "mlflow-operator", "namespace": "mlflow-operator"}])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Installing on the live API server

/// A Helm release in its own namespace; uninstalled (and the namespace deleted) on drop, also
/// when the test panics.
struct Release {
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::process::Command::new("helm")
            .args([
                "uninstall",
                &self.name,
                "-n",
                &self.namespace,
                "--wait=false",
            ])
            .output();
        let _ = std::process::Command::new("kubectl")
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .output();
    }
}

/// The operator binary running as a child process; killed on drop. Its log is printed when the
/// test fails.
struct Operator {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- mlflow-operator log ----\n{log}\n---- end of log ----");
        }
    }
}

/// Two distinct free local ports (both held while choosing, so they differ).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// `kubectl auth can-i` as the ServiceAccount: true for "yes".
async fn can_i(sa: &str, args: &[&str]) -> bool {
    let out = tokio::process::Command::new("kubectl")
        .args(["auth", "can-i", &format!("--as={sa}")])
        .args(args)
        .output()
        .await
        .expect("kubectl on PATH");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

/// A kubeconfig that authenticates with `token` to the admin kubeconfig's cluster.
fn token_kubeconfig(token: &str) -> String {
    let admin = kube::config::Kubeconfig::read().expect("the admin kubeconfig ($KUBECONFIG)");
    let context = admin
        .contexts
        .iter()
        .find(|c| Some(&c.name) == admin.current_context.as_ref())
        .and_then(|c| c.context.clone())
        .expect("a current context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .expect("the current context's cluster");
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": "operator"}}],
        "current-context": "operator"
    });
    serde_yaml_ng::to_string(&kc).unwrap()
}

/// Replaces the value of `--name=...` in `args` (the CLI refuses a flag given twice).
fn set_flag(args: &mut [String], name: &str, value: &str) {
    let prefix = format!("{name}=");
    let arg = args
        .iter_mut()
        .find(|a| a.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the chart passes no {name}"));
    *arg = format!("{prefix}{value}");
}

#[tokio::test]
async fn installed_chart_runs_the_operator_with_least_privilege() {
    with_temp_ns("helm", |client, test_ns| async move {
        // Other tests apply the same CRD; make sure it is there so helm skips its copy cleanly.
        ensure_crd(&client).await;
        let suffix = random_suffix();
        let release_ns = format!("helm-release-{suffix}");
        let fullname = format!("mlflow-operator-{suffix}");
        let (webhook_port, metrics_port) = free_ports();
        let dir = tempfile::tempdir().unwrap();

        // Scoped to the test namespace; the URL reaches the operator run below on this host.
        let values = json!({
            "fullnameOverride": fullname,
            "webhook": {
                "url": format!("https://127.0.0.1:{webhook_port}/mutate"),
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": test_ns}},
                "certificates": {"selfManaged": {"dnsNames": ["127.0.0.1"]}}
            }
        });
        let values_file = dir.path().join("values.yaml");
        std::fs::write(&values_file, serde_yaml_ng::to_string(&values).unwrap()).unwrap();

        let _release = Release {
            name: "mlflow-operator".into(),
            namespace: release_ns.clone(),
        };
        helm_ok(&[
            "install",
            "mlflow-operator",
            CHART,
            "-n",
            &release_ns,
            "--create-namespace",
            "-f",
            values_file.to_str().unwrap(),
        ])
        .await;

        // The chart's objects are there; the MWC has no caBundle yet.
        let deploy: Deployment = Api::namespaced(client.clone(), &release_ns)
            .get(&fullname)
            .await
            .expect("the Deployment");
        assert_eq!(deploy.spec.replicas, Some(2));
        let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let mwc = mwcs
            .get(&fullname)
            .await
            .expect("the MutatingWebhookConfiguration");
        assert!(
            mwc.webhooks.as_ref().unwrap()[0]
                .client_config
                .ca_bundle
                .is_none()
        );

        // The pod template passes Pod Security "restricted", as judged by the API server.
        assert_pss_restricted(&client, &release_ns, &deploy).await;

        // A token for the chart's ServiceAccount, and a kubeconfig that uses only that token.
        let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), &release_ns);
        let token = sa_api
            .create_token_request(
                &fullname,
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        expiration_seconds: Some(3600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("TokenRequest")
            .status
            .and_then(|s| s.token)
            .expect("a token");
        let kubeconfig = dir.path().join("operator.kubeconfig");
        std::fs::write(&kubeconfig, token_kubeconfig(&token)).unwrap();

        // Run the real binary with the Deployment's args and downward-API env, on local ports.
        let container = &deploy.spec.template.spec.clone().unwrap().containers[0];
        let mut args = container.args.clone().unwrap();
        set_flag(
            &mut args,
            "--webhook-addr",
            &format!("127.0.0.1:{webhook_port}"),
        );
        set_flag(
            &mut args,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        );
        args.push(format!("--kubeconfig={}", kubeconfig.display()));
        let log = dir.path().join("operator.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mlflow-operator"));
        cmd.args(&args)
            .env_clear()
            .env("POD_NAMESPACE", &release_ns)
            .env("POD_NAME", format!("{fullname}-0"))
            .env("RUST_LOG", "info,kube_runtime=warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let _operator = Operator {
            child: cmd.spawn().expect("start mlflow-operator"),
            log,
        };

        // Ready: certificate generated and stored (Secret RBAC), caches synced (list/watch RBAC).
        let http = reqwest::Client::new();
        let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
        eventually("/readyz to answer 200", Duration::from_secs(60), || async {
            let r = http.get(&readyz).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;

        // caBundle filled with the CA of the Secret (MWC get/patch on its own name).
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &release_ns);
        let cert_secret = flag(&args, "--cert-secret").unwrap().to_string();
        let ca = secrets
            .get(&cert_secret)
            .await
            .expect("the certificate Secret")
            .data
            .unwrap()["ca.crt"]
            .0
            .clone();
        eventually(
            "the caBundle to be set",
            Duration::from_secs(30),
            || async {
                let mwc = mwcs.get(&fullname).await.ok()?;
                let bundle = mwc.webhooks?[0].client_config.ca_bundle.clone()?;
                (bundle.0 == ca).then_some(())
            },
        )
        .await;

        // Controller: a trackingUri binding becomes Ready (Lease, watch, status patch) and an
        // Event is recorded for it (events RBAC).
        let bindings: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &test_ns);
        let binding: MlflowWorkspaceBinding = serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1",
            "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": "team"},
            "spec": {"trackingUri": "https://mlflow.example.com", "experimentName": "helm"}
        }))
        .unwrap();
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .expect("create binding");
        eventually(
            "the binding to become Ready",
            Duration::from_secs(60),
            || async { bindings.get("team").await.ok()?.is_ready().then_some(()) },
        )
        .await;
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(client.clone(), &test_ns);
        eventually(
            "an Event on the binding",
            Duration::from_secs(30),
            || async {
                events
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("team"))
                    .then_some(())
            },
        )
        .await;

        // Webhook: a labelled pod is injected through the API server.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &test_ns);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "train", "labels": {TRACK: "true"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}
        }))
        .unwrap();
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let last = std::sync::Mutex::new(String::new());
        let injected = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match pods.create(&dry, &pod).await {
                    Ok(p) if env_value(&p, "main", "MLFLOW_TRACKING_URI").is_some() => break,
                    Ok(_) => *last.lock().unwrap() = "a pod without MLFLOW_TRACKING_URI".into(),
                    Err(e) => *last.lock().unwrap() = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(
            injected.is_ok(),
            "the webhook did not inject a dry-run pod within 60s; last: {}",
            last.lock().unwrap()
        );
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        assert_eq!(
            env_value(&created, "main", "MLFLOW_TRACKING_URI").as_deref(),
            Some("https://mlflow.example.com")
        );
        assert_eq!(
            env_value(&created, "main", "MLFLOW_EXPERIMENT_NAME").as_deref(),
            Some("helm")
        );
        let injected = created
            .metadata
            .annotations
            .unwrap_or_default()
            .get("mlflow-operator.io/injected")
            .cloned();
        assert!(
            injected.as_deref().is_some_and(|a| a.starts_with("team/")),
            "{injected:?}"
        );

        // Least privilege, as the API server's authorizer sees the ServiceAccount.
        let sa = format!("system:serviceaccount:{release_ns}:{fullname}");
        let other_mwc = format!("mutatingwebhookconfigurations/{fullname}-other");
        let own_mwc = format!("mutatingwebhookconfigurations/{fullname}");
        let own_secret = format!("secrets/{cert_secret}");
        let lease = format!(
            "leases.coordination.k8s.io/{}",
            flag(&args, "--lease-name").unwrap()
        );
        let denied: Vec<Vec<&str>> = vec![
            vec!["delete", "pods", "-n", &test_ns],
            vec!["create", "pods", "-n", &test_ns],
            vec!["patch", "pods", "-n", &test_ns],
            vec!["get", "secrets", "-n", &test_ns],
            vec!["list", "secrets", "-n", &release_ns],
            vec!["get", "secrets/other", "-n", &release_ns],
            vec!["delete", &own_secret, "-n", &release_ns],
            vec!["patch", &other_mwc],
            vec!["list", "mutatingwebhookconfigurations"],
            vec!["delete", &own_mwc],
            vec![
                "create",
                "mlflowworkspacebindings.mlflow-operator.io",
                "-n",
                &test_ns,
            ],
            vec![
                "update",
                "mlflowworkspacebindings.mlflow-operator.io",
                "-n",
                &test_ns,
            ],
            vec![
                "delete",
                "mlflowworkspacebindings.mlflow-operator.io",
                "-n",
                &test_ns,
            ],
            vec!["patch", "serviceaccounts", "-n", &test_ns],
            vec!["create", "serviceaccounts/token", "-n", &test_ns],
            vec!["create", "leases.coordination.k8s.io", "-n", &test_ns],
            vec!["delete", &lease, "-n", &release_ns],
            vec![
                "patch",
                "leases.coordination.k8s.io/other",
                "-n",
                &release_ns,
            ],
            vec!["delete", "events.events.k8s.io", "-n", &test_ns],
            vec!["create", "clusterrolebindings"],
            vec!["escalate", "clusterroles"],
            vec!["impersonate", "serviceaccounts"],
        ];
        for check in &denied {
            assert!(
                !can_i(&sa, check).await,
                "the operator must not be able to {check:?}"
            );
        }
        let allowed: Vec<Vec<&str>> = vec![
            vec!["patch", &own_mwc],
            vec!["get", &own_secret, "-n", &release_ns],
            vec!["update", &own_secret, "-n", &release_ns],
            vec!["patch", &lease, "-n", &release_ns],
            vec![
                "patch",
                "mlflowworkspacebindings.mlflow-operator.io",
                "--subresource=status",
                "-n",
                &test_ns,
            ],
            vec!["watch", "serviceaccounts", "--all-namespaces"],
        ];
        for check in &allowed {
            assert!(
                can_i(&sa, check).await,
                "the operator must be able to {check:?}"
            );
        }

        // Uninstalling removes the cluster-scoped objects too.
        drop(_operator);
        helm_ok(&["uninstall", "mlflow-operator", "-n", &release_ns, "--wait"]).await;
        assert!(mwcs.get_opt(&fullname).await.unwrap().is_none());
        let crs: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
        assert!(crs.get_opt(&fullname).await.unwrap().is_none());
    })
    .await;
}

/// Server-side dry-run of a Pod with the Deployment's template in a namespace that enforces
/// Pod Security "restricted": the API server's PodSecurity admission decides.
async fn assert_pss_restricted(client: &Client, namespace: &str, deploy: &Deployment) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels: BTreeMap<&str, &str> = [
        ("pod-security.kubernetes.io/enforce", "restricted"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
    ]
    .into();
    namespaces
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("label the release namespace restricted");
    let template = deploy.spec.template.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("pss-".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    if let Err(e) = pods.create(&dry, &pod).await {
        panic!("the chart's pod is not Pod Security restricted: {e}");
    }
    // And the check is real: a privileged pod is refused in that namespace.
    let mut bad = pod.clone();
    bad.spec.as_mut().unwrap().containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .allow_privilege_escalation = Some(true);
    assert!(
        pods.create(&dry, &bad).await.is_err(),
        "PodSecurity admission did not refuse allowPrivilegeEscalation: true"
    );
}
