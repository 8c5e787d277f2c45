//! Every alert rule and dashboard query names only metrics and labels the real operator exports.
//!
//! Approach: two real `mlflow-operator run` processes, the webhook alone (certificate files),
//! which answers one AdmissionReview, and the controller alone, which reconciles one binding in
//! the test's namespace, are scraped. A family is exposed only once it has a sample, so the
//! families the processes have no event for yet (ARM calls, reconcile errors, maybe pods) come
//! from the definitions: `mlflow_operator::metrics::Metrics`, the registry the binary runs, with
//! one sample of each labelled family's label struct, rendered by the same encoder. The series of
//! a family follow from its `# TYPE` (`_total`; `_bucket` with `le`, `_count`, `_sum`), its labels
//! from its samples. What the processes export must agree with the definitions. The expressions
//! are parsed by Prometheus' own PromQL parser (`promql-names`); besides the operator's labels
//! they may use the target labels the chart's monitors add, and `up`.

use mlflow_operator_test_support as common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::fake_tls::connector;
use common::operator::{OperatorProcess, answered};
use common::prometheus::{Names, dashboard_expressions, names, rule_expressions};
use common::{eventually, random_suffix, with_temp_ns};
use kube::Api;
use kube::api::PostParams;
use mlflow_operator::binding::MlflowWorkspaceBinding;
use mlflow_operator::metrics::{
    Metrics, OutcomeLabels, PodsLabels, ReadyLabels, ReasonLabels, StatusLabels,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Labels Prometheus attaches to every series of a target the chart's ServiceMonitor or
/// PodMonitor scrapes.
const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "container",
    "endpoint",
];

/// Series names and their label names.
type Series = BTreeMap<String, BTreeSet<String>>;

#[tokio::test]
async fn rules_and_dashboard_name_only_exported_metrics_and_labels() {
    with_temp_ns("monitoring-names", |client, ns| async move {
        let dir = tempfile::tempdir().unwrap();
        let (webhook, ca, port) = OperatorProcess::webhook_only(dir.path()).await;
        answered(port, &connector(&ca), Duration::from_secs(5))
            .await
            .expect("the webhook answers a review");
        let controller = start_controller(&ns);
        create_binding(&client, &ns).await;
        eventually("the binding counted Ready", WAIT, || async {
            let (_, text) = controller.get("/metrics").await?;
            text.contains("mlflow_operator_bindings{ready=\"True\"} 1")
                .then_some(())
        })
        .await;

        let mut real = Series::new();
        for op in [&webhook, &controller] {
            let (_, text) = op.get("/metrics").await.expect("/metrics answers");
            merge(&mut real, exported(&text));
        }
        assert!(real["mlflow_operator_admissions_total"].contains("outcome"));
        let defined = defined();
        for (name, labels) in &real {
            assert_eq!(
                defined.get(name),
                Some(labels),
                "{name}: exported unlike defined"
            );
        }
        let mut series = defined;
        merge(&mut series, real);
        check_expressions(&series);
    })
    .await;
}

/// Parses every rule and dashboard expression and fails on what `series` does not have.
fn check_expressions(series: &Series) {
    let (rules, panels) = (rule_expressions(), dashboard_expressions());
    assert!(!rules.is_empty() && !panels.is_empty());
    let parsed = names(&[rules.clone(), panels.clone()].concat());
    assert_eq!(parsed.len(), rules.len() + panels.len());
    let problems: Vec<String> = parsed.iter().flat_map(|n| unknown(n, series)).collect();
    assert!(
        problems.is_empty(),
        "names the operator does not export:\n{}\n\nexported:\n{series:#?}",
        problems.join("\n")
    );
}

/// The controller alone, leading on a Lease of its own in `ns` only.
fn start_controller(ns: &str) -> OperatorProcess {
    let flags = [
        format!("--namespace={ns}"),
        format!("--watch-namespace={ns}"),
        format!("--lease-name=lease-{}", random_suffix()),
        "--lease-duration=2s".to_string(),
        "--identity=monitoring-names".to_string(),
        "--no-webhook".to_string(),
    ];
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    OperatorProcess::start("controller", &args)
}

/// A binding with a plain tracking URI: Ready without Azure.
async fn create_binding(client: &kube::Client, ns: &str) {
    let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "b"},
        "spec": {"trackingUri": "http://mlflow.mlflow.svc:5000", "experimentName": "exp"}
    }))
    .unwrap();
    Api::<MlflowWorkspaceBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &b)
        .await
        .expect("create binding");
}

