//! The mutating admission webhook: AdmissionReview v1 over HTTPS on `/mutate`.
//!
//! A plain service over raw JSON (as linkerd's policy controller does): the pod is never
//! deserialized into typed structs, so the patch is computed against exactly what the API server
//! sent. Bindings and ServiceAccounts come from in-memory reflector caches; the only network call
//! on the admission path is one live ServiceAccount GET on a cache miss, and never one to Azure.
//!
//! - [`review`]: reading the AdmissionReview (sonic-rs's tree on the fast path, serde_json
//!   for any other review);
//! - [`answer`]: the AdmissionReview answer and the outcome metric label;
//! - [`service_accounts`]: the pod's ServiceAccount, cached or read live;
//! - [`events`]: throttled Warning Events for refused pods;
//! - [`server`]: TLS and HTTP;
//! - [`caches`]: the watches that fill the caches;
//! - [`index`]: the bindings by namespace, so an admission reads its namespace only.

mod answer;
mod caches;
mod events;
mod index;
mod review;
mod server;
mod service_accounts;
mod serving;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::Store;

pub use answer::{Answer, Outcome, error_body, error_response, review_response};
pub use caches::{Caches, outage_backoff, paged_watch};
pub use events::RefusalEvents;
pub use index::{IndexWriter, Keyed, NamespaceIndex, Slice};
pub use review::{Lookup, ReviewError, ReviewRequest, Unreadable, parse_review, parse_review_for};
pub use server::{Limits, MAX_BODY, bind, serve, serve_with};
pub use service_accounts::ServiceAccounts;
pub use serving::{Serving, start};

use crate::binding::MlflowWorkspaceBinding;
use crate::inject::{self, Defaults, NamespaceView, Offers, Plan, PodView};
use crate::metrics::Metrics;

/// The bindings the webhook chooses from, by namespace.
pub type BindingIndex = NamespaceIndex<MlflowWorkspaceBinding>;

/// Everything the admission handler needs.
pub struct Webhook {
    pub bindings: BindingIndex,
    pub service_accounts: ServiceAccounts,
    pub defaults: Defaults,
    pub metrics: Metrics,
    /// None: refusals are not recorded as Events (tests, benchmarks).
    pub events: Option<RefusalEvents>,
    /// What bindings offered recent pods ([`inject::plan_memoized`]).
    offers: Offers,
}

impl Webhook {
    /// A webhook that reads its caches only and records no Events (tests, benchmarks).
    pub fn cached(
        bindings: BindingIndex,
        service_accounts: Store<ServiceAccount>,
        defaults: Defaults,
    ) -> Self {
        Self {
            bindings,
            service_accounts: ServiceAccounts {
                cache: service_accounts,
                client: None,
            },
            defaults,
            metrics: Metrics::new(),
            events: None,
            offers: Offers::new(),
        }
    }

    /// Answers one AdmissionReview body, and counts it.
    pub async fn review(&self, body: &[u8]) -> Answer {
        let started = Instant::now();
        let answer = self.answer(body).await;
        self.metrics
            .admission_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.admission(answer.outcome);
        answer
    }

    async fn answer(&self, body: &[u8]) -> Answer {
        match self.answer_on_tree(body).await {
            Some(answer) => answer,
            None => self.answer_on_json(body).await,
        }
    }

    /// The answer to a review as the API server sends it, read as sonic-rs's tree; None for any
    /// other, which serde_json reads and words every error of.
    async fn answer_on_tree(&self, body: &[u8]) -> Option<Answer> {
        let lookup = |namespace: &str| self.bindings.namespace(namespace);
        let tree = review::tree(body)?;
        let req = review::read_tree(&tree, &lookup)?;
        if req.operation != "CREATE" {
            return Some(Answer::skipped_operation(req.uid));
        }
        let plan = self.plan(req.namespace, &req.bindings, Ok(req.pod)).await;
        Some(self.answered(req.uid, req.namespace, req.dry_run, &plan))
    }

