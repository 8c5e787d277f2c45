//! Every file of `examples/` is applied to the real API server as a user would, so none of them
//! rots: bindings pass the CRD's validation (OpenAPI + CEL), workloads and the MLflow server are
//! accepted, and the PyTorchJob is accepted once the training operator's CRD exists.

use mlflow_operator_test_support as common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Api;
use mlflow_operator::binding::MlflowWorkspaceBinding;

use common::{eventually, kubectl, with_temp_ns};

fn examples(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The example with its namespace `team-a` replaced by `ns`.
fn in_namespace(path: &Path, ns: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .replace("namespace: team-a", &format!("namespace: {ns}"))
}

#[tokio::test]
async fn every_binding_example_is_accepted_and_every_workload_example_applies() {
    with_temp_ns("examples", |client, ns| async move {
        let bindings: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        let files = examples("bindings");
        assert!(files.len() >= 5, "binding examples: {files:?}");
        for file in &files {
            let out = kubectl(&["apply", "-f", "-"], &in_namespace(file, &ns)).await;
            assert!(
                out.contains("mlflowworkspacebinding.mlflow-operator.io/"),
                "{}: {out}",
                file.display()
            );
        }
        let names: Vec<String> = bindings
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|b| b.metadata.name)
            .collect();
        assert_eq!(
            names.len(),
            files.len(),
            "one binding per example: {names:?}"
        );

        // The training operator's CRD, as far as the API server needs it to store a PyTorchJob.
        kubectl(&["apply", "-f", "-"], PYTORCHJOB_CRD).await;
        eventually(
            "the PyTorchJob CRD to be served",
            Duration::from_secs(30),
            || async {
                let out = tokio::process::Command::new("kubectl")
                    .args(["get", "pytorchjobs", "-A"])
                    .output()
                    .await
                    .ok()?;
                out.status.success().then_some(())
            },
        )
        .await;
        for file in examples("workloads") {
            let out = kubectl(&["apply", "-f", "-"], &in_namespace(&file, &ns)).await;
            assert!(
                out.contains("created") || out.contains("configured"),
                "{}: {out}",
                file.display()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn the_demo_and_the_mlflow_server_examples_apply() {
    with_temp_ns("examples-demo", |_client, ns| async move {
        // Both name their own namespaces (team-a, mlflow): rename them to this test's.
        for (file, namespace) in [("demo.yaml", "team-a"), ("mlflow-server.yaml", "mlflow")] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text
                .replace(
                    &format!("namespace: {namespace}"),
                    &format!("namespace: {ns}"),
                )
                .replace(
                    &format!("  name: {namespace}\n---"),
                    &format!("  name: {ns}\n---"),
                );
            let out = kubectl(&["apply", "-f", "-"], &text).await;
            assert!(
                out.contains("created") || out.contains("configured") || out.contains("unchanged"),
                "{file}: {out}"
            );
        }
    })
    .await;
}

const PYTORCHJOB_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: pytorchjobs.kubeflow.org}
spec:
  group: kubeflow.org
  names: {kind: PyTorchJob, plural: pytorchjobs, singular: pytorchjob}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;
