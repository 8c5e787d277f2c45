//! `mlflow-operator run`: wires the webhook, the controller, metrics and health together.
//!
//! Every replica serves the webhook (its caches are read-only); only the Lease holder runs the
//! controller. SIGTERM or Ctrl-C stops everything gracefully. The settings of every part are
//! built once, up front ([`config`]); the endpoints of [`health`] report on them.

mod client;
mod config;
mod crd;
mod health;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::{Certificates, Settings, WebhookSettings};
pub use health::Health;

use crate::binding_store::BindingStore;
use crate::certs::{self, CertStore, self_managed};
use crate::cli::RunArgs;
use crate::controller;
use crate::metrics::Metrics;
use crate::webhook::{self, BindingIndex, Caches};

/// How long stoppable tasks may take at shutdown (the kubelet's grace period is 30s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often mounted certificate files are re-read.
const CERT_FILES_EVERY: Duration = Duration::from_secs(2);

/// kube's client, for the CLI's short-lived commands.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    Ok(Client::try_from(kube_config(kubeconfig).await?)?)
}

async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    })
}

/// SIGTERM and Ctrl-C, listened for from the start of `run`: until a handler is installed their
/// default action kills the process, so a signal that came while the replica was still starting
/// stopped it without draining, and a second one sent before the first was handled was lost.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the next SIGTERM or Ctrl-C, also one that came before this call.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! { _ = self.term.recv() => {}, _ = self.interrupt.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves, for every clone, once stop is asked for.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn asked(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// The tasks of a replica: those that end when stop is asked for, and loops that run until
/// aborted (watches, certificate refreshes).
#[derive(Default)]
struct Tasks {
    stoppable: JoinSet<()>,
    background: JoinSet<()>,
}

impl Tasks {
    /// Lets the stoppable tasks finish (the controller releases its Lease) within the grace
    /// period; the background loops never end by themselves, so they are aborted.
    async fn finish(mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.stoppable.join_next().await.is_some() {}
        })
        .await;
        self.stoppable.abort_all();
        self.background.abort_all();
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut signals = Signals::listen().context("listening for SIGTERM and Ctrl-C")?;
    let mut settings = Settings::new(
        &args,
        |name| std::env::var(name).ok(),
        |path| std::fs::read(path),
    )?;
    let client = client::multiplexed(kube_config(settings.kubeconfig.as_deref()).await?)?;
    set_owner(&mut settings, &client, &args.namespace).await;
    let metrics = Metrics::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = Stop(stop_rx);
    let mut tasks = Tasks::default();
    let mut health = Health::default();
    let delay = settings.webhook.as_ref().map(|w| w.shutdown_delay);
    // One watch and one copy of the bindings for the webhook and the controller.
    let (bindings, watch) = BindingStore::new(&client);
    if settings.webhook.is_some() || settings.controller.is_some() {
        tasks.background.spawn(watch);
    }
    if let Some(w) = settings.webhook {
        let (identity, index) = (settings.identity.as_str(), bindings.index.clone());
        health = start_webhook(w, &client, &metrics, identity, index, &stop, &mut tasks).await?;
    }
    let crd_current = check_crd(&client, args.upgrade_crd, &health, &mut tasks.background);
    let stopping = health.stopping.clone();
    let endpoints = health::serve(settings.metrics_addr, metrics.clone(), health, stop.asked());
    tasks.stoppable.spawn(endpoints.await?);
    if let Some(cfg) = settings.controller {
        start_controller(
            cfg,
            &client,
            &metrics,
            bindings,
            crd_current,
            &stop,
            &mut tasks.stoppable,
        );
    }
    signals.next().await;
    if let Some(delay) = delay.filter(|d| !d.is_zero()) {
        go_on_answering(delay, &stopping, &mut signals).await;
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    tasks.finish().await;
    Ok(())
}

/// After SIGTERM: answers admissions for `delay` while `/readyz` fails, so the readiness probe
/// takes the replica out of the Service before it stops accepting. Needed when the signal comes
/// without a deletion (a container stopped on the node): no endpoint is marked terminating then.
async fn go_on_answering(delay: Duration, stopping: &AtomicBool, signals: &mut Signals) {
    stopping.store(true, Ordering::Relaxed);
    tracing::info!(
        ?delay,
        "SIGTERM: still answering admissions, reported not ready; a second signal stops at once"
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = signals.next() => tracing::info!("second signal: not waiting any longer"),
    }
}

/// Makes the operator's ServiceAccount the owner of the Secret and Lease it creates. Without it
/// (not named, or unreadable) they are created unowned and outlive an uninstall: a warning.
async fn set_owner(settings: &mut Settings, client: &Client, namespace: &str) {
    let Some(name) = settings.service_account.as_deref() else {
        return;
    };
    let owner = match crate::ownership::service_account(client, namespace, name).await {
        Ok(owner) => owner,
        Err(e) => {
            tracing::warn!(error = %e, service_account = name, "cannot read the operator's ServiceAccount: its Secret and Lease will not be removed with it");
            return;
        }
    };
    if let Some(WebhookSettings {
        certificates: Certificates::SelfManaged(cfg),
        ..
    }) = settings.webhook.as_mut()
    {
        cfg.owner = Some(owner.clone());
    }
    if let Some(cfg) = settings.controller.as_mut() {
        cfg.lease_owner = Some(owner);
    }
}

