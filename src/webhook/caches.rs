//! The webhook's in-memory views of the cluster: the bindings (the process's one binding store,
//! [`crate::binding_store`], filled by its own watch) and the ServiceAccounts, with the watch
//! loop that fills them.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use std::time::Duration;

use super::BindingIndex;

/// Every watch lists in pages of 100 objects, not kube's 500: a page's body and the objects parsed
/// from it are in memory together, and the allocator keeps much of that peak after the list
/// (BENCHMARKS.md, "twelfth stop"). With 1,000 bindings that is ten requests at start instead of two.
pub fn paged_watch() -> watcher::Config {
    watcher::Config::default().page_size(100)
}

/// How the watches retry while the API server is unreachable. Pods are admitted from these
/// caches, so after an outage they must catch up within seconds: kube's default (client-go's)
/// grows to 30 s, which left the webhook 9-15 s behind after a 15 s API server restart. A retry
/// is one LIST or WATCH per replica: no burden on an API server that is coming back.
pub fn outage_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(1))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

pub struct Caches {
    pub client: Client,
    pub bindings: BindingIndex,
    pub service_accounts: Store<ServiceAccount>,
    /// Drive these (spawn them) for the stores to fill and stay current.
    pub drivers: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl Caches {
    /// Over `bindings` (the process's one binding store, filled by its own watch) and a fresh
    /// ServiceAccount cache.
    pub fn new(client: &Client, bindings: BindingIndex) -> Self {
        let (service_accounts, sas_writer) = reflector::store::<ServiceAccount>();
        // Only names and annotations of ServiceAccounts matter; drop the rest from memory.
        let sa_stream = watcher(Api::<ServiceAccount>::all(client.clone()), paged_watch())
            .backoff(outage_backoff())
            .modify(|sa| {
                kube::ResourceExt::managed_fields_mut(sa).clear();
                sa.secrets = None;
                sa.image_pull_secrets = None;
            })
            .reflect(sas_writer)
            .applied_objects();
        let drivers = vec![sa_stream.for_each(|_| async {}).boxed()];
        Self {
            client: client.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_retries_start_soon_and_stay_within_seconds() {
        let delays: Vec<Duration> = outage_backoff().take(20).collect();
        assert_eq!(delays.len(), 20, "it never gives up");
        assert!(delays[0] <= Duration::from_secs(1), "{delays:?}");
        // backon's jitter adds up to as much again: at most 2 s.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "{delays:?}"
        );
    }
}
