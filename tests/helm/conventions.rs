//! The chart's conventions: its schema describes exactly the values `values.yaml` has, common
//! labels reach every object, and the optional objects (PodDisruptionBudget with
//! `maxUnavailable`, NetworkPolicy, extra volumes) render as asked and are accepted by the real
//! API server.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::common::helm::{CHART, documents, helm_ok, one, template};
use super::container;

/// Every key path of a values document, maps descended into (`a`, `a.b`, ...).
fn value_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(map) = v.as_object() else { return };
    for (k, child) in map {
        let path = format!("{prefix}{k}");
        value_paths(child, &format!("{path}."), out);
        out.insert(path);
    }
}

/// Every property path a JSON schema declares, through nested `properties`.
fn schema_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (k, child) in props {
        let path = format!("{prefix}{k}");
        schema_paths(child, &format!("{path}."), out);
        out.insert(path);
    }
}

/// A key of values.yaml the schema does not know would be refused on `--set`; a schema property
/// values.yaml lacks is a setting nobody can discover from the defaults. `global` is Helm's.
#[test]
fn schema_and_values_name_the_same_keys() {
    let read = |f: &str| std::fs::read_to_string(Path::new(CHART).join(f)).unwrap();
    let values: Value = serde_yaml_ng::from_str(&read("values.yaml")).unwrap();
    let schema: Value = serde_json::from_str(&read("values.schema.json")).unwrap();
    let (mut in_values, mut in_schema) = (BTreeSet::new(), BTreeSet::new());
    value_paths(&values, "", &mut in_values);
    schema_paths(&schema, "", &mut in_schema);
    in_schema.remove("global");
    // Free-form maps: their keys are the user's (labels, annotations, resources, selectors).
    let free = |p: &String| {
        in_schema
            .iter()
            .any(|s| p.starts_with(&format!("{s}.")) && !in_schema.contains(p))
    };
    let unknown: Vec<&String> = in_values
        .iter()
        .filter(|p| !in_schema.contains(*p) && !free(p))
        .collect();
    // Fields of an object the user writes whole (an empty `issuerRef: {}`, Kubernetes'
    // `resources`) are the schema's to describe; values.yaml shows the object, not every field.
    let written_whole = |p: &String| {
        let parent = p.rsplit_once('.').map(|(parent, _)| parent);
        let at = |path: &str| path.split('.').fold(&values, |v, k| &v[k]).clone();
        p.starts_with("resources.") || parent.is_some_and(|pa| at(pa) == json!({}))
    };
    let undocumented: Vec<&String> = in_schema
        .difference(&in_values)
        .filter(|p| !written_whole(p))
        .collect();
    assert!(
        unknown.is_empty(),
        "values.yaml keys the schema lacks: {unknown:?}"
    );
    assert!(
        undocumented.is_empty(),
        "schema properties values.yaml lacks: {undocumented:?}"
    );
}

#[tokio::test]
async fn common_labels_revision_history_and_extra_volumes_render() {
    let docs = template(&[
        "commonLabels.team=platform",
        "revisionHistoryLimit=3",
        "extraVolumes[0].name=extra",
        "extraVolumes[0].emptyDir.medium=Memory",
        "extraVolumeMounts[0].name=extra",
        "extraVolumeMounts[0].mountPath=/extra",
    ])
    .await;
    for doc in &docs {
        let labels = &doc["metadata"]["labels"];
        assert_eq!(
            labels["team"], "platform",
            "{} without common labels",
            doc["kind"]
        );
    }
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 3);
    let volumes = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(volumes.contains(&json!({"name": "extra", "emptyDir": {"medium": "Memory"}})));
    let mounts = container(&docs)["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&json!({"name": "extra", "mountPath": "/extra"})));
}

/// The NetworkPolicy lets in the webhook port from the given peers and the metrics port from
/// anywhere; it and a PodDisruptionBudget with maxUnavailable are accepted by the API server.
#[tokio::test]
async fn network_policy_and_max_unavailable_are_accepted_by_the_api_server() {
    let docs = template(&[
        "networkPolicy.enabled=true",
        "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/8",
        "podDisruptionBudget.maxUnavailable=1",
    ])
    .await;
    let np = one(&docs, "NetworkPolicy");
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress[0]["ports"][0]["port"], "webhook");
    assert_eq!(
        ingress[0]["from"],
        json!([{"ipBlock": {"cidr": "10.0.0.0/8"}}])
    );
    assert_eq!(ingress[1]["ports"][0]["port"], "metrics");
    assert!(ingress[1].get("from").is_none(), "metrics from anywhere");
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"].get("minAvailable").is_none());

    let client = super::common::client().await;
    let ns = "default";
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // In a namespace that exists, whatever the release's.
    let in_ns = |mut v: Value| {
        v["metadata"]["namespace"] = json!(ns);
        v
    };
    let np: NetworkPolicy = serde_json::from_value(in_ns(np.clone())).unwrap();
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    nps.create(&dry, &np)
        .await
        .expect("the API server accepts the NetworkPolicy");
    let pdb: PodDisruptionBudget = serde_json::from_value(in_ns(pdb.clone())).unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, ns);
    pdbs.create(&dry, &pdb)
        .await
        .expect("the API server accepts the PodDisruptionBudget");
}

/// `helm test`'s objects: all hooks of the test, deleted once it passes; the check's rights are
/// read-only but for creating pods in the probe namespace (a dry-run), secrets only the serving
/// certificate's.
#[tokio::test]
async fn the_helm_test_checks_with_read_only_rights() {
    let out = helm_ok(&[
        "template",
        "mlflow-operator",
        CHART,
        "-n",
        "mlflow-operator",
        "--show-only",
        "templates/tests/check.yaml",
        "--set",
        "tests.namespace=team-a",
    ])
    .await;
    let docs = documents(&out);
    for d in &docs {
        let hook = &d["metadata"]["annotations"];
        assert_eq!(
            hook["helm.sh/hook"], "test",
            "{} is not a test hook",
            d["kind"]
        );
        assert!(
            hook["helm.sh/hook-delete-policy"]
                .as_str()
                .unwrap()
                .contains("hook-succeeded")
        );
    }
    let pod = one(&docs, "Pod");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        json!(["check", "-n", "team-a"])
    );
    // The Service, the PDB and `check` select the operator pods by these: never the test's.
    let installed = template(&[]).await;
    let selector = &one(&installed, "Service")["spec"]["selector"];
    let labels = &pod["metadata"]["labels"];
    let selected = selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| &labels[k] == v);
    assert!(
        !selected,
        "the test pod {labels} matches the operator pods' selector {selector}"
    );
    for role in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        for rule in role["rules"].as_array().unwrap() {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let writes: Vec<&&str> = verbs
                .iter()
                .filter(|v| !["get", "list"].contains(v))
                .collect();
            let probe_pods =
                role["metadata"]["namespace"] == "team-a" && rule["resources"] == json!(["pods"]);
            assert!(
                writes.is_empty() || (probe_pods && writes == [&"create"]),
                "{rule}"
            );
            if rule["resources"] == json!(["secrets"]) {
                assert_eq!(
                    rule["resourceNames"],
                    json!(["mlflow-operator-webhook-cert"])
                );
            }
        }
    }
}
