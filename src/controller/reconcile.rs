//! One term of the controller: watch bindings, resolve each one's tracking URI, write the status
//! when it changed, record an Event when Ready flips, and keep the `bindings{ready}` gauge.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::arm::{ArmClient, WorkspaceKey};
use super::cache::{Cache, Freshness};
use super::changes;
use super::compat::ApiServer;
use super::pods::Pods;
use super::ready_gauge::ReadyGauge;
use super::status::{self, Resolution, desired_status, ready_transition};
use super::{Config, FIELD_MANAGER};
use crate::binding::{FALSE, MlflowWorkspaceBinding, MlflowWorkspaceBindingStatus};
use crate::binding_store::BindingStore;
use crate::metrics::{Metrics, ReasonLabels};
use crate::recorder::{Event, EventType, Recorder, Reporter};
use crate::tracking;

/// Reconciles at once. Unbounded, 1,000 bindings resolved together held 1,000 status writes and
/// Event posts in flight, and the process's RSS grew to 87 MiB; the API server takes them no
/// faster than a few dozen at a time anyway.
const CONCURRENCY: u16 = 16;

/// A binding with no status yet that is still being resolved after this long gets Ready
/// Unknown (Resolving) meanwhile; most resolve sooner and are written once.
const RESOLVING_AFTER: Duration = Duration::from_secs(1);

/// A binding's status is written for a change of its pods at most this often: a 1,000-pod
/// burst is a handful of writes, not 1,000.
const PODS_WRITE_EVERY: Duration = Duration::from_secs(5);

/// A reconcile that could not write its result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of {binding}: {source}")]
    StatusWrite {
        binding: String,
        #[source]
        source: kube::Error,
    },
}

/// What outlives one term of leadership: the ARM client and its cache among them, so a
/// replica that leads again does not ask ARM again.
#[derive(Clone)]
pub(super) struct Shared {
    pub client: Client,
    pub cfg: Config,
    pub arm: Arc<ArmClient>,
    pub cache: Arc<Cache>,
    pub metrics: Metrics,
    pub server: ApiServer,
    pub bindings: BindingStore,
}

struct Ctx {
    shared: Shared,
    recorder: Recorder,
    pods: Pods,
    gauge: Arc<ReadyGauge>,
    /// When each binding's status was last written.
    written: Mutex<HashMap<ObjectRef<MlflowWorkspaceBinding>, Instant>>,
}

impl Ctx {
    /// How long a pods-only write of `b` must wait, if it must.
    fn pods_write_wait(&self, b: &MlflowWorkspaceBinding) -> Option<Duration> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let last = written.get(&ObjectRef::from(b))?;
        PODS_WRITE_EVERY
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    fn wrote(&self, b: &MlflowWorkspaceBinding) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        // Only recent writes matter: deleted bindings do not stay in the map.
        written.retain(|_, t| t.elapsed() < PODS_WRITE_EVERY);
        written.insert(ObjectRef::from(b), Instant::now());
    }

    /// The binding's pods as `desired` will make them count, None until the pods are listed.
    fn pod_report(
        &self,
        b: &MlflowWorkspaceBinding,
        desired: &MlflowWorkspaceBindingStatus,
    ) -> Option<(MlflowWorkspaceBinding, tracking::Report)> {
        let ns = b.namespace().unwrap_or_default();
        let pods = self.pods.of_namespace(&ns)?;
        let mut now = b.clone();
        now.status = Some(desired.clone());
        let others = self.shared.bindings.index.namespace(&ns);
        let mut all: Vec<&MlflowWorkspaceBinding> = others
            .iter()
            .map(|o| o.as_ref())
            .filter(|o| o.name_any() != b.name_any())
            .collect();
        all.push(&now);
        let report = tracking::report(&now, pods.iter().map(|p| p.meta()), &all);
        Some((now, report))
    }
}

/// Runs the controller until `stop` completes, then lets running reconciles finish.
pub(super) async fn run(shared: Shared, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = shared.client.clone();
    let bindings = shared.bindings.clone();
    let gauge = Arc::new(ReadyGauge::new(shared.metrics.clone()));
    let namespace = shared.cfg.watch_namespace.clone();
    let trigger = changes::triggers(bindings.clone(), gauge.clone(), namespace.clone());
    let (pods, pods_writer) = Pods::new();
    let watch = tokio::spawn(
        pods.clone()
            .watch(client.clone(), namespace.clone(), pods_writer),
    );
    let triggers = pods
        .clone()
        .triggers(bindings.clone(), namespace, shared.metrics.clone());
    let controller = Controller::for_shared_stream(trigger, bindings.store.clone())
        .reconcile_on(triggers)
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(shared.cfg.identity.clone()),
    };
    let ctx = Arc::new(Ctx {
        shared,
        recorder: Recorder::new(client, reporter),
        pods,
        gauge,
        written: Mutex::default(),
    });
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
    watch.abort();
}

