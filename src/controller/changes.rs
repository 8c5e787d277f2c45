//! What a term of leadership reconciles, read from the process's binding store: every binding
//! once the store has listed, then each binding the watch applies. A relist, or a term that fell
//! behind the store's changes, reads the whole store again. The Ready gauge moves with the same
//! changes, so no reconcile walks every binding to count them.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};

use super::ready_gauge::ReadyGauge;
use crate::binding::MlflowWorkspaceBinding;
use crate::binding_store::{BindingStore, Change};

type Binding = Arc<MlflowWorkspaceBinding>;

/// The bindings to reconcile, of `namespace` only when one is given (the store holds every
/// namespace's: the webhook reads them all).
pub(super) fn triggers(
    bindings: BindingStore,
    gauge: Arc<ReadyGauge>,
    namespace: Option<String>,
) -> impl Stream<Item = Binding> + Send + 'static {
    let scope = Scope {
        bindings,
        gauge,
        namespace,
    };
    // Subscribed before the store is read: a change in between comes twice, never not at all.
    let changes = scope.bindings.subscribe();
    let first = {
        let scope = scope.clone();
        async move {
            scope.bindings.wait_until_ready().await;
            scope.everything()
        }
    };
    let rest = futures::stream::unfold((changes, scope), |(mut changes, scope)| async move {
        let due = scope.next(&mut changes).await?;
        Some((due, (changes, scope)))
    });
    futures::stream::once(first)
        .chain(rest)
        .flat_map(futures::stream::iter)
}

#[derive(Clone)]
struct Scope {
    bindings: BindingStore,
    gauge: Arc<ReadyGauge>,
    namespace: Option<String>,
}

impl Scope {
    fn holds(&self, namespace: Option<&str>) -> bool {
        self.namespace.is_none() || self.namespace.as_deref() == namespace
    }

    /// The bindings the next change makes due (none for a deletion); None once the store is
    /// gone.
    async fn next(&self, changes: &mut broadcast::Receiver<Change>) -> Option<Vec<Binding>> {
        match changes.recv().await {
            Ok(Change::Applied(b)) if self.holds(b.metadata.namespace.as_deref()) => {
                self.gauge.applied(&b);
                Some(vec![b])
            }
            Ok(Change::Deleted(r)) if self.holds(r.namespace.as_deref()) => {
                self.gauge.remove(&r);
                Some(Vec::new())
            }
            Ok(Change::Applied(_) | Change::Deleted(_)) => Some(Vec::new()),
            Ok(Change::Relisted) | Err(RecvError::Lagged(_)) => Some(self.everything()),
            Err(RecvError::Closed) => None,
        }
    }

    fn everything(&self) -> Vec<Binding> {
        let mut all = self.bindings.store.state();
        all.retain(|b| self.holds(b.metadata.namespace.as_deref()));
        self.gauge.listed(&all);
        all
    }
}