/// Starts the certificate source, the caches and the HTTPS listener; returns the readiness they
/// report to.
async fn start_webhook(
    w: WebhookSettings,
    client: &Client,
    metrics: &Metrics,
    identity: &str,
    bindings: BindingIndex,
    stop: &Stop,
    tasks: &mut Tasks,
) -> anyhow::Result<Health> {
    let store = CertStore::reporting_expiry_to(metrics.certificate_expiry.clone());
    let probe_store = CertStore::new();
    let stores = self_managed::Stores {
        serving: store.clone(),
        probe: probe_store.clone(),
    };
    start_certificates(w.certificates, client, stores, &mut tasks.background).await;
    let serving = webhook::start(
        Caches::new(client, bindings),
        w.defaults,
        metrics,
        identity,
        w.addr,
        store.clone(),
        stop.asked(),
    )
    .await
    .with_context(|| format!("binding the webhook address {}", w.addr))?;
    for driver in serving.drivers {
        tasks.background.spawn(driver);
    }
    let health = Health {
        certs: Some(store),
        webhook: true,
        ..Default::default()
    };
    let (synced, synced_flag) = (serving.synced, health.caches_synced.clone());
    tasks.background.spawn(async move {
        synced.await;
        synced_flag.store(true, Ordering::Relaxed);
        tracing::info!("binding and ServiceAccount caches synced");
    });
    tracing::info!(addr = %serving.addr, "webhook listening (HTTPS, /mutate)");
    tasks.stoppable.spawn(serving.server);
    if let Some(addr) = w.ca_probe_addr {
        let listener = webhook::bind(addr)
            .await
            .with_context(|| format!("binding the CA probe address {addr}"))?;
        let probe = webhook::serve(listener, serving.webhook, probe_store, stop.asked());
        tracing::info!(%addr, "CA probe listening (HTTPS, {})", certs::probe::PATH);
        tasks.stoppable.spawn(probe);
    }
    Ok(health)
}

async fn start_certificates(
    source: Certificates,
    client: &Client,
    stores: self_managed::Stores,
    background: &mut JoinSet<()>,
) {
    let store = &stores.serving;
    match source {
        Certificates::Files { cert, key } => {
            // A missing file at start is not fatal: the Secret volume may still be populating;
            // readiness stays false until the files load.
            if let Err(e) = certs::load_files(store, &cert, &key).await {
                tracing::warn!(error = %e, "webhook certificate not loaded yet");
            }
            background.spawn(certs::watch_files(
                store.clone(),
                cert,
                key,
                CERT_FILES_EVERY,
            ));
        }
        Certificates::SelfManaged(cfg) => {
            background.spawn(self_managed::run(client.clone(), *cfg, stores));
        }
    }
}

/// Starts checking the cluster's CRD (upgrading it with `upgrade`): readiness reports what stands
/// in the way, and the receiver turns true once nothing does. Not ready until the first check.
fn check_crd(
    client: &Client,
    upgrade: bool,
    health: &Health,
    background: &mut JoinSet<()>,
) -> watch::Receiver<bool> {
    *health.crd_problem.lock().unwrap() = Some("the CRD is not checked yet".into());
    let (current_tx, current_rx) = watch::channel(false);
    let problem = health.crd_problem.clone();
    background.spawn(crd::keep_checking(
        client.clone(),
        upgrade,
        problem,
        current_tx,
    ));
    current_rx
}

/// Starts the controller (once the CRD serves this release, it waits for the Lease) and the
/// `leader` gauge that follows it.
fn start_controller(
    cfg: controller::Config,
    client: &Client,
    metrics: &Metrics,
    bindings: BindingStore,
    mut crd_current: watch::Receiver<bool>,
    stop: &Stop,
    tasks: &mut JoinSet<()>,
) {
    let (leader_tx, mut leader_rx) = watch::channel(false);
    let (client, controller_metrics) = (client.clone(), metrics.clone());
    let (stop_waiting, stop) = (stop.asked(), stop.asked());
    tasks.spawn(async move {
        // A replica whose CRD would prune what it writes stays out of the election.
        tokio::select! {
            current = crd_current.wait_for(|c| *c) => if current.is_err() { return },
            _ = stop_waiting => return,
        }
        if let Err(e) =
            controller::run(client, cfg, controller_metrics, bindings, stop, leader_tx).await
        {
            tracing::error!(error = %e, "controller stopped");
        }
    });
    let leader_gauge = metrics.leader.clone();
    tasks.spawn(async move {
        while leader_rx.changed().await.is_ok() {
            let leading = *leader_rx.borrow_and_update();
            leader_gauge.set(i64::from(leading));
            tracing::info!(leader = leading, "controller leadership changed");
        }
        leader_gauge.set(0);
    });
}
