//! The webhook's in-memory views of the cluster (bindings and ServiceAccounts), and the watch
//! loops that fill them.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::binding::MlflowWorkspaceBinding;

pub struct Caches {
    pub bindings: Store<MlflowWorkspaceBinding>,
    pub service_accounts: Store<ServiceAccount>,
    /// Drive these (spawn them) for the stores to fill and stay current.
    pub drivers: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl Caches {
    pub fn new(client: &Client) -> Self {
        let (bindings, bindings_writer) = reflector::store::<MlflowWorkspaceBinding>();
        let (service_accounts, sas_writer) = reflector::store::<ServiceAccount>();
        let b_stream = watcher(
            Api::<MlflowWorkspaceBinding>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(bindings_writer)
        .applied_objects();
        // Only names and annotations of ServiceAccounts matter; drop the rest from memory.
        let sa_stream = watcher(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|sa| {
            kube::ResourceExt::managed_fields_mut(sa).clear();
            sa.secrets = None;
            sa.image_pull_secrets = None;
        })
        .reflect(sas_writer)
        .applied_objects();
        let drivers = vec![
            b_stream.for_each(|_| async {}).boxed(),
            sa_stream.for_each(|_| async {}).boxed(),
        ];
        Self {
            bindings,
            service_accounts,
            drivers,
        }
    }

    /// Resolves once both stores hold a full initial list.
    pub fn synced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (b, s) = (self.bindings.clone(), self.service_accounts.clone());
        async move {
            let _ = b.wait_until_ready().await;
            let _ = s.wait_until_ready().await;
        }
    }
}
