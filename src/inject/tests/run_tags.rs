//! Run tags and system metrics: the variables each injected container gets, the tags MLflow
//! reads after the kubelet expands them, the rules (own values kept, self-configured and skipped
//! containers left alone, reinvocation), and hostile text that must survive both JSON and
//! `$(...)` expansion.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// The kubelet's `$(NAME)` expansion of one env value (Kubernetes' `third_party/forked/golang/
/// expansion`), byte for byte: `$$` is `$`, `$(NAME)` of a defined variable its value, anything
/// else as written.
fn kubelet_expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let (mut checkpoint, mut cursor) = (0, 0);
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &bytes[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&b| b == b')') {
                    Some(close) => {
                        let name = std::str::from_utf8(&rest[1..close]).unwrap();
                        let value = vars.get(name).map(|v| v.to_string());
                        out.extend(value.unwrap_or(format!("$({name})")).bytes());
                        close + 1
                    }
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                // Go writes the byte as a rune: U+0000 to U+00FF in UTF-8.
                other => {
                    out.push(b'$');
                    out.extend(char::from(other).to_string().bytes());
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    String::from_utf8_lossy(&out).into_owned()
}

/// What a container's process sees: each env value expanded against the entries before it, with
/// the downward API's values for this pod.
fn started(container: &Value) -> BTreeMap<String, String> {
    let fields: BTreeMap<&str, &str> = [
        ("metadata.name", "train-x7k2p"),
        ("metadata.uid", "0b5c7e9a-1111-2222-3333-444455556666"),
        ("spec.nodeName", "node-1"),
    ]
    .into();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some(field) => fields.get(field).unwrap_or(&"").to_string(),
            None => {
                let vars = seen.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                kubelet_expand(e["value"].as_str().unwrap_or(""), &vars)
            }
        };
        seen.insert(name, value);
    }
    seen
}

/// The tags MLflow reads from a started container's MLFLOW_RUN_CONTEXT.
fn tags(container: &Value) -> BTreeMap<String, String> {
    let env = started(container);
    let context = env.get("MLFLOW_RUN_CONTEXT").expect("MLFLOW_RUN_CONTEXT");
    serde_json::from_str(context).unwrap_or_else(|e| panic!("{e}: {context}"))
}

/// A pod of Job `nightly-29412345` (a CronJob's) with a trainer and a sidecar.
fn job_pod() -> Value {
    json!({
        "metadata": {"generateName": "nightly-29412345-", "labels": {"mlflow-operator.io/track": "true"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-29412345",
                                 "uid": "u", "controller": true}]},
        "spec": {"containers": [{"name": "train", "image": "registry.example/trainer:1.2"},
                                {"name": "shipper", "image": "shipper:2"}]}
    })
}

fn tagged(spec_extra: Value) -> MlflowWorkspaceBinding {
    let mut spec = json!({"trackingUri": URI});
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    mwb("fraud", spec)
}

fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_job_pod_gets_every_kubernetes_tag_with_its_real_name_uid_and_node() {
    let b = tagged(json!({"runTags": {"extra": {"team": "fraud", "k8s.pod.name": "mine"}}}));
    let (p, warnings) = apply(&job_pod(), &b);
    assert!(warnings.is_empty(), "{warnings:?}");
    let want = |container: &str, image: &str| {
        pairs(&[
            ("k8s.namespace.name", NS),
            ("k8s.pod.name", "train-x7k2p"),
            ("k8s.pod.uid", "0b5c7e9a-1111-2222-3333-444455556666"),
            ("k8s.node.name", "node-1"),
            ("k8s.job.name", "nightly-29412345"),
            ("k8s.cronjob.name", "nightly"),
            ("mlflow-operator.binding", "team-a/fraud"),
            ("k8s.container.name", container),
            ("container.image.name", image),
            ("team", "fraud"),
        ])
    };
    let containers = &p["spec"]["containers"];
    assert_eq!(
        tags(&containers[0]),
        want("train", "registry.example/trainer:1.2")
    );
    assert_eq!(tags(&containers[1]), want("shipper", "shipper:2"));
    let names = names(&p, "containers", 0);
    let position = |n: &str| names.iter().position(|x| x == n).unwrap();
    for var in [
        "MLFLOW_OPERATOR_POD_NAME",
        "MLFLOW_OPERATOR_POD_UID",
        "MLFLOW_OPERATOR_NODE_NAME",
    ] {
        assert!(
            position(var) < position("MLFLOW_RUN_CONTEXT"),
            "{var} before: {names:?}"
        );
    }
}

