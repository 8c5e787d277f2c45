//! Prometheus' own tools for the monitoring tests, built by `tests/prometheus/build` (cached;
//! a cold build needs the Go module proxy, so `.ci/run` and `hack/test` build them first):
//! `promql-names` (what a PromQL expression refers to, from Prometheus' parser) and the
//! monitoring.coreos.com CRDs of prometheus-operator.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

/// The chart's rules file and dashboard, as promtool and Grafana read them.
pub const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/mlflow-operator/files/prometheus-rules.yaml"
);
pub const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/mlflow-operator/files/dashboard.json"
);

/// The directory `tests/prometheus/build` prints: promtool, promql-names and crds/.
pub fn tools() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/prometheus/build");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(out.status.success(), "{script} failed (output above)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One vector selector of an expression: its metric name and the labels its matchers test.
#[derive(Debug, Deserialize)]
pub struct Selector {
    pub metric: String,
    pub labels: Vec<String>,
}

/// The labels of one `by`/`without` clause and the metrics under that aggregation.
#[derive(Debug, Deserialize)]
pub struct Grouping {
    pub labels: Vec<String>,
    pub metrics: Vec<String>,
}

/// What one expression refers to, as Prometheus' parser sees it.
#[derive(Debug, Deserialize)]
pub struct Names {
    pub expr: String,
    pub selectors: Vec<Selector>,
    pub groupings: Vec<Grouping>,
}

/// Parses `exprs` with Prometheus' PromQL parser (`promql-names`); panics on a syntax error.
pub fn names(exprs: &[String]) -> Vec<Names> {
    let mut child = Command::new(tools().join("promql-names"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promql-names");
    let input = serde_json::to_vec(exprs).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promql-names: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("promql-names prints JSON")
}

/// Every alerting and recording expression of the chart's rules file.
pub fn rule_expressions() -> Vec<String> {
    let rules: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    let groups = rules["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect()
}

/// Every query of the chart's dashboard, Grafana's interval variables replaced by a duration so
/// the parser accepts them.
pub fn dashboard_expressions() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut found = Vec::new();
    collect_exprs(&dashboard, &mut found);
    found
        .into_iter()
        .map(|e| {
            ["$__rate_interval", "$__interval", "$__range"]
                .iter()
                .fold(e, |e, var| e.replace(var, "5m"))
        })
        .collect()
}

fn collect_exprs(v: &serde_json::Value, found: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(e) = map.get("expr").and_then(|e| e.as_str()) {
                found.push(e.to_string());
            }
            map.values().for_each(|v| collect_exprs(v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, found)),
        _ => {}
    }
}
