//! The Helm chart (`charts/mlflow-operator`), checked with the real `helm` binary and, for the
//! install test, the real API server: the chart renders what SPEC §6 promises ([`render`],
//! [`certificates`], [`rbac`]), its schema refuses bad values, and the operator binary runs with
//! nothing but the chart's ServiceAccount token ([`install`], [`privileges`]).
//!
//! `helm` must be on PATH (`tests/cluster/build` builds it; the cluster's env file puts it on
//! PATH). There is no skipping: a missing `helm` fails every test here.

use mlflow_operator_test_support as common;

mod certificates;
mod conventions;
mod install;
mod privileges;
mod rbac;
mod release;
mod render;
mod versions;

use serde_json::Value;

use common::helm::one;

const TRACK: &str = "mlflow-operator.io/track";

/// The operator container of the chart's Deployment.
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
