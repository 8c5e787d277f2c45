//! What the fuzz targets check, shared with `tests/fuzz_corpus.rs`, which replays the committed
//! corpus on stable Rust so the targets cannot rot: whatever the input, no panic, and every
//! patch the planner makes applies to the object it was made for.

use k8s_openapi::api::core::v1::ServiceAccount;
use mlflow_operator::binding::MlflowWorkspaceBinding;
use mlflow_operator::cli::inject::{Offline, load_binding};
use mlflow_operator::inject::{
    Defaults, EnvNames, NamespaceView, Offers, Plan, plan, plan_memoized,
};
use std::sync::{Arc, OnceLock};

use mlflow_operator::webhook::{
    ReviewError, ReviewRequest, Slice, TreePlan, parse_review_for, plan_on_tree,
};
use serde_json::json;

fn binding() -> MlflowWorkspaceBinding {
    load_binding(
        r#"{"apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": "fraud", "namespace": "team-a", "generation": 2,
                         "uid": "0b0c1f6e-3c1a-4f7e-9f0e-6c2d1b8a7e55", "resourceVersion": "4107"},
            "spec": {"trackingUri": "azureml://westeurope.api.azureml.ms/mlflow/v1.0/x",
                     "experimentName": "fraud", "auth": {"secretName": "creds"},
                     "identity": {"workloadIdentity": {"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}}}"#,
    )
    .expect("the fuzz binding loads")
}

fn service_account() -> ServiceAccount {
    serde_json::from_value(json!({"metadata": {"name": "trainer", "namespace": "team-a",
        "uid": "5e7f2a3b-8c9d-4e1f-a2b3-c4d5e6f7a8b9", "resourceVersion": "4100",
        "annotations": {"azure.workload.identity/client-id": "9c6f0e4d-2f53-4f8e-9d6a-1c4f2b7e8a01"}}}))
    .unwrap()
}

/// Where an input ended: the corpus test asserts the seeds reach each place, so a seed set
/// that no longer reaches the planner cannot pass unnoticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reached {
    /// Not an AdmissionReview (or not UTF-8 text).
    Unreadable,
    /// Planned, and a patch applied (AdmissionReview) or a document rewritten (YAML).
    Injected,
    /// Admitted or left unchanged.
    Unchanged,
    /// Refused, with a message.
    Refused,
}

/// A body serde_json cannot read is not read on the fast path either, unless it is nested
/// deeper than serde_json reads (128 levels; sonic-rs reads 255): the one body the fast path
/// answers that serde_json refuses, and one the API server never sends.
fn unread_on_tree(fast: Option<TreePlan>, e: &ReviewError) -> Reached {
    let too_deep =
        matches!(e, ReviewError::NotJson(m) if m.starts_with("recursion limit exceeded"));
    assert!(
        fast.is_none() || too_deep,
        "read on the fast path only: {fast:?}"
    );
    Reached::Unreadable
}

/// What the fast path must give where it reads the review: serde_json's reading and plan.
fn tree_plan(req: &ReviewRequest, planned: &Plan) -> TreePlan {
    TreePlan {
        uid: req.uid.to_string(),
        namespace: req.namespace.to_string(),
        operation: req.operation.to_string(),
        dry_run: req.dry_run,
        plan: planned.clone(),
    }
}

/// Whether the webhook reads these bytes on its fast path (sonic-rs's tree).
pub fn read_on_tree(data: &[u8]) -> bool {
    let bindings: Slice<MlflowWorkspaceBinding> = Arc::new([Arc::new(binding())]);
    plan_on_tree(data, &|_| bindings.clone(), None, &Defaults::default()).is_some()
}

/// AdmissionReview bytes through the webhook's decoding and the planner.
pub fn admission_review(data: &[u8]) -> Reached {
    let (b, sa) = (binding(), service_account());
    let bindings: Slice<MlflowWorkspaceBinding> = Arc::new([Arc::new(b.clone())]);
    let lookup = |_: &str| bindings.clone();
    let fast = plan_on_tree(data, &lookup, Some(&sa), &Defaults::default());
    let req = match mlflow_operator::webhook::parse_review(data) {
        Ok(req) => req,
        Err(unreadable) => {
            let one_pass = parse_review_for(data, &lookup);
            assert!(
                one_pass.is_err(),
                "read in one pass, not in two: {one_pass:?}"
            );
            return unread_on_tree(fast, &unreadable.error);
        }
    };
    let view = NamespaceView {
        namespace: &req.namespace,
        bindings: vec![&b],
        service_account: Some(&sa),
    };
    // As the webhook reads it (of the env, what the namespace's bindings may need), and with
    // every env entry: the plans are the same.
    let (pod, whole) = match (req.pod(&EnvNames::of([&b])), req.pod(&EnvNames::all())) {
        (Ok(pod), Ok(whole)) => (pod, whole),
        (Err(e), _) | (_, Err(e)) => return unread_on_tree(fast, &e),
    };
    // The webhook reads the review and the pod in one pass: the same pod, and the same verdict
    // on the same bytes.
    let mut one_pass =
        parse_review_for(data, &lookup).expect("a review that parses in two passes parses in one");
    let (_, read) = one_pass.take(&lookup).expect("its pod reads in one pass");
    assert_eq!(read, pod, "the one-pass read changed the pod");
    let planned = plan(&pod, &view, &Defaults::default());
    assert_eq!(
        planned,
        plan(&whole, &view, &Defaults::default()),
        "the sparse parse changed the plan"
    );
    let want = tree_plan(&req, &planned);
    assert_eq!(
        tree_plan(&one_pass, &planned),
        want,
        "the one-pass read changed the request"
    );
    if let Some(fast) = fast {
        assert_eq!(fast, want, "the fast path changed the reading");
    }
    // One memo for the whole run, as the webhook keeps one: earlier inputs' offers are reused.
    static OFFERS: OnceLock<Offers> = OnceLock::new();
    let offers = OFFERS.get_or_init(Offers::new);
    let memoized = plan_memoized(&pod, &view, &Defaults::default(), offers);
    assert_eq!(memoized, planned, "the memo of offers changed the plan");
    let patch = match planned {
        Plan::Inject { patch, .. } => patch,
        Plan::Allow { .. } => return Reached::Unchanged,
        Plan::Refuse(_) => return Reached::Refused,
    };
    let mut object = whole;
    json_patch::patch(&mut object, &patch.operations())
        .expect("a planned patch applies to its pod");
    // Reinvocation: planning the patched pod again changes nothing more.
    if let Plan::Inject { patch, .. } = plan(&object, &view, &Defaults::default()) {
        assert!(patch.is_empty(), "a second plan is empty, got {patch:?}");
    }
    if patch.is_empty() {
        Reached::Unchanged
    } else {
        Reached::Injected
    }
}

/// Text through `mlflow-operator inject`'s multi-document YAML path.
pub fn inject_yaml(data: &[u8]) -> Reached {
    let Ok(text) = std::str::from_utf8(data) else {
        return Reached::Unreadable;
    };
    let (b, sa) = (binding(), service_account());
    let offline = Offline {
        binding: &b,
        service_account: Some(&sa),
        defaults: &Defaults::default(),
    };
    match offline.documents(text) {
        Ok((out, _)) if out != text => Reached::Injected,
        Ok(_) => Reached::Unchanged,
        Err(_) => Reached::Refused,
    }
}
