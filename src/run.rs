//! `mlflow-operator run`: wires the webhook, the controller, metrics and health together.
//!
//! Every replica serves the webhook (its caches are read-only); only the Lease holder runs the
//! controller. SIGTERM or Ctrl-C stops everything gracefully.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kube::{Client, Config};
use tokio::sync::watch;

use crate::certs::{self, CertStore};
use crate::cli::{OnMissingBindingArg, RunArgs};
use crate::inject::{Defaults, OnMissingBinding};
use crate::metrics::Metrics;
use crate::webhook::{self, Caches, RefusalEvents, ServiceAccounts, Webhook};

/// Readiness: every part this replica runs has what it needs to answer correctly.
#[derive(Clone, Default)]
pub struct Health {
    pub certs: Option<Arc<CertStore>>,
    pub caches_synced: Arc<AtomicBool>,
    pub webhook: bool,
}

impl Health {
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.webhook {
            if !self.certs.as_ref().is_some_and(|c| c.is_loaded()) {
                return Err("no serving certificate loaded yet");
            }
            if !self.caches_synced.load(Ordering::Relaxed) {
                return Err("binding and ServiceAccount caches not synced yet");
            }
        }
        Ok(())
    }
}

pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    };
    Ok(Client::try_from(config)?)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let metrics = Metrics::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut health = Health {
        webhook: !args.no_webhook,
        ..Default::default()
    };
    // Tasks that end when `stopped()` resolves, and loops that run until aborted (watches,
    // certificate refreshes). Only the former are waited for at shutdown.
    let mut tasks = tokio::task::JoinSet::new();
    let mut background = tokio::task::JoinSet::new();

    if !args.no_webhook {
        let store = CertStore::new();
        health.certs = Some(store.clone());
        start_certificates(&args, &client, &store, &mut background).await?;

        let mut caches = Caches::new(&client);
        for driver in caches.drivers.drain(..) {
            background.spawn(driver);
        }
        let (synced, synced_flag) = (caches.synced(), health.caches_synced.clone());
        background.spawn(async move {
            synced.await;
            synced_flag.store(true, Ordering::Relaxed);
            tracing::info!("binding and ServiceAccount caches synced");
        });

        let webhook = Arc::new(Webhook {
            bindings: caches.bindings,
            service_accounts: ServiceAccounts {
                cache: caches.service_accounts,
                client: Some(client.clone()),
            },
            defaults: Defaults {
                tenant_id: args
                    .default_tenant_id
                    .clone()
                    .or_else(|| std::env::var("AZURE_TENANT_ID").ok()),
                on_missing_binding: match args.on_missing_binding {
                    OnMissingBindingArg::Refuse => OnMissingBinding::Refuse,
                    OnMissingBindingArg::Allow => OnMissingBinding::Allow,
                },
            },
            metrics: metrics.clone(),
            events: Some(RefusalEvents::new(client.clone(), args.identity.clone())),
        });
        let listener = webhook::bind(args.webhook_addr)
            .await
            .with_context(|| format!("binding the webhook address {}", args.webhook_addr))?;
        tracing::info!(addr = %listener.local_addr()?, "webhook listening (HTTPS, /mutate)");
        tasks.spawn(webhook::serve(listener, webhook, store, stopped()));
    }

    let health_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    tracing::info!(addr = %health_listener.local_addr()?, "metrics and health listening (HTTP)");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(readyz))
        .with_state((metrics.clone(), health.clone()));
    let health_stop = stopped();
    tasks.spawn(async move {
        let _ = axum::serve(health_listener, app)
            .with_graceful_shutdown(health_stop)
            .await;
    });

    if !args.no_controller {
        let cfg = crate::controller::Config::from_args(&args)?;
        let (client, controller_metrics, stop) = (client.clone(), metrics.clone(), stopped());
        let (leader_tx, mut leader_rx) = watch::channel(false);
        tasks.spawn(async move {
            if let Err(e) = crate::controller::run_with_leader_status(
                client,
                cfg,
                controller_metrics,
                stop,
                leader_tx,
            )
            .await
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

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Let the stoppable tasks finish (the controller releases its Lease), for at most 5s; the
    // background loops never end by themselves, so they are aborted rather than waited for.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    background.abort_all();
    Ok(())
}

async fn start_certificates(
    args: &RunArgs,
    client: &Client,
    store: &Arc<CertStore>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    match (&args.tls_cert_file, &args.tls_key_file, args.self_signed) {
        (Some(cert), Some(key), false) => {
            // A missing file at start is not fatal: the Secret volume may still be populating;
            // readiness stays false until the files load.
            if let Err(e) = certs::load_files(store, cert, key).await {
                tracing::warn!(error = %e, "webhook certificate not loaded yet");
            }
            tasks.spawn(certs::watch_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                std::time::Duration::from_secs(2),
            ));
        }
        (None, None, true) => {
            let cfg = certs::self_managed::Config::new(
                &args.namespace,
                &args.cert_secret,
                &args.webhook_config,
                &args.service_name,
                &args.cert_dns_names,
            );
            tasks.spawn(certs::self_managed::run(client.clone(), cfg, store.clone()));
        }
        _ => anyhow::bail!(
            "the webhook needs a certificate: pass --tls-cert-file and --tls-key-file, or --self-signed (or --no-webhook)"
        ),
    }
    Ok(())
}

async fn metrics_handler(State((metrics, _)): State<(Metrics, Health)>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn readyz(State((_, health)): State<(Metrics, Health)>) -> impl IntoResponse {
    match health.ready() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
    }
}
