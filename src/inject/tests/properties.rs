//! Properties over generated pods and bindings: the planner never panics, its patch always
//! applies, applying it twice changes nothing, and nothing the pod had is altered.

use super::*;
use proptest::prelude::*;

const ENV_NAMES: &[&str] = &[
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "MLFLOW_TRACKING_TOKEN",
    "EXTRA",
    "AZUREML_CURRENT_CLOUD",
    "MLFLOW_RUN_CONTEXT",
    "MSI_ENDPOINT",
    "FOO",
    "BAR",
];

fn env_entry() -> impl Strategy<Value = Value> {
    (prop::sample::select(ENV_NAMES), any::<bool>(), "[a-z]{0,4}").prop_map(|(name, from, v)| {
        if from {
            json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": v}}})
        } else {
            json!({"name": name, "value": v})
        }
    })
}

fn mount() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(
            &[
                "data",
                "mlflow-operator-azure-token",
                "mlflow-operator-azure-sp-cert",
                "cache",
            ][..],
        ),
        prop::sample::select(
            &[
                "/data",
                "/var/run/secrets/mlflow-operator/azure",
                "/var/run/secrets/mlflow-operator/azure-sp",
                "/tmp",
            ][..],
        ),
    )
        .prop_map(|(n, p)| json!({"name": n, "mountPath": p}))
}

fn container(i: usize) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(env_entry(), 0..4)),
        prop::option::of(prop::collection::vec(mount(), 0..3)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(env, mounts, env_from, unknown)| {
            let mut c = json!({"name": format!("c{i}"), "image": "img"});
            if let Some(env) = env {
                c["env"] = json!(env);
            }
            if let Some(mounts) = mounts {
                c["volumeMounts"] = json!(mounts);
            }
            if env_from {
                c["envFrom"] = json!([{"configMapRef": {"name": "cm"}}]);
            }
            if unknown {
                c["futureField"] = json!({"x": [1, 2]});
                c["restartPolicy"] = json!("Always");
            }
            c
        })
}

fn containers(offset: usize) -> impl Strategy<Value = Vec<Value>> {
    (0usize..4).prop_flat_map(move |n| (0..n).map(|i| container(offset + i)).collect::<Vec<_>>())
}

pub(super) fn pod_strategy() -> impl Strategy<Value = Value> {
    (
        containers(0).prop_filter("a pod has a container", |c| !c.is_empty()),
        prop::option::of(containers(10)),
        prop::option::of(prop::collection::vec(
            prop::sample::select(&["data", "mlflow-operator-azure-token", "mlflow-operator-azure-sp-cert"][..])
                .prop_map(|n| json!({"name": n, "emptyDir": {}})),
            0..3,
        )),
        prop::option::of((
            prop::option::of("[a-z]{1,5}"),
            prop::option::of(prop::sample::select(&["c0", "c1;c10", " c2 , c11", ""][..])),
            prop::option::of(prop::sample::select(&["b/3", "b/2", "other/1"][..])),
        )),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(containers, init, volumes, annotations, azwi, unknown)| {
            let mut p = json!({"metadata": {"name": "p", "labels": {"mlflow-operator.io/track": "true"}},
                               "spec": {"containers": containers}});
            if let Some(init) = init {
                p["spec"]["initContainers"] = json!(init);
            }
            if let Some(volumes) = volumes {
                p["spec"]["volumes"] = json!(volumes);
            }
            if let Some((exp, skip, injected)) = annotations {
                let mut a = json!({"unrelated/annotation": "x"});
                if let Some(exp) = exp {
                    a["mlflow-operator.io/experiment-name"] = json!(exp);
                }
                if let Some(skip) = skip {
                    a["mlflow-operator.io/skip-containers"] = json!(skip);
                }
                if let Some(injected) = injected {
                    a["mlflow-operator.io/injected"] = json!(injected);
                }
                p["metadata"]["annotations"] = a;
            }
            if azwi {
                p["metadata"]["labels"]["azure.workload.identity/use"] = json!("true");
            }
            if unknown {
                p["spec"]["futurePodField"] = json!({"keep": "me"});
                p["futureTopLevel"] = json!(1);
            }
            p
        })
}

