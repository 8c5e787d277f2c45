//! The cluster's CRD at start: upgraded when allowed and due ([`crate::crd`] decides), and until
//! it has every field this release writes, `/readyz` says why and the controller does not start,
//! so nothing it writes is pruned. Checked again every [`RECHECK`] until then: a CRD applied by
//! hand is taken up without a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use crate::crd::{self, Verdict};

const RECHECK: Duration = Duration::from_secs(10);

/// Checks (and, with `upgrade`, upgrades) the CRD until it serves this release; reports what
/// stands in the way to `problem`, and `true` on `current` once nothing does.
pub async fn keep_checking(
    client: Client,
    upgrade: bool,
    problem: Arc<Mutex<Option<String>>>,
    current: watch::Sender<bool>,
) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let mut reported = None;
    loop {
        match check(&api, upgrade).await {
            Ok(()) => {
                if reported.is_some() {
                    tracing::info!(crd = %crd::name(), "the CRD now has every field this release writes: starting");
                }
                *problem.lock().unwrap() = None;
                let _ = current.send(true);
                return;
            }
            Err(why) => {
                if reported.as_ref() != Some(&why) {
                    tracing::error!(problem = %why, recheck_in = ?RECHECK, "the CRD cannot serve this release: not ready, the controller waits");
                }
                *problem.lock().unwrap() = Some(why.clone());
                reported = Some(why);
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// Ok when the CRD serves this release (after upgrading it when due and allowed); else why not,
/// with the fix.
async fn check(api: &Api<CustomResourceDefinition>, upgrade: bool) -> Result<(), String> {
    let name = crd::name();
    let live = match api.get_opt(&name).await {
        Ok(live) => live,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            tracing::warn!(crd = %name, error = %e.message, "may not read the CRD: not checked (the chart grants get on it)");
            return Ok(());
        }
        Err(e) => return Err(format!("reading the CRD {name}: {e}")),
    };
    let mut verdict = crd::judge(live.as_ref());
    if upgrade && verdict.upgrade_due() {
        verdict = apply(api, &verdict).await?;
    }
    if let Some(warning) = verdict.warning() {
        tracing::warn!(%warning, "going on: a later release's CRD (a rollback) keeps serving");
    }
    match verdict.problem() {
        None => Ok(()),
        Some(problem) => Err(format!("{problem}. {}", fix(&verdict, upgrade))),
    }
}

/// Server-side applies this release's CRD; the verdict on what the API server then holds.
async fn apply(api: &Api<CustomResourceDefinition>, before: &Verdict) -> Result<Verdict, String> {
    let params = PatchParams::apply(crate::controller::FIELD_MANAGER).force();
    match api
        .patch(&crd::name(), &params, &Patch::Apply(crd::definition()))
        .await
    {
        Ok(upgraded) => {
            let from = match before {
                Verdict::Behind { revision, .. } => *revision,
                _ => crd::revision(&upgraded),
            };
            tracing::info!(crd = %crd::name(), from, to = crd::REVISION, "upgraded the CRD");
            Ok(crd::judge(Some(&upgraded)))
        }
        Err(e) => Err(format!(
            "{}; upgrading it failed: {e}. Give the operator patch on customresourcedefinitions/{} (the chart does with crds.upgrade=true), or apply it yourself: {}",
            before
                .problem()
                .unwrap_or_else(|| "the CRD is of an earlier revision".into()),
            crd::name(),
            crd::APPLY
        )),
    }
}

/// What to do about a CRD that cannot serve this release.
fn fix(verdict: &Verdict, upgrade: bool) -> String {
    match (verdict, upgrade) {
        (Verdict::Absent, _) => format!(
            "Install it: helm install installs the chart's crds/ (unless --skip-crds), or {}",
            crd::APPLY
        ),
        (_, false) => format!(
            "Apply this release's CRD: {}, or let the operator upgrade it (the chart's crds.upgrade=true)",
            crd::APPLY
        ),
        (_, true) => format!(
            "The upgrade did not take: apply this release's CRD yourself: {}",
            crd::APPLY
        ),
    }
}