/// The binding's resolution, and when to look again.
async fn resolve(b: &MlflowWorkspaceBinding, ctx: &Ctx) -> (Resolution, Duration) {
    let Shared {
        cfg,
        arm,
        cache,
        server,
        ..
    } = &ctx.shared;
    if let Some(message) = server.refuses(&b.spec) {
        let res = Resolution::Failed {
            reason: "UnsupportedByCluster",
            message,
            transient: false,
        };
        return (res, cfg.refresh_interval);
    }
    if let Some(uri) = &b.spec.tracking_uri {
        let message = "spec.trackingUri is used as the tracking URI".to_string();
        let res = Resolution::Resolved {
            tracking_uri: uri.clone(),
            message,
        };
        return (res, cfg.refresh_interval);
    }
    let Some(ws) = &b.spec.azure_ml else {
        let message = "set exactly one of spec.azureML or spec.trackingUri".to_string();
        let res = Resolution::Failed {
            reason: "InvalidSpec",
            message,
            transient: false,
        };
        return (res, cfg.refresh_interval);
    };
    let key = WorkspaceKey::new(&cfg.azure, ws);
    let freshness = freshness(b, cfg.spec_change_window);
    let (arm, k) = (arm.clone(), key.clone());
    let entry = cache
        .get(&key, freshness, move || async move {
            arm.tracking_uri(&k).await
        })
        .await;
    // Come back just after this entry expires, so the refresh happens on time.
    let requeue = cache.remaining(&entry) + Duration::from_millis(50);
    let res = match entry.result {
        Ok(uri) => Resolution::Resolved {
            tracking_uri: uri,
            message: format!(
                "read properties.mlFlowTrackingUri of workspace {} from Azure Resource Manager",
                ws.workspace_name
            ),
        },
        Err(e) => Resolution::Failed {
            reason: e.reason(),
            message: e.to_string(),
            transient: e.is_transient(),
        },
    };
    (res, requeue)
}

/// [`resolve`], and when it takes longer than [`RESOLVING_AFTER`] for a binding that has no
/// Ready condition yet, Ready Unknown (Resolving) written meanwhile.
async fn resolve_saying_so(b: &MlflowWorkspaceBinding, ctx: &Ctx) -> (Resolution, Duration) {
    let resolving = resolve(b, ctx);
    tokio::pin!(resolving);
    if let Ok(done) = tokio::time::timeout(RESOLVING_AFTER, &mut resolving).await {
        return done;
    }
    let ws = b.spec.azure_ml.as_ref().map(|w| w.workspace_name.as_str());
    if b.status.as_ref().and_then(|s| s.ready()).is_none() {
        let message = format!(
            "asking Azure Resource Manager for the MLflow tracking URI of workspace {} with the \
             operator's {} credential",
            ws.unwrap_or_default(),
            ctx.shared.cfg.azure.env.credential_kind().as_str()
        );
        let res = Resolution::Resolving { message };
        let desired = desired_status(b, &res, jiff::Timestamp::now());
        match write_status(b, &desired, &ctx.shared.client).await {
            Ok(()) => ctx.gauge.set(b, &desired),
            Err(e) => tracing::debug!(error = %e, "could not say the binding is being resolved"),
        }
    }
    resolving.await
}

/// How fresh the workspace's cached URI must be for this binding. A binding whose spec changed
/// since its status was written gets a fresh resolve (one the user just asked for). A new
/// binding has no earlier answer to refresh: it takes the workspace's current cached URI, so
/// bindings created one after another (1,000 over a minute) still cost one ARM call per
/// workspace per refresh.
fn freshness(b: &MlflowWorkspaceBinding, spec_change_window: Duration) -> Freshness {
    match b.status.as_ref().and_then(|s| s.observed_generation) {
        Some(observed) if Some(observed) != b.metadata.generation => {
            Freshness::YoungerThan(spec_change_window)
        }
        _ => Freshness::Cached,
    }
}

