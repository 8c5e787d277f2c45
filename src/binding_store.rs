//! The bindings as the whole process sees them: one watch and one copy of each binding, read by
//! the webhook (by namespace) and by the controller on the Lease holder (kube's reflector store
//! and a stream of changes). Before, each kept its own watch and copy: with 1,000 bindings the
//! leader held every binding twice and decoded every list twice.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::broadcast;

use crate::binding::MlflowWorkspaceBinding;
use crate::webhook::{BindingIndex, IndexWriter, outage_backoff, paged_watch};

type Binding = MlflowWorkspaceBinding;

/// Changes a slow reader may fall behind by before it is told to read the store again.
const CHANGES_KEPT: usize = 1024;

/// Drops what nothing reads from a binding before it is stored: managedFields were a third of
/// the heap with 1,000 bindings; a binding applied with kubectl carries itself again in an
/// annotation; and one label alone costs a whole map node (over 500 bytes). Nothing in the
/// operator reads a binding's labels or annotations: status writes patch `status` only.
fn trim(b: &mut Binding) {
    b.managed_fields_mut().clear();
    b.metadata.annotations = None;
    b.metadata.labels = None;
}

/// What the watch changed, for the controller.
#[derive(Clone, Debug)]
pub enum Change {
    /// Created or changed: the store's copy.
    Applied(Arc<Binding>),
    Deleted(ObjectRef<Binding>),
    /// A (re)list completed: anything may have changed.
    Relisted,
}

/// Cheap to clone; every clone reads the same bindings.
#[derive(Clone)]
pub struct BindingStore {
    /// Every binding, as the controller reads it.
    pub store: Store<Binding>,
    /// The same bindings (the same allocations) by namespace, as admissions read them.
    pub index: BindingIndex,
    changes: broadcast::Sender<Change>,
}

impl BindingStore {
    /// An empty store and the watch that fills it (spawn it).
    pub fn new(client: &Client) -> (Self, BoxFuture<'static, ()>) {
        let events = watcher(Api::<Binding>::all(client.clone()), paged_watch())
            .backoff(outage_backoff())
            .modify(trim);
        let (store, mut feed) = Self::empty();
        let this = store.clone();
        let driver = events.for_each(move |event| {
            // Errors are retried by the backoff; the store keeps its last view meanwhile.
            if let Ok(event) = event {
                feed.apply(&event);
            }
            futures::future::ready(())
        });
        (this, driver.boxed())
    }

    /// A store filled by hand through the returned feed (tests, benchmarks).
    pub fn empty() -> (Self, Feed) {
        let (store, writer) = reflector::store();
        let (index, index_writer) = BindingIndex::new();
        let (changes, _) = broadcast::channel(CHANGES_KEPT);
        let this = Self {
            store,
            index,
            changes,
        };
        let feed = Feed {
            store: this.clone(),
            writer,
            index_writer,
        };
        (this, feed)
    }

    /// Changes from now on. Subscribe before reading the store, so that nothing is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Resolves once a first complete list is in.
    pub fn wait_until_ready(&self) -> impl Future<Output = ()> + Send + 'static {
        self.index.wait_until_ready()
    }
}

/// The write side: applies one watch's events to the store, the index and the change stream.
pub struct Feed {
    store: BindingStore,
    writer: reflector::store::Writer<Binding>,
    index_writer: IndexWriter<Binding>,
}

impl Feed {
    pub fn apply(&mut self, event: &watcher::Event<Binding>) {
        self.writer.apply_watcher_event(event);
        let (store, changes) = (&self.store.store, &self.store.changes);
        let shared = |b: &Binding| store.get(&ObjectRef::from(b));
        // No receiver is no error: the controller runs on the Lease holder only.
        let _ = match event {
            watcher::Event::Apply(b) => {
                let Some(b) = shared(b) else { return };
                self.index_writer.upsert_shared(b.clone());
                changes.send(Change::Applied(b))
            }
            watcher::Event::Delete(b) => {
                self.index_writer.remove(b);
                changes.send(Change::Deleted(ObjectRef::from(b)))
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => return,
            watcher::Event::InitDone => {
                self.index_writer.replace_shared(store.state());
                changes.send(Change::Relisted)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_store_keeps_only_what_is_read() {
        let binding = |labels: serde_json::Value, annotations: serde_json::Value| -> Binding {
            serde_json::from_value(json!({
                "metadata": {
                    "name": "b", "namespace": "ns", "uid": "u", "generation": 2,
                    "labels": labels, "annotations": annotations,
                    "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                },
                "spec": {"trackingUri": "http://mlflow"},
                "status": {"observedGeneration": 1},
            }))
            .unwrap()
        };
        let applied =
            json!({"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "v"});
        // (what, labels, annotations)
        let cases = [
            ("applied with kubectl", json!({"app": "x"}), applied),
            ("no labels or annotations", json!(null), json!(null)),
            ("labels only", json!({"app": "x"}), json!(null)),
        ];
        for (what, labels, annotations) in cases {
            let mut b = binding(labels, annotations);
            let before = b.clone();
            trim(&mut b);
            assert_eq!(b.metadata.annotations, None, "{what}");
            assert_eq!(b.metadata.labels, None, "{what}");
            assert!(b.managed_fields().is_empty(), "{what}");
            let kept = |b: &Binding| (b.uid(), b.metadata.generation, b.namespace());
            assert_eq!(kept(&b), kept(&before), "{what}");
            assert_eq!(
                (&b.spec, &b.status),
                (&before.spec, &before.status),
                "{what}"
            );
        }
    }
}
