//! mlflow-operator: makes every training pod log to MLflow with one label.
//!
//! One crate, small modules named after the domain:
//! - [`binding`]: the `MlflowWorkspaceBinding` API and its validation rules.
//! - [`binding_store`]: the bindings as the process keeps them, once, for the webhook and the
//!   controller.
//! - [`inject`]: the pure injection planner shared by the webhook, the CLI and the tests.
//! - [`webhook`]: the HTTPS admission service over raw AdmissionReview JSON.
//! - [`crd`]: the binding CRD this release needs, its revision, and how a cluster's compares.
//! - [`certs`]: serving certificates from files or self-managed, swapped without restarts.
//! - [`controller`]: each binding's tracking URI into its status (Azure ML via ARM, with the
//!   operator's own Azure credential), on the Lease holder only.
//! - [`metrics`]: Prometheus metrics shared by the controller and the webhook.
//! - [`recorder`]: Kubernetes Events with series, remembering little of each.
//! - [`run`]: `mlflow-operator run`, its settings, and the wiring of webhook, controller,
//!   metrics and health.
//! - [`tracking`]: which opted-in pods carry their binding's current injection (controller, `check`,
//!   `explain`).
//! - [`cli`]: the command line (`run`, `crd`, `inject`, `check`, `explain`, `completion`,
//!   `version`); [`cli::inject`] is the webhook applied offline to workload YAML.

pub mod binding;
pub mod binding_store;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod inject;
pub mod metrics;
pub mod ownership;
pub mod recorder;
pub mod run;
pub mod tracking;
pub mod webhook;

/// The CRD as YAML, exactly what `mlflow-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> String {
    serde_yaml_ng::to_string(&crd::definition()).expect("a CRD always serializes to YAML")
}

/// Makes ring the process's rustls crypto provider, as reqwest (built without one of its own)
/// needs; kube's client takes it too, and our own TLS configs name ring themselves. ring, not aws-lc-rs: aws-lc's
/// code was 2.2 MiB of the leader's resident pages, its AVX-512 AES-GCM alone 0.66 MiB
/// (BENCHMARKS.md, "twelfth stop").
pub fn install_crypto_provider() {
    // An error only says a provider is installed already: ring, the only one built in.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
