//! The controller: resolves every `MlflowWorkspaceBinding`'s MLflow tracking URI and writes it,
//! with a Ready condition, to the binding's status.
//!
//! - `spec.trackingUri` bindings are Ready at once.
//! - `spec.azureML` bindings are resolved through Azure Resource Manager ([`arm`], with the
//!   operator's own [`credential`]) via a shared cache ([`cache`]): one ARM call per distinct
//!   workspace per refresh interval.
//! - Status is computed without I/O ([`status`]) and written with server-side apply, only when
//!   it changed ([`reconcile`]).
//! - Only the leader (a `coordination.k8s.io` Lease) runs the controller (this module).

pub mod arm;
pub mod cache;
mod changes;
pub mod compat;
pub mod credential;
mod pods;
mod ready_gauge;
mod reconcile;
pub mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube_lease_manager::LeaseManager;
use tokio::sync::{oneshot, watch};

use crate::binding_store::BindingStore;
use crate::metrics::Metrics;
use arm::{ArmClient, AzureConfig};
use cache::Cache;
use reconcile::Shared;

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
    /// Owner of the Lease (the operator's ServiceAccount), so it goes with the release.
    pub lease_owner: Option<OwnerReference>,
}

/// Runs the controller while this replica holds the Lease, until `shutdown` completes, and
/// says on `leader` whether this replica leads (and so runs the controller).
pub async fn run(
    client: Client,
    cfg: Config,
    metrics: Metrics,
    bindings: BindingStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
    leader: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let shared = Shared {
        arm: Arc::new(ArmClient::new(cfg.azure.clone(), metrics.clone())?),
        cache: Arc::new(Cache::new(cfg.refresh_interval, cfg.error_retry)),
        server: compat::ApiServer::read(&client).await,
        client: client.clone(),
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        bindings,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = ELECTION_RETRY_MIN;
    loop {
        let err = match elect_and_lead(&shared, &leader, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let _ = leader.send(false);
        tracing::error!(error = %format!("{err:#}"), retry_in = ?backoff, "leader election failed: the controller starts again");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.as_mut() => return Ok(()),
        }
        backoff = (backoff * 2).min(ELECTION_RETRY_MAX);
    }
}

/// Backoff of a failed leader election (an API server unreachable at start, the lease task
/// ending): the controller never stays stopped while the webhook in the same process runs on.
const ELECTION_RETRY_MIN: Duration = Duration::from_secs(1);
const ELECTION_RETRY_MAX: Duration = Duration::from_secs(30);

/// Takes part in the election and leads whenever elected, until shutdown (Ok) or until the
/// election itself fails (Err: the caller retries).
async fn elect_and_lead<S: Future<Output = ()>>(
    shared: &Shared,
    leader: &watch::Sender<bool>,
    shutdown: &mut Pin<&mut S>,
) -> anyhow::Result<()> {
    let cfg = &shared.cfg;
    let (mut is_leader, lease_task) = lease_manager(&shared.client, cfg).await?.watch().await;
    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "waiting for the controller lease");
    let mut outcome = Ok(());
    loop {
        match wait_for_lease(&mut is_leader, shutdown).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        tracing::info!(identity = %cfg.identity, "leading: starting the controller");
        let _ = leader.send(true);
        let shutting_down = lead(shared, &mut is_leader, shutdown).await;
        let _ = leader.send(false);
        reconcile::clear_gauge(&shared.metrics);
        if shutting_down {
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
    outcome
}

async fn lease_manager(client: &Client, cfg: &Config) -> anyhow::Result<LeaseManager> {
    if let Some(owner) = &cfg.lease_owner {
        crate::ownership::own_lease(client, &cfg.namespace, &cfg.lease_name, owner).await?;
    }
    // The lease manager counts in whole seconds and renews `grace` before expiry.
    let duration = cfg.lease_duration.as_secs().max(2);
    let grace = (duration / 3).clamp(1, duration - 1);
    Ok(
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
            .with_namespace(&cfg.namespace)
            .with_identity(&cfg.identity)
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await?,
    )
}

/// Waits until this replica holds the Lease (true) or shutdown is asked for (false).
async fn wait_for_lease<S: Future<Output = ()>>(
    is_leader: &mut watch::Receiver<bool>,
    shutdown: &mut Pin<&mut S>,
) -> anyhow::Result<bool> {
    loop {
        if *is_leader.borrow_and_update() {
            return Ok(true);
        }
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(false),
            changed = is_leader.changed() => if changed.is_err() {
                anyhow::bail!("leader election stopped");
            },
        }
    }
}

/// One term of leadership: runs the controller until the Lease is lost or shutdown is asked for,
/// and lets it finish its reconciles. Returns whether shutdown was asked for.
async fn lead<S: Future<Output = ()>>(
    shared: &Shared,
    is_leader: &mut watch::Receiver<bool>,
    shutdown: &mut Pin<&mut S>,
) -> bool {
    let (stop, stopped) = oneshot::channel::<()>();
    let term = reconcile::run(shared.clone(), async move {
        let _ = stopped.await;
    });
    let mut term = std::pin::pin!(term);
    let mut stop = Some(stop);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            _ = &mut term => return shutting_down,
            _ = shutdown.as_mut(), if !shutting_down => {
                shutting_down = true;
                if let Some(s) = stop.take() { let _ = s.send(()); }
            }
            changed = is_leader.changed(), if stop.is_some() => {
                if changed.is_err() || !*is_leader.borrow_and_update() {
                    tracing::warn!(identity = %shared.cfg.identity, "lost the controller lease: stopping the controller");
                    if let Some(s) = stop.take() { let _ = s.send(()); }
                }
            }
        }
    }
}
