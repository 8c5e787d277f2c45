//! Where the webhook reads ServiceAccounts: the reflector cache, then one live GET on a miss
//! (a ServiceAccount created just before its pod may not have reached the cache yet).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

/// How long the admission path waits for the live GET; the API server's own timeout for the
/// whole webhook call is a few seconds.
const LIVE_GET_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ServiceAccounts {
    pub cache: Store<ServiceAccount>,
    /// None: the cache only (tests, benchmarks).
    pub client: Option<Client>,
}

impl ServiceAccounts {
    pub async fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        if let Some(sa) = self.cache.get(&ObjectRef::new(name).within(namespace)) {
            return Some(sa);
        }
        let client = self.client.clone()?;
        let api: Api<ServiceAccount> = Api::namespaced(client, namespace);
        match tokio::time::timeout(LIVE_GET_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(sa)) => sa.map(Arc::new),
            Ok(Err(e)) => {
                tracing::warn!(namespace, name, error = %e, "ServiceAccount lookup failed");
                None
            }
            Err(_) => {
                tracing::warn!(namespace, name, "ServiceAccount lookup timed out");
                None
            }
        }
    }
}
