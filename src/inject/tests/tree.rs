//! The webhook's fast path reads a pod from sonic-rs's tree: what only a pod's text can say
//! (a repeated key, escapes, a member of another type) gives the plan the whole pod gives, or
//! is left to the serde_json reader.

use super::*;

/// The plan of `text` read on the fast path with `b`'s names kept, or None where it defers.
pub(super) fn plan_on_tree(text: &str, b: &MlflowWorkspaceBinding) -> Option<Plan> {
    let tree: sonic_rs::Value = sonic_rs::from_str(text).ok()?;
    let pod = read_pod_tree(&tree, &EnvNames::of([b]))?;
    let view = NamespaceView {
        namespace: NS,
        bindings: vec![b],
        service_account: None,
    };
    Some(plan_read(Ok(pod), &view, &Defaults::default(), None))
}

fn whole(text: &str, b: &MlflowWorkspaceBinding) -> Plan {
    let p: Value = serde_json::from_str(text).unwrap();
    plan_with(&p, &[b], None, &Defaults::default())
}

const META: &str = r#""metadata": {"labels": {"mlflow-operator.io/track": "true"}}"#;

fn binding() -> MlflowWorkspaceBinding {
    mwb(
        "fraud",
        json!({"trackingUri": URI, "env": [{"name": "TEAM", "value": "x"}]}),
    )
}

/// A labelled pod of one container with these members.
fn c(members: &str) -> String {
    format!(r#"{{{META}, "spec": {{"containers": [{{{members}}}]}}}}"#)
}

#[test]
fn what_only_the_text_says_is_planned_as_on_the_whole_pod() {
    let b = binding();
    // (case, pod text)
    for (case, text) in [
        ("plain", c(r#""name": "t", "image": "i""#)),
        ("repeated name", c(r#""name": "a", "name": "t""#)),
        (
            "own tracking URI, escaped",
            c(r#""name": "t", "env": [{"name": "MLFLOW\u005fTRACKING_URI", "value": "u"}]"#),
        ),
        (
            "env entry named twice, the last the planner's",
            c(
                r#""name": "t", "env": [{"name": "X", "name": "MLFLOW_TRACKING_URI", "value": "u"}]"#,
            ),
        ),
        (
            "env entry named twice, the last another",
            c(
                r#""name": "t", "env": [{"name": "MLFLOW_TRACKING_URI", "name": "X", "value": "u"}]"#,
            ),
        ),
        (
            "a binding's own name",
            c(r#""name": "t", "env": [{"name": "TEAM", "value": "mine"}]"#),
        ),
        (
            "entries of other shapes",
            c(r#""name": "t", "env": [7, {"name": 1}, {"value": "v"}, null, {"name": null}]"#),
        ),
        (
            "a mount of the planner's path, escaped",
            c(
                r#""name": "t", "volumeMounts": [{"name": "x", "mountPath": "\/var\/run\/secrets\/mlflow-operator\/azure"}]"#,
            ),
        ),
        (
            "a mount of another shape",
            c(r#""name": "t", "volumeMounts": [{"name": "x", "mountPath": 7}, "m"]"#),
        ),
        (
            "repeated labels",
            r#"{"metadata": {"labels": {"mlflow-operator.io/track": "false", "mlflow-operator.io/track": "true"}}, "spec": {"containers": [{"name": "t"}]}}"#.to_string(),
        ),
        (
            "repeated spec",
            format!(
                r#"{{{META}, "spec": {{"containers": [{{"name": "a"}}]}}, "spec": {{"containers": [{{"name": "t"}}]}}}}"#
            ),
        ),
        (
            "skip-containers annotation",
            r#"{"metadata": {"annotations": {"mlflow-operator.io/skip-containers": "a"}}, "spec": {"containers": [{"name": "a"}, {"name": "t"}]}}"#.to_string(),
        ),
    ] {
        let got = plan_on_tree(&text, &b).unwrap_or_else(|| panic!("{case}: not read"));
        assert_eq!(got, whole(&text, &b), "{case}");
    }
}

/// Each is refused by `pod::read`, which words why: the fast path leaves it to serde_json.
#[test]
fn a_pod_of_another_shape_is_left_to_serde_json() {
    let b = binding();
    // (case, pod text)
    for (case, text) in [
        ("name of another type", c(r#""name": 7"#)),
        ("env an object", c(r#""name": "t", "env": {"name": "X"}"#)),
        ("envFrom a string", c(r#""name": "t", "envFrom": "s""#)),
        (
            "labels an array",
            r#"{"metadata": {"labels": []}, "spec": {"containers": []}}"#.to_string(),
        ),
        ("no containers", format!(r#"{{{META}, "spec": {{}}}}"#)),
        ("no spec", format!(r#"{{{META}}}"#)),
        ("not an object", "[1]".to_string()),
    ] {
        assert_eq!(plan_on_tree(&text, &b), None, "{case}");
        assert!(matches!(whole(&text, &b), Plan::Refuse(_)), "{case}");
    }
}
