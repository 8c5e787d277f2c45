//! Choosing the binding: by annotation, by podSelector, Ready or not, and what happens when none
//! applies.

use serde_json::json;

use super::*;

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
        let Refusal {
            reason, message, ..
        } = refusal(plan_with(&p, &[&simple()], None, &Defaults::default()));
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
    let Refusal {
        reason,
        message,
        binding,
    } = refusal(plan_with(&p, &[&b1, &b2], None, &Defaults::default()));
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
        let Refusal {
            reason, message, ..
        } = refusal(plan_with(&one(), &bindings, None, &Defaults::default()));
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
    let Refusal {
        reason, message, ..
    } = refusal(plan_with(&one(), &[&b, &a, &c], None, &Defaults::default()));
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
    cond.status = crate::binding::FALSE.into();
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
        let Refusal {
            reason,
            message,
            binding,
        } = refusal(plan_with(&one(), &[b], None, &Defaults::default()));
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
                warnings: vec![refused.message]
            }
        );
    }
    let wi = mwb(
        "wi",
        json!({"trackingUri": URI, "identity": {"workloadIdentity": {}}}),
    );
    let Refusal { reason, .. } = refusal(plan_with(&one(), &[&wi], None, &allow));
    assert_eq!(reason, RefusalReason::Identity);
}