    async fn answer_on_json(&self, body: &[u8]) -> Answer {
        let lookup = |namespace: &str| self.bindings.namespace(namespace);
        let mut req = match parse_review_for(body, &lookup) {
            Ok(r) => r,
            Err(unreadable) => return Answer::unreadable(&unreadable),
        };
        if req.operation != "CREATE" {
            return Answer::skipped_operation(&req.uid);
        }
        let (bindings, pod) = match req.take(&lookup) {
            Ok(taken) => taken,
            Err(error) => {
                let uid = Some(req.uid.into_owned());
                return Answer::unreadable(&Unreadable::new(uid, error));
            }
        };
        let plan = self
            .plan(&req.namespace, &bindings, inject::read_pod_view(&pod))
            .await;
        self.answered(&req.uid, &req.namespace, req.dry_run, &plan)
    }

    /// The answer of a planned review, recording a refusal as an Event unless it is a dry run.
    fn answered(&self, uid: &str, namespace: &str, dry_run: bool, plan: &Plan) -> Answer {
        if let (Plan::Refuse(refusal), Some(events), false) = (plan, &self.events, dry_run) {
            events.refused(namespace, refusal);
        }
        Answer::planned(uid, plan)
    }

    /// Plans from the caches: the namespace's bindings and, when workload identity may need
    /// its annotations, the pod's ServiceAccount. The pod was read knowing the bindings, so of
    /// its env only what the planner may read is built.
    async fn plan(
        &self,
        namespace: &str,
        bindings: &[Arc<MlflowWorkspaceBinding>],
        pod: Result<PodView<'_>, String>,
    ) -> Plan {
        let sa = match &pod {
            Ok(p) if needs_service_account(bindings) => {
                self.service_accounts
                    .get(namespace, p.service_account)
                    .await
            }
            _ => None,
        };
        let view = NamespaceView {
            namespace,
            bindings: bindings.iter().map(Arc::as_ref).collect(),
            service_account: sa.as_deref(),
        };
        inject::plan_read(pod, &view, &self.defaults, Some(&self.offers))
    }
}

/// A review read on the webhook's fast path and planned as the webhook plans it.
#[derive(Debug, PartialEq)]
pub struct TreePlan {
    pub uid: String,
    pub namespace: String,
    pub operation: String,
    pub dry_run: bool,
    pub plan: Plan,
}

/// The webhook's fast path (sonic-rs's tree) on `body`, planned with the bindings `lookup`
/// gives and `service_account`; None where the webhook leaves the body to serde_json. For the
/// fuzz checks, which hold it to serde_json's reading of the same bytes.
pub fn plan_on_tree(
    body: &[u8],
    lookup: Lookup<'_>,
    service_account: Option<&ServiceAccount>,
    defaults: &Defaults,
) -> Option<TreePlan> {
    let tree = review::tree(body)?;
    let req = review::read_tree(&tree, lookup)?;
    let view = NamespaceView {
        namespace: req.namespace,
        bindings: req.bindings.iter().map(Arc::as_ref).collect(),
        service_account,
    };
    Some(TreePlan {
        uid: req.uid.to_string(),
        namespace: req.namespace.to_string(),
        operation: req.operation.to_string(),
        dry_run: req.dry_run,
        plan: inject::plan_read(Ok(req.pod), &view, defaults, None),
    })
}

