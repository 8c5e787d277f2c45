//! Plan-level tests: every rule of the injection contract, each applied with `json_patch::patch`
//! to the original pod (a wrong path fails), plus property tests for idempotence and preservation.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};

use super::*;

const NS: &str = "team-a";
const URI: &str = "https://mlflow.example.com";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const TENANT: &str = "22222222-2222-2222-2222-222222222222";

/// A Ready binding (generation 3) with this spec.
fn mwb(name: &str, spec: Value) -> MlflowWorkspaceBinding {
    serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": name, "namespace": NS, "generation": 3},
        "spec": spec,
        "status": {
            "observedGeneration": 3,
            "trackingUri": URI,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Resolved", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }
    }))
    .unwrap()
}

fn simple() -> MlflowWorkspaceBinding {
    mwb("fraud", json!({"trackingUri": URI}))
}

fn sa(annotations: Value) -> ServiceAccount {
    serde_json::from_value(
        json!({"metadata": {"name": "default", "namespace": NS, "annotations": annotations}}),
    )
    .unwrap()
}

fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"mlflow-operator.io/track": "true"}},
        "spec": {"containers": containers}
    })
}

fn one() -> Value {
    pod(json!([{"name": "train", "image": "x"}]))
}

fn plan_with(
    p: &Value,
    bindings: &[&MlflowWorkspaceBinding],
    sa: Option<&ServiceAccount>,
    defaults: &Defaults,
) -> Plan {
    let view = NamespaceView {
        namespace: NS,
        bindings: bindings.to_vec(),
        service_account: sa,
    };
    plan(p, &view, defaults)
}

/// Plans with these bindings, applies the patch to a copy of `p`; returns the result and warnings.
fn apply_with(
    p: &Value,
    bindings: &[&MlflowWorkspaceBinding],
    sa: Option<&ServiceAccount>,
    defaults: &Defaults,
) -> (Value, Vec<String>) {
    match plan_with(p, bindings, sa, defaults) {
        Plan::Inject {
            patch, warnings, ..
        } => {
            let mut out = p.clone();
            json_patch::patch(&mut out, &patch).unwrap_or_else(|e| panic!("{e}: {patch}"));
            (out, warnings)
        }
        other => panic!("expected Inject, got {other:?}"),
    }
}

fn apply(p: &Value, b: &MlflowWorkspaceBinding) -> (Value, Vec<String>) {
    apply_with(p, &[b], None, &Defaults::default())
}

/// The env of `spec.<list>[i]` as (name, value-or-valueFrom) pairs.
fn env(p: &Value, list: &str, i: usize) -> Vec<(String, Value)> {
    p["spec"][list][i]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e.get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone()),
            )
        })
        .collect()
}

fn names(p: &Value, list: &str, i: usize) -> Vec<String> {
    env(p, list, i).into_iter().map(|(n, _)| n).collect()
}

fn get<'a>(p: &'a Value, list: &str, i: usize, name: &str) -> Option<&'a Value> {
    p["spec"][list][i]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn refusal(plan: Plan) -> (RefusalReason, String, Option<String>) {
    match plan {
        Plan::Refuse {
            reason,
            message,
            binding,
        } => {
            assert!(message.starts_with("mlflow-operator: "), "{message}");
            assert!(message.contains(NS), "{message}");
            (reason, message, binding)
        }
        other => panic!("expected Refuse, got {other:?}"),
    }
}

#[test]
fn invalid_pod_is_refused_never_panics() {
    for p in [
        json!(null),
        json!(42),
        json!([]),
        json!({}),
        json!({"spec": null}),
        json!({"spec": {"containers": "x"}}),
        json!({"spec": {"containers": [{"image": "x"}]}}),
        json!({"spec": {"containers": [{"name": ["x"]}]}}),
        json!({"spec": {"containers": [], "initContainers": [{"name": null}]}}),
        json!({"metadata": "x", "spec": {"containers": []}}),
    ] {
        let (reason, message, _) = refusal(plan_with(&p, &[&simple()], None, &Defaults::default()));
        assert_eq!(reason, RefusalReason::InvalidPod, "{p}: {message}");
    }
}

