//! The mutating admission webhook: AdmissionReview v1 over HTTPS on `/mutate`.
//!
//! A plain service over raw JSON (as linkerd's policy controller does): the pod is never
//! deserialized into typed structs, so the patch is computed against exactly what the API server
//! sent. Bindings and ServiceAccounts come from in-memory reflector caches; the only network call
//! on the admission path is one live ServiceAccount GET on a cache miss, and never one to Azure.
//!
//! - [`review`]: reading the AdmissionReview;
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
use crate::inject::{self, Defaults, NamespaceView, Offers, Plan, service_account_name};
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
        let lookup = |namespace: &str| self.bindings.namespace(namespace);
        let mut req = match parse_review_for(body, &lookup) {
            Ok(r) => r,
            Err(unreadable) => return Answer::unreadable(&unreadable),
        };
        if req.operation != "CREATE" {
            return Answer::skipped_operation(&req.uid);
        }
        let plan = match self.plan(&mut req).await {
            Ok(plan) => plan,
            Err(error) => {
                let uid = Some(req.uid.into_owned());
                return Answer::unreadable(&Unreadable::new(uid, error));
            }
        };
        if let (Plan::Refuse(refusal), Some(events), false) = (&plan, &self.events, req.dry_run) {
            events.refused(&req.namespace, refusal);
        }
        Answer::planned(&req.uid, &plan)
    }

    /// Plans from the caches: the namespace's bindings and, when workload identity may need
    /// its annotations, the pod's ServiceAccount. The pod is read knowing the bindings, so of
    /// its env only what the planner may read is built.
    async fn plan(&self, req: &mut ReviewRequest<'_>) -> Result<Plan, ReviewError> {
        let (bindings, pod) = req.take(&|namespace| self.bindings.namespace(namespace))?;
        let sa = if needs_service_account(&bindings) {
            let name = service_account_name(&pod);
            self.service_accounts.get(&req.namespace, name).await
        } else {
            None
        };
        let view = NamespaceView {
            namespace: &req.namespace,
            bindings: bindings.iter().map(Arc::as_ref).collect(),
            service_account: sa.as_deref(),
        };
        Ok(inject::plan_memoized(
            &pod,
            &view,
            &self.defaults,
            &self.offers,
        ))
    }
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
}
