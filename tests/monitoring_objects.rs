//! The chart's monitoring objects: rendered only when asked, the rules file included as is, and
//! accepted by the real API server once prometheus-operator's published CRDs are installed
//! (server-side dry run with strict field validation, so a misspelt field is refused rather
//! than pruned).

use mlflow_operator_test_support as common;

use std::path::Path;

use common::helm::{CHART, documents, helm, helm_ok, objects, one, template};
use common::prometheus::{DASHBOARD, RULES, tools};
use common::{kubectl, with_temp_ns};
use serde_json::Value;

/// Every monitoring object enabled.
const ALL: [&str; 4] = [
    "metrics.serviceMonitor.enabled=true",
    "metrics.podMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.dashboard.enabled=true",
];
const KINDS: [&str; 3] = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];

#[tokio::test]
async fn monitoring_objects_are_off_by_default() {
    let docs = template(&[]).await;
    for kind in KINDS {
        assert!(
            objects(&docs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    let dashboards = docs.iter().filter(|d| is_dashboard(d));
    assert_eq!(dashboards.count(), 0, "a dashboard ConfigMap by default");
}

#[tokio::test]
async fn the_rule_is_the_rules_file_and_the_dashboard_the_dashboard_file() {
    let docs = template(&ALL).await;
    let rules: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    assert_eq!(one(&docs, "PrometheusRule")["spec"], rules);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let cm = docs
        .iter()
        .find(|d| is_dashboard(d))
        .expect("the dashboard ConfigMap");
    let shipped: Value =
        serde_json::from_str(cm["data"]["mlflow-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
}

#[tokio::test]
async fn runbook_links_take_the_base_url() {
    let base = "metrics.prometheusRule.runbookBaseURL=https://docs.example/mlflow-operator/";
    let docs = template(&[ALL[2], base]).await;
    let rule = one(&docs, "PrometheusRule");
    let groups = rule["spec"]["groups"].as_array().unwrap();
    let urls: Vec<&str> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            r["annotations"]["runbook_url"]
                .as_str()
                .expect("a runbook_url")
        })
        .collect();
    assert!(!urls.is_empty());
    for url in urls {
        assert!(
            url.starts_with("https://docs.example/mlflow-operator/docs/runbooks.md#"),
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_schema_refuses_bad_monitoring_values() {
    for set in [
        "metrics.serviceMonitor.interval=30 seconds",
        "metrics.podMonitor.scrapeTimeout=10",
        "metrics.prometheusRule.runbookBaseURL=docs.example",
        "metrics.dashboard.label.grafana_dashboard=1",
    ] {
        let (ok, _, stderr) = helm(&["template", "mlflow-operator", CHART, "--set", set]).await;
        assert!(!ok, "{set} accepted");
        assert!(
            stderr.contains("schema"),
            "{set}: not a schema error:\n{stderr}"
        );
    }
}

/// Every alert links to a section of docs/runbooks.md that exists, and every section to an alert.
#[test]
fn every_alert_has_a_runbook_section() {
    let rules: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    let runbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks.md");
    let sections: std::collections::BTreeSet<String> = std::fs::read_to_string(runbooks)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::to_lowercase)
        .collect();
    let mut linked = std::collections::BTreeSet::new();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let alert = rule["alert"].as_str().unwrap().to_lowercase();
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        assert_eq!(url, format!("docs/runbooks.md#{alert}"));
        linked.insert(alert);
    }
    assert_eq!(linked, sections);
}

#[tokio::test]
async fn the_api_server_accepts_every_monitoring_object() {
    install_monitoring_crds().await;
    with_temp_ns("monitoring-objects", |_client, ns| async move {
        let mut args = vec!["template", "mlflow-operator", CHART, "--namespace", &ns];
        for set in ALL {
            args.extend(["--set", set]);
        }
        let docs = documents(&helm_ok(&args).await);
        let mut chosen: Vec<&Value> = KINDS.iter().map(|k| one(&docs, k)).collect();
        chosen.extend(docs.iter().filter(|d| is_dashboard(d)));
        assert_eq!(chosen.len(), 4);
        for object in chosen {
            let out = kubectl(
                &[
                    "create",
                    "--dry-run=server",
                    "--validate=strict",
                    "-o",
                    "name",
                    "-f",
                    "-",
                ],
                &object.to_string(),
            )
            .await;
            let kind = object["kind"].as_str().unwrap().to_lowercase();
            assert!(out.starts_with(&kind), "{out}");
        }
    })
    .await;
}

fn is_dashboard(d: &Value) -> bool {
    d["kind"] == "ConfigMap" && d["data"]["mlflow-operator.json"].is_string()
}

/// The ServiceMonitor, PodMonitor and PrometheusRule CRDs as prometheus-operator publishes them
/// (left installed: applying them again is a no-op, and nothing else in the cluster uses them).
async fn install_monitoring_crds() {
    let crds = tools().join("crds");
    for plural in ["servicemonitors", "podmonitors", "prometheusrules"] {
        let file = crds.join(format!("monitoring.coreos.com_{plural}.yaml"));
        let yaml = std::fs::read_to_string(Path::new(&file)).unwrap();
        kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &yaml,
        )
        .await;
        let crd = format!("crd/{plural}.monitoring.coreos.com");
        kubectl(
            &["wait", "--for=condition=Established", "--timeout=60s", &crd],
            "",
        )
        .await;
    }
}