#[test]
fn missing_named_binding_is_refused_naming_namespace_bindings_and_fix() {
    let mut p = one();
    p["metadata"]["annotations"] = json!({"mlflow-operator.io/binding": "nope"});
    let (b1, b2) = (
        mwb("zeta", json!({"trackingUri": URI})),
        mwb("alpha", json!({"trackingUri": URI})),
    );
    let (reason, message, binding) =
        refusal(plan_with(&p, &[&b1, &b2], None, &Defaults::default()));
    assert_eq!(reason, RefusalReason::MissingBinding);
    assert_eq!(binding, None);
    for part in [
        "\"nope\"",
        "mlflow-operator.io/binding",
        "alpha, zeta",
        "Fix:",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
}

#[test]
fn binding_annotation_picks_by_name_and_ignores_selector() {
    let mut p = one();
    p["metadata"]["annotations"] = json!({"mlflow-operator.io/binding": "picked"});
    let other = mwb("other", json!({"trackingUri": "http://other"}));
    let picked = mwb(
        "picked",
        json!({"trackingUri": URI, "podSelector": {"matchLabels": {"never": "matches"}}}),
    );
    match plan_with(&p, &[&other, &picked], None, &Defaults::default()) {
        Plan::Inject { binding, .. } => assert_eq!(binding, "picked"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_matching_binding_is_refused() {
    let b = mwb(
        "gpu",
        json!({"trackingUri": URI, "podSelector": {"matchLabels": {"tier": "gpu"}}}),
    );
    for bindings in [vec![], vec![&b]] {
        let (reason, message, _) =
            refusal(plan_with(&one(), &bindings, None, &Defaults::default()));
        assert_eq!(reason, RefusalReason::NoBinding);
        assert!(message.contains("Fix:"), "{message}");
    }
}

#[test]
fn several_matching_bindings_are_ambiguous_with_sorted_candidates_and_fix() {
    let (b, a, c) = (
        mwb("b", json!({"trackingUri": URI})),
        mwb("a", json!({"trackingUri": URI, "podSelector": {}})),
        mwb(
            "c",
            json!({"trackingUri": URI, "podSelector": {"matchLabels": {"tier": "gpu"}}}),
        ),
    );
    let (reason, message, _) =
        refusal(plan_with(&one(), &[&b, &a, &c], None, &Defaults::default()));
    assert_eq!(reason, RefusalReason::Ambiguous);
    assert!(message.contains(": a, b."), "{message}");
    assert!(message.contains("set annotation mlflow-operator.io/binding on the pod template, or make the podSelectors disjoint"));
}

#[test]
fn selector_chooses_the_single_matching_binding() {
    let cpu = mwb(
        "cpu",
        json!({"trackingUri": URI, "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gpu"]}]}}),
    );
    let gpu = mwb(
        "gpu",
        json!({"trackingUri": URI, "podSelector": {"matchLabels": {"tier": "gpu"}}}),
    );
    let mut p = one();
    p["metadata"]["labels"]["tier"] = json!("gpu");
    for (p, want) in [(one(), "cpu"), (p, "gpu")] {
        match plan_with(&p, &[&cpu, &gpu], None, &Defaults::default()) {
            Plan::Inject { binding, .. } => assert_eq!(binding, want),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn not_ready_binding_is_refused_with_condition_and_describe_hint() {
    let mut failing = simple();
    let cond = &mut failing.status.as_mut().unwrap().conditions[0];
    cond.status = "False".into();
    cond.reason = "Forbidden".into();
    cond.message = "the operator cannot read workspace ml-ws".into();
    let mut stale = simple();
    stale.metadata.generation = Some(4);
    let mut no_status = simple();
    no_status.status = None;
    for (b, want) in [
        (
            &failing,
            "reason Forbidden: the operator cannot read workspace ml-ws",
        ),
        (&stale, "generation 3 but the binding is at generation 4"),
        (&no_status, "no status"),
    ] {
        let (reason, message, binding) =
            refusal(plan_with(&one(), &[b], None, &Defaults::default()));
        assert_eq!(reason, RefusalReason::NotReady);
        assert_eq!(binding.as_deref(), Some("fraud"));
        assert!(message.contains(want), "{message}");
        assert!(
            message.contains("kubectl describe mwb fraud -n team-a"),
            "{message}"
        );
    }
}

#[test]
fn on_missing_binding_allow_admits_with_the_same_message_but_identity_errors_still_refuse() {
    let allow = Defaults {
        on_missing_binding: OnMissingBinding::Allow,
        ..Default::default()
    };
    let mut not_ready = simple();
    not_ready.status = None;
    let (x, y) = (
        mwb("x", json!({"trackingUri": URI})),
        mwb("y", json!({"trackingUri": URI})),
    );
    let mut named = one();
    named["metadata"]["annotations"] = json!({"mlflow-operator.io/binding": "nope"});
    for (p, bindings) in [
        (one(), vec![]),
        (one(), vec![&x, &y]),
        (named, vec![&x]),
        (one(), vec![&not_ready]),
    ] {
        let refused = refusal(plan_with(&p, &bindings, None, &Defaults::default()));
        assert_eq!(
            plan_with(&p, &bindings, None, &allow),
            Plan::Allow {
                warnings: vec![refused.1]
            }
        );
    }
    let wi = mwb(
        "wi",
        json!({"trackingUri": URI, "identity": {"workloadIdentity": {}}}),
    );
    let (reason, _, _) = refusal(plan_with(&one(), &[&wi], None, &allow));
    assert_eq!(reason, RefusalReason::Identity);
}

#[test]
fn values_tracking_registry_and_experiment() {
    let with_annotation = |v: &str| {
        let mut p = one();
        p["metadata"]["annotations"] = json!({"mlflow-operator.io/experiment-name": v});
        p
    };
    let mut status_registry = mwb("b", json!({"trackingUri": URI}));
    status_registry.status.as_mut().unwrap().registry_uri = Some("http://status-registry".into());
    let mut both = mwb(
        "b",
        json!({"trackingUri": URI, "registryUri": "http://spec-registry", "experimentName": "spec-exp"}),
    );
    both.status.as_mut().unwrap().registry_uri = Some("http://status-registry".into());
    let none = mwb("b", json!({"trackingUri": URI}));
    for (p, b, registry, experiment) in [
        (one(), &none, None, None),
        (
            one(),
            &status_registry,
            Some("http://status-registry"),
            None,
        ),
        (one(), &both, Some("http://spec-registry"), Some("spec-exp")),
        (
            with_annotation("pod-exp"),
            &both,
            Some("http://spec-registry"),
            Some("pod-exp"),
        ),
        (with_annotation("pod-exp"), &none, None, Some("pod-exp")),
        (
            with_annotation(""),
            &both,
            Some("http://spec-registry"),
            Some("spec-exp"),
        ),
    ] {
        let (out, _) = apply(&p, b);
        assert_eq!(
            get(&out, "containers", 0, "MLFLOW_TRACKING_URI").unwrap()["value"],
            URI
        );
        assert_eq!(
            get(&out, "containers", 0, "MLFLOW_REGISTRY_URI").map(|e| e["value"].clone()),
            registry.map(|s| json!(s))
        );
        assert_eq!(
            get(&out, "containers", 0, "MLFLOW_EXPERIMENT_NAME").map(|e| e["value"].clone()),
            experiment.map(|s| json!(s))
        );
    }
}

#[test]
fn azureml_current_cloud_and_authority_host_follow_the_cloud() {
    let ws = |cloud: &str| {
        json!({"azureML": {"subscriptionId": CLIENT, "resourceGroup": "rg", "workspaceName": "ws", "cloud": cloud},
                                  "identity": {"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "s", "key": "k"}}}})
    };
    let uri = |u: &str| json!({"trackingUri": u, "identity": {"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "s", "key": "k"}}}});
    for (spec, cloud, authority) in [
        (
            ws("AzurePublicCloud"),
            Some("AzureCloud"),
            "https://login.microsoftonline.com/",
        ),
        (
            ws("AzureChinaCloud"),
            Some("AzureChinaCloud"),
            "https://login.chinacloudapi.cn/",
        ),
        (
            ws("AzureUSGovernment"),
            Some("AzureUSGovernment"),
            "https://login.microsoftonline.us/",
        ),
        (
            uri("azureml://eastus.api.azureml.ms/mlflow/v1.0/x"),
            Some("AzureCloud"),
            "https://login.microsoftonline.com/",
        ),
        (
            uri("azureml://chinaeast2.api.ml.azure.cn/mlflow/v1.0/x"),
            Some("AzureChinaCloud"),
            "https://login.chinacloudapi.cn/",
        ),
        (
            uri("azureml://usgovvirginia.api.ml.azure.us/mlflow/v1.0/x"),
            Some("AzureUSGovernment"),
            "https://login.microsoftonline.us/",
        ),
        (
            uri("https://mlflow.example.com"),
            None,
            "https://login.microsoftonline.com/",
        ),
    ] {
        let (out, _) = apply(&one(), &mwb("b", spec.clone()));
        assert_eq!(
            get(&out, "containers", 0, "AZUREML_CURRENT_CLOUD").map(|e| e["value"].clone()),
            cloud.map(|s| json!(s)),
            "{spec}"
        );
        assert_eq!(
            get(&out, "containers", 0, "AZURE_AUTHORITY_HOST").unwrap()["value"],
            authority,
            "{spec}"
        );
    }
}

#[test]
fn auth_secret_is_referenced_by_optional_secret_key_refs_never_values() {
    let (out, _) = apply(
        &one(),
        &mwb(
            "b",
            json!({"trackingUri": URI, "auth": {"secretName": "creds"}}),
        ),
    );
    for (var, key) in [
        ("MLFLOW_TRACKING_USERNAME", "username"),
        ("MLFLOW_TRACKING_PASSWORD", "password"),
        ("MLFLOW_TRACKING_TOKEN", "token"),
    ] {
        assert_eq!(
            get(&out, "containers", 0, var).unwrap(),
            &json!({"name": var, "valueFrom": {"secretKeyRef": {"name": "creds", "key": key, "optional": true}}})
        );
    }
}

#[test]
fn env_order_is_fixed_and_spec_env_comes_last() {
    let b = mwb(
        "b",
        json!({
            "azureML": {"subscriptionId": CLIENT, "resourceGroup": "rg", "workspaceName": "ws"},
            "registryUri": "http://reg", "experimentName": "exp", "auth": {"secretName": "creds"},
            "identity": {"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}},
            "env": [{"name": "MLFLOW_TRACKING_INSECURE_TLS", "value": "true"}, {"name": "AZURE_CLIENT_ID", "value": "dup"}]
        }),
    );
    let (out, _) = apply(&one(), &b);
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_TRACKING_URI",
            "MLFLOW_REGISTRY_URI",
            "MLFLOW_EXPERIMENT_NAME",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
            "AZUREML_CURRENT_CLOUD",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_AUTHORITY_HOST",
            "AZURE_FEDERATED_TOKEN_FILE",
            "MLFLOW_TRACKING_INSECURE_TLS",
        ]
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_ID").unwrap()["value"],
        CLIENT
    );
}

#[test]
fn every_container_and_init_container_is_injected_and_native_sidecar_fields_kept() {
    let p = json!({
        "metadata": {"name": "p"},
        "spec": {
            "initContainers": [
                {"name": "setup", "image": "i"},
                {"name": "sidecar", "image": "s", "restartPolicy": "Always", "startupProbe": {"exec": {"command": ["true"]}}}
            ],
            "containers": [{"name": "a"}, {"name": "b", "env": [{"name": "KEEP", "value": "1"}]}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
        }
    });
    let (out, _) = apply(&p, &simple());
    for (list, i) in [
        ("initContainers", 0),
        ("initContainers", 1),
        ("containers", 0),
        ("containers", 1),
    ] {
        assert!(
            get(&out, list, i, "MLFLOW_TRACKING_URI").is_some(),
            "{list}[{i}]"
        );
    }
    assert_eq!(out["spec"]["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(
        out["spec"]["initContainers"][1]["startupProbe"],
        p["spec"]["initContainers"][1]["startupProbe"]
    );
    assert_eq!(names(&out, "containers", 1)[0], "KEEP");
    // Ephemeral containers are not touched.
    assert_eq!(
        out["spec"]["ephemeralContainers"],
        p["spec"]["ephemeralContainers"]
    );
}

#[test]
fn skip_containers_get_no_env_and_no_mount() {
    let mut p = pod(json!([{"name": "train"}, {"name": "proxy"}, {"name": "log"}]));
    p["spec"]["initContainers"] = json!([{"name": "init"}]);
    p["metadata"]["annotations"] = json!({"mlflow-operator.io/skip-containers": " proxy ;init, "});
    let b = mwb(
        "b",
        json!({"trackingUri": URI, "identity": {"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}}}),
    );
    let (out, _) = apply(&p, &b);
    for (list, i, injected) in [
        ("containers", 0, true),
        ("containers", 1, false),
        ("containers", 2, true),
        ("initContainers", 0, false),
    ] {
        assert_eq!(
            out["spec"][list][i].get("env").is_some(),
            injected,
            "{list}[{i}]"
        );
        assert_eq!(
            out["spec"][list][i].get("volumeMounts").is_some(),
            injected,
            "{list}[{i}]"
        );
    }
}

#[test]
fn existing_variable_is_never_changed_and_is_reported() {
    let p = pod(json!([{"name": "train", "env": [
        {"name": "MLFLOW_EXPERIMENT_NAME", "value": "mine"},
        {"name": "AZURE_CLIENT_ID", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}
    ]}]));
    let b = mwb(
        "b",
        json!({"trackingUri": URI, "experimentName": "theirs", "identity": {"managedIdentity": {"clientId": CLIENT}}}),
    );
    let (out, warnings) = apply(&p, &b);
    assert_eq!(
        get(&out, "containers", 0, "MLFLOW_EXPERIMENT_NAME").unwrap()["value"],
        "mine"
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_ID").unwrap()["valueFrom"]["secretKeyRef"]["name"],
        "x"
    );
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_EXPERIMENT_NAME",
            "AZURE_CLIENT_ID",
            "MLFLOW_TRACKING_URI"
        ]
    );
    assert_eq!(
        warnings,
        [
            "mlflow-operator: container \"train\" already sets MLFLOW_EXPERIMENT_NAME; left unchanged",
            "mlflow-operator: container \"train\" already sets AZURE_CLIENT_ID; left unchanged",
        ]
    );
}

#[test]
fn existing_entry_identical_to_ours_is_silent() {
    let p = pod(json!([{"name": "train", "env": [{"name": "MLFLOW_TRACKING_URI", "value": URI}]}]));
    let b = mwb("b", json!({"trackingUri": URI, "experimentName": "exp"}));
    let (out, warnings) = apply(&p, &b);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        names(&out, "containers", 0),
        ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"]
    );
}

#[test]
fn self_configured_container_gets_no_mlflow_variables_but_identity_and_cloud() {
    let p = pod(json!([
        {"name": "own", "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://own"}]},
        {"name": "plain"}
    ]));
    let b = mwb(
        "b",
        json!({
            "trackingUri": "azureml://eastus.api.azureml.ms/mlflow/v1.0/x", "experimentName": "exp",
            "identity": {"managedIdentity": {"clientId": CLIENT}},
            "env": [{"name": "MLFLOW_TRACKING_INSECURE_TLS", "value": "true"}, {"name": "OTHER", "value": "1"}]
        }),
    );
    let (out, warnings) = apply(&p, &b);
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_TRACKING_URI",
            "AZUREML_CURRENT_CLOUD",
            "AZURE_CLIENT_ID",
            "OTHER"
        ]
    );
    assert_eq!(
        get(&out, "containers", 0, "MLFLOW_TRACKING_URI").unwrap()["value"],
        "http://own"
    );
    assert!(names(&out, "containers", 1).contains(&"MLFLOW_EXPERIMENT_NAME".to_string()));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("\"own\" already sets MLFLOW_TRACKING_URI; it is self-configured"),
        "{warnings:?}"
    );
}

fn wi(extra: Value) -> MlflowWorkspaceBinding {
    mwb(
        "wi",
        json!({"trackingUri": URI, "identity": {"workloadIdentity": extra}}),
    )
}

#[test]
fn workload_identity_injects_env_projected_volume_and_mount() {
    let (out, _) = apply(
        &one(),
        &wi(json!({"clientId": CLIENT, "tenantId": TENANT, "tokenExpirationSeconds": 7200})),
    );
    let e = env(&out, "containers", 0);
    assert_eq!(
        e[1..],
        [
            ("AZURE_CLIENT_ID".to_string(), json!(CLIENT)),
            ("AZURE_TENANT_ID".to_string(), json!(TENANT)),
            (
                "AZURE_AUTHORITY_HOST".to_string(),
                json!("https://login.microsoftonline.com/")
            ),
            (
                "AZURE_FEDERATED_TOKEN_FILE".to_string(),
                json!("/var/run/secrets/mlflow-operator/azure/azure-identity-token")
            ),
        ]
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "mlflow-operator-azure-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "api://AzureADTokenExchange", "expirationSeconds": 7200, "path": "azure-identity-token"}}]}}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "mlflow-operator-azure-token", "mountPath": "/var/run/secrets/mlflow-operator/azure", "readOnly": true}])
    );
    let (out, _) = apply(&one(), &wi(json!({"clientId": CLIENT, "tenantId": TENANT})));
    assert_eq!(
        out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
}

#[test]
fn workload_identity_ids_come_from_binding_then_service_account_then_default_tenant() {
    let full_sa = sa(
        json!({"azure.workload.identity/client-id": "sa-client", "azure.workload.identity/tenant-id": "sa-tenant"}),
    );
    let client_sa = sa(json!({"azure.workload.identity/client-id": "sa-client"}));
    let with_default = Defaults {
        tenant_id: Some("default-tenant".into()),
        ..Default::default()
    };
    for (b, sa, defaults, client, tenant) in [
        (
            wi(json!({"clientId": CLIENT, "tenantId": TENANT})),
            Some(&full_sa),
            &with_default,
            CLIENT,
            TENANT,
        ),
        (
            wi(json!({})),
            Some(&full_sa),
            &with_default,
            "sa-client",
            "sa-tenant",
        ),
        (
            wi(json!({})),
            Some(&client_sa),
            &with_default,
            "sa-client",
            "default-tenant",
        ),
        (
            wi(json!({"clientId": CLIENT})),
            None,
            &with_default,
            CLIENT,
            "default-tenant",
        ),
    ] {
        let (out, _) = apply_with(&one(), &[&b], sa, defaults);
        assert_eq!(
            get(&out, "containers", 0, "AZURE_CLIENT_ID").unwrap()["value"],
            client
        );
        assert_eq!(
            get(&out, "containers", 0, "AZURE_TENANT_ID").unwrap()["value"],
            tenant
        );
    }
}

#[test]
fn workload_identity_without_client_or_tenant_is_refused_saying_where_to_set_it() {
    let mut p = one();
    p["spec"]["serviceAccountName"] = json!("trainer");
    let tenant_sa = sa(json!({"azure.workload.identity/tenant-id": TENANT}));
    for (b, sa, wants) in [
        (
            wi(json!({"tenantId": TENANT})),
            None,
            vec![
                "no client id",
                "spec.identity.workloadIdentity.clientId",
                "ServiceAccount \"trainer\" (not found)",
                "azure.workload.identity/client-id",
            ],
        ),
        (
            wi(json!({})),
            Some(&tenant_sa),
            vec![
                "no client id",
                "kubectl annotate serviceaccount trainer -n team-a azure.workload.identity/client-id=<client-id>",
            ],
        ),
        (
            wi(json!({"clientId": CLIENT})),
            None,
            vec![
                "no tenant id",
                "spec.identity.workloadIdentity.tenantId",
                "azure.workload.identity/tenant-id",
                "--default-tenant-id",
            ],
        ),
    ] {
        let (reason, message, binding) = refusal(plan_with(&p, &[&b], sa, &Defaults::default()));
        assert_eq!(reason, RefusalReason::Identity);
        assert_eq!(binding.as_deref(), Some("wi"));
        assert!(
            message.contains("MlflowWorkspaceBinding \"wi\""),
            "{message}"
        );
        for want in wants {
            assert!(message.contains(want), "{want}: {message}");
        }
    }
}

#[test]
fn token_volume_and_mount_are_added_only_when_absent() {
    let b = wi(json!({"clientId": CLIENT, "tenantId": TENANT}));
    let p = json!({"spec": {
    "volumes": [{"name": "mlflow-operator-azure-token", "emptyDir": {}}],
    "containers": [
        {"name": "by-name", "volumeMounts": [{"name": "mlflow-operator-azure-token", "mountPath": "/elsewhere"}]},
        {"name": "by-path", "volumeMounts": [{"name": "mine", "mountPath": "/var/run/secrets/mlflow-operator/azure"}]},
        {"name": "fresh", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    ]}});
    let (out, warnings) = apply(&p, &b);
    assert_eq!(out["spec"]["volumes"], p["spec"]["volumes"]);
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        p["spec"]["containers"][0]["volumeMounts"]
    );
    assert_eq!(
        out["spec"]["containers"][1]["volumeMounts"],
        p["spec"]["containers"][1]["volumeMounts"]
    );
    assert_eq!(
        out["spec"]["containers"][2]["volumeMounts"][1]["name"],
        "mlflow-operator-azure-token"
    );
    assert_eq!(warnings.len(), 3, "{warnings:?}");
}

#[test]
fn managed_identity_injects_only_azure_client_id_when_given() {
    let (out, _) = apply(
        &one(),
        &mwb(
            "mi",
            json!({"trackingUri": URI, "identity": {"managedIdentity": {"clientId": CLIENT}}}),
        ),
    );
    assert_eq!(
        names(&out, "containers", 0),
        ["MLFLOW_TRACKING_URI", "AZURE_CLIENT_ID"]
    );
    assert!(
        out["spec"].get("volumes").is_none()
            && out["spec"]["containers"][0].get("volumeMounts").is_none()
    );
    let (out, _) = apply(
        &one(),
        &mwb(
            "mi",
            json!({"trackingUri": URI, "identity": {"managedIdentity": {}}}),
        ),
    );
    assert_eq!(names(&out, "containers", 0), ["MLFLOW_TRACKING_URI"]);
}

#[test]
fn service_principal_with_client_secret() {
    let b = mwb(
        "sp",
        json!({"trackingUri": URI, "identity": {"servicePrincipal": {
        "clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "sp-creds", "key": "clientSecret"}}}}),
    );
    let (out, _) = apply(&one(), &b);
    assert_eq!(
        names(&out, "containers", 0),
        [
            "MLFLOW_TRACKING_URI",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_AUTHORITY_HOST",
            "AZURE_CLIENT_SECRET"
        ]
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_SECRET").unwrap(),
        &json!({"name": "AZURE_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "sp-creds", "key": "clientSecret"}}})
    );
    assert!(out["spec"].get("volumes").is_none());
}

#[test]
fn service_principal_with_certificate_mounts_the_secret() {
    let b = mwb(
        "sp",
        json!({"trackingUri": URI, "identity": {"servicePrincipal": {
        "clientId": CLIENT, "tenantId": TENANT, "certificateSecretRef": {"name": "sp-cert", "key": "tls.pem", "passwordKey": "password"}}}}),
    );
    let (out, _) = apply(&one(), &b);
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_CERTIFICATE_PATH").unwrap()["value"],
        "/var/run/secrets/mlflow-operator/azure-sp/tls.pem"
    );
    assert_eq!(
        get(&out, "containers", 0, "AZURE_CLIENT_CERTIFICATE_PASSWORD").unwrap()["valueFrom"],
        json!({"secretKeyRef": {"name": "sp-cert", "key": "password"}})
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "mlflow-operator-azure-sp-cert", "secret": {"secretName": "sp-cert", "items": [{"key": "tls.pem", "path": "tls.pem"}]}}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "mlflow-operator-azure-sp-cert", "mountPath": "/var/run/secrets/mlflow-operator/azure-sp", "readOnly": true}])
    );
    let no_pw = mwb(
        "sp",
        json!({"trackingUri": URI, "identity": {"servicePrincipal": {
        "clientId": CLIENT, "tenantId": TENANT, "certificateSecretRef": {"name": "sp-cert", "key": "tls.pem"}}}}),
    );
    let (out, _) = apply(&one(), &no_pw);
    assert!(get(&out, "containers", 0, "AZURE_CLIENT_CERTIFICATE_PASSWORD").is_none());
}

#[test]
fn azure_workload_identity_labelled_pod_gets_mlflow_only_and_annotation_says_so() {
    let mut p = one();
    p["metadata"]["labels"]["azure.workload.identity/use"] = json!("true");
    let b = mwb(
        "wi",
        json!({"azureML": {"subscriptionId": CLIENT, "resourceGroup": "rg", "workspaceName": "ws"},
                             "identity": {"workloadIdentity": {}}}),
    );
    let (out, _) = apply(&p, &b);
    assert_eq!(
        names(&out, "containers", 0),
        ["MLFLOW_TRACKING_URI", "AZUREML_CURRENT_CLOUD"]
    );
    assert!(
        out["spec"].get("volumes").is_none()
            && out["spec"]["containers"][0].get("volumeMounts").is_none()
    );
    assert_eq!(
        out["metadata"]["annotations"]["mlflow-operator.io/injected"],
        "wi/3 (identity: azure-workload-identity)"
    );
}

#[test]
fn injected_annotation_is_added_replaced_or_left() {
    let with = |annotations: Value| {
        let mut p = one();
        p["metadata"]["annotations"] = annotations;
        p
    };
    let mut no_generation = simple();
    no_generation.metadata.generation = None;
    no_generation.status.as_mut().unwrap().observed_generation = None;
    let mut no_metadata = one();
    no_metadata.as_object_mut().unwrap().remove("metadata");
    for (p, b, op) in [
        (
            one(),
            simple(),
            json!({"op": "add", "path": "/metadata/annotations", "value": {"mlflow-operator.io/injected": "fraud/3"}}),
        ),
        (
            with(json!(null)),
            simple(),
            json!({"op": "add", "path": "/metadata/annotations", "value": {"mlflow-operator.io/injected": "fraud/3"}}),
        ),
        (
            no_metadata,
            simple(),
            json!({"op": "add", "path": "/metadata", "value": {"annotations": {"mlflow-operator.io/injected": "fraud/3"}}}),
        ),
        (
            with(json!({"a": "b"})),
            simple(),
            json!({"op": "add", "path": "/metadata/annotations/mlflow-operator.io~1injected", "value": "fraud/3"}),
        ),
        (
            with(json!({"mlflow-operator.io/injected": "fraud/2"})),
            simple(),
            json!({"op": "replace", "path": "/metadata/annotations/mlflow-operator.io~1injected", "value": "fraud/3"}),
        ),
        (
            one(),
            no_generation,
            json!({"op": "add", "path": "/metadata/annotations", "value": {"mlflow-operator.io/injected": "fraud/0"}}),
        ),
    ] {
        let Plan::Inject { patch, .. } = plan_with(&p, &[&b], None, &Defaults::default()) else {
            panic!()
        };
        let ops = serde_json::to_value(&patch).unwrap();
        assert_eq!(ops.as_array().unwrap().last().unwrap(), &op, "{p}");
        let mut out = p.clone();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    let done = with(json!({"mlflow-operator.io/injected": "fraud/3"}));
    let (out, _) = apply(&done, &simple());
    assert_eq!(
        out["metadata"]["annotations"],
        json!({"mlflow-operator.io/injected": "fraud/3"})
    );
}

#[test]
fn patch_adds_whole_arrays_when_absent_and_appends_otherwise() {
    let b = wi(json!({"clientId": CLIENT, "tenantId": TENANT}));
    let absent = one();
    let present = json!({"metadata": {"annotations": {}}, "spec": {
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "c", "env": [{"name": "X", "value": "1"}], "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}});
    let Plan::Inject { patch, .. } = plan_with(&absent, &[&b], None, &Defaults::default()) else {
        panic!()
    };
    let paths: Vec<String> = patch.iter().map(|o| o.path().to_string()).collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/0/env",
            "/spec/containers/0/volumeMounts",
            "/spec/volumes",
            "/metadata/annotations"
        ]
    );
    let Plan::Inject { patch, .. } = plan_with(&present, &[&b], None, &Defaults::default()) else {
        panic!()
    };
    let ops = serde_json::to_value(&patch).unwrap();
    for op in ops.as_array().unwrap() {
        assert_eq!(op["op"], "add");
    }
    let paths: Vec<String> = patch.iter().map(|o| o.path().to_string()).collect();
    assert_eq!(
        paths
            .iter()
            .filter(|p| *p == "/spec/containers/0/env/-")
            .count(),
        5
    );
    assert!(paths.contains(&"/spec/containers/0/volumeMounts/-".to_string()));
    assert!(paths.contains(&"/spec/volumes/-".to_string()));
    let (out, _) = apply(&present, &b);
    assert_eq!(out["spec"]["volumes"][0]["name"], "data");
}

#[test]
fn env_from_is_warned_once_per_container_when_we_add_env() {
    let p = pod(json!([
        {"name": "a", "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}}]},
        {"name": "b", "envFrom": []}
    ]));
    let (_, warnings) = apply(&p, &simple());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("container \"a\" has envFrom"),
        "{warnings:?}"
    );
}

#[test]
fn unknown_fields_survive() {
    let p = json!({
        "metadata": {"name": "p", "futureMeta": {"x": 1}},
        "spec": {"futurePodField": [1, 2], "containers": [{"name": "c", "futureContainerField": {"deep": true},
                 "env": [{"name": "X", "value": "1", "futureEnvField": "y"}]}]},
        "status": {"phase": "Pending"},
        "futureTopLevel": true
    });
    let (out, _) = apply(&p, &wi(json!({"clientId": CLIENT, "tenantId": TENANT})));
    assert_eq!(out["metadata"]["futureMeta"], p["metadata"]["futureMeta"]);
    assert_eq!(out["spec"]["futurePodField"], p["spec"]["futurePodField"]);
    assert_eq!(
        out["spec"]["containers"][0]["futureContainerField"],
        p["spec"]["containers"][0]["futureContainerField"]
    );
    assert_eq!(
        out["spec"]["containers"][0]["env"][0],
        p["spec"]["containers"][0]["env"][0]
    );
    assert_eq!(out["status"], p["status"]);
    assert_eq!(out["futureTopLevel"], true);
}

#[test]
fn reinvocation_gives_an_empty_patch_and_no_warnings() {
    let p = pod(json!([
        {"name": "own", "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://own"}], "envFrom": [{"secretRef": {"name": "s"}}]},
        {"name": "exp", "env": [{"name": "MLFLOW_EXPERIMENT_NAME", "value": "mine"}]}
    ]));
    let b = mwb(
        "b",
        json!({"trackingUri": URI, "experimentName": "e", "identity": {"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}}}),
    );
    let (once, warnings) = apply(&p, &b);
    assert!(!warnings.is_empty());
    assert_eq!(
        plan_with(&once, &[&b], None, &Defaults::default()),
        Plan::Inject {
            binding: "b".into(),
            patch: json_patch::Patch(vec![]),
            warnings: vec![]
        }
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const ENV_NAMES: &[&str] = &[
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MLFLOW_TRACKING_TOKEN",
        "EXTRA",
        "FOO",
        "BAR",
    ];

    fn env_entry() -> impl Strategy<Value = Value> {
        (prop::sample::select(ENV_NAMES), any::<bool>(), "[a-z]{0,4}").prop_map(
            |(name, from, v)| {
                if from {
                    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": v}}})
                } else {
                    json!({"name": name, "value": v})
                }
            },
        )
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
        (0usize..4)
            .prop_flat_map(move |n| (0..n).map(|i| container(offset + i)).collect::<Vec<_>>())
    }

    fn pod_strategy() -> impl Strategy<Value = Value> {
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

    fn binding_strategy() -> impl Strategy<Value = MlflowWorkspaceBinding> {
        let identity = prop::sample::select(vec![
            json!(null),
            json!({"workloadIdentity": {"clientId": CLIENT, "tenantId": TENANT}}),
            json!({"managedIdentity": {"clientId": CLIENT}}),
            json!({"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT, "clientSecretRef": {"name": "s", "key": "k"}}}),
            json!({"servicePrincipal": {"clientId": CLIENT, "tenantId": TENANT,
                    "certificateSecretRef": {"name": "c", "key": "tls.pem", "passwordKey": "pw"}}}),
        ]);
        (identity, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(identity, azure, exp, auth, extra)| {
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
                prop_assert!(json_patch::patch(&mut out, &patch).is_ok(), "{}", patch);
            }
        }

        #[test]
        fn applying_the_plan_twice_changes_nothing_the_second_time(p in pod_strategy(), b in binding_strategy()) {
            let (once, _) = apply(&p, &b);
            let second = plan_with(&once, &[&b], None, &Defaults::default());
            prop_assert_eq!(second, Plan::Inject { binding: "b".into(), patch: json_patch::Patch(vec![]), warnings: vec![] });
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
}
