//! The webhook as `run` serves it, assembled in one place: `run` and the in-process tests start
//! it here, so a wiring mistake in `run` cannot pass them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Caches, RefusalEvents, Webhook};
use crate::certs::CertStore;
use crate::inject::Defaults;
use crate::metrics::Metrics;

/// A started webhook: the caller runs its futures (on whichever task sets it keeps).
pub struct Serving {
    pub webhook: Arc<Webhook>,
    /// Where it listens (port 0 asked: the port it got).
    pub addr: SocketAddr,
    /// The caches' watches: run them for as long as the webhook serves.
    pub drivers: Vec<BoxFuture<'static, ()>>,
    /// Completes once the binding and ServiceAccount caches have listed.
    pub synced: BoxFuture<'static, ()>,
    /// The HTTPS server: returns once `stop` completed and the reviews in flight are answered.
    pub server: BoxFuture<'static, ()>,
}

impl Webhook {
    /// The webhook over live caches, recording refusals as Events from `identity`.
    pub fn live(caches: &Caches, defaults: Defaults, metrics: Metrics, identity: &str) -> Self {
        let client = &caches.client;
        let mut webhook = Self::cached(
            caches.bindings.clone(),
            caches.service_accounts.clone(),
            defaults,
        );
        webhook.service_accounts.client = Some(client.clone());
        webhook.metrics = metrics;
        webhook.events = Some(RefusalEvents::new(client.clone(), identity.to_string()));
        webhook
    }
}

/// Binds `addr` and assembles the webhook over `caches` (see [`Caches::new`]), serving the
/// certificate `certs` holds, until `stop` completes.
pub async fn start(
    mut caches: Caches,
    defaults: Defaults,
    metrics: &Metrics,
    identity: &str,
    addr: SocketAddr,
    certs: Arc<CertStore>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Serving> {
    let drivers = std::mem::take(&mut caches.drivers);
    let webhook = Arc::new(Webhook::live(&caches, defaults, metrics.clone(), identity));
    let listener = super::bind(addr).await?;
    let addr = listener.local_addr()?;
    let server = super::serve(listener, webhook.clone(), certs, stop).boxed();
    Ok(Serving {
        webhook,
        addr,
        drivers,
        synced: caches.synced().boxed(),
        server,
    })
}