#[test]
fn owners_name_their_workloads_where_the_names_tell() {
    for (case, kind, owner, hash, want) in [
        (
            "a Deployment's ReplicaSet",
            "ReplicaSet",
            "trainer-5d8f7c9b6",
            Some("5d8f7c9b6"),
            vec![
                ("k8s.replicaset.name", "trainer-5d8f7c9b6"),
                ("k8s.deployment.name", "trainer"),
            ],
        ),
        (
            "a bare ReplicaSet",
            "ReplicaSet",
            "trainer",
            None,
            vec![("k8s.replicaset.name", "trainer")],
        ),
        (
            "a user's dated Job",
            "Job",
            "train-20261203",
            None,
            vec![("k8s.job.name", "train-20261203")],
        ),
        (
            "a StatefulSet",
            "StatefulSet",
            "db",
            None,
            vec![("k8s.statefulset.name", "db")],
        ),
        (
            "a training operator's job",
            "PyTorchJob",
            "mnist",
            None,
            vec![("k8s.pytorchjob.name", "mnist")],
        ),
    ] {
        let mut p = one();
        p["metadata"]["ownerReferences"] = json!([{"kind": "Other", "name": "not-the-controller"},
            {"kind": kind, "name": owner, "controller": true}]);
        if let Some(hash) = hash {
            p["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        }
        let (p, _) = apply(&p, &tagged(json!({"runTags": {}})));
        let got = tags(&p["spec"]["containers"][0]);
        let owned: Vec<(&str, &str)> = got
            .iter()
            .filter(|(k, _)| {
                k.ends_with(".name")
                    && ![
                        "k8s.namespace.name",
                        "k8s.pod.name",
                        "k8s.node.name",
                        "k8s.container.name",
                        "container.image.name",
                    ]
                    .contains(&k.as_str())
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut want = want;
        want.sort();
        assert_eq!(owned, want, "{case}");
    }
}

#[test]
fn variables_per_binding_setting() {
    for (case, spec, want) in [
        ("nothing asked", json!({}), vec![]),
        (
            "extra tags only",
            json!({"runTags": {"kubernetes": false, "extra": {"a": "b"}}}),
            vec!["MLFLOW_RUN_CONTEXT"],
        ),
        (
            "no tags at all",
            json!({"runTags": {"kubernetes": false}}),
            vec![],
        ),
        (
            "system metrics",
            json!({"systemMetrics": {"samplingIntervalSeconds": 5}}),
            vec![
                "MLFLOW_OPERATOR_POD_NAME",
                "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
                "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
                "MLFLOW_SYSTEM_METRICS_NODE_ID",
            ],
        ),
        (
            "system metrics off",
            json!({"systemMetrics": {"enabled": false}}),
            vec![],
        ),
    ] {
        let (p, _) = apply(&one(), &tagged(spec));
        let got: Vec<String> = names(&p, "containers", 0)
            .into_iter()
            .filter(|n| n != "MLFLOW_TRACKING_URI")
            .collect();
        assert_eq!(got, want, "{case}");
    }
    let b = tagged(json!({"systemMetrics": {"samplingIntervalSeconds": 5}}));
    let (p, _) = apply(&one(), &b);
    let env = started(&p["spec"]["containers"][0]);
    assert_eq!(env["MLFLOW_SYSTEM_METRICS_NODE_ID"], "train-x7k2p");
    assert_eq!(env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"], "5");
}

#[test]
fn own_values_are_kept_and_self_configured_or_skipped_containers_get_none() {
    let b = tagged(json!({"runTags": {}, "systemMetrics": {}}));
    let p = pod(json!([
        {"name": "own", "image": "x", "env": [{"name": "MLFLOW_RUN_CONTEXT", "value": "{\"mine\":\"1\"}"}]},
        {"name": "self", "image": "x", "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://other"}]},
        {"name": "skipped", "image": "x"},
    ]));
    let mut p = p;
    p["metadata"]["annotations"] = json!({"mlflow-operator.io/skip-containers": "skipped"});
    let (out, warnings) = apply(&p, &b);
    assert_eq!(tags(&out["spec"]["containers"][0]), pairs(&[("mine", "1")]));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("\"own\" already sets MLFLOW_RUN_CONTEXT")),
        "{warnings:?}"
    );
    assert_eq!(names(&out, "containers", 1), vec!["MLFLOW_TRACKING_URI"]);
    assert!(out["spec"]["containers"][2].get("env").is_none());
}

#[test]
fn reinvocation_changes_nothing() {
    let b = tagged(json!({"runTags": {"extra": {"x": "$(y)"}}, "systemMetrics": {}}));
    let (once, _) = apply(&job_pod(), &b);
    match plan_with(&once, &[&b], None, &Defaults::default()) {
        Plan::Inject {
            patch, warnings, ..
        } => {
            assert!(patch.is_empty(), "{patch}");
            assert!(warnings.is_empty(), "{warnings:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Text that must reach MLflow as written: quotes, backslashes, `$(`, `$$(`, a lone `$` before
/// any byte, control characters and unicode.
fn hostile() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "\"",
        "\\",
        "$(",
        "$$(",
        "$(MLFLOW_OPERATOR_POD_NAME)",
        "$",
        "$é",
        ")",
        "{",
        "}",
        "\n",
        "\u{0}",
        "é",
        "漢",
        "🚀",
        "a",
        " ",
        "'",
        "`",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_tags_and_images_reach_mlflow_as_written(
        value in hostile(),
        image in hostile(),
        key in "[A-Za-z0-9_.: -]{1,20}",
    ) {
        let mut extra = serde_json::Map::new();
        extra.insert(key.clone(), json!(value));
        let b = tagged(json!({"runTags": {"extra": extra}}));
        let p = pod(json!([{"name": "train", "image": image}]));
        let (out, _) = apply(&p, &b);
        let got = tags(&out["spec"]["containers"][0]);
        prop_assert_eq!(got.get("container.image.name"), Some(&image));
        if !key.starts_with("k8s.") && key != "container.image.name" && key != "mlflow-operator.binding" {
            prop_assert_eq!(got.get(&key), Some(&value));
        }
        prop_assert_eq!(got.get("k8s.pod.name").map(String::as_str), Some("train-x7k2p"));
    }
}

#[test]
fn maximum_tags_stay_valid_json() {
    let extra: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("{i:0>250}"), json!("$\"\\漢".repeat(250))))
        .collect();
    let b = tagged(json!({"runTags": {"extra": extra}}));
    let (p, _) = apply(&one(), &b);
    let got = tags(&p["spec"]["containers"][0]);
    // Seven Kubernetes tags for a pod without an owner.
    assert_eq!(got.len(), 20 + 7);
    assert!(got.values().any(|v| v == &"$\"\\漢".repeat(250)));
}

#[test]
fn the_expansion_port_matches_kubernetes() {
    let vars: BTreeMap<&str, &str> = [("A", "1")].into();
    for (input, want) in [
        ("$(A)", "1"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$(B)", "$(B)"),
        ("$(A", "$(A"),
        ("a$", "a$"),
        ("$x", "$x"),
        ("$$", "$"),
    ] {
        assert_eq!(kubelet_expand(input, &vars), want, "{input}");
    }
}

#[test]
fn a_name_the_bindings_own_env_holds_is_not_added_again() {
    let env = json!([{"name": "MLFLOW_RUN_CONTEXT", "value": "{}"},
                     {"name": "MLFLOW_OPERATOR_POD_NAME", "value": "fixed"}]);
    let b = tagged(json!({"runTags": {}, "systemMetrics": {}, "env": env}));
    let (p, _) = apply(&one(), &b);
    let names = names(&p, "containers", 0);
    for once in ["MLFLOW_RUN_CONTEXT", "MLFLOW_OPERATOR_POD_NAME"] {
        assert_eq!(names.iter().filter(|n| *n == once).count(), 1, "{names:?}");
    }
    assert_eq!(
        get(&p, "containers", 0, "MLFLOW_RUN_CONTEXT").unwrap()["value"],
        "{}"
    );
}
