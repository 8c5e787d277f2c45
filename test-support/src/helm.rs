//! The real `helm` on the chart of this repository (`charts/mlflow-operator`). `helm` must be on
//! PATH (`tests/cluster/build` builds it; the cluster's env file puts it on PATH), or named by
//! `MLFLOW_OPERATOR_HELM` (how `hack/test` runs the Helm tests again with Helm 4): there is no
//! skipping.

use std::process::Stdio;

use serde_json::Value;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/mlflow-operator");

/// The helm binary every test runs: `MLFLOW_OPERATOR_HELM`, else `helm` on PATH.
pub fn program() -> String {
    std::env::var("MLFLOW_OPERATOR_HELM").unwrap_or_else(|_| "helm".to_string())
}

/// Runs the real `helm`, returning (success, stdout, stderr). Panics when helm is not on PATH.
pub async fn helm(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(program())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}` ({e}): put a helm binary on PATH (tests/cluster/build \
                 builds one; `source $MLFLOW_OPERATOR_CLUSTER_DIR/env` puts it on PATH) or \
                 name one in MLFLOW_OPERATOR_HELM",
                program()
            )
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm` that must succeed; its stdout.
pub async fn helm_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = helm(args).await;
    assert!(ok, "helm {args:?} failed:\n{stderr}\n{stdout}");
    stdout
}

/// Every document of a multi-document YAML stream, as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("helm output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart (release `mlflow-operator` in namespace `mlflow-operator`) with
/// `--set` pairs, as documents: what `helm install` creates (`helm test`'s hooks left out).
pub async fn template(sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "mlflow-operator",
        CHART,
        "--namespace",
        "mlflow-operator",
        "--skip-tests",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    documents(&helm_ok(&args).await)
}

/// The documents of `kind`.
pub fn objects<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one document of `kind`.
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = objects(docs, kind);
    assert_eq!(
        found.len(),
        1,
        "exactly one {kind} expected, got {found:#?}"
    );
    found[0]
}
