//! mlflow-operator: makes every training pod log to MLflow with one label.
//!
//! One crate, small modules named after the domain:
//! - [`binding`]: the `MlflowWorkspaceBinding` API and its validation rules.
//! - [`inject`]: the pure injection planner shared by the webhook, the CLI and the tests.
//! - [`metrics`]: Prometheus metrics shared by the controller and the webhook.
//! - [`cli`]: the command line (`run`, `crd`, `inject`, `version`).

pub mod azure;
pub mod binding;
pub mod cli;
pub mod inject;
pub mod metrics;
pub mod resolve;
pub mod run;

/// The CRD as YAML, exactly what `mlflow-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = binding::MlflowWorkspaceBinding::crd();
    serde_yaml_ng::to_string(&crd).expect("a CRD always serializes to YAML")
}
