//! The chart's RBAC, rule by rule.

use serde_json::json;

use super::common::helm::{one, template};

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
                &["list", "watch"]
            ),
            rule(
                &["mlflow-operator.io"],
                &["mlflowworkspacebindings/status"],
                &[],
                &["patch"]
            ),
            rule(&[""], &["serviceaccounts"], &[], &["get", "list", "watch"]),
            rule(&[""], &["pods"], &[], &["list", "watch"]),
            rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
            rule(
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions"],
                &["mlflowworkspacebindings.mlflow-operator.io"],
                &["get", "patch"]
            ),
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

/// With `crds.upgrade=false` the operator may only read its CRD, and is not asked to upgrade it.
#[tokio::test]
async fn without_crd_upgrades_the_operator_only_reads_its_crd() {
    let crd_rule = |docs: &[serde_json::Value]| {
        one(docs, "ClusterRole")["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"] == json!(["customresourcedefinitions"]))
            .cloned()
            .unwrap()
    };
    let args = |docs: &[serde_json::Value]| {
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone()
    };
    let upgrading = template(&[]).await;
    assert!(
        args(&upgrading)
            .as_array()
            .unwrap()
            .contains(&json!("--upgrade-crd"))
    );
    let checking = template(&["crds.upgrade=false"]).await;
    assert_eq!(crd_rule(&checking)["verbs"], json!(["get"]));
    assert_eq!(
        crd_rule(&checking)["resourceNames"],
        json!(["mlflowworkspacebindings.mlflow-operator.io"])
    );
    assert!(
        !args(&checking)
            .as_array()
            .unwrap()
            .contains(&json!("--upgrade-crd"))
    );
}