/// The served certificate's notAfter is exported once the certificate files are loaded.
#[tokio::test]
async fn certificate_expiry_is_exported_from_the_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let (op, _, _) = OperatorProcess::webhook_only(dir.path()).await;
    let expiry = op
        .metric("mlflow_operator_certificate_expiry_timestamp_seconds")
        .await
        .expect("the gauge is exported");
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(expiry > now, "expiry {expiry} is not after now {now}");
}

fn merge(into: &mut Series, from: Series) {
    for (name, labels) in from {
        into.entry(name).or_default().extend(labels);
    }
}

/// Every series the operator's registry defines: one sample of each labelled family.
fn defined() -> Series {
    let m = Metrics::new();
    let s = String::new;
    let _ = m.admissions.get_or_create(&OutcomeLabels { outcome: "" });
    let _ = m
        .reconcile_errors
        .get_or_create(&ReasonLabels { reason: s() });
    let _ = m
        .arm_request_duration
        .get_or_create(&StatusLabels { status: s() });
    let _ = m.bindings.get_or_create(&ReadyLabels { ready: s() });
    let _ = m.pods.get_or_create(&PodsLabels {
        namespace: s(),
        binding: s(),
        state: s(),
    });
    exported(&m.render())
}

/// What `n` refers to that `series` (plus the target labels and `up`) does not have.
fn unknown(n: &Names, series: &Series) -> Vec<String> {
    let labels_of = |metric: &str| -> Option<BTreeSet<String>> {
        let own = match metric {
            "up" => BTreeSet::new(),
            m => series.get(m)?.clone(),
        };
        Some(
            own.into_iter()
                .chain(TARGET_LABELS.map(String::from))
                .collect(),
        )
    };
    let mut problems = Vec::new();
    for s in &n.selectors {
        match labels_of(&s.metric) {
            None => problems.push(format!("{}: metric {:?}", n.expr, s.metric)),
            Some(known) => problems.extend(
                s.labels
                    .iter()
                    .filter(|l| !known.contains(*l))
                    .map(|l| format!("{}: label {l:?} of {}", n.expr, s.metric)),
            ),
        }
    }
    for g in &n.groupings {
        let known: BTreeSet<String> = g
            .metrics
            .iter()
            .filter_map(|m| labels_of(m))
            .flatten()
            .collect();
        problems.extend(
            g.labels
                .iter()
                .filter(|l| !known.contains(*l))
                .map(|l| format!("{}: grouping label {l:?} of {:?}", n.expr, g.metrics)),
        );
    }
    problems
}

/// The series of an OpenMetrics exposition and their label names.
fn exported(text: &str) -> Series {
    let mut families = BTreeMap::new();
    let mut sampled: Series = BTreeMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').expect("# TYPE <name> <type>");
            families.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, labels) = sample(line);
            sampled.entry(name).or_default().extend(labels);
        }
    }
    let mut series = Series::new();
    for (family, kind) in &families {
        let names = series_names(family, kind);
        let labels: BTreeSet<String> = names
            .iter()
            .filter_map(|n| sampled.get(n))
            .flatten()
            .filter(|l| *l != "le")
            .cloned()
            .collect();
        for name in names {
            let mut own = labels.clone();
            if name.ends_with("_bucket") {
                own.insert("le".to_string());
            }
            series.insert(name, own);
        }
    }
    series
}

/// The series names a family of `kind` is exposed as.
fn series_names(family: &str, kind: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total"],
        "histogram" => &["_bucket", "_count", "_sum"],
        "gauge" | "unknown" => &[""],
        other => panic!("{family}: a {other} family; teach series_names its series"),
    };
    suffixes.iter().map(|s| format!("{family}{s}")).collect()
}

/// The name and label names of one sample line (`name{a="x",b="y"} value`).
fn sample(line: &str) -> (String, Vec<String>) {
    let name_end = line.find(['{', ' ']).expect("a sample line");
    let name = line[..name_end].to_string();
    let Some(rest) = line[name_end..].strip_prefix('{') else {
        return (name, Vec::new());
    };
    // Label values are quoted and may hold `,` or `=`: read them as a sequence of k="v".
    let mut labels = Vec::new();
    let mut rest = rest;
    while let Some((key, after)) = rest.split_once("=\"") {
        labels.push(key.trim_start_matches(',').to_string());
        let end = closing_quote(after);
        rest = &after[end + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    (name, labels)
}

fn closing_quote(s: &str) -> usize {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return i,
            _ => escaped = false,
        }
    }
    panic!("an unterminated label value in {s:?}")
}
