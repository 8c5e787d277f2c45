//! `mlflow-operator inject`, run as the real binary on multi-document YAML.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

// The manifests are files so they read as what a user would pipe in.
const BINDING: &str = include_str!("fixtures/inject/binding.yaml");
const WI_BINDING: &str = include_str!("fixtures/inject/wi-binding.yaml");
const CONFIG_MAP: &str = include_str!("fixtures/inject/config-map.yaml");
const LABELLED: &str = include_str!("fixtures/inject/labelled.yaml");
const UNLABELLED: &str = include_str!("fixtures/inject/unlabelled.yaml");
const CRONJOB: &str = include_str!("fixtures/inject/cronjob.yaml");
const JOB_WITH_SIDECAR: &str = include_str!("fixtures/inject/job-with-sidecar.yaml");
const STATEFULSET: &str = include_str!("fixtures/inject/statefulset.yaml");
const RUN_TAGS_BINDING: &str = include_str!("fixtures/inject/run-tags-binding.yaml");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn inject(binding: &str, input: &str, extra: &[&str]) -> Run {
    inject_with_env(binding, input, extra, &[])
}

/// [`inject`] with these environment variables, and no tenant from the caller's environment.
fn inject_with_env(binding: &str, input: &str, extra: &[&str], vars: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let b = write(dir.path(), "binding.yaml", binding);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlflow-operator"))
        .arg("inject")
        .arg("--binding")
        .arg(&b)
        .args(extra)
        .env_remove("MLFLOW_OPERATOR_DEFAULT_TENANT_ID")
        .env_remove("AZURE_TENANT_ID")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn docs(text: &str) -> Vec<Value> {
    text.split("---\n")
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect()
}

fn env_names(container: &Value) -> Vec<&str> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

fn multi() -> String {
    [
        CONFIG_MAP,
        LABELLED,
        UNLABELLED,
        CRONJOB,
        JOB_WITH_SIDECAR,
        STATEFULSET,
    ]
    .join("---\n")
}

#[test]
fn multi_document_file_is_injected_in_order_and_others_kept_verbatim() {
    let run = inject(BINDING, &multi(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let texts: Vec<&str> = run.stdout.split("---\n").collect();
    assert_eq!(texts.len(), 6, "{}", run.stdout);
    assert_eq!(texts[0], CONFIG_MAP, "ConfigMap verbatim, comments kept");
    assert_eq!(texts[2], UNLABELLED, "unlabelled Deployment verbatim");

    let d = docs(&run.stdout);
    let deploy = &d[1]["spec"]["template"];
    assert_eq!(
        env_names(&deploy["spec"]["containers"][0]),
        ["KEEP", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"]
    );
    assert_eq!(
        deploy["metadata"]["annotations"]["mlflow-operator.io/injected"],
        "fraud/2"
    );
    // The input's key order is kept at every level, what was added comes after.
    let ordered: serde_yaml_ng::Value = serde_yaml_ng::from_str(texts[1]).unwrap();
    let keys = |v: &serde_yaml_ng::Value| -> Vec<String> {
        let keys = v.as_mapping().unwrap().keys();
        keys.map(|k| k.as_str().unwrap().to_string()).collect()
    };
    assert_eq!(keys(&ordered), ["apiVersion", "kind", "metadata", "spec"]);
    assert_eq!(keys(&ordered["spec"]), ["selector", "template"]);
    let template = &ordered["spec"]["template"];
    assert_eq!(keys(&template["metadata"]), ["labels", "annotations"]);
    let container = &template["spec"]["containers"][0];
    assert_eq!(keys(container), ["name", "image", "env"]);
    assert_eq!(keys(&container["env"][0]), ["name", "value"]);

    let cron = &d[3]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(
        cron["spec"]["containers"][0]["env"][0]["value"],
        "https://mlflow.example.com"
    );

    let job = &d[4]["spec"]["template"]["spec"];
    assert_eq!(job["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(
        env_names(&job["initContainers"][0]),
        ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"]
    );

    let sts = &d[5]["spec"]["template"]["spec"];
    assert_eq!(sts["futurePodField"]["keep"], true);
    assert_eq!(
        env_names(&sts["containers"][0]),
        ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"]
    );
}

#[test]
fn running_inject_on_its_own_output_changes_nothing() {
    let once = inject(BINDING, &multi(), &[]);
    assert_eq!(once.code, 0, "{}", once.stderr);
    let twice = inject(BINDING, &once.stdout, &[]);
    assert_eq!(twice.code, 0, "{}", twice.stderr);
    assert_eq!(twice.stdout, once.stdout);
    assert_eq!(twice.stderr, "");
}

#[test]
fn input_file_and_service_account_flags() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "in.yaml", LABELLED);
    let sa = write(
        dir.path(),
        "sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  annotations: {azure.workload.identity/client-id: 11111111-1111-1111-1111-111111111111}\n",
    );
    let run = inject(
        WI_BINDING,
        "",
        &[
            "-f",
            input.to_str().unwrap(),
            "--service-account",
            sa.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = docs(&run.stdout);
    let spec = &d[0]["spec"]["template"]["spec"];
    let client = spec["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "AZURE_CLIENT_ID")
        .unwrap();
    assert_eq!(client["value"], "11111111-1111-1111-1111-111111111111");
    assert_eq!(spec["volumes"][0]["name"], "mlflow-operator-azure-token");
}

/// `run` takes the default tenant from AZURE_TENANT_ID when --default-tenant-id is not given;
/// the preview must too, or it refuses a pod the webhook injects.
#[test]
fn default_tenant_comes_from_azure_tenant_id_as_in_run() {
    const NO_TENANT: &str = include_str!("fixtures/inject/no-tenant-binding.yaml");
    let tenant = "33333333-3333-3333-3333-333333333333";
    let run = inject_with_env(NO_TENANT, LABELLED, &[], &[("AZURE_TENANT_ID", tenant)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = docs(&run.stdout);
    let env = d[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let got = env.iter().find(|e| e["name"] == "AZURE_TENANT_ID").unwrap();
    assert_eq!(got["value"], tenant);

    let flag = "44444444-4444-4444-4444-444444444444";
    let run = inject_with_env(
        NO_TENANT,
        LABELLED,
        &["--default-tenant-id", flag],
        &[("AZURE_TENANT_ID", tenant)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(flag) && !run.stdout.contains(tenant),
        "{}",
        run.stdout
    );

    let run = inject(NO_TENANT, LABELLED, &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no tenant id"), "{}", run.stderr);
}

#[test]
fn refusal_exits_1_with_the_message_and_prints_nothing() {
    let run = inject(WI_BINDING, &multi(), &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("document 2 (Deployment/train)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no client id"), "{}", run.stderr);
    assert!(
        run.stderr.contains("azure.workload.identity/client-id"),
        "{}",
        run.stderr
    );
}

#[test]
fn malformed_yaml_exits_1() {
    let run = inject(BINDING, &format!("{CONFIG_MAP}---\nkind: [unclosed\n"), &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("document 2"), "{}", run.stderr);
}

#[test]
fn invalid_pod_and_bad_binding_exit_1_without_panicking() {
    let bad_pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {mlflow-operator.io/track: 'true'}}\nspec: {containers: 5}\n";
    let run = inject(BINDING, bad_pod, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("Pod/p") && run.stderr.contains("spec.containers"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));

    let azure = "apiVersion: mlflow-operator.io/v1alpha1\nkind: MlflowWorkspaceBinding\nmetadata: {name: ws}\nspec: {azureML: {subscriptionId: s, resourceGroup: r, workspaceName: w}}\n";
    let run = inject(azure, LABELLED, &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("kubectl get mwb ws -o yaml"),
        "{}",
        run.stderr
    );
}

#[test]
fn other_namespace_is_an_error() {
    let run = inject(
        BINDING,
        &LABELLED.replace("namespace: team-a", "namespace: team-b"),
        &[],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("bindings never reach across namespaces"),
        "{}",
        run.stderr
    );
}

#[test]
fn warnings_go_to_stderr_with_the_document_name() {
    let input = LABELLED.replace(
        "{name: KEEP, value: me}",
        "{name: MLFLOW_EXPERIMENT_NAME, value: mine}",
    );
    let run = inject(BINDING, &input, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("Deployment/train"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("already sets MLFLOW_EXPERIMENT_NAME; left unchanged"),
        "{}",
        run.stderr
    );
}

#[test]
fn list_items_are_injected() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p, labels: {mlflow-operator.io/track: 'true'}}\n  spec: {containers: [{name: c}]}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm}}\n";
    let run = inject(BINDING, list, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = docs(&run.stdout);
    assert_eq!(
        d[0]["items"][0]["metadata"]["annotations"]["mlflow-operator.io/injected"],
        "fraud/2"
    );
    assert_eq!(d[0]["items"][1]["metadata"]["name"], "cm");
}

/// The preview shows run tags as the kubelet will get them: downward-API variables first, then
/// MLFLOW_RUN_CONTEXT naming them, literal text escaped for JSON and `$(...)`, and the
/// system-metrics variables with the pod's name as node id.
#[test]
fn run_tags_and_system_metrics_are_previewed_as_injected() {
    let run = inject(RUN_TAGS_BINDING, CRONJOB, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = docs(&run.stdout);
    let c = &d[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_names(c),
        [
            "MLFLOW_TRACKING_URI",
            "MLFLOW_OPERATOR_POD_NAME",
            "MLFLOW_OPERATOR_POD_UID",
            "MLFLOW_OPERATOR_NODE_NAME",
            "MLFLOW_RUN_CONTEXT",
            "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
            "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
            "MLFLOW_SYSTEM_METRICS_NODE_ID",
        ]
    );
    let value = |name: &str| {
        let entry = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name);
        entry.unwrap().clone()
    };
    assert_eq!(
        value("MLFLOW_OPERATOR_POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let context = concat!(
        r#"{"k8s.namespace.name":"team-a","k8s.pod.name":"$(MLFLOW_OPERATOR_POD_NAME)","#,
        r#""k8s.pod.uid":"$(MLFLOW_OPERATOR_POD_UID)","k8s.node.name":"$(MLFLOW_OPERATOR_NODE_NAME)","#,
        r#""mlflow-operator.binding":"team-a/fraud","k8s.container.name":"job","#,
        r#""container.image.name":"trainer:1","team":"it's \"q\" $$(x)"}"#
    );
    assert_eq!(value("MLFLOW_RUN_CONTEXT")["value"], context);
    assert_eq!(
        value("MLFLOW_SYSTEM_METRICS_NODE_ID")["value"],
        "$(MLFLOW_OPERATOR_POD_NAME)"
    );
    let again = inject(RUN_TAGS_BINDING, &run.stdout, &[]);
    assert_eq!(again.stdout, run.stdout, "a second preview changes nothing");
}
