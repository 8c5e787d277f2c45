use serde_json::{Value, json};

use super::*;

fn binding(name: &str, generation: i64, uri: &str, selector: Value) -> MlflowWorkspaceBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team-a", "generation": generation},
        "spec": {"trackingUri": uri, "podSelector": selector},
        "status": {"observedGeneration": generation, "trackingUri": uri,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Resolved",
                                   "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }))
    .unwrap()
}

fn pod(name: &str, labels: Value, annotations: Value, owner: Option<(&str, &str)>) -> ObjectMeta {
    let owners = owner.map(|(kind, n)| {
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": n, "uid": "u", "controller": true}])
    });
    serde_json::from_value(json!({
        "name": name, "namespace": "team-a", "labels": labels, "annotations": annotations,
        "ownerReferences": owners,
    }))
    .unwrap()
}

fn tracked() -> Value {
    json!({"mlflow-operator.io/track": "true"})
}

fn injected(b: &MlflowWorkspaceBinding, marker: &str) -> Value {
    json!({"mlflow-operator.io/injected": marker,
           "mlflow-operator.io/injected-hash": b.injection_hash()})
}

#[test]
fn a_pods_state_follows_generation_hash_and_binding() {
    let b = binding("fraud", 3, "http://mlflow", json!({}));
    let moved = binding("fraud", 3, "http://elsewhere", json!({}));
    let h = b.injection_hash();
    // (what, annotations, state)
    let cases = [
        ("no annotation", json!({}), PodState::NotInjected),
        ("current", injected(&b, "fraud/3"), PodState::Injected),
        (
            "current, identity left to azure-workload-identity",
            injected(&b, "fraud/3 (identity: azure-workload-identity)"),
            PodState::Injected,
        ),
        (
            "a release that wrote no hash",
            json!({"mlflow-operator.io/injected": "fraud/3"}),
            PodState::Injected,
        ),
        ("older generation", injected(&b, "fraud/2"), PodState::Stale),
        ("another binding", injected(&b, "other/3"), PodState::Stale),
        (
            "unreadable generation",
            injected(&b, "fraud/x"),
            PodState::Stale,
        ),
        (
            "the workspace's URI moved",
            json!({"mlflow-operator.io/injected": "fraud/3", "mlflow-operator.io/injected-hash": moved.injection_hash()}),
            PodState::Stale,
        ),
    ];
    for (what, annotations, want) in cases {
        let p = pod("p", tracked(), annotations, None);
        assert_eq!(state(&p, &b), want, "{what}");
    }
    assert_eq!(h.len(), 16);
    assert_ne!(h, moved.injection_hash());
}

#[test]
fn owners_are_named_as_a_person_would() {
    let hash = json!({"mlflow-operator.io/track": "true", "pod-template-hash": "5d8f7c9b4"});
    // (labels, owner reference, owner)
    let cases = [
        (
            hash.clone(),
            Some(("ReplicaSet", "trainer-5d8f7c9b4")),
            "Deployment/trainer",
        ),
        (
            tracked(),
            Some(("ReplicaSet", "trainer-5d8f7c9b4")),
            "ReplicaSet/trainer-5d8f7c9b4",
        ),
        (
            hash.clone(),
            Some(("ReplicaSet", "other")),
            "ReplicaSet/other",
        ),
        (
            hash,
            Some(("ReplicaSet", "-5d8f7c9b4")),
            "ReplicaSet/-5d8f7c9b4",
        ),
        (tracked(), Some(("StatefulSet", "db")), "StatefulSet/db"),
        (tracked(), Some(("Job", "train-42")), "Job/train-42"),
        (tracked(), Some(("PyTorchJob", "ddp")), "PyTorchJob/ddp"),
        (tracked(), None, "Pod/p"),
    ];
    for (labels, owner, want) in cases {
        let p = pod("p", labels, json!({}), owner);
        assert_eq!(Owner::of(&p).to_string(), want, "{owner:?}");
    }
}

#[test]
fn each_owner_kind_gets_its_own_fix() {
    let owner = |kind: &str, name: &str| Owner {
        kind: kind.into(),
        name: name.into(),
    };
    let pods = ["ddp-master-0".to_string(), "ddp-worker-0".to_string()];
    for (o, want) in [
        (
            owner("Deployment", "trainer"),
            "kubectl rollout restart -n ns deployment/trainer",
        ),
        (
            owner("StatefulSet", "db"),
            "kubectl rollout restart -n ns statefulset/db",
        ),
        (
            owner("DaemonSet", "agent"),
            "kubectl rollout restart -n ns daemonset/agent",
        ),
        (owner("Pod", "debug"), "kubectl delete pod -n ns debug"),
        (owner("Job", "train"), "kubectl delete job -n ns train"),
        (
            owner("PyTorchJob", "ddp"),
            "kubectl delete pod -n ns ddp-master-0 ddp-worker-0",
        ),
    ] {
        let fix = o.fix("ns", &pods);
        assert!(fix.contains(want), "{o}: {fix}");
    }
}

