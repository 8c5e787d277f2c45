//! The controller: resolves every `MlflowWorkspaceBinding`'s MLflow tracking URI and writes it,
//! with a Ready condition, to the binding's status.
//!
//! - `spec.trackingUri` bindings are Ready at once.
//! - `spec.azureML` bindings are resolved through Azure Resource Manager ([`arm`]) via a shared
//!   cache ([`cache`]): one ARM call per distinct workspace per refresh interval.
//! - Status is written with server-side apply, and only when it changed ([`status`]).
//! - Only the leader (a `coordination.k8s.io` Lease) runs the controller.

pub mod arm;
pub mod cache;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;

use crate::binding::{MlflowWorkspaceBinding, MlflowWorkspaceBindingStatus, READY};
use crate::cli::RunArgs;
use crate::metrics::{Metrics, ReadyLabels, ReasonLabels};
use arm::{ArmClient, AzureConfig, AzureEnv, RetryPolicy, WorkspaceKey};
use cache::{Cache, Freshness};
use status::{Resolution, desired_status, ready_transition};

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "mlflow-operator";

/// Everything the controller needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace of the leader-election Lease.
    pub namespace: String,
    /// This replica's identity (Lease holder, event reporter instance).
    pub identity: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    /// How often each workspace's tracking URI is re-resolved.
    pub refresh_interval: Duration,
    /// How long a failed resolve is cached before a binding retries (capped by the refresh).
    pub error_retry: Duration,
    /// A binding whose spec changed accepts a cached URI only when it is younger than this.
    pub spec_change_window: Duration,
    /// Watch bindings of this namespace only (None: every namespace).
    pub watch_namespace: Option<String>,
    pub azure: AzureConfig,
}

impl Config {
    /// The controller's settings from `mlflow-operator run` flags and the process environment.
    pub fn from_args(args: &RunArgs) -> anyhow::Result<Self> {
        let ca_pem =
            match &args.azure_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("reading --azure-ca-file {}: {e}", path.display())
                })?),
                None => None,
            };
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("mlflow-operator-{}", std::process::id()));
        Ok(Self {
            namespace: args.namespace.clone(),
            identity,
            lease_name: args.lease_name.clone(),
            lease_duration: args.lease_duration,
            refresh_interval: args.refresh_interval,
            error_retry: Duration::from_secs(30),
            spec_change_window: Duration::from_secs(5),
            watch_namespace: args.watch_namespace.clone().filter(|s| !s.is_empty()),
            azure: AzureConfig {
                arm_endpoint: args.arm_endpoint.clone(),
                authority_host: args.authority_host.clone(),
                ca_pem,
                env: AzureEnv::from_process(),
                retry: RetryPolicy::default(),
            },
        })
    }
}

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

struct Ctx {
    client: Client,
    cfg: Config,
    arm: Arc<ArmClient>,
    cache: Arc<Cache>,
    metrics: Metrics,
    recorder: Recorder,
    store: Store<MlflowWorkspaceBinding>,
}

/// Runs the controller while this replica holds the Lease, until `shutdown` completes.
pub async fn run(
    client: Client,
    cfg: Config,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (leader, _) = watch::channel(false);
    run_with_leader_status(client, cfg, metrics, shutdown, leader).await
}

