//! The webhook's in-memory views of the cluster (bindings and ServiceAccounts), and the watch
//! loops that fill them.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::BindingIndex;
use crate::binding::MlflowWorkspaceBinding;

pub struct Caches {
    pub bindings: BindingIndex,
    pub service_accounts: Store<ServiceAccount>,
    /// Drive these (spawn them) for the stores to fill and stay current.
    pub drivers: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl Caches {
    pub fn new(client: &Client) -> Self {
        let (bindings, mut bindings_writer) = BindingIndex::new();
        let (service_accounts, sas_writer) = reflector::store::<ServiceAccount>();
        // The planner never reads managedFields: not kept in memory.
        let b_stream = watcher(
            Api::<MlflowWorkspaceBinding>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|b| kube::ResourceExt::managed_fields_mut(b).clear());
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
            b_stream
                .for_each(move |event| {
                    // Errors are retried by the backoff; the index keeps its last view meanwhile.
                    if let Ok(event) = event {
                        bindings_writer.apply(event);
                    }
                    futures::future::ready(())
                })
                .boxed(),
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
        let (b, s) = (
            self.bindings.wait_until_ready(),
            self.service_accounts.clone(),
        );
        async move {
            b.await;
            let _ = s.wait_until_ready().await;
        }
    }
}
