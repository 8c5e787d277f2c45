use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};

use super::*;
use crate::inject::pod::Owner;

fn binding(metadata: Value) -> MlflowWorkspaceBinding {
    serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
        "metadata": metadata,
        "spec": {"trackingUri": "http://mlflow:5000", "experimentName": "e",
                 "identity": {"workloadIdentity": {}}},
        "status": {"trackingUri": "http://mlflow:5000"}
    }))
    .unwrap()
}

fn service_account(metadata: Value) -> ServiceAccount {
    serde_json::from_value(json!({"metadata": metadata})).unwrap()
}

/// One lookup's inputs, each part replaceable by a case.
#[derive(Clone)]
struct Lookup {
    binding: Value,
    service_account: Option<Value>,
    namespace: &'static str,
    tenant: Option<&'static str>,
    pod: PodInputs<'static>,
}

/// A case's name and how it changes the base lookup.
type Case = (&'static str, fn(&mut Lookup));

fn base() -> Lookup {
    Lookup {
        binding: json!({"name": "b", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}),
        service_account: Some(json!({"name": "sa", "uid": "s-1", "resourceVersion": "3",
            "annotations": {"azure.workload.identity/client-id": "c"}})),
        namespace: "ns",
        tenant: Some("t"),
        pod: PodInputs {
            experiment: None,
            azwi_opt_out: false,
            service_account: "sa",
            template_hash: Some("5d4f"),
            owner: Some(Owner {
                kind: "ReplicaSet",
                name: "train-5d4f",
            }),
        },
    }
}

fn get(offers: &Offers, l: &Lookup) -> Offered {
    let b = binding(l.binding.clone());
    let sa = l.service_account.clone().map(service_account);
    let ctx = Context {
        namespace: l.namespace,
        service_account: sa.as_ref(),
        default_tenant_id: l.tenant,
    };
    offers.get(&b, &l.pod, &ctx)
}

#[test]
fn the_same_inputs_get_the_offer_built_for_them() {
    let offers = Offers::new();
    let first = get(&offers, &base());
    assert!(first.is_ok(), "{first:?}");
    assert!(Arc::ptr_eq(&first, &get(&offers, &base())));
}

/// Every input the offer is built from is in its key: a lookup that differs in one gets an offer
/// of its own, never the base's.
#[test]
fn a_change_in_any_input_misses() {
    let cases: [Case; 14] = [
        ("binding resourceVersion", |l| {
            l.binding["resourceVersion"] = json!("8")
        }),
        ("binding uid", |l| l.binding["uid"] = json!("u-2")),
        ("ServiceAccount resourceVersion", |l| {
            l.service_account.as_mut().unwrap()["resourceVersion"] = json!("4")
        }),
        ("ServiceAccount uid", |l| {
            l.service_account.as_mut().unwrap()["uid"] = json!("s-2")
        }),
        ("no ServiceAccount", |l| l.service_account = None),
        ("namespace", |l| l.namespace = "other"),
        ("default tenant", |l| l.tenant = Some("t2")),
        ("no default tenant", |l| l.tenant = None),
        ("experiment", |l| l.pod.experiment = Some("x")),
        ("azwi opt-out", |l| l.pod.azwi_opt_out = true),
        ("pod's ServiceAccount name", |l| {
            l.pod.service_account = "sb"
        }),
        ("template hash", |l| l.pod.template_hash = None),
        ("owner name", |l| {
            l.pod.owner = Some(Owner {
                kind: "ReplicaSet",
                name: "train-6e5a",
            })
        }),
        ("owner kind", |l| {
            l.pod.owner = Some(Owner {
                kind: "Job",
                name: "train-5d4f",
            })
        }),
    ];
    for (case, change) in cases {
        let offers = Offers::new();
        let before = get(&offers, &base());
        let mut changed = base();
        change(&mut changed);
        let after = get(&offers, &changed);
        assert!(!Arc::ptr_eq(&before, &after), "{case}");
        assert!(Arc::ptr_eq(&after, &get(&offers, &changed)), "{case}: kept");
    }
}

/// Objects built by hand may change without a new resourceVersion: never memoized.
#[test]
fn objects_without_a_uid_or_resource_version_are_built_each_time() {
    let cases: [Case; 4] = [
        ("binding without uid", |l| {
            l.binding.as_object_mut().unwrap().remove("uid");
        }),
        ("binding with an empty resourceVersion", |l| {
            l.binding["resourceVersion"] = json!("")
        }),
        ("ServiceAccount without resourceVersion", |l| {
            let sa = l.service_account.as_mut().unwrap();
            sa.as_object_mut().unwrap().remove("resourceVersion");
        }),
        ("ServiceAccount without uid", |l| {
            let sa = l.service_account.as_mut().unwrap();
            sa.as_object_mut().unwrap().remove("uid");
        }),
    ];
    for (case, change) in cases {
        let offers = Offers::new();
        let mut lookup = base();
        change(&mut lookup);
        let (first, second) = (get(&offers, &lookup), get(&offers, &lookup));
        assert!(!Arc::ptr_eq(&first, &second), "{case}");
        assert_eq!(first.is_ok(), second.is_ok(), "{case}");
    }
}

/// An identity refusal is memoized like an offer, and says the same.
#[test]
fn a_refusal_is_kept_too() {
    let offers = Offers::new();
    let mut lookup = base();
    lookup.service_account = None;
    lookup.tenant = None;
    let refused = get(&offers, &lookup);
    assert!(
        refused
            .as_ref()
            .as_ref()
            .is_err_and(|m| m.contains("client"))
    );
    assert!(Arc::ptr_eq(&refused, &get(&offers, &lookup)));
}

/// More keys than slots: the memory stays bounded, and every answer is still the right one.
#[test]
fn more_pods_than_slots_displace_older_offers() {
    let offers = Offers::new();
    let names: Vec<String> = (0..SLOTS * 4).map(|i| format!("train-{i}")).collect();
    for name in &names {
        let mut lookup = base();
        let name: &'static str = Box::leak(name.clone().into_boxed_str());
        lookup.pod.owner = Some(Owner { kind: "Job", name });
        assert!(get(&offers, &lookup).is_ok());
    }
    let slots = offers.threads.get().unwrap().borrow();
    assert_eq!(slots.entries.len(), SLOTS);
    assert!(slots.entries.iter().flatten().count() <= SLOTS);
}

#[test]
fn keys_are_length_prefixed() {
    let mut one = Vec::new();
    field(&mut one, "ab");
    field(&mut one, "c");
    let mut other = Vec::new();
    field(&mut other, "a");
    field(&mut other, "bc");
    assert_ne!(one, other);
}