/// [`run`], publishing whether this replica is the leader (and runs the controller) on `leader`.
pub async fn run_with_leader_status(
    client: Client,
    cfg: Config,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    leader: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let arm = Arc::new(ArmClient::new(cfg.azure.clone(), metrics.clone())?);
    let cache = Arc::new(Cache::new(cfg.refresh_interval, cfg.error_retry));
    let duration = cfg.lease_duration.as_secs().max(2);
    let grace = (duration / 3).clamp(1, duration - 1);
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await?;
    let (mut is_leader, lease_task) = manager.watch().await;
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "waiting for the controller lease");

    'terms: loop {
        // Wait for leadership, or shutdown.
        loop {
            if *is_leader.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => break 'terms,
                changed = is_leader.changed() => if changed.is_err() {
                    anyhow::bail!("leader election stopped");
                },
            }
        }
        tracing::info!(identity = %cfg.identity, "leading: starting the controller");
        let _ = leader.send(true);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let term = run_controller(
            client.clone(),
            cfg.clone(),
            arm.clone(),
            cache.clone(),
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        );
        let mut term = std::pin::pin!(term);
        let mut stop = Some(stop);
        let mut ending = false;
        loop {
            tokio::select! {
                _ = &mut term => break,
                _ = &mut shutdown, if !ending => {
                    ending = true;
                    if let Some(s) = stop.take() { let _ = s.send(()); }
                }
                changed = is_leader.changed(), if stop.is_some() => {
                    if changed.is_err() || !*is_leader.borrow_and_update() {
                        tracing::warn!(identity = %cfg.identity, "lost the controller lease: stopping the controller");
                        if let Some(s) = stop.take() { let _ = s.send(()); }
                    }
                }
            }
        }
        let _ = leader.send(false);
        clear_gauge(&metrics);
        if ending {
            break;
        }
    }
    // Closing the channel makes the lease manager release the Lease for the next leader.
    drop(is_leader);
    match lease_task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the controller lease"),
        Err(e) => tracing::warn!(error = %e, "lease task"),
    }
    let _ = leader.send(false);
    Ok(())
}

async fn run_controller(
    client: Client,
    cfg: Config,
    arm: Arc<ArmClient>,
    cache: Arc<Cache>,
    metrics: Metrics,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<MlflowWorkspaceBinding> = match &cfg.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let controller = Controller::new(api, watcher::Config::default());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(cfg.identity.clone()),
        },
    );
    let ctx = Arc::new(Ctx {
        client,
        cfg,
        arm,
        cache,
        metrics,
        recorder,
        store: controller.store(),
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
}

async fn resolve(b: &MlflowWorkspaceBinding, ctx: &Ctx) -> (Resolution, Duration) {
    let refresh = ctx.cfg.refresh_interval;
    if let Some(uri) = &b.spec.tracking_uri {
        return (
            Resolution::Resolved {
                tracking_uri: uri.clone(),
                message: "spec.trackingUri is used as the tracking URI".to_string(),
            },
            refresh,
        );
    }
    let Some(ws) = &b.spec.azure_ml else {
        return (
            Resolution::Failed {
                reason: "InvalidSpec",
                message: "set exactly one of spec.azureML or spec.trackingUri".to_string(),
            },
            refresh,
        );
    };
    let key = WorkspaceKey::new(&ctx.cfg.azure, ws);
    let spec_changed =
        b.status.as_ref().and_then(|s| s.observed_generation) != b.metadata.generation;
    let freshness = if spec_changed {
        Freshness::YoungerThan(ctx.cfg.spec_change_window)
    } else {
        Freshness::Cached
    };
    let arm = ctx.arm.clone();
    let k = key.clone();
    let entry = ctx
        .cache
        .get(&key, freshness, move || async move {
            arm.tracking_uri(&k).await
        })
        .await;
    // Come back when this entry expires, so the refresh happens on time.
    let ttl = match entry.result {
        Ok(_) => refresh,
        Err(_) => refresh.min(ctx.cfg.error_retry),
    };
    let requeue = ttl.saturating_sub(entry.fetched.elapsed()) + Duration::from_millis(50);
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
        },
    };
    (res, requeue)
}

async fn reconcile(b: Arc<MlflowWorkspaceBinding>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let (res, requeue) = resolve(&b, &ctx).await;
    if let Resolution::Failed { reason, message } = &res {
        ctx.metrics
            .reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
        tracing::info!(binding = %b.name_any(), namespace = ?b.namespace(), %reason, %message, "not resolved");
    }
    let desired = desired_status(&b, &res, jiff::Timestamp::now());
    if b.status.as_ref() != Some(&desired) {
        let api: Api<MlflowWorkspaceBinding> =
            Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": MlflowWorkspaceBinding::api_version(&()),
            "kind": MlflowWorkspaceBinding::kind(&()),
            "status": desired,
        });
        api.patch_status(
            &b.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::StatusWrite {
            binding: format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any()),
            source,
        })?;
        if let Some((_, after)) = ready_transition(b.status.as_ref(), &desired) {
            publish_event(&b, &ctx, after == "True", &res).await;
        }
    }
    update_gauge(&ctx, &b, &desired);
    Ok(Action::requeue(requeue))
}

