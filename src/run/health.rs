//! The plain-HTTP side of a replica: `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::certs::CertStore;
use crate::metrics::Metrics;

/// Readiness: every part this replica runs has what it needs to answer correctly.
#[derive(Clone, Default)]
pub struct Health {
    pub certs: Option<Arc<CertStore>>,
    pub caches_synced: Arc<AtomicBool>,
    pub webhook: bool,
    /// Set on SIGTERM: the replica still answers, and asks to be taken out of the Service.
    pub stopping: Arc<AtomicBool>,
    /// Why the cluster's CRD cannot serve this release yet (see [`super::crd`]); None when it can.
    pub crd_problem: Arc<Mutex<Option<String>>>,
}

impl Health {
    pub fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(
                "shutting down: still answering admissions, not taking new ones soon".into(),
            );
        }
        if let Some(problem) = self.crd_problem.lock().unwrap().as_ref() {
            return Err(problem.clone());
        }
        if self.webhook {
            if !self.certs.as_ref().is_some_and(|c| c.is_loaded()) {
                return Err("no serving certificate loaded yet".into());
            }
            if !self.caches_synced.load(Ordering::Relaxed) {
                return Err("binding and ServiceAccount caches not synced yet".into());
            }
        }
        Ok(())
    }
}

/// Binds `addr` and serves the endpoints until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics and health listening (HTTP)");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(readyz))
        .with_state((metrics, health));
    Ok(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    })
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
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}