#[test]
fn a_report_counts_only_the_tracked_pods_this_binding_selects() {
    let fraud = binding(
        "fraud",
        2,
        "http://a",
        json!({"matchLabels": {"team": "fraud"}}),
    );
    let ads = binding(
        "ads",
        1,
        "http://b",
        json!({"matchLabels": {"team": "ads"}}),
    );
    let labels = |team: &str| json!({"mlflow-operator.io/track": "true", "team": team});
    let mut deleting = pod("deleting", labels("fraud"), json!({}), None);
    deleting.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    let rs = Some(("ReplicaSet", "trainer-abc"));
    let mut trainer = labels("fraud");
    trainer["pod-template-hash"] = json!("abc");
    let pods = [
        pod(
            "current",
            labels("fraud"),
            injected(&fraud, "fraud/2"),
            None,
        ),
        pod("t-1", trainer.clone(), injected(&fraud, "fraud/1"), rs),
        pod("t-2", trainer.clone(), injected(&fraud, "fraud/1"), rs),
        pod("t-3", trainer, json!({}), rs),
        pod(
            "named",
            labels("ads"),
            json!({"mlflow-operator.io/binding": "fraud"}),
            None,
        ),
        pod("theirs", labels("ads"), injected(&ads, "ads/1"), None),
        pod("unlabelled", json!({"team": "fraud"}), json!({}), None),
        deleting,
    ];
    let all = [&fraud, &ads];
    let r = report(&fraud, pods.iter(), &all);
    let want = PodCounts {
        injected: 1,
        stale: 2,
        not_injected: 2,
        summary: "1/5".into(),
    };
    assert_eq!(r.counts, want);
    let described: Vec<String> = r.behind.iter().map(Behind::describe).collect();
    assert_eq!(
        described,
        [
            "Deployment/trainer (2 stale, 1 not injected)",
            "Pod/named (1 not injected)"
        ]
    );
    assert_eq!(r.behind[0].pods, ["t-1", "t-2", "t-3"]);
    let r = report(&ads, pods.iter(), &all);
    assert_eq!((r.counts.injected, r.counts.total()), (1, 1));
}

#[test]
fn the_condition_names_the_owners_and_the_fix_and_keeps_its_transition_time() {
    let b = binding("fraud", 2, "http://a", json!({}));
    let t = |s| jiff::Timestamp::from_second(s).unwrap();
    let current = Report {
        counts: PodCounts {
            injected: 3,
            summary: "3/3".into(),
            ..Default::default()
        },
        behind: vec![],
    };
    let c = condition(&current, &b, None, t(100));
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "PodsCurrent")
    );
    assert_eq!(
        c.message,
        "all 3 pods this binding selects carry its current injection"
    );
    let behind = |i: usize| Behind {
        owner: Owner {
            kind: "Deployment".into(),
            name: format!("d{i}"),
        },
        stale: 1,
        not_injected: 0,
        pods: vec![format!("d{i}-x")],
    };
    let stale = Report {
        counts: PodCounts {
            injected: 3,
            stale: 7,
            not_injected: 0,
            summary: "3/10".into(),
        },
        behind: (0..7).map(behind).collect(),
    };
    let s = condition(&stale, &b, Some(&c), t(200));
    assert_eq!(
        (s.status.as_str(), s.reason.as_str()),
        ("False", "PodsStale")
    );
    assert_eq!(s.last_transition_time.0, t(200));
    for shown in [
        "Deployment/d0 (1 stale)",
        "Deployment/d4",
        "kubectl rollout restart -n team-a deployment/d4",
        "and 2 more",
    ] {
        assert!(s.message.contains(shown), "{shown}: {}", s.message);
    }
    assert!(!s.message.contains("d5"), "{}", s.message);
    assert!(s.message.starts_with("7 of 10 pods"), "{}", s.message);
    let again = condition(&stale, &b, Some(&s), t(300));
    assert_eq!(
        again.last_transition_time.0,
        t(200),
        "same status: same time"
    );
    let none = condition(&Report::default(), &b, None, t(100));
    assert_eq!(none.message, "no opted-in pod selects this binding");
}