async fn publish_event(b: &MlflowWorkspaceBinding, ctx: &Ctx, ready: bool, res: &Resolution) {
    let (type_, reason, note) = match res {
        Resolution::Resolved { tracking_uri, .. } => (
            EventType::Normal,
            status::RESOLVED.to_string(),
            format!("tracking URI {tracking_uri}"),
        ),
        Resolution::Failed { reason, message } => {
            (EventType::Warning, reason.to_string(), message.clone())
        }
    };
    debug_assert_eq!(ready, matches!(res, Resolution::Resolved { .. }));
    let ev = Event {
        type_,
        reason,
        note: Some(note.chars().take(1000).collect()),
        action: "Resolve".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &b.object_ref(&())).await {
        tracing::warn!(error = %e, binding = %b.name_any(), "publishing an event");
    }
}

fn ready_of(s: Option<&MlflowWorkspaceBindingStatus>) -> String {
    s.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".to_string())
}

/// Recounts `bindings{ready}` from the controller's cache, with this reconcile's result.
fn update_gauge(ctx: &Ctx, b: &MlflowWorkspaceBinding, desired: &MlflowWorkspaceBindingStatus) {
    let this = kube::runtime::reflector::ObjectRef::from(b);
    let mut counts = std::collections::BTreeMap::from([
        ("True".to_string(), 0i64),
        ("False".to_string(), 0),
        ("Unknown".to_string(), 0),
    ]);
    let mut seen = false;
    for o in ctx.store.state() {
        let ready = if kube::runtime::reflector::ObjectRef::from(o.as_ref()) == this {
            seen = true;
            ready_of(Some(desired))
        } else {
            ready_of(o.status.as_ref())
        };
        *counts.entry(ready).or_default() += 1;
    }
    if !seen {
        *counts.entry(ready_of(Some(desired))).or_default() += 1;
    }
    for (ready, n) in counts {
        ctx.metrics
            .bindings
            .get_or_create(&ReadyLabels { ready })
            .set(n);
    }
}

fn clear_gauge(metrics: &Metrics) {
    for ready in ["True", "False", "Unknown"] {
        metrics
            .bindings
            .get_or_create(&ReadyLabels {
                ready: ready.to_string(),
            })
            .set(0);
    }
}

fn error_policy(b: Arc<MlflowWorkspaceBinding>, err: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(binding = %b.name_any(), error = %err, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: "StatusWriteFailed".to_string(),
        })
        .inc();
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["mlflow-operator", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_from_flags() {
        let cfg = Config::from_args(&args(&[
            "--arm-endpoint",
            "https://arm.example",
            "--authority-host",
            "https://login.example/",
            "--refresh-interval",
            "2m",
            "--lease-name",
            "l",
            "--lease-duration",
            "20s",
            "--identity",
            "pod-1",
            "--namespace",
            "ops",
        ]))
        .unwrap();
        assert_eq!(cfg.refresh_interval, Duration::from_secs(120));
        assert_eq!(cfg.lease_name, "l");
        assert_eq!(cfg.lease_duration, Duration::from_secs(20));
        assert_eq!(cfg.identity, "pod-1");
        assert_eq!(cfg.namespace, "ops");
        assert_eq!(cfg.watch_namespace, None);
        assert_eq!(
            cfg.azure
                .arm_endpoint(crate::binding::AzureCloud::AzureChinaCloud),
            "https://arm.example"
        );
        assert_eq!(
            cfg.azure
                .authority_host(crate::binding::AzureCloud::AzureUSGovernment),
            "https://login.example/"
        );
    }

    #[test]
    fn a_missing_ca_file_is_a_startup_error() {
        let err = Config::from_args(&args(&["--azure-ca-file", "/nonexistent/ca.pem"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--azure-ca-file"), "{err}");
    }
}