async fn reconcile(b: Arc<MlflowWorkspaceBinding>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let metrics = &ctx.shared.metrics;
    metrics.reconciles.inc();
    let (res, requeue) = resolve_saying_so(&b, &ctx).await;
    if let Resolution::Failed {
        reason, message, ..
    } = &res
    {
        count_resolve_error(metrics, reason);
        tracing::info!(binding = %b.name_any(), namespace = ?b.namespace(), %reason, %message, "not resolved");
    }
    let now = jiff::Timestamp::now();
    let mut desired = desired_status(&b, &res, now);
    if let Some((current, report)) = ctx.pod_report(&b, &desired) {
        status::set_pods(&mut desired, &current, &report, now);
        ctx.pods.report_metric(&b, &report, metrics);
    }
    ctx.gauge.set(&b, &desired);
    if b.status.as_ref() == Some(&desired) {
        return Ok(Action::requeue(requeue));
    }
    if status::only_pods_changed(b.status.as_ref(), &desired)
        && let Some(wait) = ctx.pods_write_wait(&b)
    {
        return Ok(Action::requeue(wait.min(requeue)));
    }
    write_status(&b, &desired, &ctx.shared.client).await?;
    ctx.wrote(&b);
    if ready_transition(b.status.as_ref(), &desired).is_some() {
        publish_event(&b, &ctx, &res).await;
    }
    if let Some(pods) = status::pods_transition(b.status.as_ref(), &desired) {
        publish_pods_event(&b, &ctx, pods).await;
    }
    Ok(Action::requeue(requeue))
}

async fn write_status(
    b: &MlflowWorkspaceBinding,
    desired: &MlflowWorkspaceBindingStatus,
    client: &Client,
) -> Result<(), Error> {
    let ns = b.namespace().unwrap_or_default();
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": MlflowWorkspaceBinding::api_version(&()),
        "kind": MlflowWorkspaceBinding::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&b.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::StatusWrite {
            binding: format!("{ns}/{}", b.name_any()),
            source,
        })?;
    Ok(())
}

async fn publish_event(b: &MlflowWorkspaceBinding, ctx: &Ctx, res: &Resolution) {
    let (type_, reason, note) = match res {
        Resolution::Resolved { tracking_uri, .. } => (
            EventType::Normal,
            status::RESOLVED.to_string(),
            format!("tracking URI {tracking_uri}"),
        ),
        Resolution::Failed {
            reason, message, ..
        } => (EventType::Warning, reason.to_string(), message.clone()),
        // Said in the status only: the Event comes with the answer.
        Resolution::Resolving { .. } => return,
    };
    publish(b, ctx, type_, reason, &note, "Resolve").await;
}

/// A Warning when pods fall behind (naming the owners and the fix), a Normal when they catch up.
async fn publish_pods_event(b: &MlflowWorkspaceBinding, ctx: &Ctx, pods: &Condition) {
    let type_ = if pods.status == FALSE {
        EventType::Warning
    } else {
        EventType::Normal
    };
    publish(
        b,
        ctx,
        type_,
        pods.reason.clone(),
        &pods.message,
        "CountPods",
    )
    .await;
}

async fn publish(
    b: &MlflowWorkspaceBinding,
    ctx: &Ctx,
    type_: EventType,
    reason: String,
    note: &str,
    action: &str,
) {
    let ev = Event {
        type_,
        reason,
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &b.object_ref(&())).await {
        tracing::warn!(error = %e, binding = %b.name_any(), "publishing an event");
    }
}

fn count_resolve_error(metrics: &Metrics, reason: &str) {
    metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .inc();
}

/// Zeroes `bindings{ready}` and drops `pods`: a replica that no longer leads no longer knows.
pub(super) fn clear_gauge(metrics: &Metrics) {
    metrics.pods.clear();
    super::ready_gauge::set_counts(metrics, [0; 3]);
}

fn error_policy(b: Arc<MlflowWorkspaceBinding>, err: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(binding = %b.name_any(), error = %err, "reconcile failed");
    match err {
        Error::StatusWrite { .. } => ctx.shared.metrics.status_write_errors.inc(),
    };
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_changed_spec_asks_for_a_fresh_resolve() {
        let window = Duration::from_secs(5);
        // (what, metadata.generation, status, whether a fresh resolve is asked for)
        let cases = [
            ("new: no status yet", json!(1), None, false),
            (
                "new: status without observedGeneration",
                json!(1),
                Some(json!({})),
                false,
            ),
            (
                "resolved, unchanged",
                json!(2),
                Some(json!({"observedGeneration": 2})),
                false,
            ),
            (
                "spec changed since",
                json!(3),
                Some(json!({"observedGeneration": 2})),
                true,
            ),
        ];
        for (what, generation, status, fresh) in cases {
            let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
                "metadata": {"name": "b", "namespace": "ns", "generation": generation},
                "spec": {"trackingUri": "http://x"},
                "status": status,
            }))
            .unwrap();
            let got = freshness(&b, window);
            let want_fresh = matches!(got, Freshness::YoungerThan(w) if w == window);
            assert_eq!(want_fresh, fresh, "{what}: {got:?}");
        }
    }
}