fn needs_service_account(bindings: &[Arc<MlflowWorkspaceBinding>]) -> bool {
    bindings.iter().any(|b| {
        b.spec
            .identity
            .as_ref()
            .is_some_and(|i| i.workload_identity.is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};
    use serde_json::{Value, json};

    const CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";

    /// A webhook whose caches hold a workload-identity binding without a client id, and
    /// ServiceAccounts `default` (no annotations) and `legacy` (with the client id).
    fn webhook() -> (Webhook, impl Sized) {
        let (sas, mut sw) = reflector::store::<ServiceAccount>();
        let binding = json!({
            "metadata": {"name": "wi", "namespace": "ns", "generation": 1},
            "spec": {"trackingUri": "http://mlflow:5000",
                     "identity": {"workloadIdentity": {"tenantId": CLIENT_ID}}},
            "status": {"observedGeneration": 1, "trackingUri": "http://mlflow:5000",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Resolved",
                                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        });
        let bindings = BindingIndex::from_objects([serde_json::from_value(binding).unwrap()]);
        for sa in [
            json!({"metadata": {"name": "default", "namespace": "ns"}}),
            json!({"metadata": {"name": "legacy", "namespace": "ns",
                                "annotations": {"azure.workload.identity/client-id": CLIENT_ID}}}),
        ] {
            sw.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(sa).unwrap()));
        }
        (Webhook::cached(bindings, sas, Defaults::default()), sw)
    }

    fn review(spec: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "namespace": "ns", "operation": "CREATE",
                        "object": {"metadata": {"name": "p"}, "spec": spec}}
        }))
        .unwrap()
    }

    /// The webhook reads the ServiceAccount the planner reasons about. It used to read
    /// `spec.serviceAccountName` only, so a pod naming its ServiceAccount through the deprecated
    /// `spec.serviceAccount` (or with an empty `serviceAccountName`) was refused for lack of a
    /// client id its ServiceAccount carries.
    #[tokio::test]
    async fn reads_the_service_account_the_planner_reasons_about() {
        let (wh, _writers) = webhook();
        let containers = json!([{"name": "c"}]);
        for (spec, outcome) in [
            (json!({"serviceAccount": "legacy"}), "injected"),
            (
                json!({"serviceAccountName": "", "serviceAccount": "legacy"}),
                "injected",
            ),
            (json!({"serviceAccountName": "legacy"}), "injected"),
            (json!({"serviceAccountName": ""}), "refused-identity"),
            (json!({}), "refused-identity"),
        ] {
            let mut spec = spec;
            spec["containers"] = containers.clone();
            let answer = wh.review(&review(spec.clone())).await;
            assert_eq!(
                answer.outcome.metric_label(),
                outcome,
                "{spec}: {}",
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    const HEAD: &str = r#""apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview""#;
    const GVK: &str = r#""kind": {"group": "", "version": "v1", "kind": "Pod"}"#;
    const POD: &str = r#""object": {"metadata": {"name": "p"}, "spec": {"serviceAccountName": "legacy", "containers": [{"name": "c"}]}}"#;

    /// A review of these request fields.
    fn req(fields: &str) -> String {
        format!(r#"{{{HEAD}, "request": {{{fields}}}}}"#)
    }

    /// The request's fields as the API server sends them.
    fn usual() -> String {
        format!(r#""uid": "u", {GVK}, "namespace": "ns", "operation": "CREATE", {POD}"#)
    }

    /// Each body is (or is not) answered on the fast path, with the bytes serde_json's reading
    /// answers; the webhook's answer is those bytes.
    async fn answers_as_serde_json(cases: Vec<(&str, String)>, on_tree: bool) {
        let (wh, _writers) = webhook();
        for (case, body) in cases {
            let body = body.as_bytes();
            let fast = wh.answer_on_tree(body).await;
            assert_eq!(fast.is_some(), on_tree, "{case}: read on the fast path");
            let on_json = wh.answer_on_json(body).await;
            if let Some(answer) = fast {
                assert_eq!(answer, on_json, "{case}");
            }
            assert_eq!(wh.review(body).await, on_json, "{case}: the answer");
        }
    }

    #[tokio::test]
    async fn a_review_as_the_api_server_sends_it_is_answered_on_the_fast_path() {
        let (usual, head, pod) = (usual(), HEAD, POD);
        let cases = vec![
            ("as the API server sends it", req(&usual)),
            ("dry run", req(&format!(r#"{usual}, "dryRun": true"#))),
            ("dryRun null", req(&format!(r#"{usual}, "dryRun": null"#))),
            ("an update", req(&usual.replace("CREATE", "UPDATE"))),
            ("escaped uid", req(&usual.replace(r#""u""#, r#""\u0075""#))),
            (
                "namespace after the object",
                req(&format!(
                    r#""uid": "u", {GVK}, "operation": "CREATE", {pod}, "namespace": "ns""#
                )),
            ),
            (
                "unknown members",
                format!(r#"{{"x": 1, {head}, "request": {{"y": [], {usual}}}}}"#),
            ),
        ];
        answers_as_serde_json(cases, true).await;
    }

    #[tokio::test]
    async fn any_other_review_is_left_to_serde_json() {
        let (usual, head, pod) = (usual(), HEAD, POD);
        let cases = vec![
            ("uid repeated", req(&format!(r#""uid": "v", {usual}"#))),
            (
                "request repeated",
                format!(r#"{{{head}, "request": null, "request": {{{usual}}}}}"#),
            ),
            (
                "no namespace",
                req(&usual.replace(r#""namespace": "ns", "#, "")),
            ),
            (
                "empty uid",
                req(&usual.replace(r#""uid": "u""#, r#""uid": """#)),
            ),
            (
                "dryRun a string",
                req(&format!(r#"{usual}, "dryRun": "yes""#)),
            ),
            (
                "another kind",
                req(&usual.replace(r#""Pod""#, r#""Service""#)),
            ),
            (
                "kind fields null",
                req(&usual.replace(r#""group": """#, r#""group": null"#)),
            ),
            (
                "another apiVersion",
                req(&usual).replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
            ),
            ("not JSON", req(&usual).replace("CREATE\"", "CREATE")),
            ("trailing text", format!("{} x", req(&usual))),
            ("no object", req(&usual.replace(&format!(", {pod}"), ""))),
            (
                "a pod of another shape",
                req(&usual.replace(r#"[{"name": "c"}]"#, "{}")),
            ),
        ];
        answers_as_serde_json(cases, false).await;
    }

    /// Nesting: sonic-rs reads 255 levels (and no deeper, within a small stack even unoptimized);
    /// serde_json skips an unread member at any depth but builds at most 128 levels. Between
    /// the two, a value the planner reads is answered on the fast path where serde_json would
    /// refuse it; the API server sends neither.
    #[tokio::test]
    async fn deep_nesting_is_answered_without_overflowing_the_stack() {
        let (wh, _writers) = webhook();
        let spec = json!({"serviceAccountName": "legacy", "containers": [{"name": "c"}]});
        let usual = String::from_utf8(review(spec)).unwrap();
        let nested = |depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // (case, depth, where it goes, read on the fast path)
        for (case, depth, at, on_tree) in [
            ("an unread member", 200, "{", true),
            ("an unread member", 300, "{", false),
            (
                "a label serde_json would build",
                200,
                r#""metadata":{"#,
                true,
            ),
        ] {
            let member = match at {
                "{" => format!(r#""a": {}, "#, nested(depth)),
                _ => format!(r#""labels": {{"a": {}}}, "#, nested(depth)),
            };
            let body = usual.replacen(at, &format!("{at}{member}"), 1);
            assert_ne!(body, usual, "{case}");
            let fast = wh.answer_on_tree(body.as_bytes()).await;
            assert_eq!(fast.is_some(), on_tree, "{case} {depth}");
            let answer = wh.review(body.as_bytes()).await;
            assert_eq!(answer.outcome.metric_label(), "injected", "{case} {depth}");
            let by_serde_json = wh.answer_on_json(body.as_bytes()).await.outcome;
            let built = at != "{";
            let want = if built { "error-malformed" } else { "injected" };
            assert_eq!(by_serde_json.metric_label(), want, "{case} {depth}");
        }
    }
}