pub(super) fn binding_strategy() -> impl Strategy<Value = MlflowWorkspaceBinding> {
    let identity = prop::sample::select(vec![
        json!(null),
        json!({"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}}),
        json!({"managedIdentity": {"clientId": CLIENT}}),
        json!({"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "s", "key": "k"}}}),
        json!({"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT,
                "certificateSecretRef": {"name": "c", "key": "tls.pem", "passwordKey": "pw"}}}),
    ]);
    (identity, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(identity, azure, exp, auth, extra, tags)| {
        let mut spec = if azure {
            json!({"azureML": {"subscriptionId": CLIENT, "resourceGroup": "rg", "workspaceName": "ws", "cloud": "AzureChinaCloud"}})
        } else {
            json!({"trackingUri": URI})
        };
        if !identity.is_null() {
            spec["identity"] = identity;
        }
        if exp {
            spec["experimentName"] = json!("exp");
        }
        if auth {
            spec["auth"] = json!({"secretName": "creds"});
        }
        if extra {
            spec["env"] = json!([{"name": "EXTRA", "value": "x"}, {"name": "MLFLOW_TRACKING_INSECURE_TLS", "value": "true"}]);
        }
        if tags {
            spec["runTags"] = json!({"extra": {"team": "fraud", "MLFLOW_TRACKING_URI": "$(x)"}});
            spec["systemMetrics"] = json!({"samplingIntervalSeconds": 5});
        }
        mwb("b", spec)
    })
}

/// Checks `after` keeps every entry of `before` at the same index.
fn prefix_kept(before: Option<&Value>, after: Option<&Value>, what: &str) {
    if let Some(Value::Array(b)) = before {
        let a = after
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{what} removed"));
        assert!(
            a.len() >= b.len() && a[..b.len()] == b[..],
            "{what} altered: {b:?} -> {a:?}"
        );
    }
}

/// Every key of `before` except `except` is unchanged in `after`.
fn others_kept(before: &Value, after: &Value, except: &[&str], what: &str) {
    for (k, v) in before.as_object().into_iter().flatten() {
        if !except.contains(&k.as_str()) {
            assert_eq!(after.get(k), Some(v), "{what}.{k} altered");
        }
    }
}

/// Arbitrary JSON biased towards the keys the planner reads.
/// Every entry the plan of `p` adds, with the path of the operation that adds it.
fn added_entries(p: &Value, b: &MlflowWorkspaceBinding) -> Vec<(String, Value)> {
    let Plan::Inject { patch, .. } = plan_with(p, &[b], None, &Defaults::default()) else {
        return Vec::new();
    };
    let added: Vec<Value> = serde_json::from_slice(patch.json()).unwrap();
    let mut entries = Vec::new();
    for op in added {
        let path = op["path"].as_str().unwrap().to_string();
        match &op["value"] {
            Value::Array(items) => entries.extend(items.iter().map(|e| (path.clone(), e.clone()))),
            one => entries.push((path, one.clone())),
        }
    }
    entries
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(&["c0", "true", "", "MLFLOW_TRACKING_URI", "b/3"][..])
            .prop_map(|s| json!(s)),
    ];
    let keys = prop::sample::select(
        &[
            "metadata",
            "labels",
            "annotations",
            "spec",
            "containers",
            "initContainers",
            "name",
            "env",
            "volumeMounts",
            "volumes",
            "envFrom",
            "mlflow-operator.io/track",
            "mlflow-operator.io/injected",
            "mlflow-operator.io/skip-containers",
            "serviceAccountName",
        ][..],
    );
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..5).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plan_never_panics_and_its_patch_applies(p in any_json(), b in binding_strategy()) {
        if let Plan::Inject { patch, .. } = plan_with(&p, &[&b], None, &Defaults::default()) {
            let mut out = p.clone();
            prop_assert!(json_patch::patch(&mut out, &patch.operations()).is_ok(), "{}", patch);
        }
    }

    #[test]
    fn the_webhook_plans_on_its_sparse_parse_as_on_the_whole_pod(
        p in prop_oneof![any_json(), pod_strategy()],
        b in binding_strategy(),
    ) {
        let sparse = crate::inject::parse_pod(&p.to_string(), &crate::inject::EnvNames::of([&b])).unwrap();
        let defaults = Defaults::default();
        prop_assert_eq!(plan_with(&sparse, &[&b], None, &defaults), plan_with(&p, &[&b], None, &defaults));
    }

    #[test]
    fn the_webhook_plans_on_its_tree_as_on_the_whole_pod(
        p in prop_oneof![any_json(), pod_strategy()],
        b in binding_strategy(),
    ) {
        if let Some(fast) = super::tree::plan_on_tree(&p.to_string(), &b) {
            prop_assert_eq!(fast, plan_with(&p, &[&b], None, &Defaults::default()));
        }
    }

    #[test]
    fn every_generated_pod_is_read_on_the_tree(p in pod_strategy(), b in binding_strategy()) {
        prop_assert!(super::tree::plan_on_tree(&p.to_string(), &b).is_some());
    }

    /// The planner writes the patch's text itself; it is byte for byte what serializing its
    /// operations as a `json_patch::Patch` gives, as the planner's patch was before.
    #[test]
    fn the_patch_text_is_json_patchs_own(p in prop_oneof![any_json(), pod_strategy()], b in binding_strategy()) {
        if let Plan::Inject { patch, .. } = plan_with(&p, &[&b], None, &Defaults::default()) {
            let ops = patch.operations();
            prop_assert_eq!(ops.len(), patch.len());
            prop_assert_eq!(serde_json::to_vec(&ops).unwrap(), patch.json());
        }
    }

    #[test]
    fn every_env_name_the_planner_adds_is_one_the_sparse_parse_keeps(p in pod_strategy(), b in binding_strategy()) {
        let keep = crate::inject::EnvNames::of([&b]);
        for (path, e) in added_entries(&p, &b) {
            if path.contains("/env") {
                let name = e["name"].as_str().unwrap();
                prop_assert!(keep.keeps(name), "{} is added but dropped by the sparse parse", name);
            }
        }
    }

    #[test]
    fn every_mount_and_volume_the_planner_adds_is_one_the_sparse_parse_keeps(p in pod_strategy(), b in binding_strategy()) {
        let keep = crate::inject::EnvNames::of([&b]);
        for (path, e) in added_entries(&p, &b) {
            let (name, at) = (e["name"].as_str(), e["mountPath"].as_str());
            // A mount is kept by its name alone and by its path alone.
            let kept = if path.contains("/volumeMounts") {
                keep.keeps_mount(name, None) && keep.keeps_mount(None, at)
            } else if path.starts_with("/spec/volumes") {
                keep.keeps_volume(name)
            } else {
                continue;
            };
            prop_assert!(kept, "{} is added but dropped by the sparse parse", e);
        }
    }

    #[test]
    fn applying_the_plan_twice_changes_nothing_the_second_time(p in pod_strategy(), b in binding_strategy()) {
        let (once, _) = apply(&p, &b);
        let second = plan_with(&once, &[&b], None, &Defaults::default());
        prop_assert_eq!(second, Plan::Inject { binding: "b".into(), patch: Patch::default(), warnings: vec![] });
    }

    #[test]
    fn nothing_that_existed_is_altered_or_removed(p in pod_strategy(), b in binding_strategy()) {
        let (out, _) = apply(&p, &b);
        others_kept(&p, &out, &["metadata", "spec"], "");
        others_kept(&p["metadata"], &out["metadata"], &["annotations"], "metadata");
        others_kept(&p["metadata"]["annotations"], &out["metadata"]["annotations"], &["mlflow-operator.io/injected"], "annotations");
        others_kept(&p["spec"], &out["spec"], &["containers", "initContainers", "volumes"], "spec");
        prefix_kept(p["spec"].get("volumes"), out["spec"].get("volumes"), "volumes");
        for list in ["containers", "initContainers"] {
            let before = p["spec"].get(list).and_then(Value::as_array).cloned().unwrap_or_default();
            let after = out["spec"].get(list).and_then(Value::as_array).cloned().unwrap_or_default();
            prop_assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(&after) {
                others_kept(b, a, &["env", "volumeMounts"], list);
                prefix_kept(b.get("env"), a.get("env"), "env");
                prefix_kept(b.get("volumeMounts"), a.get("volumeMounts"), "volumeMounts");
            }
        }
    }
}
