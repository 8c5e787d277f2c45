//! The webhook's memo of offers changes no answer: a run of admissions planned through one memo
//! gets, at every step, what planning without it gives. The pools are small, so keys repeat and
//! near-misses (one input changed) follow each other.

use proptest::prelude::*;

use super::properties::{binding_strategy, pod_strategy};
use super::*;

/// A binding of the pool: its uid repeats every second version, each with its own
/// resourceVersion, as the API server gives a changed binding. With `from_pod`, its identity
/// is workload identity with the client and tenant ids of the ServiceAccount and the defaults,
/// the one identity that depends on them.
fn versioned(
    (mut b, from_pod): (MlflowWorkspaceBinding, bool),
    i: usize,
) -> MlflowWorkspaceBinding {
    b.metadata.uid = Some(format!("b-{}", i / 2));
    b.metadata.resource_version = Some(i.to_string());
    if from_pod {
        b.spec.identity = serde_json::from_value(json!({"workloadIdentity": {}})).unwrap();
    }
    b
}

fn service_accounts() -> Vec<Option<ServiceAccount>> {
    let sa = |uid: &str, rv: &str, annotations: Value| {
        serde_json::from_value(json!({"metadata": {"name": "default", "namespace": NS,
            "uid": uid, "resourceVersion": rv, "annotations": annotations}}))
        .unwrap()
    };
    let client = "azure.workload.identity/client-id";
    let tenant = "azure.workload.identity/tenant-id";
    vec![
        None,
        Some(sa("s-1", "1", json!({client: CLIENT}))),
        Some(sa("s-1", "2", json!({client: CLIENT, tenant: TENANT}))),
        Some(sa("s-2", "3", json!({}))),
    ]
}

/// The inputs an offer depends on that pods of one namespace differ in: the pool's pods share
/// the rest, and each of these has two values, so pods that differ in one only are common.
#[derive(Clone, Debug)]
struct Differences {
    owner: usize,
    account: bool,
    template_hash: bool,
    experiment: bool,
    azwi: bool,
}

fn differences() -> impl Strategy<Value = Differences> {
    (
        0usize..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(owner, account, template_hash, experiment, azwi)| Differences {
                owner,
                account,
                template_hash,
                experiment,
                azwi,
            },
        )
}

/// `base` with these differences.
fn pool_pod(base: &Value, d: &Differences) -> Value {
    let owners = [
        json!([{"kind": "ReplicaSet", "name": "train-5d4f", "controller": true}]),
        json!([{"kind": "Job", "name": "train-5d4f", "controller": true}]),
        json!([{"kind": "ReplicaSet", "name": "train-6e5a", "controller": true}]),
    ];
    let mut p = base.clone();
    p["metadata"]["ownerReferences"] = owners[d.owner].clone();
    let account = if d.account { "default" } else { "other" };
    p["spec"]["serviceAccountName"] = json!(account);
    let labels = &mut p["metadata"]["labels"];
    labels["pod-template-hash"] = json!(if d.template_hash { "5d4f" } else { "6e5a" });
    labels["azure.workload.identity/use"] = json!(d.azwi.to_string());
    let experiment = if d.experiment { "a" } else { "b" };
    p["metadata"]["annotations"]["mlflow-operator.io/experiment-name"] = json!(experiment);
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn planning_through_the_memo_answers_as_planning_without(
        base in pod_strategy(),
        pods in prop::collection::vec(differences(), 3),
        bindings in prop::collection::vec((binding_strategy(), any::<bool>()), 4),
        admissions in prop::collection::vec((0usize..3, 0usize..4, 0usize..4, any::<bool>(), any::<bool>()), 24),
    ) {
        let bindings: Vec<_> = bindings.into_iter().enumerate().map(|(i, b)| versioned(b, i)).collect();
        let pods: Vec<Value> = pods.iter().map(|d| pool_pod(&base, d)).collect();
        let accounts = service_accounts();
        let offers = Offers::new();
        for (pod, binding, account, tenant, other_namespace) in admissions {
            let view = NamespaceView {
                namespace: if other_namespace { "team-b" } else { NS },
                bindings: vec![&bindings[binding]],
                service_account: accounts[account].as_ref(),
            };
            let defaults = Defaults {
                tenant_id: tenant.then(|| TENANT.to_string()),
                ..Defaults::default()
            };
            let memoized = plan_memoized(&pods[pod], &view, &defaults, &offers);
            prop_assert_eq!(memoized, plan(&pods[pod], &view, &defaults));
        }
    }
}
